//! `/containers/…`: create, start, stop, kill, wait, remove, list, inspect, logs and the
//! hijacked attach, shaped like dockerd's answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as PathExtractor, RawQuery, Request, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use berth_runtime::{LogCursor, LogEntry};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::State;
use super::images::Query;
use crate::containers::{Phase, Record, ZERO_TIME};
use crate::error::Error;

type AppState = StateExtractor<Arc<State>>;

const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";
const RAW: &str = "application/vnd.docker.raw-stream";

/// `POST /containers/create?name=`.
pub(super) async fn create(
    StateExtractor(state): AppState,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, Error> {
    let q = Query::new(raw);
    if let Some(platform) = q.get("platform").filter(|p| !p.is_empty()) {
        let mut parts = platform.split('/');
        let (os, arch) = (parts.next().unwrap_or(""), parts.next());
        if os != "linux" || arch.is_some_and(|a| a != state.host.go_arch) {
            return Err(Error::InvalidContainerConfig {
                reason: format!(
                    "platform {platform:?} is not this host's (linux/{}); Berth runs no emulation",
                    state.host.go_arch
                ),
            });
        }
    }
    let body: Value = serde_json::from_slice(&body).map_err(|e| Error::InvalidContainerConfig {
        reason: format!("invalid JSON in the request body: {e}"),
    })?;
    let (id, warnings) = state.containers.create(&body, q.get("name")).await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": id, "Warnings": warnings}))).into_response())
}

/// `POST /containers/{id}/start`: 204, or 304 when it already runs.
pub(super) async fn start(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
) -> Result<StatusCode, Error> {
    let entry = state.containers.get(&id)?;
    Ok(if state.containers.start(&entry).await? {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    })
}

/// The `t` of stop and restart: seconds to wait before killing, when given.
fn stop_timeout(q: &Query) -> Result<Option<i64>, Error> {
    q.get("t")
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<i64>().map_err(|_| Error::InvalidQuery {
                name: "t",
                value: t.to_owned(),
                reason: "expected a number of seconds",
            })
        })
        .transpose()
}

