//! Pushing images to registries, checking a login, and the legacy `/v1/search`, all over the
//! pull client's transport and auth ([`RegistryClient`]).
//!
//! A push uploads each layer blob (a `HEAD` first: a blob the registry has is skipped), then
//! the config, then the manifest: the image's stored manifest bytes (pulled, imported and
//! loaded images keep them), or, for a record without one, an OCI manifest built from the
//! config and layer descriptors, serialised deterministically so its digest is stable.

use std::sync::Arc;

use base64::Engine as _;
use berth_oci::{Digest, Manifest, Reference, media_types};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::client::{RegistryClient, error_chain, registry_message};
use super::{Credentials, DOCKER_HUB, DOCKER_HUB_ENDPOINT, Error, Progress, RegistryOptions, short};
use crate::content::ContentStore;
use crate::store::{Image, ImageStore};

/// Bytes read from the blob file per chunk of an upload.
const CHUNK: usize = 1 << 20;

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// The tag pushed (`1`, `latest`).
    pub tag: String,
    /// The manifest's digest and size in bytes.
    pub digest: Digest,
    pub size: u64,
}

/// Where a local name goes: the registry host (as named), the endpoint host, the repository.
fn target(reference: &str) -> Result<(String, String, String, String), Error> {
    let r: Reference = reference.parse()?;
    let path = r.repository.as_str().to_owned();
    let tag = r
        .tag
        .as_ref()
        .map_or_else(|| "latest".to_owned(), |t| t.as_str().to_owned());
    match r.registry.as_deref() {
        None | Some(DOCKER_HUB) | Some("index.docker.io") => {
            let repo = if path.contains('/') {
                path
            } else {
                format!("library/{path}")
            };
            Ok((DOCKER_HUB.to_owned(), DOCKER_HUB_ENDPOINT.to_owned(), repo, tag))
        }
        Some(h) => Ok((h.to_owned(), h.to_owned(), path, tag)),
    }
}

/// `[HOST/NAME]` of "The push refers to repository …".
pub fn push_repository_name(reference: &str) -> Result<String, Error> {
    let (host, _, repo, _) = target(reference)?;
    Ok(format!("{host}/{repo}"))
}

/// Pushes `image` as `reference` (a full name with tag, as the store normalises it).
pub async fn push(
    store: Arc<ImageStore>,
    image: Image,
    reference: &str,
    opts: &RegistryOptions,
    creds: Option<&Credentials>,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<PushOutcome, Error> {
    let (host, endpoint, repo, tag) = target(reference)?;
    if opts.is_blocked(&host) {
        return Err(Error::Blocked {
            host,
            reference: reference.to_owned(),
        });
    }
    let client = RegistryClient::connect_for(&endpoint, None, &repo, "pull,push", opts, creds).await?;

    let (manifest_bytes, media_type) = manifest_of(&store, &image)?;
    let manifest = Manifest::parse(&manifest_bytes, Some(&media_type)).map_err(|source| Error::InvalidManifest {
        reference: reference.to_owned(),
        source,
    })?;
    let layers = manifest.layers.clone();
    // Another repository of the same registry this image is tagged with (it was pulled from
    // or pushed to there) may lend its blobs: a cross-repository mount.
    let mount_from: Option<String> = image.tags.iter().find_map(|t| {
        let (h, _, r, _) = target(t).ok()?;
        (h == host && r != repo).then_some(r)
    });
    for l in &layers {
        let _ = progress.send(Progress::layer(&l.digest, "Preparing"));
    }
    for l in &layers {
        let _ = progress.send(Progress::layer(&l.digest, "Waiting"));
    }
    for l in &layers {
        if blob_exists(&client, &repo, &l.digest).await? {
            let _ = progress.send(Progress::layer(&l.digest, "Layer already exists"));
            continue;
        }
        if let Some(from) = &mount_from
            && mount(&client, &repo, from, &l.digest).await?
        {
            let _ = progress.send(Progress::layer(&l.digest, &format!("Mounted from {from}")));
            continue;
        }
        if !store.content.contains(&l.digest) {
            // An imported layer lives only as its snapshot until a push needs the blob.
            let _ = progress.send(Progress::layer(&l.digest, "Preparing"));
            let (store, record) = (store.clone(), image.record.clone());
            tokio::task::spawn_blocking(move || store.ensure_layer_blobs(&record))
                .await
                .expect("layer rebuild does not panic")?;
        }
        upload(&client, &store, &repo, &l.digest, Some(&progress)).await?;
        let _ = progress.send(Progress::layer(&l.digest, "Pushed"));
    }
    let config = manifest.config.clone().expect("an image manifest has a config");
    if !blob_exists(&client, &repo, &config.digest).await? {
        upload(&client, &store, &repo, &config.digest, None).await?;
    }
    let digest = Digest::sha256(&manifest_bytes);
    let resp = client
        .send(
            client
                .request(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
                .header(reqwest::header::CONTENT_TYPE, media_type)
                .body(manifest_bytes.clone()),
        )
        .await?;
    check(
        &client,
        resp,
        &format!("the manifest of {host}/{repo}:{tag}"),
        &[StatusCode::CREATED, StatusCode::OK],
    )
    .await?;
    let size = manifest_bytes.len() as u64;
    let _ = progress.send(Progress::line(format!("{tag}: digest: {digest} size: {size}")));
    Ok(PushOutcome { tag, digest, size })
}

/// The manifest to push and its media type.
fn manifest_of(store: &ImageStore, image: &Image) -> Result<(Vec<u8>, String), Error> {
    if let Some(d) = &image.record.manifest
        && let Ok(bytes) = store.content.read(d)
    {
        let mt = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| media_types::OCI_MANIFEST.to_owned());
        return Ok((bytes, mt));
    }
    let r = &image.record;
    let config_size = store.content.size(&r.id)?;
    let layers: Vec<serde_json::Value> = r
        .layers
        .iter()
        .map(|l| serde_json::json!({ "mediaType": l.media_type, "digest": l.digest, "size": l.size }))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": { "mediaType": media_types::OCI_CONFIG, "digest": r.id, "size": config_size },
        "layers": layers,
    });
    Ok((
        serde_json::to_vec(&manifest).expect("manifest serialises"),
        media_types::OCI_MANIFEST.to_owned(),
    ))
}

