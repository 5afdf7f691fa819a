//! Bad input against a real `berth registry serve`: wrong digests, broken manifests, hostile
//! repository names and tags, out-of-order chunks, foreign or unknown upload sessions, bad
//! credentials, and bad start-up flags.
//!
//! Every refusal is checked twice: the error code and status the distribution spec names,
//! and that nothing changed. Before the bad request a good image is pushed to the same
//! repository and tag; afterwards the catalog, every tag's digest and the set of files under
//! the storage root (blobs, upload sessions, repository links) must be exactly as before, and
//! the rejected content must not be served.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use berth_oci::media_types;
use berth_testkit::RegistryProcess;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
/// Any single HTTP exchange gets this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

const REPO: &str = "app/web";
const TAG: &str = "latest";

/// bcrypt (cost 4) of `s3cret-pass`, as `htpasswd -Bbn -C 4 alice s3cret-pass` writes it.
const ALICE_BCRYPT: &str = "alice:$2y$04$0lWlnOQSGh3NFEwEl/V.UO/XDSMxP6z9e/rXMMMSS8EFuxS11cSIa";

/// Starts a registry and pushes the good image `app/web:latest` (two layers).
async fn registry_with_image() -> (Registry, Image) {
    let reg = Registry::start().expect("registry starts");
    let img = Image::new(1, &[40_000, 70_000]);
    let pushed = reg.push_image(REPO, TAG, &img).await;
    reg.outcome(pushed);
    (reg, img)
}

// ---------------------------------------------------------------------------------------
// Blobs with the wrong digest
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn monolithic_upload_with_wrong_digest_leaves_nothing() {
    let (reg, _img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let data = random_bytes(100, 300_000);
        let actual = sha256_digest(&data);
        let claimed = sha256_digest(b"other content");

        let r = reg
            .req(Method::POST, &format!("/v2/{REPO}/blobs/uploads/?digest={claimed}"))
            .body(data.clone())
            .send()
            .await?;
        expect_error(r, 400, &["DIGEST_INVALID"], "POST ?digest=<wrong> with the body").await?;

        let loc = reg.start_upload(REPO).await?;
        let r = reg
            .req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
            .body(data.clone())
            .send()
            .await?;
        expect_error(
            r,
            400,
            &["DIGEST_INVALID"],
            "POST, then PUT ?digest=<wrong> with the body",
        )
        .await?;
        let r = reg.req(Method::GET, &loc).send().await?;
        expect_error(r, 404, &["BLOB_UPLOAD_UNKNOWN"], "status of the refused upload").await?;

        let bad_forms = [
            "sha256:xyz".to_owned(),
            format!("sha256:{}", actual["sha256:".len()..].to_uppercase()),
            format!("md5:{}", &actual["sha256:".len()..][..32]),
            format!("sha256:{}", &actual["sha256:".len()..][..63]),
            actual["sha256:".len()..].to_owned(),
        ];
        for bad in &bad_forms {
            let r = reg
                .req(Method::POST, &format!("/v2/{REPO}/blobs/uploads/?digest={bad}"))
                .body(data.clone())
                .send()
                .await?;
            expect_error(r, 400, &["DIGEST_INVALID"], &format!("POST ?digest={bad}")).await?;
        }

        // A refused upload whose body is still on its way: the registry answers before reading
        // it and must not reset the connection under the client (which would lose the answer).
        let big = random_bytes(101, 8 << 20);
        for round in 0..3 {
            let r = reg
                .req(Method::POST, &format!("/v2/{REPO}/blobs/uploads/?digest=sha256:xyz"))
                .body(big.clone())
                .send()
                .await
                .with_context(|| format!("round {round}: POST ?digest=sha256:xyz with 8 MiB"))?;
            expect_error(r, 400, &["DIGEST_INVALID"], "POST ?digest=sha256:xyz with 8 MiB").await?;
        }

        reg.assert_blobs_absent(REPO, &[&actual, &claimed]).await?;
        ensure!(
            reg.upload_dirs()?.is_empty(),
            "upload dirs left: {:?}",
            reg.upload_dirs()?
        );
        reg.assert_unchanged(&before, "a monolithic upload with the wrong digest")
            .await
    }
    .await;
    reg.outcome(r);
}

#[tokio::test]
async fn chunked_and_streamed_uploads_with_wrong_digest_leave_nothing() {
    let (reg, _img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let data = random_bytes(200, 700_000);
        let actual = sha256_digest(&data);
        let claimed = sha256_digest(b"not these bytes");

        // Chunked: three PATCHes with Content-Range, then PUT ?digest=<wrong> without a body.
        let loc = reg.start_upload(REPO).await?;
        for (i, chunk) in data.chunks(250_000).enumerate() {
            let start = i * 250_000;
            let r = reg
                .req(Method::PATCH, &loc)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{start}-{}", start + chunk.len() - 1))
                .body(chunk.to_vec())
                .send()
                .await?;
            ensure!(r.status() == StatusCode::ACCEPTED, "PATCH chunk {i}: {}", r.status());
            ensure!(
                header(&r, "range") == format!("0-{}", start + chunk.len() - 1),
                "PATCH chunk {i}: Range {}",
                header(&r, "range")
            );
        }
        let r = reg
            .req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
            .send()
            .await?;
        expect_error(r, 400, &["DIGEST_INVALID"], "chunked upload, PUT ?digest=<wrong>").await?;
        let r = reg.req(Method::GET, &loc).send().await?;
        expect_error(r, 404, &["BLOB_UPLOAD_UNKNOWN"], "status of the refused chunked upload").await?;

        // Chunked, the last chunk in the final PUT.
        let loc = reg.start_upload(REPO).await?;
        let r = reg
            .req(Method::PATCH, &loc)
            .header("content-range", format!("0-{}", 400_000 - 1))
            .body(data[..400_000].to_vec())
            .send()
            .await?;
        ensure!(r.status() == StatusCode::ACCEPTED, "PATCH: {}", r.status());
        let r = reg
            .req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
            .header("content-range", format!("400000-{}", data.len() - 1))
            .body(data[400_000..].to_vec())
            .send()
            .await?;
        expect_error(r, 400, &["DIGEST_INVALID"], "last chunk in PUT ?digest=<wrong>").await?;

        // Streamed: one PATCH without Content-Range or Content-Length.
        let loc = reg.start_upload(REPO).await?;
        let parts: Vec<Result<Vec<u8>, std::io::Error>> = data.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
        let r = reg
            .req(Method::PATCH, &loc)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(parts)))
            .send()
            .await?;
        ensure!(r.status() == StatusCode::ACCEPTED, "streamed PATCH: {}", r.status());
        let r = reg
            .req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
            .send()
            .await?;
        expect_error(r, 400, &["DIGEST_INVALID"], "streamed upload, PUT ?digest=<wrong>").await?;

        reg.assert_blobs_absent(REPO, &[&actual, &claimed]).await?;
        ensure!(
            reg.upload_dirs()?.is_empty(),
            "upload dirs left: {:?}",
            reg.upload_dirs()?
        );
        reg.assert_unchanged(&before, "chunked uploads with the wrong digest")
            .await
    }
    .await;
    reg.outcome(r);
}

