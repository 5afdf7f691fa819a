//! The test image: busybox-static with several layers, whiteouts and symlinks, built in memory
//! (big random layers on disk) and written as an OCI image layout or a `docker save` archive.

mod layers;
mod output;

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use berth_oci::{Digest, media_types};
use flate2::Compression;
use serde_json::json;
use tempfile::TempDir;

use layers::{CREATED, LayerSpec};

/// Builds the busybox-static test image.
///
/// The layers, in order (paths relative to the image root):
///
/// ```text
/// 1  bin/busybox (from the host's /bin/busybox), bin/{sh,ls,cat,echo,sleep,true,…} -> busybox,
///    etc/passwd (root, nobody), etc/group, root/ (0700), tmp/ (1777)
/// 2  etc/berth-release, data/keep.txt, data/remove-me.txt,
///    data/doomed/{a.txt,sub/b.txt}, data/opaque/{old-1.txt,old-2.txt}
/// 3  data/.wh.remove-me.txt, data/.wh.doomed, data/opaque/.wh..wh..opq, data/opaque/new.txt,
///    data/keep-link -> keep.txt, usr/bin -> ../bin
/// 4… random/<n>.bin, incompressible (only with `extra_random_layers`)
/// ```
///
/// So the unpacked image has `data/keep.txt`, `data/keep-link`, `data/opaque/new.txt` and no
/// `data/remove-me.txt`, `data/doomed` or `data/opaque/old-*.txt`. Entries are owned by root
/// with a fixed mtime, so the same options give the same digests; random layers are seeded
/// once per builder, so one builder always describes one image.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    compressed: bool,
    random_layers: usize,
    random_layer_bytes: u64,
    random_seed: u64,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    cmd: Vec<String>,
    architecture: Option<String>,
    volumes: Vec<String>,
    healthcheck: Option<serde_json::Value>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder::new()
    }
}

