//! The redesigned suite's data sets (`GenerateData` in `conformance/run.go`), each run through
//! the suite's sequence: push → tag list → head → pull → referrers → delete.
//!
//! Berth supports every API the sequence uses, so the answers the suite merely records as
//! "unsupported" (a 405 delete, a missing `OCI-Tag`, a missing `OCI-Filters-Applied`) fail here.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use berth_oci::{Algorithm, Digest, media_types};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::fixtures::{
    CONFORMANCE_ANNOTATION, Content, DataSet, EXAMPLE_TYPE_1, EXAMPLE_TYPE_2, Gen, OCTET_STREAM, PLATFORMS,
    random_bytes,
};
use crate::harness::{TestRegistry, blob_path, expect_error, expect_status, header, location, manifest_path};

const REPO: &str = "conformance/data";

async fn run(ds: DataSet) -> Result<()> {
    let reg = TestRegistry::start().await?;
    push(&reg, &ds).await.context("push")?;
    tag_list(&reg, &ds).await.context("tag list")?;
    head(&reg, &ds).await.context("head")?;
    pull(&reg, &ds).await.context("pull")?;
    referrers(&reg, &ds).await.context("referrers")?;
    delete(&reg, &ds).await.context("delete")
}

/// The subject digest a manifest names, if any.
fn subject_of(m: &Content) -> Option<String> {
    let v: Value = serde_json::from_slice(&m.bytes).ok()?;
    v["subject"]["digest"].as_str().map(str::to_owned)
}

/// A manifest PUT answered 201 with `Location` serving it back, `Docker-Content-Digest`,
/// and `OCI-Subject` when it has a subject.
async fn check_put(reg: &TestRegistry, resp: reqwest::Response, m: &Content) -> Result<reqwest::Response> {
    let resp = expect_status(resp, &[StatusCode::CREATED]).await?;
    assert_eq!(header(&resp, "docker-content-digest"), Some(m.digest.to_string()));
    assert_eq!(header(&resp, "oci-subject"), subject_of(m), "OCI-Subject");
    let got = reg
        .get(&location(&resp)?)
        .header(ACCEPT, media_types::OCI_INDEX)
        .header(ACCEPT, media_types::OCI_MANIFEST)
        .send()
        .await?;
    let got = expect_status(got, &[StatusCode::OK]).await?;
    assert_eq!(header(&got, "content-type"), Some(m.media_type.clone()));
    assert_eq!(header(&got, "content-length"), Some(m.bytes.len().to_string()));
    assert_eq!(got.bytes().await?, m.bytes);
    Ok(resp)
}

async fn push(reg: &TestRegistry, ds: &DataSet) -> Result<()> {
    for b in &ds.blobs {
        reg.push_content(REPO, b).await?;
    }
    for m in &ds.manifests {
        let tags: Vec<&str> = ds
            .tags
            .iter()
            .filter(|(_, d)| **d == m.digest)
            .map(|(t, _)| t.as_str())
            .collect();
        let mut put = reg
            .put(&manifest_path(REPO, &m.digest))
            .header(CONTENT_TYPE, &m.media_type)
            .body(m.bytes.clone());
        if ds.tag_param {
            put = put.query(&tags.iter().map(|t| ("tag", *t)).collect::<Vec<_>>());
        }
        let resp = check_put(reg, put.send().await?, m).await?;
        if ds.tag_param {
            // One header per tag, or several tags in one comma-separated header.
            let oci_tags: BTreeSet<String> = resp
                .headers()
                .get_all("oci-tag")
                .iter()
                .flat_map(|v| v.to_str().unwrap_or("").split(','))
                .map(|t| t.trim().to_owned())
                .collect();
            for t in &tags {
                assert!(oci_tags.contains(*t), "OCI-Tag lacks {t}: {oci_tags:?}");
            }
        }
    }
    if !ds.tag_param {
        for (tag, digest) in &ds.tags {
            let m = ds
                .manifests
                .iter()
                .find(|m| m.digest == *digest)
                .expect("tagged manifest");
            check_put(reg, reg.put_manifest(REPO, tag, m).await?, m).await?;
        }
    }
    Ok(())
}

