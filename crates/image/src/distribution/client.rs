//! One registry endpoint over HTTP(S): the `/v2/` ping that picks the scheme, the auth
//! challenge (Basic, or a Bearer token from the realm), and authorised GETs.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};

use super::{Credentials, Error, RegistryOptions};

/// How long connecting (and the TLS handshake) may take; a blob download has no overall limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A registry endpoint with the scheme chosen and the credentials resolved.
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    /// `host[:port]` as named (for errors and `certs.d`).
    pub(crate) host: String,
    /// `https://host[:port]` or `http://…`, no trailing slash.
    base: String,
    /// The `Authorization` header for this repository, once the challenge is answered.
    authorization: Option<HeaderValue>,
}

impl RegistryClient {
    /// Connects to `host` (or to `base_url` for a mirror): pings `/v2/` over HTTPS, falling
    /// back to plain HTTP for insecure registries and loopback addresses as dockerd does,
    /// then answers the auth challenge for pulling `repo`.
    pub(crate) async fn connect(
        host: &str,
        base_url: Option<&str>,
        repo: &str,
        opts: &RegistryOptions,
        creds: Option<&Credentials>,
    ) -> Result<RegistryClient, Error> {
        Self::connect_for(host, base_url, repo, "pull", opts, creds).await
    }

    /// As [`connect`](Self::connect), asking a token service for `actions` on `repo`
    /// (`pull`, `pull,push`); an empty `repo` asks for no repository scope (login).
    pub(crate) async fn connect_for(
        host: &str,
        base_url: Option<&str>,
        repo: &str,
        actions: &str,
        opts: &RegistryOptions,
        creds: Option<&Credentials>,
    ) -> Result<RegistryClient, Error> {
        let insecure = opts.is_insecure(host);
        let unreachable = |reason: String| Error::Unreachable {
            host: host.to_owned(),
            reason,
        };
        let http = build_client(host, &opts.certs_dir, insecure).map_err(|e| unreachable(error_chain(&e)))?;
        let mut candidates = Vec::new();
        match base_url {
            Some(b) => candidates.push(b.trim_end_matches('/').to_owned()),
            None => {
                candidates.push(format!("https://{host}"));
                if insecure {
                    candidates.push(format!("http://{host}"));
                }
            }
        }
        let mut last = String::new();
        for base in candidates {
            match http.get(format!("{base}/v2/")).send().await {
                Ok(resp) => {
                    let mut client = RegistryClient {
                        http,
                        host: host.to_owned(),
                        base,
                        authorization: None,
                    };
                    if resp.status() == StatusCode::UNAUTHORIZED {
                        let challenge = resp
                            .headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        client.authorization = client.answer(&challenge, repo, actions, creds).await?;
                    }
                    tracing::debug!(registry = %client.host, base = %client.base, "registry connected");
                    return Ok(client);
                }
                Err(e) => {
                    tracing::debug!(registry = %host, base = %base, error = %error_chain(&e), "registry ping failed");
                    last = error_chain(&e);
                }
            }
        }
        if last.contains("certificate") {
            // Say what to do: the usual cause is a site CA that is not trusted yet.
            last.push_str(&format!(
                "; to trust the registry's CA, put it in {}, or list the registry with --insecure-registry",
                opts.certs_dir.join(host).join("ca.crt").display()
            ));
        }
        Err(unreachable(last))
    }

