//! `POST /images/create?fromImage=NAME&tag=TAG`: docker pull. The name is resolved to a
//! manifest first (errors there get a status code and `{"message"}`); then the answer is a
//! JSON-lines progress stream, and a failure from there on is an `errorDetail` line.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use base64::Engine as _;
use berth_image::{Credentials, DEFAULT_CERTS_DIR, Progress, RegistryOptions, familiar, split_tag};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::State;
use crate::error::Error;
use crate::events::Event;

/// The reference docker means: `fromImage=NAME&tag=TAG`, where TAG may be a digest, or
/// `fromImage` may already carry a tag or digest.
pub(super) fn reference(from_image: &str, tag: Option<&str>) -> String {
    match tag.filter(|t| !t.is_empty()) {
        Some(t) if t.contains(':') => format!("{from_image}@{t}"),
        Some(t) => format!("{from_image}:{t}"),
        None => from_image.to_owned(),
    }
}

/// `X-Registry-Auth`: base64url JSON `{username, password, serveraddress}`; absent, empty or
/// undecodable means anonymous (as dockerd treats it).
pub(super) fn credentials(headers: &HeaderMap) -> Option<Credentials> {
    let raw = headers.get("x-registry-auth")?.to_str().ok()?.trim();
    if raw.is_empty() {
        return None;
    }
    let trimmed = raw.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let field = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_owned();
    let (username, password) = (field("username"), field("password"));
    if username.is_empty() && password.is_empty() {
        return None;
    }
    Some(Credentials { username, password })
}

pub(super) fn options(state: &State) -> RegistryOptions {
    let c = &state.config;
    RegistryOptions {
        insecure: c.insecure_registries.clone(),
        mirrors: c.registry_mirrors.clone(),
        add_registries: c.add_registries.clone(),
        block_registries: c.block_registries.clone(),
        certs_dir: DEFAULT_CERTS_DIR.into(),
        architecture: state.host.go_arch.to_owned(),
    }
}

/// One progress event as dockerd writes it.
pub(super) fn line(p: &Progress) -> Value {
    let mut v = json!({ "status": p.status });
    if let Some(id) = &p.id {
        v["id"] = json!(id);
        match p.bytes {
            Some((current, total)) => {
                v["progressDetail"] = json!({ "current": current, "total": total });
                v["progress"] = json!(bar(current, total));
            }
            None => v["progressDetail"] = json!({}),
        }
    }
    v
}

/// `[=====>      ]  1.2MB/3.4MB`, as docker's `JSONProgress.String` draws it.
fn bar(current: u64, total: u64) -> String {
    const WIDTH: u64 = 50;
    let mb = |n: u64| {
        if n >= 1_000_000 {
            format!("{:.1}MB", n as f64 / 1e6)
        } else {
            format!("{:.1}kB", n as f64 / 1e3)
        }
    };
    if total == 0 {
        return mb(current);
    }
    let filled = (current.min(total) * WIDTH / total) as usize;
    let width = WIDTH as usize;
    let body = if filled >= width {
        "=".repeat(width)
    } else {
        format!("{}>{}", "=".repeat(filled), " ".repeat(width - filled - 1))
    };
    format!("[{body}] {:>8}/{}", mb(current), mb(total))
}

/// `host/repo:tag` or `host/repo@sha256:…` → `host/repo`.
pub(super) fn repository(reference: &str) -> &str {
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    split_tag(name).0
}

pub(super) fn encode(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push_str("\r\n");
    Bytes::from(s)
}

