//! Legacy suite, push (`conformance/02_push_test.go`, v1.1): streamed, monolithic and chunked
//! blob uploads, cross-repository mounts, and manifest uploads (tags, no layers, artifacts,
//! indexes, a dangling subject).

use anyhow::Result;
use berth_oci::{Algorithm, Digest, media_types};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::fixtures::{Content, EXAMPLE_TYPE_1, EXAMPLE_TYPE_2, Image, OCTET_STREAM, index, random_bytes};
use crate::harness::{
    TestRegistry, blob_path, expect_error, expect_status, header, location, manifest_path, with_digest,
};

const REPO: &str = "conformance/push";
const CROSSMOUNT: &str = "conformance/crossmount";

/// `POST /v2/<repo>/blobs/uploads/?digest=` with the blob as body (monolithic, one request).
async fn post_with_digest(reg: &TestRegistry, repo: &str, bytes: &[u8]) -> Result<reqwest::Response> {
    let digest = Digest::sha256(bytes);
    Ok(reg
        .post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(bytes.to_vec())
        .send()
        .await?)
}

/// `PUT <upload>?digest=` with the whole blob as body.
async fn put_blob(reg: &TestRegistry, upload: &str, bytes: &[u8]) -> Result<reqwest::Response> {
    Ok(reg
        .put(&with_digest(upload, &Digest::sha256(bytes)))
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(bytes.to_vec())
        .send()
        .await?)
}

/// `PUT <upload>?digest=` with no body: closes a chunked or streamed upload.
async fn put_close(reg: &TestRegistry, upload: &str, digest: &Digest) -> Result<reqwest::Response> {
    Ok(reg
        .put(&with_digest(upload, digest))
        .header(CONTENT_TYPE, OCTET_STREAM)
        .header(CONTENT_LENGTH, 0)
        .body(Vec::new())
        .send()
        .await?)
}

/// The blob is readable in `repo` with exactly `bytes`.
async fn assert_blob(reg: &TestRegistry, repo: &str, bytes: &[u8]) -> Result<()> {
    let resp = reg.get(&blob_path(repo, &Digest::sha256(bytes))).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    assert_eq!(resp.bytes().await?, bytes);
    Ok(())
}

// --- Blob Upload Streamed ---------------------------------------------------------------------

#[tokio::test]
async fn push_streamed_patch_blob_in_body_returns_202() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let upload = reg.start_upload(REPO).await?;
    let blob = random_bytes(3000);
    let resp = reg
        .patch(&upload)
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(blob.clone())
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    location(&resp)?;
    assert_eq!(header(&resp, "range"), Some(format!("0-{}", blob.len() - 1)));
    Ok(())
}

#[tokio::test]
async fn push_streamed_put_to_session_with_digest_returns_201() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let upload = reg.start_upload(REPO).await?;
    let blob = random_bytes(3000);
    let resp = reg
        .patch(&upload)
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(blob.clone())
        .send()
        .await?;
    let session = location(&expect_status(resp, &[StatusCode::ACCEPTED]).await?)?;
    let resp = put_close(&reg, &session, &Digest::sha256(&blob)).await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(location(&resp)?, blob_path(REPO, &Digest::sha256(&blob)));
    assert_blob(&reg, REPO, &blob).await
}

// --- Blob Upload Monolithic -------------------------------------------------------------------

#[tokio::test]
async fn push_monolithic_get_nonexistent_blob_returns_404() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg.get(&blob_path(REPO, &Digest::sha256(b"dummy"))).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await
}

#[tokio::test]
async fn push_monolithic_post_with_digest_and_blob_returns_201_or_202() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = post_with_digest(&reg, REPO, &random_bytes(200)).await?;
    let status = resp.status();
    assert!(
        [StatusCode::CREATED, StatusCode::ACCEPTED].contains(&status),
        "got {status}"
    );
    location(&resp)?;
    Ok(())
}

#[tokio::test]
async fn push_monolithic_get_blob_after_post_with_digest_follows_its_status() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let blob = random_bytes(200);
    let status = post_with_digest(&reg, REPO, &blob).await?.status();
    let resp = reg.get(&blob_path(REPO, &Digest::sha256(&blob))).send().await?;
    match status {
        StatusCode::ACCEPTED => assert_eq!(resp.status(), StatusCode::NOT_FOUND),
        StatusCode::CREATED => assert_eq!(resp.status(), StatusCode::OK),
        other => panic!("POST with digest answered {other}"),
    }
    Ok(())
}

#[tokio::test]
async fn push_monolithic_post_returns_202_with_session() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg.post(&format!("/v2/{REPO}/blobs/uploads/")).send().await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let session = location(&resp)?;
    assert!(session.starts_with(&format!("/v2/{REPO}/blobs/uploads/")), "{session}");
    Ok(())
}

