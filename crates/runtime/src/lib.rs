//! Berth's runtime: a container's settings become an OCI bundle ([`write_bundle`] over a
//! [`ContainerSpec`]), its root filesystem an overlay of the image's snapshots
//! ([`mount_overlay`]), and its life is supervised by one `berth shim` process
//! ([`shim_main`], started by [`spawn_shim`]) around youki's libcontainer. The shim writes
//! the JSON-lines log ([`LogCursor`], [`read_all`] read it) and the [`ExitRecord`]. A running
//! container's [`Cgroup`] is frozen, read and re-limited by the daemon. [`run_in_rootfs`]
//! runs work inside a private view of a container's root filesystem (`docker cp`, `docker
//! export`).

mod cgroup;
mod cgroup_prime;
mod copy;
mod error;
mod exec;
mod filter;
mod log;
mod rootfs;
mod seccomp;
mod shim;
mod spawner;
mod spec;
mod view;

pub use cgroup::{
    BlkioEntry, BlkioUsage, Cgroup, CgroupStats, CpuUsage, MemoryUsage, machine_memory, system_cpu_usage,
};
pub use cgroup_prime::prime as prime_cgroup_attach;
pub use copy::copy_tree;
pub use error::{Error, ErrorKind};
pub use exec::{ExecConfig, exec_main, has_effective_cap, resolve_exec_user};
pub use log::{
    DEFAULT_MAX_FILE, DEFAULT_MAX_SIZE, LogCursor, LogEntry, LogLimits, now_rfc3339, parse_size, read_all,
    read_with_cursor,
};
pub use rootfs::{EtcContent, is_mounted, mount_device, mount_overlay, unmount, write_etc_files};
pub use seccomp::check_seccomp_profile;
pub use shim::{
    ExitRecord, ShimConfig, ShimReport, shim_log_filter, shim_main, spawn_shim, write_atomic, write_cached,
};
pub use spawner::{Spawner, spawner_main};
pub use spec::{
    ContainerSpec, DEFAULT_CAPABILITIES, DEFAULT_SHM_SIZE, DeviceMapping, EtcFiles, HostOptions,
    INIT_PATH_IN_CONTAINER, IpcMode, MountSpec, NetworkMode, RUNTIME_MOUNT_POINTS, Resources, Seccomp, Ulimit,
    check_capabilities, check_device, check_device_cgroup_rule, check_sysctls, check_ulimit, host_capabilities,
    write_bundle,
};
pub use view::{OverlaySpec, ViewSpec, run_in_rootfs};
