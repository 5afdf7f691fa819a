//! A container's filesystem through the API, shaped like dockerd's answers:
//! `HEAD|GET|PUT /containers/{id}/archive?path=` (`docker cp` both ways),
//! `GET /containers/{id}/export`, `GET /containers/{id}/changes` (`docker diff`) and
//! `POST /commit`. Tarballs stream through a bounded channel in both directions.

use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as PathExtractor, RawQuery, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use berth_image::{ChangeKind, ExtractOptions, PathStat, Whiteouts, container_path, familiar};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::State;
use super::archive::ChannelWriter;
use super::images::{Query, feed_body};
use crate::containers::Record;
use crate::containers::filesystem::{CommitRequest, check_writable, shown_path};
use crate::error::Error;
use crate::events::Event;

type AppState = StateExtractor<Arc<State>>;

const PATH_STAT: HeaderName = HeaderName::from_static("x-docker-container-path-stat");

/// The `path` query parameter every archive call needs.
fn path_param(q: &Query) -> Result<String, Error> {
    match q.get("path") {
        Some(p) if !p.is_empty() => Ok(p.to_owned()),
        _ => Err(Error::InvalidQuery {
            name: "path",
            value: String::new(),
            reason: "Path cannot be empty",
        }),
    }
}

/// An I/O failure on `path` in container `name`, as dockerd words it.
fn path_error(e: io::Error, path: &str, name: &str) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::ContainerFileNotFound {
            path: shown_path(path),
            container: name.to_owned(),
        }
    } else {
        Error::ContainerPath {
            path: shown_path(path),
            container: name.to_owned(),
            source: e,
        }
    }
}

fn stat_header(stat: &PathStat) -> HeaderValue {
    let json = serde_json::to_vec(stat).expect("a stat serialises");
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(json)).expect("base64 is ASCII")
}

/// `HEAD /containers/{id}/archive?path=`: the path's stat in a header.
pub(super) async fn stat(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let path = path_param(&Query::new(raw))?;
    let entry = state.containers.get(&id)?;
    let p = path.clone();
    let stat = state
        .containers
        .in_rootfs(&entry, true, move |_| berth_image::stat_path(&p))
        .await?
        .map_err(|e| path_error(e, &path, &id))?;
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut().insert(PATH_STAT, stat_header(&stat));
    Ok(resp)
}

/// The stat's one-shot answer, taken by whoever has it first: the view (the stat) or the
/// task around it (the view's own failure).
type StatSlot = Arc<Mutex<Option<oneshot::Sender<Result<PathStat, Error>>>>>;

fn answer(slot: &StatSlot, r: Result<PathStat, Error>) -> bool {
    match slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(tx) => tx.send(r).is_ok(),
        None => false,
    }
}

/// `GET /containers/{id}/archive?path=`: the stat header and the tar of the path.
pub(super) async fn archive(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let path = path_param(&Query::new(raw))?;
    let entry = state.containers.get(&id)?;
    let (stat_tx, stat_rx) = oneshot::channel();
    let slot: StatSlot = Arc::new(Mutex::new(Some(stat_tx)));
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let containers = state.containers.clone();
    let (p, name, view_slot) = (path.clone(), id.clone(), slot.clone());
    tokio::spawn(async move {
        let work = move |_: &Record| -> bool {
            let stat = match berth_image::stat_path(&p) {
                Ok(s) => s,
                Err(e) => return !answer(&view_slot, Err(path_error(e, &p, &name))),
            };
            if !answer(&view_slot, Ok(stat)) {
                return false; // the client went away
            }
            let sink = BufWriter::with_capacity(1 << 20, ChannelWriter { tx: tx.clone() });
            let written = berth_image::write_path_archive(&p, sink)
                .and_then(|w| w.into_inner().map(drop).map_err(|e| e.into_error()));
            if let Err(e) = written {
                // The status line is sent already: a broken stream is all the client can get.
                tracing::warn!(path = %p, error = %e, "docker cp from a container stopped");
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                return false;
            }
            true
        };
        match containers.in_rootfs(&entry, true, work).await {
            Ok(true) => containers.event(&entry, "archive-path"),
            Ok(false) => {}
            Err(e) => {
                answer(&slot, Err(e));
            }
        }
    });
    let stat = stat_rx
        .await
        .map_err(|_| Error::NoSuchContainer { name: id.clone() })??;
    let mut resp = Response::new(channel_body(rx));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    h.insert(PATH_STAT, stat_header(&stat));
    Ok(resp)
}

