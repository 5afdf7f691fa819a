//! The registry's settings: one TOML section, the same names as the `berth registry serve` flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Settings of `berth registry serve`. Flags override the TOML file (`--config`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:5000`.
    pub addr: SocketAddr,
    /// Storage root (blobs, uploads, repository links). Default `/var/lib/berth/registry` for
    /// root, `$XDG_DATA_HOME/berth/registry` (or `~/.local/share/berth/registry`) otherwise.
    pub root: PathBuf,
    /// The metadata index (tags, catalog, search, referrers). Default `<root>/index.redb`;
    /// rebuilt from the storage when missing.
    pub index: Option<PathBuf>,
    /// htpasswd file with bcrypt entries; without it access is anonymous.
    pub htpasswd: Option<PathBuf>,
    /// Basic auth realm. Default `Berth Registry`.
    pub realm: String,
    /// TLS certificate chain (PEM). Needs `tls-key`.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Refuse every write (push, delete); pulls still work.
    pub read_only: bool,
    /// Seconds between online garbage collections; 0 turns it off. Default 3600.
    pub gc_interval_secs: u64,
    /// A blob younger than this (since upload or last HEAD/mount) is never collected, so a
    /// push whose manifest is not there yet keeps its layers. Default 3600.
    pub gc_grace_secs: u64,
    /// Upload sessions idle longer than this are removed. Default 86400.
    pub upload_expiry_secs: u64,
    /// Largest manifest accepted, in bytes (413 beyond). Default 4 MiB.
    pub max_manifest_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            root: default_root(),
            index: None,
            htpasswd: None,
            realm: "Berth Registry".to_owned(),
            tls_cert: None,
            tls_key: None,
            read_only: false,
            gc_interval_secs: 3600,
            gc_grace_secs: 3600,
            upload_expiry_secs: 86400,
            max_manifest_bytes: 4 << 20,
        }
    }
}

fn default_root() -> PathBuf {
    // SAFETY-free check of the effective uid through /proc keeps this crate free of libc.
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/berth/registry");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("berth/registry")
}

impl Config {
    /// Reads a TOML file holding these settings.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            op: "read",
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn index_path(&self) -> PathBuf {
        self.index.clone().unwrap_or_else(|| self.root.join("index.redb"))
    }

    pub(crate) fn gc_grace(&self) -> Duration {
        Duration::from_secs(self.gc_grace_secs)
    }

    pub(crate) fn upload_expiry(&self) -> Duration {
        Duration::from_secs(self.upload_expiry_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_unknown_fields() {
        let c: Config = toml::from_str("addr = \"0.0.0.0:5443\"\nroot = \"/srv/reg\"\nread-only = true\n").unwrap();
        assert_eq!(c.addr.port(), 5443);
        assert!(c.read_only);
        assert_eq!(c.index_path(), PathBuf::from("/srv/reg/index.redb"));
        assert_eq!(c.realm, "Berth Registry");
        assert!(toml::from_str::<Config>("adr = \"x\"").is_err());
    }
}
