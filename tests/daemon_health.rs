//! Health checks end to end with the real docker CLI: `--health-cmd` and its interval,
//! retries, start period and timeout; an image's `HEALTHCHECK` and `--no-healthcheck`;
//! `State.Health`, `docker ps`'s `(healthy)` and its `health` filter, the `health_status`
//! events; a daemon restart begins again at `starting`; bad values are refused.
//!
//! Needs root (namespaces, overlay, cgroups).

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use berth_testkit::{ImageBuilder, Prereq, require};
use serde_json::json;

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

fn health(daemon: &DaemonProcess, name: &str) -> serde_json::Value {
    inspect(daemon, name)["State"]["Health"].clone()
}

fn status(daemon: &DaemonProcess, name: &str) -> String {
    health(daemon, name)["Status"].as_str().unwrap_or("none").to_owned()
}

#[test]
fn health_checks_probe_report_and_filter() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let since = daemon.docker_ok(&["version", "-f", "{{.Server.Os}}"]);
    assert_eq!(since.stdout.trim(), "linux");
    let t0 = (now_secs().parse::<u64>().unwrap() - 2).to_string();

    // Fails until /tmp/ok exists: starting, then unhealthy after 2 failures, then healthy.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "probed",
        "--network",
        "none",
        "--health-cmd",
        "test -f /tmp/ok && echo fine",
        "--health-interval",
        "300ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "300",
    ]);
    let config = inspect(&daemon, "probed")["Config"]["Healthcheck"].clone();
    assert_eq!(
        config,
        json!({"Test": ["CMD-SHELL", "test -f /tmp/ok && echo fine"], "Interval": 300_000_000, "Retries": 2})
    );
    assert_eq!(status(&daemon, "probed"), "starting");
    let ps = daemon.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]).stdout;
    assert!(ps.contains("probed Up") && ps.contains("(health: starting)"), "{ps}");
    wait_until("unhealthy", Duration::from_secs(10), || {
        status(&daemon, "probed") == "unhealthy"
    });
    let h = health(&daemon, "probed");
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    assert_eq!(h["Log"][0]["ExitCode"], 1, "{h}");
    let ps = daemon.docker_ok(&[
        "ps",
        "--filter",
        "health=unhealthy",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(
        ps.stdout.starts_with("probed Up") && ps.stdout.contains("(unhealthy)"),
        "{ps}"
    );

    daemon.docker_ok(&["exec", "probed", "touch", "/tmp/ok"]);
    wait_until("healthy", Duration::from_secs(10), || {
        status(&daemon, "probed") == "healthy"
    });
    let h = health(&daemon, "probed");
    assert_eq!(h["FailingStreak"], 0, "{h}");
    let last = h["Log"].as_array().and_then(|l| l.last()).cloned().unwrap_or_default();
    assert_eq!(
        (last["ExitCode"].clone(), last["Output"].clone()),
        (json!(0), json!("fine\n")),
        "{h}"
    );
    // Five probes are kept.
    wait_until("five probes logged", Duration::from_secs(10), || {
        health(&daemon, "probed")["Log"]
            .as_array()
            .is_some_and(|l| l.len() == 5)
    });
    thread_sleep(Duration::from_millis(700));
    assert_eq!(health(&daemon, "probed")["Log"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        daemon
            .docker_ok(&["ps", "-q", "--filter", "health=healthy", "--filter", "name=probed"])
            .stdout
            .len(),
        13,
        "one id"
    );
    // The probes' own execs are not left behind.
    let id = inspect(&daemon, "probed")["Id"].as_str().unwrap().to_owned();
    let leftover: Vec<_> = std::fs::read_dir(daemon.paths.data_root.join("containers").join(&id))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("exec-"))
        .collect();
    assert!(leftover.len() <= 1, "probe execs left: {leftover:?}");
    assert_eq!(inspect(&daemon, "probed")["ExecIDs"], json!(null));

    // The status changes as events, found with a plain `health_status` filter.
    let events = daemon
        .docker_ok(&[
            "events",
            "--since",
            &t0,
            "--until",
            &now_secs(),
            "--filter",
            "event=health_status",
            "--filter",
            "container=probed",
            "--format",
            "{{.Action}}",
        ])
        .stdout;
    let events: Vec<&str> = events.lines().collect();
    assert_eq!(
        events[..2],
        ["health_status: unhealthy", "health_status: healthy"],
        "{events:?}"
    );

    // A probe that outlives its timeout fails with dockerd's message.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--network",
        "none",
        "--health-cmd",
        "sleep 5",
        "--health-interval",
        "200ms",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "300",
    ]);
    wait_until("slow unhealthy", Duration::from_secs(10), || {
        status(&daemon, "slow") == "unhealthy"
    });
    let h = health(&daemon, "slow");
    assert_eq!(h["Log"][0]["ExitCode"], -1, "{h}");
    assert!(
        h["Log"][0]["Output"].as_str().unwrap().contains("exceeded timeout"),
        "{h}"
    );

    // The start period: failures do not count while it lasts.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "patient",
        "--network",
        "none",
        "--health-cmd",
        "false",
        "--health-interval",
        "200ms",
        "--health-start-period",
        "30s",
        "--health-start-interval",
        "100ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "300",
    ]);
    wait_until("probes during the start period", Duration::from_secs(10), || {
        health(&daemon, "patient")["Log"]
            .as_array()
            .is_some_and(|l| l.len() >= 3)
    });
    let h = health(&daemon, "patient");
    assert_eq!(
        (h["Status"].clone(), h["FailingStreak"].clone()),
        (json!("starting"), json!(0)),
        "{h}"
    );

    // Bad values are refused at create, naming the field.
    for (args, message) in [
        (
            &["--health-cmd", "true", "--health-interval", "10ns"][..],
            "Interval in Healthcheck cannot be less than 1ms",
        ),
        (
            &["--health-cmd", "true", "--health-start-period", "10ns"][..],
            "StartPeriod in Healthcheck cannot be less than 1ms",
        ),
    ] {
        let out = daemon.docker(&[&["create"][..], args, &["busybox", "true"]].concat());
        assert!(!out.status.success() && out.stderr.contains(message), "{args:?}: {out}");
    }

    // A stop ends the probes; the last state stays for inspect. A start begins again.
    daemon.docker_ok(&["stop", "-t", "0", "probed"]);
    assert_eq!(status(&daemon, "probed"), "healthy");
    daemon.docker_ok(&["start", "probed"]);
    assert_eq!(status(&daemon, "probed"), "starting");
    daemon.docker_ok(&["rm", "-f", "probed", "slow", "patient"]);
}

