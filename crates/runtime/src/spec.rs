//! Container settings -> an OCI runtime bundle (`config.json`), shaped like what dockerd
//! hands runc: Docker's default mounts, capabilities, masked and read-only paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::error::{Error, io};

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows, by bit number (`capability.h`).
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Paths hidden from unprivileged containers (moby `oci/defaults.go`).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The size of `/dev/shm` when `--shm-size` is not given (dockerd's).
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// Paths mounted read-only in unprivileged containers.
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Which network namespace the container gets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NetworkMode {
    /// The host's own (`--network host`).
    Host,
    /// A new namespace with only loopback, brought up by the shim (`--network none`).
    Private,
    /// The namespace pinned at this path, which the daemon made and wired (bridge and user
    /// networks).
    Join(PathBuf),
}

/// A mount the user asked for (`-v`, `--mount`, `--tmpfs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    Bind {
        source: PathBuf,
        destination: String,
        readonly: bool,
        /// `rprivate` (Docker's default), `private`, `rshared`, `shared`, `rslave`, `slave`.
        propagation: String,
    },
    Tmpfs {
        destination: String,
        /// Mount options as given (`size=64m,mode=1777`), added to `nosuid,nodev,noexec`.
        options: Vec<String>,
    },
}

/// The per-container files bind-mounted over the image's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// cgroup limits (v1 and v2 alike; libcgroups writes them). `None` leaves a limit unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Bytes (`--memory`).
    pub memory: Option<i64>,
    /// Memory + swap in bytes, -1 unlimited (`--memory-swap`).
    pub memory_swap: Option<i64>,
    /// Bytes (`--memory-reservation`).
    pub memory_reservation: Option<i64>,
    /// Relative weight (`--cpu-shares`).
    pub cpu_shares: Option<u64>,
    /// Microseconds per period (`--cpus`, `--cpu-quota`).
    pub cpu_quota: Option<i64>,
    /// Microseconds (`--cpu-period`).
    pub cpu_period: Option<u64>,
    /// `0-3,5` (`--cpuset-cpus`).
    pub cpuset_cpus: Option<String>,
    /// `0,1` (`--cpuset-mems`).
    pub cpuset_mems: Option<String>,
    /// Most tasks (`--pids-limit`).
    pub pids_limit: Option<i64>,
    /// No OOM kill in the container's memory cgroup (`--oom-kill-disable`; cgroup v1 only).
    #[serde(default)]
    pub oom_kill_disable: bool,
}

/// `--security-opt seccomp=…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Seccomp {
    /// Docker's default profile (`builtin`, or nothing said).
    #[default]
    Default,
    /// No filter (`unconfined`).
    Unconfined,
    /// A profile in moby's JSON format: the docker CLI sends a file's contents.
    Profile(String),
}

/// `--ipc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IpcMode {
    /// Its own IPC namespace and `/dev/shm` (`private`, `shareable`).
    #[default]
    Private,
    /// The host's IPC namespace and `/dev/shm`.
    Host,
    /// Its own IPC namespace, no `/dev/shm`.
    None,
}

/// `--device HOST[:CONTAINER[:PERMS]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceMapping {
    /// A device node, a symlink to one, or a directory of them.
    pub path_on_host: PathBuf,
    pub path_in_container: String,
    /// Device cgroup access, `rwm` or a part of it.
    pub permissions: String,
}

/// `--ulimit NAME=SOFT[:HARD]`; -1 is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ulimit {
    /// `nofile`, `nproc`, ... (`RLIMIT_` + the name in capitals).
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// How the process and its namespaces are set up beyond the defaults: security options,
/// devices, shared host namespaces, limits (`HostConfig` fields of the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HostOptions {
    /// Applied to unprivileged containers; a privileged one gets only a profile given by hand
    /// (as with dockerd).
    pub seccomp: Seccomp,
    /// `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// `--security-opt apparmor=PROFILE`, on a host that enforces AppArmor.
    pub apparmor_profile: Option<String>,
    /// `--security-opt writable-cgroups[=BOOL]`; unset: writable only when privileged.
    pub writable_cgroups: Option<bool>,
    /// `--device`.
    pub devices: Vec<DeviceMapping>,
    /// `--device-cgroup-rule`, `TYPE MAJOR:MINOR ACCESS`.
    pub device_cgroup_rules: Vec<String>,
    /// `--cgroupns host`: no cgroup namespace.
    pub cgroupns_host: bool,
    /// `--pid host`.
    pub pid_host: bool,
    /// `--uts host`.
    pub uts_host: bool,
    pub ipc: IpcMode,
    pub ulimits: Vec<Ulimit>,
    /// `--sysctl`, namespaced ones only (see [`check_sysctls`]).
    pub sysctls: BTreeMap<String, String>,
    /// Bytes of `/dev/shm` (`--shm-size`); `None`: 64 MiB.
    pub shm_size: Option<u64>,
    /// `--group-add`: names (looked up in the image's `/etc/group`) or numbers.
    pub group_add: Vec<String>,
    /// `--oom-score-adj`.
    pub oom_score_adj: Option<i32>,
}

