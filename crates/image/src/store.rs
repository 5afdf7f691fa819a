//! The local image store: images, tags and snapshots under the daemon's data root.
//!
//! ```text
//! <data-root>/
//!   images.redb            image metadata, one transactional file (redb), written only here:
//!                            images     "sha256:<config hex>" -> ImageRecord (JSON)
//!                            tags       "docker.io/library/busybox:latest" -> image id
//!                            snapshots  "<chain id hex>" -> number of images using it
//!   blobs/sha256/…         the content store (see `content.rs`): layers, configs, manifests;
//!                          a blob is deleted when the last image naming it is removed
//!   snapshots/
//!     .tmp-<uuid>/         a layer being unpacked by `extract()`; renamed into place only
//!                          once whole and synced; a crash leaves it, and `open` removes it
//!     .del-<uuid>/         a snapshot being removed (renamed out of place first); `open`
//!                          finishes the removal
//!     <chain id hex>/      one unpacked layer (an overlay lower), shared by every image with
//!                          that layer chain; removed when its refcount in `snapshots` drops to
//!                          zero; a directory with no row (crash between rename and commit) is
//!                          removed by `open`
//! ```
//!
//! Order of every change: blobs and snapshot directories first (durable, not yet referenced),
//! then one redb transaction that makes them part of an image. Removal is the reverse: the
//! transaction first, then the files nobody references any more. So after `kill -9` at any
//! moment the metadata names only whole blobs and snapshots, and `open` sweeps the rest.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_oci::{Algorithm, Digest, Digester, media_types};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::config::{ContainerConfig, History, ImageConfig, RootFs, apply_changes};
use crate::content::{ContentStore, ContentWriter, LocalContent, fsync_dir};
use crate::error::{Error, db, io};
use crate::extract::{ExtractOptions, Whiteouts, extract};
use crate::names::{familiar, normalize};

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
const SNAPSHOTS: TableDefinition<&str, u64> = TableDefinition::new("snapshots");

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// The blob as stored (compressed or not).
    pub digest: Digest,
    pub media_type: String,
    /// Bytes of the blob.
    pub size: u64,
    /// Digest of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream.
    pub diff_size: u64,
}

/// What the store knows about one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest.
    pub id: Digest,
    /// The manifest Berth stored for it.
    pub manifest: Option<Digest>,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    /// Unpacked size: the sum of the layers' uncompressed sizes.
    pub size: u64,
    /// Seconds since the epoch.
    pub created: i64,
}

impl ImageRecord {
    /// Chain IDs of the layers, bottom first (the snapshot keys).
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(self.layers.iter().map(|l| &l.diff_id))
    }

    /// Every blob the image names.
    fn blobs(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.id)
            .chain(self.manifest.iter())
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// An image with the tags that point at it (full names, sorted).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub record: ImageRecord,
    pub tags: Vec<String>,
}

impl Image {
    /// The tags as docker shows them (`busybox:latest`).
    pub fn familiar_tags(&self) -> Vec<String> {
        self.tags.iter().map(|t| familiar(t).to_owned()).collect()
    }
}

/// What a removal did, in the order docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// A tag (familiar form) was removed.
    Untagged(String),
    /// An image (its ID) or a snapshot (its chain ID) was deleted.
    Deleted(Digest),
}

/// What `import` needs besides the tarball.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `repo[:tag]` to tag the image with.
    pub reference: Option<String>,
    /// History comment; docker's default is `Imported from -`.
    pub message: String,
    /// Dockerfile instructions (`CMD ["sh"]`, `ENV A=1`, …).
    pub changes: Vec<String>,
    /// Go's architecture name (amd64, arm64).
    pub architecture: String,
    /// Create device nodes found in the tarball (root importing a root filesystem).
    pub allow_devices: bool,
}

