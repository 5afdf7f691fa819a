//! `POST /containers/create` bodies (`Config` + `HostConfig`, docker's shapes) -> the
//! settings a container runs with. Every field is either honoured or refused with a clear
//! error naming it; none is silently dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_image::ImageRecord;
use berth_runtime::{LogLimits, MountSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Error;

/// Which network the container is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Network {
    /// `--network host`.
    Host,
    /// `--network none`: own namespace, loopback only.
    None,
    /// The default bridge (loopback only when the daemon runs with `--bridge none`).
    Bridge,
    /// A user network, named in [`Settings::network_name`].
    User,
}

impl Network {
    pub(crate) fn mode_name(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
            Network::Bridge => "bridge",
            Network::User => "user",
        }
    }

    /// Whether the container gets a namespace the daemon wires to networks.
    pub(crate) fn wired(self) -> bool {
        matches!(self, Network::Bridge | Network::User)
    }
}

/// What the request asks of one network the container joins (`--ip`, `--alias`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EndpointRequest {
    /// The network as the user named it (name, id or id prefix).
    pub(crate) network: String,
    pub(crate) ipv4: Option<std::net::Ipv4Addr>,
    pub(crate) ipv6: Option<std::net::Ipv6Addr>,
    pub(crate) mac: Option<String>,
    pub(crate) aliases: Vec<String>,
}

/// `-p [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`, as the CLI sends it (one per host port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PortRequest {
    pub(crate) container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub(crate) proto: String,
    /// Empty: every address.
    pub(crate) host_ip: String,
    /// `None`: a free port, picked at every start.
    pub(crate) host_port: Option<u16>,
}

/// A user mount, serialisable for the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MountRec {
    /// `bind`, `tmpfs` or `volume`.
    pub(crate) kind: String,
    /// A bind's host path; a volume's `_data` (set by create).
    pub(crate) source: String,
    pub(crate) destination: String,
    pub(crate) readonly: bool,
    pub(crate) propagation: String,
    pub(crate) options: Vec<String>,
    /// A volume's name; empty in a parsed request for an anonymous volume until create
    /// names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) volume: String,
    /// A volume made for this container alone (`-v /path`, an image's `VOLUME`, `--mount`
    /// without a source): `rm -v` and `--rm` remove it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) anonymous: bool,
    /// Do not fill a new volume from the image (`:nocopy`, `volume-nocopy`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) nocopy: bool,
    /// A volume's `Mode` as inspect shows it: the `-v` mode string, `z` for a local volume
    /// without one (dockerd's `setBindModeIfNull`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) mode: String,
    /// Driver options and labels for a volume this create makes (`--mount volume-opt=`,
    /// `volume-label=`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) volume_options: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) volume_labels: BTreeMap<String, String>,
}

impl MountRec {
    pub(crate) fn is_volume(&self) -> bool {
        self.kind == "volume"
    }

    pub(crate) fn to_spec(&self) -> MountSpec {
        match self.kind.as_str() {
            "tmpfs" => MountSpec::Tmpfs {
                destination: self.destination.clone(),
                options: self.options.clone(),
            },
            // A volume is a bind mount of its `_data`.
            _ => MountSpec::Bind {
                source: PathBuf::from(&self.source),
                destination: self.destination.clone(),
                readonly: self.readonly,
                propagation: if self.propagation.is_empty() {
                    "rprivate".to_owned()
                } else {
                    self.propagation.clone()
                },
            },
        }
    }
}

/// `--restart`: `no` (empty name), `always`, `unless-stopped`, `on-failure[:max]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RestartPolicy {
    pub(crate) name: String,
    /// Most restarts for `on-failure`; 0 = no limit.
    pub(crate) max: u64,
}

/// What a container runs with, resolved at create time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    /// Entrypoint + Cmd.
    pub(crate) args: Vec<String>,
    /// The health check (the request's over the image's); `None` for none or `NONE`.
    #[serde(default)]
    pub(crate) healthcheck: Option<super::health::Healthcheck>,
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) user: String,
    pub(crate) hostname: String,
    pub(crate) domainname: String,
    pub(crate) network: Network,
    /// `NetworkMode` as given, for a user network.
    #[serde(default)]
    pub(crate) network_name: String,
    /// The networks joined at create, the first being the network of `NetworkMode`.
    #[serde(default)]
    pub(crate) endpoints: Vec<EndpointRequest>,
    /// Published ports (`-p`, and `-P` resolved at start from `exposed`).
    #[serde(default)]
    pub(crate) ports: Vec<PortRequest>,
    #[serde(default)]
    pub(crate) publish_all: bool,
    /// Exposed ports of the image and the request, `PORT/PROTO`.
    #[serde(default)]
    pub(crate) exposed: Vec<String>,
    pub(crate) privileged: bool,
    pub(crate) cap_add: Vec<String>,
    pub(crate) cap_drop: Vec<String>,
    pub(crate) mounts: Vec<MountRec>,
    pub(crate) readonly_rootfs: bool,
    pub(crate) extra_hosts: Vec<(String, String)>,
    pub(crate) dns: Vec<String>,
    pub(crate) dns_search: Vec<String>,
    pub(crate) dns_options: Vec<String>,
    pub(crate) log: LogLimits,
    pub(crate) auto_remove: bool,
    pub(crate) stop_signal: String,
    pub(crate) stop_timeout: Option<i64>,
    /// `-i`: the container's stdin is a FIFO that an attach writes to; it sees EOF when the
    /// attached client closes its input (or at once when nobody attaches).
    #[serde(default)]
    pub(crate) open_stdin: bool,
    #[serde(default)]
    pub(crate) resources: berth_runtime::Resources,
    /// `-t`: a pseudo-terminal; output is one raw stream.
    #[serde(default)]
    pub(crate) tty: bool,
    /// The terminal's first (rows, columns).
    #[serde(default)]
    pub(crate) console_size: Option<(u16, u16)>,
    #[serde(default)]
    pub(crate) restart: RestartPolicy,
    /// Security options, devices, shared namespaces and limits.
    #[serde(default)]
    pub(crate) host: berth_runtime::HostOptions,
    /// `--init`; `None`: the daemon's default (`berth daemon --init`).
    #[serde(default)]
    pub(crate) init: Option<bool>,
    /// `--cgroup-parent` as an absolute cgroup path (`/a/b`); empty: `/berth`.
    #[serde(default)]
    pub(crate) cgroup_parent: String,
}

/// A create request, understood.
pub(crate) struct Parsed {
    pub(crate) settings: Settings,
    /// `Config` as inspect shows it: the request's, completed from the image.
    pub(crate) config: Value,
    pub(crate) host_config: Value,
    pub(crate) warnings: Vec<String>,
}

pub(super) fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidContainerConfig { reason: reason.into() }
}

pub(super) fn not_built(what: impl Into<String>) -> Error {
    Error::NotBuilt { what: what.into() }
}