/// `POST /containers/{id}/stop?t=&signal=`: 204, or 304 when it was not running.
pub(super) async fn stop(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, Error> {
    let q = Query::new(raw);
    let entry = state.containers.get(&id)?;
    let t = stop_timeout(&q)?;
    Ok(if state.containers.stop(&entry, t, q.get("signal")).await? {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    })
}

/// `POST /containers/{id}/restart?t=&signal=`: stop (when running), then start.
pub(super) async fn restart(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, Error> {
    let q = Query::new(raw);
    let entry = state.containers.get(&id)?;
    let t = stop_timeout(&q)?;
    state.containers.stop(&entry, t, q.get("signal")).await?;
    state.containers.start(&entry).await?;
    state.containers.emit_restart(&entry);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/resize?h=&w=`.
pub(super) async fn resize(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, Error> {
    let (h, w) = terminal_size(&Query::new(raw))?;
    let entry = state.containers.get(&id)?;
    state.containers.resize(&entry, h, w)?;
    Ok(StatusCode::OK)
}

/// `?h=ROWS&w=COLUMNS` of a resize (a container's or an exec's terminal).
pub(super) fn terminal_size(q: &Query) -> Result<(u16, u16), Error> {
    let dim = |name: &'static str| -> Result<u16, Error> {
        let v = q.get(name).unwrap_or("");
        v.parse().map_err(|_| Error::InvalidQuery {
            name,
            value: v.to_owned(),
            reason: "expected a number of rows or columns",
        })
    };
    Ok((dim("h")?, dim("w")?))
}

/// `GET /containers/{id}/top?ps_args=`: the host's `ps` (default `-ef`), rows of the
/// container's processes (those in its cgroup) only, as dockerd does it.
pub(super) async fn top(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let entry = state.containers.get(&id)?;
    let rec = entry.record();
    if !rec.running() {
        return Err(Error::NotRunning { id: rec.id });
    }
    let pids: std::collections::HashSet<String> = ["pids", "memory", "cpu", "freezer", ""]
        .iter()
        .map(|c| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(c)
                .join("berth")
                .join(&rec.id)
                .join("cgroup.procs")
        })
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let args: Vec<String> = q
        .get("ps_args")
        .filter(|a| !a.is_empty())
        .unwrap_or("-ef")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let out = tokio::process::Command::new("ps")
        .args(&args)
        .output()
        .await
        .map_err(|source| Error::Io {
            op: "run",
            path: "ps".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::InvalidContainerConfig {
            reason: format!("Error running ps: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let Some(pid_col) = header.iter().position(|h| h == "PID") else {
        return Err(Error::InvalidContainerConfig {
            reason: "Couldn't find PID field in ps output".into(),
        });
    };
    let rows: Vec<Vec<String>> = lines
        .filter_map(|l| {
            // The last column (the command) keeps its inner spaces, joined by one.
            let mut fields: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
            if fields.len() < header.len() {
                return None;
            }
            let rest = fields.split_off(header.len() - 1).join(" ");
            fields.push(rest);
            pids.contains(fields.get(pid_col)?).then_some(fields)
        })
        .collect();
    Ok(Json(json!({"Titles": header, "Processes": rows})))
}

/// `POST /containers/{id}/rename?name=`.
pub(super) async fn rename(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, Error> {
    let q = Query::new(raw);
    let entry = state.containers.get(&id)?;
    state.containers.rename(&entry, q.get("name").unwrap_or(""))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/prune?filters=`: stopped containers, chosen by `label`, `label!` and
/// `until`; `SpaceReclaimed` is what their own layers held.
pub(super) async fn prune(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let filter = super::prune::PruneFilter::new(&q.filters(&["label", "label!", "until"])?)?;
    let chosen = move |r: &Record| {
        let labels = super::volumes::string_map(r.config.get("Labels"));
        filter.chosen(&labels, super::prune::rfc3339_secs(&r.created))
    };
    let (removed, reclaimed) = state.containers.prune(chosen).await;
    Ok(Json(json!({
        "ContainersDeleted": if removed.is_empty() { Value::Null } else { json!(removed) },
        "SpaceReclaimed": reclaimed,
    })))
}

/// `POST /containers/{id}/kill?signal=` (default SIGKILL).
pub(super) async fn kill(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, Error> {
    let q = Query::new(raw);
    let entry = state.containers.get(&id)?;
    state.containers.kill(&entry, q.get("signal"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /containers/{id}?force=&v=`.
pub(super) async fn remove(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, Error> {
    let q = Query::new(raw);
    if q.flag("link") {
        return Err(Error::NotBuilt {
            what: "legacy container links (docker rm --link); Berth has no links to remove".into(),
        });
    }
    let entry = state.containers.get(&id)?;
    state.containers.remove(&entry, q.flag("force"), q.flag("v")).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`. The status line
/// goes out at once; the body when the condition is met.
pub(super) async fn wait(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let q = Query::new(raw);
    let entry = state.containers.get(&id)?;
    let condition = q.get("condition").unwrap_or("").to_owned();
    if !["", "not-running", "next-exit", "removed"].contains(&condition.as_str()) {
        return Err(Error::InvalidQuery {
            name: "condition",
            value: condition,
            reason: "expected not-running, next-exit or removed",
        });
    }
    let mut rx = entry.subscribe();
    let start = *rx.borrow();
    let mut shutdown = state.shutdown.clone();
    let done = async move {
        let cond = |p: &Phase| match condition.as_str() {
            "next-exit" => p.exits > start.exits || p.removed,
            "removed" => p.removed,
            _ => !p.running,
        };
        let phase = tokio::select! {
            r = rx.wait_for(cond) => r.map(|p| *p).unwrap_or(Phase { removed: true, ..start }),
            () = super::stopped(&mut shutdown) => return None,
        };
        // A failed start is reported by the start call; the wait only carries the code (a
        // non-null Error makes the CLI print "Error waiting for container" as well).
        let mut body = serde_json::to_vec(&json!({"StatusCode": phase.exit_code, "Error": null})).expect("JSON");
        body.push(b'\n');
        Some(Ok::<_, std::convert::Infallible>(Bytes::from(body)))
    };
    let stream = futures::stream::once(done).filter_map(|x| async { x });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// docker's `units.HumanDuration`.
fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s / 3600 == 1 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s if s < 7 * 24 * 3600 * 2 => format!("{} days", s / 86400),
        s if s < 30 * 24 * 3600 * 3 => format!("{} weeks", s / (7 * 86400)),
        s if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 86400)),
        s => format!("{} years", s / (365 * 86400)),
    }
}

fn unix(ts: &str) -> i64 {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `Up 3 seconds`, `Exited (0) 2 minutes ago`, `Created`.
/// `docker ps`'s STATUS: `Up 5 seconds (healthy)`, `Exited (0) 2 minutes ago`, …
fn status_text(r: &Record, health: Option<&str>) -> String {
    match r.state.status.as_str() {
        "running" if r.paused() => format!("Up {} (Paused)", human_duration(now() - unix(&r.state.started_at))),
        "running" => {
            let up = human_duration(now() - unix(&r.state.started_at));
            match health {
                Some("starting") => format!("Up {up} (health: starting)"),
                Some(h) => format!("Up {up} ({h})"),
                None => format!("Up {up}"),
            }
        }
        "exited" => format!(
            "Exited ({}) {} ago",
            r.state.exit_code,
            human_duration(now() - unix(&r.state.finished_at))
        ),
        "removing" => "Removal In Progress".into(),
        _ => "Created".into(),
    }
}

fn mounts_json(r: &Record) -> Value {
    Value::Array(
        r.settings
            .mounts
            .iter()
            .map(|m| {
                if m.is_volume() {
                    return json!({
                        "Type": "volume",
                        "Name": m.volume,
                        "Source": m.source,
                        "Destination": m.destination,
                        "Driver": "local",
                        "Mode": m.mode,
                        "RW": !m.readonly,
                        "Propagation": "",
                    });
                }
                let mut v = json!({
                    "Type": m.kind,
                    "Source": m.source,
                    "Destination": m.destination,
                    "Mode": if m.readonly { "ro" } else { "" },
                    "RW": !m.readonly,
                    "Propagation": m.propagation,
                });
                if m.kind == "tmpfs" {
                    v["Mode"] = json!(m.options.join(","));
                }
                v
            })
            .collect(),
    )
}

/// One row of `GET /containers/json` (docker's `container.Summary`).
pub(super) fn summary(c: &crate::containers::Containers, r: &Record) -> Value {
    json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.image,
        "ImageID": r.image_id,
        "Command": r.settings.args.join(" "),
        "Created": unix(&r.created),
        "Ports": c.ports_list(r),
        "Labels": r.config.get("Labels").cloned().unwrap_or(json!({})),
        "State": r.status(),
        "Status": status_text(r, c.health_of(&r.id)),
        "HostConfig": {"NetworkMode": r.host_config.get("NetworkMode").cloned().unwrap_or(json!(r.settings.network.mode_name()))},
        "NetworkSettings": {"Networks": c.networks_json(r)},
        "Mounts": mounts_json(r),
    })
}

/// `GET /containers/json?all=&limit=&filters=`.
pub(super) async fn list(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let filters = q.filters(&[
        "id",
        "name",
        "status",
        "label",
        "exited",
        "ancestor",
        "network",
        "volume",
        "before",
        "since",
        "health",
        "publish",
        "expose",
        "is-task",
        "isolation",
    ])?;
    for key in ["publish", "expose"] {
        for v in filters.get(key).into_iter().flatten() {
            port_range(v).ok_or_else(|| Error::InvalidQuery {
                name: "filters",
                value: format!("{key}={v}"),
                reason: "expected PORT[/PROTO] or START-END[/PROTO]",
            })?;
        }
    }
    let limit: i64 = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(-1);
    let all = q.flag("all") || limit > 0 || filters.contains_key("status") || filters.contains_key("exited");
    let mut records: Vec<Record> = state.containers.all().iter().map(|e| e.record()).collect();
    records.sort_by(|a, b| b.created.cmp(&a.created));
    // `before` and `since` name containers; what they compare is their creation times.
    let created_of = |key: &str| -> Result<Option<f64>, Error> {
        match filters.get(key).and_then(|v| v.first()) {
            Some(v) => Ok(Some(entry_time(&state.containers.get(v)?.record().created))),
            None => Ok(None),
        }
    };
    let (before, since) = (created_of("before")?, created_of("since")?);
    let rows: Vec<Value> = records
        .iter()
        .filter(|r| all || r.running() || before.is_some() || since.is_some())
        .filter(|r| {
            let t = entry_time(&r.created);
            before.is_none_or(|b| t < b) && since.is_none_or(|s| t > s)
        })
        .filter(|r| matches_filters(&state.containers, r, &filters))
        .take(if limit > 0 { limit as usize } else { usize::MAX })
        .map(|r| summary(&state.containers, r))
        .collect();
    if !q.flag("size") {
        return Ok(Json(Value::Array(rows)));
    }
    let this = state.clone();
    let rows = tokio::task::spawn_blocking(move || with_sizes(&this, rows))
        .await
        .expect("measuring containers does not panic");
    Ok(Json(Value::Array(rows)))
}

/// `SizeRw` (the container's own layer) and `SizeRootFs` (that plus its image), as
/// `docker ps -s` and `/system/df` show them.
pub(super) fn with_sizes(state: &State, mut rows: Vec<Value>) -> Vec<Value> {
    let mut image_sizes: BTreeMap<String, u64> = BTreeMap::new();
    for row in &mut rows {
        let (Some(id), Some(image_id)) = (row["Id"].as_str(), row["ImageID"].as_str()) else {
            continue;
        };
        let rw = state.containers.size_rw(id);
        let image = *image_sizes
            .entry(image_id.to_owned())
            .or_insert_with(|| state.images.get(image_id).map_or(0, |i| i.record.size));
        row["SizeRw"] = json!(rw);
        row["SizeRootFs"] = json!(rw + image);
    }
    rows
}

/// dockerd's container filters: the values of one filter are alternatives, except `label`,
/// whose values must all hold (compose selects a project's service by two labels).
fn matches_filters(
    containers: &crate::containers::Containers,
    r: &Record,
    filters: &std::collections::BTreeMap<String, Vec<String>>,
) -> bool {
    let has_label = |v: &str| {
        let labels = r.config.get("Labels");
        match v.split_once('=') {
            Some((k, want)) => labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(want),
            None => labels.and_then(|l| l.get(v)).is_some(),
        }
    };
    filters.iter().all(|(name, values)| {
        if name == "label" {
            return values.iter().all(|v| has_label(v));
        }
        values.is_empty()
            || values.iter().any(|v| match name.as_str() {
                "id" => r.id.starts_with(v.as_str()),
                "name" => r.name.contains(v.trim_start_matches('/')),
                "status" => r.status() == v,
                "exited" => r.state.status == "exited" && v.parse::<i64>().ok() == Some(r.state.exit_code),
                "ancestor" => {
                    r.image == *v
                        || r.image_id == *v
                        || r.image_id.trim_start_matches("sha256:").starts_with(v.as_str())
                }
                "network" => containers.networks_json(r).as_object().is_some_and(|nets| {
                    nets.iter().any(|(name, n)| {
                        name == v
                            || n["NetworkID"]
                                .as_str()
                                .is_some_and(|id| !v.is_empty() && id.starts_with(v.as_str()))
                    })
                }),
                "volume" => r
                    .settings
                    .mounts
                    .iter()
                    .any(|m| m.volume == *v || m.source == *v || m.destination == *v),
                "before" | "since" => true,
                "health" => containers.health_of(&r.id).unwrap_or("none") == v,
                // No container is a swarm task.
                "is-task" => matches!(v.as_str(), "false" | "0"),
                "isolation" => r.host_config.get("Isolation").and_then(Value::as_str).unwrap_or("") == v,
                // moby's: a published (host) port, or an exposed (container) port, in range.
                "publish" | "expose" => {
                    let key = if name == "publish" { "PublicPort" } else { "PrivatePort" };
                    let Some((start, end, proto)) = port_range(v) else {
                        return false;
                    };
                    containers
                        .ports_list(r)
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p[key].as_u64().is_some_and(|n| (start..=end).contains(&n)) && p["Type"] == proto)
                }
                _ => false,
            })
    })
}

/// `80`, `80/udp`, `8000-8080/tcp` → (first, last, protocol); tcp when none is given.
fn port_range(v: &str) -> Option<(u64, u64, &str)> {
    let (ports, proto) = v.split_once('/').unwrap_or((v, "tcp"));
    if !["tcp", "udp", "sctp"].contains(&proto) {
        return None;
    }
    let (start, end) = ports.split_once('-').unwrap_or((ports, ports));
    let (start, end): (u16, u16) = (start.parse().ok()?, end.parse().ok()?);
    (start <= end).then_some((start.into(), end.into(), proto))
}

/// `GET /containers/{id}/json` (docker's `container.InspectResponse`).
pub(super) async fn inspect(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Error> {
    let size = Query::new(raw).flag("size");
    let entry = state.containers.get(&id)?;
    let r = entry.record();
    let dir = state.containers.dir_of(&r.id);
    let networks = state.containers.networks_json(&r);
    // dockerd fills the top-level address fields from the default bridge only.
    let default_bridge = networks.get("bridge").cloned().unwrap_or_else(|| {
        json!({"EndpointID": "", "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
               "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": ""})
    });
    let image = state.images.get(&r.image_id).ok();
    let lower = image
        .map(|i| {
            i.record
                .chain_ids()
                .iter()
                .rev()
                .map(|c| state.images.snapshot_path(c).display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default();
    let running = r.running();
    let mut out = json!({
        "Id": r.id,
        "Created": r.created,
        "Path": r.settings.args.first().cloned().unwrap_or_default(),
        "Args": r.settings.args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": r.status(),
            "Running": running,
            "Paused": r.paused(),
            "Restarting": false,
            "Health": entry.health().map(|h| h.to_json()),
            "OOMKilled": r.state.oom_killed,
            "Dead": false,
            "Pid": r.state.pid,
            "ExitCode": r.state.exit_code,
            "Error": r.state.error,
            "StartedAt": r.state.started_at,
            "FinishedAt": if r.state.finished_at.is_empty() { ZERO_TIME.to_owned() } else { r.state.finished_at.clone() },
        },
        "Image": r.image_id,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": state.containers.log_path_of(&r.id),
        "Name": format!("/{}", r.name),
        "RestartCount": r.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": r.host_config,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": lower,
                "UpperDir": dir.join("upper"),
                "WorkDir": dir.join("work"),
                "MergedDir": dir.join("rootfs"),
            },
        },
        "Mounts": mounts_json(&r),
        "Config": r.config,
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "SandboxKey": if running && r.settings.network != crate::containers::settings::Network::Host {
                format!("/proc/{}/ns/net", r.state.pid)
            } else {
                String::new()
            },
            "Ports": state.containers.ports_json(&r),
            "HairpinMode": false,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "SecondaryIPAddresses": null,
            "SecondaryIPv6Addresses": null,
            "EndpointID": default_bridge["EndpointID"],
            "Gateway": default_bridge["Gateway"],
            "GlobalIPv6Address": default_bridge["GlobalIPv6Address"],
            "GlobalIPv6PrefixLen": default_bridge["GlobalIPv6PrefixLen"],
            "IPAddress": default_bridge["IPAddress"],
            "IPPrefixLen": default_bridge["IPPrefixLen"],
            "IPv6Gateway": default_bridge["IPv6Gateway"],
            "MacAddress": default_bridge["MacAddress"],
            "Networks": networks,
        },
    });
    if size {
        let (this, id, image) = (state.clone(), r.id.clone(), r.image_id.clone());
        let (rw, image) = tokio::task::spawn_blocking(move || {
            let image = this.images.get(&image).map_or(0, |i| i.record.size);
            (this.containers.size_rw(&id), image)
        })
        .await
        .expect("measuring a container does not panic");
        out["SizeRw"] = json!(rw);
        out["SizeRootFs"] = json!(rw + image);
    }
    Ok(Json(out))
}

/// Which streams a reader wants, and how.
#[derive(Clone, Copy)]
struct Wanted {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    /// A terminal's output is one raw stream, without frame headers.
    raw: bool,
}

/// One 8-byte-header frame (moby `pkg/stdcopy`): stream 1 stdout, 2 stderr.
fn frame(e: &LogEntry, w: Wanted) -> Option<Bytes> {
    let kind = match e.stream.as_str() {
        "stdout" if w.stdout => 1u8,
        "stderr" if w.stderr => 2u8,
        _ => return None,
    };
    let payload = if w.timestamps {
        format!("{} {}", e.time, e.log)
    } else {
        e.log.clone()
    };
    if w.raw {
        return Some(Bytes::from(payload));
    }
    Some(multiplexed(kind, payload.as_bytes()))
}

/// One frame of a multiplexed (non-TTY) stream: the 8-byte header (stream 1 stdout,
/// 2 stderr; the length, big-endian), then the bytes.
pub(super) fn multiplexed(kind: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

/// Sends what the log gains until the run that was current at `exits` ends (or the
/// container goes away, the reader leaves, or the daemon stops).
async fn follow(
    mut cursor: LogCursor,
    mut rx: watch::Receiver<Phase>,
    exits: u64,
    wait_for_start: bool,
    w: Wanted,
    tx: mpsc::Sender<Bytes>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let p = *rx.borrow_and_update();
        // Read after looking at the phase: all output of an ended run is in the log by then.
        let done = p.exits > exits || p.removed || (!wait_for_start && !p.running);
        let entries = match cursor.read_new() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "failed to read the container log");
                return;
            }
        };
        for e in &entries {
            if let Some(f) = frame(e, w) {
                if tx.send(f).await.is_err() {
                    return;
                }
            }
        }
        if done {
            return;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = tx.closed() => return,
            () = super::stopped(&mut shutdown) => return,
        }
    }
}

