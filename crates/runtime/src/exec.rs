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
    /// Give the process a terminal (`docker exec -t`); its other settings (capabilities,
    /// rlimits, no-new-privileges) are then taken from the container's `config.json` in
    /// `bundle`.
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// The terminal's first size (rows, columns).
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// With a terminal: a FIFO of `ROWS COLS` lines that resize it.
    #[serde(default)]
    pub resize_fifo: Option<PathBuf>,
}

/// Whether capability number `cap` is in this process's effective set.
pub fn has_effective_cap(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|eff| eff & (1u64 << cap) != 0)
}

/// The executor of an exec: the container's seccomp filter, compiled (from the bundle its
/// libcontainer state names) or, for a bundle written before filters were compiled, its
/// `linux.seccomp`, which libcontainer 0.7.0's tenant builder would otherwise leave out and
/// run the exec unfiltered. A compiled filter is loaded as for the container's own process
/// (CAP_SYS_ADMIN granted for it, no `no_new_privs`, as runc runs an exec); a legacy bundle
/// leaves `noNewPrivileges` unset, which the tenant builder turns into `true`.
fn exec_executor(config: &ExecConfig) -> Result<crate::filter::FilterExecutor, String> {
    let container = libcontainer::container::Container::load(config.state_root.join(&config.id))
        .map_err(|e| crate::shim::chain(&e))?;
    let path = container.bundle().join("config.json");
    let spec = oci_spec::runtime::Spec::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let legacy = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    crate::filter::FilterExecutor::for_bundle(container.bundle(), legacy)
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
    if config.tty {
        return match exec_tty(&config, config_path) {
            Ok(code) => code,
            Err(msg) => fail(126, format!("OCI runtime exec failed: exec failed: {msg}: unknown")),
        };
    }
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
    let executor = match exec_executor(&config) {
        Ok(x) => x,
        Err(e) => return fail(126, format!("OCI runtime exec failed: exec failed: {e}: unknown")),
    };
    let built = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&config.state_root)
        .map(|b| {
            b.with_executor(executor)
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

/// `docker exec -t`: the process gets a terminal whose master comes back over a console
/// socket; this process then carries stdin to it and its output to stdout (raw, as docker
/// shows a terminal), applies resizes from the FIFO, and returns the exit code.
fn exec_tty(config: &ExecConfig, config_path: &Path) -> Result<i32, String> {
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::AsFd;

    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    let process_path = config_path.with_extension("process.json");
    write_tty_process(config, &process_path)?;
    let dir = config_path.parent().unwrap_or(Path::new("/"));
    let name = format!(
        "{}.console",
        config_path.file_stem().and_then(|s| s.to_str()).unwrap_or("exec")
    );
    let executor = exec_executor(config)?;
    let (listener, socket) =
        crate::shim::console_listener_in(dir, &name).map_err(|e| format!("console socket: {e}"))?;
    let built = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&config.state_root)
        .map(|b| {
            b.with_executor(executor)
                .with_console_socket(Some(&socket))
                .as_tenant()
                .with_process(Some(&process_path))
                .with_detach(true)
                .build()
        });
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&process_path);
    let pid = match built {
        Ok(Ok(pid)) => pid,
        Ok(Err(err)) | Err(err) => {
            let reason = crate::shim::chain(&err);
            let exe = config.args.first().cloned().unwrap_or_default();
            if reason.contains("not found") {
                let _ = writeln!(
                    std::io::stdout(),
                    "OCI runtime exec failed: exec failed: unable to start container process: exec: \"{exe}\": executable file not found in $PATH: unknown\r"
                );
                return Ok(127);
            }
            return Err(reason);
        }
    };
    let mut master = crate::shim::receive_master(&listener).map_err(|e| format!("receive the terminal: {e}"))?;
    if let Some((rows, cols)) = config.console_size {
        crate::shim::set_winsize(&master, rows, cols);
    }
    let mut resize = match &config.resize_fifo {
        Some(f) => Some(crate::shim::open_fifo_reader(f, true)?),
        None => None,
    };
    let mut stdin = Some(File::from(
        nix::unistd::dup(0)
            .map(|fd| {
                // SAFETY: dup returned a new descriptor that we own.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            })
            .map_err(|e| format!("dup stdin: {e}"))?,
    ));
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 32 << 10];
    let mut resize_buf = Vec::new();
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let stdin_slot = stdin.as_ref().map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let resize_slot = resize.as_ref().map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if ready[0] {
            match master.read(&mut buf) {
                // EIO: every holder of the terminal's other side is gone.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
            }
        }
        if stdin_slot.is_some_and(|i| ready[i]) {
            match stdin.as_mut().map(|f| f.read(&mut buf)) {
                Some(Ok(n)) if n > 0 => {
                    let _ = master.write_all(&buf[..n]);
                }
                // The client's input ended: the terminal stays, as with docker.
                _ => stdin = None,
            }
        }
        if resize_slot.is_some_and(|i| ready[i]) {
            match resize.as_mut().map(|f| f.read(&mut buf)) {
                Some(Ok(n)) if n > 0 => crate::shim::apply_resizes(&mut resize_buf, &buf[..n], &master),
                Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => resize = None,
            }
        }
    }
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("wait for the process: {e}")),
        }
    }
}

/// The OCI process of a terminal exec: the container's own process (capabilities, rlimits,
/// no-new-privileges, environment) with this exec's command, environment, directory, user
/// and a terminal.
fn write_tty_process(config: &ExecConfig, path: &Path) -> Result<(), String> {
    use serde_json::{Value, json};
    let bundle = config.bundle.as_ref().ok_or("no bundle for a terminal exec")?;
    let spec_path = bundle.join("config.json");
    let spec: Value = std::fs::read(&spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("read {}: {e}", spec_path.display()))?;
    let mut process = spec.get("process").cloned().unwrap_or_else(|| json!({}));
    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    for (k, v) in &config.env {
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(name, _)| name) != k);
        env.push(format!("{k}={v}"));
    }
    if !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_owned());
    }
    process["env"] = json!(env);
    process["args"] = json!(config.args);
    process["terminal"] = json!(true);
    if let Some(cwd) = &config.cwd {
        process["cwd"] = json!(cwd);
    }
    if let Some(uid) = config.uid {
        process["user"]["uid"] = json!(uid);
        process["user"]["additionalGids"] = json!([]);
    }
    if let Some(gid) = config.gid {
        process["user"]["gid"] = json!(gid);
    }
    if let Some((rows, cols)) = config.console_size {
        process["consoleSize"] = json!({"height": rows, "width": cols});
    }
    std::fs::write(path, serde_json::to_vec(&process).expect("serialisable"))
        .map_err(|e| format!("write {}: {e}", path.display()))
}