/// What a container runs with, resolved by the engine from the image config, `Config` and
/// `HostConfig`.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub id: String,
    /// Entrypoint + Cmd.
    pub args: Vec<String>,
    /// `KEY=value`, image first, overridden by the user's.
    pub env: Vec<String>,
    /// Absolute working directory (`/` when the image and user say nothing).
    pub cwd: String,
    /// docker's `--user`: `name|uid[:group|gid]`; empty = root.
    pub user: String,
    pub tty: bool,
    pub hostname: String,
    pub domainname: String,
    pub network: NetworkMode,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub mounts: Vec<MountSpec>,
    pub readonly_rootfs: bool,
    pub etc: EtcFiles,
    /// cgroupfs path, e.g. `/berth/<id>`.
    pub cgroups_path: String,
    pub resources: Resources,
    pub host: HostOptions,
    /// `--init`: the init binary on the host, bind-mounted at `/sbin/docker-init` and run as
    /// PID 1 in front of the command (not with `--pid host`).
    pub init: Option<PathBuf>,
}

/// Where `--init`'s binary is mounted in the container, as dockerd does.
pub const INIT_PATH_IN_CONTAINER: &str = "/sbin/docker-init";

/// Writes `<bundle>/config.json` for `spec`, with `rootfs` (the mounted overlay) as root.
/// Users and groups named in `--user` are looked up in the image's `/etc/passwd` and
/// `/etc/group`; the working directory is created when missing, as dockerd does.
pub fn write_bundle(spec: &ContainerSpec, bundle: &Path, rootfs: &Path) -> Result<(), Error> {
    let mut value = spec_json(spec, rootfs)?;
    crate::filter::precompile(&mut value, bundle, host_capabilities())?;
    let oci: Spec = serde_json::from_value(value).map_err(|e| Error::Spec { reason: e.to_string() })?;
    let cwd = rootfs.join(spec.cwd.trim_start_matches('/'));
    if !cwd.exists() {
        std::fs::create_dir_all(&cwd).map_err(io("create working directory", &cwd))?;
    }
    let path = bundle.join("config.json");
    oci.save(&path).map_err(|e| Error::Spec { reason: e.to_string() })?;
    Ok(())
}

