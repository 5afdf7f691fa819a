//! A running container's resources: `pause`, `unpause`, `stats` and `update`, in dockerd's
//! shapes (moby `api/types/container/stats.go`, `daemon/stats.go`, `daemon/update.go`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as PathExtractor, RawQuery, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use berth_runtime::{BlkioEntry, CgroupStats};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::State;
use super::images::Query;
use crate::containers::{Entry, Record, ZERO_TIME, cgroups_path};
use crate::error::Error;

type AppState = StateExtractor<Arc<State>>;

/// How often a stats stream sends, as dockerd's collector.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// `POST /containers/{id}/pause`.
pub(super) async fn pause(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
) -> Result<StatusCode, Error> {
    let entry = state.containers.get(&id)?;
    state.containers.pause(&entry).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/unpause`.
pub(super) async fn unpause(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
) -> Result<StatusCode, Error> {
    let entry = state.containers.get(&id)?;
    state.containers.unpause(&entry).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/update` with an `UpdateConfig` (resources and restart policy).
pub(super) async fn update(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    body: Bytes,
) -> Result<Response, Error> {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::InvalidContainerConfig {
            reason: format!("invalid JSON in the request body: {e}"),
        })?
    };
    let entry = state.containers.get(&id)?;
    let warnings = state.containers.update_resources(&entry, &body).await?;
    Ok((StatusCode::OK, Json(json!({ "Warnings": warnings }))).into_response())
}

/// One reading: when, the cgroup's counters, and the host's CPU time then.
struct Sample {
    read: String,
    stats: CgroupStats,
    system_cpu: u64,
    online_cpus: u32,
}

/// Reads the container's cgroup; `None` when it does not run (any more).
fn sample(rec: &Record) -> Option<Sample> {
    if !rec.running() {
        return None;
    }
    let cg = berth_runtime::Cgroup::open(&cgroups_path(rec)).ok()?;
    if !cg.exists() {
        return None;
    }
    let stats = cg.stats();
    let (system_cpu, online_cpus) = berth_runtime::system_cpu_usage().unwrap_or((0, 0));
    Some(Sample {
        read: now_rfc3339(),
        stats,
        system_cpu,
        online_cpus,
    })
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ZERO_TIME.to_owned())
}

/// The host's memory, the limit dockerd shows for a container without one.
fn machine_memory() -> u64 {
    static MEMORY: OnceLock<u64> = OnceLock::new();
    *MEMORY.get_or_init(berth_runtime::machine_memory)
}

/// Inserts `v` under `k` unless it is zero (Go's `omitempty`).
fn put_nonzero(m: &mut Map<String, Value>, k: &str, v: u64) {
    if v != 0 {
        m.insert(k.to_owned(), json!(v));
    }
}

/// `cpu_stats` / `precpu_stats`.
fn cpu_json(s: Option<&Sample>) -> Value {
    let Some(s) = s else {
        return json!({
            "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        });
    };
    let c = &s.stats.cpu;
    let mut usage = json!({
        "total_usage": c.total,
        "usage_in_kernelmode": c.kernel,
        "usage_in_usermode": c.user,
    });
    if !c.percpu.is_empty() {
        usage["percpu_usage"] = json!(c.percpu);
    }
    let mut out = Map::new();
    out.insert("cpu_usage".into(), usage);
    put_nonzero(&mut out, "system_cpu_usage", s.system_cpu);
    put_nonzero(&mut out, "online_cpus", u64::from(s.online_cpus));
    out.insert(
        "throttling_data".into(),
        json!({"periods": c.periods, "throttled_periods": c.throttled_periods, "throttled_time": c.throttled_time}),
    );
    Value::Object(out)
}

fn blkio_json(entries: &[BlkioEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}))
            .collect(),
    )
}

/// One `StatsResponse`: `cur` is this reading (`None`: not running, all zeros as dockerd
/// sends them), `pre` the one before, for the CPU percentage.
fn stats_json(rec: &Record, cur: Option<&Sample>, pre: Option<&Sample>) -> Value {
    let mut v = json!({
        "read": cur.map_or(ZERO_TIME, |s| s.read.as_str()),
        "preread": pre.map_or(ZERO_TIME, |s| s.read.as_str()),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_json(cur),
        "precpu_stats": cpu_json(pre),
        "name": format!("/{}", rec.name),
        "id": rec.id,
    });
    let Some(s) = cur else {
        v["pids_stats"] = json!({});
        v["memory_stats"] = json!({});
        v["blkio_stats"] = json!({
            "io_service_bytes_recursive": null, "io_serviced_recursive": null,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        });
        return v;
    };
    let st = &s.stats;
    let mut pids = Map::new();
    put_nonzero(&mut pids, "current", st.pids_current);
    put_nonzero(&mut pids, "limit", st.pids_limit);
    v["pids_stats"] = Value::Object(pids);
    let b = &st.blkio;
    v["blkio_stats"] = json!({
        "io_service_bytes_recursive": blkio_json(&b.service_bytes),
        "io_serviced_recursive": blkio_json(&b.serviced),
        "io_queue_recursive": blkio_json(&b.queued),
        "io_service_time_recursive": blkio_json(&b.service_time),
        "io_wait_time_recursive": blkio_json(&b.wait_time),
        "io_merged_recursive": blkio_json(&b.merged),
        "io_time_recursive": blkio_json(&b.time),
        "sectors_recursive": blkio_json(&b.sectors),
    });
    let m = &st.memory;
    let machine = machine_memory();
    // Without a limit the kernel reports a huge number; dockerd shows the host's memory.
    let limit = if machine > 0 && m.limit > machine {
        machine
    } else {
        m.limit
    };
    let mut mem = Map::new();
    put_nonzero(&mut mem, "usage", m.usage);
    put_nonzero(&mut mem, "max_usage", m.max_usage);
    if !m.stats.is_empty() {
        mem.insert("stats".into(), json!(m.stats));
    }
    put_nonzero(&mut mem, "failcnt", m.failcnt);
    put_nonzero(&mut mem, "limit", limit);
    v["memory_stats"] = Value::Object(mem);
    // No `networks`: a container's namespace has only loopback until bridges are built,
    // and dockerd leaves it out then too.
    v
}

