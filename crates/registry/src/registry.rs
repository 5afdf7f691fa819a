//! The registry's state: storage, index, auth, live upload sessions, and the GC lock that
//! orders collection against pushes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use berth_oci::{Digest, Manifest, ManifestKind};
use bytes::Bytes;

use crate::auth::Htpasswd;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::index::{BlobMeta, Index, ManifestMeta};
use crate::metrics::Metrics;
use crate::storage::{self, Link, Storage};

/// Annotation and label read as a repository's description for search.
pub(crate) const DESCRIPTION_KEY: &str = "org.opencontainers.image.description";

/// A live upload session: where it stands and, while the bytes arrived in order in this
/// process, a running sha256 so the final PUT need not read the data again.
pub(crate) struct Upload {
    pub(crate) repo: String,
    pub(crate) chunks: Vec<(u64, u64)>,
    pub(crate) offset: u64,
    pub(crate) hasher: Option<sha2::Sha256>,
}

pub(crate) type UploadHandle = Arc<tokio::sync::Mutex<Upload>>;

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SessionRecord {
    pub(crate) repo: String,
    pub(crate) started: u64,
}

/// Fields of [`Registry`], reached through `Deref`; unnameable outside the crate.
#[allow(unreachable_pub)]
pub struct Inner {
    pub(crate) config: Config,
    pub(crate) storage: Storage,
    pub(crate) index: Index,
    pub(crate) auth: Option<Htpasswd>,
    /// Pushes that make blobs or manifests visible hold it shared; GC holds it exclusively.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
    pub(crate) uploads: Mutex<HashMap<String, UploadHandle>>,
    /// Blobs a client recently asked about (HEAD, mount): GC gives them the grace period
    /// again, so a push that found a layer present does not lose it before its manifest.
    pub(crate) touched: Mutex<HashMap<Digest, Instant>>,
    pub(crate) manifests: quick_cache::sync::Cache<Digest, Bytes>,
    pub(crate) metrics: Metrics,
}

/// A running registry's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub(crate) inner: Arc<Inner>,
}

impl std::ops::Deref for Registry {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// Runs a blocking index operation off the async workers (commits fsync).
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.expect("index task panicked")
}