/// The `config.json` document.
pub(crate) fn spec_json(spec: &ContainerSpec, rootfs: &Path) -> Result<Value, Error> {
    if spec.args.is_empty() {
        return Err(Error::Invalid {
            what: "command",
            value: String::new(),
            reason: "no command specified".to_owned(),
        });
    }
    let user = resolve_user(&spec.user, rootfs)?;
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        );
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={}", spec.hostname));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let caps = capabilities(spec)?;
    let h = &spec.host;
    let mut namespaces = vec![json!({"type": "mount"})];
    for (kind, shared) in [
        ("pid", h.pid_host),
        ("ipc", h.ipc == IpcMode::Host),
        ("uts", h.uts_host),
        ("cgroup", h.cgroupns_host),
        ("network", spec.network != NetworkMode::Private),
    ] {
        if !shared {
            namespaces.push(json!({"type": kind}));
        }
    }
    if let NetworkMode::Join(path) = &spec.network {
        namespaces.push(json!({"type": "network", "path": path}));
    }
    let mut linux_devices = if spec.privileged { host_devices() } else { Vec::new() };
    let mut device_rules = if spec.privileged {
        vec![json!({"allow": true, "access": "rwm"})]
    } else {
        default_device_rules()
    };
    for d in &h.devices {
        let nodes = devices_from_path(&d.path_on_host, &d.path_in_container)?;
        if spec.privileged {
            // Every host device is there already; only a new path adds a node.
            if d.path_on_host != Path::new(&d.path_in_container) {
                linux_devices.extend(nodes.into_iter().map(|n| n.node));
            }
            continue;
        }
        for n in nodes {
            device_rules.push(n.rule(&d.permissions));
            linux_devices.push(n.node);
        }
    }
    if !spec.privileged {
        for rule in &h.device_cgroup_rules {
            device_rules.push(device_cgroup_rule(rule)?);
        }
    }
    let mut resources = json!({"devices": device_rules});
    let r = &spec.resources;
    let mut memory = serde_json::Map::new();
    if let Some(v) = r.memory {
        memory.insert("limit".into(), json!(v));
    }
    if let Some(v) = r.memory_swap {
        memory.insert("swap".into(), json!(v));
    }
    if let Some(v) = r.memory_reservation {
        memory.insert("reservation".into(), json!(v));
    }
    if r.oom_kill_disable {
        memory.insert("disableOOMKiller".into(), json!(true));
    }
    if !memory.is_empty() {
        resources["memory"] = Value::Object(memory);
    }
    let mut cpu = serde_json::Map::new();
    if let Some(v) = r.cpu_shares {
        cpu.insert("shares".into(), json!(v));
    }
    if let Some(v) = r.cpu_quota {
        cpu.insert("quota".into(), json!(v));
    }
    if let Some(v) = r.cpu_period {
        cpu.insert("period".into(), json!(v));
    }
    if let Some(v) = &r.cpuset_cpus {
        cpu.insert("cpus".into(), json!(v));
    }
    if let Some(v) = &r.cpuset_mems {
        cpu.insert("mems".into(), json!(v));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(v) = r.pids_limit {
        resources["pids"] = json!({"limit": v});
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": spec.cgroups_path,
        "resources": resources,
    });
    if !spec.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        let mut readonly: Vec<&str> = READONLY_PATHS.to_vec();
        // A user's own mount of (or under) /sys/fs/cgroup is theirs, ro or rw as they said
        // (`-v /sys/fs/cgroup:/sys/fs/cgroup:rw` for systemd images).
        let user_cgroup_mount = spec.mounts.iter().any(|m| {
            let (MountSpec::Bind { destination, .. } | MountSpec::Tmpfs { destination, .. }) = m;
            destination == "/sys/fs/cgroup" || destination.starts_with("/sys/fs/cgroup/")
        });
        if !h.writable_cgroups.unwrap_or(false) && !user_cgroup_mount {
            readonly.extend(cgroup_v1_mounts().iter().map(String::as_str));
        }
        linux["readonlyPaths"] = json!(readonly);
    }
    if !linux_devices.is_empty() {
        linux["devices"] = Value::Array(linux_devices);
    }
    if !h.sysctls.is_empty() {
        linux["sysctl"] = json!(h.sysctls);
    }
    let seccomp = match (&h.seccomp, spec.privileged) {
        (Seccomp::Profile(profile), _) => crate::seccomp::custom(profile, &caps)?,
        (Seccomp::Default, false) => Some((*crate::seccomp::default_for(&caps)).clone()),
        (Seccomp::Default, true) | (Seccomp::Unconfined, _) => None,
    };
    if let Some(seccomp) = seccomp {
        linux["seccomp"] = seccomp;
    }

    let mut additional_gids = user.additional_gids;
    for g in additional_groups(&h.group_add, rootfs)? {
        if g != user.gid && !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    let mut args = spec.args.clone();
    if spec.init.is_some() && !h.pid_host {
        args.splice(0..0, [INIT_PATH_IN_CONTAINER.to_owned(), "--".to_owned()]);
    }
    let mut process = json!({
        "terminal": spec.tty,
        "user": {
            "uid": user.uid,
            "gid": user.gid,
            "additionalGids": additional_gids,
        },
        "args": args,
        "env": env,
        "cwd": spec.cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
        },
    });
    // Only when set: libcontainer loads the seccomp filter after dropping capabilities
    // whenever the field is present, which fails without CAP_SYS_ADMIN or this flag.
    if h.no_new_privileges {
        process["noNewPrivileges"] = json!(true);
    }
    if let Some(p) = &h.apparmor_profile {
        process["apparmorProfile"] = json!(p);
    }
    if let Some(score) = h.oom_score_adj {
        process["oomScoreAdj"] = json!(score);
    }
    if !h.ulimits.is_empty() {
        let limit = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
        process["rlimits"] = h
            .ulimits
            .iter()
            .map(|u| {
                json!({
                    "type": format!("RLIMIT_{}", u.name.to_ascii_uppercase()),
                    "soft": limit(u.soft),
                    "hard": limit(u.hard),
                })
            })
            .collect();
    }
    let mut doc = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": spec.readonly_rootfs},
        "mounts": mounts(spec),
        "linux": linux,
    });
    // With the host's UTS namespace the names are the host's (a runtime refuses to set them).
    if !h.uts_host {
        doc["hostname"] = json!(spec.hostname);
        doc["domainname"] = json!(spec.domainname);
    }
    Ok(doc)
}

/// Where the runtime mounts its own filesystems and `/etc` files in every container (what
/// dockerd keeps in a container's init layer). A container's overlay upper directory gets
/// these mount points, which are no change the container made (`docker diff`, `commit`).
pub const RUNTIME_MOUNT_POINTS: &[&str] = &[
    "/proc",
    "/dev",
    "/sys",
    "/etc/resolv.conf",
    "/etc/hostname",
    "/etc/hosts",
];

