//! Online garbage collection. It runs beside pushes: it holds the GC lock exclusively only
//! while it decides and deletes, and pushes take that lock shared to make a blob or manifest
//! visible, so a manifest is either checked before the GC (and its blobs are marked) or after
//! it (and finds only what survived). Blobs younger than the grace period, or asked about by
//! a client within it, are never collected: that covers layers whose manifest is not pushed yet.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use berth_oci::Digest;

use crate::error::Result;
use crate::index::now_secs;
use crate::registry::{Registry, SessionRecord, blocking};
use crate::storage;

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Blobs no manifest references, past the grace period.
    pub blobs_removed: Vec<String>,
    pub bytes_freed: u64,
    /// Blob files in storage that the index never recorded (left by a crash mid-commit).
    pub orphans_removed: usize,
    /// Upload sessions past their expiry.
    pub uploads_expired: usize,
    /// Every failure met on the way; a failure never stops the rest.
    pub errors: Vec<String>,
}

impl Registry {
    /// Runs one collection.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let mut report = GcReport {
            dry_run,
            ..Default::default()
        };
        let grace = self.config().gc_grace();
        let _g = self.gc_lock.write().await;
        let idx = self.index.clone();
        let view = blocking(move || idx.gc_view()).await?;
        let now = now_secs();
        let recently_touched: HashSet<Digest> = {
            let mut t = self.touched.lock().expect("touched poisoned");
            t.retain(|_, at| at.elapsed() < grace);
            t.keys().cloned().collect()
        };
        let mut doomed = Vec::new();
        for (d, meta) in &view.blobs {
            // `created` is truncated to whole seconds: one more second keeps the grace whole.
            if view.referenced.contains(d) || recently_touched.contains(d) || meta.created + grace.as_secs() + 1 > now {
                continue;
            }
            report.bytes_freed += meta.size;
            report.blobs_removed.push(d.to_string());
            doomed.push(d.clone());
        }
        let known: HashSet<Digest> = view.blobs.iter().map(|(d, _)| d.clone()).collect();
        let orphans: Vec<Digest> = match self.storage.list_blobs().await {
            Ok(all) => all
                .into_iter()
                .filter(|(d, _, mtime)| !known.contains(d) && older_than(*mtime, grace))
                .map(|(d, _, _)| d)
                .collect(),
            Err(e) => {
                report.errors.push(format!("listing blobs: {e}"));
                vec![]
            }
        };
        report.orphans_removed = orphans.len();
        let expired = self.expired_uploads(&mut report.errors).await;
        report.uploads_expired = expired.len();
        if dry_run {
            return Ok(report);
        }
        // Index first: once the index forgets a blob nobody can see it, then storage drops it.
        let (idx, ds) = (self.index.clone(), doomed.clone());
        let unlinked = blocking(move || idx.remove_blobs(&ds)).await?;
        for (repo, d) in unlinked {
            if let Err(e) = self.storage.delete(&storage::layer_link(&repo, &d)).await {
                report.errors.push(e.to_string());
            }
        }
        for d in doomed.iter().chain(&orphans) {
            self.manifests.remove(d);
            if let Err(e) = self.storage.delete_blob(d).await {
                report.errors.push(e.to_string());
            }
        }
        for id in expired {
            if let Err(e) = self.drop_upload(&id).await {
                report.errors.push(e.to_string());
            }
        }
        self.metrics.storage_bytes.fetch_sub(
            report
                .bytes_freed
                .min(self.metrics.storage_bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.metrics.gc_runs.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .gc_blobs_removed
            .fetch_add(doomed.len() as u64, Ordering::Relaxed);
        tracing::info!(
            blobs = report.blobs_removed.len(),
            bytes = report.bytes_freed,
            orphans = report.orphans_removed,
            uploads = report.uploads_expired,
            errors = report.errors.len(),
            "garbage collection done"
        );
        Ok(report)
    }

    /// Upload sessions older than the expiry, and debris with no readable session record.
    async fn expired_uploads(&self, errors: &mut Vec<String>) -> Vec<String> {
        let expiry = self.config().upload_expiry();
        let ids = match self.storage.list_uploads().await {
            Ok(ids) => ids,
            Err(e) => {
                errors.push(format!("listing uploads: {e}"));
                return vec![];
            }
        };
        let mut out = Vec::new();
        for id in ids {
            let started = match self.storage.get_session(&id).await {
                Ok(Some(b)) => serde_json::from_slice::<SessionRecord>(&b)
                    .map(|r| r.started)
                    .unwrap_or(0),
                Ok(None) => 0,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            if started + expiry.as_secs() <= now_secs() {
                out.push(id);
            }
        }
        out
    }

    /// Runs GC every `interval` until the process ends.
    pub(crate) fn spawn_periodic_gc(&self, interval: Duration) {
        let reg = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = reg.gc(false).await {
                    tracing::error!(error = %e, "garbage collection failed");
                }
            }
        });
    }
}

fn older_than(t: SystemTime, age: Duration) -> bool {
    SystemTime::now().duration_since(t).map(|d| d >= age).unwrap_or(false)
}
