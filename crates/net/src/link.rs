//! Links, addresses and routes through netlink (`netlink-packet-route` over a synchronous
//! `netlink-sys` socket): the host's bridges, a container's veth pair or macvlan/ipvlan link,
//! and the gratuitous ARP that tells the segment a (re)used address moved.
//!
//! Every request asks for an acknowledgement and waits for it, so a call returns only once
//! the kernel has done (or refused) the change. The kernel's extended ACK text ("Unknown
//! device type") is added to the errno text in [`Error::Netlink`].
//!
//! Work inside a container's namespace (its addresses, routes, `lo`, the ARP) runs on one
//! thread that enters the namespace ([`Netns::run`]) with a socket of its own there.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};

use ipnet::IpNet;
use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NlasIterator, Parseable,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressMessageBuffer};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoPortData, InfoPortKind, InfoVeth, InfoVlan,
    IpVlanMode, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, LinkMessageBuffer,
    MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// A synchronous rtnetlink socket, bound to the namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
    /// Receive buffer. 32 KiB: the kernel sizes dump batches to the reader's buffer up to
    /// this, so one datagram always fits.
    buffer: Vec<u8>,
}

/// What `ensure_bridge` found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeState {
    /// It did not exist; it was made (and may be deleted when its network goes).
    Created,
    /// It was there already (a site's `br0`): it is never deleted or reconfigured.
    Existing,
}

/// What `ensure_bridge` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredBridge {
    pub state: BridgeState,
    /// The addresses of the spec it had to add (for an existing bridge, what its owner
    /// did not put there and should get back without).
    pub added: Vec<IpNet>,
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
    /// 0 keeps the kernel's default (the parent's MTU for macvlan/ipvlan, 1500 for veth).
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

/// The longest interface name the kernel takes (`IFNAMSIZ` - 1).
const MAX_NAME_LEN: usize = 15;

impl Netlink {
    /// A socket in the caller's network namespace.
    pub fn open() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(socket_error("open"))?;
        socket.bind_auto().map_err(socket_error("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(socket_error("connect"))?;
        // Best effort, all three: the kernel's error text in NACKs, NACKs without a copy of
        // the request, and dumps filtered by the kernel (address dumps by link index).
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink {
            socket,
            sequence: 0,
            buffer: vec![0; 32 * 1024],
        })
    }

    /// A socket in `ns` (opened on a thread inside it; it stays bound to `ns`).
    pub fn open_in(ns: &Netns) -> Result<Netlink> {
        ns.run(Netlink::open)?
    }

    /// The link named `name`, if any.
    pub fn link(&mut self, name: &str) -> Result<Option<LinkInfo>> {
        Ok(self.get_link(name)?.map(|(info, _)| info))
    }

