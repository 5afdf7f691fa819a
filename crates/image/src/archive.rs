//! `docker save` and `docker load`: image archives out of and into the store.
//!
//! What [`Export::write`] streams, the format docker 25+ writes (an OCI image layout plus
//! docker's legacy `manifest.json`, so docker 20.10 and 25+, skopeo and containerd read it):
//!
//! ```text
//! blobs/sha256/<hex>     configs (the stored bytes: the image ID is kept), uncompressed
//!                        layers (named by diff ID), one OCI manifest per image; each blob once
//! index.json             one manifest descriptor per saved tag, annotated with
//!                        `io.containerd.image.name` (full name) and
//!                        `org.opencontainers.image.ref.name` (the tag); untagged: none
//! manifest.json          [{"Config","RepoTags","Layers"}] pointing into blobs/sha256
//! oci-layout             {"imageLayoutVersion":"1.0.0"}
//! repositories           {"repo":{"tag":"<top layer hex>"}}
//! ```
//!
//! What [`ImageStore::load`] reads: that format, docker's old one (`manifest.json`,
//! `<id>.json`, `<dir>/layer.tar`, with symlinks between shared layers) or a plain OCI layout
//! (`index.json` only), plain or gzip-compressed. The archive is streamed into
//! `snapshots/.tmp-<uuid>/archive/` (never into memory; a crash leaves only what `open`
//! sweeps), every blob is checked against its digest and every layer against its diff ID
//! while it is unpacked with [`extract`] into `.tmp-<uuid>/layers/`, and only when all of
//! that succeeded are the blobs committed and the images recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use berth_oci::{Digest, media_types};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::ImageConfig;
use crate::content::{ContentStore, ContentWriter, LocalContent, LocalWriter};
use crate::error::{Error, io};
use crate::extract::{ExtractOptions, Whiteouts, extract};
use crate::names::{familiar, normalize, split_tag};
use crate::store::{Hashing, ImageRecord, ImageStore, Layer, Tee, remove_tree};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// JSON files of an archive (configs, manifests, index.json) are read into memory; nothing
/// real comes near this.
const MAX_JSON: u64 = 64 << 20;
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Images chosen for `docker save`, ready to be written by [`Export::write`].
#[derive(Debug, Clone)]
pub struct Export {
    content: LocalContent,
    /// Each image once, with the tags (full names) it was asked for by.
    images: Vec<(ImageRecord, Vec<String>)>,
}

/// One image a load recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub id: Digest,
    /// Full names (`docker.io/library/busybox:latest`); empty for an untagged image.
    pub tags: Vec<String>,
}

impl ImageStore {
    /// Resolves the names for `docker save` (IDs, tags); fails before a byte is written if
    /// one is unknown. A name that is a tag of the image becomes a `RepoTags` entry.
    pub fn export(&self, names: &[String]) -> Result<Export, Error> {
        let mut images: Vec<(ImageRecord, Vec<String>)> = Vec::new();
        for name in names {
            let image = self.get(name)?;
            self.ensure_layer_blobs(&image.record)?;
            let tag = normalize(name).ok().filter(|t| image.tags.contains(t));
            if let Some((_, tags)) = images.iter_mut().find(|(r, _)| r.id == image.record.id) {
                if let Some(tag) = tag
                    && !tags.contains(&tag)
                {
                    tags.push(tag);
                }
            } else {
                images.push((image.record, tag.into_iter().collect()));
            }
        }
        Ok(Export {
            content: self.content.clone(),
            images,
        })
    }

    /// Loads a docker-archive or OCI-layout tarball (plain or gzip). Either every image in it
    /// is recorded, or (on any error) nothing is.
    pub fn load<R: Read>(&self, src: R) -> Result<Vec<Loaded>, Error> {
        let staging = self.snapshots.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir(&staging).map_err(io("create directory", &staging))?;
        let result = self.load_in(src, &staging);
        let cleanup = remove_tree(&staging);
        let loaded = result?;
        cleanup?;
        Ok(loaded)
    }

