//! Copying a directory tree with its metadata: how a new volume is filled from the image's
//! content at its mount point (dockerd's `copyExistingContents`, continuity's `CopyDir`).
//! Owners, permission bits (set-id bits included), modification times, symlinks, hard
//! links, device nodes and FIFOs are kept; extended attributes are not copied.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::{Error, io};

/// Copies what is in `src` into the directory `dst` (which must exist), then gives `dst`
/// the owner, mode and times of `src`. Nothing is followed: a symlink is copied as one.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), Error> {
    let mut links = HashMap::new();
    copy_dir(src, dst, &mut links)?;
    let meta = std::fs::symlink_metadata(src).map_err(io("stat", src))?;
    apply_metadata(dst, &meta)
}

/// (device, inode) of a file with several links -> where its first copy went.
type Links = HashMap<(u64, u64), std::path::PathBuf>;

fn copy_dir(src: &Path, dst: &Path, links: &mut Links) -> Result<(), Error> {
    for entry in std::fs::read_dir(src).map_err(io("read", src))? {
        let entry = entry.map_err(io("read", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from).map_err(io("stat", &from))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to).map_err(io("create directory", &to))?;
            copy_dir(&from, &to, links)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from).map_err(io("read link", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io("create symlink", &to))?;
        } else {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    std::fs::hard_link(first, &to).map_err(io("link", &to))?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), to.clone());
            }
            if ft.is_file() {
                std::fs::copy(&from, &to).map_err(io("copy", &from))?;
            } else {
                let kind = if ft.is_char_device() {
                    SFlag::S_IFCHR
                } else if ft.is_block_device() {
                    SFlag::S_IFBLK
                } else if ft.is_fifo() {
                    SFlag::S_IFIFO
                } else {
                    SFlag::S_IFSOCK
                };
                nix::sys::stat::mknod(&to, kind, Mode::from_bits_truncate(meta.mode() & 0o7777), meta.rdev())
                    .map_err(|e| io("create node", &to)(e.into()))?;
            }
        }
        apply_metadata(&to, &meta)?;
    }
    Ok(())
}

/// Owner first (a chown clears set-id bits), then mode (not for a symlink, which has none
/// of its own), then times.
fn apply_metadata(path: &Path, meta: &std::fs::Metadata) -> Result<(), Error> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid())).map_err(io("chown", path))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io("chmod", path))?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(None, path, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| io("set times of", path)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_links_and_metadata() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir(s.join("sub")).unwrap();
        std::fs::write(s.join("sub/a.txt"), "hello").unwrap();
        std::fs::set_permissions(s.join("sub/a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::hard_link(s.join("sub/a.txt"), s.join("hard")).unwrap();
        std::os::unix::fs::symlink("sub/a.txt", s.join("link")).unwrap();
        nix::unistd::mkfifo(&s.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o711)).unwrap();
        copy_tree(s, dst.path()).unwrap();
        let d = dst.path();
        assert_eq!(std::fs::read_to_string(d.join("sub/a.txt")).unwrap(), "hello");
        let a = std::fs::metadata(d.join("sub/a.txt")).unwrap();
        assert_eq!(a.mode() & 0o7777, 0o640);
        assert_eq!(a.mtime(), std::fs::metadata(s.join("sub/a.txt")).unwrap().mtime());
        assert_eq!(
            a.ino(),
            std::fs::metadata(d.join("hard")).unwrap().ino(),
            "hard link kept"
        );
        assert_eq!(std::fs::read_link(d.join("link")).unwrap(), Path::new("sub/a.txt"));
        assert!(std::fs::symlink_metadata(d.join("fifo")).unwrap().file_type().is_fifo());
        assert_eq!(
            std::fs::metadata(d).unwrap().mode() & 0o7777,
            0o711,
            "the root takes the source's mode"
        );
    }
}