async fn list_tags(reg: &TestRegistry, query: &str) -> Result<Vec<String>> {
    let resp = reg.get(&format!("/v2/{REPO}/tags/list{query}")).send().await?;
    // 404 is allowed for a repository without tags; a missing tag is caught by the caller.
    let resp = expect_status(resp, &[StatusCode::OK, StatusCode::NOT_FOUND]).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    let body: Value = resp.json().await?;
    Ok(serde_json::from_value(body["tags"].clone()).unwrap_or_default())
}

/// Every tag listed; `last` set to the middle tag lists exactly the tags after it.
async fn tag_list(reg: &TestRegistry, ds: &DataSet) -> Result<()> {
    let tags = list_tags(reg, "").await?;
    for t in ds.tags.keys() {
        assert!(tags.contains(t), "{t} missing from {tags:?}");
    }
    if tags.len() >= 2 {
        let mut sorted = tags.clone();
        sorted.sort();
        assert_eq!(tags, sorted, "tags are listed in lexical order");
        let end = sorted.len() / 2;
        let last = &sorted[end - 1];
        let after = list_tags(reg, &format!("?last={last}")).await?;
        assert_eq!(after, &sorted[end..], "tags after {last}");
    }
    Ok(())
}

/// HEAD of a manifest: 200 with its media type, length and digest, and no body.
async fn head_manifest(reg: &TestRegistry, reference: &str, m: &Content) -> Result<()> {
    let resp = reg
        .head(&manifest_path(REPO, reference))
        .header(ACCEPT, media_types::OCI_INDEX)
        .header(ACCEPT, media_types::OCI_MANIFEST)
        .send()
        .await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    assert_eq!(header(&resp, "content-type"), Some(m.media_type.clone()), "{reference}");
    assert_eq!(
        header(&resp, "content-length"),
        Some(m.bytes.len().to_string()),
        "{reference}"
    );
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(m.digest.to_string()),
        "{reference}"
    );
    assert!(resp.bytes().await?.is_empty(), "HEAD {reference} has a body");
    Ok(())
}

fn manifest<'a>(ds: &'a DataSet, d: &Digest) -> &'a Content {
    ds.manifests
        .iter()
        .find(|m| m.digest == *d)
        .expect("a tag names a pushed manifest")
}

async fn head(reg: &TestRegistry, ds: &DataSet) -> Result<()> {
    for (tag, d) in &ds.tags {
        head_manifest(reg, tag, manifest(ds, d)).await?;
    }
    for m in &ds.manifests {
        head_manifest(reg, &m.digest.to_string(), m).await?;
    }
    for b in &ds.blobs {
        let resp = reg.head(&blob_path(REPO, &b.digest)).send().await?;
        let resp = expect_status(resp, &[StatusCode::OK]).await?;
        assert_eq!(header(&resp, "content-length"), Some(b.bytes.len().to_string()));
        assert_eq!(header(&resp, "docker-content-digest"), Some(b.digest.to_string()));
    }
    Ok(())
}

async fn pull(reg: &TestRegistry, ds: &DataSet) -> Result<()> {
    let by_tag = ds.tags.iter().map(|(t, d)| (t.clone(), manifest(ds, d)));
    let by_digest = ds.manifests.iter().map(|m| (m.digest.to_string(), m));
    for (reference, m) in by_tag.chain(by_digest) {
        let resp = reg
            .get(&manifest_path(REPO, &reference))
            .header(ACCEPT, media_types::OCI_INDEX)
            .header(ACCEPT, media_types::OCI_MANIFEST)
            .send()
            .await?;
        let resp = expect_status(resp, &[StatusCode::OK]).await?;
        assert_eq!(header(&resp, "content-type"), Some(m.media_type.clone()));
        assert_eq!(header(&resp, "docker-content-digest"), Some(m.digest.to_string()));
        assert_eq!(resp.bytes().await?, m.bytes, "{reference}");
    }
    for b in &ds.blobs {
        let resp = reg.get(&blob_path(REPO, &b.digest)).send().await?;
        let resp = expect_status(resp, &[StatusCode::OK]).await?;
        assert_eq!(header(&resp, "content-length"), Some(b.bytes.len().to_string()));
        assert_eq!(resp.bytes().await?, b.bytes);
    }
    Ok(())
}

