//! Seccomp filters compiled once in the daemon, loaded by the container's own process.
//!
//! libcontainer compiles a container's `linux.seccomp` with libseccomp inside every new
//! container process: about 6 ms of each start with Docker's default profile (and runc does
//! the same). The compiled program depends only on the resolved profile, so
//! [`write_bundle`](crate::write_bundle) compiles it once per profile (cached here), writes the
//! BPF beside `config.json` and leaves `linux.seccomp` out of what libcontainer reads. The
//! [`FilterExecutor`], which libcontainer runs as the last step before `execve`, loads the
//! program with `seccomp(2)`.
//!
//! Capabilities: without `no_new_privs`, the kernel takes a filter only from a process with
//! CAP_SYS_ADMIN, which libcontainer has dropped by the time the executor runs. So the bundle
//! also grants CAP_SYS_ADMIN (and CAP_SETPCAP, needed to shrink the bounding set) when the
//! container does not have them, and names them in an annotation; the executor loads the
//! filter, then drops exactly those from every set before `execve`. This is the order runc
//! and libcontainer use (filter first, capabilities after), so a profile sees the same calls.
//! An exec (`docker exec`, a tenant of the container) goes through the same executor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};
use serde_json::{Value, json};

use crate::error::Error;

/// Annotation naming the compiled filter: the container must run under it.
pub(crate) const BPF_ANNOTATION: &str = "org.berth.seccomp.bpf";
/// Annotation listing the capabilities granted only to load the filter, dropped after it.
pub(crate) const ADDED_CAPS_ANNOTATION: &str = "org.berth.seccomp.added-capabilities";
/// Annotation with the `seccomp(2)` flags to load the filter with (decimal).
pub(crate) const FLAGS_ANNOTATION: &str = "org.berth.seccomp.flags";
/// The compiled filter's file name in the bundle.
pub(crate) const BPF_FILE: &str = "seccomp.bpf";

/// What loading the filter needs when the process has no `no_new_privs`.
const LOAD_CAPS: [&str; 2] = ["CAP_SYS_ADMIN", "CAP_SETPCAP"];

const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;

/// Moves `config`'s `linux.seccomp` into a compiled `bundle/seccomp.bpf` when it can be
/// loaded that way (no notify listener); otherwise leaves `config` as it is and removes a
/// compiled filter of an earlier start.
pub(crate) fn precompile(config: &mut Value, bundle: &Path, host_caps: &[&str]) -> Result<(), Error> {
    let path = bundle.join(BPF_FILE);
    let Some(seccomp) = config.pointer("/linux/seccomp").cloned() else {
        return remove_stale(&path);
    };
    let nnp = config.pointer("/process/noNewPrivileges").and_then(Value::as_bool) == Some(true);
    let oci: LinuxSeccomp = serde_json::from_value(seccomp.clone()).map_err(|e| Error::Spec {
        reason: format!("seccomp: {e}"),
    })?;
    let Some(flags) = load_flags(&oci) else {
        return remove_stale(&path);
    };
    if !nnp && !LOAD_CAPS.iter().all(|c| host_caps.contains(c)) {
        // Nothing can be granted: libcontainer loads it (and fails as it would anyway).
        return remove_stale(&path);
    }
    let bpf = compiled(&seccomp, &oci)?;
    crate::shim::write_cached(&path, &bpf)?;
    let mut added = Vec::new();
    if !nnp {
        let caps = &mut config["process"]["capabilities"];
        for cap in LOAD_CAPS {
            let held = caps["bounding"].as_array().is_some_and(|a| a.iter().any(|c| c == cap));
            if held {
                continue;
            }
            for set in ["bounding", "effective", "permitted"] {
                match caps[set].as_array_mut() {
                    Some(a) => a.push(json!(cap)),
                    None => caps[set] = json!([cap]),
                }
            }
            added.push(cap);
        }
        // Said explicitly, so that an exec does not get it: libcontainer's tenant builder
        // gives an exec oci-spec's default (`true`) when the container's spec is silent.
        config["process"]["noNewPrivileges"] = json!(false);
    }
    if let Some(linux) = config["linux"].as_object_mut() {
        linux.remove("seccomp");
    }
    let annotations = &mut config["annotations"];
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[BPF_ANNOTATION] = json!(path.display().to_string());
    annotations[FLAGS_ANNOTATION] = json!(flags.to_string());
    annotations[ADDED_CAPS_ANNOTATION] = json!(added.join(","));
    Ok(())
}