async fn blob_exists(client: &RegistryClient, repo: &str, digest: &Digest) -> Result<bool, Error> {
    let resp = client
        .send(client.request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")))
        .await?;
    match resp.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        s => Err(unexpected(client, s, &[], &format!("blob {digest}"))),
    }
}

fn unexpected(client: &RegistryClient, status: StatusCode, body: &[u8], what: &str) -> Error {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Error::Unauthorized {
            host: client.host.clone(),
            message: registry_message(body).unwrap_or_else(|| "authentication required".to_owned()),
        };
    }
    Error::Registry {
        host: client.host.clone(),
        what: what.to_owned(),
        status: status.as_u16(),
        message: registry_message(body).unwrap_or_default(),
    }
}

/// Fails unless `resp` has one of the `ok` statuses; returns it otherwise.
async fn check(
    client: &RegistryClient,
    resp: reqwest::Response,
    what: &str,
    ok: &[StatusCode],
) -> Result<reqwest::Response, Error> {
    if ok.contains(&resp.status()) {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    Err(unexpected(client, status, &body, what))
}

/// The upload URL a response's `Location` names (relative ones against the endpoint).
fn location(resp: &reqwest::Response) -> Option<String> {
    let loc = resp.headers().get(reqwest::header::LOCATION)?.to_str().ok()?;
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Some(loc.to_owned());
    }
    let base = resp.url();
    base.join(loc).ok().map(|u| u.to_string())
}

/// Asks the registry to mount `digest` from `from` into `repo`; false when it would not
/// (it may have opened an upload session instead, which is then left to expire).
async fn mount(client: &RegistryClient, repo: &str, from: &str, digest: &Digest) -> Result<bool, Error> {
    let resp = client
        .send(
            client
                .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
                .query(&[("mount", digest.to_string().as_str()), ("from", from)]),
        )
        .await?;
    let mounted = resp.status() == StatusCode::CREATED;
    tracing::debug!(registry = %client.host, repo, from, blob = %short(digest), mounted, "cross-repository mount");
    Ok(mounted)
}

/// POST a session, PATCH the blob streamed from the content store, PUT with the digest.
async fn upload(
    client: &RegistryClient,
    store: &ImageStore,
    repo: &str,
    digest: &Digest,
    progress: Option<&mpsc::UnboundedSender<Progress>>,
) -> Result<(), Error> {
    let what = format!("blob upload {digest}");
    let resp = client
        .send(client.request(Method::POST, &format!("/v2/{repo}/blobs/uploads/")))
        .await?;
    let resp = check(client, resp, &what, &[StatusCode::ACCEPTED]).await?;
    let url =
        location(&resp).ok_or_else(|| unexpected(client, resp.status(), b"", &format!("{what} (no Location)")))?;

    let path = store.content.path(digest);
    let total = store.content.size(digest)?;
    let file = tokio::fs::File::open(&path).await.map_err(|source| Error::Io {
        op: "open",
        path: path.clone(),
        source,
    })?;
    let (digest_c, progress_c) = (digest.clone(), progress.cloned());
    let stream = futures::stream::unfold((file, 0u64), move |(mut file, sent)| {
        let (digest, progress) = (digest_c.clone(), progress_c.clone());
        async move {
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    if let Some(p) = &progress {
                        let _ = p.send(Progress::bytes(&digest, "Pushing", sent, total));
                    }
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), (file, sent)))
                }
                Err(e) => Some((Err(e), (file, sent))),
            }
        }
    });
    let resp = client
        .send(
            client
                .request(Method::PATCH, &url)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, total)
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await?;
    let resp = check(client, resp, &what, &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT]).await?;
    let url = location(&resp).unwrap_or(url);
    let sep = if url.contains('?') { '&' } else { '?' };
    let resp = client
        .send(
            client
                .request(Method::PUT, &format!("{url}{sep}digest={digest}"))
                .header(reqwest::header::CONTENT_LENGTH, 0),
        )
        .await?;
    check(client, resp, &what, &[StatusCode::CREATED, StatusCode::NO_CONTENT]).await?;
    tracing::debug!(registry = %client.host, repo, blob = %short(digest), bytes = total, "blob uploaded");
    Ok(())
}

