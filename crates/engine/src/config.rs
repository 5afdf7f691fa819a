//! The daemon's settings: the `--config` TOML file and the flags that override it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Default `-H/--host`.
const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";
/// Default `--data-root`.
const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";
/// Default `--exec-root`.
const DEFAULT_EXEC_ROOT: &str = "/run/berth";

/// Everything `berth daemon` is configured with. In the TOML file the keys are the flag names
/// (kebab-case; the repeatable flags take lists under their plural names); flags win over the
/// file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// Where the API is served, `unix://PATH` (default: `unix:///run/berth/berth.sock`). The
    /// socket gets mode 0660 and group `berth` when that group exists.
    pub host: String,
    /// Persistent state: images, containers, the daemon lock (default: `/var/lib/berth`).
    pub data_root: PathBuf,
    /// Runtime state that does not survive a reboot (default: `/run/berth`).
    pub exec_root: PathBuf,
    /// The daemon's pid file (default: `<exec-root>/berth.pid`).
    pub pidfile: Option<PathBuf>,
    /// `-G/--group`: the group the API socket belongs to (mode 0660). Default `berth`,
    /// used when it exists; a group named explicitly must exist.
    pub group: Option<String>,
    /// Registries reached over plain HTTP or with unverified TLS: `HOST:PORT` or a CIDR.
    #[serde(alias = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Pull-through mirrors of Docker Hub, as URLs.
    #[serde(alias = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    /// Registries searched, in order, for unqualified image names (`HOST:PORT`).
    #[serde(alias = "add-registry")]
    pub add_registries: Vec<String>,
    /// Registries that are refused (`HOST` or `HOST:PORT`).
    #[serde(alias = "block-registry")]
    pub block_registries: Vec<String>,
    /// Temporary files (downloads, imports) (default: `<data-root>/tmp`).
    pub tmpdir: Option<PathBuf>,
    /// Run an init process (docker-init, i.e. tini) as PID 1 of every container that does
    /// not say `--init=false`.
    pub init: bool,
    /// The init binary for `--init` (default: `docker-init` in dockerd's libexec directories
    /// or `$PATH`, else `tini-static` in `$PATH`).
    pub init_path: Option<PathBuf>,
    /// `-b/--bridge`: the host bridge of the default `bridge` network: an existing one (a
    /// site's `br0`, used as it is) or one Berth creates (default `berth0`); `none` disables
    /// the default bridge network (containers then get only loopback).
    pub bridge: Option<String>,
    /// `--bip`: the bridge's address and prefix (`10.0.3.1/24`); default: the address an
    /// existing bridge carries, else the first free /16 of 172.17–172.31.
    pub bip: Option<ipnet::IpNet>,
    /// `--fixed-cidr`: the range default-bridge containers get addresses from.
    pub fixed_cidr: Option<ipnet::IpNet>,
    /// `--fixed-cidr-v6`: the IPv6 subnet of the default bridge (with `--ipv6`).
    pub fixed_cidr_v6: Option<ipnet::IpNet>,
    /// `--mtu`: the MTU of default-bridge containers (and of a bridge Berth creates).
    pub mtu: Option<u32>,
    /// `--ipv6`: IPv6 on the default bridge.
    pub ipv6: bool,
    /// `--ip-forward`: turn on IPv4 forwarding (default true).
    pub ip_forward: bool,
    /// `--ip-masq`: masquerade what leaves the default bridge's subnet (default true).
    pub ip_masq: bool,
    /// `--iptables`: keep Berth's firewall table (nftables `inet berth`); false leaves the
    /// host's firewall alone (no published ports then).
    pub iptables: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: DEFAULT_HOST.to_owned(),
            data_root: PathBuf::from(DEFAULT_DATA_ROOT),
            exec_root: PathBuf::from(DEFAULT_EXEC_ROOT),
            pidfile: None,
            group: None,
            insecure_registries: Vec::new(),
            registry_mirrors: Vec::new(),
            add_registries: Vec::new(),
            block_registries: Vec::new(),
            tmpdir: None,
            init: false,
            init_path: None,
            bridge: None,
            bip: None,
            fixed_cidr: None,
            fixed_cidr_v6: None,
            mtu: None,
            ipv6: false,
            ip_forward: true,
            ip_masq: true,
            iptables: true,
        }
    }
}