/// A monolithic upload whose body ends early cannot be resumed (the client never learnt the
/// session), so nothing of it may stay.
#[tokio::test]
async fn truncated_monolithic_upload_leaves_nothing() {
    let (reg, _img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let data = random_bytes(300, 200_000);
        let d = sha256_digest(&data);

        // Monolithic: Content-Length 200000, 100000 bytes sent, then the client hangs up.
        let resp = truncated(
            &reg,
            "POST",
            &format!("/v2/{REPO}/blobs/uploads/?digest={d}"),
            data.len(),
            &data[..100_000],
            &[],
        )
        .await?;
        ensure!(
            resp.as_ref().is_none_or(|r| r.status >= 400),
            "truncated monolithic upload answered {}",
            resp.as_ref().map_or(0, |r| r.status)
        );
        reg.assert_blobs_absent(REPO, &[&d]).await?;
        wait_for_no_uploads(&reg, "truncated monolithic POST").await?;
        reg.assert_unchanged(&before, "a truncated monolithic upload").await
    }
    .await;
    reg.outcome(r);
}

/// A PATCH whose body ends early leaves the session as it was before that PATCH (no partial
/// chunk), and the upload can go on.
#[tokio::test]
async fn truncated_patch_leaves_the_upload_as_it_was() {
    let (reg, _img) = registry_with_image().await;
    let r = async {
        let data = random_bytes(310, 200_000);
        let d = sha256_digest(&data);
        // A good first chunk, a truncated second one, then the rest properly.
        let loc = reg.start_upload(REPO).await?;
        let r = reg
            .req(Method::PATCH, &loc)
            .header("content-range", "0-49999")
            .body(data[..50_000].to_vec())
            .send()
            .await?;
        ensure!(r.status() == StatusCode::ACCEPTED, "first PATCH: {}", r.status());
        truncated(
            &reg,
            "PATCH",
            &loc,
            100_000,
            &data[50_000..90_000],
            &[("Content-Range", "50000-149999".to_owned())],
        )
        .await?;
        let status = reg.req(Method::GET, &loc).send().await?;
        ensure!(
            status.status() == StatusCode::NO_CONTENT && header(&status, "range") == "0-49999",
            "after a truncated PATCH the upload must stay at 50000 bytes: {} Range {}",
            status.status(),
            header(&status, "range")
        );
        let id = loc.rsplit('/').next().unwrap_or_default();
        let staged: Vec<String> = files_under(&reg.root.join("uploads").join(id))?
            .into_iter()
            .filter(|f| f != "session")
            .collect();
        ensure!(
            staged.len() == 1,
            "after a truncated PATCH the session holds {staged:?}, expected only the first chunk"
        );
        let r = reg
            .req(Method::PATCH, &loc)
            .header("content-range", format!("50000-{}", data.len() - 1))
            .body(data[50_000..].to_vec())
            .send()
            .await?;
        ensure!(r.status() == StatusCode::ACCEPTED, "resumed PATCH: {}", r.status());
        let r = reg
            .req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
            .send()
            .await?;
        ensure!(r.status() == StatusCode::CREATED, "PUT after resuming: {}", r.status());
        let got = reg.req(Method::GET, &format!("/v2/{REPO}/blobs/{d}")).send().await?;
        ensure!(got.status() == StatusCode::OK, "GET resumed blob: {}", got.status());
        ensure!(
            sha256_digest(&got.bytes().await?) == d,
            "resumed blob has other content"
        );
        ensure!(
            reg.upload_dirs()?.is_empty(),
            "upload dirs left: {:?}",
            reg.upload_dirs()?
        );
        Ok(())
    }
    .await;
    reg.outcome(r);
}

/// Sends a request declaring `declared` body bytes, sends `sent` of them, half-closes, and
/// returns the response if the registry sent one.
async fn truncated(
    reg: &Registry,
    method: &str,
    target: &str,
    declared: usize,
    sent: &[u8],
    headers: &[(&str, String)],
) -> Result<Option<RawResponse>> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(reg.addr()).await?;
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {declared}\r\n",
            reg.addr()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await?;
        s.write_all(sent).await?;
        s.shutdown().await?;
        let mut buf = Vec::new();
        // The registry may answer or just close; either is fine, a reset too.
        let _ = s.read_to_end(&mut buf).await;
        anyhow::Ok(if buf.is_empty() { None } else { Some(parse_raw(&buf)?) })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("truncated {method} {target}: no end within {REQUEST_TIMEOUT:?}"))?
}

/// Waits (2 s at most) until `<root>/uploads/` holds no session.
async fn wait_for_no_uploads(reg: &Registry, what: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let left = reg.upload_dirs()?;
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let files = files_under(&reg.root.join("uploads"))?;
            anyhow::bail!("{what} left upload sessions behind: {files:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_manifests_are_refused() {
    let (reg, img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let good: serde_json::Value = serde_json::from_slice(&img.manifest)?;
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut m = good.clone();
            f(&mut m);
            serde_json::to_vec(&m).expect("serializes")
        };
        let oci = media_types::OCI_MANIFEST;
        let cases: Vec<(&str, &str, Vec<u8>)> = vec![
            ("truncated JSON", oci, img.manifest[..img.manifest.len() / 2].to_vec()),
            ("not JSON", oci, b"FROM busybox\nRUN true\n".to_vec()),
            ("empty body", oci, Vec::new()),
            ("a JSON array", oci, b"[]".to_vec()),
            (
                "schemaVersion 1",
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
                serde_json::to_vec(&json!({
                    "schemaVersion": 1, "name": REPO, "tag": TAG, "architecture": "amd64",
                    "fsLayers": [{"blobSum": sha256_digest(&img.layers[0])}],
                    "history": [{"v1Compatibility": "{}"}],
                }))?,
            ),
            (
                "schemaVersion 1 sent as OCI",
                oci,
                with(&|m| m["schemaVersion"] = json!(1)),
            ),
            (
                "schemaVersion missing",
                oci,
                with(&|m| {
                    m.as_object_mut().map(|o| o.remove("schemaVersion"));
                }),
            ),
            (
                "schemaVersion a string",
                oci,
                with(&|m| m["schemaVersion"] = json!("2")),
            ),
            (
                "mediaType OCI, Content-Type Docker",
                media_types::DOCKER_MANIFEST,
                with(&|m| m["annotations"] = json!({"case": "content type mismatch"})),
            ),
            (
                "mediaType Docker, Content-Type OCI",
                oci,
                with(&|m| m["mediaType"] = json!(media_types::DOCKER_MANIFEST)),
            ),
            (
                "no mediaType, Content-Type an index",
                media_types::OCI_INDEX,
                with(&|m| {
                    m.as_object_mut().map(|o| o.remove("mediaType"));
                }),
            ),
            (
                "unsupported mediaType",
                oci,
                with(&|m| m["mediaType"] = json!("text/plain")),
            ),
            (
                "image without config",
                oci,
                with(&|m| {
                    m.as_object_mut().map(|o| o.remove("config"));
                }),
            ),
            (
                "image with a manifests list",
                oci,
                with(&|m| m["manifests"] = json!([])),
            ),
            (
                "malformed config digest",
                oci,
                with(&|m| m["config"]["digest"] = json!("sha256:nothex")),
            ),
            (
                "layer size negative",
                oci,
                with(&|m| m["layers"][0]["size"] = json!(-1)),
            ),
            ("layers not a list", oci, with(&|m| m["layers"] = json!({"a": 1}))),
        ];
        for (what, content_type, body) in &cases {
            for reference in [TAG, "fresh"] {
                let r = reg
                    .req(Method::PUT, &format!("/v2/{REPO}/manifests/{reference}"))
                    .header("content-type", *content_type)
                    .body(body.clone())
                    .send()
                    .await?;
                expect_error(r, 400, &["MANIFEST_INVALID"], &format!("{what} as {reference}")).await?;
            }
            let d = sha256_digest(body);
            let r = reg
                .req(Method::PUT, &format!("/v2/{REPO}/manifests/{d}"))
                .header("content-type", *content_type)
                .body(body.clone())
                .send()
                .await?;
            expect_error(r, 400, &["MANIFEST_INVALID"], &format!("{what} by digest")).await?;
            let r = reg
                .req(Method::GET, &format!("/v2/{REPO}/manifests/{d}"))
                .send()
                .await?;
            expect_error(r, 404, &["MANIFEST_UNKNOWN"], &format!("GET the refused {what}")).await?;
        }

        reg.assert_unchanged(&before, "malformed manifests").await?;

        // A good manifest PUT under a digest that is not its own.
        let other = Image::new(2, &[10]);
        for b in other.blobs() {
            reg.push_blob(REPO, b).await?;
        }
        // The new blobs are a deliberate change; the refusals below must change nothing.
        let before = reg.snapshot().await?;
        let wrong = sha256_digest(b"not the manifest");
        let r = reg.put_manifest(REPO, &wrong, &other.manifest).await?;
        expect_error(r, 400, &["DIGEST_INVALID"], "manifest PUT under another digest").await?;
        let r = reg
            .put_manifest(REPO, &format!("{wrong}?tag={TAG}"), &other.manifest)
            .await?;
        expect_error(
            r,
            400,
            &["DIGEST_INVALID"],
            "manifest PUT under another digest with ?tag=",
        )
        .await?;
        for d in [&wrong, &other.digest] {
            let r = reg
                .req(Method::GET, &format!("/v2/{REPO}/manifests/{d}"))
                .send()
                .await?;
            expect_error(r, 404, &["MANIFEST_UNKNOWN"], "GET the refused manifest").await?;
        }
        reg.assert_unchanged(&before, "manifests under another digest").await
    }
    .await;
    reg.outcome(r);
}

