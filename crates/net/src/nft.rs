//! Berth's nftables table (`inet berth` by default), driven through `nft -j -f -` (Debian's
//! `nftables`). The whole table is rebuilt from the desired [`Ruleset`] in one transaction, so
//! it is never half-applied, and a daemon start reconciles it by applying its state again.
//!
//! What the table does:
//! - masquerade traffic from a network's subnets leaving through any other interface (when
//!   the network masquerades);
//! - internal networks: drop what is forwarded between their bridge and any other interface;
//! - published ports: DNAT of `host_ip:host_port/proto` (any local address when none) to
//!   `container_ip:container_port`, for traffic arriving from outside (prerouting) and from
//!   the host itself (output), including `127.0.0.1` (hairpin: `route_localnet` on the
//!   bridge and masquerade of loopback sources, set by [`apply`]); forwarded traffic to a
//!   published port is accepted.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The default table name.
pub const TABLE: &str = "berth";

/// A network's part of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    /// The bridge (or parent) interface.
    pub bridge: String,
    pub subnets: Vec<IpNet>,
    /// Masquerade what leaves the subnets for other interfaces (`enable_ip_masquerade`).
    pub masquerade: bool,
    /// No traffic between the bridge and other interfaces (`--internal`).
    pub internal: bool,
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One published port of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    /// The container's id (a comment on the rule, for people reading `nft list`).
    pub container: String,
    /// The host address it is published on; `None` for every address of the host.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
    pub proto: Proto,
    /// The bridge the container is attached through (for the hairpin and forward rules).
    pub bridge: String,
}

/// Everything the table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub networks: Vec<NetworkRules>,
    pub ports: Vec<PortRule>,
}

/// Replaces table `inet <table>` with `set`, atomically (one `nft` transaction). Also turns on
/// `route_localnet` on the bridges of published ports, so `127.0.0.1:PORT` reaches them.
pub fn apply(table: &str, set: &Ruleset) -> Result<()> {
    check_name("table", table)?;
    for n in &set.networks {
        check_name("interface", &n.bridge)?;
    }
    for p in &set.ports {
        check_name("interface", &p.bridge)?;
    }
    let script = script(table, set);
    run_nft(&script)?;
    let mut bridges: Vec<&str> = set
        .ports
        .iter()
        .filter(|p| p.container_ip.is_ipv4())
        .map(|p| p.bridge.as_str())
        .collect();
    bridges.sort_unstable();
    bridges.dedup();
    for b in bridges {
        let path = format!("/proc/sys/net/ipv4/conf/{b}/route_localnet");
        if let Err(e) = std::fs::write(&path, "1") {
            tracing::warn!(path, error = %e, "cannot turn on route_localnet: 127.0.0.1 will not reach published ports");
        }
    }
    Ok(())
}

/// Deletes table `inet <table>`; a missing one is fine.
pub fn remove(table: &str) -> Result<()> {
    check_name("table", table)?;
    let t = json!({"family": "inet", "name": table});
    run_nft(&json!({"nftables": [{"add": {"table": t}}, {"delete": {"table": t}}]}))
}

/// Whether the `nft` binary runs.
pub fn available() -> Result<()> {
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Error::Nft {
            reason: format!("`nft --version` failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        }),
        Err(e) => Err(Error::Nft {
            reason: format!("cannot run nft ({e}); install Debian's nftables package"),
        }),
    }
}

/// Whether something on the host holds `port` (tried by binding it, on `host_ip` or on every
/// address).
pub fn port_in_use(host_ip: Option<IpAddr>, port: u16, proto: Proto) -> bool {
    let ip = host_ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = SocketAddr::new(ip, port);
    match proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).is_err(),
        Proto::Udp => std::net::UdpSocket::bind(addr).is_err(),
        // No SCTP socket in std; nftables rules are the only claim Berth knows of.
        Proto::Sctp => false,
    }
}

/// Table, chain and interface names go into nft's grammar: plain names only.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15.max(if what == "table" { 64 } else { 15 })
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok || (what == "interface" && name.len() > 15) {
        return Err(Error::Nft {
            reason: format!(
                "invalid {what} name {name:?}: letters, digits, '_', '-', '.' only, at most 15 for an interface"
            ),
        });
    }
    Ok(())
}