/// `GET /containers/{id}/logs?stdout=&stderr=&follow=&tail=&timestamps=&since=&until=`.
pub(super) async fn logs(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let q = Query::new(raw);
    let entry = state.containers.get(&id)?;
    let raw = entry.record().settings.tty;
    let w = Wanted {
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        timestamps: q.flag("timestamps"),
        raw,
    };
    if !w.stdout && !w.stderr {
        return Err(Error::InvalidQuery {
            name: "stdout",
            value: String::new(),
            reason: "Bad parameters: you must choose at least one stream",
        });
    }
    let tail: Option<usize> = match q.get("tail").unwrap_or("all") {
        "all" | "" => None,
        t => Some(t.parse().map_err(|_| Error::InvalidQuery {
            name: "tail",
            value: t.to_owned(),
            reason: "expected a number or all",
        })?),
    };
    let since = time_bound(q.get("since"), "since")?;
    let until = time_bound(q.get("until"), "until")?;
    let path = state.containers.log_path_of(&entry.id);
    let rx = entry.subscribe();
    let phase = *rx.borrow();
    // The cursor continues where the history ends: every line shows once.
    let (history, cursor) = berth_runtime::read_with_cursor(&path).map_err(|source| Error::Io {
        op: "read",
        path: path.clone(),
        source,
    })?;
    let in_range = move |e: &LogEntry| {
        let t = entry_time(&e.time);
        since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
    };
    let mut selected: Vec<LogEntry> = history
        .into_iter()
        .filter(|e| (e.stream == "stdout" && w.stdout) || (e.stream == "stderr" && w.stderr))
        .filter(&in_range)
        .collect();
    if let Some(n) = tail {
        let skip = selected.len().saturating_sub(n);
        selected.drain(..skip);
    }
    let (tx, rx_body) = mpsc::channel::<Bytes>(64);
    let follow_on = q.flag("follow") && phase.running && until.is_none();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        for e in &selected {
            if let Some(f) = frame(e, w) {
                if tx.send(f).await.is_err() {
                    return;
                }
            }
        }
        if follow_on {
            follow(cursor, rx, phase.exits, false, w, tx, shutdown).await;
        }
    });
    let stream = futures::stream::unfold(rx_body, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MULTIPLEXED));
    Ok(resp)
}

