//! The test harness: a registry served in-process on `127.0.0.1:0` over a temporary root, a
//! client for it, and the helpers most tests need (push a blob or an image, put a manifest,
//! check a status, read the OCI error body).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use berth_oci::{Algorithm, Digest};
use berth_registry::{Config, Server};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::fixtures::{Content, Image, OCTET_STREAM};

/// Every error code the distribution spec defines (spec.md, "Error Codes").
pub(crate) const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// A registry running in this test's runtime. Dropping it signals shutdown; [`stop`](Self::stop)
/// also waits until the registry has closed its index.
pub(crate) struct TestRegistry {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
    config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), berth_registry::Error>>>,
    // Last, so the root outlives the server task's shutdown signal.
    _dir: tempfile::TempDir,
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .context("failed to build the HTTP client")
}

impl TestRegistry {
    /// A registry with the defaults (anonymous, read-write), online GC off.
    pub(crate) async fn start() -> Result<TestRegistry> {
        Self::start_with(|_| {}).await
    }

    /// A registry whose settings `configure` adjusts first.
    pub(crate) async fn start_with(configure: impl FnOnce(&mut Config)) -> Result<TestRegistry> {
        let dir = tempfile::tempdir().context("failed to create the registry's temporary root")?;
        let mut config = Config {
            addr: "127.0.0.1:0".parse()?,
            root: dir.path().join("root"),
            gc_interval_secs: 0,
            ..Default::default()
        };
        configure(&mut config);
        let mut reg = TestRegistry {
            url: String::new(),
            client: client()?,
            config,
            shutdown: None,
            task: None,
            _dir: dir,
        };
        reg.serve().await?;
        Ok(reg)
    }

    async fn serve(&mut self) -> Result<()> {
        let server = Server::bind(self.config.clone())
            .await
            .context("failed to start the registry")?;
        self.url = format!("http://{}", server.local_addr());
        let (tx, rx) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(server.run(async {
            let _ = rx.await;
        })));
        self.shutdown = Some(tx);
        Ok(())
    }

    /// Stops serving and waits for the server to finish, so its index is closed.
    pub(crate) async fn stop(&mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .context("the registry task panicked")?
                .context("the registry failed while serving")?;
        }
        Ok(())
    }

    /// Stops the registry and starts a new one on the same root, with `configure` applied to
    /// the same settings. The address (and so [`url`](Self::url)) changes.
    pub(crate) async fn restart_with(&mut self, configure: impl FnOnce(&mut Config)) -> Result<()> {
        self.stop().await?;
        // A new client: connections to the old server are gone.
        self.client = client()?;
        configure(&mut self.config);
        self.serve().await
    }

    /// The storage root.
    pub(crate) fn root(&self) -> &Path {
        &self.config.root
    }

    /// `path` against the registry's URL; absolute URLs are kept as they are.
    pub(crate) fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.url)
        }
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub(crate) fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub(crate) fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    pub(crate) fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub(crate) fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    pub(crate) fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    pub(crate) fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// `POST /v2/<repo>/blobs/uploads/` with no body, expecting 202; returns the Location.
    pub(crate) async fn start_upload(&self, repo: &str) -> Result<String> {
        let resp = self
            .post(&format!("/v2/{repo}/blobs/uploads/"))
            .header(CONTENT_LENGTH, 0)
            .send()
            .await?;
        let resp = expect_status(resp, &[StatusCode::ACCEPTED]).await?;
        location(&resp)
    }

    /// A chunk of an upload: `bytes` sent to `location` with
    /// `Content-Range: <start>-<end>` (inclusive end) and their length.
    pub(crate) fn chunk(&self, method: Method, location: &str, bytes: &[u8], start: usize) -> RequestBuilder {
        let end = (start + bytes.len()).saturating_sub(1);
        self.request(method, location)
            .header(CONTENT_TYPE, OCTET_STREAM)
            .header(CONTENT_RANGE, format!("{start}-{end}"))
            .body(bytes.to_vec())
    }

    /// Pushes `bytes` as a sha256 blob (POST, then PUT with the body); returns the digest.
    pub(crate) async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Result<Digest> {
        self.push_blob_as(repo, bytes, Algorithm::Sha256).await
    }

    /// Pushes `bytes` as a blob under the digest of `alg` (POST, then PUT with the body).
    pub(crate) async fn push_blob_as(&self, repo: &str, bytes: &[u8], alg: Algorithm) -> Result<Digest> {
        let digest = Digest::of(alg, bytes);
        let upload = self.start_upload(repo).await?;
        let resp = self
            .put(&with_digest(&upload, &digest))
            .header(CONTENT_TYPE, OCTET_STREAM)
            .body(bytes.to_vec())
            .send()
            .await?;
        expect_status(resp, &[StatusCode::CREATED])
            .await
            .with_context(|| format!("failed to push blob {digest} to {repo}"))?;
        Ok(digest)
    }

    /// Pushes a blob described by `content`.
    pub(crate) async fn push_content(&self, repo: &str, content: &Content) -> Result<()> {
        let pushed = self
            .push_blob_as(repo, &content.bytes, content.digest.algorithm())
            .await?;
        ensure!(pushed == content.digest, "pushed {pushed}, meant {}", content.digest);
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with the manifest's media type as Content-Type.
    pub(crate) async fn put_manifest(&self, repo: &str, reference: &str, manifest: &Content) -> Result<Response> {
        Ok(self
            .put(&format!("/v2/{repo}/manifests/{reference}"))
            .header(CONTENT_TYPE, &manifest.media_type)
            .body(manifest.bytes.clone())
            .send()
            .await?)
    }

    /// Puts a manifest, expecting 201.
    pub(crate) async fn push_manifest(&self, repo: &str, reference: &str, manifest: &Content) -> Result<Response> {
        let resp = self.put_manifest(repo, reference, manifest).await?;
        expect_status(resp, &[StatusCode::CREATED])
            .await
            .with_context(|| format!("failed to push manifest {} to {repo}:{reference}", manifest.digest))
    }

    /// Pushes an image's blobs, then its manifest under `reference` (its digest when `None`).
    pub(crate) async fn push_image(&self, repo: &str, image: &Image, reference: Option<&str>) -> Result<()> {
        for blob in image.blobs() {
            self.push_content(repo, blob).await?;
        }
        let digest = image.manifest.digest.to_string();
        self.push_manifest(repo, reference.unwrap_or(&digest), &image.manifest)
            .await?;
        Ok(())
    }
}