/// Runs the pull; see the module documentation.
pub(super) async fn pull(state: &Arc<State>, reference: String, headers: &HeaderMap) -> Result<Response, Error> {
    let creds = credentials(headers);
    let opts = options(state);
    tracing::info!(reference = %reference, user = creds.as_ref().map_or("", |c| c.username.as_str()), "pull requested");
    let resolved = berth_image::resolve(&reference, &opts, creds.as_ref()).await?;

    let (ptx, mut prx) = mpsc::unbounded_channel::<Progress>();
    let (btx, brx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let images = state.images.clone();
    let name = resolved.reference();
    // The pull runs to its end even if the client goes away: a half-done pull is wasted
    // work the next one would redo.
    let task = tokio::spawn(resolved.pull(images, ptx));
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut client = Some(btx);
        while let Some(p) = prx.recv().await {
            if let Some(tx) = &client
                && tx.send(Ok(encode(&line(&p)))).await.is_err()
            {
                client = None;
            }
        }
        let last = match task.await {
            Ok(Ok(outcome)) => {
                tracing::info!(image = %outcome.image.record.id, reference = %outcome.reference, updated = outcome.updated, "image pulled");
                // dockerd: the reference pulled as the actor, its repository as the name.
                let shown = familiar(&outcome.reference);
                state
                    .events
                    .publish(Event::image("pull", shown, repository(shown), Some(&outcome.image)));
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(reference = %name, error = %e, "pull failed");
                Some(e.to_string())
            }
            Err(e) => Some(format!("pull task failed: {e}")),
        };
        if let (Some(msg), Some(tx)) = (last, &client) {
            let _ = tx
                .send(Ok(encode(&json!({ "errorDetail": { "message": msg }, "error": msg }))))
                .await;
        }
    });
    let stream = futures::stream::unfold(brx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// `GET /distribution/{name}/json`: the manifest a name resolves to in its registry and the
/// platforms it offers, without pulling (docker-py's `inspect_distribution`).
pub(super) async fn distribution(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, Error> {
    let Some(name) = rest.strip_suffix("/json").filter(|n| !n.is_empty()) else {
        return Err(Error::NotImplemented {
            method: "GET".to_owned(),
            path: format!("/distribution/{rest}"),
        });
    };
    let creds = credentials(&headers);
    let resolved = berth_image::resolve(name, &options(&state), creds.as_ref()).await?;
    let d = resolved.distribution().await?;
    Ok(axum::Json(json!({
        "Descriptor": {
            "mediaType": d.descriptor.media_type,
            "digest": d.descriptor.digest.to_string(),
            "size": d.descriptor.size,
        },
        "Platforms": d.platforms,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_headers_and_lines() {
        assert_eq!(reference("127.0.0.1:5000/sl6/wn", Some("1")), "127.0.0.1:5000/sl6/wn:1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(reference("sl6/wn", Some(&d)), format!("sl6/wn@{d}"));
        assert_eq!(reference("busybox", None), "busybox");
        assert_eq!(reference("busybox", Some("")), "busybox");

        let mut h = HeaderMap::new();
        assert_eq!(credentials(&h), None);
        let auth = base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"username":"u","password":"p?>","serveraddress":"127.0.0.1:5000"}"#);
        h.insert("x-registry-auth", HeaderValue::from_str(&auth).unwrap());
        assert_eq!(
            credentials(&h),
            Some(Credentials {
                username: "u".into(),
                password: "p?>".into()
            })
        );
        h.insert("x-registry-auth", HeaderValue::from_static("e30="));
        assert_eq!(credentials(&h), None, "{{}} is anonymous");

        let p = Progress {
            id: Some("0123456789ab".into()),
            status: "Downloading".into(),
            bytes: Some((5, 10)),
        };
        let v = line(&p);
        assert_eq!(v["progressDetail"], json!({ "current": 5, "total": 10 }));
        assert!(v["progress"].as_str().unwrap().starts_with("[====="), "{v}");
        let done = line(&Progress {
            id: None,
            status: "Digest: sha256:x".into(),
            bytes: None,
        });
        assert_eq!(done, json!({ "status": "Digest: sha256:x" }));
        assert_eq!(bar(10, 10).matches('=').count(), 50);
        assert_eq!(repository("127.0.0.1:5000/sl6/wn:1"), "127.0.0.1:5000/sl6/wn");
        assert_eq!(repository(&format!("busybox@{d}")), "busybox");
        assert_eq!(repository("127.0.0.1:5000/sl6/wn"), "127.0.0.1:5000/sl6/wn");
    }
}
