//! End-to-end tests of `docker pull` through `berth daemon` with the real docker CLI, from
//! a real `berth registry serve` on 127.0.0.1 (plain HTTP, as dockerd allows for loopback,
//! and HTTPS): the testkit's busybox image (several gzip layers, whiteouts) and its
//! uncompressed variant pushed with skopeo, pulled, listed and inspected; pulled again
//! ("Image is up to date"); pulled by digest (and by a digest the registry does not have);
//! unqualified names through `--add-registry`; a registry with htpasswd, with no, wrong and
//! right credentials from the CLI's `config.json` (sent as `X-Registry-Auth`); a blocked
//! registry; a tampered layer blob in the registry, which fails the pull and leaves no
//! image; and two concurrent pulls sharing layers, each layer fetched once.
//!
//! The daemon harness is the one in `daemon_images.rs`.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use berth_testkit::{ImageBuilder, ImageInfo, Prereq, RegistryProcess, require};

/// Any docker CLI call gets this long.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

/// Writes `builder`'s image as an OCI layout and copies it to `registry` as `repo:tag` with
/// skopeo (plain HTTP), with `creds` (`user:password`) when the registry wants them.
fn push(
    builder: &ImageBuilder,
    work: &Path,
    registry: &RegistryProcess,
    repo: &str,
    tag: &str,
    creds: Option<&str>,
) -> ImageInfo {
    let layout = work.join(format!("layout-{}-{tag}", repo.replace('/', "-")));
    let info = builder.write_oci_layout(&layout, tag).expect("write the OCI layout");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{repo}:{tag}", registry.addr()));
    let out = run(&mut cmd, CLI_TIMEOUT);
    assert!(out.status.success(), "{out}\n--- registry log\n{}", registry.log());
    info
}

fn start_registry(root: &Path, extra: &[&str]) -> RegistryProcess {
    let mut args = vec!["--root", root.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    RegistryProcess::start(Path::new(env!("CARGO_BIN_EXE_berth")), &args).expect("start the registry")
}

/// The `Digest: sha256:…` line of a pull's output.
fn pulled_digest(out: &Output) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no Digest line\n{out}"))
        .to_owned()
}