/// The referrers listing of `subject` (a 200 OCI index), and `OCI-Filters-Applied`.
async fn list_referrers(
    reg: &TestRegistry,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<(Vec<Value>, String)> {
    let mut req = reg.get(&format!("/v2/{REPO}/referrers/{subject}"));
    if let Some(t) = artifact_type {
        req = req.query(&[("artifactType", t)]);
    }
    let resp = expect_status(req.send().await?, &[StatusCode::OK]).await?;
    assert_eq!(header(&resp, "content-type").as_deref(), Some(media_types::OCI_INDEX));
    let filters = header(&resp, "oci-filters-applied").unwrap_or_default();
    let body: Value = resp.json().await?;
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], media_types::OCI_INDEX);
    Ok((body["manifests"].as_array().cloned().unwrap_or_default(), filters))
}

/// `listing` holds `want`: same digest, media type, size and artifact type, and at least its
/// annotations.
fn assert_listed(listing: &[Value], want: &Value) {
    let found = listing.iter().any(|d| {
        d["digest"] == want["digest"]
            && d["mediaType"] == want["mediaType"]
            && d["size"] == want["size"]
            && d["artifactType"] == want["artifactType"]
            && want["annotations"]
                .as_object()
                .is_none_or(|a| a.iter().all(|(k, v)| d["annotations"][k] == *v))
    });
    assert!(found, "{want} missing from {listing:#?}");
}

async fn referrers(reg: &TestRegistry, ds: &DataSet) -> Result<()> {
    for (subject, goal) in &ds.referrers {
        let (listing, _) = list_referrers(reg, subject, None).await?;
        for want in goal {
            assert_listed(&listing, want);
        }
        let types: BTreeSet<&str> = goal.iter().filter_map(|d| d["artifactType"].as_str()).collect();
        for t in types {
            let (listing, filters) = list_referrers(reg, subject, Some(t)).await?;
            assert!(
                filters.split(',').any(|f| f.trim() == "artifactType"),
                "OCI-Filters-Applied is {filters:?}"
            );
            for want in goal.iter().filter(|d| d["artifactType"] == t) {
                assert_listed(&listing, want);
            }
            for d in &listing {
                assert_eq!(d["artifactType"], t, "filtered by {t}: {d}");
            }
        }
    }
    Ok(())
}

/// Tags, then manifests (indexes before their children), then blobs; each gone at once.
async fn delete(reg: &TestRegistry, ds: &DataSet) -> Result<()> {
    for tag in ds.tags.keys() {
        let path = manifest_path(REPO, tag);
        expect_status(reg.delete(&path).send().await?, &[StatusCode::ACCEPTED]).await?;
        let resp = reg.head(&path).send().await?;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "deleted tag {tag}");
    }
    for m in ds.manifests.iter().rev() {
        let path = manifest_path(REPO, &m.digest);
        expect_status(reg.delete(&path).send().await?, &[StatusCode::ACCEPTED]).await?;
        let resp = reg.head(&path).send().await?;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "deleted manifest {}", m.digest);
    }
    for b in &ds.blobs {
        let path = blob_path(REPO, &b.digest);
        expect_status(reg.delete(&path).send().await?, &[StatusCode::ACCEPTED]).await?;
        let resp = reg.head(&path).send().await?;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "deleted blob {}", b.digest);
    }
    Ok(())
}

/// The options of the suite's artifacts: empty JSON config, one layer of `layer_type`.
fn artifact(artifact_type: &str, layer_type: &str) -> Gen {
    Gen::default()
        .artifact_type(artifact_type)
        .artifact_config(media_types::OCI_EMPTY, b"{}")
        .layers(1)
        .layer_media_type(layer_type)
}

#[tokio::test]
async fn data_set_image() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image(&Gen::default().tag("image"));
    run(ds).await
}

