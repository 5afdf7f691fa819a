//! End-to-end tests of containers through `berth daemon` with the real docker CLI (issue 5):
//! `docker run --rm IMG echo hi` prints `hi`; `run -i` feeds stdin; exit codes propagate; a command missing from
//! the image fails with dockerd's message and exit code 127; `run -d` + `logs` + `stop` +
//! `rm`; `ps -a` and its filters; `inspect`; a name conflict (409); an unknown image; `rmi` of
//! an image a container uses (409); `--network none|host`, bind mounts `ro`, `--cap-add`,
//! `--privileged`; and a daemon restart (SIGTERM, start again) that re-adopts a running
//! container, whose logs continue and which `docker stop` then stops; container events;
//! live restore: 20 containers survive `kill -9` of the daemon, their logs go on without a
//! lost or repeated line, and one that exited meanwhile reports its real exit code.
//!
//! Needs root (namespaces, overlay, cgroups). Every shim, mount and cgroup a test leaves is
//! removed by a guard, also when the test fails.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use berth_testkit::{Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

#[test]
fn run_rm_exit_codes_ps_inspect_and_bad_input() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let containers = daemon.paths.data_root.join("containers");

    // Container events, from a listener started first.
    let mut events = Command::new("docker")
        .env("DOCKER_CONFIG", &daemon.docker_config)
        .args([
            "-H",
            &daemon.paths.host(),
            "events",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .args(["--filter", "type=container", "--filter", "container=evt"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start docker events");
    let events_out = drain(events.stdout.take());
    thread::sleep(Duration::from_millis(300));

    let out = daemon.docker_ok(&["run", "--rm", "--name", "evt", "busybox", "echo", "hi"]);
    println!("$ docker run --rm busybox echo hi\n{}", out.stdout);
    assert_eq!(out.stdout, "hi\n", "{out}");
    let out = daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(out.stdout, "out\n", "{out}");
    assert_eq!(out.stderr, "err\n", "stdout and stderr stay apart\n{out}");

    let out = daemon.docker(&["run", "--rm", "--network", "none", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out}");
    thread::sleep(Duration::from_millis(200));
    let _ = events.kill();
    let _ = events.wait();
    let seen = events_out.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    println!("$ docker events --filter container=evt\n{seen}");
    assert_eq!(
        seen, "create evt\nstart evt\ndie evt\ndestroy evt\n",
        "only evt's events, in order"
    );

    // -i: the client's input is the container's stdin, EOF included.
    let (status, out) = docker_with_input(
        &daemon,
        &[
            "run",
            "-i",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "read a; echo got $a; wc -l",
        ],
        b"one\ntwo\nthree\n",
    );
    assert!(status.success());
    assert_eq!(out, "got one\n2\n");

    let out = daemon.docker(&["run", "--rm", "--network", "none", "busybox", "nosuch"]);
    println!("$ docker run --rm busybox nosuch\n{}", out.stderr);
    assert_eq!(out.status.code(), Some(127), "{out}");
    assert!(
        out.stderr
            .contains("exec: \"nosuch\": executable file not found in $PATH"),
        "{out}"
    );
    assert!(!out.stderr.contains("Error waiting"), "{out}");

    let out = daemon.docker(&["run", "--rm", "--pull", "never", "nosuch/image:v1", "true"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("No such image: nosuch/image:v1"), "{out}");

    // Every --rm container is gone, with its mounts.
    wait_until("--rm containers removed", Duration::from_secs(10), || {
        fs::read_dir(&containers).map(|d| d.count()).unwrap_or(0) == 0
    });
    assert_no_mounts_left(dir.path());

    // create + start, ps, inspect.
    let id = daemon
        .docker_ok(&[
            "create",
            "--name",
            "one",
            "--network",
            "none",
            "-e",
            "SITE=cern",
            "--label",
            "kind=test",
            "busybox",
            "sh",
            "-c",
            "echo created-run; exit 5",
        ])
        .stdout
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "{id}");
    let conflict = daemon.docker(&["create", "--name", "one", "busybox", "true"]);
    assert!(!conflict.status.success(), "{conflict}");
    assert!(
        conflict
            .stderr
            .contains("The container name \"/one\" is already in use by container"),
        "{conflict}"
    );
    let ps = daemon.docker_ok(&["ps", "-a", "--format", "{{.ID}} {{.Names}} {{.Status}}"]);
    println!("$ docker ps -a\n{}", ps.stdout);
    assert_eq!(ps.stdout.trim(), format!("{} one Created", &id[..12]), "{ps}");
    assert_eq!(daemon.docker_ok(&["ps", "-q"]).stdout.trim(), "", "not running");

    let rmi = daemon.docker(&["rmi", "busybox"]);
    assert!(!rmi.status.success(), "{rmi}");
    assert!(rmi.stderr.contains("is using its referenced image"), "{rmi}");

    let start = daemon.docker(&["start", "-a", "one"]);
    assert_eq!(start.stdout, "created-run\n", "{start}");
    let wait = daemon.docker_ok(&["wait", "one"]);
    assert_eq!(wait.stdout.trim(), "5", "{wait}");
    let v = inspect(&daemon, "one");
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["Name"], "/one");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 5);
    assert_eq!(v["State"]["Running"], false);
    assert_eq!(v["Path"], "sh");
    assert_eq!(v["Config"]["Labels"]["kind"], "test");
    assert!(
        v["Config"]["Env"]
            .as_array()
            .expect("Env")
            .iter()
            .any(|e| e == "SITE=cern"),
        "{v}"
    );
    assert_eq!(v["HostConfig"]["NetworkMode"], "none");
    assert!(v["NetworkSettings"]["Networks"]["none"].is_object(), "{v}");
    let ps = daemon.docker_ok(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(ps.stdout.starts_with("one Exited (5)"), "{ps}");
    let ps = daemon.docker_ok(&["ps", "-a", "--filter", "label=kind=other", "-q"]);
    assert_eq!(ps.stdout.trim(), "", "{ps}");
    let logs = daemon.docker_ok(&["logs", "one"]);
    assert_eq!(logs.stdout, "created-run\n", "{logs}");

    daemon.docker_ok(&["rename", "one", "uno"]);
    assert_eq!(inspect(&daemon, "uno")["Name"], "/uno");
    let taken = daemon
        .docker_ok(&["create", "--name", "one", "busybox", "true"])
        .stdout
        .trim()
        .to_owned();
    let clash = daemon.docker(&["rename", "uno", "one"]);
    assert!(
        !clash.status.success() && clash.stderr.contains("is already in use"),
        "{clash}"
    );
    daemon.docker_ok(&["rm", &taken]);
    daemon.docker_ok(&["rename", "uno", "one"]);

    daemon.docker_ok(&["rm", "one"]);
    let gone = daemon.docker(&["inspect", "--type", "container", "one"]);
    assert!(!gone.status.success(), "{gone}");
    assert!(gone.stderr.contains("No such container"), "{gone}");
    // container prune removes what does not run.
    daemon.docker_ok(&["create", "--name", "idle", "busybox", "true"]);
    daemon.docker_ok(&["run", "--name", "done", "--network", "none", "busybox", "true"]);
    let pruned = daemon.docker_ok(&["container", "prune", "-f"]);
    assert!(pruned.stdout.lines().count() >= 2, "{pruned}");
    assert_eq!(daemon.docker_ok(&["ps", "-aq"]).stdout.trim(), "");
    daemon.docker_ok(&["rmi", "busybox"]);
    assert!(fs::read_dir(&containers).map(|d| d.count()).unwrap_or(0) == 0);
    assert_no_mounts_left(dir.path());
}

#[test]
fn detached_logs_stop_rm_and_daemon_restart() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let script = "trap 'echo bye; exit 7' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";
    let id = daemon
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "ticker",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            script,
        ])
        .stdout
        .trim()
        .to_owned();
    wait_until("two ticks", Duration::from_secs(10), || {
        daemon.docker_ok(&["logs", "ticker"]).stdout.lines().count() >= 2
    });
    let tail = daemon.docker_ok(&["logs", "--tail", "1", "ticker"]);
    assert_eq!(tail.stdout.lines().count(), 1, "{tail}");
    assert!(tail.stdout.starts_with("tick "), "{tail}");
    let ts = daemon.docker_ok(&["logs", "--timestamps", "--tail", "1", "ticker"]);
    assert!(ts.stdout.starts_with("20") && ts.stdout.contains("Z tick "), "{ts}");
    let ps = daemon.docker_ok(&["ps", "--format", "{{.ID}} {{.Status}}"]);
    assert!(ps.stdout.starts_with(&format!("{} Up ", &id[..12])), "{ps}");
    let rm = daemon.docker(&["rm", "ticker"]);
    assert!(!rm.status.success(), "{rm}");
    assert!(
        rm.stderr
            .contains("container is running: stop the container before removing or force remove"),
        "{rm}"
    );
    let pid = inspect(&daemon, "ticker")["State"]["Pid"].as_i64().expect("pid");
    assert!(pid > 0);

    // One that ends while no daemon runs: its real exit code is recorded by its shim.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "brief",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 4",
    ]);
    let brief_pid = inspect(&daemon, "brief")["State"]["Pid"].as_i64().expect("pid");

    // The daemon goes away; the container does not.
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "container died with the daemon"
    );
    let lines_before = fs::read_to_string(
        Paths::new(dir.path(), "berth")
            .data_root
            .join("containers")
            .join(&id)
            .join(format!("{id}-json.log")),
    )
    .expect("log file")
    .lines()
    .count();
    wait_until(
        "brief to exit while the daemon is down",
        Duration::from_secs(10),
        || !Path::new(&format!("/proc/{brief_pid}")).exists(),
    );
    thread::sleep(Duration::from_millis(300));

    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    assert!(
        daemon.log().contains("re-adopting running container"),
        "{}",
        daemon.log()
    );
    let ps = daemon.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    println!("$ docker ps (after the restart)\n{}", ps.stdout);
    assert!(ps.stdout.lines().any(|l| l.starts_with("ticker Up ")), "{ps}");
    assert!(!ps.stdout.contains("brief"), "{ps}");
    let brief = inspect(&daemon, "brief");
    assert_eq!(brief["State"]["Status"], "exited", "{brief}");
    assert_eq!(brief["State"]["ExitCode"], 4, "{brief}");
    daemon.docker_ok(&["rm", "brief"]);
    // Output written while no daemon ran is in the log, and it keeps growing.
    let logs = daemon.docker_ok(&["logs", "ticker"]);
    assert!(logs.stdout.lines().count() > lines_before, "{logs}");
    let stop = daemon.docker_ok(&["stop", "ticker"]);
    assert_eq!(stop.stdout.trim(), "ticker");
    let v = inspect(&daemon, "ticker");
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    assert_eq!(
        v["State"]["ExitCode"], 7,
        "the trap ran: SIGTERM reached the container\n{v}"
    );
    assert!(
        daemon
            .docker_ok(&["logs", "--tail", "1", "ticker"])
            .stdout
            .contains("bye")
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    // Stopping a stopped container is not an error (304).
    daemon.docker_ok(&["stop", "ticker"]);
    daemon.docker_ok(&["rm", "ticker"]);
    assert_no_mounts_left(dir.path());
    assert!(cgroup_dirs(&id).is_empty(), "{:?}", cgroup_dirs(&id));

    // docker exec into a running container: output, exit code, stdin, user, workdir, env.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "host1",
        "--network",
        "none",
        "busybox",
        "sleep",
        "300",
    ]);
    let out = daemon.docker(&[
        "exec",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "-e",
        "X=42",
        "host1",
        "sh",
        "-c",
        "echo $X $(id -u) $(pwd); echo err >&2; exit 6",
    ]);
    assert_eq!(out.status.code(), Some(6), "{out}");
    assert_eq!(out.stdout, "42 65534 /tmp\n", "{out}");
    assert_eq!(out.stderr, "err\n", "{out}");
    let (status, out) = docker_with_input(&daemon, &["exec", "-i", "host1", "wc", "-l"], b"a\nb\nc\n");
    assert!(status.success());
    assert_eq!(out.trim(), "3");
    let out = daemon.docker(&["exec", "host1", "nosuch"]);
    assert_eq!(out.status.code(), Some(127), "{out}");
    assert!(out.stderr.contains("executable file not found in $PATH"), "{out}");
    let top = daemon.docker_ok(&["top", "host1"]);
    println!("$ docker top host1\n{}", top.stdout);
    assert!(top.stdout.contains("sleep 300"), "{top}");
    assert_eq!(top.stdout.lines().count(), 2, "only the container's process\n{top}");
    daemon.docker_ok(&["rm", "-f", "host1"]);
    let out = daemon.docker(&["exec", "host1", "true"]);
    assert!(
        !out.status.success() && out.stderr.contains("No such container"),
        "{out}"
    );

    // logs -f follows until the container ends; restart runs it again, appending to the log.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "counter",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo n$i; sleep 0.3; done",
    ]);
    let follow = daemon.docker_ok(&["logs", "-f", "counter"]);
    assert_eq!(follow.stdout, "n1\nn2\nn3\n", "{follow}");
    daemon.docker_ok(&["restart", "counter"]);
    daemon.docker_ok(&["wait", "counter"]);
    let again = daemon.docker_ok(&["logs", "counter"]);
    assert_eq!(again.stdout, "n1\nn2\nn3\nn1\nn2\nn3\n", "{again}");
    daemon.docker_ok(&["rm", "counter"]);

    // rm -f of a running container; kill with a signal.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "victim",
        "--network",
        "none",
        "busybox",
        "sleep",
        "1000",
    ]);
    daemon.docker_ok(&["rm", "-f", "victim"]);
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "kk",
        "--network",
        "none",
        "busybox",
        "sleep",
        "1000",
    ]);
    daemon.docker_ok(&["kill", "kk"]);
    let wait = daemon.docker_ok(&["wait", "kk"]);
    assert_eq!(wait.stdout.trim(), "137", "{wait}");
    daemon.docker_ok(&["rm", "kk"]);
    assert_no_mounts_left(dir.path());
}

