//! A running container's cgroup, as the daemon reads and changes it: freeze and thaw
//! (`docker pause`), usage (`docker stats`), live limits (`docker update`), and the OOM-kill
//! counter the shim records at the exit.
//!
//! ```text
//! cgroup v1 (and hybrid):  <mount of each controller>/<cgroups path>/   e.g.
//!                          /sys/fs/cgroup/memory/berth/<id>/memory.limit_in_bytes
//! cgroup v2:               /sys/fs/cgroup/<cgroups path>/memory.max
//! ```
//!
//! libcontainer creates the directories when the container starts and the shim removes them
//! after its exit; this module only reads and writes the files in them. Where a controller
//! is not mounted, its numbers read as zero and a limit on it is refused.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, io};
use crate::spec::Resources;

/// The v1 controllers Berth reads or writes.
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer"];

/// USER_HZ: `cpuacct.stat` counts in these ticks (a kernel constant on Linux).
const CLOCK_TICKS: u64 = 100;

/// The keys of v1's `memory.stat` that dockerd reports (moby `daemon/stats_unix.go`).
const V1_MEMORY_KEYS: &[&str] = &[
    "cache",
    "rss",
    "rss_huge",
    "mapped_file",
    "dirty",
    "writeback",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "hierarchical_memory_limit",
    "hierarchical_memsw_limit",
    "total_cache",
    "total_rss",
    "total_rss_huge",
    "total_mapped_file",
    "total_dirty",
    "total_writeback",
    "total_pgpgin",
    "total_pgpgout",
    "total_pgfault",
    "total_pgmajfault",
    "total_inactive_anon",
    "total_active_anon",
    "total_inactive_file",
    "total_active_file",
    "total_unevictable",
];

/// The keys of v2's `memory.stat` that dockerd reports.
const V2_MEMORY_KEYS: &[&str] = &[
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
];

/// Where one container's cgroup lives.
#[derive(Debug, Clone)]
enum Layout {
    /// One directory per mounted controller, by controller name.
    V1(HashMap<&'static str, PathBuf>),
    /// One directory for all.
    V2(PathBuf),
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    layout: Layout,
}

/// CPU time, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuUsage {
    pub total: u64,
    /// Per CPU (v1 only; empty on v2).
    pub percpu: Vec<u64>,
    pub user: u64,
    pub kernel: u64,
    /// CFS periods elapsed, periods throttled, and time throttled (ns).
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

/// Memory use, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub usage: u64,
    /// The peak (v1 only; 0 on v2).
    pub max_usage: u64,
    /// The limit; `u64::MAX` (or the kernel's huge number) when unlimited.
    pub limit: u64,
    /// v1: times the limit was hit; v2: the `oom` count of `memory.events`.
    pub failcnt: u64,
    /// `memory.stat`, the keys dockerd reports.
    pub stats: BTreeMap<String, u64>,
}

/// One line of a block I/O statistic: device, operation (`Read`, `Write`, ...; `read` and
/// `write` on v2) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

/// Block I/O, as v1's blkio controller reports it (v2 fills `service_bytes` only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioUsage {
    pub service_bytes: Vec<BlkioEntry>,
    pub serviced: Vec<BlkioEntry>,
    pub queued: Vec<BlkioEntry>,
    pub service_time: Vec<BlkioEntry>,
    pub wait_time: Vec<BlkioEntry>,
    pub merged: Vec<BlkioEntry>,
    pub time: Vec<BlkioEntry>,
    pub sectors: Vec<BlkioEntry>,
}

/// One reading of a cgroup's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu: CpuUsage,
    pub memory: MemoryUsage,
    pub pids_current: u64,
    /// 0 when unlimited.
    pub pids_limit: u64,
    pub blkio: BlkioUsage,
    /// Read from cgroup v2 (some fields have no v2 counterpart).
    pub unified: bool,
}

/// The mount points of the v1 controllers, read once from mountinfo (they do not move).
///
/// One read for all of them: libcgroups' lookup reads (and verifies) mountinfo once per
/// controller, which put seven reads on the shim's path from a container's exit to its
/// exit record.
fn v1_mounts() -> &'static HashMap<&'static str, PathBuf> {
    static MOUNTS: OnceLock<HashMap<&'static str, PathBuf>> = OnceLock::new();
    MOUNTS.get_or_init(|| v1_mounts_in(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()))
}