/// Docker's default mounts, then the per-container `/etc` files, then the user's mounts.
fn mounts(spec: &ContainerSpec) -> Vec<Value> {
    let h = &spec.host;
    let sys_ro = if spec.privileged { "rw" } else { "ro" };
    let cgroup_ro = if h.writable_cgroups.unwrap_or(spec.privileged) {
        "rw"
    } else {
        "ro"
    };
    let mut out = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_ro]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", cgroup_ro]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    match h.ipc {
        IpcMode::Private => {
            let size = format!("size={}", h.shm_size.unwrap_or(DEFAULT_SHM_SIZE));
            out.push(json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", size]}));
        }
        IpcMode::Host => {
            out.push(json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "rprivate"]}));
        }
        IpcMode::None => {}
    }
    if let Some(init) = &spec.init {
        if !h.pid_host {
            out.push(json!({"destination": INIT_PATH_IN_CONTAINER, "type": "bind", "source": init, "options": ["bind", "ro"]}));
        }
    }
    let user_dests: BTreeSet<&str> = spec
        .mounts
        .iter()
        .map(|m| match m {
            MountSpec::Bind { destination, .. } | MountSpec::Tmpfs { destination, .. } => destination.as_str(),
        })
        .collect();
    // As moby's WithMounts: a user's mount replaces the default one at the same place (so
    // `-v /sys/fs/cgroup:/sys/fs/cgroup:rw` is the host's tree, not a read-only one under
    // it), and a user's /dev replaces everything the defaults put under /dev.
    out.retain(|m| {
        let dest = m["destination"].as_str().unwrap_or("");
        let replaced = user_dests.contains(dest) || (user_dests.contains("/dev") && dest.starts_with("/dev/"));
        !replaced
    });
    for (dest, src) in [
        ("/etc/resolv.conf", &spec.etc.resolv_conf),
        ("/etc/hostname", &spec.etc.hostname),
        ("/etc/hosts", &spec.etc.hosts),
    ] {
        // A user's mount of the same file wins, as with dockerd.
        if !user_dests.contains(dest) {
            out.push(json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate"]}));
        }
    }
    for m in &spec.mounts {
        match m {
            MountSpec::Bind {
                source,
                destination,
                readonly,
                propagation,
            } => {
                let mut options = vec!["rbind".to_owned(), propagation.clone()];
                if *readonly {
                    options.push("ro".to_owned());
                }
                out.push(json!({"destination": destination, "type": "bind", "source": source, "options": options}));
            }
            MountSpec::Tmpfs { destination, options } => {
                let mut opts = vec!["nosuid".to_owned(), "nodev".to_owned(), "noexec".to_owned()];
                opts.extend(options.iter().cloned());
                out.push(json!({"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": opts}));
            }
        }
    }
    out
}

/// moby's default device cgroup rules: deny all, then the usual character devices.
fn default_device_rules() -> Vec<Value> {
    let rule = |major: i64, minor: Option<i64>, access: &str| {
        let mut r = json!({"allow": true, "type": "c", "major": major, "access": access});
        if let Some(minor) = minor {
            r["minor"] = json!(minor);
        }
        r
    };
    vec![
        json!({"allow": false, "access": "rwm"}),
        json!({"allow": true, "type": "c", "access": "m"}),
        json!({"allow": true, "type": "b", "access": "m"}),
        rule(1, Some(3), "rwm"),
        rule(1, Some(5), "rwm"),
        rule(1, Some(7), "rwm"),
        rule(1, Some(8), "rwm"),
        rule(1, Some(9), "rwm"),
        rule(5, Some(0), "rwm"),
        rule(5, Some(1), "rwm"),
        rule(5, Some(2), "rwm"),
        rule(136, None, "rwm"),
        rule(10, Some(200), "rwm"),
    ]
}

/// `--privileged`: every device node of the host's `/dev` (not its sub-mounts' pseudo
/// terminals), as dockerd adds them.
fn host_devices() -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                // Mounted per container, or not device trees.
                if !matches!(
                    path.to_str(),
                    Some("/dev/pts" | "/dev/shm" | "/dev/mqueue" | "/dev/.lxc" | "/dev/.udev")
                ) {
                    stack.push(path);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if path == Path::new("/dev/console") || path == Path::new("/dev/ptmx") {
                continue;
            }
            let rdev = meta.rdev();
            out.push(json!({
                "path": path,
                "type": typ,
                "major": nix::sys::stat::major(rdev),
                "minor": nix::sys::stat::minor(rdev),
                "fileMode": meta.mode() & 0o7777,
                "uid": meta.uid(),
                "gid": meta.gid(),
            }));
        }
    }
    out
}

/// On cgroup v1, `/sys/fs/cgroup` and its hierarchies as the container sees them
/// (`/sys/fs/cgroup/memory`, ...): libcontainer 0.7.0 mounts v1 hierarchies read-write
/// whatever the mount's options say, so they are made read-only as `readonlyPaths` (as runc
/// mounts them), or the container could raise its own limits. Empty on cgroup v2.
fn cgroup_v1_mounts() -> &'static [String] {
    static MOUNTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    MOUNTS.get_or_init(|| {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            return Vec::new();
        }
        let mut out = vec!["/sys/fs/cgroup".to_owned()];
        if let Ok(rd) = std::fs::read_dir(root) {
            let mut names: Vec<String> = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            out.extend(names.into_iter().map(|n| format!("/sys/fs/cgroup/{n}")));
        }
        out
    })
}

/// One device node for the container, and what its cgroup rule names.
struct DeviceNode {
    node: Value,
    kind: &'static str,
    major: u64,
    minor: u64,
}

impl DeviceNode {
    fn rule(&self, access: &str) -> Value {
        json!({"allow": true, "type": self.kind, "major": self.major, "minor": self.minor, "access": access})
    }
}

/// The device node at `path` (not following a symlink), if it is one.
fn device_node(path: &Path, in_container: &str) -> std::io::Result<Option<DeviceNode>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    Ok(Some(DeviceNode {
        node: json!({
            "path": in_container,
            "type": kind,
            "major": major,
            "minor": minor,
            "fileMode": meta.mode() & 0o7777,
            "uid": meta.uid(),
            "gid": meta.gid(),
        }),
        kind,
        major,
        minor,
    }))
}