    fn load_in<R: Read>(&self, src: R, staging: &Path) -> Result<Vec<Loaded>, Error> {
        let files = staging.join("archive");
        let unpacked = staging.join("layers");
        for d in [&files, &unpacked] {
            fs::create_dir(d).map_err(io("create directory", d))?;
        }
        let archive = Staged::receive(src, files)?;
        let plans = if archive.contains("manifest.json") {
            docker_plans(&archive)?
        } else if archive.contains("index.json") {
            oci_plans(&archive)?
        } else {
            return Err(invalid(
                "-",
                "neither manifest.json nor index.json found: not a docker-archive or OCI layout tarball",
            ));
        };
        if plans.is_empty() {
            return Err(invalid("manifest.json", "the archive names no image"));
        }
        // Everything is verified and unpacked before anything becomes visible.
        let mut prepared = Vec::with_capacity(plans.len());
        for (i, plan) in plans.into_iter().enumerate() {
            prepared.push(self.prepare(&archive, plan, &unpacked.join(i.to_string()))?);
        }
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for p in prepared {
            for w in p.writers {
                w.commit(None)?;
            }
            let (id, _) = self.put_blob(&p.config_bytes)?;
            let (manifest, _) = self.put_blob(&p.manifest_bytes)?;
            let created = p.config.created_unix();
            let record = ImageRecord {
                id: id.clone(),
                manifest: Some(manifest),
                size: p.layers.iter().map(|l| l.diff_size).sum(),
                config: p.config,
                layers: p.layers,
                created,
            };
            let dirs: Vec<&Path> = p.dirs.iter().map(PathBuf::as_path).collect();
            self.add_locked(record.clone(), &dirs, p.tags.first().cloned())?;
            for tag in p.tags.iter().skip(1) {
                self.add_locked(record.clone(), &[], Some(tag.clone()))?;
            }
            tracing::info!(image = %id, tags = ?p.tags, "image loaded");
            out.push(Loaded { id, tags: p.tags });
        }
        Ok(out)
    }

    /// Checks one image's config and layers against their digests and unpacks the layers
    /// into `dir/<n>`; the layer blobs wait, uncommitted, in content writers.
    fn prepare(&self, archive: &Staged, plan: Plan, dir: &Path) -> Result<Prepared, Error> {
        let config_bytes = archive.read(&plan.config_path)?;
        let id = Digest::sha256(&config_bytes);
        check(plan.config_digest.as_ref(), &id)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(&plan.config_path, format!("not an image config: {e}")))?;
        if config.rootfs.diff_ids.len() != plan.layers.len() {
            return Err(invalid(
                &plan.config_path,
                format!(
                    "the config names {} layers, the manifest {}",
                    config.rootfs.diff_ids.len(),
                    plan.layers.len()
                ),
            ));
        }
        fs::create_dir(dir).map_err(io("create directory", dir))?;
        let mut writers = Vec::new();
        let mut layers = Vec::new();
        let mut dirs = Vec::new();
        for (i, (src, want_diff)) in plan.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
            let layer_dir = dir.join(i.to_string());
            fs::create_dir(&layer_dir).map_err(io("create directory", &layer_dir))?;
            let mut writer = self.content.writer()?;
            let file = archive.open(&src.path)?;
            let mut raw = Hashing::new(file);
            let (compressed, diff_id, diff_size) = {
                let mut buf = Tee::new(BufReader::with_capacity(1 << 20, &mut raw), &mut writer);
                let head = buf.fill_buf().map_err(|source| Error::Read { source })?;
                let compressed = if head.starts_with(GZIP_MAGIC) {
                    Some(media_types::OCI_LAYER_GZIP)
                } else if head.starts_with(ZSTD_MAGIC) {
                    Some(media_types::OCI_LAYER_ZSTD)
                } else {
                    None
                };
                let tar: Box<dyn Read + '_> = match compressed {
                    Some(media_types::OCI_LAYER_GZIP) => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
                    Some(_) => Box::new(
                        zstd::stream::read::Decoder::with_buffer(buf).map_err(|source| Error::Read { source })?,
                    ),
                    None => Box::new(buf),
                };
                let mut tar = Hashing::new(tar);
                let opts = ExtractOptions {
                    whiteouts: Whiteouts::Overlay,
                    allow_devices: false,
                    ..ExtractOptions::default()
                };
                extract(&mut tar, &layer_dir, &opts)?;
                io::copy(&mut tar, &mut io::sink()).map_err(|source| Error::Read { source })?;
                let (diff_id, diff_size) = tar.finish();
                (compressed, diff_id, diff_size)
            };
            let (digest, size) = raw.finish();
            check(src.digest.as_ref(), &digest)?;
            check(Some(want_diff), &diff_id)?;
            let media_type = src
                .media_type
                .clone()
                .unwrap_or_else(|| compressed.unwrap_or(media_types::OCI_LAYER_TAR).to_owned());
            layers.push(Layer {
                digest,
                media_type,
                size,
                diff_id,
                diff_size,
            });
            writers.push(writer);
            dirs.push(layer_dir);
        }
        let manifest_bytes = match plan.manifest {
            Some(bytes) => bytes,
            None => {
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": media_types::OCI_MANIFEST,
                    "config": { "mediaType": media_types::OCI_CONFIG, "digest": id, "size": config_bytes.len() },
                    "layers": layers.iter().map(|l| json!({
                        "mediaType": l.media_type, "digest": l.digest, "size": l.size,
                    })).collect::<Vec<_>>(),
                });
                serde_json::to_vec(&manifest).expect("manifest serialises")
            }
        };
        Ok(Prepared {
            config_bytes,
            config,
            manifest_bytes,
            layers,
            writers,
            dirs,
            tags: plan.tags,
        })
    }
}

