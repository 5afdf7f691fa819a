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
//! - a container reaching a published port of its own network (through the host's address)
//!   is masqueraded to the bridge's address, so the reply comes back through the host and
//!   the conntrack entry that made the DNAT undoes it.
//!
//! The chains (`nft list table inet berth`):
//!
//! ```text
//! prerouting   nat    hook prerouting  priority dstnat  published ports, from outside
//! output       nat    hook output      priority -100    published ports, from the host itself
//! postrouting  nat    hook postrouting priority srcnat  masquerade: networks, loopback, hairpin
//! forward      filter hook forward     priority filter  established first, then internal drops
//! ```
//!
//! Only the table is Berth's: a `drop` in another table (Docker's iptables `FORWARD` policy)
//! still drops, whatever this table accepts.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
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

/// Replaces table `inet <table>` with `set`, atomically (one `nft` transaction).
///
/// Everything is checked before `nft` runs (interface names, address families, ports), and
/// a script `nft` refuses changes nothing: the previous table stays as it was. After the
/// table is in place, `net.ipv4.conf.<bridge>.route_localnet` is set to 1 on every bridge
/// with a published IPv4 port (so that `127.0.0.1:PORT` can be routed to a container); an
/// error there is returned after the table was applied.
pub fn apply(table: &str, set: &Ruleset) -> Result<()> {
    let script = script(table, set)?;
    run_nft(&script, &format!("replace table inet {table}"))?;
    let mut first_error = None;
    for bridge in loopback_bridges(set) {
        let path = PathBuf::from(format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"));
        if let Err(source) = std::fs::write(&path, "1") {
            tracing::warn!(bridge, error = %source, "failed to set route_localnet");
            first_error.get_or_insert(Error::Io {
                op: "write",
                path,
                source,
            });
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Deletes table `inet <table>`; a missing one is fine.
pub fn remove(table: &str) -> Result<()> {
    check_table_name(table)?;
    let t = json!({"family": "inet", "name": table});
    let script = json!({"nftables": [{"add": {"table": t}}, {"delete": {"table": t}}]});
    run_nft(&script, &format!("delete table inet {table}"))
}

/// Checks that the `nft` program runs (Debian's `nftables` package).
pub fn available() -> Result<()> {
    let nft = nft_program();
    let output = Command::new(&nft)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Nft {
                    reason: "the nft program was not found (install Debian's nftables package)".into(),
                }
            } else {
                Error::Nft {
                    reason: format!("failed to run {}: {e}", nft.display()),
                }
            }
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Nft {
            reason: format!(
                "`{} --version` failed ({}): {}",
                nft.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// Whether another socket on this host holds `port` for `proto` on `host_ip` (on the
/// wildcard addresses, IPv4 and IPv6, when `None`): a bind of our own is refused with
/// `EADDRINUSE`.
///
/// Used to pick free ports for `-P` and to refuse a port that another program listens on.
/// It sees sockets only: a port that [`apply`] already DNATs for a container has no socket,
/// so the caller keeps track of its own published ports. Any failure other than
/// `EADDRINUSE` (an address not on this host, IPv6 disabled, SCTP not loaded) is "not in
/// use": the bind that matters is the other program's.
pub fn port_in_use(host_ip: Option<IpAddr>, port: u16, proto: Proto) -> bool {
    let addrs = match host_ip {
        Some(ip) => vec![ip],
        None => vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()],
    };
    addrs.into_iter().any(|ip| {
        let addr = SocketAddr::new(ip, port);
        let bound = match proto {
            Proto::Tcp => TcpListener::bind(addr).map(drop),
            Proto::Udp => UdpSocket::bind(addr).map(drop),
            Proto::Sctp => bind_sctp(addr),
        };
        matches!(bound, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// Binds (and closes) an SCTP socket on `addr`; std has no SCTP socket.
fn bind_sctp(addr: SocketAddr) -> std::io::Result<()> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, libc::IPPROTO_SCTP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just opened and own alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sockaddr = nix::sys::socket::SockaddrStorage::from(addr);
    nix::sys::socket::bind(fd.as_raw_fd(), &sockaddr).map_err(std::io::Error::from)
}

/// The `nft` program: on `PATH`, else in the sbin directories that a daemon's environment
/// may leave out of it.
fn nft_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nft"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nft"))
}

/// Pipes `script` to `nft -j -f -`; `what` names the change in the error.
fn run_nft(script: &Value, what: &str) -> Result<()> {
    let nft = nft_program();
    let mut child = Command::new(&nft)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft {
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                "the nft program was not found (install Debian's nftables package)".into()
            } else {
                format!("failed to run {}: {e}", nft.display())
            },
        })?;
    let bytes = script.to_string();
    let written = match child.stdin.take() {
        // Dropping stdin after the write closes the pipe, which is nft's end of input.
        Some(mut stdin) => stdin.write_all(bytes.as_bytes()),
        None => Ok(()),
    };
    let output = child.wait_with_output().map_err(|e| Error::Nft {
        reason: format!("failed to wait for {}: {e}", nft.display()),
    })?;
    if !output.status.success() {
        return Err(Error::Nft {
            reason: format!(
                "failed to {what}: nft {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    written.map_err(|e| Error::Nft {
        reason: format!("failed to {what}: writing the script to nft: {e}"),
    })
}

/// The bridges that need `route_localnet` (those with a published IPv4 port), once each.
fn loopback_bridges(set: &Ruleset) -> Vec<&str> {
    let mut bridges: Vec<&str> = set
        .ports
        .iter()
        .filter(|p| p.container_ip.is_ipv4())
        .map(|p| p.bridge.as_str())
        .collect();
    bridges.sort_unstable();
    bridges.dedup();
    bridges
}

/// Table names: what `nft` accepts unquoted, so that the table reads back the same in
/// `nft list ruleset`.
fn check_table_name(table: &str) -> Result<()> {
    let ok = !table.is_empty()
        && table.len() <= 64
        && table.starts_with(|c: char| c.is_ascii_alphabetic())
        && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRule {
            what: "table name",
            value: table.to_owned(),
            reason: "use 1 to 64 ASCII letters, digits, '_' or '-', starting with a letter".into(),
        })
    }
}

/// Interface names as the kernel takes them (`dev_valid_name`: 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:` or white space), and, stricter, no quote, backslash or control
/// character, which would not read back from `nft list`.
fn check_interface(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > 15 {
        Some("an interface name has 1 to 15 bytes")
    } else if name == "." || name == ".." {
        Some("not a valid interface name")
    } else if name
        .chars()
        .any(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':' | '"' | '\\' | '\''))
    {
        Some("an interface name has no white space, control character, '/', ':', quote or backslash")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidRule {
            what: "interface name",
            value: name.to_owned(),
            reason: reason.into(),
        }),
    }
}

/// The comment on a port rule: `container <id>`, with anything but id-like characters
/// replaced and cut to nft's 128 bytes.
fn comment(container: &str) -> String {
    let mut text = String::from("container ");
    for c in container.chars() {
        if text.len() >= 128 {
            break;
        }
        text.push(if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            c
        } else {
            '_'
        });
    }
    text
}

