//! `berth shim`: the per-container supervisor. The daemon re-executes itself as
//! `berth shim CONFIG` for every start; the shim
//!
//! 1. leaves the daemon's session (so it outlives the daemon and its signals),
//! 2. creates the container with libcontainer (`build` clones: that is why it runs here, in
//!    a fresh single-threaded process, and never in the daemon's threads), brings loopback up
//!    in a new network namespace, starts it,
//! 3. tells the daemon the container's pid (or why it failed) in one JSON line on its stdout,
//! 4. copies the container's stdout and stderr into the JSON-lines log (size-capped, rotated),
//! 5. reaps the container, deletes its libcontainer state and cgroup, unmounts its root
//!    filesystem, and records the exit status durably (temp file, fsync, rename, fsync dir),
//! 6. exits. The daemon learns of the exit from the shim's own exit (pidfd), also after a
//!    daemon restart.
//!
//! No tokio, no threads: poll(2) on two pipes and a pidfd.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, io};
use crate::log::{LogLimits, LogWriter, now_rfc3339};

/// Everything one shim needs, written by the daemon as JSON next to the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    /// The container ID (also libcontainer's).
    pub id: String,
    /// Directory holding `config.json`.
    pub bundle: PathBuf,
    /// libcontainer's state root (`<exec-root>/runtime`); the container's state is in `<id>/`.
    pub state_root: PathBuf,
    /// The JSON-lines log.
    pub log_path: PathBuf,
    pub log_limits: LogLimits,
    /// Where the exit status is recorded.
    pub exit_file: PathBuf,
    /// The overlay mount to undo after the exit.
    pub rootfs: PathBuf,
    /// The container has its own network namespace: bring `lo` up in it.
    pub loopback_up: bool,
    /// A FIFO to use as the container's stdin (`docker run -i`); `/dev/null` otherwise. With
    /// a terminal the shim reads it and writes to the terminal.
    pub stdin_fifo: Option<PathBuf>,
    /// `docker run -t`: the container gets a pseudo-terminal whose output is logged as stdout.
    #[serde(default)]
    pub tty: bool,
    /// The terminal's first size, (rows, columns).
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// With a terminal: a FIFO of `ROWS COLS` lines that resize it.
    #[serde(default)]
    pub resize_fifo: Option<PathBuf>,
    /// The container's cgroup (`linux.cgroupsPath`), for the settings the shim makes itself.
    #[serde(default)]
    pub cgroups_path: String,
    /// `--oom-kill-disable` (cgroup v1): set by the shim after create, as libcontainer 0.7.0
    /// always writes `memory.oom_control` = 0.
    #[serde(default)]
    pub oom_kill_disable: bool,
}

/// The one line a shim writes to the daemon once the container runs, or failed to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimReport {
    /// The container's init process, in the host's pid namespace.
    pub pid: Option<i32>,
    pub error: Option<String>,
}

/// How a container ended, as the shim records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code; 128 + N for a signal N.
    pub exit_code: i32,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Set when the container was killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The OOM killer killed a process of the container during this run (dockerd's
    /// `State.OOMKilled`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
}

impl ExitRecord {
    /// Reads a recorded exit; `None` when there is none (yet).
    pub fn read(path: &Path) -> Result<Option<ExitRecord>, Error> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| Error::Record {
                    path: path.to_path_buf(),
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", path)(e)),
        }
    }
}

/// Writes `data` to `path` so that readers see all of it or nothing, and a power loss leaves
/// the old file or the new one, never a torn one: the data is synced before the rename. The
/// rename itself becomes durable with the file system's next commit (ext4: 5 s); a directory
/// fsync for it would double the cost on the container start path for no use after a crash
/// of the process (the page cache survives that).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    write_replacing(path, data, true)
}

/// [`write_atomic`] without the sync: for files only this boot needs (the shim's and an
/// exec's configuration, state that a power loss makes stale anyway).
pub fn write_cached(path: &Path, data: &[u8]) -> Result<(), Error> {
    write_replacing(path, data, false)
}

