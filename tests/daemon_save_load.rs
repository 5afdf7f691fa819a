//! End-to-end tests of `docker save` and `docker load` through `berth daemon` with the real
//! docker CLI: a round trip keeps the image ID and tags, two names share one archive, an OCI
//! layout tarball loads, a tampered layer or a `../../etc/passwd` layer loads nothing; and
//! the proof the format is real: Debian's dockerd 20.10 loads Berth's archive with the same
//! image ID, and Berth loads the (old-style) archive dockerd 20.10 saves.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

// The registry tests' harness: its dockerd and network namespace are used here.
#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use berth_testkit::{ImageBuilder, Prereq, require};
use common::{Dockerd, Netns, Output, run, run_ok};

/// Any docker CLI call gets this long.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may take to bind its socket.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `berth daemon` with every path under its own temp directory; killed and
/// removed on drop.
struct Berth {
    child: Child,
    socket: PathBuf,
    data_root: PathBuf,
    log: PathBuf,
    docker_config: PathBuf,
    // Last: removed after the daemon is gone.
    dir: tempfile::TempDir,
}

impl Berth {
    fn start() -> Result<Berth> {
        let dir = tempfile::Builder::new().prefix("berth-saveload").tempdir()?;
        let socket = dir.path().join("berth.sock");
        let data_root = dir.path().join("data");
        let log = dir.path().join("berth.log");
        let docker_config = dir.path().join("docker-config");
        fs::create_dir_all(&docker_config)?;
        let out = fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("daemon")
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(&data_root)
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("berth.pid"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("failed to start berth daemon")?;
        let mut berth = Berth {
            child,
            socket,
            data_root,
            log,
            docker_config,
            dir,
        };
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if let Some(status) = berth.child.try_wait()? {
                bail!("berth daemon exited early with {status}\n{}", berth.log());
            }
            if std::os::unix::net::UnixStream::connect(&berth.socket).is_ok()
                && berth.log().contains("daemon listening socket=")
            {
                return Ok(berth);
            }
            if Instant::now() >= deadline {
                bail!("berth daemon not listening after {DAEMON_TIMEOUT:?}\n{}", berth.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn docker(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new("docker");
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .env("DOCKER_CONFIG", &self.docker_config)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args);
        run(&mut cmd, CLI_TIMEOUT)
    }

    fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.docker(args)?;
        ensure!(out.status.success(), "{out}\n--- berth log\n{}", self.log());
        Ok(out.stdout())
    }

    fn id_of(&self, name: &str) -> Result<String> {
        Ok(self
            .docker_ok(&["image", "inspect", "--format", "{{.Id}}", name])?
            .trim()
            .to_owned())
    }

    /// Sorted `repo:tag` of every image.
    fn tags(&self) -> Result<Vec<String>> {
        let out = self.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])?;
        let mut tags: Vec<String> = out.lines().map(str::to_owned).collect();
        tags.sort();
        Ok(tags)
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- berth log\n{}", self.log());
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// (name, data offset, size) of every entry in an uncompressed tarball.
fn tar_entries(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() {
        let h = &bytes[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |r: std::ops::Range<usize>| {
            let s = &h[r];
            String::from_utf8_lossy(&s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]).into_owned()
        };
        let mut name = field(0..100);
        let prefix = field(345..500);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let size = usize::from_str_radix(field(124..136).trim(), 8).unwrap_or(0);
        out.push((name, at + 512, size));
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// A tar stream with raw names (so a hostile `../../etc/passwd` can be written): ustar
/// headers by hand, regular files only.
fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, 0o644);
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, data.len() as u64);
        octal(&mut h, 136, 12, 1_700_000_000);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Every regular file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    common::sha256_digest(bytes).trim_start_matches("sha256:").to_owned()
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Imports the busybox root filesystem as `name`; returns the image ID.
fn import_busybox(berth: &Berth, name: &str) -> Result<String> {
    let image = ImageBuilder::new().blobs()?;
    let rootfs = berth.path("rootfs.tar.gz");
    fs::write(&rootfs, image.layers[0].read()?)?;
    let out = berth.docker_ok(&["import", "--change", r#"CMD ["sh"]"#, utf8(&rootfs), name])?;
    Ok(out.lines().last().unwrap_or_default().trim().to_owned())
}

#[test]
fn save_load_round_trip_keeps_ids_and_tags() -> Result<()> {
    if !require(&[Prereq::Docker]) {
        return Ok(());
    }
    let berth = Berth::start()?;
    let imported = import_busybox(&berth, "imp:1")?;
    berth.docker_ok(&["tag", "imp:1", "site/imp:2"])?;
    // A testkit docker archive (three layers, whiteouts, an opaque directory) through load.
    let fixture = berth.path("fixture.tar");
    let info = ImageBuilder::new().write_docker_archive(&fixture, "busybox:1")?;
    let out = berth.docker_ok(&["load", "-i", utf8(&fixture)])?;
    println!("$ docker load -i fixture.tar\n{out}");
    assert_eq!(out.trim(), "Loaded image: busybox:1");
    let fixture_id = info.config_digest.to_string();
    assert_eq!(berth.id_of("busybox:1")?, fixture_id);

    // One image by one name.
    let saved = berth.path("imp.tar");
    berth.docker_ok(&["save", "-o", utf8(&saved), "imp:1"])?;
    let bytes = fs::read(&saved)?;
    let names: BTreeSet<String> = tar_entries(&bytes).into_iter().map(|(n, _, _)| n).collect();
    for want in ["oci-layout", "index.json", "manifest.json", "repositories"] {
        assert!(names.contains(want), "{want} missing: {names:?}");
    }
    assert!(names.contains(&format!("blobs/sha256/{}", &imported[7..])), "{names:?}");
    berth.docker_ok(&["rmi", "imp:1", "site/imp:2"])?;
    assert_eq!(berth.tags()?, ["busybox:1"]);
    let out = berth.docker_ok(&["load", "-i", utf8(&saved)])?;
    assert_eq!(out.trim(), "Loaded image: imp:1");
    assert_eq!(berth.id_of("imp:1")?, imported);

    // Two images (one of them by two names) in one archive, each blob once.
    berth.docker_ok(&["tag", "imp:1", "site/imp:2"])?;
    let both = berth.path("both.tar");
    berth.docker_ok(&["save", "-o", utf8(&both), "busybox:1", "imp:1", "site/imp:2"])?;
    let entries = tar_entries(&fs::read(&both)?);
    let mut seen = BTreeSet::new();
    for (name, _, _) in &entries {
        assert!(seen.insert(name.clone()), "{name} written twice");
    }
    berth.docker_ok(&["rmi", "-f", &imported, &fixture_id])?;
    assert!(berth.tags()?.is_empty());
    let out = berth.docker_ok(&["load", "-i", utf8(&both)])?;
    println!("$ docker load -i both.tar\n{out}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "Loaded image: busybox:1",
            "Loaded image: imp:1",
            "Loaded image: site/imp:2"
        ]
    );
    assert_eq!(berth.tags()?, ["busybox:1", "imp:1", "site/imp:2"]);
    assert_eq!(berth.id_of("busybox:1")?, fixture_id);
    assert_eq!(berth.id_of("site/imp:2")?, imported);
    Ok(())
}

#[test]
fn oci_layouts_load_and_bad_archives_load_nothing() -> Result<()> {
    if !require(&[Prereq::Docker]) {
        return Ok(());
    }
    let berth = Berth::start()?;

    // A plain OCI layout tarball (gzip-compressed), tag from its ref.name annotation.
    let layout = berth.path("layout");
    let info = ImageBuilder::new().write_oci_layout(&layout, "example.org/site/busybox:v1")?;
    let tarball = berth.path("layout.tar.gz");
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&layout)
            .arg("."),
        CLI_TIMEOUT,
    )?;
    let out = berth.docker_ok(&["load", "-i", utf8(&tarball)])?;
    assert_eq!(out.trim(), "Loaded image: example.org/site/busybox:v1");
    assert_eq!(
        berth.id_of("example.org/site/busybox:v1")?,
        info.config_digest.to_string()
    );
    berth.docker_ok(&["rmi", "example.org/site/busybox:v1"])?;

    // One byte of busybox flipped inside the first layer of a docker archive.
    let archive = berth.path("fixture.tar");
    let info = ImageBuilder::new().write_docker_archive(&archive, "tampered:1")?;
    let mut bytes = fs::read(&archive)?;
    let layer = format!("blobs/sha256/{}", info.layers[0].diff_id.hex());
    let (_, at, size) = tar_entries(&bytes)
        .into_iter()
        .find(|(n, _, _)| *n == layer)
        .with_context(|| format!("{layer} not in the archive"))?;
    bytes[at + size / 2] ^= 0xff;
    let tampered = berth.path("tampered.tar");
    fs::write(&tampered, &bytes)?;
    let out = berth.docker(&["load", "-i", utf8(&tampered)])?;
    println!("$ docker load -i tampered.tar\n{}", out.stderr());
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr().contains("digest mismatch"), "{out}");