    /// Makes sure bridge `spec.name` exists, is up and carries `spec.addresses`: creates it
    /// when missing (if `spec.create`), refuses a link of another kind with
    /// [`Error::WrongKind`], adds the addresses it lacks (an address it has with another
    /// prefix counts as present). Never removes or changes anything else of an existing
    /// bridge (its other addresses, routes, MTU, ports).
    ///
    /// A bridge that is created gets a fixed random MAC address (as dockerd does): otherwise
    /// the kernel gives it the lowest MAC of its ports, and the gateway's MAC would change
    /// whenever a container comes or goes.
    pub fn ensure_bridge(&mut self, spec: &BridgeSpec<'_>) -> Result<EnsuredBridge> {
        check_name(spec.name)?;
        let (state, bridge) = match self.get_link(spec.name)? {
            Some((link, _)) => {
                expect_kind(&link, "bridge")?;
                (BridgeState::Existing, link)
            }
            None if !spec.create => {
                return Err(Error::NoSuchLink {
                    name: spec.name.to_string(),
                });
            }
            None => {
                let mut msg = LinkMessage::default();
                msg.header.flags = LinkFlags::Up;
                msg.header.change_mask = LinkFlags::Up;
                msg.attributes.push(LinkAttribute::IfName(spec.name.to_string()));
                if let Some(mtu) = spec.mtu.filter(|&mtu| mtu != 0) {
                    msg.attributes.push(LinkAttribute::Mtu(mtu));
                }
                msg.attributes.push(LinkAttribute::Address(random_mac().to_vec()));
                msg.attributes
                    .push(LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Bridge)]));
                match self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
                    Ok(_) => tracing::debug!(bridge = spec.name, "created bridge"),
                    // Made meanwhile by someone else: then it is theirs, checked as any other.
                    Err(e) if e.errno == Errno::EEXIST => {}
                    Err(e) => return Err(e.into_error("create bridge", spec.name)),
                }
                let Some((link, _)) = self.get_link(spec.name)? else {
                    return Err(Error::NoSuchLink {
                        name: spec.name.to_string(),
                    });
                };
                expect_kind(&link, "bridge")?;
                (BridgeState::Created, link)
            }
        };

        let mut added = Vec::new();
        if !spec.addresses.is_empty() {
            let present = self.addresses_of(bridge.index, spec.name)?;
            for address in spec.addresses {
                // Matched by address alone: a site's bridge that has the gateway with another
                // prefix keeps it as it is, rather than getting a second one.
                match present.iter().find(|p| p.addr() == address.addr()) {
                    Some(p) if p.prefix_len() != address.prefix_len() => {
                        tracing::debug!(bridge = spec.name, has = %p, wanted = %address, "bridge has the address with another prefix; left as it is");
                    }
                    Some(_) => {}
                    None => {
                        self.add_address(bridge.index, spec.name, address)?;
                        added.push(*address);
                    }
                }
            }
        }
        if !bridge.up {
            self.set_up(bridge.index, spec.name)?;
        }
        Ok(EnsuredBridge { state, added })
    }

    /// Deletes link `name`; a missing one is fine.
    pub fn delete_link(&mut self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(()),
            Err(e) if e.errno == Errno::ENODEV => Ok(()),
            Err(e) => Err(e.into_error("delete link", name)),
        }
    }

    /// Makes sure the VLAN link `name` (`PARENT.VID`) exists on its parent and is up; true
    /// when it was created. A missing parent is [`Error::NoSuchLink`]; an existing link of
    /// that name that is not a VLAN is [`Error::WrongKind`].
    pub fn ensure_vlan(&mut self, name: &str) -> Result<bool> {
        check_name(name)?;
        let invalid = || {
            Error::Invalid(format!(
                "invalid VLAN interface name {name:?}: expected PARENT.VID, VID 1-4094"
            ))
        };
        let (parent, vid) = name.rsplit_once('.').ok_or_else(invalid)?;
        let vid: u16 = vid.parse().map_err(|_| invalid())?;
        if parent.is_empty() || !(1..=4094).contains(&vid) {
            return Err(invalid());
        }

        if let Some((link, _)) = self.get_link(name)? {
            expect_kind(&link, "vlan")?;
            if !link.up {
                self.set_up(link.index, name)?;
            }
            return Ok(false);
        }
        let Some((parent_link, _)) = self.get_link(parent)? else {
            return Err(Error::NoSuchLink {
                name: parent.to_string(),
            });
        };
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Link(parent_link.index));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Vlan),
            NlLinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(vid)])),
        ]));
        match self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => {
                tracing::debug!(vlan = name, parent, vid, "created VLAN link");
                Ok(true)
            }
            // Made meanwhile by another caller.
            Err(e) if e.errno == Errno::EEXIST => Ok(false),
            Err(e) => Err(e.into_error("create VLAN link", name)),
        }
    }

    /// A veth pair: `host_name` enslaved to `bridge` and up (MTU `iface.mtu`); the peer made
    /// directly in `ns` as `iface.name`, with its MAC, MTU, addresses and default routes, up,
    /// and `lo` up there too; then a gratuitous ARP for each IPv4 address. Returns the
    /// container side's MAC. On failure the pair is deleted.
    pub fn attach_veth(&mut self, ns: &Netns, bridge: &str, host_name: &str, iface: &Interface<'_>) -> Result<[u8; 6]> {
        check_name(bridge)?;
        check_name(host_name)?;
        check_name(iface.name)?;
        let Some((bridge_link, _)) = self.get_link(bridge)? else {
            return Err(Error::NoSuchLink {
                name: bridge.to_string(),
            });
        };
        expect_kind(&bridge_link, "bridge")?;

        // Both ends in one request, the peer created in `ns` directly (it never shows in the
        // host's namespace, so its name cannot clash there). Only the host end is made up
        // here: the kernel configures the peer before pairing it, so asking for it up fails
        // (veth_open: ENOTCONN); `configure_in` sets it up.
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::IfName(iface.name.to_string()));
        if iface.mtu != 0 {
            peer.attributes.push(LinkAttribute::Mtu(iface.mtu));
        }
        if let Some(mac) = iface.mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        peer.attributes.push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));

        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(host_name.to_string()));
        if iface.mtu != 0 {
            msg.attributes.push(LinkAttribute::Mtu(iface.mtu));
        }
        msg.attributes.push(LinkAttribute::Controller(bridge_link.index));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Veth),
            NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        // Nothing to undo on failure here: with EEXIST the link is someone else's.
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| {
                e.into_error(
                    "create veth pair",
                    &format!("{host_name} (peer {} in {})", iface.name, ns.path().display()),
                )
            })?;

        // Hairpin on the bridge port: a container reaches its own published port through the
        // host's address (DNAT sends it back out the port it came in on), as with dockerd
        // without its userland proxy.
        let mut port = LinkMessage::default();
        port.attributes.push(LinkAttribute::IfName(host_name.to_string()));
        port.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::PortKind(InfoPortKind::Bridge),
            NlLinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
        ]));
        // Port (slave) data is changed by RTM_NEWLINK without NLM_F_CREATE, as `ip link set
        // dev X type bridge_slave hairpin on` does; RTM_SETLINK ignores it.
        if let Err(e) = self.request(RouteNetlinkMessage::NewLink(port), 0) {
            let e = e.into_error("turn on hairpin mode on", host_name);
            let _ = self.delete_link(host_name);
            return Err(e);
        }
        match configure_in(ns, iface, false, Some((&mut *self, host_name))) {
            Ok(mac) => {
                tracing::debug!(veth = host_name, bridge, netns = %ns.path().display(), iface = iface.name, "attached veth pair");
                Ok(mac)
            }
            Err(e) => {
                // Deleting the host end deletes both (configure_in deleted the peer already
                // unless it could not get into the namespace at all).
                if let Err(cleanup) = self.delete_link(host_name) {
                    tracing::warn!(veth = host_name, error = %cleanup, "deleting a veth pair after a failed attach");
                }
                Err(e)
            }
        }
    }

    /// A macvlan or ipvlan link on `parent`, made directly in `ns` and configured as in
    /// [`attach_veth`](Self::attach_veth). Returns its MAC. On failure it is deleted.
    ///
    /// An ipvlan link has its parent's MAC: `iface.mac` is ignored for it. In ipvlan `l3`
    /// mode the default routes go through the device, without a next hop (as dockerd's ipvlan
    /// driver sets them up): one for each family of `iface.gateways`, whose addresses are
    /// not used. No gratuitous ARP is sent in `l3` mode (the link does not do ARP).
    pub fn attach_sublink(
        &mut self,
        ns: &Netns,
        parent: &str,
        kind: SubKind,
        iface: &Interface<'_>,
    ) -> Result<[u8; 6]> {
        check_name(parent)?;
        check_name(iface.name)?;
        let Some((parent_link, _)) = self.get_link(parent)? else {
            return Err(Error::NoSuchLink {
                name: parent.to_string(),
            });
        };

        let (info_kind, info_data, what) = match kind {
            SubKind::Macvlan => (
                InfoKind::MacVlan,
                InfoData::MacVlan(vec![InfoMacVlan::Mode(MacVlanMode::Bridge)]),
                "macvlan",
            ),
            SubKind::Ipvlan { l3 } => (
                InfoKind::IpVlan,
                InfoData::IpVlan(vec![InfoIpVlan::Mode(if l3 { IpVlanMode::L3 } else { IpVlanMode::L2 })]),
                "ipvlan",
            ),
        };
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(iface.name.to_string()));
        msg.attributes.push(LinkAttribute::Link(parent_link.index));
        if iface.mtu != 0 {
            msg.attributes.push(LinkAttribute::Mtu(iface.mtu));
        }
        match (kind, iface.mac) {
            (SubKind::Macvlan, Some(mac)) => msg.attributes.push(LinkAttribute::Address(mac.to_vec())),
            (SubKind::Ipvlan { .. }, Some(_)) => {
                tracing::debug!(
                    parent,
                    iface = iface.name,
                    "an ipvlan link has its parent's MAC; the MAC asked for is not set"
                );
            }
            (_, None) => {}
        }
        msg.attributes.push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(info_kind),
            NlLinkInfo::Data(info_data),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| {
                e.into_error(
                    format!("create {what} link"),
                    &format!("{} on {parent} (in {})", iface.name, ns.path().display()),
                )
            })?;

        let mac = configure_in(ns, iface, kind == SubKind::Ipvlan { l3: true }, None)?;
        tracing::debug!(parent, kind = what, netns = %ns.path().display(), iface = iface.name, "attached link");
        Ok(mac)
    }

    /// The link named `name` and its flags.
    fn get_link(&mut self, name: &str) -> Result<Option<(LinkInfo, LinkFlags)>> {
        check_name(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        // Without the counters: a third of the reply, and of its decoding.
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => match replies.iter().find(|r| r.message_type == RTM_NEWLINK) {
                Some(reply) => parse_link(&reply.payload).map(Some).map_err(|e| {
                    Nack::other(format!("cannot decode the kernel's answer: {e}")).into_error("look up link", name)
                }),
                None => Ok(None),
            },
            Err(e) if e.errno == Errno::ENODEV => Ok(None),
            Err(e) => Err(e.into_error("look up link", name)),
        }
    }

    fn set_up(&mut self, index: u32, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| e.into_error("set up", name))?;
        Ok(())
    }

    /// `lo` up in this socket's namespace (by name: no lookup first).
    fn loopback_up(&mut self) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName("lo".to_string()));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| e.into_error("set up", "lo"))?;
        Ok(())
    }

    /// The addresses of link `index`.
    fn addresses_of(&mut self, index: u32, name: &str) -> Result<Vec<IpNet>> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        let replies = self
            .request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)
            .map_err(|e| e.into_error("list addresses of", name))?;
        let mut found = Vec::new();
        for reply in replies.iter().filter(|r| r.message_type == RTM_NEWADDR) {
            let a = AddressMessageBuffer::new_checked(&reply.payload)
                .and_then(|buffer| AddressMessage::parse(&buffer))
                .map_err(|e| {
                    Nack::other(format!("cannot decode the kernel's answer: {e}")).into_error("list addresses of", name)
                })?;
            if a.header.index != index {
                continue;
            }
            // IFA_LOCAL is the address itself; IPv6 sends only IFA_ADDRESS.
            let local = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(net) = local
                .or(address)
                .and_then(|ip| IpNet::new(ip, a.header.prefix_len).ok())
            {
                found.push(net);
            }
        }
        Ok(found)
    }

    /// Adds `address` to link `index`; one it carries already is fine. IPv6 addresses skip
    /// duplicate address detection (static addresses, as dockerd sets them): otherwise they
    /// are unusable for a second or more after the container starts.
    fn add_address(&mut self, index: u32, name: &str, address: &IpNet) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = address.prefix_len();
        match address {
            IpNet::V4(net) => {
                msg.header.family = AddressFamily::Inet;
                if net.prefix_len() < 31 {
                    msg.attributes.push(AddressAttribute::Broadcast(net.broadcast()));
                }
            }
            IpNet::V6(_) => {
                msg.header.family = AddressFamily::Inet6;
                msg.header.flags = AddressHeaderFlags::Nodad;
            }
        }
        msg.attributes.push(AddressAttribute::Local(address.addr()));
        msg.attributes.push(AddressAttribute::Address(address.addr()));
        match self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => Ok(()),
            Err(e) if e.errno == Errno::EEXIST => Ok(()),
            Err(e) => Err(e.into_error(format!("add address {address} to"), name)),
        }
    }

    /// A default route through `gateway` on link `index`, or through the link itself
    /// (`via_device`, the gateway only giving the family).
    fn add_default_route(&mut self, index: u32, name: &str, gateway: IpAddr, via_device: bool) -> Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match gateway {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        if via_device {
            msg.header.scope = RouteScope::Link;
        } else {
            msg.header.scope = RouteScope::Universe;
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        let op = if via_device {
            format!("add an IPv{} default route via", if gateway.is_ipv4() { 4 } else { 6 })
        } else {
            format!("add a default route through {gateway} via")
        };
        match self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.into_error(op, name)),
        }
    }

    /// Configures link `iface.name` of this socket's namespace (the container's): MTU and
    /// MAC were set at creation; here addresses, up, default routes, `lo`, gratuitous ARPs.
    ///
    /// `host_end` (a veth pair): the host's socket and the pair's host end. The host end's
    /// bridge port starts forwarding only when the kernel's link-watch work has seen its
    /// carrier come up (with this side going up), which is asynchronous; until then the
    /// bridge drops what comes in, the ARP included. Asking for the host end's link state
    /// runs that work on the spot (Linux 6.7 and later; "net: core: synchronize link-watch
    /// when carrier is queried"). Older kernels run it within microseconds as a rule.
    fn configure(
        &mut self,
        iface: &Interface<'_>,
        device_routes: bool,
        host_end: Option<(&mut Netlink, &str)>,
    ) -> Result<[u8; 6]> {
        let Some((link, flags)) = self.get_link(iface.name)? else {
            return Err(Error::NoSuchLink {
                name: iface.name.to_string(),
            });
        };
        let Some(mac) = link.mac else {
            return Err(Error::Netlink {
                op: "read the MAC address of".into(),
                target: iface.name.to_string(),
                reason: "the kernel reports none".into(),
            });
        };
        // A veth peer is down (see attach_veth); a macvlan or ipvlan link was made up.
        if !link.up {
            self.set_up(link.index, iface.name)?;
        }
        for address in iface.addresses {
            self.add_address(link.index, iface.name, address)?;
        }
        for &gateway in iface.gateways {
            self.add_default_route(link.index, iface.name, gateway, device_routes)?;
        }
        self.loopback_up()?;
        if let Some((host, host_name)) = host_end {
            host.get_link(host_name)?;
        }
        if !flags.contains(LinkFlags::Noarp) {
            for address in iface.addresses {
                if let IpAddr::V4(ip) = address.addr() {
                    gratuitous_arp(link.index, mac, ip).map_err(|source| Error::Arp {
                        iface: iface.name.to_string(),
                        addr: ip,
                        source,
                    })?;
                }
            }
        }
        Ok(mac)
    }

    /// Sends `message` and waits for the kernel's answer: the messages it returns (a dump's,
    /// or a `get`'s one), then the ACK, NACK or end of dump.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> std::result::Result<Vec<Reply>, Nack> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(Nack::io)?;

        // Replies are kept as bytes: callers decode only what they use (decoding a whole
        // bridge with netlink-packet-route took 0.3 ms, the kernel's answer a tenth of it).
        let mut replies = Vec::new();
        loop {
            let size = self
                .socket
                .recv(&mut &mut self.buffer[..], libc::MSG_TRUNC)
                .map_err(Nack::io)?;
            if size > self.buffer.len() {
                return Err(Nack::other(format!(
                    "reply of {size} bytes does not fit the {}-byte buffer",
                    self.buffer.len()
                )));
            }
            let mut offset = 0;
            while size - offset >= NLMSG_HDRLEN {
                let bytes = &self.buffer[offset..size];
                let length = ne_u32(bytes, 0) as usize;
                let message_type = u16::from_ne_bytes([bytes[4], bytes[5]]);
                let reply_flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
                let sequence = ne_u32(bytes, 8);
                if length < NLMSG_HDRLEN || length > bytes.len() {
                    return Err(Nack::other(format!("malformed reply (message length {length})")));
                }
                offset += align(length).min(bytes.len());
                if sequence != self.sequence {
                    // A late answer to an earlier request that failed half-way.
                    continue;
                }
                let payload = &bytes[NLMSG_HDRLEN..length];
                match message_type {
                    NLMSG_NOOP => {}
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => {
                        if payload.len() < 4 {
                            return Err(Nack::other("malformed error reply".into()));
                        }
                        let code = ne_u32(payload, 0) as i32;
                        if code == 0 {
                            return Ok(replies);
                        }
                        return Err(Nack {
                            errno: Errno::from_raw(-code),
                            message: extack_message(reply_flags, &payload[4..]),
                        });
                    }
                    _ => replies.push(Reply {
                        message_type,
                        payload: payload.to_vec(),
                    }),
                }
            }
        }
    }
}