fn write_replacing(path: &Path, data: &[u8], sync: bool) -> Result<(), Error> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(data).map_err(io("write", &tmp))?;
        if sync {
            f.sync_all().map_err(io("fsync", &tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io("rename", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes a file written with [`write_cached`] durable: its data, then its directory entry.
fn sync_file_and_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Bytes read from the container's output at a time (a pipe's default capacity).
const OUTPUT_BUFFER: usize = 64 << 10;

/// The shim's `main`: never returns to a runtime. Returns the shim's exit code.
pub fn shim_main(config_path: &Path) -> i32 {
    // Own session: no terminal or process-group signal of the daemon reaches us.
    let _ = nix::unistd::setsid();
    // A handler that does nothing, not SIG_IGN: an ignored signal stays ignored across
    // clone and exec, so the container would inherit it (and a shell cannot even trap a
    // signal ignored at its start); a handled one is reset to the default by exec. Rust's
    // own start-up ignores SIGPIPE, which this undoes for the container too.
    extern "C" fn ignore(_: libc::c_int) {}
    // What the daemon inherited (a shell's background job ignores SIGINT and SIGQUIT) is not
    // the container's business: start from the defaults.
    for sig in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
        // SAFETY: SIG_DFL installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    for sig in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM, Signal::SIGPIPE] {
        // SAFETY: the handler touches nothing; nothing else runs concurrently.
        let _ = unsafe { signal(sig, SigHandler::Handler(ignore)) };
    }
    let config: ShimConfig = match std::fs::read(config_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            report(&ShimReport {
                pid: None,
                error: Some(format!("failed to read shim config {}: {e}", config_path.display())),
            });
            return 1;
        }
    };
    let t0 = std::time::Instant::now();
    let started = match start(&config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(container = %config.id, error = %e, "start failed");
            cleanup_state(&config);
            report(&ShimReport {
                pid: None,
                error: Some(e),
            });
            return 1;
        }
    };
    report(&ShimReport {
        pid: Some(started.pid.as_raw()),
        error: None,
    });
    tracing::debug!(container = %config.id, ms = t0.elapsed().as_secs_f64() * 1000.0, "started");
    // Found while the container runs, not between its exit and the record.
    let cgroup = Some(config.cgroups_path.as_str())
        .filter(|p| !p.is_empty())
        .and_then(|p| crate::cgroup::Cgroup::open(p).ok());
    let status = supervise(&config, started);
    tracing::debug!(container = %config.id, "container exited");
    // Read before the cleanup removes the cgroup; the counter is this run's (the cgroup is
    // created anew at every start).
    let oom_killed = cgroup.and_then(|cg| cg.oom_kills()).is_some_and(|n| n > 0);
    let record = ExitRecord {
        exit_code: status.0,
        finished_at: now_rfc3339(),
        signal: status.1,
        oom_killed,
    };
    let data = serde_json::to_vec(&record).expect("serialisable");
    let mut code = 0;
    // Written whole (renamed into place) but synced only after the daemon has been told: the
    // daemon reads it from the page cache, and the sync right after makes it survive a power
    // loss, which only the record of a container that exited within that millisecond could
    // miss (the daemon then records exit code 255).
    let written = write_cached(&config.exit_file, &data);
    if let Err(e) = &written {
        tracing::error!(container = %config.id, error = %e, "failed to record the exit status");
        code = 1;
    }
    tracing::debug!(container = %config.id, "exit recorded");
    // Our stdout is the daemon's pipe: closing it tells the daemon the exit is recorded,
    // before the slow part (removing cgroups, unmounting the overlay syncs its upper layer).
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    if written.is_ok() {
        if let Err(e) = sync_file_and_dir(&config.exit_file) {
            tracing::warn!(container = %config.id, error = %e, "failed to sync the exit record");
        }
    }
    cleanup_state(&config);
    if let Err(e) = crate::rootfs::unmount(&config.rootfs) {
        tracing::warn!(container = %config.id, error = %e, "failed to unmount the root filesystem");
    }
    code
}