#[tokio::test]
async fn oversize_manifests_are_refused_with_413() {
    let (reg, img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let over = padded_manifest(&img, MAX_MANIFEST + 1)?;

        // Declared too large: refused from the Content-Length, before the body.
        let r = raw(
            reg.addr(),
            "PUT",
            &format!("/v2/{REPO}/manifests/{TAG}"),
            &[
                ("Content-Type", media_types::OCI_MANIFEST.to_owned()),
                ("Content-Length", over.len().to_string()),
            ],
            &[],
        )
        .await?;
        r.expect(
            413,
            &["SIZE_INVALID", "MANIFEST_INVALID"],
            "manifest with Content-Length > 4 MiB",
        )?;

        // Chunked transfer encoding, no length: refused once more than 4 MiB arrived.
        let chunked = chunked_put(&reg, &format!("/v2/{REPO}/manifests/{TAG}"), &over).await?;
        chunked.expect(413, &["SIZE_INVALID", "MANIFEST_INVALID"], "chunked 4 MiB + 1 manifest")?;

        let r = reg
            .req(Method::GET, &format!("/v2/{REPO}/manifests/{}", sha256_digest(&over)))
            .send()
            .await?;
        expect_error(r, 404, &["MANIFEST_UNKNOWN"], "GET the refused manifest").await?;
        reg.assert_unchanged(&before, "oversize manifests").await?;

        // Exactly the limit is accepted.
        let exact = padded_manifest(&img, MAX_MANIFEST)?;
        let r = reg.put_manifest(REPO, "exactly-4mib", &exact).await?;
        ensure!(
            r.status() == StatusCode::CREATED,
            "a manifest of exactly 4 MiB: {}",
            r.status()
        );
        ensure!(
            reg.manifest_digest(REPO, "exactly-4mib").await? == Some(sha256_digest(&exact)),
            "the 4 MiB manifest does not read back"
        );
        Ok(())
    }
    .await;
    reg.outcome(r);
}

/// A raw request: method, path, body, headers.
type RawRequest<'a> = (&'a str, String, &'a [u8], &'a [(&'a str, String)]);
/// A credentials case: label, basic user and password, raw Authorization header.
type CredentialCase<'a> = (&'a str, Option<(&'a str, &'a str)>, Option<&'a str>);

/// The registry's manifest size limit (`max-manifest-bytes`, default 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;

/// A valid manifest for `img`, padded with an annotation to exactly `len` bytes.
fn padded_manifest(img: &Image, len: usize) -> Result<Vec<u8>> {
    let body = |pad: &str| {
        serde_json::to_vec(&manifest_json(&img.config, &img.layers, json!({"pad": pad}))).expect("serializes")
    };
    let base = body("").len();
    let out = body(&"x".repeat(len - base));
    ensure!(out.len() == len, "padding went wrong: {} != {len}", out.len());
    Ok(out)
}

/// A client sends the whole oversize body with its Content-Length, as docker and containerd
/// do; it must read the 413, not lose it to a connection reset. Five tries, since a reset
/// depends on timing.
#[tokio::test]
async fn oversize_manifest_sent_whole_gets_413_not_a_reset() {
    let (reg, img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let over = padded_manifest(&img, MAX_MANIFEST + 1)?;
        for attempt in 1..=5 {
            match reg.put_manifest(REPO, TAG, &over).await {
                Ok(r) => {
                    expect_error(
                        r,
                        413,
                        &["SIZE_INVALID", "MANIFEST_INVALID"],
                        &format!("4 MiB + 1 manifest, attempt {attempt}"),
                    )
                    .await?
                }
                Err(e) => anyhow::bail!("4 MiB + 1 manifest, attempt {attempt}: no response, only {e:#}"),
            }
        }
        reg.assert_unchanged(&before, "oversize manifests sent whole").await
    }
    .await;
    reg.outcome(r);
}

/// PUT with `Transfer-Encoding: chunked`: the body in 64 KiB chunks, then the response.
async fn chunked_put(reg: &Registry, target: &str, body: &[u8]) -> Result<RawResponse> {
    let exchange = async {
        let s = tokio::net::TcpStream::connect(reg.addr()).await?;
        let (mut rd, mut wr) = s.into_split();
        let head = format!(
            "PUT {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            reg.addr(),
            media_types::OCI_MANIFEST
        );
        let body = body.to_vec();
        // Write while reading: the registry may answer (and stop reading) before the end.
        let writer = tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await?;
            for c in body.chunks(64 << 10) {
                wr.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await?;
                wr.write_all(c).await?;
                wr.write_all(b"\r\n").await?;
            }
            wr.write_all(b"0\r\n\r\n").await?;
            std::io::Result::Ok(wr)
        });
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A reset after the response is fine; before it, parse_raw complains.
                Err(_) => break,
            }
        }
        writer.abort();
        parse_raw(&buf)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("chunked PUT {target}: no response within {REQUEST_TIMEOUT:?}"))?
}