/// The first mount of each v1 controller in `mountinfo`: a `cgroup` file system whose super
/// options name it (`rw,cpu,cpuacct` holds both `cpu` and `cpuacct`).
fn v1_mounts_in(mountinfo: &str) -> HashMap<&'static str, PathBuf> {
    let mut found = HashMap::new();
    for line in mountinfo.lines() {
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        let mut fs = fs.split(' ');
        let (Some("cgroup"), Some(_source), Some(options)) = (fs.next(), fs.next(), fs.next()) else {
            continue;
        };
        let Some(point) = mount.split(' ').nth(4) else {
            continue;
        };
        for name in V1_CONTROLLERS {
            if options.split(',').any(|o| o == *name) {
                found
                    .entry(*name)
                    .or_insert_with(|| PathBuf::from(crate::rootfs::unescape_mountinfo(point)));
            }
        }
    }
    found
}

impl Cgroup {
    /// The cgroup at `cgroups_path` (the bundle's `linux.cgroupsPath`, e.g. `/berth/<id>`) on
    /// this host's hierarchy: v2 when `/sys/fs/cgroup` is cgroup2, v1 otherwise (hybrid hosts
    /// keep their controllers on v1, as libcontainer does).
    pub fn open(cgroups_path: &str) -> Result<Cgroup, Error> {
        use libcgroups::common::CgroupSetup;
        let rel = cgroups_path.trim_start_matches('/');
        let setup = libcgroups::common::get_cgroup_setup().map_err(|e| Error::Cgroup {
            path: PathBuf::from("/sys/fs/cgroup"),
            reason: format!("cannot tell the cgroup setup: {e}"),
        })?;
        Ok(match setup {
            CgroupSetup::Unified => Cgroup::v2_at(Path::new("/sys/fs/cgroup").join(rel)),
            CgroupSetup::Legacy | CgroupSetup::Hybrid => Cgroup {
                layout: Layout::V1(v1_mounts().iter().map(|(name, m)| (*name, m.join(rel))).collect()),
            },
        })
    }

    /// A v2 cgroup at `dir` (tests point it at a directory of fake files).
    pub(crate) fn v2_at(dir: PathBuf) -> Cgroup {
        Cgroup {
            layout: Layout::V2(dir),
        }
    }

    /// A v1 cgroup whose controller `c` lives at `root/c` (for tests).
    #[cfg(test)]
    pub(crate) fn v1_at(root: &Path) -> Cgroup {
        Cgroup {
            layout: Layout::V1(V1_CONTROLLERS.iter().map(|n| (*n, root.join(n))).collect()),
        }
    }

    /// Whether the cgroup exists (the container runs, or its shim has not cleaned up yet).
    pub fn exists(&self) -> bool {
        match &self.layout {
            Layout::V1(dirs) => dirs.values().any(|d| d.is_dir()),
            Layout::V2(dir) => dir.is_dir(),
        }
    }

    /// The directory of controller `ctrl` (v1), or the one directory (v2).
    fn dir(&self, ctrl: &'static str) -> Option<&Path> {
        match &self.layout {
            Layout::V1(dirs) => dirs.get(ctrl).map(PathBuf::as_path),
            Layout::V2(dir) => Some(dir),
        }
    }

    fn file(&self, ctrl: &'static str, name: &str) -> Option<PathBuf> {
        self.dir(ctrl).map(|d| d.join(name))
    }

    fn read(&self, ctrl: &'static str, name: &str) -> Option<String> {
        std::fs::read_to_string(self.file(ctrl, name)?).ok()
    }

