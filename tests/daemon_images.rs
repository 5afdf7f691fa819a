//! End-to-end tests of the image endpoints of `berth daemon` with the real docker CLI:
//! `docker import` of a busybox root filesystem (gzip and plain), `docker images` (also
//! `--format json` and filters), `docker inspect`, `docker history`, `docker tag`, `docker rmi`
//! (by tag, by ID, the conflict without `-f`), `docker image prune -f`, a restart keeping the
//! images; and bad input: a `../../etc/passwd` entry, a truncated gzip stream, an unknown
//! `--change` instruction, a pull from unreachable Docker Hub, each refused with a clear error and leaving
//! no image and no file behind.
//!
//! The harness (temp socket, data root, exec root, pid file, own `DOCKER_CONFIG`) is the one
//! in `daemon_basics.rs`.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::path::Path;

use berth_testkit::{ImageBuilder, Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

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

/// The busybox root filesystem (bin/busybox, its applet links, etc/passwd …): layer 1 of the
/// testkit image, gzip-compressed or plain.
fn busybox_rootfs(compressed: bool) -> Vec<u8> {
    let builder = if compressed {
        ImageBuilder::new()
    } else {
        ImageBuilder::new().uncompressed()
    };
    let image = builder.blobs().expect("build the busybox image");
    image.layers[0].read().expect("read the busybox layer")
}

/// Every entry below `dir`, relative, sorted ("" if `dir` is missing).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.expect("read dir entry").path();
            out.push(p.strip_prefix(dir).expect("below dir").display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{out}")))
        .collect()
}

/// The ID `docker import` printed last.
fn imported_id(out: &Output) -> String {
    let id = out.stdout.lines().last().unwrap_or_default().trim().to_owned();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "no image ID printed\n{out}"
    );
    id
}