impl ImageBuilder {
    /// The three-layer image, gzip-compressed, `Cmd` `["sh"]`, no labels or annotations.
    pub fn new() -> Self {
        ImageBuilder {
            compressed: true,
            random_layers: 0,
            random_layer_bytes: 0,
            random_seed: rand::random(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            cmd: vec!["sh".to_owned()],
            architecture: None,
            volumes: Vec::new(),
            healthcheck: None,
        }
    }

    /// Stores layers as plain tar (`application/vnd.oci.image.layer.v1.tar`) instead of gzip.
    pub fn uncompressed(mut self) -> Self {
        self.compressed = false;
        self
    }

    /// Adds `count` layers of `bytes_each` random bytes after the fixed ones, for benchmarks.
    ///
    /// They stay incompressible: in a gzip image they are stored with deflate level 0 (still
    /// `tar+gzip`, so clients treat them like any other layer). They are written to disk, never
    /// held in memory.
    pub fn extra_random_layers(mut self, count: usize, bytes_each: u64) -> Self {
        self.random_layers = count;
        self.random_layer_bytes = bytes_each;
        self
    }

    /// Sets a label in the image config (`config.Labels`).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets an annotation on the image manifest.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sets the image's default command (`config.Cmd`).
    pub fn cmd<I, S>(mut self, cmd: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = cmd.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a `VOLUME` (`config.Volumes`): containers of the image get an anonymous volume
    /// there, filled from the image's content at that path.
    pub fn volume(mut self, path: impl Into<String>) -> Self {
        self.volumes.push(path.into());
        self
    }

    /// Sets `HEALTHCHECK` (`config.Healthcheck`: `Test`, `Interval`, … in nanoseconds).
    pub fn healthcheck(mut self, healthcheck: serde_json::Value) -> Self {
        self.healthcheck = Some(healthcheck);
        self
    }

    /// Sets the config's `architecture` (Go's name: amd64, arm64, s390x) instead of the
    /// host's, to make the other platforms of a multi-platform index. The layers stay the
    /// host's busybox: such an image is for resolving, not for running.
    pub fn architecture(mut self, arch: impl Into<String>) -> Self {
        self.architecture = Some(arch.into());
        self
    }

    /// Builds the image's blobs without writing a layout, e.g. to push them over HTTP.
    ///
    /// Random layers live in a temporary directory that is removed when the returned
    /// [`ImageInfo`] and all its clones are dropped.
    pub fn blobs(&self) -> Result<ImageInfo> {
        let scratch = if self.random_layers > 0 {
            Some(Arc::new(
                tempfile::tempdir().context("failed to create a temp dir for random layers")?,
            ))
        } else {
            None
        };
        let mut info = self.build(self.compressed, scratch.as_ref().map(|d| d.path()))?;
        info.scratch = scratch;
        Ok(info)
    }

    fn specs(&self) -> Vec<LayerSpec> {
        let mut specs = LayerSpec::FIXED.to_vec();
        specs.extend((0..self.random_layers).map(|index| LayerSpec::Random {
            index,
            bytes: self.random_layer_bytes,
            seed: self.random_seed.wrapping_add(index as u64),
        }));
        specs
    }

    /// Encodes the layers (random ones into files named by their hex digest in `big_dir`) and
    /// makes the config and the OCI manifest.
    fn build(&self, compressed: bool, big_dir: Option<&Path>) -> Result<ImageInfo> {
        let fixed = fixed_layers(compressed)?;
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        let mut history = Vec::new();
        for (i, spec) in self.specs().into_iter().enumerate() {
            let media_type = if compressed {
                media_types::OCI_LAYER_GZIP
            } else {
                media_types::OCI_LAYER_TAR
            };
            let (digest, diff_id, size, data) = if spec.is_random() {
                let dir = big_dir.context("random layers need a directory")?;
                let level = compressed.then(Compression::none);
                let tmp = tempfile::NamedTempFile::new_in(dir)
                    .with_context(|| format!("failed to create a temp file in {}", dir.display()))?;
                let enc = layers::encode(&spec, b"", BufWriter::with_capacity(1 << 20, tmp), level)?;
                let tmp = enc
                    .sink
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .context("failed to write a random layer")?;
                let path = dir.join(enc.digest.hex());
                tmp.persist(&path)
                    .with_context(|| format!("failed to move a random layer to {}", path.display()))?;
                (enc.digest, enc.diff_id, enc.size, LayerData::Path(path))
            } else {
                let enc = &fixed[i];
                let data = LayerData::Bytes(enc.sink.clone());
                (enc.digest.clone(), enc.diff_id.clone(), enc.size, data)
            };
            diff_ids.push(diff_id.clone());
            history.push(json!({ "created": CREATED, "created_by": spec.created_by() }));
            layers.push(LayerInfo {
                digest,
                diff_id,
                size,
                media_type,
                path_or_bytes: data,
            });
        }

        let mut container_config = json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": self.cmd,
            "WorkingDir": "/",
        });
        if !self.labels.is_empty() {
            container_config["Labels"] = json!(self.labels);
        }
        if let Some(h) = &self.healthcheck {
            container_config["Healthcheck"] = h.clone();
        }
        if !self.volumes.is_empty() {
            let volumes: BTreeMap<&str, serde_json::Value> =
                self.volumes.iter().map(|v| (v.as_str(), json!({}))).collect();
            container_config["Volumes"] = json!(volumes);
        }
        let config = json!({
            "created": CREATED,
            "architecture": self.architecture.as_deref().unwrap_or(go_arch()),
            "os": "linux",
            "config": container_config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        let config_bytes = serde_json::to_vec(&config)?;
        let config_digest = Digest::sha256(&config_bytes);

        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": {
                "mediaType": media_types::OCI_CONFIG,
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        if !self.annotations.is_empty() {
            manifest["annotations"] = json!(self.annotations);
        }
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        Ok(ImageInfo {
            manifest_digest: Digest::sha256(&manifest_bytes),
            manifest_bytes,
            manifest_media_type: media_types::OCI_MANIFEST,
            config_digest,
            config_bytes,
            layers,
            scratch: None,
        })
    }
}

/// What an image is made of: its manifest, config and layers, with their digests.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Digest of `manifest_bytes`.
    pub manifest_digest: Digest,
    /// The manifest exactly as stored (and as it must be pushed).
    pub manifest_bytes: Vec<u8>,
    /// The manifest's media type (OCI image manifest).
    pub manifest_media_type: &'static str,
    /// Digest of `config_bytes`, which is also the Docker image ID.
    pub config_digest: Digest,
    /// The image config JSON exactly as stored.
    pub config_bytes: Vec<u8>,
    /// The layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// Keeps on-disk random layers alive as long as this value (or a clone) is.
    scratch: Option<Arc<TempDir>>,
}

impl ImageInfo {
    /// Total bytes of all blobs: manifest, config and layers.
    pub fn total_size(&self) -> u64 {
        let layers: u64 = self.layers.iter().map(|l| l.size).sum();
        (self.manifest_bytes.len() + self.config_bytes.len()) as u64 + layers
    }
}

/// One layer blob.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// Digest of the blob as stored (compressed if its media type says so).
    pub digest: Digest,
    /// Digest of the uncompressed tar, as listed in the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// OCI layer media type (`…layer.v1.tar+gzip` or `…layer.v1.tar`).
    pub media_type: &'static str,
    /// The blob's content: in memory, or a file for big random layers.
    pub path_or_bytes: LayerData,
}

