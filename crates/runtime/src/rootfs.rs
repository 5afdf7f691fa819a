//! The container's root filesystem: an overlay of the image's snapshots with a
//! per-container upper and work directory, and the `/etc` files written per container.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, io};

/// Mounts `lowers` (the image's snapshots, top layer first) with `upper` and `work` at
/// `target`. The directories are created when missing.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<(), Error> {
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    }
    if is_mounted(target) {
        return Ok(());
    }
    let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    for l in &lowers {
        if l.contains(':') || l.contains(',') {
            return Err(Error::Invalid {
                what: "overlay lower directory",
                value: l.clone(),
                reason: "contains ':' or ','".to_owned(),
            });
        }
    }
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    // `docker commit` and `docker diff` read the upper directory as the container's layer.
    // A renamed directory (redirect_dir) or a metadata-only copy-up (metacopy) keeps its
    // contents in a lower one, so a host whose overlay defaults turn them on gets them off.
    for feature in ["redirect_dir", "metacopy"] {
        let param = Path::new("/sys/module/overlay/parameters").join(feature);
        if std::fs::read_to_string(param).is_ok_and(|v| v.trim() == "Y") {
            data.push_str(&format!(",{feature}=off"));
        }
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|source| Error::Mount {
        target: target.to_path_buf(),
        source,
    })
}

/// Unmounts `target` (lazily, so a process still holding it cannot make removal fail) when
/// it is a mount point.
pub fn unmount(target: &Path) -> Result<(), Error> {
    if !is_mounted(target) {
        return Ok(());
    }
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(source) => Err(Error::Mount {
            target: target.to_path_buf(),
            source,
        }),
    }
}

/// Whether `path` is a mount point: listed in this process's mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

pub(crate) fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// What goes into a container's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
#[derive(Debug, Clone, Default)]
pub struct EtcContent {
    pub hostname: String,
    pub domainname: String,
    /// `--add-host name:ip` pairs.
    pub extra_hosts: Vec<(String, String)>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// With the host's network the host's own files are the base, as with dockerd.
    pub host_network: bool,
}

/// Writes the three files into `dir` and returns their paths.
pub fn write_etc_files(dir: &Path, content: &EtcContent) -> Result<crate::EtcFiles, Error> {
    let files = crate::EtcFiles {
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        hostname: dir.join("hostname"),
    };
    let fqdn = if content.domainname.is_empty() {
        content.hostname.clone()
    } else {
        format!("{}.{}", content.hostname, content.domainname)
    };
    let mut hosts = if content.host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        )
    };
    for (name, ip) in &content.extra_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    if !content.host_network {
        hosts.push_str(&format!("127.0.1.1\t{fqdn}\n"));
    }
    std::fs::write(&files.hosts, hosts).map_err(io("write", &files.hosts))?;
    std::fs::write(&files.hostname, format!("{}\n", content.hostname)).map_err(io("write", &files.hostname))?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = resolv_conf(&host_resolv, content);
    std::fs::write(&files.resolv_conf, resolv).map_err(io("write", &files.resolv_conf))?;
    Ok(files)
}

/// The host's resolv.conf with `--dns*` overrides; loopback name servers are dropped
/// outside the host's network (they would point into the container), as dockerd does.
fn resolv_conf(host: &str, c: &EtcContent) -> String {
    let mut servers: Vec<String> = host
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|s| s.trim().to_owned())
        .filter(|s| c.host_network || !(s.starts_with("127.") || s == "::1"))
        .collect();
    let mut search: Vec<String> = host
        .lines()
        .filter_map(|l| l.trim().strip_prefix("search"))
        .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let mut options: Vec<String> = host
        .lines()
        .filter_map(|l| l.trim().strip_prefix("options"))
        .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    if !c.dns.is_empty() {
        servers = c.dns.clone();
    }
    if !c.dns_search.is_empty() {
        search = c.dns_search.iter().filter(|s| *s != ".").cloned().collect();
    }
    if !c.dns_options.is_empty() {
        options = c.dns_options.clone();
    }
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_overrides_and_loopback() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch example.org\noptions edns0\n";
        let c = EtcContent::default();
        assert_eq!(
            resolv_conf(host, &c),
            "search example.org\nnameserver 10.0.0.2\noptions edns0\n"
        );
        let c = EtcContent {
            dns: vec!["192.0.2.1".into()],
            dns_search: vec!["site.local".into()],
            dns_options: vec!["ndots:2".into()],
            ..EtcContent::default()
        };
        assert_eq!(
            resolv_conf(host, &c),
            "search site.local\nnameserver 192.0.2.1\noptions ndots:2\n"
        );
        let c = EtcContent {
            host_network: true,
            ..EtcContent::default()
        };
        assert!(resolv_conf(host, &c).contains("127.0.0.53"));
    }

    #[test]
    fn etc_files() {
        let d = tempfile::tempdir().unwrap();
        let f = write_etc_files(
            d.path(),
            &EtcContent {
                hostname: "wn1".into(),
                domainname: "site.org".into(),
                extra_hosts: vec![("db".into(), "192.0.2.9".into())],
                ..EtcContent::default()
            },
        )
        .unwrap();
        let hosts = std::fs::read_to_string(f.hosts).unwrap();
        assert!(hosts.contains("192.0.2.9\tdb\n") && hosts.contains("127.0.1.1\twn1.site.org\n"));
        assert_eq!(std::fs::read_to_string(f.hostname).unwrap(), "wn1\n");
    }
}
