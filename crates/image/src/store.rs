//! The local image store: images, tags and snapshots under the daemon's data root.
//!
//! ```text
//! <data-root>/
//!   images.redb            image metadata, one transactional file (redb), written only here:
//!                            images     "sha256:<config hex>" -> ImageRecord (JSON)
//!                            tags       "docker.io/library/busybox:latest" -> image id, and
//!                                       "docker.io/library/busybox@sha256:…" -> image id
//!                                       (digest references, recorded by pulls)
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
//!     <chain id hex>.recipe  for an imported or committed layer: how to rebuild its exact tar
//!                          stream from the snapshot (see `recipe.rs`); no copy of the tarball
//!                          is kept
//! ```
//!
//! Order of every change: blobs and snapshot directories first (durable, not yet referenced),
//! then one redb transaction that makes them part of an image. Removal is the reverse: the
//! transaction first, then the files nobody references any more. So after `kill -9` at any
//! moment the metadata names only whole blobs and snapshots, and `open` sweeps the rest.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_oci::{Algorithm, Digest, Digester, media_types};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::config::{ContainerConfig, History, ImageConfig, RootFs, apply_changes};
use crate::content::{ContentStore, ContentWriter, LocalContent, fsync_dir};
use crate::error::{Error, db, io};
use crate::extract::{ExtractOptions, Whiteouts, extract_recorded};
use crate::names::{familiar, is_digest_reference, normalize, normalize_reference, repository_of};
use crate::recipe::Recipe;

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

/// An image with the references that point at it (full names, sorted): tags
/// (`registry/repo:tag`) and digest references (`registry/repo@sha256:…`, recorded by a pull).
/// An image with neither is dangling.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub record: ImageRecord,
    pub tags: Vec<String>,
}

impl Image {
    /// The tags as docker shows them (`busybox:latest`): docker's `RepoTags`.
    pub fn familiar_tags(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter(|t| !is_digest_reference(t))
            .map(|t| familiar(t).to_owned())
            .collect()
    }

    /// The digest references as docker shows them (`busybox@sha256:…`): docker's `RepoDigests`.
    pub fn repo_digests(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter(|t| is_digest_reference(t))
            .map(|t| familiar(t).to_owned())
            .collect()
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
            if !known.contains(name.strip_suffix(".recipe").unwrap_or(&name)) {
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

    /// The recipe that rebuilds the top layer of a snapshot, when it was imported.
    pub(crate) fn recipe_path(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots.join(format!("{}.recipe", chain_id.hex()))
    }

    /// Makes sure every layer blob of `image` is in the content store: an imported layer is
    /// kept only as its snapshot and recipe, and is rebuilt here (verified against its diff
    /// ID) the first time a push or save needs it.
    pub fn ensure_layer_blobs(&self, image: &ImageRecord) -> Result<(), Error> {
        for (layer, chain) in image.layers.iter().zip(image.chain_ids()) {
            if self.content.contains(&layer.digest) {
                continue;
            }
            let recipe_path = self.recipe_path(&chain);
            if layer.digest != layer.diff_id || !recipe_path.exists() {
                return Err(Error::BlobNotFound {
                    digest: layer.digest.clone(),
                });
            }
            let mut src = Recipe::open(&recipe_path)?.reader(self.snapshot_path(&chain));
            let mut w = self.content.writer()?;
            io::copy(&mut src, &mut w).map_err(|source| Error::Io {
                op: "rebuild layer from snapshot",
                path: self.snapshot_path(&chain),
                source,
            })?;
            w.commit(Some(&layer.digest))?;
            tracing::info!(layer = %layer.digest, "layer blob rebuilt from its snapshot");
        }
        Ok(())
    }

    /// Imports a root filesystem tarball (plain or gzip, told apart by its first bytes) as a
    /// one-layer image: the tarball is stored as the layer blob and unpacked into a snapshot
    /// in one pass. Nothing becomes visible unless all of it succeeds.
    pub fn import<R: BufRead>(&self, src: R, opts: &ImportOptions) -> Result<Image, Error> {
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
        let _ = fs::remove_file(tmp.with_extension("recipe"));
        result
    }

    fn import_into<R: BufRead>(
        &self,
        src: R,
        opts: &ImportOptions,
        tag: Option<String>,
        container: ContainerConfig,
        tmp: &Path,
    ) -> Result<Image, Error> {
        // No copy of the tarball is kept: the snapshot and a recipe of the stream's other
        // bytes rebuild it exactly when a push or save needs it (see `recipe`).
        let (head, src) = sniff(src, 2).map_err(|source| Error::Read { source })?;
        if head.is_empty() {
            return Err(Error::EmptyImport);
        }
        // The decoder reads the arriving chunks in place.
        let tar: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(src))
        } else {
            Box::new(src)
        };
        let (diff_id, diff_size) = self.unpack_layer(tar, tmp, opts.allow_devices)?;
        let recipe_tmp = tmp.with_extension("recipe");
        // From here to the record, hold the lock: a removal running meanwhile could otherwise
        // delete the snapshot this image is about to share.
        let guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let recipe_path = self.recipe_path(&diff_id); // a base layer: its chain ID is its diff ID
        if recipe_path.exists() {
            let _ = fs::remove_file(&recipe_tmp);
        } else {
            fs::rename(&recipe_tmp, &recipe_path).map_err(io("rename", &recipe_path))?;
            fsync_dir(&self.snapshots)?;
        }
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
            container: None,
        };
        let layer = Layer {
            digest: diff_id.clone(),
            media_type: media_types::OCI_LAYER_TAR.to_owned(),
            size: diff_size,
            diff_id,
            diff_size,
        };
        let (id, manifest) = self.put_config_and_manifest(&config, std::slice::from_ref(&layer))?;
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

