//! Legacy suite, content discovery (`conformance/03_discovery_test.go`, v1.1): tags list with
//! `n`, `last` and `Link`, and the referrers API (empty, listed, filtered by artifact type,
//! dangling subject), plus the referrers tag-schema fallback the spec requires.

use anyhow::Result;
use berth_oci::{Algorithm, Digest, media_types};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixtures::{CONFORMANCE_ANNOTATION, Content, EXAMPLE_TYPE_1, EXAMPLE_TYPE_2, Image, index};
use crate::harness::{TestRegistry, expect_error, expect_status, header};

const REPO: &str = "conformance/discovery";
/// Pushed in this order; listed in byte order (`test10` before `test2`).
const TAGS: &[&str] = &["test3", "test10", "latest", "test0", "v1.0", "test2"];
const SORTED: &[&str] = &["latest", "test0", "test10", "test2", "test3", "v1.0"];

async fn tagged() -> Result<TestRegistry> {
    let reg = TestRegistry::start().await?;
    let image = Image::random();
    reg.push_image(REPO, &image, None).await?;
    for tag in TAGS {
        reg.push_manifest(REPO, tag, &image.manifest).await?;
    }
    Ok(reg)
}

/// `GET /v2/<repo>/tags/list<query>`: the tags and the `Link` header.
async fn list_tags(reg: &TestRegistry, query: &str) -> Result<(Vec<String>, Option<String>)> {
    let resp = reg.get(&format!("/v2/{REPO}/tags/list{query}")).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    let link = header(&resp, "link");
    let body: Value = resp.json().await?;
    assert_eq!(body["name"], REPO);
    let tags = body["tags"]
        .as_array()
        .expect("tags is a list")
        .iter()
        .map(|t| t.as_str().expect("a tag is a string").to_owned())
        .collect();
    Ok((tags, link))
}

#[tokio::test]
async fn discovery_tags_list_returns_200_with_every_tag_sorted() -> Result<()> {
    let reg = tagged().await?;
    let (tags, link) = list_tags(&reg, "").await?;
    assert_eq!(tags, SORTED);
    assert_eq!(link, None, "one page, no Link");
    Ok(())
}

#[tokio::test]
async fn discovery_tags_list_n_limits_the_count() -> Result<()> {
    let reg = tagged().await?;
    let (tags, link) = list_tags(&reg, "?n=2").await?;
    assert_eq!(tags, &SORTED[..2]);
    assert_eq!(
        link.as_deref(),
        Some(format!("</v2/{REPO}/tags/list?n=2&last=test0>; rel=\"next\"").as_str())
    );
    Ok(())
}

#[tokio::test]
async fn discovery_tags_list_last_paginates_after_tag() -> Result<()> {
    let reg = tagged().await?;
    let (tags, _) = list_tags(&reg, "?last=test0").await?;
    assert_eq!(tags, &SORTED[2..]);
    let (tags, _) = list_tags(&reg, "?n=2&last=test0").await?;
    assert_eq!(tags, &SORTED[2..4]);
    // `last` need not be a tag that exists: the listing starts after it lexically.
    let (tags, _) = list_tags(&reg, "?last=test1").await?;
    assert_eq!(tags, &SORTED[2..]);
    Ok(())
}

#[tokio::test]
async fn discovery_tags_list_link_pages_through_every_tag() -> Result<()> {
    let reg = tagged().await?;
    let mut next = Some(format!("/v2/{REPO}/tags/list?n=4"));
    let mut all = Vec::new();
    while let Some(url) = next.take() {
        let resp = expect_status(reg.get(&url).send().await?, &[StatusCode::OK]).await?;
        next = header(&resp, "link").map(|l| {
            let (target, rel) = l.split_once(';').expect("Link is `<url>; rel=\"next\"`");
            assert_eq!(rel.trim(), "rel=\"next\"");
            target.trim().trim_start_matches('<').trim_end_matches('>').to_owned()
        });
        let body: Value = resp.json().await?;
        all.extend(body["tags"].as_array().expect("tags").iter().map(|t| t.to_string()));
    }
    let want: Vec<String> = SORTED.iter().map(|t| format!("\"{t}\"")).collect();
    assert_eq!(all, want);
    Ok(())
}

#[tokio::test]
async fn discovery_tags_list_unknown_repository_returns_404_name_unknown() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg.get("/v2/conformance/unknown/tags/list").send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await
}