#[tokio::test]
async fn manifests_naming_missing_blobs_or_children_are_refused() {
    let (reg, img) = registry_with_image().await;
    let r = async {
        // A blob and a manifest that exist, but only in another repository.
        let elsewhere = Image::new(3, &[5_000]);
        reg.push_image("other/repo", "v1", &elsewhere).await?;
        let before = reg.snapshot().await?;

        let missing = random_bytes(400, 1234);
        let oci = media_types::OCI_MANIFEST;
        let image_cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "a layer never uploaded",
                serde_json::to_vec(&manifest_json(
                    &img.config,
                    &[img.layers[0].clone(), missing.clone()],
                    json!({}),
                ))?,
            ),
            (
                "a config never uploaded",
                serde_json::to_vec(&manifest_json(&missing, &img.layers, json!({})))?,
            ),
            (
                "a layer uploaded only to other/repo",
                serde_json::to_vec(&manifest_json(&img.config, &elsewhere.layers, json!({})))?,
            ),
        ];
        let index = |children: &[(&str, &[u8])]| {
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": media_types::OCI_INDEX,
                "manifests": children.iter().map(|(mt, b)| {
                    let mut d = descriptor(mt, b);
                    d["platform"] = json!({"architecture": "amd64", "os": "linux"});
                    d
                }).collect::<Vec<_>>(),
            }))
            .expect("serializes")
        };
        let never_pushed = serde_json::to_vec(&manifest_json(&img.config, &img.layers, json!({"x": "y"})))?;
        let index_cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "an index naming a manifest never pushed",
                index(&[(oci, &img.manifest), (oci, &never_pushed)]),
            ),
            (
                "an index naming a manifest of other/repo",
                index(&[(oci, &elsewhere.manifest)]),
            ),
        ];
        for (what, body, content_type) in image_cases
            .iter()
            .map(|(w, b)| (w, b, oci))
            .chain(index_cases.iter().map(|(w, b)| (w, b, media_types::OCI_INDEX)))
        {
            let r = reg
                .req(Method::PUT, &format!("/v2/{REPO}/manifests/{TAG}"))
                .header("content-type", content_type)
                .body(body.clone())
                .send()
                .await?;
            expect_error(r, 400, &["MANIFEST_BLOB_UNKNOWN"], what).await?;
            let r = reg
                .req(Method::GET, &format!("/v2/{REPO}/manifests/{}", sha256_digest(body)))
                .send()
                .await?;
            expect_error(r, 404, &["MANIFEST_UNKNOWN"], &format!("GET the refused {what}")).await?;
        }
        reg.assert_blobs_absent(REPO, &[&sha256_digest(&missing), &sha256_digest(&elsewhere.layers[0])])
            .await?;
        reg.assert_unchanged(&before, "manifests naming missing content").await
    }
    .await;
    reg.outcome(r);
}

// ---------------------------------------------------------------------------------------
// Names, tags, upload ids
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_repository_names_are_refused() {
    let (reg, img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let outside_before = files_under(reg.dir.path())?;
        let blob = random_bytes(500, 2_000);
        let d = sha256_digest(&blob);
        let long = "a".repeat(256);
        let names = [
            "UPPER/x",
            "app/Web",
            "a//b",
            "-a",
            "a-",
            "a/",
            "/a",
            "",
            "..",
            "../x",
            "../../../../tmp/escape",
            "a/../b",
            "app/web/..",
            ".",
            "a/./b",
            "%2e%2e/x",
            "a/%2E%2E/b",
            "app%2Fweb",
            "a%20b",
            "a..b",
            "a___b",
            "a:b",
            long.as_str(),
        ];
        for name in names {
            let requests: [(&str, String, &[u8]); 7] = [
                ("GET", format!("/v2/{name}/tags/list"), &[]),
                ("GET", format!("/v2/{name}/manifests/{TAG}"), &[]),
                ("PUT", format!("/v2/{name}/manifests/{TAG}"), &img.manifest),
                ("DELETE", format!("/v2/{name}/manifests/{TAG}"), &[]),
                ("POST", format!("/v2/{name}/blobs/uploads/?digest={d}"), &blob),
                ("POST", format!("/v2/{name}/blobs/uploads/"), &[]),
                ("GET", format!("/v2/{name}/blobs/{d}"), &[]),
            ];
            for (method, target, body) in requests {
                let r = raw(
                    reg.addr(),
                    method,
                    &target,
                    &[("Content-Type", media_types::OCI_MANIFEST.to_owned())],
                    body,
                )
                .await?;
                r.expect(400, &["NAME_INVALID"], &format!("{method} {target}"))?;
            }
        }
        reg.assert_blobs_absent(REPO, &[&d]).await?;
        ensure!(
            reg.upload_dirs()?.is_empty(),
            "upload dirs left: {:?}",
            reg.upload_dirs()?
        );
        let outside_after = files_under(reg.dir.path())?;
        let new: Vec<_> = outside_after
            .difference(&outside_before)
            .filter(|f| !f.starts_with("root/") || f.contains(".."))
            .collect();
        ensure!(new.is_empty(), "files appeared outside the storage layout: {new:?}");
        reg.assert_unchanged(&before, "invalid repository names").await
    }
    .await;
    reg.outcome(r);
}

#[tokio::test]
async fn invalid_tags_are_refused() {
    let (reg, _img) = registry_with_image().await;
    let r = async {
        // A second image whose blobs are in the repository, so only the tag is wrong.
        let second = Image::new(4, &[3_000]);
        for b in second.blobs() {
            reg.push_blob(REPO, b).await?;
        }
        let before = reg.snapshot().await?;
        let long = "a".repeat(129);
        let tags = [
            "-bad",
            ".bad",
            ".",
            "%2E",
            "%2E%2E",
            "..%2F..%2Fescape",
            "..%2F_tags%2Flatest",
            "x%2Fy",
            "a%20b",
            "a%00b",
            "%E2%9C%93",
            "a+b",
            long.as_str(),
        ];
        for tag in tags {
            let target = format!("/v2/{REPO}/manifests/{tag}");
            let r = raw(
                reg.addr(),
                "PUT",
                &target,
                &[("Content-Type", media_types::OCI_MANIFEST.to_owned())],
                &second.manifest,
            )
            .await?;
            r.expect(
                400,
                &["TAG_INVALID", "MANIFEST_INVALID", "NAME_INVALID"],
                &format!("PUT {target}"),
            )?;
        }
        // A colon makes a reference a digest.
        let r = raw(
            reg.addr(),
            "PUT",
            &format!("/v2/{REPO}/manifests/v1:2"),
            &[("Content-Type", media_types::OCI_MANIFEST.to_owned())],
            &second.manifest,
        )
        .await?;
        r.expect(
            400,
            &["DIGEST_INVALID", "TAG_INVALID", "MANIFEST_INVALID"],
            "PUT …/manifests/v1:2",
        )?;
        // Bad tags in ?tag= on a PUT by digest.
        for tag in ["-bad", "a%20b", "x%2Fy", "%2E%2E", long.as_str()] {
            let target = format!("/v2/{REPO}/manifests/{}?tag=ok&tag={tag}", second.digest);
            let r = raw(
                reg.addr(),
                "PUT",
                &target,
                &[("Content-Type", media_types::OCI_MANIFEST.to_owned())],
                &second.manifest,
            )
            .await?;
            r.expect(400, &["TAG_INVALID", "MANIFEST_INVALID"], &format!("PUT {target}"))?;
        }
        let r = reg
            .req(Method::GET, &format!("/v2/{REPO}/manifests/{}", second.digest))
            .send()
            .await?;
        expect_error(r, 404, &["MANIFEST_UNKNOWN"], "GET the manifest refused for its tag").await?;
        reg.assert_unchanged(&before, "invalid tags").await?;

        // The edges of the tag grammar are accepted.
        for tag in ["a".repeat(128), "_under".to_owned(), "V1.2-rc_3".to_owned()] {
            let r = reg.put_manifest(REPO, &tag, &second.manifest).await?;
            ensure!(r.status() == StatusCode::CREATED, "valid tag {tag}: {}", r.status());
            ensure!(
                reg.manifest_digest(REPO, &tag).await? == Some(second.digest.clone()),
                "valid tag {tag} does not resolve"
            );
        }
        Ok(())
    }
    .await;
    reg.outcome(r);
}