/// One message of the kernel's answer: its type (`RTM_NEWLINK`, …) and what follows the
/// netlink header.
struct Reply {
    message_type: u16,
    payload: Vec<u8>,
}

/// Brings `lo` up in `ns`.
pub fn loopback_up(ns: &Netns) -> Result<()> {
    ns.run(|| Netlink::open()?.loopback_up())?
}

/// On a thread in `ns`: [`Netlink::configure`] with a socket there; on failure the link is
/// deleted (for a veth pair, both ends go). `host_end`: the host's socket and the veth's
/// host end, see `configure`.
fn configure_in(
    ns: &Netns,
    iface: &Interface<'_>,
    device_routes: bool,
    host_end: Option<(&mut Netlink, &str)>,
) -> Result<[u8; 6]> {
    ns.run(|| {
        let mut nl = Netlink::open()?;
        let result = nl.configure(iface, device_routes, host_end);
        if result.is_err() {
            if let Err(cleanup) = nl.delete_link(iface.name) {
                tracing::warn!(iface = iface.name, netns = %ns.path().display(), error = %cleanup, "deleting a link after a failed attach");
            }
        }
        result
    })?
}

/// Announces `ip` at `mac` on link `index` of the calling thread's namespace: one broadcast
/// ARP request with sender and target address both `ip` (`arping -U`), which makes
/// neighbours that have an entry for `ip` (a previous container's MAC) update it.
fn gratuitous_arp(index: u32, mac: [u8; 6], ip: Ipv4Addr) -> std::io::Result<()> {
    use nix::sys::socket::{AddressFamily as Af, SockFlag, SockType, socket};

    const ARPHRD_ETHER: u16 = 1;
    const ARPOP_REQUEST: u16 = 1;
    let ip = ip.octets();
    let mut packet = [0u8; 28];
    packet[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    packet[2..4].copy_from_slice(&(libc::ETH_P_IP as u16).to_be_bytes());
    packet[4] = 6;
    packet[5] = 4;
    packet[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    packet[8..14].copy_from_slice(&mac);
    packet[14..18].copy_from_slice(&ip);
    // Target hardware address: zero, as in a request.
    packet[24..28].copy_from_slice(&ip);

    // A datagram packet socket: the kernel adds the Ethernet header (source: the link's MAC).
    let fd = socket(Af::Packet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: sockaddr_ll is a plain C struct for which all-zero bytes are a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: `fd` is an open socket; `packet` and `to` are live for the call and the
    // lengths passed are their sizes.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(&to).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    let result = if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    };
    // Closing a packet socket waits for an RCU grace period (packet_release calls
    // synchronize_net): 15 ms of the 16 an attach took. Nothing depends on the close, so a
    // thread of its own does it (if none can start, the fd is closed here as the closure
    // is dropped).
    let _ = std::thread::Builder::new()
        .name("berth-arp-close".into())
        .spawn(move || drop(fd));
    result
}

/// The length of a netlink message header.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
/// A NACK whose request is not copied back (`NETLINK_CAP_ACK`).
const NLM_F_CAPPED: u16 = 0x100;
/// A NACK with extended-ACK attributes after the request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// The extended-ACK attribute with the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Netlink messages and attributes are 4-byte aligned.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The kernel's error text from a NACK's extended-ACK attributes (`payload`: after the error
/// code, the request header (or the whole request), then the attributes).
fn extack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < NLMSG_HDRLEN {
        return None;
    }
    let request_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        ne_u32(payload, 0) as usize
    };
    let mut attrs = payload.get(align(request_len)..)?;
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            return Some(c_string(&attrs[4..len])).filter(|t| !t.is_empty());
        }
        attrs = attrs.get(align(len)..).unwrap_or_default();
    }
    None
}

