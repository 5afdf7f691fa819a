//! `/images/…`: import (`POST /images/create?fromSrc=-`), list, inspect, history, tag,
//! remove and prune, over the image store; pull is in `pull.rs`. Push answers 501 for now.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as PathExtractor, RawQuery, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use berth_image::{BatchSender, Image, ImportOptions, Removed, batch_channel, familiar, split_tag};
use futures::StreamExt;
use http::{HeaderValue, Method, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::State;
use crate::error::Error;
use crate::events::Event;

type AppState = StateExtractor<Arc<State>>;

/// The query string as (name, value) pairs, repeated names kept (`changes=…&changes=…`).
pub(super) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn new(raw: Option<String>) -> Query {
        Query(query_pairs(raw.as_deref()))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// dockerd's `BoolValue`: absent, "", "0", "no", "false", "none" are false.
    pub(super) fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| !["", "0", "no", "false", "none"].contains(&v.to_ascii_lowercase().as_str()))
    }

    /// `filters={"name":{"value":true}}` (or the older `{"name":["value"]}`); an empty
    /// `allowed` lets every name through (the caller checks them).
    pub(super) fn filters(&self, allowed: &[&str]) -> Result<BTreeMap<String, Vec<String>>, Error> {
        let Some(raw) = self.get("filters").filter(|f| !f.is_empty()) else {
            return Ok(BTreeMap::new());
        };
        let bad = |reason| Error::InvalidQuery {
            name: "filters",
            value: raw.to_owned(),
            reason,
        };
        let v: Value = serde_json::from_str(raw).map_err(|_| bad("expected a JSON object"))?;
        let obj = v.as_object().ok_or_else(|| bad("expected a JSON object"))?;
        let mut out = BTreeMap::new();
        for (name, values) in obj {
            if !allowed.is_empty() && !allowed.contains(&name.as_str()) {
                return Err(Error::InvalidFilter { name: name.clone() });
            }
            let values: Vec<String> = match values {
                Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool() != Some(false))
                    .map(|(k, _)| k.clone())
                    .collect(),
                Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
                _ => return Err(bad("each filter is an object or a list of values")),
            };
            out.insert(name.clone(), values);
        }
        Ok(out)
    }
}

/// Go's `path.Match` for the `reference` filter: `*` and `?` within a path component.
fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match (pattern.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&pattern[1..], s) || (!s.is_empty() && s[0] != b'/' && glob(pattern, &s[1..])),
        (Some(b'?'), Some(&c)) if c != b'/' => glob(&pattern[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[1..], &s[1..]),
        _ => false,
    }
}

/// Whether the familiar tag `busybox:latest` (or digest reference `busybox@sha256:…`)
/// matches `pattern` (`busybox`, `busy*`, `busybox:l*`).
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let name = match tag.split_once('@') {
        Some((name, _)) => name,
        None => split_tag(tag).0,
    };
    glob(pattern.as_bytes(), tag.as_bytes()) || glob(pattern.as_bytes(), name.as_bytes())
}

fn labels(image: &Image) -> BTreeMap<String, String> {
    image.record.config.config.labels.clone().unwrap_or_default()
}

