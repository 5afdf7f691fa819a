//! HTTP routing: one dispatcher, because repository names contain slashes. It authenticates,
//! refuses writes in read-only mode, calls the handler, and writes the access log line and
//! the request metrics.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body::{Frame, SizeHint};

use crate::error::{ApiError, ApiResult, Code};
use crate::registry::Registry;
use crate::{blobs, manifests};

/// A request's target, parsed from the path.
#[derive(Debug, PartialEq)]
pub(crate) enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
    V1Ping,
    V1Search,
    Metrics,
    NotFound,
}

impl Route {
    fn label(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(..) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(..) | Route::Upload(..) => "upload",
            Route::Referrers(..) => "referrers",
            Route::V1Ping | Route::V1Search => "search",
            Route::Metrics => "metrics",
            Route::NotFound => "other",
        }
    }

    pub(crate) fn parse(path: &str) -> Route {
        match path {
            "/v2" | "/v2/" => return Route::Base,
            "/v2/_catalog" => return Route::Catalog,
            "/v1/_ping" | "/v1/_ping/" => return Route::V1Ping,
            "/v1/search" => return Route::V1Search,
            "/metrics" => return Route::Metrics,
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Route::NotFound;
        };
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name = |k: usize| segs[..n - k].join("/");
        let dec = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            return if segs[n - 1].is_empty() {
                Route::UploadStart(name(3))
            } else {
                Route::Upload(name(3), dec(segs[n - 1]))
            };
        }
        if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
            return Route::UploadStart(name(2));
        }
        if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
            return Route::Tags(name(2));
        }
        if n >= 3 && !segs[n - 1].is_empty() {
            let (r, last) = (name(2), dec(segs[n - 1]));
            match segs[n - 2] {
                "manifests" => return Route::Manifest(r, last),
                "blobs" => return Route::Blob(r, last),
                "referrers" => return Route::Referrers(r, last),
                _ => {}
            }
        }
        Route::NotFound
    }
}

/// The registry's router.
pub fn router(reg: Registry) -> Router {
    Router::new().fallback(dispatch).with_state(reg)
}

async fn dispatch(State(reg): State<Registry>, req: Request) -> Response {
    let started = Instant::now();
    let req = req.map(|body| Body::new(DrainUnread::new(body)));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = Route::parse(&path);
    let label = route.label();
    let (resp, user) = match authenticate(&reg, req.headers()).await {
        Err(e) => (e.into_response(), None),
        Ok(user) => {
            let resp = match handle(&reg, route, req).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
            (resp, user)
        }
    };
    let mut resp = resp;
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    let status = resp.status().as_u16();
    let bytes = if method == Method::HEAD {
        0
    } else {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0)
    };
    reg.metrics.request(label, method_label(&method), status, bytes);
    tracing::info!(
        target: "berth_registry::access",
        method = %method,
        path = %path,
        status,
        bytes,
        ms = format_args!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
        user = user.as_deref().unwrap_or("-"),
    );
    resp
}

/// The most a refused request's unread body is drained by, and for how long.
const DRAIN_LIMIT: u64 = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A request body that, when a handler drops it unread (an error answered before the upload
/// was read, such as a malformed `?digest=`), keeps reading what the client still sends, up to
/// [`DRAIN_LIMIT`] bytes, in a task of its own. Dropping it outright makes hyper close the
/// socket with data unread, the kernel answers with a reset, and the client may lose the
/// error response it was sent; Go's net/http (and so Distribution) drains the same way.
struct DrainUnread {
    inner: Option<Body>,
}

impl DrainUnread {
    fn new(body: Body) -> Self {
        DrainUnread { inner: Some(body) }
    }
}

impl HttpBody for DrainUnread {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(HttpBody::size_hint).unwrap_or_default()
    }
}

