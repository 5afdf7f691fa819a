//! `/_ping`, `/version`, `/info`, `/events`.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::images::Query;
use super::{API_VERSION, MIN_API_VERSION, State, VERSION};
use crate::config::{Config, is_cidr};
use crate::error::Error;
use crate::events::{Event, Filter, nanos};

type AppState = StateExtractor<Arc<State>>;

/// Set at build time by release scripts; "unknown" in a plain `cargo build`.
const GIT_COMMIT: &str = match option_env!("BERTH_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};
const BUILD_TIME: &str = match option_env!("BERTH_BUILD_TIME") {
    Some(t) => t,
    None => "unknown",
};
const GO_VERSION: &str = "n/a (Rust)";

fn no_cache(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /_ping`: the first call of every docker command (after HEAD).
pub(super) async fn ping() -> Response {
    let mut resp = no_cache("OK".into_response());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `HEAD /_ping`: the same headers, no body.
pub(super) async fn ping_head() -> Response {
    let mut resp = no_cache(Response::new(Body::empty()));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// `GET /version`, in the shape docker's `types.Version` has.
pub(super) async fn version(StateExtractor(state): AppState) -> Json<Value> {
    let host = &state.host;
    Json(json!({
        "Platform": { "Name": format!("Berth {VERSION}") },
        "Components": [{
            "Name": "Engine",
            "Version": VERSION,
            "Details": {
                "ApiVersion": API_VERSION,
                "Arch": host.go_arch,
                "BuildTime": BUILD_TIME,
                "Experimental": "false",
                "GitCommit": GIT_COMMIT,
                "GoVersion": GO_VERSION,
                "KernelVersion": host.kernel_version,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
            },
        }],
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": GIT_COMMIT,
        "GoVersion": GO_VERSION,
        "Os": "linux",
        "Arch": host.go_arch,
        "KernelVersion": host.kernel_version,
        "BuildTime": BUILD_TIME,
    }))
}

/// `GET /info`: the fields `docker info` prints, in docker's `system.Info` shape.
pub(super) async fn info(StateExtractor(state): AppState) -> Json<Value> {
    let (c, host) = (&state.config, &state.host);
    let images = state.images.count().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "failed to count images");
        0
    });
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let containers = state.containers.counts();
    Json(json!({
        "ID": state.engine_id,
        "Containers": containers.0,
        "ContainersRunning": containers.1,
        "ContainersPaused": containers.2,
        "ContainersStopped": containers.3,
        "Images": images,
        "Driver": "overlay2",
        "DriverStatus": [],
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "null"],
            "Authorization": null,
            "Log": ["json-file"],
        },
        "MemoryLimit": true,
        "SwapLimit": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "Debug": false,
        "NFd": open_fds(),
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": now,
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": host.cgroup_version,
        "NEventsListener": state.event_listeners.load(Ordering::Relaxed),
        "KernelVersion": host.kernel_version,
        "OperatingSystem": host.operating_system,
        "OSVersion": host.os_version,
        "OSType": "linux",
        "Architecture": host.machine,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": registry_config(c),
        "NCPU": host.ncpu,
        "MemTotal": host.mem_total,
        "GenericResources": null,
        "DockerRootDir": c.data_root,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": host.hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": VERSION,
        "Runtimes": {},
        "DefaultRuntime": "",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": false,
            "Error": "",
            "RemoteManagers": null,
        },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": { "ID": "" },
        "RuncCommit": { "ID": "" },
        "InitCommit": { "ID": "" },
        "SecurityOptions": if host.cgroup_version == "2" {
            json!(["name=seccomp,profile=builtin", "name=cgroupns"])
        } else {
            json!(["name=seccomp,profile=builtin"])
        },
        "CDISpecDirs": [],
        "Warnings": null,
    }))
}

/// dockerd's `RegistryConfig`: loopback is always insecure; a CIDR goes to
/// `InsecureRegistryCIDRs`, a host to `IndexConfigs` with `Secure: false`; mirrors belong to
/// docker.io. `--add-registry` and `--block-registry` have no dockerd field: they are listed
/// in Berth's own `SearchRegistries` and `BlockedRegistries`.
fn registry_config(c: &Config) -> Value {
    let mut cidrs = vec!["::1/128".to_owned(), "127.0.0.0/8".to_owned()];
    let mut index = BTreeMap::new();
    index.insert(
        "docker.io".to_owned(),
        json!({ "Name": "docker.io", "Mirrors": c.registry_mirrors, "Secure": true, "Official": true }),
    );
    for r in &c.insecure_registries {
        if is_cidr(r) {
            if !cidrs.contains(r) {
                cidrs.push(r.clone());
            }
        } else {
            index.insert(
                r.clone(),
                json!({ "Name": r, "Mirrors": [], "Secure": false, "Official": false }),
            );
        }
    }
    for r in &c.add_registries {
        index
            .entry(r.clone())
            .or_insert_with(|| json!({ "Name": r, "Mirrors": [], "Secure": true, "Official": false }));
    }
    json!({
        "InsecureRegistryCIDRs": cidrs,
        "IndexConfigs": index,
        "Mirrors": c.registry_mirrors,
        "SearchRegistries": c.add_registries,
        "BlockedRegistries": c.block_registries,
    })
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// `GET /events?since=&until=&filters=`: a JSON-lines stream, as dockerd's `getEvents`.
/// With `since` or `until`, the recorded events in that window come first; then, unless
/// `until` has passed already, new events as they happen, until `until`, the client going
/// away, or the daemon shutting down. Every event is checked against `filters`.
pub(super) async fn events(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Response, Error> {
    let q = Query::new(raw);
    let filter = Filter::new(q.filters(&[])?)?;
    let since = q
        .get("since")
        .filter(|v| !v.is_empty())
        .map(|v| parse_timestamp("since", v))
        .transpose()?;
    let until = q
        .get("until")
        .filter(|v| !v.is_empty())
        .map(|v| parse_timestamp("until", v))
        .transpose()?;
    if let (Some(s), Some(u), Some(raw)) = (since, until, q.get("until")) {
        if s > u {
            return Err(Error::InvalidQuery {
                name: "until",
                value: raw.to_owned(),
                reason: "until is before since",
            });
        }
    }
    let (history, rx) = state.events.subscribe();
    let (since_nano, until_nano) = (since.map(nanos), until.map(nanos));
    let past: VecDeque<Bytes> = if since.is_some() || until.is_some() {
        history
            .iter()
            .filter(|e| since_nano.is_none_or(|s| e.time_nano >= s) && until_nano.is_none_or(|u| e.time_nano <= u))
            .filter(|e| filter.matches(e))
            .map(|e| line(e))
            .collect()
    } else {
        VecDeque::new()
    };
    let now = SystemTime::now();
    let live = match until {
        Some(u) if u <= now => None,
        _ => Some(Live {
            rx,
            deadline: until.map(|u| tokio::time::Instant::now() + u.duration_since(now).unwrap_or(Duration::ZERO)),
            shutdown: state.shutdown.clone(),
        }),
    };
    let stream = EventStream {
        past,
        live,
        filter,
        _listener: ListenerGuard::new(state),
    };
    let body = futures::stream::unfold(stream, |mut s| async move {
        let next = s.next().await?;
        Some((Ok::<_, Infallible>(next), s))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn line(e: &Event) -> Bytes {
    let mut s = e.to_json().to_string();
    s.push('\n');
    Bytes::from(s)
}

/// One `/events` response: recorded events first, then live ones.
struct EventStream {
    past: VecDeque<Bytes>,
    live: Option<Live>,
    filter: Filter,
    _listener: ListenerGuard,
}

struct Live {
    rx: broadcast::Receiver<Arc<Event>>,
    /// `until`, when given.
    deadline: Option<tokio::time::Instant>,
    shutdown: watch::Receiver<bool>,
}

impl EventStream {
    /// The next line to send, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(b) = self.past.pop_front() {
            return Some(b);
        }
        let live = self.live.as_mut()?;
        loop {
            let deadline = async {
                match live.deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = live.rx.recv() => match r {
                    Ok(e) if self.filter.matches(&e) => return Some(line(&e)),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "an /events client reads too slowly; events were skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = deadline => return None,
                () = super::stopped(&mut live.shutdown) => return None,
            }
        }
    }
}

/// Counts an open `/events` stream for as long as it lives.
struct ListenerGuard(Arc<State>);

impl ListenerGuard {
    fn new(state: Arc<State>) -> ListenerGuard {
        state.event_listeners.fetch_add(1, Ordering::Relaxed);
        ListenerGuard(state)
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.event_listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The API's timestamps: `SECONDS[.NANOSECONDS]` since the epoch, as the docker CLI sends them.
fn parse_timestamp(name: &'static str, value: &str) -> Result<SystemTime, Error> {
    let bad = |reason| Error::InvalidQuery {
        name,
        value: value.to_owned(),
        reason,
    };
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: u64 = secs
        .parse()
        .map_err(|_| bad("expected seconds since the epoch, optionally with .nanoseconds"))?;
    let nanos = if frac.is_empty() {
        0
    } else if frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()) {
        format!("{frac:0<9}").parse::<u32>().map_err(|_| bad("bad fraction"))?
    } else {
        return Err(bad("at most nine digits of fraction"));
    };
    Ok(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// `POST /build/prune`: Berth builds no images, so it has no build cache; the answer says
/// nothing was removed (`docker system prune` and `docker builder prune` call it).
pub(super) async fn build_prune(RawQuery(raw): RawQuery) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    q.filters(&[
        "until",
        "label",
        "label!",
        "type",
        "id",
        "parent",
        "inuse",
        "shared",
        "private",
        "unused-for",
    ])?;
    Ok(Json(json!({ "CachesDeleted": null, "SpaceReclaimed": 0 })))
}

/// The parts `GET /system/df?type=` can be asked for.
const DF_TYPES: [&str; 4] = ["container", "image", "volume", "build-cache"];

/// `GET /system/df?type=`: what images, containers and volumes take on disk, as `docker system
/// df` and docker-py's `df()` read it. Without `type` every part is there; with it, only
/// those named. Berth builds no images, so the build cache is always empty.
pub(super) async fn df(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let types = q.all("type");
    if let Some(bad) = types.iter().find(|t| !DF_TYPES.contains(&t.as_str())) {
        return Err(Error::InvalidQuery {
            name: "type",
            value: bad.clone(),
            reason: "expected container, image, volume or build-cache",
        });
    }
    let wanted = |t: &str| types.is_empty() || types.iter().any(|x| x == t);
    let (images, containers, volumes) = (wanted("image"), wanted("container"), wanted("volume"));
    let build_cache = wanted("build-cache");
    let usage = tokio::task::spawn_blocking(move || disk_usage(&state, images, containers, volumes))
        .await
        .expect("measuring disk use does not panic")?;
    let mut out = usage;
    if build_cache {
        out["BuildCache"] = json!([]);
    }
    Ok(Json(out))
}

fn disk_usage(state: &State, images: bool, containers: bool, volumes: bool) -> Result<Value, Error> {
    let mut out = json!({});
    let records: Vec<_> = state.containers.all().iter().map(|e| e.record()).collect();
    if images {
        let all = state.images.images()?;
        let (shared, layers_size) = super::images::layer_sharing(&all);
        let mut rows = Vec::new();
        for image in &all {
            let id = image.record.id.to_string();
            let mut row = super::images::summary(image, image.familiar_tags(), image.repo_digests());
            row["SharedSize"] = json!(shared.get(&id).copied().unwrap_or(0));
            row["Containers"] = json!(records.iter().filter(|r| r.image_id == id).count());
            rows.push(row);
        }
        out["LayersSize"] = json!(layers_size);
        out["Images"] = Value::Array(rows);
    }
    if containers {
        let rows = records
            .iter()
            .map(|r| super::containers::summary(&state.containers, r))
            .collect();
        out["Containers"] = Value::Array(super::containers::with_sizes(state, rows));
    }
    if volumes {
        let store = state.containers.volumes();
        let rows: Vec<Value> = store
            .list()
            .into_iter()
            .map(|v| {
                let mut row = store.to_json(&v);
                row["UsageData"] = json!({
                    "Size": store.size(&v.name),
                    "RefCount": store.users(&v.name).len(),
                });
                row
            })
            .collect();
        out["Volumes"] = Value::Array(rows);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{call, test_state};
    use super::*;
    use axum::extract::Request;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn ping_headers() {
        for method in ["GET", "HEAD"] {
            let (s, h, body) = call(method, "/_ping").await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(h["api-version"], "1.45");
            assert_eq!(h["ostype"], "linux");
            assert_eq!(h["docker-experimental"], "false");
            assert_eq!(h["server"], format!("Berth/{VERSION}"));
            assert_eq!(h["cache-control"], "no-cache, no-store, must-revalidate");
            assert_eq!(h["pragma"], "no-cache");
            if method == "GET" {
                assert_eq!(body, b"OK");
            } else {
                assert!(body.is_empty());
                assert_eq!(h["content-length"], "0");
            }
        }
    }

    #[tokio::test]
    async fn version_and_info_shapes() {
        let (s, _, body) = call("GET", "/v1.41/version").await;
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["ApiVersion"], "1.45");
        assert_eq!(v["MinAPIVersion"], "1.24");
        assert_eq!(v["Components"][0]["Name"], "Engine");
        assert_eq!(v["GoVersion"], GO_VERSION);
        assert!(["amd64", "arm64"].contains(&v["Arch"].as_str().unwrap()));

        let (s, _, body) = call("GET", "/info").await;
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["ID"], "TEST:ID");
        assert_eq!(v["DockerRootDir"], "/var/lib/berth-test");
        assert_eq!(v["Containers"], 0);
        assert_eq!(v["Driver"], "overlay2");
        assert!(["1", "2"].contains(&v["CgroupVersion"].as_str().unwrap()));
        assert_eq!(v["Warnings"], Value::Null);
        assert_eq!(v["RegistryConfig"]["IndexConfigs"]["docker.io"]["Official"], true);
    }

    #[test]
    fn registry_config_shape() {
        let c = Config {
            insecure_registries: vec!["10.0.0.0/8".into(), "reg:5000".into()],
            registry_mirrors: vec!["https://mirror.example/".into()],
            add_registries: vec!["site:5000".into()],
            block_registries: vec!["docker.io".into()],
            ..Config::default()
        };
        let r = registry_config(&c);
        assert_eq!(
            r["InsecureRegistryCIDRs"],
            json!(["::1/128", "127.0.0.0/8", "10.0.0.0/8"])
        );
        assert_eq!(r["IndexConfigs"]["reg:5000"]["Secure"], false);
        assert_eq!(r["IndexConfigs"]["site:5000"]["Secure"], true);
        assert_eq!(
            r["IndexConfigs"]["docker.io"]["Mirrors"],
            json!(["https://mirror.example/"])
        );
        assert_eq!(r["Mirrors"], json!(["https://mirror.example/"]));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            parse_timestamp("since", "10").unwrap(),
            UNIX_EPOCH + Duration::from_secs(10)
        );
        assert_eq!(
            parse_timestamp("since", "10.5").unwrap(),
            UNIX_EPOCH + Duration::new(10, 500_000_000)
        );
        assert_eq!(
            parse_timestamp("until", "1700000000.000000001").unwrap(),
            UNIX_EPOCH + Duration::new(1_700_000_000, 1)
        );
        for bad in ["", "x", "1.x", "1.0000000001", "-5"] {
            assert!(parse_timestamp("until", bad).is_err(), "{bad}");
        }
    }

    async fn events_body(state: Arc<State>, uri: &str) -> (StatusCode, Vec<u8>) {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let resp = super::super::router(state).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
            .await
            .expect("events stream ended")
            .unwrap();
        (status, body.to_bytes().to_vec())
    }

    fn published(state: &State, action: &'static str, id: &str, secs: i64) {
        let mut e = Event::image(action, id, id, None);
        e.time_nano = secs * 1_000_000_000;
        state.events.publish(e);
    }

    fn actions(body: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(body)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["Action"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn events_replay_a_window_and_filter_it() {
        let (state, _tx, _root) = test_state();
        published(&state, "pull", "a:1", 100);
        published(&state, "tag", "sha256:1", 200);
        published(&state, "delete", "sha256:1", 300);
        let (s, body) = events_body(state.clone(), "/events?since=150&until=1000").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(actions(&body), ["tag", "delete"]);
        let (_, body) = events_body(state.clone(), "/events?until=250").await;
        assert_eq!(actions(&body), ["pull", "tag"]);
        let (_, body) = events_body(state.clone(), "/events?since=100.5&until=300.000000001").await;
        assert_eq!(actions(&body), ["tag", "delete"]);
        let filters = "%7B%22event%22%3A%7B%22delete%22%3Atrue%7D%7D"; // {"event":{"delete":true}}
        let (_, body) = events_body(state.clone(), &format!("/events?since=1&until=1000&filters={filters}")).await;
        assert_eq!(actions(&body), ["delete"]);
        // `since` alone: the recorded ones, then the stream stays open for new ones.
        let req = Request::builder().uri("/events?since=250").body(Body::empty()).unwrap();
        let mut body = super::super::router(state.clone())
            .oneshot(req)
            .await
            .unwrap()
            .into_body();
        let mut next = async || {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("an event");
            let data = frame.unwrap().unwrap().into_data().unwrap();
            actions(&data)
        };
        assert_eq!(next().await, ["delete"]);
        state.events.publish(Event::image("load", "sha256:3", "sha256:3", None));
        assert_eq!(next().await, ["load"]);
        let (s, _) = events_body(state.clone(), "/events?until=1000&filters=%7B%22bogus%22%3A%5B%5D%7D").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn events_stream_live_ones_that_match() {
        let (state, _tx, _root) = test_state();
        published(&state, "pull", "old:1", 100);
        let filters = "%7B%22event%22%3A%5B%22tag%22%5D%7D"; // {"event":["tag"]}
        let req = Request::builder()
            .uri(format!("/events?filters={filters}"))
            .body(Body::empty())
            .unwrap();
        let resp = super::super::router(state.clone()).oneshot(req).await.unwrap();
        let mut body = resp.into_body();
        state.events.publish(Event::image("untag", "x", "x", None));
        state.events.publish(Event::image("tag", "sha256:2", "b:1", None));
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a live event")
            .unwrap()
            .unwrap();
        let line = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (v["Action"].as_str(), v["Actor"]["Attributes"]["name"].as_str()),
            (Some("tag"), Some("b:1"))
        );
    }

    #[tokio::test]
    async fn events_end_at_until_and_at_shutdown() {
        let (state, tx, _root) = test_state();
        let past = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 10;
        let (s, body) = events_body(state.clone(), &format!("/v1.41/events?since={}&until={past}", past - 5)).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.is_empty());
        let (s, _) = events_body(state.clone(), &format!("/events?since={past}&until={}", past - 5)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = events_body(state.clone(), "/events?filters=nope").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let filters = "%7B%22type%22%3A%5B%22image%22%5D%7D"; // {"type":["image"]}
        let (s, _) = events_body(state.clone(), &format!("/events?until={past}&filters={filters}")).await;
        assert_eq!(s, StatusCode::OK);

        // Without `until` the stream stays open until shutdown.
        let open = tokio::spawn(events_body(state.clone(), "/events"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!open.is_finished());
        assert_eq!(state.event_listeners.load(Ordering::Relaxed), 1);
        tx.send(true).unwrap();
        let (s, body) = open.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(state.event_listeners.load(Ordering::Relaxed), 0);
    }
}