async fn take_sample(entry: &Entry) -> Option<Sample> {
    let rec = entry.record();
    tokio::task::spawn_blocking(move || sample(&rec))
        .await
        .expect("reading a cgroup does not panic")
}

fn json_line(v: &Value) -> Bytes {
    let mut line = serde_json::to_vec(v).expect("JSON");
    line.push(b'\n');
    Bytes::from(line)
}

/// `GET /containers/{id}/stats?stream=&one-shot=`: with `stream` (the default) one
/// document a second until the client leaves; without, one document, read twice a second
/// apart so the CPU percentage can be computed, unless `one-shot`. A container that does not
/// run reads as zeros.
pub(super) async fn stats(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let q = Query::new(raw);
    let entry = state.containers.get(&id)?;
    let stream = q.get("stream").is_none_or(|_| q.flag("stream"));
    let one_shot = q.flag("one-shot");
    let mut resp = if !stream {
        let first = take_sample(&entry).await;
        let doc = match first {
            None => stats_json(&entry.record(), None, None),
            Some(first) if one_shot => stats_json(&entry.record(), Some(&first), None),
            Some(first) => {
                tokio::time::sleep(STATS_INTERVAL).await;
                let second = take_sample(&entry).await;
                stats_json(&entry.record(), second.as_ref(), second.as_ref().map(|_| &first))
            }
        };
        Response::new(Body::from(json_line(&doc)))
    } else {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let mut shutdown = state.shutdown.clone();
        let entry = Arc::clone(&entry);
        tokio::spawn(async move {
            let mut removed = entry.subscribe();
            let mut pre: Option<Sample> = None;
            loop {
                let cur = take_sample(&entry).await;
                let doc = stats_json(&entry.record(), cur.as_ref(), pre.as_ref().filter(|_| cur.is_some()));
                if tx.send(json_line(&doc)).await.is_err() {
                    return;
                }
                pre = cur;
                tokio::select! {
                    () = tokio::time::sleep(STATS_INTERVAL) => {}
                    () = tx.closed() => return,
                    () = super::stopped(&mut shutdown) => return,
                    _ = removed.wait_for(|p| p.removed) => return,
                }
            }
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        });
        Response::new(Body::from_stream(body))
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_runtime::{CpuUsage, MemoryUsage};

    fn record() -> Record {
        serde_json::from_value(json!({
            "id": "abc", "name": "web", "created": ZERO_TIME, "image": "busybox", "image_id": "sha256:0",
            "settings": {
                "args": ["sh"], "env": [], "cwd": "/", "user": "", "hostname": "abc", "domainname": "",
                "network": "None", "privileged": false, "cap_add": [], "cap_drop": [], "mounts": [],
                "readonly_rootfs": false, "extra_hosts": [], "dns": [], "dns_search": [], "dns_options": [],
                "log": {"max_size": 1, "max_file": 1}, "auto_remove": false, "stop_signal": "SIGTERM",
                "stop_timeout": null
            },
            "config": {}, "host_config": {},
            "state": {"status": "running", "pid": 1, "shim_pid": 1, "exit_code": 0, "error": "",
                      "started_at": ZERO_TIME, "finished_at": ZERO_TIME}
        }))
        .unwrap()
    }

    #[test]
    fn shapes_like_dockerd() {
        let rec = record();
        let zero = stats_json(&rec, None, None);
        assert_eq!(zero["read"], ZERO_TIME);
        assert_eq!(zero["pids_stats"], json!({}));
        assert_eq!(zero["memory_stats"], json!({}));
        assert!(zero["blkio_stats"]["io_service_bytes_recursive"].is_null());
        assert_eq!(zero["cpu_stats"]["cpu_usage"]["total_usage"], 0);
        assert!(zero["cpu_stats"].get("system_cpu_usage").is_none());
        assert_eq!(zero["name"], "/web");

        let s = Sample {
            read: "2026-01-01T00:00:01Z".into(),
            stats: CgroupStats {
                cpu: CpuUsage {
                    total: 5,
                    percpu: vec![2, 3],
                    ..CpuUsage::default()
                },
                memory: MemoryUsage {
                    usage: 100,
                    limit: u64::MAX,
                    ..MemoryUsage::default()
                },
                pids_current: 3,
                ..CgroupStats::default()
            },
            system_cpu: 1000,
            online_cpus: 2,
        };
        let v = stats_json(&rec, Some(&s), Some(&s));
        assert_eq!(v["cpu_stats"]["cpu_usage"]["percpu_usage"], json!([2, 3]));
        assert_eq!(v["cpu_stats"]["online_cpus"], 2);
        assert_eq!(v["precpu_stats"]["system_cpu_usage"], 1000);
        assert_eq!(v["pids_stats"], json!({"current": 3}));
        assert_eq!(v["memory_stats"]["usage"], 100);
        assert!(v["memory_stats"].get("max_usage").is_none());
        let limit = v["memory_stats"]["limit"].as_u64().unwrap();
        assert!(
            limit < u64::MAX && limit == machine_memory(),
            "capped at the host's memory"
        );
        assert_eq!(v["blkio_stats"]["io_serviced_recursive"], json!([]));
        assert!(v.get("networks").is_none());
    }
}
