//! A `berth registry serve` child process for end-to-end tests: started on a free loopback
//! port, its address read from its "registry listening" log line, its log kept for assertions.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// How long `start` waits for the "registry listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `berth registry serve`; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct RegistryProcess {
    child: Child,
    addr: SocketAddr,
    tls: bool,
    log: Arc<Mutex<String>>,
    drains: Vec<JoinHandle<()>>,
}

impl RegistryProcess {
    /// Runs `<berth_bin> registry serve --addr 127.0.0.1:0 <args…>` and waits (up to 20 s)
    /// for the log line containing `registry listening`, whose `addr=IP:PORT` is the address.
    ///
    /// `args` should hold at least `--root DIR`; when they hold `--addr`, no `--addr` is
    /// added. The child gets `RUST_LOG=info` and `NO_COLOR=1`; its stderr (and stdout) are
    /// collected for [`log`](Self::log) for as long as it runs. On timeout or early exit the
    /// error includes everything it printed.
    pub fn start(berth_bin: &Path, args: &[&str]) -> Result<RegistryProcess> {
        RegistryProcess::start_in(None, berth_bin, args)
    }

    /// [`start`](Self::start), in the network namespace `netns` (`/run/netns/NAME`) when
    /// given: `nsenter --net` execs the registry, so the child is the registry itself and
    /// its address is a loopback address of that namespace.
    pub fn start_in(netns: Option<&Path>, berth_bin: &Path, args: &[&str]) -> Result<RegistryProcess> {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(berth_bin);
                c
            }
            None => Command::new(berth_bin),
        };
        command.args(["registry", "serve"]);
        if !args.iter().any(|a| *a == "--addr" || a.starts_with("--addr=")) {
            command.args(["--addr", "127.0.0.1:0"]);
        }
        command
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("failed to start {} registry serve", berth_bin.display()))?;

        let log = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines) = mpsc::channel();
        let mut drains = Vec::new();
        // Both streams: the contract is stderr, but a subscriber left on its default writer
        // logs to stdout, and either pipe left unread would block the registry once full.
        if let Some(stderr) = child.stderr.take() {
            drains.push(drain(stderr, Arc::clone(&log), lines_tx.clone()));
        }
        if let Some(stdout) = child.stdout.take() {
            drains.push(drain(stdout, Arc::clone(&log), lines_tx));
        }

        let mut process = RegistryProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: args.iter().any(|a| *a == "--tls-cert" || a.starts_with("--tls-cert=")),
            log,
            drains,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let line = match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    process.kill9();
                    bail!(
                        "registry did not log \"registry listening\" within {START_TIMEOUT:?}; its output:\n{}",
                        process.log()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: the process exited (or closed them, which is as bad).
                    let status = process.kill9();
                    bail!(
                        "registry exited before listening ({status}); its output:\n{}",
                        process.log()
                    );
                }
            };
            if let Some(listening) = parse_listening(&line) {
                let (addr, tls) = listening
                    .with_context(|| format!("failed to read the address from the registry's line: {line}"))?;
                process.addr = addr;
                process.tls |= tls;
                return Ok(process);
            }
        }
    }

    /// The address the registry listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, or `https://ADDR` when it was started with `--tls-cert` (or logs
    /// `tls=true`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the registry has printed so far, stderr and stdout interleaved by line.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends SIGKILL (if it still runs) and waits for it: a crash, for recovery tests.
    ///
    /// # Panics
    ///
    /// If the process cannot be waited for.
    pub fn kill9(&mut self) -> ExitStatus {
        // Fails only when the process has already been reaped, which `wait` then reports.
        let _ = self.child.kill();
        let status = self.child.wait().expect("failed to wait for the registry process");
        self.join_drains();
        status
    }

    /// Sends SIGTERM and waits up to 10 s for a graceful exit, then SIGKILL.
    ///
    /// # Panics
    ///
    /// If the process cannot be waited for.
    pub fn stop(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.join_drains();
            return status;
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"));
        let _ = signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.join_drains();
                    return status;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        self.kill9()
    }

    /// Lets the drain threads take the last lines, without hanging if something else still
    /// holds the pipes open.
    fn join_drains(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.drains.iter().any(|d| !d.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        for drain in std::mem::take(&mut self.drains) {
            if drain.is_finished() {
                let _ = drain.join();
            }
        }
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `pipe` line by line into `log` and sends each line to `lines` while someone listens.
fn drain(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>, lines: mpsc::Sender<String>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']);
            {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(line);
                log.push('\n');
            }
            // After start has its address nobody receives; keep draining regardless.
            let _ = lines.send(line.to_owned());
        }
    })
}

