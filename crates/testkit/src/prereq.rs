//! The one prerequisite gate for tests that need root, a tool or a kernel feature: skip with a
//! printed reason on a developer machine, fail under `CI=true`, never pass silently.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Something a test needs from the machine it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prereq {
    /// Running as root (effective uid 0).
    Root,
    /// The `skopeo` binary.
    Skopeo,
    /// The `umoci` binary.
    Umoci,
    /// The `docker` CLI.
    Docker,
    /// The `dockerd` binary, for tests and benchmarks that start their own daemon.
    Dockerd,
    /// Debian's CNCF Distribution registry, `/usr/bin/docker-registry`.
    DockerRegistry,
    /// The `nginx` binary.
    Nginx,
    /// The `wrk` HTTP benchmark tool.
    Wrk,
    /// Network namespaces work: `ip netns add` and `ip netns delete` succeed.
    Netns,
    /// Python's `docker` package (docker-py, from PyPI) for `python3`.
    DockerPy,
    /// `ansible-playbook` (the `ansible` package from PyPI, with `community.docker`).
    Ansible,
    /// Debian's `docker-compose` (compose v1).
    DockerCompose,
}

impl Prereq {
    /// The name printed in `skipped: needs <name> (…)`.
    fn name(self) -> &'static str {
        match self {
            Prereq::Root => "root",
            Prereq::Skopeo => "skopeo",
            Prereq::Umoci => "umoci",
            Prereq::Docker => "docker",
            Prereq::Dockerd => "dockerd",
            Prereq::DockerRegistry => "docker-registry",
            Prereq::Nginx => "nginx",
            Prereq::Wrk => "wrk",
            Prereq::Netns => "netns",
            Prereq::DockerPy => "docker-py",
            Prereq::Ansible => "ansible",
            Prereq::DockerCompose => "docker-compose",
        }
    }

    /// `Ok` if present, otherwise why not.
    fn check(self) -> Result<(), String> {
        match self {
            Prereq::Root => {
                let euid = nix::unistd::geteuid();
                if euid.is_root() {
                    Ok(())
                } else {
                    Err(format!("running as uid {euid}, not root"))
                }
            }
            Prereq::Skopeo => on_path("skopeo"),
            Prereq::Umoci => on_path("umoci"),
            Prereq::Docker => on_path("docker"),
            Prereq::Dockerd => on_path("dockerd"),
            Prereq::DockerRegistry => {
                let path = Path::new("/usr/bin/docker-registry");
                if is_executable(path) {
                    Ok(())
                } else {
                    Err(format!("{} not found (Debian package docker-registry)", path.display()))
                }
            }
            Prereq::Nginx => on_path("nginx"),
            Prereq::Wrk => on_path("wrk"),
            Prereq::Netns => {
                static NETNS: OnceLock<Result<(), String>> = OnceLock::new();
                NETNS.get_or_init(probe_netns).clone()
            }
            Prereq::DockerPy => {
                let ok = Command::new("python3")
                    .args(["-c", "import docker"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    Ok(())
                } else {
                    Err("python3 cannot import docker (pip install docker)".to_owned())
                }
            }
            Prereq::Ansible => on_path("ansible-playbook"),
            Prereq::DockerCompose => on_path("docker-compose"),
        }
    }
}

/// Returns whether every prerequisite is present.
///
/// When some are missing it prints `skipped: needs <name> (<why>)` (one `needs` per missing
/// prerequisite) to stderr and returns `false`, except under `CI=true` (or `CI=1`), where it
/// panics with the same text. Use it first thing in a test:
///
/// ```no_run
/// use berth_testkit::{Prereq, require};
/// if !require(&[Prereq::Root, Prereq::Skopeo]) {
///     return;
/// }
/// ```
#[track_caller]
pub fn require(prereqs: &[Prereq]) -> bool {
    let mut missing = Vec::new();
    for &prereq in prereqs {
        if let Err(why) = prereq.check() {
            missing.push(format!("needs {} ({why})", prereq.name()));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("skipped: {}", missing.join(", "));
    if in_ci() {
        panic!("{message}");
    }
    // Straight to the stderr handle rather than `eprintln!`: the test harness captures the
    // macros, and a skip must show in `cargo test` output, not only when the test fails.
    let _ = writeln!(std::io::stderr(), "{message}");
    false
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn on_path(program: &str) -> Result<(), String> {
    match find_program(program) {
        Some(_) => Ok(()),
        None => Err(format!("{program} not found on PATH")),
    }
}

/// Finds `program` on `PATH`, and in the sbin directories, which a non-login root shell or a
/// test runner's environment may leave out (nginx and dockerd live there on Debian).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Creates and deletes a throwaway network namespace.
fn probe_netns() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("creating a network namespace needs root".to_owned());
    }
    let ip = find_program("ip").ok_or("ip not found on PATH (Debian package iproute2)")?;
    let name = format!("berth-probe-{}", std::process::id());
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new(&ip)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("failed to run ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(&["netns", "add", &name])?;
    run(&["netns", "delete", &name])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct() {
        let all = [
            Prereq::Root,
            Prereq::Skopeo,
            Prereq::Umoci,
            Prereq::Docker,
            Prereq::Dockerd,
            Prereq::DockerRegistry,
            Prereq::Nginx,
            Prereq::Wrk,
            Prereq::Netns,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn empty_list_is_satisfied() {
        assert!(require(&[]));
    }

    #[test]
    fn finds_sh_but_not_nonsense() {
        assert!(on_path("sh").is_ok());
        let err = on_path("berth-no-such-program").unwrap_err();
        assert_eq!(err, "berth-no-such-program not found on PATH");
    }
}
