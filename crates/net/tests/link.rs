//! Netlink and namespaces against the real kernel (root). Every test works in namespaces of
//! its own, pinned in a temporary directory: its "host" namespace stands in for the host's
//! (bridges, parents, veth host ends live there), so the machine's own interfaces are never
//! touched, and everything goes with the namespaces when the test ends, passed or not.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_net::link::{BridgeSpec, BridgeState, Interface, Netlink, SubKind};
use berth_net::netns::{self, Netns};
use berth_net::{Error, ErrorKind};
use berth_testkit::{Prereq, require};
use ipnet::IpNet;
use serde_json::Value;

/// The namespaces of one test, in a temporary directory; all removed on drop.
struct Lab {
    dir: tempfile::TempDir,
    pinned: Vec<PathBuf>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            dir: tempfile::Builder::new().prefix("berth-t-").tempdir().expect("temp dir"),
            pinned: Vec::new(),
        }
    }

    fn netns(&mut self, name: &str) -> Netns {
        let path = self.dir.path().join(name);
        // Registered first: a half-made one is cleaned up too.
        self.pinned.push(path.clone());
        Netns::create(&path).unwrap_or_else(|e| panic!("create netns {name}: {e}"))
    }

    fn netlink(&self, ns: &Netns) -> Netlink {
        Netlink::open_in(ns).expect("netlink socket in namespace")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut failures = Vec::new();
        for path in &self.pinned {
            if let Err(e) = netns::remove(path) {
                failures.push(format!("remove {}: {e}", path.display()));
            }
        }
        // Netns::create made the directory a private bind mount of itself.
        match nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => failures.push(format!("unmount {}: {e}", self.dir.path().display())),
        }
        if !failures.is_empty() && !std::thread::panicking() {
            panic!("cleanup failed: {}", failures.join("; "));
        }
    }
}

fn ready() -> bool {
    require(&[Prereq::Root, Prereq::Netns])
}

/// Runs `args` in `ns` (`nsenter --net`, not `ip netns exec`); its stdout, or a panic.
fn run_in(ns: &Netns, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .args(args)
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "{args:?} in {}: {}\n{}",
        ns.path().display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `args` succeeds in `ns`.
fn succeeds_in(ns: &Netns, args: &[&str]) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .args(args)
        .output()
        .expect("run nsenter")
        .status
        .success()
}

/// `ip -j ARGS` in `ns`, parsed.
fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let mut full = vec!["ip", "-j"];
    full.extend_from_slice(args);
    serde_json::from_str(&run_in(ns, &full)).expect("ip -j output")
}

/// The one link `name` of `ip -j -d link show`.
fn ip_link(ns: &Netns, name: &str) -> Value {
    ip_json(ns, &["-d", "link", "show", "dev", name])[0].clone()
}

/// `addr/prefix` of every global address of `name`.
fn ip_addrs(ns: &Netns, name: &str) -> Vec<String> {
    let v = ip_json(ns, &["addr", "show", "dev", name]);
    v[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == flag))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn bridge<'a>(name: &'a str, mtu: Option<u32>, addresses: &'a [IpNet], create: bool) -> BridgeSpec<'a> {
    BridgeSpec {
        name,
        mtu,
        addresses,
        create,
    }
}

#[test]
fn bridge_is_created_with_its_mtu_and_addresses_then_found() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    let mut nl = lab.netlink(&host);
    let addresses = nets(&["10.99.0.1/24", "fd00:99::1/64"]);

    let made = nl.ensure_bridge(&bridge("br-t", Some(1400), &addresses, true)).unwrap();
    assert_eq!(made.state, BridgeState::Created);
    assert_eq!(made.added, addresses);
    let link = nl.link("br-t").unwrap().expect("bridge exists");
    assert_eq!((link.kind.as_str(), link.mtu, link.up), ("bridge", 1400, true));
    assert_eq!(ip_addrs(&host, "br-t"), ["10.99.0.1/24", "fd00:99::1/64"]);

    let again = nl.ensure_bridge(&bridge("br-t", Some(1400), &addresses, true)).unwrap();
    assert_eq!(again.state, BridgeState::Existing);
    assert!(again.added.is_empty(), "{again:?}");
    assert_eq!(ip_addrs(&host, "br-t"), ["10.99.0.1/24", "fd00:99::1/64"]);
}

