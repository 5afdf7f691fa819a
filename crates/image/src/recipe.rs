//! Layer recipes: how to rebuild a layer's exact tar stream from its unpacked snapshot.
//!
//! An import unpacks a tarball and keeps no copy of it (what dockerd's tar-split does): the
//! recipe records every byte of the stream except regular files' contents, which it names
//! by their path in the snapshot. Rebuilding reads them back; the caller checks the result
//! against the layer's diff ID, so a snapshot changed behind the store's back is caught.
//!
//! File format (`snapshots/<chain>.recipe`): the magic line, then records until the end:
//! `0, u64 len, bytes` (raw stream bytes) or `1, u64 len, u32 path len, path` (a file's
//! contents, `len` bytes, read from `path` below the snapshot).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::error::{Error, io};

const MAGIC: &[u8] = b"berth-layer-recipe 1\n";
const RAW: u8 = 0;
const FILE: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Raw(Vec<u8>),
    /// `len` bytes from the file at this path (relative to the snapshot).
    File(PathBuf, u64),
}

/// A recipe being recorded while a layer unpacks; shared by the [`Recorder`] that sees the
/// stream and the extraction loop that knows which bytes are file contents.
#[derive(Debug, Default)]
pub(crate) struct RecipeBuilder {
    segs: Vec<Seg>,
    /// Bytes read now are a file's contents: not recorded.
    payload: bool,
    /// Which segments read from each path, so a later entry that replaces or removes the
    /// path can inline the contents first.
    by_path: BTreeMap<PathBuf, Vec<usize>>,
}

pub(crate) type SharedBuilder = Rc<RefCell<RecipeBuilder>>;

impl RecipeBuilder {
    fn record(&mut self, bytes: &[u8]) {
        if self.payload || bytes.is_empty() {
            return;
        }
        match self.segs.last_mut() {
            Some(Seg::Raw(v)) => v.extend_from_slice(bytes),
            _ => self.segs.push(Seg::Raw(bytes.to_vec())),
        }
    }

    pub(crate) fn begin_payload(&mut self) {
        self.payload = true;
    }

    /// Ends a file's contents: `len` bytes, now at `rel` below the snapshot.
    pub(crate) fn end_payload(&mut self, rel: PathBuf, len: u64) {
        self.payload = false;
        if len == 0 {
            return;
        }
        self.by_path.entry(rel.clone()).or_default().push(self.segs.len());
        self.segs.push(Seg::File(rel, len));
    }

    /// About to remove or replace what is at `rel` (`root` is the snapshot): the contents of
    /// every recorded file at or below it are copied into the recipe first.
    pub(crate) fn before_clear(&mut self, root: &Path, rel: &Path) -> Result<(), Error> {
        let hit: Vec<PathBuf> = self
            .by_path
            .range(rel.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(rel))
            .map(|(p, _)| p.clone())
            .collect();
        for p in hit {
            let path = root.join(&p);
            let bytes = fs::read(&path).map_err(io("read", &path))?;
            for i in self.by_path.remove(&p).unwrap_or_default() {
                if let Seg::File(_, len) = &self.segs[i] {
                    let len = *len as usize;
                    if bytes.len() < len {
                        return Err(Error::Io {
                            op: "record",
                            path,
                            source: io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its tar entry"),
                        });
                    }
                    self.segs[i] = Seg::Raw(bytes[..len].to_vec());
                }
            }
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Recipe {
        Recipe { segs: self.segs }
    }
}

/// Passes the stream through, recording what the builder says is not file contents.
pub(crate) struct Recorder<R> {
    pub(crate) inner: R,
    pub(crate) builder: SharedBuilder,
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.builder.borrow_mut().record(&buf[..n]);
        Ok(n)
    }
}

/// A finished recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipe {
    segs: Vec<Seg>,
}