    /// Unpacks the uncompressed layer `tar` into the snapshot directory `tmp` (overlay
    /// whiteouts), records its recipe next to it (`tmp.recipe`) and syncs both to the disk.
    /// Returns the diff ID and size of the stream.
    pub(crate) fn unpack_layer<R: Read>(
        &self,
        tar: R,
        tmp: &Path,
        allow_devices: bool,
    ) -> Result<(Digest, u64), Error> {
        let started = std::time::Instant::now();
        let mut tar = HashingAhead::new(tar).map_err(|source| Error::Read { source })?;
        let extract_opts = ExtractOptions {
            whiteouts: Whiteouts::Overlay,
            allow_devices,
            ..ExtractOptions::default()
        };
        // Reads to the end: tar padding, the gzip trailer and its CRC check count too.
        let (_, recipe) = extract_recorded(&mut tar, tmp, &extract_opts)?;
        let (diff_id, diff_size) = tar.finish();
        recipe.save(&tmp.with_extension("recipe"))?;
        // The snapshot's files reach the disk before the metadata names them.
        let dir = fs::File::open(tmp).map_err(io("open", tmp))?;
        let unpacked = started.elapsed();
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| io("sync filesystem of", tmp)(e.into()))?;
        drop(dir);
        tracing::debug!(
            bytes = diff_size,
            unpack_ms = unpacked.as_millis() as u64,
            sync_ms = (started.elapsed() - unpacked).as_millis() as u64,
            "layer unpacked and synced"
        );
        Ok((diff_id, diff_size))
    }

    /// Stores an image's config and the OCI manifest naming it and `layers`; returns the
    /// config's digest (the image ID) and the manifest's.
    pub(crate) fn put_config_and_manifest(
        &self,
        config: &ImageConfig,
        layers: &[Layer],
    ) -> Result<(Digest, Digest), Error> {
        let config_bytes = serde_json::to_vec(config).expect("config serialises");
        let (id, config_size) = self.put_blob(&config_bytes)?;
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| serde_json::json!({ "mediaType": l.media_type, "digest": l.digest, "size": l.size }))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": { "mediaType": media_types::OCI_CONFIG, "digest": id, "size": config_size },
            "layers": layers,
        });
        let (manifest, _) = self.put_blob(&serde_json::to_vec(&manifest).expect("manifest serialises"))?;
        Ok((id, manifest))
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
                release_moved_tag(&mut tags, tag, &record.id)?;
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
        // A tag or a digest reference.
        if hex.is_none() {
            match normalize_reference(name) {
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
            release_moved_tag(&mut tags, &full, &image.record.id)?;
            tags.insert(full.as_str(), image.record.id.to_string().as_str())
                .map_err(db("write tags"))?;
        }
        tx.commit().map_err(db("commit"))?;
        drop(_guard);
        tracing::info!(image = %image.record.id, tag = %full, "image tagged");
        self.get(&image.record.id.to_string())
    }

    /// Removes a reference, or an image, as `docker rmi` does (moby's `ImageDelete`): a
    /// reference is removed, and with a tag go the digest references of its repository when
    /// no other tag of that repository is left; the image goes with its last reference. An ID
    /// removes the image with all its references when they are one tag (and digests) of one
    /// repository, or when `force`; otherwise that is a conflict.
    pub fn remove(&self, name: &str, force: bool) -> Result<Vec<Removed>, Error> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let (image, matched) = self.lookup(name)?;
        let untag: Vec<String> = match &matched {
            Some(r) if is_digest_reference(r) => vec![r.clone()],
            Some(tag) => {
                let repo = repository_of(tag);
                let other_tag = image
                    .tags
                    .iter()
                    .any(|t| t != tag && !is_digest_reference(t) && repository_of(t) == repo);
                let digests = image
                    .tags
                    .iter()
                    .filter(|t| !other_tag && is_digest_reference(t) && repository_of(t) == repo);
                std::iter::once(tag).chain(digests).cloned().collect()
            }
            None if !force && image.tags.len() > 1 && !single_reference(&image.tags) => {
                return Err(Error::ReferencedByTags {
                    short_id: image.record.id.hex()[..12].to_owned(),
                });
            }
            None => image.tags.clone(),
        };
        let delete = untag.len() == image.tags.len();
        self.remove_locked(&image, &untag, delete)
    }

    /// Points more references (full names, tags or digest references) at an existing image,
    /// in one transaction; those already there are left as they are.
    pub(crate) fn add_references(&self, id: &Digest, references: &[String]) -> Result<Image, Error> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_write().map_err(db("begin"))?;
        {
            let images = tx.open_table(IMAGES).map_err(db("open images"))?;
            if images
                .get(id.to_string().as_str())
                .map_err(db("read images"))?
                .is_none()
            {
                return Err(Error::ImageNotFound {
                    reference: id.to_string(),
                });
            }
            let mut tags = tx.open_table(TAGS).map_err(db("open tags"))?;
            for r in references {
                tags.insert(r.as_str(), id.to_string().as_str())
                    .map_err(db("write tags"))?;
            }
        }
        tx.commit().map_err(db("commit"))?;
        self.get(&id.to_string())
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
        let recipe = self.recipe_path(chain);
        if let Err(e) = fs::remove_file(&recipe)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io("remove", &recipe)(e));
        }
        let dir = self.snapshot_path(chain);
        if !dir.exists() {
            return Ok(());
        }
        let doomed = self.snapshots.join(format!(".del-{}", uuid::Uuid::new_v4().simple()));
        fs::rename(&dir, &doomed).map_err(io("rename", &dir))?;
        remove_tree(&doomed)
    }
}