#[test]
fn existing_bridge_is_kept_as_it_is() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    run_in(&host, &["ip", "link", "add", "br0", "mtu", "1300", "type", "bridge"]);
    run_in(&host, &["ip", "addr", "add", "192.168.50.1/24", "dev", "br0"]);
    let mut nl = lab.netlink(&host);

    let addresses = nets(&["10.99.0.1/24"]);
    let found = nl.ensure_bridge(&bridge("br0", Some(9000), &addresses, true)).unwrap();
    assert_eq!(found.state, BridgeState::Existing);
    assert_eq!(found.added, addresses);
    let link = nl.link("br0").unwrap().unwrap();
    assert_eq!((link.mtu, link.up), (1300, true), "MTU untouched, set up");
    assert_eq!(ip_addrs(&host, "br0"), ["192.168.50.1/24", "10.99.0.1/24"]);
    // The address it has, with another prefix: left as it is.
    let addresses = nets(&["192.168.50.1/16"]);
    let kept = nl.ensure_bridge(&bridge("br0", None, &addresses, false)).unwrap();
    assert!(kept.added.is_empty(), "{kept:?}");
    assert_eq!(ip_addrs(&host, "br0"), ["192.168.50.1/24", "10.99.0.1/24"]);
}

#[test]
fn a_link_of_another_kind_or_a_missing_bridge_is_refused() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    // A veth rather than a dummy link: kernels without CONFIG_DUMMY are common in VMs.
    run_in(
        &host,
        &["ip", "link", "add", "br-t", "type", "veth", "peer", "name", "br-t-peer"],
    );
    let mut nl = lab.netlink(&host);

    let err = nl.ensure_bridge(&bridge("br-t", None, &[], true)).unwrap_err();
    assert!(
        matches!(&err, Error::WrongKind { name, expected: "bridge", actual } if name == "br-t" && actual == "veth"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    let err = nl.ensure_bridge(&bridge("br-none", None, &[], false)).unwrap_err();
    assert!(matches!(&err, Error::NoSuchLink { name } if name == "br-none"), "{err}");
    assert_eq!(nl.link("br-none").unwrap(), None);

    nl.delete_link("br-t").unwrap();
    nl.delete_link("br-t").unwrap();
    assert_eq!(nl.link("br-t").unwrap(), None);
    assert_eq!(nl.link("br-t-peer").unwrap(), None, "the peer went with it");
}

#[test]
fn containers_on_one_bridge_reach_each_other_and_announce_themselves() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    let c1 = lab.netns("c1");
    let c2 = lab.netns("c2");
    let mut nl = lab.netlink(&host);
    let gateways = nets(&["10.99.1.1/24", "fd00:99:1::1/64"]);
    nl.ensure_bridge(&bridge("br-t", Some(9000), &gateways, true)).unwrap();
    // So the host namespace records the gratuitous ARPs in its neighbour table.
    run_in(&host, &["sysctl", "-q", "-w", "net.ipv4.conf.br-t.arp_accept=1"]);
    let bridge_mac = nl.link("br-t").unwrap().unwrap().mac;

    let routes = ips(&["10.99.1.1", "fd00:99:1::1"]);
    let a1 = nets(&["10.99.1.2/24", "fd00:99:1::2/64"]);
    let mac1 = [0x02, 0x42, 0x0a, 0x63, 0x01, 0x02];
    let iface1 = Interface {
        name: "eth0",
        mac: Some(mac1),
        mtu: 9000,
        addresses: &a1,
        gateways: &routes,
    };
    assert_eq!(nl.attach_veth(&c1, "br-t", "vetht1", &iface1).unwrap(), mac1);
    let a2 = nets(&["10.99.1.3/24", "fd00:99:1::3/64"]);
    let iface2 = Interface {
        name: "eth0",
        mac: None,
        mtu: 9000,
        addresses: &a2,
        gateways: &routes,
    };
    let mac2 = nl.attach_veth(&c2, "br-t", "vetht2", &iface2).unwrap();
    assert_ne!(mac2, mac1);

    // The container side.
    let link = ip_link(&c1, "eth0");
    assert_eq!(link["address"], mac_text(mac1));
    assert_eq!(link["mtu"], 9000);
    assert!(has_flag(&link, "UP") && has_flag(&link, "LOWER_UP"), "{link}");
    assert_eq!(ip_link(&c2, "eth0")["address"], mac_text(mac2));
    assert_eq!(ip_addrs(&c1, "eth0"), ["10.99.1.2/24", "fd00:99:1::2/64"]);
    assert_eq!(ip_addrs(&c2, "eth0"), ["10.99.1.3/24", "fd00:99:1::3/64"]);
    let v4 = ip_json(&c1, &["route", "show", "default"]);
    assert_eq!(
        (&v4[0]["gateway"], &v4[0]["dev"]),
        (&Value::from("10.99.1.1"), &Value::from("eth0")),
        "{v4}"
    );
    let v6 = ip_json(&c1, &["-6", "route", "show", "default"]);
    assert_eq!(
        (&v6[0]["gateway"], &v6[0]["dev"]),
        (&Value::from("fd00:99:1::1"), &Value::from("eth0")),
        "{v6}"
    );
    assert!(has_flag(&ip_link(&c1, "lo"), "UP"));
    // The host side.
    let host_end = ip_link(&host, "vetht1");
    assert_eq!(
        (&host_end["master"], &host_end["mtu"]),
        (&Value::from("br-t"), &Value::from(9000))
    );
    assert!(has_flag(&host_end, "UP"), "{host_end}");
    assert_eq!(
        nl.link("br-t").unwrap().unwrap().mac,
        bridge_mac,
        "the gateway's MAC does not follow its ports"
    );

    let ping = busybox_ping();
    for (from, to) in [(&c1, "10.99.1.3"), (&c2, "10.99.1.2"), (&c1, "10.99.1.1")] {
        run_in(from, &[ping, "ping", "-c1", "-W2", to]);
    }
    for (from, to) in [(&c1, "fd00:99:1::3"), (&c2, "fd00:99:1::1")] {
        run_in(from, &[ping, "ping6", "-c1", "-W2", to]);
    }

    // The gratuitous ARPs, seen before anything else talked to the host from c2 over IPv4
    // (c2's pings above went to c1 and to the IPv6 gateway).
    let neigh = ip_json(&host, &["neigh", "show", "dev", "br-t", "to", "10.99.1.3"]);
    assert_eq!(neigh[0]["lladdr"], mac_text(mac2), "{neigh}");
    let neigh = ip_json(&host, &["neigh", "show", "dev", "br-t", "to", "10.99.1.2"]);
    assert_eq!(neigh[0]["lladdr"], mac_text(mac1), "{neigh}");
}