impl Recipe {
    /// Writes the recipe to `path` durably (temp file, fsync, rename; the caller fsyncs the
    /// directory).
    pub(crate) fn save(&self, path: &Path) -> Result<(), Error> {
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let file = File::create(&tmp).map_err(io("create", &tmp))?;
            let mut w = BufWriter::with_capacity(1 << 16, file);
            let write = |w: &mut BufWriter<File>, b: &[u8]| w.write_all(b).map_err(io("write", &tmp));
            write(&mut w, MAGIC)?;
            for seg in &self.segs {
                match seg {
                    Seg::Raw(bytes) => {
                        write(&mut w, &[RAW])?;
                        write(&mut w, &(bytes.len() as u64).to_le_bytes())?;
                        write(&mut w, bytes)?;
                    }
                    Seg::File(p, len) => {
                        let name = p.as_os_str().as_bytes();
                        write(&mut w, &[FILE])?;
                        write(&mut w, &len.to_le_bytes())?;
                        write(&mut w, &(name.len() as u32).to_le_bytes())?;
                        write(&mut w, name)?;
                    }
                }
            }
            let file = w.into_inner().map_err(|e| io("write", &tmp)(e.into_error()))?;
            file.sync_all().map_err(io("fsync", &tmp))?;
            fs::rename(&tmp, path).map_err(io("rename", path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub(crate) fn open(path: &Path) -> Result<Recipe, Error> {
        let bad = |what: &str| Error::Io {
            op: "read layer recipe",
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, what.to_owned()),
        };
        let mut r = BufReader::new(File::open(path).map_err(io("open", path))?);
        let mut magic = vec![0u8; MAGIC.len()];
        r.read_exact(&mut magic).map_err(io("read", path))?;
        if magic != MAGIC {
            return Err(bad("not a berth layer recipe"));
        }
        let mut segs = Vec::new();
        let mut tag = [0u8; 1];
        loop {
            if r.read(&mut tag).map_err(io("read", path))? == 0 {
                break;
            }
            let mut n8 = [0u8; 8];
            r.read_exact(&mut n8).map_err(io("read", path))?;
            let len = u64::from_le_bytes(n8);
            match tag[0] {
                RAW => {
                    let mut bytes = Vec::new();
                    (&mut r).take(len).read_to_end(&mut bytes).map_err(io("read", path))?;
                    if bytes.len() as u64 != len {
                        return Err(bad("truncated"));
                    }
                    segs.push(Seg::Raw(bytes));
                }
                FILE => {
                    let mut n4 = [0u8; 4];
                    r.read_exact(&mut n4).map_err(io("read", path))?;
                    let mut name = vec![0u8; u32::from_le_bytes(n4) as usize];
                    r.read_exact(&mut name).map_err(io("read", path))?;
                    let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&name));
                    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                        return Err(bad("a path leaves the snapshot"));
                    }
                    segs.push(Seg::File(rel, len));
                }
                _ => return Err(bad("unknown record")),
            }
        }
        Ok(Recipe { segs })
    }

    /// The layer's tar stream, rebuilt from the snapshot at `root`.
    pub(crate) fn reader(self, root: PathBuf) -> RecipeReader {
        RecipeReader {
            segs: self.segs.into_iter(),
            root,
            cur: None,
        }
    }
}

enum Cur {
    Raw(io::Cursor<Vec<u8>>),
    File(io::Take<File>, PathBuf),
}

/// Streams a recipe: raw bytes as recorded, file contents from the snapshot.
pub(crate) struct RecipeReader {
    segs: std::vec::IntoIter<Seg>,
    root: PathBuf,
    cur: Option<Cur>,
}

impl Read for RecipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = match &mut self.cur {
                None => match self.segs.next() {
                    None => return Ok(0),
                    Some(Seg::Raw(bytes)) => {
                        self.cur = Some(Cur::Raw(io::Cursor::new(bytes)));
                        continue;
                    }
                    Some(Seg::File(rel, len)) => {
                        let path = self.root.join(&rel);
                        let file = OpenOptions::new()
                            .read(true)
                            .custom_flags(nix::libc::O_NOFOLLOW)
                            .open(&path)
                            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
                        self.cur = Some(Cur::File(file.take(len), path));
                        continue;
                    }
                },
                Some(Cur::Raw(c)) => c.read(buf)?,
                Some(Cur::File(f, path)) => {
                    let n = f.read(buf)?;
                    if n == 0 && f.limit() > 0 && !buf.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{} is shorter than the layer says", path.display()),
                        ));
                    }
                    n
                }
            };
            if n == 0 && !buf.is_empty() {
                self.cur = None;
                continue;
            }
            return Ok(n);
        }
    }
}