/// Seconds since the epoch of an entry's time (fractions kept).
fn entry_time(t: &str) -> f64 {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// `since`/`until` as the CLI sends them: `SECONDS[.NANOS]`; 0 or absent means no bound.
fn time_bound(v: Option<&str>, name: &'static str) -> Result<Option<f64>, Error> {
    match v.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            let t: f64 = v.parse().map_err(|_| Error::InvalidQuery {
                name,
                value: v.to_owned(),
                reason: "expected SECONDS[.NANOSECONDS] since the epoch",
            })?;
            Ok((t > 0.0).then_some(t))
        }
    }
}

/// `POST /containers/{id}/attach?stream=&stdout=&stderr=&logs=`: hijacks the connection
/// (`101 UPGRADED`, or `200` and a raw body without `Upgrade`) and sends multiplexed frames
/// of the container's output until its run ends.
pub(super) async fn attach(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
    mut req: Request,
) -> Result<Response, Error> {
    let q = Query::new(raw);
    let entry = state.containers.get(&id)?;
    let rec = entry.record();
    let upgrade = req.headers().contains_key(header::UPGRADE);
    // `-i`: the client's input goes to the container's stdin FIFO. Opened read-write, so
    // the open never waits and the container's first read does not see EOF before the
    // client has sent anything; dropped when the client closes its input.
    let stdin = if q.flag("stdin") && rec.settings.open_stdin {
        if !upgrade {
            return Err(Error::InvalidQuery {
                name: "stdin",
                value: "1".into(),
                reason: "stdin needs a hijacked connection (Upgrade: tcp)",
            });
        }
        let fifo = state.containers.stdin_fifo(&rec.id);
        Some(
            tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(&fifo)
                .map_err(|source| Error::Io {
                    op: "open",
                    path: fifo,
                    source,
                })?,
        )
    } else {
        None
    };
    if rec.state.status != "running" && rec.state.status != "created" && q.flag("stream") {
        return Err(Error::AttachStopped);
    }
    let detach = detach_keys(q.get("detachKeys"))?;
    // dockerd's rule: only a non-TTY container created with StdinOnce sees its stdin close
    // when the client's input ends; otherwise stdin stays open for the next attach and
    // the session ends there.
    let close_stdin = rec.config.get("StdinOnce").and_then(Value::as_bool) == Some(true) && !rec.settings.tty;
    let raw = rec.settings.tty;
    let content_type = HeaderValue::from_static(if raw { RAW } else { MULTIPLEXED });
    let w = Wanted {
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        timestamps: false,
        raw,
    };
    let path = state.containers.log_path_of(&entry.id);
    let rx = entry.subscribe();
    let phase = *rx.borrow();
    let mut started = rx.clone();
    let (tx, mut body_rx) = mpsc::channel::<Bytes>(64);
    // With `logs`, the stream continues where the history ends: every line shows once.
    let (history, cursor) = if q.flag("logs") {
        let (history, cursor) = berth_runtime::read_with_cursor(&path).map_err(|source| Error::Io {
            op: "read",
            path: path.clone(),
            source,
        })?;
        (history.iter().filter_map(|e| frame(e, w)).collect(), cursor)
    } else {
        (Vec::new(), LogCursor::at_end(&path))
    };
    if q.flag("stream") {
        let shutdown = state.shutdown.clone();
        // A created container is attached before its start: follow its coming run.
        let waiting = !phase.running;
        tokio::spawn(async move {
            if send_all(&tx, history).await {
                follow(cursor, rx, phase.exits, waiting, w, tx, shutdown).await;
            }
        });
    } else {
        tokio::spawn(async move { send_all(&tx, history).await });
    }
    if !upgrade {
        let stream = futures::stream::unfold(body_rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        });
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(MULTIPLEXED));
        return Ok(resp);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let id = entry.id.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "attach upgrade failed");
                return;
            }
        };
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        let ended = fired(ended_rx);
        tokio::pin!(ended);
        let input = stdin.map(|mut fifo| {
            tokio::spawn(async move {
                let detached = match copy_until_detach(&mut reader, &mut fifo, &detach).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::debug!(error = %e, "attach stdin ended");
                        false
                    }
                };
                if close_stdin && !detached {
                    // The FIFO's last writer goes and the container reads EOF. A FIFO that
                    // nobody has open loses what it holds: keep our end until the container
                    // (its shim) has the read end open, i.e. until it runs.
                    let _ = started
                        .wait_for(|p| p.running || p.exits > phase.exits || p.removed)
                        .await;
                    drop(fifo);
                    return;
                }
                // Detached, or input that does not close stdin: the session ends, and the
                // container's stdin stays open until this run ends.
                let _ = ended_tx.send(());
                let _ = started.wait_for(|p| p.exits > phase.exits || p.removed).await;
                drop(fifo);
            })
        });
        loop {
            tokio::select! {
                b = body_rx.recv() => match b {
                    Some(b) if writer.write_all(&b).await.is_ok() => {}
                    _ => break,
                },
                () = &mut ended => break,
            }
        }
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
        if let Some(input) = input
            && close_stdin
        {
            input.abort();
        }
    });
    Ok(upgraded(content_type))
}

