//! Prometheus text metrics: requests by route and status, bytes in and out, upload sessions,
//! storage size.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) uploads_started: AtomicU64,
    pub(crate) storage_bytes: AtomicU64,
    pub(crate) gc_runs: AtomicU64,
    pub(crate) gc_blobs_removed: AtomicU64,
}

impl Metrics {
    pub(crate) fn request(&self, route: &'static str, method: &'static str, status: u16, bytes_out: u64) {
        *self
            .requests
            .lock()
            .expect("metrics poisoned")
            .entry((route, method, status))
            .or_default() += 1;
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, live_uploads: usize) -> String {
        let mut s = String::new();
        s.push_str("# HELP berth_registry_requests_total HTTP requests by route, method and status.\n");
        s.push_str("# TYPE berth_registry_requests_total counter\n");
        for ((route, method, status), n) in self.requests.lock().expect("metrics poisoned").iter() {
            let _ = writeln!(
                s,
                "berth_registry_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
        };
        one(
            "berth_registry_bytes_received_total",
            "counter",
            "Bytes received in uploads and manifests.",
            self.bytes_in.load(Ordering::Relaxed),
        );
        one(
            "berth_registry_bytes_sent_total",
            "counter",
            "Bytes sent in response bodies.",
            self.bytes_out.load(Ordering::Relaxed),
        );
        one(
            "berth_registry_upload_sessions",
            "gauge",
            "Upload sessions open in this process.",
            live_uploads as u64,
        );
        one(
            "berth_registry_upload_sessions_started_total",
            "counter",
            "Upload sessions started.",
            self.uploads_started.load(Ordering::Relaxed),
        );
        one(
            "berth_registry_storage_bytes",
            "gauge",
            "Bytes of blobs in storage.",
            self.storage_bytes.load(Ordering::Relaxed),
        );
        one(
            "berth_registry_gc_runs_total",
            "counter",
            "Garbage collections run.",
            self.gc_runs.load(Ordering::Relaxed),
        );
        one(
            "berth_registry_gc_blobs_removed_total",
            "counter",
            "Blobs removed by garbage collection.",
            self.gc_blobs_removed.load(Ordering::Relaxed),
        );
        s
    }
}
