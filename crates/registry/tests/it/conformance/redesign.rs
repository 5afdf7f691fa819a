//! The redesigned suite (`conformance/run.go` `TestAll`, 2026) outside the data sets: ping,
//! the empty repository, the blob APIs run once per digest algorithm (`<test>::sha256`,
//! `<test>::sha512`), range reads, well-known blob contents, bad digests, and the manifest
//! error cases (`TestManifestErrors`).
//!
//! As in the suite, after each successful push the blob is read back (HEAD and GET), then
//! deleted and gone at once (HEAD 404).

use anyhow::{Result, ensure};
use berth_oci::{Algorithm, Digest, media_types};
use futures::stream;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::{Method, Response, StatusCode};

use crate::fixtures::{Content, Image, OCTET_STREAM, random_bytes};
use crate::harness::{
    TestRegistry, blob_path, error_codes, expect_error, expect_status, header, location, manifest_path, with_digest,
};

const REPO: &str = "conformance/repo1";
const REPO2: &str = "conformance/repo2";
/// The chunk size the suite's chunked pushes start from; each blob spans three chunks.
const CHUNK: usize = 1024;

/// Runs a blob requirement once per digest algorithm, as `<name>::sha256` and `<name>::sha512`.
macro_rules! per_algorithm {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sha256() -> anyhow::Result<()> {
                super::$name(berth_oci::Algorithm::Sha256).await
            }

            #[tokio::test]
            async fn sha512() -> anyhow::Result<()> {
                super::$name(berth_oci::Algorithm::Sha512).await
            }
        }
    )*};
}

per_algorithm!(
    blobs_get_missing_returns_404,
    blobs_post_only_returns_201,
    blobs_post_put_returns_201,
    blobs_chunked_single_returns_201,
    blobs_stream_returns_201,
    blobs_mount_from_repository_returns_201,
    blobs_mount_anonymous_returns_201,
    blobs_mount_missing_returns_202_then_put_201,
    blobs_post_cancel_returns_204,
    blobs_chunked_multi_returns_201,
    blobs_chunked_multi_and_put_chunk_returns_201,
    blobs_chunked_out_of_order_returns_416_then_204_status,
    blobs_chunked_out_of_order_and_put_chunk_returns_416_then_201,
    blobs_range_500_1499_returns_206,
    blobs_range_500_to_end_returns_206,
    blobs_range_last_500_returns_206,
    blobs_range_2000_5000_returns_206_clipped,
    blobs_range_500_0_returns_416,
    blobs_range_5000_10000_returns_416,
    blobs_empty_blob_round_trips,
    blobs_empty_json_blob_round_trips,
    blobs_bad_digest_post_only_returns_400,
    blobs_bad_digest_post_put_returns_400,
    blobs_bad_digest_chunked_returns_400,
    blobs_bad_digest_chunked_and_put_chunk_returns_400,
    blobs_bad_digest_stream_returns_400,
);

fn blob(alg: Algorithm, len: usize) -> Content {
    Content::new(OCTET_STREAM, random_bytes(len), alg)
}

/// Reads a pushed blob back (HEAD, then GET), deletes it and checks it is gone.
async fn check_pushed(reg: &TestRegistry, repo: &str, b: &Content) -> Result<()> {
    let path = blob_path(repo, &b.digest);
    let resp = expect_status(reg.head(&path).send().await?, &[StatusCode::OK]).await?;
    assert_eq!(header(&resp, "content-length"), Some(b.bytes.len().to_string()));
    assert_eq!(header(&resp, "docker-content-digest"), Some(b.digest.to_string()));
    assert!(resp.bytes().await?.is_empty(), "HEAD has no body");
    let resp = expect_status(reg.get(&path).send().await?, &[StatusCode::OK]).await?;
    assert_eq!(header(&resp, "content-length"), Some(b.bytes.len().to_string()));
    assert_eq!(header(&resp, "docker-content-digest"), Some(b.digest.to_string()));
    assert_eq!(resp.bytes().await?, b.bytes);
    delete_blob(reg, repo, &b.digest).await
}

/// DELETE answers 202 and a HEAD right after answers 404.
async fn delete_blob(reg: &TestRegistry, repo: &str, d: &Digest) -> Result<()> {
    let path = blob_path(repo, d);
    expect_status(reg.delete(&path).send().await?, &[StatusCode::ACCEPTED]).await?;
    let resp = reg.head(&path).send().await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "deleted blob still served");
    Ok(())
}

