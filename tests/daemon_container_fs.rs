//! End-to-end tests of a container's filesystem through `berth daemon` with the real docker
//! CLI (issue 5): `docker cp` of a file and a directory in and out of a running, a stopped
//! and a never-started container, into and out of a bind mount, `dir/.` and `-a`;
//! `docker cp` of a missing path fails with dockerd's message; a symlink in the container
//! that points "above" its root (`/evil -> /../../../../tmp/x`) leads inside the container,
//! never to the host, and hostile tarballs sent straight to `PUT /archive` are refused with
//! nothing written; `docker export` lists the container's files; `docker diff`; `docker
//! commit --change --author -m` of a running container whose new image runs with the changes
//! (added, modified and deleted files), shows in `docker history`, saves, loads, and pushes
//! to a `berth registry serve` on loopback; a commit with nothing changed adds no layer; bad
//! commits are refused and leave no image. The time a commit of a 50 MB new file takes is
//! printed (not asserted).
//!
//! Needs root (namespaces, overlay, cgroups). Every shim, mount and cgroup a test leaves is
//! removed by a guard, also when the test fails.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use berth_testkit::{Prereq, RegistryProcess, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

/// A path under the host's /tmp that no one else uses; removed when dropped.
struct HostTmp(PathBuf);

impl HostTmp {
    fn new(tag: &str) -> HostTmp {
        let p = PathBuf::from(format!("/tmp/berth-fs-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        let _ = fs::remove_file(&p);
        HostTmp(p)
    }

    fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for HostTmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        let _ = fs::remove_file(&self.0);
    }
}

/// A tarball sent over the daemon's socket as it is: (status, body).
fn raw_request(daemon: &DaemonProcess, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    daemon.request(method, path, &[("Content-Type", "application/x-tar")], body, false)
}

/// A tarball with raw entry names (hostile ones included): (name, kind, data or link target).
fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        let raw = h.as_gnu_mut().unwrap();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        let payload: &[u8] = if *kind == tar::EntryType::Symlink {
            raw.linkname[..data.len()].copy_from_slice(data.as_bytes());
            b""
        } else {
            data.as_bytes()
        };
        h.set_entry_type(*kind);
        h.set_size(payload.len() as u64);
        h.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_cksum();
        b.append(&h, payload).unwrap();
    }
    b.into_inner().unwrap()
}

fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(root).unwrap().display().to_string());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn cp_in_and_out_of_running_stopped_and_created_containers() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let d = dir.path();
    let vol = d.join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("from-host.txt"), b"host side\n").unwrap();
    fs::write(d.join("hello.txt"), b"hello from the host\n").unwrap();
    fs::create_dir_all(d.join("tree/sub")).unwrap();
    fs::write(d.join("tree/top.txt"), b"top\n").unwrap();
    fs::write(d.join("tree/sub/deep.txt"), b"deep\n").unwrap();
    let out = d.join("out");
    fs::create_dir_all(&out).unwrap();
    let (hello, tree, out_s) = (
        d.join("hello.txt").display().to_string(),
        d.join("tree").display().to_string(),
        out.display().to_string(),
    );

    let vol_arg = format!("{}:/vol", vol.display());
    daemon.docker_ok(&["run", "-d", "--name", "fs1", "-v", &vol_arg, "busybox", "sleep", "300"]);

    // In: a file, a directory (new name), a file into a directory through the bind mount.
    daemon.docker_ok(&["cp", &hello, "fs1:/hello"]);
    let got = daemon.docker_ok(&["exec", "fs1", "cat", "/hello"]);
    assert_eq!(got.stdout, "hello from the host\n", "{got}");
    daemon.docker_ok(&["cp", &tree, "fs1:/newtree"]);
    let got = daemon.docker_ok(&["exec", "fs1", "find", "/newtree"]);
    let found: BTreeSet<String> = got.stdout.lines().map(str::to_owned).collect();
    assert_eq!(
        found,
        set(&["/newtree", "/newtree/top.txt", "/newtree/sub", "/newtree/sub/deep.txt"]),
        "{got}"
    );
    daemon.docker_ok(&["cp", &hello, "fs1:/vol/"]);
    assert_eq!(
        fs::read(vol.join("hello.txt")).unwrap(),
        b"hello from the host\n",
        "a copy under a bind mount lands in its host source"
    );

    // Out: a directory (with its symlink), its contents (`/.`), a file from the bind mount.
    daemon.docker_ok(&["cp", "fs1:/data", &out_s]);
    assert_eq!(
        files_under(&out.join("data")),
        set(&["keep.txt", "keep-link", "opaque", "opaque/new.txt"]),
    );
    assert_eq!(
        fs::read_link(out.join("data/keep-link")).unwrap(),
        Path::new("keep.txt"),
        "symlinks come out as symlinks"
    );
    daemon.docker_ok(&["cp", "fs1:/data/.", &format!("{out_s}/contents")]);
    assert_eq!(
        files_under(&out.join("contents")),
        set(&["keep.txt", "keep-link", "opaque", "opaque/new.txt"]),
    );
    daemon.docker_ok(&["cp", "fs1:/vol/from-host.txt", &format!("{out_s}/from-vol.txt")]);
    assert_eq!(fs::read(out.join("from-vol.txt")).unwrap(), b"host side\n");
    daemon.docker_ok(&["cp", "fs1:/newtree", &format!("{out_s}/roundtrip")]);
    assert_eq!(fs::read(out.join("roundtrip/sub/deep.txt")).unwrap(), b"deep\n");
    // `-`: the tar itself on stdout.
    let got = daemon.docker_ok(&["cp", "fs1:/hello", "-"]);
    let mut a = tar::Archive::new(got.stdout.as_bytes());
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["hello"]);

    // Missing paths, both ways, with dockerd's message.
    let got = daemon.docker(&["cp", "fs1:/nope", &out_s]);
    assert!(!got.status.success(), "{got}");
    assert!(
        got.stderr.contains("Could not find the file /nope in container fs1"),
        "{got}"
    );
    let got = daemon.docker(&["cp", &hello, "fs1:/nope/deeper/x"]);
    assert!(!got.status.success(), "{got}");
    assert!(got.stderr.contains("Could not find the file /nope/deeper"), "{got}");
    let got = daemon.docker(&["cp", &hello, "nosuch:/x"]);
    assert!(got.stderr.contains("No such container"), "{got}");
    // A directory cannot replace a file.
    let got = daemon.docker(&["cp", &tree, "fs1:/hello"]);
    assert!(!got.status.success(), "{got}");

    // Stopped: the root filesystem is mounted for the copy only.
    daemon.docker_ok(&["stop", "-t", "1", "fs1"]);
    let containers = daemon.paths.data_root.join("containers");
    assert_no_mounts_left(&containers);
    daemon.docker_ok(&["cp", &hello, "fs1:/while-stopped.txt"]);
    daemon.docker_ok(&["cp", "fs1:/while-stopped.txt", &format!("{out_s}/stopped.txt")]);
    assert_eq!(fs::read(out.join("stopped.txt")).unwrap(), b"hello from the host\n");
    daemon.docker_ok(&["cp", "fs1:/vol/hello.txt", &format!("{out_s}/stopped-vol.txt")]);
    assert_eq!(fs::read(out.join("stopped-vol.txt")).unwrap(), b"hello from the host\n");
    assert!(
        mounts_under(&containers).is_empty(),
        "the copy's mounts are gone with it: {:?}",
        mounts_under(&containers)
    );
    daemon.docker_ok(&["start", "fs1"]);
    let got = daemon.docker_ok(&["exec", "fs1", "cat", "/while-stopped.txt"]);
    assert_eq!(got.stdout, "hello from the host\n", "{got}");

    // Never started: the copy is there at the first start. `-a` gives the file the
    // container's user.
    daemon.docker_ok(&[
        "create",
        "--name",
        "fs2",
        "--user",
        "nobody",
        "busybox",
        "sh",
        "-c",
        "stat -c '%u %n' /given; cat /given",
    ]);
    daemon.docker_ok(&["cp", "-a", &hello, "fs2:/given"]);
    daemon.docker_ok(&["cp", "fs2:/etc/passwd", &format!("{out_s}/passwd")]);
    assert!(
        fs::read_to_string(out.join("passwd"))
            .unwrap()
            .starts_with("root:x:0:0")
    );
    let got = daemon.docker_ok(&["start", "-a", "fs2"]);
    assert_eq!(got.stdout, "65534 /given\nhello from the host\n", "{got}");

    daemon.docker_ok(&["rm", "-f", "fs1", "fs2"]);
}

