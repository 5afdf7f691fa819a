//! End-to-end tests of the `berth` client commands against a real `berth daemon` on a temp
//! socket: `berth import` of a busybox root filesystem, `berth images` (table, `--format json`,
//! `-q`), `berth tag`, `berth inspect-image` / `berth image inspect`, `berth save -o`, `berth rmi`
//! and `berth load -i` giving back the same ID; `berth pull` from a `berth registry serve`
//! (plain progress lines when piped, the final Digest/Status lines) and `berth push` back to
//! it; the daemon chosen by `-H`, `BERTH_HOST` and `DOCKER_HOST`; an unknown image and a
//! socket with no daemon, each a clear error and a non-zero exit.
//!
//! The daemon harness is the one in `daemon_images.rs`.

// Test output is the reader's interface here: the berth CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use berth_testkit::{ImageBuilder, Prereq, RegistryProcess, require};

/// Any CLI call gets this long.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a daemon may take to bind its socket.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(15);

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::{Output, run};

/// The `berth` binary with no daemon address from the environment.
fn berth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.env_remove("BERTH_HOST")
        .env_remove("DOCKER_HOST")
        .env("NO_COLOR", "1");
    cmd
}

/// A running `berth daemon` with every path of its own; SIGKILLed when dropped.
struct DaemonProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl DaemonProcess {
    /// Starts the daemon and waits for it to listen on its socket.
    fn start(dir: &Path, name: &str) -> DaemonProcess {
        let socket = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let log_file = fs::File::create(&log).expect("create daemon log");
        let child = berth()
            .arg("daemon")
            .args(["-H", &format!("unix://{}", socket.display())])
            .arg("--data-root")
            .arg(dir.join(format!("{name}-data")))
            .arg("--exec-root")
            .arg(dir.join(format!("{name}-exec")))
            .arg("--pidfile")
            .arg(dir.join(format!("{name}.pid")))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start berth daemon");
        let mut daemon = DaemonProcess { child, socket, log };
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
            if Instant::now() >= deadline {
                panic!("daemon not listening after {DAEMON_TIMEOUT:?}\n{}", daemon.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `berth -H unix://… ARGS`.
    fn berth(&self, args: &[&str]) -> Output {
        run(berth().args(["-H", &self.host()]).args(args), CLI_TIMEOUT)
    }

    /// Like [`berth`](Self::berth), and panics (with the daemon log) unless it succeeds.
    fn berth_ok(&self, args: &[&str]) -> Output {
        let out = self.berth(args);
        assert!(out.status.success(), "{out}\n--- daemon log\n{}", self.log());
        out
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

/// The busybox root filesystem (layer 1 of the testkit image), gzip-compressed.
fn busybox_rootfs() -> Vec<u8> {
    let image = ImageBuilder::new().blobs().expect("build the busybox image");
    image.layers[0].read().expect("read the busybox layer")
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{out}")))
        .collect()
}

#[test]
fn berth_import_images_tag_inspect_save_rmi_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProcess::start(dir.path(), "berth");
    let rootfs = dir.path().join("busybox.tar.gz");
    fs::write(&rootfs, busybox_rootfs()).expect("write rootfs");
    let rootfs = rootfs.to_str().expect("utf-8 path");

    let out = daemon.berth_ok(&["import", "-m", "hello", "-c", r#"CMD ["sh"]"#, rootfs, "busybox:1"]);
    println!("$ berth import\n{out}");
    let id = out.stdout.trim().to_owned();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "no image ID printed\n{out}"
    );
    let short = &id["sha256:".len().."sha256:".len() + 12];

    let out = daemon.berth_ok(&["images"]);
    println!("$ berth images\n{}", out.stdout);
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap_or_default();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{out}");
    }
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..3], ["busybox", "1", short], "{out}");

    let out = daemon.berth_ok(&["images", "--format", "json"]);
    let images = json_lines(&out);
    assert_eq!(images.len(), 1, "{out}");
    assert_eq!(images[0]["Id"], id.as_str(), "{out}");
    assert_eq!(images[0]["RepoTags"], serde_json::json!(["busybox:1"]), "{out}");

    // The daemon from BERTH_HOST, then DOCKER_HOST, and -H over both.
    let env_runs = [("BERTH_HOST", daemon.host()), ("DOCKER_HOST", daemon.host())];
    for (var, value) in env_runs {
        let out = run(berth().env(var, &value).args(["images", "-q"]), CLI_TIMEOUT);
        assert!(out.status.success(), "{var}: {out}");
        assert_eq!(out.stdout.trim(), short, "{var}: {out}");
    }
    let nowhere = format!("unix://{}", dir.path().join("nowhere.sock").display());
    let out = run(
        berth()
            .env("BERTH_HOST", &nowhere)
            .env("DOCKER_HOST", &nowhere)
            .args(["-H", &daemon.host(), "images", "-q"]),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{out}");
    assert_eq!(out.stdout.trim(), short, "{out}");
    let out = run(
        berth()
            .env("BERTH_HOST", daemon.host())
            .env("DOCKER_HOST", &nowhere)
            .args(["images", "-q"]),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "BERTH_HOST goes before DOCKER_HOST: {out}");

    daemon.berth_ok(&["tag", "busybox:1", "myreg:5000/sl6/wn:v1"]);
    let out = daemon.berth_ok(&["images", "--filter", "reference=myreg:5000/sl6/*"]);
    println!("$ berth images --filter reference=myreg:5000/sl6/*\n{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .nth(1)
            .unwrap_or_default()
            .starts_with("myreg:5000/sl6/wn "),
        "{out}"
    );
    assert_eq!(out.stdout.lines().count(), 2, "{out}");

    for args in [
        &["inspect-image", "busybox:1"][..],
        &["image", "inspect", "myreg:5000/sl6/wn:v1"],
    ] {
        let out = daemon.berth_ok(args);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(v[0]["Id"], id.as_str(), "{out}");
        assert_eq!(v[0]["Config"]["Cmd"], serde_json::json!(["sh"]), "{out}");
        assert!(out.stdout.contains("\n  "), "pretty-printed: {out}");
    }

    let archive = dir.path().join("saved.tar");
    let archive_s = archive.to_str().expect("utf-8 path");
    let out = daemon.berth_ok(&["save", "-o", archive_s, "busybox:1", "myreg:5000/sl6/wn:v1"]);
    assert!(out.stdout.is_empty(), "{out}");
    assert!(fs::metadata(&archive).expect("saved tarball").len() > 100_000);

    let out = daemon.berth(&["rmi", "busybox:1", "myreg:5000/sl6/wn:v1"]);
    println!("$ berth rmi\n{out}");
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("Untagged: busybox:1"), "{out}");
    assert!(out.stdout.contains(&format!("Deleted: {id}")), "{out}");
    let out = daemon.berth_ok(&["images", "-q"]);
    assert_eq!(out.stdout.trim(), "", "{out}");

    let out = daemon.berth_ok(&["load", "-i", archive_s]);
    println!("$ berth load\n{out}");
    assert!(out.stdout.contains("Loaded image: busybox:1"), "{out}");
    assert!(out.stdout.contains("Loaded image: myreg:5000/sl6/wn:v1"), "{out}");
    let out = daemon.berth_ok(&["images", "--format", "json"]);
    let images = json_lines(&out);
    assert_eq!(images.len(), 1, "{out}");
    assert_eq!(images[0]["Id"], id.as_str(), "the same ID after save, rmi, load: {out}");

    // Unknown images: a non-zero exit and the daemon's message.
    for args in [
        &["rmi", "nosuch:1"][..],
        &["inspect-image", "nosuch:1"],
        &["tag", "nosuch:1", "x:1"],
        &["save", "-o", archive_s, "nosuch:1"],
    ] {
        let out = daemon.berth(args);
        println!("$ berth {}\n{}", args.join(" "), out.stderr);
        assert!(!out.status.success(), "{out}");
        assert!(
            out.stderr.contains("No such image") || out.stderr.contains("nosuch"),
            "{out}"
        );
        assert!(out.stderr.starts_with("berth: error: "), "{out}");
    }
    assert!(
        fs::metadata(&archive).is_ok(),
        "a failed save leaves the old file alone"
    );
}

#[test]
fn berth_without_a_daemon_names_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("none.sock");
    let host = format!("unix://{}", socket.display());
    for cmd in [
        berth().args(["-H", &host, "images"]),
        berth().env("BERTH_HOST", &host).args(["pull", "busybox"]),
        berth().env("DOCKER_HOST", &host).args(["rmi", "busybox"]),
    ] {
        let out = run(cmd, CLI_TIMEOUT);
        println!("{}", out.stderr);
        assert!(!out.status.success(), "{out}");
        assert!(out.stderr.contains(&host), "names the socket: {out}");
        assert!(
            out.stderr.contains("berth daemon"),
            "suggests starting the daemon: {out}"
        );
    }
    // `version` still shows the client.
    let out = run(berth().args(["-H", &host, "version"]), CLI_TIMEOUT);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.starts_with("berth "), "{out}");
}

