//! End-to-end tests of where `docker pull` through `berth daemon` gets images from and what
//! it records, with the real docker CLI and real `berth registry serve` processes:
//!
//! - a TLS registry whose CA is trusted only through `/etc/docker/certs.d/HOST:PORT/ca.crt`:
//!   refused before the CA is installed, then pulled from anonymously, and from a second one
//!   with htpasswd after `docker login` (a wrong password refused). Loopback registries are
//!   insecure (as in dockerd), so the registries and the daemon run in a network namespace
//!   the test creates, on 192.0.2.20 (TEST-NET-1), which exists only there;
//! - a multi-platform index (s390x, arm64/v8, then the host's architecture) resolves to the
//!   host's platform;
//! - `--registry-mirror`: unqualified and Docker Hub names are served by the mirror;
//! - a pull by digest records the digest reference (`RepoDigests`, tag `<none>`), is not
//!   dangling, survives `docker image prune`; `docker rmi` then leaves the data root as it
//!   was before the pull (no blob, snapshot or empty directory behind);
//! - a re-pull that moves a tag leaves the old image with no reference, for prune.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_oci::{Digest, media_types};
use berth_testkit::{ImageBuilder, ImageInfo, Prereq, RegistryProcess, go_arch, require};
use serde_json::{Value, json};

// The registry, netns, CA and certs.d guards; only some of it is used here.
#[allow(dead_code)]
mod common;
#[path = "support/daemon.rs"]
mod daemon_support;
#[path = "support/skopeo.rs"]
mod skopeo;
use daemon_support::{DaemonProcess, Output};

/// Pulls get this long.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// 192.0.2.20: TEST-NET-1, configured only inside the test's network namespace.
const NETNS_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));

fn start_registry(root: &Path) -> RegistryProcess {
    RegistryProcess::start(
        Path::new(env!("CARGO_BIN_EXE_berth")),
        &["--root", root.to_str().expect("utf-8 path")],
    )
    .expect("start the registry")
}

fn inspect(daemon: &DaemonProcess, name: &str) -> Value {
    let out = daemon.docker_ok(&["image", "inspect", name]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    v[0].clone()
}

/// The `Digest: sha256:…` line of a pull's output.
fn pulled_digest(out: &Output) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no Digest line\n{out}"))
        .to_owned()
}

/// `docker login` with the password on stdin.
fn docker_login(daemon: &DaemonProcess, host: &str, user: &str, password: &str) -> common::Output {
    common::run_with_input(
        std::process::Command::new("docker")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", &daemon.docker_config)
            .args([
                "-H",
                &daemon.paths.host(),
                "login",
                "--username",
                user,
                "--password-stdin",
                host,
            ]),
        Some(password.as_bytes()),
        CLI_TIMEOUT,
    )
    .expect("run docker login")
}