fn remove_stale(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The `seccomp(2)` flags for `seccomp`, or `None` when it needs a notify listener (which
/// only libcontainer's own loading hands over).
fn load_flags(seccomp: &LinuxSeccomp) -> Option<u32> {
    let notify = |a: LinuxSeccompAction| a == LinuxSeccompAction::ScmpActNotify;
    if seccomp.listener_path().is_some()
        || notify(seccomp.default_action())
        || seccomp.syscalls().iter().flatten().any(|s| notify(s.action()))
    {
        return None;
    }
    let mut flags = 0;
    for flag in seccomp.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => return None,
        };
    }
    Some(flags)
}

/// The compiled program for `seccomp` (whose JSON is `json`), from the cache when this
/// profile was compiled before.
fn compiled(json: &Value, seccomp: &LinuxSeccomp) -> Result<Arc<Vec<u8>>, Error> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Vec<u8>>>>> = OnceLock::new();
    let key = json.to_string();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(bpf) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(bpf.clone());
    }
    let bpf = Arc::new(compile(seccomp)?);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    // Profiles are few (one per capability set and custom profile); a bound keeps a
    // daemon fed endless distinct profiles from growing without end.
    if map.len() >= 64 {
        map.clear();
    }
    map.insert(key, bpf.clone());
    Ok(bpf)
}

/// Compiles `seccomp` with libseccomp exactly as libcontainer 0.7.0's
/// `initialize_seccomp` builds it before loading: the same actions, architectures, rules
/// (unknown syscall names skipped, rules equal to the default action skipped, repeated
/// argument indexes split into separate rules), with libseccomp's NNP attribute off.
pub(crate) fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<u8>, Error> {
    let fail = |what: &str, e: libseccomp::error::SeccompError| Error::Spec {
        reason: format!("seccomp: {what}: {e}"),
    };
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| fail("new filter", e))?;
    for &a in seccomp.architectures().iter().flatten() {
        ctx.add_arch(arch(a)).map_err(|e| fail("add architecture", e))?;
    }
    ctx.set_ctl_nnp(false).map_err(|e| fail("no_new_privs attribute", e))?;
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        for name in rule.names() {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let Some(args) = rule.args() else {
                ctx.add_rule(act, sc).map_err(|e| fail(name, e))?;
                continue;
            };
            let cmps: Vec<ScmpArgCompare> = args
                .iter()
                .map(|a| ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value()))
                .collect();
            let mut seen = std::collections::HashSet::new();
            if args.iter().all(|a| seen.insert(a.index())) {
                ctx.add_rule_conditional(act, sc, &cmps).map_err(|e| fail(name, e))?;
            } else {
                for c in &cmps {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map_err(|e| fail(name, e))?;
                }
            }
        }
    }
    // SAFETY: a NUL-terminated name; the descriptor returned is ours alone.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Spec {
            reason: format!("seccomp: memfd: {}", std::io::Error::last_os_error()),
        });
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mem = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    ctx.export_bpf(&mem).map_err(|e| fail("export", e))?;
    let mut file = std::fs::File::from(mem);
    use std::io::{Read, Seek};
    let mut bpf = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut bpf))
        .map_err(|e| Error::Spec {
            reason: format!("seccomp: read the compiled filter: {e}"),
        })?;
    if bpf.is_empty() || bpf.len() % std::mem::size_of::<libc::sock_filter>() != 0 {
        return Err(Error::Spec {
            reason: format!("seccomp: compiled filter of {} bytes", bpf.len()),
        });
    }
    Ok(bpf)
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, Error> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(u16::try_from(errno).map_err(|_| Error::Spec {
            reason: format!("seccomp: SCMP_ACT_TRACE with errno {errno}"),
        })?),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
    })
}