#[test]
fn berth_pull_from_a_berth_registry() {
    if !require(&[Prereq::Skopeo, Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("registry");
    let registry = RegistryProcess::start(
        Path::new(env!("CARGO_BIN_EXE_berth")),
        &["--root", root.to_str().expect("utf-8 path")],
    )
    .expect("start the registry");
    let layout = dir.path().join("layout");
    ImageBuilder::new()
        .write_oci_layout(&layout, "1")
        .expect("write the OCI layout");
    let out = run(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{}/sl6/wn:1", registry.addr())),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{out}\n--- registry log\n{}", registry.log());

    let daemon = DaemonProcess::start(dir.path(), "berth");
    let name = format!("{}/sl6/wn:1", registry.addr());
    let out = daemon.berth_ok(&["pull", &name]);
    println!("$ berth pull {name} | cat\n{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.iter().any(|l| l.ends_with(": Pull complete")), "{out}");
    assert!(!out.stdout.contains('\u{1b}'), "no terminal escapes when piped: {out}");
    assert!(lines.iter().any(|l| l.starts_with("Digest: sha256:")), "{out}");
    assert_eq!(
        lines.last().copied(),
        Some(format!("Status: Downloaded newer image for {name}").as_str()),
        "{out}"
    );
    let out = daemon.berth_ok(&["images"]);
    println!("$ berth images\n{}", out.stdout);
    assert!(out.stdout.contains(&format!("{}/sl6/wn ", registry.addr())), "{out}");

    let out = daemon.berth_ok(&["pull", &name]);
    assert!(out.stdout.contains("Image is up to date"), "{out}");

    // Push under a new name, then pull that back.
    let pushed = format!("{}/sl6/pushed:2", registry.addr());
    daemon.berth_ok(&["tag", &name, &pushed]);
    let out = daemon.berth_ok(&["push", &pushed]);
    println!("$ berth push {pushed} | cat\n{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "The push refers to repository [{}/sl6/pushed]",
            registry.addr()
        )),
        "{out}"
    );
    assert!(out.stdout.contains("2: digest: sha256:"), "{out}");
    let out = daemon.berth(&["push", &format!("{}/sl6/notlocal:1", registry.addr())]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("does not exist locally"), "{out}");

    let missing = format!("{}/sl6/nosuch:1", registry.addr());
    let out = daemon.berth(&["pull", &missing]);
    println!("$ berth pull {missing}\n{out}");
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains(&format!("failed to pull {missing}")), "{out}");
}
