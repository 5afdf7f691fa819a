//! `/networks…`: create, list, inspect, remove, prune, connect and disconnect, in dockerd's
//! shapes (moby `api/server/router/network/network_routes.go`).

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as PathExtractor, RawQuery, State as StateExtractor};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::State;
use super::images::Query;
use super::volumes::{labels_match, name_matches, string_map};
use crate::containers::settings::EndpointRequest;
use crate::error::Error;
use crate::networks::{CreateRequest, NetworkRecord, Networks};

type AppState = StateExtractor<Arc<State>>;

fn body_json(body: &Bytes) -> Result<Value, Error> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| Error::InvalidNetwork(format!("invalid JSON in the request body: {e}")))
}

fn parse<T: std::str::FromStr>(v: Option<&Value>, what: &str) -> Result<Option<T>, Error> {
    match v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| Error::InvalidNetwork(format!("invalid {what}: {s:?}"))),
    }
}

/// The request's `EnableIPv6`: a bool, or absent (API 1.48 makes it a pointer).
fn ipv6_flag(body: &Value) -> bool {
    body.get("EnableIPv6").and_then(Value::as_bool).unwrap_or(false)
}

/// `POST /networks/create`: 201 `{Id, Warning}`.
pub(super) async fn create(StateExtractor(state): AppState, body: Bytes) -> Result<Response, Error> {
    let body = body_json(&body)?;
    let mut ipam = Vec::new();
    if let Some(driver) = body.pointer("/IPAM/Driver").and_then(Value::as_str) {
        if !driver.is_empty() && driver != "default" {
            return Err(Error::InvalidNetwork(format!(
                "IPAM driver {driver:?} not found (Berth has the default one)"
            )));
        }
    }
    for c in body
        .pointer("/IPAM/Config")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if c.get("AuxiliaryAddresses")
            .and_then(Value::as_object)
            .is_some_and(|o| !o.is_empty())
        {
            return Err(Error::InvalidNetwork("berth: --aux-address is not built yet".into()));
        }
        ipam.push((
            parse::<ipnet::IpNet>(c.get("Subnet"), "subnet")?,
            parse::<ipnet::IpNet>(c.get("IPRange"), "ip-range")?,
            parse::<IpAddr>(c.get("Gateway"), "gateway")?,
        ));
    }
    if body.get("ConfigOnly").and_then(Value::as_bool) == Some(true)
        || body.get("ConfigFrom").is_some_and(|v| !v.is_null())
    {
        return Err(Error::InvalidNetwork(
            "berth: --config-only and --config-from are not built yet".into(),
        ));
    }
    if body.get("Ingress").and_then(Value::as_bool) == Some(true) {
        return Err(Error::InvalidNetwork(
            "berth: --ingress needs swarm, which Berth does not have".into(),
        ));
    }
    let req = CreateRequest {
        name: body.get("Name").and_then(Value::as_str).unwrap_or("").to_owned(),
        driver: body.get("Driver").and_then(Value::as_str).unwrap_or("").to_owned(),
        internal: body.get("Internal").and_then(Value::as_bool).unwrap_or(false),
        attachable: body.get("Attachable").and_then(Value::as_bool).unwrap_or(false),
        ipv6: ipv6_flag(&body),
        ipam,
        options: string_map(body.get("Options")),
        labels: string_map(body.get("Labels")),
    };
    let networks = state.containers.networks.clone();
    let record = tokio::task::spawn_blocking(move || networks.create(req))
        .await
        .expect("creating a network does not panic")?;
    Ok((StatusCode::CREATED, Json(json!({"Id": record.id, "Warning": ""}))).into_response())
}

