//! Address pools: which addresses of a subnet a network hands out, and which one next. Pure
//! arithmetic; the engine records allocations durably and releases them only when a
//! container is removed (or disconnected), never when it merely stops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error::{Error, Result};

/// One subnet of a network, with the part containers get addresses from and its gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub subnet: IpNet,
    /// `--ip-range` / `--fixed-cidr`: dynamic addresses come from here only.
    pub range: IpNet,
    pub gateway: IpAddr,
}

impl Pool {
    /// Checks and completes a subnet: `range` (default: the subnet) must lie inside it,
    /// `gateway` (default: its first host address) too. Host bits set in `subnet` are
    /// refused, as dockerd refuses them.
    pub fn new(subnet: IpNet, range: Option<IpNet>, gateway: Option<IpAddr>) -> Result<Pool> {
        if subnet.trunc() != subnet {
            return Err(Error::Invalid(format!(
                "invalid subnet {subnet}: it has host bits set (did you mean {}?)",
                subnet.trunc()
            )));
        }
        if host_count(&subnet) < 4 {
            return Err(Error::Invalid(format!("subnet {subnet} is too small for a gateway and a container")));
        }
        let range = match range {
            Some(r) => {
                let r = r.trunc();
                if !subnet.contains(&r) {
                    return Err(Error::Invalid(format!("ip-range {r} is not inside subnet {subnet}")));
                }
                r
            }
            None => subnet,
        };
        let gateway = match gateway {
            Some(g) => {
                if !subnet.contains(&g) {
                    return Err(Error::Invalid(format!("gateway {g} is not inside subnet {subnet}")));
                }
                g
            }
            None => offset(&subnet, 1),
        };
        Ok(Pool { subnet, range, gateway })
    }

    /// The gateway with the subnet's prefix, as the bridge carries it.
    pub fn gateway_net(&self) -> IpNet {
        IpNet::new(self.gateway, self.subnet.prefix_len()).expect("prefix of a valid subnet")
    }

    /// Whether `ip` can be a container's address here: inside the subnet, not its network or
    /// broadcast address, not the gateway.
    pub fn check_static(&self, ip: IpAddr) -> Result<()> {
        if !self.subnet.contains(&ip) {
            return Err(Error::Invalid(format!(
                "no configured subnet or ip-range contain the IP address {ip}"
            )));
        }
        if ip == self.gateway {
            return Err(Error::Invalid(format!("address {ip} is the gateway of subnet {}", self.subnet)));
        }
        if ip == self.subnet.network() || (ip.is_ipv4() && ip == self.subnet.broadcast()) {
            return Err(Error::Invalid(format!(
                "address {ip} is the network or broadcast address of subnet {}",
                self.subnet
            )));
        }
        Ok(())
    }

    /// The first address of the range after `after` (wrapping around, as dockerd hands them
    /// out) for which `taken` is false, skipping the gateway and the subnet's network and
    /// broadcast addresses.
    pub fn allocate(&self, after: Option<IpAddr>, taken: impl Fn(IpAddr) -> bool) -> Result<IpAddr> {
        let size = host_count(&self.range);
        let start = match after {
            Some(a) if self.range.contains(&a) => index_of(&self.range, a) + 1,
            _ => 0,
        };
        // Walk at most the whole range once (capped, so an IPv6 /64 does not loop forever).
        let limit = size.min(1 << 20);
        for i in 0..limit {
            let ip = offset(&self.range, (start + i) % size);
            if self.check_static(ip).is_ok() && !taken(ip) {
                return Ok(ip);
            }
        }
        Err(Error::PoolExhausted {
            network: self.subnet.to_string(),
            version: if self.subnet.addr().is_ipv4() { 4 } else { 6 },
        })
    }
}

/// Whether two subnets share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// How many addresses `net` spans (saturating for huge IPv6 nets).
fn host_count(net: &IpNet) -> u128 {
    let bits = net.max_prefix_len() - net.prefix_len();
    if bits >= 127 { u128::MAX } else { 1u128 << bits }
}

fn index_of(net: &IpNet, ip: IpAddr) -> u128 {
    match (net.network(), ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => u128::from(u32::from(a) - u32::from(n)),
        (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) - u128::from(n),
        _ => 0,
    }
}

fn offset(net: &IpNet, i: u128) -> IpAddr {
    match net.network() {
        IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n).wrapping_add(i as u32))),
        IpAddr::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n).wrapping_add(i))),
    }
}

/// A MAC address for `ip` as dockerd derives it (`02:42:` and the IPv4 address), so a
/// container's MAC is stable with its address; random for IPv6-only endpoints.
pub fn mac_for(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [0x02, 0x42, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(_) => {
            let mut m: [u8; 6] = rand::random();
            m[0] = (m[0] & 0xfe) | 0x02;
            m
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_and_checks() {
        let p = Pool::new(net("10.5.107.0/24"), None, None).unwrap();
        assert_eq!(p.gateway, ip("10.5.107.1"));
        assert_eq!(p.gateway_net(), net("10.5.107.1/24"));
        assert!(p.check_static(ip("10.5.107.101")).is_ok());
        for bad in ["10.5.108.1", "10.5.107.1", "10.5.107.0", "10.5.107.255"] {
            assert!(p.check_static(ip(bad)).is_err(), "{bad}");
        }
        assert!(Pool::new(net("10.5.107.1/24"), None, None).unwrap_err().to_string().contains("host bits"));
        assert!(Pool::new(net("10.5.107.0/24"), Some(net("10.6.0.0/28")), None).is_err());
        assert!(Pool::new(net("10.5.107.0/24"), None, Some(ip("10.5.106.1"))).is_err());
        assert!(Pool::new(net("10.5.107.0/31"), None, None).is_err());
    }

    #[test]
    fn allocation_walks_the_range_and_wraps() {
        let p = Pool::new(net("10.0.3.0/24"), Some(net("10.0.3.144/28")), Some(ip("10.0.3.1"))).unwrap();
        let first = p.allocate(None, |_| false).unwrap();
        assert_eq!(first, ip("10.0.3.144"));
        let next = p.allocate(Some(first), |_| false).unwrap();
        assert_eq!(next, ip("10.0.3.145"));
        // Wraps to the start of the range, skipping what is taken.
        let taken = |a: IpAddr| a == ip("10.0.3.144");
        assert_eq!(p.allocate(Some(ip("10.0.3.159")), taken).unwrap(), ip("10.0.3.145"));
        // The gateway and broadcast are skipped.
        let q = Pool::new(net("192.168.0.0/30"), None, None).unwrap();
        assert_eq!(q.allocate(None, |_| false).unwrap(), ip("192.168.0.2"));
        let err = q.allocate(None, |a| a == ip("192.168.0.2")).unwrap_err();
        assert!(matches!(err, Error::PoolExhausted { version: 4, .. }), "{err}");
        let v6 = Pool::new(net("fd00:1::/64"), None, None).unwrap();
        assert_eq!(v6.allocate(None, |_| false).unwrap(), ip("fd00:1::2"));
    }

    #[test]
    fn overlap_and_mac() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.0.0/16")));
        assert!(overlaps(&net("10.1.0.0/16"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.1.0.0/16"), &net("10.2.0.0/16")));
        assert_eq!(mac_for(ip("10.5.107.101")), [0x02, 0x42, 10, 5, 107, 101]);
        assert_eq!(mac_for(ip("fd00::1"))[0] & 0x03, 0x02);
    }
}
