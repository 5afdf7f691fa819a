//! Networks: the predefined `bridge`, `host` and `none`, user networks (bridge, macvlan,
//! ipvlan), the addresses containers hold on them, and the wiring of a container's network
//! namespace at start.
//!
//! ```text
//! <data-root>/networks/<id>.json   one record per network, replaced atomically; the default
//!                                  bridge's is refreshed from the daemon's flags at open
//! <exec-root>/netns/<container-id> the pinned network namespace of a running container
//!                                  (made at start, removed after the exit)
//! <exec-root>/nft-applied          present while Berth's nftables table may exist
//! ```
//!
//! Addresses are allocated at create and kept in the container's record (its `endpoints`),
//! so an allocation is as durable as the container: a stop keeps it, a restart (by hand, by
//! the restart policy or after a daemon restart) re-applies it, only removal (or `network
//! disconnect`) releases it. Which addresses are taken is derived from the records, so a
//! crash can never leave an allocation without its container.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_net::dns::{DnsServer, Names};
use berth_net::ipam::{self, Pool};
use berth_net::link::{BridgeSpec, BridgeState, Interface, Netlink, SubKind};
use berth_net::netns::{self, Netns};
use berth_net::nft::{self, NetworkRules, PortRule, Proto, Ruleset};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::containers::settings::{EndpointRequest, PortRequest, parse_mac};
use crate::error::{Error, Result};
use crate::events::{Event, Events};

/// The default bridge's interface when `--bridge` is not given.
const DEFAULT_BRIDGE: &str = "berth0";
/// Ports `-P` and `-p CONTAINER_PORT` pick from (dockerd's ephemeral range).
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49153..=60999;
/// Linux's limit on interface names (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// One subnet of a network, completed (the gateway is always known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Subnet {
    pub(crate) subnet: IpNet,
    #[serde(default)]
    pub(crate) ip_range: Option<IpNet>,
    pub(crate) gateway: IpAddr,
}

impl Subnet {
    fn pool(&self) -> Pool {
        Pool::new(self.subnet, self.ip_range, Some(self.gateway)).expect("checked when the network was made")
    }
}

/// What is kept about one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetworkRecord {
    pub(crate) id: String,
    pub(crate) name: String,
    /// `bridge`, `macvlan`, `ipvlan`, `host`, `null`.
    pub(crate) driver: String,
    pub(crate) created: String,
    #[serde(default)]
    pub(crate) internal: bool,
    #[serde(default)]
    pub(crate) attachable: bool,
    #[serde(default)]
    pub(crate) ipv6: bool,
    #[serde(default)]
    pub(crate) subnets: Vec<Subnet>,
    /// Whether the subnets were given (inspect shows `IPAM.Config` as given).
    #[serde(default)]
    pub(crate) options: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// The bridge (bridge driver) or the parent (macvlan, ipvlan).
    #[serde(default)]
    pub(crate) interface: String,
    /// The containers' MTU; 0: 1500.
    #[serde(default)]
    pub(crate) mtu: u32,
    #[serde(default)]
    pub(crate) masquerade: bool,
    /// `com.docker.network.bridge.host_binding_ipv4`: the default host address of published
    /// ports.
    #[serde(default)]
    pub(crate) host_binding_ipv4: Option<IpAddr>,
    /// Berth made the interface (a bridge or a VLAN link): removing the network deletes it.
    #[serde(default)]
    pub(crate) created_link: bool,
    /// Addresses Berth added to an existing bridge: removing the network takes them off.
    #[serde(default)]
    pub(crate) added_addresses: Vec<IpNet>,
}

impl NetworkRecord {
    pub(crate) fn predefined(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }

    fn mtu(&self) -> u32 {
        if self.mtu == 0 { 1500 } else { self.mtu }
    }

    /// The embedded DNS server serves user bridge networks, on the first gateway.
    fn has_dns(&self) -> bool {
        self.driver == "bridge" && self.name != "bridge"
    }

    fn sub_kind(&self) -> Option<SubKind> {
        match self.driver.as_str() {
            "macvlan" => Some(SubKind::Macvlan),
            "ipvlan" => Some(SubKind::Ipvlan {
                l3: self.options.get("ipvlan_mode").is_some_and(|m| m == "l3"),
            }),
            _ => None,
        }
    }
}

/// A container's place on one network, kept in its record from create to removal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Endpoint {
    pub(crate) network_id: String,
    pub(crate) endpoint_id: String,
    /// With the subnet's prefix.
    pub(crate) ipv4: Option<IpNet>,
    pub(crate) ipv6: Option<IpNet>,
    pub(crate) mac: String,
    pub(crate) aliases: Vec<String>,
    /// What the user asked for (`IPAMConfig` in inspect).
    pub(crate) request: EndpointRequest,
    /// The interface inside the container (`eth0`, …) while it runs.
    #[serde(default)]
    pub(crate) ifname: String,
}

impl Endpoint {
    fn ips(&self) -> Vec<IpAddr> {
        self.ipv4.iter().chain(self.ipv6.iter()).map(|n| n.addr()).collect()
    }

    /// The number in `ethN`.
    fn if_index(&self) -> Option<usize> {
        self.ifname.strip_prefix("eth")?.parse().ok()
    }
}

/// A published port as bound at the last start (`NetworkSettings.Ports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Published {
    pub(crate) container_port: u16,
    pub(crate) proto: String,
    pub(crate) host_ip: String,
    pub(crate) host_port: u16,
}

/// A `POST /networks/create` request, parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct CreateRequest {
    pub(crate) name: String,
    pub(crate) driver: String,
    pub(crate) internal: bool,
    pub(crate) attachable: bool,
    pub(crate) ipv6: bool,
    /// `(subnet, ip_range, gateway)` as given.
    pub(crate) ipam: Vec<(Option<IpNet>, Option<IpNet>, Option<IpAddr>)>,
    pub(crate) options: BTreeMap<String, String>,
    pub(crate) labels: BTreeMap<String, String>,
}

/// What a container's start needs wired.
pub(crate) struct Wiring<'a> {
    pub(crate) id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) endpoints: &'a [Endpoint],
    pub(crate) ports: &'a [PortRequest],
    pub(crate) publish_all: bool,
    pub(crate) exposed: &'a [String],
}

/// What a wired start gives the container.
pub(crate) struct Wired {
    pub(crate) netns: PathBuf,
    pub(crate) published: Vec<Published>,
    /// The embedded DNS server, for resolv.conf (when the first network has one).
    pub(crate) nameserver: Option<IpAddr>,
}

/// The embedded DNS of one network.
struct NetDns {
    names: Names,
    _server: DnsServer,
}