/// `GET /images/json`.
pub(super) async fn list(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let filters = q.filters(&["reference", "dangling", "label", "before", "since", "until"])?;
    let dangling = match filters.get("dangling").map(|v| v.as_slice()) {
        None | Some([]) => None,
        Some([v]) if v.eq_ignore_ascii_case("true") || v == "1" => Some(true),
        Some([v]) if v.eq_ignore_ascii_case("false") || v == "0" => Some(false),
        Some(v) => {
            return Err(Error::InvalidQuery {
                name: "filters",
                value: format!("dangling={v:?}"),
                reason: "dangling is true or false",
            });
        }
    };
    // `before`/`since` name images; what they compare is creation times, as dockerd does.
    let created_of = |key: &str| -> Result<Option<i64>, Error> {
        match filters.get(key).and_then(|v| v.first()) {
            Some(name) => Ok(Some(state.images.get(name)?.record.created)),
            None => Ok(None),
        }
    };
    let (before, since) = (created_of("before")?, created_of("since")?);
    let until = match filters.get("until").and_then(|v| v.first()) {
        Some(u) => Some(super::prune::until(u, super::prune::now())?),
        None => None,
    };
    let images = state.images.clone();
    let mut all = tokio::task::spawn_blocking(move || images.images())
        .await
        .expect("image listing does not panic")?;
    all.sort_by_key(|i| std::cmp::Reverse(i.record.created));
    let shared = q.flag("shared-size").then(|| layer_sharing(&all).0);
    let mut out = Vec::new();
    for image in all {
        let created = image.record.created;
        if before.is_some_and(|b| created >= b)
            || since.is_some_and(|s| created <= s)
            || until.is_some_and(|u| created as f64 >= u)
        {
            continue;
        }
        let mut tags = image.familiar_tags();
        let mut digests = image.repo_digests();
        // Dangling: no reference at all. A digest reference alone (a pull by digest) keeps
        // an image, as dockerd's containerd image store does.
        if let Some(d) = dangling
            && d != image.tags.is_empty()
        {
            continue;
        }
        if let Some(patterns) = filters.get("reference") {
            tags.retain(|t| patterns.iter().any(|p| reference_matches(p, t)));
            digests.retain(|t| patterns.iter().any(|p| reference_matches(p, t)));
            if tags.is_empty() && digests.is_empty() {
                continue;
            }
        }
        if let Some(wanted) = filters.get("label") {
            let image_labels = labels(&image);
            let ok = wanted.iter().all(|w| match w.split_once('=') {
                Some((k, v)) => image_labels.get(k).is_some_and(|x| x == v),
                None => image_labels.contains_key(w.as_str()),
            });
            if !ok {
                continue;
            }
        }
        let mut row = summary(&image, tags, digests);
        if let Some(shared) = &shared {
            row["SharedSize"] = json!(shared.get(&image.record.id.to_string()).copied().unwrap_or(0));
        }
        out.push(row);
    }
    Ok(Json(Value::Array(out)))
}

/// Per image, the bytes of its layers that another image has too (`SharedSize`), and the
/// bytes of all layers, each counted once (`LayersSize`). Layers are told apart by chain ID,
/// as snapshots are.
pub(super) fn layer_sharing(all: &[Image]) -> (BTreeMap<String, u64>, u64) {
    let mut users: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for image in all {
        for (chain, layer) in image.record.chain_ids().iter().zip(&image.record.layers) {
            users.entry(chain.to_string()).or_insert((layer.diff_size, 0)).1 += 1;
        }
    }
    let shared = all
        .iter()
        .map(|image| {
            let bytes = image
                .record
                .chain_ids()
                .iter()
                .filter_map(|c| users.get(&c.to_string()))
                .filter(|(_, n)| *n > 1)
                .map(|(size, _)| size)
                .sum();
            (image.record.id.to_string(), bytes)
        })
        .collect();
    (shared, users.values().map(|(size, _)| size).sum())
}

/// dockerd's `ImageSummary`; `SharedSize` and `Containers` are -1 (not counted) as in
/// `GET /images/json`, and `/system/df` fills them in.
pub(super) fn summary(image: &Image, tags: Vec<String>, digests: Vec<String>) -> Value {
    let r = &image.record;
    json!({
        "Id": r.id,
        "ParentId": "",
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": r.created,
        "Size": r.size,
        "SharedSize": -1,
        "VirtualSize": r.size,
        "Labels": labels(image),
        "Containers": -1,
    })
}

/// `GET /images/{name}/json` and `GET /images/{name}/history`; the rest (`/get`) is not built.
pub(super) async fn get_action(
    StateExtractor(state): AppState,
    PathExtractor(rest): PathExtractor<String>,
    method: Method,
    uri: Uri,
) -> Result<Json<Value>, Error> {
    if let Some(name) = rest.strip_suffix("/json") {
        let image = get_image(&state, name).await?;
        Ok(Json(inspect(&image)))
    } else if let Some(name) = rest.strip_suffix("/history") {
        let image = get_image(&state, name).await?;
        Ok(Json(history(&image)))
    } else {
        Err(super::not_implemented(method, uri).await)
    }
}

