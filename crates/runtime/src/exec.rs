//! `berth shim-exec CONFIG`: runs one more process in a running container (`docker exec`).
//! The daemon starts it with pipes as stdin, stdout and stderr; it hands them to
//! libcontainer's tenant builder (which clones, so this runs in a fresh single-threaded
//! process, never in the daemon), waits for the process and exits with its exit code.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::wait::{WaitStatus, waitpid};
use serde::{Deserialize, Serialize};

/// One `docker exec`, written by the daemon as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecConfig {
    /// The container.
    pub id: String,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    pub args: Vec<String>,
    /// Added to (and overriding) the container's environment.
    pub env: HashMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Loads the container's seccomp filter right before the command is executed: libcontainer
/// 0.7.0's tenant builder drops `linux.seccomp` from the spec of an exec, which would run it
/// unfiltered. Capabilities are dropped by then, so without CAP_SYS_ADMIN the kernel takes a
/// filter only with `no_new_privs`. The tenant builder sets that flag anyway when the spec
/// leaves `noNewPrivileges` unset (as Berth's does, see `spec.rs`), so an exec always runs
/// with it; runc loads an exec's filter before dropping capabilities and leaves it off.
#[derive(Clone)]
struct SeccompExecutor {
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

impl libcontainer::workload::Executor for SeccompExecutor {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        if let Some(seccomp) = &self.seccomp {
            // CAP_SYS_ADMIN is capability 21.
            if !has_effective_cap(21) {
                nix::sys::prctl::set_no_new_privs()
                    .map_err(|e| ExecutorError::Other(format!("failed to set no_new_privs for seccomp: {e}")))?;
            }
            let notify = libcontainer::seccomp::initialize_seccomp(seccomp)
                .map_err(|e| ExecutorError::Other(format!("failed to load the container's seccomp filter: {e}")))?;
            if let Some(fd) = notify {
                // No listener for an exec (as runc without --seccomp-listener).
                let _ = nix::unistd::close(fd);
            }
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// Whether capability number `cap` is in this process's effective set.
fn has_effective_cap(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|eff| eff & (1u64 << cap) != 0)
}

/// The container's seccomp filter, from the bundle its libcontainer state names.
fn container_seccomp(config: &ExecConfig) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, String> {
    let container = libcontainer::container::Container::load(config.state_root.join(&config.id))
        .map_err(|e| crate::shim::chain(&e))?;
    let path = container.bundle().join("config.json");
    let spec = oci_spec::runtime::Spec::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(spec.linux().as_ref().and_then(|l| l.seccomp().clone()))
}

/// Resolves `--user` for an exec against the container's root filesystem: (uid, gid).
pub fn resolve_exec_user(user: &str, rootfs: &Path) -> Result<(u32, u32), crate::Error> {
    let u = crate::spec::resolve_user(user, rootfs)?;
    Ok((u.uid, u.gid))
}

/// The exec shim's `main`: returns the process's exit code (126/127 when it cannot start,
/// with dockerd's message on stderr).
pub fn exec_main(config_path: &Path) -> i32 {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    let fail = |code: i32, msg: String| {
        let _ = writeln!(std::io::stderr(), "{msg}");
        code
    };
    let config: ExecConfig = match std::fs::read(config_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            return fail(
                126,
                format!("berth: failed to read exec config {}: {e}", config_path.display()),
            );
        }
    };
    let stdio = |fd: i32| -> Result<OwnedFd, String> {
        nix::unistd::dup(fd)
            .map(|d| {
                // SAFETY: dup returned a new descriptor that we own.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(d) }
            })
            .map_err(|e| e.to_string())
    };
    let (i, o, e) = match (stdio(0), stdio(1), stdio(2)) {
        (Ok(i), Ok(o), Ok(e)) => (i, o, e),
        _ => return fail(126, "berth: cannot duplicate stdio".to_owned()),
    };
    let seccomp = match container_seccomp(&config) {
        Ok(s) => s,
        Err(e) => return fail(126, format!("OCI runtime exec failed: exec failed: {e}: unknown")),
    };
    let built = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&config.state_root)
        .map(|b| {
            b.with_executor(SeccompExecutor { seccomp })
                .with_stdin(i)
                .with_stdout(o)
                .with_stderr(e)
                .as_tenant()
                .with_container_args(config.args.clone())
                .with_env(config.env.clone())
                .with_cwd(config.cwd.clone())
                .with_user(config.uid)
                .with_group(config.gid)
                .with_detach(true)
                .build()
        });
    let pid = match built {
        Ok(Ok(pid)) => pid,
        Ok(Err(err)) | Err(err) => {
            let reason = crate::shim::chain(&err);
            let exe = config.args.first().cloned().unwrap_or_default();
            return if reason.contains("not found") {
                fail(
                    127,
                    format!(
                        "OCI runtime exec failed: exec failed: unable to start container process: exec: \"{exe}\": executable file not found in $PATH: unknown"
                    ),
                )
            } else {
                fail(126, format!("OCI runtime exec failed: exec failed: {reason}: unknown"))
            };
        }
    };
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 126,
        }
    }
}