/// The keys that end an attach without stopping the container (`detachKeys`, moby's
/// `term.ToBytes`): comma-separated `ctrl-X` (X a letter or one of `@[\\]^_`) or single
/// characters; ctrl-p,ctrl-q when absent or empty.
pub(super) fn detach_keys(spec: Option<&str>) -> Result<Vec<u8>, Error> {
    let spec = spec.filter(|s| !s.is_empty()).unwrap_or("ctrl-p,ctrl-q");
    let bad = |reason| Error::InvalidQuery {
        name: "detachKeys",
        value: spec.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    for key in spec.split(',').map(str::trim) {
        let lower = key.to_ascii_lowercase();
        match lower.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let c = c.as_bytes()[0];
                out.push(match c {
                    b'a'..=b'z' => c - b'a' + 1,
                    b'@' => 0,
                    b'[' => 27,
                    b'\\' => 28,
                    b']' => 29,
                    b'^' => 30,
                    b'_' => 31,
                    _ => return Err(bad("ctrl- takes a letter or one of @ [ \\ ] ^ _")),
                });
            }
            Some(_) => return Err(bad("ctrl- takes one character")),
            None if key.len() == 1 && key.is_ascii() => out.push(key.as_bytes()[0]),
            None => return Err(bad("each key is ctrl-X or a single character, separated by commas")),
        }
    }
    Ok(out)
}

