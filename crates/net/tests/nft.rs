//! The nftables table on a real kernel, in namespaces the test makes:
//!
//! ```text
//!  client ns                host ns                                  container ns
//!  eth0 10.89.0.2/24 ── vk 10.89.0.1/24, 10.89.0.3/24
//!                           br0 10.88.0.1/24 ── vc (port of br0) ── eth0 10.88.0.2/24
//! ```
//!
//! The client has no route to 10.88.0.0/24 unless a test adds one, so a container's traffic
//! reaches it only masqueraded.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_net::nft::{self, NetworkRules, PortRule, Proto, Ruleset};
use support::{Netns, require_nft};

const TABLE: &str = nft::TABLE;
const HOST: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
const HOST2: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const CONTAINER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);

struct Topo {
    host: Netns,
    container: Netns,
    client: Netns,
}

impl Topo {
    fn new() -> Topo {
        let topo = Topo {
            host: Netns::new(),
            container: Netns::new(),
            client: Netns::new(),
        };
        let (h, c, k) = (&topo.host, &topo.container, &topo.client);
        for ns in [h, c, k] {
            // No duplicate address detection on the links to come: a tentative link-local
            // address delays neighbour discovery by a second or two.
            ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/default/accept_dad", "0").expect("turn DAD off"));
        }
        h.ip("link add br0 type bridge");
        h.ip("addr add 10.88.0.1/24 dev br0");
        h.ip("link set br0 up");
        h.ip(&format!("link add vc type veth peer name eth0 netns {}", c.name));
        h.ip("link set vc master br0");
        // With br_netfilter loaded (bridge-nf-call-iptables), a container's packet to its own
        // published port is DNATed in the bridge path and must leave through the port it came
        // in by: the engine sets hairpin mode on container ports, as dockerd does without the
        // userland proxy.
        h.ip("link set vc type bridge_slave hairpin on");
        h.ip("link set vc up");
        c.ip("addr add 10.88.0.2/24 dev eth0");
        c.ip("link set eth0 up");
        c.ip("route add default via 10.88.0.1");
        h.ip(&format!("link add vk type veth peer name eth0 netns {}", k.name));
        h.ip("addr add 10.89.0.1/24 dev vk");
        h.ip("addr add 10.89.0.3/24 dev vk");
        h.ip("link set vk up");
        k.ip("addr add 10.89.0.2/24 dev eth0");
        k.ip("link set eth0 up");
        h.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable forwarding"));
        topo
    }