#[test]
fn network_modes_mounts_and_capabilities() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        daemon.docker(&all)
    };

    // none: only loopback, and it is up.
    let out = run(&["--network", "none", "busybox", "cat", "/proc/net/dev"]);
    assert!(out.status.success(), "{out}");
    let ifaces: Vec<&str> = out.stdout.lines().skip(2).collect();
    assert_eq!(ifaces.len(), 1, "{out}");
    assert!(ifaces[0].trim_start().starts_with("lo:"), "{out}");
    let out = run(&[
        "--network",
        "none",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "127.0.0.1",
    ]);
    assert!(out.status.success(), "loopback is up\n{out}");
    // host: the host's interfaces.
    let host_ifaces = fs::read_to_string("/proc/net/dev")
        .expect("host net dev")
        .lines()
        .count();
    let out = run(&["--network", "host", "busybox", "cat", "/proc/net/dev"]);
    assert!(out.status.success(), "{out}");
    assert_eq!(out.stdout.lines().count(), host_ifaces, "{out}");
    let bad = run(&["--network", "site", "busybox", "true"]);
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("network site not found"), "{bad}");

    // Bind mounts, ro and rw; tmpfs; hostname and /etc files.
    let data = dir.path().join("data");
    fs::create_dir_all(&data).expect("mkdir");
    fs::write(data.join("in.txt"), "from the host\n").expect("write");
    let ro = format!("{}:/data:ro", data.display());
    let out = run(&[
        "--network",
        "none",
        "-v",
        &ro,
        "busybox",
        "sh",
        "-c",
        "cat /data/in.txt; touch /data/x",
    ]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stdout.contains("from the host"), "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    let rw = format!("{}:/data", data.display());
    let out = run(&[
        "--network",
        "none",
        "-v",
        &rw,
        "--tmpfs",
        "/scratch:size=1m",
        "--hostname",
        "wn1",
        "--add-host",
        "db:192.0.2.9",
        "busybox",
        "sh",
        "-c",
        "echo hi > /data/out.txt && mount | grep -c ' /scratch ' && hostname && grep db /etc/hosts",
    ]);
    assert!(out.status.success(), "{out}");
    assert_eq!(
        fs::read_to_string(data.join("out.txt")).expect("written through the bind"),
        "hi\n"
    );
    assert_eq!(out.stdout, "1\nwn1\n192.0.2.9\tdb\n", "{out}");

    // Capabilities: the default set cannot set the hostname; SYS_ADMIN can.
    let out = run(&["--network", "none", "busybox", "hostname", "x"]);
    assert!(!out.status.success(), "{out}");
    let out = run(&[
        "--network",
        "none",
        "--cap-add",
        "SYS_ADMIN",
        "busybox",
        "sh",
        "-c",
        "hostname x && hostname",
    ]);
    assert!(out.status.success(), "{out}");
    assert_eq!(out.stdout, "x\n");
    let out = run(&[
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "busybox",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(out.stdout.contains("0000000000000000"), "{out}");
    let bad = run(&["--cap-add", "BOGUS", "busybox", "true"]);
    assert!(bad.stderr.contains("unknown capability: \"CAP_BOGUS\""), "{bad}");
    // --privileged: the host's bounding set and its devices.
    let host_bnd = fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .expect("CapBnd")
        .to_owned();
    let out = run(&[
        "--network",
        "none",
        "--privileged",
        "busybox",
        "sh",
        "-c",
        "grep CapBnd /proc/self/status; ls /dev",
    ]);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains(&host_bnd), "{out}\nhost {host_bnd}");
    assert!(out.stdout.lines().count() > 12, "host devices visible\n{out}");
    // A flag that is not built yet is refused, not ignored.
    let out = run(&["--blkio-weight", "300", "busybox", "true"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("--blkio-weight"), "{out}");
    let out = run(&["--memory", "1m", "busybox", "true"]);
    assert!(out.stderr.contains("Minimum memory limit allowed is 6MB"), "{out}");

    // cgroup limits are applied: the container sees them, and a fork bomb stays contained.
    let out = run(&[
        "--network",
        "none",
        "--memory",
        "32m",
        "--pids-limit",
        "20",
        "--cpus",
        "0.5",
        "busybox",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max",
    ]);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.starts_with("33554432\n20\n"), "{out}");
    let bomb = "for i in $(seq 30); do sleep 3 & done; echo all-started";
    let out = run(&["--network", "none", "--pids-limit", "10", "busybox", "sh", "-c", bomb]);
    assert!(
        !out.status.success() && !out.stdout.contains("all-started"),
        "pids limit not enforced: {out}"
    );
    let out = run(&["--network", "none", "busybox", "sh", "-c", bomb]);
    assert!(out.status.success() && out.stdout.contains("all-started"), "{out}");
    // --user and --workdir; --read-only.
    let out = run(&[
        "--network",
        "none",
        "--user",
        "1000:1000",
        "-w",
        "/tmp/work",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; pwd",
    ]);
    assert_eq!(out.stdout, "1000\n1000\n/tmp/work\n", "{out}");
    let out = run(&["--network", "none", "--read-only", "busybox", "touch", "/x"]);
    assert!(
        !out.status.success() && out.stderr.contains("Read-only file system"),
        "{out}"
    );
    assert_no_mounts_left(dir.path());
}

/// Runs `docker ARGS` inside a pseudo-terminal (`script`) set up by `stty`, types each part
/// of `input` after 1.5 s, 300 ms apart, and returns the exit status and everything the
/// terminal showed.
fn through_terminal(
    daemon: &DaemonProcess,
    stty: &str,
    args: &str,
    input: &'static [&'static [u8]],
) -> (std::process::ExitStatus, String) {
    let docker = format!(
        "{stty}; DOCKER_CONFIG={} docker -H {} {args}",
        daemon.docker_config.display(),
        daemon.paths.host()
    );
    let mut child = Command::new("script")
        .args(["-qec", &docker, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start script (util-linux)");
    let out = drain(child.stdout.take());
    let mut stdin = child.stdin.take().expect("piped");
    let typist = thread::spawn(move || {
        use std::io::Write;
        thread::sleep(Duration::from_millis(1200));
        for part in input {
            thread::sleep(Duration::from_millis(300));
            let _ = stdin.write_all(part);
            let _ = stdin.flush();
        }
        thread::sleep(Duration::from_secs(3));
    });
    let status = wait_deadline(&mut child, CLI_TIMEOUT).unwrap_or_else(|| panic!("docker {args} did not finish"));
    let _ = typist.join();
    (status, out.recv_timeout(Duration::from_secs(5)).unwrap_or_default())
}

#[test]
fn tty_run_it_through_a_terminal() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    // -t without a terminal on our side: the container still gets one, output is raw.
    let out = daemon.docker_ok(&[
        "run",
        "-t",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "test -t 1 && echo is-a-tty; tty",
    ]);
    assert_eq!(out.stdout, "is-a-tty\r\n/dev/pts/0\r\n", "{out}");
    // -it driven through a pseudo-terminal (`script`): the size, input, output, exit code.
    let (status, out) = through_terminal(
        &daemon,
        "stty rows 33 cols 111",
        "run -it --rm --network none busybox sh",
        &[b"stty size; echo hello-$((1+2)); exit 4\r"],
    );
    println!("$ docker run -it busybox sh (through script)\n{out}");
    assert_eq!(status.code(), Some(4), "{out}");
    assert!(out.contains("33 111\r\n"), "{out}");
    assert!(out.contains("hello-3\r\n"), "{out}");

    // exec -t into a container without a terminal of its own: the exec gets one.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "host",
        "--network",
        "none",
        "busybox",
        "sleep",
        "300",
    ]);
    let out = daemon.docker_ok(&["exec", "-t", "host", "sh", "-c", "test -t 0 && echo exec-tty; tty"]);
    assert!(out.stdout.starts_with("exec-tty\r\n/dev/pts/"), "{out}");
    let out = daemon.docker(&["exec", "-t", "host", "sh", "-c", "exit 6"]);
    assert_eq!(out.status.code(), Some(6), "{out}");
    let out = daemon.docker(&["exec", "-t", "host", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{out}");
    // exec -it through a pseudo-terminal: size, input, output, exit code.
    let (status, out) = through_terminal(
        &daemon,
        "stty rows 21 cols 77",
        "exec -it -e GREETING=hi host sh",
        &[b"stty size; echo $GREETING-$((2+3)); exit 5\r"],
    );
    println!("$ docker exec -it host sh (through script)\n{out}");
    assert_eq!(status.code(), Some(5), "{out}");
    assert!(out.contains("21 77\r\n"), "{out}");
    assert!(out.contains("hi-5\r\n"), "{out}");

    // ctrl-p ctrl-q detaches: the shell runs on with its stdin open, and a later attach
    // reaches the same shell. Other keys through the API (docker-py's raw socket).
    let (status, out) = through_terminal(
        &daemon,
        "stty rows 24 cols 80",
        "run -it --name detached --network none busybox sh",
        // Typed one key at a time, as the CLI looks for the keys in single-byte reads.
        &[b"echo before-$((6*7))\r", b"\x10", b"\x11"],
    );
    println!("$ docker run -it (ctrl-p ctrl-q)\n{out}");
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("before-42"), "{out}");
    assert_eq!(inspect(&daemon, "detached")["State"]["Status"], "running");
    let (status, out) = through_terminal(
        &daemon,
        "stty rows 24 cols 80",
        "attach detached",
        &[b"echo after-$((6*8)); exit 3\r"],
    );
    println!("$ docker attach detached\n{out}");
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.contains("after-48"), "{out}");
    daemon.docker_ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "reader",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "while read l; do echo got-$l; done",
    ]);
    let mut s = std::os::unix::net::UnixStream::connect(&daemon.paths.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    {
        use std::io::{Read, Write};
        s.write_all(b"POST /v1.45/containers/reader/attach?stream=1&stdin=1&stdout=1&detachKeys=ctrl-a,x HTTP/1.1\r\nHost: berth\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n").unwrap();
        s.write_all(b"one\n").unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("got-one") {
            let n = s.read(&mut chunk).expect("the container's answer");
            assert!(n > 0, "the session ended early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
        // The daemon ends the session on the keys: the read ends.
        s.write_all(b"\x01x").unwrap();
        s.read_to_end(&mut got).expect("the session ends on the detach keys");
    }
    assert_eq!(inspect(&daemon, "reader")["State"]["Status"], "running");
    let (status, body) = daemon.request(
        "POST",
        "/v1.45/containers/reader/attach?stream=1&stdout=1&detachKeys=ctrl-",
        &[],
        b"",
        false,
    );
    assert_eq!(status, 400, "{body}");
    daemon.docker_ok(&["rm", "-f", "host", "reader", "detached"]);
    let left: Vec<_> = fs::read_dir(daemon.paths.data_root.join("containers"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "container files left: {left:?}");
}

#[test]
fn kill_9_of_the_daemon_leaves_containers_running() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, mut daemon) = daemon_with_image(dir.path());
    // Twenty containers that count, one line every 0.2 s.
    let names: Vec<String> = (0..20).map(|i| format!("live{i}")).collect();
    for n in &names {
        daemon.docker_ok(&[
            "run",
            "-d",
            "--name",
            n,
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; i=0; while true; do echo up-$i; i=$((i+1)); sleep 0.2; done",
        ]);
    }
    // One that ends on its own, with code 7, once the daemon is down.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "quitter",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; echo bye; exit 7",
    ]);
    let lines_before: Vec<usize> = names
        .iter()
        .map(|n| daemon.docker_ok(&["logs", n]).stdout.lines().count())
        .collect();
    // The shims were forked by the daemon's spawner, under a shim's own command line.
    let spawner = spawner_of(daemon.child.id()).expect("the daemon's shim spawner");
    for n in names.iter().take(3) {
        let shim = shim_of(&daemon, n);
        assert_eq!(ppid(shim), Some(spawner), "{n}'s shim is the spawner's child");
    }

    daemon.child.kill().expect("SIGKILL the daemon");
    let _ = daemon.child.wait();
    wait_until("the spawner to follow the daemon", Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{spawner}")).exists()
    });
    // While the daemon is down: the quitter exits (its shim records the code).
    let data = daemon.paths.data_root.clone();
    drop(daemon);
    let quitter_dir = fs::read_dir(data.join("containers"))
        .expect("containers dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| fs::read_to_string(p.join("container.json")).is_ok_and(|j| j.contains("\"name\": \"quitter\"")))
        .expect("the quitter's directory");
    // Its root filesystem is mounted at rootfs/ (the shim owns the mount).
    fs::write(quitter_dir.join("rootfs/tmp/go"), b"").expect("tell the quitter to go");
    wait_until("the quitter's exit record", Duration::from_secs(10), || {
        quitter_dir.join("exit.json").exists()
    });
    thread::sleep(Duration::from_millis(500));

    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    let ps = daemon.docker_ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    println!("$ docker ps -a (after kill -9 and a restart)\n{}", ps.stdout);
    for n in &names {
        assert!(ps.stdout.contains(&format!("{n} running")), "{n}\n{ps}");
    }
    let q = inspect(&daemon, "quitter");
    assert_eq!(q["State"]["Status"], "exited", "{q}");
    assert_eq!(
        q["State"]["ExitCode"], 7,
        "the real exit code of a container that ended meanwhile"
    );
    assert!(daemon.docker_ok(&["logs", "quitter"]).stdout.contains("bye"));
    // The logs went on while the daemon was away and go on after.
    thread::sleep(Duration::from_millis(600));
    for (n, before) in names.iter().zip(&lines_before) {
        let lines: Vec<String> = daemon
            .docker_ok(&["logs", n])
            .stdout
            .lines()
            .map(str::to_owned)
            .collect();
        assert!(
            lines.len() > before + 2,
            "{n}: {} lines, {before} before the restart",
            lines.len()
        );
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l, &format!("up-{i}"), "{n}: a line lost or repeated");
        }
    }
    let mut args = vec!["stop"];
    args.extend(names.iter().map(String::as_str));
    daemon.docker_ok(&args);
    for n in &names {
        assert_eq!(inspect(&daemon, n)["State"]["ExitCode"], 0, "{n}");
    }
    let mut args = vec!["rm", "quitter"];
    args.extend(names.iter().map(String::as_str));
    daemon.docker_ok(&args);
    assert_no_mounts_left(dir.path());
}

