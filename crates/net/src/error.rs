//! The networking errors.

use std::path::PathBuf;

/// Failures of netlink, namespaces, nftables and the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A netlink request the kernel refused: what was asked, on what, and the kernel's answer.
    #[error("netlink: failed to {op} {target}: {reason}")]
    Netlink { op: String, target: String, reason: String },
    /// A link exists with the name but is not what the caller needs (`br0` is not a bridge).
    #[error("{name} is not a {expected} (it is a {actual})")]
    WrongKind {
        name: String,
        expected: &'static str,
        actual: String,
    },
    /// A link the caller named does not exist (an unknown `parent`).
    #[error("no such network interface {name}")]
    NoSuchLink { name: String },
    /// The gratuitous ARP announcing an address could not be sent.
    #[error("failed to send a gratuitous ARP for {addr} on {iface}: {source}")]
    Arp {
        iface: String,
        addr: std::net::Ipv4Addr,
        source: std::io::Error,
    },
    #[error("failed to enter network namespace {}: {reason}", path.display())]
    Netns { path: PathBuf, reason: String },
    /// `nft` could not run, or refused a script (its message in `reason`).
    #[error("nftables: {reason}")]
    Nft { reason: String },
    /// A value that cannot go into the nftables table (a bridge name with a quote, an IPv6
    /// host address for an IPv4 container), refused before `nft` runs.
    #[error("invalid {what} {value:?} for the nftables table: {reason}")]
    InvalidRule {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    /// An address pool is used up.
    #[error("no available IPv{version} addresses on network {network}")]
    PoolExhausted { network: String, version: u8 },
    #[error("DNS server on {addr}: {reason}")]
    Dns { addr: String, reason: String },
    /// The DNS server could not bind its socket (port 53 taken, address not on any link).
    #[error("DNS server: failed to bind {proto} {addr}: {source}")]
    DnsBind {
        addr: std::net::SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
}

/// The classes of failure callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request cannot work as given (not a bridge, unknown parent, bad address).
    InvalidArgument,
    /// Something on the host failed.
    Internal,
}

impl Error {
    /// What class of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::WrongKind { .. }
            | Error::NoSuchLink { .. }
            | Error::Invalid(_)
            | Error::InvalidRule { .. }
            | Error::PoolExhausted { .. } => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