/// Before `tag` is pointed at `new_id`: if it points at another image that then has no other
/// tag of that repository, that image's digest references of the repository go too, as
/// `docker rmi` of the tag would remove them. So an image a re-pull replaced under its tag
/// becomes dangling (and prunable), as in dockerd, instead of being kept by the digest
/// reference its own pull recorded.
fn release_moved_tag(
    tags: &mut redb::Table<&'static str, &'static str>,
    tag: &str,
    new_id: &Digest,
) -> Result<(), Error> {
    if is_digest_reference(tag) {
        return Ok(());
    }
    let new_id = new_id.to_string();
    let Some(old_id) = tags.get(tag).map_err(db("read tags"))?.map(|v| v.value().to_owned()) else {
        return Ok(());
    };
    if old_id == new_id {
        return Ok(());
    }
    let repo = repository_of(tag);
    let mut digests = Vec::new();
    for row in tags.iter().map_err(db("read tags"))? {
        let (k, v) = row.map_err(db("read tags"))?;
        let (name, id) = (k.value(), v.value());
        if id != old_id || repository_of(name) != repo || name == tag {
            continue;
        }
        if !is_digest_reference(name) {
            return Ok(()); // another tag of the repository keeps them
        }
        digests.push(name.to_owned());
    }
    for d in digests {
        tags.remove(d.as_str()).map_err(db("write tags"))?;
    }
    Ok(())
}