#[tokio::test]
async fn data_set_image_uncompressed() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image(&Gen::default().tag("image-uncompressed").uncompressed());
    run(ds).await
}

/// 390 annotations of 10,000 bytes: a manifest of about 3.9 MB, under the 4 MiB limit.
#[tokio::test]
async fn data_set_large_manifest() -> Result<()> {
    let mut ds = DataSet::default();
    let mut g = Gen::default().tag("large-manifest");
    let value = "A".repeat(10_000);
    for i in 0..390 {
        g = g.annotation(&format!("large-annotation-{i}"), &value);
    }
    ds.image(&g);
    let size = ds.manifests[0].bytes.len();
    assert!((1 << 20..4 << 20).contains(&size), "{size} bytes");
    run(ds).await
}

#[tokio::test]
async fn data_set_index() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image_index(&Gen::default().tag("index"), PLATFORMS);
    run(ds).await
}

#[tokio::test]
async fn data_set_nested_index() -> Result<()> {
    let mut ds = DataSet::default();
    let inner1 = ds.image_index(&Gen::default(), PLATFORMS);
    let inner2 = ds.image_index(&Gen::default(), PLATFORMS);
    ds.index(
        vec![(inner1, None), (inner2, None)],
        &Gen::default().tag("index-of-index"),
    );
    run(ds).await
}

#[tokio::test]
async fn data_set_empty_index() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image_index(&Gen::default().tag("index"), &[]);
    assert_eq!(ds.manifests.len(), 1);
    run(ds).await
}

#[tokio::test]
async fn data_set_artifact() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image(&artifact(EXAMPLE_TYPE_1, EXAMPLE_TYPE_1).tag("artifact"));
    run(ds).await
}

#[tokio::test]
async fn data_set_artifact_index() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image_index(
        &artifact(EXAMPLE_TYPE_1, EXAMPLE_TYPE_1).tag("artifact-index"),
        PLATFORMS,
    );
    run(ds).await
}

/// An artifact whose one layer is the empty JSON, the same blob as its config.
#[tokio::test]
async fn data_set_artifact_without_layers() -> Result<()> {
    let mut ds = DataSet::default();
    let g = artifact(EXAMPLE_TYPE_1, media_types::OCI_EMPTY)
        .layer_bytes(b"{}")
        .tag("artifact-without-layers");
    ds.image(&g);
    assert_eq!(ds.blobs.len(), 1, "config and layer are one blob");
    run(ds).await
}

/// A tagged image and three referrers: an image, and two artifacts of different types.
#[tokio::test]
async fn data_set_artifacts_with_subject() -> Result<()> {
    let mut ds = DataSet::default();
    let subject = ds.image(&Gen::default().tag("image"));
    ds.image(&Gen::default().subject(&subject));
    for (t, layer_type, tag) in [
        (EXAMPLE_TYPE_1, EXAMPLE_TYPE_1, "tagged-artifact1"),
        (EXAMPLE_TYPE_2, OCTET_STREAM, "tagged-artifact2"),
    ] {
        let g = artifact(t, layer_type)
            .annotation(CONFORMANCE_ANNOTATION, "hello conformance test")
            .unique_annotation()
            .subject(&subject)
            .tag(tag);
        ds.image(&g);
    }
    assert_eq!(ds.referrers.values().map(Vec::len).sum::<usize>(), 3);
    run(ds).await
}

/// A tagged index, and an artifact index (with artifact images) referring to it.
#[tokio::test]
async fn data_set_index_with_subject() -> Result<()> {
    let mut ds = DataSet::default();
    let subject = ds.image_index(&Gen::default().tag("index"), PLATFORMS);
    let g = artifact(EXAMPLE_TYPE_1, EXAMPLE_TYPE_1)
        .annotation(CONFORMANCE_ANNOTATION, "hello conformance test")
        .unique_annotation()
        .subject(&subject)
        .tag("tagged-artifact");
    ds.image_index(&g, PLATFORMS);
    run(ds).await
}

