"""A docker-py session against a Berth daemon, as a site script would run it.

Run by tests/clients.rs with BERTH_SOCK (the daemon's socket), REGISTRY (HOST:PORT of a
registry with user `site`, password `secret`, holding site/busybox:1) and API_VERSION
("auto", or a version the client pins). Every step asserts what dockerd would answer; the
last line printed is a JSON summary the Rust test checks again.
"""

import json
import os
import sys
import threading
import time

import docker
from docker.errors import APIError, ImageNotFound, NotFound

sock = os.environ["BERTH_SOCK"]
reg = os.environ["REGISTRY"]
version = os.environ.get("API_VERSION", "auto")
image = f"{reg}/site/busybox:1"
tag = "v" + version.replace(".", "")

c = docker.DockerClient(base_url=f"unix://{sock}", version=version, timeout=60)
summary = {"api_version": c.api.api_version}

assert c.ping() is True
assert c.version()["ApiVersion"] == "1.45", c.version()
if version != "auto":
    assert c.api.api_version == version

# Login: a wrong password is refused, the right one accepted.
try:
    c.login(username="site", password="wrong", registry=reg, reauth=True)
    raise AssertionError("a wrong password was accepted")
except APIError as e:
    summary["bad_login"] = str(e.explanation)
assert c.login(username="site", password="secret", registry=reg, reauth=True)["Status"]

# Events from here on, streamed on their own connection.
since = int(time.time()) - 1
events = []
stream = c.events(decode=True, filters={"type": ["container", "network"]})


def collect():
    try:
        for e in stream:
            events.append(e)
    except Exception:  # the stream is closed at the end
        pass


threading.Thread(target=collect, daemon=True).start()
time.sleep(0.3)

# Pull: the image is not here yet.
try:
    c.images.get(image)
    raise AssertionError("the image was there before the pull")
except ImageNotFound:
    pass
# What the registry holds, without pulling (inspect_distribution): the manifest and platform.
dist = c.api.inspect_distribution(image, auth_config={"username": "site", "password": "secret"})
assert dist["Descriptor"]["digest"].startswith("sha256:"), dist
assert dist["Platforms"][0]["os"] == "linux", dist
img = c.images.pull(f"{reg}/site/busybox", tag="1")
assert image in img.tags, img.tags
assert dist["Descriptor"]["digest"] in " ".join(img.attrs["RepoDigests"]), (dist, img.attrs["RepoDigests"])
summary["image_id"] = img.id
assert c.images.get(image).id == img.id
assert any(h["Id"] for h in img.history())

# run() returns the output, once, and removes the container.
out = c.containers.run(image, ["sh", "-c", "echo hello; echo oops >&2"], remove=True)
assert out == b"hello\n", out
try:
    c.containers.run(image, ["sh", "-c", "exit 3"], remove=True)
    raise AssertionError("a failing command did not raise")
except docker.errors.ContainerError as e:
    assert e.exit_status == 3, e

# A network with a static address.
net = c.networks.create(
    f"pynet{tag}",
    driver="bridge",
    ipam=docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet="10.77.0.0/24", gateway="10.77.0.1")]
    ),
    labels={"site": "t1"},
)
assert net.attrs["IPAM"]["Config"][0]["Subnet"] == "10.77.0.0/24", net.attrs
ct = c.containers.run(
    image,
    ["sh", "-c", "echo started; exec sleep 300"],
    name=f"py{tag}",
    hostname="pyhost",
    labels={"site": "t1"},
    environment={"A": "1"},
    network=net.name,
    networking_config={net.name: c.api.create_endpoint_config(ipv4_address="10.77.0.50", aliases=["pyalias"])},
    detach=True,
)
ct.reload()
assert ct.status == "running", ct.status
ip = ct.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
assert ip == "10.77.0.50", ct.attrs["NetworkSettings"]
summary["ip"] = ip
assert ct.attrs["Config"]["Hostname"] == "pyhost"
assert [x.name for x in c.containers.list(filters={"label": "site=t1", "network": net.name})] == [ct.name]

