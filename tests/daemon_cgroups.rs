//! End-to-end tests of what a container's cgroup does through `berth daemon` and the real
//! docker CLI (issue 5): `docker pause`/`unpause` through the freezer (also across a daemon
//! restart, and with stop, rm -f and exec of a paused container), `docker stats` (a busy loop
//! shows its CPU, a memory limit shows in MEM USAGE / LIMIT, the API's stream and one-shot
//! shapes, zeros for a stopped container), `docker update` of limits (live in the host's
//! cgroup files, recorded for the next start) and of the restart policy, a fork bomb held
//! by `--pids-limit`, and an OOM kill under `--memory` (`State.OOMKilled`, exit 137).
//!
//! What tests/daemon_containers.rs covers already (limits visible inside the container, a
//! mild process flood under `--pids-limit 10`, `--memory 1m` refused) is not repeated.
//!
//! Needs root (namespaces, overlay, cgroups). Every shim, mount and cgroup a test leaves is
//! removed by a guard, also when the test fails.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use berth_testkit::{Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

/// Whether the host runs cgroup v2 only (else v1 or hybrid, where Berth uses v1).
fn unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A file of container `id`'s cgroup: `v1` is (controller, file), `v2` the unified file.
fn cg_read(id: &str, v1: (&str, &str), v2: &str) -> Option<String> {
    let path = if unified() {
        Path::new("/sys/fs/cgroup/berth").join(id).join(v2)
    } else {
        Path::new("/sys/fs/cgroup").join(v1.0).join("berth").join(id).join(v1.1)
    };
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Whether the container's freezer says frozen.
fn frozen(id: &str) -> Option<bool> {
    if unified() {
        cg_read(id, ("", ""), "cgroup.events").map(|e| e.lines().any(|l| l == "frozen 1"))
    } else {
        cg_read(id, ("freezer", "freezer.state"), "").map(|s| s != "THAWED")
    }
}

/// One HTTP request to the daemon's socket; returns (status, body). A streamed body is read
/// for `read_for` and what arrived by then is returned.
fn api(daemon: &DaemonProcess, method: &str, path: &str, body: &str, read_for: Duration) -> (u16, String) {
    let mut s = UnixStream::connect(&daemon.paths.socket).expect("connect to the daemon");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let deadline = Instant::now() + read_for;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading the answer to {method} {path}: {e}"),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, body.to_owned())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn pause_and_unpause_through_the_freezer_also_across_a_daemon_restart() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());

    let counter = "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done";
    let id = daemon
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "frozen",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            counter,
        ])
        .stdout
        .trim()
        .to_owned();
    assert_eq!(frozen(&id), Some(false));
    daemon.docker_ok(&["pause", "frozen"]);
    assert_eq!(frozen(&id), Some(true), "the freezer holds the container");
    let v = inspect(&daemon, "frozen");
    assert_eq!(v["State"]["Status"], "paused", "{v}");
    assert_eq!(
        (v["State"]["Running"].as_bool(), v["State"]["Paused"].as_bool()),
        (Some(true), Some(true))
    );
    let ps = daemon.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    println!("$ docker ps (paused)\n{}", ps.stdout);
    assert!(
        ps.stdout.contains("frozen Up ") && ps.stdout.contains("(Paused)"),
        "{ps}"
    );
    let by_state = daemon.docker_ok(&["ps", "-q", "--filter", "status=paused"]);
    assert_eq!(by_state.stdout.trim(), &id[..12], "{by_state}");
    let running = daemon.docker_ok(&["ps", "-q", "--filter", "status=running"]);
    assert!(
        running.stdout.trim().is_empty(),
        "a paused container is not 'running' to ps: {running}"
    );
    // Frozen: its counter does not move.
    let counter_file = daemon.paths.data_root.join("containers").join(&id).join("rootfs/tmp/n");
    let n1 = std::fs::read_to_string(&counter_file).expect("counter");
    thread::sleep(Duration::from_millis(400));
    assert_eq!(
        std::fs::read_to_string(&counter_file).expect("counter"),
        n1,
        "the container ran while paused"
    );

    // What dockerd refuses on a paused container.
    let out = daemon.docker(&["exec", "frozen", "true"]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("Container frozen is paused, unpause the container before exec"),
        "{out}"
    );
    let out = daemon.docker(&["pause", "frozen"]);
    assert!(
        out.stderr.contains(&format!("Container {id} is already paused")),
        "{out}"
    );
    let (status, body) = api(
        &daemon,
        "POST",
        "/v1.45/containers/frozen/pause",
        "",
        Duration::from_secs(5),
    );
    assert_eq!(status, 409, "{body}");

    assert_eq!(pause_events(&daemon, 0), "pause\n");

    // A restarted daemon finds it paused, still frozen.
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    assert_eq!(frozen(&id), Some(true), "the daemon's exit thawed the container");
    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    let restarted = unix_now();
    let v = inspect(&daemon, "frozen");
    assert_eq!(v["State"]["Status"], "paused", "{v}");
    assert_eq!(v["State"]["Paused"], true, "{v}");

    daemon.docker_ok(&["unpause", "frozen"]);
    assert_eq!(frozen(&id), Some(false));
    assert_eq!(inspect(&daemon, "frozen")["State"]["Status"], "running");
    wait_until("the counter to move again", Duration::from_secs(10), || {
        std::fs::read_to_string(&counter_file).is_ok_and(|n| n != n1)
    });
    daemon.docker_ok(&["exec", "frozen", "true"]);
    let out = daemon.docker(&["unpause", "frozen"]);
    assert!(out.stderr.contains(&format!("Container {id} is not paused")), "{out}");

    // stop of a paused container thaws it so the signal lands: sh ignores SIGTERM as pid 1,
    // so the stop's SIGKILL ends it (137), after the 1 s grace.
    daemon.docker_ok(&["pause", "frozen"]);
    let started = Instant::now();
    daemon.docker_ok(&["stop", "-t", "1", "frozen"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop of a paused container hung"
    );
    let v = inspect(&daemon, "frozen");
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    assert_eq!(
        (v["State"]["Paused"].as_bool(), v["State"]["ExitCode"].as_i64()),
        (Some(false), Some(137))
    );
    let out = daemon.docker(&["pause", "frozen"]);
    assert!(out.stderr.contains(&format!("Container {id} is not running")), "{out}");

    // A trap for the stop signal runs once the container is thawed.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "trapper",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 3' TERM; while true; do sleep 0.1; done",
    ]);
    daemon.docker_ok(&["pause", "trapper"]);
    daemon.docker_ok(&["stop", "trapper"]);
    assert_eq!(inspect(&daemon, "trapper")["State"]["ExitCode"], 3);

    // rm -f of a paused container.
    daemon.docker_ok(&["start", "frozen"]);
    daemon.docker_ok(&["pause", "frozen"]);
    daemon.docker_ok(&["rm", "-f", "frozen"]);
    wait_until("the cgroup to go", Duration::from_secs(10), || {
        cgroup_dirs(&id).is_empty()
    });
    daemon.docker_ok(&["rm", "trapper"]);

    let actions = pause_events(&daemon, restarted);
    println!("$ docker events (pause/unpause of 'frozen' since the restart)\n{actions}");
    assert_eq!(actions, "unpause\npause\npause\n");
    assert_no_mounts_left(dir.path());
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The pause and unpause events of container `frozen` since `since` (Unix seconds).
fn pause_events(daemon: &DaemonProcess, since: u64) -> String {
    let until = (unix_now() + 1).to_string();
    daemon
        .docker_ok(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until,
            "--filter",
            "container=frozen",
            "--filter",
            "event=pause",
            "--filter",
            "event=unpause",
            "--format",
            "{{.Action}}",
        ])
        .stdout
}

