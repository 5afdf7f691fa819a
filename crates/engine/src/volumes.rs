//! Volumes of the `local` driver: named and anonymous directories that outlive containers,
//! or (with `type`/`device`/`o` options) a tmpfs or a bind mount of a host path mounted
//! there while a running container uses it, as dockerd's local driver does.
//!
//! ```text
//! <data-root>/volumes/
//!   <name>/             created by create (dir, then _data, then the record); removed by rm
//!                       and prune: renamed to .del-<name> first, which open sweeps
//!     volume.json       the record (driver, options, labels, creation time), replaced
//!                       atomically; a directory without one is an interrupted create, which
//!                       open removes (its _data is still empty)
//!     _data/            the data; for a volume with options, the mount point of its device
//!                       while a running container uses it (mounted at the container's start,
//!                       unmounted after the last user's exit)
//! ```
//!
//! Which containers use a volume is not stored here: the daemon derives it from the
//! container records at start and keeps it current as containers come and go.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::events::{Event, Events};

/// The label dockerd puts on volumes it names itself (`-v /path`, an image's `VOLUME`).
pub(crate) const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// What is kept about one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VolumeRecord {
    pub(crate) name: String,
    pub(crate) driver: String,
    /// RFC 3339, seconds.
    pub(crate) created_at: String,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// The local driver's `type`, `device`, `o`.
    #[serde(default)]
    pub(crate) options: BTreeMap<String, String>,
}

impl VolumeRecord {
    pub(crate) fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }

    /// Its device is mounted on `_data` while in use (a volume with options).
    fn needs_mount(&self) -> bool {
        self.options.contains_key("type") || self.options.contains_key("device")
    }
}

#[derive(Default)]
struct Table {
    volumes: BTreeMap<String, VolumeRecord>,
    /// Containers (existing, running or not) that name the volume: it cannot be removed.
    refs: HashMap<String, BTreeSet<String>>,
    /// Running containers using a volume with options: its device stays mounted.
    active: HashMap<String, BTreeSet<String>>,
}

