//! The content store: blobs addressed by their digest, shared by every path into the store
//! (import today; pull, commit and load later).
//!
//! ```text
//! blobs/
//!   sha256/
//!     .ingest-<uuid>        a write in progress (ContentWriter); removed by cancel, by drop,
//!                           and at open (a crash mid-write leaves only this)
//!     <2 hex>/<hex>         a committed blob: fsynced, digest verified, renamed into place,
//!                           directory fsynced; removed by ImageStore when no image needs it,
//!                           and `<2 hex>/` with it once empty (a commit makes it again)
//! ```
//!
//! The temporary file lives in `blobs/sha256/` (the same filesystem as every blob, so the
//! rename is atomic); nothing appears under `<2 hex>/` until its digest has been verified.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use berth_oci::{Algorithm, Digest, Digester};

use crate::error::{Error, io};

/// A content-addressed blob store. Implementations must make a blob visible only once
/// [`ContentWriter::commit`] has verified it, and leave nothing behind for a writer that is
/// cancelled, dropped or interrupted by a crash.
pub trait ContentStore: Send + Sync {
    /// The writer type [`writer`](ContentStore::writer) returns.
    type Writer: ContentWriter;

    /// Starts a new blob. Bytes written are hashed as they go.
    fn writer(&self) -> Result<Self::Writer, Error>;

    /// Whether a committed blob with this digest exists.
    fn contains(&self, digest: &Digest) -> bool;

    /// The bytes of a committed blob.
    fn read(&self, digest: &Digest) -> Result<Vec<u8>, Error>;

    /// The size of a committed blob.
    fn size(&self, digest: &Digest) -> Result<u64, Error>;

    /// Removes a committed blob; removing an absent one is not an error.
    fn delete(&self, digest: &Digest) -> Result<(), Error>;
}

/// A blob being written: `write` bytes, then `commit` (or `cancel`, or drop).
pub trait ContentWriter: Write {
    /// Makes the blob durable and visible: fsync, check the digest (and `expected`, when
    /// given), rename into place, fsync the directory. Returns the digest and size.
    fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), Error>;

    /// Drops the partial blob; nothing of it stays.
    fn cancel(self);
}

/// The content store on the local filesystem, under `<data-root>/blobs`.
#[derive(Debug, Clone)]
pub struct LocalContent {
    dir: PathBuf,
}

impl LocalContent {
    /// Opens (creating) `root/blobs/sha256` and removes writes a crash left behind.
    pub fn open(root: &Path) -> Result<LocalContent, Error> {
        let dir = root.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io("read", &dir))? {
            let entry = entry.map_err(io("read", &dir))?;
            if entry.file_name().to_string_lossy().starts_with(".ingest-") {
                tracing::info!(path = %entry.path().display(), "removing an interrupted blob write");
                fs::remove_file(entry.path()).map_err(io("remove", &entry.path()))?;
            }
        }
        Ok(LocalContent { dir })
    }

    /// Where a committed blob lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.dir.join(&hex[..2]).join(hex)
    }
}

impl ContentStore for LocalContent {
    type Writer = LocalWriter;

    fn writer(&self) -> Result<LocalWriter, Error> {
        let tmp = self.dir.join(format!(".ingest-{}", uuid::Uuid::new_v4().simple()));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        Ok(LocalWriter {
            store: self.clone(),
            tmp: Some(tmp),
            file: io::BufWriter::with_capacity(1 << 20, file),
            digester: Digester::new(Algorithm::Sha256),
            size: 0,
            written_back: 0,
        })
    }

    fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    fn read(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        let p = self.path(digest);
        fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound { digest: digest.clone() },
            _ => io("read", &p)(e),
        })
    }

    fn size(&self, digest: &Digest) -> Result<u64, Error> {
        let p = self.path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound { digest: digest.clone() }),
            Err(e) => Err(io("stat", &p)(e)),
        }
    }

    fn delete(&self, digest: &Digest) -> Result<(), Error> {
        let p = self.path(digest);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &p)(e)),
        }
        // The `<2 hex>/` directory goes with its last blob, so removing every image leaves
        // only `blobs/sha256/`. A commit racing this recreates it (see `commit`).
        let dir = p.parent().expect("blob path has a parent");
        match fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty) => Ok(()),
            Err(e) => Err(io("remove", dir)(e)),
        }
    }
}

/// A write into [`LocalContent`]: a temp file in `blobs/sha256/`, hashed as it is written.
pub struct LocalWriter {
    store: LocalContent,
    /// `None` once committed or cancelled.
    tmp: Option<PathBuf>,
    file: io::BufWriter<File>,
    digester: Digester,
    size: u64,
    /// Bytes whose write-back has been started (see `write`).
    written_back: u64,
}

