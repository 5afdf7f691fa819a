//! Links, addresses and routes through netlink (`netlink-packet-route` over a synchronous
//! `netlink-sys` socket): the host's bridges, a container's veth pair or macvlan/ipvlan link,
//! and the gratuitous ARP that tells the segment a (re)used address moved.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// A synchronous rtnetlink socket, bound to the namespace it was opened in.
pub struct Netlink {
    _private: (),
}

/// What `ensure_bridge` found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeState {
    /// It did not exist; it was made (and may be deleted when its network goes).
    Created,
    /// It was there already (a site's `br0`): it is never deleted or reconfigured.
    Existing,
}

/// A bridge a network uses.
#[derive(Debug, Clone)]
pub struct BridgeSpec<'a> {
    pub name: &'a str,
    /// The MTU of a bridge that is created; an existing bridge keeps its own.
    pub mtu: Option<u32>,
    /// Addresses the bridge must carry (the gateways, with the subnet's prefix).
    pub addresses: &'a [IpNet],
    /// Create the bridge when it is missing (false: a missing bridge is [`Error::NoSuchLink`]).
    pub create: bool,
}

/// One link of the host, as `link` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// `bridge`, `veth`, `macvlan`, `vlan`, … (empty for a physical device).
    pub kind: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
}

/// The container's side of an attachment.
#[derive(Debug, Clone)]
pub struct Interface<'a> {
    /// The name inside the container (`eth0`, `eth1`, …).
    pub name: &'a str,
    /// The MAC address to set; `None` keeps the kernel's random one.
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub addresses: &'a [IpNet],
    /// Default routes through these (at most one per family; empty for a secondary network).
    pub gateways: &'a [IpAddr],
}

/// The kind of link `attach_sublink` makes on a parent interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    /// macvlan in `bridge` mode.
    Macvlan,
    /// ipvlan in `l2` mode (`l3` when `l3` is true).
    Ipvlan { l3: bool },
}

impl Netlink {
    /// A socket in the caller's network namespace.
    pub fn open() -> Result<Netlink> {
        Err(Error::Invalid("berth: netlink is not built yet".into()))
    }

    /// A socket in `ns` (opened on a thread inside it; it stays bound to `ns`).
    pub fn open_in(ns: &Netns) -> Result<Netlink> {
        let _ = ns;
        Err(Error::Invalid("berth: netlink is not built yet".into()))
    }

    /// The link named `name`, if any.
    pub fn link(&mut self, name: &str) -> Result<Option<LinkInfo>> {
        let _ = name;
        Err(Error::Invalid("berth: netlink is not built yet".into()))
    }

    /// Makes sure bridge `spec.name` exists, is up and carries `spec.addresses`: creates it
    /// when missing (if `spec.create`), refuses a link of another kind with
    /// [`Error::WrongKind`], adds the addresses it lacks. Never removes or changes anything
    /// else of an existing bridge (its other addresses, routes, MTU, ports).
    pub fn ensure_bridge(&mut self, spec: &BridgeSpec<'_>) -> Result<BridgeState> {
        let _ = spec;
        Err(Error::Invalid("berth: netlink is not built yet".into()))
    }

    /// Deletes link `name`; a missing one is fine.
    pub fn delete_link(&mut self, name: &str) -> Result<()> {
        let _ = name;
        Err(Error::Invalid("berth: netlink is not built yet".into()))
    }

    /// Makes sure the VLAN link `name` (`PARENT.VID`) exists on its parent and is up; true
    /// when it was created. A missing parent is [`Error::NoSuchLink`].
    pub fn ensure_vlan(&mut self, name: &str) -> Result<bool> {
        let _ = name;
        Err(Error::Invalid("berth: netlink is not built yet".into()))
    }

    /// A veth pair: `host_name` enslaved to `bridge` and up (MTU `iface.mtu`); the peer moved
    /// into `ns` as `iface.name`, with its MAC, MTU, addresses and default routes, up; then a
    /// gratuitous ARP for each IPv4 address. Returns the container side's MAC. On failure the
    /// pair is deleted.
    pub fn attach_veth(&mut self, ns: &Netns, bridge: &str, host_name: &str, iface: &Interface<'_>) -> Result<[u8; 6]> {
        let _ = (ns, bridge, host_name, iface);
        Err(Error::Invalid("berth: netlink is not built yet".into()))
    }

    /// A macvlan or ipvlan link on `parent`, moved into `ns` and configured as in
    /// [`attach_veth`](Self::attach_veth). Returns its MAC. On failure it is deleted.
    pub fn attach_sublink(&mut self, ns: &Netns, parent: &str, kind: SubKind, iface: &Interface<'_>) -> Result<[u8; 6]> {
        let _ = (ns, parent, kind, iface);
        Err(Error::Invalid("berth: netlink is not built yet".into()))
    }
}

/// Brings `lo` up in `ns`.
pub fn loopback_up(ns: &Netns) -> Result<()> {
    let _ = ns;
    Err(Error::Invalid("berth: netlink is not built yet".into()))
}
