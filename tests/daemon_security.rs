//! End-to-end tests of containers' security and process settings through `berth daemon`
//! with the real docker CLI (issue 5): Docker's default seccomp profile (and `seccomp=
//! unconfined`, a profile file, `--privileged`), the other `--security-opt`s, `--init` (and
//! the daemon's `--init`/`--init-path`), `--device` and `--device-cgroup-rule`, `--pid/--uts/
//! --ipc host`, `--cgroupns`, `--ulimit`, `--sysctl`, `--shm-size`, `--group-add`,
//! `--oom-score-adj`, `--cgroup-parent` and `--oom-kill-disable`. Each is checked from inside
//! the container (`/proc/self/status`, `/proc/1/cmdline`, `ulimit`, `/proc/sys`, `df`, `id`)
//! or on the host (namespaces, cgroup files), and bad input gets a clear error and leaves no
//! container behind.
//!
//! Needs root (namespaces, overlay, cgroups, loop devices). Every shim, mount, cgroup and loop
//! device a test leaves is removed by a guard, also when the test fails.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use berth_testkit::{ImageBuilder, Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

/// `docker run --rm --network none ARGS…` (flags, then `busybox`, then the command).
fn run_in(daemon: &DaemonProcess, flags: &[&str], cmd: &str) -> Output {
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend_from_slice(flags);
    args.extend(["busybox", "sh", "-c", cmd]);
    daemon.docker(&args)
}

/// [`run_in`], and its stdout; panics unless it succeeds.
fn run_ok(daemon: &DaemonProcess, flags: &[&str], cmd: &str) -> String {
    let out = run_in(daemon, flags, cmd);
    assert!(out.status.success(), "{out}\n--- daemon log\n{}", daemon.log());
    println!("$ docker run {} busybox sh -c '{cmd}'\n{}", flags.join(" "), out.stdout);
    out.stdout
}

/// `docker run …` that must fail: its stderr.
fn run_err(daemon: &DaemonProcess, flags: &[&str], cmd: &str) -> String {
    let out = run_in(daemon, flags, cmd);
    assert!(!out.status.success(), "accepted: {out}");
    println!("$ docker run {} busybox …\n{}", flags.join(" "), out.stderr.trim_end());
    out.stderr
}

/// The value of `key:` in a `/proc/<pid>/status` text.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in\n{status}"))
        .trim()
        .to_owned()
}

/// No container is left (after refused creates).
fn assert_no_containers(daemon: &DaemonProcess) {
    let out = daemon.docker_ok(&["ps", "-aq"]);
    assert_eq!(out.stdout, "", "containers left behind");
}

/// The test process's own namespace `kind` (the host's).
fn host_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .expect("read own namespace")
        .display()
        .to_string()
}

/// A second daemon (with its own cleanup guard) and the busybox image.
fn daemon_named(dir: &Path, name: &str, extra: &[&str]) -> (ContainerCleanup, DaemonProcess) {
    let cleanup = ContainerCleanup {
        dir: dir.to_path_buf(),
        data_root: Paths::new(dir, name).data_root,
    };
    let daemon = DaemonProcess::start(dir, name, extra);
    let archive = dir.join(format!("{name}-busybox.tar"));
    ImageBuilder::new()
        .write_docker_archive(&archive, "busybox:latest")
        .expect("write the busybox archive");
    daemon.docker_ok(&["load", "-i", archive.to_str().expect("utf-8 path")]);
    (cleanup, daemon)
}

/// Docker's default capability set as `/proc/<pid>/status` prints it: CHOWN, DAC_OVERRIDE,
/// FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD,
/// AUDIT_WRITE, SETFCAP.
const DEFAULT_CAPS: &str = "00000000a80425fb";

fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[test]
fn seccomp_and_security_opts() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());

    // Docker's default profile: filter mode, and unshare(CLONE_NEWUSER) (no capability needed
    // by the kernel) is refused by seccomp; fork and pipes work (clone without namespace flags).
    let out = run_ok(
        &daemon,
        &[],
        "cat /proc/self/status; echo piped | cat; busybox unshare -U true 2>&1; echo unshare=$?",
    );
    assert_eq!(status_field(&out, "Seccomp"), "2", "{out}");
    assert_eq!(status_field(&out, "NoNewPrivs"), "0", "{out}");
    assert!(out.contains("piped\n"), "{out}");
    // Docker's default capability set, nothing more: the daemon's precompiled filter grants
    // CAP_SYS_ADMIN only for the moment it loads it, and drops it again before the command.
    for key in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(status_field(&out, key), DEFAULT_CAPS, "{key}: {out}");
    }
    assert_eq!(status_field(&out, "CapInh"), "0000000000000000", "{out}");
    assert_eq!(status_field(&out, "CapAmb"), "0000000000000000", "{out}");
    assert!(
        out.contains("Operation not permitted") && out.contains("unshare=1"),
        "{out}"
    );
    // No seccomp warning of the runtime leaks into the container's output.
    let out = run_in(&daemon, &[], "true");
    assert!(out.status.success() && out.stderr.is_empty(), "{out}");

    // unconfined: no filter, the same call works.
    let out = run_ok(
        &daemon,
        &["--security-opt", "seccomp=unconfined"],
        "grep Seccomp: /proc/self/status; busybox unshare -U true; echo unshare=$?",
    );
    assert!(out.contains("Seccomp:\t0") && out.contains("unshare=0"), "{out}");
    // The rules follow the final capability set: CAP_SYS_ADMIN allows unshare, still filtered.
    let out = run_ok(
        &daemon,
        &["--cap-add", "SYS_ADMIN"],
        "grep Seccomp: /proc/self/status; busybox unshare -U true; echo unshare=$?",
    );
    assert!(out.contains("Seccomp:\t2") && out.contains("unshare=0"), "{out}");
    // Dropping everything leaves nothing, also the capabilities the filter's loading needs.
    let out = run_ok(
        &daemon,
        &["--cap-drop", "ALL", "--user", "1000"],
        "cat /proc/self/status",
    );
    assert_eq!(status_field(&out, "Seccomp"), "2", "{out}");
    for key in ["CapPrm", "CapEff", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(status_field(&out, key), "0000000000000000", "{key}: {out}");
    }
    let out = run_ok(&daemon, &["--cap-drop", "SETPCAP"], "cat /proc/self/status");
    assert_eq!(status_field(&out, "CapBnd"), "00000000a80424fb", "{out}");
    // --privileged: no filter.
    let out = run_ok(&daemon, &["--privileged"], "grep Seccomp: /proc/self/status");
    assert!(out.contains("Seccomp:\t0"), "{out}");

    // A profile file (moby's format; the CLI sends its contents): mkdir gets EACCES.
    let profile = dir.path().join("no-mkdir.json");
    fs::write(
        &profile,
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        }"#,
    )
    .expect("write profile");
    let opt = format!("seccomp={}", profile.display());
    let out = run_ok(
        &daemon,
        &["--security-opt", &opt],
        "grep Seccomp: /proc/self/status; mkdir /tmp/d 2>&1; echo mkdir=$?; touch /tmp/f && echo touched",
    );
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("Permission denied") && out.contains("mkdir=1"), "{out}");
    assert!(out.contains("touched"), "{out}");
    // docker exec runs under the container's filter too.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "filtered",
        "--network",
        "none",
        "--security-opt",
        &opt,
        "busybox",
        "sleep",
        "30",
    ]);
    let out = daemon.docker(&["exec", "filtered", "mkdir", "/tmp/e"]);
    assert!(
        !out.status.success() && out.stderr.contains("Permission denied"),
        "{out}"
    );
    // With a terminal too, and with the container's capabilities, no more.
    let out = daemon.docker(&["exec", "-t", "filtered", "mkdir", "/tmp/e"]);
    assert!(
        !out.status.success() && out.stdout.contains("Permission denied"),
        "{out}"
    );
    for tty in [&[][..], &["-t"]] {
        let mut args = vec!["exec"];
        args.extend_from_slice(tty);
        args.extend(["filtered", "cat", "/proc/self/status"]);
        let out = daemon.docker_ok(&args).stdout.replace('\r', "");
        assert_eq!(status_field(&out, "Seccomp"), "2", "{tty:?}: {out}");
        assert_eq!(status_field(&out, "NoNewPrivs"), "0", "{tty:?}: {out}");
        for key in ["CapPrm", "CapEff", "CapBnd"] {
            assert_eq!(status_field(&out, key), DEFAULT_CAPS, "{tty:?} {key}: {out}");
        }
    }
    let security_opt = inspect(&daemon, "filtered")["HostConfig"]["SecurityOpt"].clone();
    assert!(
        security_opt[0].as_str().is_some_and(|s| s.starts_with("seccomp={")),
        "{security_opt}"
    );
    daemon.docker_ok(&["rm", "-f", "filtered"]);

    // A broken profile is refused at create.
    let bad = dir.path().join("bad.json");
    fs::write(&bad, r#"{"defaultAction": "SCMP_ACT_SOMETIMES", "syscalls": []}"#).expect("write profile");
    let err = run_err(
        &daemon,
        &["--security-opt", &format!("seccomp={}", bad.display())],
        "true",
    );
    assert!(err.contains("Decoding seccomp profile failed"), "{err}");

    // no-new-privileges, with and without a value.
    let out = run_ok(
        &daemon,
        &["--security-opt", "no-new-privileges"],
        "cat /proc/self/status",
    );
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    assert_eq!(
        status_field(&out, "Seccomp"),
        "2",
        "the filter still loads after the flag"
    );
    let out = run_ok(
        &daemon,
        &["--security-opt", "no-new-privileges=false"],
        "cat /proc/self/status",
    );
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");

    // AppArmor and SELinux: what can be honoured is accepted, the rest named.
    run_ok(
        &daemon,
        &[
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "label=disable",
        ],
        "true",
    );
    let apparmor = fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.starts_with('Y'));
    if !apparmor {
        let err = run_err(&daemon, &["--security-opt", "apparmor=docker-default"], "true");
        assert!(err.contains("AppArmor is not enabled on this host"), "{err}");
    }
    let err = run_err(&daemon, &["--security-opt", "label=type:svirt_t"], "true");
    assert!(err.contains("only label=disable is accepted"), "{err}");
    let err = run_err(&daemon, &["--security-opt", "bogus=1"], "true");
    assert!(err.contains("invalid --security-opt 2: \"bogus=1\""), "{err}");
    let err = run_err(&daemon, &["--security-opt", "no-new-privileges=maybe"], "true");
    assert!(err.contains("invalid --security-opt 2"), "{err}");
    assert_no_containers(&daemon);

    // The container cannot change its own cgroup limits (read-only cgroupfs, as with runc);
    // a privileged one can.
    let write_limit =
        "f=/sys/fs/cgroup/pids/pids.max; [ -e $f ] || f=/sys/fs/cgroup/pids.max; echo max > $f; echo rc=$?";
    for flags in [&[][..], &["--cgroupns", "private"]] {
        let out = run_in(&daemon, flags, write_limit);
        assert!(
            out.stdout == "rc=1\n" && out.stderr.contains("Read-only file system"),
            "{flags:?}: {out}"
        );
    }
    let out = run_in(&daemon, &["--privileged"], write_limit);
    assert_eq!(out.stdout, "rc=0\n", "{out}");

    // docker info names the profile.
    let out = daemon.docker_ok(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(out.stdout.contains("name=seccomp,profile=builtin"), "{out}");
}

