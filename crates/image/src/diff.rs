//! A container's changes, read from its overlay upper directory: the list `docker diff`
//! shows ([`UpperDiff::changes`]) and the layer `docker commit` stores (the tar written by
//! [`UpperDiff::write_tar`], whiteouts in the AUFS form images carry: a 0/0 character device
//! becomes an empty `.wh.NAME` file, an opaque directory gets a `.wh..wh..opq` entry).
//!
//! The runtime's own mount points (`/proc`, `/etc/hosts`, …: what dockerd keeps in a
//! container's init layer) are not changes: the caller names them, and a directory holding
//! nothing but them (made or copied up only to hold them) is left out too.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header, HeaderMode};

use crate::error::{Error, io};
use crate::tree::{TreeWriter, sorted_children};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What `docker diff` reports per path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

/// One line of `docker diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Absolute, inside the container.
    pub path: String,
    pub kind: ChangeKind,
}

#[derive(Debug)]
enum NodeKind {
    /// Deleted: a 0/0 character device in the upper directory.
    Whiteout,
    /// A directory whose lower contents are hidden (`trusted.overlay.opaque=y`).
    Opaque,
    Plain,
}

#[derive(Debug)]
struct Node {
    /// Relative to the upper directory (`etc/passwd`).
    rel: String,
    md: Metadata,
    kind: NodeKind,
}

/// The changed entries of an upper directory, in walk order (parents first, names sorted).
#[derive(Debug)]
pub struct UpperDiff {
    upper: PathBuf,
    lowers: Lowers,
    nodes: Vec<Node>,
}

impl UpperDiff {
    /// Reads `upper` against `lowers` (the image's snapshots, top layer first), leaving out
    /// the paths `runtime_paths` names (absolute: `/proc`, `/etc/hosts`) and what is below them.
    pub fn scan(upper: &Path, lowers: &[PathBuf], runtime_paths: &[&str]) -> Result<UpperDiff, Error> {
        let skip: HashSet<&str> = runtime_paths.iter().map(|p| p.trim_end_matches('/')).collect();
        let lowers = Lowers(lowers.to_vec());
        let mut nodes = Vec::new();
        // A container that never started has no upper directory yet: no changes.
        if upper.exists() {
            scan_dir(upper, "", &lowers, &skip, &mut nodes)?;
        }
        Ok(UpperDiff {
            upper: upper.to_path_buf(),
            lowers,
            nodes,
        })
    }

    /// Nothing changed: a commit adds no layer.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The changes as dockerd lists them (moby `pkg/archive/changes.go`): a path in a lower
    /// layer is modified, else added; a whiteout is a deletion; the parent of an addition or
    /// deletion is listed as modified; a directory with the same size, mode and mtime as below
    /// is not a change by itself. An opaque directory lists what it hides as deleted.
    pub fn changes(&self) -> Vec<Change> {
        let mut out = Vec::new();
        let mut changed_dirs: HashSet<String> = HashSet::new();
        for n in &self.nodes {
            let path = format!("/{}", n.rel);
            let kind = match n.kind {
                NodeKind::Whiteout => ChangeKind::Deleted,
                _ => match self.lowers.stat(&n.rel) {
                    None => ChangeKind::Added,
                    Some(low) => {
                        let same_dir = low.is_dir()
                            && n.md.is_dir()
                            && low.size() == n.md.size()
                            && low.mode() == n.md.mode()
                            && low.mtime() == n.md.mtime()
                            && low.mtime_nsec() == n.md.mtime_nsec();
                        if same_dir && !matches!(n.kind, NodeKind::Opaque) {
                            continue;
                        }
                        ChangeKind::Modified
                    }
                },
            };
            if n.md.is_dir() && !matches!(n.kind, NodeKind::Whiteout) {
                changed_dirs.insert(path.clone());
            }
            if kind != ChangeKind::Modified {
                let parent = parent_of(&path);
                if parent != "/" && changed_dirs.insert(parent.clone()) {
                    out.push(Change {
                        path: parent,
                        kind: ChangeKind::Modified,
                    });
                }
            }
            out.push(Change {
                path: path.clone(),
                kind,
            });
            if matches!(n.kind, NodeKind::Opaque) {
                let present: BTreeSet<String> = fs::read_dir(self.upper.join(&n.rel))
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                for hidden in self.lowers.list(&n.rel) {
                    if !present.contains(&hidden) {
                        out.push(Change {
                            path: format!("{path}/{hidden}"),
                            kind: ChangeKind::Deleted,
                        });
                    }
                }
            }
        }
        out
    }

