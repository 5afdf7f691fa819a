//! Shims started by `fork` from a process started once, instead of an `exec` each.
//!
//! `exec`ing the daemon's binary for every container costs about 3 ms before the shim's first
//! line runs: the kernel maps a 25 MB binary, the loader applies 51,000 relocations (900 KB of
//! pages written) and Rust's runtime starts. `berth shim-spawner` is that work done once: a
//! single-threaded process the daemon starts with one end of a socket pair as fd 3. For each
//! container it receives the shim config's path with the shim's stdout (a pipe) and stderr
//! (its log file), forks, and replies with the child's pid; the child runs the shim as an
//! exec'd one would, under the same command line (`EXE shim CONFIG`, written over the
//! spawner's, which is padded for it), so the daemon's adoption check, `ps` and the
//! benchmarks see no difference.
//!
//! The kernel reaps the spawner's children (it ignores SIGCHLD; the shim restores every
//! disposition first thing). Shims outlive the spawner and the daemon as exec'd ones do: the
//! spawner exits when the daemon's end of the socket closes. When the spawner cannot start or
//! fails, the daemon execs shims as before.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, sockopt,
};

/// The spawner's end of the socket pair, in the spawner.
const SPAWNER_FD: RawFd = 3;
/// How long the daemon waits for the spawner's greeting or a reply before it gives up on it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest shim config path a request carries.
const MAX_PATH: usize = 4096;
/// The length of the argument of spaces the spawner is started with: room for a shim's
/// command line, `EXE shim CONFIG`, in its children's argument area.
const PADDING: usize = MAX_PATH + 64;

/// The daemon's handle on its spawner.
pub struct Spawner {
    link: Mutex<Option<Link>>,
}

struct Link {
    sock: OwnedFd,
    child: Child,
}

impl Spawner {
    /// Starts `exe shim-spawner`, its shims logging with `shim_log_filter` (`RUST_LOG`).
    /// `None`, with the reason logged, when it cannot start or cannot name its children.
    pub fn start(exe: &Path, shim_log_filter: &str) -> Option<Spawner> {
        match Self::try_start(exe, shim_log_filter) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no shim spawner; shims are started by exec (about 3 ms more per start)");
                None
            }
        }
    }

    fn try_start(exe: &Path, shim_log_filter: &str) -> io::Result<Spawner> {
        let (ours, theirs) =
            socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let timeout = nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
        socket::setsockopt(&ours, sockopt::ReceiveTimeout, &timeout)?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.arg("shim-spawner")
            .arg(" ".repeat(PADDING + exe.as_os_str().len()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .env("RUST_LOG", shim_log_filter);
        // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if theirs_raw == SPAWNER_FD {
                    // dup2 onto itself keeps FD_CLOEXEC: clear it by hand.
                    if libc::fcntl(SPAWNER_FD, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_raw, SPAWNER_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(theirs);
        // The greeting: 0 when the spawner is ready, -errno when it cannot name its children.
        let hello = match recv_i32(&ours) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(e.kind(), format!("the shim spawner did not greet: {e}")));
            }
        };
        if hello != 0 {
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the shim spawner cannot give its children a shim's command line: {}",
                    io::Error::from_raw_os_error(-hello)
                ),
            ));
        }
        Ok(Spawner {
            link: Mutex::new(Some(Link { sock: ours, child })),
        })
    }

    /// Starts a shim for `config` with `stdout` and `stderr` as its output; returns its pid.
    pub(crate) fn spawn(&self, config: &Path, stdout: OwnedFd, stderr: &File) -> Result<u32, SpawnError> {
        let path = config.as_os_str().as_bytes();
        if path.is_empty() || path.len() > MAX_PATH {
            return Err(SpawnError::Unavailable(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shim config path empty or longer than the spawner takes",
            )));
        }
        let mut guard = self.link.lock().unwrap_or_else(|p| p.into_inner());
        let Some(link) = guard.as_mut() else {
            return Err(SpawnError::Unavailable(io::Error::new(
                io::ErrorKind::NotConnected,
                "the shim spawner has stopped",
            )));
        };
        let fds = [stdout.as_raw_fd(), stderr.as_raw_fd()];
        let sent = socket::sendmsg::<()>(
            link.sock.as_raw_fd(),
            &[IoSlice::new(path)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        // The shim holds the pipe's write end now: the daemon's copy must go, or the pipe
        // never reaches EOF when the shim exits.
        drop(stdout);
        let failure = match sent {
            // Not sent: no shim can exist, so the caller may exec one.
            Err(e) => SpawnError::Unavailable(e.into()),
            Ok(_) => match recv_i32(&link.sock) {
                Ok(pid) if pid > 0 => return Ok(pid as u32),
                // The spawner could not fork: this start may exec; the spawner stays.
                Ok(neg) => return Err(SpawnError::Unavailable(io::Error::from_raw_os_error(-neg))),
                // Sent but no answer: a shim may have been forked, so this start must not
                // exec another one for the same container.
                Err(e) => SpawnError::Lost(e),
            },
        };
        // A broken link does not mend: stop the spawner and exec from now on.
        if let Some(mut link) = guard.take() {
            let _ = link.child.kill();
            let _ = link.child.wait();
        }
        let (SpawnError::Unavailable(e) | SpawnError::Lost(e)) = &failure;
        tracing::warn!(error = %e, "the shim spawner failed; shims are started by exec from now on");
        Err(failure)
    }
}