/// The states (`R`, `S`, `Z`, …) of the container's processes, read with `docker exec`.
fn process_states(daemon: &DaemonProcess, name: &str) -> Vec<(String, String)> {
    let out = daemon.docker_ok(&["exec", name, "sh", "-c", "cat /proc/[0-9]*/stat"]);
    out.stdout
        .lines()
        .filter_map(|l| {
            let comm = l.split_once('(')?.1.rsplit_once(')')?;
            Some((comm.0.to_owned(), comm.1.split_whitespace().next()?.to_owned()))
        })
        .collect()
}

#[test]
fn init_reaps_zombies_and_daemon_defaults() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    assert!(
        Path::new("/usr/bin/tini-static").exists() || Path::new("/usr/bin/docker-init").exists(),
        "needs an init for --init: Debian's tini package (tini-static); .ci/install-deps installs it"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());

    let out = run_ok(&daemon, &["--init"], "cat /proc/1/cmdline | tr '\\0' ' '");
    assert!(out.starts_with("/sbin/docker-init -- sh -c "), "{out}");
    // Without --init the command is PID 1.
    let out = run_ok(&daemon, &[], "cat /proc/1/cmdline | tr '\\0' ' '");
    assert!(out.starts_with("sh -c "), "{out}");
    // With the host's PID namespace there is no init of the container's (as with dockerd).
    let out = run_ok(
        &daemon,
        &["--init", "--pid", "host"],
        "cat /proc/1/cmdline | tr '\\0' ' '",
    );
    let host_init = fs::read("/proc/1/cmdline").expect("host's PID 1");
    assert!(
        out.starts_with(&String::from_utf8_lossy(&host_init).replace('\0', " ")),
        "{out}"
    );

    // An orphan's zombie: PID 1 `sleep` never reaps it, docker-init does.
    let zombie = "sh -c 'sleep 0.1 &'; exec sleep 30";
    for (name, flags) in [("noinit", vec![]), ("withinit", vec!["--init"])] {
        let mut args = vec!["run", "-d", "--name", name, "--network", "none"];
        args.extend(flags);
        args.extend(["busybox", "sh", "-c", zombie]);
        daemon.docker_ok(&args);
    }
    let mut states = Vec::new();
    wait_until("the orphan's exit", Duration::from_secs(10), || {
        states = process_states(&daemon, "noinit");
        states.iter().any(|(_, s)| s == "Z")
    });
    println!("without --init: {states:?}");
    thread::sleep(Duration::from_millis(300));
    let states = process_states(&daemon, "withinit");
    println!("with --init: {states:?}");
    assert_eq!(states.iter().filter(|(c, _)| c == "sleep").count(), 1, "{states:?}");
    assert!(!states.iter().any(|(_, s)| s == "Z"), "docker-init reaps: {states:?}");
    assert_eq!(
        states.iter().find(|(c, _)| c == "docker-init").map(|(_, s)| s.as_str()),
        Some("S")
    );
    assert_eq!(inspect(&daemon, "withinit")["HostConfig"]["Init"], true);
    assert!(inspect(&daemon, "noinit")["HostConfig"]["Init"].is_null());
    // docker stop reaches the command through docker-init.
    let out = daemon.docker_ok(&["stop", "-t", "5", "withinit"]);
    assert_eq!(out.stdout.trim(), "withinit");
    daemon.docker_ok(&["rm", "-f", "noinit", "withinit"]);

    // The daemon's --init: every container gets one unless it says --init=false.
    let (_c2, with_default) = daemon_named(dir.path(), "initd", &["--init"]);
    let out = run_ok(&with_default, &[], "cat /proc/1/cmdline | tr '\\0' ' '");
    assert!(out.starts_with("/sbin/docker-init -- "), "{out}");
    let out = run_ok(&with_default, &["--init=false"], "cat /proc/1/cmdline | tr '\\0' ' '");
    assert!(out.starts_with("sh -c "), "{out}");

    // --init-path naming nothing: --init fails at create, naming the path and the flag.
    let (_c3, no_init) = daemon_named(dir.path(), "noinitd", &["--init-path", "/nonexistent/docker-init"]);
    let err = run_err(&no_init, &["--init"], "true");
    assert!(
        err.contains("/nonexistent/docker-init") && err.contains("--init-path"),
        "{err}"
    );
    assert_no_containers(&no_init);
    run_ok(&no_init, &[], "true");
}

