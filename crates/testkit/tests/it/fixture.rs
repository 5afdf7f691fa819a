//! The `berth-fixture` binary.

use std::process::Command;

use serde_json::Value;

fn fixture(args: &[&str]) -> (String, u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-fixture"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (digest, size) = stdout.trim_end().split_once(' ').unwrap();
    (digest.to_owned(), size.parse().unwrap())
}

#[test]
fn writes_a_layout_and_prints_digest_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("layout");
    let out = out.to_str().unwrap();
    let (digest, size) = fixture(&[
        "oci-layout",
        "--out",
        out,
        "--tag",
        "t",
        "--random-layers",
        "2",
        "--layer-mb",
        "1",
    ]);
    let index: Value = serde_json::from_slice(&std::fs::read(dir.path().join("layout/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest);
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "t"
    );
    assert!(size > 2 << 20, "size {size}");
    let on_disk: u64 = std::fs::read_dir(dir.path().join("layout/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, size);
}

#[test]
fn writes_a_docker_archive() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image.tar");
    let (digest, size) = fixture(&[
        "docker-archive",
        "--out",
        out.to_str().unwrap(),
        "--ref",
        "bench/busybox:1",
    ]);
    assert!(digest.starts_with("sha256:"));
    let archive_len = std::fs::metadata(&out).unwrap().len();
    assert!(archive_len > size, "archive {archive_len} holds blobs of {size}");
    // Only the archive is left behind, no staging directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
