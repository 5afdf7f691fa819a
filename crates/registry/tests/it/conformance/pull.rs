//! Legacy suite, pull (`conformance/01_pull_test.go`, v1.1): the setup pushes two images (a
//! config and a layer each) and their manifests, the first under a tag.

use anyhow::Result;
use berth_oci::Digest;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::fixtures::Image;
use crate::harness::{SPEC_ERROR_CODES, TestRegistry, blob_path, error_codes, expect_error, header, manifest_path};

const REPO: &str = "conformance/pull";
const TAG: &str = "tagtest0";

struct Setup {
    reg: TestRegistry,
    images: [Image; 2],
}

async fn setup() -> Result<Setup> {
    let reg = TestRegistry::start().await?;
    let images = [Image::random(), Image::random()];
    reg.push_image(REPO, &images[0], Some(TAG)).await?;
    reg.push_image(REPO, &images[1], None).await?;
    Ok(Setup { reg, images })
}

/// A HEAD or GET of a manifest answered 200 with its digest, media type and length.
fn assert_manifest_headers(resp: &reqwest::Response, image: &Image) {
    let m = &image.manifest;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(resp, "docker-content-digest"), Some(m.digest.to_string()));
    assert_eq!(header(resp, "content-type"), Some(m.media_type.clone()));
    assert_eq!(header(resp, "content-length"), Some(m.bytes.len().to_string()));
}

#[tokio::test]
async fn pull_head_nonexistent_blob_returns_404() -> Result<()> {
    let s = setup().await?;
    let missing = Digest::sha256(b"never pushed");
    let resp = s.reg.head(&blob_path(REPO, &missing)).send().await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn pull_head_existing_blob_returns_200() -> Result<()> {
    let s = setup().await?;
    let config = &s.images[0].config;
    let resp = s.reg.head(&blob_path(REPO, &config.digest)).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), Some(config.bytes.len().to_string()));
    assert_eq!(header(&resp, "docker-content-digest"), Some(config.digest.to_string()));
    assert!(resp.bytes().await?.is_empty(), "HEAD has no body");
    Ok(())
}

#[tokio::test]
async fn pull_get_nonexistent_blob_returns_404() -> Result<()> {
    let s = setup().await?;
    let missing = Digest::sha256(b"never pushed");
    let resp = s.reg.get(&blob_path(REPO, &missing)).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await
}

#[tokio::test]
async fn pull_get_existing_blob_returns_200() -> Result<()> {
    let s = setup().await?;
    let layer = &s.images[0].layers[0];
    let resp = s.reg.get(&blob_path(REPO, &layer.digest)).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "docker-content-digest"), Some(layer.digest.to_string()));
    assert_eq!(header(&resp, "content-length"), Some(layer.bytes.len().to_string()));
    assert_eq!(resp.bytes().await?, layer.bytes);
    Ok(())
}

#[tokio::test]
async fn pull_head_nonexistent_manifest_returns_404() -> Result<()> {
    let s = setup().await?;
    let missing = Digest::sha256(b"no such manifest");
    let resp = s.reg.head(&manifest_path(REPO, &missing)).send().await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn pull_head_manifest_by_digest_returns_200() -> Result<()> {
    let s = setup().await?;
    for image in &s.images {
        let resp = s
            .reg
            .head(&manifest_path(REPO, &image.manifest.digest))
            .header(ACCEPT, &image.manifest.media_type)
            .send()
            .await?;
        assert_manifest_headers(&resp, image);
        assert!(resp.bytes().await?.is_empty(), "HEAD has no body");
    }
    Ok(())
}

#[tokio::test]
async fn pull_head_manifest_by_tag_returns_200() -> Result<()> {
    let s = setup().await?;
    let resp = s.reg.head(&manifest_path(REPO, TAG)).send().await?;
    assert_manifest_headers(&resp, &s.images[0]);
    assert!(resp.bytes().await?.is_empty(), "HEAD has no body");
    Ok(())
}

#[tokio::test]
async fn pull_get_nonexistent_manifest_returns_404() -> Result<()> {
    let s = setup().await?;
    let resp = s.reg.get(&manifest_path(REPO, "nonexistent")).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await
}

#[tokio::test]
async fn pull_get_manifest_by_digest_returns_200() -> Result<()> {
    let s = setup().await?;
    for image in &s.images {
        let resp = s
            .reg
            .get(&manifest_path(REPO, &image.manifest.digest))
            .header(ACCEPT, &image.manifest.media_type)
            .send()
            .await?;
        assert_manifest_headers(&resp, image);
        assert_eq!(resp.bytes().await?, image.manifest.bytes);
    }
    Ok(())
}

#[tokio::test]
async fn pull_get_manifest_by_tag_returns_200() -> Result<()> {
    let s = setup().await?;
    let resp = s
        .reg
        .get(&manifest_path(REPO, TAG))
        .header(ACCEPT, &s.images[0].manifest.media_type)
        .send()
        .await?;
    assert_manifest_headers(&resp, &s.images[0]);
    assert_eq!(resp.bytes().await?, s.images[0].manifest.bytes);
    Ok(())
}

/// "400 response body should contain OCI-conforming JSON message": 400 or 404, and a 400
/// carries an error code from the spec's list.
#[tokio::test]
async fn pull_malformed_manifest_digest_returns_400_or_404_with_oci_error_body() -> Result<()> {
    let s = setup().await?;
    let resp = s
        .reg
        .get(&manifest_path(REPO, "sha256:totallywrong"))
        .header(CONTENT_TYPE, berth_oci::media_types::OCI_MANIFEST)
        .body("blablabla")
        .send()
        .await?;
    let status = resp.status();
    assert!(
        [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND].contains(&status),
        "got {status}"
    );
    if status == StatusCode::BAD_REQUEST {
        let codes = error_codes(resp).await?;
        assert!(SPEC_ERROR_CODES.contains(&codes[0].as_str()), "{codes:?}");
    }
    Ok(())
}

#[tokio::test]
async fn pull_invalid_repository_name_returns_400_name_invalid() -> Result<()> {
    let s = setup().await?;
    let resp = s.reg.get("/v2/Invalid_Name/tags/list").send().await?;
    expect_error(resp, StatusCode::BAD_REQUEST, "NAME_INVALID").await
}

#[tokio::test]
async fn pull_teardown_delete_manifest_returns_2xx_or_405() -> Result<()> {
    let s = setup().await?;
    for image in &s.images {
        let resp = s
            .reg
            .delete(&manifest_path(REPO, &image.manifest.digest))
            .send()
            .await?;
        let status = resp.status();
        assert!(
            status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED,
            "got {status}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn pull_teardown_delete_blob_returns_2xx_404_or_405() -> Result<()> {
    let s = setup().await?;
    for blob in s.images.iter().flat_map(Image::blobs) {
        let resp = s.reg.delete(&blob_path(REPO, &blob.digest)).send().await?;
        let status = resp.status();
        assert!(
            status.is_success() || [StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&status),
            "got {status}"
        );
    }
    Ok(())
}