/// A loop device over a file, detached when dropped.
struct LoopDevice {
    device: PathBuf,
    file: PathBuf,
}

impl LoopDevice {
    fn new(file: &Path) -> LoopDevice {
        let mut data = vec![0u8; 64 << 10];
        data[..15].copy_from_slice(b"berth-loop-data");
        fs::write(file, data).expect("write the loop file");
        let out = run(
            Command::new("losetup").args(["--find", "--show"]).arg(file),
            CLI_TIMEOUT,
        );
        assert!(out.status.success(), "needs loop devices (losetup): {out}");
        LoopDevice {
            device: PathBuf::from(out.stdout.trim()),
            file: file.to_path_buf(),
        }
    }

    /// (major, minor).
    fn numbers(&self) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let rdev = fs::metadata(&self.device).expect("stat the loop device").rdev();
        (
            ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
            (rdev & 0xff) | ((rdev >> 12) & !0xff),
        )
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

#[test]
fn devices_and_device_cgroup_rules() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());

    // A character device under another name.
    let out = run_ok(
        &daemon,
        &["--device", "/dev/null:/dev/mynull"],
        "ls -l /dev/mynull; echo hi > /dev/mynull && echo wrote; cat /dev/mynull && echo read",
    );
    assert!(out.starts_with("crw-rw-rw-") && out.contains("1,   3 "), "{out}");
    assert!(out.contains("wrote\nread\n"), "{out}");

    // A block device: its data from inside, writes reach the host's file; `:r` refuses writes.
    let lo = LoopDevice::new(&dir.path().join("loop.img"));
    let map = format!("{}:/dev/xvdb", lo.device.display());
    let out = run_ok(
        &daemon,
        &["--device", &map],
        "head -c 15 /dev/xvdb; echo; printf W | busybox dd of=/dev/xvdb bs=1 seek=100 conv=notrunc 2>/dev/null && echo wrote",
    );
    assert_eq!(out, "berth-loop-data\nwrote\n");
    let _ = Command::new("sync").status();
    let data = fs::read(&lo.file).expect("read the loop file");
    assert_eq!(data[100], b'W', "the write reached the device");
    let map_ro = format!("{map}:r");
    let out = run_ok(
        &daemon,
        &["--device", &map_ro],
        "head -c 15 /dev/xvdb; echo; printf X | busybox dd of=/dev/xvdb bs=1 seek=101 conv=notrunc 2>&1; echo rc=$?",
    );
    assert!(out.starts_with("berth-loop-data\n"), "{out}");
    assert!(out.contains("Operation not permitted") && out.contains("rc=1"), "{out}");

    // --device-cgroup-rule: a node made inside opens only when a rule allows it.
    let (major, minor) = lo.numbers();
    let mknod = format!("busybox mknod /tmp/blk b {major} {minor} && head -c 15 /tmp/blk 2>&1; echo; echo rc=$?");
    let out = run_ok(&daemon, &[], &mknod);
    assert!(out.contains("Operation not permitted"), "without a rule: {out}");
    let rule = format!("b {major}:* r");
    let out = run_ok(&daemon, &["--device-cgroup-rule", &rule], &mknod);
    assert!(out.starts_with("berth-loop-data"), "with {rule:?}: {out}");

    // What is not a device is refused at create, and nothing is left.
    let err = run_err(&daemon, &["--device", "/proc/version"], "true");
    assert!(
        err.contains(
            "error gathering device information while adding custom device \"/proc/version\": not a device node"
        ),
        "{err}"
    );
    let err = run_err(&daemon, &["--device", "/dev/no-such-device"], "true");
    assert!(
        err.contains("\"/dev/no-such-device\"") && err.contains("No such file"),
        "{err}"
    );
    assert_no_containers(&daemon);
}