/// A successful blob push: 201, `Location` serving the blob, and `Docker-Content-Digest`
/// (verified when present).
async fn expect_created(reg: &TestRegistry, resp: Response, b: &Content) -> Result<()> {
    let resp = expect_status(resp, &[StatusCode::CREATED]).await?;
    if let Some(d) = header(&resp, "docker-content-digest") {
        assert_eq!(d, b.digest.to_string());
    }
    let resp = reg.get(&location(&resp)?).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    assert_eq!(resp.bytes().await?, b.bytes);
    Ok(())
}

/// A push refused for its digest: 400 DIGEST_INVALID, and nothing stored under the digest.
async fn expect_bad_digest(reg: &TestRegistry, resp: Response, d: &Digest) -> Result<()> {
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await?;
    let resp = reg.head(&blob_path(REPO, d)).send().await?;
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "a blob failing its digest was stored"
    );
    Ok(())
}

/// `POST ?digest=` with the body. Falls back, as the suite does, to PUT on the session when
/// the registry answers 202.
async fn post_only(reg: &TestRegistry, bytes: &[u8], d: &Digest, bad: bool) -> Result<Response> {
    let resp = reg
        .post(&with_digest(&format!("/v2/{REPO}/blobs/uploads/"), d))
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(bytes.to_vec())
        .send()
        .await?;
    let ok = if bad {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::CREATED
    };
    let resp = expect_status(resp, &[ok, StatusCode::ACCEPTED]).await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Ok(resp);
    }
    put_body(reg, &location(&resp)?, bytes, d).await
}

async fn put_body(reg: &TestRegistry, upload: &str, bytes: &[u8], d: &Digest) -> Result<Response> {
    Ok(reg
        .put(&with_digest(upload, d))
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(bytes.to_vec())
        .send()
        .await?)
}

/// POST, then PUT with the body.
async fn post_put(reg: &TestRegistry, bytes: &[u8], d: &Digest) -> Result<Response> {
    let upload = reg.start_upload(REPO).await?;
    put_body(reg, &upload, bytes, d).await
}

/// POST, PATCH the whole body as a chunked transfer (no length known), PUT to close.
async fn stream(reg: &TestRegistry, bytes: &[u8], d: &Digest) -> Result<Response> {
    let upload = reg.start_upload(REPO).await?;
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(700).map(|c| Ok(c.to_vec())).collect();
    let resp = reg
        .patch(&upload)
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        .send()
        .await?;
    let resp = expect_status(resp, &[StatusCode::ACCEPTED]).await?;
    assert_eq!(
        header(&resp, "range"),
        Some(format!("0-{}", bytes.len().saturating_sub(1)))
    );
    close(reg, &location(&resp)?, d).await
}

/// `PUT <upload>?digest=` with no body.
async fn close(reg: &TestRegistry, upload: &str, d: &Digest) -> Result<Response> {
    Ok(reg
        .put(&with_digest(upload, d))
        .header(CONTENT_TYPE, OCTET_STREAM)
        .header(CONTENT_LENGTH, 0)
        .body(Vec::new())
        .send()
        .await?)
}

/// How a chunked push goes (`BlobPatchChunked` flags).
#[derive(Clone, Copy, Default)]
struct Chunking {
    /// Send the last chunk with the closing PUT instead of a PATCH.
    put_last_chunk: bool,
    /// Before each chunk, send one that does not continue the upload (416), then recover the
    /// offset with a status GET (204 and `Range`).
    out_of_order: bool,
}

/// A chunked push of `bytes` under `d`, in chunks of `chunk` bytes; returns the closing
/// response (of the PUT).
async fn chunked(reg: &TestRegistry, bytes: &[u8], d: &Digest, chunk: usize, how: Chunking) -> Result<Response> {
    let mut upload = reg.start_upload(REPO).await?;
    let chunk = chunk.min(bytes.len()).max(1);
    let mut next = 0;
    while next < bytes.len() {
        let end = (next + chunk).min(bytes.len());
        let last = end == bytes.len();
        if how.out_of_order {
            let bad = if next + chunk >= bytes.len() { 0 } else { next + chunk };
            let bad_end = (bad + chunk).min(bytes.len());
            let (method, target) = if how.put_last_chunk && bad_end == bytes.len() {
                (Method::PUT, with_digest(&upload, d))
            } else {
                (Method::PATCH, upload.clone())
            };
            let resp = reg.chunk(method, &target, &bytes[bad..bad_end], bad).send().await?;
            assert_eq!(
                resp.status(),
                StatusCode::RANGE_NOT_SATISFIABLE,
                "chunk {bad}-{bad_end} at {next}"
            );
            let resp = expect_status(reg.get(&upload).send().await?, &[StatusCode::NO_CONTENT]).await?;
            upload = location(&resp)?;
            if next > 0 {
                assert_eq!(header(&resp, "range"), Some(format!("0-{}", next - 1)));
            }
        }
        if how.put_last_chunk && last {
            return Ok(reg
                .chunk(Method::PUT, &with_digest(&upload, d), &bytes[next..end], next)
                .send()
                .await?);
        }
        let resp = reg
            .chunk(Method::PATCH, &upload, &bytes[next..end], next)
            .send()
            .await?;
        let resp = expect_status(resp, &[StatusCode::ACCEPTED]).await?;
        assert_eq!(header(&resp, "range"), Some(format!("0-{}", end - 1)));
        upload = location(&resp)?;
        next = end;
    }
    close(reg, &upload, d).await
}

