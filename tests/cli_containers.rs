//! End-to-end tests of the `berth` container commands against a real `berth daemon`:
//! `berth run --rm` (stdout and stderr apart, the container's exit code as berth's), `run -i`
//! feeding stdin, `run -d` + `ps` (table, `--format json`, `-q`, `-a`, a filter), `exec` with
//! its exit code, `logs` (`--tail`), `stop`, `wait`, `kill`, `rm` (refused for a running
//! container without `-f`), and clear errors for an unknown container and an image that cannot
//! be pulled (from a closed port on loopback, so nothing leaves the machine).
//!
//! Needs root (namespaces, overlay, cgroups); every shim, mount and cgroup is cleaned up by the
//! guard, also when a test fails.

// Test output is the reader's interface here: the berth CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_testkit::{Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

/// `berth -H <the daemon> ARGS`, with no daemon address from the environment.
fn berth(daemon: &DaemonProcess, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.env_remove("BERTH_HOST")
        .env_remove("DOCKER_HOST")
        .env("NO_COLOR", "1")
        .args(["-H", &daemon.paths.host()])
        .args(args);
    run(&mut cmd, CLI_TIMEOUT)
}

fn berth_ok(daemon: &DaemonProcess, args: &[&str]) -> Output {
    let out = berth(daemon, args);
    assert!(out.status.success(), "{out}\n--- daemon log\n{}", daemon.log());
    out
}

#[test]
fn run_ps_exec_logs_stop_rm() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());

    // Foreground: both streams, apart, and the exit code passed through.
    let out = berth(
        &daemon,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out}");
    assert_eq!(out.stdout, "out\n", "{out}");
    assert_eq!(out.stderr, "err\n", "{out}");
    // --rm removed it.
    let all = berth_ok(&daemon, &["ps", "-a", "-q"]);
    assert_eq!(all.stdout.trim(), "", "a --rm container is left: {all}");

    // -i: stdin reaches the container and its end closes the container's stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .env_remove("BERTH_HOST")
        .env_remove("DOCKER_HOST")
        .args([
            "-H",
            &daemon.paths.host(),
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "busybox",
            "wc",
            "-l",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth run -i");
    let out_rx = drain(child.stdout.take());
    let err_rx = drain(child.stderr.take());
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(b"one\ntwo\nthree\n").expect("write stdin");
    }
    let status = wait_deadline(&mut child, CLI_TIMEOUT).expect("berth run -i ends once stdin closes");
    let out = out_rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    let err = err_rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    assert!(status.success(), "berth run -i: {status}\n{err}");
    assert_eq!(out.trim(), "3", "wc -l of three lines: {out:?} {err}");

    // Detached, then listed.
    let id = berth_ok(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "bg",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "echo started; exec sleep 300",
        ],
    )
    .stdout
    .trim()
    .to_owned();
    assert_eq!(id.len(), 64, "run -d prints the full ID: {id:?}");
    let table = berth_ok(&daemon, &["ps"]).stdout;
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    for col in ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"] {
        assert!(header.contains(col), "ps header lacks {col}: {table}");
    }
    let row = lines.next().unwrap_or_default();
    assert!(
        row.starts_with(&id[..12]) && row.ends_with("bg") && row.contains("Up "),
        "ps row: {table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(berth_ok(&daemon, &["ps", "--format", "json"]).stdout.trim()).expect("one JSON object");
    assert_eq!(json["Id"], id.as_str());
    assert_eq!(json["State"], "running");
    let filtered = berth_ok(&daemon, &["ps", "-q", "--no-trunc", "-f", "name=bg"]).stdout;
    assert_eq!(filtered.trim(), id, "ps -f name=bg");
    let none = berth_ok(&daemon, &["ps", "-q", "-f", "status=exited"]).stdout;
    assert_eq!(none.trim(), "", "no exited container yet");

    // exec: output and exit code.
    let out = berth(&daemon, &["exec", "bg", "sh", "-c", "echo in-exec; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{out}");
    assert_eq!(out.stdout, "in-exec\n", "{out}");

    let logs = berth_ok(&daemon, &["logs", "--tail", "1", "bg"]).stdout;
    assert_eq!(logs, "started\n");

    // A running container is not removed without -f.
    let out = berth(&daemon, &["rm", "bg"]);
    assert!(!out.status.success(), "rm of a running container succeeded: {out}");
    assert!(out.stderr.contains("bg"), "the error names the container: {out}");

    let out = berth_ok(&daemon, &["stop", "-t", "1", "bg"]);
    assert_eq!(out.stdout.trim(), "bg");
    let code = berth_ok(&daemon, &["wait", "bg"]).stdout;
    assert_eq!(
        code.trim(),
        "137",
        "sleep as PID 1 ignores SIGTERM, so the stop killed it"
    );
    let exited = berth_ok(&daemon, &["ps", "-a", "-q", "--no-trunc", "-f", "status=exited"]).stdout;
    assert_eq!(exited.trim(), id);
    berth_ok(&daemon, &["start", "bg"]);
    berth_ok(&daemon, &["kill", "bg"]);
    berth_ok(&daemon, &["rm", "-f", "bg"]);
    assert_eq!(berth_ok(&daemon, &["ps", "-a", "-q"]).stdout.trim(), "");

    // Bad input: clear errors, non-zero exits.
    let out = berth(&daemon, &["logs", "nosuch"]);
    assert!(
        !out.status.success() && out.stderr.contains("No such container: nosuch"),
        "{out}"
    );
    let out = berth(
        &daemon,
        &["run", "--rm", "--network", "none", "127.0.0.1:1/nosuch:1", "true"],
    );
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("Unable to find image '127.0.0.1:1/nosuch:1' locally")
            && out.stderr.contains("failed to pull"),
        "{out}"
    );
    let out = berth(&daemon, &["run", "--rm", "--memory", "lots", "busybox", "true"]);
    assert!(
        !out.status.success() && out.stderr.contains("invalid --memory"),
        "{out}"
    );
    assert_eq!(
        berth_ok(&daemon, &["ps", "-a", "-q"]).stdout.trim(),
        "",
        "a failed run left a container"
    );
    assert_no_mounts_left(dir.path());
}
