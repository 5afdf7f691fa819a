//! `/volumes…`: list, create, inspect, remove and prune local volumes, in dockerd's shapes
//! (moby `daemon/server/router/volume/volume_routes.go`, `daemon/volume/service`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path as PathExtractor, RawQuery, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::images::Query;
use super::{ApiVersion, State};
use crate::error::Error;
use crate::volumes::VolumeRecord;

type AppState = StateExtractor<Arc<State>>;

/// moby's `GetBoolOrDefault`: `true`/`1` or `false`/`0`, not both.
fn bool_filter(name: &str, values: &[String]) -> Result<bool, Error> {
    let t = values.iter().any(|v| v == "true" || v == "1");
    let f = values.iter().any(|v| v == "false" || v == "0");
    if t == f {
        return Err(Error::InvalidFilter {
            name: format!("{name}=[{}]", values.join(" ")),
        });
    }
    Ok(t)
}

/// moby's `MatchKVList`: every `key` or `key=value` matches the labels.
pub(super) fn labels_match(filters: &[String], labels: &BTreeMap<String, String>) -> bool {
    filters.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(f.as_str()),
    })
}

/// moby's `filters.Match`: the exact name, or a regular expression that matches it.
pub(super) fn name_matches(patterns: &[String], name: &str) -> bool {
    patterns
        .iter()
        .any(|p| p == name || regex::Regex::new(p).is_ok_and(|re| re.is_match(name)))
}

/// `GET /volumes?filters=` (`dangling`, `name`, `label`, `driver`).
pub(super) async fn list(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let filters = q.filters(&["dangling", "name", "label", "driver"])?;
    let dangling = filters
        .get("dangling")
        .map(|v| bool_filter("dangling", v))
        .transpose()?;
    let volumes = state.containers.volumes();
    let rows: Vec<Value> = volumes
        .list()
        .into_iter()
        .filter(|v| {
            let get = |k: &str| filters.get(k).map_or(&[][..], Vec::as_slice);
            (get("name").is_empty() || name_matches(get("name"), &v.name))
                && labels_match(get("label"), &v.labels)
                && (get("driver").is_empty() || get("driver").contains(&v.driver))
                && dangling.is_none_or(|d| d == volumes.users(&v.name).is_empty())
        })
        .map(|v| volumes.to_json(&v))
        .collect();
    Ok(Json(json!({ "Volumes": rows, "Warnings": null })))
}

pub(super) fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /volumes/create` with `{"Name", "Driver", "DriverOpts", "Labels"}`: 201 and the
/// volume, also when one of that name exists (dockerd returns it).
pub(super) async fn create(StateExtractor(state): AppState, body: Bytes) -> Result<Response, Error> {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::InvalidContainerConfig {
            reason: format!("invalid JSON in the request body: {e}"),
        })?
    };
    let name = body.get("Name").and_then(Value::as_str).unwrap_or("").to_owned();
    let driver = body.get("Driver").and_then(Value::as_str).unwrap_or("").to_owned();
    let options = string_map(body.get("DriverOpts"));
    let labels = string_map(body.get("Labels"));
    let volumes = state.containers.volumes();
    let v = volumes.clone();
    let (record, _) = tokio::task::spawn_blocking(move || {
        v.create(
            Some(name.as_str()).filter(|n| !n.is_empty()),
            &driver,
            options,
            labels,
            None,
        )
    })
    .await
    .expect("creating a volume does not panic")?;
    Ok((StatusCode::CREATED, Json(volumes.to_json(&record))).into_response())
}

/// `GET /volumes/{name}`.
pub(super) async fn inspect(
    StateExtractor(state): AppState,
    PathExtractor(name): PathExtractor<String>,
) -> Result<Json<Value>, Error> {
    let volumes = state.containers.volumes();
    let v = volumes.get(&name)?;
    Ok(Json(volumes.to_json(&v)))
}

/// `DELETE /volumes/{name}?force=`: 409 while a container uses it.
pub(super) async fn remove(
    StateExtractor(state): AppState,
    PathExtractor(name): PathExtractor<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, Error> {
    let q = Query::new(raw);
    let force = q.flag("force");
    let volumes = state.containers.volumes();
    tokio::task::spawn_blocking(move || volumes.remove(&name, force))
        .await
        .expect("removing a volume does not panic")?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /volumes/prune?filters=` (`label`, `label!`, `all`): unused volumes without mount
/// options; only anonymous ones unless `all=true`, from API 1.42 on (as dockerd).
pub(super) async fn prune(
    StateExtractor(state): AppState,
    Extension(version): Extension<ApiVersion>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let filters = q.filters(&["label", "label!", "all"])?;
    let all = match filters.get("all").map(Vec::as_slice) {
        None | Some([]) => false,
        Some([one]) => parse_go_bool(one).ok_or_else(|| Error::InvalidContainerConfig {
            reason: format!("invalid filter 'all': strconv.ParseBool: parsing \"{one}\": invalid syntax"),
        })?,
        Some(many) => {
            return Err(Error::InvalidContainerConfig {
                reason: format!("invalid filter 'all=[{}]': only one value is expected", many.join(" ")),
            });
        }
    };
    let all = all || version.0 < (1, 42);
    let labels = filters.get("label").cloned().unwrap_or_default();
    let not_labels = filters.get("label!").cloned().unwrap_or_default();
    let volumes = state.containers.volumes();
    let (deleted, reclaimed) = tokio::task::spawn_blocking(move || {
        volumes.prune(|v: &VolumeRecord| {
            let chosen = labels_match(&labels, &v.labels)
                && (not_labels.is_empty() || !labels_match(&not_labels, &v.labels))
                && (all || v.anonymous());
            !chosen
        })
    })
    .await
    .expect("pruning does not panic")?;
    Ok(Json(json!({ "VolumesDeleted": deleted, "SpaceReclaimed": reclaimed })))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_like_moby() {
        let l: BTreeMap<String, String> = [("site".to_owned(), "lab".to_owned())].into();
        assert!(labels_match(&[], &l));
        assert!(labels_match(&["site".into()], &l));
        assert!(labels_match(&["site=lab".into()], &l));
        assert!(!labels_match(&["site=other".into()], &l));
        assert!(!labels_match(&["site".into(), "x".into()], &l));
        assert!(name_matches(&["dat".into()], "data"));
        assert!(name_matches(&["^d.*a$".into()], "data"));
        assert!(!name_matches(&["^x".into()], "data"));
        assert!(bool_filter("dangling", &["true".into()]).unwrap());
        assert!(!bool_filter("dangling", &["0".into()]).unwrap());
        assert_eq!(
            bool_filter("dangling", &["maybe".into()]).unwrap_err().to_string(),
            "invalid filter 'dangling=[maybe]'"
        );
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