#[tokio::test]
async fn out_of_order_and_overlapping_chunks_are_refused_with_416() {
    let (reg, _img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let data = random_bytes(600, 4_000);
        let d = sha256_digest(&data);
        let loc = reg.start_upload(REPO).await?;
        let patch = |range: String, bytes: &[u8]| {
            reg.req(Method::PATCH, &loc)
                .header("content-type", "application/octet-stream")
                .header("content-range", range)
                .body(bytes.to_vec())
                .send()
        };
        let r = patch("0-999".into(), &data[..1000]).await?;
        ensure!(r.status() == StatusCode::ACCEPTED, "first chunk: {}", r.status());

        let bad: [(&str, String, &[u8]); 7] = [
            ("a gap", "2000-2999".into(), &data[2000..3000]),
            ("an overlap", "500-1499".into(), &data[500..1500]),
            ("a repeat of the first chunk", "0-999".into(), &data[..1000]),
            (
                "a range that ends before it starts",
                "1000-998".into(),
                &data[1000..1001],
            ),
            ("a range longer than the body", "1000-2999".into(), &data[1000..2000]),
            ("a garbage range", "bytes=abc".into(), &data[1000..2000]),
            ("a gap of one byte", "1001-1999".into(), &data[1001..2000]),
        ];
        for (what, range, bytes) in bad {
            let r = patch(range.clone(), bytes).await?;
            expect_error(
                r,
                416,
                &["BLOB_UPLOAD_INVALID"],
                &format!("PATCH with {what} ({range})"),
            )
            .await?;
            let status = reg.req(Method::GET, &loc).send().await?;
            ensure!(
                status.status() == StatusCode::NO_CONTENT && header(&status, "range") == "0-999",
                "after {what}: status {} Range {}",
                status.status(),
                header(&status, "range")
            );
        }
        // A final PUT with an out-of-order range is refused the same way.
        let r = reg
            .req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
            .header("content-range", "3000-3999")
            .body(data[3000..].to_vec())
            .send()
            .await?;
        expect_error(r, 416, &["BLOB_UPLOAD_INVALID"], "final PUT with a gap").await?;

        // The refused chunks left no trace: the upload completes with the right bytes.
        let r = patch("1000-2999".into(), &data[1000..3000]).await?;
        ensure!(r.status() == StatusCode::ACCEPTED, "in-order chunk: {}", r.status());
        let r = reg
            .req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
            .header("content-range", "3000-3999")
            .body(data[3000..].to_vec())
            .send()
            .await?;
        ensure!(r.status() == StatusCode::CREATED, "final PUT: {}", r.status());
        let got = reg.req(Method::GET, &format!("/v2/{REPO}/blobs/{d}")).send().await?;
        ensure!(got.status() == StatusCode::OK, "GET blob: {}", got.status());
        ensure!(
            sha256_digest(&got.bytes().await?) == d,
            "the blob has other bytes than were sent in order"
        );
        ensure!(
            reg.upload_dirs()?.is_empty(),
            "upload dirs left: {:?}",
            reg.upload_dirs()?
        );
        let after = reg.snapshot().await?;
        ensure!(
            after.catalog == before.catalog && after.tags == before.tags,
            "catalog or tags changed"
        );
        Ok(())
    }
    .await;
    reg.outcome(r);
}

#[tokio::test]
async fn unknown_upload_ids_are_refused_with_404() {
    let (reg, _img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let data = random_bytes(700, 1_000);
        let d = sha256_digest(&data);
        let ids = [
            "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
            "not-a-uuid",
            "..%2F..%2Fblobs",
            "%2E%2E",
            "..%2Fsession",
            "00000000-0000-0000-0000-000000000000",
        ];
        for id in ids {
            let loc = format!("/v2/{REPO}/blobs/uploads/{id}");
            let requests: [RawRequest; 4] = [
                ("GET", loc.clone(), &[], &[]),
                (
                    "PATCH",
                    loc.clone(),
                    &data,
                    &[("Content-Range", format!("0-{}", data.len() - 1))],
                ),
                ("PUT", format!("{loc}?digest={d}"), &data, &[]),
                ("DELETE", loc.clone(), &[], &[]),
            ];
            for (method, target, body, headers) in requests {
                let r = raw(reg.addr(), method, &target, headers, body).await?;
                r.expect(404, &["BLOB_UPLOAD_UNKNOWN"], &format!("{method} {target}"))?;
            }
        }
        // A finished upload's id is unknown from then on.
        let loc = reg.start_upload(REPO).await?;
        let r = reg
            .req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
            .body(data.clone())
            .send()
            .await?;
        ensure!(r.status() == StatusCode::CREATED, "monolithic PUT: {}", r.status());
        let r = reg.req(Method::PATCH, &loc).body(data.clone()).send().await?;
        expect_error(r, 404, &["BLOB_UPLOAD_UNKNOWN"], "PATCH to a finished upload").await?;
        // So is a cancelled one's.
        let loc = reg.start_upload(REPO).await?;
        let r = reg.req(Method::DELETE, &loc).send().await?;
        ensure!(r.status() == StatusCode::NO_CONTENT, "DELETE upload: {}", r.status());
        let r = reg.req(Method::PATCH, &loc).body(data.clone()).send().await?;
        expect_error(r, 404, &["BLOB_UPLOAD_UNKNOWN"], "PATCH to a cancelled upload").await?;

        ensure!(
            reg.upload_dirs()?.is_empty(),
            "upload dirs left: {:?}",
            reg.upload_dirs()?
        );
        let after = reg.snapshot().await?;
        ensure!(
            after.catalog == before.catalog && after.tags == before.tags,
            "catalog or tags changed"
        );
        Ok(())
    }
    .await;
    reg.outcome(r);
}