/// Whether a JSON value is set to something other than its zero value.
pub(super) fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// A JSON list of strings (or one string), as the API's string-list fields come.
pub(crate) fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn string(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// `HostConfig` fields that change how a container runs and are not built yet: refused, so
/// a limit or device the user asked for is never silently missing.
const HOST_CONFIG_NOT_BUILT: &[(&str, &str)] = &[
    ("KernelMemory", "--kernel-memory"),
    ("CpuRealtimePeriod", "--cpu-rt-period"),
    ("CpuRealtimeRuntime", "--cpu-rt-runtime"),
    ("BlkioWeight", "--blkio-weight"),
    ("BlkioWeightDevice", "--blkio-weight-device"),
    ("BlkioDeviceReadBps", "--device-read-bps"),
    ("BlkioDeviceWriteBps", "--device-write-bps"),
    ("BlkioDeviceReadIOps", "--device-read-iops"),
    ("BlkioDeviceWriteIOps", "--device-write-iops"),
    ("DeviceRequests", "--gpus"),
    ("Links", "--link"),
    ("VolumesFrom", "--volumes-from"),
    ("UsernsMode", "--userns"),
    ("StorageOpt", "--storage-opt"),
    ("MemorySwappiness", "--memory-swappiness"),
    ("IOMaximumIOps", "--io-maxiops"),
    ("IOMaximumBandwidth", "--io-maxbandwidth"),
    ("Annotations", "--annotation"),
];

/// Parses a create body against the image it names.
pub(crate) fn parse(body: &Value, image: &ImageRecord, id: &str) -> Result<Parsed, Error> {
    let empty = json!({});
    let config = body;
    let hc = body.get("HostConfig").filter(|v| v.is_object()).unwrap_or(&empty);
    let mut warnings = Vec::new();

    for (field, flag) in HOST_CONFIG_NOT_BUILT {
        let v = hc.get(*field);
        // The CLI sends -1 for "unlimited" swap and swappiness.
        let unlimited = *field == "MemorySwappiness" && v.and_then(Value::as_i64) == Some(-1);
        if is_set(v) && !unlimited {
            return Err(not_built(format!("{flag} (HostConfig.{field})")));
        }
    }
    let mut resources = resources(hc)?;
    match hc.get("Runtime").and_then(Value::as_str).unwrap_or("") {
        "" | "runc" | "berth" => {}
        other => return Err(invalid(format!("unknown or invalid runtime name: {other}"))),
    }
    let restart = restart_policy(
        hc.get("RestartPolicy").unwrap_or(&Value::Null),
        hc.get("AutoRemove").and_then(Value::as_bool) == Some(true),
    )?;
    match hc.get("VolumeDriver").and_then(Value::as_str).unwrap_or("") {
        "" | "local" => {}
        other => {
            return Err(invalid(format!(
                "error looking up volume plugin {other}: plugin \"{other}\" not found"
            )));
        }
    }
    if is_set(config.get("OnBuild")) {
        return Err(not_built("ONBUILD (Config.OnBuild)"));
    }
    let tty = config.get("Tty").and_then(Value::as_bool) == Some(true);
    let console_size = hc
        .get("ConsoleSize")
        .and_then(Value::as_array)
        .and_then(|a| Some((a.first()?.as_u64()? as u16, a.get(1)?.as_u64()? as u16)))
        .filter(|&(h, w)| h > 0 && w > 0);
    let open_stdin = config.get("OpenStdin").and_then(Value::as_bool) == Some(true);
    if config.get("NetworkDisabled").and_then(Value::as_bool) == Some(true) {
        return Err(not_built("Config.NetworkDisabled; use --network none"));
    }

    // Network.
    let mode = hc.get("NetworkMode").and_then(Value::as_str).unwrap_or("");
    let (network, network_name) = match mode {
        "" | "default" | "bridge" => (Network::Bridge, String::new()),
        "none" => (Network::None, String::new()),
        "host" => (Network::Host, String::new()),
        other if other.starts_with("container:") => return Err(not_built(format!("--network {other}"))),
        other => (Network::User, other.to_owned()),
    };
    let endpoints = endpoint_requests(body, network, &network_name, config)?;
    let (ports, publish_all, exposed) = port_requests(hc, config, image, network)?;
    // Process.
    let ic = &image.config.config;
    let user_entrypoint = config.get("Entrypoint").filter(|v| !v.is_null());
    let entrypoint = match user_entrypoint {
        Some(v) => strings(Some(v)),
        None => ic.entrypoint.clone().unwrap_or_default(),
    };
    let user_cmd = strings(config.get("Cmd"));
    let cmd = if !user_cmd.is_empty() {
        user_cmd
    } else if user_entrypoint.is_some() {
        // A new entrypoint drops the image's Cmd, as with dockerd.
        Vec::new()
    } else {
        ic.cmd.clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    if args.is_empty() {
        return Err(invalid("No command specified"));
    }
    let mut env: Vec<String> = ic.env.clone().unwrap_or_default();
    for e in strings(config.get("Env")) {
        let key = e.split('=').next().unwrap_or_default().to_owned();
        if !e.contains('=') {
            // `-e NAME` without a value and no such variable in the CLI's environment.
            continue;
        }
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
    }
    let cwd = match string(config.get("WorkingDir")) {
        w if !w.is_empty() => w,
        _ => ic
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_owned()),
    };
    if !cwd.starts_with('/') {
        return Err(invalid(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }
    let user = match string(config.get("User")) {
        u if !u.is_empty() => u,
        _ => ic.user.clone().unwrap_or_default(),
    };
    let privileged = hc.get("Privileged").and_then(Value::as_bool).unwrap_or(false);
    let host = host_options(hc, network, &mut resources, &mut warnings)?;
    let mut hostname = string(config.get("Hostname"));
    if host.uts_host && !hostname.is_empty() {
        return Err(invalid("conflicting options: hostname and the UTS mode"));
    }
    if hostname.is_empty() {
        hostname = if network == Network::Host || host.uts_host {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| id[..12].to_owned())
        } else {
            id[..12].to_owned()
        };
    }
    let domainname = string(config.get("Domainname"));

    // Mounts.
    let mut mounts = Vec::new();
    for b in strings(hc.get("Binds")) {
        mounts.push(parse_bind(&b)?);
    }
    if let Some(ms) = hc.get("Mounts").and_then(Value::as_array) {
        for m in ms {
            mounts.push(parse_mount(m)?);
        }
    }
    if let Some(t) = hc.get("Tmpfs").and_then(Value::as_object) {
        for (dest, opts) in t {
            let options: Vec<String> = opts
                .as_str()
                .unwrap_or("")
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
            mounts.push(MountRec {
                kind: "tmpfs".into(),
                source: String::new(),
                destination: dest.clone(),
                readonly: options.iter().any(|o| o == "ro"),
                propagation: String::new(),
                options,
                ..MountRec::default()
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &mounts {
        if !m.destination.starts_with('/') {
            return Err(invalid(format!(
                "invalid mount config: mount path must be absolute: {}",
                m.destination
            )));
        }
        if clean_path(&m.destination) == "/" {
            return Err(invalid(format!(
                "invalid mount config for type \"{}\": invalid specification: destination can't be '/'",
                m.kind
            )));
        }
        if !seen.insert(clean_path(&m.destination)) {
            return Err(invalid(format!("Duplicate mount point: {}", m.destination)));
        }
    }
    // Anonymous volumes: the request's `Volumes` (`-v /path`) and the image's `VOLUME`s,
    // where no other mount is (dockerd's `createContainerVolumesOS`).
    let mut volumes: std::collections::BTreeSet<String> = ic.volumes.iter().flatten().map(|(k, _)| k.clone()).collect();
    if let Some(v) = config.get("Volumes").and_then(Value::as_object) {
        volumes.extend(v.keys().cloned());
    }
    for dest in &volumes {
        if !dest.starts_with('/') {
            return Err(invalid(format!(
                "invalid mount config for type \"volume\": invalid mount path: '{dest}' mount path must be absolute"
            )));
        }
        let clean = clean_path(dest);
        if clean == "/" {
            return Err(invalid(
                "invalid mount config for type \"volume\": invalid specification: destination can't be '/'",
            ));
        }
        if seen.insert(clean.clone()) {
            mounts.push(MountRec {
                kind: "volume".into(),
                destination: clean,
                anonymous: true,
                ..MountRec::default()
            });
        }
    }

    // Name resolution files.
    let mut extra_hosts = Vec::new();
    for h in strings(hc.get("ExtraHosts")) {
        // `name:ip` (the CLI's form) or `name=ip`; IPv6 addresses contain ':'.
        let (name, ip) = h
            .split_once('=')
            .or_else(|| h.split_once(':'))
            .ok_or_else(|| invalid(format!("invalid extra host {h:?}: expected name:ip")))?;
        let ip = if ip == "host-gateway" {
            return Err(not_built("--add-host NAME:host-gateway"));
        } else {
            ip.trim_start_matches('[').trim_end_matches(']')
        };
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!("invalid IP address in add-host: {ip:?}")));
        }
        extra_hosts.push((name.to_owned(), ip.to_owned()));
    }
    let dns = strings(hc.get("Dns"));
    for d in &dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!("{d} is not an ip address")));
        }
    }

    // Logs.
    let mut log = LogLimits::default();
    match hc.pointer("/LogConfig/Type").and_then(Value::as_str).unwrap_or("") {
        "" | "json-file" => {}
        other => return Err(not_built(format!("--log-driver {other} (only json-file is built)"))),
    }
    if let Some(opts) = hc.pointer("/LogConfig/Config").and_then(Value::as_object) {
        for (k, v) in opts {
            let v = v.as_str().unwrap_or_default();
            match k.as_str() {
                "max-size" => {
                    log.max_size = berth_runtime::parse_size(v)
                        .filter(|&n| n > 0)
                        .ok_or_else(|| invalid(format!("invalid max-size {v:?}")))?;
                }
                "max-file" => {
                    log.max_file = v
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| invalid(format!("invalid max-file {v:?}: must be a positive number")))?;
                }
                other => return Err(invalid(format!("unknown log opt '{other}' for json-file log driver"))),
            }
        }
    }

    // The request's, else the image's (`STOPSIGNAL`; SIGRTMIN+3 for systemd images), else
    // SIGTERM, as dockerd merges it.
    let requested_stop = string(config.get("StopSignal"));
    let stop_signal = match (requested_stop.as_str(), ic.stop_signal.as_deref()) {
        (s, _) if !s.is_empty() => {
            parse_signal(s)?;
            s.to_owned()
        }
        (_, Some(s)) if !s.is_empty() && parse_signal(s).is_ok() => s.to_owned(),
        _ => "SIGTERM".to_owned(),
    };
    let healthcheck = super::health::Healthcheck::resolve(config.get("Healthcheck"), ic.healthcheck.as_ref())?;
    let settings = Settings {
        healthcheck: healthcheck.clone(),
        args,
        env: env.clone(),
        cwd: cwd.clone(),
        user: user.clone(),
        hostname: hostname.clone(),
        domainname: domainname.clone(),
        network,
        network_name: network_name.clone(),
        endpoints,
        ports,
        publish_all,
        exposed,
        privileged,
        cap_add: strings(hc.get("CapAdd")),
        cap_drop: strings(hc.get("CapDrop")),
        mounts,
        readonly_rootfs: hc.get("ReadonlyRootfs").and_then(Value::as_bool).unwrap_or(false),
        extra_hosts,
        dns,
        dns_search: strings(hc.get("DnsSearch")),
        dns_options: strings(hc.get("DnsOptions")),
        log,
        auto_remove: hc.get("AutoRemove").and_then(Value::as_bool).unwrap_or(false),
        stop_signal,
        stop_timeout: config.get("StopTimeout").and_then(Value::as_i64),
        open_stdin,
        resources,
        tty,
        console_size,
        restart,
        host,
        init: hc.get("Init").and_then(Value::as_bool),
        cgroup_parent: cgroup_parent(hc)?,
    };
    // Capabilities are checked now, not at start.
    berth_runtime::check_capabilities(&settings.cap_add, &settings.cap_drop)?;

    let mut labels = ic.labels.clone().unwrap_or_default();
    if let Some(l) = config.get("Labels").and_then(Value::as_object) {
        for (k, v) in l {
            labels.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
        }
    }
    let inspect_config = json!({
        "Hostname": hostname,
        "Domainname": domainname,
        "User": user,
        "AttachStdin": config.get("AttachStdin").and_then(Value::as_bool).unwrap_or(false),
        "AttachStdout": config.get("AttachStdout").and_then(Value::as_bool).unwrap_or(false),
        "AttachStderr": config.get("AttachStderr").and_then(Value::as_bool).unwrap_or(false),
        "Tty": tty,
        "OpenStdin": open_stdin,
        "StdinOnce": config.get("StdinOnce").and_then(Value::as_bool).unwrap_or(false),
        "Env": env,
        "Cmd": if cmd.is_empty() { Value::Null } else { json!(cmd) },
        "Image": string(config.get("Image")),
        "Volumes": if volumes.is_empty() {
            Value::Null
        } else {
            Value::Object(volumes.iter().map(|v| (v.clone(), json!({}))).collect())
        },
        "WorkingDir": if cwd == "/" && ic.working_dir.is_none() && string(config.get("WorkingDir")).is_empty() { String::new() } else { cwd },
        "Entrypoint": if entrypoint.is_empty() { Value::Null } else { json!(entrypoint) },
        "OnBuild": null,
        "Labels": labels,
        "StopSignal": if requested_stop.is_empty() { json!(ic.stop_signal) } else { json!(requested_stop) },
        "StopTimeout": config.get("StopTimeout").cloned().unwrap_or(Value::Null),
        "Healthcheck": healthcheck.as_ref().map(super::health::Healthcheck::to_json),
        "ExposedPorts": if settings.exposed.is_empty() {
            Value::Null
        } else {
            Value::Object(settings.exposed.iter().map(|p| (p.clone(), json!({}))).collect())
        },
    });
    let mut host_config = hc.clone();
    if let Some(o) = host_config.as_object_mut() {
        o.insert(
            "NetworkMode".into(),
            json!(match network {
                Network::User => network_name.as_str(),
                Network::Bridge if mode == "default" => "default",
                n => n.mode_name(),
            }),
        );
        // dockerd's default: as much swap as memory, shown in HostConfig (and checked by
        // `docker update`).
        let memory = o.get("Memory").and_then(Value::as_i64).unwrap_or(0);
        if memory > 0 && o.get("MemorySwap").and_then(Value::as_i64).unwrap_or(0) == 0 {
            o.insert("MemorySwap".into(), json!(2 * memory));
        }
        // The modes and sizes as resolved, as dockerd shows them.
        let h = &settings.host;
        o.insert(
            "CgroupnsMode".into(),
            json!(if h.cgroupns_host { "host" } else { "private" }),
        );
        if matches!(o.get("IpcMode").and_then(Value::as_str), None | Some("")) {
            o.insert("IpcMode".into(), json!("private"));
        }
        o.insert(
            "ShmSize".into(),
            json!(h.shm_size.unwrap_or(berth_runtime::DEFAULT_SHM_SIZE)),
        );
        o.insert("OomKillDisable".into(), json!(settings.resources.oom_kill_disable));
        o.entry("LogConfig")
            .or_insert(json!({"Type": "json-file", "Config": {}}));
        if o.get("LogConfig").and_then(|l| l.get("Type")).and_then(Value::as_str) == Some("") {
            o.insert(
                "LogConfig".into(),
                json!({"Type": "json-file", "Config": o["LogConfig"]["Config"].clone()}),
            );
        }
    }
    Ok(Parsed {
        settings,
        config: inspect_config,
        host_config,
        warnings,
    })
}

