//! The embedded DNS server of a user network, listening on the network's gateway address
//! (port 53, UDP and TCP) in the daemon's network namespace; containers on the network get it
//! as their nameserver. It answers A and AAAA queries for the names in its [`Names`] (container
//! names, aliases, short ids; case-insensitive, with or without a trailing dot), and PTR
//! queries for their addresses; everything else is forwarded to the host's resolvers and the
//! answer relayed unchanged (SERVFAIL when none answers).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

/// Names on one network and their addresses; the engine updates it as containers start,
/// stop, connect and disconnect.
pub type Names = Arc<RwLock<BTreeMap<String, Vec<IpAddr>>>>;

/// A running server; stopped when dropped.
pub struct DnsServer {
    _private: (),
}

impl DnsServer {
    /// Binds `addr:53` (UDP and TCP) and serves `names`, forwarding other queries to
    /// `upstreams`. Must be called inside a tokio runtime.
    pub async fn start(addr: IpAddr, names: Names, upstreams: Vec<SocketAddr>) -> Result<DnsServer> {
        let _ = (names, upstreams);
        Err(Error::Dns {
            addr: addr.to_string(),
            reason: "berth: the embedded DNS server is not built yet".into(),
        })
    }
}

/// The nameservers of a resolv.conf file, port 53; empty when it cannot be read.
pub fn host_resolvers(resolv_conf: &Path) -> Vec<SocketAddr> {
    let _ = resolv_conf;
    Vec::new()
}