/// The kernel's refusal of a request (or a failure to talk to it).
#[derive(Debug)]
struct Nack {
    errno: Errno,
    /// The extended ACK text, or what went wrong on our side.
    message: Option<String>,
}

impl Nack {
    fn io(e: std::io::Error) -> Nack {
        Nack {
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            message: None,
        }
    }

    fn other(message: String) -> Nack {
        Nack {
            errno: Errno::UnknownErrno,
            message: Some(message),
        }
    }

    fn into_error(self, op: impl Into<String>, target: &str) -> Error {
        let reason = match (self.errno, self.message) {
            (Errno::UnknownErrno, Some(message)) => message,
            (errno, Some(message)) => format!("{} ({message})", errno.desc()),
            (errno, None) => errno.desc().to_string(),
        };
        Error::Netlink {
            op: op.into(),
            target: target.to_string(),
            reason,
        }
    }
}

fn socket_error(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Netlink {
        op: format!("{op} socket"),
        target: "rtnetlink".into(),
        reason: e.to_string(),
    }
}

/// The kernel takes names of 1–15 bytes without `/`, `:` or whitespace.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(Error::Invalid(format!("invalid network interface name {name:?}")));
    }
    Ok(())
}

fn expect_kind(link: &LinkInfo, expected: &'static str) -> Result<()> {
    if link.kind == expected {
        return Ok(());
    }
    Err(Error::WrongKind {
        name: link.name.clone(),
        expected,
        actual: if link.kind.is_empty() {
            "network device".to_string()
        } else {
            link.kind.clone()
        },
    })
}

