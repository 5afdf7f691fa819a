//! htpasswd (bcrypt only) and HTTP basic auth. Verified credentials are remembered for a few
//! minutes by a hash of the password, since bcrypt costs tens of milliseconds by design and
//! docker sends basic auth on every request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

const CACHE_FOR: Duration = Duration::from_secs(300);

pub(crate) struct Htpasswd {
    users: HashMap<String, String>,
    verified: Mutex<HashMap<(String, [u8; 32]), Instant>>,
}

impl Htpasswd {
    pub(crate) fn load(path: &Path) -> Result<Htpasswd> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            op: "read htpasswd",
            path: path.display().to_string(),
            source,
        })?;
        Htpasswd::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, path: &str) -> Result<Htpasswd> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| Error::Htpasswd {
                path: path.to_owned(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            let (user, hash) = line.split_once(':').ok_or_else(|| bad("expected user:hash"))?;
            if user.is_empty() {
                return Err(bad("empty user name"));
            }
            if !(hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$")) {
                return Err(bad(&format!(
                    "user {user:?} has a non-bcrypt hash; only bcrypt is accepted (make entries with `htpasswd -B`)"
                )));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        if users.is_empty() {
            return Err(Error::Htpasswd {
                path: path.to_owned(),
                line: 0,
                reason: "no users".to_owned(),
            });
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Checks an `Authorization` header value; returns the user name when it is valid.
    pub(crate) async fn check(&self, header: Option<&str>) -> Option<String> {
        let (user, pass) = decode_basic(header?)?;
        let hash = self.users.get(&user)?.clone();
        let key = (user.clone(), Sha256::digest(pass.as_bytes()).into());
        {
            let mut cache = self.verified.lock().expect("auth cache poisoned");
            if let Some(t) = cache.get(&key) {
                if t.elapsed() < CACHE_FOR {
                    return Some(user);
                }
                cache.remove(&key);
            }
        }
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pass, &hash).unwrap_or(false))
            .await
            .ok()?;
        if !ok {
            tracing::info!(user = %user, "wrong password");
            return None;
        }
        let mut cache = self.verified.lock().expect("auth cache poisoned");
        cache.retain(|_, t| t.elapsed() < CACHE_FOR);
        cache.insert(key, Instant::now());
        Some(user)
    }
}

fn decode_basic(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[tokio::test]
    async fn bcrypt_only_and_checks() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let h = Htpasswd::parse(&format!("# site users\nalice:{hash}\n"), "t").unwrap();
        assert_eq!(h.check(Some(&basic("alice", "s3cret"))).await.as_deref(), Some("alice"));
        assert_eq!(
            h.check(Some(&basic("alice", "s3cret"))).await.as_deref(),
            Some("alice"),
            "cached"
        );
        assert_eq!(h.check(Some(&basic("alice", "wrong"))).await, None);
        assert_eq!(h.check(Some(&basic("bob", "s3cret"))).await, None);
        assert_eq!(h.check(Some("Bearer xyz")).await, None);
        assert_eq!(h.check(None).await, None);

        for bad in ["alice:$apr1$abc$def", "alice:{SHA}abc=", "alice:plain", "nocolon", ""] {
            let err = Htpasswd::parse(bad, "t")
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"))
                .to_string();
            assert!(err.contains("htpasswd t"), "{err}");
        }
    }
}
