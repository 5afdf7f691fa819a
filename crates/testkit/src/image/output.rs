//! Writing the test image as an OCI image layout directory or a `docker save` archive.
//!
//! OCI image layout (`write_oci_layout`), as the image-spec draws it:
//!
//! ```text
//! DIR/
//!   oci-layout                {"imageLayoutVersion":"1.0.0"}
//!   index.json                one manifest per tag, `org.opencontainers.image.ref.name` = tag;
//!                             entries for other tags already there are kept
//!   blobs/sha256/<hex>        manifest, config, layers
//! ```
//!
//! `docker save` archive (`write_docker_archive`), the format docker 25+ writes: an OCI layout
//! plus docker's `manifest.json`, so `docker load`, `skopeo … docker-archive:` and
//! `skopeo … oci-archive:` all read it. Layers are uncompressed tar, as `docker save` writes
//! them, whatever the builder's compression:
//!
//! ```text
//! oci-layout, index.json, blobs/sha256/<hex>
//! manifest.json             [{"Config":"blobs/sha256/<hex>","RepoTags":["repo:tag"],"Layers":[…]}]
//! ```

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_oci::{Digest, media_types};
use serde_json::{Value, json};

use super::layers::MTIME;
use super::{ImageBuilder, ImageInfo, LayerData};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const REF_NAME: &str = "org.opencontainers.image.ref.name";

impl ImageBuilder {
    /// Writes the image into the OCI image layout `dir` under `tag` (creating `dir` if needed).
    ///
    /// Other tags already in the layout are kept, so several images can share one layout.
    /// Random layers in the returned [`ImageInfo`] point at their blobs inside `dir`.
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> Result<ImageInfo> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).with_context(|| format!("failed to create {}", blobs.display()))?;
        let info = self.build(self.compressed, Some(&blobs))?;
        for layer in &info.layers {
            if let LayerData::Bytes(bytes) = &layer.path_or_bytes {
                write_file(&blobs.join(layer.digest.hex()), bytes)?;
            }
        }
        write_file(&blobs.join(info.config_digest.hex()), &info.config_bytes)?;
        write_file(&blobs.join(info.manifest_digest.hex()), &info.manifest_bytes)?;
        write_file(&dir.join("oci-layout"), OCI_LAYOUT)?;

        let index_path = dir.join("index.json");
        let mut manifests = Vec::new();
        if index_path.exists() {
            let old: Value = serde_json::from_slice(
                &fs::read(&index_path).with_context(|| format!("failed to read {}", index_path.display()))?,
            )
            .with_context(|| format!("failed to parse {}", index_path.display()))?;
            manifests.extend(
                old["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| m["annotations"][REF_NAME] != tag)
                    .cloned(),
            );
        }
        manifests.push(index_entry(&info, json!({ REF_NAME: tag })));
        write_file(&index_path, &serde_json::to_vec(&index(manifests))?)?;
        Ok(info)
    }

    /// Writes the image as a `docker save` archive at `path`, tagged `repo_tag` (`:latest` is
    /// added when it has no tag).
    ///
    /// The returned [`ImageInfo`] describes the archive's content: its layers are uncompressed.
    /// Random layers are staged in a temporary directory next to `path`, kept until the
    /// returned value is dropped.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) -> Result<ImageInfo> {
        let (repo, tag) = split_repo_tag(repo_tag);
        let repo_tag = format!("{repo}:{tag}");
        let scratch = if self.random_layers > 0 {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            Some(Arc::new(tempfile::tempdir_in(parent).with_context(|| {
                format!("failed to create a temp dir in {}", parent.display())
            })?))
        } else {
            None
        };
        let mut info = self.build(false, scratch.as_ref().map(|d| d.path()))?;
        info.scratch = scratch;

        let blob_path = |d: &Digest| format!("blobs/sha256/{}", d.hex());
        let manifest_json = json!([{
            "Config": blob_path(&info.config_digest),
            "RepoTags": [repo_tag],
            "Layers": info.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
        }]);
        let index = index(vec![index_entry(
            &info,
            json!({
                "io.containerd.image.name": containerd_name(repo, tag),
                REF_NAME: tag,
            }),
        )]);

        let file = File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
        let write = |tar: &mut tar::Builder<BufWriter<File>>| -> io::Result<()> {
            append_dir(tar, "blobs/")?;
            append_dir(tar, "blobs/sha256/")?;
            for layer in &info.layers {
                let name = blob_path(&layer.digest);
                match &layer.path_or_bytes {
                    LayerData::Bytes(bytes) => append(tar, &name, bytes.len() as u64, &bytes[..])?,
                    LayerData::Path(p) => append(tar, &name, layer.size, File::open(p)?)?,
                }
            }
            append(
                tar,
                &blob_path(&info.config_digest),
                info.config_bytes.len() as u64,
                &info.config_bytes[..],
            )?;
            let manifest = &info.manifest_bytes;
            append(
                tar,
                &blob_path(&info.manifest_digest),
                manifest.len() as u64,
                &manifest[..],
            )?;
            append(tar, "oci-layout", OCI_LAYOUT.len() as u64, OCI_LAYOUT)?;
            let index = serde_json::to_vec(&index)?;
            append(tar, "index.json", index.len() as u64, &index[..])?;
            let manifest_json = serde_json::to_vec(&manifest_json)?;
            append(tar, "manifest.json", manifest_json.len() as u64, &manifest_json[..])?;
            tar.finish()?;
            tar.get_mut().flush()
        };
        write(&mut tar).with_context(|| format!("failed to write {}", path.display()))?;
        Ok(info)
    }
}