#[test]
fn stats_show_cpu_memory_and_pids_like_dockerd() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "--network",
        "none",
        "--memory",
        "64m",
        "busybox",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    // One busy loop is a whole CPU: 100 % in docker's terms. Other work on the machine may
    // take some of it, so the best of a few readings must pass 50 %.
    let mut best = 0.0f64;
    for _ in 0..5 {
        let out = daemon.docker_ok(&["stats", "--no-stream", "--format", "{{.CPUPerc}}", "busy"]);
        let pct: f64 = out
            .stdout
            .trim()
            .trim_end_matches('%')
            .parse()
            .unwrap_or_else(|_| panic!("{out}"));
        best = best.max(pct);
        if best > 50.0 {
            break;
        }
    }
    assert!(best > 50.0, "a busy loop shows {best}% CPU");
    let out = daemon.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.MemPerc}}|{{.PIDs}}",
        "busy",
    ]);
    println!("$ docker stats --no-stream busy\n{}", out.stdout);
    let fields: Vec<&str> = out.stdout.trim().split('|').collect();
    assert_eq!(fields[0], "busy", "{out}");
    assert!(fields[2].ends_with(" / 64MiB"), "the limit shows: {out}");
    assert!(!fields[2].starts_with("0B "), "some memory is used: {out}");
    assert_eq!(fields[4], "1", "{out}");

    // The API's shapes: one-shot (no previous reading), the default (two readings a second
    // apart), and a stream of one document a second.
    let (status, body) = api(
        &daemon,
        "GET",
        "/v1.45/containers/busy/stats?stream=false&one-shot=true",
        "",
        Duration::from_secs(10),
    );
    assert_eq!(status, 200, "{body}");
    let one = json(body.trim());
    assert_eq!(one["preread"], "0001-01-01T00:00:00Z", "{one}");
    assert_eq!(one["name"], "/busy");
    assert!(
        one["cpu_stats"]["cpu_usage"]["total_usage"].as_u64().unwrap_or(0) > 0,
        "{one}"
    );
    assert!(one["cpu_stats"]["system_cpu_usage"].as_u64().unwrap_or(0) > 0, "{one}");
    assert!(one["cpu_stats"]["online_cpus"].as_u64().unwrap_or(0) >= 1, "{one}");
    assert!(one["cpu_stats"]["throttling_data"].is_object(), "{one}");
    assert_eq!(one["memory_stats"]["limit"], 64 << 20, "{one}");
    assert!(one["memory_stats"]["usage"].as_u64().unwrap_or(0) > 0, "{one}");
    let keys = if unified() { "anon" } else { "total_rss" };
    assert!(one["memory_stats"]["stats"][keys].is_u64(), "{one}");
    assert_eq!(one["pids_stats"]["current"], 1, "{one}");
    assert!(one["blkio_stats"]["io_service_bytes_recursive"].is_array(), "{one}");
    assert!(one.get("networks").is_none(), "only loopback: no networks, as dockerd");
    let (_, body) = api(
        &daemon,
        "GET",
        "/v1.45/containers/busy/stats?stream=false",
        "",
        Duration::from_secs(10),
    );
    let two = json(body.trim());
    assert_ne!(two["preread"], "0001-01-01T00:00:00Z", "{two}");
    assert!(
        two["precpu_stats"]["cpu_usage"]["total_usage"].as_u64()
            < two["cpu_stats"]["cpu_usage"]["total_usage"].as_u64(),
        "{two}"
    );
    let (_, body) = api(
        &daemon,
        "GET",
        "/v1.45/containers/busy/stats",
        "",
        Duration::from_millis(2600),
    );
    let docs: Vec<serde_json::Value> = body.lines().filter(|l| !l.trim().is_empty()).map(json).collect();
    assert!(
        (2..=4).contains(&docs.len()),
        "one document a second: {} in 2.6 s",
        docs.len()
    );
    assert_eq!(
        docs[1]["preread"], docs[0]["read"],
        "each document carries the one before"
    );

    // A stopped container reads as zeros.
    daemon.docker_ok(&["stop", "-t", "0", "busy"]);
    let out = daemon.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}",
        "busy",
    ]);
    assert_eq!(out.stdout.trim(), "0.00%|0B / 0B|0", "{out}");
    let (_, body) = api(
        &daemon,
        "GET",
        "/v1.45/containers/busy/stats?stream=false",
        "",
        Duration::from_secs(10),
    );
    let zero = json(body.trim());
    assert_eq!(zero["read"], "0001-01-01T00:00:00Z", "{zero}");
    assert_eq!(zero["memory_stats"], serde_json::json!({}), "{zero}");
    let out = daemon.docker(&["stats", "--no-stream", "nosuch"]);
    assert!(
        !out.status.success() && out.stderr.contains("No such container: nosuch"),
        "{out}"
    );
    daemon.docker_ok(&["rm", "busy"]);
}

