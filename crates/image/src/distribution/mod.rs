//! Pulling images from registries (the distribution API, client side).
//!
//! [`resolve`] turns a name into a registry endpoint and an image manifest: the registry is
//! the name's first component when it has a `.` or `:` or is `localhost`; unqualified names
//! try the `--add-registry` hosts in order, then Docker Hub (its mirrors first); blocked
//! registries are refused. It answers the auth challenge (Basic, or a Bearer token) with the
//! caller's credentials and resolves an index to the host's platform. All of this happens
//! before any progress is reported, so its errors get a proper status code.
//!
//! [`Resolved::pull`] then fetches the config and the layers (up to [`PARALLEL_LAYERS`] at
//! once, each digested, decompressed and unpacked while it streams; a layer whose snapshot
//! exists is skipped, one being fetched by another pull is awaited), checks the diff IDs,
//! and commits the image and its tag in one transaction, reporting [`Progress`] on the way.

mod client;
pub(crate) mod layer;
mod push;

use std::path::PathBuf;
use std::sync::Arc;

use berth_oci::{Descriptor, Digest, Manifest, ManifestKind, Reference, media_types};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::config::ImageConfig;
use crate::content::ContentStore;
use crate::error::Error;
use crate::store::{Image, ImageStore, chain_ids};
use client::{RegistryClient, is_loopback, registry_message};
pub use push::{PushOutcome, SearchResult, login, push, push_repository_name, search, split_search_term};

/// Layers downloaded at once per pull (dockerd's default is 3 too).
pub const PARALLEL_LAYERS: usize = 3;
/// Docker Hub as a name and as an endpoint.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// Where per-registry CA and client certificates live, as with dockerd.
pub const DEFAULT_CERTS_DIR: &str = "/etc/docker/certs.d";

/// The daemon's registry settings, as dockerd's flags name them.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `HOST:PORT` (or CIDR) reached over plain HTTP or unverified TLS.
    pub insecure: Vec<String>,
    /// Docker Hub mirrors, as `http(s)://host[:port]/` URLs.
    pub mirrors: Vec<String>,
    /// Registries searched, in order, for unqualified names.
    pub add_registries: Vec<String>,
    /// Registries refused (`HOST` or `HOST:PORT`).
    pub block_registries: Vec<String>,
    /// `<certs_dir>/HOST:PORT/ca.crt`, `client.cert`, `client.key`.
    pub certs_dir: PathBuf,
    /// Go's name of the platform's architecture (`amd64`, `arm64`), for indexes.
    pub architecture: String,
}

impl RegistryOptions {
    fn is_insecure(&self, host: &str) -> bool {
        is_loopback(host) || self.insecure.iter().any(|i| i == host || in_cidr(i, host))
    }

    fn is_blocked(&self, host: &str) -> bool {
        let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
        self.block_registries
            .iter()
            .any(|b| b == host || b == bare || (host == DOCKER_HUB && b == "index.docker.io"))
    }
}