/// A link and its flags from an `RTM_NEWLINK` payload, reading only the attributes
/// [`LinkInfo`] has.
fn parse_link(payload: &[u8]) -> std::result::Result<(LinkInfo, LinkFlags), DecodeError> {
    const IFLA_ADDRESS: u16 = 1;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_MTU: u16 = 4;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;

    let buffer = LinkMessageBuffer::new_checked(payload)?;
    let flags = LinkFlags::from_bits_retain(buffer.flags());
    let mut info = LinkInfo {
        index: buffer.link_index(),
        name: String::new(),
        kind: String::new(),
        mtu: 0,
        mac: None,
        up: flags.contains(LinkFlags::Up),
    };
    for attr in buffer.attributes() {
        let attr = attr?;
        let value = attr.value();
        match attr.kind() {
            IFLA_IFNAME => info.name = c_string(value),
            IFLA_MTU if value.len() >= 4 => info.mtu = ne_u32(value, 0),
            IFLA_ADDRESS => info.mac = <[u8; 6]>::try_from(value).ok(),
            IFLA_LINKINFO => {
                for nested in NlasIterator::new(value) {
                    let nested = nested?;
                    if nested.kind() == IFLA_INFO_KIND {
                        info.kind = c_string(nested.value());
                    }
                }
            }
            _ => {}
        }
    }
    Ok((info, flags))
}