    fn read_u64(&self, ctrl: &'static str, name: &str) -> u64 {
        self.read(ctrl, name).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    fn write(&self, ctrl: &'static str, name: &str, value: &str) -> Result<(), Error> {
        let path = self.file(ctrl, name).ok_or_else(|| Error::Cgroup {
            path: PathBuf::from(name),
            reason: format!("the {ctrl} controller is not mounted"),
        })?;
        std::fs::write(&path, value).map_err(|source| Error::CgroupWrite {
            path: path.clone(),
            value: value.to_owned(),
            source,
        })
    }

    fn unified(&self) -> bool {
        matches!(self.layout, Layout::V2(_))
    }

    /// Freezes every process of the cgroup and waits until the kernel says they all are
    /// (v1: `freezer.state` FROZEN, retrying through FREEZING as runc does; v2:
    /// `cgroup.freeze` and `frozen 1` in `cgroup.events`). Undone on failure.
    pub fn freeze(&self) -> Result<(), Error> {
        if self.unified() {
            self.write("freezer", "cgroup.freeze", "1")?;
            if self.wait_v2_frozen(true) {
                return Ok(());
            }
            let _ = self.write("freezer", "cgroup.freeze", "0");
            return Err(self.freeze_failed("the cgroup did not report frozen within 2 s"));
        }
        for i in 0..1000 {
            // A task stuck in FREEZING sometimes needs a thaw and a new try (runc does this).
            if i % 50 == 49 {
                let _ = self.write("freezer", "freezer.state", "THAWED");
                std::thread::sleep(Duration::from_millis(10));
            }
            self.write("freezer", "freezer.state", "FROZEN")?;
            if i % 25 == 24 {
                std::thread::sleep(Duration::from_millis(10));
            }
            match self.read("freezer", "freezer.state").as_deref().map(str::trim) {
                Some("FROZEN") => return Ok(()),
                Some("FREEZING") => continue,
                other => {
                    let _ = self.write("freezer", "freezer.state", "THAWED");
                    return Err(self.freeze_failed(&format!("unexpected freezer state {other:?}")));
                }
            }
        }
        let _ = self.write("freezer", "freezer.state", "THAWED");
        Err(self.freeze_failed("the cgroup stayed FREEZING"))
    }

    /// Thaws the cgroup and waits until it is.
    pub fn thaw(&self) -> Result<(), Error> {
        if self.unified() {
            self.write("freezer", "cgroup.freeze", "0")?;
            return if self.wait_v2_frozen(false) {
                Ok(())
            } else {
                Err(self.freeze_failed("the cgroup did not report thawed within 2 s"))
            };
        }
        for _ in 0..200 {
            self.write("freezer", "freezer.state", "THAWED")?;
            if self.read("freezer", "freezer.state").as_deref().map(str::trim) == Some("THAWED") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(self.freeze_failed("the cgroup did not thaw"))
    }

    fn wait_v2_frozen(&self, want: bool) -> bool {
        let line = if want { "frozen 1" } else { "frozen 0" };
        for _ in 0..200 {
            if self
                .read("freezer", "cgroup.events")
                .is_some_and(|e| e.lines().any(|l| l.trim() == line))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn freeze_failed(&self, reason: &str) -> Error {
        Error::Cgroup {
            path: self.dir("freezer").map(Path::to_path_buf).unwrap_or_default(),
            reason: reason.to_owned(),
        }
    }

    /// Whether the cgroup is frozen; `None` when it (or the freezer) does not exist.
    pub fn frozen(&self) -> Option<bool> {
        if self.unified() {
            let events = self.read("freezer", "cgroup.events")?;
            return Some(events.lines().any(|l| l.trim() == "frozen 1"));
        }
        let state = self.read("freezer", "freezer.state")?;
        Some(state.trim() != "THAWED")
    }

    /// How many processes the OOM killer killed in this cgroup (v1 `memory.oom_control`,
    /// v2 `memory.events`); `None` when the file is not there.
    pub fn oom_kills(&self) -> Option<u64> {
        let text = if self.unified() {
            self.read("memory", "memory.events")?
        } else {
            self.read("memory", "memory.oom_control")?
        };
        flat_keyed(&text).get("oom_kill").copied()
    }

    /// Reads the counters dockerd reports. Missing files read as zero (a controller that
    /// is not mounted, or a kernel without the file).
    pub fn stats(&self) -> CgroupStats {
        if self.unified() {
            self.stats_v2()
        } else {
            self.stats_v1()
        }
    }

    fn stats_v1(&self) -> CgroupStats {
        let tick_ns = 1_000_000_000 / CLOCK_TICKS;
        let cpuacct = flat_keyed(&self.read("cpuacct", "cpuacct.stat").unwrap_or_default());
        let throttle = flat_keyed(&self.read("cpu", "cpu.stat").unwrap_or_default());
        let cpu = CpuUsage {
            total: self.read_u64("cpuacct", "cpuacct.usage"),
            percpu: self
                .read("cpuacct", "cpuacct.usage_percpu")
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect(),
            user: cpuacct.get("user").copied().unwrap_or(0) * tick_ns,
            kernel: cpuacct.get("system").copied().unwrap_or(0) * tick_ns,
            periods: throttle.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: throttle.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: throttle.get("throttled_time").copied().unwrap_or(0),
        };
        let stat = flat_keyed(&self.read("memory", "memory.stat").unwrap_or_default());
        let memory = MemoryUsage {
            usage: self.read_u64("memory", "memory.usage_in_bytes"),
            max_usage: self.read_u64("memory", "memory.max_usage_in_bytes"),
            limit: self.read_u64("memory", "memory.limit_in_bytes"),
            failcnt: self.read_u64("memory", "memory.failcnt"),
            stats: V1_MEMORY_KEYS
                .iter()
                .map(|k| ((*k).to_owned(), stat.get(*k).copied().unwrap_or(0)))
                .collect(),
        };
        // CFQ/BFQ statistics where the kernel has them, else the throttling policy's two.
        let blkio_file = |name: &str| {
            self.read("blkio", &format!("blkio.{name}"))
                .map(|t| blkio_entries(&t))
                .unwrap_or_default()
        };
        let blkio = if self
            .file("blkio", "blkio.io_serviced_recursive")
            .is_some_and(|p| p.exists())
        {
            BlkioUsage {
                service_bytes: blkio_file("io_service_bytes_recursive"),
                serviced: blkio_file("io_serviced_recursive"),
                queued: blkio_file("io_queued_recursive"),
                service_time: blkio_file("io_service_time_recursive"),
                wait_time: blkio_file("io_wait_time_recursive"),
                merged: blkio_file("io_merged_recursive"),
                time: blkio_file("time_recursive"),
                sectors: blkio_file("sectors_recursive"),
            }
        } else {
            BlkioUsage {
                service_bytes: blkio_file("throttle.io_service_bytes"),
                serviced: blkio_file("throttle.io_serviced"),
                ..BlkioUsage::default()
            }
        };
        CgroupStats {
            cpu,
            memory,
            pids_current: self.read_u64("pids", "pids.current"),
            pids_limit: self.read_u64("pids", "pids.max"),
            blkio,
            unified: false,
        }
    }

    fn stats_v2(&self) -> CgroupStats {
        let cpu_stat = flat_keyed(&self.read("cpu", "cpu.stat").unwrap_or_default());
        let us = |k: &str| cpu_stat.get(k).copied().unwrap_or(0) * 1000;
        let cpu = CpuUsage {
            total: us("usage_usec"),
            percpu: Vec::new(),
            user: us("user_usec"),
            kernel: us("system_usec"),
            periods: cpu_stat.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: cpu_stat.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: us("throttled_usec"),
        };
        let stat = flat_keyed(&self.read("memory", "memory.stat").unwrap_or_default());
        let events = flat_keyed(&self.read("memory", "memory.events").unwrap_or_default());
        let limit = match self.read("memory", "memory.max").as_deref().map(str::trim) {
            Some("max") | None => u64::MAX,
            Some(v) => v.parse().unwrap_or(u64::MAX),
        };
        let memory = MemoryUsage {
            usage: self.read_u64("memory", "memory.current"),
            max_usage: 0,
            limit,
            failcnt: events.get("oom").copied().unwrap_or(0),
            stats: V2_MEMORY_KEYS
                .iter()
                .map(|k| ((*k).to_owned(), stat.get(*k).copied().unwrap_or(0)))
                .collect(),
        };
        let mut service_bytes = Vec::new();
        for line in self.read("io", "io.stat").unwrap_or_default().lines() {
            let mut fields = line.split_whitespace();
            let Some((major, minor)) = fields.next().and_then(device) else {
                continue;
            };
            let kv: HashMap<&str, u64> = fields
                .filter_map(|f| f.split_once('='))
                .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
                .collect();
            for (key, op) in [("rbytes", "read"), ("wbytes", "write")] {
                service_bytes.push(BlkioEntry {
                    major,
                    minor,
                    op: op.to_owned(),
                    value: kv.get(key).copied().unwrap_or(0),
                });
            }
        }
        CgroupStats {
            cpu,
            memory,
            pids_current: self.read_u64("pids", "pids.current"),
            pids_limit: self.read_u64("pids", "pids.max"),
            blkio: BlkioUsage {
                service_bytes,
                ..BlkioUsage::default()
            },
            unified: true,
        }
    }

    /// Applies the limits set in `r` to the running cgroup, leaving the others alone
    /// (`docker update`). Values as the Docker API gives them: memory and swap `-1` mean
    /// unlimited, a CPU quota of `-1` none, a pids limit of 0 or less none.
    pub fn update(&self, r: &Resources) -> Result<(), Error> {
        if self.unified() {
            self.update_v2(r)
        } else {
            self.update_v1(r)
        }
    }

    fn update_v1(&self, r: &Resources) -> Result<(), Error> {
        match (r.memory, r.memory_swap) {
            (Some(limit), Some(swap)) => {
                // The kernel wants limit <= memsw at every moment: raise memsw first when the
                // new memsw is above the current limit (runc's order), else lower the limit first.
                let current = self
                    .read("memory", "memory.limit_in_bytes")
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .unwrap_or(i64::MAX);
                if swap == -1 || current < swap {
                    self.write("memory", "memory.memsw.limit_in_bytes", &swap.to_string())?;
                    self.write("memory", "memory.limit_in_bytes", &limit.to_string())?;
                } else {
                    self.write("memory", "memory.limit_in_bytes", &limit.to_string())?;
                    self.write("memory", "memory.memsw.limit_in_bytes", &swap.to_string())?;
                }
            }
            (Some(limit), None) => self.write("memory", "memory.limit_in_bytes", &limit.to_string())?,
            (None, Some(swap)) => self.write("memory", "memory.memsw.limit_in_bytes", &swap.to_string())?,
            (None, None) => {}
        }
        if let Some(v) = r.memory_reservation {
            self.write("memory", "memory.soft_limit_in_bytes", &v.to_string())?;
        }
        if let Some(v) = r.cpu_shares {
            self.write("cpu", "cpu.shares", &v.to_string())?;
        }
        if let Some(v) = r.cpu_period {
            self.write("cpu", "cpu.cfs_period_us", &v.to_string())?;
        }
        if let Some(v) = r.cpu_quota {
            self.write("cpu", "cpu.cfs_quota_us", &v.to_string())?;
        }
        if let Some(v) = &r.cpuset_cpus {
            self.write("cpuset", "cpuset.cpus", v)?;
        }
        if let Some(v) = &r.cpuset_mems {
            self.write("cpuset", "cpuset.mems", v)?;
        }
        if let Some(v) = r.pids_limit {
            self.write("pids", "pids.max", &pids_max(v))?;
        }
        Ok(())
    }

    fn update_v2(&self, r: &Resources) -> Result<(), Error> {
        let max = |v: i64| if v < 0 { "max".to_owned() } else { v.to_string() };
        if let Some(limit) = r.memory {
            // memory.swap.max is swap alone; lower it before a lower memory.max is useless,
            // so the order does not matter on v2.
            self.write("memory", "memory.max", &max(limit))?;
        }
        if let Some(swap) = r.memory_swap {
            // Docker's swap limit is memory + swap; v2 limits swap alone.
            let memory = r.memory.filter(|m| *m > 0).or_else(|| {
                self.read("memory", "memory.max")
                    .and_then(|v| v.trim().parse::<i64>().ok())
            });
            let value = match (swap, memory) {
                (-1, _) => "max".to_owned(),
                (s, Some(m)) => (s - m).max(0).to_string(),
                (s, None) => s.to_string(),
            };
            self.write("memory", "memory.swap.max", &value)?;
        }
        if let Some(v) = r.memory_reservation {
            self.write("memory", "memory.low", &v.to_string())?;
        }
        if let Some(shares) = r.cpu_shares {
            self.write("cpu", "cpu.weight", &shares_to_weight(shares).to_string())?;
        }
        if r.cpu_quota.is_some() || r.cpu_period.is_some() {
            let (quota, period) = match self.read("cpu", "cpu.max") {
                Some(cur) => {
                    let mut it = cur.split_whitespace();
                    (
                        it.next().unwrap_or("max").to_owned(),
                        it.next().unwrap_or("100000").to_owned(),
                    )
                }
                None => ("max".to_owned(), "100000".to_owned()),
            };
            let quota = r.cpu_quota.map_or(quota, max);
            let period = r.cpu_period.map_or(period, |p| p.to_string());
            self.write("cpu", "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(v) = &r.cpuset_cpus {
            self.write("cpuset", "cpuset.cpus", v)?;
        }
        if let Some(v) = &r.cpuset_mems {
            self.write("cpuset", "cpuset.mems", v)?;
        }
        if let Some(v) = r.pids_limit {
            self.write("pids", "pids.max", &pids_max(v))?;
        }
        Ok(())
    }
}

fn pids_max(v: i64) -> String {
    if v > 0 { v.to_string() } else { "max".to_owned() }
}

/// runc's conversion of v1 CPU shares [2, 262144] to a v2 weight [1, 10000].
fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// `MAJ:MIN`.
fn device(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A cgroup "flat keyed" file: `key value` per line; lines that are not are skipped.
fn flat_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_owned(), v))
        })
        .collect()
}

/// v1 blkio lines: `MAJ:MIN OP VALUE` or `MAJ:MIN VALUE`; the `Total N` line is skipped.
fn blkio_entries(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (major, minor) = device(fields.first()?)?;
            let (op, value) = match fields.as_slice() {
                [_, op, v] => ((*op).to_owned(), v.parse().ok()?),
                [_, v] => (String::new(), v.parse().ok()?),
                _ => return None,
            };
            Some(BlkioEntry {
                major,
                minor,
                op,
                value,
            })
        })
        .collect()
}

