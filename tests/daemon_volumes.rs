//! End-to-end tests of volumes through `berth daemon` and the real docker CLI (issue 5):
//! data written through a named volume is read by another container; the volume outlives
//! `docker rm` (without `-v`) and a daemon restart; removing a volume in use fails (409);
//! a new volume is filled from the image's content at its mount point (not with `nocopy`);
//! anonymous volumes (`-v /path`, an image's `VOLUME`) go with `--rm` and `rm -v`, and
//! `docker volume prune` removes unused ones (anonymous only, unless `-a`); tmpfs and bind
//! volumes of the local driver; `docker volume ls/inspect/rm/create` and bad input.
//!
//! Needs root (namespaces, overlay, mounts). Every shim, mount and cgroup a test leaves is
//! removed by a guard, also when the test fails.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use berth_testkit::{ImageBuilder, Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

/// `docker volume ls -q`, sorted.
fn volume_names(daemon: &DaemonProcess, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["volume", "ls", "-q"];
    args.extend_from_slice(extra);
    let mut names: Vec<String> = daemon.docker_ok(&args).stdout.lines().map(str::to_owned).collect();
    names.sort();
    names
}

/// The HTTP status of one request with an empty body.
fn status_of(daemon: &DaemonProcess, method: &str, path: &str) -> (u16, String) {
    let mut s = UnixStream::connect(&daemon.paths.socket).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: berth\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

fn run(daemon: &DaemonProcess, args: &[&str]) -> Output {
    let mut all = vec!["run", "--rm", "--network", "none"];
    all.extend_from_slice(args);
    daemon.docker(&all)
}

#[test]
fn named_volume_shares_data_outlives_containers_and_restarts() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let volumes_dir = daemon.paths.data_root.join("volumes");

    let out = daemon.docker_ok(&["volume", "create", "--label", "site=lab", "shared"]);
    assert_eq!(out.stdout.trim(), "shared");
    let v: serde_json::Value =
        serde_json::from_str(&daemon.docker_ok(&["volume", "inspect", "shared"]).stdout).expect("JSON");
    println!("$ docker volume inspect shared\n{v:#}");
    let v = &v[0];
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"]["site"], "lab");
    assert_eq!(v["Options"], serde_json::Value::Null);
    assert_eq!(
        v["Mountpoint"].as_str(),
        volumes_dir.join("shared/_data").to_str(),
        "{v}"
    );
    assert!(v["CreatedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    // Creating it again returns it (dockerd's answer), labels unchanged.
    daemon.docker_ok(&["volume", "create", "shared"]);

    // One container writes, others read: -v, :ro, and --mount.
    let out = run(
        &daemon,
        &[
            "-v",
            "shared:/data",
            "busybox",
            "sh",
            "-c",
            "echo hello > /data/greeting",
        ],
    );
    assert!(out.status.success(), "{out}");
    let out = run(
        &daemon,
        &[
            "-v",
            "shared:/data:ro",
            "busybox",
            "sh",
            "-c",
            "cat /data/greeting; touch /data/x",
        ],
    );
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert!(
        !out.status.success() && out.stderr.contains("Read-only file system"),
        "{out}"
    );
    let out = run(
        &daemon,
        &[
            "--mount",
            "type=volume,src=shared,dst=/d,readonly",
            "busybox",
            "cat",
            "/d/greeting",
        ],
    );
    assert_eq!(out.stdout, "hello\n", "{out}");

    // In use: removal refused with dockerd's message and 409, also for a stopped user.
    let holder = daemon
        .docker_ok(&[
            "create",
            "--name",
            "holder",
            "--network",
            "none",
            "-v",
            "shared:/data",
            "busybox",
            "true",
        ])
        .stdout
        .trim()
        .to_owned();
    let out = daemon.docker(&["volume", "rm", "shared"]);
    assert!(
        !out.status.success()
            && out
                .stderr
                .contains(&format!("remove shared: volume is in use - [{holder}]")),
        "{out}"
    );
    let (status, body) = status_of(&daemon, "DELETE", "/v1.45/volumes/shared");
    assert_eq!(status, 409, "{body}");
    let m = &inspect(&daemon, "holder")["Mounts"][0];
    assert_eq!(
        (
            m["Type"].as_str(),
            m["Name"].as_str(),
            m["Destination"].as_str(),
            m["Driver"].as_str(),
            m["RW"].as_bool(),
            m["Mode"].as_str()
        ),
        (
            Some("volume"),
            Some("shared"),
            Some("/data"),
            Some("local"),
            Some(true),
            Some("z")
        ),
        "{m}"
    );
    assert_eq!(m["Source"].as_str(), volumes_dir.join("shared/_data").to_str());
    assert!(volume_names(&daemon, &["--filter", "dangling=true"]).is_empty());
    assert_eq!(volume_names(&daemon, &["--filter", "dangling=false"]), ["shared"]);
    // rm without -v keeps a named volume (and with -v too: only anonymous ones go).
    daemon.docker_ok(&["rm", "-v", "holder"]);
    assert_eq!(volume_names(&daemon, &["--filter", "dangling=true"]), ["shared"]);
    assert_eq!(volume_names(&daemon, &["--filter", "label=site=lab"]), ["shared"]);
    assert!(volume_names(&daemon, &["--filter", "label=site=other"]).is_empty());
    assert_eq!(volume_names(&daemon, &["--filter", "name=sha"]), ["shared"]);
    assert_eq!(volume_names(&daemon, &["--filter", "driver=local"]), ["shared"]);
    let out = daemon.docker(&["volume", "ls", "--filter", "dangling=maybe"]);
    assert!(out.stderr.contains("invalid filter 'dangling=[maybe]'"), "{out}");

    // A daemon restart keeps it, data and all; a running user is re-adopted with it.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "reader",
        "--network",
        "none",
        "-v",
        "shared:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    assert_eq!(volume_names(&daemon, &[]), ["shared"]);
    let out = daemon.docker(&["volume", "rm", "shared"]);
    assert!(
        out.stderr.contains("volume is in use"),
        "references survive the restart: {out}"
    );
    let out = daemon.docker_ok(&["exec", "reader", "cat", "/data/greeting"]);
    assert_eq!(out.stdout, "hello\n");
    daemon.docker_ok(&["rm", "-f", "reader"]);
    let out = run(&daemon, &["-v", "shared:/data", "busybox", "cat", "/data/greeting"]);
    assert_eq!(out.stdout, "hello\n", "{out}");

    daemon.docker_ok(&["volume", "rm", "shared"]);
    assert!(volume_names(&daemon, &[]).is_empty());
    assert!(!volumes_dir.join("shared").exists());
    let out = daemon.docker(&["volume", "rm", "shared"]);
    assert!(out.stderr.contains("get shared: no such volume"), "{out}");
    let (status, _) = status_of(&daemon, "DELETE", "/v1.45/volumes/shared?force=1");
    assert_eq!(status, 204, "force: a missing volume is not an error");
    let out = daemon.docker(&["volume", "inspect", "shared"]);
    assert!(!out.status.success() && out.stderr.contains("no such volume"), "{out}");
    assert_no_mounts_left(dir.path());
}

#[test]
fn new_volumes_are_filled_from_the_image_and_anonymous_ones_are_cleaned_up() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let volumes_dir = daemon.paths.data_root.join("volumes");
    // The test image's /data: keep.txt, keep-link -> keep.txt, opaque/new.txt, and files
    // that a later layer deletes (whiteouts), which must not come back in the copy.
    let out = run(
        &daemon,
        &[
            "-v",
            "filled:/data",
            "busybox",
            "sh",
            "-c",
            "cd /data && find . | sort && cat keep.txt",
        ],
    );
    assert!(out.status.success(), "{out}");
    println!("$ docker run -v filled:/data busybox find /data\n{}", out.stdout);
    let image_view = run(
        &daemon,
        &["busybox", "sh", "-c", "cd /data && find . | sort && cat keep.txt"],
    );
    assert_eq!(
        out.stdout, image_view.stdout,
        "the volume holds what the image has there"
    );
    let data = volumes_dir.join("filled/_data");
    assert!(data.join("keep.txt").is_file());
    assert_eq!(
        fs::read_link(data.join("keep-link")).expect("symlink kept"),
        Path::new("keep.txt")
    );
    assert!(!data.join("remove-me.txt").exists(), "a whiteout came back");
    // Filled once: a volume that has data is left as it is.
    fs::remove_file(data.join("keep.txt")).expect("remove");
    let out = run(&daemon, &["-v", "filled:/data", "busybox", "ls", "/data"]);
    assert!(!out.stdout.contains("keep.txt"), "{out}");
    // nocopy: an empty volume stays empty.
    let out = run(&daemon, &["-v", "bare:/data:nocopy", "busybox", "ls", "-A", "/data"]);
    assert_eq!(out.stdout, "", "{out}");
    let out = run(
        &daemon,
        &[
            "--mount",
            "type=volume,src=bare2,dst=/data,volume-nocopy",
            "busybox",
            "ls",
            "-A",
            "/data",
        ],
    );
    assert_eq!(out.stdout, "", "{out}");

    // An image's VOLUME: an anonymous volume, filled, gone with --rm.
    let archive = dir.path().join("withvol.tar");
    ImageBuilder::new()
        .volume("/data")
        .write_docker_archive(&archive, "withvol:latest")
        .expect("image with a VOLUME");
    daemon.docker_ok(&["load", "-i", archive.to_str().expect("utf-8")]);
    let before = volume_names(&daemon, &[]);
    let out = run(
        &daemon,
        &[
            "withvol",
            "sh",
            "-c",
            "cat /data/keep.txt && grep -c ' /data ' /proc/mounts",
        ],
    );
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.ends_with("\n1\n"), "/data is a mount: {out}");
    assert_eq!(volume_names(&daemon, &[]), before, "--rm removes the anonymous volume");

    // -v /path: anonymous too; rm keeps it (dangling), rm -v removes it, prune removes
    // dangling anonymous ones and leaves named ones unless -a.
    let keeper = daemon
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "anon",
            "--network",
            "none",
            "-v",
            "/scratch",
            "withvol",
            "sleep",
            "1000",
        ])
        .stdout
        .trim()
        .to_owned();
    let v = inspect(&daemon, "anon");
    let mounts = v["Mounts"].as_array().expect("mounts");
    assert_eq!(mounts.len(), 2, "{v}");
    assert!(
        mounts
            .iter()
            .all(|m| m["Type"] == "volume" && m["Name"].as_str().is_some_and(|n| n.len() == 64) && m["Mode"] == "")
    );
    assert_eq!(v["Config"]["Volumes"], serde_json::json!({"/data": {}, "/scratch": {}}));
    let anon_names: Vec<String> = mounts
        .iter()
        .map(|m| m["Name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let ls = daemon.docker_ok(&["volume", "inspect", &anon_names[0]]);
    assert!(ls.stdout.contains("com.docker.volume.anonymous"), "{ls}");
    daemon.docker_ok(&["rm", "-f", "anon"]);
    let dangling = volume_names(&daemon, &["--filter", "dangling=true"]);
    assert!(anon_names.iter().all(|n| dangling.contains(n)), "{dangling:?}");
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "anon2",
        "--network",
        "none",
        "-v",
        "/scratch",
        "busybox",
        "sleep",
        "1000",
    ]);
    let anon2 = inspect(&daemon, "anon2")["Mounts"][0]["Name"]
        .as_str()
        .expect("name")
        .to_owned();
    daemon.docker_ok(&["rm", "-f", "-v", "anon2"]);
    assert!(
        !volume_names(&daemon, &[]).contains(&anon2),
        "rm -v removes the anonymous volume"
    );
    assert!(!volumes_dir.join(&anon2).exists());

    let out = daemon.docker_ok(&["volume", "prune", "-f"]);
    println!("$ docker volume prune -f\n{}", out.stdout);
    for n in &anon_names {
        assert!(out.stdout.contains(n.as_str()), "{out}");
    }
    assert_eq!(
        volume_names(&daemon, &[]),
        ["bare", "bare2", "filled"],
        "named volumes stay without -a"
    );
    let in_use = daemon
        .docker_ok(&["create", "--network", "none", "-v", "bare:/x", "busybox", "true"])
        .stdout
        .trim()
        .to_owned();
    let out = daemon.docker_ok(&["volume", "prune", "-a", "-f"]);
    assert!(out.stdout.contains("filled") && out.stdout.contains("bare2"), "{out}");
    assert!(out.stdout.contains("Total reclaimed space:"), "{out}");
    assert_eq!(volume_names(&daemon, &[]), ["bare"], "a volume in use is not pruned");
    // An API older than 1.42 prunes named volumes as well (dockerd does the same).
    daemon.docker_ok(&["rm", &in_use]);
    let (status, body) = status_of(&daemon, "POST", "/v1.41/volumes/prune");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"bare\""), "{body}");
    assert!(volume_names(&daemon, &[]).is_empty());
    let _ = keeper;
    assert_no_mounts_left(dir.path());
}

