//! The test image as skopeo and umoci see it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_testkit::{ImageBuilder, ImageInfo, Prereq, require};
use serde_json::Value;

/// Runs a command, panicking with its stderr if it fails; returns its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("failed to run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo_json(args: &[&str]) -> Value {
    serde_json::from_str(&run("skopeo", args)).unwrap()
}

fn assert_inspect_matches(inspect: &Value, info: &ImageInfo, layer_digests: bool) {
    let config: Value = serde_json::from_slice(&info.config_bytes).unwrap();
    assert_eq!(inspect["Architecture"], config["architecture"]);
    assert_eq!(inspect["Os"], "linux");
    let layers = inspect["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), info.layers.len());
    if layer_digests {
        for (got, layer) in layers.iter().zip(&info.layers) {
            assert_eq!(got, &layer.digest.to_string());
        }
    }
}

#[test]
fn skopeo_inspects_the_oci_layout() {
    if !require(&[Prereq::Skopeo]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let info = ImageBuilder::new()
        .label("org.example.label", "yes")
        .annotation("org.example.note", "hi")
        .cmd(["echo", "hello"])
        .write_oci_layout(dir.path(), "v1")
        .unwrap();
    let image = format!("oci:{}:v1", dir.path().display());
    let inspect = skopeo_json(&["inspect", &image]);
    assert_eq!(inspect["Digest"], info.manifest_digest.to_string());
    assert_eq!(inspect["Labels"]["org.example.label"], "yes");
    assert_inspect_matches(&inspect, &info, true);
    assert_eq!(
        run("skopeo", &["inspect", "--raw", &image]).as_bytes(),
        &info.manifest_bytes[..]
    );
    let config = skopeo_json(&["inspect", "--config", &image]);
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["echo", "hello"]));
}

#[test]
fn skopeo_reads_the_docker_archive() {
    if !require(&[Prereq::Skopeo]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let info = ImageBuilder::new()
        .label("org.example.label", "yes")
        .write_docker_archive(&archive, "berth-test/busybox:v1")
        .unwrap();
    let source = format!("docker-archive:{}", archive.display());
    let inspect = skopeo_json(&["inspect", &source]);
    assert_eq!(inspect["Labels"]["org.example.label"], "yes");
    assert_inspect_matches(&inspect, &info, true);
    // Uncompressed, as `docker save` writes them: blob digest = diff_id.
    for layer in &info.layers {
        assert_eq!(layer.digest, layer.diff_id);
    }
    // The same file is an OCI archive too, as docker 25+ writes it.
    let oci = skopeo_json(&["inspect", &format!("oci-archive:{}:v1", archive.display())]);
    assert_eq!(oci["Digest"], info.manifest_digest.to_string());

    let layout = dir.path().join("copied");
    run(
        "skopeo",
        &["copy", "--quiet", &source, &format!("oci:{}:copied", layout.display())],
    );
    let copied = skopeo_json(&["inspect", "--config", &format!("oci:{}:copied", layout.display())]);
    let config: Value = serde_json::from_slice(&info.config_bytes).unwrap();
    assert_eq!(copied["rootfs"]["diff_ids"], config["rootfs"]["diff_ids"]);
}

/// `umoci unpack` of `DIR:tag` into `bundle`, as root or rootless.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    let image = format!("{}:{tag}", layout.display());
    let bundle = bundle.to_str().unwrap();
    let mut args = vec!["unpack", "--image", &image, bundle];
    if !nix::unistd::geteuid().is_root() {
        args.insert(1, "--rootless");
    }
    run("umoci", &args);
}

#[test]
fn umoci_unpack_applies_whiteouts() {
    if !require(&[Prereq::Umoci]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    ImageBuilder::new().write_oci_layout(&layout, "latest").unwrap();
    let bundle = dir.path().join("bundle");
    umoci_unpack(&layout, "latest", &bundle);
    let rootfs = bundle.join("rootfs");

    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(fs::read_link(rootfs.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert!(
        fs::read_to_string(rootfs.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0:")
    );
    assert!(rootfs.join("etc/group").is_file());
    assert_eq!(
        fs::metadata(rootfs.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );

    let data = rootfs.join("data");
    assert_eq!(fs::read_to_string(data.join("keep.txt")).unwrap(), "kept\n");
    assert!(!data.join("remove-me.txt").exists(), "whiteout not applied");
    assert!(!data.join("doomed").exists(), "directory whiteout not applied");
    let mut opaque: Vec<_> = fs::read_dir(data.join("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    opaque.sort();
    assert_eq!(opaque, ["new.txt"], "opaque whiteout not applied");
    assert_eq!(fs::read_link(data.join("keep-link")).unwrap(), Path::new("keep.txt"));
    assert_eq!(fs::read_to_string(data.join("keep-link")).unwrap(), "kept\n");
    assert_eq!(fs::read_link(rootfs.join("usr/bin")).unwrap(), Path::new("../bin"));
    assert!(rootfs.join("usr/bin/busybox").is_file());
    for entry in fs::read_dir(&data).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().starts_with(".wh."),
            "whiteout file left: {name:?}"
        );
    }

    // The applets run (busybox-static needs nothing else from the rootfs).
    let echo = run(rootfs.join("bin/sh").to_str().unwrap(), &["-c", "echo from busybox"]);
    assert_eq!(echo, "from busybox\n");
}

#[test]
fn random_layers_survive_skopeo_and_umoci() {
    if !require(&[Prereq::Skopeo, Prereq::Umoci]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let info = ImageBuilder::new()
        .extra_random_layers(2, 300_000)
        .write_oci_layout(&layout, "big")
        .unwrap();
    assert_eq!(info.layers.len(), 5);
    // Incompressible: the gzip blob is not smaller than its content.
    assert!(info.layers[4].size > 300_000, "size {}", info.layers[4].size);
    let inspect = skopeo_json(&["inspect", &format!("oci:{}:big", layout.display())]);
    assert_inspect_matches(&inspect, &info, true);

    let bundle = dir.path().join("bundle");
    umoci_unpack(&layout, "big", &bundle);
    for n in 0..2 {
        let len = fs::metadata(bundle.join(format!("rootfs/random/{n}.bin")))
            .unwrap()
            .len();
        assert_eq!(len, 300_000);
    }
}

#[test]
fn uncompressed_layout_is_valid() {
    if !require(&[Prereq::Skopeo]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let info = ImageBuilder::new()
        .uncompressed()
        .write_oci_layout(dir.path(), "plain")
        .unwrap();
    let image = format!("oci:{}:plain", dir.path().display());
    let raw: Value = serde_json::from_str(&run("skopeo", &["inspect", "--raw", &image])).unwrap();
    assert_eq!(raw["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    assert_inspect_matches(&skopeo_json(&["inspect", &image]), &info, true);
}