/// Copies the client's input to the container until it ends (`Ok(false)`) or the detach
/// keys arrive (`Ok(true)`; the keys are not passed on). A partial match is held back until
/// the next byte shows whether it was the sequence, as moby's escape proxy does.
pub(super) async fn copy_until_detach<R, W>(reader: &mut R, writer: &mut W, keys: &[u8]) -> std::io::Result<bool>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 32 * 1024];
    let mut matched = 0;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            if matched > 0 {
                writer.write_all(&keys[..matched]).await?;
            }
            return Ok(false);
        }
        let mut out = Vec::with_capacity(n + matched);
        for &b in &buf[..n] {
            if keys.get(matched) != Some(&b) {
                // Not the sequence after all: what was held back goes through.
                out.extend_from_slice(&keys[..matched]);
                matched = 0;
            }
            if keys.get(matched) == Some(&b) {
                matched += 1;
                if matched == keys.len() {
                    writer.write_all(&out).await?;
                    return Ok(true);
                }
            } else {
                out.push(b);
            }
        }
        writer.write_all(&out).await?;
    }
}

/// What a one-shot channel carries, or never, when its sender goes without sending: safe to
/// poll again in a `select!` loop (a finished receiver is not).
pub(super) async fn fired<T>(rx: tokio::sync::oneshot::Receiver<T>) -> T {
    match rx.await {
        Ok(v) => v,
        Err(_) => std::future::pending().await,
    }
}