#[test]
fn docker_pull_over_tls_trusted_through_certs_d_with_and_without_login() {
    if !require(&[Prereq::Root, Prereq::Docker, Prereq::Skopeo, Prereq::Netns]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    // Dropped in reverse order: the certs.d entries first (even when a step panics), then
    // the daemon, the registries and the namespace.
    let netns = common::Netns::create().expect("create a network namespace");
    netns.add_address(NETNS_ADDR).expect("address in the namespace");
    let pki = common::TestPki::for_ip(NETNS_ADDR).expect("test CA");
    let (cert, key) = (work.path().join("server.crt"), work.path().join("server.key"));
    fs::write(&cert, &pki.server_cert).expect("write cert");
    fs::write(&key, &pki.server_key).expect("write key");
    let htpasswd = work.path().join("htpasswd");
    common::write_htpasswd(&htpasswd, "alice", "correct horse").expect("htpasswd");
    let config = |htpasswd: Option<PathBuf>| common::RegistryConfig {
        addr: SocketAddr::new(NETNS_ADDR, 0),
        htpasswd,
        realm: Some("berth-e2e".to_owned()),
        tls: Some((cert.clone(), key.clone())),
        netns: Some(netns.path()),
    };
    let open = common::RegistryUnderTest::start(common::Backend::Berth, &config(None)).expect("open registry");
    let locked = common::RegistryUnderTest::start(common::Backend::Berth, &config(Some(htpasswd.clone())))
        .expect("locked registry");
    let (open_host, locked_host) = (open.host(), locked.host());
    let ns = netns.path();
    let open_info = skopeo::push(
        &ImageBuilder::new(),
        work.path(),
        &open_host,
        "sl6/wn",
        "1",
        None,
        Some(&ns),
    );
    let locked_info = skopeo::push(
        &ImageBuilder::new().label("locked", "yes"),
        work.path(),
        &locked_host,
        "sl6/secret",
        "1",
        Some("alice:correct horse"),
        Some(&ns),
    );
    let daemon = DaemonProcess::start_in(Some(&ns), CLI_TIMEOUT, work.path(), "berth", &[]);

    // Before the CA is in certs.d the certificate is refused: proof that it is checked.
    let open_name = format!("{open_host}/sl6/wn:1");
    let out = daemon.docker(&["pull", &open_name]);
    println!("{out}");
    assert!(!out.status.success(), "pull without the CA succeeded\n{out}");
    assert!(
        out.stderr.contains("certificate"),
        "refused, but not for the certificate\n{out}"
    );
    assert!(
        out.stderr.contains(&format!("/etc/docker/certs.d/{open_host}/ca.crt")),
        "the error does not say where the CA goes\n{out}"
    );

    let _open_ca = common::CertsDir::install(&open_host, &pki.ca_cert).expect("install the CA in certs.d");
    let _locked_ca = common::CertsDir::install(&locked_host, &pki.ca_cert).expect("install the CA in certs.d");

    // Anonymous.
    let out = daemon.docker_ok(&["pull", &open_name]);
    println!("{out}");
    assert_eq!(inspect(&daemon, &open_name)["Id"], open_info.config_digest.to_string());

    // With htpasswd: refused without credentials and with a wrong password, then pulled
    // after `docker login` (the CLI sends what it stored as X-Registry-Auth).
    let locked_name = format!("{locked_host}/sl6/secret:1");
    let out = daemon.docker(&["pull", &locked_name]);
    println!("{out}");
    assert!(
        !out.status.success(),
        "anonymous pull from the htpasswd registry\n{out}"
    );
    assert!(out.stderr.contains("unauthorized"), "{out}");
    let wrong = docker_login(&daemon, &locked_host, "alice", "wrong password");
    println!("{wrong}");
    assert!(
        !wrong.status.success(),
        "login with a wrong password succeeded\n{wrong}"
    );
    let wrong_err = wrong.stderr().to_lowercase();
    assert!(
        wrong_err.contains("unauthorized") || wrong_err.contains("401"),
        "login failed, but not on the password\n{wrong}"
    );
    assert!(
        !daemon.docker_config.join("config.json").exists()
            || !fs::read_to_string(daemon.docker_config.join("config.json"))
                .expect("read config.json")
                .contains(&locked_host),
        "a refused login stored credentials"
    );
    let right = docker_login(&daemon, &locked_host, "alice", "correct horse");
    println!("{right}");
    assert!(
        right.status.success() && right.stdout().contains("Login Succeeded"),
        "{right}"
    );
    let out = daemon.docker_ok(&["pull", &locked_name]);
    println!("{out}");
    let v = inspect(&daemon, &locked_name);
    assert_eq!(v["Id"], locked_info.config_digest.to_string(), "{v}");
    assert_eq!(v["Config"]["Labels"]["locked"], "yes", "{v}");

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

/// Writes `platforms` (Go architecture names; the host's one among them) as images into one
/// OCI layout, then an image index over them tagged `tag`, with skopeo's `--all` in mind.
/// Returns the index digest and the image per architecture.
fn write_index(layout: &Path, tag: &str, platforms: &[&str]) -> (Digest, Vec<(String, ImageInfo)>) {
    let mut images = Vec::new();
    let mut entries = Vec::new();
    for arch in platforms {
        let info = ImageBuilder::new()
            .architecture(*arch)
            .label("platform", *arch)
            .write_oci_layout(layout, &format!("{tag}-{arch}"))
            .expect("write the platform image");
        let mut platform = json!({ "architecture": arch, "os": "linux" });
        if *arch == "arm64" {
            platform["variant"] = json!("v8");
        }
        entries.push(json!({
            "mediaType": info.manifest_media_type,
            "digest": info.manifest_digest,
            "size": info.manifest_bytes.len(),
            "platform": platform,
        }));
        images.push((arch.to_string(), info));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": entries,
    }))
    .expect("index JSON");
    let digest = Digest::sha256(&index);
    fs::write(layout.join("blobs/sha256").join(digest.hex()), &index).expect("write the index blob");
    let layout_index = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": [{
            "mediaType": media_types::OCI_INDEX,
            "digest": digest,
            "size": index.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    fs::write(layout.join("index.json"), layout_index.to_string()).expect("write index.json");
    (digest, images)
}