#[test]
fn gratuitous_arp_is_seen_by_the_host() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    let c1 = lab.netns("c1");
    let mut nl = lab.netlink(&host);
    nl.ensure_bridge(&bridge("br-t", None, &nets(&["10.99.3.1/24"]), true))
        .unwrap();
    run_in(&host, &["sysctl", "-q", "-w", "net.ipv4.conf.br-t.arp_accept=1"]);
    assert_eq!(run_in(&host, &["ip", "neigh", "show", "dev", "br-t"]).trim(), "");

    let addresses = nets(&["10.99.3.7/24"]);
    let iface = Interface {
        name: "eth0",
        mac: None,
        mtu: 1500,
        addresses: &addresses,
        gateways: &[],
    };
    let mac = nl.attach_veth(&c1, "br-t", "vetht1", &iface).unwrap();
    // No traffic but the announcement: the entry can only come from it.
    let neigh = ip_json(&host, &["neigh", "show", "dev", "br-t"]);
    assert_eq!(neigh.as_array().map(Vec::len), Some(1), "{neigh}");
    assert_eq!(
        (&neigh[0]["dst"], &neigh[0]["lladdr"]),
        (&Value::from("10.99.3.7"), &Value::from(mac_text(mac)))
    );
    // No gateway: no default route.
    assert_eq!(ip_json(&c1, &["route", "show", "default"]), Value::Array(vec![]));
}

