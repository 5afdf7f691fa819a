//! Takes an RCU grace period off the container start path.
//!
//! Moving a task into a cgroup (a write to `cgroup.procs`, which libcontainer does once per
//! controller for every container) takes the kernel's global `cgroup_threadgroup_rwsem` for
//! writing. Unless the hierarchy is mounted with `favordynmods`, the first writer after a
//! quiet spell waits a whole RCU grace period (`rcu_sync_enter`) to switch the readers (fork,
//! exec, exit) to their slow path: about 20 ms on the test machines, a third of a `docker
//! run`. Writers that arrive while the switch is in flight, or within a grace period after
//! the last writer left, share it and pay nothing.
//!
//! So the daemon starts the switch as soon as it knows a start is coming (container create
//! and start): [`prime`] rewrites the daemon's own pid into the cgroup it is already in (no
//! migration happens, but the lock is taken) on a thread of its own, and the grace period
//! runs while the CLI's next requests, the shim's exec and libcontainer's set-up go on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set while a priming write is in flight: one is enough, later ones share its grace period.
static IN_FLIGHT: AtomicBool = AtomicBool::new(false);

/// Starts switching the cgroup threadgroup lock to its writer-friendly state in the
/// background; returns at once. Does nothing when a priming write is already in flight or
/// this process's cgroup cannot be found (the start then pays the grace period itself).
pub fn prime() {
    if IN_FLIGHT.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new().name("cgroup-prime".into()).spawn(|| {
        if let Some(procs) = own_procs_file() {
            if let Err(e) = std::fs::write(&procs, std::process::id().to_string()) {
                tracing::debug!(file = %procs.display(), error = %e, "cgroup priming write failed");
            }
        }
        IN_FLIGHT.store(false, Ordering::Release);
    });
    if spawned.is_err() {
        IN_FLIGHT.store(false, Ordering::Release);
    }
}

/// The `cgroup.procs` file of the cgroup this process is in, in one hierarchy: a v1
/// controller when there are any (the lock is global, any one hierarchy will do), else the
/// unified one.
fn own_procs_file() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut unified = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            unified = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .iter()
                .map(|root| PathBuf::from(root).join(rel).join("cgroup.procs"))
                .find(|p| p.exists());
            continue;
        }
        // `name=systemd` and co-mounted controllers (`cpu,cpuacct`) are mounted under their
        // list's name, or a name per controller linked to it.
        let mount = controllers.strip_prefix("name=").unwrap_or(controllers);
        let p = PathBuf::from("/sys/fs/cgroup")
            .join(mount)
            .join(rel)
            .join("cgroup.procs");
        if p.exists() {
            return Some(p);
        }
    }
    unified
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_is_found_and_priming_returns_at_once() {
        // Every Linux process is in some cgroup; the test machines mount them under
        // /sys/fs/cgroup.
        if std::path::Path::new("/sys/fs/cgroup").is_dir() {
            let p = own_procs_file().expect("this process's cgroup.procs");
            assert!(p.ends_with("cgroup.procs"), "{}", p.display());
        }
        let t = std::time::Instant::now();
        prime();
        prime();
        assert!(t.elapsed() < std::time::Duration::from_millis(10), "prime blocked");
    }
}
