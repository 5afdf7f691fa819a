//! Berth's networking, below the engine: nothing here knows the Docker Engine API.
//!
//! - [`netns`]: persistent network namespaces (a bind-mounted nsfs file per container) and
//!   work inside one on a thread of its own.
//! - [`link`]: netlink through `netlink-packet-route` + `netlink-sys`: bridges, veth pairs,
//!   macvlan/ipvlan links, addresses, routes, MTU, and the gratuitous ARP after an address
//!   is set.
//! - [`ipam`]: address pools and allocation (pure; the engine persists the result).
//! - [`nft`]: one nftables table of Berth's own (`inet berth`), rebuilt atomically from the
//!   desired state: masquerade, isolation of internal networks, published ports (DNAT, with
//!   hairpin for loopback), without a proxy process per port.
//! - [`dns`]: the embedded DNS server of a user network: answers container names and aliases,
//!   forwards the rest to the host's resolvers.

pub mod dns;
mod error;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod nft;

pub use error::{Error, ErrorKind, Result};
