//! Tarballs of directory trees as dockerd writes them: `docker cp` out of a container
//! ([`stat_path`], [`write_path_archive`]), `docker export` ([`write_tree`]), and the
//! layer of `docker commit` (`diff.rs`). Symlinks are archived as symlinks, never followed
//! (except where docker's path rules follow a trailing `/` or `/.`); a file seen again through
//! another hardlink becomes a hardlink entry; `security.capability` is kept, as with dockerd.
//!
//! The callers run these inside a view whose `/` is the container's root (see
//! `berth_runtime::run_in_rootfs`), so every path here is the container's own.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tar::{EntryType, Header, HeaderMode};

/// What `docker cp` learns about a path first (`X-Docker-Container-Path-Stat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits, as the docker CLI decodes them.
    pub mode: u32,
    /// RFC 3339 with nanoseconds.
    pub mtime: String,
    /// For a symlink: where it leads, resolved inside the root ("" otherwise).
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

// Go's os.FileMode type and special bits.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_CHAR: u32 = 1 << 21;
const GO_STICKY: u32 = 1 << 20;

/// `st_mode` as Go's `os.FileMode`.
pub fn go_file_mode(md: &Metadata) -> u32 {
    let m = md.mode();
    let ft = md.file_type();
    let mut out = m & 0o777;
    if ft.is_dir() {
        out |= GO_DIR;
    } else if ft.is_symlink() {
        out |= GO_SYMLINK;
    } else if ft.is_block_device() {
        out |= GO_DEVICE;
    } else if ft.is_char_device() {
        out |= GO_DEVICE | GO_CHAR;
    } else if ft.is_fifo() {
        out |= GO_PIPE;
    } else if ft.is_socket() {
        out |= GO_SOCKET;
    }
    if m & 0o4000 != 0 {
        out |= GO_SETUID;
    }
    if m & 0o2000 != 0 {
        out |= GO_SETGID;
    }
    if m & 0o1000 != 0 {
        out |= GO_STICKY;
    }
    out
}

/// `path` made absolute and clean, keeping a trailing `/` or `/.` of the original (moby's
/// `PreserveTrailingDotOrSeparator(filepath.Join("/", path), path)`): those make the last
/// element be followed when it is a symlink, and `/.` asks for a directory's contents.
pub fn container_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut clean = format!("/{}", parts.join("/"));
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if last == "." && !clean.ends_with("/.") {
        if !clean.ends_with('/') {
            clean.push('/');
        }
        clean.push('.');
    }
    if path.ends_with('/') && !clean.ends_with('/') {
        clean.push('/');
    }
    clean
}

/// `filepath.Base`: the last element, `/` for the root, `.` for `/.`-ending paths.
fn base(path: &str) -> String {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        return "/".to_owned();
    }
    t.rsplit('/').next().unwrap_or(t).to_owned()
}