fn index(manifests: Vec<Value>) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": manifests,
    })
}

fn index_entry(info: &ImageInfo, annotations: Value) -> Value {
    json!({
        "mediaType": info.manifest_media_type,
        "digest": info.manifest_digest,
        "size": info.manifest_bytes.len(),
        "platform": { "architecture": super::go_arch(), "os": "linux" },
        "annotations": annotations,
    })
}

/// Splits `repo[:tag]`; a `:` before the last `/` belongs to a registry port.
fn split_repo_tag(repo_tag: &str) -> (&str, &str) {
    let name_start = repo_tag.rfind('/').map_or(0, |i| i + 1);
    match repo_tag[name_start..].rfind(':') {
        Some(i) => (&repo_tag[..name_start + i], &repo_tag[name_start + i + 1..]),
        None => (repo_tag, "latest"),
    }
}

/// The fully qualified name docker puts in `io.containerd.image.name` (`docker.io/library/…`).
fn containerd_name(repo: &str, tag: &str) -> String {
    let first = repo.split('/').next().unwrap_or_default();
    let has_host = repo.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if has_host {
        format!("{repo}:{tag}")
    } else if repo.contains('/') {
        format!("docker.io/{repo}:{tag}")
    } else {
        format!("docker.io/library/{repo}:{tag}")
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("failed to write {}", path.display()))
}

fn append_dir(tar: &mut tar::Builder<BufWriter<File>>, name: &str) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_mtime(MTIME);
    tar.append_data(&mut header, name, io::empty())
}

fn append(tar: &mut tar::Builder<BufWriter<File>>, name: &str, size: u64, data: impl io::Read) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_mtime(MTIME);
    tar.append_data(&mut header, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_repo_and_tag() {
        for (input, repo, tag, full) in [
            ("busybox", "busybox", "latest", "docker.io/library/busybox:latest"),
            ("busybox:1", "busybox", "1", "docker.io/library/busybox:1"),
            ("me/app:v2", "me/app", "v2", "docker.io/me/app:v2"),
            (
                "localhost:5000/app",
                "localhost:5000/app",
                "latest",
                "localhost:5000/app:latest",
            ),
            ("reg.example/a/b:t", "reg.example/a/b", "t", "reg.example/a/b:t"),
        ] {
            assert_eq!(split_repo_tag(input), (repo, tag), "{input}");
            assert_eq!(containerd_name(repo, tag), full, "{input}");
        }
    }

    #[test]
    fn layout_keeps_other_tags() {
        let dir = tempfile::tempdir().unwrap();
        let a = ImageBuilder::new().write_oci_layout(dir.path(), "a").unwrap();
        let b = ImageBuilder::new()
            .label("x", "y")
            .write_oci_layout(dir.path(), "b")
            .unwrap();
        ImageBuilder::new()
            .label("x", "y")
            .write_oci_layout(dir.path(), "b")
            .unwrap();
        let index: Value = serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        assert_eq!(manifests[0]["digest"], a.manifest_digest.to_string());
        assert_eq!(manifests[1]["digest"], b.manifest_digest.to_string());
        for digest in [&a.manifest_digest, &a.config_digest, &b.layers[2].digest] {
            let bytes = fs::read(dir.path().join("blobs/sha256").join(digest.hex())).unwrap();
            assert_eq!(&Digest::sha256(&bytes), digest);
        }
    }
}