/// `None` if `line` is not the listening line; otherwise its address and whether it says
/// `tls=true` (an error if the address is missing or malformed).
fn parse_listening(line: &str) -> Option<Result<(SocketAddr, bool)>> {
    let line = strip_ansi(line);
    if !line.contains("registry listening") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|token| token.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim_matches(|c| c == '"' || c == ','))
    };
    let tls = field("tls") == Some("true");
    Some(match field("addr") {
        Some(addr) => addr
            .parse()
            .map(|addr| (addr, tls))
            .with_context(|| format!("invalid addr={addr}")),
        None => Err(anyhow::anyhow!("no addr=IP:PORT field")),
    })
}

/// Removes terminal escape sequences (`ESC [ … letter`), in case colour was forced on.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_the_listening_line() {
        let cases: &[(&str, Option<(&str, bool)>)] = &[
            (
                "2026-11-23T13:00:00.000Z  INFO berth_registry::server: registry listening addr=127.0.0.1:41234 tls=false auth=\"anonymous pull and push\"",
                Some(("127.0.0.1:41234", false)),
            ),
            (
                "INFO registry listening addr=\"[::1]:5000\" tls=true",
                Some(("[::1]:5000", true)),
            ),
            (
                "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m registry listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:5 \u{1b}[3mtls\u{1b}[0m\u{1b}[2m=\u{1b}[0mfalse",
                Some(("127.0.0.1:5", false)),
            ),
            ("INFO berth_registry: storage opened root=/tmp/x", None),
        ];
        for (line, expected) in cases {
            let got = parse_listening(line).map(|r| r.unwrap());
            let expected = expected.map(|(a, tls)| (a.parse::<SocketAddr>().unwrap(), tls));
            assert_eq!(got, expected, "{line}");
        }
        assert!(parse_listening("registry listening addr=nonsense").unwrap().is_err());
        assert!(parse_listening("registry listening on a port").unwrap().is_err());
    }

    /// Starts a stand-in for `berth`: a shell script that logs like the registry.
    fn start_fake(script: &str, args: &[&str]) -> (tempfile::TempDir, Result<RegistryProcess>) {
        // Writing an executable while another thread forks can leave the write descriptor
        // open in that child for a moment, and exec then fails with ETXTBSY: one at a time.
        static SPAWN: Mutex<()> = Mutex::new(());
        let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth");
        let mut file = std::fs::File::create(&path).unwrap();
        writeln!(file, "#!/bin/sh\n{script}").unwrap();
        drop(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = RegistryProcess::start(&path, args);
        (dir, started)
    }

    #[test]
    fn starts_reads_the_address_and_stops() {
        let (_dir, started) = start_fake(
            r#"trap 'echo "got TERM" >&2; exit 0' TERM
echo "args: $*" >&2
echo "INFO registry listening addr=127.0.0.1:41234 tls=false log=$RUST_LOG nocolor=$NO_COLOR" >&2
while :; do sleep 0.05; done"#,
            &["--root", "/tmp/r", "--tls-cert", "c.pem"],
        );
        let mut registry = started.unwrap();
        assert_eq!(registry.addr(), "127.0.0.1:41234".parse().unwrap());
        assert_eq!(registry.url(), "https://127.0.0.1:41234");
        let log = registry.log();
        assert!(
            log.contains("args: registry serve --addr 127.0.0.1:0 --root /tmp/r --tls-cert c.pem"),
            "{log}"
        );
        assert!(log.contains("log=info nocolor=1"), "{log}");
        let status = registry.stop();
        assert!(status.success(), "{status}");
        assert!(registry.log().contains("got TERM"));
    }

    #[test]
    fn keeps_a_given_addr_and_kill9s() {
        let (_dir, started) = start_fake(
            // All on stdout: lines are in order within one pipe, not across the two.
            r#"echo "args: $*"
echo "registry listening addr=127.0.0.1:5000 tls=false"
exec sleep 60"#,
            &["--addr", "127.0.0.1:5000"],
        );
        let mut registry = started.unwrap();
        assert_eq!(registry.url(), "http://127.0.0.1:5000");
        assert!(registry.log().contains("args: registry serve --addr 127.0.0.1:5000\n"));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(registry.kill9().signal(), Some(9));
    }

    #[test]
    fn early_exit_reports_the_output() {
        let (_dir, started) = start_fake("echo 'error: --root is required' >&2; exit 2", &[]);
        let err = format!("{:#}", started.unwrap_err());
        assert!(err.contains("exited before listening"), "{err}");
        assert!(err.contains("error: --root is required"), "{err}");
    }

    #[test]
    fn drop_kills() {
        let (_dir, started) = start_fake("echo 'registry listening addr=127.0.0.1:1'; exec sleep 60", &[]);
        let registry = started.unwrap();
        let pid = Pid::from_raw(registry.pid() as i32);
        drop(registry);
        // Reaped by drop, so the pid no longer exists (barring instant reuse).
        assert!(signal::kill(pid, None).is_err());
    }
}
