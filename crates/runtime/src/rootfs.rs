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

/// Mounts `device` of type `fstype` at `target` with `options` as `mount(8)` takes them
/// (`size=100m`, `bind,ro`): the flags it knows become mount flags, the rest the
/// filesystem's data (moby's `mount.Mount`, which the local volume driver uses). A read-only
/// bind mount is a bind mount remounted read-only, as the kernel wants it.
pub fn mount_device(device: &str, target: &Path, fstype: &str, options: &str) -> Result<(), Error> {
    let (flags, propagation, data) = mount_options(options);
    let fail = |source| Error::Mount {
        target: target.to_path_buf(),
        source,
    };
    let data = (!data.is_empty()).then_some(data.as_str());
    let fstype = (!fstype.is_empty() && !flags.contains(MsFlags::MS_BIND)).then_some(fstype);
    nix::mount::mount(Some(device), target, fstype, flags, data).map_err(fail)?;
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | (flags & !MsFlags::MS_REC);
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(fail(e));
        }
    }
    if !propagation.is_empty() {
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, propagation, None::<&str>) {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(fail(e));
        }
    }
    Ok(())
}

/// `mount(8)`-style options -> (flags, propagation flags, the filesystem's own data).
fn mount_options(options: &str) -> (MsFlags, MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for o in options.split(',').filter(|o| !o.is_empty()) {
        // (set, clear)
        let (set, clear) = match o {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                let (rec, kind) = match o.strip_prefix('r') {
                    Some(k) => (MsFlags::MS_REC, k),
                    None => (MsFlags::empty(), o),
                };
                let kind = match kind {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                propagation |= kind | rec;
                continue;
            }
            other => {
                data.push(other);
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, propagation, data.join(","))
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
    /// The container's addresses on its networks: each gets a hosts line with the host name
    /// (without any, the name maps to 127.0.1.1).
    pub addresses: Vec<String>,
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
        let names = if fqdn == content.hostname {
            fqdn.clone()
        } else {
            format!("{fqdn} {}", content.hostname)
        };
        if content.addresses.is_empty() {
            hosts.push_str(&format!("127.0.1.1\t{names}\n"));
        }
        for ip in &content.addresses {
            hosts.push_str(&format!("{ip}\t{names}\n"));
        }
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
        assert!(hosts.contains("192.0.2.9\tdb\n") && hosts.contains("127.0.1.1\twn1.site.org wn1\n"));
        assert_eq!(std::fs::read_to_string(f.hostname).unwrap(), "wn1\n");
    }

    #[test]
    fn mount_options_like_mount8() {
        let (f, p, d) = mount_options("size=100m,mode=1777,noexec,ro");
        assert_eq!(f, MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY);
        assert!(p.is_empty());
        assert_eq!(d, "size=100m,mode=1777");
        let (f, p, d) = mount_options("rbind,rw,rslave");
        assert_eq!(f, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(p, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert!(d.is_empty());
        let (f, _, _) = mount_options("ro,rw");
        assert!(f.is_empty());
    }
}
