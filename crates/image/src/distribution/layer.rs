//! One layer of a pull: streamed from the registry into the content store and, on a
//! blocking thread fed through a bounded channel, decompressed, digested (the diff ID) and
//! unpacked into a temporary snapshot directory, all in one pass. Concurrent pulls of the
//! same layer share one download (the in-flight map).

use std::collections::HashMap;
use std::io::{self, BufRead, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use berth_oci::{Descriptor, Digest};
use futures::StreamExt;
use tokio::sync::{OnceCell, mpsc};

use super::Progress;
use super::client::{RegistryClient, error_chain};
use crate::chan::batch_channel;
use crate::content::{ContentStore, ContentWriter};
use crate::error::{Error, io as io_err};
use crate::extract::{ExtractOptions, Whiteouts, extract};
use crate::store::{Hashing, ImageStore, Layer, Tee, remove_tree, sniff};

/// At most this often a `Downloading` line per layer.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// A layer downloaded, verified and unpacked into `dir` (a `.tmp-` snapshot directory), not
/// yet part of any image. The directory goes when the last pull holding it lets go, unless
/// a commit moved it into place.
#[derive(Debug)]
pub(crate) struct Unpacked {
    pub(crate) layer: Layer,
    pub(crate) dir: PathBuf,
    /// Set once the blob is committed to the content store; it is deleted again if no
    /// image ends up naming it (a failed pull leaves nothing behind).
    blob_of: Option<Arc<ImageStore>>,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        // The directory is still here only if no commit moved it into place.
        if !self.dir.exists() {
            return;
        }
        if let Err(e) = remove_tree(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "failed to remove an unused layer directory");
        }
        if let Some(store) = &self.blob_of {
            store.forget_blob(&self.layer.digest);
        }
    }
}

type Slot = OnceCell<Arc<Unpacked>>;
/// Keyed by the store's snapshot directory and the layer blob's digest.
type InFlight = HashMap<(PathBuf, Digest), Weak<Slot>>;

/// Layers being fetched, per store and blob digest, so two pulls never fetch one twice.
static IN_FLIGHT: LazyLock<Mutex<InFlight>> = LazyLock::new(Default::default);

/// The slot for `digest`, and whether another pull already holds it.
fn slot(store: &ImageStore, digest: &Digest) -> (Arc<Slot>, bool) {
    let mut map = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, w| w.strong_count() > 0);
    let key = (store.snapshots.clone(), digest.clone());
    if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
        return (s, true);
    }
    let s = Arc::new(Slot::new());
    map.insert(key, Arc::downgrade(&s));
    (s, false)
}

/// A fetched layer. Holding it keeps its in-flight slot alive, so a pull starting before
/// this one commits reuses the layer rather than fetching it again.
pub(crate) struct Fetched {
    _slot: Arc<Slot>,
    pub(crate) unpacked: Arc<Unpacked>,
}

/// Fetches and unpacks one layer, or waits for the pull already doing it.
pub(crate) async fn fetch(
    store: &Arc<ImageStore>,
    client: &RegistryClient,
    repo: &str,
    desc: &Descriptor,
    progress: &mpsc::UnboundedSender<Progress>,
) -> Result<Fetched, Error> {
    let (slot, shared) = slot(store, &desc.digest);
    if shared && !slot.initialized() {
        // Another pull is fetching this layer; say so rather than sit silent.
        let _ = progress.send(Progress::layer(&desc.digest, "Waiting"));
    }
    let unpacked = Arc::clone(
        slot.get_or_try_init(|| download(store, client, repo, desc, progress))
            .await?,
    );
    Ok(Fetched { _slot: slot, unpacked })
}

async fn download(
    store: &Arc<ImageStore>,
    client: &RegistryClient,
    repo: &str,
    desc: &Descriptor,
    progress: &mpsc::UnboundedSender<Progress>,
) -> Result<Arc<Unpacked>, Error> {
    let digest = &desc.digest;
    let resp = client.get(&format!("{repo}/blobs/{digest}"), &[]).await?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        return Err(Error::Registry {
            host: client.host.clone(),
            what: format!("layer {digest}"),
            status,
            message: super::client::registry_message(&body).unwrap_or_default(),
        });
    }
    let total = desc.size;
    let (mut tx, rx) = batch_channel();
    let task = {
        let store = Arc::clone(store);
        let digest = digest.clone();
        let media_type = desc.media_type.clone();
        tokio::task::spawn_blocking(move || unpack(store, rx, digest, media_type))
    };
    let mut current = 0u64;
    let mut last = Instant::now() - PROGRESS_EVERY;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                // The unpacking thread sees a failed read and stops; its directory goes.
                tx.fail(io::Error::other(error_chain(&e))).await;
                let _ = task.await;
                return Err(Error::Download {
                    digest: digest.clone(),
                    host: client.host.clone(),
                    reason: error_chain(&e),
                });
            }
        };
        current += chunk.len() as u64;
        tx.send(chunk).await;
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            let _ = progress.send(Progress::bytes(digest, "Downloading", current, total));
        }
    }
    tx.finish().await;
    let _ = progress.send(Progress::bytes(digest, "Downloading", current, total));
    let _ = progress.send(Progress::layer(digest, "Verifying Checksum"));
    // The unpacking thread hashes the blob as it stores it, and reads it to the end even
    // when unpacking fails: a digest mismatch is the better explanation when there is one.
    let unpacked = match task.await.expect("unpacking does not panic") {
        Ok(u) => u,
        Err(Error::DigestMismatch { expected, computed }) if &expected == digest => {
            return Err(Error::RegistryDigestMismatch {
                reference: repo.to_owned(),
                what: "layer",
                expected,
                computed,
            });
        }
        Err(source) => {
            return Err(Error::Layer {
                digest: digest.clone(),
                source: Box::new(source),
            });
        }
    };
    let _ = progress.send(Progress::layer(digest, "Download complete"));
    let _ = progress.send(Progress::bytes(digest, "Extracting", current, total));
    Ok(Arc::new(unpacked))
}