fn arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn op(op: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

/// libcontainer's last step in the container's (or an exec's) process: loads the seccomp
/// filter and drops what was granted only for that, then runs the command with
/// libcontainer's default executor.
#[derive(Clone)]
pub(crate) struct FilterExecutor {
    /// The compiled filter, read from the bundle before the clone.
    pub bpf: Option<Arc<Vec<u8>>>,
    /// A filter libcontainer did not load (an exec of a container whose bundle predates
    /// compiled filters: libcontainer 0.7.0's tenant builder leaves `linux.seccomp` out).
    pub legacy: Option<LinuxSeccomp>,
}

impl FilterExecutor {
    /// The executor for a process of the container whose bundle is `bundle`, with its
    /// compiled filter read now, before libcontainer clones (the container's process cannot
    /// see the bundle once it has pivoted into its root). `precompile` writes the file or
    /// removes it, so a bundle without one has no compiled filter.
    pub(crate) fn for_bundle(bundle: &Path, legacy: Option<LinuxSeccomp>) -> Result<Self, String> {
        let path = bundle.join(BPF_FILE);
        let bpf = match std::fs::read(&path) {
            Ok(bpf) => Some(Arc::new(bpf)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("read the container's seccomp filter {}: {e}", path.display())),
        };
        Ok(Self { bpf, legacy })
    }
}

impl libcontainer::workload::Executor for FilterExecutor {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        let annotations = spec.annotations().as_ref();
        let wanted = annotations.is_some_and(|a| a.contains_key(BPF_ANNOTATION));
        if wanted || self.legacy.is_some() {
            // Without CAP_SYS_ADMIN the kernel takes a filter only with no_new_privs (an
            // exec: libcontainer's tenant builder sets it anyway).
            if !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false) {
                nix::sys::prctl::set_no_new_privs()
                    .map_err(|e| ExecutorError::Other(format!("failed to set no_new_privs for seccomp: {e}")))?;
            }
        }
        if wanted {
            let bpf = self
                .bpf
                .as_ref()
                .ok_or_else(|| ExecutorError::Other("the container's seccomp filter was not read".to_owned()))?;
            let flags = annotations
                .and_then(|a| a.get(FLAGS_ANNOTATION))
                .and_then(|f| f.parse().ok())
                .unwrap_or(0);
            load(bpf, flags)
                .map_err(|e| ExecutorError::Other(format!("failed to load the container's seccomp filter: {e}")))?;
        } else if let Some(seccomp) = &self.legacy {
            let notify = libcontainer::seccomp::initialize_seccomp(seccomp)
                .map_err(|e| ExecutorError::Other(format!("failed to load the container's seccomp filter: {e}")))?;
            if let Some(fd) = notify {
                // No listener for an exec (as runc without --seccomp-listener).
                let _ = nix::unistd::close(fd);
            }
        }
        if let Some(added) = annotations.and_then(|a| a.get(ADDED_CAPS_ANNOTATION)) {
            drop_caps(added).map_err(|e| ExecutorError::Other(format!("failed to drop capabilities: {e}")))?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`.
fn load(bpf: &[u8], flags: u32) -> std::io::Result<()> {
    let len = bpf.len() / std::mem::size_of::<libc::sock_filter>();
    let filters: Vec<libc::sock_filter> = bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(len).map_err(|_| std::io::Error::other("filter too long"))?,
        filter: filters.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Drops the named capabilities (`CAP_SYS_ADMIN,CAP_SETPCAP`) from every set: the bounding
/// set first (which needs CAP_SETPCAP, still effective then), then the others.
fn drop_caps(list: &str) -> Result<(), String> {
    use caps::{CapSet, Capability};
    let caps: Vec<Capability> = list
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<Capability>().map_err(|e| format!("{c}: {e}")))
        .collect::<Result<_, _>>()?;
    for set in [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        for &cap in &caps {
            caps::drop(None, set, cap).map_err(|e| format!("{cap} from {set:?}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_to_whole_instructions() {
        let caps: Vec<String> = crate::DEFAULT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
        let json = (*crate::seccomp::default_for(&caps)).clone();
        let oci: LinuxSeccomp = serde_json::from_value(json.clone()).expect("OCI seccomp");
        let bpf = compiled(&json, &oci).expect("compiles");
        assert!(bpf.len() > 100 * 8 && bpf.len() % 8 == 0, "{} bytes", bpf.len());
        // The same profile comes from the cache: the same allocation.
        assert!(Arc::ptr_eq(&bpf, &compiled(&json, &oci).expect("cached")));
        assert_eq!(load_flags(&oci), Some(0));
    }

    #[test]
    fn a_listener_or_waitkill_keeps_libcontainers_loading() {
        let with = |extra: Value| -> LinuxSeccomp {
            let mut v = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []});
            v.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            serde_json::from_value(v).expect("OCI seccomp")
        };
        assert_eq!(load_flags(&with(json!({}))), Some(0));
        assert_eq!(load_flags(&with(json!({"listenerPath": "/run/l.sock"}))), None);
        assert_eq!(
            load_flags(&with(
                json!({"flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]})
            )),
            Some(SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW)
        );
        assert_eq!(
            load_flags(&with(json!({"flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}))),
            None
        );
        let notify = with(json!({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}));
        assert_eq!(load_flags(&notify), None);
    }

    #[test]
    fn precompile_moves_the_filter_and_grants_only_what_loading_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seccomp = json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]});
        let base = json!({
            "process": {"capabilities": {"bounding": ["CAP_CHOWN", "CAP_SETPCAP"],
                "effective": ["CAP_CHOWN", "CAP_SETPCAP"], "permitted": ["CAP_CHOWN", "CAP_SETPCAP"]}},
            "linux": {"seccomp": seccomp},
        });
        let host = ["CAP_CHOWN", "CAP_SETPCAP", "CAP_SYS_ADMIN"];
        let mut config = base.clone();
        precompile(&mut config, dir.path(), &host).expect("precompile");
        assert!(config["linux"].get("seccomp").is_none(), "{config}");
        assert!(dir.path().join(BPF_FILE).exists());
        assert_eq!(config["annotations"][ADDED_CAPS_ANNOTATION], "CAP_SYS_ADMIN");
        assert_eq!(
            config["process"]["capabilities"]["effective"],
            json!(["CAP_CHOWN", "CAP_SETPCAP", "CAP_SYS_ADMIN"])
        );
        assert_eq!(config["process"]["noNewPrivileges"], false, "{config}");
        let executor = FilterExecutor::for_bundle(dir.path(), None).expect("read");
        assert!(executor.bpf.is_some());

        // With no_new_privs nothing is granted.
        let mut config = base.clone();
        config["process"]["noNewPrivileges"] = json!(true);
        precompile(&mut config, dir.path(), &host).expect("precompile");
        assert_eq!(config["annotations"][ADDED_CAPS_ANNOTATION], "");
        assert_eq!(config["process"]["capabilities"], base["process"]["capabilities"]);

        // A host without CAP_SYS_ADMIN to grant: libcontainer keeps the filter, and the
        // compiled one of an earlier start is gone.
        let mut config = base.clone();
        precompile(&mut config, dir.path(), &["CAP_CHOWN", "CAP_SETPCAP"]).expect("precompile");
        assert_eq!(config, base);
        assert!(!dir.path().join(BPF_FILE).exists());
    }
}
