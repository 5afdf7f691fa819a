//! What a daemon keeps and what a registry has, as clients ask for it: `GET /system/df`
//! (`docker system df`, `docker ps -s`, `inspect --size`), `berth system info`/`df`, the
//! prune filters (`label`, `label!`, `until`), and `GET /distribution/{name}/json` against a
//! Berth registry with a password.
//!
//! Needs root (namespaces, overlay, cgroups).

// Test output is the reader's interface here: the CLIs' output, for the record.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use berth_testkit::{Prereq, RegistryProcess, require};
use serde_json::{Value, json};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

fn api_json(daemon: &DaemonProcess, path: &str) -> Value {
    let (status, body) = daemon.request("GET", path, &[], b"", false);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
}

fn berth(daemon: &DaemonProcess, args: &[&str]) -> Output {
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["-H", &daemon.paths.host()])
            .args(args),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "berth {args:?}\n{out}");
    out
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x[key] == value || x[key].as_array().is_some_and(|v| v.contains(&json!(value))))
        })
        .unwrap_or_else(|| panic!("no {key}={value} in {list}"))
}

#[test]
fn disk_use_sizes_and_prune_filters() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let base_size = api_json(&daemon, "/images/busybox/json")["Size"].as_u64().unwrap();

    // A second image on top of busybox shares its layer.
    daemon.docker_ok(&[
        "run",
        "--name",
        "seed",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "head -c 500000 /dev/zero > /seed",
    ]);
    daemon.docker_ok(&["commit", "seed", "seeded:1"]);
    daemon.docker_ok(&["rm", "seed"]);
    // A running container that wrote 3 MB, a volume of 1 MiB held by a stopped container.
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "writer",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "head -c 3000000 /dev/zero > /big && touch /done && sleep 300",
    ]);
    daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "vol1:/vol",
        "busybox",
        "sh",
        "-c",
        "head -c 1048576 /dev/zero > /vol/f",
    ]);
    daemon.docker_ok(&[
        "create",
        "--name",
        "holder",
        "--network",
        "none",
        "-v",
        "vol1:/vol",
        "busybox",
        "true",
    ]);
    wait_until("the writer's file", std::time::Duration::from_secs(10), || {
        daemon
            .docker(&["exec", "writer", "test", "-f", "/done"])
            .status
            .success()
    });

    let df = api_json(&daemon, "/v1.45/system/df");
    println!("{}", serde_json::to_string_pretty(&df).unwrap());
    let busybox = find(&df["Images"], "RepoTags", "busybox:latest");
    let seeded = find(&df["Images"], "RepoTags", "seeded:1");
    let seeded_size = seeded["Size"].as_u64().unwrap();
    assert!(seeded_size >= base_size + 500_000, "{seeded}");
    assert_eq!(
        busybox["SharedSize"], base_size,
        "busybox's layer is shared with seeded:1"
    );
    assert_eq!(seeded["SharedSize"], base_size);
    assert_eq!(busybox["Containers"], 2, "writer and holder use busybox");
    assert_eq!(seeded["Containers"], 0);
    assert_eq!(df["LayersSize"], seeded_size, "the shared layer counts once");
    let writer = find(&df["Containers"], "Names", "/writer");
    let rw = writer["SizeRw"].as_u64().unwrap();
    assert!((3_000_000..3_100_000).contains(&rw), "{writer}");
    assert_eq!(writer["SizeRootFs"], rw + base_size);
    let vol = find(&df["Volumes"], "Name", "vol1");
    assert_eq!(vol["UsageData"], json!({"Size": 1_048_576, "RefCount": 1}), "{vol}");
    assert_eq!(df["BuildCache"], json!([]));

    // The image list's shared sizes and its filters by age.
    let list = api_json(&daemon, "/v1.45/images/json?shared-size=1");
    assert_eq!(find(&list, "RepoTags", "seeded:1")["SharedSize"], base_size, "{list}");
    let names = |filter: &str| -> String {
        daemon
            .docker_ok(&["images", "--filter", filter, "--format", "{{.Repository}}"])
            .stdout
    };
    assert_eq!(names("before=seeded:1").trim(), "busybox");
    assert_eq!(names("since=busybox").trim(), "seeded");
    assert_eq!(names("until=2000-01-01").trim(), "", "both images are newer");
    assert_eq!(names("until=1h").trim(), "busybox", "only the old one is an hour old");
    let out = daemon.docker(&["images", "--filter", "since=nothing:here"]);
    assert!(!out.status.success() && out.stderr.contains("nothing:here"), "{out}");
    // ps filters that name what no container here is.
    let ps = daemon.docker_ok(&["ps", "-a", "--filter", "is-task=true", "-q"]).stdout;
    assert!(ps.trim().is_empty(), "{ps}");
    let ps = daemon
        .docker_ok(&["ps", "-a", "--filter", "is-task=false", "--format", "{{.Names}}"])
        .stdout;
    assert!(ps.contains("writer") && ps.contains("holder"), "{ps}");
    daemon.docker_ok(&[
        "create",
        "--name",
        "exposer",
        "--expose",
        "7000-7001/udp",
        "--network",
        "none",
        "busybox",
        "true",
    ]);
    let ps = daemon
        .docker_ok(&["ps", "-a", "--filter", "expose=7001/udp", "--format", "{{.Names}}"])
        .stdout;
    assert_eq!(ps.trim(), "exposer");
    daemon.docker_ok(&["rm", "exposer"]);

    // Only the parts asked for; an unknown part is refused.
    let only = api_json(&daemon, "/v1.45/system/df?type=volume");
    assert!(
        only.get("Volumes").is_some() && only.get("Images").is_none() && only.get("Containers").is_none(),
        "{only}"
    );
    let (status, body) = daemon.request("GET", "/v1.45/system/df?type=layers", &[], b"", false);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("container, image, volume or build-cache"), "{body}");

    // The same numbers through the docker CLI and berth.
    let out = daemon.docker_ok(&["system", "df"]);
    println!("$ docker system df\n{}", out.stdout);
    assert!(out.stdout.contains("Local Volumes   1         1"), "{out}");
    let ps = daemon
        .docker_ok(&["ps", "-s", "--format", "{{.Names}} {{.Size}}"])
        .stdout;
    assert!(ps.contains("writer 3MB (virtual "), "{ps}");
    let inspect = daemon.docker_ok(&["container", "inspect", "--size", "writer"]).stdout;
    let inspect: Value = serde_json::from_str(&inspect).expect("inspect JSON");
    assert_eq!(inspect[0]["SizeRw"], rw);
    let out = berth(&daemon, &["system", "info"]);
    println!("$ berth system info\n{}", out.stdout);
    let data_root = daemon.paths.data_root.display().to_string();
    assert!(out.stdout.contains(&format!("Data root:       {data_root}")), "{out}");
    assert!(
        out.stdout.contains("API version:     1.45 (oldest accepted 1.24)"),
        "{out}"
    );
    assert!(out.stdout.contains("Live restore:    enabled"), "{out}");
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    assert!(out.stdout.contains(&format!("Cgroup version:  {cgroup}")), "{out}");
    let info: Value = serde_json::from_str(&berth(&daemon, &["system", "info", "--format", "json"]).stdout).unwrap();
    assert_eq!(info["DockerRootDir"], data_root);
    assert_eq!(info["Containers"], 2);
    let images_row = &info["Storage"][0];
    assert_eq!(
        (images_row["Type"].as_str(), images_row["Size"].as_u64()),
        (Some("Images"), Some(seeded_size))
    );
    let out = berth(&daemon, &["system", "df"]);
    assert!(out.stdout.contains("Images          2       1"), "{out}");

    // Prune filters: only what the labels and the age choose.
    for (name, label) in [("t1a", "site=t1"), ("t1b", "site=t1"), ("t2", "site=t2")] {
        daemon.docker_ok(&[
            "create",
            "--name",
            name,
            "--label",
            label,
            "--network",
            "none",
            "busybox",
            "true",
        ]);
    }
    let out = daemon.docker_ok(&[
        "container",
        "prune",
        "-f",
        "--filter",
        "label=site=t1",
        "--filter",
        "until=1h",
    ]);
    assert!(!out.stdout.contains("Deleted"), "nothing is an hour old: {out}");
    let out = daemon.docker_ok(&["container", "prune", "-f", "--filter", "label=site=t1"]);
    println!("$ docker container prune -f --filter label=site=t1\n{}", out.stdout);
    let left = daemon.docker_ok(&["ps", "-a", "--format", "{{.Names}}"]).stdout;
    assert!(
        !left.contains("t1a") && !left.contains("t1b") && left.contains("t2") && left.contains("holder"),
        "{left}"
    );
    let out = daemon.docker_ok(&["container", "prune", "-f", "--filter", "label!=site"]);
    let left = daemon.docker_ok(&["ps", "-a", "--format", "{{.Names}}"]).stdout;
    assert!(
        left.contains("t2") && !left.contains("holder") && left.contains("writer"),
        "{out}\n{left}"
    );
    let out = daemon.docker(&["container", "prune", "-f", "--filter", "until=yesterday"]);
    assert!(
        !out.status.success() && out.stderr.contains("invalid value for until"),
        "{out}"
    );
    let out = daemon.docker_ok(&["image", "prune", "-a", "-f", "--filter", "until=1h"]);
    assert!(!out.stdout.contains("seeded"), "seeded:1 is new: {out}");
    let out = daemon.docker_ok(&["image", "prune", "-a", "-f"]);
    assert!(out.stdout.contains("untagged: seeded:1"), "{out}");

    daemon.docker_ok(&["rm", "-f", "writer", "t2"]);
    // `docker system prune` prunes containers, networks, images and the build cache (Berth
    // has none: nothing to remove).
    daemon.docker_ok(&["network", "create", "unused"]);
    let out = daemon.docker_ok(&["system", "prune", "-f"]);
    println!("$ docker system prune -f\n{}", out.stdout);
    assert!(out.stdout.contains("Deleted Networks:\nunused"), "{out}");
    let out = daemon.docker_ok(&["builder", "prune", "-f"]);
    assert!(out.stdout.contains("Total reclaimed space: 0B"), "{out}");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn distribution_inspect_reads_the_registry_without_pulling() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(Command::new("htpasswd").args(["-Bbn", "site", "secret"]), CLI_TIMEOUT);
    assert!(out.status.success(), "{out}");
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
    let registry = RegistryProcess::start(
        Path::new(env!("CARGO_BIN_EXE_berth")),
        &[
            "--root",
            dir.path().join("registry").to_str().unwrap(),
            "--htpasswd",
            htpasswd.to_str().unwrap(),
        ],
    )
    .expect("start the registry");
    let host = registry.addr().to_string();
    let (_cleanup, daemon) = daemon_with_image(dir.path());
    let name = format!("{host}/dist/bb:1");
    daemon.docker_ok(&["login", "-u", "site", "-p", "secret", &host]);
    daemon.docker_ok(&["tag", "busybox", &name]);
    let out = daemon.docker_ok(&["push", &name]);
    let digest = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_owned();
    daemon.docker_ok(&["rmi", &name]);

    let auth = base64::engine::general_purpose::URL_SAFE
        .encode(json!({"username": "site", "password": "secret", "serveraddress": host}).to_string());
    let path = format!("/v1.45/distribution/{name}/json");
    let (status, body) = daemon.request("GET", &path, &[("X-Registry-Auth", &auth)], b"", false);
    assert_eq!(status, 200, "{body}\n{}", daemon.log());
    let v: Value = serde_json::from_str(&body).expect("JSON");
    println!("GET {path}\n{v}");
    assert_eq!(v["Descriptor"]["digest"], digest.as_str(), "{v}");
    assert_eq!(
        v["Descriptor"]["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{v}"
    );
    assert!(v["Descriptor"]["size"].as_u64().unwrap() > 100, "{v}");
    let arch = daemon
        .docker_ok(&["version", "-f", "{{.Server.Arch}}"])
        .stdout
        .trim()
        .to_owned();
    assert_eq!(v["Platforms"], json!([{"architecture": arch, "os": "linux"}]), "{v}");
    let images = daemon.docker_ok(&["images", "-q", &name]).stdout;
    assert!(images.trim().is_empty(), "nothing was pulled: {images}");

    // Without credentials, a wrong password, a tag that is not there: 404 with the
    // registry's reason, as dockerd answers a refused pull ("pull access denied").
    let (status, body) = daemon.request("GET", &path, &[], b"", false);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("unauthorized: authentication required"), "{body}");
    let wrong = base64::engine::general_purpose::URL_SAFE
        .encode(json!({"username": "site", "password": "nope", "serveraddress": host}).to_string());
    let (status, body) = daemon.request("GET", &path, &[("X-Registry-Auth", &wrong)], b"", false);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("check the username and password"), "{body}");
    let missing = format!("/v1.45/distribution/{host}/dist/bb:2/json");
    let (status, body) = daemon.request("GET", &missing, &[("X-Registry-Auth", &auth)], b"", false);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("bb:2") && body.contains("not found"), "{body}");

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