#[test]
fn cp_stays_inside_the_container() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let d = dir.path();
    fs::write(d.join("payload.txt"), b"payload\n").unwrap();
    let payload = d.join("payload.txt").display().to_string();
    let escape = HostTmp::new("escape");
    let missing = HostTmp::new("missing");
    let (esc, mis) = (escape.name(), missing.name());

    daemon.docker_ok(&["run", "-d", "--name", "fs3", "busybox", "sleep", "300"]);
    // Symlinks that point "above" the root; one target exists in the container, one not.
    let script =
        format!("ln -s /../../../../tmp/{esc} /evil && mkdir /tmp/{esc} && ln -s ../../../../../tmp/{mis} /evil2");
    daemon.docker_ok(&["exec", "fs3", "sh", "-c", &script]);

    // The stat's link target is resolved inside the container.
    let got = daemon.docker_ok(&["cp", "-L", "fs3:/evil", "-"]);
    assert!(got.status.success(), "{got}");
    daemon.docker_ok(&["cp", &payload, "fs3:/evil/"]);
    daemon.docker_ok(&["cp", &payload, "fs3:/evil2"]);
    assert!(
        !escape.0.exists(),
        "docker cp wrote to the host's {}",
        escape.0.display()
    );
    assert!(
        !missing.0.exists(),
        "docker cp wrote to the host's {}",
        missing.0.display()
    );
    let got = daemon.docker_ok(&[
        "exec",
        "fs3",
        "cat",
        &format!("/tmp/{esc}/payload.txt"),
        &format!("/tmp/{mis}"),
    ]);
    assert_eq!(
        got.stdout, "payload\npayload\n",
        "both copies landed inside the container\n{got}"
    );
    // Out through the symlink: the container's file, not the host's.
    fs::create_dir_all(&escape.0).unwrap();
    fs::write(escape.0.join("payload.txt"), b"HOST FILE\n").unwrap();
    let got = daemon.docker_ok(&["cp", "fs3:/evil/payload.txt", "-"]);
    assert!(
        got.stdout.contains("payload\n") && !got.stdout.contains("HOST FILE"),
        "{got}"
    );
    fs::remove_dir_all(&escape.0).unwrap();

    // Hostile tarballs straight to the API: `..` names, a symlink then a file through it, an
    // absolute symlink as the destination's parent. Each is refused; nothing reaches the host.
    let dotdot = raw_tar(&[(&format!("../../../../tmp/{esc}"), tar::EntryType::Regular, "pwned")]);
    let (status, body) = raw_request(&daemon, "PUT", "/v1.45/containers/fs3/archive?path=/", &dotdot);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("'..'"), "{body}");
    let through = raw_tar(&[
        ("link", tar::EntryType::Symlink, &format!("/tmp/{mis}")),
        ("link/x", tar::EntryType::Regular, "pwned"),
    ]);
    fs::create_dir_all(&missing.0).unwrap();
    let (status, body) = raw_request(&daemon, "PUT", "/v1.45/containers/fs3/archive?path=/", &through);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("symlink"), "{body}");
    assert!(
        fs::read_dir(&missing.0).unwrap().next().is_none(),
        "nothing may be written into the host's {}",
        missing.0.display()
    );
    // Extraction to /evil follows the symlink inside the container.
    let plain = raw_tar(&[("dropped.txt", tar::EntryType::Regular, "dropped\n")]);
    let (status, body) = raw_request(&daemon, "PUT", "/v1.45/containers/fs3/archive?path=/evil", &plain);
    assert_eq!(status, 200, "{body}");
    assert!(!escape.0.exists());
    let got = daemon.docker_ok(&["exec", "fs3", "cat", &format!("/tmp/{esc}/dropped.txt")]);
    assert_eq!(got.stdout, "dropped\n");
    // Bad requests: no path, a file as the extraction point, a missing one.
    let (status, body) = raw_request(&daemon, "PUT", "/v1.45/containers/fs3/archive", &plain);
    assert_eq!(status, 400, "{body}");
    let (status, body) = raw_request(&daemon, "PUT", "/v1.45/containers/fs3/archive?path=/etc/passwd", &plain);
    assert_eq!(
        (status, body.contains("extraction point is not a directory")),
        (400, true),
        "{body}"
    );
    let (status, body) = raw_request(&daemon, "PUT", "/v1.45/containers/fs3/archive?path=/nowhere", &plain);
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("Could not find the file /nowhere in container fs3"),
        "{body}"
    );

    // A read-only root filesystem refuses, like dockerd.
    daemon.docker_ok(&["run", "-d", "--name", "fs3ro", "--read-only", "busybox", "sleep", "300"]);
    let got = daemon.docker(&["cp", &payload, "fs3ro:/"]);
    assert!(got.stderr.contains("container rootfs is marked read-only"), "{got}");
    daemon.docker_ok(&["rm", "-f", "fs3", "fs3ro"]);
}

