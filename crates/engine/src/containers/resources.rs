//! A running container's resources: `docker pause`/`unpause` through the cgroup freezer
//! and `docker update` of its limits and restart policy.

use serde_json::Value;

use super::{Containers, Entry, cgroups_path, update};
use crate::error::{Error, Result};

impl Containers {
    /// `POST /containers/{id}/update`: new limits (live when it runs, and for every later
    /// start) and restart policy. Returns dockerd's warnings.
    pub(crate) async fn update_resources(&self, entry: &Entry, body: &Value) -> Result<Vec<String>> {
        let _op = entry.op.lock().await;
        let old = entry.record();
        if entry.phase.borrow().removed {
            return Err(Error::NoSuchContainer { name: old.id });
        }
        let u = update::update(&old.host_config, body, &old.id, old.settings.auto_remove)?;
        let rec = self.update(entry, |r| {
            r.host_config = u.host_config;
            r.settings.resources = u.resources;
            if let Some(p) = u.restart {
                r.settings.restart = p;
            }
        })?;
        if rec.running() && u.live != berth_runtime::Resources::default() {
            let path = cgroups_path(&rec);
            let live = u.live;
            let applied =
                tokio::task::spawn_blocking(move || berth_runtime::Cgroup::open(&path).and_then(|cg| cg.update(&live)))
                    .await
                    .expect("a cgroup update does not panic");
            if let Err(e) = applied {
                // As dockerd: the record goes back to what it was.
                if let Err(e) = self.update(entry, |r| {
                    r.host_config = old.host_config.clone();
                    r.settings.resources = old.settings.resources.clone();
                    r.settings.restart = old.settings.restart.clone();
                }) {
                    tracing::error!(container = %old.id, error = %e, "failed to restore the record after a failed update");
                }
                return Err(Error::HostRefused {
                    message: format!("Cannot update container {}: {e}", old.id),
                });
            }
        }
        tracing::info!(container = %rec.id, "container updated");
        self.emit(&rec, "update", &[]);
        Ok(u.warnings)
    }

    /// `POST /containers/{id}/pause`: freezes every process of the container.
    pub(crate) async fn pause(&self, entry: &Entry) -> Result<()> {
        self.set_frozen(entry, true).await
    }

    /// `POST /containers/{id}/unpause`.
    pub(crate) async fn unpause(&self, entry: &Entry) -> Result<()> {
        self.set_frozen(entry, false).await
    }

    async fn set_frozen(&self, entry: &Entry, freeze: bool) -> Result<()> {
        let _op = entry.op.lock().await;
        let rec = entry.record();
        if freeze {
            if !rec.running() {
                return Err(Error::NotRunning { id: rec.id });
            }
            if rec.paused() {
                return Err(Error::AlreadyPaused { id: rec.id });
            }
        } else if !rec.paused() {
            return Err(Error::NotPaused { id: rec.id });
        }
        let path = cgroups_path(&rec);
        let done = tokio::task::spawn_blocking(move || {
            let cg = berth_runtime::Cgroup::open(&path)?;
            if freeze { cg.freeze() } else { cg.thaw() }
        })
        .await
        .expect("freezing does not panic");
        if let Err(e) = done {
            let verb = if freeze { "pause" } else { "unpause" };
            return Err(Error::HostRefused {
                message: format!("Cannot {verb} container {}: {e}", rec.id),
            });
        }
        let rec = self.update(entry, |r| r.state.paused = freeze)?;
        tracing::info!(container = %rec.id, paused = freeze, "container (un)paused");
        self.emit(&rec, if freeze { "pause" } else { "unpause" }, &[]);
        Ok(())
    }
}