    // A layer that writes ../../etc/passwd.
    let evil_layer = raw_tar(&[
        ("ok.txt", b"fine"),
        ("../../etc/passwd", b"root::0:0:pwned:/:/bin/sh\n"),
    ]);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&evil_layer))] },
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": "config.json", "RepoTags": ["evil:1"], "Layers": ["layer/layer.tar"],
    }]))?;
    let evil = berth.path("evil.tar");
    fs::write(
        &evil,
        raw_tar(&[
            ("config.json", &config),
            ("layer/layer.tar", &evil_layer),
            ("manifest.json", &manifest),
        ]),
    )?;
    let out = berth.docker(&["load", "-i", utf8(&evil)])?;
    println!("$ docker load -i evil.tar\n{}", out.stderr());
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr().contains("../../etc/passwd") && out.stderr().contains("'..'"),
        "{out}"
    );
    for p in [
        berth.data_root.join("etc"),
        berth.path("etc"),
        berth.data_root.join("snapshots/etc"),
    ] {
        assert!(!p.exists(), "{} written", p.display());
    }

    assert!(berth.docker_ok(&["images", "-q", "-a"])?.trim().is_empty());
    // No staging directory, no snapshot, no blob of the refused loads stays.
    let snapshots: Vec<_> = fs::read_dir(berth.data_root.join("snapshots"))?.collect();
    assert!(snapshots.is_empty(), "{snapshots:?}");
    let blobs = files_under(&berth.data_root.join("blobs"));
    assert!(blobs.is_empty(), "blobs left by refused loads: {blobs:?}");
    Ok(())
}

