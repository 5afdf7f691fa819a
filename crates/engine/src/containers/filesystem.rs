//! A container's filesystem from outside: work inside a view of its root filesystem
//! (`docker cp`, `docker export`), its changes (`docker diff`) and `docker commit`. Each
//! holds the container's operation lock, as dockerd holds the container's lock, so no start
//! or removal mounts or deletes the root filesystem underneath.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_image::{Change, CommitOptions, ContainerConfig, Image, UpperDiff, apply_changes, familiar};
use berth_runtime::{MountSpec, OverlaySpec, ViewSpec};
use serde_json::Value;

use super::{Containers, Entry, Record};
use crate::error::{Error, Result};

/// What `POST /commit` asks for besides the container.
#[derive(Debug, Clone, Default)]
pub(crate) struct CommitRequest {
    /// `repo[:tag]`, when given.
    pub(crate) reference: Option<String>,
    pub(crate) author: String,
    pub(crate) comment: String,
    /// Freeze a running container while its layer is read (the CLI's default).
    pub(crate) pause: bool,
    /// Dockerfile instructions (`CMD ["sh"]`, …).
    pub(crate) changes: Vec<String>,
    /// The request body's `Config`, replacing the container's as the base.
    pub(crate) config: Option<Value>,
}

/// Thaws a frozen container when dropped (also when the commit fails or panics).
struct Thaw(berth_runtime::Cgroup);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Err(e) = self.0.thaw() {
            tracing::error!(error = %e, "failed to thaw a container after a commit");
        }
    }
}

impl Containers {
    /// Publishes a container event without extra attributes (`archive-path`, `export`, …).
    pub(crate) fn event(&self, entry: &Entry, action: &'static str) {
        self.emit(&entry.record(), action, &[]);
    }

    /// The overlay lowers of the container: its image's snapshots, top layer first.
    pub(crate) fn lowers_of(&self, rec: &Record) -> Result<Vec<PathBuf>> {
        let image = self.images.get(&rec.image_id)?;
        Ok(self.lowers(&image))
    }

    /// The view of `rec`'s root filesystem; with `mounts`, its bind mounts, tmpfs mounts and
    /// `/etc` files are there too (`docker cp`), without them only the layers (`export`).
    fn view_spec(&self, rec: &Record, mounts: bool) -> Result<ViewSpec> {
        let dir = self.dir(&rec.id);
        let mut list = Vec::new();
        if mounts {
            let user: Vec<MountSpec> = rec.settings.mounts.iter().map(|m| m.to_spec()).collect();
            for (file, dest) in [
                ("resolv.conf", "/etc/resolv.conf"),
                ("hostname", "/etc/hostname"),
                ("hosts", "/etc/hosts"),
            ] {
                let source = dir.join(file);
                // Written at the first start; a user's mount of the same file wins.
                if source.exists() && !user.iter().any(|m| mount_destination(m) == dest) {
                    list.push(MountSpec::Bind {
                        source,
                        destination: dest.to_owned(),
                        readonly: false,
                        propagation: "rprivate".to_owned(),
                    });
                }
            }
            list.extend(user);
        }
        Ok(ViewSpec {
            rootfs: dir.join("rootfs"),
            overlay: OverlaySpec {
                lowers: self.lowers_of(rec)?,
                upper: dir.join("upper"),
                work: dir.join("work"),
            },
            mounts: list,
        })
    }