#[test]
fn namespaces_shared_with_the_host() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let ns = "for n in pid uts ipc cgroup; do readlink /proc/self/ns/$n; done";
    let own: Vec<String> = run_ok(&daemon, &[], ns).lines().map(str::to_owned).collect();
    assert_ne!(own[0], host_ns("pid"));
    assert_ne!(own[1], host_ns("uts"));
    assert_ne!(own[2], host_ns("ipc"));

    // --pid host --uts host --ipc host: the host's namespaces, hostname and /dev/shm.
    let probe = format!("berth-test-{}", std::process::id());
    let shm_probe = Path::new("/dev/shm").join(&probe);
    fs::write(&shm_probe, b"x").expect("write a /dev/shm probe");
    let out = run_in(
        &daemon,
        &["--pid", "host", "--uts", "host", "--ipc", "host"],
        &format!("{ns}; hostname; ls /dev/shm"),
    );
    let _ = fs::remove_file(&shm_probe);
    assert!(out.status.success(), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], host_ns("pid"), "{out}");
    assert_eq!(lines[1], host_ns("uts"), "{out}");
    assert_eq!(lines[2], host_ns("ipc"), "{out}");
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(lines[4], hostname.trim(), "{out}");
    assert!(lines[5..].contains(&probe.as_str()), "the host's /dev/shm: {out}");
    // --ipc none: no /dev/shm at all.
    let out = run_ok(&daemon, &["--ipc", "none"], "ls -d /dev/shm 2>&1; echo rc=$?");
    assert!(out.contains("rc=1"), "{out}");
    let err = run_err(&daemon, &["--uts", "host", "--hostname", "web"], "true");
    assert!(err.contains("conflicting options: hostname and the UTS mode"), "{err}");

    // --cgroupns: dockerd's default is the host's on cgroup v1 and private on v2.
    let default_host = !cgroup_v2();
    assert_eq!(own[3] == host_ns("cgroup"), default_host, "default cgroupns: {own:?}");
    daemon.docker_ok(&["create", "--name", "nsdefault", "busybox", "true"]);
    let mode = inspect(&daemon, "nsdefault")["HostConfig"]["CgroupnsMode"].clone();
    assert_eq!(mode, if default_host { "host" } else { "private" });
    daemon.docker_ok(&["rm", "nsdefault"]);
    let out = run_ok(
        &daemon,
        &["--cgroupns", "private"],
        "readlink /proc/self/ns/cgroup; grep -v name= /proc/self/cgroup | head -1",
    );
    let mut lines = out.lines();
    assert_ne!(lines.next(), Some(host_ns("cgroup").as_str()), "{out}");
    assert!(
        lines.next().is_some_and(|l| l.ends_with(":/")),
        "its own cgroup is its root: {out}"
    );
    let out = run_ok(
        &daemon,
        &["--cgroupns", "host"],
        "readlink /proc/self/ns/cgroup; grep -v name= /proc/self/cgroup | head -1",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(host_ns("cgroup").as_str()), "{out}");
    assert!(
        lines.next().is_some_and(|l| l.contains("/berth/")),
        "the host's view: {out}"
    );
    assert_no_containers(&daemon);
}