/// moby's `isSingleReference`: the references are of one repository with at most one tag
/// among them (a tag and its digests, or digests only). False for none.
fn single_reference(references: &[String]) -> bool {
    let Some(first) = references.first() else {
        return false;
    };
    let repo = repository_of(first);
    references.iter().all(|r| repository_of(r) == repo)
        && references.iter().filter(|r| !is_digest_reference(r)).count() <= 1
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

/// Copies every byte read from `inner` into `out` (the layer blob), as a buffered reader:
/// a decoder above reads `inner`'s own buffer, and the bytes it consumes are written.
/// A failed write is returned by the next read.
pub(crate) struct Tee<'a, R, W> {
    inner: R,
    out: &'a mut W,
    failed: Option<io::Error>,
}

impl<'a, R: BufRead, W: Write> Tee<'a, R, W> {
    pub(crate) fn new(inner: R, out: &'a mut W) -> Self {
        Tee {
            inner,
            out,
            failed: None,
        }
    }
}

impl<R: BufRead, W: Write> BufRead for Tee<'_, R, W> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if amt == 0 {
            return;
        }
        let written = match self.inner.fill_buf() {
            Ok(buf) => self.out.write_all(&buf[..amt.min(buf.len())]),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.failed = Some(e);
        }
        self.inner.consume(amt);
    }
}

impl<R: BufRead, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        Ok(n)
    }
}

/// A reader given back by [`sniff`]: the bytes it read, then the rest.
pub(crate) type Sniffed<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads the first `n` bytes of `src` (fewer at its end) to tell formats apart, and gives
/// back a reader that still starts with them.
pub(crate) fn sniff<R: BufRead>(mut src: R, n: usize) -> io::Result<(Vec<u8>, Sniffed<R>)> {
    let mut head = Vec::with_capacity(n);
    while head.len() < n {
        let buf = src.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let k = buf.len().min(n - head.len());
        head.extend_from_slice(&buf[..k]);
        src.consume(k);
    }
    Ok((head.clone(), io::Cursor::new(head).chain(src)))
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

/// [`Hashing`] with the hashing on a thread of its own, so it overlaps the writes of the
/// thread that reads (an import's one stream is otherwise hashed and unpacked in turn).
/// Costs one copy of every byte.
pub(crate) struct HashingAhead<R> {
    inner: R,
    pending: Vec<u8>,
    size: u64,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Buffers the hashing thread is done with, to fill again.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    worker: Option<std::thread::JoinHandle<Digest>>,
}

/// Bytes handed to the hashing thread at a time.
const HASH_BATCH: usize = 1 << 20;

impl<R: Read> HashingAhead<R> {
    pub(crate) fn new(inner: R) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (spare_tx, spare) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("berth-hash".to_owned())
            .spawn(move || {
                let mut digester = Digester::new(Algorithm::Sha256);
                for mut buf in rx {
                    digester.update(&buf);
                    buf.clear();
                    let _ = spare_tx.send(buf);
                }
                digester.finish()
            })?;
        Ok(HashingAhead {
            inner,
            pending: Vec::with_capacity(2 * HASH_BATCH),
            size: 0,
            tx: Some(tx),
            spare,
            worker: Some(worker),
        })
    }

    fn ship(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(2 * HASH_BATCH));
        let full = std::mem::replace(&mut self.pending, next);
        if let Some(tx) = &self.tx {
            let _ = tx.send(full);
        }
    }

    pub(crate) fn finish(mut self) -> (Digest, u64) {
        self.ship();
        drop(self.tx.take());
        let worker = self.worker.take().expect("finished once");
        (worker.join().expect("hashing does not panic"), self.size)
    }
}