/// Runs on a blocking thread: blob to the content store, tar (after decompression) to the
/// diff ID and into a fresh `.tmp-` snapshot directory.
fn unpack<R: BufRead>(store: Arc<ImageStore>, src: R, digest: Digest, media_type: String) -> Result<Unpacked, Error> {
    let dir = store.snapshots.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).map_err(io_err("create directory", &dir))?;
    // From here on the guard removes the directory on any failure.
    let mut out = Unpacked {
        layer: Layer {
            digest: digest.clone(),
            media_type,
            size: 0,
            diff_id: digest.clone(),
            diff_size: 0,
        },
        dir,
        blob_of: None,
    };
    let mut writer = store.content.writer()?;
    let (head, src) = sniff(src, 4).map_err(|source| Error::Read { source })?;
    let (gzip, zstd) = (
        head.starts_with(&[0x1f, 0x8b]),
        head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
    );
    // The decoders read the downloaded chunks in place; what they consume goes to the blob.
    let mut tee = Tee::new(src, &mut writer);
    let unpacked = (|| {
        let tar: Box<dyn Read + '_> = if gzip {
            Box::new(flate2::bufread::MultiGzDecoder::new(&mut tee))
        } else if zstd {
            Box::new(zstd::stream::read::Decoder::with_buffer(&mut tee).map_err(|source| Error::Read { source })?)
        } else {
            Box::new(&mut tee)
        };
        let mut tar = Hashing::new(tar);
        let opts = ExtractOptions {
            whiteouts: Whiteouts::Overlay,
            allow_devices: false,
            ..ExtractOptions::default()
        };
        extract(&mut tar, &out.dir, &opts)?;
        io::copy(&mut tar, &mut io::sink()).map_err(|source| Error::Read { source })?;
        Ok(tar.finish())
    })();
    let (diff_id, diff_size) = match unpacked {
        Ok(d) => d,
        Err(e) => {
            // Read the rest into the blob: if its digest is wrong, that is the error to give.
            if io::copy(&mut tee, &mut io::sink()).is_ok() {
                drop(tee);
                if let Err(mismatch @ Error::DigestMismatch { .. }) = writer.commit(Some(&digest)) {
                    return Err(mismatch);
                }
            }
            return Err(e);
        }
    };
    drop(tee);
    let (_, size) = writer.commit(Some(&digest))?;
    out.blob_of = Some(Arc::clone(&store));
    sync(&out.dir)?;
    out.layer.size = size;
    out.layer.diff_id = diff_id;
    out.layer.diff_size = diff_size;
    Ok(out)
}

/// The snapshot's files reach the disk before any metadata names them.
fn sync(dir: &Path) -> Result<(), Error> {
    let f = std::fs::File::open(dir).map_err(io_err("open", dir))?;
    nix::unistd::syncfs(f.as_raw_fd()).map_err(|e| io_err("sync filesystem of", dir)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tarball(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn unpacks_plain_gzip_and_zstd_and_checks_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ImageStore::open(dir.path()).unwrap());
        let tar = tarball("etc/motd", b"welcome");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
        for blob in [&tar, &gz, &zst] {
            let digest = Digest::sha256(blob);
            let u = unpack(Arc::clone(&store), blob.as_slice(), digest.clone(), "m".into()).unwrap();
            assert_eq!(u.layer.diff_id, Digest::sha256(&tar));
            assert_eq!(u.layer.size, blob.len() as u64);
            assert_eq!(std::fs::read(u.dir.join("etc/motd")).unwrap(), b"welcome");
            assert!(store.content.contains(&digest));
            let dir = u.dir.clone();
            drop(u);
            assert!(
                !dir.exists(),
                "an uncommitted layer directory goes with its last holder"
            );
        }
        // Bytes that do not hash to the digest: refused, and nothing stays.
        let wrong = Digest::sha256(b"something else");
        let err = unpack(Arc::clone(&store), gz.as_slice(), wrong.clone(), "m".into()).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.content.contains(&wrong));
        let left: Vec<_> = std::fs::read_dir(&store.snapshots).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
