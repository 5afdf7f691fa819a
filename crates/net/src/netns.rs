//! Persistent network namespaces: a new namespace is pinned by bind-mounting its nsfs file
//! onto a file of its own (as `ip netns add` does), so it outlives the thread that made it
//! and every process in it, and libcontainer joins it by path.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A pinned network namespace.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Creates a new network namespace and pins it at `path`. The parent directory is made a
    /// private mount of itself first (once), so the pin does not propagate to other mount
    /// namespaces (containers with `/run` bind mounts would keep it alive). Nothing is left
    /// behind on failure.
    pub fn create(path: &Path) -> Result<Netns> {
        let _ = path;
        Err(Error::Invalid("berth: Netns::create is not built yet".into()))
    }

    /// Opens a namespace pinned earlier (after a daemon restart).
    pub fn open(path: &Path) -> Result<Netns> {
        let file = File::open(path).map_err(|source| Error::Io {
            op: "open network namespace",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Netns {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a new thread that has entered this namespace; the caller's threads never
    /// change namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let _ = f;
        Err(Error::Invalid("berth: Netns::run is not built yet".into()))
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Unpins and removes the namespace file at `path`; a missing one is fine. The namespace
/// itself goes when its last process exits.
pub fn remove(path: &Path) -> Result<()> {
    let _ = path;
    Err(Error::Invalid("berth: netns::remove is not built yet".into()))
}
