//! `kill -9` of `berth daemon` in the middle of a `docker pull`, then a restart on the same
//! data root: the store is consistent (`docker images` lists only whole images), the
//! restart sweeps the debris of the interrupted writes (`.ingest-*` blobs, `.tmp-*`
//! snapshots), and the pull run again succeeds and inspects like the pushed image.
//!
//! The image is the testkit's busybox plus four incompressible 16 MiB layers, served by a
//! real `berth registry serve` on 127.0.0.1 (plain HTTP), pushed with skopeo.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use berth_testkit::{ImageBuilder, Prereq, RegistryProcess, require};

/// Any docker CLI call gets this long.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a daemon may take to bind its socket.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(15);
/// How many pull-and-kill attempts, each a little later into the pull.
const ATTEMPTS: u32 = 4;

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
    finish(&mut child, command, timeout)
}

/// Collects a spawned child's output; kills it and panics after `timeout`.
fn finish(child: &mut Child, command: String, timeout: Duration) -> Output {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_deadline(child, timeout);
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
        thread::sleep(Duration::from_millis(5));
    }
}

/// A running `berth daemon` on `data_root`; SIGKILLed if still running when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    data_root: PathBuf,
    log: PathBuf,
    docker_config: PathBuf,
}

impl Daemon {
    /// Starts a daemon named `name` under `dir` (socket, data root, exec root, pidfile and
    /// log there) and waits for it to listen. `run` numbers the log of each (re)start.
    fn start(dir: &Path, name: &str, run: u32) -> Daemon {
        let socket = dir.join(format!("{name}.sock"));
        let data_root = dir.join(format!("{name}-data"));
        let log = dir.join(format!("{name}-{run}.log"));
        let docker_config = dir.join(format!("{name}-docker-config"));
        fs::create_dir_all(&docker_config).expect("create DOCKER_CONFIG");
        let file = fs::File::create(&log).expect("create daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("daemon")
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(&data_root)
            .arg("--exec-root")
            .arg(dir.join(format!("{name}-exec")))
            .arg("--pidfile")
            .arg(dir.join(format!("{name}.pid")))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .expect("start berth daemon");
        let mut daemon = Daemon {
            child,
            socket,
            data_root,
            log,
            docker_config,
        };
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if let Some(status) = daemon.child.try_wait().expect("wait for the daemon") {
                panic!("daemon exited early with {status}\n{}", daemon.log());
            }
            if std::os::unix::net::UnixStream::connect(&daemon.socket).is_ok()
                && daemon.log().contains("daemon listening socket=")
            {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "daemon not listening after {DAEMON_TIMEOUT:?}\n{}",
                daemon.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .env("DOCKER_CONFIG", &self.docker_config)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args);
        cmd
    }

    fn docker_ok(&self, args: &[&str]) -> Output {
        let out = run(&mut self.docker_cmd(args), CLI_TIMEOUT);
        assert!(out.status.success(), "{out}\n--- daemon log\n{}", self.log());
        out
    }

    /// SIGKILL, and reap.
    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the daemon");
        wait_deadline(&mut self.child, DAEMON_TIMEOUT).expect("the daemon to die after SIGKILL");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Names under `dir` (recursively) of in-progress writes: `.ingest-*` and `.tmp-*`.
fn debris(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if name.starts_with(".ingest-") || name.starts_with(".tmp-") {
                out.push(p);
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

/// `docker images` as `repo:tag id` lines.
fn images(daemon: &Daemon) -> Vec<String> {
    let out = daemon.docker_ok(&["images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    out.stdout
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn kill_9_during_a_pull_leaves_a_consistent_store() {
    if !require(&[Prereq::Docker, Prereq::Skopeo, Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = RegistryProcess::start(
        Path::new(env!("CARGO_BIN_EXE_berth")),
        &["--root", dir.path().join("registry").to_str().expect("utf-8 path")],
    )
    .expect("start the registry");
    let builder = ImageBuilder::new().extra_random_layers(4, 16 << 20);
    let layout = dir.path().join("layout");
    let info = builder.write_oci_layout(&layout, "1").expect("write the OCI layout");
    let out = run(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{}/big/img:1", registry.addr())),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{out}\n--- registry log\n{}", registry.log());
    let name = format!("{}/big/img:1", registry.addr());
    let want_id = info.config_digest.to_string();
    let want_diffs: Vec<String> = info.layers.iter().map(|l| l.diff_id.to_string()).collect();

    let mut caught_mid_pull = 0;
    for attempt in 0..ATTEMPTS {
        let daemon_name = format!("d{attempt}");
        let mut daemon = Daemon::start(dir.path(), &daemon_name, 0);
        let mut pull = daemon
            .docker_cmd(&["pull", &name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker pull");
        // Wait for the first sign of progress on disk, then a little more each attempt.
        let deadline = Instant::now() + CLI_TIMEOUT;
        let mut seen = None;
        while Instant::now() < deadline {
            if pull.try_wait().expect("wait for docker pull").is_some() {
                break;
            }
            if seen.is_none() && !debris(&daemon.data_root).is_empty() {
                seen = Some(Instant::now());
            }
            if seen.is_some_and(|t| t.elapsed() >= Duration::from_millis(u64::from(attempt) * 150)) {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        let mid_pull = pull.try_wait().expect("wait for docker pull").is_none();
        let on_disk = debris(&daemon.data_root);
        daemon.kill9();
        let out = finish(&mut pull, "docker pull".to_owned(), CLI_TIMEOUT);
        println!(
            "attempt {attempt}: killed {} the pull finished, {} in-progress files on disk\n{out}",
            if mid_pull { "before" } else { "after" },
            on_disk.len()
        );
        if mid_pull {
            caught_mid_pull += 1;
            assert!(
                !out.status.success(),
                "the pull succeeded though its daemon was killed\n{out}"
            );
        }
        drop(daemon);

        // Restart on the same data root.
        let daemon = Daemon::start(dir.path(), &daemon_name, 1);
        let left = debris(&daemon.data_root);
        assert!(left.is_empty(), "debris after the restart: {left:?}\n{}", daemon.log());
        let listed = images(&daemon);
        println!("attempt {attempt}: images after the restart: {listed:?}");
        for line in &listed {
            assert_eq!(
                line,
                &format!("{name} {want_id}"),
                "a partial image is listed: {listed:?}"
            );
        }
        for id in &listed {
            let id = id.split(' ').nth(1).expect("an ID");
            let v: serde_json::Value =
                serde_json::from_str(&daemon.docker_ok(&["image", "inspect", id]).stdout).expect("inspect JSON");
            assert_eq!(v[0]["RootFS"]["Layers"], serde_json::json!(want_diffs), "{v}");
        }

        // The pull again: whole, and the image is the pushed one.
        let out = daemon.docker_ok(&["pull", &name]);
        println!("attempt {attempt}: pull after the restart\n{out}");
        assert!(out.stdout.contains("Digest: sha256:"), "{out}");
        let v: serde_json::Value =
            serde_json::from_str(&daemon.docker_ok(&["image", "inspect", &name]).stdout).expect("inspect JSON");
        assert_eq!(v[0]["Id"], want_id, "{v}");
        assert_eq!(v[0]["RootFS"]["Layers"], serde_json::json!(want_diffs), "{v}");
        assert_eq!(images(&daemon), vec![format!("{name} {want_id}")]);
        let left = debris(&daemon.data_root);
        assert!(left.is_empty(), "debris after a whole pull: {left:?}");
        if caught_mid_pull >= 2 {
            break;
        }
    }
    assert!(
        caught_mid_pull > 0,
        "no attempt killed the daemon while the pull was running"
    );
    drop(registry);
}
