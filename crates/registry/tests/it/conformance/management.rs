//! Legacy suite, content management (`conformance/04_management_test.go`, v1.1): deleting
//! manifests (by tag and by digest) and blobs, and what the registry serves afterwards.

use anyhow::Result;
use reqwest::StatusCode;
use serde_json::Value;

use crate::fixtures::Image;
use crate::harness::{TestRegistry, blob_path, error_codes, expect_error, expect_status, manifest_path};

const REPO: &str = "conformance/management";
const TAGS: &[&str] = &["test0", "test1", "test2", "test3"];

/// An image pushed under four tags.
async fn setup() -> Result<(TestRegistry, Image)> {
    let reg = TestRegistry::start().await?;
    let image = Image::random();
    reg.push_image(REPO, &image, None).await?;
    for tag in TAGS {
        reg.push_manifest(REPO, tag, &image.manifest).await?;
    }
    Ok((reg, image))
}

/// 202; or, where tag deletion is disallowed, 400 with UNSUPPORTED, or 405.
#[tokio::test]
async fn management_delete_manifest_by_tag_returns_202() -> Result<()> {
    let (reg, _) = setup().await?;
    let resp = reg.delete(&manifest_path(REPO, TAGS[0])).send().await?;
    match resp.status() {
        StatusCode::ACCEPTED | StatusCode::METHOD_NOT_ALLOWED => {}
        StatusCode::BAD_REQUEST => assert_eq!(error_codes(resp).await?[0], "UNSUPPORTED"),
        other => panic!("DELETE by tag answered {other}"),
    }
    Ok(())
}

/// Tag deletion is atomic: the tag is gone at once, the manifest and other tags stay.
#[tokio::test]
async fn management_deleted_tag_returns_404_and_keeps_the_manifest() -> Result<()> {
    let (reg, image) = setup().await?;
    let resp = reg.delete(&manifest_path(REPO, TAGS[0])).send().await?;
    expect_status(resp, &[StatusCode::ACCEPTED]).await?;
    let resp = reg.head(&manifest_path(REPO, TAGS[0])).send().await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    for reference in [TAGS[1].to_owned(), image.manifest.digest.to_string()] {
        let resp = reg.head(&manifest_path(REPO, &reference)).send().await?;
        assert_eq!(resp.status(), StatusCode::OK, "{reference}");
    }
    Ok(())
}

/// 202, or 404 when already deleted.
#[tokio::test]
async fn management_delete_manifest_by_digest_returns_202() -> Result<()> {
    let (reg, image) = setup().await?;
    let path = manifest_path(REPO, &image.manifest.digest);
    let resp = reg.delete(&path).send().await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = reg.delete(&path).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await
}

#[tokio::test]
async fn management_get_deleted_manifest_returns_404() -> Result<()> {
    let (reg, image) = setup().await?;
    let path = manifest_path(REPO, &image.manifest.digest);
    expect_status(reg.delete(&path).send().await?, &[StatusCode::ACCEPTED]).await?;
    expect_error(reg.get(&path).send().await?, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await?;
    for tag in TAGS {
        let resp = reg.get(&manifest_path(REPO, tag)).send().await?;
        expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await?;
    }
    Ok(())
}

/// 200 without the deleted manifest's tags, or 404 for a repository now empty.
#[tokio::test]
async fn management_tags_list_reflects_manifest_deletion() -> Result<()> {
    let (reg, image) = setup().await?;
    let other = Image::random();
    reg.push_image(REPO, &other, Some("kept")).await?;
    let path = manifest_path(REPO, &image.manifest.digest);
    expect_status(reg.delete(&path).send().await?, &[StatusCode::ACCEPTED]).await?;
    let resp = reg.get(&format!("/v2/{REPO}/tags/list")).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK, StatusCode::NOT_FOUND]).await?;
    if resp.status() == StatusCode::OK {
        let body: Value = resp.json().await?;
        assert_eq!(body["tags"], serde_json::json!(["kept"]));
    }
    // The last manifest gone, the repository is empty: 200 with no tags, or 404.
    let path = manifest_path(REPO, &other.manifest.digest);
    expect_status(reg.delete(&path).send().await?, &[StatusCode::ACCEPTED]).await?;
    let resp = reg.get(&format!("/v2/{REPO}/tags/list")).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK, StatusCode::NOT_FOUND]).await?;
    if resp.status() == StatusCode::OK {
        let body: Value = resp.json().await?;
        assert_eq!(body["tags"], serde_json::json!([]));
    }
    Ok(())
}

/// 202; 404 or 405 are allowed answers too.
#[tokio::test]
async fn management_delete_blob_returns_202() -> Result<()> {
    let (reg, image) = setup().await?;
    for blob in image.blobs() {
        let resp = reg.delete(&blob_path(REPO, &blob.digest)).send().await?;
        let status = resp.status();
        assert!(
            [
                StatusCode::ACCEPTED,
                StatusCode::NOT_FOUND,
                StatusCode::METHOD_NOT_ALLOWED
            ]
            .contains(&status),
            "got {status}"
        );
        assert_eq!(status, StatusCode::ACCEPTED, "Berth deletes blobs");
    }
    Ok(())
}

#[tokio::test]
async fn management_get_deleted_blob_returns_404() -> Result<()> {
    let (reg, image) = setup().await?;
    let layer = blob_path(REPO, &image.layers[0].digest);
    expect_status(reg.delete(&layer).send().await?, &[StatusCode::ACCEPTED]).await?;
    expect_error(reg.get(&layer).send().await?, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await?;
    let resp = reg.head(&layer).send().await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn management_delete_unknown_blob_returns_404_blob_unknown() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let missing = berth_oci::Digest::sha256(b"never pushed");
    let resp = reg.delete(&blob_path(REPO, &missing)).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await
}

/// A deleted referrer leaves the subject's referrers listing.
#[tokio::test]
async fn management_deleted_referrer_leaves_the_referrers_listing() -> Result<()> {
    let (reg, subject) = setup().await?;
    let referrer = Image::with(|_, m| m["subject"] = subject.manifest.descriptor());
    reg.push_image(REPO, &referrer, None).await?;
    let listing = format!("/v2/{REPO}/referrers/{}", subject.manifest.digest);
    let body: Value = reg.get(&listing).send().await?.json().await?;
    assert_eq!(body["manifests"].as_array().map(Vec::len), Some(1));
    let path = manifest_path(REPO, &referrer.manifest.digest);
    expect_status(reg.delete(&path).send().await?, &[StatusCode::ACCEPTED]).await?;
    let body: Value = reg.get(&listing).send().await?.json().await?;
    assert_eq!(body["manifests"], serde_json::json!([]));
    Ok(())
}

/// Regression: deleting the last link in a storage directory (here the repository's only
/// tag) must answer 202 and make the tag unknown. Storage runs with `object_store`'s
/// automatic cleanup, which removes the emptied directory; the fsync of that directory after
/// the delete then fails (ENOENT), the DELETE answers 500, and the index still serves the tag
/// whose storage link is gone.
#[tokio::test]
async fn management_delete_of_the_only_tag_returns_202_and_the_tag_is_gone() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = Image::random();
    reg.push_image(REPO, &image, Some("only")).await?;
    let resp = reg.delete(&manifest_path(REPO, "only")).send().await?;
    let status = resp.status();
    let resp = reg.get(&manifest_path(REPO, "only")).send().await?;
    assert_eq!(
        (status, resp.status()),
        (StatusCode::ACCEPTED, StatusCode::NOT_FOUND),
        "(DELETE, then GET) of the only tag"
    );
    Ok(())
}