#[test]
fn update_changes_limits_live_and_for_the_next_start() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let id = daemon
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "upd",
            "--network",
            "none",
            "busybox",
            "sleep",
            "1000",
        ])
        .stdout
        .trim()
        .to_owned();
    assert_eq!(cg_read(&id, ("pids", "pids.max"), "pids.max").as_deref(), Some("max"));

    let out = daemon.docker_ok(&["update", "--pids-limit", "33", "upd"]);
    assert_eq!(out.stdout.trim(), "upd");
    assert_eq!(
        cg_read(&id, ("pids", "pids.max"), "pids.max").as_deref(),
        Some("33"),
        "applied live"
    );
    assert_eq!(inspect(&daemon, "upd")["HostConfig"]["PidsLimit"], 33);
    let (status, body) = api(
        &daemon,
        "POST",
        "/v1.45/containers/upd/update",
        r#"{"CpuShares": 512}"#,
        Duration::from_secs(10),
    );
    assert_eq!((status, json(&body)), (200, serde_json::json!({"Warnings": []})));

    // dockerd's refusals, with its messages.
    for (args, want) in [
        (&["--memory", "1m"][..], "Minimum memory limit allowed is 6MB"),
        (
            &["--memory", "64m"][..],
            "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
        ),
        (
            &["--memory", "64m", "--memory-swap", "32m"][..],
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            &["--cpu-period", "500"][..],
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ),
        (
            &["--cpuset-cpus", "4095"][..],
            "Requested CPUs are not available - requested 4095",
        ),
        (&["--restart", "sometimes"][..], "invalid restart policy"),
    ] {
        let mut cmd = vec!["update"];
        cmd.extend_from_slice(args);
        cmd.push("upd");
        let out = daemon.docker(&cmd);
        assert!(
            !out.status.success() && out.stderr.contains(want),
            "docker {cmd:?}: {out}"
        );
    }
    assert_eq!(
        cg_read(&id, ("pids", "pids.max"), "pids.max").as_deref(),
        Some("33"),
        "a refusal changes nothing"
    );

    daemon.docker_ok(&[
        "update",
        "--memory",
        "64m",
        "--memory-swap",
        "128m",
        "--memory-reservation",
        "32m",
        "upd",
    ]);
    assert_eq!(
        cg_read(&id, ("memory", "memory.limit_in_bytes"), "memory.max").as_deref(),
        Some("67108864")
    );
    daemon.docker_ok(&["update", "--cpus", "0.5", "upd"]);
    if unified() {
        assert_eq!(cg_read(&id, ("", ""), "cpu.max").as_deref(), Some("50000 100000"));
    } else {
        assert_eq!(cg_read(&id, ("cpu", "cpu.cfs_quota_us"), "").as_deref(), Some("50000"));
        assert_eq!(cg_read(&id, ("cpu", "cpu.shares"), "").as_deref(), Some("512"));
    }
    let hc = inspect(&daemon, "upd")["HostConfig"].clone();
    assert_eq!(
        (
            hc["Memory"].as_i64(),
            hc["MemorySwap"].as_i64(),
            hc["MemoryReservation"].as_i64(),
            hc["NanoCpus"].as_i64()
        ),
        (Some(64 << 20), Some(128 << 20), Some(32 << 20), Some(500_000_000)),
        "{hc}"
    );
    let out = daemon.docker(&["update", "--cpu-quota", "20000", "upd"]);
    assert!(
        out.stderr
            .contains("CPU Quota cannot be updated as NanoCPUs has already been set"),
        "{out}"
    );

    // The restart policy: `always` brings the container back when its process dies.
    daemon.docker_ok(&["update", "--restart", "always", "upd"]);
    assert_eq!(inspect(&daemon, "upd")["HostConfig"]["RestartPolicy"]["Name"], "always");
    let pid = inspect(&daemon, "upd")["State"]["Pid"].as_i64().expect("pid");
    let kill = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    wait_until("the restart policy to start it again", Duration::from_secs(15), || {
        let v = inspect(&daemon, "upd");
        v["RestartCount"] == 1 && v["State"]["Running"] == true
    });

    // Recorded: the next start applies them; an update of a stopped container too.
    daemon.docker_ok(&["update", "--restart", "no", "upd"]);
    daemon.docker_ok(&["stop", "-t", "0", "upd"]);
    daemon.docker_ok(&["update", "--pids-limit", "44", "upd"]);
    daemon.docker_ok(&["start", "upd"]);
    assert_eq!(cg_read(&id, ("pids", "pids.max"), "pids.max").as_deref(), Some("44"));
    assert_eq!(
        cg_read(&id, ("memory", "memory.limit_in_bytes"), "memory.max").as_deref(),
        Some("67108864")
    );
    daemon.docker_ok(&["update", "--pids-limit", "-1", "upd"]);
    assert_eq!(cg_read(&id, ("pids", "pids.max"), "pids.max").as_deref(), Some("max"));
    assert_eq!(inspect(&daemon, "upd")["HostConfig"]["PidsLimit"], 0);

    let out = daemon.docker(&["update", "--pids-limit", "5", "nosuch"]);
    assert!(out.stderr.contains("No such container: nosuch"), "{out}");
    daemon.docker_ok(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "auto",
        "--network",
        "none",
        "busybox",
        "sleep",
        "1000",
    ]);
    let out = daemon.docker(&["update", "--restart", "always", "auto"]);
    assert!(
        out.stderr
            .contains("Restart policy cannot be updated because AutoRemove is enabled for the container"),
        "{out}"
    );
    daemon.docker_ok(&["rm", "-f", "upd", "auto"]);
    assert_no_mounts_left(dir.path());
}