/// Every network of the daemon.
pub(crate) struct Networks {
    dir: PathBuf,
    netns_dir: PathBuf,
    marker: PathBuf,
    config: Config,
    records: Mutex<BTreeMap<String, NetworkRecord>>,
    events: Arc<Events>,
    /// Published ports of running containers, by container id.
    ports: Mutex<BTreeMap<String, Vec<PortRule>>>,
    /// Bumped whenever the table's network part changes; `applied` is the generation in
    /// the kernel (`u64::MAX`: none yet).
    generation: AtomicU64,
    applied: AtomicU64,
    /// Serialises `nft` runs, so the last state always wins.
    firewall: Mutex<()>,
    dns: Mutex<HashMap<String, NetDns>>,
    forwarding: AtomicBool,
    /// Serialises link changes of networks (bridge creation, removal).
    links: Mutex<()>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `aa:bb:…`.
pub(crate) fn format_mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn proto(s: &str) -> Proto {
    match s {
        "udp" => Proto::Udp,
        "sctp" => Proto::Sctp,
        _ => Proto::Tcp,
    }
}

/// The host end of a container's `index`th veth: derived from its id, so a crashed daemon's
/// leftovers are found again.
fn host_ifname(id: &str, index: usize) -> String {
    format!("bv{}{index}", &id[..10.min(id.len())])
}

impl Networks {
    /// Reads the records, completes the predefined networks (the default bridge from the
    /// daemon's flags) and checks them.
    pub(crate) fn open(config: &Config, events: Arc<Events>) -> Result<Networks> {
        let dir = config.data_root.join("networks");
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let netns_dir = config.exec_root.join("netns");
        std::fs::create_dir_all(&netns_dir).map_err(io_err("create directory", &netns_dir))?;
        let mut records = BTreeMap::new();
        for e in std::fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let path = e.map_err(io_err("read directory", &dir))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                // A temp file of an interrupted write.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let data = std::fs::read(&path).map_err(io_err("read", &path))?;
            match serde_json::from_slice::<NetworkRecord>(&data) {
                Ok(r) => {
                    records.insert(r.id.clone(), r);
                }
                Err(e) => tracing::error!(path = %path.display(), error = %e, "skipping an unreadable network record"),
            }
        }
        let nets = Networks {
            marker: config.exec_root.join("nft-applied"),
            dir,
            netns_dir,
            config: config.clone(),
            records: Mutex::new(records),
            events,
            ports: Mutex::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
            applied: AtomicU64::new(u64::MAX),
            firewall: Mutex::new(()),
            dns: Mutex::new(HashMap::new()),
            forwarding: AtomicBool::new(false),
            links: Mutex::new(()),
        };
        for (name, driver) in [("host", "host"), ("none", "null")] {
            if nets.find(name).is_none() {
                nets.store(NetworkRecord {
                    id: new_id(),
                    name: name.into(),
                    driver: driver.into(),
                    created: berth_runtime::now_rfc3339(),
                    internal: false,
                    attachable: false,
                    ipv6: false,
                    subnets: Vec::new(),
                    options: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    interface: String::new(),
                    mtu: 0,
                    masquerade: false,
                    host_binding_ipv4: None,
                    created_link: false,
                    added_addresses: Vec::new(),
                })?;
            }
        }
        nets.refresh_default_bridge()?;
        Ok(nets)
    }

    /// The default `bridge` network from `--bridge`, `--bip`, `--fixed-cidr`, `--mtu`,
    /// `--ipv6`, `--ip-masq`; gone with `--bridge none`.
    fn refresh_default_bridge(&self) -> Result<()> {
        let old = self.find("bridge");
        let iface = self.config.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
        if iface == "none" {
            if let Some(old) = old {
                self.delete_record(&old.id)?;
            }
            return Ok(());
        }
        check_ifname(&iface)?;
        let user_bridge = self.config.bridge.is_some();
        let mut existing: Option<IpNet> = None;
        if user_bridge && self.config.bip.is_none() {
            existing = link_ipv4(&iface)?;
        }
        let (subnet, gateway) = match (self.config.bip, existing) {
            (Some(bip), _) | (None, Some(bip)) => (bip.trunc(), bip.addr()),
            (None, None) => match old
                .as_ref()
                .and_then(|o| o.subnets.first())
                .filter(|s| s.subnet.addr().is_ipv4())
            {
                Some(s) if old.as_ref().is_some_and(|o| o.interface == iface) => (s.subnet, s.gateway),
                _ => {
                    let s = self.free_subnet(&[])?;
                    (s, offset1(&s))
                }
            },
        };
        let pool = Pool::new(subnet, self.config.fixed_cidr, Some(gateway))
            .map_err(|e| Error::InvalidNetwork(format!("default bridge: {e}")))?;
        let mut subnets = vec![Subnet {
            subnet: pool.subnet,
            ip_range: self.config.fixed_cidr,
            gateway,
        }];
        if self.config.ipv6 {
            let v6 = self.config.fixed_cidr_v6.ok_or_else(|| {
                Error::InvalidNetwork("--ipv6 needs --fixed-cidr-v6 (the default bridge's IPv6 subnet)".into())
            })?;
            let p = Pool::new(v6.trunc(), None, None)
                .map_err(|e| Error::InvalidNetwork(format!("--fixed-cidr-v6: {e}")))?;
            subnets.push(Subnet {
                subnet: p.subnet,
                ip_range: None,
                gateway: p.gateway,
            });
        }
        let mut options = BTreeMap::new();
        options.insert("com.docker.network.bridge.default_bridge".into(), "true".into());
        options.insert("com.docker.network.bridge.enable_icc".into(), "true".into());
        options.insert(
            "com.docker.network.bridge.enable_ip_masquerade".into(),
            self.config.ip_masq.to_string(),
        );
        options.insert("com.docker.network.bridge.host_binding_ipv4".into(), "0.0.0.0".into());
        options.insert("com.docker.network.bridge.name".into(), iface.clone());
        options.insert(
            "com.docker.network.driver.mtu".into(),
            self.config.mtu.unwrap_or(1500).to_string(),
        );
        let record = NetworkRecord {
            id: old.as_ref().map(|o| o.id.clone()).unwrap_or_else(new_id),
            name: "bridge".into(),
            driver: "bridge".into(),
            created: old
                .as_ref()
                .map(|o| o.created.clone())
                .unwrap_or_else(berth_runtime::now_rfc3339),
            internal: false,
            attachable: false,
            ipv6: self.config.ipv6,
            subnets,
            options,
            labels: BTreeMap::new(),
            interface: iface.clone(),
            mtu: self.config.mtu.unwrap_or(0),
            masquerade: self.config.ip_masq,
            host_binding_ipv4: None,
            // dockerd never deletes its docker0 either; a site's bridge is never Berth's.
            created_link: false,
            added_addresses: old.map(|o| o.added_addresses).unwrap_or_default(),
        };
        self.store(record)
    }

