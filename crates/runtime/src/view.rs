//! A private view of a container's root filesystem, for `docker cp` and `docker export`:
//! the work runs on a thread of its own that has its own mount namespace and its own root
//! (`unshare(CLONE_FS | CLONE_NEWNS)`, then `chroot` into the container's root filesystem),
//! so every path it opens — symlinks, `..` and all — resolves inside the container, as
//! dockerd's `containerFSView` does (moby `daemon/containerfs_linux.go`).
//!
//! The overlay of a stopped container is mounted in that namespace only, and the container's
//! bind mounts and per-container `/etc` files are bound over their destinations there, so a
//! path under a bind mount reaches the host source as it does inside the container. Nothing
//! of this is visible to the host or the container; the mounts go with the thread.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use crate::error::{Error, io};
use crate::spec::MountSpec;

/// An overlay to mount at the view's root when it is not mounted already.
#[derive(Debug, Clone)]
pub struct OverlaySpec {
    /// The image's snapshots, top layer first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// What a view is made of.
#[derive(Debug, Clone)]
pub struct ViewSpec {
    /// The container's root filesystem mount point (`<container dir>/rootfs`).
    pub rootfs: PathBuf,
    /// Mounted at `rootfs` inside the view when nothing is mounted there (a stopped container).
    pub overlay: OverlaySpec,
    /// Bind mounts and tmpfs mounts, as the container has them. A tmpfs is a fresh private
    /// one, as in dockerd's views: what is written there is seen by nobody else.
    pub mounts: Vec<MountSpec>,
}

/// Runs `f` with the container's root filesystem as `/` (see the module documentation) and
/// returns what it returns. Blocks the calling thread until `f` is done.
pub fn run_in_rootfs<T: Send>(spec: &ViewSpec, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("berth-rootfs-view".into())
            .spawn_scoped(s, || -> Result<T, Error> {
                let old_root = enter(spec)?;
                let out = f();
                leave(&old_root, spec);
                Ok(out)
            })
            .map_err(io("start a thread for", &spec.rootfs))?
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn sys(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> Error {
    let path = path.to_path_buf();
    move |e| Error::Io {
        op,
        path,
        source: e.into(),
    }
}

/// On the view's thread: a namespace of its own, the mounts, then `chroot`. Returns the
/// host's root, to come back to.
fn enter(spec: &ViewSpec) -> Result<OwnedFd, Error> {
    // CLONE_FS: this thread's root and working directory become its own, so the chroot
    // below does not move the daemon's other threads.
    nix::sched::unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
        .map_err(sys("unshare the mount namespace for", &spec.rootfs))?;
    // Nothing mounted here propagates to the host, nor an unmount there to here.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("make private the mounts of", Path::new("/")))?;
    if !mounted_here(&spec.rootfs) {
        let o = &spec.overlay;
        crate::rootfs::mount_overlay(&o.lowers, &o.upper, &o.work, &spec.rootfs)?;
    }
    let root = nix::fcntl::open(
        &spec.rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open", &spec.rootfs))?;
    // SAFETY: open returned a new descriptor that we own.
    let root: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(root) };
    // Shallow destinations first, so `/a` is mounted before `/a/b`.
    let mut mounts: Vec<&MountSpec> = spec.mounts.iter().collect();
    mounts.sort_by_key(|m| destination(m).matches('/').count());
    for m in mounts {
        bind_into(&root, m)?;
    }
    let old_root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open", Path::new("/")))?;
    // SAFETY: open returned a new descriptor that we own.
    let old_root: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(old_root) };
    nix::unistd::fchdir(root.as_raw_fd()).map_err(sys("enter", &spec.rootfs))?;
    nix::unistd::chroot(".").map_err(sys("chroot into", &spec.rootfs))?;
    nix::unistd::chdir("/").map_err(sys("enter", &spec.rootfs))?;
    Ok(old_root)
}

/// Back to the host's root, and the view's mounts undone now (rather than when the
/// namespace goes with the thread), so a start that follows finds the overlay free.
fn leave(old_root: &OwnedFd, spec: &ViewSpec) {
    let back = nix::unistd::fchdir(old_root.as_raw_fd()).and_then(|()| nix::unistd::chroot("."));
    if let Err(e) = back {
        tracing::warn!(rootfs = %spec.rootfs.display(), error = %e, "cannot leave a container's root filesystem view; its namespace goes with its thread");
        return;
    }
    if let Err(e) = nix::mount::umount2(&spec.rootfs, MntFlags::MNT_DETACH) {
        tracing::debug!(rootfs = %spec.rootfs.display(), error = %e, "unmounting the view's root filesystem");
    }
}

fn destination(m: &MountSpec) -> &str {
    match m {
        MountSpec::Bind { destination, .. } | MountSpec::Tmpfs { destination, .. } => destination,
    }
}

/// Whether `path` is a mount point in this thread's mount namespace.
fn mounted_here(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/thread-self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| crate::rootfs::unescape_mountinfo(mp) == want)
}

/// Opens `path` below `root` with every symlink and `..` resolved inside `root`.
fn open_in_root(root: &OwnedFd, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(root.as_fd().as_raw_fd(), path, how)?;
    // SAFETY: openat2 returned a new descriptor that we own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Creates the directories of `path` below `root` that are missing (each resolved inside
/// `root`), and the last one as a directory or, for a file bind mount, an empty file.
fn create_in_root(root: &OwnedFd, path: &str, dir: bool) -> nix::Result<()> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let mut prefix = String::from("/");
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." {
            return Err(nix::errno::Errno::EINVAL);
        }
        let parent = open_in_root(root, &prefix, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        let last = i + 1 == parts.len();
        let made = if last && !dir {
            nix::fcntl::openat(
                Some(parent.as_raw_fd()),
                *part,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(|fd| {
                let _ = nix::unistd::close(fd);
            })
        } else {
            nix::sys::stat::mkdirat(Some(parent.as_raw_fd()), *part, Mode::from_bits_truncate(0o755))
        };
        match made {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        prefix.push_str(part);
        prefix.push('/');
    }
    Ok(())
}

/// Mounts `m` over its destination, found (or created) inside `root`: the mount call gets
/// the destination as a descriptor, so a symlink the container planted cannot send it to
/// the host.
fn bind_into(root: &OwnedFd, m: &MountSpec) -> Result<(), Error> {
    let dest = destination(m);
    let source_is_dir = match m {
        MountSpec::Bind { source, .. } => std::fs::metadata(source).map_or(true, |md| md.is_dir()),
        MountSpec::Tmpfs { .. } => true,
    };
    let target = match open_in_root(root, dest, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => {
            create_in_root(root, dest, source_is_dir).map_err(sys("create the mount point", Path::new(dest)))?;
            open_in_root(root, dest, OFlag::O_PATH).map_err(sys("open the mount point", Path::new(dest)))?
        }
        Err(e) => return Err(sys("open the mount point", Path::new(dest))(e)),
    };
    let at = PathBuf::from(format!("/proc/thread-self/fd/{}", target.as_raw_fd()));
    match m {
        MountSpec::Bind { source, readonly, .. } => {
            nix::mount::mount(
                Some(source.as_path()),
                &at,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys("bind-mount into the view", Path::new(dest)))?;
            if *readonly {
                // The new mount sits on the descriptor's path; reach it afresh.
                let top = open_in_root(root, dest, OFlag::O_PATH).map_err(sys("open the mount", Path::new(dest)))?;
                let at = PathBuf::from(format!("/proc/thread-self/fd/{}", top.as_raw_fd()));
                nix::mount::mount(
                    None::<&str>,
                    &at,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(sys("make read-only in the view", Path::new(dest)))?;
            }
        }
        MountSpec::Tmpfs { .. } => {
            nix::mount::mount(
                Some("tmpfs"),
                &at,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None::<&str>,
            )
            .map_err(sys("mount a tmpfs in the view", Path::new(dest)))?;
        }
    }
    Ok(())
}