/// An artifact whose subject was never pushed.
#[tokio::test]
async fn data_set_missing_subject() -> Result<()> {
    let mut ds = DataSet::default();
    let subject = json!({
        "mediaType": media_types::OCI_MANIFEST,
        "size": 123,
        "digest": Digest::sha256(b"missing content").to_string(),
    });
    let g = artifact(EXAMPLE_TYPE_1, EXAMPLE_TYPE_1)
        .annotation(CONFORMANCE_ANNOTATION, "hello conformance test")
        .unique_annotation()
        .subject(&subject)
        .tag("tagged-artifact");
    ds.image(&g);
    run(ds).await
}

/// Descriptors carrying their content in `data`.
#[tokio::test]
async fn data_set_data_field() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image(&Gen::default().tag("data-field").data_field());
    run(ds).await
}

/// Two layers with `urls` and non-distributable media types that are never pushed, and a
/// normal one.
#[tokio::test]
async fn data_set_non_distributable_layers() -> Result<()> {
    let mut ds = DataSet::default();
    let g = Gen::default().tag("non-distributable-image");
    let foreign = |media_type: &str, size: u64| {
        let d = Digest::sha256(&random_bytes(256));
        json!({
            "mediaType": media_type,
            "digest": d.to_string(),
            "size": size,
            "urls": [format!("https://store.example.com/blobs/sha256/{}", d.hex())],
        })
    };
    let layer = Content::new(media_types::OCI_LAYER_GZIP, random_bytes(512), Algorithm::Sha256);
    let layers = vec![
        foreign("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", 123_456),
        foreign("application/vnd.oci.image.layer.nondistributable.v1.tar", 12_345),
        ds.add_blob(layer, &g),
    ];
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l["digest"].clone()).collect::<Vec<_>>()},
    });
    let config = Content::new(media_types::OCI_CONFIG, serde_json::to_vec(&config)?, Algorithm::Sha256);
    let config = ds.add_blob(config, &g);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    ds.add_manifest(manifest, &g);
    run(ds).await
}

/// An unknown field in every config, manifest and index.
#[tokio::test]
async fn data_set_custom_fields() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image_index(&Gen::default().tag("custom-fields").extra_field(), PLATFORMS);
    run(ds).await
}

#[tokio::test]
async fn data_set_no_layers() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image(&Gen::default().tag("no-layers").layers(0));
    run(ds).await
}

/// An index, its images and their blobs all addressed by sha512, pushed by digest only.
#[tokio::test]
async fn data_set_sha512() -> Result<()> {
    let mut ds = DataSet::default();
    ds.image_index(&Gen::default().alg(Algorithm::Sha512), PLATFORMS);
    assert!(ds.manifests.iter().all(|m| m.digest.algorithm() == Algorithm::Sha512));
    run(ds).await
}

/// Every manifest pushed by digest with `?tag=`; the index gets two tags.
async fn tag_param(alg: Algorithm) -> Result<()> {
    let name = format!("tag-param-{}", alg.as_str());
    let mut ds = DataSet::default();
    ds.image_index(&Gen::default().alg(alg).tag(&name), PLATFORMS);
    for (i, m) in ds.manifests.iter().enumerate() {
        ds.tags.insert(format!("{name}-{i}"), m.digest.clone());
    }
    ds.tag_param = true;
    run(ds).await
}

#[tokio::test]
async fn data_set_tag_param_sha256() -> Result<()> {
    tag_param(Algorithm::Sha256).await
}

#[tokio::test]
async fn data_set_tag_param_sha512() -> Result<()> {
    tag_param(Algorithm::Sha512).await
}

/// A manifest whose bytes gained whitespace after its digest was taken: the push by digest
/// is refused with 400 DIGEST_INVALID and nothing is stored.
#[tokio::test]
async fn data_set_bad_digest_image_returns_400() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let mut ds = DataSet::default();
    ds.image(&Gen::default());
    for b in &ds.blobs {
        reg.push_content(REPO, b).await?;
    }
    let mut m = ds.manifests[0].clone();
    m.bytes.extend_from_slice(b"  ");
    let resp = reg.put_manifest(REPO, &m.digest.to_string(), &m).await?;
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await?;
    let resp = reg.head(&manifest_path(REPO, &m.digest)).send().await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    Ok(())
}
