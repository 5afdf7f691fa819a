//! The `berth daemon` harness shared by the daemon's end-to-end tests: a daemon on a temp
//! socket, data root, exec root and pid file, driven by the real docker CLI with its own
//! `DOCKER_CONFIG`, killed on drop. Included with `#[path]` by each test binary.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Any docker CLI call gets this long.
pub(crate) const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to bind its socket, or to exit after SIGTERM.
pub(crate) const DAEMON_TIMEOUT: Duration = Duration::from_secs(15);

/// What a finished command printed.
pub(crate) struct Output {
    pub(crate) command: String,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` to completion; kills it and panics after `timeout`.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let command = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {command}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_deadline(&mut child, timeout);
    let collect = |rx: mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("timed out after {timeout:?}: {command}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    };
    Output {
        command,
        status,
        stdout,
        stderr,
    }
}

pub(crate) fn drain<R: Read + Send + 'static>(reader: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut reader) = reader {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = reader.read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
    }
    rx
}

/// The exit status, or `None` if the child still runs after `timeout`.
pub(crate) fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The paths one daemon owns, all under one temp directory.
pub(crate) struct Paths {
    pub(crate) socket: PathBuf,
    pub(crate) data_root: PathBuf,
    pub(crate) exec_root: PathBuf,
    pub(crate) pidfile: PathBuf,
    pub(crate) log: PathBuf,
}

impl Paths {
    pub(crate) fn new(dir: &Path, name: &str) -> Paths {
        Paths {
            socket: dir.join(format!("{name}.sock")),
            data_root: dir.join(format!("{name}-data")),
            exec_root: dir.join(format!("{name}-exec")),
            pidfile: dir.join(format!("{name}.pid")),
            log: dir.join(format!("{name}.log")),
        }
    }

    pub(crate) fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `berth daemon` with every path of its own, plus `extra` flags; its log goes to a file.
    pub(crate) fn command(&self, extra: &[&str]) -> Command {
        self.command_in(None, extra)
    }

    /// [`command`](Self::command), run in the network namespace `netns`
    /// (`/run/netns/NAME`) when given: `nsenter --net` execs the daemon, so the child's pid
    /// is the daemon's, and its socket is reachable from outside as any unix socket is.
    pub(crate) fn command_in(&self, netns: Option<&Path>, extra: &[&str]) -> Command {
        let mut cmd = match netns {
            Some(ns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net={}", ns.display()))
                    .arg(env!("CARGO_BIN_EXE_berth"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_berth")),
        };
        cmd.arg("daemon")
            .args(["-H", &self.host()])
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("--pidfile")
            .arg(&self.pidfile);
        // Outside a network namespace of its own, a test daemon leaves the host's links and
        // firewall alone: no default bridge unless the test asks for one.
        if netns.is_none()
            && !extra
                .iter()
                .any(|a| *a == "--bridge" || *a == "-b" || a.starts_with("--bridge="))
        {
            cmd.args(["--bridge", "none"]);
        }
        cmd.args(extra).env("RUST_LOG", "info").env("NO_COLOR", "1");
        cmd
    }
}

/// A running `berth daemon`; SIGKILLed if still running when dropped.
pub(crate) struct DaemonProcess {
    pub(crate) child: Child,
    pub(crate) paths: Paths,
    /// The docker CLI's `DOCKER_CONFIG`: nothing from the user's own config leaks in.
    pub(crate) docker_config: PathBuf,
    /// How long one docker CLI call may take.
    pub(crate) cli_timeout: Duration,
}

impl DaemonProcess {
    /// Starts the daemon and waits for it to answer `_ping` on its socket.
    pub(crate) fn start(dir: &Path, name: &str, extra: &[&str]) -> DaemonProcess {
        DaemonProcess::start_with_cli_timeout(CLI_TIMEOUT, dir, name, extra)
    }

    /// [`start`](Self::start), with docker CLI calls allowed `cli_timeout` (pulls and pushes).
    pub(crate) fn start_with_cli_timeout(
        cli_timeout: Duration,
        dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> DaemonProcess {
        DaemonProcess::start_in(None, cli_timeout, dir, name, extra)
    }

    /// [`start_with_cli_timeout`](Self::start_with_cli_timeout), with the daemon in the
    /// network namespace `netns` (`/run/netns/NAME`) when given.
    pub(crate) fn start_in(
        netns: Option<&Path>,
        cli_timeout: Duration,
        dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> DaemonProcess {
        let paths = Paths::new(dir, name);
        let log = fs::File::create(&paths.log).expect("create daemon log");
        let child = paths
            .command_in(netns, extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start berth daemon");
        let docker_config = dir.join(format!("{name}-docker-config"));
        fs::create_dir_all(&docker_config).expect("create DOCKER_CONFIG");
        let mut daemon = DaemonProcess {
            child,
            paths,
            docker_config,
            cli_timeout,
        };
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if let Some(status) = daemon.child.try_wait().expect("wait for the daemon") {
                panic!("daemon exited early with {status}\n{}", daemon.log());
            }
            if std::os::unix::net::UnixStream::connect(&daemon.paths.socket).is_ok()
                && daemon.log().contains("daemon listening socket=")
            {
                return daemon;
            }
            if Instant::now() >= deadline {
                panic!("daemon not listening after {DAEMON_TIMEOUT:?}\n{}", daemon.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.paths.log).unwrap_or_default()
    }

    pub(crate) fn docker(&self, args: &[&str]) -> Output {
        self.docker_env(args, &[])
    }

    pub(crate) fn docker_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .env("DOCKER_CONFIG", &self.docker_config)
            .envs(env.iter().copied())
            .args(["-H", &self.paths.host()])
            .args(args);
        run(&mut cmd, self.cli_timeout)
    }

    /// Like [`docker`](Self::docker), and panics (with the daemon log) unless it succeeds.
    pub(crate) fn docker_ok(&self, args: &[&str]) -> Output {
        let out = self.docker(args);
        assert!(out.status.success(), "{out}\n--- daemon log\n{}", self.log());
        out
    }

    /// One HTTP/1.1 request over the daemon's socket, with `headers` and `body`; returns
    /// the status and the body. With `head_only` only the status line is waited for (a
    /// stream such as `/events` never ends by itself) and the body is empty.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        head_only: bool,
    ) -> (u16, String) {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&self.paths.socket).expect("connect to the daemon");
        s.set_read_timeout(Some(CLI_TIMEOUT)).expect("set a read timeout");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).expect("send the request head");
        s.write_all(body).expect("send the request body");
        let mut got = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading the answer to {method} {path}: {e}"),
            }
            if head_only && got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in the answer to {method} {path}: {text:?}"));
        let body = if head_only { String::new() } else { dechunk(head, body) };
        (status, body)
    }

    /// SIGTERM, then wait for the exit; returns the exit status and the log.
    pub(crate) fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let out = run(Command::new("kill").args(["-TERM", &pid]), CLI_TIMEOUT);
        assert!(out.status.success(), "{out}");
        let status = wait_deadline(&mut self.child, DAEMON_TIMEOUT)
            .unwrap_or_else(|| panic!("daemon still running {DAEMON_TIMEOUT:?} after SIGTERM\n{}", self.log()));
        (status, self.log())
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A body as sent: chunked transfer coding undone when the head says so.
fn dechunk(head: &str, body: &str) -> String {
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body.to_owned();
    }
    let (mut out, mut rest) = (String::new(), body);
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}