#[tokio::test]
async fn upload_ids_of_another_repository_are_refused() {
    let (reg, _img) = registry_with_image().await;
    let r = async {
        let before = reg.snapshot().await?;
        let data = random_bytes(800, 30_000);
        let d = sha256_digest(&data);
        let loc = reg.start_upload(REPO).await?;
        let r = reg
            .req(Method::PATCH, &loc)
            .header("content-range", "0-9999")
            .body(data[..10_000].to_vec())
            .send()
            .await?;
        ensure!(r.status() == StatusCode::ACCEPTED, "PATCH: {}", r.status());
        let id = loc.rsplit('/').next().context("upload id")?.to_owned();

        for other in ["other/repo", "app", "app/web/x"] {
            let foreign = format!("/v2/{other}/blobs/uploads/{id}");
            let r = reg.req(Method::GET, &foreign).send().await?;
            expect_error(r, 404, &["BLOB_UPLOAD_UNKNOWN"], &format!("GET {foreign}")).await?;
            let r = reg
                .req(Method::PATCH, &foreign)
                .header("content-range", "10000-19999")
                .body(data[10_000..20_000].to_vec())
                .send()
                .await?;
            expect_error(r, 404, &["BLOB_UPLOAD_UNKNOWN"], &format!("PATCH {foreign}")).await?;
            let r = reg
                .req(Method::PUT, &with_query(&foreign, &format!("digest={d}")))
                .header("content-range", format!("10000-{}", data.len() - 1))
                .body(data[10_000..].to_vec())
                .send()
                .await?;
            expect_error(r, 404, &["BLOB_UPLOAD_UNKNOWN"], &format!("PUT {foreign}")).await?;
            let r = reg.req(Method::DELETE, &foreign).send().await?;
            expect_error(r, 404, &["BLOB_UPLOAD_UNKNOWN"], &format!("DELETE {foreign}")).await?;
        }
        // The session is untouched and completes in its own repository only.
        let status = reg.req(Method::GET, &loc).send().await?;
        ensure!(
            status.status() == StatusCode::NO_CONTENT && header(&status, "range") == "0-9999",
            "own session after foreign attempts: {} Range {}",
            status.status(),
            header(&status, "range")
        );
        let r = reg
            .req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
            .header("content-range", format!("10000-{}", data.len() - 1))
            .body(data[10_000..].to_vec())
            .send()
            .await?;
        ensure!(r.status() == StatusCode::CREATED, "own PUT: {}", r.status());
        let r = reg.req(Method::GET, &format!("/v2/{REPO}/blobs/{d}")).send().await?;
        ensure!(
            r.status() == StatusCode::OK,
            "blob in its own repository: {}",
            r.status()
        );
        ensure!(sha256_digest(&r.bytes().await?) == d, "blob content");
        for other in ["other/repo", "app", "app/web/x"] {
            reg.assert_blobs_absent(other, &[&d]).await?;
        }
        let after = reg.snapshot().await?;
        ensure!(
            after.catalog == before.catalog && after.tags == before.tags,
            "catalog or tags changed: {:?} -> {:?}",
            before.catalog,
            after.catalog
        );
        Ok(())
    }
    .await;
    reg.outcome(r);
}

// ---------------------------------------------------------------------------------------
// Credentials and start-up flags
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused_with_401() {
    let mut reg = Registry::start_with(|dir| {
        let path = dir.join("htpasswd");
        std::fs::write(&path, format!("# test users\n{ALICE_BCRYPT}\n"))?;
        Ok(vec!["--htpasswd".to_owned(), path.display().to_string()])
    })
    .expect("registry starts");
    reg.auth = Some(("alice".to_owned(), "s3cret-pass".to_owned()));
    let r = async {
        let img = Image::new(5, &[20_000]);
        reg.push_image(REPO, TAG, &img).await?;
        let before = reg.snapshot().await?;

        let other = Image::new(6, &[20_000]);
        let blob = random_bytes(900, 5_000);
        let d = sha256_digest(&blob);
        // (what, user and password for basic auth, or a raw Authorization header)
        let credentials: [CredentialCase; 7] = [
            ("no credentials", None, None),
            ("a wrong password", Some(("alice", "wrong")), None),
            ("an unknown user", Some(("mallory", "s3cret-pass")), None),
            ("an empty password", Some(("alice", "")), None),
            // base64("alice"): no colon, no password.
            ("no colon", None, Some("Basic YWxpY2U=")),
            ("broken base64", None, Some("Basic !!!not-base64!!!")),
            ("a bearer token", None, Some("Bearer s3cret-pass")),
        ];
        let requests: [(Method, String, Vec<u8>); 10] = [
            (Method::GET, "/v2/".into(), vec![]),
            (Method::GET, "/v2/_catalog".into(), vec![]),
            (Method::GET, format!("/v2/{REPO}/tags/list"), vec![]),
            (Method::GET, format!("/v2/{REPO}/manifests/{TAG}"), vec![]),
            (
                Method::GET,
                format!("/v2/{REPO}/blobs/{}", sha256_digest(&img.layers[0])),
                vec![],
            ),
            (
                Method::PUT,
                format!("/v2/{REPO}/manifests/{TAG}"),
                other.manifest.clone(),
            ),
            (
                Method::POST,
                format!("/v2/{REPO}/blobs/uploads/?digest={d}"),
                blob.clone(),
            ),
            (Method::POST, format!("/v2/{REPO}/blobs/uploads/"), vec![]),
            (Method::DELETE, format!("/v2/{REPO}/manifests/{TAG}"), vec![]),
            (Method::GET, "/v1/search?q=app".into(), vec![]),
        ];
        for (what, basic, raw_header) in &credentials {
            for (method, path, body) in &requests {
                let mut rq = reg
                    .http
                    .request(method.clone(), reg.url(path))
                    .header("content-type", media_types::OCI_MANIFEST)
                    .body(body.clone());
                if let Some((user, password)) = basic {
                    rq = rq.basic_auth(user, Some(password));
                }
                if let Some(h) = raw_header {
                    rq = rq.header("authorization", *h);
                }
                let r = rq.send().await?;
                let challenge = header(&r, "www-authenticate");
                let label = format!("{method} {path} with {what}");
                expect_error(r, 401, &["UNAUTHORIZED"], &label).await?;
                ensure!(
                    challenge == "Basic realm=\"Berth Registry\"",
                    "{label}: WWW-Authenticate {challenge:?}"
                );
            }
        }
        reg.assert_blobs_absent(REPO, &[&d]).await?;
        ensure!(
            reg.upload_dirs()?.is_empty(),
            "upload dirs left: {:?}",
            reg.upload_dirs()?
        );
        reg.assert_unchanged(&before, "requests with bad credentials").await?;
        // The right password still works after all the wrong ones.
        ensure!(
            reg.manifest_digest(REPO, TAG).await? == Some(img.digest.clone()),
            "good credentials after bad ones"
        );
        Ok(())
    }
    .await;
    reg.outcome(r);
}