/// The image store rooted at a data root; see the module documentation for the layout.
pub struct ImageStore {
    pub(crate) content: LocalContent,
    db: Database,
    pub(crate) snapshots: PathBuf,
    /// Serialises changes that touch both the files and the metadata (snapshot renames and
    /// refcounts, tags, removals). Reads go straight to redb.
    pub(crate) write: Mutex<()>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("snapshots", &self.snapshots)
            .finish_non_exhaustive()
    }
}

impl ImageStore {
    /// Opens (creating) the store under `root` and sweeps what a crash may have left:
    /// interrupted blob writes, half-unpacked or half-removed snapshots, and snapshot
    /// directories no image references.
    pub fn open(root: &Path) -> Result<ImageStore, Error> {
        let content = LocalContent::open(root)?;
        let snapshots = root.join("snapshots");
        fs::create_dir_all(&snapshots).map_err(io("create directory", &snapshots))?;
        let db_path = root.join("images.redb");
        let database = Database::create(&db_path).map_err(db("open"))?;
        let tx = database.begin_write().map_err(db("begin"))?;
        {
            tx.open_table(IMAGES).map_err(db("open images"))?;
            tx.open_table(TAGS).map_err(db("open tags"))?;
            tx.open_table(SNAPSHOTS).map_err(db("open snapshots"))?;
        }
        tx.commit().map_err(db("commit"))?;
        let store = ImageStore {
            content,
            db: database,
            snapshots,
            write: Mutex::new(()),
        };
        store.sweep_snapshots()?;
        Ok(store)
    }