/// Why [`Spawner::spawn`] started no shim.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// No shim was started for this request: the caller execs one.
    Unavailable(io::Error),
    /// The spawner went away after taking the request; a shim may or may not run.
    Lost(io::Error),
}

fn recv_i32(sock: &OwnedFd) -> io::Result<i32> {
    let mut buf = [0u8; 4];
    let n = loop {
        match socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    if n != 4 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the shim spawner closed its socket",
        ));
    }
    Ok(i32::from_ne_bytes(buf))
}

fn send_i32(sock: &OwnedFd, v: i32) -> io::Result<()> {
    socket::send(sock.as_raw_fd(), &v.to_ne_bytes(), MsgFlags::MSG_NOSIGNAL)?;
    Ok(())
}

/// A line to stderr (the daemon's for the spawner, the shim log for a child): no logging is
/// set up in either.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "{line}");
}

/// `berth shim-spawner`'s `main`: serves the daemon on fd 3 until it goes; each child runs
/// `run_shim(config)` and exits with its code.
pub fn spawner_main(run_shim: fn(&Path) -> i32) -> i32 {
    // SAFETY: the daemon started us with fd 3 as our end of the socket pair; nothing else in
    // this process owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(SPAWNER_FD) };
    if socket::getsockopt(&sock, sockopt::SockType).ok() != Some(SockType::SeqPacket) {
        say("berth shim-spawner: fd 3 is not the daemon's socket (this command is not for direct use)");
        return 2;
    }
    let exe: OsString = std::env::args_os().next().unwrap_or_else(|| "berth".into());
    // Proves, once, that the children can be given a shim's command line, however long.
    let hello = match arg_area() {
        Ok((start, end)) if end - start >= exe.len() + "shim".len() + MAX_PATH + 3 => 0,
        Ok(_) => -libc::E2BIG,
        Err(e) => -e.raw_os_error().unwrap_or(libc::EINVAL),
    };
    if send_i32(&sock, hello).is_err() || hello != 0 {
        return 1;
    }
    // Its own session: a terminal's ^C or hang-up for the daemon's process group is not for
    // it (it leaves when the daemon's end of the socket closes).
    let _ = nix::unistd::setsid();
    // The kernel reaps the children; each shim restores the default before anything else.
    // SAFETY: SIG_IGN installs no handler.
    let _ =
        unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGCHLD, nix::sys::signal::SigHandler::SigIgn) };
    loop {
        let (config, fds) = match receive(&sock) {
            Ok(Some(r)) => r,
            Ok(None) => return 0, // the daemon is gone
            Err(e) => {
                say(&format!("berth shim-spawner: {e}"));
                return 1;
            }
        };
        let [stdout, stderr] = match <[OwnedFd; 2]>::try_from(fds) {
            Ok(f) => f,
            Err(_) => {
                let _ = send_i32(&sock, -libc::EINVAL);
                continue;
            }
        };
        // SAFETY: this process is single-threaded (no runtime, no logging thread), so the
        // child may do anything a new process may.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(sock);
                let code = child(&exe, &config, stdout, stderr, run_shim);
                std::process::exit(code);
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop((stdout, stderr));
                if send_i32(&sock, child.as_raw()).is_err() {
                    return 1;
                }
            }
            Err(e) => {
                drop((stdout, stderr));
                if send_i32(&sock, -(e as i32)).is_err() {
                    return 1;
                }
            }
        }
    }
}

