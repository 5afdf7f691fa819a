//! Blob reads and deletes, and upload sessions: monolithic, chunked and streamed uploads,
//! status, cancel, and cross-repository mount.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use berth_oci::{Algorithm, Digest, Digester, RepoName};
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::{ApiError, ApiResult, Code};
use crate::registry::{Registry, UploadHandle};
use crate::routes::query_get;
use crate::storage;

fn parse_digest(s: &str) -> ApiResult<Digest> {
    s.parse()
        .map_err(|e: berth_oci::Error| ApiError::new(Code::DigestInvalid, e.to_string()))
}

fn headers(r: &mut Response, pairs: &[(&'static str, String)]) {
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
}

fn empty(status: StatusCode, pairs: &[(&'static str, String)]) -> Response {
    let mut r = (status, Body::empty()).into_response();
    headers(&mut r, pairs);
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

/// Whether `repo` may read blob `d`: linked by upload or mount, or a manifest of the repo.
fn visible(reg: &Registry, repo: &RepoName, d: &Digest) -> ApiResult<bool> {
    Ok(reg.index.layer_linked(repo.as_str(), d)? || reg.index.manifest(repo.as_str(), d)?.is_some())
}

/// A single `Range: bytes=…` header, resolved against `size`; `Err(())` when unsatisfiable.
fn byte_range(h: &str, size: u64) -> Result<std::ops::Range<u64>, ()> {
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let r = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            size.saturating_sub(n)..size
        }
        (start, "") => start.parse::<u64>().map_err(|_| ())?..size,
        (start, end) => {
            let (s, e): (u64, u64) = (start.parse().map_err(|_| ())?, end.parse().map_err(|_| ())?);
            if e < s {
                return Err(());
            }
            s..(e + 1).min(size)
        }
    };
    if r.start >= size { Err(()) } else { Ok(r) }
}

pub(crate) async fn get(reg: &Registry, repo: &RepoName, d: &str, head: bool, hdrs: &HeaderMap) -> ApiResult<Response> {
    let d = parse_digest(d)?;
    let meta = match reg.index.blob(&d)? {
        Some(m) if visible(reg, repo, &d)? => m,
        _ => return Err(ApiError::code(Code::BlobUnknown)),
    };
    let size = meta.size;
    let mut pairs = vec![
        ("docker-content-digest", d.to_string()),
        ("accept-ranges", "bytes".to_owned()),
        ("etag", format!("\"{d}\"")),
        ("cache-control", "max-age=31536000".to_owned()),
    ];
    let range = match hdrs.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(h) => match byte_range(h, size) {
            Ok(r) => Some(r),
            Err(()) => {
                let mut r = ApiError::new(
                    Code::RangeInvalid,
                    format!("range {h:?} not satisfiable for {size} bytes"),
                )
                .into_response();
                headers(&mut r, &[("content-range", format!("bytes */{size}"))]);
                return Ok(r);
            }
        },
    };
    let (status, span) = match range {
        Some(r) => {
            pairs.push(("content-range", format!("bytes {}-{}/{size}", r.start, r.end - 1)));
            (StatusCode::PARTIAL_CONTENT, r)
        }
        None => (StatusCode::OK, 0..size),
    };
    if head {
        reg.touch(&d);
        let mut r = empty(status, &pairs);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(span.end - span.start));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(r);
    }
    let len = span.end - span.start;
    let body = if len == 0 {
        Body::empty()
    } else {
        Body::from_stream(reg.storage.open_blob(&d, span).await?)
    };
    let mut r = (status, body).into_response();
    headers(&mut r, &pairs);
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(r)
}

pub(crate) async fn delete(reg: &Registry, repo: &RepoName, d: &str) -> ApiResult<Response> {
    let d = parse_digest(d)?;
    // Storage link first, then the index (see storage.rs): an interrupted delete stays visible.
    reg.storage.delete(&storage::layer_link(repo.as_str(), &d)).await?;
    let (idx, r, dd) = (reg.index.clone(), repo.as_str().to_owned(), d.clone());
    if !crate::registry::blocking(move || idx.unlink_layer(&r, &dd)).await? {
        return Err(ApiError::code(Code::BlobUnknown));
    }
    Ok(empty(StatusCode::ACCEPTED, &[("docker-content-digest", d.to_string())]))
}

fn upload_location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn upload_accepted(status: StatusCode, repo: &RepoName, id: &str, offset: u64) -> Response {
    empty(
        status,
        &[
            ("location", upload_location(repo, id)),
            ("range", range_header(offset)),
            ("docker-upload-uuid", id.to_owned()),
        ],
    )
}

fn blob_created(repo: &RepoName, d: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{repo}/blobs/{d}")),
            ("docker-content-digest", d.to_string()),
        ],
    )
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic upload, or a new session.
pub(crate) async fn start(
    reg: &Registry,
    repo: &RepoName,
    query: &[(String, String)],
    req: Request,
) -> ApiResult<Response> {
    if let Some(m) = query_get(query, "mount") {
        if let Ok(d) = m.parse::<Digest>() {
            let from = query_get(query, "from").and_then(|f| RepoName::parse(f).ok());
            let source_ok = match &from {
                Some(f) => visible(reg, f, &d)?,
                // No `from`: mount automatically when the registry has the blob.
                None => true,
            };
            if source_ok && let Some(meta) = reg.index.blob(&d)? {
                let _g = reg.gc_lock.read().await;
                if reg.index.blob(&d)?.is_some() {
                    reg.touch(&d);
                    reg.link_blob(repo.as_str(), &d, meta.size).await?;
                    return Ok(blob_created(repo, &d));
                }
            }
        }
    }
    let (id, handle) = reg.new_upload(repo.as_str()).await?;
    if let Some(d) = query_get(query, "digest") {
        let d = match parse_digest(d) {
            Ok(d) => d,
            Err(e) => {
                reg.drop_upload(&id).await?;
                return Err(e);
            }
        };
        let mut up = handle.lock().await;
        if let Err(e) = write_body(reg, &mut up, &id, req).await {
            // A monolithic upload cannot be resumed: leave nothing of it behind.
            reg.drop_upload(&id).await?;
            return Err(e);
        }
        return commit(reg, repo, &id, &mut up, &d).await;
    }
    Ok(upload_accepted(StatusCode::ACCEPTED, repo, &id, 0))
}