/// `--device HOST:CONTAINER` as dockerd reads it (moby `oci.DevicesFromPath`): a device
/// node (a symlink to one is followed), or a directory whose device nodes all come along
/// under `CONTAINER`.
fn devices_from_path(host: &Path, in_container: &str) -> Result<Vec<DeviceNode>, Error> {
    let fail = |reason: String| Error::Device {
        path: host.to_path_buf(),
        reason,
    };
    let resolved = match std::fs::symlink_metadata(host) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(host).unwrap_or_else(|_| host.to_path_buf()),
        _ => host.to_path_buf(),
    };
    match device_node(&resolved, in_container) {
        Ok(Some(node)) => return Ok(vec![node]),
        Ok(None) => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    if resolved.is_dir() {
        let mut out = Vec::new();
        let mut stack = vec![resolved.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for entry in rd.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&resolved) else {
                    continue;
                };
                let target = Path::new(in_container).join(rel);
                if let Ok(Some(node)) = device_node(&path, &target.to_string_lossy()) {
                    out.push(node);
                }
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    Err(fail("not a device node".to_owned()))
}

/// Checks a `--device` mapping: the host path must be a device node or a directory of them.
pub fn check_device(d: &DeviceMapping) -> Result<(), Error> {
    devices_from_path(&d.path_on_host, &d.path_in_container).map(|_| ())
}

/// `TYPE MAJOR:MINOR ACCESS` (`c 1:3 rwm`, `b 7:* r`, `a *:* m`) as a device cgroup rule
/// (moby's `AppendDevicePermissionsFromCgroupRules`).
fn device_cgroup_rule(rule: &str) -> Result<Value, Error> {
    let bad = || Error::DeviceCgroupRule { rule: rule.to_owned() };
    let fields: Vec<&str> = rule.split(' ').collect();
    let [kind, numbers, access] = fields.as_slice() else {
        return Err(bad());
    };
    if !matches!(*kind, "a" | "b" | "c") {
        return Err(bad());
    }
    let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
    let number = |n: &str| -> Result<Value, Error> {
        match n {
            "*" => Ok(Value::Null),
            n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                n.parse::<i64>().map(|v| json!(v)).map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    };
    let (major, minor) = (number(major)?, number(minor)?);
    if access.is_empty() || access.len() > 3 || !access.bytes().all(|b| matches!(b, b'r' | b'w' | b'm')) {
        return Err(bad());
    }
    let mut out = json!({"allow": true, "type": kind, "access": access});
    if !major.is_null() {
        out["major"] = major;
    }
    if !minor.is_null() {
        out["minor"] = minor;
    }
    Ok(out)
}

/// Checks a `--device-cgroup-rule`.
pub fn check_device_cgroup_rule(rule: &str) -> Result<(), Error> {
    device_cgroup_rule(rule).map(|_| ())
}

/// The sysctls that belong to the IPC namespace (runc's list).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Only namespaced sysctls, and only in a namespace of the container's own (runc's checks):
/// `kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*` need its own IPC namespace,
/// `net.*` its own network namespace, `kernel.domainname` its own UTS namespace.
pub fn check_sysctls(
    sysctls: &BTreeMap<String, String>,
    host_network: bool,
    host_ipc: bool,
    host_uts: bool,
) -> Result<(), Error> {
    for name in sysctls.keys() {
        let refuse = |reason: &str| {
            Err(Error::Sysctl {
                name: name.clone(),
                reason: reason.to_owned(),
            })
        };
        if IPC_SYSCTLS.contains(&name.as_str()) || name.starts_with("fs.mqueue.") {
            if host_ipc {
                return refuse("is not allowed in the hosts ipc namespace");
            }
        } else if name.starts_with("net.") {
            if host_network {
                return refuse("is not allowed in the hosts network namespace");
            }
        } else if name == "kernel.domainname" && !host_uts {
        } else if name == "kernel.hostname" && !host_uts {
            return refuse("is not allowed as it conflicts with the OCI \"hostname\" field; use --hostname");
        } else {
            return refuse("is not in a separate kernel namespace");
        }
    }
    Ok(())
}

/// The resource names `--ulimit` knows (go-units' list).
const ULIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Checks a `--ulimit`: a known resource, soft <= hard (-1 is unlimited).
pub fn check_ulimit(u: &Ulimit) -> Result<(), Error> {
    let bad = |reason: String| Error::Invalid {
        what: "ulimit",
        value: format!("{}={}:{}", u.name, u.soft, u.hard),
        reason,
    };
    if !ULIMITS.contains(&u.name.as_str()) {
        return Err(bad(format!("invalid ulimit type: {}", u.name)));
    }
    let unlimited = |v: i64| v < 0;
    if unlimited(u.soft) && !unlimited(u.hard) || !unlimited(u.hard) && u.soft > u.hard {
        return Err(bad(format!(
            "ulimit soft limit must be less than or equal to hard limit: {} > {}",
            u.soft, u.hard
        )));
    }
    Ok(())
}

/// `--group-add` entries as group IDs: a name from the image's `/etc/group`, else a number
/// (runc's `GetAdditionalGroups`).
fn additional_groups(names: &[String], rootfs: &Path) -> Result<Vec<u32>, Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let entries: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    names
        .iter()
        .map(|n| match entries.iter().find(|f| f[0] == n) {
            Some(f) => f[2].parse().map_err(|_| Error::NoSuchGroup { group: n.clone() }),
            None => n.parse().map_err(|_| Error::NoSuchGroup { group: n.clone() }),
        })
        .collect()
}

/// Normalises `sys_admin`, `CAP_SYS_ADMIN`, `ALL` as docker does.
fn cap_name(name: &str) -> Result<String, Error> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::Invalid {
            what: "capability",
            value: name.to_owned(),
            reason: format!("unknown capability: \"{full}\""),
        })
    }
}

