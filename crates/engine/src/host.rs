//! Facts about the host that `/version` and `/info` report, read once at start-up.

use std::path::Path;

/// What the daemon knows about the machine it runs on.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// `uname -r`.
    pub(crate) kernel_version: String,
    /// `uname -m` (x86_64, aarch64).
    pub(crate) machine: String,
    /// Go's name for the architecture (amd64, arm64), as docker clients expect in /version.
    pub(crate) go_arch: &'static str,
    /// `PRETTY_NAME` from os-release.
    pub(crate) operating_system: String,
    /// `VERSION_ID` from os-release.
    pub(crate) os_version: String,
    /// "1" or "2".
    pub(crate) cgroup_version: &'static str,
    pub(crate) ncpu: usize,
    /// Bytes.
    pub(crate) mem_total: u64,
    pub(crate) hostname: String,
}

impl Host {
    pub(crate) fn detect() -> Host {
        let (kernel_version, machine) = match nix::sys::utsname::uname() {
            Ok(u) => (
                u.release().to_string_lossy().into_owned(),
                u.machine().to_string_lossy().into_owned(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "uname failed");
                (String::new(), std::env::consts::ARCH.to_owned())
            }
        };
        let os_release = std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .unwrap_or_default();
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Host {
            kernel_version,
            go_arch: go_arch(&machine),
            machine,
            operating_system: os_release_field(&os_release, "PRETTY_NAME").unwrap_or_else(|| "Linux".to_owned()),
            os_version: os_release_field(&os_release, "VERSION_ID").unwrap_or_default(),
            cgroup_version: cgroup_version(Path::new("/sys/fs/cgroup")),
            ncpu: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| mem_total(&m))
                .unwrap_or(0),
            hostname,
        }
    }
}

fn go_arch(machine: &str) -> &'static str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i686" => "386",
        "armv7l" | "armv6l" => "arm",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        _ => std::env::consts::ARCH,
    }
}

/// A `KEY=value` or `KEY="value"` line of os-release(5).
fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
}

/// cgroup v2 when the unified hierarchy is mounted at the root (`cgroup.controllers` there);
/// a hybrid v1 host only has it under `unified/`, and counts as v1, as dockerd reports it.
fn cgroup_version(root: &Path) -> &'static str {
    if root.join("cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release_and_meminfo() {
        let osr = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n";
        assert_eq!(
            os_release_field(osr, "PRETTY_NAME").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_release_field(osr, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(os_release_field(osr, "NAME").as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(os_release_field(osr, "ID"), None);
        assert_eq!(
            mem_total("MemTotal:        8048576 kB\nMemFree: 1 kB\n"),
            Some(8048576 * 1024)
        );
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }

    #[test]
    fn cgroup_version_from_root() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_version(d.path()), "1");
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(cgroup_version(d.path()), "2");
    }
}
