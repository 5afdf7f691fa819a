//! Manifests: get, put (with every reference checked), delete, and the referrers API.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use berth_oci::{Algorithm, Digest, Manifest, ManifestKind, RepoName, Tag, media_types};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

use crate::error::{ApiError, ApiResult, Code};
use crate::index::ManifestMeta;
use crate::registry::{Registry, blocking, manifest_meta};
use crate::routes::json_response;
use crate::storage;

/// A manifest reference: a tag or a digest.
enum Ref {
    Tag(Tag),
    Digest(Digest),
}

fn parse_ref(r: &str) -> ApiResult<Ref> {
    if r.contains(':') {
        return r
            .parse()
            .map(Ref::Digest)
            .map_err(|e: berth_oci::Error| ApiError::new(Code::DigestInvalid, e.to_string()));
    }
    Tag::parse(r)
        .map(Ref::Tag)
        .map_err(|e| ApiError::new(Code::ManifestInvalid, e.to_string()))
}

/// Resolves a reference to a manifest of `repo`.
fn resolve(reg: &Registry, repo: &RepoName, r: &Ref) -> ApiResult<(Digest, ManifestMeta)> {
    let d = match r {
        Ref::Tag(t) => reg.index.tag(repo.as_str(), t.as_str())?,
        Ref::Digest(d) => Some(d.clone()),
    };
    if let Some(d) = d
        && let Some(meta) = reg.index.manifest(repo.as_str(), &d)?
    {
        return Ok((d, meta));
    }
    Err(ApiError::code(Code::ManifestUnknown))
}

