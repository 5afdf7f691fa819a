//! `docker search` against this registry: the legacy `GET /v1/search?q=&n=&page=` in Docker's
//! format, over repository names (substring, case-insensitive), with each repository's
//! description. Every authenticated user may read every repository, so all are searched.

use axum::response::Response;
use http::StatusCode;
use serde::Serialize;

use crate::error::{ApiError, ApiResult, Code};
use crate::registry::Registry;
use crate::routes::{json_response, query_get};

#[derive(Serialize)]
struct Hit {
    name: String,
    description: String,
    star_count: u32,
    is_official: bool,
    is_automated: bool,
}

#[derive(Serialize)]
struct Results {
    num_results: usize,
    query: String,
    page: usize,
    page_size: usize,
    num_pages: usize,
    results: Vec<Hit>,
}

pub(crate) fn search(reg: &Registry, query: &[(String, String)]) -> ApiResult<Response> {
    let q = query_get(query, "q").unwrap_or("").to_owned();
    let num = |key: &str, default: usize| -> ApiResult<usize> {
        match query_get(query, key) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| ApiError::new(Code::SizeInvalid, format!("{key}={v:?}: expected a positive integer"))),
        }
    };
    let page_size = num("n", 25)?.clamp(1, 100);
    let page = num("page", 1)?.max(1);
    let needle = q.to_lowercase();
    let matches: Vec<_> = reg
        .index
        .repos()?
        .into_iter()
        .filter(|(name, _)| name.contains(&needle))
        .collect();
    let total = matches.len();
    let results = matches
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .map(|(name, meta)| Hit {
            name,
            description: meta.description,
            star_count: 0,
            is_official: false,
            is_automated: false,
        })
        .collect();
    let body = Results {
        num_results: total,
        query: q,
        page,
        page_size,
        num_pages: total.div_ceil(page_size),
        results,
    };
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_string(&body).expect("serializes"),
    ))
}