impl LayerInfo {
    /// The blob's bytes, read from disk if it lives there.
    pub fn read(&self) -> Result<Vec<u8>> {
        match &self.path_or_bytes {
            LayerData::Bytes(bytes) => Ok(bytes.clone()),
            LayerData::Path(path) => std::fs::read(path).with_context(|| format!("failed to read {}", path.display())),
        }
    }
}

/// Where a layer blob's bytes are.
#[derive(Clone)]
pub enum LayerData {
    /// Held in memory.
    Bytes(Vec<u8>),
    /// A file holding exactly the blob (big random layers).
    Path(PathBuf),
}

impl std::fmt::Debug for LayerData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerData::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            LayerData::Path(p) => f.debug_tuple("Path").field(p).finish(),
        }
    }
}

/// The fixed layers, encoded once per process and compression: they never change, and
/// compressing busybox takes over a second in a debug build, which every test would pay.
fn fixed_layers(compressed: bool) -> Result<&'static [layers::Encoded<Vec<u8>>]> {
    type Cached = Result<Vec<layers::Encoded<Vec<u8>>>, String>;
    static CACHE: [OnceLock<Cached>; 2] = [OnceLock::new(), OnceLock::new()];
    let cached = CACHE[usize::from(compressed)].get_or_init(|| {
        let encode = || -> Result<Vec<_>> {
            let busybox = layers::read_busybox()?;
            let level = compressed.then(Compression::default);
            LayerSpec::FIXED
                .iter()
                .map(|spec| layers::encode(spec, &busybox, Vec::new(), level))
                .collect()
        };
        encode().map_err(|e| format!("{e:#}"))
    });
    cached.as_deref().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The host architecture in Go's naming, as image configs and platforms use it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other, // s390x, riscv64 are spelled the same
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn config_and_manifest_are_consistent() {
        let info = ImageBuilder::new()
            .label("org.example.k", "v")
            .annotation("org.example.a", "b")
            .cmd(["sleep", "1"])
            .blobs()
            .unwrap();
        let config: Value = serde_json::from_slice(&info.config_bytes).unwrap();
        let manifest: Value = serde_json::from_slice(&info.manifest_bytes).unwrap();
        assert_eq!(info.manifest_digest, Digest::sha256(&info.manifest_bytes));
        assert_eq!(info.config_digest, Digest::sha256(&info.config_bytes));
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], go_arch());
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(config["config"]["Labels"]["org.example.k"], "v");
        assert_eq!(config["config"]["Cmd"], json!(["sleep", "1"]));
        assert_eq!(config["history"].as_array().unwrap().len(), 3);
        assert_eq!(manifest["annotations"]["org.example.a"], "b");
        assert_eq!(manifest["config"]["digest"], info.config_digest.to_string());
        assert_eq!(info.layers.len(), 3);
        for (i, layer) in info.layers.iter().enumerate() {
            assert_eq!(config["rootfs"]["diff_ids"][i], layer.diff_id.to_string());
            assert_eq!(manifest["layers"][i]["digest"], layer.digest.to_string());
            assert_eq!(manifest["layers"][i]["mediaType"], media_types::OCI_LAYER_GZIP);
            let bytes = layer.read().unwrap();
            assert_eq!(Digest::sha256(&bytes), layer.digest);
            assert_eq!(bytes.len() as u64, layer.size);
        }
    }

    #[test]
    fn same_builder_same_image() {
        let builder = ImageBuilder::new().extra_random_layers(1, 1000);
        let a = builder.blobs().unwrap();
        let b = builder.blobs().unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        let other = ImageBuilder::new().extra_random_layers(1, 1000).blobs().unwrap();
        assert_ne!(
            a.manifest_digest, other.manifest_digest,
            "random layers differ per builder"
        );
    }

    #[test]
    fn random_layers_stay_on_disk_until_dropped() {
        let info = ImageBuilder::new()
            .uncompressed()
            .extra_random_layers(2, 100_000)
            .blobs()
            .unwrap();
        assert_eq!(info.layers.len(), 5);
        let LayerData::Path(path) = &info.layers[4].path_or_bytes else {
            panic!("random layer in memory");
        };
        let path = path.clone();
        assert_eq!(info.layers[4].media_type, media_types::OCI_LAYER_TAR);
        assert_eq!(info.layers[4].digest, info.layers[4].diff_id);
        assert!(info.layers[4].size > 100_000);
        assert_eq!(Digest::sha256(&std::fs::read(&path).unwrap()), info.layers[4].digest);
        let copy = info.clone();
        drop(info);
        assert!(path.exists());
        drop(copy);
        assert!(!path.exists());
    }
}