impl Drop for DrainUnread {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else { return };
        if body.is_end_stream() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let mut stream = body.into_data_stream();
            let mut left = DRAIN_LIMIT;
            let drain = async {
                while let Some(Ok(chunk)) = stream.next().await {
                    left = left.saturating_sub(chunk.len() as u64);
                    if left == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

async fn authenticate(reg: &Registry, headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(auth) = &reg.auth else { return Ok(None) };
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match auth.check(header).await {
        Some(user) => Ok(Some(user)),
        None => Err(ApiError::unauthorized(&reg.config().realm)),
    }
}

fn repo(name: &str) -> ApiResult<RepoName> {
    RepoName::parse(name).map_err(|e| ApiError::new(Code::NameInvalid, e.to_string()))
}

async fn handle(reg: &Registry, route: Route, req: Request) -> ApiResult<Response> {
    let method = req.method().clone();
    let writes = matches!(method, Method::PUT | Method::POST | Method::PATCH | Method::DELETE);
    if writes && reg.config().read_only {
        return Err(ApiError::new(Code::Unsupported, "the registry is read-only"));
    }
    let q = req.uri().query().unwrap_or("").to_owned();
    let query: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    let unsupported = || {
        Err(ApiError::new(
            Code::Unsupported,
            format!("{method} is not supported here"),
        ))
    };
    match (route, &method) {
        (Route::Base, &Method::GET | &Method::HEAD) => Ok(json_response(StatusCode::OK, "{}".to_owned())),
        (Route::Catalog, &Method::GET) => catalog(reg, &query),
        (Route::Tags(n), &Method::GET) => tags(reg, &repo(&n)?, &query),
        (Route::Manifest(n, r), &Method::GET | &Method::HEAD) => {
            manifests::get(reg, &repo(&n)?, &r, method == Method::HEAD).await
        }
        (Route::Manifest(n, r), &Method::PUT) => manifests::put(reg, &repo(&n)?, &r, &query, req).await,
        (Route::Manifest(n, r), &Method::DELETE) => manifests::delete(reg, &repo(&n)?, &r).await,
        (Route::Referrers(n, d), &Method::GET) => manifests::referrers(reg, &repo(&n)?, &d, &query).await,
        (Route::Blob(n, d), &Method::GET | &Method::HEAD) => {
            blobs::get(reg, &repo(&n)?, &d, method == Method::HEAD, req.headers()).await
        }
        (Route::Blob(n, d), &Method::DELETE) => blobs::delete(reg, &repo(&n)?, &d).await,
        (Route::UploadStart(n), &Method::POST) => blobs::start(reg, &repo(&n)?, &query, req).await,
        (Route::Upload(n, id), &Method::GET) => blobs::status(reg, &repo(&n)?, &id).await,
        (Route::Upload(n, id), &Method::PATCH) => blobs::patch(reg, &repo(&n)?, &id, req).await,
        (Route::Upload(n, id), &Method::PUT) => blobs::finish(reg, &repo(&n)?, &id, &query, req).await,
        (Route::Upload(n, id), &Method::DELETE) => blobs::cancel(reg, &repo(&n)?, &id).await,
        (Route::V1Ping, &Method::GET | &Method::HEAD) => {
            let mut r = json_response(StatusCode::OK, r#"{"standalone":true}"#.to_owned());
            r.headers_mut()
                .insert("x-docker-registry-standalone", HeaderValue::from_static("true"));
            r.headers_mut()
                .insert("x-docker-registry-version", HeaderValue::from_static("0.6.0"));
            Ok(r)
        }
        (Route::V1Search, &Method::GET) => crate::search::search(reg, &query),
        (Route::Metrics, &Method::GET) => {
            let body = reg.metrics.render(reg.live_uploads());
            Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
        }
        (Route::NotFound, _) => {
            Err(ApiError::new(Code::NameUnknown, "no such endpoint").with_status(StatusCode::NOT_FOUND))
        }
        _ => unsupported(),
    }
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    let len = body.len();
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], Body::from(body)).into_response();
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

pub(crate) fn query_get<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `n` and `last` pagination over a sorted list. Returns the page and, when more follow,
/// the `Link` header value.
pub(crate) fn paginate(
    items: Vec<String>,
    query: &[(String, String)],
    base: &str,
) -> ApiResult<(Vec<String>, Option<String>)> {
    let n = match query_get(query, "n") {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| ApiError::new(Code::SizeInvalid, format!("n={v:?}: expected a non-negative integer")))?,
        ),
    };
    let last = query_get(query, "last").filter(|l| !l.is_empty());
    let start = last.map_or(0, |l| items.partition_point(|x| x.as_str() <= l));
    let rest = &items[start.min(items.len())..];
    let take = n.unwrap_or(rest.len()).min(rest.len());
    let page = rest[..take].to_vec();
    let link = match (n, page.last()) {
        (Some(n), Some(l)) if take < rest.len() => {
            let enc: String = form_urlencoded::byte_serialize(l.as_bytes()).collect();
            Some(format!("<{base}?n={n}&last={enc}>; rel=\"next\""))
        }
        _ => None,
    };
    Ok((page, link))
}

fn with_link(mut r: Response, link: Option<String>) -> Response {
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LINK, l);
    }
    r
}