/// Checks `--cap-add` and `--cap-drop` names (`sys_admin`, `CAP_SYS_ADMIN`, `ALL`).
pub fn check_capabilities(cap_add: &[String], cap_drop: &[String]) -> Result<(), Error> {
    for c in cap_add.iter().chain(cap_drop) {
        cap_name(c)?;
    }
    Ok(())
}

/// The capabilities the daemon itself may grant (its bounding set): `--privileged` gets
/// these, not a fixed list, so a host without `CAP_SYS_RESOURCE` does not fail to start
/// privileged containers.
pub fn host_capabilities() -> &'static [&'static str] {
    // The bounding set of a running process never grows: read once per daemon, not at
    // every container start.
    static HOST: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let bnd = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX);
        ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(bit, name)| {
                let granted = bnd & (1u64 << bit) != 0;
                if !granted {
                    tracing::debug!(capability = name, "not in the host's bounding set; left out");
                }
                granted
            })
            .map(|(_, name)| *name)
            .collect()
    })
}

/// The final capability set: Docker's defaults (or the host's set when privileged), plus
/// `--cap-add`, minus `--cap-drop`; `ALL` works in both.
fn capabilities(spec: &ContainerSpec) -> Result<Vec<String>, Error> {
    let host = host_capabilities();
    let add: Vec<String> = spec.cap_add.iter().map(|c| cap_name(c)).collect::<Result<_, _>>()?;
    let drop: Vec<String> = spec.cap_drop.iter().map(|c| cap_name(c)).collect::<Result<_, _>>()?;
    let mut set: BTreeSet<String> = if spec.privileged {
        host.iter().map(|c| (*c).to_owned()).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()
    };
    if !spec.privileged {
        if drop.iter().any(|c| c == "ALL") {
            set.clear();
        }
        for c in &add {
            if c == "ALL" {
                set.extend(host.iter().map(|c| (*c).to_owned()));
            } else {
                set.insert(c.clone());
            }
        }
        for c in &drop {
            set.remove(c);
        }
    }
    // What the host cannot grant cannot be granted: the kernel would refuse the whole start.
    set.retain(|c| {
        let ok = host.contains(&c.as_str());
        if !ok {
            tracing::debug!(capability = %c, "not in the host's bounding set; left out");
        }
        ok
    });
    Ok(set.into_iter().collect())
}

/// A resolved `--user`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) additional_gids: Vec<u32>,
    pub(crate) home: String,
}

