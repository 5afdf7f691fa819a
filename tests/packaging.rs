//! Berth as a system service: systemd's readiness protocol from the daemon and the registry
//! (`READY=1` only once they serve, `STOPPING=1` at shutdown, `NOTIFY_SOCKET` not passed on to
//! shims), the socket's group (`-G`), the units as `systemd-analyze verify` reads them,
//! `packaging/install.sh` into a staging directory, completions and man pages.

#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_testkit::{ImageBuilder, Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// The next message on a notify socket, within `timeout`.
fn next_message(sock: &UnixDatagram, timeout: Duration) -> String {
    sock.set_read_timeout(Some(timeout)).expect("set a read timeout");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a message on the notify socket");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn terminate(child: &mut std::process::Child) {
    let out = run(
        Command::new("kill").args(["-TERM", &child.id().to_string()]),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{out}");
}

#[test]
fn daemon_notifies_readiness_and_gives_its_socket_to_the_group() {
    if !require(&[Prereq::Root, Prereq::Docker]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let paths = Paths::new(dir.path(), "berth");
    let log = std::fs::File::create(&paths.log).expect("daemon log");
    let child = paths
        .command(&["--group", "adm"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the daemon");

    let ready = next_message(&notify, DAEMON_TIMEOUT);
    // READY=1 only once the socket answers.
    assert!(ready.contains("READY=1\n"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}\n", child.id())), "{ready}");
    assert!(ready.contains("STATUS=serving the Docker Engine API on"), "{ready}");
    let mut s = std::os::unix::net::UnixStream::connect(&paths.socket).expect("the socket answers at READY=1");
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: berth\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200") && answer.ends_with("OK"), "{answer}");

    let meta = std::fs::metadata(&paths.socket).expect("socket metadata");
    let adm = run(Command::new("getent").args(["group", "adm"]), CLI_TIMEOUT);
    let adm_gid: u32 = adm
        .stdout
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("Debian has group adm");
    assert_eq!(meta.gid(), adm_gid, "the socket belongs to group adm");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // Shims do not inherit NOTIFY_SOCKET (they would be taken for the daemon).
    let daemon = DaemonProcess {
        child,
        paths,
        docker_config: dir.path().join("docker-config"),
        cli_timeout: CLI_TIMEOUT,
    };
    std::fs::create_dir_all(&daemon.docker_config).unwrap();
    let archive = dir.path().join("busybox.tar");
    ImageBuilder::new()
        .write_docker_archive(&archive, "busybox:latest")
        .expect("write the busybox archive");
    daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        "n1",
        "--network",
        "none",
        "busybox",
        "sleep",
        "300",
    ]);
    let pid = daemon
        .docker_ok(&["inspect", "-f", "{{.State.Pid}}", "n1"])
        .stdout
        .trim()
        .to_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(|p| p.trim().to_owned())
        .unwrap();
    let environ = std::fs::read(format!("/proc/{ppid}/environ")).unwrap();
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap()).replace('\0', " ");
    assert!(
        cmdline.contains("shim"),
        "the container's parent is its shim: {cmdline}"
    );
    assert!(
        !String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET"),
        "the shim inherited NOTIFY_SOCKET"
    );
    daemon.docker_ok(&["rm", "-f", "n1"]);

    let mut daemon = daemon;
    terminate(&mut daemon.child);
    let stopping = next_message(&notify, DAEMON_TIMEOUT);
    assert!(stopping.contains("STOPPING=1\n"), "{stopping}\n{}", daemon.log());
    let status = wait_deadline(&mut daemon.child, DAEMON_TIMEOUT).expect("the daemon exits");
    assert!(status.success(), "{}", daemon.log());
}

#[test]
fn a_socket_group_that_does_not_exist_is_refused() {
    if !require(&[Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = Paths::new(dir.path(), "berth");
    let out = run(&mut paths.command(&["--group", "no-such-group-xyz"]), DAEMON_TIMEOUT);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("socket group \"no-such-group-xyz\" does not exist"),
        "{out}"
    );
    assert!(!paths.socket.exists(), "no socket is left");
    assert!(!paths.pidfile.exists(), "no pid file is left");
}

#[test]
fn registry_notifies_readiness_with_its_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let mut child = Command::new(BERTH)
        .args(["registry", "serve", "--addr", "127.0.0.1:0", "--root"])
        .arg(dir.path().join("registry"))
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the registry");
    let ready = next_message(&notify, DAEMON_TIMEOUT);
    println!("{ready}");
    assert!(ready.contains("READY=1\n"), "{ready}");
    let addr = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=serving the registry on "))
        .unwrap_or_else(|| panic!("no address in {ready}"))
        .to_owned();
    let mut s = std::net::TcpStream::connect(&addr).expect("the registry answers at READY=1");
    s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: registry\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    terminate(&mut child);
    let stopping = next_message(&notify, DAEMON_TIMEOUT);
    assert!(stopping.contains("STOPPING=1\n"), "{stopping}");
    let status = wait_deadline(&mut child, DAEMON_TIMEOUT).expect("the registry exits");
    assert!(status.success());
}

#[test]
fn completions_and_man_pages_are_generated() {
    let out = run(Command::new(BERTH).args(["completion", "bash"]), CLI_TIMEOUT);
    assert!(out.status.success(), "{out}");
    for sub in ["daemon", "registry", "system", "network", "completion"] {
        assert!(out.stdout.contains(sub), "bash completion lacks {sub}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("berth.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = run(Command::new("bash").arg("-n").arg(&script), CLI_TIMEOUT);
    assert!(check.status.success(), "bash -n: {check}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run(Command::new(BERTH).args(["completion", shell]), CLI_TIMEOUT);
        assert!(out.status.success() && out.stdout.contains("berth"), "{shell}: {out}");
    }
    let out = run(Command::new(BERTH).args(["completion", "tcsh"]), CLI_TIMEOUT);
    assert!(
        !out.status.success() && out.stderr.contains("invalid value 'tcsh'"),
        "{out}"
    );

    let man = dir.path().join("man1");
    let out = run(Command::new(BERTH).args(["man", "--dir"]).arg(&man), CLI_TIMEOUT);
    assert!(out.status.success(), "{out}");
    let pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for page in [
        "berth.1",
        "berth-daemon.1",
        "berth-registry-serve.1",
        "berth-system-info.1",
        "berth-run.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} missing from {pages:?}");
    }
    assert!(
        !pages.iter().any(|p| p.contains("shim")),
        "hidden commands get no page: {pages:?}"
    );
    // groff (Debian's groff-base, installed by .ci/install-deps; -k for UTF-8 as man does)
    // reads every page cleanly.
    for page in &pages {
        let out = run(
            Command::new("groff")
                .args(["-k", "-man", "-Tutf8", "-z", "-ww"])
                .arg(man.join(page)),
            CLI_TIMEOUT,
        );
        assert!(out.status.success() && out.stderr.trim().is_empty(), "{page}: {out}");
    }
    let text = run(
        Command::new("groff")
            .args(["-k", "-man", "-Tutf8"])
            .arg(man.join("berth-daemon.1")),
        CLI_TIMEOUT,
    );
    assert!(
        text.stdout.contains("Group of the API socket") && text.stdout.contains("Root of persistent state"),
        "{text}"
    );
}

#[test]
fn install_script_stages_units_completions_and_man_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stage = dir.path().join("stage");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/install.sh");
    let out = run(
        Command::new("sh")
            .arg(script)
            .args(["--binary", BERTH, "--prefix", "/usr"])
            .env("DESTDIR", &stage),
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{out}");
    for file in [
        "usr/bin/berth",
        "etc/systemd/system/berth.service",
        "etc/systemd/system/berth-registry.service",
        "usr/share/bash-completion/completions/berth",
        "usr/share/zsh/site-functions/_berth",
        "usr/share/fish/vendor_completions.d/berth.fish",
        "usr/share/man/man1/berth-daemon.1",
    ] {
        assert!(stage.join(file).is_file(), "{file} not installed");
    }
    let unit = std::fs::read_to_string(stage.join("etc/systemd/system/berth.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/berth daemon"),
        "the unit runs the installed binary: {unit}"
    );
    assert!(
        unit.contains("Type=notify") && unit.contains("KillMode=process"),
        "{unit}"
    );

    // systemd reads both units; the binary they name is the staged one here.
    let verify = dir.path().join("verify");
    std::fs::create_dir_all(&verify).unwrap();
    let staged_bin = stage.join("usr/bin/berth");
    let mut units = Vec::new();
    for name in ["berth.service", "berth-registry.service"] {
        let text = std::fs::read_to_string(stage.join("etc/systemd/system").join(name)).unwrap();
        let path = verify.join(name);
        std::fs::write(&path, text.replace("/usr/bin/berth", staged_bin.to_str().unwrap())).unwrap();
        units.push(path);
    }
    let out = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&units),
        CLI_TIMEOUT,
    );
    assert!(
        out.status.success() && out.stderr.trim().is_empty(),
        "systemd-analyze verify: {out}"
    );

    // A missing binary is a clear error, and nothing is staged.
    let empty = dir.path().join("empty");
    let out = run(
        Command::new("sh")
            .arg(script)
            .args(["--binary", "/nonexistent/berth"])
            .env("DESTDIR", &empty),
        CLI_TIMEOUT,
    );
    assert!(
        !out.status.success() && out.stderr.contains("no berth binary at /nonexistent/berth"),
        "{out}"
    );
    assert!(!empty.exists());
}