/// Resolves every symlink along `path` inside the root `/` (moby's `FollowSymlinkInScope`):
/// as far as the path exists; the rest is kept as written.
pub fn follow_in_scope(path: &str) -> io::Result<String> {
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let candidate = format!(
            "/{}",
            done.iter()
                .chain(std::iter::once(&c))
                .cloned()
                .collect::<Vec<_>>()
                .join("/")
        );
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(io::Error::other(format!("too many symlinks in {path}")));
                }
                let target = fs::read_link(&candidate)?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(target.split('/').rev().map(str::to_owned));
            }
            Ok(_) => done.push(c),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                done.push(c);
                // The rest cannot be looked at; keep it as it is, cleaned.
                while let Some(c) = todo.pop() {
                    match c.as_str() {
                        "" | "." => {}
                        ".." => {
                            done.pop();
                        }
                        _ => done.push(c),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(format!("/{}", done.join("/")))
}

/// Stats `path` as `docker cp` does (`HEAD /containers/{id}/archive`): the last element is
/// not followed unless the path ends in `/` or `/.`; a symlink's target is resolved in scope.
pub fn stat_path(path: &str) -> io::Result<PathStat> {
    let abs = container_path(path);
    let md = fs::symlink_metadata(&abs)?;
    let link_target = if md.file_type().is_symlink() {
        follow_in_scope(&abs)?
    } else {
        String::new()
    };
    Ok(PathStat {
        name: base(&abs),
        size: md.size() as i64,
        mode: go_file_mode(&md),
        mtime: rfc3339_nanos(md.mtime(), md.mtime_nsec()),
        link_target,
    })
}

fn rfc3339_nanos(secs: i64, nanos: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Writes the tar that `GET /containers/{id}/archive?path=` answers with (moby
/// `containerArchivePath`): a directory is archived under its own name (`data/…`), or as
/// `./…` when the path ends in `/.`; anything else as one entry named after it.
pub fn write_path_archive<W: Write>(path: &str, out: W) -> io::Result<W> {
    let abs = container_path(path);
    let md = fs::symlink_metadata(&abs)?;
    let mut w = TreeWriter::new(out);
    let name = base(&abs);
    // The root itself is renamed to nothing, so its entries are `/bin`, as with dockerd.
    let name = if name == "/" { String::new() } else { name };
    w.walk(Path::new(&abs), &name, md)?;
    w.finish()
}

/// Writes a tar of everything under `root`, named relative to it (`bin/`, `bin/sh`, …), the
/// root itself left out: `docker export`.
pub fn write_tree<W: Write>(root: &Path, out: W) -> io::Result<W> {
    let mut w = TreeWriter::new(out);
    for (child, md) in sorted_children(root)? {
        let name = child
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        w.walk(&child, &name, md)?;
    }
    w.finish()
}

/// The entries of `dir`, sorted by name as Go's `filepath.WalkDir` visits them; entries that
/// vanish meanwhile (a running container) are left out.
pub(crate) fn sorted_children(dir: &Path) -> io::Result<Vec<(PathBuf, Metadata)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(md) => out.push((p, md)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    out.sort_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    Ok(out)
}

/// Appends entries to a tar stream, remembering hardlinked files.
pub(crate) struct TreeWriter<W: Write> {
    builder: tar::Builder<W>,
    /// (dev, inode) of a file with several links -> the name it was archived under.
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> TreeWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(HeaderMode::Complete);
        builder.follow_symlinks(false);
        TreeWriter {
            builder,
            links: HashMap::new(),
        }
    }

    /// `path` under `name`, then (for a directory) everything below it.
    fn walk(&mut self, path: &Path, name: &str, md: Metadata) -> io::Result<()> {
        let is_dir = md.is_dir();
        self.append(path, name, &md)?;
        if is_dir {
            for (child, cmd) in sorted_children(path)? {
                let file = child
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let child_name = if name.is_empty() {
                    format!("/{file}")
                } else {
                    format!("{name}/{file}")
                };
                self.walk(&child, &child_name, cmd)?;
            }
        }
        Ok(())
    }

    /// One entry for `path` (not followed), named `name`.
    pub(crate) fn append(&mut self, path: &Path, name: &str, md: &Metadata) -> io::Result<()> {
        let mut h = Header::new_gnu();
        h.set_metadata_in_mode(md, HeaderMode::Complete);
        let ft = md.file_type();
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        if let Some(cap) = xattr::get(path, "security.capability").ok().flatten() {
            pax.push(("SCHILY.xattr.security.capability", cap));
        }
        let name = if ft.is_dir() && !name.ends_with('/') {
            format!("{name}/")
        } else {
            name.to_owned()
        };
        // The tar crate drops a leading `./` from names; the docker CLI rebases `./…` names
        // (`docker cp c:/dir/. x`) by replacing their first `.`, so they go as written.
        if name.starts_with("./") {
            pax.push(("path", name.clone().into_bytes()));
        }
        let hardlink_to = if ft.is_file() && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            let first = self.links.get(&key).cloned();
            if first.is_none() {
                self.links.insert(key, name.clone());
            }
            first
        } else {
            None
        };
        if let Some(first) = &hardlink_to
            && first.starts_with("./")
        {
            pax.push(("linkpath", first.clone().into_bytes()));
        }
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice())))?;
        }
        if ft.is_dir() {
            h.set_size(0);
            return self.builder.append_data(&mut h, name, io::empty());
        }
        if ft.is_symlink() {
            h.set_size(0);
            let target = fs::read_link(path)?;
            return self.builder.append_link(&mut h, name, target);
        }
        if ft.is_file() {
            if let Some(first) = hardlink_to {
                h.set_entry_type(EntryType::Link);
                h.set_size(0);
                return self.builder.append_link(&mut h, name, first);
            }
            let size = md.len();
            let f = File::options()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)?;
            // Exactly `size` bytes, whatever a running container does to the file meanwhile.
            let data = f.take(size).chain(io::repeat(0)).take(size);
            return self.builder.append_data(&mut h, name, data);
        }
        // Devices, FIFOs: the header says it all. Sockets are not archived (as with Go's tar).
        if ft.is_socket() {
            return Ok(());
        }
        h.set_size(0);
        self.builder.append_data(&mut h, name, io::empty())
    }

    /// An entry built by the caller (the whiteouts of a layer).
    pub(crate) fn append_header(&mut self, h: &mut Header, name: &str) -> io::Result<()> {
        self.builder.append_data(h, name, io::empty())
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_keep_trailing_dot_and_slash() {
        for (input, want) in [
            ("etc/hosts", "/etc/hosts"),
            ("/data/", "/data/"),
            ("/data/.", "/data/."),
            ("/data/./", "/data/./"),
            ("/a/../b", "/b"),
            ("../../x", "/x"),
            ("/", "/"),
            (".", "/."),
        ] {
            assert_eq!(container_path(input), want, "{input}");
        }
        assert_eq!(base("/data/."), ".");
        assert_eq!(base("/data/"), "data");
        assert_eq!(base("/"), "/");
    }

    #[test]
    fn archive_names_follow_dockers_rules() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("data/sub")).unwrap();
        fs::write(root.join("data/a.txt"), b"a").unwrap();
        fs::write(root.join("data/sub/b.txt"), b"bb").unwrap();
        fs::hard_link(root.join("data/a.txt"), root.join("data/sub/a-link")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("data/s")).unwrap();
        let names = |p: &Path| -> Vec<(String, EntryType)> {
            let tar = write_path_archive(p.to_str().unwrap(), Vec::new()).unwrap();
            let mut a = tar::Archive::new(&tar[..]);
            a.entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.path().unwrap().display().to_string(), e.header().entry_type())
                })
                .collect()
        };
        let got = names(&root.join("data"));
        let want = [
            ("data/", EntryType::Directory),
            ("data/a.txt", EntryType::Regular),
            ("data/s", EntryType::Symlink),
            ("data/sub/", EntryType::Directory),
            ("data/sub/a-link", EntryType::Link),
            ("data/sub/b.txt", EntryType::Regular),
        ];
        assert_eq!(got, want.map(|(n, t)| (n.to_owned(), t)));
        let dot = format!("{}/.", root.join("data").display());
        let got = names(Path::new(&dot));
        assert_eq!(got[0].0, "./");
        assert_eq!(got[1].0, "./a.txt");
        assert_eq!(names(&root.join("data/s")), [("s".to_owned(), EntryType::Symlink)]);
        let st = stat_path(root.join("data/a.txt").to_str().unwrap()).unwrap();
        assert_eq!((st.name.as_str(), st.size, st.mode), ("a.txt", 1, 0o644));
        let st = stat_path(root.join("data").to_str().unwrap()).unwrap();
        assert_eq!(st.mode & GO_DIR, GO_DIR);
    }
}
