//! Zero-copy blob serving over plain TCP. A blob is handed to hyper as `Bytes` that borrow a
//! read-only memory map of its file ([`MappedFile`]), and every live map is registered here
//! with its file and offset. The connection wrapper [`ZeroCopyTcp`] checks each buffer hyper
//! asks it to write: a buffer inside a registered map is sent with `sendfile(2)` from the
//! file instead (the same bytes, never copied through user space, and the map's pages never
//! touched); anything else (headers, manifests, TLS) is written as usual.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

struct Region {
    len: usize,
    file: Arc<File>,
    offset: u64,
}

/// Live maps by start address.
static REGIONS: Mutex<BTreeMap<usize, Region>> = Mutex::new(BTreeMap::new());

/// The file and offset holding `len` bytes at address `at`, if they lie inside one map.
fn lookup(at: usize, len: usize) -> Option<(Arc<File>, u64)> {
    let regions = REGIONS.lock().expect("zero-copy regions poisoned");
    let (&start, r) = regions.range(..=at).next_back()?;
    (at + len <= start + r.len).then(|| (r.file.clone(), r.offset + (at - start) as u64))
}

/// A read-only map of `len` bytes of `file` from `offset`, registered for zero-copy sends
/// while it lives.
pub(crate) struct MappedFile {
    map: memmap2::Mmap,
}

impl MappedFile {
    pub(crate) fn new(file: File, offset: u64, len: usize) -> io::Result<MappedFile> {
        // SAFETY: a committed blob is never written again: it is written under a temporary
        // name, verified, renamed into place, and later only unlinked by GC, which leaves
        // existing maps intact. So the mapped bytes cannot change or vanish (no SIGBUS).
        let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len).map(&file)? };
        let _ = map.advise(memmap2::Advice::Sequential);
        let region = Region {
            len,
            file: Arc::new(file),
            offset,
        };
        REGIONS
            .lock()
            .expect("zero-copy regions poisoned")
            .insert(map.as_ptr() as usize, region);
        Ok(MappedFile { map })
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        REGIONS
            .lock()
            .expect("zero-copy regions poisoned")
            .remove(&(self.map.as_ptr() as usize));
    }
}

/// A plain TCP connection that sends mapped blob bytes with `sendfile(2)`.
pub(crate) struct ZeroCopyTcp(pub(crate) TcpStream);

impl ZeroCopyTcp {
    fn poll_sendfile(&self, cx: &mut Context<'_>, file: &File, offset: u64, len: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            let sent = self.0.try_io(Interest::WRITABLE, || {
                let mut off = offset as i64;
                nix::sys::sendfile::sendfile64(&self.0, file, Some(&mut off), len).map_err(io::Error::from)
            });
            match sent {
                Ok(n) => return Poll::Ready(Ok(n)),
                // Readiness was stale: try_io cleared it; wait for the next one.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for ZeroCopyTcp {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyTcp {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some((file, offset)) = lookup(buf.as_ptr() as usize, buf.len()) {
            return self.poll_sendfile(cx, &file, offset, buf.len());
        }
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let bufs: Vec<&io::IoSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).collect();
        let Some(first) = bufs.first() else {
            return Poll::Ready(Ok(0));
        };
        if let Some((file, offset)) = lookup(first.as_ptr() as usize, first.len()) {
            return self.poll_sendfile(cx, &file, offset, first.len());
        }
        // Write the unmapped buffers up to the first mapped one in one writev.
        let upto = bufs
            .iter()
            .position(|b| lookup(b.as_ptr() as usize, b.len()).is_some())
            .unwrap_or(bufs.len());
        let plain: Vec<io::IoSlice<'_>> = bufs[..upto].iter().map(|b| io::IoSlice::new(b)).collect();
        Pin::new(&mut self.0).poll_write_vectored(cx, &plain)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_register_their_file_offsets_while_alive() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 3 * 4096 + 100]).unwrap();
        let m = MappedFile::new(f, 4096 + 10, 2 * 4096).unwrap();
        let base = m.as_ref().as_ptr() as usize;
        assert_eq!(m.as_ref().len(), 2 * 4096);
        assert_eq!(lookup(base, 10).map(|(_, o)| o), Some(4096 + 10));
        assert_eq!(lookup(base + 100, 4096).map(|(_, o)| o), Some(4096 + 110));
        assert!(lookup(base + 100, 2 * 4096).is_none(), "runs past the end of the map");
        assert!(lookup(base.wrapping_sub(1), 1).is_none() || base == 0);
        drop(m);
        assert!(lookup(base, 10).is_none(), "unregistered on drop");
    }
}
