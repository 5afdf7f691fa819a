//! End-to-end test of image events: `docker events` through `berth daemon`, streaming
//! (`--filter type=image`, `--filter event=delete`) while the docker CLI pulls from a real
//! `berth registry serve`, tags, removes, imports, saves, loads, pushes and prunes; then
//! replayed with `--since`/`--until` and filtered by image. Each event is checked against
//! the shape dockerd gives it (`Type`, `Action`, `Actor.ID`, `Actor.Attributes.name`,
//! `scope`, `time`/`timeNano`, and the legacy `status`/`id`).

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_testkit::{ImageBuilder, Prereq, RegistryProcess, require};
use serde_json::Value;

#[path = "support/daemon.rs"]
mod daemon_support;
#[path = "support/skopeo.rs"]
mod skopeo;
use daemon_support::*;

/// Pulls and pushes get this long.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an event may take to reach a follower.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Now as the API's `SECONDS.NANOSECONDS`.
fn timestamp() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// A `docker events --format '{{json .}}' ARGS…` left running; its lines arrive on a channel.
/// Killed on drop.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Follower {
    fn start(daemon: &DaemonProcess, args: &[&str]) -> Follower {
        let mut child = Command::new("docker")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", &daemon.docker_config)
            .args(["-H", &daemon.paths.host(), "events", "--format", "{{json .}}"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker events");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines,
            what: format!("docker events {}", args.join(" ")),
        }
    }

    /// The next event, or a panic naming what was expected.
    fn next(&self, expecting: &str) -> Value {
        let line = self
            .lines
            .recv_timeout(EVENT_TIMEOUT)
            .unwrap_or_else(|_| panic!("{}: no event within {EVENT_TIMEOUT:?}, expected {expecting}", self.what));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", self.what))
    }

    /// Nothing more arrives within `wait`.
    fn assert_quiet(&self, wait: Duration) {
        if let Ok(line) = self.lines.recv_timeout(wait) {
            panic!("{}: unexpected event {line}", self.what);
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the daemon counts `n` open `/events` streams (docker info's NEventsListener).
fn wait_for_listeners(daemon: &DaemonProcess, n: u64) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let out = daemon.docker_ok(&["info", "--format", "{{.NEventsListener}}"]);
        if out.stdout.trim().parse::<u64>().ok() == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{n} event listeners expected\n{out}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Checks the fields every image event has and returns (action, actor ID, name).
fn check_shape(ev: &Value) -> (String, String, String) {
    assert_eq!(ev["Type"], "image", "{ev}");
    assert_eq!(ev["scope"], "local", "{ev}");
    let action = ev["Action"].as_str().unwrap_or_else(|| panic!("no Action: {ev}"));
    let id = ev["Actor"]["ID"]
        .as_str()
        .unwrap_or_else(|| panic!("no Actor.ID: {ev}"));
    let time = ev["time"].as_i64().unwrap_or_else(|| panic!("no time: {ev}"));
    let nano = ev["timeNano"].as_i64().unwrap_or_else(|| panic!("no timeNano: {ev}"));
    assert_eq!(time, nano / 1_000_000_000, "{ev}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    assert!((now - 600..=now + 5).contains(&time), "time {time} is not recent: {ev}");
    if action == "prune" {
        assert!(ev["Actor"]["Attributes"]["reclaimed"].is_string(), "{ev}");
        return (action.to_owned(), id.to_owned(), String::new());
    }
    // The legacy fields dockerd still fills for image events.
    assert_eq!(ev["status"], action, "{ev}");
    assert_eq!(ev["id"], id, "{ev}");
    let name = ev["Actor"]["Attributes"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no Actor.Attributes.name: {ev}"));
    (action.to_owned(), id.to_owned(), name.to_owned())
}

/// A root filesystem tarball with one file, for `docker import`.
fn rootfs_tar(path: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/motd", &b"hello\n"[..]).expect("tar entry");
    std::fs::write(path, b.into_inner().expect("tar")).expect("write rootfs tarball");
}

#[test]
fn docker_events_stream_and_replay_image_events() {
    if !require(&[Prereq::Docker, Prereq::Skopeo, Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = RegistryProcess::start(
        Path::new(env!("CARGO_BIN_EXE_berth")),
        &["--root", &dir.path().join("registry").to_string_lossy()],
    )
    .expect("start the registry");
    let host = registry.addr().to_string();
    let info = skopeo::push(
        &ImageBuilder::new().label("site", "lab"),
        dir.path(),
        &host,
        "sl6/wn",
        "1",
        None,
        None,
    );
    let image_id = info.config_digest.to_string();
    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);

    let start = timestamp();
    let all = Follower::start(&daemon, &["--filter", "type=image"]);
    let deletes = Follower::start(&daemon, &["--filter", "event=delete"]);
    wait_for_listeners(&daemon, 2);

    // Pull: the reference pulled is the actor, its repository the name, labels attributes.
    let name = format!("{host}/sl6/wn:1");
    daemon.docker_ok(&["pull", &name]);
    let ev = all.next("pull");
    println!("pull event: {ev}");
    assert_eq!(
        check_shape(&ev),
        ("pull".into(), name.clone(), format!("{host}/sl6/wn"))
    );
    assert_eq!(ev["Actor"]["Attributes"]["site"], "lab", "{ev}");
    let after_pull = timestamp();

    // Tag: the image ID is the actor, the new tag the name.
    daemon.docker_ok(&["tag", &name, "sl6/wn:v2"]);
    let ev = all.next("tag");
    assert_eq!(check_shape(&ev), ("tag".into(), image_id.clone(), "sl6/wn:v2".into()));

    // rmi of one tag: untag; of the last tag: untag (the digest reference that goes with
    // it has no event of its own), delete.
    daemon.docker_ok(&["rmi", "sl6/wn:v2"]);
    assert_eq!(
        check_shape(&all.next("untag")),
        ("untag".into(), image_id.clone(), image_id.clone())
    );
    let out = daemon.docker_ok(&["rmi", &name]);
    println!("{out}");
    for want in ["untag", "delete"] {
        assert_eq!(
            check_shape(&all.next(want)),
            (want.into(), image_id.clone(), image_id.clone())
        );
    }
    let ev = deletes.next("delete");
    assert_eq!(check_shape(&ev).0, "delete", "{ev}");

    // Import with a name: tag, then import.
    let tarball = dir.path().join("rootfs.tar");
    rootfs_tar(&tarball);
    let out = daemon.docker_ok(&["import", &tarball.to_string_lossy(), "sl6/imp:1"]);
    let imported = out.stdout.trim().to_owned();
    assert!(imported.starts_with("sha256:"), "{out}");
    assert_eq!(
        check_shape(&all.next("tag")),
        ("tag".into(), imported.clone(), "sl6/imp:1".into())
    );
    assert_eq!(
        check_shape(&all.next("import")),
        ("import".into(), imported.clone(), imported.clone())
    );

    // Save and load: the image ID as actor and name.
    let archive = dir.path().join("imp.tar");
    daemon.docker_ok(&["save", "-o", &archive.to_string_lossy(), "sl6/imp:1"]);
    assert_eq!(
        check_shape(&all.next("save")),
        ("save".into(), imported.clone(), imported.clone())
    );
    daemon.docker_ok(&["load", "-i", &archive.to_string_lossy()]);
    assert_eq!(
        check_shape(&all.next("load")),
        ("load".into(), imported.clone(), imported.clone())
    );

    // Push: the reference pushed, and its repository.
    let pushed = format!("{host}/sl6/imp:1");
    daemon.docker_ok(&["tag", "sl6/imp:1", &pushed]);
    assert_eq!(
        check_shape(&all.next("tag")),
        ("tag".into(), imported.clone(), pushed.clone())
    );
    daemon.docker_ok(&["push", &pushed]);
    assert_eq!(
        check_shape(&all.next("push")),
        ("push".into(), pushed.clone(), format!("{host}/sl6/imp"))
    );

    // Prune with nothing dangling: still a prune event, reclaiming 0.
    daemon.docker_ok(&["image", "prune", "-f"]);
    let ev = all.next("prune");
    assert_eq!(check_shape(&ev).0, "prune");
    assert_eq!(ev["Actor"]["Attributes"]["reclaimed"], "0", "{ev}");
    all.assert_quiet(Duration::from_millis(300));
    // The delete follower saw the one delete and nothing else.
    deletes.assert_quiet(Duration::from_millis(100));
    let end = timestamp();

    // Replay: `--since`/`--until` in the past return the recorded events and end by
    // themselves, in order.
    let replay = |args: &[&str]| -> Vec<(String, String, String)> {
        let mut full = vec!["events", "--format", "{{json .}}"];
        full.extend_from_slice(args);
        let out = daemon.docker_ok(&full);
        out.stdout
            .lines()
            .map(|l| check_shape(&serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{out}"))))
            .collect()
    };
    let actions = |events: &[(String, String, String)]| events.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
    let everything = replay(&["--since", &start, "--until", &end]);
    assert_eq!(
        actions(&everything),
        [
            "pull", "tag", "untag", "untag", "delete", "tag", "import", "save", "load", "tag", "push", "prune"
        ],
        "{everything:?}"
    );
    let later = replay(&["--since", &after_pull, "--until", &end]);
    assert_eq!(actions(&later), actions(&everything)[1..], "{later:?}");
    let before_anything = replay(&["--since", "1", "--until", &start]);
    assert!(before_anything.is_empty(), "{before_anything:?}");
    // `image` matches the actor or the name, with or without the tag.
    let by_repo = replay(&[
        "--since",
        &start,
        "--until",
        &end,
        "--filter",
        &format!("image={host}/sl6/wn"),
    ]);
    assert_eq!(by_repo, [("pull".to_owned(), name.clone(), format!("{host}/sl6/wn"))]);
    let by_id = replay(&[
        "--since",
        &start,
        "--until",
        &end,
        "--filter",
        &format!("image={imported}"),
    ]);
    assert_eq!(actions(&by_id), ["tag", "import", "save", "load", "tag"], "{by_id:?}");
    let tags_of_imp = replay(&[
        "--since",
        &start,
        "--until",
        &end,
        "--filter",
        "event=tag",
        "--filter",
        "image=sl6/imp",
    ]);
    assert_eq!(
        tags_of_imp,
        [("tag".to_owned(), imported.clone(), "sl6/imp:1".to_owned())]
    );
    let labelled = replay(&["--since", &start, "--until", &end, "--filter", "label=site=lab"]);
    assert_eq!(
        actions(&labelled),
        ["pull", "tag", "untag", "untag", "delete"],
        "{labelled:?}"
    );
    let containers = replay(&["--since", &start, "--until", &end, "--filter", "type=container"]);
    assert!(containers.is_empty(), "{containers:?}");

    let bad = daemon.docker(&["events", "--since", &start, "--until", &end, "--filter", "bogus=1"]);
    assert!(
        !bad.status.success() && bad.stderr.contains("invalid filter 'bogus'"),
        "{bad}"
    );

    drop((all, deletes));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