/// `GET /networks?filters=` (`name`, `id`, `driver`, `label`, `type`, `scope`, `dangling`).
pub(super) async fn list(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let filters = q.filters(&["name", "id", "driver", "label", "type", "scope", "dangling"])?;
    let get = |k: &str| filters.get(k).cloned().unwrap_or_default();
    let (names, ids, drivers, labels, types, scopes, dangling) = (
        get("name"),
        get("id"),
        get("driver"),
        get("label"),
        get("type"),
        get("scope"),
        get("dangling"),
    );
    let c = &state.containers;
    let rows: Vec<Value> = c
        .networks
        .list()
        .into_iter()
        .filter(|r| {
            (names.is_empty() || name_matches(&names, &r.name))
                && (ids.is_empty() || ids.iter().any(|i| r.id.starts_with(i.as_str())))
                && (drivers.is_empty() || drivers.contains(&r.driver))
                && labels_match(&labels, &r.labels)
                && (types.is_empty()
                    || types
                        .iter()
                        .any(|t| (t == "builtin") == r.predefined() && (t == "builtin" || t == "custom")))
                && (scopes.is_empty() || scopes.iter().any(|s| s == "local"))
                && (dangling.is_empty()
                    || dangling.iter().any(|d| {
                        let unused = !r.predefined() && c.network_users(&r.id).is_empty();
                        (d == "true" || d == "1") == unused
                    }))
        })
        .map(|r| Networks::to_json(&r, c.network_containers(&r)))
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// `GET /networks/{id}`.
pub(super) async fn inspect(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
) -> Result<Json<Value>, Error> {
    let r: NetworkRecord = state.containers.networks.get(&id)?;
    Ok(Json(Networks::to_json(&r, state.containers.network_containers(&r))))
}

/// `DELETE /networks/{id}`: 204; refused while containers are on it.
pub(super) async fn remove(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
) -> Result<StatusCode, Error> {
    let c = state.containers.clone();
    let r = c.networks.get(&id)?;
    let users = c.network_users(&r.id);
    tokio::task::spawn_blocking(move || c.networks.remove(&r.id, &users))
        .await
        .expect("removing a network does not panic")?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /networks/prune`: `{NetworksDeleted}`.
pub(super) async fn prune(StateExtractor(state): AppState, RawQuery(raw): RawQuery) -> Result<Json<Value>, Error> {
    let q = Query::new(raw);
    let filter = super::prune::PruneFilter::new(&q.filters(&["label", "label!", "until"])?)?;
    let c = state.containers.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        let keep = |id: &str| {
            let Ok(r) = c.networks.get(id) else { return true };
            !c.network_users(id).is_empty() || !filter.chosen(&r.labels, super::prune::rfc3339_secs(&r.created))
        };
        c.networks.prune(&keep)
    })
    .await
    .expect("pruning does not panic");
    Ok(Json(json!({"NetworksDeleted": deleted})))
}

/// `POST /networks/{id}/connect` with `{Container, EndpointConfig}`.
pub(super) async fn connect(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let body = body_json(&body)?;
    let net = state.containers.networks.get(&id)?;
    let container = body.get("Container").and_then(Value::as_str).unwrap_or("");
    let entry = state.containers.get(container)?;
    let ep = body.get("EndpointConfig").cloned().unwrap_or(Value::Null);
    let ipv4 = parse(ep.pointer("/IPAMConfig/IPv4Address"), "IPv4 address")?;
    let ipv6 = parse(ep.pointer("/IPAMConfig/IPv6Address"), "IPv6 address")?;
    if (ipv4.is_some() || ipv6.is_some()) && net.predefined() {
        return Err(Error::InvalidContainerConfig {
            reason: "user specified IP address is supported on user defined networks only".into(),
        });
    }
    let request = EndpointRequest {
        network: net.id.clone(),
        ipv4,
        ipv6,
        mac: ep
            .get("MacAddress")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        aliases: crate::containers::settings::strings(ep.get("Aliases")),
    };
    // The MAC is checked where the endpoint is allocated, before anything changes.
    state.containers.connect(&entry, request).await?;
    Ok(StatusCode::OK)
}

/// `POST /networks/{id}/disconnect` with `{Container, Force}`.
pub(super) async fn disconnect(
    StateExtractor(state): AppState,
    PathExtractor(id): PathExtractor<String>,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let body = body_json(&body)?;
    let container = body.get("Container").and_then(Value::as_str).unwrap_or("");
    let entry = state.containers.get(container)?;
    state.containers.disconnect(&entry, &id).await?;
    Ok(StatusCode::OK)
}