// --- Referrers ----------------------------------------------------------------------------------

/// The legacy referrers setup: a subject image, four artifacts referring to it (two artifact
/// types, each once as config media type and once as `artifactType`), an index referring to
/// it, and one artifact whose subject does not exist.
struct Referrers {
    reg: TestRegistry,
    subject: Image,
    /// (referrer, the artifact type the listing must report)
    referrers: Vec<(Content, String)>,
    dangling: Content,
    missing_subject: Digest,
}

async fn referrers_setup() -> Result<Referrers> {
    let reg = TestRegistry::start().await?;
    let subject = Image::random();
    reg.push_image(REPO, &subject, Some("subject")).await?;
    let empty = Content::new(media_types::OCI_EMPTY, b"{}".to_vec(), Algorithm::Sha256);
    reg.push_content(REPO, &empty).await?;
    let layer = Content::random(media_types::OCI_LAYER_TAR, 256);
    reg.push_content(REPO, &layer).await?;

    let mut referrers = Vec::new();
    for (i, artifact_type) in [EXAMPLE_TYPE_1, EXAMPLE_TYPE_2].into_iter().enumerate() {
        // The artifact type as the config's media type.
        let config = Content::new(artifact_type, format!("{{\"n\":{i}}}").into_bytes(), Algorithm::Sha256);
        reg.push_content(REPO, &config).await?;
        let by_config = artifact(&config, &layer, None, Some(&subject.manifest), i);
        // The artifact type in `artifactType`, over the empty config.
        let by_field = artifact(&empty, &layer, Some(artifact_type), Some(&subject.manifest), i);
        for m in [by_config, by_field] {
            reg.push_manifest(REPO, &m.digest.to_string(), &m).await?;
            referrers.push((m, artifact_type.to_owned()));
        }
    }
    let mut idx = index(vec![subject.manifest.descriptor()]);
    idx["artifactType"] = "application/vnd.oci.conformance.index".into();
    idx["subject"] = subject.manifest.descriptor();
    idx["annotations"] = json!({CONFORMANCE_ANNOTATION: "test index"});
    let idx = Content::manifest(&idx, Algorithm::Sha256);
    reg.push_manifest(REPO, &idx.digest.to_string(), &idx).await?;
    referrers.push((idx, "application/vnd.oci.conformance.index".to_owned()));

    let missing = Content::random(media_types::OCI_MANIFEST, 321);
    let dangling = artifact(&empty, &layer, Some(EXAMPLE_TYPE_1), Some(&missing), 9);
    reg.push_manifest(REPO, &dangling.digest.to_string(), &dangling).await?;
    Ok(Referrers {
        reg,
        subject,
        referrers,
        dangling,
        missing_subject: missing.digest,
    })
}

/// An artifact manifest over `config` and `layer`, annotated with `n`.
fn artifact(
    config: &Content,
    layer: &Content,
    artifact_type: Option<&str>,
    subject: Option<&Content>,
    n: usize,
) -> Content {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "annotations": {CONFORMANCE_ANNOTATION: format!("artifact {n}")},
    });
    if let Some(t) = artifact_type {
        m["artifactType"] = t.into();
    }
    if let Some(s) = subject {
        m["subject"] = s.descriptor();
    }
    Content::manifest(&m, Algorithm::Sha256)
}

/// `GET /v2/<repo>/referrers/<digest><query>`, checked to be a 200 OCI index; returns it and
/// the `OCI-Filters-Applied` header.
async fn list_referrers(reg: &TestRegistry, subject: &Digest, query: &str) -> Result<(Vec<Value>, Option<String>)> {
    let resp = reg
        .get(&format!("/v2/{REPO}/referrers/{subject}{query}"))
        .send()
        .await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    assert_eq!(header(&resp, "content-type").as_deref(), Some(media_types::OCI_INDEX));
    let filters = header(&resp, "oci-filters-applied");
    let body: Value = resp.json().await?;
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], media_types::OCI_INDEX);
    let manifests = body["manifests"].as_array().expect("manifests is a list").clone();
    Ok((manifests, filters))
}

/// The listing holds a descriptor of `m` with its media type, size and `artifact_type`.
fn assert_listed(listing: &[Value], m: &Content, artifact_type: &str) {
    let d = listing
        .iter()
        .find(|d| d["digest"] == m.digest.to_string())
        .unwrap_or_else(|| panic!("{} missing from {listing:?}", m.digest));
    assert_eq!(d["mediaType"], m.media_type);
    assert_eq!(d["size"], m.bytes.len());
    assert_eq!(d["artifactType"], artifact_type);
}