/// `HostConfig.RestartPolicy`: `no` (or empty), `always`, `unless-stopped`,
/// `on-failure[:max]`, checked as dockerd checks it.
pub(super) fn restart_policy(p: &Value, auto_remove: bool) -> Result<RestartPolicy, Error> {
    match p.get("Name").and_then(Value::as_str).unwrap_or("") {
        "" | "no" => Ok(RestartPolicy::default()),
        name @ ("always" | "unless-stopped" | "on-failure") => {
            let max = p.get("MaximumRetryCount").and_then(Value::as_i64).unwrap_or(0);
            if max < 0 {
                return Err(invalid(format!(
                    "invalid restart policy: maximum retry count cannot be negative: {max}"
                )));
            }
            if max > 0 && name != "on-failure" {
                return Err(invalid(
                    "invalid restart policy: maximum retry count can only be used with 'on-failure'",
                ));
            }
            if auto_remove {
                return Err(invalid("can't create 'AutoRemove' container with restart policy"));
            }
            Ok(RestartPolicy {
                name: name.to_owned(),
                max: max as u64,
            })
        }
        other => Err(invalid(format!(
            "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure' or 'unless-stopped'"
        ))),
    }
}

/// Whether the host runs the unified cgroup v2 hierarchy only.
fn cgroup_v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Whether the kernel enforces AppArmor (its module is loaded and enabled).
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.starts_with('Y'))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `--security-opt`, `--device`, `--pid/--uts/--ipc/--cgroupns`, `--ulimit`, `--sysctl`,
/// `--shm-size`, `--group-add`, `--oom-score-adj`, `--oom-kill-disable`, checked as dockerd
/// (and runc, at start) check them.
fn host_options(
    hc: &Value,
    network: Network,
    resources: &mut berth_runtime::Resources,
    warnings: &mut Vec<String>,
) -> Result<berth_runtime::HostOptions, Error> {
    use berth_runtime::{DeviceMapping, HostOptions, IpcMode, Seccomp, Ulimit};
    let mut h = HostOptions::default();

    for opt in strings(hc.get("SecurityOpt")) {
        match opt.as_str() {
            "no-new-privileges" => {
                h.no_new_privileges = true;
                continue;
            }
            "writable-cgroups" => {
                h.writable_cgroups = Some(true);
                continue;
            }
            "disable" => continue,
            _ => {}
        }
        let (key, value) = opt
            .split_once('=')
            .or_else(|| opt.split_once(':'))
            .ok_or_else(|| invalid(format!("invalid --security-opt 1: {opt:?}")))?;
        match key {
            "label" if value == "disable" => {}
            "label" => {
                return Err(invalid(format!(
                    "--security-opt {opt}: SELinux labels are not supported (berth runs without SELinux); only label=disable is accepted"
                )));
            }
            "apparmor" if value == "unconfined" => {}
            "apparmor" if apparmor_enabled() => h.apparmor_profile = Some(value.to_owned()),
            "apparmor" => {
                return Err(invalid(format!(
                    "--security-opt {opt}: AppArmor is not enabled on this host, so profile {value:?} cannot be applied; use apparmor=unconfined or leave the option out"
                )));
            }
            "seccomp" => {
                h.seccomp = match value {
                    "unconfined" => Seccomp::Unconfined,
                    "builtin" => Seccomp::Default,
                    profile => {
                        berth_runtime::check_seccomp_profile(profile)?;
                        Seccomp::Profile(profile.to_owned())
                    }
                };
            }
            "no-new-privileges" | "writable-cgroups" => {
                let v = parse_bool(value).ok_or_else(|| invalid(format!("invalid --security-opt 2: {opt:?}")))?;
                if key == "no-new-privileges" {
                    h.no_new_privileges = v;
                } else {
                    h.writable_cgroups = Some(v);
                }
            }
            _ => return Err(invalid(format!("invalid --security-opt 2: {opt:?}"))),
        }
    }

    // Namespaces.
    let mode = |k: &str| hc.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match mode("PidMode").as_str() {
        "" => {}
        "host" => h.pid_host = true,
        m if m.starts_with("container:") => return Err(not_built(format!("--pid {m}"))),
        m => return Err(invalid(format!("invalid PID mode: {m}"))),
    }
    match mode("UTSMode").as_str() {
        "" => {}
        "host" => h.uts_host = true,
        m => return Err(invalid(format!("invalid UTS mode: {m}"))),
    }
    h.ipc = match mode("IpcMode").as_str() {
        "" | "private" | "shareable" => IpcMode::Private,
        "host" => IpcMode::Host,
        "none" => IpcMode::None,
        m if m.starts_with("container:") => return Err(not_built(format!("--ipc {m}"))),
        m => return Err(invalid(format!("invalid IPC mode: {m}"))),
    };
    h.cgroupns_host = match mode("CgroupnsMode").as_str() {
        "host" => true,
        "private" => false,
        // dockerd's default: private on cgroup v2, the host's on v1 (privileged or not).
        "" => !cgroup_v2(),
        m => return Err(invalid(format!("invalid cgroup namespace mode: {m}"))),
    };

    // Devices.
    if let Some(devices) = hc.get("Devices").and_then(Value::as_array) {
        for d in devices {
            let on_host = string(d.get("PathOnHost"));
            if on_host.is_empty() {
                return Err(invalid("invalid device mapping: PathOnHost is empty"));
            }
            let mut in_container = string(d.get("PathInContainer"));
            if in_container.is_empty() {
                in_container = on_host.clone();
            }
            if !in_container.starts_with('/') {
                return Err(invalid(format!(
                    "invalid device mapping {on_host}:{in_container}: the path in the container must be absolute"
                )));
            }
            let mut permissions = string(d.get("CgroupPermissions"));
            if permissions.is_empty() {
                permissions = "rwm".to_owned();
            }
            if permissions.len() > 3 || !permissions.bytes().all(|b| matches!(b, b'r' | b'w' | b'm')) {
                return Err(invalid(format!(
                    "invalid device mode {permissions:?} for {on_host}: use a combination of r, w and m"
                )));
            }
            let mapping = DeviceMapping {
                path_on_host: PathBuf::from(on_host),
                path_in_container: in_container,
                permissions,
            };
            berth_runtime::check_device(&mapping)?;
            h.devices.push(mapping);
        }
    }
    for rule in strings(hc.get("DeviceCgroupRules")) {
        berth_runtime::check_device_cgroup_rule(&rule)?;
        h.device_cgroup_rules.push(rule);
    }

    // Limits.
    if let Some(ulimits) = hc.get("Ulimits").and_then(Value::as_array) {
        for u in ulimits {
            let ulimit = Ulimit {
                name: string(u.get("Name")),
                soft: u.get("Soft").and_then(Value::as_i64).unwrap_or(0),
                hard: u.get("Hard").and_then(Value::as_i64).unwrap_or(0),
            };
            berth_runtime::check_ulimit(&ulimit)?;
            h.ulimits.retain(|x| x.name != ulimit.name);
            h.ulimits.push(ulimit);
        }
    }
    if let Some(sysctls) = hc.get("Sysctls").and_then(Value::as_object) {
        for (k, v) in sysctls {
            h.sysctls.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
        }
        berth_runtime::check_sysctls(&h.sysctls, network == Network::Host, h.ipc == IpcMode::Host, h.uts_host)?;
    }
    match hc.get("ShmSize").and_then(Value::as_i64).unwrap_or(0) {
        n if n < 0 => return Err(invalid("SHM size can not be less than 0")),
        0 => {}
        n => h.shm_size = Some(n as u64),
    }
    h.group_add = strings(hc.get("GroupAdd"));
    if let Some(score) = hc.get("OomScoreAdj").and_then(Value::as_i64).filter(|&s| s != 0) {
        if !(-1000..=1000).contains(&score) {
            return Err(invalid(format!(
                "Invalid value {score}, range for oom score adj is [-1000, 1000]"
            )));
        }
        if score < 0 && !berth_runtime::has_effective_cap(24) {
            return Err(invalid(format!(
                "--oom-score-adj {score}: lowering the OOM score needs CAP_SYS_RESOURCE, which this daemon does not have; use a value from 0 to 1000"
            )));
        }
        h.oom_score_adj = Some(score as i32);
    }
    if hc.get("OomKillDisable").and_then(Value::as_bool) == Some(true) {
        if cgroup_v2() || !std::path::Path::new("/sys/fs/cgroup/memory/memory.oom_control").exists() {
            warnings.push("Your kernel does not support OomKillDisable. OomKillDisable discarded.".to_owned());
        } else {
            if resources.memory.is_none() {
                warnings.push(
                    "OOM killer is disabled for the container, but no memory limit is set, this can result in the system running out of resources."
                        .to_owned(),
                );
            }
            resources.oom_kill_disable = true;
        }
    }
    Ok(h)
}