    /// The `Authorization` value answering a `WWW-Authenticate` challenge.
    async fn answer(
        &self,
        challenge: &str,
        repo: &str,
        actions: &str,
        creds: Option<&Credentials>,
    ) -> Result<Option<HeaderValue>, Error> {
        let basic = creds.map(|c| {
            let raw = format!("{}:{}", c.username, c.password);
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
        });
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(basic.and_then(|b| HeaderValue::from_str(&b).ok()));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(None);
        }
        let params = parse_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let Some(realm) = get("realm") else {
            return Ok(None);
        };
        let scope = get("scope").or_else(|| (!repo.is_empty()).then(|| format!("repository:{repo}:{actions}")));
        let mut query: Vec<(&str, String)> = scope.into_iter().map(|s| ("scope", s)).collect();
        if let Some(service) = get("service") {
            query.push(("service", service));
        }
        let mut req = self.http.get(&realm).query(&query);
        if let Some(b) = &basic {
            req = req.header(AUTHORIZATION, b);
        }
        let resp = req.send().await.map_err(|e| Error::Unreachable {
            host: realm.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                host: self.host.clone(),
                message: registry_message(&body).unwrap_or_else(|| "incorrect username or password".to_owned()),
            });
        }
        if !status.is_success() {
            return Err(Error::Registry {
                host: self.host.clone(),
                what: format!("a token from {realm}"),
                status: status.as_u16(),
                message: registry_message(&body).unwrap_or_default(),
            });
        }
        let token: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let token = token
            .get("token")
            .or_else(|| token.get("access_token"))
            .and_then(|t| t.as_str())
            .unwrap_or("");
        Ok(HeaderValue::from_str(&format!("Bearer {token}")).ok())
    }

    /// A request to `path` (from the root: `/v2/…`, `/v1/…`) or to an absolute URL (an
    /// upload `Location`), with the `Authorization` header when there is one.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(a) = &self.authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        req
    }

    /// Sends `req`, turning a transport failure into [`Error::Unreachable`].
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        req.send().await.map_err(|e| Error::Unreachable {
            host: self.host.clone(),
            reason: error_chain(&e),
        })
    }

    /// GETs `/v2/<path>`; a 401 becomes [`Error::Unauthorized`], other failures stay
    /// with the response for the caller to classify.
    pub(crate) async fn get(&self, path: &str, accept: &[&str]) -> Result<reqwest::Response, Error> {
        let mut req = self.http.get(format!("{}/v2/{path}", self.base));
        if !accept.is_empty() {
            req = req.header(ACCEPT, accept.join(", "));
        }
        if let Some(a) = &self.authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let resp = req.send().await.map_err(|e| Error::Unreachable {
            host: self.host.clone(),
            reason: error_chain(&e),
        })?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            let body = resp.bytes().await.unwrap_or_default();
            let message = registry_message(&body).unwrap_or_else(|| "authentication required".to_owned());
            let message = if self.authorization.is_some() {
                format!("{message}; check the username and password")
            } else {
                message
            };
            return Err(Error::Unauthorized {
                host: self.host.clone(),
                message,
            });
        }
        Ok(resp)
    }
}

/// A client trusting the system roots and `certs_dir/HOST/*.crt`, presenting
/// `client.cert`/`client.key` when present; insecure registries skip verification.
fn build_client(host: &str, certs_dir: &Path, insecure: bool) -> reqwest::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
    for bundle in ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"] {
        if let Ok(pem) = std::fs::read(bundle)
            && let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem)
        {
            for c in certs {
                b = b.add_root_certificate(c);
            }
            break;
        }
    }
    let dir = certs_dir.join(host);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "crt")
                && let Ok(pem) = std::fs::read(&p)
            {
                match reqwest::Certificate::from_pem_bundle(&pem) {
                    Ok(certs) => {
                        for c in certs {
                            b = b.add_root_certificate(c);
                        }
                    }
                    Err(e) => tracing::warn!(file = %p.display(), error = %e, "ignoring an unreadable CA certificate"),
                }
            }
        }
        if let (Ok(cert), Ok(key)) = (
            std::fs::read(dir.join("client.cert")),
            std::fs::read(dir.join("client.key")),
        ) {
            let mut pem = cert;
            pem.push(b'\n');
            pem.extend_from_slice(&key);
            match reqwest::Identity::from_pem(&pem) {
                Ok(id) => b = b.identity(id),
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "ignoring an unreadable client certificate"),
            }
        }
    }
    if insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
}

/// `realm="https://a/token",service="reg",scope="repository:x:pull"` → pairs.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_owned()));
        rest = after.trim_start_matches([',', ' ']);
    }
    out
}

/// The first `errors[].message` of a registry error body (with its code when useful).
pub(crate) fn registry_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = v.get("errors")?.get(0)?;
    first
        .get("message")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .or_else(|| first.get("code").and_then(|c| c.as_str()).map(str::to_lowercase))
}

/// An error with its causes, which reqwest keeps out of its own `Display`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Loopback hosts (`localhost`, 127.0.0.0/8, ::1) may use plain HTTP, as with dockerd.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_hosts() {
        let p = parse_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:sl6/wn:pull""#,
        );
        assert_eq!(
            p,
            [
                ("realm".to_owned(), "https://auth.example/token".to_owned()),
                ("service".to_owned(), "registry.example".to_owned()),
                ("scope".to_owned(), "repository:sl6/wn:pull".to_owned()),
            ]
        );
        for (host, want) in [
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("[::1]:5000", true),
            ("myreg:5000", false),
            ("10.0.0.1:5000", false),
        ] {
            assert_eq!(is_loopback(host), want, "{host}");
        }
        assert_eq!(
            registry_message(br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#).as_deref(),
            Some("authentication required")
        );
    }
}