#[test]
fn export_diff_commit_history_save() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let d = dir.path();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    daemon.docker_ok(&["run", "-d", "--name", "fs4", "busybox", "sleep", "300"]);
    let got = daemon.docker_ok(&["diff", "fs4"]);
    assert_eq!(
        got.stdout, "",
        "a fresh container has no changes (the runtime's mount points are none)\n{got}"
    );
    daemon.docker_ok(&[
        "exec",
        "fs4",
        "sh",
        "-c",
        "echo hi > /hello && rm /data/keep.txt && mkdir -p /a/b && echo x > /a/b/c && touch /etc/passwd",
    ]);
    let got = daemon.docker_ok(&["diff", "fs4"]);
    println!("$ docker diff fs4\n{}", got.stdout);
    let lines: BTreeSet<String> = got.stdout.lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        set(&[
            "A /a",
            "A /a/b",
            "A /a/b/c",
            "C /data",
            "D /data/keep.txt",
            "A /hello",
            "C /etc",
            "C /etc/passwd",
        ]),
        "{got}"
    );

    // Export: the files, without what is mounted.
    let export = d.join("fs4.tar");
    daemon.docker_ok(&["export", "-o", export.to_str().unwrap(), "fs4"]);
    let listed = Command::new("tar").arg("-tf").arg(&export).output().expect("tar -t");
    assert!(listed.status.success());
    let names: BTreeSet<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    for want in [
        "hello",
        "a/b/c",
        "bin/busybox",
        "bin/sh",
        "etc/passwd",
        "data/keep-link",
    ] {
        assert!(names.contains(want), "{want} missing from the export: {names:?}");
    }
    assert!(!names.contains("data/keep.txt"), "a deleted file is exported");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("proc/") && n != "proc/" || n.starts_with("sys/") && n != "sys/"),
        "mounted filesystems are exported: {names:?}"
    );

    // Commit while running (paused meanwhile), with a change, an author and a message.
    let got = daemon.docker_ok(&[
        "commit",
        "--change",
        r#"CMD ["cat","/hello"]"#,
        "--change",
        "ENV COMMITTED=yes",
        "--author",
        "Ann Admin <ann@example.org>",
        "-m",
        "hello added",
        "fs4",
        "fs-test:v1",
    ]);
    let id = got.stdout.trim().to_owned();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{got}");
    let got = daemon.docker_ok(&["exec", "fs4", "echo", "still running"]);
    assert_eq!(
        got.stdout, "still running\n",
        "the container is thawed after the commit"
    );
    let got = daemon.docker_ok(&["run", "--rm", "fs-test:v1"]);
    assert_eq!(got.stdout, "hi\n", "{got}");
    let got = daemon.docker_ok(&[
        "run",
        "--rm",
        "fs-test:v1",
        "sh",
        "-c",
        "test -e /data/keep.txt && echo present; cat /a/b/c; echo $COMMITTED",
    ]);
    assert_eq!(got.stdout, "x\nyes\n", "deleted stays deleted, added is there\n{got}");
    let v: serde_json::Value =
        serde_json::from_str(&daemon.docker_ok(&["image", "inspect", "fs-test:v1"]).stdout).unwrap();
    let img = &v[0];
    assert_eq!(img["Id"], id.as_str());
    assert_eq!(img["Author"], "Ann Admin <ann@example.org>");
    assert_eq!(img["Comment"], "hello added");
    assert_eq!(img["Config"]["Cmd"], serde_json::json!(["cat", "/hello"]));
    let base: serde_json::Value =
        serde_json::from_str(&daemon.docker_ok(&["image", "inspect", "busybox"]).stdout).unwrap();
    let base_layers = base[0]["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), base_layers + 1);
    let got = daemon.docker_ok(&["history", "--no-trunc", "fs-test:v1"]);
    println!("$ docker history fs-test:v1\n{}", got.stdout);
    let top = got.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        top.starts_with(&id) && top.contains("sleep 300") && top.contains("hello added"),
        "{got}"
    );
    assert_eq!(got.stdout.lines().count(), base_layers + 2, "{got}");

    // Commit event.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let until = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    let got = daemon.docker_ok(&[
        "events",
        "--since",
        &started.to_string(),
        "--until",
        &until,
        "--filter",
        "event=commit",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.imageRef}} {{.Actor.Attributes.comment}}",
    ]);
    assert_eq!(got.stdout.trim(), "commit fs4 fs-test:v1 hello added", "{got}");

    // Save, remove, load: the same image, still runnable.
    let saved = d.join("committed.tar");
    daemon.docker_ok(&["save", "-o", saved.to_str().unwrap(), "fs-test:v1"]);
    daemon.docker_ok(&["rmi", "fs-test:v1"]);
    daemon.docker_ok(&["load", "-i", saved.to_str().unwrap()]);
    let got = daemon.docker_ok(&["image", "inspect", "--format", "{{.Id}}", "fs-test:v1"]);
    assert_eq!(got.stdout.trim(), id);
    let got = daemon.docker_ok(&["run", "--rm", "fs-test:v1"]);
    assert_eq!(got.stdout, "hi\n", "{got}");

    // A container paused by hand stays paused through a commit (whose own freeze is then
    // not needed, and whose thaw must not undo the user's pause).
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "fs6",
        "--network",
        "none",
        "busybox",
        "sleep",
        "300",
    ]);
    daemon.docker_ok(&["pause", "fs6"]);
    daemon.docker_ok(&["commit", "fs6", "fs-test:paused"]);
    let got = daemon.docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.Paused}} {{.Id}}",
        "fs6",
    ]);
    assert!(got.stdout.starts_with("paused true "), "{got}");
    // The freezer itself, where the cgroup has one (v1); v2 keeps it in cgroup.freeze.
    let id = got.stdout.split_whitespace().nth(2).unwrap_or_default();
    let v1 = Path::new("/sys/fs/cgroup/freezer/berth").join(id).join("freezer.state");
    let v2 = Path::new("/sys/fs/cgroup/berth").join(id).join("cgroup.freeze");
    match (fs::read_to_string(&v1), fs::read_to_string(&v2)) {
        (Ok(state), _) => assert_eq!(state.trim(), "FROZEN", "after the commit"),
        (_, Ok(state)) => assert_eq!(state.trim(), "1", "after the commit"),
        _ => panic!("no freezer file for {id}"),
    }
    daemon.docker_ok(&["rm", "-f", "fs6"]);

    // A stopped container with nothing changed: a new image, no new layer.
    daemon.docker_ok(&["create", "--name", "fs5", "busybox", "true"]);
    let got = daemon.docker_ok(&["commit", "--pause=false", "fs5", "fs-test:empty"]);
    assert!(got.stdout.trim().starts_with("sha256:"), "{got}");
    let got = daemon.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        "fs-test:empty",
    ]);
    assert_eq!(got.stdout.trim(), base_layers.to_string());
    let got = daemon.docker_ok(&["history", "fs-test:empty"]);
    assert!(got.stdout.lines().nth(1).unwrap_or_default().contains("0B"), "{got}");

    // Refused: a change commit cannot apply, a bad name, an unknown container. No image is
    // left behind by any of them.
    let before = daemon.docker_ok(&["images", "-q", "-a"]).stdout;
    let got = daemon.docker(&["commit", "--change", "RUN rm -rf /", "fs4", "fs-test:bad"]);
    assert!(
        !got.status.success() && got.stderr.contains("RUN is not supported"),
        "{got}"
    );
    let got = daemon.docker(&["commit", "fs4", "Not/A:Valid:Name"]);
    assert!(
        !got.status.success() && got.stderr.contains("invalid reference format"),
        "{got}"
    );
    let got = daemon.docker(&["commit", "nosuch", "fs-test:x"]);
    assert!(got.stderr.contains("No such container: nosuch"), "{got}");
    assert_eq!(daemon.docker_ok(&["images", "-q", "-a"]).stdout, before);

    daemon.docker_ok(&["rm", "-f", "fs4", "fs5"]);
}