/// `--cgroup-parent`: a name or a path, kept inside the cgroup hierarchy, as `/a/b`.
fn cgroup_parent(hc: &Value) -> Result<String, Error> {
    let given = string(hc.get("CgroupParent"));
    let mut parts = Vec::new();
    for part in given.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(invalid(format!(
                    "invalid --cgroup-parent {given:?}: '..' would leave the cgroup hierarchy; give a name or a path below it"
                )));
            }
            p => parts.push(p),
        }
    }
    Ok(if parts.is_empty() {
        String::new()
    } else {
        format!("/{}", parts.join("/"))
    })
}

/// The cgroup limits, checked as dockerd checks them.
pub(super) fn resources(hc: &Value) -> Result<berth_runtime::Resources, Error> {
    let int = |k: &str| hc.get(k).and_then(Value::as_i64).filter(|&v| v != 0);
    let text = |k: &str| {
        hc.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let mut r = berth_runtime::Resources {
        memory: int("Memory"),
        memory_swap: int("MemorySwap"),
        memory_reservation: int("MemoryReservation"),
        cpu_shares: int("CpuShares").map(|v| v as u64),
        cpu_quota: int("CpuQuota"),
        cpu_period: int("CpuPeriod").map(|v| v as u64),
        cpuset_cpus: text("CpusetCpus"),
        cpuset_mems: text("CpusetMems"),
        pids_limit: int("PidsLimit").filter(|&v| v > 0),
        oom_kill_disable: false,
    };
    if let Some(m) = r.memory {
        if m < 6 * 1024 * 1024 {
            return Err(invalid("Minimum memory limit allowed is 6MB"));
        }
    }
    if let Some(v) = r.memory_reservation {
        if v > 0 && v < 6 * 1024 * 1024 {
            return Err(invalid("Minimum memory reservation allowed is 6MB"));
        }
        if r.memory.is_some_and(|m| m > 0 && m < v) {
            return Err(invalid(
                "Minimum memory limit can not be less than memory reservation limit, see usage",
            ));
        }
    }
    if r.cpu_period.is_some_and(|p| !(1000..=1_000_000).contains(&p)) {
        return Err(invalid(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ));
    }
    if r.cpu_quota.is_some_and(|q| q > 0 && q < 1000) {
        return Err(invalid("CPU cfs quota can not be less than 1ms (i.e. 1000)"));
    }
    check_cpuset(
        r.cpuset_cpus.as_deref().unwrap_or(""),
        "/sys/devices/system/cpu/online",
        "cpus",
        "CPUs",
    )?;
    check_cpuset(
        r.cpuset_mems.as_deref().unwrap_or(""),
        "/sys/devices/system/node/online",
        "mems",
        "memory nodes",
    )?;
    match (r.memory, r.memory_swap) {
        (None, Some(s)) if s > 0 => {
            return Err(invalid(
                "You should always set the Memory limit when using Memoryswap limit, see usage",
            ));
        }
        (Some(m), Some(s)) if s > 0 && s < m => {
            return Err(invalid(
                "Minimum memoryswap limit should be larger than memory limit, see usage",
            ));
        }
        // dockerd's default: as much swap as memory.
        (Some(m), None) => r.memory_swap = Some(2 * m),
        _ => {}
    }
    if r.memory_swap.is_some_and(|s| s != -1) && !swap_accounting() {
        // The kernel cannot limit swap: a limit the user did not ask for is dropped (as
        // dockerd does); one they asked for is refused.
        if int("MemorySwap").is_some_and(|s| s > 0) {
            return Err(invalid(
                "this kernel does not support swap limits (no memory.memsw.limit_in_bytes); leave --memory-swap unset",
            ));
        }
        r.memory_swap = None;
    }
    if r.memory_swap == Some(-1) && !swap_accounting() {
        r.memory_swap = None;
    }
    if let Some(nano) = int("NanoCpus") {
        if r.cpu_quota.is_some() || r.cpu_period.is_some() {
            return Err(invalid(
                "Conflicting options: Nano CPUs and CPU Period cannot both be set",
            ));
        }
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        if nano < 10_000_000 || nano > ncpu * 1_000_000_000 {
            return Err(invalid(format!(
                "Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
            )));
        }
        r.cpu_period = Some(100_000);
        r.cpu_quota = Some(nano * 100_000 / 1_000_000_000);
    }
    Ok(r)
}

/// `--cpuset-cpus` / `--cpuset-mems`: a list like `0-2,5` naming only what the host has
/// (`online` is the kernel's list of them).
pub(super) fn check_cpuset(list: &str, online: &str, what: &str, plural: &str) -> Result<(), Error> {
    if list.is_empty() {
        return Ok(());
    }
    let available_text = std::fs::read_to_string(online).unwrap_or_else(|_| "0".to_owned());
    let available = parse_cpuset(available_text.trim()).unwrap_or_default();
    let requested = parse_cpuset(list).ok_or_else(|| {
        invalid(format!(
            "Invalid value {list} for cpuset {what}: invalid format: {list}"
        ))
    })?;
    if requested.iter().any(|c| !available.contains(c)) {
        return Err(invalid(format!(
            "Requested {plural} are not available - requested {list}, available: {}",
            available_text.trim()
        )));
    }
    Ok(())
}

/// `0-2,5` -> {0, 1, 2, 5}; `None` when malformed.
fn parse_cpuset(list: &str) -> Option<std::collections::BTreeSet<u32>> {
    let mut out = std::collections::BTreeSet::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().ok()?);
            }
        }
    }
    Some(out)
}