async fn get_image(state: &Arc<State>, name: &str) -> Result<Image, Error> {
    let (images, name) = (state.images.clone(), name.to_owned());
    Ok(tokio::task::spawn_blocking(move || images.get(&name))
        .await
        .expect("image lookup does not panic")?)
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The inspect document, in docker's `image.InspectResponse` shape.
fn inspect(image: &Image) -> Value {
    let r = &image.record;
    let c = &r.config.config;
    let comment = r
        .config
        .history
        .iter()
        .rev()
        .find_map(|h| h.comment.clone())
        .unwrap_or_default();
    json!({
        "Id": r.id,
        "RepoTags": image.familiar_tags(),
        "RepoDigests": image.repo_digests(),
        "Parent": "",
        "Comment": comment,
        "Created": r.config.created.clone().unwrap_or_else(|| rfc3339(r.created)),
        "DockerVersion": "",
        "Author": r.config.author.clone().unwrap_or_default(),
        "Config": {
            "Hostname": "",
            "Domainname": "",
            "User": c.user.clone().unwrap_or_default(),
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "ExposedPorts": c.exposed_ports,
            "Tty": false,
            "OpenStdin": false,
            "StdinOnce": false,
            "Env": c.env,
            "Cmd": c.cmd,
            "Image": "",
            "Volumes": c.volumes,
            "WorkingDir": c.working_dir.clone().unwrap_or_default(),
            "Entrypoint": c.entrypoint,
            "OnBuild": null,
            "Labels": c.labels,
            "StopSignal": c.stop_signal,
            "Healthcheck": c.healthcheck,
        },
        "Architecture": r.config.architecture,
        "Os": r.config.os,
        "Size": r.size,
        "GraphDriver": { "Name": "overlay2", "Data": null },
        "RootFS": {
            "Type": r.config.rootfs.kind,
            "Layers": r.config.rootfs.diff_ids,
        },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
    })
}

/// The history, newest first, in docker's `image.HistoryResponseItem` shape.
fn history(image: &Image) -> Value {
    let r = &image.record;
    let mut layers = r.layers.iter();
    let mut items: Vec<Value> = r
        .config
        .history
        .iter()
        .map(|h| {
            let size = if h.empty_layer {
                0
            } else {
                layers.next().map_or(0, |l| l.diff_size)
            };
            let created = h
                .created
                .as_deref()
                .and_then(|c| time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok())
                .map_or(r.created, |t| t.unix_timestamp());
            json!({
                "Id": "<missing>",
                "Created": created,
                "CreatedBy": h.created_by.clone().unwrap_or_default(),
                "Tags": null,
                "Size": size,
                "Comment": h.comment.clone().unwrap_or_default(),
            })
        })
        .collect();
    items.reverse();
    if let Some(top) = items.first_mut() {
        top["Id"] = json!(r.id);
        top["Tags"] = json!(image.familiar_tags());
    }
    Value::Array(items)
}

/// `POST /images/{name}/tag?repo=&tag=`, and `/push` (in `push.rs`).
pub(super) async fn post_action(
    StateExtractor(state): AppState,
    PathExtractor(rest): PathExtractor<String>,
    RawQuery(raw): RawQuery,
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
) -> Result<Response, Error> {
    if let Some(name) = rest.strip_suffix("/push") {
        let q = Query::new(raw);
        return super::push::push(&state, name, q.get("tag"), &headers).await;
    }
    let Some(name) = rest.strip_suffix("/tag") else {
        return Err(super::not_implemented(method, uri).await);
    };
    let q = Query::new(raw);
    let repo = q.get("repo").unwrap_or("");
    if repo.is_empty() {
        return Err(Error::InvalidQuery {
            name: "repo",
            value: String::new(),
            reason: "a repository name to tag with is required",
        });
    }
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.to_owned(),
    };
    let (images, name) = (state.images.clone(), name.to_owned());
    let shown = berth_image::normalize(&target).map_or_else(|_| target.clone(), |t| familiar(&t).to_owned());
    let image = tokio::task::spawn_blocking(move || images.tag(&name, &target))
        .await
        .expect("tagging does not panic")?;
    state
        .events
        .publish(Event::image("tag", image.record.id.to_string(), shown, Some(&image)));
    Ok(StatusCode::CREATED.into_response())
}

fn removed_json(removed: &[Removed]) -> Vec<Value> {
    removed
        .iter()
        .map(|r| match r {
            Removed::Untagged(t) => json!({ "Untagged": t }),
            Removed::Deleted(d) => json!({ "Deleted": d }),
        })
        .collect()
}