fn catalog(reg: &Registry, query: &[(String, String)]) -> ApiResult<Response> {
    let repos: Vec<String> = reg.index.repos()?.into_iter().map(|(n, _)| n).collect();
    let (page, link) = paginate(repos, query, "/v2/_catalog")?;
    let body = serde_json::json!({ "repositories": page }).to_string();
    Ok(with_link(json_response(StatusCode::OK, body), link))
}

fn tags(reg: &Registry, name: &RepoName, query: &[(String, String)]) -> ApiResult<Response> {
    let Some(tags) = reg.index.tags(name.as_str())? else {
        return Err(ApiError::new(
            Code::NameUnknown,
            format!("repository {name} not known to registry"),
        ));
    };
    let (page, link) = paginate(tags, query, &format!("/v2/{name}/tags/list"))?;
    let body = serde_json::json!({ "name": name.as_str(), "tags": page }).to_string();
    Ok(with_link(json_response(StatusCode::OK, body), link))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = "sha256:aa";
        let cases = [
            ("/v2/", Route::Base),
            ("/v2/_catalog", Route::Catalog),
            ("/v2/a/b/tags/list", Route::Tags("a/b".into())),
            ("/v2/a/manifests/latest", Route::Manifest("a".into(), "latest".into())),
            ("/v2/blobs/blobs/sha256:aa", Route::Blob("blobs".into(), d.into())),
            ("/v2/a/b/blobs/sha256%3Aaa", Route::Blob("a/b".into(), d.into())),
            ("/v2/a/blobs/uploads/", Route::UploadStart("a".into())),
            ("/v2/a/blobs/uploads", Route::UploadStart("a".into())),
            ("/v2/a/blobs/uploads/123", Route::Upload("a".into(), "123".into())),
            ("/v2/a/referrers/sha256:aa", Route::Referrers("a".into(), d.into())),
            ("/v1/search", Route::V1Search),
            ("/v2/a", Route::NotFound),
            ("/other", Route::NotFound),
        ];
        for (p, want) in cases {
            assert_eq!(Route::parse(p), want, "{p}");
        }
    }

    #[test]
    fn pagination() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let q = |s: &str| form_urlencoded::parse(s.as_bytes()).into_owned().collect::<Vec<_>>();
        let (p, l) = paginate(items.clone(), &q("n=2"), "/x").unwrap();
        assert_eq!(p, ["a", "b"]);
        assert_eq!(l.unwrap(), "</x?n=2&last=b>; rel=\"next\"");
        let (p, l) = paginate(items.clone(), &q("n=2&last=b"), "/x").unwrap();
        assert_eq!((p, l), (vec!["c".to_string(), "d".to_string()], None));
        let (p, _) = paginate(items.clone(), &q("last=bb"), "/x").unwrap();
        assert_eq!(p, ["c", "d"]);
        let (p, l) = paginate(items.clone(), &q("n=0"), "/x").unwrap();
        assert!(p.is_empty() && l.is_none());
        assert!(paginate(items, &q("n=-1"), "/x").is_err());
    }
}