fn channel_body(rx: mpsc::Receiver<io::Result<Bytes>>) -> Body {
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=`: unpacks the tar
/// body into the directory `path` (symlinks followed inside the container).
pub(super) async fn extract(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, Error> {
    let q = Query::new(raw);
    let no_overwrite = q.flag("noOverwriteDirNonDir");
    let copy_uid_gid = q.flag("copyUIDGID");
    let (path, entry) = match path_param(&q).and_then(|p| Ok((p, state.containers.get(&id)?))) {
        Ok(found) => found,
        Err(e) => {
            // Answering before the client has sent its tarball would reset the connection
            // under it, and it would lose the answer.
            drain(body).await;
            return Err(e);
        }
    };
    let (tx, reader) = berth_image::batch_channel();
    let containers = state.containers.clone();
    let (p, name, e) = (path.clone(), id.clone(), entry.clone());
    let task = tokio::spawn(async move {
        containers
            .in_rootfs(&e, true, move |rec| {
                extract_here(rec, &p, &name, reader, no_overwrite, copy_uid_gid)
            })
            .await
    });
    feed_body(body, tx).await;
    task.await.expect("extraction does not panic")??;
    state.containers.event(&entry, "extract-to-dir");
    Ok(StatusCode::OK.into_response())
}

/// Reads and drops what is left of a refused request's body: at most 16 MiB, for 10 s.
async fn drain(body: Body) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut left = 16usize << 20;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = stream.next().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// In the view: moby's `containerExtractToDir`.
fn extract_here(
    rec: &Record,
    path: &str,
    name: &str,
    reader: berth_image::BatchReader,
    no_overwrite: bool,
    copy_uid_gid: bool,
) -> Result<(), Error> {
    // Every symlink followed, the last one too: a tar can be extracted through a symlink to
    // a directory. The view's root is the container's, so they all resolve inside it.
    let joined = container_path(path);
    let clean = joined.trim_end_matches("/.").trim_end_matches('/');
    let resolved =
        std::fs::canonicalize(if clean.is_empty() { "/" } else { clean }).map_err(|e| path_error(e, path, name))?;
    let md = std::fs::symlink_metadata(&resolved).map_err(|e| path_error(e, path, name))?;
    if !md.is_dir() {
        return Err(Error::CopyRefused {
            reason: "extraction point is not a directory",
        });
    }
    let resolved_str = resolved.display().to_string();
    check_writable(rec, &resolved_str)?;
    let user = rec.config.get("User").and_then(Value::as_str).unwrap_or("");
    let owner = if copy_uid_gid && !user.is_empty() {
        Some(berth_runtime::resolve_exec_user(user, Path::new("/"))?)
    } else {
        None
    };
    let opts = ExtractOptions {
        whiteouts: Whiteouts::Keep,
        // As dockerd: the tar may carry device nodes; the container's device cgroup decides
        // what opening them allows.
        allow_devices: true,
        same_owner: true,
        owner,
        no_overwrite_dir_non_dir: no_overwrite,
    };
    berth_image::extract(reader, &resolved, &opts)?;
    Ok(())
}

/// `GET /containers/{id}/export`: the whole root filesystem as a tar (no mounts).
pub(super) async fn export(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
) -> Result<Response, Error> {
    let entry = state.containers.get(&id)?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let containers = state.containers.clone();
    let failed = tx.clone();
    tokio::spawn(async move {
        let work = move |_: &Record| {
            let sink = BufWriter::with_capacity(1 << 20, ChannelWriter { tx });
            berth_image::write_tree(Path::new("/"), sink)
                .and_then(|w| w.into_inner().map(drop).map_err(|e| e.into_error()))
        };
        let err = match containers.in_rootfs(&entry, false, work).await {
            Ok(Ok(())) => {
                containers.event(&entry, "export");
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(container = %entry.id, error = %err, "docker export stopped");
        let _ = failed.send(Err(io::Error::other(err))).await;
    });
    let mut resp = Response::new(channel_body(rx));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(resp)
}

/// `GET /containers/{id}/changes`: `[{"Path": "/x", "Kind": 0|1|2}]`.
pub(super) async fn changes(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
) -> Result<Json<Value>, Error> {
    let entry = state.containers.get(&id)?;
    let changes = state.containers.changes(&entry).await?;
    Ok(Json(Value::Array(
        changes
            .into_iter()
            .map(|c| {
                let kind = match c.kind {
                    ChangeKind::Modified => 0,
                    ChangeKind::Added => 1,
                    ChangeKind::Deleted => 2,
                };
                json!({ "Path": c.path, "Kind": kind })
            })
            .collect(),
    )))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes=`, body: an
/// optional `Config`. 201 `{"Id": "sha256:…"}`.
pub(super) async fn commit(
    StateExtractor(state): AppState,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, Error> {
    let q = Query::new(raw);
    let name = q.get("container").unwrap_or_default();
    let entry = state.containers.get(name)?;
    let repo = q.get("repo").unwrap_or_default();
    let tag = q.get("tag").unwrap_or_default();
    let reference = match (repo, tag) {
        ("", _) => None,
        (r, "") => Some(r.to_owned()),
        (r, t) => Some(format!("{r}:{t}")),
    };
    // API 1.13 and later pause unless told not to.
    let pause = match q.get("pause") {
        None | Some("") => true,
        Some(_) => q.flag("pause"),
    };
    let config = match serde_json::from_slice::<Value>(&body) {
        _ if body.iter().all(u8::is_ascii_whitespace) => None,
        Ok(Value::Null) => None,
        Ok(v @ Value::Object(_)) => Some(v),
        Ok(_) | Err(_) => {
            return Err(Error::InvalidContainerConfig {
                reason: "the commit request's body must be a container Config (a JSON object)".into(),
            });
        }
    };
    let req = CommitRequest {
        reference,
        author: q.get("author").unwrap_or_default().to_owned(),
        comment: q.get("comment").unwrap_or_default().to_owned(),
        pause,
        changes: q.all("changes"),
        config,
    };
    let image = state.containers.commit(&entry, req).await?;
    let id = image.record.id.to_string();
    for t in &image.tags {
        state
            .events
            .publish(Event::image("tag", &id, familiar(t), Some(&image)));
    }
    Ok((StatusCode::CREATED, Json(json!({ "Id": id }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::super::tests::test_state;
    use axum::extract::Request;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn bad_requests_are_refused_with_dockerds_words() {
        let (state, _tx, _root) = test_state();
        let table: &[(&str, &str, u16, &str)] = &[
            (
                "GET",
                "/v1.45/containers/nosuch/archive?path=/x",
                404,
                "No such container: nosuch",
            ),
            (
                "PUT",
                "/v1.45/containers/nosuch/archive?path=/",
                404,
                "No such container: nosuch",
            ),
            ("GET", "/v1.45/containers/nosuch/archive", 400, "Path cannot be empty"),
            (
                "GET",
                "/v1.45/containers/nosuch/export",
                404,
                "No such container: nosuch",
            ),
            (
                "GET",
                "/v1.45/containers/nosuch/changes",
                404,
                "No such container: nosuch",
            ),
            (
                "POST",
                "/v1.45/commit?container=nosuch&repo=x",
                404,
                "No such container: nosuch",
            ),
        ];
        for &(method, uri, status, message) in table {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(axum::body::Body::from(vec![0u8; 1024]))
                .unwrap();
            let resp = super::super::router(state.clone()).oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::from_u16(status).unwrap(), "{method} {uri}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["message"].as_str().unwrap().contains(message), "{method} {uri}: {v}");
        }
    }
}