/// `DELETE /images/{name}?force=`.
pub(super) async fn remove(
    StateExtractor(state): AppState,
    PathExtractor(name): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Error> {
    let force = Query::new(raw).flag("force");
    refuse_if_used(&state, &name).await?;
    let images = state.images.clone();
    let (image, removed) = tokio::task::spawn_blocking(move || {
        // The image as it was, for the events' labels; a concurrent change at worst makes
        // the events name the image the removal no longer found.
        let image = images.get(&name).ok();
        images.remove(&name, force).map(|r| (image, r))
    })
    .await
    .expect("removal does not panic")?;
    publish_removals(&state, image.as_slice(), &removed);
    Ok(Json(Value::Array(removed_json(&removed))))
}

/// dockerd's events for what a removal did: `untag` for each tag removed and `delete` for
/// each image deleted, both naming the image by ID (as `ImageDelete` logs them). A digest
/// reference removed along with its tag gets no event of its own (dockerd's containerd image
/// store has no such separate name); one removed by itself does. `before` holds the images
/// the removal may have touched, as they were.
fn publish_removals(state: &State, before: &[Image], removed: &[Removed]) {
    let mut untagged: Vec<&str> = Vec::new();
    let untags = |untagged: &mut Vec<&str>, image: &Image| {
        let any_tag = untagged.iter().any(|r| !r.contains('@'));
        let id = image.record.id.to_string();
        for r in untagged.drain(..) {
            if !any_tag || !r.contains('@') {
                state.events.publish(Event::image("untag", &id, &id, Some(image)));
            }
        }
    };
    for r in removed {
        match r {
            Removed::Untagged(t) => untagged.push(t),
            Removed::Deleted(d) => {
                // A Deleted that is no image is a snapshot (chain ID).
                let Some(image) = before.iter().find(|i| &i.record.id == d) else {
                    continue;
                };
                untags(&mut untagged, image);
                let id = d.to_string();
                state.events.publish(Event::image("delete", &id, &id, Some(image)));
            }
        }
    }
    // Untagged without a deletion: the image stays, with its other references.
    if let Some(image) = before.first() {
        untags(&mut untagged, image);
    }
}

/// An image that a container uses cannot be deleted (dockerd's 409); untagging one of
/// several tags is fine.
async fn refuse_if_used(state: &Arc<State>, name: &str) -> Result<(), Error> {
    let Ok(image) = get_image(state, name).await else {
        // The removal itself reports the missing image.
        return Ok(());
    };
    let untag_only = image.tags.len() > 1 && berth_image::normalize(name).is_ok_and(|n| image.tags.contains(&n));
    if untag_only {
        return Ok(());
    }
    let Some(user) = state.containers.image_user(&image.record.id.to_string()) else {
        return Ok(());
    };
    let short = &image.record.id.hex()[..12];
    let container = &user.id[..12];
    let is_tag = berth_image::normalize(name).is_ok_and(|n| image.tags.contains(&n));
    let message = if user.running() {
        format!(
            "conflict: unable to delete {short} (cannot be forced) - image is being used by running container {container}"
        )
    } else if is_tag {
        format!(
            "conflict: unable to remove repository reference \"{name}\" (must force) - container {container} is using its referenced image {short}"
        )
    } else {
        format!(
            "conflict: unable to delete {short} (must be forced) - image is being used by stopped container {container}"
        )
    };
    Err(Error::ImageInUse(message))
}

/// `POST /images/prune?filters=`: dangling images, or every image with `dangling=false`;
/// images that containers use are kept.
pub(super) async fn prune(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let filters = q.filters(&["dangling", "label", "label!", "until"])?;
    let dangling_only = !filters
        .get("dangling")
        .is_some_and(|v| v.iter().any(|x| x.eq_ignore_ascii_case("false") || x == "0"));
    let filter = super::prune::PruneFilter::new(&filters)?;
    let images = state.images.clone();
    let mut keep: std::collections::HashSet<String> =
        state.containers.all().iter().map(|e| e.record().image_id).collect();
    let (before, removed, reclaimed) = tokio::task::spawn_blocking(move || {
        let before = images.images()?;
        keep.extend(
            before
                .iter()
                .filter(|i| !filter.chosen(&labels(i), i.record.created as f64))
                .map(|i| i.record.id.to_string()),
        );
        images.prune_except(dangling_only, &keep).map(|(r, n)| (before, r, n))
    })
    .await
    .expect("prune does not panic")?;
    publish_removals(&state, &before, &removed);
    state.events.publish(Event::image_prune(reclaimed));
    let deleted = removed_json(&removed);
    Ok(Json(json!({
        "ImagesDeleted": if deleted.is_empty() { Value::Null } else { Value::Array(deleted) },
        "SpaceReclaimed": reclaimed,
    })))
}

/// Sends `body` to the import (or load) thread. If that stops early (a bad entry), the rest
/// is read anyway so the client gets the error rather than a broken pipe.
pub(super) async fn feed_body(body: Body, mut tx: BatchSender) {
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                tx.send(bytes).await;
            }
            Err(e) => return tx.fail(io::Error::other(e.to_string())).await,
        }
    }
    tx.finish().await;
}