impl Registry {
    /// Opens storage and index; rebuilds the index from storage when it is new or when
    /// `reindex` is set.
    pub async fn open(config: Config, reindex: bool) -> Result<Registry> {
        let auth = config.htpasswd.as_deref().map(Htpasswd::load).transpose()?;
        let storage = Storage::local(&config.root)?;
        let index_path = config.index_path();
        if reindex {
            match std::fs::remove_file(&index_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        op: "remove index",
                        path: index_path.display().to_string(),
                        source,
                    });
                }
            }
        }
        let (index, fresh) = {
            let p = index_path.clone();
            blocking(move || Index::open(&p)).await?
        };
        let reg = Registry {
            inner: Arc::new(Inner {
                config,
                storage,
                index,
                auth,
                gc_lock: tokio::sync::RwLock::new(()),
                uploads: Mutex::new(HashMap::new()),
                touched: Mutex::new(HashMap::new()),
                manifests: quick_cache::sync::Cache::new(4096),
                metrics: Metrics::default(),
            }),
        };
        if fresh {
            reg.rebuild_index().await?;
        }
        let idx = reg.index.clone();
        let (bytes, _) = blocking(move || idx.blob_totals()).await?;
        reg.metrics.storage_bytes.store(bytes, Ordering::Relaxed);
        Ok(reg)
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Makes the index anew from the repository links and blobs in storage.
    async fn rebuild_index(&self) -> Result<()> {
        let started = Instant::now();
        let blobs: HashMap<Digest, BlobMeta> = self
            .storage
            .list_blobs()
            .await?
            .into_iter()
            .map(|(d, size, mtime)| {
                let created = mtime
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                (d, BlobMeta { size, created })
            })
            .collect();
        let (mut tags, mut manifests, mut layers) = (Vec::new(), Vec::new(), Vec::new());
        // The search description comes from the tag pushed last: tag links carry their mtime.
        let mut tag_times: HashMap<(String, Digest), std::time::SystemTime> = HashMap::new();
        let links = self.storage.list_links().await?;
        for link in &links {
            if let Link::Tag {
                repo, digest, modified, ..
            } = link
            {
                let t = tag_times.entry((repo.clone(), digest.clone())).or_insert(*modified);
                *t = (*t).max(*modified);
            }
        }
        let mut descriptions: HashMap<String, (std::time::SystemTime, String)> = HashMap::new();
        for link in links {
            match link {
                Link::Tag { repo, tag, digest, .. } => tags.push((repo, tag, digest)),
                Link::Layer { repo, digest } => layers.push((repo, digest)),
                Link::Manifest { repo, digest } => {
                    let Some(bytes) = self.storage.read_blob(&digest).await? else {
                        tracing::warn!(repo = %repo, digest = %digest, "manifest link without its blob; dropped");
                        continue;
                    };
                    let Ok(m) = Manifest::parse(&bytes, None) else {
                        tracing::warn!(repo = %repo, digest = %digest, "unparsable manifest; dropped");
                        continue;
                    };
                    if let Some(&when) = tag_times.get(&(repo.clone(), digest.clone()))
                        && let Some(desc) = self.description(&m).await
                        && descriptions.get(&repo).is_none_or(|(t, _)| *t <= when)
                    {
                        descriptions.insert(repo.clone(), (when, desc));
                    }
                    manifests.push((repo, digest, manifest_meta(&m, bytes.len() as u64), None));
                }
            }
        }
        for (repo, _, _, desc) in &mut manifests {
            if let Some((_, d)) = descriptions.remove(repo.as_str()) {
                *desc = Some(d);
            }
        }
        let (n_tags, n_manifests) = (tags.len(), manifests.len());
        let idx = self.index.clone();
        blocking(move || idx.rebuild(&tags, &manifests, &layers, &blobs)).await?;
        tracing::info!(
            tags = n_tags,
            manifests = n_manifests,
            ms = started.elapsed().as_millis() as u64,
            "index rebuilt from storage"
        );
        Ok(())
    }

    /// The description search shows: the manifest's annotation, else the image config's label.
    pub(crate) async fn description(&self, m: &Manifest) -> Option<String> {
        if let Some(d) = m.annotations.get(DESCRIPTION_KEY) {
            return Some(d.clone());
        }
        let config = m
            .config
            .as_ref()
            .filter(|c| m.kind == ManifestKind::Image && c.size <= 1 << 20)?;
        let bytes = self.storage.read_blob(&config.digest).await.ok()??;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.pointer("/config/Labels")
            .and_then(|l| l.get(DESCRIPTION_KEY))
            .and_then(|d| d.as_str())
            .map(str::to_owned)
    }

    /// Records that a client just relied on a blob being present.
    pub(crate) fn touch(&self, d: &Digest) {
        self.touched
            .lock()
            .expect("touched poisoned")
            .insert(d.clone(), Instant::now());
    }

    /// Links an existing blob into `repo` (after upload or mount), index first, then storage.
    pub(crate) async fn link_blob(&self, repo: &str, d: &Digest, size: u64) -> Result<()> {
        let (idx, r, dd) = (self.index.clone(), repo.to_owned(), d.clone());
        let new = blocking(move || idx.commit_blob(&r, &dd, size)).await?;
        if new {
            self.metrics.storage_bytes.fetch_add(size, Ordering::Relaxed);
        }
        self.storage.put(&storage::layer_link(repo, d), Bytes::new()).await
    }

    /// Manifest bytes, from the cache or storage.
    pub(crate) async fn manifest_bytes(&self, d: &Digest) -> Result<Option<Bytes>> {
        if let Some(b) = self.manifests.get(d) {
            return Ok(Some(b));
        }
        let b = self.storage.read_blob(d).await?;
        if let Some(b) = &b {
            self.manifests.insert(d.clone(), b.clone());
        }
        Ok(b)
    }

    /// The live state of an upload session, loaded from storage after a restart.
    pub(crate) async fn upload(&self, id: &str) -> Result<Option<UploadHandle>> {
        if let Some(h) = self.uploads.lock().expect("uploads poisoned").get(id) {
            return Ok(Some(h.clone()));
        }
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        let Some(record) = self.storage.get_session(id).await? else {
            return Ok(None);
        };
        let record: SessionRecord = serde_json::from_slice(&record).map_err(|e| Error::Corrupt {
            what: format!("upload session {id}"),
            reason: e.to_string(),
        })?;
        let chunks = self.storage.list_chunks(id).await?;
        let offset = chunks.last().map_or(0, |(o, s)| o + s);
        let up = Upload {
            repo: record.repo,
            chunks,
            offset,
            hasher: None,
        };
        let handle = Arc::new(tokio::sync::Mutex::new(up));
        Ok(Some(
            self.uploads
                .lock()
                .expect("uploads poisoned")
                .entry(id.to_owned())
                .or_insert(handle)
                .clone(),
        ))
    }

    pub(crate) async fn new_upload(&self, repo: &str) -> Result<(String, UploadHandle)> {
        use sha2::Digest as _;
        let id = uuid::Uuid::new_v4().to_string();
        let started = crate::index::now_secs();
        let record = serde_json::to_vec(&SessionRecord {
            repo: repo.to_owned(),
            started,
        })
        .expect("serializes");
        self.storage.put_session(&id, record.into()).await?;
        let up = Upload {
            repo: repo.to_owned(),
            chunks: vec![],
            offset: 0,
            hasher: Some(sha2::Sha256::new()),
        };
        let handle = Arc::new(tokio::sync::Mutex::new(up));
        self.uploads
            .lock()
            .expect("uploads poisoned")
            .insert(id.clone(), handle.clone());
        self.metrics.uploads_started.fetch_add(1, Ordering::Relaxed);
        Ok((id, handle))
    }

    /// Forgets an upload session and removes its data.
    pub(crate) async fn drop_upload(&self, id: &str) -> Result<()> {
        self.uploads.lock().expect("uploads poisoned").remove(id);
        self.storage.remove_upload(id).await
    }

    pub(crate) fn live_uploads(&self) -> usize {
        self.uploads.lock().expect("uploads poisoned").len()
    }
}

pub(crate) fn manifest_meta(m: &Manifest, size: u64) -> ManifestMeta {
    ManifestMeta {
        media_type: m.media_type.clone(),
        size,
        refs: m.blobs().chain(m.manifests.iter()).map(|d| d.digest.clone()).collect(),
        subject: m.subject.as_ref().map(|s| s.digest.clone()),
        artifact_type: m.effective_artifact_type(),
        annotations: m.annotations.clone(),
    }
}