    /// Removes snapshot directories that are temporary or that no row counts.
    fn sweep_snapshots(&self) -> Result<(), Error> {
        let known: HashSet<String> = {
            let tx = self.db.begin_read().map_err(db("begin"))?;
            let t = tx.open_table(SNAPSHOTS).map_err(db("open snapshots"))?;
            t.iter()
                .map_err(db("read snapshots"))?
                .map(|r| r.map(|(k, _)| k.value().to_owned()))
                .collect::<Result<_, _>>()
                .map_err(db("read snapshots"))?
        };
        for entry in fs::read_dir(&self.snapshots).map_err(io("read", &self.snapshots))? {
            let entry = entry.map_err(io("read", &self.snapshots))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                tracing::info!(snapshot = %name, "removing an unreferenced or partial snapshot");
                remove_tree(&entry.path())?;
            }
        }
        Ok(())
    }

    /// The directory a snapshot is unpacked in.
    pub fn snapshot_path(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots.join(chain_id.hex())
    }

    /// Imports a root filesystem tarball (plain or gzip, told apart by its first bytes) as a
    /// one-layer image: the tarball is stored as the layer blob and unpacked into a snapshot
    /// in one pass. Nothing becomes visible unless all of it succeeds.
    pub fn import<R: Read>(&self, src: R, opts: &ImportOptions) -> Result<Image, Error> {
        // Refuse bad arguments before reading a byte.
        let tag = opts.reference.as_deref().map(normalize).transpose()?;
        let mut container = ContainerConfig::default();
        apply_changes(&mut container, &opts.changes)?;

        let tmp = self.snapshots.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir(&tmp).map_err(io("create directory", &tmp))?;
        let result = self.import_into(src, opts, tag, container, &tmp);
        if tmp.exists() {
            remove_tree(&tmp)?;
        }
        result
    }

    fn import_into<R: Read>(
        &self,
        src: R,
        opts: &ImportOptions,
        tag: Option<String>,
        container: ContainerConfig,
        tmp: &Path,
    ) -> Result<Image, Error> {
        let mut writer = self.content.writer()?;
        let (gzip, diff_id, diff_size) = {
            let mut src = BufReader::with_capacity(1 << 20, src);
            let head = src.fill_buf().map_err(|source| Error::Read { source })?;
            if head.is_empty() {
                return Err(Error::EmptyImport);
            }
            let gzip = head.starts_with(&[0x1f, 0x8b]);
            let tee = Tee {
                inner: src,
                out: &mut writer,
            };
            let tar: Box<dyn Read + '_> = if gzip {
                Box::new(flate2::read::MultiGzDecoder::new(tee))
            } else {
                Box::new(tee)
            };
            let mut tar = Hashing::new(tar);
            let extract_opts = ExtractOptions {
                whiteouts: Whiteouts::Overlay,
                allow_devices: opts.allow_devices,
                ..ExtractOptions::default()
            };
            extract(&mut tar, tmp, &extract_opts)?;
            // The rest of the stream (tar padding, the gzip trailer and its CRC check) counts
            // toward the digests too.
            io::copy(&mut tar, &mut io::sink()).map_err(|source| Error::Read { source })?;
            let (diff_id, diff_size) = tar.finish();
            (gzip, diff_id, diff_size)
        };
        // The snapshot's files reach the disk before the metadata names them.
        let dir = fs::File::open(tmp).map_err(io("open", tmp))?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| io("sync filesystem of", tmp)(e.into()))?;
        drop(dir);
        // From the layer's commit to the record, hold the lock: a removal running meanwhile
        // could otherwise delete a blob this image is about to name (same layer, other image).
        let guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let (layer_digest, layer_size) = writer.commit(None)?;

        let now = time::OffsetDateTime::now_utc();
        let created = now
            .format(&time::format_description::well_known::Rfc3339)
            .expect("now formats as RFC 3339");
        let comment = if opts.message.is_empty() {
            "Imported from -".to_owned()
        } else {
            opts.message.clone()
        };
        let config = ImageConfig {
            created: Some(created.clone()),
            author: None,
            architecture: opts.architecture.clone(),
            os: "linux".to_owned(),
            config: container,
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: vec![diff_id.clone()],
            },
            history: vec![History {
                created: Some(created),
                comment: Some(comment),
                ..History::default()
            }],
        };
        let layer = Layer {
            digest: layer_digest,
            media_type: if gzip {
                media_types::OCI_LAYER_GZIP
            } else {
                media_types::OCI_LAYER_TAR
            }
            .to_owned(),
            size: layer_size,
            diff_id,
            diff_size,
        };
        let config_bytes = serde_json::to_vec(&config).expect("config serialises");
        let (id, config_size) = self.put_blob(&config_bytes)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": { "mediaType": media_types::OCI_CONFIG, "digest": id, "size": config_size },
            "layers": [{ "mediaType": layer.media_type, "digest": layer.digest, "size": layer.size }],
        });
        let (manifest, _) = self.put_blob(&serde_json::to_vec(&manifest).expect("manifest serialises"))?;
        let record = ImageRecord {
            id,
            manifest: Some(manifest),
            config,
            size: layer.diff_size,
            layers: vec![layer],
            created: now.unix_timestamp(),
        };
        let image = self.add_locked(record, &[tmp], tag)?;
        drop(guard);
        Ok(image)
    }

    pub(crate) fn put_blob(&self, bytes: &[u8]) -> Result<(Digest, u64), Error> {
        let mut w = self.content.writer()?;
        w.write_all(bytes).map_err(|source| Error::Io {
            op: "write blob",
            path: PathBuf::from("blobs"),
            source,
        })?;
        w.commit(None)
    }

    /// Moves the unpacked layers into place (or drops them if another image already has that
    /// chain), then records the image, its tag and the snapshot refcounts in one transaction.
    /// The caller holds `self.write`.
    pub(crate) fn add_locked(
        &self,
        record: ImageRecord,
        unpacked: &[&Path],
        tag: Option<String>,
    ) -> Result<Image, Error> {
        let chains = record.chain_ids();
        let tx = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut images = tx.open_table(IMAGES).map_err(db("open images"))?;
            let is_new = images
                .get(record.id.to_string().as_str())
                .map_err(db("read images"))?
                .is_none();
            if is_new {
                let mut snaps = tx.open_table(SNAPSHOTS).map_err(db("open snapshots"))?;
                let mut moved = false;
                for (chain, dir) in chains.iter().zip(unpacked) {
                    let dest = self.snapshot_path(chain);
                    let count = snaps
                        .get(chain.hex())
                        .map_err(db("read snapshots"))?
                        .map_or(0, |v| v.value());
                    if count == 0 {
                        if dest.exists() {
                            remove_tree(&dest)?; // no row: a leftover, never used
                        }
                        fs::rename(dir, &dest).map_err(io("rename", &dest))?;
                        moved = true;
                    }
                    snaps.insert(chain.hex(), count + 1).map_err(db("write snapshots"))?;
                }
                if moved {
                    fsync_dir(&self.snapshots)?;
                }
                let value = serde_json::to_vec(&record).expect("record serialises");
                images
                    .insert(record.id.to_string().as_str(), value.as_slice())
                    .map_err(db("write images"))?;
            }
            if let Some(tag) = &tag {
                let mut tags = tx.open_table(TAGS).map_err(db("open tags"))?;
                tags.insert(tag.as_str(), record.id.to_string().as_str())
                    .map_err(db("write tags"))?;
            }
        }
        tx.commit().map_err(db("commit"))?;
        tracing::info!(image = %record.id, tag = tag.as_deref().unwrap_or(""), "image stored");
        let tags = self.tags_of(&record.id)?;
        Ok(Image { record, tags })
    }

    /// Every image with its tags.
    pub fn images(&self) -> Result<Vec<Image>, Error> {
        let tx = self.db.begin_read().map_err(db("begin"))?;
        let images = tx.open_table(IMAGES).map_err(db("open images"))?;
        let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in tx
            .open_table(TAGS)
            .map_err(db("open tags"))?
            .iter()
            .map_err(db("read tags"))?
        {
            let (k, v) = row.map_err(db("read tags"))?;
            tags.entry(v.value().to_owned()).or_default().push(k.value().to_owned());
        }
        let mut out = Vec::new();
        for row in images.iter().map_err(db("read images"))? {
            let (k, v) = row.map_err(db("read images"))?;
            let record = decode(k.value(), v.value())?;
            let tags = tags.remove(k.value()).unwrap_or_default();
            out.push(Image { record, tags });
        }
        Ok(out)
    }

    /// How many images there are.
    pub fn count(&self) -> Result<u64, Error> {
        let tx = self.db.begin_read().map_err(db("begin"))?;
        let t = tx.open_table(IMAGES).map_err(db("open images"))?;
        t.len().map_err(db("count images"))
    }

    fn tags_of(&self, id: &Digest) -> Result<Vec<String>, Error> {
        let id = id.to_string();
        let tx = self.db.begin_read().map_err(db("begin"))?;
        let t = tx.open_table(TAGS).map_err(db("open tags"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db("read tags"))? {
            let (k, v) = row.map_err(db("read tags"))?;
            if v.value() == id {
                out.push(k.value().to_owned());
            }
        }
        Ok(out)
    }

    /// Finds an image as docker does: a full ID (`sha256:` optional), a tag (`busybox` is
    /// `docker.io/library/busybox:latest`), or an ID prefix of at least 12 hex digits.
    pub fn get(&self, name: &str) -> Result<Image, Error> {
        self.lookup(name).map(|(image, _)| image)
    }

    /// Like [`get`](Self::get), and also says which tag (full name) the name matched.
    fn lookup(&self, name: &str) -> Result<(Image, Option<String>), Error> {
        let not_found = || Error::ImageNotFound {
            reference: name.to_owned(),
        };
        let tx = self.db.begin_read().map_err(db("begin"))?;
        let images = tx.open_table(IMAGES).map_err(db("open images"))?;
        let hex = name.strip_prefix("sha256:");
        let by_id = |id: &str| -> Result<Option<ImageRecord>, Error> {
            match images.get(id).map_err(db("read images"))? {
                Some(v) => Ok(Some(decode(id, v.value())?)),
                None => Ok(None),
            }
        };
        let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        // A full ID.
        if let Some(full) = hex.or(Some(name)).filter(|h| h.len() == 64 && is_hex(h)) {
            if let Some(record) = by_id(&format!("sha256:{full}"))? {
                let tags = self.tags_of(&record.id)?;
                return Ok((Image { record, tags }, None));
            }
        }
        // A tag.
        if hex.is_none() {
            match normalize(name) {
                Ok(full) => {
                    let tags = tx.open_table(TAGS).map_err(db("open tags"))?;
                    if let Some(id) = tags.get(full.as_str()).map_err(db("read tags"))? {
                        let id = id.value().to_owned();
                        let record = by_id(&id)?.ok_or_else(not_found)?;
                        let tags = self.tags_of(&record.id)?;
                        return Ok((Image { record, tags }, Some(full)));
                    }
                }
                Err(e) if !is_hex(name) => return Err(e),
                Err(_) => {}
            }
        }
        // An ID prefix.
        let prefix = hex.unwrap_or(name);
        if prefix.len() >= 12 && prefix.len() <= 64 && is_hex(prefix) {
            let start = format!("sha256:{prefix}");
            let mut found = None;
            for row in images.range(start.as_str()..).map_err(db("read images"))? {
                let (k, v) = row.map_err(db("read images"))?;
                if !k.value().starts_with(&start) {
                    break;
                }
                if found.is_some() {
                    return Err(Error::AmbiguousId {
                        prefix: prefix.to_owned(),
                    });
                }
                found = Some(decode(k.value(), v.value())?);
            }
            if let Some(record) = found {
                let tags = self.tags_of(&record.id)?;
                return Ok((Image { record, tags }, None));
            }
        }
        Err(not_found())
    }

    /// Points `target` (`repo[:tag]`) at the image `source` names.
    pub fn tag(&self, source: &str, target: &str) -> Result<Image, Error> {
        let full = normalize(target)?;
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let image = self.get(source)?;
        let tx = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut tags = tx.open_table(TAGS).map_err(db("open tags"))?;
            tags.insert(full.as_str(), image.record.id.to_string().as_str())
                .map_err(db("write tags"))?;
        }
        tx.commit().map_err(db("commit"))?;
        drop(_guard);
        tracing::info!(image = %image.record.id, tag = %full, "image tagged");
        self.get(&image.record.id.to_string())
    }

    /// Removes a tag, or an image, as `docker rmi` does: a tag is untagged and the image goes
    /// with its last tag; an ID removes the image with its only tag, or with all its tags
    /// when `force` (several tags without `force` is a conflict).
    pub fn remove(&self, name: &str, force: bool) -> Result<Vec<Removed>, Error> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let (image, matched) = self.lookup(name)?;
        let untag: Vec<String> = match &matched {
            Some(tag) => vec![tag.clone()],
            None if image.tags.len() > 1 && !force => {
                return Err(Error::ReferencedByTags {
                    short_id: image.record.id.hex()[..12].to_owned(),
                });
            }
            None => image.tags.clone(),
        };
        let delete = untag.len() == image.tags.len();
        self.remove_locked(&image, &untag, delete)
    }

    /// Removes images without tags (`dangling_only`) or every image; returns what was
    /// deleted and the bytes reclaimed.
    pub fn prune(&self, dangling_only: bool) -> Result<(Vec<Removed>, u64), Error> {
        self.prune_except(dangling_only, &HashSet::new())
    }

    /// [`prune`](Self::prune), keeping the images whose IDs (`sha256:…`) are in `keep`
    /// (those containers use).
    pub fn prune_except(&self, dangling_only: bool, keep: &HashSet<String>) -> Result<(Vec<Removed>, u64), Error> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut reclaimed = 0;
        for image in self.images()? {
            if dangling_only && !image.tags.is_empty() || keep.contains(&image.record.id.to_string()) {
                continue;
            }
            reclaimed += image.record.size;
            out.extend(self.remove_locked(&image, &image.tags, true)?);
        }
        Ok((out, reclaimed))
    }

    /// One transaction removes the tags (and the image, its snapshot refcounts); then the
    /// snapshot directories and blobs nothing else needs are deleted.
    fn remove_locked(&self, image: &Image, untag: &[String], delete: bool) -> Result<Vec<Removed>, Error> {
        let mut out: Vec<Removed> = untag
            .iter()
            .map(|t| Removed::Untagged(familiar(t).to_owned()))
            .collect();
        let mut gone_snapshots = Vec::new();
        let tx = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut tags = tx.open_table(TAGS).map_err(db("open tags"))?;
            for t in untag {
                tags.remove(t.as_str()).map_err(db("write tags"))?;
            }
            if delete {
                let mut images = tx.open_table(IMAGES).map_err(db("open images"))?;
                images
                    .remove(image.record.id.to_string().as_str())
                    .map_err(db("write images"))?;
                let mut snaps = tx.open_table(SNAPSHOTS).map_err(db("open snapshots"))?;
                for chain in image.record.chain_ids() {
                    let count = snaps
                        .get(chain.hex())
                        .map_err(db("read snapshots"))?
                        .map_or(0, |v| v.value());
                    if count <= 1 {
                        snaps.remove(chain.hex()).map_err(db("write snapshots"))?;
                        gone_snapshots.push(chain);
                    } else {
                        snaps.insert(chain.hex(), count - 1).map_err(db("write snapshots"))?;
                    }
                }
            }
        }
        tx.commit().map_err(db("commit"))?;
        if !delete {
            return Ok(out);
        }
        tracing::info!(image = %image.record.id, "image deleted");
        out.push(Removed::Deleted(image.record.id.clone()));
        // The metadata no longer names these; a failure here leaves only what `open` sweeps.
        let mut failures = Vec::new();
        for chain in gone_snapshots.iter().rev() {
            if let Err(e) = self.remove_snapshot(chain) {
                tracing::warn!(snapshot = %chain, error = %e, "failed to remove snapshot; it is removed at the next start");
                failures.push(e);
            }
            out.push(Removed::Deleted(chain.clone()));
        }
        let still_used: HashSet<Digest> = self
            .images()?
            .iter()
            .flat_map(|i| i.record.blobs().cloned().collect::<Vec<_>>())
            .collect();
        let unused: BTreeSet<&Digest> = image.record.blobs().filter(|d| !still_used.contains(*d)).collect();
        for blob in unused {
            if let Err(e) = self.content.delete(blob) {
                tracing::warn!(blob = %blob, error = %e, "failed to delete blob");
            }
        }
        Ok(out)
    }

    /// Renames the snapshot out of place (so it is never seen half-removed), then deletes it.
    fn remove_snapshot(&self, chain: &Digest) -> Result<(), Error> {
        let dir = self.snapshot_path(chain);
        if !dir.exists() {
            return Ok(());
        }
        let doomed = self.snapshots.join(format!(".del-{}", uuid::Uuid::new_v4().simple()));
        fs::rename(&dir, &doomed).map_err(io("rename", &dir))?;
        remove_tree(&doomed)
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<ImageRecord, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::CorruptRecord {
        id: id.to_owned(),
        source,
    })
}