/// `POST /images/create`: `fromSrc=-` imports the body as a root filesystem tarball.
/// `fromImage` pulls (see `pull.rs`); `fromSrc=URL` is not built yet.
pub(super) async fn create(
    StateExtractor(state): AppState,
    RawQuery(raw): RawQuery,
    headers: http::HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let q = Query::new(raw);
    if let Some(image) = q.get("fromImage").filter(|v| !v.is_empty()) {
        return super::pull::pull(&state, super::pull::reference(image, q.get("tag")), &headers).await;
    }
    match q.get("fromSrc") {
        Some("-") => {}
        Some(src) if !src.is_empty() => {
            return Err(Error::NotBuilt {
                what: format!("import from a URL (fromSrc={src}); send the tarball in the request body (fromSrc=-)"),
            });
        }
        _ => {
            return Err(Error::InvalidQuery {
                name: "fromSrc",
                value: String::new(),
                reason: "either fromSrc or fromImage is required",
            });
        }
    }
    let reference = match (q.get("repo").unwrap_or(""), q.get("tag").unwrap_or("")) {
        ("", _) => None,
        (repo, "") => Some(repo.to_owned()),
        (repo, tag) => Some(format!("{repo}:{tag}")),
    };
    let tagged = reference.as_deref().and_then(|r| berth_image::normalize(r).ok());
    let architecture = q
        .get("platform")
        .and_then(|p| p.split('/').nth(1))
        .filter(|a| !a.is_empty())
        .map_or_else(|| state.host.go_arch.to_owned(), str::to_owned);
    let opts = ImportOptions {
        reference,
        message: q.get("message").unwrap_or("").to_owned(),
        changes: q.all("changes"),
        architecture,
        // Device nodes in a root filesystem are kept only when the daemon can make them.
        allow_devices: nix::unistd::Uid::effective().is_root(),
    };

    let (tx, reader) = batch_channel();
    let images = state.images.clone();
    let task = tokio::task::spawn_blocking(move || images.import(reader, &opts));
    feed_body(body, tx).await;
    let image = task.await.expect("import does not panic")?;
    let layer = image
        .record
        .layers
        .first()
        .map(|l| l.diff_id.hex()[..12].to_owned())
        .unwrap_or_default();
    let size = image.record.size;
    let mut lines = String::new();
    for line in [
        json!({ "status": "Importing", "progressDetail": { "current": size, "total": size }, "id": layer }),
        json!({ "status": image.record.id }),
    ] {
        lines.push_str(&line.to_string());
        lines.push_str("\r\n");
    }
    let mut resp = Response::new(Body::from(lines));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    tracing::info!(image = %image.record.id, tags = ?image.tags.iter().map(|t| familiar(t)).collect::<Vec<_>>(), "image imported");
    let id = image.record.id.to_string();
    if let Some(tag) = &tagged {
        state
            .events
            .publish(Event::image("tag", &id, familiar(tag), Some(&image)));
    }
    state.events.publish(Event::image("import", &id, &id, Some(&image)));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::super::tests::test_state;
    use super::*;
    use axum::extract::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn send(state: &Arc<State>, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body))
            .unwrap();
        let resp = super::super::router(state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        // JSON lines: keep the last one.
        let text = String::from_utf8_lossy(&bytes);
        let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("null");
        (status, serde_json::from_str(last).unwrap_or(Value::Null))
    }

    fn rootfs() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "bin/hello", &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[tokio::test]
    async fn import_inspect_tag_remove_through_the_router() {
        let (state, _tx, _root) = test_state();
        let (s, v) = send(
            &state,
            "POST",
            "/v1.45/images/create?fromSrc=-&repo=busybox&message=hello&changes=CMD+%5B%22sh%22%5D&changes=EXPOSE+80",
            rootfs(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let id = v["status"].as_str().unwrap().to_owned();
        assert!(id.starts_with("sha256:"), "{v}");

        let (s, v) = send(&state, "GET", "/images/json", vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v[0]["Id"], id.as_str());
        assert_eq!(v[0]["RepoTags"], json!(["busybox:latest"]));
        assert_eq!(v[0]["Containers"], -1);
        let (_, v) = send(&state, "GET", "/images/busybox/json", vec![]).await;
        assert_eq!(v["Config"]["Cmd"], json!(["sh"]));
        assert_eq!(v["Config"]["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(v["Comment"], "hello");
        let (_, v) = send(&state, "GET", "/images/busybox/history", vec![]).await;
        assert_eq!(v[0]["Id"], id.as_str());
        assert_eq!(v[0]["Comment"], "hello");

        let (s, _) = send(
            &state,
            "POST",
            "/images/busybox/tag?repo=myreg:5000/sl6/wn&tag=v1",
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, v) = send(&state, "GET", "/images/myreg:5000/sl6/wn:v1/json", vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["RepoTags"], json!(["busybox:latest", "myreg:5000/sl6/wn:v1"]));
        let (s, v) = send(
            &state,
            "GET",
            "/images/json?filters=%7B%22reference%22%3A%7B%22myreg%3A5000%2F*%2F*%22%3Atrue%7D%7D",
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v[0]["RepoTags"], json!(["myreg:5000/sl6/wn:v1"]));
        let (s, v) = send(&state, "GET", "/images/json?filters=%7B%22bogus%22%3A%5B%5D%7D", vec![]).await;
        assert_eq!(
            (s, v["message"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid filter 'bogus'"))
        );

        let (s, v) = send(&state, "DELETE", &format!("/images/{}", &id[7..19]), vec![]).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        let (s, v) = send(&state, "DELETE", "/images/busybox", vec![]).await;
        assert_eq!((s, v), (StatusCode::OK, json!([{ "Untagged": "busybox:latest" }])));
        let (s, v) = send(&state, "DELETE", "/images/myreg:5000/sl6/wn:v1", vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v[0], json!({ "Untagged": "myreg:5000/sl6/wn:v1" }));
        assert_eq!(v[1], json!({ "Deleted": id }));
        let (s, v) = send(&state, "GET", "/images/busybox/json", vec![]).await;
        assert_eq!(
            (s, v),
            (StatusCode::NOT_FOUND, json!({ "message": "No such image: busybox" }))
        );
    }

    #[tokio::test]
    async fn create_refusals() {
        let (state, _tx, _root) = test_state();
        let table: &[(&str, StatusCode, &str)] = &[
            (
                "/images/create?fromImage=UPPER&tag=latest",
                StatusCode::BAD_REQUEST,
                "invalid reference format",
            ),
            (
                "/images/create?fromSrc=http%3A%2F%2Fx%2Fr.tar",
                StatusCode::NOT_IMPLEMENTED,
                "import from a URL",
            ),
            ("/images/create", StatusCode::BAD_REQUEST, "either fromSrc or fromImage"),
            (
                "/images/create?fromSrc=-&changes=RUN+true",
                StatusCode::BAD_REQUEST,
                "RUN is not supported",
            ),
            (
                "/images/create?fromSrc=-&repo=UPPER",
                StatusCode::BAD_REQUEST,
                "invalid reference format",
            ),
            (
                "/images/create?fromSrc=-",
                StatusCode::BAD_REQUEST,
                "the import is empty",
            ),
            (
                "/images/x/push?tag=1",
                StatusCode::NOT_FOUND,
                "An image does not exist locally with the tag: x",
            ),
        ];
        for &(uri, status, msg) in table {
            let (s, v) = send(&state, "POST", uri, vec![]).await;
            assert_eq!(s, status, "{uri}: {v}");
            assert!(v["message"].as_str().unwrap().contains(msg), "{uri}: {v}");
        }
        assert_eq!(state.images.count().unwrap(), 0);
    }

    #[test]
    fn queries_and_globs() {
        let q = query_pairs(Some(
            "fromSrc=-&changes=CMD+%5B%22sh%22%5D&changes=ENV+A%3D1&message=a+b%25&x",
        ));
        assert_eq!(
            q,
            [
                ("fromSrc".into(), "-".into()),
                ("changes".into(), "CMD [\"sh\"]".into()),
                ("changes".into(), "ENV A=1".into()),
                ("message".into(), "a b%".into()),
                ("x".into(), "".into()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busy*", "busybox:latest"));
        assert!(reference_matches("busybox:l*", "busybox:latest"));
        assert!(!reference_matches("busybox:v1", "busybox:latest"));
        assert!(!reference_matches("sl6", "sl6/wn:latest"));
        assert!(reference_matches("sl6/*", "sl6/wn:latest"));
        assert!(reference_matches("myreg:5000/a", "myreg:5000/a:1"));
    }
}