/// `ipv4`/`ipv6` (meta nfproto), `ip`/`ip6` (payload and NAT family) for an address.
fn families(ip: IpAddr) -> (&'static str, &'static str) {
    if ip.is_ipv4() { ("ipv4", "ip") } else { ("ipv6", "ip6") }
}

fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn prefix(net: &IpNet) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
}

/// Checks one port rule; returns its host address, `None` for every local address (an
/// unspecified `0.0.0.0`/`::` counts as none).
fn check_port(port: &PortRule) -> Result<Option<IpAddr>> {
    check_interface(&port.bridge)?;
    let rule = || {
        format!(
            "{}:{}->{}/{}",
            port.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            port.host_port,
            SocketAddr::new(port.container_ip, port.container_port),
            port.proto.as_str()
        )
    };
    if port.host_port == 0 || port.container_port == 0 {
        return Err(Error::InvalidRule {
            what: "published port",
            value: rule(),
            reason: "port 0 cannot be published".into(),
        });
    }
    if port.container_ip.is_unspecified() || port.container_ip.is_loopback() {
        return Err(Error::InvalidRule {
            what: "published port",
            value: rule(),
            reason: "the container address must be a unicast address on a bridge".into(),
        });
    }
    let host_ip = port.host_ip.filter(|ip| !ip.is_unspecified());
    if host_ip.is_some_and(|ip| ip.is_ipv4() != port.container_ip.is_ipv4()) {
        return Err(Error::InvalidRule {
            what: "published port",
            value: rule(),
            reason: "the host address and the container address are of different IP versions".into(),
        });
    }
    Ok(host_ip)
}

