//! A systemd-based image, built on this machine from its installed Debian packages (systemd,
//! systemd-sysv, libsystemd-shared and the libraries they link, plus busybox-static for a
//! shell; nothing is downloaded), runs the way the perfSONAR testpoint runs:
//! `--cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock`, and
//! systemd reaches the `running` state (`systemctl is-system-running --wait`). `docker stop`
//! then shuts it down with SIGRTMIN+3, as the image's StopSignal says.
//!
//! Needs root, the docker CLI, systemd and busybox-static installed on the host (Debian
//! packages `systemd`, `busybox-static`).

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_testkit::{Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

/// The host's files of `packages` (directories skipped), as dpkg lists them.
fn package_files(packages: &[&str]) -> Vec<PathBuf> {
    let out = Command::new("dpkg")
        .arg("-L")
        .args(packages)
        .output()
        .expect("run dpkg -L");
    assert!(
        out.status.success(),
        "dpkg -L {packages:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        // Files and links to files; directories (and links to them, as /bin) come with them.
        .filter(|p| p.is_absolute() && fs::metadata(p).is_ok_and(|m| !m.is_dir()))
        .collect()
}

/// The shared libraries `elf` loads, by `ldd`.
fn libraries(elf: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new("ldd").arg(elf).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies `file` to the same place under `root`, its directories resolved as the host
/// resolves them (a /usr-merged host's `/lib/x` lands in `usr/lib/x`), and, for a symlink,
/// what it points to as well.
fn copy_in(root: &Path, file: &Path, done: &mut BTreeSet<PathBuf>) {
    if !done.insert(file.to_path_buf()) {
        return;
    }
    let (Some(parent), Some(name)) = (file.parent(), file.file_name()) else {
        return;
    };
    let parent = fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    let dest_dir = root.join(parent.strip_prefix("/").expect("absolute"));
    fs::create_dir_all(&dest_dir).expect("create directory");
    let status = Command::new("cp")
        .args(["-a", "--no-dereference"])
        .arg(file)
        .arg(dest_dir.join(name))
        .status()
        .expect("cp");
    assert!(status.success(), "cp {}", file.display());
    if fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink()) {
        if let Ok(target) = fs::canonicalize(file) {
            copy_in(root, &target, done);
        }
    }
}

/// A root filesystem with systemd as /sbin/init, from the host's packages.
fn systemd_rootfs(root: &Path) {
    // /usr-merged Debian: /bin, /sbin, /lib and /lib64 are links into /usr, as on the host.
    for dir in ["bin", "sbin", "lib", "lib64"] {
        let host = Path::new("/").join(dir);
        if let Ok(target) = fs::read_link(&host) {
            fs::create_dir_all(root.join("usr").join(dir)).expect("mkdir");
            std::os::unix::fs::symlink(target, root.join(dir)).expect("symlink");
        }
    }
    let mut done = BTreeSet::new();
    let mut files = package_files(&["systemd", "systemd-sysv", "libsystemd-shared", "libsystemd0"]);
    files.push(PathBuf::from("/bin/busybox"));
    let mut elves = Vec::new();
    for f in &files {
        copy_in(root, f, &mut done);
        if fs::metadata(f).is_ok_and(|m| m.is_file()) {
            elves.push(f.clone());
        }
    }
    for elf in elves {
        for lib in libraries(&elf) {
            copy_in(root, &lib, &mut done);
        }
    }
    fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    for tool in ["sh", "cat", "ls", "sleep", "mkdir", "mount", "ps"] {
        let p = root.join("usr/bin").join(tool);
        if !p.exists() {
            std::os::unix::fs::symlink("/bin/busybox", p).expect("busybox link");
        }
    }
    for f in ["etc/os-release", "usr/lib/os-release"] {
        let src = Path::new("/").join(f);
        if src.exists() {
            copy_in(root, &src, &mut done);
        }
    }
    fs::create_dir_all(root.join("etc/systemd/system")).expect("mkdir");
    fs::write(root.join("etc/machine-id"), "").expect("machine-id");
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nsystemd-journal:x:101:\ntty:x:5:\ninput:x:102:\nkvm:x:103:\nrender:x:104:\nsgx:x:105:\n",
    )
    .expect("group");
    std::os::unix::fs::symlink(
        "/lib/systemd/system/multi-user.target",
        root.join("etc/systemd/system/default.target"),
    )
    .expect("default target");
    for d in ["root", "tmp", "var/tmp", "var/log", "run", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
}

#[test]
fn systemd_image_reaches_running() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    if !Path::new("/lib/systemd/systemd").exists() || !Path::new("/bin/busybox").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd and busybox-static must be installed (apt-get install systemd busybox-static)"
        );
        eprintln!("skipped: systemd or busybox-static is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cleanup, mut daemon) = daemon_with_image(dir.path());
    // The image is ~100 MB of the host's libraries: a debug build takes a while to import it.
    daemon.cli_timeout = Duration::from_secs(300);
    let root = dir.path().join("systemd-root");
    systemd_rootfs(&root);
    let tar = dir.path().join("systemd.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    daemon.docker_ok(&[
        "import",
        "--change",
        "CMD [\"/lib/systemd/systemd\"]",
        "--change",
        "ENV container=docker",
        "--change",
        "STOPSIGNAL SIGRTMIN+3",
        tar.to_str().expect("utf-8"),
        "local/systemd:test",
    ]);
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "testpoint",
        "--network",
        "none",
        "--cgroupns",
        "host",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "local/systemd:test",
    ]);
    // systemctl needs systemd's private socket, there once the manager is up.
    wait_until("systemd's socket", Duration::from_secs(30), || {
        daemon
            .docker(&["exec", "testpoint", "sh", "-c", "test -S /run/systemd/private"])
            .status
            .success()
    });
    let state = daemon.docker(&["exec", "testpoint", "systemctl", "is-system-running", "--wait"]);
    if state.stdout.trim() != "running" {
        let failed = daemon.docker(&["exec", "testpoint", "systemctl", "--failed", "--no-pager"]);
        let logs = daemon.docker(&["logs", "testpoint"]);
        panic!("systemd did not reach running: {state}\n{failed}\n{logs}");
    }
    let pid1 = daemon.docker_ok(&["exec", "testpoint", "cat", "/proc/1/comm"]);
    assert_eq!(pid1.stdout.trim(), "systemd");
    // docker stop sends the image's StopSignal (SIGRTMIN+3): systemd powers off cleanly.
    daemon.docker_ok(&["stop", "-t", "30", "testpoint"]);
    let st = inspect(&daemon, "testpoint");
    assert_eq!(st["State"]["Status"], "exited", "{st}");
    wait_until("the container's cgroups to go", Duration::from_secs(10), || {
        cgroup_dirs(st["Id"].as_str().unwrap_or("")).is_empty()
    });
    daemon.docker_ok(&["rm", "testpoint"]);
    assert_no_mounts_left(dir.path());
}
