//! Scaffolding shared by the container tests: a daemon with the busybox test image loaded,
//! a guard that kills every shim and removes every mount and cgroup a test leaves (also when
//! it fails), and small helpers around the docker CLI.
//!
//! Include it after `support/daemon.rs`:
//! `#[path = "support/daemon.rs"] mod daemon_support; use daemon_support::*;`
//! `#[path = "support/containers.rs"] mod container_support; use container_support::*;`

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use berth_testkit::ImageBuilder;

use super::daemon_support::*;

/// Kills the shims, unmounts the root filesystems and removes the cgroups of every container
/// under `data_root`, when dropped (after the daemon's own guard: declare it first).
pub(crate) struct ContainerCleanup {
    pub(crate) dir: PathBuf,
    pub(crate) data_root: PathBuf,
}

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let shim_marker = self.data_root.join("containers").display().to_string();
        if let Ok(procs) = fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(cmdline) = fs::read(p.path().join("cmdline")) else {
                    continue;
                };
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(" shim ") && cmdline.contains(&shim_marker) {
                    let pid = p.file_name().to_string_lossy().into_owned();
                    let _ = Command::new("kill").args(["-KILL", &pid]).status();
                }
            }
        }
        let ids: Vec<String> = fs::read_dir(self.data_root.join("containers"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        // Container processes die with their cgroup's kill below; give the kernel a moment.
        for id in &ids {
            for cg in cgroup_dirs(id) {
                let _ = fs::write(cg.join("cgroup.kill"), "1");
                if let Ok(procs) = fs::read_to_string(cg.join("cgroup.procs")) {
                    for pid in procs.lines() {
                        let _ = Command::new("kill").args(["-KILL", pid]).status();
                    }
                }
            }
        }
        thread::sleep(Duration::from_millis(200));
        let prefix = self.dir.display().to_string();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.reverse();
        for m in mounts {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        for id in &ids {
            for cg in cgroup_dirs(id) {
                let _ = fs::remove_dir(&cg);
            }
        }
    }
}

/// Every cgroup directory (v1 controllers and the unified tree) of container `id`.
pub(crate) fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for c in rd.flatten() {
            let d = c.path().join("berth").join(id);
            if d.is_dir() {
                out.push(d);
            }
        }
    }
    let unified = Path::new("/sys/fs/cgroup/berth").join(id);
    if unified.is_dir() {
        out.push(unified);
    }
    out
}

/// Mount points under `dir`.
pub(crate) fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Asserts that no mount is left under `dir` once the shims are done. A `--rm` container's
/// shim unmounts its root filesystem after it has reported the exit (the unmount syncs the
/// upper layer, ~60 ms, kept off the `docker run` path), so the last one may still be busy.
pub(crate) fn assert_no_mounts_left(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !mounts_under(dir).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let left = mounts_under(dir);
    assert!(left.is_empty(), "mounts left after the shims finished: {left:?}");
}

/// Starts a daemon in `dir` and loads the busybox test image as `busybox:latest`.
pub(crate) fn daemon_with_image(dir: &Path) -> (ContainerCleanup, DaemonProcess) {
    let cleanup = ContainerCleanup {
        dir: dir.to_path_buf(),
        data_root: Paths::new(dir, "berth").data_root,
    };
    let daemon = DaemonProcess::start(dir, "berth", &[]);
    let archive = dir.join("busybox.tar");
    ImageBuilder::new()
        .write_docker_archive(&archive, "busybox:latest")
        .expect("write the busybox archive");
    daemon.docker_ok(&["load", "-i", archive.to_str().expect("utf-8 path")]);
    (cleanup, daemon)
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the docker CLI with `input` on its stdin.
pub(crate) fn docker_with_input(
    daemon: &DaemonProcess,
    args: &[&str],
    input: &[u8],
) -> (std::process::ExitStatus, String) {
    use std::io::Write;
    let mut child = Command::new("docker")
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", &daemon.docker_config)
        .args(["-H", &daemon.paths.host()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start docker");
    let out = drain(child.stdout.take());
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    let status = wait_deadline(&mut child, CLI_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("docker {args:?} timed out")
    });
    (status, out.recv_timeout(Duration::from_secs(5)).unwrap_or_default())
}

pub(crate) fn inspect(daemon: &DaemonProcess, name: &str) -> serde_json::Value {
    let out = daemon.docker_ok(&["inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("inspect is JSON");
    v[0].clone()
}