/// The whole transaction: the table created (so that the delete finds one), deleted,
/// created again with its chains and rules.
fn script(table: &str, set: &Ruleset) -> Result<Value> {
    check_table_name(table)?;
    for network in &set.networks {
        check_interface(&network.bridge)?;
    }
    let t = json!({"family": "inet", "name": table});
    let mut cmds = vec![
        json!({"add": {"table": t}}),
        json!({"delete": {"table": t}}),
        json!({"add": {"table": t}}),
    ];
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {
            "family": "inet", "table": table, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept",
        }}})
    };
    cmds.push(chain("prerouting", "nat", "prerouting", -100));
    cmds.push(chain("output", "nat", "output", -100));
    cmds.push(chain("postrouting", "nat", "postrouting", 100));
    cmds.push(chain("forward", "filter", "forward", 0));
    let rule = |chain: &str, expr: Vec<Value>, comment: Option<String>| {
        let mut rule = json!({"family": "inet", "table": table, "chain": chain, "expr": expr});
        if let Some(comment) = comment {
            rule["comment"] = Value::String(comment);
        }
        json!({"add": {"rule": rule}})
    };

    // Published ports.
    for port in &set.ports {
        let host_ip = check_port(port)?;
        let (nfproto, family) = families(port.container_ip);
        let daddr = match host_ip {
            Some(ip) => matches("==", payload(family, "daddr"), json!(ip.to_string())),
            None => matches(
                "==",
                json!({"fib": {"result": "type", "flags": ["daddr"]}}),
                json!("local"),
            ),
        };
        let head = [matches("==", meta("nfproto"), json!(nfproto)), daddr];
        let tail = [
            matches("==", payload(port.proto.as_str(), "dport"), json!(port.host_port)),
            json!({"dnat": {
                "family": family,
                "addr": port.container_ip.to_string(),
                "port": port.container_port,
            }}),
        ];
        let mut from_outside = head.to_vec();
        from_outside.extend(tail.iter().cloned());
        cmds.push(rule("prerouting", from_outside, Some(comment(&port.container))));
        let mut from_host = head.to_vec();
        if port.container_ip.is_ipv6() {
            // There is no route_localnet for IPv6: a DNAT of ::1 would only be dropped as a
            // martian on the bridge.
            from_host.push(matches("!=", payload("ip6", "daddr"), json!("::1")));
        }
        from_host.extend(tail.iter().cloned());
        cmds.push(rule("output", from_host, Some(comment(&port.container))));
    }

    // Masquerade.
    for network in set.networks.iter().filter(|n| n.masquerade) {
        for subnet in &network.subnets {
            let (_, family) = families(subnet.addr());
            cmds.push(rule(
                "postrouting",
                vec![
                    matches("==", payload(family, "saddr"), prefix(subnet)),
                    matches("!=", meta("oifname"), json!(network.bridge)),
                    json!({"masquerade": null}),
                ],
                None,
            ));
        }
    }
    for bridge in loopback_bridges(set) {
        // 127.0.0.1:PORT DNATed out of the bridge: give it the bridge's address as source,
        // which the container can answer.
        cmds.push(rule(
            "postrouting",
            vec![
                matches(
                    "==",
                    payload("ip", "saddr"),
                    json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
                ),
                matches("==", meta("oifname"), json!(bridge)),
                json!({"masquerade": null}),
            ],
            None,
        ));
    }
    let mut port_bridges: Vec<&str> = set.ports.iter().map(|p| p.bridge.as_str()).collect();
    port_bridges.sort_unstable();
    port_bridges.dedup();
    for network in set
        .networks
        .iter()
        .filter(|n| port_bridges.contains(&n.bridge.as_str()))
    {
        for subnet in &network.subnets {
            // A container reaching a published port through the host's address, DNATed back
            // onto its own bridge: without this the reply would go straight to it from the
            // other container's address, which it does not expect.
            let (_, family) = families(subnet.addr());
            cmds.push(rule(
                "postrouting",
                vec![
                    matches("==", meta("oifname"), json!(network.bridge)),
                    matches("in", json!({"ct": {"key": "status"}}), json!("dnat")),
                    matches("==", payload(family, "saddr"), prefix(subnet)),
                    json!({"masquerade": null}),
                ],
                None,
            ));
        }
    }

    // Isolation of internal networks.
    cmds.push(rule(
        "forward",
        vec![
            matches("in", json!({"ct": {"key": "state"}}), json!(["established", "related"])),
            json!({"accept": null}),
        ],
        None,
    ));
    for network in set.networks.iter().filter(|n| n.internal) {
        for (from, to) in [("iifname", "oifname"), ("oifname", "iifname")] {
            cmds.push(rule(
                "forward",
                vec![
                    matches("==", meta(from), json!(network.bridge)),
                    matches("!=", meta(to), json!(network.bridge)),
                    json!({"drop": null}),
                ],
                None,
            ));
        }
    }
    Ok(json!({ "nftables": cmds }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(bridge: &str, host_ip: Option<&str>, container_ip: &str) -> PortRule {
        PortRule {
            container: "c0ffee".into(),
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
            host_port: 8080,
            container_ip: container_ip.parse().unwrap(),
            container_port: 80,
            proto: Proto::Tcp,
            bridge: bridge.into(),
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["br0", "berth0", "br-0123456789ab", "veth.1@x"] {
            assert!(check_interface(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "br\"0",
            "br'0",
            "br 0",
            "br/0",
            "a:b",
            ".",
            "..",
            "br-0123456789abc",
            "br\\0",
        ] {
            let err = check_interface(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidRule {
                        what: "interface name",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn table_names() {
        assert!(check_table_name("berth").is_ok());
        assert!(check_table_name("berth-test_2").is_ok());
        for bad in ["", "2berth", "ber th", "berth\"", &"b".repeat(65)] {
            assert!(check_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn comments_are_plain_and_short() {
        assert_eq!(comment("abc123"), "container abc123");
        assert_eq!(comment("a\"b c"), "container a_b_c");
        assert!(comment(&"f".repeat(300)).len() <= 128);
    }

    #[test]
    fn port_checks() {
        assert_eq!(check_port(&port("br0", None, "10.0.0.2")).unwrap(), None);
        assert_eq!(check_port(&port("br0", Some("0.0.0.0"), "10.0.0.2")).unwrap(), None);
        assert_eq!(
            check_port(&port("br0", Some("192.0.2.1"), "10.0.0.2")).unwrap(),
            Some("192.0.2.1".parse().unwrap())
        );
        assert!(check_port(&port("br0", Some("2001:db8::1"), "10.0.0.2")).is_err());
        assert!(check_port(&port("br0", None, "127.0.0.1")).is_err());
        let mut zero = port("br0", None, "10.0.0.2");
        zero.host_port = 0;
        assert!(check_port(&zero).is_err());
    }

    #[test]
    fn script_shape() {
        let set = Ruleset {
            networks: vec![NetworkRules {
                bridge: "br0".into(),
                subnets: vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
                masquerade: true,
                internal: false,
            }],
            ports: vec![port("br0", None, "10.0.0.2"), port("br0", Some("::"), "fd00::2")],
        };
        let script = script("berth", &set).unwrap();
        let cmds = script["nftables"].as_array().unwrap();
        // Table added, deleted, added; four chains.
        assert_eq!(cmds[1]["delete"]["table"]["name"], "berth");
        let chains = cmds.iter().filter(|c| c["add"].get("chain").is_some()).count();
        assert_eq!(chains, 4);
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        let in_chain = |name: &str| rules.iter().filter(|r| r["chain"] == name).count();
        assert_eq!(in_chain("prerouting"), 2);
        assert_eq!(in_chain("output"), 2);
        // Two subnets masqueraded, loopback for the IPv4 port, hairpin for both subnets.
        assert_eq!(in_chain("postrouting"), 5);
        assert_eq!(in_chain("forward"), 1);
        assert_eq!(rules[0]["comment"], "container c0ffee");
        let dnat = &rules[1]["expr"].as_array().unwrap().last().unwrap()["dnat"];
        assert_eq!(dnat["family"], "ip");
        assert_eq!(dnat["addr"], "10.0.0.2");
        assert_eq!(loopback_bridges(&set), vec!["br0"]);
    }

    #[test]
    fn invalid_bridge_is_refused_before_nft() {
        let set = Ruleset {
            networks: vec![],
            ports: vec![port("bridge-name-too-long", None, "10.0.0.2")],
        };
        let err = script("berth", &set).unwrap_err();
        assert!(err.to_string().contains("bridge-name-too-long"), "{err}");
    }

    #[test]
    fn port_in_use_sees_a_listener() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        assert!(port_in_use(Some("127.0.0.1".parse().unwrap()), port, Proto::Tcp));
        assert!(port_in_use(None, port, Proto::Tcp));
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = udp.local_addr().unwrap().port();
        assert!(port_in_use(Some("127.0.0.1".parse().unwrap()), uport, Proto::Udp));
        assert!(port_in_use(None, uport, Proto::Udp));
        drop(tcp);
        assert!(!port_in_use(Some("127.0.0.1".parse().unwrap()), port, Proto::Tcp));
    }
}