/// Sends frames in order; `false` once the reader has gone.
async fn send_all(tx: &mpsc::Sender<Bytes>, frames: Vec<Bytes>) -> bool {
    for f in frames {
        if tx.send(f).await.is_err() {
            return false;
        }
    }
    true
}

/// The `101 UPGRADED` answer of a hijacked attach or exec stream.
pub(super) fn upgraded(content_type: HeaderValue) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(input: &[u8], keys: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut r = input;
        let detached = copy_until_detach(&mut r, &mut out, keys).await.unwrap();
        (out, detached)
    }

    #[test]
    fn detach_keys_parse_as_moby() {
        assert_eq!(detach_keys(None).unwrap(), vec![16, 17]);
        assert_eq!(detach_keys(Some("")).unwrap(), vec![16, 17]);
        assert_eq!(detach_keys(Some("ctrl-a,x")).unwrap(), vec![1, b'x']);
        assert_eq!(
            detach_keys(Some("ctrl-@,ctrl-[,ctrl-\\,ctrl-_")).unwrap(),
            vec![0, 27, 28, 31]
        );
        for bad in ["ctrl-", "ctrl-1", "ab", "ctrl-ab"] {
            assert!(detach_keys(Some(bad)).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn input_passes_until_the_keys() {
        assert_eq!(run(b"ls\n", &[16, 17]).await, (b"ls\n".to_vec(), false));
        assert_eq!(run(b"ab\x10\x11cd", &[16, 17]).await, (b"ab".to_vec(), true));
        // A partial match that is not the sequence goes through, in order.
        assert_eq!(
            run(b"a\x10b\x10\x10\x11", &[16, 17]).await,
            (b"a\x10b\x10".to_vec(), true)
        );
        assert_eq!(run(b"a\x10", &[16, 17]).await, (b"a\x10".to_vec(), false));
        assert_eq!(run(b"xyq", b"q").await, (b"xy".to_vec(), true));
    }

    #[test]
    fn frames_and_durations() {
        let e = LogEntry {
            log: "hi\n".into(),
            stream: "stderr".into(),
            time: "2026-01-01T00:00:00.000000001Z".into(),
        };
        let w = Wanted {
            stdout: true,
            stderr: true,
            timestamps: false,
            raw: false,
        };
        assert_eq!(&frame(&e, w).unwrap()[..], b"\x02\0\0\0\0\0\0\x03hi\n");
        assert!(frame(&e, Wanted { stderr: false, ..w }).is_none());
        let ts = frame(&e, Wanted { timestamps: true, ..w }).unwrap();
        assert!(ts.ends_with(b"2026-01-01T00:00:00.000000001Z hi\n"));
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
        assert!(entry_time("2026-01-01T00:00:00.5Z") > 1.7e9);
        assert_eq!(&frame(&e, Wanted { raw: true, ..w }).unwrap()[..], b"hi\n");
    }
}