#[test]
fn multi_platform_index_resolves_to_the_host_platform() {
    if !require(&[Prereq::Root, Prereq::Docker, Prereq::Skopeo]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(&dir.path().join("registry"));
    let host = registry.addr().to_string();
    // The host's platform last, so taking the first entry (or any other) is caught.
    let others: Vec<&str> = ["s390x", "arm64", "amd64"]
        .into_iter()
        .filter(|a| *a != go_arch())
        .collect();
    let mut platforms = others.clone();
    platforms.truncate(2);
    platforms.push(go_arch());
    let layout = dir.path().join("multi-layout");
    let (index_digest, images) = write_index(&layout, "multi", &platforms);
    skopeo::copy(
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{host}/sl6/multi:1"),
        &["--all"],
        None,
    );
    let host_image = &images.last().expect("the host image").1;

    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);
    let name = format!("{host}/sl6/multi:1");
    let before = registry.log().len();
    let out = daemon.docker_ok(&["pull", &name]);
    println!("{out}");
    assert_eq!(
        pulled_digest(&out),
        index_digest.to_string(),
        "the reference's digest is the index's\n{out}"
    );
    let v = inspect(&daemon, &name);
    assert_eq!(v["Architecture"], go_arch(), "{v}");
    assert_eq!(v["Os"], "linux", "{v}");
    assert_eq!(v["Config"]["Labels"]["platform"], go_arch(), "{v}");
    assert_eq!(v["Id"], host_image.config_digest.to_string(), "{v}");
    assert_eq!(
        v["RepoDigests"],
        json!([format!("{host}/sl6/multi@{index_digest}")]),
        "{v}"
    );
    // Only the host's platform was fetched.
    let log = registry.log()[before..].to_owned();
    for (arch, info) in &images {
        let wanted = format!("/manifests/{}", info.manifest_digest);
        let fetched = log.lines().any(|l| l.contains("method=GET") && l.contains(&wanted));
        assert_eq!(fetched, arch == go_arch(), "{arch} manifest fetched: {fetched}\n{log}");
    }
    if go_arch() == "amd64" {
        assert_eq!(v["Architecture"], "amd64");
    }
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn registry_mirror_serves_docker_hub_names() {
    if !require(&[Prereq::Root, Prereq::Docker, Prereq::Skopeo]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(&dir.path().join("mirror"));
    let host = registry.addr().to_string();
    let busybox = skopeo::push(
        &ImageBuilder::new().label("from", "mirror"),
        dir.path(),
        &host,
        "library/busybox",
        "latest",
        None,
        None,
    );
    let wn = skopeo::push(
        &ImageBuilder::new().label("from", "mirror-wn"),
        dir.path(),
        &host,
        "sl6/wn",
        "1",
        None,
        None,
    );
    let mirror = format!("http://{host}");
    let daemon =
        DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &["--registry-mirror", &mirror]);
    let info = daemon.docker_ok(&["info", "--format", "{{json .RegistryConfig.Mirrors}}"]);
    assert!(info.stdout.contains(&mirror), "{info}");

    let before = registry.log().len();
    let out = daemon.docker_ok(&["pull", "busybox"]);
    println!("{out}");
    assert!(
        out.stdout.contains("Status: Downloaded newer image for busybox:latest"),
        "{out}"
    );
    let v = inspect(&daemon, "busybox");
    assert_eq!(v["Id"], busybox.config_digest.to_string(), "{v}");
    assert_eq!(v["RepoTags"], json!(["busybox:latest"]), "{v}");
    assert_eq!(
        v["RepoDigests"],
        json!([format!("busybox@{}", busybox.manifest_digest)]),
        "{v}"
    );
    let log = registry.log();
    assert!(
        log[before..].contains("/v2/library/busybox/manifests/latest"),
        "{}",
        &log[before..]
    );

    // A Docker Hub name with a namespace, fully qualified as the CLI sends it.
    let out = daemon.docker_ok(&["pull", "docker.io/sl6/wn:1"]);
    println!("{out}");
    let v = inspect(&daemon, "sl6/wn:1");
    assert_eq!(v["Id"], wn.config_digest.to_string(), "{v}");
    assert_eq!(v["RepoTags"], json!(["sl6/wn:1"]), "{v}");
    assert!(registry.log().contains("/v2/sl6/wn/manifests/1"), "{}", registry.log());

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

/// Every path under `root`, relative, except the metadata file whose content changes.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            out.insert(path.strip_prefix(root).expect("under root").display().to_string());
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    out
}

#[test]
fn pull_by_digest_is_kept_by_prune_and_rmi_leaves_no_debris() {
    if !require(&[Prereq::Root, Prereq::Docker, Prereq::Skopeo]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(&dir.path().join("registry"));
    let host = registry.addr().to_string();
    let info = skopeo::push(&ImageBuilder::new(), dir.path(), &host, "sl6/wn", "1", None, None);
    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);
    let root = daemon.paths.data_root.clone();
    let empty = tree(&root);
    let id = info.config_digest.to_string();
    let by_digest = format!("{host}/sl6/wn@{}", info.manifest_digest);
    let short_id = &info.config_digest.hex()[..12];

    for round in ["rmi by digest", "rmi by tag"] {
        let out = daemon.docker_ok(&["pull", &by_digest]);
        println!("{round}: {out}");
        assert!(
            out.stdout
                .contains(&format!("Status: Downloaded newer image for {by_digest}")),
            "{out}"
        );
        let v = inspect(&daemon, &by_digest);
        assert_eq!(v["Id"], id, "{v}");
        assert_eq!(v["RepoTags"], json!([]), "{v}");
        assert_eq!(v["RepoDigests"], json!([by_digest]), "{v}");
        let images = daemon.docker_ok(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}} {{.ID}}",
        ]);
        assert_eq!(
            images.stdout.trim(),
            format!("{host}/sl6/wn <none> {} {short_id}", info.manifest_digest),
            "{images}"
        );
        // Not dangling (it has a reference), so prune keeps it, as dockerd's containerd image
        // store does.
        let dangling = daemon.docker_ok(&["images", "--filter", "dangling=true", "-q"]);
        assert_eq!(dangling.stdout.trim(), "", "{dangling}");
        let prune = daemon.docker_ok(&["image", "prune", "-f"]);
        assert!(!prune.stdout.contains("Deleted"), "{prune}");
        assert_eq!(inspect(&daemon, &by_digest)["Id"], id);

        let removed = if round == "rmi by digest" {
            daemon.docker_ok(&["rmi", &by_digest])
        } else {
            // Tagged later: the tag and the digest reference, both listed.
            let tagged = format!("{host}/sl6/wn:1");
            daemon.docker_ok(&["pull", &tagged]);
            let v = inspect(&daemon, &tagged);
            assert_eq!(
                (&v["RepoTags"], &v["RepoDigests"]),
                (&json!([tagged]), &json!([by_digest])),
                "{v}"
            );
            let out = daemon.docker_ok(&["rmi", &tagged]);
            assert!(out.stdout.contains(&format!("Untagged: {tagged}")), "{out}");
            out
        };
        println!("{removed}");
        assert!(removed.stdout.contains(&format!("Untagged: {by_digest}")), "{removed}");
        assert!(removed.stdout.contains(&format!("Deleted: {id}")), "{removed}");
        let left = daemon.docker_ok(&["images", "-a", "-q"]);
        assert_eq!(left.stdout.trim(), "", "{left}");
        // Nothing of the image is left: no blob, snapshot, temporary or empty directory.
        let now = tree(&root);
        let debris: Vec<_> = now.difference(&empty).collect();
        assert!(debris.is_empty(), "{round} left {debris:?} in {}", root.display());
    }
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn repull_of_a_moved_tag_leaves_the_old_image_for_prune() {
    if !require(&[Prereq::Root, Prereq::Docker, Prereq::Skopeo]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(&dir.path().join("registry"));
    let host = registry.addr().to_string();
    let old = skopeo::push(
        &ImageBuilder::new().label("v", "1"),
        dir.path(),
        &host,
        "sl6/wn",
        "latest",
        None,
        None,
    );
    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);
    let name = format!("{host}/sl6/wn:latest");
    daemon.docker_ok(&["pull", &name]);
    assert_eq!(
        inspect(&daemon, &name)["RepoDigests"],
        json!([format!("{host}/sl6/wn@{}", old.manifest_digest)])
    );

    // The tag moves upstream; a re-pull moves it here, and the old image keeps no reference
    // (its digest reference went with the tag), so it is dangling and prune removes it.
    let new = skopeo::push(
        &ImageBuilder::new().label("v", "2"),
        dir.path(),
        &host,
        "sl6/wn",
        "latest",
        None,
        None,
    );
    daemon.docker_ok(&["pull", &name]);
    assert_eq!(inspect(&daemon, &name)["Id"], new.config_digest.to_string());
    let v = inspect(&daemon, &old.config_digest.to_string());
    assert_eq!((&v["RepoTags"], &v["RepoDigests"]), (&json!([]), &json!([])), "{v}");
    let dangling = daemon.docker_ok(&["images", "--filter", "dangling=true", "-q", "--no-trunc"]);
    assert_eq!(dangling.stdout.trim(), old.config_digest.to_string(), "{dangling}");
    let prune = daemon.docker_ok(&["image", "prune", "-f"]);
    assert!(
        prune.stdout.contains(&format!("deleted: {}", old.config_digest)),
        "{prune}"
    );
    assert!(
        daemon
            .docker(&["image", "inspect", &old.config_digest.to_string()])
            .status
            .code()
            != Some(0)
    );
    assert_eq!(inspect(&daemon, &name)["Id"], new.config_digest.to_string());
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