#[test]
fn tmpfs_and_bind_volumes_and_bad_input() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let volumes_dir = daemon.paths.data_root.join("volumes");

    // tmpfs: mounted while a container uses it, with its options; gone after.
    daemon.docker_ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=8m",
        "scratch",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&daemon.docker_ok(&["volume", "inspect", "scratch"]).stdout).expect("JSON");
    assert_eq!(
        v[0]["Options"],
        serde_json::json!({"device": "tmpfs", "o": "size=8m", "type": "tmpfs"})
    );
    let out = run(
        &daemon,
        &[
            "-v",
            "scratch:/t",
            "busybox",
            "sh",
            "-c",
            "grep ' /t ' /proc/mounts; echo x > /t/f",
        ],
    );
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.starts_with("tmpfs /t tmpfs") && out.stdout.contains("size=8192k"),
        "{out}"
    );
    assert_no_mounts_left(dir.path());

    // bind: a host directory, seen by the host.
    let host = dir.path().join("site-data");
    fs::create_dir(&host).expect("mkdir");
    let device = format!("device={}", host.display());
    daemon.docker_ok(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &device,
        "sitevol",
    ]);
    let out = run(
        &daemon,
        &["-v", "sitevol:/s", "busybox", "sh", "-c", "echo from-container > /s/f"],
    );
    assert!(out.status.success(), "{out}");
    assert_eq!(
        fs::read_to_string(host.join("f")).expect("the host sees it"),
        "from-container\n"
    );
    daemon.docker_ok(&["volume", "rm", "sitevol"]);
    assert!(host.join("f").exists(), "removing a bind volume keeps the host's files");

    // Bad input: a clear error, nothing left behind.
    let before: Vec<String> = volume_names(&daemon, &[]);
    for (args, want) in [
        (
            &["volume", "create", "a/b"][..],
            "\"a/b\" includes invalid characters for a local volume name",
        ),
        (&["volume", "create", "x"][..], "volume name is too short"),
        (
            &["volume", "create", "-o", "foo=bar", "v1"][..],
            "create v1: invalid option: \"foo\"",
        ),
        (
            &["volume", "create", "-o", "type=tmpfs", "v2"][..],
            "missing required option: \"device\"",
        ),
        (
            &[
                "volume",
                "create",
                "-o",
                "type=nfs",
                "-o",
                "device=:/export",
                "-o",
                "o=addr=192.0.2.1",
                "v3",
            ][..],
            "local volume type \"nfs\"",
        ),
        (
            &["volume", "create", "-d", "convoy", "v4"][..],
            "plugin \"convoy\" not found",
        ),
        (
            &["run", "--rm", "-v", "bad/name:/x", "busybox", "true"][..],
            "includes invalid characters",
        ),
        (
            &[
                "run",
                "--rm",
                "--mount",
                "type=volume,dst=/x,volume-driver=convoy",
                "busybox",
                "true",
            ][..],
            "plugin \"convoy\" not found",
        ),
        (
            &["run", "--rm", "-v", "vol:/", "busybox", "true"][..],
            "destination can't be '/'",
        ),
    ] {
        let out = daemon.docker(args);
        assert!(
            !out.status.success() && out.stderr.contains(want),
            "docker {args:?}: {out}"
        );
    }
    assert_eq!(volume_names(&daemon, &[]), before, "a refused request made a volume");
    let left: Vec<String> = fs::read_dir(&volumes_dir)
        .expect("volumes dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["scratch"], "{left:?}");
    let ps = daemon.docker_ok(&["ps", "-aq"]);
    assert!(ps.stdout.trim().is_empty(), "{ps}");

    // Volume events, as dockerd sends them.
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 1)
    .to_string();
    let ev = daemon.docker_ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "type=volume",
        "--filter",
        "volume=scratch",
        "--format",
        "{{.Action}}",
    ]);
    assert_eq!(ev.stdout, "create\nmount\nunmount\n", "{ev}");
    daemon.docker_ok(&["volume", "rm", "scratch"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_no_mounts_left(dir.path());
}