#[tokio::test]
async fn push_monolithic_put_blob_returns_201() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let upload = reg.start_upload(REPO).await?;
    let config = random_bytes(300);
    let resp = put_blob(&reg, &upload, &config).await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let digest = Digest::sha256(&config);
    assert_eq!(location(&resp)?, blob_path(REPO, &digest));
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.to_string()));
    Ok(())
}

#[tokio::test]
async fn push_monolithic_get_existing_blob_returns_200() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let config = random_bytes(300);
    let upload = reg.start_upload(REPO).await?;
    expect_status(put_blob(&reg, &upload, &config).await?, &[StatusCode::CREATED]).await?;
    assert_blob(&reg, REPO, &config).await
}

#[tokio::test]
async fn push_monolithic_put_layer_returns_201() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let upload = reg.start_upload(REPO).await?;
    let layer = random_bytes(64 << 10);
    let resp = put_blob(&reg, &upload, &layer).await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(location(&resp)?, blob_path(REPO, &Digest::sha256(&layer)));
    Ok(())
}

#[tokio::test]
async fn push_monolithic_get_existing_layer_returns_200() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let layer = random_bytes(64 << 10);
    let upload = reg.start_upload(REPO).await?;
    expect_status(put_blob(&reg, &upload, &layer).await?, &[StatusCode::CREATED]).await?;
    assert_blob(&reg, REPO, &layer).await
}

// --- Blob Upload Chunked ----------------------------------------------------------------------

/// A blob in two chunks, and an upload session for it.
struct Chunked {
    reg: TestRegistry,
    upload: String,
    blob: Vec<u8>,
    split: usize,
}

impl Chunked {
    async fn start() -> Result<Chunked> {
        let reg = TestRegistry::start().await?;
        let upload = reg.start_upload(REPO).await?;
        Ok(Chunked {
            reg,
            upload,
            blob: random_bytes(2000),
            split: 1200,
        })
    }

    fn first(&self) -> &[u8] {
        &self.blob[..self.split]
    }

    fn second(&self) -> &[u8] {
        &self.blob[self.split..]
    }

    async fn patch_first(&self) -> Result<reqwest::Response> {
        Ok(self
            .reg
            .chunk(Method::PATCH, &self.upload, self.first(), 0)
            .send()
            .await?)
    }
}

#[tokio::test]
async fn push_chunked_post_with_zero_length_returns_202() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg
        .post(&format!("/v2/{REPO}/blobs/uploads/"))
        .header(CONTENT_LENGTH, 0)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    location(&resp)?;
    if let Some(min) = header(&resp, "oci-chunk-min-length") {
        min.parse::<u64>()?;
    }
    Ok(())
}

#[tokio::test]
async fn push_chunked_out_of_order_chunk_returns_416() -> Result<()> {
    let c = Chunked::start().await?;
    let resp = c
        .reg
        .chunk(Method::PATCH, &c.upload, c.second(), c.split)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    Ok(())
}

#[tokio::test]
async fn push_chunked_first_chunk_returns_202_with_range() -> Result<()> {
    let c = Chunked::start().await?;
    let resp = c.patch_first().await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    location(&resp)?;
    assert_eq!(header(&resp, "range"), Some(format!("0-{}", c.split - 1)));
    Ok(())
}

#[tokio::test]
async fn push_chunked_retry_of_previous_chunk_returns_416() -> Result<()> {
    let c = Chunked::start().await?;
    expect_status(c.patch_first().await?, &[StatusCode::ACCEPTED]).await?;
    let resp = c.patch_first().await?;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    Ok(())
}

#[tokio::test]
async fn push_chunked_get_on_stale_upload_returns_204_with_range_and_location() -> Result<()> {
    let c = Chunked::start().await?;
    expect_status(c.patch_first().await?, &[StatusCode::ACCEPTED]).await?;
    let resp = c.reg.get(&c.upload).send().await?;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    location(&resp)?;
    assert_eq!(header(&resp, "range"), Some(format!("0-{}", c.split - 1)));
    Ok(())
}

#[tokio::test]
async fn push_chunked_second_chunk_returns_202_with_range() -> Result<()> {
    let c = Chunked::start().await?;
    let first = expect_status(c.patch_first().await?, &[StatusCode::ACCEPTED]).await?;
    let resp = c
        .reg
        .chunk(Method::PATCH, &location(&first)?, c.second(), c.split)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    location(&resp)?;
    assert_eq!(header(&resp, "range"), Some(format!("0-{}", c.blob.len() - 1)));
    Ok(())
}

