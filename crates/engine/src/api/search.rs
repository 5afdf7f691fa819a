//! `GET /images/search?term=&limit=&filters=`: docker search, forwarded to the registry's
//! legacy `/v1/search` (see `berth_image::search`), then filtered by `is-official` and
//! `stars` as dockerd does.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use berth_image::SearchResult;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::State;
use super::images::Query;
use super::pull::{credentials, options};
use crate::error::Error;

fn message(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "message": msg.into() }))).into_response()
}

/// The values a filter names, in either of docker's encodings (`{"k":{"v":true}}` or `{"k":["v"]}`).
fn values(filters: &Value, key: &str) -> Vec<String> {
    match filters.get(key) {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// Applies `is-official`, `stars` and `is-automated`; an error names the bad filter.
fn apply(results: Vec<SearchResult>, filters: &Value) -> Result<Vec<SearchResult>, String> {
    if let Some(m) = filters.as_object()
        && let Some(k) = m
            .keys()
            .find(|k| !matches!(k.as_str(), "is-official" | "stars" | "is-automated"))
    {
        return Err(format!("invalid filter '{k}'"));
    }
    let parse_bool = |k: &str| -> Result<Option<bool>, String> {
        match values(filters, k).first().map(String::as_str) {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(v) => Err(format!("invalid filter '{k}={v}'")),
        }
    };
    let official = parse_bool("is-official")?;
    let automated = parse_bool("is-automated")?;
    let mut stars = 0u64;
    for v in values(filters, "stars") {
        let n: u64 = v.parse().map_err(|_| format!("invalid filter 'stars={v}'"))?;
        stars = stars.max(n);
    }
    Ok(results
        .into_iter()
        .filter(|r| official.is_none_or(|o| r.is_official == o))
        // Deprecated: nothing is automated any more.
        .filter(|_| automated != Some(true))
        .filter(|r| r.star_count >= stars)
        .map(|r| SearchResult {
            is_automated: false,
            ..r
        })
        .collect())
}

pub(super) async fn search(
    StateExtractor(state): StateExtractor<Arc<State>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = Query::new(raw);
    let term = q.get("term").unwrap_or("").to_owned();
    if term.is_empty() {
        return message(StatusCode::BAD_REQUEST, "a search term is required");
    }
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        None => 25,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return message(
                    StatusCode::BAD_REQUEST,
                    format!("Limit {l} is outside the range of [1, 100]"),
                );
            }
        },
    };
    let filters: Value = match q.get("filters").filter(|f| !f.is_empty()) {
        None => json!({}),
        Some(f) => match serde_json::from_str(f) {
            Ok(v) => v,
            Err(e) => return message(StatusCode::BAD_REQUEST, format!("invalid filters: {e}")),
        },
    };
    let creds = credentials(&headers);
    let opts = options(&state);
    match berth_image::search(&term, limit, &opts, creds.as_ref()).await {
        Ok(results) => match apply(results, &filters) {
            Ok(r) => Json(r).into_response(),
            Err(m) => message(StatusCode::BAD_REQUEST, m),
        },
        Err(e) => Error::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, stars: u64, official: bool) -> SearchResult {
        SearchResult {
            name: name.into(),
            description: String::new(),
            star_count: stars,
            is_official: official,
            is_automated: false,
        }
    }

    #[test]
    fn filters() {
        let all = vec![r("a", 0, false), r("b", 5, true)];
        let names = |v: Vec<SearchResult>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(names(apply(all.clone(), &json!({})).unwrap()), ["a", "b"]);
        assert_eq!(
            names(apply(all.clone(), &json!({"stars": {"3": true}})).unwrap()),
            ["b"]
        );
        assert_eq!(
            names(apply(all.clone(), &json!({"is-official": ["false"]})).unwrap()),
            ["a"]
        );
        assert!(apply(all.clone(), &json!({"bogus": ["1"]})).is_err());
        assert!(apply(all, &json!({"stars": ["x"]})).is_err());
    }
}
