//! End-to-end tests of the registry (`berth registry serve`) with the clients sites use:
//! skopeo over plain HTTP on loopback, and the docker CLI with Debian's dockerd over TLS
//! with a CA the test makes, installed in `/etc/docker/certs.d` as a site does.
//!
//! dockerd treats any registry in 127.0.0.0/8 as insecure (no certificate check, no
//! certs.d), so the docker test runs the registry and dockerd in a network namespace it
//! creates, on 192.0.2.10 (TEST-NET-1), which exists only there. The CLI stays outside and
//! reaches dockerd through its socket.
//!
//! `BERTH_E2E_REGISTRY=distribution` runs the same tests against Debian's docker-registry
//! (Distribution 2.8), to tell a client's quirk from a Berth bug. Distribution has no docker
//! search; that step is reported, not asserted, there.

// Test output is the reader's interface here: skip reasons and progress.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use berth_testkit::{ImageBuilder, ImageInfo, Prereq, require};
use common::{
    Backend, CertsDir, Dockerd, Netns, Output, RegistryConfig, RegistryUnderTest, TestPki, run, run_ok, run_with_input,
    sha256_digest, uncompressed, write_htpasswd,
};

/// Any single client command (push, pull, copy) gets this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
/// 192.0.2.10: TEST-NET-1, configured only inside the test's network namespace.
const NETNS_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const DESCRIPTION: &str = "org.opencontainers.image.description";

fn needs(base: &[Prereq], backend: Backend) -> Vec<Prereq> {
    base.iter().chain(backend.prereqs()).copied().collect()
}

// ---------------------------------------------------------------------------------------
// skopeo
// ---------------------------------------------------------------------------------------

/// skopeo with a private accept-anything policy and no ambient credentials.
struct Skopeo {
    policy: PathBuf,
    authfile: PathBuf,
}

impl Skopeo {
    fn new(dir: &Path) -> Result<Self> {
        let policy = dir.join("policy.json");
        fs::write(&policy, br#"{"default":[{"type":"insecureAcceptAnything"}]}"#)?;
        Ok(Skopeo {
            policy,
            authfile: dir.join("auth.json"),
        })
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        run_ok(
            Command::new("skopeo")
                .env("REGISTRY_AUTH_FILE", &self.authfile)
                .arg("--policy")
                .arg(&self.policy)
                .args(args),
            CLIENT_TIMEOUT,
        )
    }

    /// `skopeo inspect --raw`: the manifest bytes exactly as the registry serves them.
    fn raw_manifest(&self, reference: &str) -> Result<Vec<u8>> {
        Ok(self.run(&["inspect", "--raw", "--tls-verify=false", reference])?.stdout)
    }

    /// The manifest digest skopeo computes from what the registry served.
    fn digest(&self, reference: &str) -> Result<String> {
        let out = self.run(&["inspect", "--tls-verify=false", reference])?;
        let inspect: Value = serde_json::from_slice(&out.stdout)?;
        inspect["Digest"]
            .as_str()
            .map(str::to_owned)
            .context("skopeo inspect printed no Digest")
    }
}

/// An image as a skopeo transport stored it: the manifest and every blob, by digest.
struct StoredImage {
    manifest: Vec<u8>,
    manifest_digest: String,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl StoredImage {
    /// skopeo's `dir:` transport: `manifest.json` and blobs named by their hex digest.
    fn read_dir(dir: &Path) -> Result<Self> {
        let manifest = fs::read(dir.join("manifest.json"))?;
        let mut blobs = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
                blobs.insert(format!("sha256:{name}"), fs::read(entry.path())?);
            }
        }
        Ok(StoredImage {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            blobs,
        })
    }