#[tokio::test]
async fn push_chunked_put_with_digest_returns_201() -> Result<()> {
    let c = Chunked::start().await?;
    let first = expect_status(c.patch_first().await?, &[StatusCode::ACCEPTED]).await?;
    let resp = c
        .reg
        .chunk(Method::PATCH, &location(&first)?, c.second(), c.split)
        .send()
        .await?;
    let second = expect_status(resp, &[StatusCode::ACCEPTED]).await?;
    let resp = put_close(&c.reg, &location(&second)?, &Digest::sha256(&c.blob)).await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    location(&resp)?;
    assert_blob(&c.reg, REPO, &c.blob).await
}

#[tokio::test]
async fn push_chunked_put_with_final_chunk_returns_201() -> Result<()> {
    let c = Chunked::start().await?;
    let first = expect_status(c.patch_first().await?, &[StatusCode::ACCEPTED]).await?;
    let last = with_digest(&location(&first)?, &Digest::sha256(&c.blob));
    let resp = c.reg.chunk(Method::PUT, &last, c.second(), c.split).send().await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    location(&resp)?;
    assert_blob(&c.reg, REPO, &c.blob).await
}

// --- Cross-Repository Blob Mount --------------------------------------------------------------

/// A registry with a blob pushed to [`REPO`].
async fn with_blob() -> Result<(TestRegistry, Digest)> {
    let reg = TestRegistry::start().await?;
    let digest = reg.push_blob(REPO, &random_bytes(700)).await?;
    Ok((reg, digest))
}

#[tokio::test]
async fn push_mount_without_from_of_unknown_blob_returns_202_session() -> Result<()> {
    let (reg, _) = with_blob().await?;
    let dummy = Digest::sha256(b"dummy");
    let resp = reg
        .post(&format!("/v2/{CROSSMOUNT}/blobs/uploads/?mount={dummy}"))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    location(&resp)?;
    Ok(())
}

#[tokio::test]
async fn push_mount_from_another_repository_returns_201_or_202() -> Result<()> {
    let (reg, digest) = with_blob().await?;
    let resp = reg
        .post(&format!("/v2/{CROSSMOUNT}/blobs/uploads/?mount={digest}&from={REPO}"))
        .send()
        .await?;
    let status = resp.status();
    assert!(
        [StatusCode::CREATED, StatusCode::ACCEPTED].contains(&status),
        "got {status}"
    );
    location(&resp)?;
    Ok(())
}

#[tokio::test]
async fn push_mount_get_digest_within_crossmount_namespace_returns_200() -> Result<()> {
    let (reg, digest) = with_blob().await?;
    let resp = reg
        .post(&format!("/v2/{CROSSMOUNT}/blobs/uploads/?mount={digest}&from={REPO}"))
        .send()
        .await?;
    match resp.status() {
        StatusCode::CREATED => {
            let mounted = location(&resp)?;
            assert_eq!(mounted, blob_path(CROSSMOUNT, &digest));
            let resp = reg.get(&mounted).send().await?;
            assert_eq!(resp.status(), StatusCode::OK);
        }
        // Not mounted: the answer is a session in the target repository.
        StatusCode::ACCEPTED => {
            let session = location(&resp)?;
            assert!(
                session.starts_with(&format!("/v2/{CROSSMOUNT}/blobs/uploads/")),
                "{session}"
            );
        }
        other => panic!("mount answered {other}"),
    }
    Ok(())
}

#[tokio::test]
async fn push_mount_of_nonexistent_blob_returns_202_session() -> Result<()> {
    let (reg, _) = with_blob().await?;
    let missing = Digest::sha256(b"not in any repository");
    let resp = reg
        .post(&format!("/v2/{CROSSMOUNT}/blobs/uploads/?mount={missing}&from={REPO}"))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let session = location(&resp)?;
    assert!(
        session.starts_with(&format!("/v2/{CROSSMOUNT}/blobs/uploads/")),
        "{session}"
    );
    Ok(())
}

/// Berth mounts a blob it holds when `from` is left out (automatic content discovery).
#[tokio::test]
async fn push_mount_without_from_with_automatic_content_discovery_returns_201() -> Result<()> {
    let (reg, digest) = with_blob().await?;
    let resp = reg
        .post(&format!("/v2/{CROSSMOUNT}/blobs/uploads/?mount={digest}"))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(location(&resp)?, blob_path(CROSSMOUNT, &digest));
    let resp = reg.get(&blob_path(CROSSMOUNT, &digest)).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

// --- Manifest Upload --------------------------------------------------------------------------

#[tokio::test]
async fn push_manifest_get_nonexistent_returns_404() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg.get(&manifest_path(REPO, "nonexistent")).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await
}

#[tokio::test]
async fn push_manifest_put_by_tag_returns_201() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = Image::random();
    for blob in image.blobs() {
        reg.push_content(REPO, blob).await?;
    }
    for i in 0..4 {
        let resp = reg.put_manifest(REPO, &format!("test{i}"), &image.manifest).await?;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(location(&resp)?, manifest_path(REPO, &image.manifest.digest));
        assert_eq!(
            header(&resp, "docker-content-digest"),
            Some(image.manifest.digest.to_string())
        );
    }
    Ok(())
}