#[test]
fn commit_a_big_layer_and_push_it() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let registry = RegistryProcess::start(
        Path::new(env!("CARGO_BIN_EXE_berth")),
        &["--root", dir.path().join("registry").to_str().unwrap()],
    )
    .expect("start the registry");
    let host = registry.addr().to_string();

    daemon.docker_ok(&["run", "-d", "--name", "big", "busybox", "sleep", "300"]);
    daemon.docker_ok(&[
        "exec",
        "big",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/big.bin bs=1048576 count=50 2>/dev/null && md5sum /big.bin > /big.md5",
    ]);
    let name = format!("{host}/fs/big:1");
    let t = Instant::now();
    daemon.docker_ok(&["commit", "big", &name]);
    println!(
        "docker commit of a container with a new 50 MiB file took {:?}",
        t.elapsed()
    );
    let got = daemon.docker_ok(&["run", "--rm", &name, "md5sum", "-c", "/big.md5"]);
    assert_eq!(got.stdout, "/big.bin: OK\n", "{got}");

    let got = daemon.docker_ok(&["push", &name]);
    println!("$ docker push {name}\n{}", got.stdout);
    daemon.docker_ok(&["rm", "-f", "big"]);
    daemon.docker_ok(&["rmi", &name]);
    let got = daemon.docker_ok(&["pull", &name]);
    assert!(got.stdout.contains("Downloaded newer image"), "{got}");
    let got = daemon.docker_ok(&["run", "--rm", &name, "md5sum", "-c", "/big.md5"]);
    assert_eq!(
        got.stdout, "/big.bin: OK\n",
        "the pulled-back image has the committed layer\n{got}"
    );
    let md = fs::metadata(dir.path().join("registry")).unwrap();
    assert!(md.is_dir() && md.uid() == 0);
}