#[test]
fn debian_dockerd_loads_berths_archive_and_berth_loads_dockerds() -> Result<()> {
    if !require(&[Prereq::Docker, Prereq::Root, Prereq::Dockerd, Prereq::Netns]) {
        return Ok(());
    }
    let berth = Berth::start()?;
    let fixture = berth.path("fixture.tar");
    let info = ImageBuilder::new().write_docker_archive(&fixture, "busybox:1")?;
    berth.docker_ok(&["load", "-i", utf8(&fixture)])?;
    let imported = import_busybox(&berth, "site/imp:1")?;
    let saved = berth.path("berth-saved.tar");
    berth.docker_ok(&["save", "-o", utf8(&saved), "busybox:1", "site/imp:1"])?;

    let netns = Netns::create()?;
    let dockerd = Dockerd::start(&netns)?;
    let out = run_ok(dockerd.docker().args(["load", "-i", utf8(&saved)]), CLI_TIMEOUT)?;
    println!("$ docker load -i berth-saved.tar (dockerd 20.10)\n{}", out.stdout());
    for (name, id) in [
        ("busybox:1", info.config_digest.to_string()),
        ("site/imp:1", imported.clone()),
    ] {
        let out = run_ok(
            dockerd.docker().args(["image", "inspect", "--format", "{{.Id}}", name]),
            CLI_TIMEOUT,
        )?;
        assert_eq!(out.stdout().trim(), id, "{name} in dockerd");
    }

    // And back: dockerd 20.10 saves the old format (`<id>.json`, `<dir>/layer.tar`).
    let theirs = berth.path("dockerd-saved.tar");
    run_ok(
        dockerd
            .docker()
            .args(["save", "-o", utf8(&theirs), "busybox:1", "site/imp:1"]),
        CLI_TIMEOUT,
    )?;
    berth.docker_ok(&["rmi", "-f", "busybox:1", "site/imp:1"])?;
    let out = berth.docker_ok(&["load", "-i", utf8(&theirs)])?;
    println!("$ docker load -i dockerd-saved.tar (berth)\n{out}");
    assert_eq!(berth.id_of("busybox:1")?, info.config_digest.to_string());
    assert_eq!(berth.id_of("site/imp:1")?, imported);
    drop(dockerd);
    drop(netns);
    Ok(())
}