/// Runs `berth registry serve` expecting it to refuse to start; returns what it printed.
fn refused_start(args: &[&str]) -> String {
    match berth_testkit::RegistryProcess::start(std::path::Path::new(BERTH), args) {
        Ok(mut p) => {
            p.kill9();
            panic!("the registry started with {args:?}; its log:\n{}", p.log());
        }
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn htpasswd_without_bcrypt_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let cases = [
        (
            "apr1 (MD5) on line 3",
            format!("# users\n{ALICE_BCRYPT}\nbob:$apr1$EEgW743q$wA/8L.9XwYwQs9Y9JH7JL/\n"),
            "line 3",
        ),
        ("SHA1", "carol:{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM=\n".to_owned(), "line 1"),
        ("plain text", format!("{ALICE_BCRYPT}\n\ndave:plaintext\n"), "line 3"),
        ("crypt(3)", "erin:rl0uE9TcUbDhc\n".to_owned(), "line 1"),
        ("no colon", "frank\n".to_owned(), "line 1"),
        (
            "empty user",
            ":$2y$04$0lWlnOQSGh3NFEwEl/V.UO/XDSMxP6z9e/rXMMMSS8EFuxS11cSIa\n".to_owned(),
            "line 1",
        ),
    ];
    for (i, (what, text, line)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("htpasswd-{i}"));
        std::fs::write(&path, text).expect("write htpasswd");
        let p = path.display().to_string();
        let out = refused_start(&["--root", root.to_str().expect("utf-8"), "--htpasswd", &p]);
        assert!(
            out.contains(&p) && out.contains(line),
            "{what}: the refusal should name {p} and {line}:\n{out}"
        );
        assert!(!out.contains("registry listening"), "{what}: it listened:\n{out}");
        if i < 4 {
            assert!(
                out.contains("bcrypt"),
                "{what}: the refusal should say bcrypt is needed:\n{out}"
            );
        }
    }
    // A file with no users at all, and one that does not exist.
    let empty = dir.path().join("htpasswd-empty");
    std::fs::write(&empty, "# nobody yet\n").expect("write htpasswd");
    let out = refused_start(&[
        "--root",
        root.to_str().expect("utf-8"),
        "--htpasswd",
        empty.to_str().expect("utf-8"),
    ]);
    assert!(
        out.contains(empty.to_str().expect("utf-8")) && out.contains("no users"),
        "{out}"
    );
    let missing = dir.path().join("no-such-htpasswd");
    let out = refused_start(&[
        "--root",
        root.to_str().expect("utf-8"),
        "--htpasswd",
        missing.to_str().expect("utf-8"),
    ]);
    assert!(out.contains(missing.to_str().expect("utf-8")), "{out}");
    // Nothing was served from the root meanwhile; at most the directory was created.
    let stored: Vec<_> = files_under(&root)
        .expect("list root")
        .into_iter()
        .filter(|f| f != "index.redb")
        .collect();
    assert!(stored.is_empty(), "files appeared in the root: {stored:?}");
}

#[tokio::test]
async fn tls_flags_must_come_as_a_matching_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let root = root.to_str().expect("utf-8");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let a = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert a");
    let b = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert b");
    let cert_a = write("a.crt", &a.cert.pem());
    let key_a = write("a.key", &a.key_pair.serialize_pem());
    let key_b = write("b.key", &b.key_pair.serialize_pem());
    let garbage = write("garbage.crt", "this is not a certificate\n");

    let out = refused_start(&["--root", root, "--tls-cert", &cert_a]);
    assert!(out.contains("--tls-key"), "cert without key:\n{out}");
    let out = refused_start(&["--root", root, "--tls-key", &key_a]);
    assert!(out.contains("--tls-cert"), "key without cert:\n{out}");
    let out = refused_start(&["--root", root, "--tls-cert", &cert_a, "--tls-key", &key_b]);
    assert!(
        out.contains("do not fit") || out.contains("match"),
        "cert and key of different pairs:\n{out}"
    );
    let out = refused_start(&["--root", root, "--tls-cert", &garbage, "--tls-key", &key_a]);
    assert!(
        out.contains(&garbage),
        "garbage certificate, the message should name it:\n{out}"
    );
    let out = refused_start(&["--root", root, "--tls-cert", &cert_a, "--tls-key", &cert_a]);
    assert!(out.contains("private key"), "certificate given as the key:\n{out}");
    let missing = dir.path().join("missing.key").display().to_string();
    let out = refused_start(&["--root", root, "--tls-cert", &cert_a, "--tls-key", &missing]);
    assert!(
        out.contains(&missing),
        "missing key file, the message should name it:\n{out}"
    );

    // The matching pair serves HTTPS (so the refusals above are about the flags).
    let mut p = berth_testkit::RegistryProcess::start(
        std::path::Path::new(BERTH),
        &["--root", root, "--tls-cert", &cert_a, "--tls-key", &key_a],
    )
    .expect("registry with a matching pair starts");
    assert!(p.url().starts_with("https://"), "{}", p.url());
    let r = http_client().get(format!("{}/v2/", p.url())).send().await;
    let status = r.map(|r| r.status());
    p.stop();
    assert_eq!(status.ok(), Some(StatusCode::OK), "GET /v2/ over TLS");
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic pseudo-random bytes (splitmix64), distinct for every seed.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0xA24B_AED4_963E_E407);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image to push: a config, its layers, and the manifest naming them.
struct Image {
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
    manifest: Vec<u8>,
    digest: String,
}

impl Image {
    /// An OCI image with random layers of the given sizes, distinct for every seed.
    fn new(seed: u64, layer_sizes: &[usize]) -> Image {
        let layers: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| random_bytes(seed * 1000 + i as u64, n))
            .collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"seed": seed.to_string()}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256_digest(l)).collect::<Vec<_>>()},
        }))
        .expect("serializes");
        let manifest = serde_json::to_vec(&manifest_json(&config, &layers, json!({}))).expect("serializes");
        let digest = sha256_digest(&manifest);
        Image {
            config,
            layers,
            manifest,
            digest,
        }
    }

    fn blobs(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.config.as_slice()).chain(self.layers.iter().map(Vec::as_slice))
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len()})
}

/// An OCI image manifest for `config` and `layers`, with `annotations`.
fn manifest_json(config: &[u8], layers: &[Vec<u8>], annotations: Value) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": descriptor(media_types::OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(media_types::OCI_LAYER_TAR, l)).collect::<Vec<_>>(),
        "annotations": annotations,
    })
}

/// What the registry shows and stores: catalog, every tag's digest, every file under the
/// root (blobs, upload sessions, repository links) except the index.
#[derive(Debug, PartialEq)]
struct Snapshot {
    catalog: Vec<String>,
    tags: BTreeMap<String, BTreeMap<String, String>>,
    files: BTreeSet<String>,
}

impl Snapshot {
    /// What changed from `self` to `after`, for a failure message.
    fn diff(&self, after: &Snapshot) -> String {
        let mut out = Vec::new();
        if self.catalog != after.catalog {
            out.push(format!("catalog {:?} -> {:?}", self.catalog, after.catalog));
        }
        if self.tags != after.tags {
            out.push(format!("tags {:?} -> {:?}", self.tags, after.tags));
        }
        let added: Vec<_> = after.files.difference(&self.files).collect();
        let removed: Vec<_> = self.files.difference(&after.files).collect();
        if !added.is_empty() {
            out.push(format!("files added: {added:?}"));
        }
        if !removed.is_empty() {
            out.push(format!("files removed: {removed:?}"));
        }
        out.join("; ")
    }
}

/// Every regular file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("failed to list {}", d.display())),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under dir");
                out.insert(rel.display().to_string());
            }
        }
    }
    Ok(out)
}