/// A NUL-terminated string attribute.
fn c_string(value: &[u8]) -> String {
    let text = value.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

fn ne_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A random unicast, locally administered MAC address.
fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

impl Netlink {
    /// The addresses of link `name` (with their prefixes); a missing link is
    /// [`Error::NoSuchLink`].
    pub fn addresses(&mut self, name: &str) -> Result<Vec<IpNet>> {
        let link = self
            .link(name)?
            .ok_or_else(|| Error::NoSuchLink { name: name.to_owned() })?;
        self.addresses_of(link.index, name)
    }

    /// Takes `addresses` off link `name`; ones it does not carry, or a missing link, are fine.
    pub fn delete_addresses(&mut self, name: &str, addresses: &[IpNet]) -> Result<()> {
        let Some(link) = self.link(name)? else { return Ok(()) };
        for address in addresses {
            let mut msg = AddressMessage::default();
            msg.header.index = link.index;
            msg.header.prefix_len = address.prefix_len();
            msg.header.family = match address {
                IpNet::V4(_) => AddressFamily::Inet,
                IpNet::V6(_) => AddressFamily::Inet6,
            };
            msg.attributes.push(AddressAttribute::Local(address.addr()));
            msg.attributes.push(AddressAttribute::Address(address.addr()));
            match self.request(RouteNetlinkMessage::DelAddress(msg), 0) {
                Ok(_) => {}
                Err(e) if e.errno == Errno::EADDRNOTAVAIL || e.errno == Errno::ENODEV => {}
                Err(e) => return Err(e.into_error(format!("remove address {address} from"), name)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["eth0", "br0", "dummy0.10", "vethab12cd34ef5"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "vethab12cd34ef56", "a/b", "a b", "a:1", ".", ".."] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn extack_text_after_capped_request() {
        let mut payload = vec![0u8; NLMSG_HDRLEN];
        payload[0..4].copy_from_slice(&40u32.to_ne_bytes());
        let text = b"Unknown device type\0";
        let len = 4 + text.len();
        payload.extend_from_slice(&(len as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        let flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
        assert_eq!(extack_message(flags, &payload).as_deref(), Some("Unknown device type"));
        assert_eq!(extack_message(NLM_F_CAPPED, &payload), None);
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..32 {
            let mac = random_mac();
            assert_eq!(mac[0] & 0x03, 0x02);
        }
    }
}