/// Gives back the memory that only starting the container needed, so that a shim that sits
/// beside its container for months holds little more than its supervision loop.
///
/// Creating a container runs a lot of code (libcontainer, the OCI spec parser, serde) from
/// the `berth` binary; those pages stay resident in the shim after the start although the
/// loop never touches them again. Every mapping that is wholly clean and backed by a file
/// (code and read-only data never written by this process) is dropped with
/// `MADV_DONTNEED`: the kernel forgets the shim's page table entries and, should a page be
/// needed again, faults it back from the page cache with the same bytes. Mappings with a
/// written page (relocated data, the heap, the stack) are left alone; the heap is trimmed.
fn release_startup_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize, bool)> = None;
    let mut dirty_or_anon = false;
    let mut clean_file_maps = Vec::new();
    let mut finish = |m: Option<(usize, usize, bool)>, dirty: bool| {
        if let Some((start, end, eligible)) = m {
            if eligible && !dirty {
                clean_file_maps.push((start, end));
            }
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((a, b)) = first
            .split_once('-')
            .filter(|(a, _)| a.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            finish(current.take(), dirty_or_anon);
            dirty_or_anon = false;
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
                continue;
            };
            // Private (never shared-writable), not writable, backed by a file.
            let eligible = perms.len() == 4 && !perms.contains('w') && perms.ends_with('p') && path.starts_with('/');
            current = Some((start, end, eligible));
            continue;
        }
        let value = fields.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if matches!(first, "Private_Dirty:" | "Shared_Dirty:" | "Anonymous:" | "Swap:") && value > 0 {
            dirty_or_anon = true;
        }
    }
    finish(current.take(), dirty_or_anon);
    trim_stack(&smaps);
    for (start, end) in clean_file_maps {
        // SAFETY: the range is a whole mapping of this process whose pages are all clean
        // copies of a file; dropping them changes no byte the process can read (a later
        // access faults the same contents back in from the file).
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
    // SAFETY: glibc's malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops the stack pages below the current frame (minus a margin) that the start's deep
/// calls dirtied: the stack grows down, so those pages hold nothing live.
fn trim_stack(smaps: &str) {
    const MARGIN: usize = 16 * 1024;
    let Some(range) = smaps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .and_then(|l| l.split(' ').next())
    else {
        return;
    };
    let Some((a, _)) = range.split_once('-') else { return };
    let Ok(low) = usize::from_str_radix(a, 16) else { return };
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let top = (sp.saturating_sub(MARGIN)) & !0xfff;
    if top > low {
        // SAFETY: [low, top) lies below the live part of this thread's stack by at least
        // MARGIN bytes; anonymous pages dropped there read back as zeroes if the stack ever
        // grows into them again, which is what fresh stack pages hold anyway.
        unsafe {
            libc::madvise(low as *mut libc::c_void, top - low, libc::MADV_DONTNEED);
        }
    }
}

fn report(r: &ShimReport) {
    let mut line = serde_json::to_vec(r).expect("serialisable");
    line.push(b'\n');
    let mut out = io::stdout().lock();
    let _ = out.write_all(&line);
    let _ = out.flush();
}

struct Started {
    pid: Pid,
    /// (output, stream name): the two pipes, or the terminal's master as stdout.
    outputs: Vec<(File, &'static str)>,
    /// With a terminal: its master (input and resizes go there).
    master: Option<File>,
}

/// Creates and starts the container; the error is the message the user sees.
fn start(config: &ShimConfig) -> Result<Started, String> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    std::fs::create_dir_all(&config.state_root).map_err(|e| format!("create {}: {e}", config.state_root.display()))?;
    let executor = crate::filter::FilterExecutor::for_bundle(&config.bundle, None)?;
    let builder = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_executor(executor)
        .with_root_path(&config.state_root)
        .map_err(|e| chain(&e))?;
    let mut outputs = Vec::new();
    let mut console = None;
    let builder = if config.tty {
        let (listener, path) = console_listener(config).map_err(|e| format!("console socket: {e}"))?;
        console = Some((listener, path.clone()));
        builder.with_console_socket(Some(path))
    } else {
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        outputs.push((File::from(out_r), "stdout"));
        outputs.push((File::from(err_r), "stderr"));
        let stdin: OwnedFd = match &config.stdin_fifo {
            Some(fifo) => open_fifo_reader(fifo, false)?.into(),
            None => File::open("/dev/null")
                .map_err(|e| format!("open /dev/null: {e}"))?
                .into(),
        };
        builder.with_stdin(stdin).with_stdout(out_w).with_stderr(err_w)
    };
    // libcontainer gives its own process the container's `oomScoreAdj` for the child to
    // inherit; the shim takes its own back afterwards.
    let own_oom_score = std::fs::read_to_string("/proc/self/oom_score_adj").ok();
    let built = builder
        .as_init(&config.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| chain(&e));
    if let Some((_, path)) = &console {
        let _ = std::fs::remove_file(path);
    }
    if let Some(own) = own_oom_score {
        if std::fs::read_to_string("/proc/self/oom_score_adj").ok().as_ref() != Some(&own) {
            if let Err(e) = std::fs::write("/proc/self/oom_score_adj", own.trim()) {
                tracing::warn!(error = %e, "failed to restore the shim's oom_score_adj");
            }
        }
    }
    let mut container = built?;
    tracing::debug!(container = %config.id, "created");
    if config.oom_kill_disable {
        disable_oom_killer(&config.cgroups_path).map_err(|e| {
            let _ = container.delete(true);
            format!("failed to disable the OOM killer (--oom-kill-disable): {e}")
        })?;
    }
    let master = match console {
        Some((listener, _)) => {
            let master = receive_master(&listener).map_err(|e| {
                let _ = container.delete(true);
                format!("failed to receive the terminal from the container: {e}")
            })?;
            if let Some((rows, cols)) = config.console_size {
                set_winsize(&master, rows, cols);
            }
            let out = master.try_clone().map_err(|e| format!("dup terminal: {e}"))?;
            outputs.push((out, "stdout"));
            Some(master)
        }
        None => None,
    };
    let pid = container.pid().ok_or("container has no pid after create")?;
    if config.loopback_up {
        loopback_up(pid).map_err(|e| format!("failed to bring up loopback in the container: {e}"))?;
    }
    tracing::debug!(container = %config.id, "loopback up");
    container.start().map_err(|e| chain(&e))?;
    Ok(Started { pid, outputs, master })
}

/// Writes 1 to the v1 memory cgroup's `memory.oom_control`.
fn disable_oom_killer(cgroups_path: &str) -> Result<(), String> {
    use libcgroups::v1::ControllerType;
    let mount = libcgroups::v1::util::get_subsystem_mount_point(&ControllerType::Memory).map_err(|e| e.to_string())?;
    let file = mount
        .join(cgroups_path.trim_start_matches('/'))
        .join("memory.oom_control");
    std::fs::write(&file, "1").map_err(|e| format!("{}: {e}", file.display()))
}

/// Opens a FIFO for reading without waiting for a writer; `nonblocking` keeps it so.
pub(crate) fn open_fifo_reader(fifo: &Path, nonblocking: bool) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .map_err(|e| format!("open {}: {e}", fifo.display()))?;
    if !nonblocking {
        nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()))
            .map_err(|e| format!("{}: {e}", fifo.display()))?;
    }
    Ok(f)
}

