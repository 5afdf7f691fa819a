//! `docker save` and `docker load`: `GET /images/get?names=…`, `GET /images/{name}/get` and
//! `POST /images/load`. The tarball streams both ways through a bounded channel between the
//! connection and a blocking thread; neither side holds a whole layer in memory.

use std::io::{self, Write};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as PathExtractor, RawQuery, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use berth_image::familiar;
use bytes::Bytes;
use http::{HeaderValue, Method, Uri, header};
use serde_json::json;
use tokio::sync::mpsc;

use super::State;
use super::images::{feed_body, query_pairs};
use crate::error::Error;
use crate::events::Event;

type AppState = StateExtractor<Arc<State>>;

/// `GET /images/get?names=A&names=B`.
pub(super) async fn save(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Response, Error> {
    let names: Vec<String> = query_pairs(raw.as_deref())
        .into_iter()
        .filter(|(k, v)| k == "names" && !v.is_empty())
        .map(|(_, v)| v)
        .collect();
    if names.is_empty() {
        return Err(Error::InvalidQuery {
            name: "names",
            value: String::new(),
            reason: "at least one image name is required",
        });
    }
    save_names(state, names).await
}

/// `GET /images/{*rest}`: `{name}/get` saves one image; the rest is inspect and history.
pub(super) async fn get_action(
    state: AppState,
    PathExtractor(rest): PathExtractor<String>,
    method: Method,
    uri: Uri,
) -> Result<Response, Error> {
    match rest.strip_suffix("/get") {
        Some(name) => save_names(state.0, vec![name.to_owned()]).await,
        None => super::images::get_action(state, PathExtractor(rest), method, uri)
            .await
            .map(IntoResponse::into_response),
    }
}

async fn save_names(state: Arc<State>, names: Vec<String>) -> Result<Response, Error> {
    let images = state.images.clone();
    // Unknown names fail here, with a status code, before the stream starts.
    let export = tokio::task::spawn_blocking(move || images.export(&names))
        .await
        .expect("export lookup does not panic")?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter { tx: tx.clone() };
        let mut out = io::BufWriter::with_capacity(1 << 20, sink);
        // `write` flushes `out` itself.
        match export.write(&mut out) {
            Ok(()) => {
                for id in export.ids() {
                    let image = state.images.get(&id.to_string()).ok();
                    let id = id.to_string();
                    state.events.publish(Event::image("save", &id, &id, image.as_ref()));
                }
            }
            Err(e) => {
                // The status line is sent already: a broken stream is all the client can get.
                tracing::warn!(error = %e, "docker save stopped");
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(resp)
}

/// A blocking writer into the response body's channel.
pub(super) struct ChannelWriter {
    pub(super) tx: mpsc::Sender<io::Result<Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `POST /images/load?quiet=`: JSON lines, `Loaded image: NAME:TAG` per tag (or
/// `Loaded image ID: sha256:…`), or the error inside the stream as dockerd sends it.
pub(super) async fn load(StateExtractor(state): AppState, body: Body) -> Response {
    let (tx, reader) = berth_image::batch_channel();
    let images = state.images.clone();
    let task = tokio::task::spawn_blocking(move || images.load(reader));
    feed_body(body, tx).await;
    let mut lines = String::new();
    match task.await.expect("load does not panic") {
        Ok(loaded) => {
            for l in &loaded {
                let image = state.images.get(&l.id.to_string()).ok();
                let id = l.id.to_string();
                state.events.publish(Event::image("load", &id, &id, image.as_ref()));
            }
            for image in loaded {
                if image.tags.is_empty() {
                    lines.push_str(&json!({ "stream": format!("Loaded image ID: {}\n", image.id) }).to_string());
                    lines.push_str("\r\n");
                }
                for tag in &image.tags {
                    lines.push_str(&json!({ "stream": format!("Loaded image: {}\n", familiar(tag)) }).to_string());
                    lines.push_str("\r\n");
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "docker load refused");
            let message = e.to_string();
            lines.push_str(&json!({ "errorDetail": { "message": message }, "error": message }).to_string());
            lines.push_str("\r\n");
        }
    }
    let mut resp = Response::new(Body::from(lines));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::super::tests::test_state;
    use axum::extract::Request;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn send(
        state: &std::sync::Arc<super::State>,
        method: &str,
        uri: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = super::super::router(state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
    }

    #[tokio::test]
    async fn save_then_load_through_the_router() {
        let (state, _tx, _root) = test_state();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "hi", &b"hi"[..]).unwrap();
        let rootfs = b.into_inner().unwrap();
        let (s, _) = send(&state, "POST", "/v1.45/images/create?fromSrc=-&repo=x&tag=1", rootfs).await;
        assert_eq!(s, StatusCode::OK);
        let id = state.images.get("x:1").unwrap().record.id;

        let (s, saved) = send(&state, "GET", "/v1.45/images/get?names=x%3A1", vec![]).await;
        assert_eq!(s, StatusCode::OK);
        let (s, one) = send(&state, "GET", "/v1.45/images/x:1/get", vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(one, saved);
        let (s, _) = send(&state, "GET", "/v1.45/images/nothing/get", vec![]).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = send(&state, "GET", "/v1.45/images/get", vec![]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // Inspect still answers through the same route.
        let (s, _) = send(&state, "GET", "/v1.45/images/x:1/json", vec![]).await;
        assert_eq!(s, StatusCode::OK);

        state.images.remove("x:1", false).unwrap();
        let (s, out) = send(&state, "POST", "/v1.45/images/load?quiet=1", saved).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"stream\":\"Loaded image: x:1\\n\"}\r\n"
        );
        assert_eq!(state.images.get("x:1").unwrap().record.id, id);

        let (s, out) = send(&state, "POST", "/v1.45/images/load", b"not a tarball at all".repeat(40)).await;
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["error"].as_str().unwrap().contains("invalid image archive"), "{v}");
        assert_eq!(v["errorDetail"]["message"], v["error"]);
    }
}