    /// The same topology in IPv6 too: br0 fd88::1, container fd88::2, vk fd89::1, client
    /// fd89::2 (no duplicate address detection, so the addresses work at once).
    fn with_ipv6(self) -> Topo {
        let (h, c, k) = (&self.host, &self.container, &self.client);
        h.run(|| std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").expect("enable forwarding"));
        h.ip("addr add fd88::1/64 dev br0 nodad");
        h.ip("addr add fd89::1/64 dev vk nodad");
        c.ip("addr add fd88::2/64 dev eth0 nodad");
        c.ip("route add default via fd88::1");
        k.ip("addr add fd89::2/64 dev eth0 nodad");
        self
    }

    fn apply(&self, set: &Ruleset) -> berth_net::Result<()> {
        self.host.run(|| nft::apply(TABLE, set))
    }

    /// The table as `nft -j` lists it, `None` when there is none.
    fn table(&self) -> Option<String> {
        let list = self.host.output("nft", &["list", "tables"]);
        list.contains(&format!("table inet {TABLE}"))
            .then(|| self.host.output("nft", &["-j", "list", "table", "inet", TABLE]))
    }
}

fn network(masquerade: bool, internal: bool) -> NetworkRules {
    NetworkRules {
        bridge: "br0".into(),
        subnets: vec!["10.88.0.0/24".parse().unwrap()],
        masquerade,
        internal,
    }
}

fn port(host_ip: Option<Ipv4Addr>, host_port: u16, container_port: u16, proto: Proto) -> PortRule {
    PortRule {
        container: "c0ffee1234".into(),
        host_ip: host_ip.map(IpAddr::V4),
        host_port,
        container_ip: IpAddr::V4(CONTAINER),
        container_port,
        proto,
        bridge: "br0".into(),
    }
}

/// A server on a thread inside a namespace, stopped when dropped.
struct Server {
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A TCP listener on `addr` in `ns` that answers every connection with `"<text> from
/// <peer address>"` and closes it.
fn tcp_server(ns: &Netns, addr: SocketAddr, text: &'static str) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready, bound) = std::sync::mpsc::channel();
    let flag = stop.clone();
    ns.spawn(move || {
        let listener = TcpListener::bind(addr).expect("bind the test listener");
        listener.set_nonblocking(true).unwrap();
        ready.send(()).unwrap();
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let _ = stream.write_all(format!("{text} from {}", peer.ip()).as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    bound.recv().unwrap();
    Server { stop }
}

/// The UDP counterpart of [`tcp_server`]: one answer per datagram.
fn udp_server(ns: &Netns, addr: SocketAddr, text: &'static str) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready, bound) = std::sync::mpsc::channel();
    let flag = stop.clone();
    ns.spawn(move || {
        let socket = UdpSocket::bind(addr).expect("bind the test UDP socket");
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        ready.send(()).unwrap();
        let mut buf = [0u8; 512];
        while !flag.load(Ordering::SeqCst) {
            if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(format!("{text} from {}", peer.ip()).as_bytes(), peer);
            }
        }
    });
    bound.recv().unwrap();
    Server { stop }
}

/// What a TCP server at `addr` says to a client in `ns`.
fn tcp_get(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    ns.run(|| {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(1500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })
}

fn udp_get(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    ns.run(|| {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(Duration::from_millis(1500)))?;
        socket.send(b"ping")?;
        let mut buf = [0u8; 512];
        let len = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    })
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[test]
fn published_tcp_port_from_outside_from_the_host_and_from_loopback() {
    if !require_nft() {
        return;
    }
    let topo = Topo::new();
    let _server = tcp_server(&topo.container, at(CONTAINER, 80), "hello");
    let set = Ruleset {
        networks: vec![network(true, false)],
        ports: vec![port(None, 8080, 80, Proto::Tcp)],
    };
    topo.apply(&set).unwrap();

    // From outside: DNAT only, the container sees the client's own address.
    assert_eq!(tcp_get(&topo.client, at(HOST, 8080)).unwrap(), "hello from 10.89.0.2");
    assert_eq!(tcp_get(&topo.client, at(HOST2, 8080)).unwrap(), "hello from 10.89.0.2");
    // From the host, through its own addresses.
    assert_eq!(tcp_get(&topo.host, at(HOST, 8080)).unwrap(), "hello from 10.89.0.1");
    assert_eq!(tcp_get(&topo.host, at(GATEWAY, 8080)).unwrap(), "hello from 10.88.0.1");
    // Through loopback: route_localnet on the bridge, the source masqueraded to the bridge.
    let localnet = topo
        .host
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/br0/route_localnet").unwrap());
    assert_eq!(localnet.trim(), "1");
    assert_eq!(
        tcp_get(&topo.host, at(Ipv4Addr::LOCALHOST, 8080)).unwrap(),
        "hello from 10.88.0.1"
    );
    // The container reaching its own published port through the host's address: hairpin,
    // masqueraded to the bridge's address.
    assert_eq!(
        tcp_get(&topo.container, at(HOST, 8080)).unwrap(),
        "hello from 10.88.0.1"
    );

    let listing = topo.host.output("nft", &["list", "table", "inet", TABLE]);
    assert!(listing.contains("comment \"container c0ffee1234\""), "{listing}");
}

#[test]
fn published_ipv6_port() {
    if !require_nft() {
        return;
    }
    let topo = Topo::new().with_ipv6();
    let container: SocketAddr = "[fd88::2]:80".parse().unwrap();
    let _server = tcp_server(&topo.container, container, "hello6");
    let set = Ruleset {
        networks: vec![NetworkRules {
            subnets: vec!["fd88::/64".parse().unwrap()],
            ..network(false, false)
        }],
        ports: vec![PortRule {
            container_ip: container.ip(),
            ..port(None, 8080, 80, Proto::Tcp)
        }],
    };
    topo.apply(&set).unwrap();
    let host: SocketAddr = "[fd89::1]:8080".parse().unwrap();
    assert_eq!(tcp_get(&topo.client, host).unwrap(), "hello6 from fd89::2");
    assert_eq!(tcp_get(&topo.host, host).unwrap(), "hello6 from fd89::1");
    // ::1 is left alone: IPv6 has no route_localnet.
    assert!(tcp_get(&topo.host, "[::1]:8080".parse().unwrap()).is_err());
}

#[test]
fn published_udp_port() {
    if !require_nft() {
        return;
    }
    let topo = Topo::new();
    let _server = udp_server(&topo.container, at(CONTAINER, 5353), "pong");
    topo.apply(&Ruleset {
        networks: vec![network(true, false)],
        ports: vec![port(None, 5300, 5353, Proto::Udp)],
    })
    .unwrap();
    assert_eq!(udp_get(&topo.client, at(HOST, 5300)).unwrap(), "pong from 10.89.0.2");
    assert_eq!(
        udp_get(&topo.host, at(Ipv4Addr::LOCALHOST, 5300)).unwrap(),
        "pong from 10.88.0.1"
    );
    // Only UDP is published.
    assert!(tcp_get(&topo.client, at(HOST, 5300)).is_err());
}

#[test]
fn host_ip_restricts_the_address() {
    if !require_nft() {
        return;
    }
    let topo = Topo::new();
    let _server = tcp_server(&topo.container, at(CONTAINER, 80), "hello");
    topo.apply(&Ruleset {
        networks: vec![network(true, false)],
        ports: vec![port(Some(HOST), 8081, 80, Proto::Tcp)],
    })
    .unwrap();
    assert_eq!(tcp_get(&topo.client, at(HOST, 8081)).unwrap(), "hello from 10.89.0.2");
    assert!(tcp_get(&topo.client, at(HOST2, 8081)).is_err());
    assert!(tcp_get(&topo.host, at(Ipv4Addr::LOCALHOST, 8081)).is_err());
}

#[test]
fn masquerade_is_the_source_seen_outside() {
    if !require_nft() {
        return;
    }
    let topo = Topo::new();
    let _outside = tcp_server(&topo.client, at(CLIENT, 9000), "outside");
    // Without masquerade the client cannot answer 10.88.0.2 (no route back).
    topo.apply(&Ruleset {
        networks: vec![network(false, false)],
        ports: vec![],
    })
    .unwrap();
    assert!(tcp_get(&topo.container, at(CLIENT, 9000)).is_err());
    topo.apply(&Ruleset {
        networks: vec![network(true, false)],
        ports: vec![],
    })
    .unwrap();
    assert_eq!(
        tcp_get(&topo.container, at(CLIENT, 9000)).unwrap(),
        "outside from 10.89.0.1"
    );
}

#[test]
fn internal_network_is_cut_off() {
    if !require_nft() {
        return;
    }
    let topo = Topo::new();
    let _outside = tcp_server(&topo.client, at(CLIENT, 9000), "outside");
    let _inside = tcp_server(&topo.container, at(CONTAINER, 80), "inside");
    topo.client.ip("route add 10.88.0.0/24 via 10.89.0.1");
    topo.apply(&Ruleset {
        networks: vec![network(true, false)],
        ports: vec![],
    })
    .unwrap();
    // Both ways work while the network is not internal...
    assert!(tcp_get(&topo.container, at(CLIENT, 9000)).is_ok());
    assert!(tcp_get(&topo.client, at(CONTAINER, 80)).is_ok());
    topo.apply(&Ruleset {
        networks: vec![network(true, true)],
        ports: vec![],
    })
    .unwrap();
    // ...and neither once it is; the gateway itself stays reachable.
    assert!(tcp_get(&topo.container, at(CLIENT, 9000)).is_err());
    assert!(tcp_get(&topo.client, at(CONTAINER, 80)).is_err());
    let _gateway = tcp_server(&topo.host, at(GATEWAY, 7000), "gateway");
    assert_eq!(
        tcp_get(&topo.container, at(GATEWAY, 7000)).unwrap(),
        "gateway from 10.88.0.2"
    );
}

#[test]
fn apply_replaces_and_remove_deletes() {
    if !require_nft() {
        return;
    }
    let topo = Topo::new();
    let _server = tcp_server(&topo.container, at(CONTAINER, 80), "hello");
    let both = Ruleset {
        networks: vec![network(true, false)],
        ports: vec![port(None, 8080, 80, Proto::Tcp), port(None, 8082, 80, Proto::Tcp)],
    };
    topo.apply(&both).unwrap();
    assert!(tcp_get(&topo.client, at(HOST, 8080)).is_ok());
    assert!(tcp_get(&topo.client, at(HOST, 8082)).is_ok());
    let one = Ruleset {
        networks: vec![network(true, false)],
        ports: vec![port(None, 8080, 80, Proto::Tcp)],
    };
    topo.apply(&one).unwrap();
    assert!(tcp_get(&topo.client, at(HOST, 8080)).is_ok());
    assert!(tcp_get(&topo.client, at(HOST, 8082)).is_err());
    // Applying the same set again changes nothing.
    let before = topo.table().unwrap();
    topo.apply(&one).unwrap();
    assert_eq!(strip_handles(&topo.table().unwrap()), strip_handles(&before));

    topo.host.run(|| nft::remove(TABLE)).unwrap();
    assert_eq!(topo.table(), None);
    assert!(tcp_get(&topo.client, at(HOST, 8080)).is_err());
    // Removing a missing table is fine.
    topo.host.run(|| nft::remove(TABLE)).unwrap();
}

#[test]
fn invalid_ruleset_is_refused_and_changes_nothing() {
    if !require_nft() {
        return;
    }
    let topo = Topo::new();
    let _server = tcp_server(&topo.container, at(CONTAINER, 80), "hello");
    let good = Ruleset {
        networks: vec![network(true, false)],
        ports: vec![port(None, 8080, 80, Proto::Tcp)],
    };
    topo.apply(&good).unwrap();
    let before = topo.table().unwrap();

    for bridge in ["br\"0", "bridge-name-is-too-long"] {
        let mut bad = good.clone();
        bad.networks.push(NetworkRules {
            bridge: bridge.into(),
            ..network(true, false)
        });
        bad.ports.clear();
        let err = topo.apply(&bad).unwrap_err();
        assert_eq!(err.kind(), berth_net::ErrorKind::InvalidArgument);
        let message = err.to_string();
        assert!(message.contains("interface name"), "{message}");
        assert!(message.contains(&format!("{bridge:?}")), "{message}");
    }
    let mut mixed = good.clone();
    mixed.ports.push(PortRule {
        host_ip: Some("fd00::1".parse().unwrap()),
        ..port(None, 8083, 80, Proto::Tcp)
    });
    let err = topo.apply(&mixed).unwrap_err();
    assert!(err.to_string().contains("different IP versions"), "{err}");

    assert_eq!(topo.table().unwrap(), before);
    assert!(tcp_get(&topo.client, at(HOST, 8080)).is_ok());
}

/// The `handle` numbers change with every rebuild; the rest must not.
fn strip_handles(json: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("handle");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value.to_string()
}

/// How long one `apply` takes with 1, 10 and 100 published ports (median of 15); printed,
/// never asserted. `cargo test -p berth-net --test nft -- --ignored --nocapture apply_timings`
#[test]
#[ignore = "a measurement, not a test"]
fn apply_timings() {
    if !require_nft() {
        return;
    }
    let topo = Topo::new();
    for count in [1u16, 10, 100] {
        let set = Ruleset {
            networks: vec![network(true, false)],
            ports: (0..count).map(|i| port(None, 10000 + i, 80, Proto::Tcp)).collect(),
        };
        let mut times: Vec<Duration> = (0..15)
            .map(|_| {
                let start = Instant::now();
                topo.apply(&set).unwrap();
                start.elapsed()
            })
            .collect();
        times.sort();
        let _ = writeln!(
            std::io::stderr(),
            "apply with {count:>3} port rules: median {:?} (min {:?}, max {:?})",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
}