/// Chain IDs as the OCI image spec defines them: `chain(1) = diff(1)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => Digest::sha256(format!("{prev} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Removes a directory tree that may hold read-only directories (a layer's own modes).
pub(crate) fn remove_tree(path: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path);
            fs::remove_dir_all(path).map_err(io("remove", path))
        }
        Err(e) => Err(io("remove", path)(e)),
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = fs::symlink_metadata(path)
        && m.is_dir()
    {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// Copies every byte read from `inner` into `out` (the layer blob). Also used by `archive`.
pub(crate) struct Tee<'a, R, W> {
    pub(crate) inner: R,
    pub(crate) out: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Hashes and counts what passes through (the diff ID of the uncompressed stream).
pub(crate) struct Hashing<R> {
    inner: R,
    digester: Digester,
    size: u64,
}

impl<R: Read> Hashing<R> {
    pub(crate) fn new(inner: R) -> Self {
        Hashing {
            inner,
            digester: Digester::new(Algorithm::Sha256),
            size: 0,
        }
    }

    pub(crate) fn finish(self) -> (Digest, u64) {
        (self.digester.finish(), self.size)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::{EntryType, Header};

    fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(EntryType::Regular);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn opts(reference: &str) -> ImportOptions {
        ImportOptions {
            reference: Some(reference.to_owned()),
            message: "msg".to_owned(),
            changes: vec![r#"CMD ["sh"]"#.to_owned()],
            architecture: "amd64".to_owned(),
            allow_devices: false,
        }
    }

    /// Every file and directory below `dir`, relative, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    fn files_under(dir: &Path) -> Vec<String> {
        tree(dir).into_iter().filter(|p| dir.join(p).is_file()).collect()
    }

    #[test]
    fn import_plain_and_gzip_then_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let tar = tarball(&[("bin/hello", b"hi"), ("etc/motd", b"welcome")]);
        let a = store.import(tar.as_slice(), &opts("busybox")).unwrap();
        assert_eq!(a.tags, ["docker.io/library/busybox:latest"]);
        assert_eq!(a.record.layers[0].media_type, media_types::OCI_LAYER_TAR);
        assert_eq!(a.record.layers[0].diff_id, Digest::sha256(&tar));
        assert_eq!(a.record.config.config.cmd, Some(vec!["sh".to_owned()]));
        assert_eq!(a.record.config.history[0].comment.as_deref(), Some("msg"));
        let snap = store.snapshot_path(&a.record.chain_ids()[0]);
        assert_eq!(fs::read(snap.join("etc/motd")).unwrap(), b"welcome");

        let b = store.import(gzip(&tar).as_slice(), &opts("sl6/wn:v1")).unwrap();
        assert_eq!(b.record.layers[0].media_type, media_types::OCI_LAYER_GZIP);
        assert_eq!(b.record.layers[0].diff_id, a.record.layers[0].diff_id);
        assert_ne!(b.record.layers[0].digest, a.record.layers[0].digest);
        // Blobs are verified on the way in: what is stored hashes to its name.
        for l in [&a.record.layers[0], &b.record.layers[0]] {
            assert_eq!(Digest::sha256(&store.content.read(&l.digest).unwrap()), l.digest);
        }

        let id = a.record.id.to_string();
        for name in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            id.as_str(),
            &id[7..],
            &id[7..19],
            &id[..19],
        ] {
            assert_eq!(store.get(name).unwrap().record.id, a.record.id, "{name}");
        }
        for missing in ["busybox:other", "nothing", &id[7..18], "sha256:0000000000000000"] {
            assert!(
                matches!(store.get(missing), Err(Error::ImageNotFound { .. })),
                "{missing}"
            );
        }
        assert_eq!(store.count().unwrap(), 2);
    }

    #[test]
    fn snapshots_are_refcounted_and_blobs_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let tar = tarball(&[("a", b"1")]);
        let a = store.import(tar.as_slice(), &opts("a")).unwrap();
        let b = store.import(tar.as_slice(), &opts("b")).unwrap();
        assert_ne!(a.record.id, b.record.id, "created differs");
        let chain = a.record.chain_ids()[0].clone();
        assert_eq!(b.record.chain_ids(), std::slice::from_ref(&chain));
        let snap = store.snapshot_path(&chain);

        store.tag("a", "a:two").unwrap();
        // By ID with two tags: refused without force.
        let err = store.remove(&a.record.id.to_string(), false).unwrap_err();
        assert!(matches!(err, Error::ReferencedByTags { .. }), "{err}");
        assert_eq!(
            store.remove("a:two", false).unwrap(),
            [Removed::Untagged("a:two".into())]
        );
        assert_eq!(
            store.remove("a", false).unwrap(),
            [
                Removed::Untagged("a:latest".into()),
                Removed::Deleted(a.record.id.clone())
            ]
        );
        assert!(snap.is_dir(), "b still needs the snapshot");
        // The shared layer blob stays; a's own config goes.
        assert!(store.content.contains(&a.record.layers[0].digest));
        assert!(!store.content.contains(&a.record.id));

        let removed = store.remove(&b.record.id.to_string()[..19], false).unwrap();
        assert_eq!(
            removed,
            [
                Removed::Untagged("b:latest".into()),
                Removed::Deleted(b.record.id.clone()),
                Removed::Deleted(chain)
            ]
        );
        assert!(!snap.exists());
        assert_eq!(tree(&dir.path().join("snapshots")), Vec::<String>::new());
        assert_eq!(files_under(&dir.path().join("blobs")), Vec::<String>::new());
        assert_eq!(store.count().unwrap(), 0);
    }

    #[test]
    fn retag_leaves_a_dangling_image_for_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let a = store.import(tarball(&[("a", b"1")]).as_slice(), &opts("x")).unwrap();
        let b = store.import(tarball(&[("b", b"2")]).as_slice(), &opts("x")).unwrap();
        let images = store.images().unwrap();
        let dangling: Vec<_> = images.iter().filter(|i| i.tags.is_empty()).collect();
        assert_eq!(dangling.len(), 1);
        assert_eq!(dangling[0].record.id, a.record.id);
        let (removed, reclaimed) = store.prune(true).unwrap();
        assert_eq!(removed.first(), Some(&Removed::Deleted(a.record.id.clone())));
        assert!(reclaimed > 0);
        assert_eq!(store.images().unwrap().len(), 1);
        assert_eq!(store.get("x").unwrap().record.id, b.record.id);
    }

    #[test]
    fn hostile_or_truncated_imports_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let store = ImageStore::open(&root).unwrap();
        let before = tree(&root);
        let evil = tarball(&[("ok", b"fine"), ("../../etc/passwd", b"root::0:0::/:/bin/sh")]);
        let err = store.import(evil.as_slice(), &opts("evil")).unwrap_err();
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
        assert!(err.to_string().contains("'..'"), "{err}");
        assert!(!dir.path().join("etc").exists() && !root.join("etc").exists());

        let good = gzip(&tarball(&[("big", &[9u8; 200_000])]));
        let err = store.import(&good[..good.len() / 2], &opts("truncated")).unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err}");

        let err = store.import(&b""[..], &opts("empty")).unwrap_err();
        assert!(matches!(err, Error::EmptyImport), "{err}");
        let err = store.import(&b"x"[..], &opts("UPPER")).unwrap_err();
        assert!(matches!(err, Error::InvalidReference { .. }), "{err}");
        let mut bad_change = opts("x");
        bad_change.changes = vec!["RUN true".into()];
        assert!(matches!(
            store.import(&b"x"[..], &bad_change),
            Err(Error::InvalidChange { .. })
        ));

        assert_eq!(tree(&root), before, "nothing left behind");
        assert_eq!(store.count().unwrap(), 0);
    }

    #[test]
    fn reopen_after_a_crash_sweeps_partial_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let a = store.import(tarball(&[("a", b"1")]).as_slice(), &opts("a")).unwrap();
        drop(store);
        let snaps = dir.path().join("snapshots");
        // A crash mid-unpack, mid-removal, and between the rename and the commit.
        fs::create_dir_all(snaps.join(".tmp-0123/usr/bin")).unwrap();
        fs::write(snaps.join(".tmp-0123/usr/bin/half"), b"x").unwrap();
        fs::create_dir_all(snaps.join(".del-4567/x")).unwrap();
        let orphan = Digest::sha256(b"orphan");
        fs::create_dir_all(snaps.join(orphan.hex())).unwrap();
        fs::write(dir.path().join("blobs/sha256/.ingest-89ab"), b"partial").unwrap();

        let store = ImageStore::open(dir.path()).unwrap();
        let chain = a.record.chain_ids()[0].hex().to_owned();
        let left: Vec<String> = fs::read_dir(&snaps)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [chain]);
        assert!(!dir.path().join("blobs/sha256/.ingest-89ab").exists());
        assert_eq!(store.get("a").unwrap().record, a.record);
        // And it keeps working.
        store.remove("a", false).unwrap();
        assert_eq!(store.count().unwrap(), 0);
    }
}
