//! Registry storage over `object_store`: the only module that knows the layout, and the only
//! one that may use a local path (for fsync and for handing open files to the blob server).
//!
//! ```text
//! <root>/
//!   blobs/<alg>/<2 hex>/<hex>          verified content (layers, configs, manifests); written
//!                                      only by `commit_upload` / `put_blob` after the digest
//!                                      was checked; removed only by GC
//!   uploads/<uuid>/session             upload session record (JSON: repository, start time)
//!   uploads/<uuid>/c<offset:020>       one object per PATCH/PUT chunk, in offset order
//!   uploads/<uuid>/final               concatenation of several chunks, renamed into blobs/
//!                                      upload dirs are removed on commit, cancel or expiry
//!   repositories/<name>/_tags/<tag>             body: manifest digest
//!   repositories/<name>/_manifests/<alg>/<hex>  body: manifest media type
//!   repositories/<name>/_layers/<alg>/<hex>     empty: blob linked into the repository
//!                                      repository links are the truth the index is rebuilt
//!                                      from; written after the index, removed before it
//! ```
//!
//! Every object is written whole or not at all (object_store writes a staging file and
//! renames it); on the local filesystem each write is also fsynced with its directory before
//! it is acknowledged.

use std::path::PathBuf;
use std::sync::Arc;

use berth_oci::Digest;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, PutPayload, WriteMultipart};

use crate::error::{Error, Result};

/// Slices a mapped blob is handed to the socket in.
const MAP_SLICE: usize = 8 << 20;
/// Part size for multipart writes.
const PART: usize = 8 << 20;
/// Upload bytes are written to their file this many at a time.
const WRITE_BATCH: usize = 1 << 20;

#[derive(Clone)]
pub(crate) struct Storage {
    store: Arc<dyn ObjectStore>,
    local: Option<Arc<LocalFileSystem>>,
}

/// A blob's bytes on their way to a client.
pub(crate) type ByteStream = futures::stream::BoxStream<'static, std::io::Result<Bytes>>;

fn storage_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(object_store::Error) -> Error + 'a {
    move |source| Error::Storage {
        op,
        path: path.to_string(),
        source,
    }
}

pub(crate) fn blob_path(d: &Digest) -> Path {
    let hex = d.hex();
    Path::from(format!("blobs/{}/{}/{}", d.algorithm().as_str(), &hex[..2], hex))
}

fn upload_dir(id: &str) -> Path {
    Path::from(format!("uploads/{id}"))
}

fn chunk_path(id: &str, offset: u64) -> Path {
    Path::from(format!("uploads/{id}/c{offset:020}"))
}

/// Repository link paths (see the layout above).
pub(crate) fn tag_link(repo: &str, tag: &str) -> Path {
    Path::from(format!("repositories/{repo}/_tags/{tag}"))
}

pub(crate) fn manifest_link(repo: &str, d: &Digest) -> Path {
    Path::from(format!(
        "repositories/{repo}/_manifests/{}/{}",
        d.algorithm().as_str(),
        d.hex()
    ))
}

pub(crate) fn layer_link(repo: &str, d: &Digest) -> Path {
    Path::from(format!(
        "repositories/{repo}/_layers/{}/{}",
        d.algorithm().as_str(),
        d.hex()
    ))
}

/// One repository link found while rebuilding the index.
#[derive(Debug)]
pub(crate) enum Link {
    /// `modified` tells which tag was pushed last (its manifest gives the search description).
    Tag {
        repo: String,
        tag: String,
        digest: Digest,
        modified: std::time::SystemTime,
    },
    Manifest {
        repo: String,
        digest: Digest,
    },
    Layer {
        repo: String,
        digest: Digest,
    },
}