#[test]
fn a_failed_attach_leaves_no_veth_behind() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    let c1 = lab.netns("c1");
    let mut nl = lab.netlink(&host);
    let addresses = nets(&["10.99.2.2/24"]);

    // Before anything is made: no bridge.
    let iface = Interface {
        name: "eth0",
        mac: None,
        mtu: 1500,
        addresses: &addresses,
        gateways: &[],
    };
    let err = nl.attach_veth(&c1, "br-none", "vethf1", &iface).unwrap_err();
    assert!(matches!(&err, Error::NoSuchLink { name } if name == "br-none"), "{err}");

    // After the pair is made: a gateway outside the subnet cannot be routed through.
    nl.ensure_bridge(&bridge("br-t", None, &nets(&["10.99.2.1/24"]), true))
        .unwrap();
    let gateways = ips(&["10.77.0.1"]);
    let iface = Interface {
        gateways: &gateways,
        ..iface
    };
    let err = nl.attach_veth(&c1, "br-t", "vethf1", &iface).unwrap_err();
    assert!(
        matches!(&err, Error::Netlink { op, target, .. } if op.contains("default route") && target == "eth0"),
        "{err}"
    );
    assert_eq!(nl.link("vethf1").unwrap(), None);
    assert_eq!(lab.netlink(&c1).link("eth0").unwrap(), None);
    let links = ip_json(&host, &["link", "show", "type", "veth"]);
    assert_eq!(links, Value::Array(vec![]), "{links}");

    // The same names work afterwards.
    nl.attach_veth(&c1, "br-t", "vethf1", &Interface { gateways: &[], ..iface })
        .unwrap();
    // A name in use on the host is refused, and the link that has it is not deleted.
    let err = nl
        .attach_veth(&c1, "br-t", "vethf1", &Interface { name: "eth1", ..iface })
        .unwrap_err();
    assert!(
        matches!(&err, Error::Netlink { reason, .. } if reason.contains("File exists")),
        "{err}"
    );
    assert!(nl.link("vethf1").unwrap().is_some());
}

/// Parents for macvlan/ipvlan links in `host`: veth ends, up (no dummy module needed).
fn add_parents(host: &Netns, names: &[&str]) {
    for name in names {
        let peer = format!("{name}p");
        run_in(
            host,
            &[
                "ip", "link", "add", name, "mtu", "9000", "type", "veth", "peer", "name", &peer,
            ],
        );
        run_in(host, &["ip", "link", "set", name, "up"]);
        run_in(host, &["ip", "link", "set", &peer, "up"]);
    }
}

