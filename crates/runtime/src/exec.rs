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
    let built = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&config.state_root)
        .map(|b| {
            b.with_stdin(i)
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