/// `name|uid[:group|gid]` against the image's `/etc/passwd` and `/etc/group` (as runc's
/// `user.GetExecUser`): numeric IDs need no entry, names do.
pub(crate) fn resolve_user(user: &str, rootfs: &Path) -> Result<User, Error> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let entry = entries.iter().find(|f| f[0] == u || f[2] == u);
    let (uid, mut gid, home, name) = match (entry, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            f[5].to_owned(),
            Some(f[0]),
        ),
        (None, Ok(uid)) => (uid, 0, "/".to_owned(), None),
        (None, Err(_)) => {
            return Err(Error::NoSuchUser { user: u.to_owned() });
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    if let Some(g) = g {
        gid = match groups.iter().find(|f| f[0] == g || f[2] == g) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => g.parse().map_err(|_| Error::NoSuchGroup { group: g.to_owned() })?,
        };
    }
    let additional_gids = match (name, g) {
        (Some(name), None) => groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|&x| x != gid)
            .collect(),
        _ => Vec::new(),
    };
    Ok(User {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nu:x:1000:1000::/home/u:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:u\nnogroup:x:65534:\nu:x:1000:\n",
        )
        .unwrap();
        d
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "abc".into(),
            args: vec!["sh".into()],
            env: vec!["A=1".into()],
            cwd: "/".into(),
            user: String::new(),
            tty: false,
            hostname: "abc".into(),
            domainname: String::new(),
            network: NetworkMode::Private,
            privileged: false,
            cap_add: vec![],
            cap_drop: vec![],
            mounts: vec![],
            readonly_rootfs: false,
            etc: EtcFiles {
                hosts: "/c/hosts".into(),
                resolv_conf: "/c/resolv.conf".into(),
                hostname: "/c/hostname".into(),
            },
            cgroups_path: "/berth/abc".into(),
            resources: Resources::default(),
            host: HostOptions::default(),
            init: None,
        }
    }

    #[test]
    fn users_resolve_like_runc() {
        let r = rootfs();
        // (uid, gid, additional gids, home); None = refused.
        type Want = Option<(u32, u32, &'static [u32], &'static str)>;
        let table: &[(&str, Want)] = &[
            ("", Some((0, 0, &[], "/root"))),
            ("root", Some((0, 0, &[], "/root"))),
            ("u", Some((1000, 1000, &[10], "/home/u"))),
            ("1000", Some((1000, 1000, &[10], "/home/u"))),
            ("1000:1000", Some((1000, 1000, &[], "/home/u"))),
            ("4242:4343", Some((4242, 4343, &[], "/"))),
            ("nobody:wheel", Some((65534, 10, &[], "/nonexistent"))),
            ("ghost", None),
            ("u:ghosts", None),
        ];
        for &(user, want) in table {
            let got = resolve_user(user, r.path());
            match want {
                Some((uid, gid, extra, home)) => {
                    let got = got.unwrap_or_else(|e| panic!("{user}: {e}"));
                    assert_eq!(
                        got,
                        User {
                            uid,
                            gid,
                            additional_gids: extra.to_vec(),
                            home: home.into()
                        },
                        "{user}"
                    );
                }
                None => assert!(got.is_err(), "{user}"),
            }
        }
    }

    #[test]
    fn default_caps_and_adds_and_drops() {
        let r = rootfs();
        let mut s = spec();
        s.cap_add = vec!["sys_admin".into()];
        s.cap_drop = vec!["CAP_CHOWN".into(), "net_raw".into()];
        let v = spec_json(&s, r.path()).unwrap();
        let caps: Vec<String> = serde_json::from_value(v["process"]["capabilities"]["bounding"].clone()).unwrap();
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_owned()) || !host_capabilities().contains(&"CAP_SYS_ADMIN"));
        assert!(!caps.contains(&"CAP_CHOWN".to_owned()));
        assert!(!caps.contains(&"CAP_NET_RAW".to_owned()));
        assert!(caps.contains(&"CAP_KILL".to_owned()));
        s.cap_add = vec!["BOGUS".into()];
        let err = spec_json(&s, r.path()).unwrap_err();
        assert!(err.to_string().contains("unknown capability: \"CAP_BOGUS\""), "{err}");
    }

    #[test]
    fn privileged_unmasks_and_gets_the_host_set() {
        let r = rootfs();
        let mut s = spec();
        s.privileged = true;
        let v = spec_json(&s, r.path()).unwrap();
        assert!(v["linux"].get("maskedPaths").is_none());
        let caps: Vec<String> = serde_json::from_value(v["process"]["capabilities"]["bounding"].clone()).unwrap();
        assert_eq!(caps.len(), host_capabilities().len());
        let plain = spec_json(&spec(), r.path()).unwrap();
        assert_eq!(
            plain["linux"]["maskedPaths"].as_array().unwrap().len(),
            MASKED_PATHS.len()
        );
    }

    #[test]
    fn mounts_env_and_namespaces() {
        let r = rootfs();
        let mut s = spec();
        s.mounts = vec![
            MountSpec::Bind {
                source: "/srv/data".into(),
                destination: "/data".into(),
                readonly: true,
                propagation: "rprivate".into(),
            },
            MountSpec::Tmpfs {
                destination: "/run".into(),
                options: vec!["size=1m".into()],
            },
            MountSpec::Bind {
                source: "/etc/myhosts".into(),
                destination: "/etc/hosts".into(),
                readonly: false,
                propagation: "rprivate".into(),
            },
        ];
        s.network = NetworkMode::Host;
        s.user = "u".into();
        let v = spec_json(&s, r.path()).unwrap();
        let oci: Spec = serde_json::from_value(v.clone()).unwrap();
        let mounts = oci.mounts().as_ref().unwrap();
        let data = mounts.iter().find(|m| m.destination() == Path::new("/data")).unwrap();
        assert_eq!(data.options().as_ref().unwrap(), &["rbind", "rprivate", "ro"]);
        let hosts: Vec<_> = mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/etc/myhosts")));
        let env: Vec<String> = serde_json::from_value(v["process"]["env"].clone()).unwrap();
        assert!(env[0].starts_with("PATH="));
        assert!(env.contains(&"HOME=/home/u".to_owned()));
        assert!(env.contains(&"HOSTNAME=abc".to_owned()));
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n["type"] == "network"));
        assert_eq!(v["process"]["user"]["uid"], 1000);
    }

    #[test]
    fn security_namespaces_devices_and_limits() {
        let r = rootfs();
        // Defaults: Docker's seccomp profile, no noNewPrivileges field (libcontainer would
        // load the filter after dropping capabilities), the cgroup namespace unless shared.
        let v = spec_json(&spec(), r.path()).unwrap();
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(v["process"].get("noNewPrivileges").is_none());
        let kinds = |v: &Value| -> Vec<String> {
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["type"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(kinds(&v), ["mount", "pid", "ipc", "uts", "cgroup", "network"]);
        assert_eq!(v["hostname"], "abc");
        let shm = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert!(shm["options"].as_array().unwrap().contains(&json!("size=67108864")));

        let mut s = spec();
        s.init = Some("/usr/bin/tini-static".into());
        s.host = HostOptions {
            seccomp: Seccomp::Unconfined,
            no_new_privileges: true,
            devices: vec![DeviceMapping {
                path_on_host: "/dev/null".into(),
                path_in_container: "/dev/mynull".into(),
                permissions: "rw".into(),
            }],
            device_cgroup_rules: vec!["b 7:* rwm".into()],
            cgroupns_host: true,
            uts_host: true,
            ipc: IpcMode::Host,
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: -1,
            }],
            sysctls: [("net.ipv4.ip_forward".to_owned(), "1".to_owned())].into(),
            shm_size: Some(1 << 20),
            group_add: vec!["wheel".into(), "4242".into()],
            oom_score_adj: Some(500),
            ..HostOptions::default()
        };
        s.resources.oom_kill_disable = true;
        let v = spec_json(&s, r.path()).unwrap();
        serde_json::from_value::<Spec>(v.clone()).expect("a valid OCI spec");
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(kinds(&v), ["mount", "pid", "network"]);
        assert!(v.get("hostname").is_none(), "the host's UTS namespace keeps its name");
        assert_eq!(v["process"]["args"], json!(["/sbin/docker-init", "--", "sh"]));
        let mounts = v["mounts"].as_array().unwrap();
        let init = mounts
            .iter()
            .find(|m| m["destination"] == INIT_PATH_IN_CONTAINER)
            .unwrap();
        assert_eq!(init["source"], "/usr/bin/tini-static");
        assert_eq!(init["options"], json!(["bind", "ro"]));
        let shm = mounts.iter().find(|m| m["destination"] == "/dev/shm").unwrap();
        assert_eq!(shm["source"], "/dev/shm", "--ipc host shares the host's /dev/shm");
        let dev = &v["linux"]["devices"][0];
        assert_eq!(
            (dev["path"].as_str(), dev["type"].as_str()),
            (Some("/dev/mynull"), Some("c"))
        );
        assert_eq!((dev["major"].as_u64(), dev["minor"].as_u64()), (Some(1), Some(3)));
        let rules = v["linux"]["resources"]["devices"].as_array().unwrap();
        assert!(rules.contains(&json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"})));
        assert!(rules.contains(&json!({"allow": true, "type": "b", "major": 7, "access": "rwm"})));
        assert_eq!(
            v["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": u64::MAX}])
        );
        assert_eq!(v["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        assert_eq!(v["process"]["oomScoreAdj"], 500);
        assert_eq!(v["linux"]["resources"]["memory"]["disableOOMKiller"], true);
        assert_eq!(v["process"]["user"]["additionalGids"], json!([10, 4242]));

        // --pid host: no init (the host has one), as with dockerd.
        s.host.pid_host = true;
        let v = spec_json(&s, r.path()).unwrap();
        assert_eq!(v["process"]["args"], json!(["sh"]));
        s.host.group_add = vec!["ghosts".into()];
        let err = spec_json(&s, r.path()).unwrap_err();
        assert!(err.to_string().contains("unable to find group ghosts"), "{err}");

        // A privileged container gets no filter unless one is given.
        let mut p = spec();
        p.privileged = true;
        assert!(spec_json(&p, r.path()).unwrap()["linux"].get("seccomp").is_none());
        p.host.seccomp = Seccomp::Profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#.into(),
        );
        assert_eq!(
            spec_json(&p, r.path()).unwrap()["linux"]["seccomp"]["defaultAction"],
            "SCMP_ACT_ALLOW"
        );
    }

    #[test]
    fn device_checks_rules_sysctls_and_ulimits() {
        let not_device = DeviceMapping {
            path_on_host: "/proc/version".into(),
            path_in_container: "/x".into(),
            permissions: "rwm".into(),
        };
        let err = check_device(&not_device).unwrap_err().to_string();
        assert_eq!(
            err,
            "error gathering device information while adding custom device \"/proc/version\": not a device node"
        );
        for ok in ["c 1:3 rwm", "b 7:* r", "a *:* m", "c *:5 rw"] {
            check_device_cgroup_rule(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["c 1:3", "x 1:3 rwm", "c 1-3 rwm", "c 1:3 rwx", "c a:3 r", "c 1:3 rwmr"] {
            assert!(check_device_cgroup_rule(bad).is_err(), "{bad}");
        }
        let one = |k: &str| -> BTreeMap<String, String> { [(k.to_owned(), "1".to_owned())].into() };
        check_sysctls(&one("net.core.somaxconn"), false, false, false).unwrap();
        check_sysctls(&one("fs.mqueue.msg_max"), true, false, false).unwrap();
        check_sysctls(&one("kernel.domainname"), false, false, false).unwrap();
        assert!(check_sysctls(&one("net.core.somaxconn"), true, false, false).is_err());
        assert!(check_sysctls(&one("kernel.sem"), false, true, false).is_err());
        assert!(check_sysctls(&one("kernel.domainname"), false, false, true).is_err());
        assert!(check_sysctls(&one("kernel.hostname"), false, false, false).is_err());
        assert!(check_sysctls(&one("vm.overcommit_memory"), false, false, false).is_err());
        let u = |name: &str, soft, hard| Ulimit {
            name: name.into(),
            soft,
            hard,
        };
        check_ulimit(&u("nofile", 10, 20)).unwrap();
        check_ulimit(&u("core", -1, -1)).unwrap();
        check_ulimit(&u("core", 0, -1)).unwrap();
        assert!(check_ulimit(&u("core", -1, 5)).is_err());
        assert!(check_ulimit(&u("nofile", 30, 20)).is_err());
        assert!(check_ulimit(&u("files", 1, 1)).is_err());
    }
}