    /// Writes the layer: every changed entry as it is in the upper directory, whiteouts in
    /// the AUFS form. The upper directory must not change meanwhile (the container is frozen
    /// or stopped).
    pub fn write_tar<W: Write>(&self, out: W) -> io::Result<W> {
        let mut w = TreeWriter::new(out);
        for n in &self.nodes {
            let path = self.upper.join(&n.rel);
            match n.kind {
                NodeKind::Whiteout => {
                    let (dir, name) = match n.rel.rsplit_once('/') {
                        Some((d, f)) => (format!("{d}/"), f),
                        None => (String::new(), n.rel.as_str()),
                    };
                    let mut h = Header::new_gnu();
                    h.set_metadata_in_mode(&n.md, HeaderMode::Complete);
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(0o600);
                    h.set_size(0);
                    h.set_device_major(0)?;
                    h.set_device_minor(0)?;
                    w.append_header(&mut h, &format!("{dir}.wh.{name}"))?;
                }
                NodeKind::Opaque => {
                    w.append(&path, &n.rel, &n.md)?;
                    let mut h = Header::new_gnu();
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(n.md.mode() & 0o777);
                    h.set_uid(u64::from(n.md.uid()));
                    h.set_gid(u64::from(n.md.gid()));
                    h.set_mtime(0);
                    h.set_size(0);
                    w.append_header(&mut h, &format!("{}/.wh..wh..opq", n.rel))?;
                }
                NodeKind::Plain => w.append(&path, &n.rel, &n.md)?,
            }
        }
        w.finish()
    }
}

fn parent_of(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_owned(),
        Some((p, _)) => p.to_owned(),
    }
}

fn is_whiteout(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    matches!(xattr::get(path, OPAQUE_XATTR), Ok(Some(v)) if v == b"y")
}

/// Adds the changed entries below `upper/rel` to `out`. Returns whether the directory held
/// a runtime mount point (directly or below), so a parent that holds nothing else is known
/// to be the runtime's doing.
fn scan_dir(
    upper: &Path,
    rel: &str,
    lowers: &Lowers,
    skip: &HashSet<&str>,
    out: &mut Vec<Node>,
) -> Result<bool, Error> {
    let dir = upper.join(rel);
    let mut held_runtime_path = false;
    for (path, md) in sorted_children(&dir).map_err(io("read", &dir))? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if skip.contains(format!("/{child}").as_str()) {
            held_runtime_path = true;
            continue;
        }
        if is_whiteout(&md) {
            out.push(Node {
                rel: child,
                md,
                kind: NodeKind::Whiteout,
            });
            continue;
        }
        if xattr::get(&path, "trusted.overlay.redirect").ok().flatten().is_some()
            || xattr::get(&path, "trusted.overlay.metacopy").ok().flatten().is_some()
        {
            return Err(Error::OverlayRedirect {
                path: format!("/{child}"),
            });
        }
        if !md.is_dir() {
            out.push(Node {
                rel: child,
                md,
                kind: NodeKind::Plain,
            });
            continue;
        }
        let opaque = is_opaque(&path);
        let mut below = Vec::new();
        let runtime_below = scan_dir(upper, &child, lowers, skip, &mut below)?;
        // Made (or copied up) only to hold the runtime's mount points: not a change.
        let unchanged_holder = !opaque
            && below.is_empty()
            && runtime_below
            && lowers.stat(&child).is_none_or(|low| {
                low.is_dir() && low.mode() == md.mode() && low.uid() == md.uid() && low.gid() == md.gid()
            });
        if unchanged_holder {
            held_runtime_path = true;
            continue;
        }
        out.push(Node {
            rel: child,
            md,
            kind: if opaque { NodeKind::Opaque } else { NodeKind::Plain },
        });
        out.append(&mut below);
    }
    Ok(held_runtime_path)
}

/// The image's snapshots, top layer first, read as overlayfs merges them.
#[derive(Debug)]
struct Lowers(Vec<PathBuf>);

