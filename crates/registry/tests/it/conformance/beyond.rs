//! What Berth serves beyond the distribution spec's conformance suite: htpasswd auth,
//! read-only mode, the manifest size limit, Docker's legacy search (`/v1/_ping`,
//! `/v1/search`), catalog pagination, Prometheus metrics, and upload sessions that outlive a
//! restart.

use anyhow::Result;
use berth_oci::Digest;
use futures::stream;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fixtures::{Content, DESCRIPTION, Image, OCTET_STREAM, random_bytes};
use crate::harness::{
    SPEC_ERROR_CODES, TestRegistry, blob_path, error_codes, expect_error, expect_status, header, location,
    manifest_path, with_digest,
};

const REPO: &str = "berth/beyond";

// --- auth -------------------------------------------------------------------------------------

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";
const REALM: &str = "Berth Test";

/// A registry whose htpasswd holds one bcrypt user.
async fn with_auth() -> Result<TestRegistry> {
    TestRegistry::start_with(|c| {
        let path = c.root.with_file_name("htpasswd");
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt hashes");
        std::fs::write(&path, format!("{USER}:{hash}\n")).expect("htpasswd is written");
        c.htpasswd = Some(path);
        c.realm = REALM.to_owned();
    })
    .await
}

#[tokio::test]
async fn auth_v2_without_credentials_returns_401_with_basic_challenge() -> Result<()> {
    let reg = with_auth().await?;
    let resp = reg.get("/v2/").send().await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&resp, "www-authenticate"),
        Some(format!("Basic realm=\"{REALM}\""))
    );
    assert_eq!(
        header(&resp, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    expect_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await?;
    // Every route is behind it, pulls included.
    let resp = reg.get(&format!("/v2/{REPO}/tags/list")).send().await?;
    expect_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await
}

#[tokio::test]
async fn auth_v2_with_wrong_credentials_returns_401() -> Result<()> {
    let reg = with_auth().await?;
    for (user, password) in [(USER, "wrong"), ("mallory", PASSWORD), (USER, "")] {
        let resp = reg.get("/v2/").basic_auth(user, Some(password)).send().await?;
        assert!(header(&resp, "www-authenticate").is_some());
        expect_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await?;
    }
    let resp = reg.get("/v2/").bearer_auth("a-token").send().await?;
    expect_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await
}

#[tokio::test]
async fn auth_v2_with_right_password_returns_200() -> Result<()> {
    let reg = with_auth().await?;
    let resp = reg.get("/v2/").basic_auth(USER, Some(PASSWORD)).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    // And a push goes through with the same credentials.
    let resp = reg
        .post(&format!("/v2/{REPO}/blobs/uploads/"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    Ok(())
}

// --- read-only mode ---------------------------------------------------------------------------

#[tokio::test]
async fn read_only_push_returns_405_unsupported() -> Result<()> {
    let mut reg = TestRegistry::start().await?;
    let image = Image::random();
    reg.push_image(REPO, &image, Some("v1")).await?;
    let upload = reg.start_upload(REPO).await?;
    reg.restart_with(|c| c.read_only = true).await?;

    let writes = [
        reg.post(&format!("/v2/{REPO}/blobs/uploads/")),
        reg.patch(&upload).body(vec![1, 2, 3]),
        reg.put(&with_digest(&upload, &Digest::sha256(b""))),
        reg.delete(&upload),
        reg.put(&manifest_path(REPO, "v2"))
            .header(CONTENT_TYPE, &image.manifest.media_type)
            .body(image.manifest.bytes.clone()),
        reg.delete(&manifest_path(REPO, "v1")),
        reg.delete(&manifest_path(REPO, &image.manifest.digest)),
        reg.delete(&blob_path(REPO, &image.layers[0].digest)),
    ];
    for req in writes {
        let resp = req.send().await?;
        let what = format!("{} {}", resp.status(), resp.url());
        expect_error(resp, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
            .await
            .map_err(|e| e.context(what))?;
    }
    Ok(())
}

#[tokio::test]
async fn read_only_pull_works() -> Result<()> {
    let mut reg = TestRegistry::start().await?;
    let image = Image::random();
    reg.push_image(REPO, &image, Some("v1")).await?;
    reg.restart_with(|c| c.read_only = true).await?;

    let resp = reg.get(&manifest_path(REPO, "v1")).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    assert_eq!(resp.bytes().await?, image.manifest.bytes);
    for b in image.blobs() {
        let resp = reg.get(&blob_path(REPO, &b.digest)).send().await?;
        let resp = expect_status(resp, &[StatusCode::OK]).await?;
        assert_eq!(resp.bytes().await?, b.bytes);
    }
    let tags: Value = reg.get(&format!("/v2/{REPO}/tags/list")).send().await?.json().await?;
    assert_eq!(tags["tags"], json!(["v1"]));
    let catalog: Value = reg.get("/v2/_catalog").send().await?.json().await?;
    assert_eq!(catalog["repositories"], json!([REPO]));
    Ok(())
}

// --- manifest size limit ----------------------------------------------------------------------

/// An image whose manifest is padded with an annotation to exactly `size` bytes, its blobs
/// pushed.
async fn padded_image(reg: &TestRegistry, size: usize) -> Result<Image> {
    let padded = |pad: usize| Image::with(|_, m| m["annotations"] = json!({"pad": "p".repeat(pad)}));
    // Every image of `Image::with` has a manifest of the same length for the same padding.
    let image = padded(size - padded(0).manifest.bytes.len());
    assert_eq!(image.manifest.bytes.len(), size);
    for b in image.blobs() {
        reg.push_content(REPO, b).await?;
    }
    Ok(image)
}

#[tokio::test]
async fn manifest_over_size_limit_returns_413() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = padded_image(&reg, (4 << 20) + 1).await?;
    let resp = reg.put_manifest(REPO, "big", &image.manifest).await?;
    let resp = expect_status(resp, &[StatusCode::PAYLOAD_TOO_LARGE]).await?;
    let codes = error_codes(resp).await?;
    assert!(SPEC_ERROR_CODES.contains(&codes[0].as_str()), "{codes:?}");
    let resp = reg.get(&manifest_path(REPO, "big")).send().await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    Ok(())
}

/// The limit holds when the client announces no length (chunked transfer encoding).
#[tokio::test]
async fn manifest_over_size_limit_without_content_length_returns_413() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = padded_image(&reg, (4 << 20) + 1).await?;
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        image.manifest.bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let resp = reg
        .put(&manifest_path(REPO, "big"))
        .header(CONTENT_TYPE, &image.manifest.media_type)
        .body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        .send()
        .await?;
    let resp = expect_status(resp, &[StatusCode::PAYLOAD_TOO_LARGE]).await?;
    let codes = error_codes(resp).await?;
    assert!(SPEC_ERROR_CODES.contains(&codes[0].as_str()), "{codes:?}");
    Ok(())
}

/// Spec: registries SHOULD accept manifests of at least 4 MB.
#[tokio::test]
async fn manifest_of_4_mb_is_accepted() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let image = padded_image(&reg, 4_000_000).await?;
    let resp = reg.put_manifest(REPO, "four-mb", &image.manifest).await?;
    expect_status(resp, &[StatusCode::CREATED]).await?;
    let resp = reg.get(&manifest_path(REPO, "four-mb")).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    assert_eq!(resp.bytes().await?.len(), 4_000_000);
    Ok(())
}

// --- docker search ----------------------------------------------------------------------------

/// Three repositories: one described by a manifest annotation, one by its image config's
/// label, one not described.
async fn searchable() -> Result<TestRegistry> {
    let reg = TestRegistry::start().await?;
    let alpha = Image::with(|_, m| m["annotations"] = json!({DESCRIPTION: "Alpha tools"}));
    reg.push_image("team/alpha", &alpha, Some("latest")).await?;
    let beta = Image::with(|c, _| c["config"]["Labels"] = json!({DESCRIPTION: "Beta, from a label"}));
    reg.push_image("team/beta", &beta, Some("latest")).await?;
    reg.push_image("other/gamma", &Image::random(), Some("latest")).await?;
    Ok(reg)
}

async fn search(reg: &TestRegistry, query: &str) -> Result<Value> {
    let resp = reg.get(&format!("/v1/search?{query}")).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    assert!(header(&resp, "content-type").is_some_and(|c| c.starts_with("application/json")));
    Ok(resp.json().await?)
}

fn names(results: &Value) -> Vec<&str> {
    results["results"]
        .as_array()
        .expect("results is a list")
        .iter()
        .map(|r| r["name"].as_str().expect("a result has a name"))
        .collect()
}

#[tokio::test]
async fn search_ping_returns_200_standalone() -> Result<()> {
    let reg = TestRegistry::start().await?;
    let resp = reg.get("/v1/_ping").send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-docker-registry-standalone").as_deref(), Some("true"));
    Ok(())
}

#[tokio::test]
async fn search_returns_docker_search_json() -> Result<()> {
    let reg = searchable().await?;
    let body = search(&reg, "q=alpha&n=25").await?;
    assert_eq!(
        body,
        json!({
            "num_results": 1,
            "query": "alpha",
            "page": 1,
            "page_size": 25,
            "num_pages": 1,
            "results": [{
                "name": "team/alpha",
                "description": "Alpha tools",
                "star_count": 0,
                "is_official": false,
                "is_automated": false,
            }],
        })
    );
    Ok(())
}

#[tokio::test]
async fn search_matches_a_substring_of_repository_names() -> Result<()> {
    let reg = searchable().await?;
    assert_eq!(names(&search(&reg, "q=eam").await?), ["team/alpha", "team/beta"]);
    assert_eq!(names(&search(&reg, "q=r/g").await?), ["other/gamma"]);
    assert_eq!(
        names(&search(&reg, "q=ALPHA").await?),
        ["team/alpha"],
        "case-insensitive"
    );
    let none = search(&reg, "q=zeta").await?;
    assert_eq!((none["num_results"].clone(), names(&none)), (json!(0), vec![]));
    assert_eq!(search(&reg, "q=").await?["num_results"], 3);
    Ok(())
}

#[tokio::test]
async fn search_description_comes_from_the_manifest_annotation() -> Result<()> {
    let reg = searchable().await?;
    let body = search(&reg, "q=team/alpha").await?;
    assert_eq!(body["results"][0]["description"], "Alpha tools");
    Ok(())
}

#[tokio::test]
async fn search_description_comes_from_the_image_config_label() -> Result<()> {
    let reg = searchable().await?;
    let body = search(&reg, "q=beta").await?;
    assert_eq!(body["results"][0]["name"], "team/beta");
    assert_eq!(body["results"][0]["description"], "Beta, from a label");
    let body = search(&reg, "q=gamma").await?;
    assert_eq!(body["results"][0]["description"], "");
    Ok(())
}

#[tokio::test]
async fn search_paginates_with_n_and_page() -> Result<()> {
    let reg = searchable().await?;
    let first = search(&reg, "q=&n=2&page=1").await?;
    assert_eq!(names(&first), ["other/gamma", "team/alpha"]);
    let second = search(&reg, "q=&n=2&page=2").await?;
    assert_eq!(names(&second), ["team/beta"]);
    for page in [&first, &second] {
        assert_eq!(page["num_results"], 3);
        assert_eq!(page["page_size"], 2);
        assert_eq!(page["num_pages"], 2);
    }
    assert_eq!(second["page"], 2);
    assert!(names(&search(&reg, "q=&n=2&page=3").await?).is_empty());
    Ok(())
}

// --- catalog ----------------------------------------------------------------------------------

const REPOS: &[&str] = &["a/one", "b/two", "c/three", "d/four", "e/five"];

async fn with_repositories() -> Result<TestRegistry> {
    let reg = TestRegistry::start().await?;
    // Pushed out of order; listed sorted.
    for repo in REPOS.iter().rev() {
        reg.push_image(repo, &Image::random(), Some("latest")).await?;
    }
    Ok(reg)
}

async fn catalog(reg: &TestRegistry, query: &str) -> Result<(Value, Option<String>)> {
    let resp = reg.get(&format!("/v2/_catalog{query}")).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    let link = header(&resp, "link");
    Ok((resp.json::<Value>().await?["repositories"].clone(), link))
}

#[tokio::test]
async fn catalog_lists_repositories_sorted() -> Result<()> {
    let reg = with_repositories().await?;
    let (repos, link) = catalog(&reg, "").await?;
    assert_eq!(repos, json!(REPOS));
    assert_eq!(link, None);
    Ok(())
}

#[tokio::test]
async fn catalog_n_limits_and_links_the_next_page() -> Result<()> {
    let reg = with_repositories().await?;
    let (repos, link) = catalog(&reg, "?n=2").await?;
    assert_eq!(repos, json!(&REPOS[..2]));
    assert_eq!(link.as_deref(), Some("</v2/_catalog?n=2&last=b%2Ftwo>; rel=\"next\""));
    let (repos, link) = catalog(&reg, "?n=2&last=b%2Ftwo").await?;
    assert_eq!(repos, json!(&REPOS[2..4]));
    assert!(link.is_some());
    let (repos, link) = catalog(&reg, "?n=2&last=d%2Ffour").await?;
    assert_eq!(repos, json!(&REPOS[4..]));
    assert_eq!(link, None, "last page");
    Ok(())
}

#[tokio::test]
async fn catalog_last_paginates_after_repository() -> Result<()> {
    let reg = with_repositories().await?;
    let (repos, _) = catalog(&reg, "?last=c/three").await?;
    assert_eq!(repos, json!(&REPOS[3..]));
    let (repos, _) = catalog(&reg, "?last=c").await?;
    assert_eq!(repos, json!(&REPOS[2..]), "`last` need not name a repository");
    Ok(())
}

// --- metrics ----------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() -> Result<()> {
    let reg = TestRegistry::start().await?;
    reg.get("/v2/").send().await?;
    reg.get(&blob_path(REPO, &Digest::sha256(b"missing"))).send().await?;
    reg.get(&blob_path(REPO, &Digest::sha256(b"missing"))).send().await?;
    reg.start_upload(REPO).await?;

    let resp = reg.get("/metrics").send().await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    assert!(header(&resp, "content-type").is_some_and(|c| c.starts_with("text/plain")));
    let text = resp.text().await?;
    for line in [
        "# TYPE berth_registry_requests_total counter",
        r#"berth_registry_requests_total{route="base",method="GET",status="200"} 1"#,
        r#"berth_registry_requests_total{route="blob",method="GET",status="404"} 2"#,
        r#"berth_registry_requests_total{route="upload",method="POST",status="202"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    let text = reg.get("/metrics").send().await?.text().await?;
    let line = r#"berth_registry_requests_total{route="metrics",method="GET",status="200"} 1"#;
    assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    Ok(())
}

// --- uploads across a restart -----------------------------------------------------------------

#[tokio::test]
async fn upload_survives_server_restart() -> Result<()> {
    let mut reg = TestRegistry::start().await?;
    let blob = Content::new(OCTET_STREAM, random_bytes(5000), berth_oci::Algorithm::Sha256);
    let (first, rest) = blob.bytes.split_at(2000);
    let upload = reg.start_upload(REPO).await?;
    let resp = reg.chunk(Method::PATCH, &upload, first, 0).send().await?;
    let resp = expect_status(resp, &[StatusCode::ACCEPTED]).await?;
    assert_eq!(header(&resp, "range").as_deref(), Some("0-1999"));
    let upload = location(&resp)?;

    reg.restart_with(|_| {}).await?;

    let resp = reg.get(&upload).send().await?;
    let resp = expect_status(resp, &[StatusCode::NO_CONTENT]).await?;
    assert_eq!(header(&resp, "range").as_deref(), Some("0-1999"));
    let upload = location(&resp)?;
    let resp = reg.chunk(Method::PATCH, &upload, rest, first.len()).send().await?;
    let resp = expect_status(resp, &[StatusCode::ACCEPTED]).await?;
    assert_eq!(header(&resp, "range").as_deref(), Some("0-4999"));
    let resp = reg
        .put(&with_digest(&location(&resp)?, &blob.digest))
        .header(CONTENT_LENGTH, 0)
        .body(Vec::new())
        .send()
        .await?;
    let resp = expect_status(resp, &[StatusCode::CREATED]).await?;
    assert_eq!(location(&resp)?, blob_path(REPO, &blob.digest));
    let resp = reg.get(&blob_path(REPO, &blob.digest)).send().await?;
    let resp = expect_status(resp, &[StatusCode::OK]).await?;
    assert_eq!(resp.bytes().await?, blob.bytes);
    assert!(reg.root().join("blobs").is_dir());
    Ok(())
}