    /// The first /16 of 172.17–172.31, then /20 of 192.168, that overlaps no network and no
    /// route of the host.
    fn free_subnet(&self, also: &[IpNet]) -> Result<IpNet> {
        let routes = host_routes();
        let used: Vec<IpNet> = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|r| r.subnets.iter().map(|s| s.subnet))
            .chain(routes)
            .chain(also.iter().copied())
            .collect();
        let candidates = (17..=31u8)
            .map(|b| IpNet::new(IpAddr::V4(Ipv4Addr::new(172, b, 0, 0)), 16).expect("valid"))
            .chain((0..16u8).map(|i| IpNet::new(IpAddr::V4(Ipv4Addr::new(192, 168, i * 16, 0)), 20).expect("valid")));
        for c in candidates {
            if !used.iter().any(|u| ipam::overlaps(u, &c)) {
                return Ok(c);
            }
        }
        Err(Error::InvalidNetwork(
            "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into(),
        ))
    }

    fn store(&self, record: NetworkRecord) -> Result<()> {
        let path = self.dir.join(format!("{}.json", record.id));
        berth_runtime::write_atomic(&path, &serde_json::to_vec_pretty(&record).expect("serialisable"))?;
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id.clone(), record);
        Ok(())
    }

    fn delete_record(&self, id: &str) -> Result<()> {
        let path = self.dir.join(format!("{id}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        self.records.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        Ok(())
    }

    fn find(&self, name_or_id: &str) -> Option<NetworkRecord> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = records.get(name_or_id) {
            return Some(r.clone());
        }
        if let Some(r) = records.values().find(|r| r.name == name_or_id) {
            return Some(r.clone());
        }
        let mut prefixed = records.values().filter(|r| r.id.starts_with(name_or_id));
        match (prefixed.next(), prefixed.next()) {
            (Some(r), None) if !name_or_id.is_empty() => Some(r.clone()),
            _ => None,
        }
    }

    /// A network by id, name or unique id prefix (`GET /networks/{id}`: 404 when missing).
    pub(crate) fn get(&self, name_or_id: &str) -> Result<NetworkRecord> {
        self.find(name_or_id).ok_or_else(|| Error::NetworkNotFound {
            name: name_or_id.to_owned(),
        })
    }

    /// A network named in a container request (400 when missing: the CLI pulls on 404).
    pub(crate) fn resolve(&self, name_or_id: &str) -> Result<NetworkRecord> {
        self.find(name_or_id).ok_or_else(|| Error::NoSuchNetwork {
            name: name_or_id.to_owned(),
        })
    }

    pub(crate) fn list(&self) -> Vec<NetworkRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn emit(&self, r: &NetworkRecord, action: &'static str, container: Option<&str>) {
        let mut attrs = BTreeMap::from([
            ("name".to_owned(), r.name.clone()),
            ("type".to_owned(), r.driver.clone()),
        ]);
        if let Some(c) = container {
            attrs.insert("container".to_owned(), c.to_owned());
        }
        self.events.publish(Event::network(action, r.id.clone(), attrs));
    }

    /// `POST /networks/create`.
    pub(crate) fn create(&self, req: CreateRequest) -> Result<NetworkRecord> {
        if req.name.is_empty() {
            return Err(Error::InvalidNetwork("network name is required".into()));
        }
        if !valid_network_name(&req.name) {
            return Err(Error::InvalidNetwork(format!(
                "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                req.name
            )));
        }
        let _links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = self.list().into_iter().find(|r| r.name == req.name) {
            return Err(Error::NetworkConflict(format!(
                "network with name {} already exists",
                other.name
            )));
        }
        let driver = if req.driver.is_empty() {
            "bridge".to_owned()
        } else {
            req.driver.clone()
        };
        if !matches!(driver.as_str(), "bridge" | "macvlan" | "ipvlan") {
            return Err(Error::InvalidNetwork(match driver.as_str() {
                "host" | "null" => format!("only one instance of \"{driver}\" network is allowed"),
                "overlay" => "berth: the overlay driver is not built (Berth is a single-host engine)".into(),
                _ => format!("plugin \"{driver}\" not found"),
            }));
        }
        let id = new_id();
        let mut options = req.options.clone();
        let opt = |k: &str| options.get(k).cloned();
        let bool_opt = |k: &str, default: bool| -> Result<bool> {
            match options.get(k).map(String::as_str) {
                None => Ok(default),
                Some("true" | "1") => Ok(true),
                Some("false" | "0") => Ok(false),
                Some(v) => Err(Error::InvalidNetwork(format!(
                    "invalid value {v:?} for option {k}: expected true or false"
                ))),
            }
        };
        let masquerade = bool_opt("com.docker.network.bridge.enable_ip_masquerade", true)?;
        let host_binding_ipv4 = match opt("com.docker.network.bridge.host_binding_ipv4") {
            Some(v) => Some(v.parse::<IpAddr>().map_err(|_| {
                Error::InvalidNetwork(format!("invalid com.docker.network.bridge.host_binding_ipv4 {v:?}"))
            })?),
            None => None,
        };
        let mtu = match opt("com.docker.network.driver.mtu") {
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| Error::InvalidNetwork(format!("invalid com.docker.network.driver.mtu {v:?}")))?,
            None => 0,
        };
        for k in options.keys() {
            let known = matches!(
                k.as_str(),
                "com.docker.network.bridge.name"
                    | "com.docker.network.bridge.enable_ip_masquerade"
                    | "com.docker.network.bridge.enable_icc"
                    | "com.docker.network.bridge.host_binding_ipv4"
                    | "com.docker.network.driver.mtu"
                    | "com.docker.network.bridge.inhibit_ipv4"
                    | "parent"
                    | "macvlan_mode"
                    | "ipvlan_mode"
            );
            if !known {
                return Err(Error::InvalidNetwork(format!(
                    "berth: network option {k} is not supported (supported: com.docker.network.bridge.name, enable_ip_masquerade, host_binding_ipv4, driver.mtu, parent, macvlan_mode, ipvlan_mode)"
                )));
            }
        }
        if !bool_opt("com.docker.network.bridge.enable_icc", true)? {
            return Err(Error::InvalidNetwork(
                "berth: com.docker.network.bridge.enable_icc=false is not built yet".into(),
            ));
        }
        if bool_opt("com.docker.network.bridge.inhibit_ipv4", false)? {
            return Err(Error::InvalidNetwork(
                "berth: com.docker.network.bridge.inhibit_ipv4 is not built yet".into(),
            ));
        }
        let interface = match driver.as_str() {
            "bridge" => {
                let name = opt("com.docker.network.bridge.name").unwrap_or_else(|| format!("br-{}", &id[..12]));
                check_ifname(&name)?;
                if self.list().iter().any(|r| r.driver == "bridge" && r.interface == name) {
                    return Err(Error::NetworkConflict(format!(
                        "bridge {name} is already used by another network"
                    )));
                }
                if let Some(link) = Netlink::open()?.link(&name)? {
                    if link.kind != "bridge" {
                        return Err(Error::InvalidNetwork(format!(
                            "com.docker.network.bridge.name={name}: {name} is not a bridge (it is a {})",
                            if link.kind.is_empty() { "device" } else { &link.kind }
                        )));
                    }
                }
                name
            }
            _ => {
                let parent = opt("parent").ok_or_else(|| {
                    Error::InvalidNetwork(format!(
                        "berth: a {driver} network needs -o parent=INTERFACE (the host NIC, or NIC.VLAN)"
                    ))
                })?;
                check_ifname(&parent)?;
                let base = parent.split_once('.').map(|(b, _)| b).unwrap_or(&parent);
                let mut nl = Netlink::open()?;
                if nl.link(base)?.is_none() {
                    return Err(Error::InvalidNetwork(format!(
                        "-o parent={parent}: no such network interface {base} on the host"
                    )));
                }
                match (
                    driver.as_str(),
                    opt("macvlan_mode").as_deref(),
                    opt("ipvlan_mode").as_deref(),
                ) {
                    ("macvlan", None | Some("bridge"), None) | ("ipvlan", None, None | Some("l2" | "l3")) => {}
                    _ => {
                        return Err(Error::InvalidNetwork(
                            "berth: only macvlan_mode=bridge and ipvlan_mode=l2|l3 are built".into(),
                        ));
                    }
                }
                if self
                    .list()
                    .iter()
                    .any(|r| r.sub_kind().is_some() && r.interface == parent)
                {
                    return Err(Error::NetworkConflict(format!(
                        "network dm-{parent} is already using parent interface {parent}"
                    )));
                }
                parent
            }
        };
        // Subnets: as given, else a free one.
        let mut subnets = Vec::new();
        let mut taken: Vec<IpNet> = Vec::new();
        for (subnet, range, gateway) in &req.ipam {
            let Some(subnet) = subnet else {
                return Err(Error::InvalidNetwork(
                    "berth: an IPAM config without a subnet is not supported".into(),
                ));
            };
            let pool = Pool::new(*subnet, *range, *gateway).map_err(|e| Error::InvalidNetwork(e.to_string()))?;
            subnets.push(Subnet {
                subnet: pool.subnet,
                ip_range: *range,
                gateway: pool.gateway,
            });
            taken.push(pool.subnet);
        }
        if !subnets.iter().any(|s| s.subnet.addr().is_ipv4()) {
            if driver != "bridge" {
                return Err(Error::InvalidNetwork(format!(
                    "berth: a {driver} network needs --subnet (the site's subnet on the parent interface)"
                )));
            }
            let s = self.free_subnet(&taken)?;
            subnets.insert(
                0,
                Subnet {
                    subnet: s,
                    ip_range: None,
                    gateway: offset1(&s),
                },
            );
        }
        if !req.ipv6 && subnets.iter().any(|s| s.subnet.addr().is_ipv6()) {
            return Err(Error::InvalidNetwork("an IPv6 subnet needs --ipv6".into()));
        }
        if req.ipv6 && !subnets.iter().any(|s| s.subnet.addr().is_ipv6()) {
            return Err(Error::InvalidNetwork("berth: --ipv6 needs an IPv6 --subnet".into()));
        }
        for s in &subnets {
            for other in self.list() {
                if let Some(o) = other.subnets.iter().find(|o| ipam::overlaps(&o.subnet, &s.subnet)) {
                    return Err(Error::InvalidNetwork(format!(
                        "invalid pool request: Pool overlaps with other one on this address space: {} overlaps {} of network {}",
                        s.subnet, o.subnet, other.name
                    )));
                }
            }
        }
        if driver == "bridge" {
            options
                .entry("com.docker.network.bridge.name".into())
                .or_insert_with(|| interface.clone());
        }
        let record = NetworkRecord {
            id,
            name: req.name,
            driver,
            created: berth_runtime::now_rfc3339(),
            internal: req.internal,
            attachable: req.attachable,
            ipv6: req.ipv6,
            subnets,
            options,
            labels: req.labels,
            interface,
            mtu,
            masquerade,
            host_binding_ipv4,
            created_link: false,
            added_addresses: Vec::new(),
        };
        self.store(record.clone())?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        tracing::info!(network = %record.id, name = %record.name, driver = %record.driver, "network created");
        self.emit(&record, "create", None);
        Ok(record)
    }

    /// `DELETE /networks/{id}`: `users` are the containers (running or not) on it.
    pub(crate) fn remove(&self, name_or_id: &str, users: &[String]) -> Result<()> {
        let r = self.get(name_or_id)?;
        if r.predefined() {
            return Err(Error::NetworkConflict(format!(
                "{} is a pre-defined network and cannot be removed",
                r.name
            )));
        }
        if !users.is_empty() {
            return Err(Error::NetworkConflict(format!(
                "error while removing network: network {} id {} has active endpoints (containers: {}); remove them or disconnect them first",
                r.name,
                r.id,
                users.join(", ")
            )));
        }
        let _links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        self.dns.lock().unwrap_or_else(|p| p.into_inner()).remove(&r.id);
        self.unlink(&r);
        self.delete_record(&r.id)?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.marker.exists() {
            self.apply_firewall(true)?;
        }
        tracing::info!(network = %r.id, name = %r.name, "network removed");
        self.emit(&r, "destroy", None);
        Ok(())
    }

    /// Undoes what Berth did to the host for network `r`: its bridge or VLAN link when it
    /// made one, the addresses it added to an existing bridge.
    fn unlink(&self, r: &NetworkRecord) {
        let Ok(mut nl) = Netlink::open() else { return };
        if r.created_link {
            if let Err(e) = nl.delete_link(&r.interface) {
                tracing::warn!(network = %r.name, link = %r.interface, error = %e, "failed to delete the network's link");
            }
        } else if !r.added_addresses.is_empty() {
            if let Err(e) = nl.delete_addresses(&r.interface, &r.added_addresses) {
                tracing::warn!(network = %r.name, link = %r.interface, error = %e, "failed to remove the network's gateway address");
            }
        }
    }

    /// Allocates the endpoints of a new container (or of `network connect`): the requested
    /// addresses after a conflict check, or the next free ones. `holders` lists every
    /// address held on each network (network id, address, holder's name).
    pub(crate) fn allocate(
        &self,
        requests: &[EndpointRequest],
        holders: &[(String, IpAddr, String)],
    ) -> Result<Vec<Endpoint>> {
        let mut out: Vec<Endpoint> = Vec::new();
        for req in requests {
            let net = self.resolve(&req.network)?;
            if net.predefined() && net.name != "bridge" {
                return Err(Error::InvalidContainerConfig {
                    reason: format!(
                        "container cannot be disconnected from host network or connected to {} network",
                        net.name
                    ),
                });
            }
            if out.iter().any(|e| e.network_id == net.id) {
                continue;
            }
            let held = |ip: IpAddr| {
                holders
                    .iter()
                    .find(|(n, a, _)| *n == net.id && *a == ip)
                    .map(|(_, _, h)| h.clone())
                    .or_else(|| {
                        out.iter()
                            .filter(|e| e.network_id == net.id)
                            .any(|e| e.ipv4.map(|n| n.addr()) == Some(ip) || e.ipv6.map(|n| n.addr()) == Some(ip))
                            .then(|| "this container".to_owned())
                    })
            };
            let last = |v4: bool| {
                holders
                    .iter()
                    .filter(|(n, a, _)| *n == net.id && a.is_ipv4() == v4)
                    .map(|(_, a, _)| *a)
                    .max()
            };
            let mut ep = Endpoint {
                network_id: net.id.clone(),
                endpoint_id: new_id(),
                aliases: req.aliases.clone(),
                request: req.clone(),
                ..Endpoint::default()
            };
            for s in &net.subnets {
                let pool = s.pool();
                let v4 = s.subnet.addr().is_ipv4();
                let wanted: Option<IpAddr> = if v4 {
                    req.ipv4.map(IpAddr::V4)
                } else {
                    req.ipv6.map(IpAddr::V6)
                };
                let ip = match wanted {
                    Some(ip) if s.subnet.contains(&ip) => {
                        pool.check_static(ip)
                            .map_err(|e| Error::InvalidContainerConfig { reason: e.to_string() })?;
                        if let Some(h) = held(ip) {
                            return Err(Error::AddressInUse {
                                ip: ip.to_string(),
                                network: net.name.clone(),
                                holder: h,
                            });
                        }
                        ip
                    }
                    Some(_) if net.subnets.iter().any(|o| o.subnet.addr().is_ipv4() == v4 && o != s) => continue,
                    Some(ip) => {
                        return Err(Error::InvalidContainerConfig {
                            reason: format!(
                                "no configured subnet or ip-range contain the IP address {ip} (network {} has {})",
                                net.name,
                                net.subnets
                                    .iter()
                                    .map(|s| s.subnet.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    }
                    None if (v4 && ep.ipv4.is_some()) || (!v4 && ep.ipv6.is_some()) => continue,
                    None => pool
                        .allocate(last(v4), |ip| held(ip).is_some())
                        .map_err(|e| Error::InvalidContainerConfig { reason: e.to_string() })?,
                };
                let n = IpNet::new(ip, s.subnet.prefix_len()).expect("prefix of a valid subnet");
                if v4 {
                    ep.ipv4 = Some(n);
                } else {
                    ep.ipv6 = Some(n);
                }
            }
            ep.mac = match &req.mac {
                Some(m) => format_mac(parse_mac(m)?),
                None => format_mac(match ep.ipv4 {
                    Some(n) => ipam::mac_for(n.addr()),
                    None => ipam::mac_for(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
                }),
            };
            out.push(ep);
        }
        Ok(out)
    }

    /// The pinned network namespace path of container `id`.
    pub(crate) fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir.join(id)
    }

    /// Makes sure network `r`'s interface is there (bridge created and addressed; a VLAN
    /// link made), and its DNS server runs. Returns the record as updated.
    fn prepare(&self, r: &NetworkRecord, nl: &mut Netlink) -> Result<NetworkRecord> {
        let _links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = self.get(&r.id)?;
        if r.driver == "bridge" {
            let gateways: Vec<IpNet> = r
                .subnets
                .iter()
                .map(|s| IpNet::new(s.gateway, s.subnet.prefix_len()).expect("valid prefix"))
                .collect();
            let site_bridge = r.name == "bridge" && self.config.bridge.is_some();
            let ensured = nl.ensure_bridge(&BridgeSpec {
                name: &r.interface,
                mtu: (r.mtu != 0).then_some(r.mtu),
                addresses: &gateways,
                create: !site_bridge,
            })?;
            let mut changed = false;
            if ensured.state == BridgeState::Created && r.name != "bridge" && !r.created_link {
                r.created_link = true;
                changed = true;
            }
            if ensured.state == BridgeState::Existing && !r.created_link {
                // Remember what was added to someone else's bridge, to take it off again.
                for g in ensured.added {
                    if !r.added_addresses.contains(&g) {
                        r.added_addresses.push(g);
                        changed = true;
                    }
                }
            }
            if changed {
                self.store(r.clone())?;
            }
            if self.config.ip_forward && !self.forwarding.swap(true, Ordering::SeqCst) {
                for (path, on) in [
                    ("/proc/sys/net/ipv4/ip_forward", true),
                    ("/proc/sys/net/ipv6/conf/all/forwarding", r.ipv6),
                ] {
                    if on {
                        if let Err(e) = std::fs::write(path, "1") {
                            tracing::warn!(path, error = %e, "failed to turn on forwarding");
                        }
                    }
                }
            }
            if r.has_dns() {
                self.start_dns(&r);
            }
        } else if r.interface.contains('.') && nl.ensure_vlan(&r.interface)? && !r.created_link {
            r.created_link = true;
            self.store(r.clone())?;
        }
        Ok(r)
    }

    fn start_dns(&self, r: &NetworkRecord) {
        let mut dns = self.dns.lock().unwrap_or_else(|p| p.into_inner());
        if dns.contains_key(&r.id) {
            return;
        }
        let Some(gw) = r.subnets.first().map(|s| s.gateway) else {
            return;
        };
        let names: Names = Arc::default();
        let upstreams = berth_net::dns::host_resolvers(Path::new("/etc/resolv.conf"));
        let started = tokio::runtime::Handle::try_current()
            .map_err(|e| e.to_string())
            .and_then(|h| {
                h.block_on(DnsServer::start(gw, names.clone(), upstreams))
                    .map_err(|e| e.to_string())
            });
        match started {
            Ok(server) => {
                tracing::info!(network = %r.name, addr = %gw, "embedded DNS server listening");
                dns.insert(r.id.clone(), NetDns { names, _server: server });
            }
            Err(e) => {
                tracing::warn!(network = %r.name, addr = %gw, error = %e, "no embedded DNS server; containers on this network do not resolve each other by name")
            }
        }
    }

    /// Adds (or with `add` false removes) a container's names on a network's DNS.
    fn dns_names(&self, network_id: &str, names: &[String], ips: &[IpAddr], add: bool) {
        let dns = self.dns.lock().unwrap_or_else(|p| p.into_inner());
        let Some(d) = dns.get(network_id) else { return };
        let mut map = d.names.write().unwrap_or_else(|p| p.into_inner());
        for n in names {
            let key = n.to_ascii_lowercase();
            let list = map.entry(key.clone()).or_default();
            list.retain(|ip| !ips.contains(ip));
            if add {
                list.extend(ips.iter().copied());
            }
            if list.is_empty() {
                map.remove(&key);
            }
        }
    }

    /// The names a container answers to on a network: its name, its short id, its aliases.
    fn names_of(w: &Wiring<'_>, ep: &Endpoint) -> Vec<String> {
        let mut n = vec![w.name.to_owned(), w.id[..12.min(w.id.len())].to_owned()];
        n.extend(ep.aliases.iter().cloned());
        n
    }

    /// Wires a starting container: its namespace, one interface per endpoint (`eth0`, …),
    /// its published ports. On failure everything made is undone.
    pub(crate) fn attach(&self, w: &Wiring<'_>) -> Result<Wired> {
        let t0 = std::time::Instant::now();
        let path = self.netns_path(w.id);
        // One socket for the whole start.
        let mut nl = Netlink::open()?;
        // A leftover of the last run (a veth the kernel has not destroyed yet) or of a crash.
        self.teardown(w.id, w.endpoints, Some(&mut nl));
        let ns = Netns::create(&path)?;
        let result = self.attach_in(&mut nl, &ns, w);
        if result.is_err() {
            self.unwire(w, Some(&mut nl));
        }
        tracing::debug!(container = %w.id, ms = t0.elapsed().as_secs_f64() * 1000.0, ok = result.is_ok(), "network namespace wired");
        if result.is_ok() {
            // As dockerd: the endpoints join at the start, and leave at the exit.
            for ep in w.endpoints {
                self.event(&ep.network_id, "connect", w.id);
            }
        }
        result.map(|(published, nameserver)| Wired {
            netns: path,
            published,
            nameserver,
        })
    }

    fn attach_in(&self, nl: &mut Netlink, ns: &Netns, w: &Wiring<'_>) -> Result<(Vec<Published>, Option<IpAddr>)> {
        let mut nameserver = None;
        if w.endpoints.is_empty() {
            berth_net::link::loopback_up(ns)?;
        }
        let mut bridges: Vec<(NetworkRecord, Endpoint)> = Vec::new();
        for (i, ep) in w.endpoints.iter().enumerate() {
            let net = self.get(&ep.network_id).map_err(|_| Error::NoSuchNetwork {
                name: ep.request.network.clone(),
            })?;
            let net = self.prepare(&net, nl)?;
            self.connect_interface(nl, ns, w.id, i, &net, ep)?;
            if i == 0 && net.has_dns() && self.dns.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&net.id) {
                nameserver = net.subnets.first().map(|s| s.gateway);
            }
            if net.has_dns() {
                let ips = ep.ips();
                self.dns_names(&net.id, &Self::names_of(w, ep), &ips, true);
            }
            bridges.push((net, ep.clone()));
        }
        let published = self.publish(w, &bridges)?;
        Ok((published, nameserver))
    }

    /// One interface of a container: `eth{index}` on network `net`.
    fn connect_interface(
        &self,
        nl: &mut Netlink,
        ns: &Netns,
        id: &str,
        index: usize,
        net: &NetworkRecord,
        ep: &Endpoint,
    ) -> Result<()> {
        let addresses: Vec<IpNet> = ep.ipv4.iter().chain(ep.ipv6.iter()).copied().collect();
        let gateways: Vec<IpAddr> = if index == 0 && !net.internal {
            net.subnets
                .iter()
                .filter(|s| addresses.iter().any(|a| s.subnet.contains(&a.addr())))
                .map(|s| s.gateway)
                .collect()
        } else {
            Vec::new()
        };
        let ifname = format!("eth{index}");
        let iface = Interface {
            name: &ifname,
            mac: Some(parse_mac(&ep.mac)?),
            mtu: net.mtu(),
            addresses: &addresses,
            gateways: &gateways,
        };
        match net.sub_kind() {
            Some(kind) => nl.attach_sublink(ns, &net.interface, kind, &iface)?,
            None => nl.attach_veth(ns, &net.interface, &host_ifname(id, index), &iface)?,
        };
        Ok(())
    }

    /// Resolves and applies a container's published ports.
    fn publish(&self, w: &Wiring<'_>, nets: &[(NetworkRecord, Endpoint)]) -> Result<Vec<Published>> {
        let mut requests: Vec<PortRequest> = w.ports.to_vec();
        if w.publish_all {
            for e in w.exposed {
                let (port, proto) = crate::containers::settings::parse_port_proto(e)?;
                if !requests.iter().any(|r| r.container_port == port && r.proto == proto) {
                    requests.push(PortRequest {
                        container_port: port,
                        proto,
                        host_ip: String::new(),
                        host_port: None,
                    });
                }
            }
        }
        if requests.is_empty() {
            self.apply_if_stale()?;
            return Ok(Vec::new());
        }
        if !self.config.iptables {
            return Err(Error::InvalidContainerConfig {
                reason: "published ports need Berth's firewall table, and the daemon runs with --iptables=false".into(),
            });
        }
        let Some((net, ep)) = port_path(nets) else {
            return Err(Error::InvalidContainerConfig {
                reason: "published ports need a bridge network with an IPv4 address".into(),
            });
        };
        let mut rules = Vec::new();
        let mut published = Vec::new();
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        let others: Vec<PortRule> = ports
            .iter()
            .filter(|(c, _)| *c != w.id)
            .flat_map(|(_, r)| r.clone())
            .collect();
        for r in &requests {
            let host_ip: Option<IpAddr> = match r.host_ip.as_str() {
                "" => net.host_binding_ipv4.filter(|a| !a.is_unspecified()),
                s => Some(s.parse().map_err(|_| Error::InvalidContainerConfig {
                    reason: format!("invalid host IP {s}"),
                })?),
            }
            .filter(|a| !a.is_unspecified());
            let shown = host_ip.map_or_else(|| "0.0.0.0".to_owned(), |a| a.to_string());
            let pr = proto(&r.proto);
            let clash = |port: u16, rules: &[PortRule]| -> Option<String> {
                others
                    .iter()
                    .chain(rules.iter())
                    .find(|o| {
                        o.host_port == port
                            && o.proto == pr
                            && (o.host_ip.is_none() || host_ip.is_none() || o.host_ip == host_ip)
                    })
                    .map(|o| o.container.clone())
            };
            let host_port = match r.host_port {
                Some(p) => {
                    if let Some(o) = clash(p, &rules) {
                        return Err(Error::PortAllocated {
                            addr: format!("{shown}:{p}"),
                            detail: format!(" (published by container {})", &o[..12.min(o.len())]),
                        });
                    }
                    if nft::port_in_use(host_ip, p, pr) {
                        return Err(Error::PortAllocated {
                            addr: format!("{shown}:{p}"),
                            detail: " (a program on the host listens on it)".into(),
                        });
                    }
                    p
                }
                None => EPHEMERAL_PORTS
                    .clone()
                    .find(|p| clash(*p, &rules).is_none() && !nft::port_in_use(host_ip, *p, pr))
                    .ok_or_else(|| Error::PortAllocated {
                        addr: "0.0.0.0".into(),
                        detail: " (no free port left in 49153-60999)".into(),
                    })?,
            };
            let p = Published {
                container_port: r.container_port,
                proto: r.proto.clone(),
                host_ip: shown,
                host_port,
            };
            rules.push(port_rule(w.id, &p, net, ep));
            published.push(p);
        }
        ports.insert(w.id.to_owned(), rules);
        drop(ports);
        self.apply_firewall(false)?;
        Ok(published)
    }

    /// Applies the table when its network part changed since the last apply.
    fn apply_if_stale(&self) -> Result<()> {
        if self.config.iptables && self.applied.load(Ordering::SeqCst) != self.generation.load(Ordering::SeqCst) {
            self.apply_firewall(false)?;
        }
        Ok(())
    }

    /// Rebuilds Berth's nftables table from the networks and the published ports. With
    /// `removal`, an empty state deletes the table instead.
    fn apply_firewall(&self, removal: bool) -> Result<()> {
        if !self.config.iptables {
            return Ok(());
        }
        let _fw = self.firewall.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.generation.load(Ordering::SeqCst);
        let networks: Vec<NetworkRules> = self
            .list()
            .into_iter()
            .filter(|r| r.driver == "bridge")
            .map(|r| NetworkRules {
                bridge: r.interface.clone(),
                subnets: r.subnets.iter().map(|s| s.subnet).collect(),
                masquerade: r.masquerade && !r.internal,
                internal: r.internal,
            })
            .collect();
        let ports: Vec<PortRule> = self
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect();
        let set = Ruleset { networks, ports };
        if removal && set.ports.is_empty() && !set.networks.iter().any(|n| n.internal || n.masquerade) {
            nft::remove(nft::TABLE)?;
            let _ = std::fs::remove_file(&self.marker);
        } else {
            std::fs::write(&self.marker, b"").map_err(io_err("write", &self.marker))?;
            nft::apply(nft::TABLE, &set)?;
        }
        self.applied.store(generation, Ordering::SeqCst);
        Ok(())
    }

    /// Deletes what a container's run made: its host-side veths, its namespace.
    ///
    /// Without a netlink socket only the namespace is unpinned: the kernel then destroys it,
    /// and its veth pairs with it, in its own time. Deleting a veth here waits for an RCU
    /// grace period (10-30 ms), which every `docker run --rm` would wait for; a start that
    /// finds a host end still there deletes it first.
    fn teardown(&self, id: &str, endpoints: &[Endpoint], links: Option<&mut Netlink>) {
        if let Some(nl) = links {
            let mut indexes: Vec<usize> = (0..endpoints.len()).collect();
            indexes.extend(endpoints.iter().filter_map(Endpoint::if_index));
            indexes.sort_unstable();
            indexes.dedup();
            for i in indexes {
                let name = host_ifname(id, i);
                if let Err(e) = nl.delete_link(&name) {
                    tracing::warn!(container = %id, link = %name, error = %e, "failed to delete a veth");
                }
            }
        }
        if let Err(e) = netns::remove(&self.netns_path(id)) {
            tracing::warn!(container = %id, error = %e, "failed to remove the network namespace");
        }
    }

    /// Unwires a container after its exit (or a failed start): DNS names, published ports,
    /// interfaces, namespace. Its addresses stay allocated.
    pub(crate) fn detach(&self, w: &Wiring<'_>) {
        self.unwire(w, None);
        for ep in w.endpoints {
            self.event(&ep.network_id, "disconnect", w.id);
        }
    }

    fn unwire(&self, w: &Wiring<'_>, links: Option<&mut Netlink>) {
        let t0 = std::time::Instant::now();
        for ep in w.endpoints {
            let ips = ep.ips();
            self.dns_names(&ep.network_id, &Self::names_of(w, ep), &ips, false);
        }
        let had_ports = self
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(w.id)
            .is_some();
        if had_ports {
            if let Err(e) = self.apply_firewall(false) {
                tracing::warn!(container = %w.id, error = %e, "failed to remove the container's published ports");
            }
        }
        self.teardown(w.id, w.endpoints, links);
        tracing::debug!(container = %w.id, ms = t0.elapsed().as_secs_f64() * 1000.0, "network namespace unwired");
    }

    /// After a daemon restart: running containers' names and ports come back, the table is
    /// reconciled with them (or removed when nothing needs it).
    pub(crate) fn restore(&self, running: &[(Wiring<'_>, Vec<Published>)]) {
        let mut nl = match Netlink::open() {
            Ok(nl) => Some(nl),
            Err(e) => {
                tracing::warn!(error = %e, "netlink unavailable; running containers' networks are not checked");
                None
            }
        };
        for (w, published) in running {
            let mut nets = Vec::new();
            for ep in w.endpoints {
                let Ok(net) = self.get(&ep.network_id) else { continue };
                let net = match nl.as_mut().map(|nl| self.prepare(&net, nl)) {
                    Some(Ok(n)) => n,
                    Some(Err(e)) => {
                        tracing::warn!(network = %net.name, error = %e, "failed to check the network's interface");
                        net
                    }
                    None => net,
                };
                if net.has_dns() {
                    let ips = ep.ips();
                    self.dns_names(&net.id, &Self::names_of(w, ep), &ips, true);
                }
                nets.push((net, ep.clone()));
            }
            if let Some((net, ep)) = port_path(&nets) {
                let rules: Vec<PortRule> = published.iter().map(|p| port_rule(w.id, p, net, ep)).collect();
                if !rules.is_empty() {
                    self.ports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(w.id.to_owned(), rules);
                }
            }
        }
        let wired = running.iter().any(|(w, _)| !w.endpoints.is_empty());
        if self.config.iptables && (wired || self.marker.exists()) {
            if let Err(e) = self.apply_firewall(!wired) {
                tracing::error!(error = %e, "failed to reconcile Berth's nftables table");
            }
        }
    }

    /// `POST /networks/{id}/connect` on a running container: one more interface.
    pub(crate) fn connect_live(&self, w: &Wiring<'_>, ep: &Endpoint) -> Result<()> {
        let index = ep.if_index().expect("connect names the interface");
        let ns = Netns::open(&self.netns_path(w.id))?;
        let mut nl = Netlink::open()?;
        let net = self.get(&ep.network_id)?;
        let net = self.prepare(&net, &mut nl)?;
        self.connect_interface(&mut nl, &ns, w.id, index, &net, ep)?;
        if net.has_dns() {
            let ips = ep.ips();
            self.dns_names(&net.id, &Self::names_of(w, ep), &ips, true);
        }
        self.emit(&net, "connect", Some(w.id));
        Ok(())
    }

    /// `POST /networks/{id}/disconnect` on a running container: its interface goes.
    pub(crate) fn disconnect_live(&self, w: &Wiring<'_>, ep: &Endpoint) -> Result<()> {
        self.dns_names(&ep.network_id, &Self::names_of(w, ep), &ep.ips(), false);
        match self.get(&ep.network_id).ok().and_then(|n| n.sub_kind()) {
            // A macvlan or ipvlan link lives in the container's namespace only.
            Some(_) => {
                let ns = Netns::open(&self.netns_path(w.id))?;
                Netlink::open_in(&ns)?.delete_link(&ep.ifname)?;
            }
            None => Netlink::open()?.delete_link(&host_ifname(w.id, ep.if_index().unwrap_or(0)))?,
        }
        if let Ok(net) = self.get(&ep.network_id) {
            self.emit(&net, "disconnect", Some(w.id));
        }
        Ok(())
    }

    /// Publishes a `connect`/`disconnect` event for a container that is not running.
    pub(crate) fn event(&self, network_id: &str, action: &'static str, container: &str) {
        if let Ok(net) = self.get(network_id) {
            self.emit(&net, action, Some(container));
        }
    }

    /// `POST /networks/prune`: user networks no container uses.
    pub(crate) fn prune(&self, in_use: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut gone = Vec::new();
        for r in self.list() {
            if r.predefined() || in_use(&r.id) {
                continue;
            }
            match self.remove(&r.id, &[]) {
                Ok(()) => gone.push(r.name),
                Err(e) => tracing::warn!(network = %r.name, error = %e, "prune: failed to remove"),
            }
        }
        gone
    }

    /// The JSON of `GET /networks/{id}` and of the list.
    pub(crate) fn to_json(r: &NetworkRecord, containers: Value) -> Value {
        let config: Vec<Value> = r
            .subnets
            .iter()
            .map(|s| {
                let mut c = serde_json::json!({"Subnet": s.subnet.to_string(), "Gateway": s.gateway.to_string()});
                if let Some(range) = s.ip_range {
                    c["IPRange"] = Value::String(range.to_string());
                }
                c
            })
            .collect();
        serde_json::json!({
            "Name": r.name,
            "Id": r.id,
            "Created": r.created,
            "Scope": "local",
            "Driver": r.driver,
            "EnableIPv6": r.ipv6,
            "IPAM": {"Driver": "default", "Options": null, "Config": config},
            "Internal": r.internal,
            "Attachable": r.attachable,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": containers,
            "Options": r.options,
            "Labels": r.labels,
        })
    }
}

/// Where a container's published ports lead: its first bridge network with an IPv4 address.
fn port_path(nets: &[(NetworkRecord, Endpoint)]) -> Option<&(NetworkRecord, Endpoint)> {
    nets.iter().find(|(n, e)| n.driver == "bridge" && e.ipv4.is_some())
}

/// The rule that publishes `p` of container `id` to `ep`'s IPv4 address on `net`.
fn port_rule(id: &str, p: &Published, net: &NetworkRecord, ep: &Endpoint) -> PortRule {
    PortRule {
        container: id.to_owned(),
        host_ip: p.host_ip.parse().ok().filter(|a: &IpAddr| !a.is_unspecified()),
        host_port: p.host_port,
        container_ip: ep.ipv4.expect("a port path has an IPv4 address").addr(),
        container_port: p.container_port,
        proto: proto(&p.proto),
        bridge: net.interface.clone(),
    }
}

/// The first host address of a subnet.
fn offset1(s: &IpNet) -> IpAddr {
    Pool::new(*s, None, None).map(|p| p.gateway).unwrap_or(s.addr())
}

fn valid_network_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > IFNAME_MAX
        || name.contains('/')
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == ':' || c == '"' || c == '\'')
    {
        return Err(Error::InvalidNetwork(format!(
            "invalid interface name {name:?}: at most {IFNAME_MAX} characters, no '/', ':', quotes or spaces"
        )));
    }
    Ok(())
}

/// The host's IPv4 routes (`/proc/net/route`), so a new subnet never shadows one.
fn host_routes() -> Vec<IpNet> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if mask == 0 {
                return None;
            }
            let dest = Ipv4Addr::from(u32::from_be(dest));
            let prefix = u32::from_be(mask).leading_ones() as u8;
            IpNet::new(IpAddr::V4(dest), prefix).ok()
        })
        .collect()
}

/// The first IPv4 address (with prefix) of link `name`, if it exists and has one.
fn link_ipv4(name: &str) -> Result<Option<IpNet>> {
    let mut nl = Netlink::open()?;
    if nl.link(name)?.is_none() {
        return Err(Error::InvalidNetwork(format!(
            "--bridge {name}: no such network interface (create the bridge first, or leave --bridge out for Berth's own berth0)"
        )));
    }
    Ok(nl.addresses(name)?.into_iter().find(|a| a.addr().is_ipv4()))
}