#[test]
fn a_fork_bomb_stays_within_its_pids_limit_and_oom_kills_are_reported() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());

    // The classic shell fork bomb: every function call forks two more, for ever.
    let id = daemon
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "bomb",
            "--network",
            "none",
            "--pids-limit",
            "64",
            "busybox",
            "sh",
            "-c",
            "bomb() { bomb | bomb & }; bomb; sleep 1000",
        ])
        .stdout
        .trim()
        .to_owned();
    let mut peak = 0u64;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Some(n) = cg_read(&id, ("pids", "pids.current"), "pids.current").and_then(|n| n.parse().ok()) {
            peak = peak.max(n);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let events = cg_read(&id, ("pids", "pids.events"), "pids.events").unwrap_or_default();
    println!("fork bomb: peak {peak} tasks, pids.events: {events}");
    assert!(peak <= 64, "the bomb reached {peak} tasks");
    assert!(peak >= 32, "the bomb did not get going ({peak} tasks)");
    let refused: u64 = events
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "no fork was refused: {events}");
    // The host is fine: the daemon answers and other containers run.
    let out = daemon.docker_ok(&["run", "--rm", "--network", "none", "busybox", "echo", "still fine"]);
    assert_eq!(out.stdout, "still fine\n");
    let out = daemon.docker_ok(&["stats", "--no-stream", "--format", "{{.PIDs}}", "bomb"]);
    let pids: u64 = out.stdout.trim().parse().unwrap_or_else(|_| panic!("{out}"));
    assert!(pids <= 64, "{out}");
    daemon.docker_ok(&["rm", "-f", "bomb"]);
    wait_until("the bomb's cgroup to go", Duration::from_secs(15), || {
        cgroup_dirs(&id).is_empty()
    });

    // More memory than --memory allows: the kernel kills the process; dockerd's OOMKilled.
    let out = daemon.docker(&[
        "run",
        "--name",
        "hog",
        "--network",
        "none",
        "--memory",
        "32m",
        "busybox",
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(out.status.code(), Some(137), "{out}");
    let v = inspect(&daemon, "hog");
    assert_eq!(v["State"]["OOMKilled"], true, "{v}");
    assert_eq!(v["State"]["ExitCode"], 137, "{v}");
    daemon.docker_ok(&["rm", "hog"]);
    daemon.docker_ok(&[
        "run",
        "--name",
        "fine",
        "--network",
        "none",
        "--memory",
        "32m",
        "busybox",
        "true",
    ]);
    assert_eq!(inspect(&daemon, "fine")["State"]["OOMKilled"], false);
    daemon.docker_ok(&["rm", "fine"]);
    assert_no_mounts_left(dir.path());
}
