//! The OCI image config Berth writes and reads, and the Dockerfile instructions that
//! `docker import --change` applies to it.

use std::collections::BTreeMap;

use berth_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// An OCI image config (`application/vnd.oci.image.config.v1+json`); the fields Berth uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Go's name (amd64, arm64).
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
    /// The container a `docker commit` made the image from (docker's `container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl ImageConfig {
    /// `created` as Unix seconds; now when it is missing or not RFC 3339.
    pub fn created_unix(&self) -> i64 {
        self.created
            .as_deref()
            .and_then(|c| time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(time::OffsetDateTime::now_utc)
            .unix_timestamp()
    }
}

/// The defaults a container of the image starts with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `HEALTHCHECK`, as docker writes it (`Test`, `Interval`, … in nanoseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// Applies `docker import --change` and `docker commit --change` instructions (Dockerfile
/// syntax, one per string): `CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`, `LABEL`, `EXPOSE`, `USER`,
/// `VOLUME`, `STOPSIGNAL`.
pub fn apply_changes(config: &mut ContainerConfig, changes: &[String]) -> Result<(), Error> {
    for change in changes {
        for line in change.lines().map(str::trim).filter(|l| !l.is_empty()) {
            apply_change(config, line)?;
        }
    }
    Ok(())
}

fn apply_change(config: &mut ContainerConfig, line: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::InvalidChange {
        change: line.to_owned(),
        reason: reason.to_owned(),
    };
    let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match instruction.to_ascii_uppercase().as_str() {
        "CMD" => config.cmd = Some(command(rest).map_err(bad)?),
        "ENTRYPOINT" => config.entrypoint = Some(command(rest).map_err(bad)?),
        "WORKDIR" | "USER" if rest.is_empty() => return Err(bad("needs a value")),
        "WORKDIR" => config.working_dir = Some(unquote(rest)),
        "USER" => config.user = Some(unquote(rest)),
        "ENV" => {
            let env = config.env.get_or_insert_with(Vec::new);
            for (k, v) in pairs(rest, true).map_err(bad)? {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) != k);
                env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            let labels = config.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in pairs(rest, false).map_err(bad)? {
                labels.insert(k, v);
            }
        }
        "STOPSIGNAL" => match words(rest).map_err(bad)?.as_slice() {
            [signal] => config.stop_signal = Some(signal.clone()),
            _ => return Err(bad("needs one signal")),
        },
        "VOLUME" => {
            let paths = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) if rest.starts_with('[') => v,
                _ => words(rest).map_err(bad)?,
            };
            if paths.is_empty() || paths.iter().any(|p| p.trim().is_empty()) {
                return Err(bad("needs at least one non-empty path"));
            }
            let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
            for p in paths {
                volumes.insert(p, serde_json::json!({}));
            }
        }
        "EXPOSE" => {
            let words = words(rest).map_err(bad)?;
            if words.is_empty() {
                return Err(bad("needs at least one port"));
            }
            let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            for w in words {
                let (port, proto) = w.split_once('/').unwrap_or((&w, "tcp"));
                let proto = proto.to_ascii_lowercase();
                let valid_port = |p: &str| p.parse::<u16>().is_ok_and(|n| n > 0);
                let range_ok = match port.split_once('-') {
                    Some((a, b)) => valid_port(a) && valid_port(b),
                    None => valid_port(port),
                };
                if !range_ok || !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
                    return Err(bad("ports are PORT[-PORT][/tcp|udp|sctp]"));
                }
                ports.insert(format!("{port}/{proto}"), serde_json::json!({}));
            }
        }
        other => {
            return Err(Error::InvalidChange {
                change: line.to_owned(),
                reason: format!(
                    "{other} is not supported by import or commit; use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR"
                ),
            });
        }
    }
    Ok(())
}

/// `["a","b"]` (exec form) or a shell command (`/bin/sh -c "…"`).
fn command(rest: &str) -> Result<Vec<String>, &'static str> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return Ok(v);
        }
        // Docker falls back to the shell form for malformed JSON; so do we.
    }
    if rest.is_empty() {
        return Err("needs a command");
    }
    Ok(vec!["/bin/sh".to_owned(), "-c".to_owned(), rest.to_owned()])
}

fn unquote(s: &str) -> String {
    words(s)
        .ok()
        .filter(|w| w.len() == 1)
        .map_or_else(|| s.to_owned(), |mut w| w.remove(0))
}