    /// Runs `work` with the container's root filesystem as `/` (see
    /// [`berth_runtime::run_in_rootfs`]), holding the container's operation lock.
    pub(crate) async fn in_rootfs<T: Send + 'static>(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        mounts: bool,
        work: impl FnOnce(&Record) -> T + Send + 'static,
    ) -> Result<T> {
        let _op = entry.op.lock().await;
        if entry.phase.borrow().removed {
            return Err(Error::NoSuchContainer { name: entry.id.clone() });
        }
        let rec = entry.record();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let spec = this.view_spec(&rec, mounts)?;
            Ok(berth_runtime::run_in_rootfs(&spec, || work(&rec))?)
        })
        .await
        .expect("a root filesystem view does not panic")
    }

    /// `GET /containers/{id}/changes`.
    pub(crate) async fn changes(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<Vec<Change>> {
        let _op = entry.op.lock().await;
        let rec = entry.record();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let diff = UpperDiff::scan(
                &this.dir(&rec.id).join("upper"),
                &this.lowers_of(&rec)?,
                berth_runtime::RUNTIME_MOUNT_POINTS,
            )?;
            Ok(diff.changes())
        })
        .await
        .expect("a diff does not panic")
    }

    /// `POST /commit`: the container's changes as a new image on top of its own, with its
    /// config (or the request's) and the `--change`s, tagged when asked. Publishes `commit`.
    pub(crate) async fn commit(self: &Arc<Self>, entry: &Arc<Entry>, req: CommitRequest) -> Result<Image> {
        let _op = entry.op.lock().await;
        if entry.phase.borrow().removed {
            return Err(Error::NoSuchContainer { name: entry.id.clone() });
        }
        let rec = entry.record();
        let this = self.clone();
        let comment = req.comment.clone();
        let (image, rec) = tokio::task::spawn_blocking(move || this.commit_blocking(rec, req))
            .await
            .expect("a commit does not panic")?;
        let reference = image.tags.first().map(|t| familiar(t).to_owned()).unwrap_or_default();
        self.emit(
            &rec,
            "commit",
            &[
                ("comment", comment),
                ("imageID", image.record.id.to_string()),
                ("imageRef", reference),
            ],
        );
        Ok(image)
    }

    fn commit_blocking(&self, rec: Record, req: CommitRequest) -> Result<(Image, Record)> {
        let parent = self.images.get(&rec.image_id)?;
        let container = config_of(&rec.config)?;
        let mut config = match &req.config {
            Some(v) => config_of(v)?,
            None => container.clone(),
        };
        apply_changes(&mut config, &req.changes)?;
        merge(&mut config, &container);
        let created_by = rec
            .config
            .get("Cmd")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        // A container `docker pause`d already stays frozen, and paused, after the commit.
        let _thaw = if req.pause && rec.running() && !rec.paused() {
            let cgroup = berth_runtime::Cgroup::open(&super::cgroups_path(&rec))?;
            cgroup.freeze()?;
            Some(Thaw(cgroup))
        } else {
            None
        };
        let started = std::time::Instant::now();
        let diff = UpperDiff::scan(
            &self.dir(&rec.id).join("upper"),
            &self.lowers_of(&rec)?,
            berth_runtime::RUNTIME_MOUNT_POINTS,
        )?;
        let image = self.images.commit(
            &parent.record,
            &diff,
            &CommitOptions {
                reference: req.reference.clone(),
                author: req.author.clone(),
                comment: req.comment.clone(),
                container_id: rec.id.clone(),
                created_by,
                config,
            },
        )?;
        tracing::info!(
            container = %rec.id,
            image = %image.record.id,
            layer = !diff.is_empty(),
            ms = started.elapsed().as_millis() as u64,
            "container committed"
        );
        Ok((image, rec))
    }
}

fn mount_destination(m: &MountSpec) -> &str {
    match m {
        MountSpec::Bind { destination, .. } | MountSpec::Tmpfs { destination, .. } => destination,
    }
}

/// Whether `path` (absolute, resolved inside the container) may be written: a path under a
/// read-only bind mount, or on a read-only root filesystem, may not (moby `checkWritablePath`).
pub(crate) fn check_writable(rec: &Record, path: &str) -> Result<()> {
    let under = |dest: &str| {
        let dest = dest.trim_end_matches('/');
        path == dest || dest.is_empty() || path.starts_with(&format!("{dest}/"))
    };
    if let Some(m) = rec.settings.mounts.iter().find(|m| under(&m.destination)) {
        if m.kind == "bind" && m.readonly {
            return Err(Error::InvalidContainerConfig {
                reason: "mounted volume is marked read-only".into(),
            });
        }
        return Ok(());
    }
    if rec.settings.readonly_rootfs {
        return Err(Error::InvalidContainerConfig {
            reason: "container rootfs is marked read-only".into(),
        });
    }
    Ok(())
}