async fn session(reg: &Registry, repo: &RepoName, id: &str) -> ApiResult<UploadHandle> {
    match reg.upload(id).await? {
        Some(h) if h.lock().await.repo == repo.as_str() => Ok(h),
        _ => Err(ApiError::new(
            Code::BlobUploadUnknown,
            format!("upload {id} unknown to registry"),
        )),
    }
}

/// Checks `Content-Range: <start>-<end>` against the session's offset.
fn check_range(req: &Request, offset: u64) -> ApiResult<()> {
    let Some(v) = req.headers().get(header::CONTENT_RANGE) else {
        return Ok(());
    };
    let s = v.to_str().unwrap_or("");
    let s = s
        .strip_prefix("bytes ")
        .or_else(|| s.strip_prefix("bytes="))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or("");
    let bad = || {
        ApiError::new(
            Code::RangeInvalid,
            format!("Content-Range {s:?} does not continue the upload at offset {offset}"),
        )
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a != offset || b < a {
        return Err(bad());
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len != b - a + 1
    {
        return Err(bad());
    }
    Ok(())
}

/// Appends the request body to the upload as one chunk.
async fn write_body(reg: &Registry, up: &mut crate::registry::Upload, id: &str, req: Request) -> ApiResult<()> {
    use sha2::Digest as _;
    let offset = up.offset;
    let stream = req.into_body().into_data_stream().map_err(std::io::Error::other);
    let hasher = &mut up.hasher;
    let res = reg.storage.write_chunk(id, offset, stream, |b| {
        if let Some(h) = hasher.as_mut() {
            h.update(b);
        }
    });
    match res.await? {
        Ok(0) => Ok(()),
        Ok(n) => {
            up.chunks.push((offset, n));
            up.offset += n;
            reg.metrics.bytes_in.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            // The chunk was not stored; the running hash saw part of it and is now useless.
            up.hasher = None;
            Err(ApiError::new(
                Code::BlobUploadInvalid,
                format!("reading the request body failed: {e}"),
            ))
        }
    }
}

pub(crate) async fn patch(reg: &Registry, repo: &RepoName, id: &str, req: Request) -> ApiResult<Response> {
    let h = session(reg, repo, id).await?;
    let mut up = h.lock().await;
    check_range(&req, up.offset)?;
    write_body(reg, &mut up, id, req).await?;
    Ok(upload_accepted(StatusCode::ACCEPTED, repo, id, up.offset))
}

pub(crate) async fn status(reg: &Registry, repo: &RepoName, id: &str) -> ApiResult<Response> {
    let h = session(reg, repo, id).await?;
    let up = h.lock().await;
    Ok(upload_accepted(StatusCode::NO_CONTENT, repo, id, up.offset))
}

pub(crate) async fn cancel(reg: &Registry, repo: &RepoName, id: &str) -> ApiResult<Response> {
    let h = session(reg, repo, id).await?;
    let _up = h.lock().await;
    reg.drop_upload(id).await?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}

pub(crate) async fn finish(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    query: &[(String, String)],
    req: Request,
) -> ApiResult<Response> {
    let h = session(reg, repo, id).await?;
    let mut up = h.lock().await;
    let d = parse_digest(query_get(query, "digest").unwrap_or(""))?;
    check_range(&req, up.offset)?;
    write_body(reg, &mut up, id, req).await?;
    commit(reg, repo, id, &mut up, &d).await
}

/// Verifies the upload against `d` and makes it a blob of `repo`. A mismatch removes the
/// upload: nothing of it stays behind.
async fn commit(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    up: &mut crate::registry::Upload,
    d: &Digest,
) -> ApiResult<Response> {
    use sha2::Digest as _;
    let computed = match (up.hasher.take(), d.algorithm()) {
        (Some(h), Algorithm::Sha256) => format!("sha256:{}", hex::encode(h.finalize())).parse::<Digest>().ok(),
        _ => {
            let mut dg = Digester::new(d.algorithm());
            let mut s = reg.storage.read_chunks(id, &up.chunks);
            while let Some(b) = s.next().await {
                dg.update(&b.map_err(|e| crate::Error::Io {
                    op: "re-read upload",
                    path: id.to_owned(),
                    source: e,
                })?);
            }
            Some(dg.finish())
        }
    };
    if computed.as_ref() != Some(d) {
        reg.drop_upload(id).await?;
        return Err(ApiError::new(
            Code::DigestInvalid,
            format!(
                "upload of {} bytes has digest {}, not {d}",
                up.offset,
                computed.map_or("?".into(), |c| c.to_string())
            ),
        ));
    }
    {
        let _g = reg.gc_lock.read().await;
        // Uploading a blob again starts its grace period over, as a first upload does.
        reg.touch(d);
        if reg.index.blob(d)?.is_none() {
            reg.storage.commit_upload(id, &up.chunks, d).await?;
        }
        reg.link_blob(repo.as_str(), d, up.offset).await?;
    }
    reg.drop_upload(id).await?;
    Ok(blob_created(repo, d))
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Ok(0..10));
        assert_eq!(byte_range("bytes=90-", 100), Ok(90..100));
        assert_eq!(byte_range("bytes=-10", 100), Ok(90..100));
        assert_eq!(byte_range("bytes=95-200", 100), Ok(95..100));
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "bytes=-0",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=x-1",
        ] {
            assert_eq!(byte_range(bad, 100), Err(()), "{bad}");
        }
    }
}
