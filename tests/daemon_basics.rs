//! End-to-end tests of `berth daemon` with the real docker CLI: `docker version`, `docker info`
//! and `docker system events` against it (also pinned to API 1.41), the clear 501 of an
//! endpoint not built yet (`docker network ls`), one daemon per data root, daemons side by side,
//! and a clean SIGTERM (socket and pid file gone).
//!
//! Every daemon runs on its own temp socket, data root, exec root and pid file; the docker CLI
//! gets its own `DOCKER_CONFIG`. A daemon still running when its guard drops is killed.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_testkit::{Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn docker_cli_version_info_events_and_not_implemented() {
    if !require(&[Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProcess::start(
        dir.path(),
        "berth",
        &[
            "--insecure-registry",
            "reg.example:5000",
            "--insecure-registry",
            "10.20.0.0/16",
            "--registry-mirror",
            "https://mirror.example:5000",
        ],
    );
    let paths = Paths::new(dir.path(), "berth");
    let pid = fs::read_to_string(&paths.pidfile).expect("pid file written");
    assert_eq!(pid.trim(), daemon.child.id().to_string());

    let version = daemon.docker_ok(&["version"]);
    println!("$ docker -H {} version\n{}", paths.host(), version.stdout);
    assert!(version.stdout.contains("Server: Berth"), "{version}");
    assert!(
        version.stdout.contains("API version:      1.45 (minimum version 1.24)"),
        "{version}"
    );
    assert!(version.stdout.contains("Go version:       n/a (Rust)"), "{version}");

    let info = daemon.docker_ok(&["info"]);
    println!("$ docker -H {} info\n{}", paths.host(), info.stdout);
    let root = format!("Docker Root Dir: {}", paths.data_root.display());
    for want in [
        root.as_str(),
        "Storage Driver: overlay2",
        "Cgroup Driver: cgroupfs",
        "reg.example:5000",
        "10.20.0.0/16",
        "127.0.0.0/8",
        "https://mirror.example:5000/",
    ] {
        assert!(info.stdout.contains(want), "missing {want:?}\n{info}");
    }
    assert!(info.stderr.trim().is_empty(), "{info}");

    // An older client pinned to 1.41 talks to the same daemon through /v1.41/ paths.
    let old = daemon.docker_env(
        &["version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}}"],
        &[("DOCKER_API_VERSION", "1.41")],
    );
    assert!(old.status.success(), "{old}");
    assert_eq!(old.stdout.trim(), "1.41 1.45", "{old}");
    let old_info = daemon.docker_env(
        &["info", "--format", "{{.DockerRootDir}}"],
        &[("DOCKER_API_VERSION", "1.41")],
    );
    assert!(old_info.status.success(), "{old_info}");
    assert_eq!(old_info.stdout.trim(), paths.data_root.display().to_string());
    let too_new = daemon.docker_env(&["version"], &[("DOCKER_API_VERSION", "1.99")]);
    assert!(!too_new.status.success(), "{too_new}");

    // Events: a window in the past returns at once; one ending in 2 s returns after it.
    let now = unix_now();
    let past = daemon.docker_ok(&[
        "system",
        "events",
        "--since",
        &(now - 60).to_string(),
        "--until",
        &(now - 30).to_string(),
    ]);
    assert!(past.stdout.trim().is_empty(), "{past}");
    let started = Instant::now();
    let until = (unix_now() + 2).to_string();
    let window = daemon.docker_ok(&["system", "events", "--since", &now.to_string(), "--until", &until]);
    assert!(window.stdout.trim().is_empty(), "{window}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "events closed before until"
    );
    let relative = daemon.docker_env(
        &["system", "events", "--until", "1s"],
        &[("DOCKER_API_VERSION", "1.41")],
    );
    assert!(relative.status.success(), "{relative}");

    // Not built yet: a clear error, never a silent success.
    let ps = daemon.docker(&["plugin", "ls"]);
    assert!(!ps.status.success(), "{ps}");
    assert!(ps.stderr.contains("not implemented"), "{ps}");
    assert!(ps.stderr.contains("/plugins"), "{ps}");

    // An events stream left open does not hold the shutdown.
    let mut follower = Command::new("docker")
        .env("DOCKER_CONFIG", &daemon.docker_config)
        .args(["-H", &paths.host(), "system", "events"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker system events");
    thread::sleep(Duration::from_millis(300));
    let (status, log) = daemon.terminate();
    let follower_status = wait_deadline(&mut follower, CLI_TIMEOUT);
    if follower_status.is_none() {
        let _ = follower.kill();
        let _ = follower.wait();
    }
    assert!(status.success(), "daemon exit {status}\n{log}");
    assert!(
        follower_status.is_some(),
        "docker system events still running after daemon exit"
    );
    assert!(!paths.socket.exists(), "socket left behind\n{log}");
    assert!(!paths.pidfile.exists(), "pid file left behind\n{log}");
    assert!(log.contains("daemon listening socket="), "{log}");
}

#[test]
fn second_daemon_on_the_same_data_root_is_refused() {
    if !require(&[Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let first = DaemonProcess::start(dir.path(), "first", &[]);
    // Same data root, everything else its own.
    let second = Paths {
        data_root: first.paths.data_root.clone(),
        ..Paths::new(dir.path(), "second")
    };
    let out = run(&mut second.command(&[]), DAEMON_TIMEOUT);
    assert!(!out.status.success(), "{out}");
    let data_root = first.paths.data_root.display().to_string();
    assert!(
        out.stderr.contains(&data_root),
        "error does not name the data root\n{out}"
    );
    assert!(out.stderr.contains("in use"), "{out}");
    assert!(
        out.stderr.contains(&first.child.id().to_string()),
        "error does not name the pid\n{out}"
    );
    assert!(
        !second.socket.exists() && !second.pidfile.exists(),
        "refused daemon left files"
    );

    // The first one never noticed.
    first.docker_ok(&["version"]);
    assert!(first.paths.pidfile.exists());
    let (status, log) = first.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn daemons_side_by_side_and_config_file() {
    if !require(&[Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let a = DaemonProcess::start(dir.path(), "a", &[]);
    // b takes its data root and a registry from a TOML file; the -H flag wins over the file.
    let b_paths = Paths::new(dir.path(), "b");
    let config = dir.path().join("b.toml");
    fs::write(
        &config,
        format!(
            "host = \"unix:///nonexistent/ignored.sock\"\ndata-root = \"{}\"\ninsecure-registries = [\"site.example:5000\"]\n",
            b_paths.data_root.display()
        ),
    )
    .expect("write config");
    let b = DaemonProcess::start(dir.path(), "b", &["--config", config.to_str().expect("utf-8 path")]);

    let root = |d: &DaemonProcess| d.docker_ok(&["info", "--format", "{{.DockerRootDir}}"]).stdout;
    assert_eq!(root(&a).trim(), a.paths.data_root.display().to_string());
    assert_eq!(root(&b).trim(), b.paths.data_root.display().to_string());
    let id = |d: &DaemonProcess| d.docker_ok(&["info", "--format", "{{.ID}}"]).stdout;
    assert_ne!(id(&a), id(&b));
    let b_info = b.docker_ok(&["info"]);
    assert!(b_info.stdout.contains("site.example:5000"), "{b_info}");

    // A config file with an unknown key is refused, naming it.
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "data_root = \"/x\"\n").expect("write config");
    let c = Paths::new(dir.path(), "c");
    let out = run(
        &mut c.command(&["--config", bad.to_str().expect("utf-8 path")]),
        DAEMON_TIMEOUT,
    );
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("data_root"), "{out}");

    for d in [a, b] {
        let (socket, pidfile) = (d.paths.socket.clone(), d.paths.pidfile.clone());
        let (status, log) = d.terminate();
        assert!(status.success(), "{log}");
        assert!(!socket.exists() && !pidfile.exists(), "left behind\n{log}");
    }
}