/// A docker `Config` (PascalCase) as the image config's fields; empty strings are unset.
fn config_of(v: &Value) -> Result<ContainerConfig> {
    let mut c: ContainerConfig = serde_json::from_value(v.clone()).map_err(|e| Error::InvalidContainerConfig {
        reason: format!("invalid container config in the commit request: {e}"),
    })?;
    for s in [&mut c.user, &mut c.working_dir, &mut c.stop_signal] {
        if s.as_deref() == Some("") {
            *s = None;
        }
    }
    Ok(c)
}

/// moby's `merge` (daemon/commit.go): what the new config leaves unset comes from the
/// container's.
fn merge(new: &mut ContainerConfig, container: &ContainerConfig) {
    if new.user.is_none() {
        new.user = container.user.clone();
    }
    match (&mut new.exposed_ports, &container.exposed_ports) {
        (None, Some(c)) => new.exposed_ports = Some(c.clone()),
        (Some(n), Some(c)) => {
            for (k, v) in c {
                n.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        _ => {}
    }
    match (&mut new.env, &container.env) {
        (None, Some(c)) => new.env = Some(c.clone()),
        (Some(n), Some(c)) if n.is_empty() => *n = c.clone(),
        (Some(n), Some(c)) => {
            let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_owned();
            for e in c {
                if !n.iter().any(|x| key(x) == key(e)) {
                    n.push(e.clone());
                }
            }
        }
        _ => {}
    }
    if let Some(c) = &container.labels {
        let labels = new.labels.get_or_insert_with(Default::default);
        for (k, v) in c {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if new.entrypoint.as_ref().is_none_or(Vec::is_empty) {
        if new.cmd.as_ref().is_none_or(Vec::is_empty) {
            new.cmd = container.cmd.clone();
        }
        if new.entrypoint.is_none() {
            new.entrypoint = container.entrypoint.clone();
        }
    }
    if new.working_dir.is_none() {
        new.working_dir = container.working_dir.clone();
    }
    match (&mut new.volumes, &container.volumes) {
        (None, Some(c)) => new.volumes = Some(c.clone()),
        (Some(n), Some(c)) => {
            for (k, v) in c {
                n.insert(k.clone(), v.clone());
            }
        }
        _ => {}
    }
    if new.stop_signal.is_none() {
        new.stop_signal = container.stop_signal.clone();
    }
}

/// A path as `docker cp` names it in its errors: absolute, as given otherwise.
pub(crate) fn shown_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        Path::new("/").join(path).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commit_config_merges_like_dockerd() {
        let container = config_of(&json!({
            "User": "", "Env": ["PATH=/bin", "A=1"], "Cmd": ["sh", "-c", "x"], "Entrypoint": null,
            "WorkingDir": "/srv", "Labels": {"l": "1"}, "Hostname": "abc", "Image": "busybox",
        }))
        .unwrap();
        assert_eq!(container.user, None);
        let mut c = container.clone();
        apply_changes(
            &mut c,
            &[
                r#"CMD ["cat","/hello"]"#.to_owned(),
                "ENV B=2".to_owned(),
                "VOLUME /data".to_owned(),
            ],
        )
        .unwrap();
        merge(&mut c, &container);
        assert_eq!(c.cmd, Some(vec!["cat".to_owned(), "/hello".to_owned()]));
        assert_eq!(
            c.env,
            Some(vec!["PATH=/bin".to_owned(), "A=1".to_owned(), "B=2".to_owned()])
        );
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert!(c.volumes.unwrap().contains_key("/data"));
        // A body config without Cmd gets the container's.
        let mut body = config_of(&json!({"Env": ["X=1"]})).unwrap();
        merge(&mut body, &container);
        assert_eq!(body.cmd, container.cmd);
        assert_eq!(body.env.as_ref().unwrap().len(), 3);
        assert_eq!(shown_path("x/y"), "/x/y");
    }
}
