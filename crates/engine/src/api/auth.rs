//! `POST /auth`: docker login. The credentials are checked against the registry's `/v2/`
//! (Basic, or the Bearer token flow); nothing is stored by the daemon.

use std::sync::Arc;

use axum::Json;
use axum::extract::State as StateExtractor;
use axum::response::{IntoResponse, Response};
use berth_image::Credentials;
use http::StatusCode;
use serde_json::{Value, json};

use super::State;
use super::pull::options;
use crate::error::Error;

pub(super) async fn auth(StateExtractor(state): StateExtractor<Arc<State>>, body: axum::body::Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "message": format!("invalid login request: {e}") })),
            )
                .into_response();
        }
    };
    let field = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_owned();
    let creds = Credentials {
        username: field("username"),
        password: field("password"),
    };
    let server = field("serveraddress");
    let opts = options(&state);
    match berth_image::login(&server, &opts, &creds).await {
        Ok(()) => {
            tracing::info!(registry = %server, user = %creds.username, "login succeeded");
            Json(json!({ "Status": "Login Succeeded", "IdentityToken": "" })).into_response()
        }
        Err(berth_image::Error::Unauthorized { host, message }) => {
            tracing::info!(registry = %server, user = %creds.username, "login refused");
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({
                    "message": format!("login attempt to {host}/v2/ failed: unauthorized: {message}")
                })),
            )
                .into_response()
        }
        Err(e) => Error::from(e).into_response(),
    }
}