/// Checks `creds` against `server`'s `/v2/` (Basic, or the Bearer token flow). `server` is
/// what `docker login` sends: `HOST[:PORT]`, maybe as a URL.
pub async fn login(server: &str, opts: &RegistryOptions, creds: &Credentials) -> Result<(), Error> {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let endpoint = if host.is_empty() || host == DOCKER_HUB || host == "index.docker.io" {
        DOCKER_HUB_ENDPOINT.to_owned()
    } else {
        host
    };
    if opts.is_blocked(&endpoint) {
        return Err(Error::Blocked {
            host: endpoint,
            reference: "login".to_owned(),
        });
    }
    let client = RegistryClient::connect_for(&endpoint, None, "", "pull", opts, Some(creds)).await?;
    let resp = client.get("", &[]).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        return Err(unexpected(&client, status, &body, "/v2/"));
    }
    Ok(())
}

/// One `/v1/search` match, as docker shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SearchResult {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub star_count: u64,
    #[serde(default)]
    pub is_official: bool,
    #[serde(default)]
    pub is_automated: bool,
}

/// moby's `splitReposSearchTerm`: `(index host, remote term)`.
pub fn split_search_term(term: &str) -> (String, String) {
    match term.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), term.to_owned()),
    }
}

/// `GET /v1/_ping` then `/v1/search?q=&n=` on the term's registry, with Basic auth on each
/// request (as dockerd does for a standalone registry).
pub async fn search(
    term: &str,
    limit: u32,
    opts: &RegistryOptions,
    creds: Option<&Credentials>,
) -> Result<Vec<SearchResult>, Error> {
    let (host, remote) = split_search_term(term);
    if host == DOCKER_HUB {
        return Err(Error::NoDockerHub { term: remote });
    }
    if opts.is_blocked(&host) {
        return Err(Error::Blocked {
            host,
            reference: term.to_owned(),
        });
    }
    let client = RegistryClient::connect_for(&host, None, "", "pull", opts, None).await?;
    let basic = creds.map(|c| {
        let raw = format!("{}:{}", c.username, c.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    });
    let with_auth = |req: reqwest::RequestBuilder| match &basic {
        Some(b) => req.header(reqwest::header::AUTHORIZATION, b),
        None => req,
    };
    // Any answer to the ping will do; only a transport failure ends the search.
    client.send(with_auth(client.request(Method::GET, "/v1/_ping"))).await?;
    let n = limit.to_string();
    let resp = client
        .send(with_auth(
            client
                .request(Method::GET, "/v1/search")
                .query(&[("q", remote.as_str()), ("n", n.as_str())])
                .header("X-Docker-Token", "true"),
        ))
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(Error::SearchStatus {
            status: resp.status().as_u16(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        results: Vec<SearchResult>,
    }
    let body = resp.bytes().await.map_err(|e| Error::SearchDecode {
        host: host.clone(),
        reason: error_chain(&e),
    })?;
    let answer: Answer = serde_json::from_slice(&body).map_err(|e| Error::SearchDecode {
        host,
        reason: e.to_string(),
    })?;
    Ok(answer.results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_and_targets() {
        assert_eq!(
            split_search_term("127.0.0.1:5000/sl6"),
            ("127.0.0.1:5000".to_owned(), "sl6".to_owned())
        );
        assert_eq!(
            split_search_term("localhost/x"),
            ("localhost".to_owned(), "x".to_owned())
        );
        assert_eq!(
            split_search_term("sl6/wn"),
            ("docker.io".to_owned(), "sl6/wn".to_owned())
        );
        assert_eq!(
            split_search_term("busybox"),
            ("docker.io".to_owned(), "busybox".to_owned())
        );
        let (host, endpoint, repo, tag) = target("127.0.0.1:5000/sl6/wn:1").unwrap();
        assert_eq!(
            (host.as_str(), endpoint.as_str(), repo.as_str(), tag.as_str()),
            ("127.0.0.1:5000", "127.0.0.1:5000", "sl6/wn", "1")
        );
        assert_eq!(
            push_repository_name("docker.io/library/busybox:latest").unwrap(),
            "docker.io/library/busybox"
        );
    }
}