    /// The manifest tagged `tag` in an OCI layout, and every blob of the layout.
    fn read_oci_layout(dir: &Path, tag: &str) -> Result<Self> {
        let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json"))?)?;
        let manifest_digest = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .and_then(|m| m["digest"].as_str())
            .with_context(|| format!("no manifest tagged {tag} in {}", dir.display()))?
            .to_owned();
        let mut blobs = BTreeMap::new();
        for entry in fs::read_dir(dir.join("blobs/sha256"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            blobs.insert(format!("sha256:{name}"), fs::read(entry.path())?);
        }
        let manifest = blobs
            .get(&manifest_digest)
            .with_context(|| format!("manifest {manifest_digest} missing from {}", dir.display()))?
            .clone();
        Ok(StoredImage {
            manifest,
            manifest_digest,
            blobs,
        })
    }

    /// Fails unless every blob hashes to the digest it is stored under.
    fn check_blob_names(&self, what: &str) -> Result<()> {
        for (digest, bytes) in &self.blobs {
            let computed = sha256_digest(bytes);
            ensure!(
                computed == *digest,
                "{what}: blob stored as {digest} hashes to {computed}"
            );
        }
        Ok(())
    }

    fn blob(&self, digest: &str) -> Result<&[u8]> {
        self.blobs
            .get(digest)
            .map(Vec::as_slice)
            .with_context(|| format!("blob {digest} is missing"))
    }
}

/// `(config digest, layer digests)` of an image manifest.
fn manifest_digests(manifest: &[u8]) -> Result<(String, Vec<String>)> {
    let m: Value = serde_json::from_slice(manifest).context("manifest is not JSON")?;
    let config = m["config"]["digest"]
        .as_str()
        .context("manifest has no config digest")?
        .to_owned();
    let layers = m["layers"]
        .as_array()
        .context("manifest has no layers")?
        .iter()
        .map(|l| l["digest"].as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .context("a layer has no digest")?;
    Ok((config, layers))
}

/// Fails unless the layer blobs uncompress to the tars `diff_ids` name.
fn check_layer_content(image: &StoredImage, layers: &[String], diff_ids: &[String], what: &str) -> Result<()> {
    ensure!(
        layers.len() == diff_ids.len(),
        "{what}: {} layers, pushed {}",
        layers.len(),
        diff_ids.len()
    );
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let content = sha256_digest(&uncompressed(image.blob(layer)?)?);
        ensure!(
            content == *diff_id,
            "{what}: layer {layer} uncompresses to {content}, pushed {diff_id}"
        );
    }
    Ok(())
}

fn diff_ids(image: &ImageInfo) -> Vec<String> {
    image.layers.iter().map(|l| l.diff_id.to_string()).collect()
}

#[test]
fn skopeo_round_trip_docker_archive_and_oci_layout() -> Result<()> {
    let backend = Backend::from_env();
    if !require(&needs(&[Prereq::Skopeo], backend)) {
        return Ok(());
    }
    let work = tempfile::Builder::new().prefix("berth-e2e-skopeo-").tempdir()?;
    let registry = RegistryUnderTest::start(backend, &RegistryConfig::default())?;
    eprintln!("{backend:?} registry at {}", registry.url());
    // A panic, not an early return, so that the registry prints its log while unwinding.
    skopeo_round_trip(&registry.host(), work.path()).expect("skopeo round trip");
    Ok(())
}

fn skopeo_round_trip(host: &str, work: &Path) -> Result<()> {
    let skopeo = Skopeo::new(work)?;
    let image = ImageBuilder::new().label(DESCRIPTION, "Scientific Linux 6 worker node");
    let archive_path = work.join("wn.tar");
    let archive = image.write_docker_archive(&archive_path, "sl6/wn:1")?;
    let layout_dir = work.join("layout");
    let layout = image.write_oci_layout(&layout_dir, "1")?;
    let source = StoredImage::read_oci_layout(&layout_dir, "1")?;
    ensure!(source.manifest_digest == layout.manifest_digest.to_string());

    // docker-archive → registry. skopeo makes a v2s2 manifest and gzips the layers, so what
    // must survive is the config byte for byte and each layer's content.
    let wn = format!("docker://{host}/sl6/wn:1");
    let archive_ref = format!("docker-archive:{}", archive_path.display());
    skopeo.run(&["copy", "--dest-tls-verify=false", &archive_ref, &wn])?;
    let wn_manifest = skopeo.raw_manifest(&wn)?;
    ensure!(
        skopeo.digest(&wn)? == sha256_digest(&wn_manifest),
        "the registry's digest for {wn} is not the sha256 of the manifest it serves"
    );
    let (wn_config, wn_layers) = manifest_digests(&wn_manifest)?;
    ensure!(
        wn_config == archive.config_digest.to_string(),
        "config digest changed on push: archive {}, registry {wn_config}",
        archive.config_digest
    );

    // registry → dir: the manifest byte for byte, exactly the blobs it names, the config and
    // the layers' content as in the archive.
    let wn_dir = work.join("wn-dir");
    let dest = format!("dir:{}", wn_dir.display());
    skopeo.run(&["copy", "--preserve-digests", "--src-tls-verify=false", &wn, &dest])?;
    let copy = StoredImage::read_dir(&wn_dir)?;
    ensure!(
        copy.manifest == wn_manifest,
        "{dest} has a different manifest than {wn}"
    );
    copy.check_blob_names(&dest)?;
    let named: BTreeSet<&String> = std::iter::once(&wn_config).chain(&wn_layers).collect();
    ensure!(
        copy.blobs.keys().collect::<BTreeSet<_>>() == named,
        "{dest} holds blobs {:?}, the manifest names {named:?}",
        copy.blobs.keys()
    );
    ensure!(
        copy.blob(&wn_config)? == archive.config_bytes,
        "config bytes changed on the round trip"
    );
    check_layer_content(&copy, &wn_layers, &diff_ids(&archive), &dest)?;

    // registry → oci: skopeo converts the v2s2 manifest to OCI and re-encodes the config
    // (client-side), so the layer blobs must be the registry's and the config must still
    // describe the same layers and labels.
    let wn_oci = work.join("wn-oci");
    let dest = format!("oci:{}:1", wn_oci.display());
    skopeo.run(&["copy", "--src-tls-verify=false", &wn, &dest])?;
    let copy = StoredImage::read_oci_layout(&wn_oci, "1")?;
    copy.check_blob_names(&dest)?;
    let (oci_config, oci_layers) = manifest_digests(&copy.manifest)?;
    ensure!(
        oci_layers == wn_layers,
        "{dest} names layers {oci_layers:?}, the registry {wn_layers:?}"
    );
    let converted: Value = serde_json::from_slice(copy.blob(&oci_config)?)?;
    let original: Value = serde_json::from_slice(&archive.config_bytes)?;
    ensure!(
        converted["rootfs"] == original["rootfs"] && converted["config"]["Labels"] == original["config"]["Labels"],
        "{dest} has a config describing another image:\n{converted}"
    );

    // oci layout → registry with --preserve-digests: every byte survives, both ways.
    let wn_oci_ref = format!("docker://{host}/sl6/wn-oci:1");
    let layout_ref = format!("oci:{}:1", layout_dir.display());
    skopeo.run(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &layout_ref,
        &wn_oci_ref,
    ])?;
    let served = skopeo.raw_manifest(&wn_oci_ref)?;
    ensure!(
        served == source.manifest,
        "registry serves a different manifest for {wn_oci_ref}:\n{}\npushed:\n{}",
        String::from_utf8_lossy(&served),
        String::from_utf8_lossy(&source.manifest)
    );
    ensure!(
        skopeo.digest(&wn_oci_ref)? == source.manifest_digest,
        "registry digest for {wn_oci_ref} differs from the pushed {}",
        source.manifest_digest
    );
    let by_digest = format!("docker://{host}/sl6/wn-oci@{}", source.manifest_digest);
    ensure!(
        skopeo.raw_manifest(&by_digest)? == source.manifest,
        "{by_digest} serves a different manifest"
    );