/// A blob spanning three chunks of [`CHUNK`] (`minChunkSize*3-5`).
fn three_chunks(alg: Algorithm) -> Content {
    blob(alg, CHUNK * 3 - 5)
}

async fn blobs_get_missing_returns_404(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let missing = blob(alg, 512);
    let resp = reg.get(&blob_path(REPO, &missing.digest)).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await
}

async fn blobs_post_only_returns_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 512);
    let resp = post_only(&reg, &b.bytes, &b.digest, false).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

async fn blobs_post_put_returns_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 512);
    let resp = post_put(&reg, &b.bytes, &b.digest).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

async fn blobs_chunked_single_returns_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 512);
    let resp = chunked(&reg, &b.bytes, &b.digest, b.bytes.len(), Chunking::default()).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

async fn blobs_stream_returns_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 3000);
    let resp = stream(&reg, &b.bytes, &b.digest).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

/// POST `?mount=&from=`: 201 mounts it; 202 opens a session, which the suite completes with a
/// PUT (and records the mount as unsupported).
async fn mount(reg: &TestRegistry, b: &Content, from: Option<&str>) -> Result<StatusCode> {
    let mut url = format!("/v2/{REPO}/blobs/uploads/?mount={}", b.digest);
    if let Some(from) = from {
        url.push_str(&format!("&from={from}"));
    }
    let resp = reg.post(&url).send().await?;
    let resp = expect_status(resp, &[StatusCode::CREATED, StatusCode::ACCEPTED]).await?;
    let status = resp.status();
    let loc = location(&resp)?;
    if status == StatusCode::ACCEPTED {
        expect_created(reg, put_body(reg, &loc, &b.bytes, &b.digest).await?, b).await?;
    } else {
        assert_eq!(loc, blob_path(REPO, &b.digest));
        expect_created(reg, resp, b).await?;
    }
    Ok(status)
}

async fn blobs_mount_from_repository_returns_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 512);
    reg.push_content(REPO2, &b).await?;
    assert_eq!(mount(&reg, &b, Some(REPO2)).await?, StatusCode::CREATED);
    check_pushed(&reg, REPO, &b).await?;
    delete_blob(&reg, REPO2, &b.digest).await
}

async fn blobs_mount_anonymous_returns_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 512);
    reg.push_content(REPO2, &b).await?;
    assert_eq!(mount(&reg, &b, None).await?, StatusCode::CREATED);
    check_pushed(&reg, REPO, &b).await?;
    delete_blob(&reg, REPO2, &b.digest).await
}

/// A mount of a blob the source repository does not hold must not succeed: 202 and a
/// session, which a PUT completes.
async fn blobs_mount_missing_returns_202_then_put_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 512);
    assert_eq!(mount(&reg, &b, Some(REPO2)).await?, StatusCode::ACCEPTED);
    check_pushed(&reg, REPO, &b).await
}

async fn blobs_post_cancel_returns_204(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 512);
    let upload = reg.start_upload(REPO).await?;
    let resp = reg.chunk(Method::PATCH, &upload, &b.bytes, 0).send().await?;
    let upload = location(&expect_status(resp, &[StatusCode::ACCEPTED]).await?)?;
    let resp = reg.delete(&upload).header(CONTENT_LENGTH, 0).send().await?;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // The session is gone, and nothing was stored.
    let resp = reg.get(&upload).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await?;
    let resp = reg.get(&blob_path(REPO, &b.digest)).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await
}