/// Whether the kernel has link type `kind`: tried with `ip link add probe ARGS` in `host`.
/// A kernel built without the driver (this machine's 6.18 has no 802.1Q, ipvlan or dummy, and
/// no modules to load) is not something an install step can fix, so the test is skipped with
/// the reason printed, under CI too; on a kernel with the driver it runs and can fail.
fn require_link_kind(host: &Netns, kind: &str, args: &[&str]) -> bool {
    let mut full = vec!["ip", "link", "add", "probe0"];
    full.extend_from_slice(args);
    let out = Command::new("nsenter")
        .arg(format!("--net={}", host.path().display()))
        .arg("--")
        .args(&full)
        .output()
        .expect("run nsenter");
    if out.status.success() {
        run_in(host, &["ip", "link", "del", "probe0"]);
        return true;
    }
    let message = format!(
        "skipped: needs the {kind} link type ({})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let _ = writeln!(std::io::stderr(), "{message}");
    false
}

fn attach(
    nl: &mut Netlink,
    ns: &Netns,
    parent: &str,
    kind: SubKind,
    ip: &str,
    mac: Option<[u8; 6]>,
) -> Result<[u8; 6], Error> {
    let addresses = nets(&[ip]);
    let gateways = ips(&["10.99.4.1"]);
    let iface = Interface {
        name: "eth0",
        mac,
        mtu: 1500,
        addresses: &addresses,
        gateways: &gateways,
    };
    nl.attach_sublink(ns, parent, kind, &iface)
}

#[test]
fn macvlan_links_on_a_parent() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    let mut nl = lab.netlink(&host);
    add_parents(&host, &["par0"]);

    let m1 = lab.netns("m1");
    let m2 = lab.netns("m2");
    let mac = [0x02, 0x42, 0x0a, 0x63, 0x04, 0x02];
    assert_eq!(
        attach(&mut nl, &m1, "par0", SubKind::Macvlan, "10.99.4.2/24", Some(mac)).unwrap(),
        mac
    );
    let mac2 = attach(&mut nl, &m2, "par0", SubKind::Macvlan, "10.99.4.3/24", None).unwrap();
    let link = ip_link(&m1, "eth0");
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan", "{link}");
    assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge", "{link}");
    assert_eq!(
        (&link["address"], &link["mtu"]),
        (&Value::from(mac_text(mac)), &Value::from(1500))
    );
    assert!(has_flag(&link, "UP"), "{link}");
    assert_eq!(ip_link(&m2, "eth0")["address"], mac_text(mac2));
    assert_eq!(ip_addrs(&m1, "eth0"), ["10.99.4.2/24"]);
    assert_eq!(ip_json(&m1, &["route", "show", "default"])[0]["gateway"], "10.99.4.1");
    assert!(has_flag(&ip_link(&m1, "lo"), "UP"));
    // Bridge mode: macvlans of one parent reach each other.
    run_in(&m1, &[busybox_ping(), "ping", "-c1", "-W2", "10.99.4.3"]);
    // The host namespace has no trace of them.
    assert_eq!(nl.link("eth0").unwrap(), None);

    // Unknown parents.
    let nobody = lab.netns("nobody");
    let err = attach(&mut nl, &nobody, "nope0", SubKind::Macvlan, "10.99.4.20/24", None).unwrap_err();
    assert!(matches!(&err, Error::NoSuchLink { name } if name == "nope0"), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = nl.ensure_vlan("nope0.10").unwrap_err();
    assert!(matches!(&err, Error::NoSuchLink { name } if name == "nope0"), "{err}");
    for bad in ["par0", "par0.5000", "par0.0", ".10", "par0.x"] {
        assert!(matches!(nl.ensure_vlan(bad), Err(Error::Invalid(_))), "{bad}");
    }

    // A failed configuration deletes the link (the gateway is off the subnet).
    let addresses = nets(&["10.99.4.21/24"]);
    let off = ips(&["10.77.0.1"]);
    let iface = Interface {
        name: "eth0",
        mac: None,
        mtu: 0,
        addresses: &addresses,
        gateways: &off,
    };
    let err = nl
        .attach_sublink(&nobody, "par0", SubKind::Macvlan, &iface)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Netlink { op, .. } if op.contains("default route")),
        "{err}"
    );
    assert_eq!(lab.netlink(&nobody).link("eth0").unwrap(), None);
}