/// Whether the memory cgroup can limit swap (v1: `memory.memsw.*`; v2: `memory.swap.max`).
pub(super) fn swap_accounting() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        || std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// `-v SRC:DST[:OPTS]`: a host path (created when missing, as dockerd does for `-v`), or a
/// named volume (created at create when missing).
pub(crate) fn parse_bind(spec: &str) -> Result<MountRec, Error> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [src, dst] if !src.is_empty() => (*src, *dst, ""),
        [src, dst, opts] if !src.is_empty() => (*src, *dst, *opts),
        _ => return Err(invalid(format!("invalid volume specification: '{spec}'"))),
    };
    let volume = !src.starts_with('/');
    let mut readonly = false;
    let mut propagation = "rprivate".to_owned();
    let mut nocopy = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => propagation = o.to_owned(),
            // SELinux relabelling has no meaning on these hosts.
            "z" | "Z" => return Err(not_built(format!("the :{o} SELinux relabel option"))),
            "nocopy" => nocopy = true,
            other => {
                return Err(invalid(format!(
                    "invalid mode: {other} in volume specification: '{spec}'"
                )));
            }
        }
    }
    if volume {
        return Ok(MountRec {
            kind: "volume".into(),
            destination: dst.to_owned(),
            readonly,
            volume: src.to_owned(),
            nocopy,
            mode: if opts.is_empty() {
                "z".to_owned()
            } else {
                opts.to_owned()
            },
            ..MountRec::default()
        });
    }
    if !std::path::Path::new(src).exists() {
        std::fs::create_dir_all(src).map_err(|e| invalid(format!("failed to create bind source {src}: {e}")))?;
    }
    Ok(MountRec {
        kind: "bind".into(),
        source: src.to_owned(),
        destination: dst.to_owned(),
        readonly,
        propagation,
        ..MountRec::default()
    })
}

/// dockerd's `path.Clean` of a mount destination: no `//`, no trailing `/`, no `.`.
fn clean_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