async fn blobs_chunked_multi_returns_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = three_chunks(alg);
    let resp = chunked(&reg, &b.bytes, &b.digest, CHUNK, Chunking::default()).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

async fn blobs_chunked_multi_and_put_chunk_returns_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = three_chunks(alg);
    let how = Chunking {
        put_last_chunk: true,
        ..Default::default()
    };
    let resp = chunked(&reg, &b.bytes, &b.digest, CHUNK, how).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

async fn blobs_chunked_out_of_order_returns_416_then_204_status(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = three_chunks(alg);
    let how = Chunking {
        out_of_order: true,
        ..Default::default()
    };
    let resp = chunked(&reg, &b.bytes, &b.digest, CHUNK, how).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

async fn blobs_chunked_out_of_order_and_put_chunk_returns_416_then_201(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = three_chunks(alg);
    let how = Chunking {
        out_of_order: true,
        put_last_chunk: true,
    };
    let resp = chunked(&reg, &b.bytes, &b.digest, CHUNK, how).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

// --- range requests ---------------------------------------------------------------------------

/// A 2048-byte blob, ranged with `range`: 206 with exactly `want` (end exclusive), its length,
/// and `Content-Range: bytes a-b/2048` (or `/*`).
async fn range_206(alg: Algorithm, range: &str, want: std::ops::Range<usize>) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 2048);
    reg.push_content(REPO, &b).await?;
    let resp = reg.get(&blob_path(REPO, &b.digest)).header(RANGE, range).send().await?;
    ensure!(
        resp.status() != StatusCode::OK,
        "range {range} unsupported: the full blob came back"
    );
    let resp = expect_status(resp, &[StatusCode::PARTIAL_CONTENT]).await?;
    assert_eq!(header(&resp, "content-length"), Some(want.len().to_string()));
    let content_range = header(&resp, "content-range").unwrap_or_default();
    let span = format!("bytes {}-{}", want.start, want.end - 1);
    assert!(
        content_range == format!("{span}/2048") || content_range == format!("{span}/*"),
        "Content-Range {content_range:?} for {range}"
    );
    assert_eq!(resp.bytes().await?, b.bytes[want]);
    delete_blob(&reg, REPO, &b.digest).await
}

async fn range_416(alg: Algorithm, range: &str) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = blob(alg, 2048);
    reg.push_content(REPO, &b).await?;
    let resp = reg.get(&blob_path(REPO, &b.digest)).header(RANGE, range).send().await?;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
    Ok(())
}

async fn blobs_range_500_1499_returns_206(alg: Algorithm) -> Result<()> {
    range_206(alg, "bytes=500-1499", 500..1500).await
}

async fn blobs_range_500_to_end_returns_206(alg: Algorithm) -> Result<()> {
    range_206(alg, "bytes=500-", 500..2048).await
}

async fn blobs_range_last_500_returns_206(alg: Algorithm) -> Result<()> {
    range_206(alg, "bytes=-500", 1548..2048).await
}

async fn blobs_range_2000_5000_returns_206_clipped(alg: Algorithm) -> Result<()> {
    range_206(alg, "bytes=2000-5000", 2000..2048).await
}

async fn blobs_range_500_0_returns_416(alg: Algorithm) -> Result<()> {
    range_416(alg, "bytes=500-0").await
}

async fn blobs_range_5000_10000_returns_416(alg: Algorithm) -> Result<()> {
    range_416(alg, "bytes=5000-10000").await
}

// --- well-known blob contents -----------------------------------------------------------------