/// A raw HTTP/1.1 response.
struct RawResponse {
    status: u16,
    body: String,
}

impl RawResponse {
    fn expect(&self, status: u16, codes: &[&str], what: &str) -> Result<()> {
        ensure!(
            self.status == status && codes.iter().any(|c| self.body.contains(&format!("\"code\":\"{c}\""))),
            "{what}: expected {status} {codes:?}, got {}: {}",
            self.status,
            self.body
        );
        Ok(())
    }
}

/// Sends one request exactly as written (no normalisation of `..` or `%2e`), with
/// `Connection: close`, and reads the whole response.
async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<RawResponse> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        parse_raw(&buf)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} {target}: no response within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("{method} {target} failed"))
}

fn parse_raw(buf: &[u8]) -> Result<RawResponse> {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed response: {text:?}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok(RawResponse {
        status,
        body: body.to_owned(),
    })
}

/// The error codes in a registry error body.
fn error_codes(body: &str) -> Vec<String> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["errors"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["code"].as_str().map(str::to_owned)).collect())
        })
        .unwrap_or_default()
}

/// Asserts that `resp` is the error `status` with one of `codes`.
async fn expect_error(resp: reqwest::Response, status: u16, codes: &[&str], what: &str) -> Result<()> {
    let got = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let found = error_codes(&body);
    ensure!(
        got.as_u16() == status && found.iter().any(|c| codes.contains(&c.as_str())),
        "{what}: expected {status} {codes:?}, got {got}: {body}"
    );
    Ok(())
}

/// A `berth registry serve` on a temporary root, and a client for it.
struct Registry {
    process: RegistryProcess,
    http: reqwest::Client,
    root: PathBuf,
    /// Credentials sent by [`Registry::req`].
    auth: Option<(String, String)>,
    /// Dropped last, after the process is killed.
    dir: tempfile::TempDir,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .danger_accept_invalid_certs(true)
        .build()
        .expect("HTTP client")
}

impl Registry {
    /// Starts a registry on `<tempdir>/root` with online GC off; `setup` may write files
    /// (an htpasswd) into the temporary directory first, and returns extra flags.
    fn start_with(setup: impl FnOnce(&Path) -> Result<Vec<String>>) -> Result<Registry> {
        let dir = tempfile::tempdir().context("failed to make a temporary directory")?;
        let root = dir.path().join("root");
        let extra = setup(dir.path())?;
        let mut args = vec![
            "--root".to_owned(),
            root.display().to_string(),
            "--gc-interval-secs".to_owned(),
            "0".to_owned(),
        ];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = RegistryProcess::start(Path::new(BERTH), &args)?;
        Ok(Registry {
            process,
            http: http_client(),
            root,
            auth: None,
            dir,
        })
    }

    fn start() -> Result<Registry> {
        Registry::start_with(|_| Ok(vec![]))
    }

    fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.url())
    }

    /// A request with this registry's credentials, if any.
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Panics with the error and the end of the registry's log.
    fn outcome(&self, r: Result<()>) {
        if let Err(e) = r {
            let log = self.process.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("{e:?}\n--- registry log (last 40 lines) ---\n{}", tail.join("\n"));
        }
    }

    /// `POST …/blobs/uploads/`; returns the session's location path.
    async fn start_upload(&self, repo: &str) -> Result<String> {
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await?;
        ensure!(
            r.status() == StatusCode::ACCEPTED,
            "POST upload in {repo}: {}",
            r.status()
        );
        location(&r)
    }

    /// A monolithic upload (`POST ?digest=` with the body); returns the digest.
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Result<String> {
        let d = sha256_digest(bytes);
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(bytes.to_vec())
            .send()
            .await?;
        ensure!(
            r.status() == StatusCode::CREATED,
            "monolithic upload of {d} to {repo}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        Ok(d)
    }

    async fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> Result<reqwest::Response> {
        Ok(self
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_types::OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await?)
    }

    /// Pushes every blob of `img` and its manifest under `tag`.
    async fn push_image(&self, repo: &str, tag: &str, img: &Image) -> Result<()> {
        for b in img.blobs() {
            self.push_blob(repo, b).await?;
        }
        let r = self.put_manifest(repo, tag, &img.manifest).await?;
        ensure!(
            r.status() == StatusCode::CREATED,
            "manifest PUT {repo}:{tag}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// The manifest digest `repo:reference` resolves to, or `None` on 404.
    async fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<String>> {
        let r = self
            .req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", media_types::OCI_MANIFEST)
            .send()
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ensure!(
            r.status() == StatusCode::OK,
            "GET manifest {repo}:{reference}: {}",
            r.status()
        );
        let body = r.bytes().await?;
        Ok(Some(sha256_digest(&body)))
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        let r = self.req(Method::GET, path).send().await?;
        ensure!(r.status() == StatusCode::OK, "GET {path}: {}", r.status());
        Ok(r.json().await?)
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        let catalog: Vec<String> =
            serde_json::from_value(self.get_json("/v2/_catalog").await?["repositories"].clone())?;
        let mut tags = BTreeMap::new();
        for repo in &catalog {
            let list: Vec<String> =
                serde_json::from_value(self.get_json(&format!("/v2/{repo}/tags/list")).await?["tags"].clone())
                    .unwrap_or_default();
            let mut digests = BTreeMap::new();
            for t in list {
                let d = self
                    .manifest_digest(repo, &t)
                    .await?
                    .with_context(|| format!("listed tag {repo}:{t} does not resolve"))?;
                digests.insert(t, d);
            }
            tags.insert(repo.clone(), digests);
        }
        let mut files = files_under(&self.root)?;
        files.remove("index.redb");
        Ok(Snapshot { catalog, tags, files })
    }

    /// Fails if anything visible or stored differs from `before`.
    async fn assert_unchanged(&self, before: &Snapshot, what: &str) -> Result<()> {
        let after = self.snapshot().await?;
        ensure!(*before == after, "{what} changed the registry: {}", before.diff(&after));
        Ok(())
    }

    /// Upload session directories under `<root>/uploads/`.
    fn upload_dirs(&self) -> Result<Vec<String>> {
        match std::fs::read_dir(self.root.join("uploads")) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }

    /// Asserts that neither digest is served from `repo`, by GET and HEAD.
    async fn assert_blobs_absent(&self, repo: &str, digests: &[&str]) -> Result<()> {
        for d in digests {
            let r = self.req(Method::GET, &format!("/v2/{repo}/blobs/{d}")).send().await?;
            expect_error(r, 404, &["BLOB_UNKNOWN"], &format!("GET blob {d}")).await?;
            let r = self.req(Method::HEAD, &format!("/v2/{repo}/blobs/{d}")).send().await?;
            ensure!(r.status() == StatusCode::NOT_FOUND, "HEAD blob {d}: {}", r.status());
        }
        Ok(())
    }
}

fn location(r: &reqwest::Response) -> Result<String> {
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("response without Location")?;
    // The registry answers with a path; accept an absolute URL too.
    Ok(match loc.find("/v2/") {
        Some(i) => loc[i..].to_owned(),
        None => loc.to_owned(),
    })
}

/// `loc` with `key=value` added to its query.
fn with_query(loc: &str, kv: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}{kv}")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}