/// A blob's pages are handed to the disk every this many bytes as it is written, so the
/// commit's fsync finds little left to do.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl std::fmt::Debug for LocalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWriter")
            .field("tmp", &self.tmp)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.digester.update(&buf[..n]);
        self.size += n as u64;
        let in_file = self.size - self.file.buffer().len() as u64;
        if in_file - self.written_back >= WRITEBACK_EVERY {
            crate::extract::start_writeback_range(self.file.get_ref(), self.written_back, in_file - self.written_back);
            self.written_back = in_file;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl ContentWriter for LocalWriter {
    fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), Error> {
        let tmp = self.tmp.take().expect("a writer is committed once");
        let result = (|| {
            self.file.flush().map_err(io("write", &tmp))?;
            self.file.get_ref().sync_all().map_err(io("fsync", &tmp))?;
            let digester = std::mem::replace(&mut self.digester, Digester::new(Algorithm::Sha256));
            let digest = digester.finish();
            if let Some(expected) = expected
                && *expected != digest
            {
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    computed: digest,
                });
            }
            let dest = self.store.path(&digest);
            let dir = dest.parent().expect("blob path has a parent");
            // `delete` removes a `<2 hex>/` directory once it is empty, possibly between
            // these two steps; then the directory is made again.
            let mut tries = 0;
            loop {
                fs::create_dir_all(dir).map_err(io("create directory", dir))?;
                match fs::rename(&tmp, &dest) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
                    Err(e) => return Err(io("rename", &dest)(e)),
                }
            }
            fsync_dir(dir)?;
            fsync_dir(&self.store.dir)?;
            Ok((digest, self.size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn cancel(mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Makes a rename or removal in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// The conformance suite every [`ContentStore`] runs: commit and read back, a wrong expected
/// digest leaves nothing, an interrupted (dropped) or cancelled writer leaves nothing.
#[cfg(any(test, feature = "testsuite"))]
#[cfg_attr(not(feature = "testsuite"), allow(unreachable_pub))]
pub mod testsuite {
    use super::*;

    /// Runs every check against the store `make` returns (a fresh, empty one each call), and
    /// `visible` lists every file the store keeps (to check that nothing partial is left).
    pub fn run<S: ContentStore>(make: impl Fn() -> (S, Box<dyn Fn() -> Vec<PathBuf>>)) {
        commit_and_read(make());
        wrong_digest_leaves_nothing(make());
        interrupted_write_leaves_nothing(make());
    }

    fn commit_and_read<S: ContentStore>((store, _): (S, Box<dyn Fn() -> Vec<PathBuf>>)) {
        let mut w = store.writer().unwrap();
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let want = Digest::sha256(b"hello world");
        assert!(!store.contains(&want));
        let (d, size) = w.commit(Some(&want)).unwrap();
        assert_eq!((d.clone(), size), (want.clone(), 11));
        assert!(store.contains(&d));
        assert_eq!(store.read(&d).unwrap(), b"hello world");
        assert_eq!(store.size(&d).unwrap(), 11);
        // The same content again is fine, and without an expected digest.
        let mut w = store.writer().unwrap();
        w.write_all(b"hello world").unwrap();
        assert_eq!(w.commit(None).unwrap().0, d);
        store.delete(&d).unwrap();
        assert!(!store.contains(&d));
        store.delete(&d).unwrap();
        assert!(store.writer().is_ok(), "the store still takes blobs after a delete");
        assert!(matches!(store.read(&d), Err(Error::BlobNotFound { .. })));
    }

    fn wrong_digest_leaves_nothing<S: ContentStore>((store, visible): (S, Box<dyn Fn() -> Vec<PathBuf>>)) {
        let mut w = store.writer().unwrap();
        w.write_all(b"not what you expect").unwrap();
        let wrong = Digest::sha256(b"something else");
        let err = w.commit(Some(&wrong)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&wrong));
        assert!(!store.contains(&Digest::sha256(b"not what you expect")));
        assert_eq!(visible(), Vec::<PathBuf>::new());
    }

    fn interrupted_write_leaves_nothing<S: ContentStore>((store, visible): (S, Box<dyn Fn() -> Vec<PathBuf>>)) {
        let mut w = store.writer().unwrap();
        w.write_all(&[7u8; 100_000]).unwrap();
        drop(w);
        let mut w = store.writer().unwrap();
        w.write_all(b"cancelled").unwrap();
        w.cancel();
        assert!(!store.contains(&Digest::sha256(&[7u8; 100_000])));
        assert_eq!(visible(), Vec::<PathBuf>::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    #[test]
    fn local_content_conformance() {
        let dirs = std::sync::Mutex::new(Vec::new());
        testsuite::run(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalContent::open(dir.path()).unwrap();
            let root = dir.path().to_path_buf();
            dirs.lock().unwrap().push(dir);
            (store, Box::new(move || files(&root)))
        });
    }

    #[test]
    fn delete_removes_an_emptied_prefix_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalContent::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"one").unwrap();
        let (d, _) = w.commit(None).unwrap();
        let prefix = store.path(&d).parent().unwrap().to_path_buf();
        store.delete(&d).unwrap();
        assert!(!prefix.exists(), "{} left behind", prefix.display());
        assert!(dir.path().join("blobs/sha256").is_dir());
        // And the same prefix is made again for the next blob.
        let mut w = store.writer().unwrap();
        w.write_all(b"one").unwrap();
        assert_eq!(w.commit(None).unwrap().0, d);
        assert_eq!(store.read(&d).unwrap(), b"one");
    }

    #[test]
    fn open_removes_a_crashed_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalContent::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"partial").unwrap();
        w.flush().unwrap();
        // A crash: the temp file stays, nothing is committed.
        std::mem::forget(w);
        assert_eq!(files(dir.path()).len(), 1);
        LocalContent::open(dir.path()).unwrap();
        assert!(files(dir.path()).is_empty());
    }
}