/// Every volume of the daemon.
pub(crate) struct Volumes {
    /// `<data-root>/volumes`.
    root: PathBuf,
    table: Mutex<Table>,
    events: Arc<Events>,
    pruning: AtomicBool,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// dockerd's `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$` for local volume names.
fn check_name(name: &str) -> Result<()> {
    if name.len() == 1 {
        return Err(Error::InvalidVolume {
            name: name.to_owned(),
            reason: "volume name is too short, names should be at least two alphanumeric characters".into(),
        });
    }
    let b = name.as_bytes();
    let valid = !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if !valid {
        return Err(Error::InvalidVolume {
            name: name.to_owned(),
            reason: format!(
                "{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            ),
        });
    }
    Ok(())
}

/// The local driver's options, checked as dockerd checks them, plus what Berth can mount:
/// a tmpfs (`type=tmpfs`) or a bind mount (`o=bind`).
fn check_options(name: &str, opts: &BTreeMap<String, String>) -> Result<()> {
    let bad = |reason: String| Error::InvalidVolume {
        name: name.to_owned(),
        reason,
    };
    for k in opts.keys() {
        if !["type", "device", "o", "size"].contains(&k.as_str()) {
            return Err(bad(format!("invalid option: {k:?}")));
        }
    }
    if opts.contains_key("size") {
        return Err(bad("quota size requested but no quota support".into()));
    }
    for (opt, needs) in [
        ("device", &["type"][..]),
        ("type", &["device"][..]),
        ("o", &["device", "type"][..]),
    ] {
        if opts.contains_key(opt) {
            if let Some(missing) = needs.iter().find(|n| !opts.contains_key(**n)) {
                return Err(bad(format!("missing required option: {missing:?}")));
            }
        }
    }
    if let Some(kind) = opts.get("type") {
        let bind = opts
            .get("o")
            .is_some_and(|o| o.split(',').any(|f| f == "bind" || f == "rbind"));
        if kind != "tmpfs" && !bind {
            return Err(Error::NotBuilt {
                what: format!(
                    "local volume type {kind:?} (built: type=tmpfs, and bind mounts: -o type=none -o o=bind -o device=/host/path)"
                ),
            });
        }
        if bind && !opts.get("device").is_some_and(|d| d.starts_with('/')) {
            return Err(bad(
                "a bind-mounted volume needs an absolute host path as its device".into()
            ));
        }
    }
    Ok(())
}

fn now_rfc3339_seconds() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// 64 random hex digits, as dockerd names anonymous volumes.
fn random_name() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Volumes {
    /// Reads every record under `<data-root>/volumes`, finishing interrupted creates and
    /// removals.
    pub(crate) fn open(data_root: &Path, events: Arc<Events>) -> Result<Volumes> {
        let root = data_root.join("volumes");
        std::fs::create_dir_all(&root).map_err(io_err("create directory", &root))?;
        let mut table = Table::default();
        for entry in std::fs::read_dir(&root).map_err(io_err("read", &root))? {
            let entry = entry.map_err(io_err("read", &root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            if name.starts_with(".del-") {
                // A removal the daemon did not finish.
                if let Err(e) = remove_tree(&dir) {
                    tracing::warn!(path = %dir.display(), error = %e, "failed to finish removing a volume");
                }
                continue;
            }
            let record_path = dir.join("volume.json");
            match std::fs::read(&record_path) {
                Ok(bytes) => match serde_json::from_slice::<VolumeRecord>(&bytes) {
                    Ok(r) => {
                        table.volumes.insert(r.name.clone(), r);
                    }
                    Err(e) => {
                        tracing::error!(path = %record_path.display(), error = %e, "unreadable volume record; skipped")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // A create that crashed before its record: nothing can have used it.
                    let data = dir.join("_data");
                    let empty = std::fs::read_dir(&data).map_or(true, |mut d| d.next().is_none());
                    if empty && !berth_runtime::is_mounted(&data) {
                        tracing::warn!(path = %dir.display(), "volume directory without a record; removing it");
                        let _ = remove_tree(&dir);
                    } else {
                        tracing::error!(path = %dir.display(), "volume directory with data but no record; left alone");
                    }
                }
                Err(e) => return Err(io_err("read", &record_path)(e)),
            }
        }
        Ok(Volumes {
            root,
            table: Mutex::new(table),
            events,
            pruning: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a volume's data is (its `Mountpoint`).
    pub(crate) fn data_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    /// Creates a volume (`name` `None`: an anonymous one), or returns the existing one of
    /// that name, as dockerd does; `true` when it was created now. With `user`, that
    /// container's reference is recorded in the same step, so no removal slips in between.
    pub(crate) fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        options: BTreeMap<String, String>,
        mut labels: BTreeMap<String, String>,
        user: Option<&str>,
    ) -> Result<(VolumeRecord, bool)> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => {
                labels.insert(ANONYMOUS_LABEL.to_owned(), String::new());
                random_name()
            }
        };
        check_name(&name)?;
        if !driver.is_empty() && driver != "local" {
            return Err(Error::NoSuchVolumeDriver {
                name,
                driver: driver.to_owned(),
            });
        }
        let mut t = self.lock();
        if let Some(existing) = t.volumes.get(&name).cloned() {
            if let Some(id) = user {
                t.refs.entry(name).or_default().insert(id.to_owned());
            }
            return Ok((existing, false));
        }
        check_options(&name, &options)?;
        let record = VolumeRecord {
            name: name.clone(),
            driver: "local".to_owned(),
            created_at: now_rfc3339_seconds(),
            labels,
            options,
        };
        let dir = self.root.join(&name);
        let data = dir.join("_data");
        let written = (|| {
            std::fs::create_dir_all(&data).map_err(io_err("create directory", &data))?;
            let bytes = serde_json::to_vec_pretty(&record).expect("serialisable");
            berth_runtime::write_atomic(&dir.join("volume.json"), &bytes)?;
            Ok::<_, Error>(())
        })();
        if let Err(e) = written {
            let _ = remove_tree(&dir);
            return Err(e);
        }
        t.volumes.insert(name.clone(), record.clone());
        if let Some(id) = user {
            t.refs.entry(name.clone()).or_default().insert(id.to_owned());
        }
        drop(t);
        tracing::info!(volume = %name, "volume created");
        self.emit("create", &name, &[("driver", "local".to_owned())]);
        Ok((record, true))
    }

    pub(crate) fn get(&self, name: &str) -> Result<VolumeRecord> {
        self.lock()
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchVolume { name: name.to_owned() })
    }

    pub(crate) fn list(&self) -> Vec<VolumeRecord> {
        self.lock().volumes.values().cloned().collect()
    }

    /// Records that container `id` names the volume.
    pub(crate) fn reference(&self, name: &str, id: &str) {
        self.lock()
            .refs
            .entry(name.to_owned())
            .or_default()
            .insert(id.to_owned());
    }

    /// Container `id` no longer names the volume.
    pub(crate) fn release(&self, name: &str, id: &str) {
        let mut t = self.lock();
        if let Some(users) = t.refs.get_mut(name) {
            users.remove(id);
            if users.is_empty() {
                t.refs.remove(name);
            }
        }
    }

    /// The containers that name the volume.
    pub(crate) fn users(&self, name: &str) -> Vec<String> {
        self.lock()
            .refs
            .get(name)
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Mounts the volume's device for container `id` when it has one and it is not mounted
    /// yet (a container starts).
    pub(crate) fn activate(&self, name: &str, id: &str) -> Result<()> {
        let mut t = self.lock();
        let Some(v) = t.volumes.get(name).cloned() else {
            return Err(Error::NoSuchVolume { name: name.to_owned() });
        };
        if !v.needs_mount() {
            return Ok(());
        }
        let data = self.data_path(name);
        if !berth_runtime::is_mounted(&data) {
            let device = v.options.get("device").map_or("", String::as_str);
            let kind = v.options.get("type").map_or("", String::as_str);
            let o = v.options.get("o").map_or("", String::as_str);
            berth_runtime::mount_device(device, &data, kind, o).map_err(|e| Error::HostRefused {
                message: format!(
                    "error while mounting volume '{}': failed to mount local volume: {e}",
                    data.display()
                ),
            })?;
            tracing::info!(volume = %name, "volume mounted");
        }
        t.active.entry(name.to_owned()).or_default().insert(id.to_owned());
        Ok(())
    }

    /// Records that running container `id` uses the volume, without mounting anything (a
    /// restarted daemon re-adopting it: its device is still mounted).
    pub(crate) fn adopt(&self, name: &str, id: &str) {
        let mut t = self.lock();
        if t.volumes.get(name).is_some_and(VolumeRecord::needs_mount) {
            t.active.entry(name.to_owned()).or_default().insert(id.to_owned());
        }
    }

    /// Container `id` stopped using the volume; its device is unmounted when nobody else
    /// uses it.
    pub(crate) fn deactivate(&self, name: &str, id: &str) {
        let mut t = self.lock();
        let Some(v) = t.volumes.get(name).cloned() else {
            return;
        };
        if let Some(users) = t.active.get_mut(name) {
            users.remove(id);
            if !users.is_empty() {
                return;
            }
            t.active.remove(name);
        }
        if v.needs_mount() {
            if let Err(e) = berth_runtime::unmount(&self.data_path(name)) {
                tracing::warn!(volume = %name, error = %e, "failed to unmount the volume");
            } else {
                tracing::info!(volume = %name, "volume unmounted");
            }
        }
    }

    /// Unmounts volumes that no running container uses (a daemon that crashed may have
    /// left them mounted).
    pub(crate) fn unmount_idle(&self) {
        let t = self.lock();
        for v in t.volumes.values().filter(|v| v.needs_mount()) {
            if !t.active.contains_key(&v.name) {
                let data = self.data_path(&v.name);
                if berth_runtime::is_mounted(&data) {
                    if let Err(e) = berth_runtime::unmount(&data) {
                        tracing::warn!(volume = %v.name, error = %e, "failed to unmount an idle volume");
                    }
                }
            }
        }
    }

    /// `DELETE /volumes/{name}`: refused while a container names it; with `force` a missing
    /// volume is not an error.
    pub(crate) fn remove(&self, name: &str, force: bool) -> Result<()> {
        let mut t = self.lock();
        if !t.volumes.contains_key(name) {
            return if force {
                Ok(())
            } else {
                Err(Error::NoSuchVolume { name: name.to_owned() })
            };
        }
        if let Some(users) = t.refs.get(name).filter(|u| !u.is_empty()) {
            return Err(Error::VolumeInUse {
                name: name.to_owned(),
                users: users.iter().cloned().collect(),
            });
        }
        let dir = self.root.join(name);
        let data = dir.join("_data");
        // Never delete through a mount: the device's files are not the volume's.
        berth_runtime::unmount(&data)?;
        if berth_runtime::is_mounted(&data) {
            return Err(Error::HostRefused {
                message: format!("remove {name}: {} is still mounted", data.display()),
            });
        }
        let doomed = self.root.join(format!(".del-{name}"));
        std::fs::rename(&dir, &doomed).map_err(io_err("rename", &dir))?;
        t.volumes.remove(name);
        t.active.remove(name);
        drop(t);
        if let Err(e) = remove_tree(&doomed) {
            tracing::warn!(volume = %name, error = %e, "failed to delete the volume's files; the next start sweeps them");
        }
        tracing::info!(volume = %name, "volume removed");
        self.emit("destroy", name, &[("driver", "local".to_owned())]);
        Ok(())
    }

    /// `POST /volumes/prune`: removes the volumes no container names, without options, that
    /// `keep` does not keep; returns their names and the bytes freed.
    pub(crate) fn prune(&self, keep: impl Fn(&VolumeRecord) -> bool) -> Result<(Vec<String>, u64)> {
        if self.pruning.swap(true, Ordering::SeqCst) {
            return Err(Error::PruneRunning);
        }
        let candidates: Vec<VolumeRecord> = {
            let t = self.lock();
            t.volumes
                .values()
                .filter(|v| !v.needs_mount() && t.refs.get(&v.name).is_none_or(|u| u.is_empty()))
                .filter(|v| !keep(v))
                .cloned()
                .collect()
        };
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for v in candidates {
            let size = tree_size(&self.data_path(&v.name));
            match self.remove(&v.name, false) {
                Ok(()) => {
                    deleted.push(v.name);
                    reclaimed += size;
                }
                Err(e) => tracing::warn!(volume = %v.name, error = %e, "prune: not removed"),
            }
        }
        self.pruning.store(false, Ordering::SeqCst);
        self.events.publish(Event::prune("volume", reclaimed));
        Ok((deleted, reclaimed))
    }

    fn emit(&self, action: &'static str, name: &str, attrs: &[(&str, String)]) {
        let attributes = attrs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        self.events.publish(Event::volume(action, name, attributes));
    }

    /// A `mount` or `unmount` event for container `id`'s use of a volume, as dockerd sends.
    pub(crate) fn emit_mount(&self, action: &'static str, name: &str, id: &str, destination: &str, rw: bool) {
        let mut attrs = vec![("driver", "local".to_owned()), ("container", id.to_owned())];
        if action == "mount" {
            attrs.push(("destination", destination.to_owned()));
            attrs.push(("read/write", rw.to_string()));
            attrs.push(("propagation", String::new()));
        }
        self.emit(action, name, &attrs);
    }

    /// Bytes under a volume's data directory (`UsageData.Size` in `/system/df`).
    pub(crate) fn size(&self, name: &str) -> u64 {
        tree_size(&self.data_path(name))
    }

    /// dockerd's `volume.Volume` JSON.
    pub(crate) fn to_json(&self, v: &VolumeRecord) -> Value {
        json!({
            "CreatedAt": v.created_at,
            "Driver": v.driver,
            "Labels": if v.labels.is_empty() { Value::Null } else { json!(v.labels) },
            "Mountpoint": self.data_path(&v.name),
            "Name": v.name,
            "Options": if v.options.is_empty() { Value::Null } else { json!(v.options) },
            "Scope": "local",
        })
    }
}

/// Removes a directory tree; a missing one is fine.
fn remove_tree(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", dir)(e)),
    }
}

/// Bytes in the files under `dir` (not following symlinks; each hard-linked file once).
pub(crate) fn tree_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.nlink() <= 1 || seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn names_and_options_like_dockerd() {
        assert!(check_name("data_1.x-y").is_ok());
        for (bad, want) in [
            ("a", "too short"),
            ("a/b", "includes invalid characters"),
            (".hidden", "includes invalid characters"),
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let table: &[Case<'_>] = &[
            (&[], None),
            (&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=10m")], None),
            (&[("type", "none"), ("device", "/srv/x"), ("o", "bind")], None),
            (&[("foo", "bar")], Some("invalid option: \"foo\"")),
            (&[("type", "tmpfs")], Some("missing required option: \"device\"")),
            (
                &[("o", "size=1m"), ("device", "x")],
                Some("missing required option: \"type\""),
            ),
            (
                &[("type", "nfs"), ("device", ":/x"), ("o", "addr=1.2.3.4")],
                Some("local volume type \"nfs\""),
            ),
            (
                &[("type", "none"), ("device", "rel"), ("o", "bind")],
                Some("absolute host path"),
            ),
            (&[("size", "10m")], Some("no quota support")),
        ];
        for (o, want) in table {
            let r = check_options("v", &opts(o));
            match want {
                None => assert!(r.is_ok(), "{o:?}: {r:?}"),
                Some(w) => assert!(r.unwrap_err().to_string().contains(w), "{o:?}"),
            }
        }
    }

    #[test]
    fn create_reference_remove_prune_and_reopen() {
        let root = tempfile::tempdir().unwrap();
        let events = Arc::new(Events::new());
        let vols = Volumes::open(root.path(), events.clone()).unwrap();
        let (v, created) = vols
            .create(Some("data"), "", BTreeMap::new(), opts(&[("k", "v")]), None)
            .unwrap();
        assert!(created && !v.anonymous());
        assert!(vols.data_path("data").is_dir());
        let (again, created) = vols
            .create(Some("data"), "local", BTreeMap::new(), BTreeMap::new(), None)
            .unwrap();
        assert!(!created);
        assert_eq!(again.labels["k"], "v", "the existing volume is returned as it is");
        let (anon, _) = vols.create(None, "", BTreeMap::new(), BTreeMap::new(), None).unwrap();
        assert!(anon.anonymous() && anon.name.len() == 64);
        assert!(
            vols.create(Some("x"), "nfs-plugin", BTreeMap::new(), BTreeMap::new(), None)
                .is_err()
        );

        vols.create(Some("data"), "", BTreeMap::new(), BTreeMap::new(), Some("c1"))
            .unwrap();
        let e = vols.remove("data", false).unwrap_err();
        assert_eq!(e.to_string(), "remove data: volume is in use - [c1]");
        assert_eq!(e.kind(), crate::error::ErrorKind::Conflict);
        vols.release("data", "c1");
        std::fs::write(vols.data_path("data").join("f"), "12345").unwrap();

        // Reopening finds both; a half-created and a half-removed directory are swept.
        std::fs::create_dir_all(root.path().join("volumes/half/_data")).unwrap();
        std::fs::create_dir_all(root.path().join("volumes/.del-gone/_data")).unwrap();
        let vols = Volumes::open(root.path(), events).unwrap();
        let names: Vec<String> = vols.list().into_iter().map(|v| v.name).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(!root.path().join("volumes/half").exists());
        assert!(!root.path().join("volumes/.del-gone").exists());

        // Prune: by default only anonymous volumes go.
        let (deleted, _) = vols.prune(|v| !v.anonymous()).unwrap();
        assert_eq!(deleted, std::slice::from_ref(&anon.name));
        let (deleted, reclaimed) = vols.prune(|_| false).unwrap();
        assert_eq!((deleted, reclaimed), (vec!["data".to_owned()], 5));
        assert!(vols.list().is_empty());
        assert!(matches!(vols.remove("data", false), Err(Error::NoSuchVolume { .. })));
        vols.remove("data", true).unwrap();
        assert_eq!(vols.get("nope").unwrap_err().to_string(), "get nope: no such volume");
    }
}