    let back = work.join("wn-oci-back");
    let dest = format!("oci:{}:1", back.display());
    skopeo.run(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &wn_oci_ref,
        &dest,
    ])?;
    let copy = StoredImage::read_oci_layout(&back, "1")?;
    ensure!(
        copy.manifest_digest == source.manifest_digest && copy.manifest == source.manifest,
        "{dest}: manifest {}, pushed {}",
        copy.manifest_digest,
        source.manifest_digest
    );
    ensure!(
        copy.blobs == source.blobs,
        "{dest} holds other blobs: {:?}, pushed {:?}",
        copy.blobs.keys(),
        source.blobs.keys()
    );
    let (_, layers) = manifest_digests(&copy.manifest)?;
    check_layer_content(&copy, &layers, &diff_ids(&layout), &dest)?;

    let back_dir = work.join("wn-oci-dir");
    let dest = format!("dir:{}", back_dir.display());
    skopeo.run(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &wn_oci_ref,
        &dest,
    ])?;
    let copy = StoredImage::read_dir(&back_dir)?;
    ensure!(copy.manifest == source.manifest, "{dest} has a different manifest");
    let mut source_blobs = source.blobs.clone();
    source_blobs.remove(&source.manifest_digest);
    ensure!(
        copy.blobs == source_blobs,
        "{dest} holds other blobs: {:?}",
        copy.blobs.keys()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// docker CLI + dockerd
// ---------------------------------------------------------------------------------------

fn docker_ok(dockerd: &Dockerd, args: &[&str]) -> Result<Output> {
    run_ok(dockerd.docker().args(args), CLIENT_TIMEOUT)
}

fn docker_login(dockerd: &Dockerd, host: &str, user: &str, password: &str) -> Result<Output> {
    run_with_input(
        dockerd
            .docker()
            .args(["login", "--username", user, "--password-stdin", host]),
        Some(password.as_bytes()),
        CLIENT_TIMEOUT,
    )
}

fn image_id(dockerd: &Dockerd, reference: &str) -> Result<String> {
    let out = docker_ok(dockerd, &["image", "inspect", "--format", "{{.Id}}", reference])?;
    Ok(out.stdout().trim().to_owned())
}

/// `NAME\tDESCRIPTION` lines of `docker search`.
fn docker_search(dockerd: &Dockerd, term: &str) -> Result<Output> {
    run(
        dockerd
            .docker()
            .args(["search", "--no-trunc", "--format", "{{.Name}}\t{{.Description}}", term]),
        CLIENT_TIMEOUT,
    )
}

#[test]
fn docker_cli_login_push_pull_search_over_tls() -> Result<()> {
    let backend = Backend::from_env();
    let prereqs = [Prereq::Root, Prereq::Docker, Prereq::Dockerd, Prereq::Netns];
    if !require(&needs(&prereqs, backend)) {
        return Ok(());
    }
    let work = tempfile::Builder::new().prefix("berth-e2e-docker-").tempdir()?;

    // Dropped in reverse order: dockerd, registry, namespace. The certs.d entry is gone
    // by then: it belongs to the client steps.
    let netns = Netns::create()?;
    netns.add_address(NETNS_ADDR)?;

    let pki = TestPki::for_ip(NETNS_ADDR)?;
    let (cert, key) = (work.path().join("server.crt"), work.path().join("server.key"));
    fs::write(&cert, &pki.server_cert)?;
    fs::write(&key, &pki.server_key)?;
    let htpasswd = work.path().join("htpasswd");
    write_htpasswd(&htpasswd, "alice", "correct horse")?;

    let registry = RegistryUnderTest::start(
        backend,
        &RegistryConfig {
            addr: SocketAddr::new(NETNS_ADDR, 0),
            htpasswd: Some(htpasswd),
            realm: Some("berth-e2e".to_owned()),
            tls: Some((cert, key)),
            netns: Some(netns.path()),
        },
    )?;
    let host = registry.host();
    eprintln!(
        "{backend:?} registry at {} in {}",
        registry.url(),
        netns.path().display()
    );

    let dockerd = Dockerd::start(&netns)?;
    // A panic, not an early return, so that dockerd and the registry print their logs
    // while unwinding.
    login_push_pull_search(backend, &dockerd, &host, &pki.ca_cert, work.path()).expect("docker client steps");
    Ok(())
}

fn login_push_pull_search(backend: Backend, dockerd: &Dockerd, host: &str, ca_cert: &str, work: &Path) -> Result<()> {
    // Before the CA is installed dockerd must refuse the certificate: proof that it
    // verifies this registry rather than treating it as insecure.
    let untrusted = docker_login(dockerd, host, "alice", "correct horse")?;
    ensure!(
        !untrusted.status.success() && untrusted.stderr().contains("x509"),
        "login without the CA in certs.d should fail on the certificate:\n{untrusted}"
    );

    let _certs = CertsDir::install(host, ca_cert)?;

    let wrong = docker_login(dockerd, host, "alice", "wrong password")?;
    ensure!(
        !wrong.status.success(),
        "login with a wrong password succeeded:\n{wrong}"
    );
    let wrong_err = wrong.stderr().to_lowercase();
    ensure!(
        wrong_err.contains("unauthorized") || wrong_err.contains("401"),
        "login with a wrong password failed, but not on authentication:\n{wrong}"
    );
    let right = docker_login(dockerd, host, "alice", "correct horse")?;
    ensure!(
        right.status.success() && right.stdout().contains("Login Succeeded"),
        "login with the right password:\n{right}"
    );

    // Push, remove, pull back: same image ID.
    let worker_tar = work.join("worker.tar");
    let worker = ImageBuilder::new()
        .label(DESCRIPTION, "Scientific Linux 6 worker node")
        .write_docker_archive(&worker_tar, "sl6/worker-node:build")?;
    docker_ok(dockerd, &["load", "-i", &worker_tar.to_string_lossy()])?;
    let worker_ref = format!("{host}/sl6/worker-node:1.0");
    docker_ok(dockerd, &["tag", "sl6/worker-node:build", &worker_ref])?;
    let loaded = image_id(dockerd, &worker_ref)?;
    ensure!(
        loaded == worker.config_digest.to_string(),
        "docker load gave image ID {loaded}, the archive's config is {}",
        worker.config_digest
    );
    let push = docker_ok(dockerd, &["push", &worker_ref])?;
    ensure!(
        push.stdout().contains("digest: sha256:"),
        "docker push printed no digest:\n{push}"
    );
    docker_ok(dockerd, &["rmi", &worker_ref, "sl6/worker-node:build"])?;
    ensure!(
        !run(dockerd.docker().args(["image", "inspect", &worker_ref]), CLIENT_TIMEOUT)?
            .status
            .success(),
        "{worker_ref} still present after docker rmi"
    );
    docker_ok(dockerd, &["pull", &worker_ref])?;
    let pulled = image_id(dockerd, &worker_ref)?;
    ensure!(
        pulled == worker.config_digest.to_string(),
        "pulled image ID {pulled}, pushed {}",
        worker.config_digest
    );

    let ui_tar = work.join("ui.tar");
    ImageBuilder::new()
        .label(DESCRIPTION, "Scientific Linux 6 user interface")
        .write_docker_archive(&ui_tar, "sl6/ui:build")?;
    docker_ok(dockerd, &["load", "-i", &ui_tar.to_string_lossy()])?;
    let ui_ref = format!("{host}/sl6/ui:1.0");
    docker_ok(dockerd, &["tag", "sl6/ui:build", &ui_ref])?;
    docker_ok(dockerd, &["push", &ui_ref])?;

    // docker search goes through dockerd to the registry's /v1/search.
    let found = docker_search(dockerd, &format!("{host}/sl6"))?;
    let none = docker_search(dockerd, &format!("{host}/nomatch"))?;
    if backend == Backend::Distribution {
        eprintln!("docker search is not checked against Distribution (no /v1/search):\n{found}");
        return Ok(());
    }
    ensure!(found.status.success(), "docker search failed:\n{found}");
    eprintln!("docker search {host}/sl6:\n{}", found.stdout().trim_end());
    let results: BTreeMap<String, String> = found
        .stdout()
        .lines()
        .filter_map(|line| {
            let (name, description) = line.split_once('\t')?;
            Some((name.trim().to_owned(), description.trim().to_owned()))
        })
        .collect();
    let find = |repo: &str| {
        results
            .iter()
            .find(|(name, _)| name.as_str() == repo || name.ends_with(&format!("/{repo}")))
    };
    let (_, worker_description) = find("sl6/worker-node")
        .with_context(|| format!("docker search {host}/sl6 lists no sl6/worker-node:\n{found}"))?;
    ensure!(
        find("sl6/ui").is_some(),
        "docker search {host}/sl6 lists no sl6/ui:\n{found}"
    );
    ensure!(
        worker_description.contains("Scientific Linux 6 worker node"),
        "docker search shows sl6/worker-node without its description:\n{found}"
    );
    ensure!(none.status.success(), "docker search nomatch failed:\n{none}");
    ensure!(
        none.stdout().trim().is_empty(),
        "docker search {host}/nomatch lists repositories:\n{none}"
    );
    Ok(())
}