#[tokio::test]
async fn discovery_referrers_of_nonexistent_subject_returns_200_empty_index() -> Result<()> {
    let s = referrers_setup().await?;
    let (listing, _) = list_referrers(&s.reg, &Digest::sha256(b"nothing refers here"), "").await?;
    assert!(listing.is_empty(), "{listing:?}");
    Ok(())
}

#[tokio::test]
async fn discovery_referrers_of_existing_subject_returns_200_with_descriptors() -> Result<()> {
    let s = referrers_setup().await?;
    let (listing, _) = list_referrers(&s.reg, &s.subject.manifest.digest, "").await?;
    assert_eq!(listing.len(), s.referrers.len(), "{listing:?}");
    for (m, artifact_type) in &s.referrers {
        assert_listed(&listing, m, artifact_type);
    }
    Ok(())
}

#[tokio::test]
async fn discovery_referrers_with_artifact_type_filter_returns_200_filtered() -> Result<()> {
    let s = referrers_setup().await?;
    let subject = &s.subject.manifest.digest;
    let (listing, filters) = list_referrers(&s.reg, subject, &format!("?artifactType={EXAMPLE_TYPE_1}")).await?;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    let want: Vec<_> = s.referrers.iter().filter(|(_, t)| t == EXAMPLE_TYPE_1).collect();
    assert_eq!(listing.len(), want.len(), "{listing:?}");
    for (m, t) in want {
        assert_listed(&listing, m, t);
    }
    // Without a filter the header is absent.
    let (_, filters) = list_referrers(&s.reg, subject, "").await?;
    assert_eq!(filters, None);
    Ok(())
}

#[tokio::test]
async fn discovery_referrers_to_missing_subject_returns_200() -> Result<()> {
    let s = referrers_setup().await?;
    let (listing, _) = list_referrers(&s.reg, &s.missing_subject, "").await?;
    assert_eq!(listing.len(), 1, "{listing:?}");
    assert_listed(&listing, &s.dangling, EXAMPLE_TYPE_1);
    Ok(())
}

/// "annotation pull up": a referrer's annotations are copied into its descriptor.
#[tokio::test]
async fn discovery_referrers_pull_up_annotations() -> Result<()> {
    let s = referrers_setup().await?;
    let (listing, _) = list_referrers(&s.reg, &s.subject.manifest.digest, "").await?;
    for (m, _) in &s.referrers {
        let sent: Value = serde_json::from_slice(&m.bytes)?;
        let d = listing
            .iter()
            .find(|d| d["digest"] == m.digest.to_string())
            .expect("listed");
        assert_eq!(d["annotations"], sent["annotations"], "{}", m.digest);
    }
    Ok(())
}

#[tokio::test]
async fn discovery_referrers_with_invalid_digest_returns_400_digest_invalid() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg.get(&format!("/v2/{REPO}/referrers/sha256:nothex")).send().await?;
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await
}

/// Spec: a registry adding referrers support MUST include the manifests listed in a
/// referrers tag-schema index (`<alg>-<hex>`) pushed by clients that found no referrers API.
#[tokio::test]
async fn discovery_referrers_include_the_tag_schema_fallback_index() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let subject = Image::random();
    reg.push_image(REPO, &subject, Some("subject")).await?;
    // A client without the referrers API pushes the artifact by digest (subject set) and
    // records it in the fallback index tagged `sha256-<hex>`.
    let signature = Image::with(|_, m| {
        m["artifactType"] = "application/vnd.example.signature".into();
    });
    reg.push_image(REPO, &signature, None).await?;
    let mut entry = signature.manifest.descriptor();
    entry["artifactType"] = "application/vnd.example.signature".into();
    let fallback = Content::manifest(&index(vec![entry]), Algorithm::Sha256);
    let tag = subject.manifest.digest.to_tag_schema();
    reg.push_manifest(REPO, &tag, &fallback).await?;

    let (listing, _) = list_referrers(&reg, &subject.manifest.digest, "").await?;
    assert_eq!(listing.len(), 1, "{listing:?}");
    assert_listed(&listing, &signature.manifest, "application/vnd.example.signature");
    Ok(())
}