/// `--mount type=bind|tmpfs,…` as the CLI sends it (`HostConfig.Mounts[]`).
fn parse_mount(m: &Value) -> Result<MountRec, Error> {
    let kind = string(m.get("Type"));
    let target = string(m.get("Target"));
    let readonly = m.get("ReadOnly").and_then(Value::as_bool).unwrap_or(false);
    match kind.as_str() {
        "bind" => {
            let source = string(m.get("Source"));
            if !std::path::Path::new(&source).exists() {
                return Err(invalid(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {source}"
                )));
            }
            let propagation = m
                .pointer("/BindOptions/Propagation")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .unwrap_or("rprivate")
                .to_owned();
            Ok(MountRec {
                kind,
                source,
                destination: target,
                readonly,
                propagation,
                options: Vec::new(),
                ..MountRec::default()
            })
        }
        "tmpfs" => {
            let mut options = Vec::new();
            if let Some(size) = m.pointer("/TmpfsOptions/SizeBytes").and_then(Value::as_i64) {
                if size > 0 {
                    options.push(format!("size={size}"));
                }
            }
            if let Some(mode) = m.pointer("/TmpfsOptions/Mode").and_then(Value::as_u64) {
                options.push(format!("mode={mode:o}"));
            }
            if readonly {
                options.push("ro".into());
            }
            Ok(MountRec {
                kind,
                source: String::new(),
                destination: target,
                readonly,
                propagation: String::new(),
                options,
                ..MountRec::default()
            })
        }
        "volume" => {
            let bad = |reason: &str| invalid(format!("invalid mount config for type \"volume\": {reason}"));
            if is_set(m.get("BindOptions")) {
                return Err(bad("field BindOptions must not be specified"));
            }
            if is_set(m.get("TmpfsOptions")) {
                return Err(bad("field TmpfsOptions must not be specified"));
            }
            let opts = m.get("VolumeOptions").cloned().unwrap_or(Value::Null);
            if is_set(opts.get("Subpath")) {
                return Err(not_built("--mount volume-subpath"));
            }
            match opts.pointer("/DriverConfig/Name").and_then(Value::as_str).unwrap_or("") {
                "" | "local" => {}
                other => {
                    return Err(invalid(format!(
                        "error looking up volume plugin {other}: plugin \"{other}\" not found"
                    )));
                }
            }
            let map = |v: Option<&Value>| -> BTreeMap<String, String> {
                v.and_then(Value::as_object)
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let source = string(m.get("Source"));
            Ok(MountRec {
                kind,
                destination: target,
                readonly,
                anonymous: source.is_empty(),
                volume: source,
                nocopy: opts.get("NoCopy").and_then(Value::as_bool).unwrap_or(false),
                mode: "z".into(),
                volume_options: map(opts.pointer("/DriverConfig/Options")),
                volume_labels: map(opts.get("Labels")),
                ..MountRec::default()
            })
        }
        other => Err(invalid(format!("invalid mount config: mount type unknown: {other:?}"))),
    }
}

/// `SIGTERM`, `TERM`, `15` -> the signal.
/// A signal by name (`SIGTERM`, `TERM`, `SIGRTMIN+3`, `RTMAX-1`) or number, as dockerd
/// reads `--stop-signal`, `STOPSIGNAL` and `docker kill -s`: its number.
pub(crate) fn parse_signal(s: &str) -> Result<i32, Error> {
    use std::str::FromStr;
    let bad = || invalid(format!("Invalid signal: {s}"));
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=rtmax).contains(&n) { Ok(n) } else { Err(bad()) };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rt = |rest: &str, base: i32, sign: i32| -> Result<i32, Error> {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            let (op, n) = rest.split_at(1);
            match (op, n.parse::<i32>()) {
                ("+", Ok(n)) if sign > 0 => n,
                ("-", Ok(n)) if sign < 0 => n,
                _ => return Err(bad()),
            }
        };
        let n = base + sign * off;
        if (rtmin..=rtmax).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt(rest, rtmin, 1);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt(rest, rtmax, -1);
    }
    nix::sys::signal::Signal::from_str(&format!("SIG{name}"))
        .map(|sig| sig as i32)
        .map_err(|_| bad())
}

/// The networks of a create request: the `NetworkMode` network first, with what
/// `NetworkingConfig.EndpointsConfig` asks of it and of further networks (API 1.44+ sends
/// several). Names are resolved by the caller.
fn endpoint_requests(
    body: &Value,
    network: Network,
    network_name: &str,
    config: &Value,
) -> Result<Vec<EndpointRequest>, Error> {
    let primary = match network {
        Network::User => network_name,
        Network::Bridge => "bridge",
        Network::Host | Network::None => "",
    };
    let mut out: Vec<EndpointRequest> = Vec::new();
    if !primary.is_empty() {
        out.push(EndpointRequest {
            network: primary.to_owned(),
            ..EndpointRequest::default()
        });
    }
    // Before API 1.44 the MAC address is the container's (`Config.MacAddress`).
    let legacy_mac = string(config.get("MacAddress"));
    if let Some(eps) = body
        .pointer("/NetworkingConfig/EndpointsConfig")
        .and_then(Value::as_object)
    {
        for (name, ep) in eps {
            let is_primary = name == primary || (network == Network::Bridge && name == "default");
            if !is_primary && !network.wired() {
                return Err(invalid(format!(
                    "container cannot be connected to network {name} with --network {}",
                    network.mode_name()
                )));
            }
            let ipv4 = match string(ep.pointer("/IPAMConfig/IPv4Address")) {
                s if s.is_empty() => None,
                s => Some(s.parse().map_err(|_| invalid(format!("invalid IPv4 address: {s}")))?),
            };
            let ipv6 = match string(ep.pointer("/IPAMConfig/IPv6Address")) {
                s if s.is_empty() => None,
                s => Some(s.parse().map_err(|_| invalid(format!("invalid IPv6 address: {s}")))?),
            };
            if (ipv4.is_some() || ipv6.is_some()) && network != Network::User {
                return Err(invalid(
                    "user specified IP address is supported on user defined networks only",
                ));
            }
            let aliases = strings(ep.get("Aliases"));
            if !aliases.is_empty() && network != Network::User {
                return Err(invalid(
                    "network-scoped alias is supported only for containers in user defined networks",
                ));
            }
            let mac = match string(ep.get("MacAddress")) {
                m if m.is_empty() => None,
                m => Some(m),
            };
            let req = EndpointRequest {
                network: if is_primary { primary.to_owned() } else { name.clone() },
                ipv4,
                ipv6,
                mac,
                aliases,
            };
            match out.iter_mut().find(|e| e.network == req.network) {
                Some(e) => *e = req,
                None => out.push(req),
            }
        }
    }
    if !legacy_mac.is_empty() {
        match out.first_mut() {
            Some(e) if e.mac.is_none() => e.mac = Some(legacy_mac),
            Some(_) => {}
            None => return Err(invalid("conflicting options: mac-address and the network mode")),
        }
    }
    for e in &out {
        if let Some(m) = &e.mac {
            parse_mac(m)?;
        }
    }
    Ok(out)
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6], Error> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || invalid(format!("{s} is not a valid mac address"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(invalid(format!("{s} is a multicast mac address")));
    }
    Ok(mac)
}

/// `PORT/PROTO` -> (port, proto).
pub(crate) fn parse_port_proto(s: &str) -> Result<(u16, String), Error> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid(format!("invalid port specification: {s:?}")))?;
    match proto {
        "tcp" | "udp" | "sctp" => Ok((port, proto.to_owned())),
        _ => Err(invalid(format!("invalid proto: {proto}"))),
    }
}