# exec: exit codes, demultiplexed streams, streaming output.
r = ct.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"], demux=True)
assert r.exit_code == 3 and r.output == (b"out\n", b"err\n"), r
r = ct.exec_run(["hostname"])
assert (r.exit_code, r.output) == (0, b"pyhost\n"), r
assert b"".join(ct.exec_run(["sh", "-c", "echo a; echo b"], stream=True).output) == b"a\nb\n"
r = ct.exec_run(["cat", "/etc/hosts"])
assert b"10.77.0.50" in r.output, r.output
summary["exec"] = "ok"

# Logs, with timestamps and tail.
for _ in range(50):
    if ct.logs() == b"started\n":
        break
    time.sleep(0.1)
assert ct.logs() == b"started\n", ct.logs()
last = ct.logs(timestamps=True, tail=1).decode()
assert last.endswith(" started\n") and last[:4].isdigit(), last
summary["logs"] = ct.logs().decode()

# Files, changes, commit.
ct.exec_run(["sh", "-c", "echo data > /made-here"])
assert {"Path": "/made-here", "Kind": 1} in ct.diff(), ct.diff()
bits, stat = ct.get_archive("/made-here")
assert stat["size"] == 5, stat
committed = ct.commit(repository=f"pycommit{tag}", tag="1", message="from docker-py", author="site", changes=["ENV B=2"])
assert c.containers.run(committed.id, ["sh", "-c", "echo $B; cat /made-here"], remove=True) == b"2\ndata\n"
summary["commit"] = committed.id

# Disk use: the container's own layer, the image, shared layers counted once.
df = c.df()
mine = [x for x in df["Containers"] if x["Id"] == ct.id]
assert mine and mine[0]["SizeRw"] >= 5, mine
assert any(i["Id"] == img.id and i["Containers"] >= 1 for i in df["Images"]), df["Images"]
assert df["LayersSize"] >= img.attrs["Size"], df

top = ct.top()
assert any("sleep" in " ".join(p) for p in top["Processes"]), top
assert "memory_stats" in ct.stats(stream=False)

ct.stop(timeout=1)
assert ct.wait()["StatusCode"] == 137, ct.wait()  # sh -c ... exec sleep ignores SIGTERM as pid 1
ct.remove(v=True)
try:
    c.containers.get(ct.id)
    raise AssertionError("the container is still there")
except NotFound:
    pass

# Volumes.
vol = c.volumes.create(f"pyvol{tag}", labels={"site": "t1"})
assert vol.name in [v.name for v in c.volumes.list(filters={"label": "site=t1"})]
assert c.containers.run(image, ["sh", "-c", "echo v > /v/f; cat /v/f"], volumes={vol.name: {"bind": "/v", "mode": "rw"}}, remove=True) == b"v\n"
vol.remove()

# Clean up everything the session made.
net.remove()
c.images.remove(committed.id)
c.images.remove(image)
assert c.containers.list(all=True) == []
time.sleep(0.5)
stream.close()

# The events the session caused, in order, also when asked for afterwards with since/until.
actions = [e["Action"] for e in events if e.get("Type") == "container" and e["Actor"]["Attributes"].get("name") == f"py{tag}"]
for want in ["create", "start", "exec_create", "exec_start", "exec_die", "commit", "kill", "die", "stop", "destroy"]:
    assert want in actions, (want, actions)
order = [actions.index(a) for a in ["create", "start", "kill", "die", "stop", "destroy"]]
assert order == sorted(order), actions
past = list(c.events(since=since, until=int(time.time()) + 1, decode=True, filters={"type": "network", "network": net.id}))
assert [e["Action"] for e in past] == ["create", "connect", "disconnect", "destroy"], past
summary["events"] = actions
print(json.dumps(summary))