impl Export {
    /// The IDs of the images in the archive, in order.
    pub fn ids(&self) -> impl Iterator<Item = &Digest> {
        self.images.iter().map(|(r, _)| &r.id)
    }

    /// Streams the archive into `out`; layers are decompressed on the way, one buffer at a
    /// time, and checked against their diff IDs.
    pub fn write<W: Write>(&self, out: W) -> Result<(), Error> {
        let mut tar = tar::Builder::new(out);
        for d in ["blobs/", "blobs/sha256/"] {
            append_dir(&mut tar, d)?;
        }
        let mut written: HashSet<Digest> = HashSet::new();
        let mut index = Vec::new();
        let mut manifests = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (record, tags) in &self.images {
            let config = self.content.read(&record.id)?;
            if written.insert(record.id.clone()) {
                append(&mut tar, &blob_path(&record.id), config.len() as u64, config.as_slice())?;
            }
            for layer in &record.layers {
                if written.insert(layer.diff_id.clone()) {
                    self.append_layer(&mut tar, layer)?;
                }
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": media_types::OCI_MANIFEST,
                "config": { "mediaType": media_types::OCI_CONFIG, "digest": record.id, "size": config.len() },
                "layers": record.layers.iter().map(|l| json!({
                    "mediaType": media_types::OCI_LAYER_TAR, "digest": l.diff_id, "size": l.diff_size,
                })).collect::<Vec<_>>(),
            });
            let manifest = serde_json::to_vec(&manifest).expect("manifest serialises");
            let digest = Digest::sha256(&manifest);
            if written.insert(digest.clone()) {
                append(
                    &mut tar,
                    &blob_path(&digest),
                    manifest.len() as u64,
                    manifest.as_slice(),
                )?;
            }
            let descriptor = json!({
                "mediaType": media_types::OCI_MANIFEST,
                "digest": digest,
                "size": manifest.len(),
            });
            if tags.is_empty() {
                index.push(descriptor.clone());
            }
            for full in tags {
                let (repo, tag) = split_tag(full);
                let mut d = descriptor.clone();
                d["annotations"] = json!({ CONTAINERD_NAME: full, REF_NAME: tag });
                index.push(d);
                if let Some(top) = record.layers.last() {
                    repositories
                        .entry(familiar(repo).to_owned())
                        .or_default()
                        .insert(tag.to_owned(), top.diff_id.hex().to_owned());
                }
            }
            let repo_tags: Vec<&str> = tags.iter().map(|t| familiar(t)).collect();
            manifests.push(json!({
                "Config": blob_path(&record.id),
                "RepoTags": if repo_tags.is_empty() { Value::Null } else { json!(repo_tags) },
                "Layers": record.layers.iter().map(|l| blob_path(&l.diff_id)).collect::<Vec<_>>(),
            }));
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": index,
        });
        for (name, value) in [
            ("index.json", index),
            ("manifest.json", Value::Array(manifests)),
            ("repositories", json!(repositories)),
        ] {
            let bytes = serde_json::to_vec(&value).expect("JSON serialises");
            append(&mut tar, name, bytes.len() as u64, bytes.as_slice())?;
        }
        append(&mut tar, "oci-layout", OCI_LAYOUT.len() as u64, OCI_LAYOUT)?;
        let mut out = tar.into_inner().map_err(write_failed)?;
        out.flush().map_err(write_failed)
    }

    /// One layer as an uncompressed tar named by its diff ID, decompressed while it streams.
    fn append_layer<W: Write>(&self, tar: &mut tar::Builder<W>, layer: &Layer) -> Result<(), Error> {
        let path = self.content.path(&layer.digest);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound {
                digest: layer.digest.clone(),
            },
            _ => io("open", &path)(e),
        })?;
        let mut src = BufReader::with_capacity(1 << 20, file);
        let head = src.fill_buf().map_err(io("read", &path))?;
        let plain: Box<dyn Read> = if head.starts_with(GZIP_MAGIC) {
            Box::new(flate2::bufread::MultiGzDecoder::new(src))
        } else if head.starts_with(ZSTD_MAGIC) {
            Box::new(zstd::stream::read::Decoder::with_buffer(src).map_err(io("read", &path))?)
        } else {
            Box::new(src)
        };
        let mut hashing = Hashing::new(plain.take(layer.diff_size));
        let mut header = file_header(layer.diff_size);
        tar.append_data(&mut header, blob_path(&layer.diff_id), &mut hashing)
            .map_err(write_failed)?;
        let (computed, size) = hashing.finish();
        if size != layer.diff_size || computed != layer.diff_id {
            return Err(Error::DigestMismatch {
                expected: layer.diff_id.clone(),
                computed,
            });
        }
        Ok(())
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, size: u64, data: impl Read) -> Result<(), Error> {
    let mut h = file_header(size);
    tar.append_data(&mut h, name, data).map_err(write_failed)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> Result<(), Error> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    tar.append_data(&mut h, name, io::empty()).map_err(write_failed)
}

