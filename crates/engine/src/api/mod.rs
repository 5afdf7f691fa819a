//! The Docker Engine API: the router, the `/v1.N` prefix, the headers every answer carries,
//! and the 501 for what is not served yet. Handlers live in one module per resource.

mod archive;
mod auth;
mod container_fs;
mod containers;
mod exec;
mod images;
mod networks;
mod prune;
mod pull;
mod push;
mod resources;
mod search;
mod system;
mod volumes;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_image::ImageStore;
use http::{HeaderName, HeaderValue, Method, Uri};
use tokio::sync::watch;
use tower::Layer;

use crate::config::Config;
use crate::containers::Containers;
use crate::error::Error;
use crate::events::Events;
use crate::host::Host;

/// The newest API version served; also what `Api-Version` says.
pub(crate) const API_VERSION: &str = "1.45";
/// The oldest `/v1.N` prefix accepted.
pub(crate) const MIN_API_VERSION: &str = "1.24";
const API_MAX: (u32, u32) = (1, 45);
const API_MIN: (u32, u32) = (1, 24);

/// Berth's version, as `/version` and the `Server` header report it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every handler can see.
pub(crate) struct State {
    pub(crate) config: Config,
    /// Persistent engine ID (`<data-root>/engine-id`), shown as `ID` in /info.
    pub(crate) engine_id: String,
    pub(crate) host: Host,
    /// Turns `true` when the daemon shuts down; long-lived streams end then.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Open `/events` streams (`NEventsListener` in /info).
    pub(crate) event_listeners: AtomicUsize,
    /// What `/events` streams (the containers' log, shared).
    pub(crate) events: Arc<Events>,
    pub(crate) images: Arc<ImageStore>,
    pub(crate) containers: Arc<Containers>,
}

impl State {
    pub(crate) fn new(
        config: Config,
        engine_id: String,
        host: Host,
        shutdown: watch::Receiver<bool>,
        images: Arc<ImageStore>,
        containers: Arc<Containers>,
    ) -> State {
        State {
            config,
            engine_id,
            host,
            shutdown,
            event_listeners: AtomicUsize::new(0),
            events: containers.events(),
            images,
            containers,
        }
    }
}

/// The whole API as one router: every route is reachable with or without a `/v1.N` prefix.
pub(crate) fn router(state: Arc<State>) -> Router {
    let api = Router::new()
        .route("/_ping", get(system::ping).head(system::ping_head))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(system::events))
        .route("/system/df", get(system::df))
        .route("/build/prune", post(system::build_prune))
        .route("/containers/create", post(containers::create))
        .route("/containers/json", get(containers::list))
        .route("/containers/prune", post(containers::prune))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}/restart", post(containers::restart))
        .route("/containers/{id}/resize", post(containers::resize))
        .route("/containers/{id}/rename", post(containers::rename))
        .route("/containers/{id}/top", get(containers::top))
        .route("/containers/{id}/pause", post(resources::pause))
        .route("/containers/{id}/unpause", post(resources::unpause))
        .route("/containers/{id}/update", post(resources::update))
        .route("/containers/{id}/stats", get(resources::stats))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/logs", get(containers::logs))
        .route("/containers/{id}/attach", post(containers::attach))
        .route("/containers/{id}", axum::routing::delete(containers::remove))
        .route(
            "/containers/{id}/archive",
            get(container_fs::archive)
                .head(container_fs::stat)
                .put(container_fs::extract),
        )
        .route("/containers/{id}/export", get(container_fs::export))
        .route("/containers/{id}/changes", get(container_fs::changes))
        .route("/commit", post(container_fs::commit))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route("/volumes/{name}", get(volumes::inspect).delete(volumes::remove))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route("/networks/{id}", get(networks::inspect).delete(networks::remove))
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/auth", post(auth::auth))
        .route("/images/search", get(search::search))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::create))
        .route("/images/prune", post(images::prune))
        .route("/images/get", get(archive::save))
        .route("/images/load", post(archive::load))
        .route("/distribution/{*rest}", get(pull::distribution))
        // Names hold slashes (`myreg:5000/sl6/wn`), so the action is the path's last part.
        .route(
            "/images/{*rest}",
            get(archive::get_action)
                .post(images::post_action)
                .delete(images::remove),
        )
        .fallback(not_implemented)
        .method_not_allowed_fallback(not_implemented)
        .with_state(state);
    // The prefix is stripped before routing, so it has to wrap the router rather than be a
    // `Router::layer` (those run after the route is chosen).
    let versioned = axum::middleware::from_fn(api_version).layer(api);
    Router::new().fallback_service(versioned)
}

/// Resolves once the daemon shuts down (or is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, not across an await.
    let _ = rx.wait_for(|down| *down).await;
}

