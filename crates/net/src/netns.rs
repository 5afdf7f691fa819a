//! Persistent network namespaces: a new namespace is pinned by bind-mounting its nsfs file
//! onto a file of its own (as `ip netns add` does), so it outlives the thread that made it
//! and every process in it, and libcontainer joins it by path.
//!
//! ```text
//! <dir>/                 a private bind mount of itself, made by the first `create` in it
//! └── <name>             an empty file with the namespace's nsfs file bind-mounted on it;
//!                        `create` makes it, `remove` unmounts and deletes it
//! ```
//!
//! Namespace switches happen only on threads made for the purpose (`create`, `run`): a
//! thread of the caller never changes namespace, so a tokio worker cannot end up in a
//! container's namespace.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

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
        let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Err(Error::Invalid(format!(
                "network namespace path {} has no parent directory",
                path.display()
            )));
        };
        make_private_mount(dir)?;

        // The mount point: an empty file, as iproute2 makes it. `create_new` refuses to reuse
        // a file that may already pin another namespace.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)
            .map_err(|source| Error::Io {
                op: "create network namespace file",
                path: path.to_path_buf(),
                source,
            })?;

        match pin_new_namespace(path).and_then(|()| Netns::open(path)) {
            Ok(ns) => Ok(ns),
            Err(e) => {
                if let Err(cleanup) = remove(path) {
                    tracing::warn!(netns = %path.display(), error = %cleanup, "cleaning up a namespace that failed to be created");
                }
                Err(e)
            }
        }
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
    /// change namespace. A panic in `f` is resumed on the caller's thread.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("berth-netns".into())
                .spawn_scoped(scope, || {
                    nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Netns {
                        path: self.path.clone(),
                        reason: errno.desc().to_string(),
                    })?;
                    // The thread ends after `f`: nothing else ever runs in the namespace on it.
                    Ok(f())
                })
                .map_err(|e| Error::Netns {
                    path: self.path.clone(),
                    reason: format!("cannot start a thread: {e}"),
                })?;
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
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
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (unpinned already, or the pin failed); ENOENT: no file.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(errno) => {
            return Err(Error::Io {
                op: "unmount network namespace",
                path: path.to_path_buf(),
                source: io::Error::from(errno),
            });
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            op: "remove network namespace file",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// On a thread of its own: a new network namespace, bind-mounted onto `path`. The thread
/// ends right after, so the namespace is held by the mount alone.
fn pin_new_namespace(path: &Path) -> Result<()> {
    let pin = || -> Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Netns {
            path: path.to_path_buf(),
            reason: format!("unshare: {}", errno.desc()),
        })?;
        // `thread-self`, not `self`: only this thread is in the new namespace.
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| Error::Io {
            op: "bind-mount a new network namespace onto",
            path: path.to_path_buf(),
            source: io::Error::from(errno),
        })
    };
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("berth-netns-new".into())
            .spawn_scoped(scope, pin)
            .map_err(|e| Error::Netns {
                path: path.to_path_buf(),
                reason: format!("cannot start a thread: {e}"),
            })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The directories made private mounts by this process (or found to be mount points).
static PRIVATE_DIRS: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Makes `dir` a private bind mount of itself, unless it is a mount point already (then it
/// is left as it is: it is ours from an earlier run, or set up by the site). Checked once per
/// directory and process; the lock makes concurrent first calls mount it once.
fn make_private_mount(dir: &Path) -> Result<()> {
    let mut known = PRIVATE_DIRS.lock().unwrap_or_else(PoisonError::into_inner);
    let known = known.get_or_insert_with(HashSet::new);
    if known.contains(dir) {
        return Ok(());
    }
    let canonical = std::fs::canonicalize(dir).map_err(|source| Error::Io {
        op: "resolve network namespace directory",
        path: dir.to_path_buf(),
        source,
    })?;
    if !is_mount_point(&canonical)? {
        let io_err = |op: &'static str, errno: Errno| Error::Io {
            op,
            path: canonical.clone(),
            source: io::Error::from(errno),
        };
        nix::mount::mount(
            Some(&canonical),
            &canonical,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|errno| io_err("bind-mount onto itself", errno))?;
        if let Err(errno) = nix::mount::mount(
            None::<&str>,
            &canonical,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        ) {
            let _ = nix::mount::umount2(&canonical, MntFlags::MNT_DETACH);
            return Err(io_err("make a private mount", errno));
        }
        tracing::debug!(dir = %canonical.display(), "made the network namespace directory a private mount");
    }
    known.insert(dir.to_path_buf());
    Ok(())
}

/// Whether `dir` (canonical) is the mount point of a mount in this mount namespace.
fn is_mount_point(dir: &Path) -> Result<bool> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let mountinfo = std::fs::read_to_string(MOUNTINFO).map_err(|source| Error::Io {
        op: "read",
        path: PathBuf::from(MOUNTINFO),
        source,
    })?;
    Ok(mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| Path::new(&unescape_mountinfo(mount_point)) == dir))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::unescape_mountinfo;

    #[test]
    fn mountinfo_escapes() {
        for (field, want) in [
            ("/run/netns", "/run/netns"),
            ("/tmp/a\\040b", "/tmp/a b"),
            ("/tmp/back\\134slash", "/tmp/back\\slash"),
            ("/tmp/trailing\\04", "/tmp/trailing\\04"),
        ] {
            assert_eq!(unescape_mountinfo(field), want, "{field}");
        }
    }
}