/// A listening socket libcontainer sends the terminal's master to. Bound by a relative
/// name from inside the state root, as a socket path is limited to 108 bytes.
fn console_listener(config: &ShimConfig) -> io::Result<(OwnedFd, PathBuf)> {
    console_listener_in(
        &config.state_root,
        &format!("{}.console", &config.id[..config.id.len().min(16)]),
    )
}

/// [`console_listener`] for socket `name` in `dir`.
pub(crate) fn console_listener_in(dir: &Path, name: &str) -> io::Result<(OwnedFd, PathBuf)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, listen, socket};
    let path = dir.join(name);
    let state_root = dir;
    let _ = std::fs::remove_file(&path);
    let sock = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let cwd = std::env::current_dir()?;
    std::env::set_current_dir(state_root)?;
    let bound = UnixAddr::new(name).and_then(|addr| bind(sock.as_raw_fd(), &addr));
    std::env::set_current_dir(cwd)?;
    bound?;
    listen(&sock, nix::sys::socket::Backlog::new(1).map_err(io::Error::from)?)?;
    Ok((sock, path))
}

/// Accepts libcontainer's connection (already queued: it connected and sent during build)
/// and takes the master from its SCM_RIGHTS message.
pub(crate) fn receive_master(listener: &OwnedFd) -> io::Result<File> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, accept, recvmsg};
    let conn = accept(listener.as_raw_fd())?;
    // SAFETY: accept returned a new descriptor that we own.
    let conn = unsafe { OwnedFd::from_raw_fd(conn) };
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel installed this descriptor for us.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::other("no descriptor in the console message"))
}