#[tokio::test]
async fn push_manifest_with_no_layers_returns_201() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = Image::with(|_, m| m["layers"] = json!([]));
    reg.push_content(REPO, &image.config).await?;
    let resp = reg.put_manifest(REPO, "emptylayer", &image.manifest).await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    location(&resp)?;
    Ok(())
}

#[tokio::test]
async fn push_manifest_get_by_digest_returns_200() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = Image::random();
    reg.push_image(REPO, &image, Some("test0")).await?;
    let resp = reg.get(&manifest_path(REPO, &image.manifest.digest)).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await?, image.manifest.bytes);
    Ok(())
}

/// An artifact whose config media type is its artifact type, with a subject.
#[tokio::test]
async fn push_manifest_with_custom_config_media_type_returns_201() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let subject = Image::random();
    reg.push_image(REPO, &subject, Some("subject")).await?;
    let config = Content::new(EXAMPLE_TYPE_1, b"{\"kind\":\"a\"}".to_vec(), Algorithm::Sha256);
    let layer = Content::random(OCTET_STREAM, 100);
    reg.push_content(REPO, &config).await?;
    reg.push_content(REPO, &layer).await?;
    let manifest = Content::manifest(
        &json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "subject": subject.manifest.descriptor(),
        }),
        Algorithm::Sha256,
    );
    let resp = reg.put_manifest(REPO, &manifest.digest.to_string(), &manifest).await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(())
}

#[tokio::test]
async fn push_manifest_with_custom_artifact_type_returns_201() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let empty = Content::new(media_types::OCI_EMPTY, b"{}".to_vec(), Algorithm::Sha256);
    let layer = Content::random(EXAMPLE_TYPE_2, 100);
    reg.push_content(REPO, &empty).await?;
    reg.push_content(REPO, &layer).await?;
    let manifest = Content::manifest(
        &json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "artifactType": EXAMPLE_TYPE_2,
            "config": empty.descriptor(),
            "layers": [layer.descriptor()],
        }),
        Algorithm::Sha256,
    );
    let resp = reg.put_manifest(REPO, &manifest.digest.to_string(), &manifest).await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(())
}

/// An image index (with an artifact type and annotations) over a pushed image.
#[tokio::test]
async fn push_manifest_image_index_returns_201() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = Image::random();
    reg.push_image(REPO, &image, Some("tagtest0")).await?;
    let mut idx = index(vec![image.manifest.descriptor()]);
    idx["artifactType"] = "application/vnd.oci.conformance.index".into();
    idx["annotations"] = json!({"org.opencontainers.conformance": "test index"});
    let idx = Content::manifest(&idx, Algorithm::Sha256);
    let resp = reg.put_manifest(REPO, &idx.digest.to_string(), &idx).await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    location(&resp)?;
    Ok(())
}

#[tokio::test]
async fn push_manifest_nested_image_index_returns_201() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = Image::random();
    reg.push_image(REPO, &image, None).await?;
    let inner = Content::manifest(&index(vec![image.manifest.descriptor()]), Algorithm::Sha256);
    reg.push_manifest(REPO, &inner.digest.to_string(), &inner).await?;
    let outer = Content::manifest(&index(vec![inner.descriptor()]), Algorithm::Sha256);
    let resp = reg.put_manifest(REPO, &outer.digest.to_string(), &outer).await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    location(&resp)?;
    Ok(())
}

/// "Dangling subject": a subject the registry does not hold is accepted, and the response
/// names it in `OCI-Subject`.
#[tokio::test]
async fn push_manifest_with_dangling_subject_returns_201_with_oci_subject() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let missing = Content::random(media_types::OCI_MANIFEST, 300);
    let image = Image::with(|_, m| m["subject"] = missing.descriptor());
    for blob in image.blobs() {
        reg.push_content(REPO, blob).await?;
    }
    let resp = reg
        .put_manifest(REPO, &image.manifest.digest.to_string(), &image.manifest)
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "oci-subject"), Some(missing.digest.to_string()));
    Ok(())
}

#[tokio::test]
async fn push_manifest_with_unknown_blob_returns_400_manifest_blob_unknown() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = Image::random();
    reg.push_content(REPO, &image.config).await?;
    let resp = reg.put_manifest(REPO, "latest", &image.manifest).await?;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await
}

#[tokio::test]
async fn push_manifest_invalid_returns_400_manifest_invalid() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg
        .put(&manifest_path(REPO, "latest"))
        .header(CONTENT_TYPE, media_types::OCI_MANIFEST)
        .body("{\"schemaVersion\": 2, \"layers\": \"not a list\"}")
        .send()
        .await?;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await
}