/// `/v2/<repo>/blobs/<digest>`.
pub(crate) fn blob_path(repo: &str, digest: &Digest) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

/// `/v2/<repo>/manifests/<reference>` (a tag or a digest).
pub(crate) fn manifest_path(repo: &str, reference: impl std::fmt::Display) -> String {
    format!("/v2/{repo}/manifests/{reference}")
}

/// `location` with `digest=<digest>` added to its query.
pub(crate) fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// A header's value as text.
pub(crate) fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The `Location` header, which must be present and non-empty.
pub(crate) fn location(resp: &Response) -> Result<String> {
    match header(resp, LOCATION.as_str()) {
        Some(l) if !l.is_empty() => Ok(l),
        _ => bail!("{} {} has no Location header", resp.status(), resp.url()),
    }
}

/// Returns `resp` when its status is one of `want`; otherwise fails with the status and body.
pub(crate) async fn expect_status(resp: Response, want: &[StatusCode]) -> Result<Response> {
    if want.contains(&resp.status()) {
        return Ok(resp);
    }
    let (status, url) = (resp.status(), resp.url().clone());
    let body = resp.text().await.unwrap_or_default();
    bail!("{url}: expected {want:?}, got {status}: {body}")
}

/// The codes of an OCI error body, `{"errors":[{"code":…,"message":…},…]}`.
pub(crate) async fn error_codes(resp: Response) -> Result<Vec<String>> {
    let body = resp.text().await?;
    let v: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("error body is not JSON: {body:?}"))?;
    let errors = v["errors"]
        .as_array()
        .with_context(|| format!("error body has no \"errors\" list: {body}"))?;
    ensure!(!errors.is_empty(), "error body has an empty \"errors\" list");
    errors
        .iter()
        .map(|e| {
            e["code"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("error without a code: {e}"))
        })
        .collect()
}

/// Checks that `resp` has `status` and an OCI error body whose first code is `code`.
pub(crate) async fn expect_error(resp: Response, status: StatusCode, code: &str) -> Result<()> {
    let resp = expect_status(resp, &[status]).await?;
    let content_type = header(&resp, CONTENT_TYPE.as_str()).unwrap_or_default();
    ensure!(
        content_type.starts_with("application/json"),
        "error Content-Type is {content_type:?}"
    );
    let codes = error_codes(resp).await?;
    ensure!(codes[0] == code, "expected error code {code}, got {codes:?}");
    Ok(())
}