/// Adds `read` from a resize FIFO to `pending` and applies every complete `ROWS COLS` line to
/// the terminal `master`; a partial line waits in `pending` for the rest.
pub(crate) fn apply_resizes(pending: &mut Vec<u8>, read: &[u8], master: &File) {
    pending.extend_from_slice(read);
    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=i).collect();
        let text = String::from_utf8_lossy(&line);
        let mut it = text.split_whitespace().map(|x| x.parse::<u16>());
        if let (Some(Ok(rows)), Some(Ok(cols))) = (it.next(), it.next()) {
            set_winsize(master, rows, cols);
        }
    }
}

pub(crate) fn set_winsize(master: &File, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass, which outlives the call.
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

/// The error and its sources, one after the other.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let text = src.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = src.source();
    }
    s
}

/// Sets `lo` up inside `pid`'s network namespace: this single-threaded process enters it,
/// sets the flag, and returns to its own.
fn loopback_up(pid: Pid) -> io::Result<()> {
    use nix::sched::{CloneFlags, setns};
    let own = File::open("/proc/self/ns/net")?;
    let theirs = File::open(format!("/proc/{pid}/ns/net"))?;
    setns(theirs.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let result = set_lo_up();
    setns(own.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    result
}

fn set_lo_up() -> io::Result<()> {
    // SAFETY: a plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass, which outlives the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Copies output into the log (and, with a terminal, input and resizes into it) until the
/// container exits; returns (exit code, signal).
fn supervise(config: &ShimConfig, started: Started) -> (i32, Option<i32>) {
    let mut log = match LogWriter::open(&config.log_path, config.log_limits) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(container = %config.id, error = %e, "failed to open the log; output is dropped");
            None
        }
    };
    let pidfd = pidfd_open(started.pid).ok();
    let mut streams: Vec<(Option<File>, &str, Vec<u8>)> = started
        .outputs
        .into_iter()
        .map(|(f, n)| (Some(f), n, Vec::new()))
        .collect();
    let mut master = started.master;
    // With a terminal the shim carries stdin and resizes to it.
    let mut stdin = match (&master, &config.stdin_fifo) {
        (Some(_), Some(f)) => open_fifo_reader(f, true).ok(),
        _ => None,
    };
    let mut resize = match (&master, &config.resize_fifo) {
        // Read-write: never EOF, however often the daemon opens and closes it.
        (Some(_), Some(f)) => File::options().read(true).write(true).open(f).ok(),
        _ => None,
    };
    let mut resize_buf = Vec::new();
    let mut exited = pidfd.is_none();
    // A mapping of its own, whose pages become resident only when output fills them: from
    // the heap the start left behind, calloc would zero (and so touch) all of it.
    let mut mapped: memmap2::MmapMut;
    let mut heap: Vec<u8>;
    let buf: &mut [u8] = match memmap2::MmapMut::map_anon(OUTPUT_BUFFER) {
        Ok(m) => {
            mapped = m;
            &mut mapped
        }
        Err(_) => {
            heap = vec![0u8; OUTPUT_BUFFER];
            &mut heap
        }
    };
    let mut released = false;
    loop {
        let open: Vec<usize> = (0..streams.len()).filter(|&i| streams[i].0.is_some()).collect();
        if open.is_empty() && exited {
            break;
        }
        let mut fds: Vec<PollFd> = open
            .iter()
            .map(|&i| PollFd::new(streams[i].0.as_ref().expect("open").as_fd(), PollFlags::POLLIN))
            .collect();
        let pidfd_slot = match (&pidfd, exited) {
            (Some(p), false) => {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let stdin_slot = stdin.as_ref().filter(|_| !exited).map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let resize_slot = resize.as_ref().filter(|_| !exited).map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        // After the exit, pipes held open by escaped processes must not keep us forever.
        // Before the first wake-up that the container outlives by a while, a short timeout:
        // the memory only the start needed is given back then, so a container that exits
        // at once (`docker run --rm IMG true`) is not kept waiting for that work.
        let mut timeout = if exited {
            PollTimeout::from(200u16)
        } else if !released {
            PollTimeout::from(100u16)
        } else {
            PollTimeout::NONE
        };
        let polled = loop {
            match poll(&mut fds, timeout) {
                Ok(0) if !exited && !released => {
                    // Everything the start needed is behind us. Straight back to waiting on
                    // the same descriptors: an idle container's shim then faults back only
                    // the pages of this wait.
                    released = true;
                    release_startup_pages();
                    timeout = PollTimeout::NONE;
                }
                other => break other,
            }
        };
        match polled {
            Ok(0) => break,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll failed");
                break;
            }
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if pidfd_slot.is_some_and(|s| ready[s]) {
            exited = true;
        }
        if stdin_slot.is_some_and(|s| ready[s]) {
            let n = stdin.as_mut().map_or(Ok(0), |f| f.read(buf));
            match n {
                Ok(n) if n > 0 => {
                    if let Some(m) = master.as_mut() {
                        let _ = m.write_all(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // EOF: the attached client closed its input.
                _ => stdin = None,
            }
        }
        if resize_slot.is_some_and(|s| ready[s]) {
            if let (Some(Ok(n)), Some(m)) = (resize.as_mut().map(|f| f.read(buf)), master.as_ref()) {
                apply_resizes(&mut resize_buf, &buf[..n], m);
            }
        }
        for (k, &i) in open.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let (file, name, partial) = &mut streams[i];
            let n = match file.as_mut().expect("open").read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A terminal's master reads EIO once every slave is closed: its EOF.
                Err(_) => 0,
            };
            if n == 0 {
                *file = None;
                if !partial.is_empty() {
                    if let Some(l) = log.as_mut() {
                        let _ = l.write(name, partial);
                    }
                    partial.clear();
                }
                continue;
            }
            partial.extend_from_slice(&buf[..n]);
            // Whole lines go out now; a partial line waits for its end (or 16 KiB), except
            // on a terminal, where a prompt without a newline must show at once.
            let cut = match partial.iter().rposition(|&b| b == b'\n') {
                _ if master.is_some() => partial.len(),
                Some(i) => i + 1,
                None if partial.len() >= 16 * 1024 => partial.len(),
                None => 0,
            };
            if cut > 0 {
                let rest = partial.split_off(cut);
                if let Some(l) = log.as_mut() {
                    if let Err(e) = l.write(name, partial) {
                        tracing::warn!(error = %e, "failed to write the log");
                    }
                }
                *partial = rest;
            }
        }
        if pidfd.is_none() && streams.iter().all(|s| s.0.is_none()) {
            break;
        }
    }
    master.take();
    for (_, name, partial) in &mut streams {
        if !partial.is_empty() {
            if let Some(l) = log.as_mut() {
                let _ = l.write(name, partial);
            }
        }
    }
    loop {
        match waitpid(started.pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return (code, None),
            Ok(WaitStatus::Signaled(_, sig, _)) => return (128 + sig as i32, Some(sig as i32)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "waitpid failed");
                return (255, None);
            }
        }
    }
}

/// Deletes libcontainer's state and the container's cgroup (killing what is left).
fn cleanup_state(config: &ShimConfig) {
    let dir = config.state_root.join(&config.id);
    if !dir.exists() {
        return;
    }
    match libcontainer::container::Container::load(dir.clone()) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                tracing::warn!(container = %config.id, error = %chain(&e), "failed to delete the container's runtime state");
            }
        }
        Err(e) => {
            tracing::warn!(container = %config.id, error = %chain(&e), "failed to load the container's runtime state")
        }
    }
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The shims' log filter (`RUST_LOG`): `BERTH_SHIM_LOG`, else warnings only.
///
/// libcontainer's container process logs to its stderr, which by then is the container's: its
/// seccomp warnings (a syscall this libseccomp does not know, a rule equal to the default
/// action) are expected with Docker's profile and stay out.
pub fn shim_log_filter() -> String {
    std::env::var("BERTH_SHIM_LOG").unwrap_or_else(|_| "warn,libcgroups=error,libcontainer::seccomp=error".to_owned())
}

/// Starts a shim for `config_path` with stderr appended to `shim_log` and waits for its
/// report: forked by `spawner` when there is one that works, else `exe shim CONFIG`.
/// Blocking: call it from a blocking thread. Returns the shim's pid, the container's, and
/// the read end of the shim's stdout, which reaches EOF once the exit is recorded.
pub fn spawn_shim(
    spawner: Option<&crate::Spawner>,
    exe: &Path,
    config_path: &Path,
    shim_log: &Path,
    id: &str,
) -> Result<(u32, i32, OwnedFd), Error> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let log = File::options()
        .create(true)
        .append(true)
        .open(shim_log)
        .map_err(io("open", shim_log))?;
    let forked = match spawner.map(|s| (s, nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC))) {
        Some((s, Ok((read, write)))) => match s.spawn(config_path, write, &log) {
            Ok(pid) => Some((pid, File::from(read))),
            Err(crate::spawner::SpawnError::Unavailable(_)) => None,
            Err(crate::spawner::SpawnError::Lost(e)) => {
                return Err(Error::Shim {
                    id: id.to_owned(),
                    reason: format!("the shim spawner stopped while starting the container ({e}); start it again"),
                });
            }
        },
        _ => None,
    };
    let (shim_pid, stdout) = match forked {
        Some(f) => f,
        None => {
            let mut child = Command::new(exe)
                .arg("shim")
                .arg(config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .env("RUST_LOG", shim_log_filter())
                .spawn()
                .map_err(io("start shim", exe))?;
            let stdout = child.stdout.take().expect("piped");
            // The child handle is dropped without waiting: the daemon reaps the shim when it
            // exits.
            let pid = child.id();
            std::mem::forget(child);
            (pid, File::from(OwnedFd::from(stdout)))
        }
    };
    let mut line = String::new();
    let mut reader = io::BufReader::new(stdout);
    let read = reader.read_line(&mut line);
    let pipe = OwnedFd::from(reader.into_inner());
    let fail = |reason: String| Error::Shim {
        id: id.to_owned(),
        reason,
    };
    match read {
        Ok(0) | Err(_) => Err(fail(format!(
            "the shim exited without a report; see {}",
            shim_log.display()
        ))),
        Ok(_) => {
            let report: ShimReport =
                serde_json::from_str(&line).map_err(|e| fail(format!("bad report {line:?}: {e}")))?;
            match (report.pid, report.error) {
                (Some(pid), None) => Ok((shim_pid, pid, pipe)),
                (_, Some(e)) => Err(fail(e)),
                (None, None) => Err(fail("empty report".to_owned())),
            }
        }
    }
}