impl Config {
    /// Reads a TOML config file; unknown keys are an error.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// The unix socket path named by `host`.
    pub fn socket_path(&self) -> Result<PathBuf> {
        match self.host.strip_prefix("unix://") {
            Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
            _ => Err(Error::InvalidHost {
                host: self.host.clone(),
            }),
        }
    }

    /// The pid file, defaulted from the exec root.
    pub fn pidfile_path(&self) -> PathBuf {
        self.pidfile.clone().unwrap_or_else(|| self.exec_root.join("berth.pid"))
    }

    /// The temporary directory, defaulted from the data root.
    pub fn tmpdir_path(&self) -> PathBuf {
        self.tmpdir.clone().unwrap_or_else(|| self.data_root.join("tmp"))
    }

    /// Checks the values and makes every path absolute, so what /info shows and what the
    /// daemon locks do not depend on the directory it was started from.
    pub fn resolve(mut self) -> Result<Config> {
        let socket = self.socket_path()?;
        self.host = format!("unix://{}", absolute(&socket)?.display());
        self.data_root = absolute(&self.data_root)?;
        self.exec_root = absolute(&self.exec_root)?;
        self.pidfile = Some(absolute(&self.pidfile_path())?);
        self.tmpdir = Some(absolute(&self.tmpdir_path())?);
        for m in &mut self.registry_mirrors {
            *m = normalize_mirror(m)?;
        }
        for (flag, list) in [
            ("--insecure-registry", &self.insecure_registries),
            ("--add-registry", &self.add_registries),
            ("--block-registry", &self.block_registries),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|h| h.is_empty() || h.contains("://") || h.contains('/') && !is_cidr(h))
            {
                return Err(Error::InvalidRegistry {
                    flag,
                    value: bad.clone(),
                    reason: "expected HOST[:PORT] (or a CIDR for --insecure-registry), without a scheme or path",
                });
            }
        }
        Ok(self)
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|source| Error::Io {
        op: "resolve",
        path: p.to_path_buf(),
        source,
    })
}

/// dockerd's shape: `http(s)://host[:port]/`, always with one trailing slash, no path.
fn normalize_mirror(m: &str) -> Result<String> {
    let bad = |reason| Error::InvalidRegistry {
        flag: "--registry-mirror",
        value: m.to_owned(),
        reason,
    };
    let rest = m
        .strip_prefix("https://")
        .or_else(|| m.strip_prefix("http://"))
        .ok_or_else(|| bad("expected an http:// or https:// URL"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains('?') || host.contains('#') {
        return Err(bad("a mirror URL has a host and an optional port, no path"));
    }
    Ok(format!("{}{host}/", &m[..m.len() - rest.len()]))
}

/// `a.b.c.d/n` or an IPv6 CIDR.
pub(crate) fn is_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_is_kebab_case_and_strict() {
        let c: Config = toml::from_str(
            r#"
            host = "unix:///tmp/b.sock"
            data-root = "/srv/berth"
            insecure-registries = ["reg:5000"]
            registry-mirrors = ["https://mirror.example"]
            "#,
        )
        .unwrap();
        assert_eq!(c.data_root, PathBuf::from("/srv/berth"));
        assert_eq!(c.insecure_registries, vec!["reg:5000"]);
        assert_eq!(c.exec_root, PathBuf::from(DEFAULT_EXEC_ROOT));
        assert!(toml::from_str::<Config>("data_root = \"/x\"").is_err());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }

    #[test]
    fn resolve_defaults_and_normalizes() {
        let c = Config {
            exec_root: "/run/x".into(),
            data_root: "/var/lib/x".into(),
            registry_mirrors: vec!["https://m.example:5000".into(), "http://n/".into()],
            ..Config::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.pidfile_path(), PathBuf::from("/run/x/berth.pid"));
        assert_eq!(c.tmpdir_path(), PathBuf::from("/var/lib/x/tmp"));
        assert_eq!(c.registry_mirrors, vec!["https://m.example:5000/", "http://n/"]);
        for bad in [
            Config {
                host: "tcp://0.0.0.0:2375".into(),
                ..Config::default()
            },
            Config {
                registry_mirrors: vec!["https://m/path".into()],
                ..Config::default()
            },
            Config {
                insecure_registries: vec!["http://reg:5000".into()],
                ..Config::default()
            },
        ] {
            assert!(bad.resolve().is_err());
        }
        let ok = Config {
            insecure_registries: vec!["10.0.0.0/8".into(), "reg:5000".into()],
            ..Config::default()
        };
        assert!(ok.resolve().is_ok());
    }
}
