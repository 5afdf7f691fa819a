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

use std::net::IpAddr;

use ipnet::IpNet;

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
pub fn apply(table: &str, set: &Ruleset) -> Result<()> {
    let _ = (table, set);
    Err(Error::Nft {
        reason: "berth: nftables rules are not built yet".into(),
    })
}

/// Deletes table `inet <table>`; a missing one is fine.
pub fn remove(table: &str) -> Result<()> {
    let _ = table;
    Err(Error::Nft {
        reason: "berth: nftables rules are not built yet".into(),
    })
}

/// Whether something on the host holds `port` (tried by binding it).
pub fn port_in_use(host_ip: Option<IpAddr>, port: u16, proto: Proto) -> bool {
    let _ = (host_ip, port, proto);
    false
}