impl<R: Read> Read for HashingAhead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        self.size += n as u64;
        if self.pending.len() >= HASH_BATCH {
            self.ship();
        }
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

        // A gzip import is stored the same way: the layer is the uncompressed stream.
        let b = store.import(gzip(&tar).as_slice(), &opts("sl6/wn:v1")).unwrap();
        assert_eq!(b.record.layers[0], a.record.layers[0]);
        // No copy of the tarball is kept; the first save or push rebuilds it exactly.
        let layer = &a.record.layers[0];
        assert_eq!(layer.digest, layer.diff_id);
        assert!(!store.content.contains(&layer.digest));
        store.ensure_layer_blobs(&b.record).unwrap();
        assert_eq!(store.content.read(&layer.digest).unwrap(), tar);

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
        store.ensure_layer_blobs(&a.record).unwrap();
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
        // The shared layer (rebuilt for a save) stays; a's own config goes.
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
    fn digest_references_keep_an_image_and_go_with_its_tag() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let a = store.import(tarball(&[("a", b"1")]).as_slice(), &opts("a")).unwrap();
        let id = a.record.id.clone();
        let d = Digest::sha256(b"manifest");
        let digest_ref = format!("docker.io/library/a@{d}");
        let image = store.add_references(&id, std::slice::from_ref(&digest_ref)).unwrap();
        assert_eq!(image.familiar_tags(), ["a:latest"]);
        assert_eq!(image.repo_digests(), [format!("a@{d}")]);
        assert_eq!(store.get(&format!("a@{d}")).unwrap().record.id, id);
        // One tag and its digest: an ID removes both without force.
        let removed = store.remove(&id.to_string(), false).unwrap();
        assert_eq!(
            removed[..3],
            [
                Removed::Untagged("a:latest".into()),
                Removed::Untagged(format!("a@{d}")),
                Removed::Deleted(id.clone()),
            ]
        );

        // A digest reference alone: not dangling, so prune keeps it; rmi by it removes it.
        let untagged = ImportOptions {
            reference: None,
            ..opts("b")
        };
        let b = store.import(tarball(&[("b", b"2")]).as_slice(), &untagged).unwrap();
        store
            .add_references(&b.record.id, &[format!("docker.io/library/b@{d}")])
            .unwrap();
        let (removed, _) = store.prune(true).unwrap();
        assert_eq!(removed, []);
        assert_eq!(
            store.get(&b.record.id.to_string()).unwrap().repo_digests(),
            [format!("b@{d}")]
        );
        let removed = store.remove(&format!("b@{d}"), false).unwrap();
        assert_eq!(
            removed[..2],
            [
                Removed::Untagged(format!("b@{d}")),
                Removed::Deleted(b.record.id.clone())
            ]
        );

        // Untagging keeps the digest while another tag of the repository is left.
        let c = store.import(tarball(&[("c", b"3")]).as_slice(), &opts("c:1")).unwrap();
        store.tag("c:1", "c:2").unwrap();
        store
            .add_references(&c.record.id, &[format!("docker.io/library/c@{d}")])
            .unwrap();
        assert_eq!(store.remove("c:1", false).unwrap(), [Removed::Untagged("c:1".into())]);
        assert_eq!(store.get("c:2").unwrap().repo_digests(), [format!("c@{d}")]);
        // A tag moved to another image (a re-pull) takes the old image's digest reference
        // of that repository along when no other tag of it is left: the old image dangles.
        let e = store.import(tarball(&[("e", b"5")]).as_slice(), &opts("e:1")).unwrap();
        store
            .add_references(&e.record.id, &[format!("docker.io/library/e@{d}")])
            .unwrap();
        let f = store.import(tarball(&[("f", b"6")]).as_slice(), &opts("e:1")).unwrap();
        assert_eq!(store.get("e:1").unwrap().record.id, f.record.id);
        assert_eq!(store.get(&e.record.id.to_string()).unwrap().tags, Vec::<String>::new());
        let (removed, _) = store.prune(true).unwrap();
        assert_eq!(removed.get(..1), Some(&[Removed::Deleted(e.record.id.clone())][..]));
        store.remove("e:1", false).unwrap();

        // Tags of two repositories: an ID needs force.
        store.tag("c:2", "other:1").unwrap();
        let err = store.remove(&c.record.id.to_string(), false).unwrap_err();
        assert!(matches!(err, Error::ReferencedByTags { .. }), "{err}");
        // Three references, the image and its one snapshot.
        assert_eq!(store.remove(&c.record.id.to_string(), true).unwrap().len(), 5);
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
        let mut left = left;
        left.sort();
        assert_eq!(left, [chain.clone(), format!("{chain}.recipe")]);
        assert!(!dir.path().join("blobs/sha256/.ingest-89ab").exists());
        assert_eq!(store.get("a").unwrap().record, a.record);
        // And it keeps working.
        store.remove("a", false).unwrap();
        assert_eq!(store.count().unwrap(), 0);
    }

    /// A tar with raw entries (same name twice, whiteouts, hardlinks), built by hand.
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_mtime(1_700_000_000);
            h.set_path(name).unwrap();
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn imported_layers_rebuild_byte_for_byte_whatever_later_entries_replace() {
        use tar::EntryType::{Directory as D, Link as L, Regular as F};
        let big = vec![7u8; 3 << 20];
        let tar = raw_tar(&[
            ("etc/", D, b"", ""),
            ("etc/passwd", F, b"first", ""),
            ("etc/passwd", F, b"second, longer", ""),
            ("etc/group", F, b"wheel", ""),
            ("etc/group.lnk", L, b"", "etc/group"),
            ("etc/group", F, b"replaced after a hardlink", ""),
            ("var/", D, b"", ""),
            ("var/log/", D, b"", ""),
            ("var/log/big", F, &big, ""),
            ("var", F, b"a file replaces the directory", ""),
            ("opt/gone", F, b"whited out below", ""),
            ("opt/.wh.gone", F, b"", ""),
            ("etc/", D, b"", ""),
        ]);
        for (name, input) in [("plain", tar.clone()), ("gzip", gzip(&tar))] {
            let dir = tempfile::tempdir().unwrap();
            let store = ImageStore::open(dir.path()).unwrap();
            let image = store.import(input.as_slice(), &opts(name)).unwrap();
            assert_eq!(image.record.layers[0].diff_id, Digest::sha256(&tar), "{name}");
            store.ensure_layer_blobs(&image.record).unwrap();
            let rebuilt = store.content.read(&image.record.layers[0].digest).unwrap();
            assert!(rebuilt == tar, "{name}: the rebuilt stream differs");
            // Saved and loaded elsewhere, it is the same image.
            let mut saved = Vec::new();
            store.export(&[name.to_owned()]).unwrap().write(&mut saved).unwrap();
            let other = tempfile::tempdir().unwrap();
            let loaded = ImageStore::open(other.path()).unwrap().load(saved.as_slice()).unwrap();
            assert_eq!(loaded[0].id, image.record.id);
        }
    }

    #[test]
    fn a_changed_snapshot_is_not_pushed_or_saved() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let image = store
            .import(tarball(&[("bin/tool", b"original")]).as_slice(), &opts("t"))
            .unwrap();
        let snap = store.snapshot_path(&image.record.chain_ids()[0]);
        fs::write(snap.join("bin/tool"), b"tampered").unwrap();
        let err = store.ensure_layer_blobs(&image.record).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(store.export(&["t".to_owned()]).is_err());
        assert_eq!(
            files_under(&dir.path().join("blobs")).len(),
            2,
            "config and manifest only"
        );

        fs::remove_file(snap.join("bin/tool")).unwrap();
        let err = store.ensure_layer_blobs(&image.record).unwrap_err();
        assert!(err.to_string().contains("bin/tool"), "{err}");
    }
}
