//! Safe layer extraction. The rules, each checked per entry:
//! - names are taken relative to the root: a leading `/` or `./` is dropped, `..` is refused;
//! - no parent of an entry may be a symlink (a layer cannot plant `etc -> /etc` and then write
//!   `etc/passwd` through it); missing parents are created as directories;
//! - files are created with `O_EXCL | O_NOFOLLOW`, after removing whatever was at the path;
//! - hardlinks must name a path inside the layer, reached without symlinks;
//! - symlink targets are stored as they are: they are resolved inside the container's root;
//! - character and block devices are refused unless [`ExtractOptions::allow_devices`];
//! - whiteouts (`.wh.NAME`, `.wh..wh..opq`) become overlayfs whiteouts (a 0/0 character
//!   device, the `trusted.overlay.opaque` xattr) or are applied in place.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Gid, Uid};
use tar::EntryType;

use std::rc::Rc;

use crate::error::{Error, io};
use crate::recipe::{Recipe, Recorder, SharedBuilder};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What to do with whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Keep them as overlayfs whiteouts: the layer directory becomes an overlay lower.
    Overlay,
    /// Delete what they name: the layer is applied onto a merged tree.
    Apply,
    /// They are ordinary files: `docker cp` into a container unpacks what it is given.
    Keep,
}

#[derive(Debug, Clone)]
pub struct ExtractOptions {
    pub whiteouts: Whiteouts,
    /// Create character and block devices (root importing a root filesystem on purpose).
    pub allow_devices: bool,
    /// Give entries the owner the layer names (needs root); otherwise they belong to the caller.
    pub same_owner: bool,
    /// Give every entry this owner (uid, gid) instead (`docker cp -a` into a container with a
    /// `User`).
    pub owner: Option<(u32, u32)>,
    /// Refuse an entry that would replace a directory with a non-directory or the reverse
    /// (`noOverwriteDirNonDir`, which the docker CLI always sends with `docker cp`).
    pub no_overwrite_dir_non_dir: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            whiteouts: Whiteouts::Overlay,
            allow_devices: false,
            same_owner: Uid::effective().is_root(),
            owner: None,
            no_overwrite_dir_non_dir: false,
        }
    }
}

/// What an extraction wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

/// The entry name as components below the root, or why it is refused.
fn components(name: &str) -> Result<Vec<&str>, Error> {
    let mut out = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::UnsafeEntry {
                    entry: name.to_owned(),
                    reason: "'..' in the name",
                });
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Makes sure every parent of `parts` under `root` is a real directory (creating missing
/// ones) and returns the full path.
fn parent_dirs(root: &Path, parts: &[&str], entry: &str) -> Result<PathBuf, Error> {
    let mut p = root.to_path_buf();
    for c in &parts[..parts.len().saturating_sub(1)] {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::ThroughSymlink {
                    entry: entry.to_owned(),
                    symlink: p.display().to_string(),
                });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::UnsafeEntry {
                    entry: entry.to_owned(),
                    reason: "a parent is not a directory",
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p).map_err(io("create directory", &p))?;
            }
            Err(e) => {
                return Err(Error::Io {
                    op: "inspect",
                    path: p,
                    source: e,
                });
            }
        }
    }
    if let Some(last) = parts.last() {
        p.push(last);
    }
    Ok(p)
}

/// Removes whatever is at `p` (not following symlinks), unless it is a directory and `keep_dir`.
/// A recipe being recorded learns first, so it can keep the contents it refers to.
fn clear(p: &Path, keep_dir: bool, rec: Option<&Rec<'_>>) -> Result<(), Error> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) => {
            if let Some(rec) = rec {
                rec.before_clear(p)?;
            }
            if m.is_dir() {
                fs::remove_dir_all(p).map_err(io("remove", p))
            } else {
                fs::remove_file(p).map_err(io("remove", p))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            op: "inspect",
            path: p.to_owned(),
            source: e,
        }),
    }
}