fn inspect(daemon: &DaemonProcess, name: &str) -> serde_json::Value {
    let out = daemon.docker_ok(&["image", "inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    v[0].clone()
}

/// Every file below `dir` (recursively).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn docker_pull_from_a_berth_registry() {
    if !require(&[Prereq::Docker, Prereq::Skopeo, Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(&dir.path().join("registry"), &[]);
    let host = registry.addr().to_string();
    let gz = push(&ImageBuilder::new(), dir.path(), &registry, "sl6/wn", "1", None);
    let plain = push(
        &ImageBuilder::new().uncompressed(),
        dir.path(),
        &registry,
        "sl6/wn",
        "plain",
        None,
    );
    let bad_builder = ImageBuilder::new().extra_random_layers(1, 300_000).label("bad", "yes");
    let bad = push(&bad_builder, dir.path(), &registry, "sl6/bad", "1", None);

    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);
    let name = format!("{host}/sl6/wn:1");
    let out = daemon.docker_ok(&["pull", &name]);
    println!("{out}");
    for want in [
        "1: Pulling from sl6/wn",
        "Pull complete",
        "Digest: sha256:",
        &format!("Status: Downloaded newer image for {name}"),
    ] {
        assert!(out.stdout.contains(want), "missing {want:?}\n{out}");
    }
    assert_eq!(out.stdout.lines().last().map(str::trim), Some(name.as_str()), "{out}");
    let digest = pulled_digest(&out);

    let v = inspect(&daemon, &name);
    assert_eq!(v["Id"], gz.config_digest.to_string(), "{v}");
    assert_eq!(v["RepoTags"], serde_json::json!([name]), "{v}");
    let want_diffs: Vec<String> = gz.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(v["RootFS"]["Layers"], serde_json::json!(want_diffs), "{v}");
    let config: serde_json::Value = serde_json::from_slice(&gz.config_bytes).expect("config JSON");
    assert_eq!(v["Config"]["Cmd"], config["config"]["Cmd"], "{v}");
    assert_eq!(v["Architecture"], config["architecture"], "{v}");
    // The bottom layer is unpacked where its chain ID says.
    let snap = daemon
        .paths
        .data_root
        .join("snapshots")
        .join(gz.layers[0].diff_id.hex());
    assert!(snap.join("bin/busybox").is_file(), "{}", snap.display());

    let images = daemon.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert!(
        images
            .stdout
            .contains(&format!("{host}/sl6/wn:1 {}", &gz.config_digest.hex()[..12])),
        "{images}"
    );

    let again = daemon.docker_ok(&["pull", &name]);
    println!("{again}");
    assert!(
        again
            .stdout
            .contains(&format!("Status: Image is up to date for {name}")),
        "{again}"
    );
    assert_eq!(pulled_digest(&again), digest);

    let by_digest = format!("{host}/sl6/wn@{digest}");
    let out = daemon.docker_ok(&["pull", &by_digest]);
    println!("{out}");
    assert_eq!(pulled_digest(&out), digest, "{out}");
    assert!(out.stdout.contains("Status: Image is up to date for"), "{out}");

    // The uncompressed variant: same diff IDs, other blobs.
    let plain_name = format!("{host}/sl6/wn:plain");
    let out = daemon.docker_ok(&["pull", &plain_name]);
    println!("{out}");
    assert_eq!(inspect(&daemon, &plain_name)["Id"], plain.config_digest.to_string());

    // A layer blob whose bytes no longer match its digest: the pull fails, no image.
    let random = bad.layers.last().expect("a random layer");
    let blob = files(&dir.path().join("registry"))
        .into_iter()
        .find(|p| {
            p.to_string_lossy().contains(random.digest.hex()) && fs::metadata(p).is_ok_and(|m| m.len() == random.size)
        })
        .expect("the random layer's blob in the registry root");
    let mut bytes = fs::read(&blob).expect("read blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, &bytes).expect("tamper blob");
    let blobs_before = files(&daemon.paths.data_root.join("blobs"));
    let bad_name = format!("{host}/sl6/bad:1");
    let out = daemon.docker(&["pull", &bad_name]);
    println!("{out}");
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("digest mismatch"), "{out}");
    assert!(out.stderr.contains(random.digest.hex()), "{out}");
    let images = daemon.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!images.stdout.contains("sl6/bad"), "{images}");
    let leftovers: Vec<_> = fs::read_dir(daemon.paths.data_root.join("snapshots"))
        .expect("snapshots")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let mut blobs_after = files(&daemon.paths.data_root.join("blobs"));
    let mut blobs_before = blobs_before;
    blobs_after.sort();
    blobs_before.sort();
    assert_eq!(blobs_after, blobs_before, "a failed pull left blobs");

    // Unknown repository: a clear not-found.
    let out = daemon.docker(&["pull", &format!("{host}/sl6/nothing:1")]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("not found"), "{out}");

    // A blocked registry is refused before any request, naming the host.
    let blocked =
        DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "blocked", &["--block-registry", "127.0.0.1"]);
    let out = blocked.docker(&["pull", &name]);
    println!("{out}");
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("blocked") && out.stderr.contains(&host), "{out}");
    assert!(blocked.docker_ok(&["images", "-q"]).stdout.trim().is_empty());

    // Unqualified names go to the --add-registry hosts first (Docker Hub is blocked here).
    let added = DaemonProcess::start_with_cli_timeout(
        CLI_TIMEOUT,
        dir.path(),
        "added",
        &["--add-registry", &host, "--block-registry", "docker.io"],
    );
    // A fresh pull by digest: the manifest is checked against it; only the digest
    // reference is recorded (see daemon_pull_sources.rs).
    let out = added.docker_ok(&["pull", &by_digest]);
    println!("{out}");
    assert!(out.stdout.contains("Pull complete"), "{out}");
    assert!(
        out.stdout
            .contains(&format!("Status: Downloaded newer image for {by_digest}")),
        "{out}"
    );
    let wrong_digest = format!("{host}/sl6/wn@sha256:{}", "0".repeat(64));
    let out = added.docker(&["pull", &wrong_digest]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("not found"), "{out}");
    let out = added.docker_ok(&["pull", "sl6/wn:1"]);
    println!("{out}");
    // Tagged with the registry's name, and with the short name the CLI looks up.
    let v = inspect(&added, &name);
    assert_eq!(v["Id"], gz.config_digest.to_string(), "{v}");
    assert_eq!(v["RepoTags"], serde_json::json!([name, "sl6/wn:1"]), "{v}");
    let out = added.docker(&["pull", "busybox"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("not found"), "{out}");

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn docker_pull_with_credentials() {
    if !require(&[Prereq::Docker, Prereq::Skopeo, Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let htpasswd = dir.path().join("htpasswd");
    let out = run(
        Command::new("htpasswd").args(["-Bbn", "alice", "correct horse"]),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{out}");
    fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
    let registry = start_registry(
        &dir.path().join("registry"),
        &["--htpasswd", htpasswd.to_str().expect("utf-8 path")],
    );
    let host = registry.addr().to_string();
    let info = push(
        &ImageBuilder::new(),
        dir.path(),
        &registry,
        "sl6/wn",
        "1",
        Some("alice:correct horse"),
    );
    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);
    let name = format!("{host}/sl6/wn:1");

    let out = daemon.docker(&["pull", &name]);
    println!("{out}");
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("unauthorized"), "{out}");

    let write_auth = |user_pass: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(user_pass);
        let config = serde_json::json!({ "auths": { host.clone(): { "auth": auth } } });
        fs::write(daemon.docker_config.join("config.json"), config.to_string()).expect("write config.json");
    };
    write_auth("alice:wrong");
    let out = daemon.docker(&["pull", &name]);
    println!("{out}");
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("unauthorized"), "{out}");
    assert!(daemon.docker_ok(&["images", "-q"]).stdout.trim().is_empty());

    write_auth("alice:correct horse");
    let out = daemon.docker_ok(&["pull", &name]);
    println!("{out}");
    assert!(
        out.stdout
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    assert_eq!(inspect(&daemon, &name)["Id"], info.config_digest.to_string());
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn concurrent_pulls_fetch_a_shared_layer_once() {
    if !require(&[Prereq::Docker, Prereq::Skopeo, Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(&dir.path().join("registry"), &[]);
    let host = registry.addr().to_string();
    // Same busybox layers, different configs.
    let a = push(
        &ImageBuilder::new().label("v", "a"),
        dir.path(),
        &registry,
        "sl6/a",
        "1",
        None,
    );
    let b = push(
        &ImageBuilder::new().label("v", "b"),
        dir.path(),
        &registry,
        "sl6/b",
        "1",
        None,
    );
    let shared: Vec<String> = a.layers.iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(
        shared,
        b.layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>()
    );
    assert_ne!(a.config_digest, b.config_digest);

    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);
    let before = registry.log().len();
    let names = [format!("{host}/sl6/a:1"), format!("{host}/sl6/b:1")];
    thread::scope(|s| {
        let pulls: Vec<_> = names
            .iter()
            .map(|n| s.spawn(|| daemon.docker_ok(&["pull", n])))
            .collect();
        for p in pulls {
            println!("{}", p.join().expect("pull thread"));
        }
    });
    let log = registry.log();
    for digest in &shared {
        let gets = log[before..]
            .lines()
            .filter(|l| l.contains("method=GET") && l.contains("/blobs/") && l.contains(digest.as_str()))
            .count();
        assert_eq!(gets, 1, "layer {digest} fetched {gets} times\n{}", &log[before..]);
    }
    assert_eq!(inspect(&daemon, &names[0])["Id"], a.config_digest.to_string());
    assert_eq!(inspect(&daemon, &names[1])["Id"], b.config_digest.to_string());
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn docker_pull_over_tls() {
    if !require(&[Prereq::Docker, Prereq::Skopeo, Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A self-signed certificate: loopback registries are insecure by default (as with
    // dockerd's 127.0.0.0/8), so HTTPS is used without verifying it.
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("self-signed certificate");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    fs::write(&cert_path, cert.pem()).expect("write cert");
    fs::write(&key_path, key_pair.serialize_pem()).expect("write key");
    let registry = start_registry(
        &dir.path().join("registry"),
        &[
            "--tls-cert",
            cert_path.to_str().expect("utf-8"),
            "--tls-key",
            key_path.to_str().expect("utf-8"),
        ],
    );
    let info = push(&ImageBuilder::new(), dir.path(), &registry, "sl6/wn", "1", None);
    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);
    let name = format!("{}/sl6/wn:1", registry.addr());
    let out = daemon.docker_ok(&["pull", &name]);
    println!("{out}");
    assert_eq!(inspect(&daemon, &name)["Id"], info.config_digest.to_string());
    assert!(registry.log().contains("/v2/sl6/wn/manifests/1"), "{}", registry.log());
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