fn write_failed(source: io::Error) -> Error {
    Error::Io {
        op: "write the image archive",
        path: PathBuf::from("-"),
        source,
    }
}

fn invalid(entry: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArchive {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

fn check(expected: Option<&Digest>, computed: &Digest) -> Result<(), Error> {
    match expected {
        Some(e) if e != computed => Err(Error::DigestMismatch {
            expected: e.clone(),
            computed: computed.clone(),
        }),
        _ => Ok(()),
    }
}

/// One image to load, as the archive describes it.
#[derive(Debug)]
struct Plan {
    config_path: String,
    config_digest: Option<Digest>,
    /// The manifest as the archive holds it (OCI layout), already verified.
    manifest: Option<Vec<u8>>,
    layers: Vec<LayerSource>,
    /// Full names.
    tags: Vec<String>,
}

#[derive(Debug)]
struct LayerSource {
    path: String,
    digest: Option<Digest>,
    media_type: Option<String>,
}

struct Prepared {
    config_bytes: Vec<u8>,
    config: ImageConfig,
    manifest_bytes: Vec<u8>,
    layers: Vec<Layer>,
    writers: Vec<LocalWriter>,
    dirs: Vec<PathBuf>,
    tags: Vec<String>,
}

/// Merges plans naming the same config (one image asked for by several tags).
fn merge(plans: Vec<Plan>) -> Vec<Plan> {
    let mut out: Vec<Plan> = Vec::new();
    for p in plans {
        match out.iter_mut().find(|o| o.config_path == p.config_path) {
            Some(o) => {
                for t in p.tags {
                    if !o.tags.contains(&t) {
                        o.tags.push(t);
                    }
                }
            }
            None => out.push(p),
        }
    }
    out
}

/// `blobs/sha256/<hex>` or an old-style `<hex>.json` names the digest its content must have.
fn digest_of_path(path: &str) -> Option<Digest> {
    if let Some(rest) = path.strip_prefix("blobs/") {
        let (alg, hex) = rest.split_once('/')?;
        return format!("{alg}:{hex}").parse().ok();
    }
    let stem = path.strip_suffix(".json")?;
    format!("sha256:{stem}").parse().ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_plans(archive: &Staged) -> Result<Vec<Plan>, Error> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&archive.read("manifest.json")?).map_err(|e| invalid("manifest.json", e.to_string()))?;
    let mut plans = Vec::new();
    for e in entries {
        let config_path = clean_name(&e.config)?;
        let tags = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| normalize(t))
            .collect::<Result<Vec<_>, _>>()?;
        let layers = e
            .layers
            .iter()
            .map(|l| {
                let path = clean_name(l)?;
                Ok(LayerSource {
                    digest: path.starts_with("blobs/").then(|| digest_of_path(&path)).flatten(),
                    path,
                    media_type: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        plans.push(Plan {
            config_digest: digest_of_path(&config_path),
            config_path,
            manifest: None,
            layers,
            tags,
        });
    }
    Ok(merge(plans))
}

/// An OCI descriptor, the fields loading needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

fn oci_plans(archive: &Staged) -> Result<Vec<Plan>, Error> {
    let index: Manifest =
        serde_json::from_slice(&archive.read("index.json")?).map_err(|e| invalid("index.json", e.to_string()))?;
    let mut plans = Vec::new();
    for desc in index.manifests.unwrap_or_default() {
        let tag = match (desc.annotations.get(CONTAINERD_NAME), desc.annotations.get(REF_NAME)) {
            (Some(name), _) => Some(normalize(name)?),
            // A bare tag (`latest`) names no repository: the image loads untagged.
            (None, Some(r)) if r.contains([':', '/']) => Some(normalize(r)?),
            _ => None,
        };
        let (bytes, manifest) = resolve_manifest(archive, &desc, 0)?;
        let config = manifest
            .config
            .ok_or_else(|| invalid(&blob_path(&desc.digest), "the manifest has no config"))?;
        plans.push(Plan {
            config_path: blob_path(&config.digest),
            config_digest: Some(config.digest),
            manifest: Some(bytes),
            layers: manifest
                .layers
                .into_iter()
                .map(|l| LayerSource {
                    path: blob_path(&l.digest),
                    digest: Some(l.digest),
                    media_type: l.media_type,
                })
                .collect(),
            tags: tag.into_iter().collect(),
        });
    }
    Ok(merge(plans))
}

/// Reads (and verifies) the manifest a descriptor names; an index resolves to the host's
/// platform.
fn resolve_manifest(archive: &Staged, desc: &Descriptor, depth: usize) -> Result<(Vec<u8>, Manifest), Error> {
    let path = blob_path(&desc.digest);
    let bytes = archive.read(&path)?;
    check(Some(&desc.digest), &Digest::of(desc.digest.algorithm(), &bytes))?;
    if bytes.len() as u64 != desc.size {
        return Err(invalid(
            &path,
            format!("{} bytes, the descriptor says {}", bytes.len(), desc.size),
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| invalid(&path, e.to_string()))?;
    let Some(children) = &manifest.manifests else {
        return Ok((bytes, manifest));
    };
    if depth > 2 {
        return Err(invalid(&path, "indexes nested too deep"));
    }
    let arch = go_arch();
    let child = children
        .iter()
        .find(|c| {
            c.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| (children.len() == 1).then(|| &children[0]))
        .ok_or_else(|| invalid(&path, format!("no manifest for linux/{arch} in the index")))?;
    resolve_manifest(archive, child, depth + 1)
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An entry name made relative, `.` dropped; `..` refused.
fn clean_name(name: &str) -> Result<String, Error> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid(name, "'..' in the name")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// The archive's regular files written below `dir`; its symlinks and hardlinks (old docker
/// archives link shared layers) kept as a map, never created on disk, so no path below
/// `dir` can lead outside it.
struct Staged {
    dir: PathBuf,
    files: HashSet<String>,
    links: HashMap<String, String>,
}

impl Staged {
    fn receive<R: Read>(src: R, dir: PathBuf) -> Result<Staged, Error> {
        let mut src = BufReader::with_capacity(1 << 20, src);
        let head = src.fill_buf().map_err(|source| Error::Read { source })?;
        if head.is_empty() {
            return Err(invalid("-", "the archive is empty"));
        }
        let tar: Box<dyn Read> = if head.starts_with(GZIP_MAGIC) {
            Box::new(flate2::read::MultiGzDecoder::new(src))
        } else {
            Box::new(src)
        };
        let mut staged = Staged {
            dir,
            files: HashSet::new(),
            links: HashMap::new(),
        };
        let unreadable = |e: io::Error| invalid("-", format!("cannot read the tarball: {e}"));
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries().map_err(unreadable)? {
            let mut entry = entry.map_err(unreadable)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = clean_name(&raw)?;
            if name.is_empty() {
                continue;
            }
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let path = staged.dir.join(&name);
                    if let Some(parent) = path.parent() {
                        fs::create_dir_all(parent).map_err(io("create directory", parent))?;
                    }
                    let mut file = File::create(&path).map_err(io("create", &path))?;
                    io::copy(&mut entry, &mut file).map_err(unreadable)?;
                    staged.links.remove(&name);
                    staged.files.insert(name);
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    // Relative to the link's directory, and it must stay inside the archive.
                    let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
                    let joined = if target.starts_with('/') {
                        target.clone()
                    } else {
                        format!("{parent}/{target}")
                    };
                    let resolved = lexical(&joined).ok_or_else(|| invalid(&raw, "symlink out of the archive"))?;
                    staged.links.insert(name, resolved);
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    staged.links.insert(name, clean_name(&target)?);
                }
                // Directories are made as files need them; nothing else belongs in an archive.
                _ => {}
            }
        }
        Ok(staged)
    }

    /// Follows links to a regular file's name.
    fn resolve(&self, name: &str) -> Result<String, Error> {
        let mut cur = clean_name(name)?;
        for _ in 0..16 {
            if self.files.contains(&cur) {
                return Ok(cur);
            }
            match self.links.get(&cur) {
                Some(next) => cur = next.clone(),
                None => break,
            }
        }
        Err(invalid(name, "not in the archive"))
    }

    fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    fn open(&self, name: &str) -> Result<File, Error> {
        let path = self.dir.join(self.resolve(name)?);
        File::open(&path).map_err(io("open", &path))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, Error> {
        let file = self.open(name)?;
        let mut bytes = Vec::new();
        file.take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| Error::Read { source })?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(invalid(name, "too large for a JSON document"));
        }
        Ok(bytes)
    }
}

/// `a/b/../c` → `a/c`; `None` if it climbs above the top.
fn lexical(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ImportOptions;

    fn rootfs(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = file_header(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn import(store: &ImageStore, data: &[u8], tag: &str) -> Digest {
        let opts = ImportOptions {
            reference: Some(tag.to_owned()),
            message: String::new(),
            changes: vec![],
            architecture: "amd64".to_owned(),
            allow_devices: false,
        };
        store.import(data, &opts).unwrap().record.id
    }

    fn save(store: &ImageStore, names: &[&str]) -> Vec<u8> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        store.export(&names).unwrap().write(&mut out).unwrap();
        out
    }

    /// Every entry name of a tarball, with its bytes.
    fn entries(tarball: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut a = tar::Archive::new(tarball);
        let mut out = BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            out.insert(name, bytes);
        }
        out
    }

    #[test]
    fn save_then_load_keeps_id_tags_and_shares_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let a = import(&store, &gzip(&rootfs(&[("a.txt", b"a")])), "a:1");
        let b = import(&store, &rootfs(&[("b.txt", b"b")]), "site/b");
        store.tag("a:1", "a:2").unwrap();
        let tarball = save(&store, &["a:1", "a:2", "site/b"]);
        let files = entries(&tarball);
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest.as_array().unwrap().len(), 2, "{manifest}");
        assert_eq!(manifest[0]["RepoTags"], json!(["a:1", "a:2"]));
        assert_eq!(manifest[0]["Config"], blob_path(&a));
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 3);
        assert_eq!(
            index["manifests"][2]["annotations"][CONTAINERD_NAME],
            "docker.io/site/b:latest"
        );
        assert!(files.contains_key("oci-layout") && files.contains_key("repositories"));
        // Layers leave uncompressed, named by their diff ID.
        let a_layer = &store.get("a:1").unwrap().record.layers[0];
        assert_eq!(Digest::sha256(&files[&blob_path(&a_layer.diff_id)]), a_layer.diff_id);

        for name in ["a:1", "a:2", "site/b"] {
            store.remove(name, false).unwrap();
        }
        assert_eq!(store.count().unwrap(), 0);
        let loaded = store.load(gzip(&tarball).as_slice()).unwrap();
        assert_eq!(
            loaded,
            [
                Loaded {
                    id: a.clone(),
                    tags: vec!["docker.io/library/a:1".into(), "docker.io/library/a:2".into()]
                },
                Loaded {
                    id: b.clone(),
                    tags: vec!["docker.io/site/b:latest".into()]
                },
            ]
        );
        let image = store.get("a:2").unwrap();
        assert_eq!(image.record.id, a);
        let snap = store.snapshot_path(&image.record.chain_ids()[0]);
        assert_eq!(fs::read(snap.join("a.txt")).unwrap(), b"a");
        // Saved again, the same bytes: the archive is a function of the store.
        assert_eq!(save(&store, &["a:1", "a:2", "site/b"]), tarball);
        // Untagged by ID.
        let by_id = save(&store, &[&b.to_string()]);
        let manifest: Value = serde_json::from_slice(&entries(&by_id)["manifest.json"]).unwrap();
        assert_eq!(manifest[0]["RepoTags"], Value::Null);
        assert!(matches!(
            store.export(&["nothing".to_owned()]),
            Err(Error::ImageNotFound { .. })
        ));
    }

    /// A tarball from (name, bytes, symlink target) entries.
    fn archive(entries: &[(&str, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, link) in entries {
            let mut h = file_header(data.len() as u64);
            if let Some(target) = link {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            } else {
                b.append_data(&mut h, name, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn config_for(layers: &[&[u8]]) -> Vec<u8> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::sha256(l)).collect();
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap()
    }

    #[test]
    fn loads_old_docker_archives_with_linked_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let layer = rootfs(&[("x", b"x")]);
        let config = config_for(&[&layer, &layer]);
        let id = Digest::sha256(&config);
        let manifest = json!([{
            "Config": format!("{}.json", id.hex()),
            "RepoTags": ["old:style"],
            "Layers": ["l1/layer.tar", "l2/layer.tar"],
        }]);
        let tarball = archive(&[
            (&format!("{}.json", id.hex()), &config, None),
            ("l1/layer.tar", &layer, None),
            ("l2/layer.tar", b"", Some("../l1/layer.tar")),
            ("manifest.json", &serde_json::to_vec(&manifest).unwrap(), None),
        ]);
        let loaded = store.load(tarball.as_slice()).unwrap();
        assert_eq!(loaded[0].id, id);
        assert_eq!(store.get("old:style").unwrap().record.layers.len(), 2);
    }

    /// A tar stream with raw names (the tar crate refuses to write `..`).
    fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..108].copy_from_slice(b"0000644\0");
            h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
            h[156] = b'0';
            h[257..263].copy_from_slice(b"ustar\0");
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

    #[test]
    fn tampered_hostile_and_malformed_archives_load_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let store = ImageStore::open(&root).unwrap();
        let id = import(&store, &rootfs(&[("f", &[7u8; 4096])]), "t");
        let good = save(&store, &["t"]);
        store.remove("t", false).unwrap();

        // One byte of the layer's file content flipped.
        let mut tampered = good.clone();
        let at = tampered.windows(64).position(|w| w == [7u8; 64]).unwrap();
        tampered[at] = 8;
        let err = store.load(tampered.as_slice()).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");

        // A layer writing ../../etc/passwd.
        let evil_layer = raw_tar(&[("../../etc/passwd", b"pwnd")]);
        let config = config_for(&[&evil_layer]);
        let manifest = json!([{ "Config": "c.json", "RepoTags": ["evil:1"], "Layers": ["l/layer.tar"] }]);
        let evil = archive(&[
            ("c.json", &config, None),
            ("l/layer.tar", &evil_layer, None),
            ("manifest.json", &serde_json::to_vec(&manifest).unwrap(), None),
        ]);
        let err = store.load(evil.as_slice()).unwrap_err();
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
        assert!(!dir.path().join("etc").exists() && !root.join("etc").exists());

        for (bad, want) in [
            (raw_tar(&[("../x", b"x")]), "'..'"),
            (archive(&[("x", b"x", None)]), "neither manifest.json nor index.json"),
            (
                archive(&[("manifest.json", b"[{\"Config\":\"c\",\"Layers\":[]}]", None)]),
                "not in the archive",
            ),
            (
                archive(&[("a/l", b"", Some("../../../etc/passwd")), ("index.json", b"{}", None)]),
                "symlink out of the archive",
            ),
        ] {
            let err = store.load(bad.as_slice()).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        assert_eq!(store.count().unwrap(), 0);
        let snaps: Vec<_> = fs::read_dir(root.join("snapshots")).unwrap().collect();
        assert!(snaps.is_empty(), "staging left behind: {snaps:?}");
        // And the untampered archive still loads.
        assert_eq!(store.load(good.as_slice()).unwrap()[0].id, id);
    }

    #[test]
    fn loads_an_oci_layout_tarball() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let info = berth_testkit::ImageBuilder::new()
            .write_oci_layout(&layout, "example.org/site/busybox:v1")
            .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all(".", &layout).unwrap();
        let tarball = b.into_inner().unwrap();
        let store = ImageStore::open(&dir.path().join("root")).unwrap();
        let loaded = store.load(tarball.as_slice()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, info.config_digest);
        assert_eq!(loaded[0].tags, ["example.org/site/busybox:v1"]);
        let image = store.get("example.org/site/busybox:v1").unwrap();
        assert_eq!(image.record.manifest.as_ref(), Some(&info.manifest_digest));
        assert_eq!(image.record.layers.len(), info.layers.len());
    }

    #[test]
    fn zstd_layers_load_and_save_uncompressed() {
        let layer = rootfs(&[("z.txt", b"zstd layer")]);
        let zst = zstd::encode_all(layer.as_slice(), 3).unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": { "type": "layers", "diff_ids": [Digest::sha256(&layer)] },
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": { "mediaType": media_types::OCI_CONFIG, "digest": Digest::sha256(&config), "size": config.len() },
            "layers": [{ "mediaType": media_types::OCI_LAYER_ZSTD, "digest": Digest::sha256(&zst), "size": zst.len() }],
        }))
        .unwrap();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_types::OCI_MANIFEST, "digest": Digest::sha256(&manifest), "size": manifest.len(),
                "annotations": { CONTAINERD_NAME: "docker.io/library/z:1" },
            }],
        }))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for (name, bytes) in [
            ("oci-layout".to_owned(), OCI_LAYOUT.to_vec()),
            ("index.json".to_owned(), index),
            (blob_path(&Digest::sha256(&config)), config.clone()),
            (blob_path(&Digest::sha256(&manifest)), manifest),
            (blob_path(&Digest::sha256(&zst)), zst.clone()),
        ] {
            let mut h = file_header(bytes.len() as u64);
            b.append_data(&mut h, name, bytes.as_slice()).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let loaded = store.load(b.into_inner().unwrap().as_slice()).unwrap();
        assert_eq!(loaded[0].id, Digest::sha256(&config));
        let image = store.get("z:1").unwrap();
        assert_eq!(image.record.layers[0].media_type, media_types::OCI_LAYER_ZSTD);
        assert_eq!(store.content.read(&image.record.layers[0].digest).unwrap(), zst);

        let files = entries(&save(&store, &["z:1"]));
        assert!(
            files[&blob_path(&Digest::sha256(&layer))] == layer,
            "saved uncompressed"
        );
    }
}