pub(crate) async fn get(reg: &Registry, repo: &RepoName, r: &str, head: bool) -> ApiResult<Response> {
    let r = parse_ref(r)?;
    let (d, meta) = resolve(reg, repo, &r)?;
    let body = if head {
        Body::empty()
    } else {
        let bytes = reg.manifest_bytes(&d).await?.ok_or_else(|| {
            tracing::error!(digest = %d, "manifest in the index but its blob is missing");
            ApiError::code(Code::ManifestUnknown)
        })?;
        Body::from(bytes)
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    if let Ok(v) = HeaderValue::from_str(&meta.media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&d.to_string()) {
        h.insert("docker-content-digest", v.clone());
        h.insert(header::ETAG, HeaderValue::from_str(&format!("\"{d}\"")).unwrap_or(v));
    }
    Ok(resp)
}

async fn read_limited(req: Request, max: usize) -> ApiResult<Bytes> {
    // Past the limit the body is still read and dropped, up to four times the limit, so the
    // client reads the 413 instead of a connection reset caused by unread data.
    let drain_max = max.saturating_mul(4);
    let too_large = || ApiError::new(Code::TooLarge, format!("manifest larger than {max} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > drain_max) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    if declared.is_some_and(|len| len > max) {
        // Drain what the client sends, but do not wait for a body that is not coming (a
        // client may wait for the answer before sending).
        let mut total = 0usize;
        while total <= drain_max
            && let Ok(Some(Ok(frame))) = tokio::time::timeout(std::time::Duration::from_secs(2), body.frame()).await
        {
            total += frame.data_ref().map_or(0, |d| d.len());
        }
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::new(Code::ManifestInvalid, format!("reading the manifest failed: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > drain_max {
            return Err(too_large());
        }
        if total <= max {
            buf.extend_from_slice(&data);
        }
    }
    if total > max {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

pub(crate) async fn put(
    reg: &Registry,
    repo: &RepoName,
    r: &str,
    query: &[(String, String)],
    req: Request,
) -> ApiResult<Response> {
    let r = parse_ref(r)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = read_limited(req, reg.config().max_manifest_bytes).await?;
    reg.metrics.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let algorithm = match &r {
        Ref::Digest(d) => d.algorithm(),
        Ref::Tag(_) => Algorithm::Sha256,
    };
    let d = Digest::of(algorithm, &bytes);
    let mut tags = Vec::new();
    match &r {
        Ref::Digest(want) if *want != d => {
            return Err(ApiError::new(
                Code::DigestInvalid,
                format!("manifest digest is {d}, not {want}"),
            ));
        }
        Ref::Digest(_) => {}
        Ref::Tag(t) => tags.push(t.as_str().to_owned()),
    }
    for (k, v) in query {
        if k == "tag" {
            let t = Tag::parse(v).map_err(|e| ApiError::new(Code::ManifestInvalid, e.to_string()))?;
            tags.push(t.as_str().to_owned());
        }
    }
    let m = Manifest::parse(&bytes, content_type.as_deref())
        .map_err(|e| ApiError::new(Code::ManifestInvalid, e.to_string()))?;

    let _g = reg.gc_lock.read().await;
    for b in m.blobs() {
        let linked = reg.index.layer_linked(repo.as_str(), &b.digest)?
            || reg.index.manifest(repo.as_str(), &b.digest)?.is_some();
        if !linked {
            return Err(ApiError::new(
                Code::ManifestBlobUnknown,
                format!("blob {} unknown to repository {repo}", b.digest),
            ));
        }
    }
    if m.kind == ManifestKind::Index {
        for c in &m.manifests {
            if reg.index.manifest(repo.as_str(), &c.digest)?.is_none() {
                return Err(ApiError::new(
                    Code::ManifestBlobUnknown,
                    format!("manifest {} unknown to repository {repo}", c.digest),
                ));
            }
        }
    }
    let description = if tags.is_empty() {
        None
    } else {
        reg.description(&m).await
    };
    if reg.index.blob(&d)?.is_none() {
        reg.storage.put_blob(&d, bytes.clone()).await?;
    }
    let meta = manifest_meta(&m, bytes.len() as u64);
    let (idx, rn, dd, mm, tt, desc) = (
        reg.index.clone(),
        repo.as_str().to_owned(),
        d.clone(),
        meta.clone(),
        tags.clone(),
        description,
    );
    let new = blocking(move || idx.put_manifest(&rn, &dd, &mm, &tt, desc.as_deref())).await?;
    if new {
        reg.metrics.storage_bytes.fetch_add(meta.size, Ordering::Relaxed);
    }
    reg.manifests.insert(d.clone(), bytes);
    reg.storage
        .put(
            &storage::manifest_link(repo.as_str(), &d),
            Bytes::from(meta.media_type.clone()),
        )
        .await?;
    for t in &tags {
        reg.storage
            .put(&storage::tag_link(repo.as_str(), t), Bytes::from(d.to_string()))
            .await?;
    }
    let mut resp = (StatusCode::CREATED, Body::empty()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    let set = |h: &mut http::HeaderMap, k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.append(k, v);
        }
    };
    set(h, "location", format!("/v2/{repo}/manifests/{d}"));
    set(h, "docker-content-digest", d.to_string());
    if let Some(s) = &m.subject {
        set(h, "oci-subject", s.digest.to_string());
    }
    if matches!(r, Ref::Digest(_)) {
        for t in &tags {
            set(h, "oci-tag", t.clone());
        }
    }
    Ok(resp)
}

pub(crate) async fn delete(reg: &Registry, repo: &RepoName, r: &str) -> ApiResult<Response> {
    let r = parse_ref(r)?;
    let name = repo.as_str().to_owned();
    match r {
        Ref::Tag(t) => {
            if reg.index.tag(&name, t.as_str())?.is_none() {
                return Err(ApiError::code(Code::ManifestUnknown));
            }
            reg.storage.delete(&storage::tag_link(&name, t.as_str())).await?;
            let idx = reg.index.clone();
            blocking(move || idx.delete_tag(&name, t.as_str())).await?;
        }
        Ref::Digest(d) => {
            if reg.index.manifest(&name, &d)?.is_none() {
                return Err(ApiError::code(Code::ManifestUnknown));
            }
            // Storage links first, the index last: an interrupted delete is still visible.
            let tags = reg.index.tags(&name)?.unwrap_or_default();
            for t in tags {
                if reg.index.tag(&name, &t)?.as_ref() == Some(&d) {
                    reg.storage.delete(&storage::tag_link(&name, &t)).await?;
                }
            }
            reg.storage.delete(&storage::manifest_link(&name, &d)).await?;
            let idx = reg.index.clone();
            blocking(move || idx.delete_manifest(&name, &d)).await?;
        }
    }
    let mut resp = (StatusCode::ACCEPTED, Body::empty()).into_response();
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Ok(resp)
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=]`: an image index of the manifests whose
/// subject is the digest, including those listed in a referrers tag-schema index
/// (`<alg>-<hex>`) pushed by clients that found no referrers API.
pub(crate) async fn referrers(
    reg: &Registry,
    repo: &RepoName,
    d: &str,
    query: &[(String, String)],
) -> ApiResult<Response> {
    let subject: Digest = d
        .parse()
        .map_err(|e: berth_oci::Error| ApiError::new(Code::DigestInvalid, e.to_string()))?;
    let filter = crate::routes::query_get(query, "artifactType").filter(|a| !a.is_empty());
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (digest, m) in reg.index.referrers(repo.as_str(), &subject)? {
        seen.insert(digest.clone());
        let mut v = serde_json::json!({"mediaType": m.media_type, "digest": digest, "size": m.size});
        if let Some(a) = &m.artifact_type {
            v["artifactType"] = a.clone().into();
        }
        if !m.annotations.is_empty() {
            v["annotations"] = serde_json::to_value(&m.annotations).unwrap_or_default();
        }
        out.push(v);
    }
    if let Some(fallback) = reg.index.tag(repo.as_str(), &subject.to_tag_schema())?
        && let Some(bytes) = reg.manifest_bytes(&fallback).await?
        && let Ok(idx) = Manifest::parse(&bytes, None)
        && idx.kind == ManifestKind::Index
    {
        for desc in idx.manifests {
            if seen.insert(desc.digest.clone()) {
                out.push(serde_json::to_value(&desc).unwrap_or_default());
            }
        }
    }
    if let Some(f) = filter {
        out.retain(|v| v.get("artifactType").and_then(|a| a.as_str()) == Some(f));
    }
    let body =
        serde_json::json!({"schemaVersion": 2, "mediaType": media_types::OCI_INDEX, "manifests": out}).to_string();
    let mut resp = json_response(StatusCode::OK, body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_types::OCI_INDEX));
    if filter.is_some() {
        resp.headers_mut()
            .insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}