#[test]
fn ipvlan_links_in_l2_and_l3_mode() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    let mut nl = lab.netlink(&host);
    // One parent per mode: the ipvlans of a parent share one.
    add_parents(&host, &["par1", "par2"]);
    if !require_link_kind(&host, "ipvlan", &["link", "par1", "type", "ipvlan"]) {
        return;
    }

    let i2 = lab.netns("i2");
    let parent_mac = nl.link("par1").unwrap().unwrap().mac.unwrap();
    let mac = [0x02, 0x42, 0x0a, 0x63, 0x04, 0x02];
    let got = attach(
        &mut nl,
        &i2,
        "par1",
        SubKind::Ipvlan { l3: false },
        "10.99.4.4/24",
        Some(mac),
    )
    .unwrap();
    assert_eq!(got, parent_mac, "an ipvlan link has its parent's MAC");
    let link = ip_link(&i2, "eth0");
    assert_eq!(
        (&link["linkinfo"]["info_kind"], &link["linkinfo"]["info_data"]["mode"]),
        (&Value::from("ipvlan"), &Value::from("l2")),
        "{link}"
    );
    assert_eq!(ip_addrs(&i2, "eth0"), ["10.99.4.4/24"]);
    assert_eq!(ip_json(&i2, &["route", "show", "default"])[0]["gateway"], "10.99.4.1");

    let i3 = lab.netns("i3");
    attach(&mut nl, &i3, "par2", SubKind::Ipvlan { l3: true }, "10.99.5.5/24", None).unwrap();
    let link = ip_link(&i3, "eth0");
    assert_eq!(link["linkinfo"]["info_data"]["mode"], "l3", "{link}");
    let route = ip_json(&i3, &["route", "show", "default"]);
    assert_eq!(
        (&route[0]["dev"], &route[0]["gateway"]),
        (&Value::from("eth0"), &Value::Null),
        "{route}"
    );
}

#[test]
fn sublinks_on_a_vlan() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    let mut nl = lab.netlink(&host);
    add_parents(&host, &["par0", "par1"]);
    if !require_link_kind(&host, "vlan (802.1Q)", &["link", "par0", "type", "vlan", "id", "99"]) {
        return;
    }

    assert!(nl.ensure_vlan("par0.10").unwrap());
    assert!(!nl.ensure_vlan("par0.10").unwrap());
    let vlan = ip_link(&host, "par0.10");
    assert_eq!(
        (&vlan["linkinfo"]["info_kind"], &vlan["linkinfo"]["info_data"]["id"]),
        (&Value::from("vlan"), &Value::from(10)),
        "{vlan}"
    );
    assert_eq!(vlan["link"], "par0");
    assert!(has_flag(&vlan, "UP"), "{vlan}");
    let v1 = lab.netns("v1");
    attach(&mut nl, &v1, "par0.10", SubKind::Macvlan, "10.99.4.12/24", None).unwrap();
    assert_eq!(ip_addrs(&v1, "eth0"), ["10.99.4.12/24"]);

    // A link of the name that is no VLAN.
    run_in(&host, &["ip", "link", "add", "par9.10", "type", "bridge"]);
    assert!(matches!(
        nl.ensure_vlan("par9.10"),
        Err(Error::WrongKind { expected: "vlan", .. })
    ));

    if require_link_kind(&host, "ipvlan", &["link", "par1", "type", "ipvlan"]) {
        assert!(nl.ensure_vlan("par1.20").unwrap());
        let v2 = lab.netns("v2");
        attach(
            &mut nl,
            &v2,
            "par1.20",
            SubKind::Ipvlan { l3: false },
            "10.99.4.13/24",
            None,
        )
        .unwrap();
        assert_eq!(ip_addrs(&v2, "eth0"), ["10.99.4.13/24"]);
    }
}

#[test]
fn loopback_comes_up() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let ns = lab.netns("c1");
    assert!(!has_flag(&ip_link(&ns, "lo"), "UP"));
    berth_net::link::loopback_up(&ns).unwrap();
    assert!(has_flag(&ip_link(&ns, "lo"), "UP"));
}