/// Strips and checks the `/v1.N` prefix, and adds the headers dockerd puts on every answer.
/// Requests are logged at debug level (`RUST_LOG=berth_engine::api=debug`), as dockerd's
/// `--debug` does: method, path, status and the time to the answer's head.
async fn api_version(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = tracing::enabled!(tracing::Level::DEBUG).then(|| req.uri().to_string());
    let mut resp = match strip_version(req) {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    if let Some(path) = path {
        tracing::debug!(
            %method,
            %path,
            status = resp.status().as_u16(),
            ms = format_args!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
            "request"
        );
    }
    let h = resp.headers_mut();
    let server = HeaderValue::from_str(&format!("Berth/{VERSION}")).expect("version is ASCII");
    h.insert(http::header::SERVER, server);
    for (name, value) in [
        ("api-version", API_VERSION),
        ("docker-experimental", "false"),
        ("ostype", "linux"),
    ] {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    resp
}

/// The API version a request asked for (its `/v1.N` prefix; the newest without one), as a
/// request extension for handlers whose behaviour depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ApiVersion(pub(crate) (u32, u32));

fn strip_version(mut req: Request) -> Result<Request, Error> {
    req.extensions_mut().insert(ApiVersion(API_MAX));
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(req);
    };
    let (version, rest) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    // moby's route pattern is `/v{version:[0-9.]+}`; anything else is an ordinary path.
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Ok(req);
    }
    let parsed = parse_version(version);
    if parsed.is_none_or(|v| v > API_MAX) {
        return Err(Error::ApiVersionTooNew {
            version: version.to_owned(),
            max: API_VERSION,
        });
    }
    if parsed.is_some_and(|v| v < API_MIN) {
        return Err(Error::ApiVersionTooOld {
            version: version.to_owned(),
            min: MIN_API_VERSION,
        });
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().expect("a suffix of a valid path"));
    *req.uri_mut() = Uri::from_parts(parts).expect("only the path changed");
    if let Some(v) = parsed {
        req.extensions_mut().insert(ApiVersion(v));
    }
    Ok(req)
}

/// `1.41` → (1, 41); a missing minor is 0, as moby's version comparison treats it.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = match it.next() {
        Some(m) => m.parse().ok()?,
        None => 0,
    };
    match it.next() {
        None => Some((major, minor)),
        Some(_) => None,
    }
}

/// Every endpoint not built yet answers 501 with a message that says so.
async fn not_implemented(method: Method, uri: Uri) -> Error {
    tracing::debug!(%method, path = uri.path(), "endpoint not implemented yet");
    Error::NotImplemented {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A state over a temporary image store, removed when the returned guard drops.
    pub(super) fn test_state() -> (Arc<State>, watch::Sender<bool>, tempfile::TempDir) {
        let (tx, rx) = watch::channel(false);
        let config = Config {
            data_root: "/var/lib/berth-test".into(),
            ..Config::default()
        };
        let root = tempfile::tempdir().unwrap();
        let images = Arc::new(ImageStore::open(root.path()).unwrap());
        let net_config = Config {
            data_root: root.path().join("data"),
            exec_root: root.path().join("exec"),
            bridge: Some("none".into()),
            ..Config::default()
        };
        let containers = Arc::new(
            Containers::open(
                &root.path().join("data"),
                &root.path().join("exec"),
                images.clone(),
                Default::default(),
                |events| crate::networks::Networks::open(&net_config, events),
            )
            .unwrap(),
        );
        let state = State::new(config, "TEST:ID".to_owned(), Host::detect(), rx, images, containers);
        (Arc::new(state), tx, root)
    }

    pub(super) async fn call(method: &str, uri: &str) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let (state, _tx, _root) = test_state();
        let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let resp = router(state).oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, bytes)
    }

    fn message(body: &[u8]) -> String {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["message"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn version_prefixes() {
        let table: &[(&str, u16, Option<&str>)] = &[
            ("/version", 200, None),
            ("/v1.24/version", 200, None),
            ("/v1.41/version", 200, None),
            ("/v1.45/version", 200, None),
            (
                "/v1.46/version",
                400,
                Some("client version 1.46 is too new. Maximum supported API version is 1.45"),
            ),
            (
                "/v1.99/version",
                400,
                Some("client version 1.99 is too new. Maximum supported API version is 1.45"),
            ),
            (
                "/v2.0/version",
                400,
                Some("client version 2.0 is too new. Maximum supported API version is 1.45"),
            ),
            (
                "/v1.12/version",
                400,
                Some(
                    "client version 1.12 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version",
                ),
            ),
            ("/v1.41/_ping", 200, None),
            (
                "/v1.41/containers/json/x",
                501,
                Some("berth: GET /containers/json/x is not implemented yet"),
            ),
            ("/v1.41", 501, Some("berth: GET / is not implemented yet")),
            (
                "/vfoo/version",
                501,
                Some("berth: GET /vfoo/version is not implemented yet"),
            ),
        ];
        for &(uri, status, msg) in table {
            let (s, h, body) = call("GET", uri).await;
            assert_eq!(s.as_u16(), status, "{uri}");
            assert_eq!(h["api-version"], API_VERSION, "{uri}");
            if let Some(msg) = msg {
                assert_eq!(message(&body), msg, "{uri}");
                assert_eq!(h["content-type"], "application/json", "{uri}");
            }
        }
    }

    #[tokio::test]
    async fn not_implemented_names_method_and_path() {
        let (s, _, body) = call("GET", "/v1.45/plugins/x").await;
        assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(message(&body), "berth: GET /plugins/x is not implemented yet");
        // A known path with a method it does not serve is not a silent 405 either.
        let (s, _, body) = call("DELETE", "/version").await;
        assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(message(&body), "berth: DELETE /version is not implemented yet");
    }

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert_eq!(parse_version("1"), Some((1, 0)));
        assert_eq!(parse_version("1.2.3"), None);
        assert_eq!(parse_version("."), None);
        assert!(parse_version("1.100").unwrap() > API_MAX);
    }
}