/// moby's `NoOverwriteDirNonDir`: an entry may not turn a directory into something else, nor
/// something else into a directory.
fn check_overwrite(p: &Path, entry_is_dir: bool, entry: &str) -> Result<(), Error> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() && !entry_is_dir => Err(Error::Overwrite {
            entry: entry.to_owned(),
            reason: "cannot overwrite a directory with a non-directory",
        }),
        Ok(m) if !m.is_dir() && entry_is_dir => Err(Error::Overwrite {
            entry: entry.to_owned(),
            reason: "cannot overwrite a non-directory with a directory",
        }),
        _ => Ok(()),
    }
}

fn mknod_at(p: &Path, kind: SFlag, perm: u32, major: u64, minor: u64) -> Result<(), Error> {
    mknod(p, kind, Mode::from_bits_truncate(perm), makedev(major, minor)).map_err(|e| Error::Io {
        op: "mknod",
        path: p.to_owned(),
        source: e.into(),
    })
}

/// Unpacks the tar stream `layer` into `root` (which must exist). Stops at the first unsafe
/// entry; the caller removes the partly written directory (snapshots are extracted into a
/// temporary directory and renamed into place only when this returns `Ok`).
pub fn extract<R: Read>(layer: R, root: &Path, opts: &ExtractOptions) -> Result<ExtractStats, Error> {
    extract_inner(layer, root, opts, None)
}

/// [`extract`], also recording the [`Recipe`] that rebuilds the exact stream from `root`.
/// Reads `layer` to its end (the tar end blocks belong to the stream too).
pub(crate) fn extract_recorded<R: Read>(
    layer: R,
    root: &Path,
    opts: &ExtractOptions,
) -> Result<(ExtractStats, Recipe), Error> {
    let builder = SharedBuilder::default();
    let mut rec = Recorder {
        inner: layer,
        builder: builder.clone(),
    };
    let hook = Rec {
        builder: &builder,
        root,
    };
    let stats = extract_inner(&mut rec, root, opts, Some(&hook))?;
    io::copy(&mut rec, &mut io::sink()).map_err(|source| Error::Read { source })?;
    drop(rec);
    let builder = Rc::try_unwrap(builder).expect("the recorder is gone").into_inner();
    Ok((stats, builder.finish()))
}

/// The recipe being recorded, and the root it is relative to.
struct Rec<'a> {
    builder: &'a SharedBuilder,
    root: &'a Path,
}

impl Rec<'_> {
    fn rel<'p>(&self, p: &'p Path) -> &'p Path {
        p.strip_prefix(self.root).expect("extraction stays below its root")
    }

    /// `p` is about to be removed or replaced.
    fn before_clear(&self, p: &Path) -> Result<(), Error> {
        self.builder.borrow_mut().before_clear(self.root, self.rel(p))
    }
}

/// Files at least this big have their write-back started as soon as they are written, so the
/// disk works while the rest of the layer unpacks and the final sync has little left to do.
const EARLY_WRITEBACK: u64 = 1 << 20;

/// Copies a file's contents in large writes (the tar reader hands out what the stream has).
fn copy_file(src: &mut impl Read, f: &mut fs::File, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        f.write_all(&buf[..filled])?;
        total += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    if total >= EARLY_WRITEBACK {
        start_writeback(f);
    }
    Ok(total)
}

/// Asks the kernel to start writing `f`'s dirty pages now, without waiting for them.
fn start_writeback(f: &fs::File) {
    start_writeback_range(f, 0, 0);
}

/// [`start_writeback`] for `len` bytes from `offset` (0: to the end).
pub(crate) fn start_writeback_range(f: &fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; it reads no memory of ours.
    let rc = unsafe {
        nix::libc::sync_file_range(
            f.as_raw_fd(),
            offset as nix::libc::off64_t,
            len as nix::libc::off64_t,
            nix::libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "sync_file_range failed; the final sync writes the file");
    }
}