async fn blobs_empty_blob_round_trips(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = Content::new(OCTET_STREAM, Vec::new(), alg);
    let resp = post_put(&reg, &b.bytes, &b.digest).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

async fn blobs_empty_json_blob_round_trips(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let b = Content::new(media_types::OCI_EMPTY, b"{}".to_vec(), alg);
    let resp = post_put(&reg, &b.bytes, &b.digest).await?;
    expect_created(&reg, resp, &b).await?;
    check_pushed(&reg, REPO, &b).await
}

// --- bad digests: the body has "oh no" appended after its digest was taken --------------------

fn corrupted(alg: Algorithm) -> (Vec<u8>, Digest) {
    let b = three_chunks(alg);
    let mut bytes = b.bytes;
    bytes.extend_from_slice(b"oh no");
    (bytes, b.digest)
}

async fn blobs_bad_digest_post_only_returns_400(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let (bytes, d) = corrupted(alg);
    let resp = post_only(&reg, &bytes, &d, true).await?;
    expect_bad_digest(&reg, resp, &d).await
}

async fn blobs_bad_digest_post_put_returns_400(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let (bytes, d) = corrupted(alg);
    let resp = post_put(&reg, &bytes, &d).await?;
    expect_bad_digest(&reg, resp, &d).await
}

async fn blobs_bad_digest_chunked_returns_400(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let (bytes, d) = corrupted(alg);
    let resp = chunked(&reg, &bytes, &d, CHUNK, Chunking::default()).await?;
    expect_bad_digest(&reg, resp, &d).await
}

async fn blobs_bad_digest_chunked_and_put_chunk_returns_400(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let (bytes, d) = corrupted(alg);
    let how = Chunking {
        put_last_chunk: true,
        ..Default::default()
    };
    let resp = chunked(&reg, &bytes, &d, CHUNK, how).await?;
    expect_bad_digest(&reg, resp, &d).await
}

async fn blobs_bad_digest_stream_returns_400(alg: Algorithm) -> Result<()> {
    let reg = TestRegistry::start().await?;
    let (bytes, d) = corrupted(alg);
    let resp = stream(&reg, &bytes, &d).await?;
    expect_bad_digest(&reg, resp, &d).await
}

// --- ping and the empty repository ------------------------------------------------------------

#[tokio::test]
async fn ping_get_v2_returns_200_with_api_version() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg.get("/v2/").send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    Ok(())
}

/// Every answer, errors included, names the API version.
#[tokio::test]
async fn ping_api_version_header_is_on_every_response() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let missing = Digest::sha256(b"x");
    for resp in [
        reg.get(&blob_path(REPO, &missing)).send().await?,
        reg.get(&manifest_path(REPO, "nope")).send().await?,
        reg.post(&format!("/v2/{REPO}/blobs/uploads/")).send().await?,
        reg.get("/v2/_catalog").send().await?,
    ] {
        assert_eq!(
            header(&resp, "docker-distribution-api-version").as_deref(),
            Some("registry/2.0"),
            "{} {}",
            resp.status(),
            resp.url()
        );
    }
    Ok(())
}

/// 200 with no tags, or 404 (a repository not yet created).
#[tokio::test]
async fn empty_repository_tag_list_returns_200_or_404() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg.get(&format!("/v2/{REPO}/tags/list")).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK, StatusCode::NOT_FOUND]).await?;
    if resp.status() == StatusCode::OK {
        let body: serde_json::Value = resp.json().await?;
        assert!(body["tags"].as_array().is_none_or(Vec::is_empty), "{body}");
    } else {
        assert_eq!(error_codes(resp).await?[0], "NAME_UNKNOWN");
    }
    Ok(())
}

#[tokio::test]
async fn empty_repository_referrers_returns_200_empty_index() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let subject = Digest::sha256(&random_bytes(16));
    let resp = reg.get(&format!("/v2/{REPO}/referrers/{subject}")).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type").as_deref(), Some(media_types::OCI_INDEX));
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], media_types::OCI_INDEX);
    assert_eq!(body["manifests"], serde_json::json!([]));
    Ok(())
}

// --- TestManifestErrors -----------------------------------------------------------------------

#[tokio::test]
async fn manifest_errors_missing_by_digest_returns_404() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let missing = Digest::sha256(&random_bytes(1024));
    let resp = reg.get(&manifest_path(REPO, &missing)).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await
}

#[tokio::test]
async fn manifest_errors_missing_by_tag_returns_404() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let tag = format!("missing-{}", crate::fixtures::random_hex(10));
    let resp = reg.get(&manifest_path(REPO, &tag)).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await
}

/// PUT to `sha256:baddigeststring` (its blobs pushed) → 400.
#[tokio::test]
async fn manifest_errors_put_invalid_digest_format_returns_400() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = Image::random();
    for b in image.blobs() {
        reg.push_content(REPO, b).await?;
    }
    let resp = reg
        .put_manifest(REPO, "sha256:baddigeststring", &image.manifest)
        .await?;
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await
}

/// GET of `sha256:baddigeststring` → 404 or 400.
#[tokio::test]
async fn manifest_errors_get_invalid_digest_format_returns_400_or_404() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg.get(&manifest_path(REPO, "sha256:baddigeststring")).send().await?;
    let resp = expect_status(resp, &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND]).await?;
    let code = error_codes(resp).await?.remove(0);
    assert!(
        ["DIGEST_INVALID", "MANIFEST_UNKNOWN"].contains(&code.as_str()),
        "{code}"
    );
    Ok(())
}