/// A request: the config path and the descriptors that came with it. `None` at EOF.
fn receive(sock: &OwnedFd) -> io::Result<Option<(PathBuf, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_PATH + 1];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let (n, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: SCM_RIGHTS installed these descriptors in this process for us.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                break (msg.bytes, fds);
            }
        }
    };
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some((PathBuf::from(OsString::from_vec(buf)), fds)))
}

/// The forked shim: its stdio, nothing else inherited, its command line, then the shim.
fn child(exe: &OsStr, config: &Path, stdout: OwnedFd, stderr: OwnedFd, run_shim: fn(&Path) -> i32) -> i32 {
    let null = match File::options().read(true).write(true).open("/dev/null") {
        Ok(f) => f,
        Err(_) => return 1,
    };
    for (fd, target) in [(null.as_fd(), 0), (stdout.as_fd(), 1), (stderr.as_fd(), 2)] {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return 1;
        }
    }
    drop((null, stdout, stderr));
    // Nothing of the spawner's beyond stdio (the shim's pipe ends must be the only copies).
    // SAFETY: closes descriptors 3 and up, none of which anything here still uses.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if let Err(e) = set_cmdline(&[exe, OsStr::new("shim"), config.as_os_str()]) {
        say(&format!("berth shim: cannot set the command line: {e}"));
        return 1;
    }
    run_shim(config)
}

/// Rewrites this process's command line (`/proc/self/cmdline`, `ps`) to `args`, in place:
/// the argument strings on its stack, zero-filled to their end, as setproctitle(3) does. The
/// spawner is started with a long enough argument of spaces for any shim's (see [`PADDING`]).
fn set_cmdline(args: &[&OsStr]) -> io::Result<()> {
    let (start, end) = arg_area()?;
    let mut buf = Vec::new();
    for a in args {
        buf.extend_from_slice(a.as_bytes());
        buf.push(0);
    }
    if buf.len() > end - start {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a command line of {} bytes does not fit in {}", buf.len(), end - start),
        ));
    }
    // SAFETY: [start, end) is this process's own argument area (from the kernel), writable
    // stack memory that nothing in this single-threaded process reads after the fork.
    unsafe {
        std::ptr::copy_nonoverlapping(buf.as_ptr(), start as *mut u8, buf.len());
        std::ptr::write_bytes((start + buf.len()) as *mut u8, 0, end - start - buf.len());
    }
    Ok(())
}

/// The kernel's `arg_start` and `arg_end` of this process (fields 48 and 49 of its stat).
fn arg_area() -> io::Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/stat");
    // Fields from the 3rd on follow the command name's closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')').ok_or_else(bad)?.1.split_whitespace().collect();
    let field = |n: usize| -> io::Result<usize> { fields.get(n - 3).and_then(|f| f.parse().ok()).ok_or_else(bad) };
    let (start, end) = (field(48)?, field(49)?);
    if start == 0 || end <= start {
        return Err(bad());
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cmdline_rewrites_the_argument_area_in_place() {
        // In a forked child, so the test binary keeps its own name.
        // SAFETY: the child only reads its stat, writes its own stack and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let (start, end) = arg_area().unwrap_or((0, 0));
                let short = [OsStr::new("/x"), OsStr::new("shim"), OsStr::new("/a b")];
                let code = if end <= start {
                    1
                } else if set_cmdline(&short).is_err() {
                    2
                } else if std::fs::read("/proc/self/cmdline").ok().as_deref().map(|c| {
                    c.split(|&b| b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| a.to_vec())
                        .collect::<Vec<_>>()
                }) != Some(vec![b"/x".to_vec(), b"shim".to_vec(), b"/a b".to_vec()])
                {
                    3
                } else {
                    // Longer than the area: refused, nothing written past it.
                    let long = OsString::from("y".repeat(end - start));
                    if set_cmdline(&[&long]).is_ok() { 4 } else { 0 }
                };
                // SAFETY: leaves the forked child without running the test harness's exit.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "set_cmdline in a child"
                );
            }
        }
    }
}