fn extract_inner<R: Read>(
    layer: R,
    root: &Path,
    opts: &ExtractOptions,
    rec: Option<&Rec<'_>>,
) -> Result<ExtractStats, Error> {
    let mut buf = vec![0u8; 1 << 20];
    let mut archive = tar::Archive::new(layer);
    let mut stats = ExtractStats::default();
    // Directory times are set last: creating entries inside a directory changes its mtime.
    let mut dir_times = Vec::new();
    for entry in archive.entries().map_err(|source| Error::Read { source })? {
        let mut entry = entry.map_err(|source| Error::Read { source })?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts = components(&name)?;
        if parts.is_empty() {
            continue; // the root itself
        }
        let base = *parts.last().expect("non-empty");
        let kind = entry.header().entry_type();
        stats.entries += 1;

        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX)
            && opts.whiteouts != Whiteouts::Keep
        {
            stats.whiteouts += 1;
            let dir = parent_dirs(root, &parts, &name)?;
            let dir = dir.parent().expect("has a parent").to_path_buf();
            match (base == OPAQUE, opts.whiteouts) {
                (true, Whiteouts::Overlay) => {
                    xattr::set(&dir, "trusted.overlay.opaque", b"y").map_err(io("set opaque xattr on", &dir))?
                }
                (true, Whiteouts::Apply) => {
                    for child in fs::read_dir(&dir).map_err(io("read", &dir))? {
                        let child = child.map_err(io("read", &dir))?;
                        clear(&child.path(), false, rec)?;
                    }
                }
                (false, _) if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX) => {
                    return Err(Error::UnsafeEntry {
                        entry: name,
                        reason: "malformed whiteout",
                    });
                }
                (false, Whiteouts::Overlay) => {
                    let p = dir.join(hidden);
                    clear(&p, false, rec)?;
                    mknod_at(&p, SFlag::S_IFCHR, 0, 0, 0)?;
                }
                (false, Whiteouts::Apply) => clear(&dir.join(hidden), false, rec)?,
                (_, Whiteouts::Keep) => unreachable!("kept whiteouts are unpacked as files"),
            }
            continue;
        }

        let path = parent_dirs(root, &parts, &name)?;
        if opts.no_overwrite_dir_non_dir {
            check_overwrite(&path, kind == EntryType::Directory, &name)?;
        }
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        match kind {
            EntryType::Directory => {
                clear(&path, true, rec)?;
                if !path.is_dir() {
                    fs::create_dir(&path).map_err(io("create directory", &path))?;
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                clear(&path, false, rec)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io("create", &path))?;
                if let Some(rec) = rec {
                    rec.builder.borrow_mut().begin_payload();
                }
                let n = copy_file(&mut entry, &mut f, &mut buf).map_err(|source| Error::Read { source })?;
                if let Some(rec) = rec {
                    rec.builder.borrow_mut().end_payload(rec.rel(&path).to_path_buf(), n);
                }
                stats.bytes += n;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|source| Error::Read { source })?
                    .unwrap_or_default();
                clear(&path, false, rec)?;
                std::os::unix::fs::symlink(&target, &path).map_err(io("create symlink", &path))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let tparts = components(&target).map_err(|_| Error::HardlinkTarget {
                    entry: name.clone(),
                    target: target.clone(),
                })?;
                let tpath = parent_dirs(root, &tparts, &target).map_err(|_| Error::HardlinkTarget {
                    entry: name.clone(),
                    target: target.clone(),
                })?;
                match fs::symlink_metadata(&tpath) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(Error::HardlinkTarget { entry: name, target }),
                }
                clear(&path, false, rec)?;
                fs::hard_link(&tpath, &path).map_err(io("create hardlink", &path))?;
                continue; // shares the target's metadata
            }
            EntryType::Char | EntryType::Block => {
                if !opts.allow_devices {
                    return Err(Error::DeviceNode { entry: name });
                }
                let (major, minor) = (
                    header.device_major().ok().flatten().unwrap_or(0) as u64,
                    header.device_minor().ok().flatten().unwrap_or(0) as u64,
                );
                let kind = if kind == EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                clear(&path, false, rec)?;
                mknod_at(&path, kind, mode, major, minor)?;
            }
            EntryType::Fifo => {
                clear(&path, false, rec)?;
                mknod_at(&path, SFlag::S_IFIFO, mode, 0, 0)?;
            }
            other => {
                tracing::debug!(entry = %name, kind = ?other, "skipping tar entry of unsupported type");
                continue;
            }
        }

        if opts.same_owner || opts.owner.is_some() {
            let (uid, gid) = opts
                .owner
                .unwrap_or((header.uid().unwrap_or(0) as u32, header.gid().unwrap_or(0) as u32));
            nix::unistd::fchownat(
                None,
                &path,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::Io {
                op: "chown",
                path: path.clone(),
                source: e.into(),
            })?;
        }
        if kind != EntryType::Symlink {
            // After chown, which clears setuid bits.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io("chmod", &path))?;
        }
        if let Some(exts) = entry.pax_extensions().ok().flatten() {
            for ext in exts.flatten() {
                if let (Ok(key), value) = (ext.key(), ext.value_bytes())
                    && let Some(attr) = key.strip_prefix("SCHILY.xattr.")
                    && let Err(e) = xattr::set(&path, attr, value)
                {
                    tracing::warn!(entry = %name, xattr = attr, error = %e, "could not set extended attribute");
                }
            }
        }
        let mtime = filetime::FileTime::from_unix_time(header.mtime().unwrap_or(0) as i64, 0);
        if kind == EntryType::Directory {
            dir_times.push((path, mtime));
        } else {
            filetime::set_symlink_file_times(&path, mtime, mtime).map_err(io("set times on", &path))?;
        }
    }
    for (p, t) in dir_times.into_iter().rev() {
        // A later entry may have replaced the directory (or one above it).
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            filetime::set_symlink_file_times(&p, t, t).map_err(io("set times on", &p))?;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// Tar entries written with raw names, so hostile ones (`../x`) can be made.
    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Char(&'a str),
    }

    fn tar(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, kind, data, link): (&str, EntryType, &[u8], Option<&str>) = match e {
                E::File(n, d) => (n, EntryType::Regular, d, None),
                E::Dir(n) => (n, EntryType::Directory, b"", None),
                E::Symlink(n, t) => (n, EntryType::Symlink, b"", Some(t)),
                E::Hardlink(n, t) => (n, EntryType::Link, b"", Some(t)),
                E::Char(n) => (n, EntryType::Char, b"", None),
            };
            let raw = h.as_gnu_mut().expect("gnu header");
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    struct Scene {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn scene() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("passwd"), b"untouched").unwrap();
        Scene {
            _dir: dir,
            root,
            outside,
        }
    }

    fn run(s: &Scene, entries: &[E]) -> Result<ExtractStats, Error> {
        extract(
            &tar(entries)[..],
            &s.root,
            &ExtractOptions {
                same_owner: false,
                ..Default::default()
            },
        )
    }

    fn assert_outside_untouched(s: &Scene) {
        let names: Vec<_> = fs::read_dir(&s.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("passwd")],
            "something was written outside the root"
        );
        assert_eq!(fs::read(s.outside.join("passwd")).unwrap(), b"untouched");
    }

    #[test]
    fn plain_layer_unpacks() {
        let s = scene();
        let stats = run(
            &s,
            &[
                E::Dir("./bin/"),
                E::File("./bin/busybox", b"ELF"),
                E::Symlink("bin/sh", "busybox"),
                E::Symlink("abs", "/etc/passwd"),
                E::Hardlink("bin/ls", "bin/busybox"),
                E::File("/etc/hostname", b"h"),
            ],
        )
        .unwrap();
        assert_eq!(stats.entries, 6);
        assert_eq!(fs::read(s.root.join("bin/ls")).unwrap(), b"ELF");
        assert_eq!(fs::read_link(s.root.join("bin/sh")).unwrap(), Path::new("busybox"));
        assert_eq!(
            fs::read_link(s.root.join("abs")).unwrap(),
            Path::new("/etc/passwd"),
            "kept as written"
        );
        assert_eq!(
            fs::read(s.root.join("etc/hostname")).unwrap(),
            b"h",
            "absolute name lands inside the root"
        );
    }

    #[test]
    fn dotdot_names_are_refused() {
        let s = scene();
        let err = run(&s, &[E::File("../outside/passwd", b"pwned")]).unwrap_err();
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
        let err = run(&s, &[E::File("a/../../outside/x", b"pwned")]).unwrap_err();
        assert!(err.to_string().contains("'..'"), "{err}");
        assert_outside_untouched(&s);
    }

    #[test]
    fn write_through_absolute_symlink_is_refused() {
        let s = scene();
        let target = s.outside.to_str().unwrap();
        let err = run(&s, &[E::Symlink("etc", target), E::File("etc/passwd", b"pwned")]).unwrap_err();
        assert!(matches!(err, Error::ThroughSymlink { .. }), "{err}");
        let err = run(&s, &[E::Symlink("up", "../outside"), E::File("up/new", b"pwned")]).unwrap_err();
        assert!(matches!(err, Error::ThroughSymlink { .. }), "{err}");
        assert_outside_untouched(&s);
    }

    #[test]
    fn file_replacing_a_symlink_does_not_follow_it() {
        let s = scene();
        let target = s.outside.join("passwd");
        run(
            &s,
            &[
                E::Symlink("passwd", target.to_str().unwrap()),
                E::File("passwd", b"inside"),
            ],
        )
        .unwrap();
        assert_eq!(fs::read(s.root.join("passwd")).unwrap(), b"inside");
        assert_outside_untouched(&s);
    }

    #[test]
    fn hardlinks_out_of_the_root_are_refused() {
        let s = scene();
        for target in ["../outside/passwd", "/etc/shadow", "missing"] {
            let err = run(&s, &[E::Hardlink("h", target)]).unwrap_err();
            assert!(matches!(err, Error::HardlinkTarget { .. }), "{target}: {err}");
        }
        let abs = s.outside.to_str().unwrap().to_owned();
        let err = run(&s, &[E::Symlink("l", &abs), E::Hardlink("h", "l/passwd")]).unwrap_err();
        assert!(matches!(err, Error::HardlinkTarget { .. }), "{err}");
        assert_outside_untouched(&s);
    }

    #[test]
    fn device_nodes_are_refused_by_default() {
        let s = scene();
        let err = run(&s, &[E::Char("dev/null")]).unwrap_err();
        assert!(matches!(err, Error::DeviceNode { .. }), "{err}");
        assert!(!s.root.join("dev/null").exists());
    }

    #[test]
    fn whiteouts_applied_in_place() {
        let s = scene();
        run(
            &s,
            &[E::File("d/keep", b"k"), E::File("d/gone", b"g"), E::File("o/old", b"o")],
        )
        .unwrap();
        let opts = ExtractOptions {
            whiteouts: Whiteouts::Apply,
            same_owner: false,
            ..Default::default()
        };
        let layer = tar(&[
            E::File("d/.wh.gone", b""),
            E::File("o/.wh..wh..opq", b""),
            E::File("o/new", b"n"),
        ]);
        let st = extract(&layer[..], &s.root, &opts).unwrap();
        assert_eq!(st.whiteouts, 2);
        assert!(s.root.join("d/keep").exists() && !s.root.join("d/gone").exists());
        assert!(!s.root.join("o/old").exists() && s.root.join("o/new").exists());
        let err = extract(&tar(&[E::File("x/.wh.", b"")])[..], &s.root, &opts).unwrap_err();
        assert!(err.to_string().contains("malformed whiteout"), "{err}");
    }

    #[test]
    fn whiteouts_as_overlay_lowers() {
        if !berth_testkit::require(&[berth_testkit::Prereq::Root]) {
            return;
        }
        let s = scene();
        run(&s, &[E::File("d/.wh.gone", b""), E::File("o/.wh..wh..opq", b"")]).unwrap();
        let m = fs::symlink_metadata(s.root.join("d/gone")).unwrap();
        assert!(m.file_type().is_char_device(), "whiteout is a character device");
        assert_eq!(std::os::unix::fs::MetadataExt::rdev(&m), 0);
        assert_eq!(
            xattr::get(s.root.join("o"), "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
    }
}