/// The next whole second (an `--until` that includes everything so far).
fn now_secs() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (now.as_secs() + 1).to_string()
}

fn thread_sleep(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn image_healthcheck_no_healthcheck_and_daemon_restart() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (cleanup, daemon) = daemon_with_image(dir.path());
    let archive = dir.path().join("checked.tar");
    ImageBuilder::new()
        .healthcheck(json!({"Test": ["CMD-SHELL", "echo from-image"], "Interval": 200_000_000, "Retries": 1}))
        .write_docker_archive(&archive, "checked:1")
        .expect("write the image");
    daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    let ic = daemon.docker_ok(&["image", "inspect", "-f", "{{json .Config.Healthcheck}}", "checked:1"]);
    assert!(ic.stdout.contains("from-image"), "{ic}");

    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "img",
        "--network",
        "none",
        "checked:1",
        "sleep",
        "300",
    ]);
    wait_until("healthy from the image's check", Duration::from_secs(10), || {
        status(&daemon, "img") == "healthy"
    });
    assert_eq!(health(&daemon, "img")["Log"][0]["Output"], "from-image\n");
    // The request's interval over the image's test.
    daemon.docker_ok(&[
        "create",
        "--name",
        "merged",
        "--health-interval",
        "2s",
        "checked:1",
        "sleep",
        "300",
    ]);
    assert_eq!(
        inspect(&daemon, "merged")["Config"]["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "echo from-image"], "Interval": 2_000_000_000u64, "Retries": 1})
    );
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "off",
        "--no-healthcheck",
        "--network",
        "none",
        "checked:1",
        "sleep",
        "300",
    ]);
    assert_eq!(inspect(&daemon, "off")["Config"]["Healthcheck"], json!(null));
    assert_eq!(health(&daemon, "off"), json!(null));
    let ps = daemon.docker_ok(&["ps", "--filter", "health=none", "--format", "{{.Names}}"]);
    assert_eq!(ps.stdout, "off\n", "{ps}");

    // A new daemon re-adopts the container and checks it again from `starting`.
    let (status_code, _) = daemon.terminate();
    assert!(status_code.success());
    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    assert_eq!(status(&daemon, "img"), "starting");
    wait_until("healthy again", Duration::from_secs(10), || {
        status(&daemon, "img") == "healthy"
    });
    daemon.docker_ok(&["rm", "-f", "img", "merged", "off"]);
    drop(daemon);
    drop(cleanup);
}