/// Splits on unquoted whitespace; quotes group, backslash escapes (outside single quotes).
fn words(s: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                cur.push(chars.next().ok_or("ends with a backslash")?);
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote");
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `k=v k2="v 2"`, or (`legacy`, for ENV) `KEY rest of the line`.
fn pairs(rest: &str, legacy: bool) -> Result<Vec<(String, String)>, &'static str> {
    let first = rest.split_whitespace().next().ok_or("needs KEY=VALUE")?;
    if legacy && !first.contains('=') {
        let value = rest[first.len()..].trim();
        return Ok(vec![(first.to_owned(), unquote(value))]);
    }
    words(rest)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err("expected KEY=VALUE"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(changes: &[&str]) -> Result<ContainerConfig, Error> {
        let mut c = ContainerConfig::default();
        apply_changes(&mut c, &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        Ok(c)
    }

    #[test]
    fn changes_table() {
        let s = |v: &[&str]| Some(v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let c = apply(&[r#"CMD ["sh"]"#]).unwrap();
        assert_eq!(c.cmd, s(&["sh"]));
        let c = apply(&["cmd echo hi there"]).unwrap();
        assert_eq!(c.cmd, s(&["/bin/sh", "-c", "echo hi there"]));
        let c = apply(&[r#"ENTRYPOINT ["/bin/busybox", "sh"]"#]).unwrap();
        assert_eq!(c.entrypoint, s(&["/bin/busybox", "sh"]));
        let c = apply(&["ENV A=1 B=\"two words\"", "ENV C three words", "ENV A=3"]).unwrap();
        assert_eq!(c.env, s(&["B=two words", "C=three words", "A=3"]));
        let c = apply(&["WORKDIR /srv/app", "USER nobody:nogroup"]).unwrap();
        assert_eq!(c.working_dir.as_deref(), Some("/srv/app"));
        assert_eq!(c.user.as_deref(), Some("nobody:nogroup"));
        let c = apply(&[r#"LABEL site=cern "a b"='c d' empty="#]).unwrap();
        let labels = c.labels.unwrap();
        assert_eq!(labels["site"], "cern");
        assert_eq!(labels["a b"], "c d");
        assert_eq!(labels["empty"], "");
        let c = apply(&[r#"VOLUME ["/data", "/logs"]"#, "VOLUME /a /b", "STOPSIGNAL SIGUSR1"]).unwrap();
        let volumes: Vec<_> = c.volumes.unwrap().into_keys().collect();
        assert_eq!(volumes, ["/a", "/b", "/data", "/logs"]);
        assert_eq!(c.stop_signal.as_deref(), Some("SIGUSR1"));
        let c = apply(&["EXPOSE 80 53/udp 8000-8010"]).unwrap();
        let ports: Vec<_> = c.exposed_ports.unwrap().into_keys().collect();
        assert_eq!(ports, ["53/udp", "80/tcp", "8000-8010/tcp"]);

        for bad in [
            "RUN echo no",
            "FROM busybox",
            "EXPOSE",
            "EXPOSE 99999",
            "EXPOSE 80/icmp",
            "LABEL novalue",
            "ENV",
            "WORKDIR",
            "CMD",
            "ENV A=\"unterminated",
            "VOLUME",
            "STOPSIGNAL",
            "STOPSIGNAL A B",
        ] {
            assert!(apply(&[bad]).is_err(), "{bad:?} accepted");
        }
        let err = apply(&["RUN echo no"]).unwrap_err().to_string();
        assert!(err.contains("RUN is not supported by import"), "{err}");
    }

    #[test]
    fn config_json_shape() {
        let cfg = ImageConfig {
            created: Some("2024-01-01T00:00:00Z".into()),
            author: None,
            architecture: "amd64".into(),
            os: "linux".into(),
            config: apply(&[r#"CMD ["sh"]"#]).unwrap(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![Digest::sha256(b"x")],
            },
            history: vec![History {
                comment: Some("msg".into()),
                ..History::default()
            }],
            container: None,
        };
        let v = serde_json::to_value(&cfg).unwrap();
        assert_eq!(v["config"]["Cmd"], serde_json::json!(["sh"]));
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(v["history"][0], serde_json::json!({"comment": "msg"}));
        let back: ImageConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, cfg);
    }
}
