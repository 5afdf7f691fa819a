//! `POST /images/{name}/push?tag=`: docker push. The image is looked up first (an unknown
//! one is a 404 with dockerd's message); then the answer is a JSON-lines progress stream
//! ending in the `TAG: digest: … size: N` line and the `aux` object, and a failure from there
//! on is an `errorDetail` line.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_image::{Progress, familiar};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use tokio::sync::mpsc;

use super::State;
use super::pull::{self, credentials, encode, line, options};
use crate::error::Error;
use crate::events::Event;

/// Runs the push; see the module documentation.
pub(super) async fn push(
    state: &Arc<State>,
    name: &str,
    tag: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    let tag = tag.filter(|t| !t.is_empty()).unwrap_or("latest");
    let asked = format!("{name}:{tag}");
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": format!("An image does not exist locally with the tag: {name}") })),
        )
            .into_response()
    };
    let Ok(reference) = berth_image::normalize(&asked) else {
        return Ok(not_found());
    };
    let image = {
        let (images, r) = (state.images.clone(), reference.clone());
        match tokio::task::spawn_blocking(move || images.get(&r))
            .await
            .expect("lookup does not panic")
        {
            Ok(i) => i,
            Err(e) if e.kind() == berth_image::ErrorKind::NotFound => return Ok(not_found()),
            Err(e) => return Err(e.into()),
        }
    };
    let repository = berth_image::push_repository_name(&reference)?;
    let creds = credentials(headers);
    let opts = options(state);
    tracing::info!(reference = %reference, user = creds.as_ref().map_or("", |c| c.username.as_str()), "push requested");

    let (ptx, mut prx) = mpsc::unbounded_channel::<Progress>();
    let (btx, brx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let images = state.images.clone();
    let r = reference.clone();
    let pushed = image.clone();
    let task = tokio::spawn(async move { berth_image::push(images, image, &r, &opts, creds.as_ref(), ptx).await });
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut client = Some(btx);
        let first = json!({ "status": format!("The push refers to repository [{repository}]") });
        if let Some(tx) = &client
            && tx.send(Ok(encode(&first))).await.is_err()
        {
            client = None;
        }
        while let Some(p) = prx.recv().await {
            if let Some(tx) = &client
                && tx.send(Ok(encode(&line(&p)))).await.is_err()
            {
                client = None;
            }
        }
        let last = match task.await {
            Ok(Ok(outcome)) => {
                tracing::info!(reference = %reference, digest = %outcome.digest, "image pushed");
                let shown = familiar(&reference);
                state
                    .events
                    .publish(Event::image("push", shown, pull::repository(shown), Some(&pushed)));
                json!({
                    "progressDetail": {},
                    "aux": { "Tag": outcome.tag, "Digest": outcome.digest.to_string(), "Size": outcome.size },
                })
            }
            Ok(Err(e)) => {
                tracing::warn!(reference = %reference, error = %e, "push failed");
                let msg = e.to_string();
                json!({ "errorDetail": { "message": msg }, "error": msg })
            }
            Err(e) => {
                let msg = format!("push task failed: {e}");
                json!({ "errorDetail": { "message": msg }, "error": msg })
            }
        };
        if let Some(tx) = &client {
            let _ = tx.send(Ok(encode(&last))).await;
        }
    });
    let stream = futures::stream::unfold(brx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