impl Lowers {
    /// The layers in which the directory `rel` (relative, "" for the root) is visible, top
    /// first: a whiteout or a non-directory hides it below, an opaque directory hides what
    /// is below it.
    fn dir_layers(&self, rel: &str) -> Vec<&Path> {
        let mut visible: Vec<&Path> = self.0.iter().map(PathBuf::as_path).collect();
        let mut prefix = PathBuf::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            prefix.push(part);
            let mut next = Vec::new();
            for layer in visible {
                match fs::symlink_metadata(layer.join(&prefix)) {
                    Ok(m) if m.is_dir() => {
                        next.push(layer);
                        if is_opaque(&layer.join(&prefix)) {
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
            visible = next;
            if visible.is_empty() {
                break;
            }
        }
        visible
    }

    /// What the image has at `rel`, from the topmost layer that has it; `None` when no
    /// layer has it or a whiteout hides it.
    fn stat(&self, rel: &str) -> Option<Metadata> {
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel),
        };
        for layer in self.dir_layers(parent) {
            if let Ok(m) = fs::symlink_metadata(layer.join(parent).join(name)) {
                return (!is_whiteout(&m)).then_some(m);
            }
        }
        None
    }

    /// The names the image has in the directory `rel`.
    fn list(&self, rel: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        for layer in self.dir_layers(rel) {
            let Ok(rd) = fs::read_dir(layer.join(rel)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if names.contains(&name) || hidden.contains(&name) {
                    continue;
                }
                match e.metadata() {
                    Ok(m) if is_whiteout(&m) => {
                        hidden.insert(name);
                    }
                    _ => {
                        names.insert(name);
                    }
                }
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};

    #[test]
    fn changes_and_layer_of_an_upper_directory() {
        if !berth_testkit::require(&[berth_testkit::Prereq::Root]) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (lower, upper) = (d.path().join("lower"), d.path().join("upper"));
        for p in ["data/keep.txt", "data/gone.txt", "data/opq/old.txt", "etc/passwd"] {
            fs::create_dir_all(lower.join(p).parent().unwrap()).unwrap();
            fs::write(lower.join(p), p).unwrap();
        }
        fs::create_dir_all(upper.join("data/opq")).unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("proc")).unwrap();
        fs::write(upper.join("etc/hosts"), b"").unwrap();
        fs::write(upper.join("data/new.txt"), b"new").unwrap();
        fs::write(upper.join("data/opq/fresh"), b"f").unwrap();
        xattr::set(upper.join("data/opq"), OPAQUE_XATTR, b"y").unwrap();
        mknod(
            &upper.join("data/gone.txt"),
            SFlag::S_IFCHR,
            Mode::empty(),
            makedev(0, 0),
        )
        .unwrap();
        // /etc was copied up for /etc/hosts only: the same mode and owner as below.
        let etc_mode = fs::metadata(lower.join("etc")).unwrap().mode();
        fs::set_permissions(
            upper.join("etc"),
            std::os::unix::fs::PermissionsExt::from_mode(etc_mode),
        )
        .unwrap();

        let diff = UpperDiff::scan(&upper, &[lower], &["/proc", "/etc/hosts"]).unwrap();
        let got: Vec<(String, ChangeKind)> = diff.changes().into_iter().map(|c| (c.path, c.kind)).collect();
        let want = [
            ("/data", ChangeKind::Modified),
            ("/data/gone.txt", ChangeKind::Deleted),
            ("/data/new.txt", ChangeKind::Added),
            ("/data/opq", ChangeKind::Modified),
            ("/data/opq/old.txt", ChangeKind::Deleted),
            ("/data/opq/fresh", ChangeKind::Added),
        ];
        assert_eq!(got, want.map(|(p, k)| (p.to_owned(), k)));

        let tar = diff.write_tar(Vec::new()).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "data/",
                "data/.wh.gone.txt",
                "data/new.txt",
                "data/opq/",
                "data/opq/.wh..wh..opq",
                "data/opq/fresh"
            ]
        );
        let empty = tempfile::tempdir().unwrap();
        fs::create_dir_all(empty.path().join("proc")).unwrap();
        assert!(UpperDiff::scan(empty.path(), &[], &["/proc"]).unwrap().is_empty());
    }
}