/// The pid of `daemon_pid`'s child `berth shim-spawner`, if it has one.
fn spawner_of(daemon_pid: u32) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let args = cmdline(pid);
        (ppid(pid) == Some(daemon_pid) && args.get(1).map(String::as_str) == Some("shim-spawner")).then_some(pid)
    })
}

/// A process's arguments, without the empty ones a rewritten command line ends with.
fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn ppid(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// The shim of container `name`: its process's parent, checked to be `berth shim CONFIG`.
fn shim_of(daemon: &DaemonProcess, name: &str) -> u32 {
    let pid: u32 = inspect(daemon, name)["State"]["Pid"]
        .as_u64()
        .expect("a running container's pid") as u32;
    let shim = ppid(pid).expect("the container's parent");
    let args = cmdline(shim);
    assert_eq!(
        args.get(1).map(String::as_str),
        Some("shim"),
        "{name}'s parent: {args:?}"
    );
    assert!(
        args.get(2).is_some_and(|c| c.ends_with("/shim.json")) && args.len() == 3,
        "{name}'s shim names its config: {args:?}"
    );
    shim
}

#[test]
fn shims_are_forked_by_the_spawner_and_exec_takes_over_when_it_dies() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let spawner = spawner_of(daemon.child.id()).expect("the daemon starts a shim spawner");
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "forked",
        "--network",
        "none",
        "busybox",
        "sleep",
        "300",
    ]);
    let forked = shim_of(&daemon, "forked");
    assert_eq!(ppid(forked), Some(spawner), "forked by the spawner");
    // Nothing of the spawner's is left open in the shim: stdio and its own descriptors only
    // (the container's output pipes, log, pidfd), never the spawner's socket.
    let fds: Vec<String> = fs::read_dir(format!("/proc/{forked}/fd"))
        .expect("the shim's fds")
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    assert!(
        !fds.iter().any(|t| t.starts_with("socket:")),
        "the shim holds a socket: {fds:?}"
    );
    assert_eq!(
        daemon
            .docker_ok(&[
                "run",
                "--rm",
                "--network",
                "none",
                "busybox",
                "sh",
                "-c",
                "echo via-spawner"
            ])
            .stdout
            .trim(),
        "via-spawner"
    );

    // The spawner dies: running containers go on, new ones start by exec.
    Command::new("kill")
        .args(["-KILL", &spawner.to_string()])
        .status()
        .expect("kill");
    wait_until("the spawner to go", Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{spawner}/cmdline")).exists() || cmdline(spawner).is_empty()
    });
    let out = daemon.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo via-exec; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out}");
    assert_eq!(out.stdout.trim(), "via-exec");
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "execd",
        "--network",
        "none",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(
        ppid(shim_of(&daemon, "execd")),
        Some(daemon.child.id()),
        "exec'd by the daemon"
    );
    assert_eq!(inspect(&daemon, "forked")["State"]["Status"], "running");
    assert!(
        daemon.log().contains("shims are started by exec from now on"),
        "{}",
        daemon.log()
    );
    daemon.docker_ok(&["rm", "-f", "forked", "execd"]);
    assert_no_mounts_left(dir.path());
}