fn run_nft(script: &Value) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft {
            reason: format!("cannot run nft ({e}); install Debian's nftables package"),
        })?;
    let body = serde_json::to_vec(script).expect("serialisable");
    let write = child.stdin.take().map(|mut stdin| stdin.write_all(&body));
    let out = child.wait_with_output().map_err(|e| Error::Nft {
        reason: format!("nft did not finish: {e}"),
    })?;
    if let Some(Err(e)) = write {
        return Err(Error::Nft {
            reason: format!("cannot feed nft its script: {e}"),
        });
    }
    if !out.status.success() {
        return Err(Error::Nft {
            reason: format!(
                "nft refused the ruleset: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn eq(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn ne(left: Value, right: Value) -> Value {
    json!({"match": {"op": "!=", "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ip" } else { "ip6" }
}

fn prefix(net: &IpNet) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
}

/// The whole transaction: the table made empty, then its chains and rules.
fn script(table: &str, set: &Ruleset) -> Value {
    let t = |v: Value| -> Value {
        let mut v = v;
        v["family"] = json!("inet");
        v["table"] = json!(table);
        v
    };
    let mut cmds = vec![
        json!({"add": {"table": {"family": "inet", "name": table}}}),
        json!({"delete": {"table": {"family": "inet", "name": table}}}),
        json!({"add": {"table": {"family": "inet", "name": table}}}),
    ];
    for (name, kind, hook, prio) in [
        ("prerouting", "nat", "prerouting", -100),
        ("output", "nat", "output", -100),
        ("postrouting", "nat", "postrouting", 100),
        ("forward", "filter", "forward", 0),
    ] {
        cmds.push(json!({"add": {"chain": t(json!({"name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept"}))}}));
    }
    let rule = |chain: &str, expr: Vec<Value>, comment: Option<String>| -> Value {
        let mut r = t(json!({"chain": chain, "expr": expr}));
        if let Some(c) = comment {
            r["comment"] = json!(c);
        }
        json!({"add": {"rule": r}})
    };
    // Forwarding: replies first, then what internal networks may not do.
    if set.networks.iter().any(|n| n.internal) {
        cmds.push(rule(
            "forward",
            vec![
                json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}),
                json!({"accept": null}),
            ],
            None,
        ));
    }
    for n in set.networks.iter().filter(|n| n.internal) {
        for (a, b) in [("iifname", "oifname"), ("oifname", "iifname")] {
            cmds.push(rule(
                "forward",
                vec![
                    eq(meta(a), json!(n.bridge)),
                    ne(meta(b), json!(n.bridge)),
                    json!({"drop": null}),
                ],
                Some(format!("internal network on {}", n.bridge)),
            ));
        }
    }
    for n in set.networks.iter().filter(|n| n.masquerade && !n.internal) {
        for s in &n.subnets {
            cmds.push(rule(
                "postrouting",
                vec![
                    eq(payload(family(s.addr()), "saddr"), prefix(s)),
                    ne(meta("oifname"), json!(n.bridge)),
                    json!({"masquerade": null}),
                ],
                Some(format!("masquerade {s}")),
            ));
        }
    }
    let mut hairpin: Vec<&str> = Vec::new();
    for p in &set.ports {
        let fam = family(p.container_ip);
        let dest = match p.host_ip {
            Some(ip) => eq(payload(family(ip), "daddr"), json!(ip.to_string())),
            None => eq(json!({"fib": {"result": "type", "flags": ["daddr"]}}), json!("local")),
        };
        let mut expr = Vec::new();
        if p.host_ip.is_none() {
            // The rule's family: an IPv4 container gets IPv4 traffic only.
            expr.push(eq(meta("nfproto"), json!(if fam == "ip" { "ipv4" } else { "ipv6" })));
        }
        expr.push(dest);
        expr.push(eq(payload(p.proto.as_str(), "dport"), json!(p.host_port)));
        expr.push(json!({"dnat": {"family": fam, "addr": p.container_ip.to_string(), "port": p.container_port}}));
        let comment = Some(format!("container {}", &p.container[..12.min(p.container.len())]));
        cmds.push(rule("prerouting", expr.clone(), comment.clone()));
        cmds.push(rule("output", expr, comment));
        if fam == "ip" && !hairpin.contains(&p.bridge.as_str()) {
            hairpin.push(&p.bridge);
        }
    }
    for b in hairpin {
        cmds.push(rule(
            "postrouting",
            vec![
                eq(
                    payload("ip", "saddr"),
                    json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
                ),
                eq(meta("oifname"), json!(b)),
                json!({"masquerade": null}),
            ],
            Some(format!("loopback to published ports on {b}")),
        ));
    }
    json!({"nftables": cmds})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_nft_runs() {
        let bad = Ruleset {
            networks: vec![NetworkRules {
                bridge: "br\"0; flush ruleset".into(),
                subnets: vec![],
                masquerade: true,
                internal: false,
            }],
            ports: vec![],
        };
        let e = apply(TABLE, &bad).unwrap_err();
        assert!(e.to_string().contains("invalid interface name"), "{e}");
        let long = Ruleset {
            networks: vec![NetworkRules {
                bridge: "waytoolongname00".into(),
                subnets: vec![],
                masquerade: true,
                internal: false,
            }],
            ports: vec![],
        };
        assert!(apply(TABLE, &long).is_err());
    }

    #[test]
    fn script_shape() {
        let set = Ruleset {
            networks: vec![NetworkRules {
                bridge: "br0".into(),
                subnets: vec!["10.0.3.0/24".parse().unwrap()],
                masquerade: true,
                internal: false,
            }],
            ports: vec![PortRule {
                container: "0123456789abcdef".into(),
                host_ip: None,
                host_port: 8080,
                container_ip: "10.0.3.145".parse().unwrap(),
                container_port: 80,
                proto: Proto::Tcp,
                bridge: "br0".into(),
            }],
        };
        let s = script("berth", &set).to_string();
        assert!(
            s.contains(r#""dnat":{"addr":"10.0.3.145","family":"ip","port":80}"#),
            "{s}"
        );
        assert!(s.contains("masquerade 10.0.3.0/24"), "{s}");
        assert!(s.contains("container 0123456789ab"), "{s}");
        assert!(s.contains("loopback to published ports on br0"), "{s}");
    }
}