/// `HostConfig.PortBindings`, `PublishAllPorts` and the exposed ports (the request's and the
/// image's). Publishing needs a network namespace of the container's own on a network.
fn port_requests(
    hc: &Value,
    config: &Value,
    image: &ImageRecord,
    network: Network,
) -> Result<(Vec<PortRequest>, bool, Vec<String>), Error> {
    let mut exposed: Vec<String> = Vec::new();
    let mut add_exposed = |key: &str| -> Result<(), Error> {
        let (port, proto) = parse_port_proto(key)?;
        let k = format!("{port}/{proto}");
        if !exposed.contains(&k) {
            exposed.push(k);
        }
        Ok(())
    };
    if let Some(ports) = image.config.config.exposed_ports.as_ref() {
        for k in ports.keys() {
            add_exposed(k)?;
        }
    }
    if let Some(ports) = config.get("ExposedPorts").and_then(Value::as_object) {
        for k in ports.keys() {
            add_exposed(k)?;
        }
    }
    let mut ports = Vec::new();
    if let Some(bindings) = hc.get("PortBindings").and_then(Value::as_object) {
        for (key, list) in bindings {
            let (container_port, proto) = parse_port_proto(key)?;
            add_exposed(key)?;
            let list = list.as_array().cloned().unwrap_or_default();
            let list = if list.is_empty() { vec![json!({})] } else { list };
            for b in list {
                let host_ip = string(b.get("HostIp"));
                if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(invalid(format!("invalid host IP address {host_ip:?} in -p {key}")));
                }
                let host_port = match string(b.get("HostPort")) {
                    p if p.is_empty() || p == "0" => None,
                    p => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        invalid(format!(
                            "invalid host port {p:?} in -p {key}: expected a port from 1 to 65535"
                        ))
                    })?),
                };
                ports.push(PortRequest {
                    container_port,
                    proto: proto.clone(),
                    host_ip,
                    host_port,
                });
            }
        }
    }
    let publish_all = hc.get("PublishAllPorts").and_then(Value::as_bool) == Some(true);
    if (!ports.is_empty() || publish_all) && !network.wired() {
        return Err(invalid(format!(
            "published ports need a network: with --network {} the container {} (use --network bridge or a user network, or drop -p/-P)",
            network.mode_name(),
            if network == Network::Host {
                "already uses the host's ports directly"
            } else {
                "has no network to publish them from"
            }
        )));
    }
    Ok((ports, publish_all, exposed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_image::{ContainerConfig, ImageConfig, RootFs};

    fn image() -> ImageRecord {
        ImageRecord {
            id: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                .parse()
                .unwrap(),
            manifest: None,
            config: ImageConfig {
                created: None,
                author: None,
                architecture: "amd64".into(),
                os: "linux".into(),
                config: ContainerConfig {
                    env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
                    cmd: Some(vec!["sh".into()]),
                    ..ContainerConfig::default()
                },
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: vec![],
                },
                history: vec![],
                container: None,
            },
            layers: vec![],
            size: 0,
            created: 0,
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn command_env_and_network() {
        let p = parse(
            &json!({"Image": "bb", "Cmd": ["echo", "hi"], "Env": ["A=2", "B=3"]}),
            &image(),
            ID,
        )
        .unwrap();
        assert_eq!(p.settings.args, ["echo", "hi"]);
        assert_eq!(p.settings.env, ["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(p.settings.network, Network::Bridge);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.settings.endpoints.len(), 1);
        assert_eq!(p.settings.endpoints[0].network, "bridge");
        assert_eq!(p.settings.hostname, &ID[..12]);
        let p = parse(
            &json!({"Image": "bb", "HostConfig": {"NetworkMode": "none"}}),
            &image(),
            ID,
        )
        .unwrap();
        assert_eq!(p.settings.args, ["sh"]);
        assert!(p.warnings.is_empty());
        let p = parse(&json!({"Entrypoint": ["env"]}), &image(), ID).unwrap();
        assert_eq!(p.settings.args, ["env"], "a new entrypoint drops the image's Cmd");
    }

    #[test]
    fn refusals_name_the_flag() {
        let table: &[(Value, &str)] = &[
            (
                json!({"HostConfig": {"Memory": 1048576}}),
                "Minimum memory limit allowed is 6MB",
            ),
            (
                json!({"HostConfig": {"Memory": 67108864, "MemorySwap": 1048576}}),
                "larger than memory limit",
            ),
            (json!({"HostConfig": {"NanoCpus": 1000}}), "Range of CPUs"),
            (
                json!({"HostConfig": {"Devices": [{"PathOnHost": "/proc/version"}]}}),
                "adding custom device \"/proc/version\": not a device node",
            ),
            (
                json!({"HostConfig": {"Devices": [{"PathOnHost": "/dev/null", "CgroupPermissions": "rwx"}]}}),
                "invalid device mode",
            ),
            (
                json!({"HostConfig": {"DeviceCgroupRules": ["c 1:3"]}}),
                "invalid device cgroup format 'c 1:3'",
            ),
            (
                json!({"HostConfig": {"SecurityOpt": ["label"]}}),
                "invalid --security-opt 1: \"label\"",
            ),
            (
                json!({"HostConfig": {"SecurityOpt": ["unknown=something"]}}),
                "invalid --security-opt 2: \"unknown=something\"",
            ),
            (
                json!({"HostConfig": {"SecurityOpt": ["no-new-privileges=maybe"]}}),
                "invalid --security-opt 2",
            ),
            (
                json!({"HostConfig": {"SecurityOpt": ["label=level:s0"]}}),
                "only label=disable is accepted",
            ),
            (
                json!({"HostConfig": {"SecurityOpt": ["seccomp={\"defaultAction\":\"SCMP_ACT_NOPE\"}"]}}),
                "Decoding seccomp profile failed",
            ),
            (
                json!({"HostConfig": {"PidMode": "private"}}),
                "invalid PID mode: private",
            ),
            (json!({"HostConfig": {"PidMode": "container:db"}}), "--pid container:db"),
            (json!({"HostConfig": {"UTSMode": "other"}}), "invalid UTS mode: other"),
            (json!({"HostConfig": {"IpcMode": "weird"}}), "invalid IPC mode: weird"),
            (
                json!({"HostConfig": {"CgroupnsMode": "both"}}),
                "invalid cgroup namespace mode: both",
            ),
            (
                json!({"Hostname": "h", "HostConfig": {"UTSMode": "host"}}),
                "conflicting options: hostname and the UTS mode",
            ),
            (
                json!({"HostConfig": {"NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "1"}}}),
                "not allowed in the hosts network namespace",
            ),
            (
                json!({"HostConfig": {"IpcMode": "host", "Sysctls": {"kernel.shmmax": "1"}}}),
                "not allowed in the hosts ipc namespace",
            ),
            (
                json!({"HostConfig": {"Sysctls": {"vm.swappiness": "1"}}}),
                "not in a separate kernel namespace",
            ),
            (
                json!({"HostConfig": {"Ulimits": [{"Name": "nofiles", "Soft": 1, "Hard": 1}]}}),
                "invalid ulimit type: nofiles",
            ),
            (
                json!({"HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 2, "Hard": 1}]}}),
                "soft limit must be less than or equal to hard limit",
            ),
            (
                json!({"HostConfig": {"ShmSize": -1}}),
                "SHM size can not be less than 0",
            ),
            (
                json!({"HostConfig": {"OomScoreAdj": 1001}}),
                "range for oom score adj is [-1000, 1000]",
            ),
            (
                json!({"HostConfig": {"CgroupParent": "a/../../b"}}),
                "would leave the cgroup hierarchy",
            ),
            (
                json!({"HostConfig": {"NetworkMode": "host", "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}}),
                "already uses the host's ports directly",
            ),
            (
                json!({"HostConfig": {"NetworkMode": "none", "PublishAllPorts": true}}),
                "has no network to publish them from",
            ),
            (
                json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "70000"}]}}}),
                "expected a port from 1 to 65535",
            ),
            (
                json!({"HostConfig": {"PortBindings": {"80/bogus": [{"HostPort": "80"}]}}}),
                "invalid proto: bogus",
            ),
            (
                json!({"NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": {"IPv4Address": "172.17.0.9"}}}}}),
                "user specified IP address is supported on user defined networks only",
            ),
            (
                json!({"HostConfig": {"NetworkMode": "site"}, "NetworkingConfig": {"EndpointsConfig": {"site": {"MacAddress": "01:00:00:00:00:01"}}}}),
                "multicast mac address",
            ),
            (
                json!({"HostConfig": {"NetworkMode": "site"}, "NetworkingConfig": {"EndpointsConfig": {"site": {"IPAMConfig": {"IPv4Address": "10.1.1"}}}}}),
                "invalid IPv4 address",
            ),
            (
                json!({"HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}),
                "unknown policy 'sometimes'",
            ),
            (
                json!({"HostConfig": {"AutoRemove": true, "RestartPolicy": {"Name": "always"}}}),
                "'AutoRemove' container with restart policy",
            ),
            (
                json!({"HostConfig": {"NetworkMode": "container:db"}}),
                "--network container:db",
            ),
            (json!({"HostConfig": {"Binds": ["vol:/data:z"]}}), "SELinux"),
            (
                json!({"HostConfig": {"Mounts": [{"Type": "volume", "Target": "/"}]}}),
                "destination can't be '/'",
            ),
            (
                json!({"HostConfig": {"Mounts": [{"Type": "volume", "Target": "/x", "VolumeOptions": {"Subpath": "a"}}]}}),
                "volume-subpath",
            ),
            (
                json!({"HostConfig": {"VolumeDriver": "flocker"}}),
                "plugin \"flocker\" not found",
            ),
            (json!({"Volumes": {"rel": {}}}), "must be absolute"),
            (
                json!({"HostConfig": {"Binds": ["v1:/data", "v2:/data/"]}}),
                "Duplicate mount point",
            ),
            (json!({"HostConfig": {"CpuPeriod": 500}}), "CPU cfs period"),
            (
                json!({"HostConfig": {"CpusetCpus": "4096"}}),
                "Requested CPUs are not available",
            ),
            (json!({"HostConfig": {"CapAdd": ["BOGUS"]}}), "unknown capability"),
            (
                json!({"HostConfig": {"LogConfig": {"Type": "syslog"}}}),
                "--log-driver syslog",
            ),
            (json!({"WorkingDir": "rel"}), "absolute path"),
            (
                json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/no/such/dir", "Target": "/x"}]}}),
                "bind source path does not exist",
            ),
            (json!({"StopSignal": "SIGNOPE"}), "Invalid signal"),
        ];
        for (body, want) in table {
            let err = parse(body, &image(), ID)
                .err()
                .unwrap_or_else(|| panic!("accepted {body}"));
            assert!(err.to_string().contains(want), "{body}: {err}");
        }
        // The CLI's defaults are not refusals.
        let ok = json!({"HostConfig": {"MemorySwap": 0, "PidsLimit": null, "MemorySwappiness": -1, "ShmSize": 0, "CgroupnsMode": "private", "IpcMode": "private", "RestartPolicy": {"Name": "no"}, "OomKillDisable": false, "Init": null, "SecurityOpt": null}});
        parse(&ok, &image(), ID).unwrap();
        let limits =
            json!({"HostConfig": {"Memory": 67108864, "NanoCpus": 500000000, "PidsLimit": 20, "CpuShares": 512}});
        let r = parse(&limits, &image(), ID).unwrap().settings.resources;
        assert_eq!(r.memory, Some(64 << 20));
        assert_eq!((r.cpu_quota, r.cpu_period), (Some(50_000), Some(100_000)));
        assert_eq!(r.pids_limit, Some(20));
        assert_eq!(r.cpu_shares, Some(512));
    }

    #[test]
    fn host_options_as_dockerd_reads_them() {
        let body = json!({"HostConfig": {
            "SecurityOpt": ["no-new-privileges:true", "seccomp=unconfined", "label=disable", "apparmor=unconfined"],
            "PidMode": "host", "UTSMode": "host", "IpcMode": "none", "CgroupnsMode": "private",
            "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "rw"}],
            "DeviceCgroupRules": ["b 7:* rwm"],
            "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}, {"Name": "nproc", "Soft": -1, "Hard": -1}],
            "Sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456"},
            "ShmSize": 8388608, "GroupAdd": ["audio", "1234"], "OomScoreAdj": 500,
            "CgroupParent": "//site/./jobs/", "Init": true,
        }});
        let p = parse(&body, &image(), ID).unwrap();
        let h = &p.settings.host;
        assert!(h.no_new_privileges);
        assert_eq!(h.seccomp, berth_runtime::Seccomp::Unconfined);
        assert!(h.pid_host && h.uts_host && !h.cgroupns_host);
        assert_eq!(h.ipc, berth_runtime::IpcMode::None);
        assert_eq!(h.devices[0].path_in_container, "/dev/mynull");
        assert_eq!(h.devices[0].permissions, "rw");
        assert_eq!(h.ulimits.len(), 2);
        assert_eq!(h.sysctls["kernel.shmmax"], "123456");
        assert_eq!(h.shm_size, Some(8 << 20));
        assert_eq!(h.group_add, ["audio", "1234"]);
        assert_eq!(h.oom_score_adj, Some(500));
        assert_eq!(p.settings.cgroup_parent, "/site/jobs");
        assert_eq!(p.settings.init, Some(true));
        // With the host's UTS namespace the hostname is the host's.
        assert_eq!(
            p.settings.hostname,
            nix::unistd::gethostname().unwrap().to_string_lossy()
        );
        assert_eq!(p.host_config["CgroupnsMode"], "private");
        assert_eq!(p.host_config["ShmSize"], 8388608);
        // Defaults as dockerd shows them.
        let p = parse(&json!({}), &image(), ID).unwrap();
        assert_eq!(p.host_config["IpcMode"], "private");
        assert_eq!(p.host_config["ShmSize"], 64 << 20);
        assert_eq!(
            p.host_config["CgroupnsMode"],
            if cgroup_v2() { "private" } else { "host" }
        );
        assert_eq!(p.settings.host.seccomp, berth_runtime::Seccomp::Default);
        assert_eq!(p.settings.init, None);
    }

    #[test]
    fn binds_and_tmpfs() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("data");
        let body = json!({"HostConfig": {
            "Binds": [format!("{}:/data:ro", src.display())],
            "Tmpfs": {"/run": "size=1m"},
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1k", "max-file": "2"}},
        }});
        let p = parse(&body, &image(), ID).unwrap();
        assert!(src.is_dir(), "-v creates a missing host directory");
        assert_eq!(p.settings.mounts.len(), 2);
        assert!(p.settings.mounts[0].readonly);
        assert_eq!(p.settings.mounts[1].options, ["size=1m"]);
        assert_eq!(
            p.settings.log,
            LogLimits {
                max_size: 1024,
                max_file: 2
            }
        );
        let dup = json!({"HostConfig": {"Binds": ["/tmp:/x", "/tmp:/x"]}});
        assert!(parse(&dup, &image(), ID).is_err());
    }

    #[test]
    fn volumes_named_anonymous_and_from_the_image() {
        let mut img = image();
        img.config.config.volumes = Some([("/cache".to_owned(), json!({}))].into());
        let body = json!({
            "Volumes": {"/scratch": {}, "/data": {}},
            "HostConfig": {
                "Binds": ["data:/data:ro,nocopy"],
                "Mounts": [{"Type": "volume", "Source": "", "Target": "/m", "VolumeOptions": {"Labels": {"a": "b"}, "DriverConfig": {"Options": {"type": "tmpfs", "device": "tmpfs"}}}}],
            },
        });
        let p = parse(&body, &img, ID).unwrap();
        let m = &p.settings.mounts;
        let find = |d: &str| {
            m.iter()
                .find(|x| x.destination == d)
                .unwrap_or_else(|| panic!("{d} in {m:?}"))
        };
        let named = find("/data");
        assert!(named.is_volume() && named.volume == "data" && named.readonly && named.nocopy && !named.anonymous);
        assert_eq!(named.mode, "ro,nocopy");
        let tmp = find("/m");
        assert!(tmp.anonymous && tmp.volume.is_empty() && tmp.mode == "z");
        assert_eq!(tmp.volume_options["type"], "tmpfs");
        assert_eq!(tmp.volume_labels["a"], "b");
        assert!(find("/scratch").anonymous && find("/cache").anonymous);
        assert_eq!(m.len(), 4, "/data is not mounted twice: {m:?}");
        assert_eq!(p.config["Volumes"], json!({"/cache": {}, "/data": {}, "/scratch": {}}));
        assert_eq!(clean_path("/a//b/./c/"), "/a/b/c");
    }

    #[test]
    fn signals_by_name_number_and_real_time() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("kill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGRTMIN+3").unwrap(), libc::SIGRTMIN() + 3);
        assert_eq!(parse_signal("RTMIN").unwrap(), libc::SIGRTMIN());
        assert_eq!(parse_signal("SIGRTMAX-1").unwrap(), libc::SIGRTMAX() - 1);
        for bad in ["SIGNOPE", "RTMIN-1", "SIGRTMAX+1", "RTMIN+99", "0", "65", ""] {
            assert!(parse_signal(bad).is_err(), "{bad:?} accepted");
        }
    }
}