#[test]
fn restart_policies() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--restart",
        "always",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo a; sleep 0.3",
    ]);
    wait_until("on-failure:2 to give up", Duration::from_secs(20), || {
        let v = inspect(&daemon, "flaky");
        v["RestartCount"] == 2 && v["State"]["Status"] == "exited"
    });
    thread::sleep(Duration::from_millis(800));
    let v = inspect(&daemon, "flaky");
    assert_eq!(v["RestartCount"], 2, "{v}");
    assert_eq!(v["State"]["ExitCode"], 1, "{v}");
    assert_eq!(daemon.docker_ok(&["logs", "flaky"]).stdout, "run\nrun\nrun\n");
    wait_until("always to restart twice", Duration::from_secs(20), || {
        inspect(&daemon, "again")["RestartCount"].as_u64().unwrap_or(0) >= 2
    });
    // A stop by hand ends it; the policy leaves it stopped.
    wait_until("again running", Duration::from_secs(10), || {
        inspect(&daemon, "again")["State"]["Running"] == true
    });
    daemon.docker_ok(&["stop", "again"]);
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(inspect(&daemon, "again")["State"]["Status"], "exited");
    // A daemon start brings `always` back, as dockerd does.
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    wait_until("always back after the daemon restart", Duration::from_secs(10), || {
        inspect(&daemon, "again")["State"]["Running"] == true
    });
    assert_eq!(inspect(&daemon, "flaky")["State"]["Status"], "exited");
    daemon.docker_ok(&["rm", "-f", "again", "flaky"]);
    let bad = daemon.docker(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert!(!bad.status.success(), "{bad}");
    assert_no_mounts_left(dir.path());
}