#[test]
fn netns_create_run_and_remove_leave_no_mount() {
    if !ready() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("berth-t-").tempdir().unwrap();
    let path = dir.path().join("c1");
    let guard = Lab {
        dir,
        pinned: vec![path.clone()],
    };
    let canonical = std::fs::canonicalize(guard.dir.path()).unwrap();

    let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let ns = Netns::create(&path).unwrap();
    assert!(mount_points().contains(&path), "pinned");
    let dir_mount = mountinfo_line(&canonical).expect("the directory is a mount of itself");
    assert!(!dir_mount.contains("shared:"), "private: {dir_mount}");
    let inside = ns
        .run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        .unwrap();
    assert_ne!(inside, own);
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        own,
        "the caller's thread stays"
    );
    assert_eq!(
        Netns::open(&path)
            .unwrap()
            .run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
            .unwrap(),
        inside
    );
    assert!(
        matches!(Netns::create(&path), Err(Error::Io { .. })),
        "an existing pin is not reused"
    );
    assert!(mount_points().contains(&path), "and it is not removed");
    assert!(succeeds_in(&ns, &["true"]));

    netns::remove(&path).unwrap();
    assert!(!path.exists());
    assert!(!mount_points().contains(&path));
    netns::remove(&path).unwrap();

    // A second one in the same directory, and one whose directory does not exist.
    let second = Netns::create(&guard.dir.path().join("c2")).unwrap();
    netns::remove(second.path()).unwrap();
    assert!(Netns::create(&guard.dir.path().join("missing/c3")).is_err());
    assert!(!guard.dir.path().join("missing").exists());

    drop(guard);
    let left: Vec<_> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(&canonical))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Netns::create + attach_veth, 50 times; the medians go to stderr. Timings are not asserted:
/// `cargo test -p berth-net --test link -- --ignored --nocapture attach_timing`.
#[test]
#[ignore = "a measurement, not a test"]
fn attach_timing() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let host = lab.netns("host");
    let mut nl = lab.netlink(&host);
    nl.ensure_bridge(&bridge("br-t", Some(1500), &nets(&["10.99.0.1/16"]), true))
        .unwrap();
    let gateways = ips(&["10.99.0.1"]);
    let (mut create, mut attach, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..50 {
        let addresses = nets(&[&format!("10.99.1.{}/16", i + 2)]);
        let iface = Interface {
            name: "eth0",
            mac: None,
            mtu: 1500,
            addresses: &addresses,
            gateways: &gateways,
        };
        let path = lab.dir.path().join(format!("c{i}"));
        lab.pinned.push(path.clone());
        let t0 = Instant::now();
        let ns = Netns::create(&path).unwrap();
        let t1 = Instant::now();
        nl.attach_veth(&ns, "br-t", &format!("vetht{i}"), &iface).unwrap();
        let t2 = Instant::now();
        create.push(t1 - t0);
        attach.push(t2 - t1);
        total.push(t2 - t0);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut lookup = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        nl.link("br-t").unwrap();
        lookup.push(t0.elapsed());
    }
    let _ = writeln!(
        std::io::stderr(),
        "median of 50: link(bridge) {:?}",
        median(&mut lookup)
    );
    let _ = writeln!(
        std::io::stderr(),
        "median of 50: Netns::create {:?}, attach_veth {:?}, both {:?}",
        median(&mut create),
        median(&mut attach),
        median(&mut total)
    );
}

/// The program that has `ping` and `ping6` applets: Debian's busybox-static.
fn busybox_ping() -> &'static str {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(candidate).exists() {
            return candidate;
        }
    }
    panic!("needs busybox (Debian package busybox-static) for ping")
}

fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

fn mountinfo_line(mount_point: &Path) -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4).map(Path::new) == Some(mount_point))
        .map(str::to_string)
}
