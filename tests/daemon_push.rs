//! End-to-end tests of `docker push`, `docker login` and `docker search` through
//! `berth daemon` with the real docker CLI, against a real `berth registry serve` on
//! 127.0.0.1 (plain HTTP, as dockerd allows for loopback): a `docker import`ed busybox root
//! filesystem is tagged and pushed (the registry then holds a manifest whose blobs verify),
//! removed and pulled back (same image ID), pushed again ("Layer already exists"); login to
//! a registry with htpasswd refuses a wrong password and accepts the right one, after which
//! a push with those credentials works; `docker search HOST/sl6` lists the pushed
//! repository.
//!
//! The daemon harness is the one in `daemon_images.rs`.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_testkit::{ImageBuilder, Prereq, RegistryProcess, require};
use sha2::Digest as _;
/// Any docker CLI call gets this long.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

fn start_registry(root: &Path, extra: &[&str]) -> RegistryProcess {
    let mut args = vec!["--root", root.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    RegistryProcess::start(Path::new(env!("CARGO_BIN_EXE_berth")), &args).expect("start the registry")
}

/// The busybox root filesystem as a gzip tarball (layer 1 of the testkit image).
fn busybox_rootfs(dir: &Path) -> PathBuf {
    busybox_rootfs_as(dir, ImageBuilder::new(), "busybox.tar.gz")
}

fn busybox_rootfs_as(dir: &Path, builder: ImageBuilder, file: &str) -> PathBuf {
    let image = builder.blobs().expect("build the busybox image");
    let path = dir.join(file);
    fs::write(&path, image.layers[0].read().expect("read the busybox layer")).expect("write rootfs");
    path
}

fn image_id(daemon: &DaemonProcess, name: &str) -> String {
    let out = daemon.docker_ok(&["image", "inspect", "--format", "{{.Id}}", name]);
    out.stdout.trim().to_owned()
}

/// `GET url` from the registry (plain HTTP), as bytes, with the status.
fn get(url: &str, accept: &str) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(url)
            .header("Accept", accept)
            .send()
            .await
            .expect("GET from the registry");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.expect("read the body").to_vec())
    })
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The registry holds `repo:tag`, and every blob its manifest names verifies; returns the
/// manifest's digest.
fn check_registry(registry: &RegistryProcess, repo: &str, tag: &str) -> String {
    let base = format!("http://{}/v2/{repo}", registry.addr());
    let (status, body) = get(&format!("{base}/tags/list"), "application/json");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let tags: serde_json::Value = serde_json::from_slice(&body).expect("tags JSON");
    assert!(
        tags["tags"].as_array().expect("tags").iter().any(|t| t == tag),
        "{tags}"
    );
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let (status, manifest_bytes) = get(&format!("{base}/manifests/{tag}"), accept);
    assert_eq!(status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("manifest JSON");
    let mut descs = vec![manifest["config"].clone()];
    descs.extend(manifest["layers"].as_array().expect("layers").iter().cloned());
    for d in descs {
        let digest = d["digest"].as_str().expect("digest");
        let (status, blob) = get(&format!("{base}/blobs/{digest}"), "*/*");
        assert_eq!(status, 200, "{digest}");
        assert_eq!(sha256(&blob), digest);
        assert_eq!(blob.len() as u64, d["size"].as_u64().expect("size"), "{digest}");
    }
    sha256(&manifest_bytes)
}

#[test]
fn docker_push_pull_back_and_search() {
    if !require(&[Prereq::Docker, Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(&dir.path().join("registry"), &[]);
    let host = registry.addr().to_string();
    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);
    let rootfs = busybox_rootfs(dir.path());
    daemon.docker_ok(&["import", rootfs.to_str().expect("utf-8 path"), "busybox:imported"]);
    let name = format!("{host}/sl6/wn:1");
    daemon.docker_ok(&["tag", "busybox:imported", &name]);
    let id = image_id(&daemon, &name);

    // Unknown image: dockerd's message.
    let out = daemon.docker(&["push", &format!("{host}/sl6/nope:1")]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("An image does not exist locally with the tag"),
        "{out}"
    );

    let out = daemon.docker_ok(&["push", &name]);
    println!("$ docker push {name}\n{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("The push refers to repository [{host}/sl6/wn]")),
        "{out}"
    );
    assert!(out.stdout.contains("Pushed"), "{out}");
    let digest = check_registry(&registry, "sl6/wn", "1");
    assert!(out.stdout.contains(&format!("1: digest: {digest} size: ")), "{out}");

    // Pushed again: every layer is there already, and the digest is the same.
    let out = daemon.docker_ok(&["push", &name]);
    println!("$ docker push {name}\n{}", out.stdout);
    assert!(out.stdout.contains("Layer already exists"), "{out}");
    assert!(out.stdout.contains(&format!("1: digest: {digest} size: ")), "{out}");

    // Removed and pulled back: the same image.
    daemon.docker_ok(&["rmi", &name, "busybox:imported"]);
    let out = daemon.docker_ok(&["pull", &name]);
    println!("$ docker pull {name}\n{}", out.stdout);
    assert!(out.stdout.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(image_id(&daemon, &name), id);

    // Another repository of the same registry: the layer is mounted, not uploaded.
    let copy = format!("{host}/sl6/copy:1");
    daemon.docker_ok(&["tag", &name, &copy]);
    let out = daemon.docker_ok(&["push", &copy]);
    println!("$ docker push {copy}\n{}", out.stdout);
    assert!(out.stdout.contains("Mounted from sl6/wn"), "{out}");
    assert_eq!(check_registry(&registry, "sl6/copy", "1"), digest);

    let out = daemon.docker_ok(&["search", &format!("{host}/sl6")]);
    println!("$ docker search {host}/sl6\n{}", out.stdout);
    assert!(out.stdout.contains("sl6/wn"), "{out}");
    let out = daemon.docker_ok(&["search", "--filter", "stars=3", &format!("{host}/sl6")]);
    assert!(!out.stdout.contains("sl6/wn"), "{out}");
    let out = daemon.docker(&["search", "sl6"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("docker.io"), "{out}");

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn docker_login_and_push_with_credentials() {
    if !require(&[Prereq::Docker, Prereq::Root]) {
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
    let daemon = DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir.path(), "berth", &[]);

    // Before the login: the registry's 401 to /v1/search is passed on as dockerd does.
    let out = daemon.docker(&["search", &format!("{host}/sl6")]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("Unexpected status code 401"), "{out}");

    let out = daemon.docker(&["login", "-u", "alice", "-p", "wrong", &host]);
    println!("{out}");
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.to_lowercase().contains("unauthorized"), "{out}");

    let out = daemon.docker(&["login", "-u", "alice", "-p", "correct horse", &host]);
    println!("{out}");
    assert!(out.status.success(), "{out}\n--- daemon log\n{}", daemon.log());
    assert!(out.stdout.contains("Login Succeeded"), "{out}");

    // The CLI now sends the stored credentials as X-Registry-Auth.
    let rootfs = busybox_rootfs(dir.path());
    let name = format!("{host}/sl6/wn:1");
    daemon.docker_ok(&["import", rootfs.to_str().expect("utf-8 path"), &name]);
    let out = daemon.docker_ok(&["push", &name]);
    println!("$ docker push {name}\n{}", out.stdout);
    assert!(out.stdout.contains(": digest: sha256:"), "{out}");

    // An import of a plain (uncompressed) tarball pushes as it is stored.
    let plain = busybox_rootfs_as(dir.path(), ImageBuilder::new().uncompressed(), "busybox.tar");
    let name = format!("{host}/sl6/plain:1");
    daemon.docker_ok(&["import", plain.to_str().expect("utf-8 path"), &name]);
    let out = daemon.docker_ok(&["push", &name]);
    println!("$ docker push {name}\n{}", out.stdout);
    assert!(out.stdout.contains("Pushed"), "{out}");
    // Anonymous reads are refused by this registry.
    let (status, _) = get(&format!("http://{host}/v2/sl6/plain/tags/list"), "application/json");
    assert_eq!(status, 401);

    let out = daemon.docker_ok(&["search", &format!("{host}/sl6")]);
    assert!(out.stdout.contains("sl6/wn"), "{out}");
    assert!(out.stdout.contains("sl6/plain"), "{out}");

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