#[test]
fn docker_import_images_inspect_history_tag_rmi_prune() {
    if !require(&[Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    let data_root = daemon.paths.data_root.clone();
    let rootfs = dir.path().join("busybox.tar.gz");
    fs::write(&rootfs, busybox_rootfs(true)).expect("write rootfs");
    let rootfs = rootfs.to_str().expect("utf-8 path");

    let out = daemon.docker_ok(&[
        "import",
        "--change",
        r#"CMD ["sh"]"#,
        "--change",
        "ENV SITE=cern",
        "--change",
        "LABEL org.example.kind=test",
        "-m",
        "msg",
        rootfs,
        "busybox",
    ]);
    println!("$ docker import … busybox\n{}", out.stdout);
    let id = imported_id(&out);
    let short = &id[7..19];

    let images = daemon.docker_ok(&["images"]);
    println!("$ docker images\n{}", images.stdout);
    let row = images
        .stdout
        .lines()
        .find(|l| l.starts_with("busybox "))
        .unwrap_or_else(|| panic!("busybox not listed\n{images}"));
    assert!(row.contains("latest") && row.contains(short), "{images}");
    let listed = json_lines(&daemon.docker_ok(&["images", "--format", "json"]));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["Repository"], "busybox");
    assert_eq!(listed[0]["Tag"], "latest");
    assert_eq!(listed[0]["ID"], short);

    let inspect = daemon.docker_ok(&["inspect", "busybox"]);
    let v: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("inspect is JSON");
    let v = &v[0];
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(v["Comment"], "msg");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(v["Config"]["Env"], serde_json::json!(["SITE=cern"]));
    assert_eq!(v["Config"]["Labels"]["org.example.kind"], "test");
    assert_eq!(v["RootFS"]["Type"], "layers");
    let diff_id = v["RootFS"]["Layers"][0].as_str().expect("one layer").to_owned();
    // One layer: its chain ID is its diff ID; the snapshot holds the unpacked busybox.
    let snapshot = data_root.join("snapshots").join(&diff_id[7..]);
    assert!(snapshot.join("bin/busybox").is_file(), "{:?}", tree(&data_root));
    assert!(snapshot.join("bin/sh").is_symlink());
    // By short ID, full ID, and full name, too.
    for name in [short, &id[7..], id.as_str(), "docker.io/library/busybox:latest"] {
        let out = daemon.docker_ok(&["image", "inspect", "--format", "{{.Id}}", name]);
        assert_eq!(out.stdout.trim(), id, "{name}");
    }
    let missing = daemon.docker(&["image", "inspect", "nothing:here"]);
    assert!(!missing.status.success(), "{missing}");
    assert!(missing.stderr.contains("No such image"), "{missing}");

    let history = daemon.docker_ok(&["history", "busybox"]);
    println!("$ docker history busybox\n{}", history.stdout);
    assert!(
        history.stdout.contains("msg") && history.stdout.contains(short),
        "{history}"
    );

    daemon.docker_ok(&["tag", "busybox", "site/busybox:v1"]);
    let tagged = daemon.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    let mut rows: Vec<&str> = tagged.stdout.lines().collect();
    rows.sort();
    assert_eq!(
        rows,
        [format!("busybox:latest {short}"), format!("site/busybox:v1 {short}")],
        "{tagged}"
    );
    let filtered = daemon.docker_ok(&["images", "--format", "{{.Repository}}", "site/*"]);
    assert_eq!(filtered.stdout.trim(), "site/busybox", "{filtered}");
    assert_eq!(
        daemon.docker_ok(&["info", "--format", "{{.Images}}"]).stdout.trim(),
        "1"
    );

    // By ID with two tags: refused without -f, like dockerd.
    let conflict = daemon.docker(&["rmi", short]);
    assert!(!conflict.status.success(), "{conflict}");
    assert!(conflict.stderr.contains("must be forced"), "{conflict}");
    let rmi = daemon.docker_ok(&["rmi", "busybox"]);
    assert_eq!(rmi.stdout.trim(), "Untagged: busybox:latest", "{rmi}");
    assert!(snapshot.is_dir(), "snapshot removed while site/busybox:v1 needs it");
    let rmi = daemon.docker_ok(&["rmi", "site/busybox:v1"]);
    println!("$ docker rmi site/busybox:v1\n{}", rmi.stdout);
    assert!(rmi.stdout.contains("Untagged: site/busybox:v1"), "{rmi}");
    assert!(rmi.stdout.contains(&format!("Deleted: {id}")), "{rmi}");
    assert!(!snapshot.exists(), "snapshot left behind after the last tag went");
    assert!(daemon.docker_ok(&["images", "-q"]).stdout.trim().is_empty());
    let gone = daemon.docker(&["rmi", "busybox"]);
    assert!(gone.stderr.contains("No such image: busybox"), "{gone}");

    // Prune: re-importing a tag leaves the older image dangling.
    let plain = dir.path().join("busybox.tar");
    fs::write(&plain, busybox_rootfs(false)).expect("write rootfs");
    let plain = plain.to_str().expect("utf-8 path");
    let old = imported_id(&daemon.docker_ok(&["import", plain, "x:1"]));
    let new = imported_id(&daemon.docker_ok(&["import", "-m", "second", rootfs, "x:1"]));
    let dangling = daemon.docker_ok(&["images", "-q", "--no-trunc", "--filter", "dangling=true"]);
    assert_eq!(dangling.stdout.trim(), old, "{dangling}");
    let prune = daemon.docker_ok(&["image", "prune", "-f"]);
    println!("$ docker image prune -f\n{}", prune.stdout);
    assert!(prune.stdout.contains(&format!("deleted: {old}")), "{prune}");
    assert!(prune.stdout.contains("Total reclaimed space"), "{prune}");
    let left = daemon.docker_ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(left.stdout.trim(), new, "{left}");

    // Images survive a restart.
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    let images = daemon.docker_ok(&["images"]);
    println!("$ docker images (after restart)\n{}", images.stdout);
    assert!(
        images.stdout.contains("x ") && images.stdout.contains(&new[7..19]),
        "{images}"
    );
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn bad_imports_are_refused_and_leave_nothing() {
    if !require(&[Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    let data_root = daemon.paths.data_root.clone();
    let store_before: Vec<String> = ["blobs", "snapshots"]
        .iter()
        .flat_map(|d| tree(&data_root.join(d)))
        .collect();

    let evil = dir.path().join("evil.tar");
    fs::write(
        &evil,
        raw_tar(&[
            ("ok.txt", b"fine"),
            ("../../etc/passwd", b"root::0:0:pwned:/:/bin/sh\n"),
        ]),
    )
    .expect("write evil tar");
    let out = daemon.docker(&["import", evil.to_str().expect("utf-8"), "evil"]);
    println!("$ docker import evil.tar evil\n{}", out.stderr);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("../../etc/passwd") && out.stderr.contains("'..'"),
        "{out}"
    );
    for p in [
        data_root.join("etc"),
        dir.path().join("etc"),
        data_root.join("snapshots/etc"),
    ] {
        assert!(!p.exists(), "{} written", p.display());
    }

    let gz = busybox_rootfs(true);
    let truncated = dir.path().join("truncated.tar.gz");
    fs::write(&truncated, &gz[..gz.len() / 2]).expect("write truncated gzip");
    let out = daemon.docker(&["import", truncated.to_str().expect("utf-8"), "trunc"]);
    println!("$ docker import truncated.tar.gz trunc\n{}", out.stderr);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("reading the layer failed"), "{out}");

    let good = dir.path().join("good.tar.gz");
    fs::write(&good, &gz).expect("write rootfs");
    let out = daemon.docker(&[
        "import",
        "--change",
        "RUN rm -rf /",
        good.to_str().expect("utf-8"),
        "bad-change",
    ]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("RUN is not supported by import"), "{out}");

    // No internet here: Docker Hub is unreachable, and says so.
    let pull = daemon.docker(&["pull", "busybox"]);
    assert!(!pull.status.success(), "{pull}");
    assert!(pull.stderr.contains("registry-1.docker.io"), "{pull}");

    assert!(daemon.docker_ok(&["images", "-q", "-a"]).stdout.trim().is_empty());
    let store_after: Vec<String> = ["blobs", "snapshots"]
        .iter()
        .flat_map(|d| tree(&data_root.join(d)))
        .collect();
    assert_eq!(store_after, store_before, "a refused import left files");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