/// CPU time of the whole host in nanoseconds (the sum of the first seven fields of the
/// `cpu` line of `/proc/stat`) and the number of CPUs listed there, as dockerd computes
/// `system_cpu_usage` and `online_cpus`.
pub fn system_cpu_usage() -> Result<(u64, u32), Error> {
    let path = Path::new("/proc/stat");
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    Ok(parse_proc_stat(&text))
}

fn parse_proc_stat(text: &str) -> (u64, u32) {
    let mut total = 0;
    let mut cpus = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            break;
        };
        if rest.starts_with(' ') {
            let ticks: u64 = rest
                .split_whitespace()
                .take(7)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum();
            total = ticks * (1_000_000_000 / CLOCK_TICKS);
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            cpus += 1;
        }
    }
    (total, cpus)
}

/// The host's memory in bytes (`MemTotal`), which dockerd reports as the limit of a
/// container without one.
pub fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn v1_mount_points_come_from_the_super_options_in_one_read() {
        // Debian 12's hybrid layout, plus a later bind of the memory hierarchy (the first
        // mount wins, as with libcgroups) and a mount point with a space.
        let info = "\
25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
37 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
38 31 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,pids
39 31 0:34 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpuset
40 31 0:35 / /sys/fs/cgroup/blkio\\040x rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,blkio
41 31 0:36 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
90 25 0:32 / /mnt/memory rw,relatime - cgroup cgroup rw,memory
";
        let m = v1_mounts_in(info);
        assert_eq!(m["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(m["pids"], Path::new("/sys/fs/cgroup/pids"));
        assert_eq!(m["cpuset"], Path::new("/sys/fs/cgroup/cpuset"));
        assert_eq!(m["blkio"], Path::new("/sys/fs/cgroup/blkio x"));
        // Not mounted here: absent, not guessed.
        assert!(!m.contains_key("freezer"));
        assert_eq!(m.len(), 6);
        // A v2-only host has no v1 controllers at all.
        assert!(v1_mounts_in("32 31 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n").is_empty());
    }

    #[test]
    fn v1_mount_points_agree_with_libcgroups_on_this_host() {
        let ours = v1_mounts_in(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        for (name, ctrl) in [
            ("cpu", libcgroups::v1::ControllerType::Cpu),
            ("cpuacct", libcgroups::v1::ControllerType::CpuAcct),
            ("memory", libcgroups::v1::ControllerType::Memory),
            ("pids", libcgroups::v1::ControllerType::Pids),
            ("freezer", libcgroups::v1::ControllerType::Freezer),
        ] {
            assert_eq!(
                ours.get(name).cloned(),
                libcgroups::v1::util::get_subsystem_mount_point(&ctrl).ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn reads_v1_counters_like_containerd() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        put(&r.join("cpuacct"), "cpuacct.usage", "2500000000\n");
        put(&r.join("cpuacct"), "cpuacct.usage_percpu", "1000000000 1500000000 \n");
        put(&r.join("cpuacct"), "cpuacct.stat", "user 150\nsystem 50\n");
        put(
            &r.join("cpu"),
            "cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 12345\n",
        );
        put(&r.join("memory"), "memory.usage_in_bytes", "4096000\n");
        put(&r.join("memory"), "memory.max_usage_in_bytes", "8192000\n");
        put(&r.join("memory"), "memory.limit_in_bytes", "33554432\n");
        put(&r.join("memory"), "memory.failcnt", "3\n");
        put(
            &r.join("memory"),
            "memory.stat",
            "cache 100\nrss 200\ntotal_inactive_file 50\nswap 0\n",
        );
        put(
            &r.join("memory"),
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        put(&r.join("pids"), "pids.current", "5\n");
        put(&r.join("pids"), "pids.max", "max\n");
        put(
            &r.join("blkio"),
            "blkio.throttle.io_service_bytes",
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\nTotal 12288\n",
        );
        let cg = Cgroup::v1_at(r);
        let s = cg.stats();
        assert_eq!(s.cpu.total, 2_500_000_000);
        assert_eq!(s.cpu.percpu, [1_000_000_000, 1_500_000_000]);
        assert_eq!((s.cpu.user, s.cpu.kernel), (1_500_000_000, 500_000_000));
        assert_eq!(
            (s.cpu.periods, s.cpu.throttled_periods, s.cpu.throttled_time),
            (10, 4, 12345)
        );
        assert_eq!(
            (s.memory.usage, s.memory.max_usage, s.memory.limit),
            (4_096_000, 8_192_000, 32 << 20)
        );
        assert_eq!(s.memory.failcnt, 3);
        assert_eq!(s.memory.stats["rss"], 200);
        assert_eq!(s.memory.stats["total_inactive_file"], 50);
        assert_eq!(s.memory.stats["dirty"], 0, "every key dockerd reports is there");
        assert!(!s.memory.stats.contains_key("swap"));
        assert_eq!(s.memory.stats.len(), V1_MEMORY_KEYS.len());
        assert_eq!((s.pids_current, s.pids_limit), (5, 0));
        assert_eq!(s.blkio.service_bytes.len(), 3);
        assert_eq!(s.blkio.service_bytes[1].op, "Write");
        assert_eq!(s.blkio.service_bytes[1].value, 8192);
        assert!(s.blkio.serviced.is_empty());
        assert_eq!(cg.oom_kills(), Some(2));
    }

    #[test]
    fn reads_v2_counters() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        put(
            p,
            "cpu.stat",
            "usage_usec 300\nuser_usec 200\nsystem_usec 100\nnr_periods 1\nnr_throttled 0\nthrottled_usec 0\n",
        );
        put(p, "memory.current", "1000\n");
        put(p, "memory.max", "max\n");
        put(p, "memory.stat", "anon 10\nfile 20\n");
        put(p, "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
        put(p, "pids.current", "2\n");
        put(p, "pids.max", "64\n");
        put(
            p,
            "io.stat",
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let cg = Cgroup::v2_at(p.to_path_buf());
        let s = cg.stats();
        assert_eq!((s.cpu.total, s.cpu.user, s.cpu.kernel), (300_000, 200_000, 100_000));
        assert!(s.cpu.percpu.is_empty());
        assert_eq!((s.memory.usage, s.memory.limit, s.memory.failcnt), (1000, u64::MAX, 1));
        assert_eq!(s.memory.stats["file"], 20);
        assert_eq!((s.pids_current, s.pids_limit), (2, 64));
        assert_eq!(
            s.blkio.service_bytes,
            [
                BlkioEntry {
                    major: 8,
                    minor: 0,
                    op: "read".into(),
                    value: 100
                },
                BlkioEntry {
                    major: 8,
                    minor: 0,
                    op: "write".into(),
                    value: 200
                },
            ]
        );
        assert_eq!(cg.oom_kills(), Some(1));
    }

    #[test]
    fn updates_write_the_files_in_a_safe_order() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for (c, f, v) in [
            ("memory", "memory.limit_in_bytes", "33554432"),
            ("memory", "memory.memsw.limit_in_bytes", "67108864"),
            ("memory", "memory.soft_limit_in_bytes", "0"),
            ("cpu", "cpu.shares", "1024"),
            ("cpu", "cpu.cfs_period_us", "100000"),
            ("cpu", "cpu.cfs_quota_us", "-1"),
            ("pids", "pids.max", "max"),
            ("cpuset", "cpuset.cpus", "0-1"),
        ] {
            put(&r.join(c), f, v);
        }
        let cg = Cgroup::v1_at(r);
        cg.update(&Resources {
            memory: Some(128 << 20),
            memory_swap: Some(256 << 20),
            pids_limit: Some(64),
            cpu_quota: Some(50_000),
            cpuset_cpus: Some("0".into()),
            ..Resources::default()
        })
        .unwrap();
        let read = |c: &str, f: &str| std::fs::read_to_string(r.join(c).join(f)).unwrap();
        assert_eq!(read("memory", "memory.limit_in_bytes"), (128 << 20).to_string());
        assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), (256 << 20).to_string());
        assert_eq!(read("pids", "pids.max"), "64");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.shares"), "1024", "untouched");
        assert_eq!(read("cpuset", "cpuset.cpus"), "0");
        cg.update(&Resources {
            pids_limit: Some(-1),
            ..Resources::default()
        })
        .unwrap();
        assert_eq!(read("pids", "pids.max"), "max");

        let d = tempfile::tempdir().unwrap();
        put(d.path(), "cpu.max", "max 100000\n");
        let v2 = Cgroup::v2_at(d.path().to_path_buf());
        v2.update(&Resources {
            memory: Some(64 << 20),
            memory_swap: Some(128 << 20),
            cpu_quota: Some(50_000),
            cpu_shares: Some(512),
            pids_limit: Some(0),
            ..Resources::default()
        })
        .unwrap();
        let read2 = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap();
        assert_eq!(read2("memory.max"), (64 << 20).to_string());
        assert_eq!(read2("memory.swap.max"), (64 << 20).to_string());
        assert_eq!(read2("cpu.max"), "50000 100000");
        assert_eq!(read2("cpu.weight"), "20");
        assert_eq!(read2("pids.max"), "max");
    }

    #[test]
    fn freezer_states() {
        let root = tempfile::tempdir().unwrap();
        // A plain file stands in for the kernel: what is written is what is read.
        put(&root.path().join("freezer"), "freezer.state", "THAWED\n");
        let cg = Cgroup::v1_at(root.path());
        assert_eq!(cg.frozen(), Some(false));
        cg.freeze().unwrap();
        assert_eq!(cg.frozen(), Some(true));
        cg.thaw().unwrap();
        assert_eq!(cg.frozen(), Some(false));
        let missing = Cgroup::v1_at(&root.path().join("nope"));
        assert_eq!(missing.frozen(), None);
        assert!(missing.freeze().is_err());
    }

    #[test]
    fn proc_stat_and_weights() {
        let text =
            "cpu  100 0 50 1000 10 0 5 0 0 0\ncpu0 50 0 25 500 5 0 2 0 0 0\ncpu1 50 0 25 500 5 0 3 0 0 0\nintr 1 2\n";
        assert_eq!(parse_proc_stat(text), (1165 * 10_000_000, 2));
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