impl Storage {
    /// Storage on the local filesystem under `root` (created if missing).
    pub(crate) fn local(root: &std::path::Path) -> Result<Storage> {
        std::fs::create_dir_all(root).map_err(|source| Error::Io {
            op: "create storage root",
            path: root.display().to_string(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(root)
            .map_err(|source| Error::Storage {
                op: "open",
                path: root.display().to_string(),
                source,
            })?
            .with_automatic_cleanup(true);
        let fs = Arc::new(fs);
        Ok(Storage {
            store: fs.clone(),
            local: Some(fs),
        })
    }

    fn local_path(&self, p: &Path) -> Option<PathBuf> {
        self.local.as_ref().and_then(|l| l.path_to_filesystem(p).ok())
    }

    /// Makes a written object durable: fsync the file and its directory (local only; object
    /// stores acknowledge durable writes themselves).
    async fn sync(&self, p: &Path) -> Result<()> {
        let Some(path) = self.local_path(p) else { return Ok(()) };
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&path)?.sync_all()?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .expect("fsync task panicked")
        .map_err(|source| Error::Io {
            op: "fsync",
            path: p.to_string(),
            source,
        })
    }

    async fn sync_dir_of(&self, p: &Path) -> Result<()> {
        let Some(path) = self.local_path(p) else { return Ok(()) };
        let Some(dir) = path.parent().map(|d| d.to_owned()) else {
            return Ok(());
        };
        // A delete may have removed now-empty directories (automatic cleanup): fsync the
        // nearest one that still exists, which records the removal.
        tokio::task::spawn_blocking(move || {
            let mut dir = dir.as_path();
            loop {
                match std::fs::File::open(dir) {
                    Ok(f) => return f.sync_all(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => match dir.parent() {
                        Some(up) => dir = up,
                        None => return Ok(()),
                    },
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("fsync task panicked")
        .map_err(|source| Error::Io {
            op: "fsync dir",
            path: p.to_string(),
            source,
        })
    }

    /// Writes a small object whole and durably.
    pub(crate) async fn put(&self, p: &Path, bytes: Bytes) -> Result<()> {
        self.store
            .put(p, PutPayload::from_bytes(bytes))
            .await
            .map_err(storage_err("put", p))?;
        self.sync(p).await
    }

    /// Reads a small object whole; `None` if it does not exist.
    pub(crate) async fn get(&self, p: &Path) -> Result<Option<Bytes>> {
        match self.store.get(p).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(storage_err("read", p))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_err("get", p)(e)),
        }
    }

    /// Deletes an object; a missing one is not an error.
    pub(crate) async fn delete(&self, p: &Path) -> Result<()> {
        match self.store.delete(p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => self.sync_dir_of(p).await,
            Err(e) => Err(storage_err("delete", p)(e)),
        }
    }

    /// Stores verified bytes as a blob.
    pub(crate) async fn put_blob(&self, d: &Digest, bytes: Bytes) -> Result<()> {
        self.put(&blob_path(d), bytes).await
    }

    pub(crate) async fn read_blob(&self, d: &Digest) -> Result<Option<Bytes>> {
        self.get(&blob_path(d)).await
    }

    pub(crate) async fn delete_blob(&self, d: &Digest) -> Result<()> {
        self.delete(&blob_path(d)).await
    }

    /// Streams `range` (end exclusive) of a blob. A local file is read on a blocking thread in
    /// 1 MiB reads; other stores stream what they return.
    pub(crate) async fn open_blob(&self, d: &Digest, range: std::ops::Range<u64>) -> Result<ByteStream> {
        let p = blob_path(d);
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..Default::default()
        };
        let res = self.store.get_opts(&p, opts).await.map_err(storage_err("get", &p))?;
        match res.payload {
            GetResultPayload::File(file, path) => map_file(file, range).map_err(|source| Error::Io {
                op: "map",
                path: path.display().to_string(),
                source,
            }),
            GetResultPayload::Stream(s) => Ok(s.map_err(std::io::Error::other).boxed()),
        }
    }

    // --- upload sessions -------------------------------------------------------------------

    pub(crate) async fn put_session(&self, id: &str, record: Bytes) -> Result<()> {
        self.put(&Path::from(format!("uploads/{id}/session")), record).await
    }

    pub(crate) async fn get_session(&self, id: &str) -> Result<Option<Bytes>> {
        self.get(&Path::from(format!("uploads/{id}/session"))).await
    }

    /// The chunks an upload holds, as (offset, size), in offset order.
    pub(crate) async fn list_chunks(&self, id: &str) -> Result<Vec<(u64, u64)>> {
        let dir = upload_dir(id);
        let mut chunks: Vec<(u64, u64)> = self
            .store
            .list(Some(&dir))
            .map_err(storage_err("list", &dir))
            .try_filter_map(|m| async move {
                let name = m.location.filename().unwrap_or("");
                Ok(name
                    .strip_prefix('c')
                    .and_then(|o| o.parse::<u64>().ok())
                    .map(|o| (o, m.size)))
            })
            .try_collect()
            .await?;
        chunks.sort_unstable();
        Ok(chunks)
    }

    /// Writes one chunk at `offset` from `body`, calling `seen` with every byte slice in order.
    /// Returns the bytes written. Nothing is left behind if the body fails half-way.
    pub(crate) async fn write_chunk<S, E>(
        &self,
        id: &str,
        offset: u64,
        body: S,
        mut seen: impl FnMut(&[u8]),
    ) -> Result<std::result::Result<u64, E>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
    {
        let p = chunk_path(id, offset);
        let upload = self.store.put_multipart(&p).await.map_err(storage_err("create", &p))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut n = 0u64;
        let mut body = std::pin::pin!(body);
        // Frames are as small as the socket's reads; the file gets them in large writes,
        // which cost the page cache (and the filesystem's large folios) far less per byte.
        let mut pending = bytes::BytesMut::new();
        loop {
            let item = body.next().await;
            let end = item.is_none();
            match item {
                Some(Ok(bytes)) => {
                    seen(&bytes);
                    n += bytes.len() as u64;
                    if pending.is_empty() && bytes.len() >= WRITE_BATCH {
                        w.wait_for_capacity(2).await.map_err(storage_err("write", &p))?;
                        w.put(bytes);
                        continue;
                    }
                    if pending.capacity() == 0 {
                        pending.reserve(WRITE_BATCH);
                    }
                    pending.extend_from_slice(&bytes);
                }
                Some(Err(e)) => {
                    w.abort().await.map_err(storage_err("abort", &p))?;
                    return Ok(Err(e));
                }
                None => {}
            }
            if pending.len() >= WRITE_BATCH || (end && !pending.is_empty()) {
                w.wait_for_capacity(2).await.map_err(storage_err("write", &p))?;
                w.put(pending.split().freeze());
            }
            if end {
                break;
            }
        }
        if n == 0 {
            w.abort().await.map_err(storage_err("abort", &p))?;
            return Ok(Ok(0));
        }
        w.finish().await.map_err(storage_err("finish", &p))?;
        Ok(Ok(n))
    }

    /// Streams an upload's chunks in order (to re-hash after a restart).
    pub(crate) fn read_chunks(&self, id: &str, chunks: &[(u64, u64)]) -> ByteStream {
        let store = self.store.clone();
        let paths: Vec<Path> = chunks.iter().map(|(o, _)| chunk_path(id, *o)).collect();
        futures::stream::iter(paths)
            .then(move |p| {
                let store = store.clone();
                async move { store.get(&p).await.map(|r| r.into_stream()) }
            })
            .try_flatten()
            .map_err(std::io::Error::other)
            .boxed()
    }

    /// Moves a verified upload into `blobs/`: one chunk is renamed, several are concatenated
    /// first. Durable when this returns.
    pub(crate) async fn commit_upload(&self, id: &str, chunks: &[(u64, u64)], d: &Digest) -> Result<()> {
        let target = blob_path(d);
        let source = match chunks {
            [] => return self.put(&target, Bytes::new()).await,
            [(offset, _)] => chunk_path(id, *offset),
            _ => {
                let fin = Path::from(format!("uploads/{id}/final"));
                let upload = self
                    .store
                    .put_multipart(&fin)
                    .await
                    .map_err(storage_err("create", &fin))?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
                let mut s = self.read_chunks(id, chunks);
                while let Some(b) = s.next().await {
                    let b = b.map_err(|source| Error::Io {
                        op: "read chunk",
                        path: fin.to_string(),
                        source,
                    })?;
                    w.wait_for_capacity(2).await.map_err(storage_err("write", &fin))?;
                    w.put(b);
                }
                w.finish().await.map_err(storage_err("finish", &fin))?;
                fin
            }
        };
        self.sync(&source).await?;
        self.store
            .rename(&source, &target)
            .await
            .map_err(storage_err("rename", &source))?;
        self.sync_dir_of(&target).await
    }

    /// Removes an upload session and everything in it (staging files included).
    pub(crate) async fn remove_upload(&self, id: &str) -> Result<()> {
        let dir = upload_dir(id);
        if let Some(path) = self.local_path(&dir) {
            return match tokio::fs::remove_dir_all(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(Error::Io {
                    op: "remove upload",
                    path: path.display().to_string(),
                    source,
                }),
            };
        }
        let paths: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(storage_err("list", &dir))?;
        for p in paths {
            self.delete(&p).await?;
        }
        Ok(())
    }

    /// Upload session ids present in storage.
    pub(crate) async fn list_uploads(&self) -> Result<Vec<String>> {
        let dir = Path::from("uploads");
        let res = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(storage_err("list", &dir))?;
        Ok(res
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// Every blob in storage with its size and modification time (for GC's orphan sweep).
    pub(crate) async fn list_blobs(&self) -> Result<Vec<(Digest, u64, std::time::SystemTime)>> {
        let dir = Path::from("blobs");
        self.store
            .list(Some(&dir))
            .map_err(storage_err("list", &dir))
            .try_filter_map(|m| async move {
                let parts: Vec<_> = m.location.parts().collect();
                let d = match parts.as_slice() {
                    [_, alg, _, hex] => format!("{}:{}", alg.as_ref(), hex.as_ref()).parse::<Digest>().ok(),
                    _ => None,
                };
                Ok(d.map(|d| (d, m.size, std::time::SystemTime::from(m.last_modified))))
            })
            .try_collect()
            .await
    }

    /// Every repository link, for rebuilding the index.
    pub(crate) async fn list_links(&self) -> Result<Vec<Link>> {
        let dir = Path::from("repositories");
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(storage_err("list", &dir))?;
        let mut links = Vec::with_capacity(objects.len());
        for meta in objects {
            let p = meta.location;
            let parts: Vec<String> = p.parts().map(|x| x.as_ref().to_owned()).collect();
            // Repository name components never start with '_' (they start with [a-z0-9]), so
            // the first one that does is the link kind; a tag may start with '_'.
            let Some(kind_at) = parts.iter().skip(1).position(|x| x.starts_with('_')).map(|i| i + 1) else {
                continue;
            };
            let repo = parts[1..kind_at].join("/");
            let rest = &parts[kind_at + 1..];
            let digest = |alg: &str, hex: &str| format!("{alg}:{hex}").parse::<Digest>().ok();
            let link = match (parts[kind_at].as_str(), rest) {
                ("_tags", [tag]) => {
                    let Some(body) = self.get(&p).await? else { continue };
                    let Ok(d) = std::str::from_utf8(&body).unwrap_or("").trim().parse::<Digest>() else {
                        tracing::warn!(link = %p, "ignoring unreadable tag link");
                        continue;
                    };
                    Link::Tag {
                        repo,
                        tag: tag.clone(),
                        digest: d,
                        modified: meta.last_modified.into(),
                    }
                }
                ("_manifests", [alg, hex]) => match digest(alg, hex) {
                    Some(d) => Link::Manifest { repo, digest: d },
                    None => continue,
                },
                ("_layers", [alg, hex]) => match digest(alg, hex) {
                    Some(d) => Link::Layer { repo, digest: d },
                    None => continue,
                },
                _ => continue,
            };
            links.push(link);
        }
        Ok(links)
    }
}

/// Serves `range` of a local blob from a read-only memory map. Over plain TCP the bytes go
/// out with sendfile (see `zerocopy`); otherwise from the map, in one copy.
fn map_file(file: std::fs::File, range: std::ops::Range<u64>) -> std::io::Result<ByteStream> {
    let len = usize::try_from(range.end - range.start).map_err(std::io::Error::other)?;
    let all = Bytes::from_owner(crate::zerocopy::MappedFile::new(file, range.start, len)?);
    let slices: Vec<std::io::Result<Bytes>> = (0..len)
        .step_by(MAP_SLICE)
        .map(|at| Ok(all.slice(at..(at + MAP_SLICE).min(len))))
        .collect();
    Ok(futures::stream::iter(slices).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(
        parts: Vec<std::result::Result<&'static [u8], &'static str>>,
    ) -> impl Stream<Item = std::result::Result<Bytes, &'static str>> {
        futures::stream::iter(parts.into_iter().map(|p| p.map(Bytes::from_static)))
    }

    #[tokio::test]
    async fn interrupted_chunk_leaves_nothing_and_commit_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::local(dir.path()).unwrap();
        let id = "0f0f0f0f-0000-4000-8000-000000000000";

        // A body that fails half-way stores no chunk.
        let r = s
            .write_chunk(id, 0, body(vec![Ok(b"abc"), Err("client went away")]), |_| {})
            .await
            .unwrap();
        assert_eq!(r, Err("client went away"));
        assert!(s.list_chunks(id).await.unwrap().is_empty());

        // Two good chunks, concatenated on commit, visible only at the digest path.
        let mut seen = Vec::new();
        assert_eq!(
            s.write_chunk(id, 0, body(vec![Ok(b"hello ")]), |b| seen.extend_from_slice(b))
                .await
                .unwrap(),
            Ok(6)
        );
        assert_eq!(
            s.write_chunk(id, 6, body(vec![Ok(b"world")]), |b| seen.extend_from_slice(b))
                .await
                .unwrap(),
            Ok(5)
        );
        assert_eq!(seen, b"hello world");
        let chunks = s.list_chunks(id).await.unwrap();
        assert_eq!(chunks, vec![(0, 6), (6, 5)]);
        let d = Digest::sha256(b"hello world");
        assert!(s.read_blob(&d).await.unwrap().is_none());
        s.commit_upload(id, &chunks, &d).await.unwrap();
        assert_eq!(
            s.read_blob(&d).await.unwrap().unwrap(),
            Bytes::from_static(b"hello world")
        );
        let listed = s.list_blobs().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0.clone(), listed[0].1), (d.clone(), 11));

        // Ranged reads through the local fast path.
        let mut got = Vec::new();
        let mut st = s.open_blob(&d, 6..11).await.unwrap();
        while let Some(b) = st.next().await {
            got.extend_from_slice(&b.unwrap());
        }
        assert_eq!(got, b"world");

        s.remove_upload(id).await.unwrap();
        assert!(s.list_uploads().await.unwrap().is_empty());
        assert!(!dir.path().join("uploads").join(id).exists());
    }

    #[tokio::test]
    async fn links_round_trip_for_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::local(dir.path()).unwrap();
        let d = Digest::sha256(b"m");
        s.put(&tag_link("sl6/wn", "1.0"), Bytes::from(d.to_string()))
            .await
            .unwrap();
        s.put(&manifest_link("sl6/wn", &d), Bytes::from_static(b"x"))
            .await
            .unwrap();
        s.put(&layer_link("sl6/wn", &d), Bytes::new()).await.unwrap();
        let mut kinds: Vec<String> = s.list_links().await.unwrap().iter().map(|l| format!("{l:?}")).collect();
        kinds.sort();
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        assert!(
            kinds
                .iter()
                .any(|k| k.contains("Tag") && k.contains("\"1.0\"") && k.contains("sl6/wn")),
            "{kinds:?}"
        );
    }
}