/// Removes the cgroup directories of a `--cgroup-parent` (leaves first) when dropped.
struct CgroupParentCleanup(&'static str);

impl Drop for CgroupParentCleanup {
    fn drop(&mut self) {
        let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for c in controllers.flatten() {
            let top = c.path().join(self.0.split('/').next().unwrap_or(self.0));
            let mut dirs = Vec::new();
            let mut stack = vec![top];
            while let Some(d) = stack.pop() {
                if let Ok(rd) = fs::read_dir(&d) {
                    stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
                    dirs.push(d);
                }
            }
            for d in dirs.iter().rev() {
                let _ = fs::write(d.join("cgroup.kill"), "1");
                let _ = fs::remove_dir(d);
            }
        }
    }
}

#[test]
fn limits_sysctls_groups_and_cgroups() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());

    // --ulimit.
    let out = run_ok(
        &daemon,
        &["--ulimit", "nofile=1024:2048", "--ulimit", "nproc=77"],
        "ulimit -n; ulimit -Hn; ulimit -u",
    );
    assert_eq!(out, "1024\n2048\n77\n");
    let err = run_err(&daemon, &["--ulimit", "nofile=4096:1024"], "true");
    assert!(
        err.contains("soft limit must be less than or equal to hard limit"),
        "{err}"
    );

    // --sysctl: namespaced ones, in the container's own namespaces only.
    let out = run_ok(
        &daemon,
        &[
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--sysctl",
            "kernel.shmmax=123456789",
        ],
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax",
    );
    assert_eq!(out, "1\n123456789\n");
    let err = daemon.docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "busybox",
        "true",
    ]);
    assert!(
        err.stderr
            .contains("sysctl \"net.ipv4.ip_forward\" is not allowed in the hosts network namespace"),
        "{err}"
    );
    let err = run_err(&daemon, &["--ipc", "host", "--sysctl", "kernel.shmmax=1"], "true");
    assert!(err.contains("is not allowed in the hosts ipc namespace"), "{err}");

    // --shm-size (and the 64 MiB default), in inspect too.
    let out = run_ok(&daemon, &["--shm-size", "8m"], "df -k /dev/shm | tail -1");
    assert_eq!(out.split_whitespace().nth(1), Some("8192"), "{out}");
    let out = run_ok(&daemon, &[], "df -k /dev/shm | tail -1");
    assert_eq!(out.split_whitespace().nth(1), Some("65536"), "{out}");
    daemon.docker_ok(&["create", "--name", "shm", "--shm-size", "8m", "busybox", "true"]);
    assert_eq!(inspect(&daemon, "shm")["HostConfig"]["ShmSize"], 8 << 20);
    daemon.docker_ok(&["rm", "shm"]);

    // --group-add: a name from the image's /etc/group and a number.
    let out = run_ok(&daemon, &["--group-add", "nogroup", "--group-add", "4242"], "id -G");
    let groups: Vec<&str> = out.split_whitespace().collect();
    assert!(groups.contains(&"65534") && groups.contains(&"4242"), "{out}");
    let out = daemon.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--group-add",
        "nosuchgroup",
        "busybox",
        "true",
    ]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("unable to find group nosuchgroup"), "{out}");

    // --oom-score-adj: the container's, not its shim's.
    let out = run_ok(&daemon, &["--oom-score-adj", "500"], "cat /proc/self/oom_score_adj");
    assert_eq!(out, "500\n");
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "scored",
        "--network",
        "none",
        "--oom-score-adj",
        "300",
        "busybox",
        "sleep",
        "30",
    ]);
    let id = inspect(&daemon, "scored")["Id"].as_str().expect("id").to_owned();
    let shim = shim_pid(&daemon.paths.data_root, &id).expect("the shim runs");
    let shim_score = fs::read_to_string(format!("/proc/{shim}/oom_score_adj")).expect("shim's score");
    assert_ne!(shim_score.trim(), "300", "the shim keeps its own OOM score");
    let err = run_err(&daemon, &["--oom-score-adj", "1001"], "true");
    assert!(err.contains("range for oom score adj is [-1000, 1000]"), "{err}");
    daemon.docker_ok(&["rm", "-f", "scored"]);

    // --cgroup-parent: the container's cgroups under it, in every controller.
    let parent = "berth-test-parent/jobs";
    let _parent_cleanup = CgroupParentCleanup("berth-test-parent");
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "parented",
        "--network",
        "none",
        "--cgroup-parent",
        parent,
        "busybox",
        "sleep",
        "30",
    ]);
    let id = inspect(&daemon, "parented")["Id"].as_str().expect("id").to_owned();
    let pids_dir = if cgroup_v2() {
        PathBuf::from("/sys/fs/cgroup").join(parent).join(&id)
    } else {
        PathBuf::from("/sys/fs/cgroup/pids").join(parent).join(&id)
    };
    let procs = fs::read_to_string(pids_dir.join("cgroup.procs")).expect("the container's cgroup under the parent");
    assert!(!procs.trim().is_empty(), "{}", pids_dir.display());
    if !cgroup_v2() {
        assert!(Path::new("/sys/fs/cgroup/memory").join(parent).join(&id).is_dir());
        let out = daemon.docker_ok(&["exec", "parented", "grep", "pids", "/proc/self/cgroup"]);
        assert!(out.stdout.contains(&format!("/{parent}/{id}")), "{out}");
    }
    daemon.docker_ok(&["rm", "-f", "parented"]);
    let err = run_err(&daemon, &["--cgroup-parent", "../../escape"], "true");
    assert!(err.contains("would leave the cgroup hierarchy"), "{err}");

    // --oom-kill-disable: cgroup v1's memory.oom_control; v2 has none, dockerd warns.
    if cgroup_v2() {
        let out = daemon.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--oom-kill-disable",
            "busybox",
            "true",
        ]);
        assert!(out.stderr.contains("OomKillDisable discarded"), "{out}");
    } else {
        daemon.docker_ok(&[
            "run",
            "-d",
            "--name",
            "nooom",
            "--network",
            "none",
            "-m",
            "64m",
            "--oom-kill-disable",
            "busybox",
            "sleep",
            "30",
        ]);
        daemon.docker_ok(&[
            "run",
            "-d",
            "--name",
            "oomable",
            "--network",
            "none",
            "-m",
            "64m",
            "busybox",
            "sleep",
            "30",
        ]);
        for (name, want) in [("nooom", "oom_kill_disable 1"), ("oomable", "oom_kill_disable 0")] {
            let id = inspect(&daemon, name)["Id"].as_str().expect("id").to_owned();
            let control = fs::read_to_string(format!("/sys/fs/cgroup/memory/berth/{id}/memory.oom_control"))
                .expect("memory.oom_control");
            assert!(control.starts_with(want), "{name}: {control}");
        }
        assert_eq!(inspect(&daemon, "nooom")["HostConfig"]["OomKillDisable"], true);
        let out = daemon.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--oom-kill-disable",
            "busybox",
            "true",
        ]);
        assert!(out.status.success(), "{out}");
        assert!(
            out.stderr.contains("no memory limit is set"),
            "a warning without -m: {out}"
        );
        daemon.docker_ok(&["rm", "-f", "nooom", "oomable"]);
    }
    assert_no_containers(&daemon);
}

/// The pid of the shim of container `id` under `data_root`.
fn shim_pid(data_root: &Path, id: &str) -> Option<u32> {
    let marker = data_root
        .join("containers")
        .join(id)
        .join("shim.json")
        .display()
        .to_string();
    fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let cmdline = fs::read(p.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains(" shim ") && cmdline.contains(&marker))
            .then(|| p.file_name().to_string_lossy().parse().ok())
            .flatten()
    })
}