/// `10.0.0.0/8` contains `10.1.2.3:5000`.
fn in_cidr(cidr: &str, host: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let ip = host.rsplit_once(':').map_or(host, |(h, _)| h);
    match (
        net.parse::<std::net::Ipv4Addr>(),
        ip.parse::<std::net::Ipv4Addr>(),
        bits.parse::<u32>(),
    ) {
        (Ok(n), Ok(i), Ok(b)) if b <= 32 => {
            let mask = if b == 0 { 0 } else { u32::MAX << (32 - b) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        _ => false,
    }
}

/// Registry credentials (from `X-Registry-Auth`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One progress event, shaped as dockerd's JSON-lines messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The layer's short ID (12 hex digits), or the tag for the first line; none for the
    /// closing lines.
    pub id: Option<String>,
    pub status: String,
    /// `(current, total)` bytes for `Downloading` and `Extracting`.
    pub bytes: Option<(u64, u64)>,
}

impl Progress {
    fn line(status: impl Into<String>) -> Progress {
        Progress {
            id: None,
            status: status.into(),
            bytes: None,
        }
    }

    fn layer(digest: &Digest, status: &str) -> Progress {
        Progress {
            id: Some(short(digest)),
            status: status.to_owned(),
            bytes: None,
        }
    }

    fn bytes(digest: &Digest, status: &str, current: u64, total: u64) -> Progress {
        Progress {
            bytes: Some((current, total)),
            ..Progress::layer(digest, status)
        }
    }
}

fn short(d: &Digest) -> String {
    d.hex()[..12.min(d.hex().len())].to_owned()
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    pub image: Image,
    /// The digest the reference resolved to (the index's, for a multi-platform image).
    pub digest: Digest,
    /// `registry/repo:tag` or `registry/repo@digest`, as docker reports it.
    pub reference: String,
    /// False when the image was already here under that name ("Image is up to date").
    pub updated: bool,
}

/// A name's manifest as the registry has it, without pulling anything.
#[derive(Debug, Clone)]
pub struct Distribution {
    /// The manifest (or index) the name resolves to.
    pub descriptor: Descriptor,
    /// `{"architecture", "os", ...}` for each platform the image offers.
    pub platforms: Vec<serde_json::Value>,
}

/// A name resolved to one registry endpoint and one image manifest.
pub struct Resolved {
    client: RegistryClient,
    /// The repository path in the registry (`library/busybox`, `sl6/wn`).
    repo: String,
    /// The local name without tag (`127.0.0.1:5000/sl6/wn`, `docker.io/library/busybox`).
    name: String,
    tag: Option<String>,
    /// The digest the reference resolved to.
    digest: Digest,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    /// The manifest the reference names, as the registry sent it: an index for a
    /// multi-platform image, else the same as `manifest`.
    top: Descriptor,
    /// The index's entries (empty for a single-platform image).
    index_entries: Vec<Descriptor>,
    /// A second tag: the Docker Hub name asked for, when an --add-registry host served it.
    alias: Option<String>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("name", &self.name)
            .field("tag", &self.tag)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// One registry to try, with the endpoint URL when it is a mirror.
struct Candidate {
    host: String,
    base_url: Option<String>,
    repo: String,
}

/// Resolves `reference` (`name[:tag]` or `name@digest`) to a manifest; see the module docs.
pub async fn resolve(reference: &str, opts: &RegistryOptions, creds: Option<&Credentials>) -> Result<Resolved, Error> {
    let r: Reference = reference.parse()?;
    let path = r.repository.as_str().to_owned();
    let tag = match (&r.tag, &r.digest) {
        (Some(t), _) => Some(t.as_str().to_owned()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_owned()),
    };
    // The docker CLI qualifies every name before sending it (`sl6/wn` arrives as
    // `docker.io/sl6/wn`), so a Docker Hub name is what an unqualified one looks like here:
    // both search the --add-registry hosts first.
    let hub = matches!(r.registry.as_deref(), None | Some(DOCKER_HUB) | Some("index.docker.io"));
    let hosts: Vec<String> = if hub {
        opts.add_registries
            .iter()
            .cloned()
            .chain(std::iter::once(DOCKER_HUB.to_owned()))
            .collect()
    } else {
        vec![r.registry.clone().unwrap_or_default()]
    };
    // Found elsewhere, the image is also tagged with the Docker Hub name the client uses.
    let hub_alias = match (&tag, hub) {
        (Some(t), true) => Some(crate::names::normalize(&format!("{path}:{t}"))?),
        _ => None,
    };
    let allowed: Vec<&String> = hosts.iter().filter(|h| !opts.is_blocked(h)).collect();
    if allowed.is_empty() {
        return Err(Error::Blocked {
            host: hosts.join(", "),
            reference: reference.to_owned(),
        });
    }
    let mut candidates = Vec::new();
    for host in allowed {
        if host == DOCKER_HUB {
            let repo = if path.contains('/') {
                path.clone()
            } else {
                format!("library/{path}")
            };
            for m in &opts.mirrors {
                let authority = m.split("://").nth(1).unwrap_or(m).trim_end_matches('/').to_owned();
                candidates.push(Candidate {
                    host: authority,
                    base_url: Some(m.clone()),
                    repo: repo.clone(),
                });
            }
            candidates.push(Candidate {
                host: DOCKER_HUB_ENDPOINT.to_owned(),
                base_url: None,
                repo,
            });
        } else {
            let repo = if hub {
                path.strip_prefix("library/").unwrap_or(&path).to_owned()
            } else {
                path.clone()
            };
            candidates.push(Candidate {
                host: host.clone(),
                base_url: None,
                repo,
            });
        }
    }
    let mut last = None;
    for c in candidates {
        match resolve_at(&c, tag.as_deref(), r.digest.as_ref(), opts, creds).await {
            Ok(mut resolved) => {
                let elsewhere = !resolved.name.starts_with("docker.io/");
                resolved.alias = hub_alias.filter(|_| elsewhere);
                return Ok(resolved);
            }
            Err(e) => {
                tracing::info!(registry = %c.host, reference, error = %e, "registry could not serve the image");
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least one candidate"))
}

async fn resolve_at(
    c: &Candidate,
    tag: Option<&str>,
    digest: Option<&Digest>,
    opts: &RegistryOptions,
    creds: Option<&Credentials>,
) -> Result<Resolved, Error> {
    let client = RegistryClient::connect(&c.host, c.base_url.as_deref(), &c.repo, opts, creds).await?;
    let name_host = if c.host == DOCKER_HUB_ENDPOINT || c.base_url.is_some() {
        DOCKER_HUB
    } else {
        c.host.as_str()
    };
    let name = format!("{name_host}/{}", c.repo);
    let reference = match (digest, tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    let display = match digest {
        Some(d) => format!("{name}@{d}"),
        None => format!("{name}:{reference}"),
    };
    let (bytes, media_type) = fetch_manifest(&client, &c.repo, &reference, &display).await?;
    let top = Digest::sha256(&bytes);
    if let Some(want) = digest
        && want != &Digest::of(want.algorithm(), &bytes)
    {
        return Err(Error::RegistryDigestMismatch {
            reference: display,
            what: "manifest",
            expected: want.clone(),
            computed: Digest::of(want.algorithm(), &bytes),
        });
    }
    let top = digest.cloned().unwrap_or(top);
    let parse = |b: &[u8], mt: Option<&str>| {
        Manifest::parse(b, mt).map_err(|source| Error::InvalidManifest {
            reference: display.clone(),
            source,
        })
    };
    let mut manifest = parse(&bytes, media_type.as_deref())?;
    let top_descriptor = Descriptor {
        media_type: manifest.media_type.clone(),
        digest: top.clone(),
        size: bytes.len() as u64,
        artifact_type: None,
        annotations: None,
        platform: None,
        urls: None,
    };
    let mut index_entries = Vec::new();
    let mut manifest_bytes = bytes;
    if manifest.kind == ManifestKind::Index {
        index_entries = manifest.manifests.clone();
        let chosen = pick_platform(&manifest.manifests, &opts.architecture).ok_or_else(|| Error::NoPlatform {
            reference: display.clone(),
            arch: opts.architecture.clone(),
        })?;
        let (b, mt) = fetch_manifest(&client, &c.repo, &chosen.digest.to_string(), &display).await?;
        let computed = Digest::of(chosen.digest.algorithm(), &b);
        if computed != chosen.digest {
            return Err(Error::RegistryDigestMismatch {
                reference: display,
                what: "platform manifest",
                expected: chosen.digest.clone(),
                computed,
            });
        }
        manifest = parse(&b, mt.as_deref())?;
        if manifest.kind != ManifestKind::Image {
            return Err(Error::InvalidManifest {
                reference: display,
                source: berth_oci::Error::InvalidManifest {
                    reason: "an index entry is itself an index".to_owned(),
                },
            });
        }
        manifest_bytes = b;
    }
    Ok(Resolved {
        client,
        repo: c.repo.clone(),
        name,
        tag: if digest.is_some() { None } else { Some(reference) },
        digest: top,
        manifest_bytes,
        manifest,
        top: top_descriptor,
        index_entries,
        alias: None,
    })
}

async fn fetch_manifest(
    client: &RegistryClient,
    repo: &str,
    reference: &str,
    display: &str,
) -> Result<(Vec<u8>, Option<String>), Error> {
    let resp = client
        .get(&format!("{repo}/manifests/{reference}"), media_types::MANIFESTS)
        .await?;
    let status = resp.status();
    let media_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.bytes().await.map_err(|e| Error::Unreachable {
        host: client.host.clone(),
        reason: client::error_chain(&e),
    })?;
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(Error::ManifestNotFound {
            reference: display.to_owned(),
            message: registry_message(&body).unwrap_or_else(|| "manifest unknown".to_owned()),
        });
    }
    if !status.is_success() {
        return Err(Error::Registry {
            host: client.host.clone(),
            what: format!("the manifest of {display}"),
            status: status.as_u16(),
            message: registry_message(&body).unwrap_or_default(),
        });
    }
    Ok((body.to_vec(), media_type))
}

/// The index entry for linux on `arch` (arm variants not told apart).
fn pick_platform<'a>(entries: &'a [Descriptor], arch: &str) -> Option<&'a Descriptor> {
    entries.iter().find(|d| {
        let p = d.platform.as_ref();
        let get = |k: &str| p.and_then(|p| p.get(k)).and_then(|v| v.as_str());
        get("os") == Some("linux") && get("architecture") == Some(arch)
    })
}

impl Resolved {
    /// The local name the image gets (`registry/repo:tag`), or the digest form.
    pub fn reference(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.name),
            None => format!("{}@{}", self.name, self.digest),
        }
    }

    /// Fetches what is missing and commits the image; see the module documentation.
    pub async fn pull(
        self,
        store: Arc<ImageStore>,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Result<PullOutcome, Error> {
        let reference = self.reference();
        let _ = progress.send(Progress {
            id: Some(self.tag.clone().unwrap_or_else(|| self.digest.to_string())),
            status: format!("Pulling from {}", self.repo),
            bytes: None,
        });
        let config_desc = self.manifest.config.clone().expect("an image manifest has a config");
        let config_bytes = self.fetch_config(&config_desc).await?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| Error::InvalidConfig {
            digest: config_desc.digest.clone(),
            reason: e.to_string(),
        })?;
        let layers = self.manifest.layers.clone();
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(Error::InvalidConfig {
                digest: config_desc.digest.clone(),
                reason: format!(
                    "it lists {} diff IDs but the manifest has {} layers",
                    config.rootfs.diff_ids.len(),
                    layers.len()
                ),
            });
        }
        // The image gets the name pulled (a tag, or the digest reference) in the commit,
        // and, pulled by tag, the digest reference too, as dockerd records `RepoDigests`.
        let tag = Some(reference.clone());
        let digest_ref = format!("{}@{}", self.name, self.digest);

        // Already here under this name (or, pulled by digest, at all): nothing to fetch.
        let here = match &self.tag {
            Some(_) => store.get(&reference).ok(),
            None => store.get(&config_desc.digest.to_string()).ok(),
        };
        if let Some(existing) = here.filter(|i| i.record.id == config_desc.digest) {
            let existing = if existing.tags.contains(&reference) && existing.tags.contains(&digest_ref) {
                existing
            } else {
                let refs = [reference.clone(), digest_ref];
                let (store, id) = (Arc::clone(&store), existing.record.id.clone());
                tokio::task::spawn_blocking(move || store.add_references(&id, &refs))
                    .await
                    .expect("recording references does not panic")?
            };
            return Ok(self.finish(existing, reference, false, &progress));
        }

        let chains = chain_ids(&config.rootfs.diff_ids);
        let mut present = Vec::with_capacity(layers.len());
        for (desc, chain) in layers.iter().zip(&chains) {
            let here = store.snapshot_path(chain).is_dir() && store.content.contains(&desc.digest);
            let status = if here { "Already exists" } else { "Pulling fs layer" };
            let _ = progress.send(Progress {
                bytes: None,
                ..Progress::layer(&desc.digest, status)
            });
            present.push(here);
        }
        let jobs: Vec<(Descriptor, bool)> = layers.iter().cloned().zip(present.iter().copied()).collect();
        let (store_ref, progress_ref, client, repo) = (&store, &progress, &self.client, self.repo.as_str());
        let fetched: Vec<Option<layer::Fetched>> = futures::stream::iter(jobs)
            .map(|(desc, here)| async move {
                if here {
                    return Ok(None);
                }
                let u = layer::fetch(store_ref, client, repo, &desc, progress_ref).await?;
                let _ = progress_ref.send(Progress::layer(&desc.digest, "Pull complete"));
                Ok::<_, Error>(Some(u))
            })
            .buffered(PARALLEL_LAYERS)
            .try_collect()
            .await?;
        for ((f, desc), expected) in fetched.iter().zip(&layers).zip(&config.rootfs.diff_ids) {
            if let Some(u) = f.as_ref().map(|f| &f.unpacked)
                && &u.layer.diff_id != expected
            {
                return Err(Error::DiffIdMismatch {
                    digest: desc.digest.clone(),
                    expected: expected.clone(),
                    computed: u.layer.diff_id.clone(),
                });
            }
        }
        let commit = crate::pull::Pulled {
            config,
            config_bytes,
            manifest_bytes: self.manifest_bytes.clone(),
            layers: layers.clone(),
            unpacked: fetched
                .iter()
                .map(|f| f.as_ref().map(|f| Arc::clone(&f.unpacked)))
                .collect(),
            tag,
        };
        let image = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || store.commit_pull(commit))
                .await
                .expect("commit does not panic")?
        };
        let image = match &self.alias {
            Some(alias) => store.tag(&image.record.id.to_string(), alias)?,
            None => image,
        };
        let image = if image.tags.contains(&digest_ref) {
            image
        } else {
            let (store, id) = (Arc::clone(&store), image.record.id.clone());
            tokio::task::spawn_blocking(move || store.add_references(&id, &[digest_ref]))
                .await
                .expect("recording references does not panic")?
        };
        // Only now may a later pull of these layers start its own fetch.
        drop(fetched);
        Ok(self.finish(image, reference, true, &progress))
    }

    fn finish(
        &self,
        image: Image,
        reference: String,
        updated: bool,
        progress: &mpsc::UnboundedSender<Progress>,
    ) -> PullOutcome {
        let _ = progress.send(Progress::line(format!("Digest: {}", self.digest)));
        let shown = crate::names::familiar(&reference).to_owned();
        let status = if updated {
            format!("Status: Downloaded newer image for {shown}")
        } else {
            format!("Status: Image is up to date for {shown}")
        };
        let _ = progress.send(Progress::line(status));
        PullOutcome {
            image,
            digest: self.digest.clone(),
            reference,
            updated,
        }
    }

    /// What `GET /distribution/{name}/json` reports: the descriptor of the manifest the
    /// name resolves to, and the platforms it offers (an index's entries, or a single
    /// image's from its config, as dockerd reads them).
    pub async fn distribution(&self) -> Result<Distribution, Error> {
        let platforms = if self.index_entries.is_empty() {
            let config = self.manifest.config.as_ref().ok_or_else(|| Error::InvalidManifest {
                reference: self.reference(),
                source: berth_oci::Error::InvalidManifest {
                    reason: "an image manifest without a config".to_owned(),
                },
            })?;
            let bytes = self.fetch_config(config).await?;
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let mut p = serde_json::Map::new();
            for key in ["architecture", "os", "os.version", "variant"] {
                if let Some(x) = v.get(key).and_then(|x| x.as_str()).filter(|x| !x.is_empty()) {
                    p.insert(key.to_owned(), x.into());
                }
            }
            vec![serde_json::Value::Object(p)]
        } else {
            self.index_entries.iter().filter_map(|d| d.platform.clone()).collect()
        };
        Ok(Distribution {
            descriptor: self.top.clone(),
            platforms,
        })
    }

    async fn fetch_config(&self, desc: &Descriptor) -> Result<Vec<u8>, Error> {
        let resp = self
            .client
            .get(&format!("{}/blobs/{}", self.repo, desc.digest), &[])
            .await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| Error::Unreachable {
            host: self.client.host.clone(),
            reason: client::error_chain(&e),
        })?;
        if !status.is_success() {
            return Err(Error::Registry {
                host: self.client.host.clone(),
                what: format!("config {}", desc.digest),
                status: status.as_u16(),
                message: registry_message(&body).unwrap_or_default(),
            });
        }
        let computed = Digest::of(desc.digest.algorithm(), &body);
        if computed != desc.digest {
            return Err(Error::RegistryDigestMismatch {
                reference: self.reference(),
                what: "config",
                expected: desc.digest.clone(),
                computed,
            });
        }
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RegistryOptions {
        RegistryOptions {
            insecure: vec!["myreg:5000".into(), "10.0.0.0/8".into()],
            mirrors: vec![],
            add_registries: vec![],
            block_registries: vec!["blocked.example".into(), "other:5000".into()],
            certs_dir: PathBuf::from(DEFAULT_CERTS_DIR),
            architecture: "amd64".into(),
        }
    }

    #[test]
    fn insecure_and_blocked() {
        let o = opts();
        for (h, want) in [
            ("myreg:5000", true),
            ("myreg:5001", false),
            ("10.1.2.3:5000", true),
            ("11.1.2.3:5000", false),
            ("127.0.0.1:5000", true),
        ] {
            assert_eq!(o.is_insecure(h), want, "{h}");
        }
        for (h, want) in [
            ("blocked.example", true),
            ("blocked.example:443", true),
            ("other:5000", true),
            ("other:5001", false),
            ("docker.io", false),
        ] {
            assert_eq!(o.is_blocked(h), want, "{h}");
        }
    }

    #[tokio::test]
    async fn blocked_registry_is_refused_before_any_request() {
        let err = resolve("blocked.example/sl6/wn:1", &opts(), None).await.unwrap_err();
        assert!(matches!(err, Error::Blocked { .. }), "{err}");
        assert!(err.to_string().contains("blocked.example"), "{err}");
        let err = resolve("NOT/valid", &opts(), None).await.unwrap_err();
        assert!(matches!(err, Error::InvalidReference { .. }), "{err}");
    }
}
