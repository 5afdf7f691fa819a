//! End-to-end tests of `berth daemon` with the real docker CLI: `docker version`, `docker info`
//! and `docker system events` against it (also pinned to API 1.41), the clear 501 of an
//! endpoint not built yet (`docker ps`), one daemon per data root, daemons side by side,
//! and a clean SIGTERM (socket and pid file gone).
//!
//! Every daemon runs on its own temp socket, data root, exec root and pid file; the docker CLI
//! gets its own `DOCKER_CONFIG`. A daemon still running when its guard drops is killed.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_testkit::{Prereq, require};

/// Any docker CLI call gets this long.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to bind its socket, or to exit after SIGTERM.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(15);

/// What a finished command printed.
struct Output {
    command: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
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
fn run(cmd: &mut Command, timeout: Duration) -> Output {
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

fn drain<R: Read + Send + 'static>(reader: Option<R>) -> mpsc::Receiver<String> {
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
fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
struct Paths {
    socket: PathBuf,
    data_root: PathBuf,
    exec_root: PathBuf,
    pidfile: PathBuf,
    log: PathBuf,
}

impl Paths {
    fn new(dir: &Path, name: &str) -> Paths {
        Paths {
            socket: dir.join(format!("{name}.sock")),
            data_root: dir.join(format!("{name}-data")),
            exec_root: dir.join(format!("{name}-exec")),
            pidfile: dir.join(format!("{name}.pid")),
            log: dir.join(format!("{name}.log")),
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `berth daemon` with every path of its own, plus `extra` flags; its log goes to a file.
    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("daemon")
            .args(["-H", &self.host()])
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("--pidfile")
            .arg(&self.pidfile)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        cmd
    }
}

/// A running `berth daemon`; SIGKILLed if still running when dropped.
struct DaemonProcess {
    child: Child,
    paths: Paths,
    /// The docker CLI's `DOCKER_CONFIG`: nothing from the user's own config leaks in.
    docker_config: PathBuf,
}

impl DaemonProcess {
    /// Starts the daemon and waits for it to answer `_ping` on its socket.
    fn start(dir: &Path, name: &str, extra: &[&str]) -> DaemonProcess {
        let paths = Paths::new(dir, name);
        let log = fs::File::create(&paths.log).expect("create daemon log");
        let child = paths
            .command(extra)
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

    fn log(&self) -> String {
        fs::read_to_string(&self.paths.log).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.docker_env(args, &[])
    }

    fn docker_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .env("DOCKER_CONFIG", &self.docker_config)
            .envs(env.iter().copied())
            .args(["-H", &self.paths.host()])
            .args(args);
        run(&mut cmd, CLI_TIMEOUT)
    }

    /// Like [`docker`](Self::docker), and panics (with the daemon log) unless it succeeds.
    fn docker_ok(&self, args: &[&str]) -> Output {
        let out = self.docker(args);
        assert!(out.status.success(), "{out}\n--- daemon log\n{}", self.log());
        out
    }

    /// SIGTERM, then wait for the exit; returns the exit status and the log.
    fn terminate(mut self) -> (ExitStatus, String) {
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn docker_cli_version_info_events_and_not_implemented() {
    if !require(&[Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProcess::start(
        dir.path(),
        "berth",
        &[
            "--insecure-registry",
            "reg.example:5000",
            "--insecure-registry",
            "10.20.0.0/16",
            "--registry-mirror",
            "https://mirror.example:5000",
        ],
    );
    let paths = Paths::new(dir.path(), "berth");
    let pid = fs::read_to_string(&paths.pidfile).expect("pid file written");
    assert_eq!(pid.trim(), daemon.child.id().to_string());

    let version = daemon.docker_ok(&["version"]);
    println!("$ docker -H {} version\n{}", paths.host(), version.stdout);
    assert!(version.stdout.contains("Server: Berth"), "{version}");
    assert!(
        version.stdout.contains("API version:      1.45 (minimum version 1.24)"),
        "{version}"
    );
    assert!(version.stdout.contains("Go version:       n/a (Rust)"), "{version}");

    let info = daemon.docker_ok(&["info"]);
    println!("$ docker -H {} info\n{}", paths.host(), info.stdout);
    let root = format!("Docker Root Dir: {}", paths.data_root.display());
    for want in [
        root.as_str(),
        "Storage Driver: overlay2",
        "Cgroup Driver: cgroupfs",
        "reg.example:5000",
        "10.20.0.0/16",
        "127.0.0.0/8",
        "https://mirror.example:5000/",
    ] {
        assert!(info.stdout.contains(want), "missing {want:?}\n{info}");
    }
    assert!(info.stderr.trim().is_empty(), "{info}");

    // An older client pinned to 1.41 talks to the same daemon through /v1.41/ paths.
    let old = daemon.docker_env(
        &["version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}}"],
        &[("DOCKER_API_VERSION", "1.41")],
    );
    assert!(old.status.success(), "{old}");
    assert_eq!(old.stdout.trim(), "1.41 1.45", "{old}");
    let old_info = daemon.docker_env(
        &["info", "--format", "{{.DockerRootDir}}"],
        &[("DOCKER_API_VERSION", "1.41")],
    );
    assert!(old_info.status.success(), "{old_info}");
    assert_eq!(old_info.stdout.trim(), paths.data_root.display().to_string());
    let too_new = daemon.docker_env(&["version"], &[("DOCKER_API_VERSION", "1.99")]);
    assert!(!too_new.status.success(), "{too_new}");

    // Events: a window in the past returns at once; one ending in 2 s returns after it.
    let now = unix_now();
    let past = daemon.docker_ok(&[
        "system",
        "events",
        "--since",
        &(now - 60).to_string(),
        "--until",
        &(now - 30).to_string(),
    ]);
    assert!(past.stdout.trim().is_empty(), "{past}");
    let started = Instant::now();
    let until = (unix_now() + 2).to_string();
    let window = daemon.docker_ok(&["system", "events", "--since", &now.to_string(), "--until", &until]);
    assert!(window.stdout.trim().is_empty(), "{window}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "events closed before until"
    );
    let relative = daemon.docker_env(
        &["system", "events", "--until", "1s"],
        &[("DOCKER_API_VERSION", "1.41")],
    );
    assert!(relative.status.success(), "{relative}");

    // Not built yet: a clear error, never a silent success.
    let ps = daemon.docker(&["ps"]);
    assert!(!ps.status.success(), "{ps}");
    assert!(ps.stderr.contains("not implemented"), "{ps}");
    assert!(ps.stderr.contains("/containers/json"), "{ps}");

    // An events stream left open does not hold the shutdown.
    let mut follower = Command::new("docker")
        .env("DOCKER_CONFIG", &daemon.docker_config)
        .args(["-H", &paths.host(), "system", "events"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker system events");
    thread::sleep(Duration::from_millis(300));
    let (status, log) = daemon.terminate();
    let follower_status = wait_deadline(&mut follower, CLI_TIMEOUT);
    if follower_status.is_none() {
        let _ = follower.kill();
        let _ = follower.wait();
    }
    assert!(status.success(), "daemon exit {status}\n{log}");
    assert!(
        follower_status.is_some(),
        "docker system events still running after daemon exit"
    );
    assert!(!paths.socket.exists(), "socket left behind\n{log}");
    assert!(!paths.pidfile.exists(), "pid file left behind\n{log}");
    assert!(log.contains("daemon listening socket="), "{log}");
}

#[test]
fn second_daemon_on_the_same_data_root_is_refused() {
    if !require(&[Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let first = DaemonProcess::start(dir.path(), "first", &[]);
    // Same data root, everything else its own.
    let second = Paths {
        data_root: first.paths.data_root.clone(),
        ..Paths::new(dir.path(), "second")
    };
    let out = run(&mut second.command(&[]), DAEMON_TIMEOUT);
    assert!(!out.status.success(), "{out}");
    let data_root = first.paths.data_root.display().to_string();
    assert!(
        out.stderr.contains(&data_root),
        "error does not name the data root\n{out}"
    );
    assert!(out.stderr.contains("in use"), "{out}");
    assert!(
        out.stderr.contains(&first.child.id().to_string()),
        "error does not name the pid\n{out}"
    );
    assert!(
        !second.socket.exists() && !second.pidfile.exists(),
        "refused daemon left files"
    );

    // The first one never noticed.
    first.docker_ok(&["version"]);
    assert!(first.paths.pidfile.exists());
    let (status, log) = first.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn daemons_side_by_side_and_config_file() {
    if !require(&[Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let a = DaemonProcess::start(dir.path(), "a", &[]);
    // b takes its data root and a registry from a TOML file; the -H flag wins over the file.
    let b_paths = Paths::new(dir.path(), "b");
    let config = dir.path().join("b.toml");
    fs::write(
        &config,
        format!(
            "host = \"unix:///nonexistent/ignored.sock\"\ndata-root = \"{}\"\ninsecure-registries = [\"site.example:5000\"]\n",
            b_paths.data_root.display()
        ),
    )
    .expect("write config");
    let b = DaemonProcess::start(dir.path(), "b", &["--config", config.to_str().expect("utf-8 path")]);

    let root = |d: &DaemonProcess| d.docker_ok(&["info", "--format", "{{.DockerRootDir}}"]).stdout;
    assert_eq!(root(&a).trim(), a.paths.data_root.display().to_string());
    assert_eq!(root(&b).trim(), b.paths.data_root.display().to_string());
    let id = |d: &DaemonProcess| d.docker_ok(&["info", "--format", "{{.ID}}"]).stdout;
    assert_ne!(id(&a), id(&b));
    let b_info = b.docker_ok(&["info"]);
    assert!(b_info.stdout.contains("site.example:5000"), "{b_info}");

    // A config file with an unknown key is refused, naming it.
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "data_root = \"/x\"\n").expect("write config");
    let c = Paths::new(dir.path(), "c");
    let out = run(
        &mut c.command(&["--config", bad.to_str().expect("utf-8 path")]),
        DAEMON_TIMEOUT,
    );
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("data_root"), "{out}");

    for d in [a, b] {
        let (socket, pidfile) = (d.paths.socket.clone(), d.paths.pidfile.clone());
        let (status, log) = d.terminate();
        assert!(status.success(), "{log}");
        assert!(!socket.exists() && !pidfile.exists(), "left behind\n{log}");
    }
}
