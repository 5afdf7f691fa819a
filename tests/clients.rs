//! The Docker ecosystem's own clients against a fresh Berth daemon: docker-py (a scripted
//! session, also with the API version pinned to 1.41 and 1.44), Ansible's `community.docker`
//! (a site playbook run twice: the second run changes nothing) and Debian's docker-compose
//! (three services on a user network with static addresses).
//!
//! Each test makes a network namespace, runs the daemon and a `berth registry serve` with
//! htpasswd in it, and pushes the busybox test image to that registry, so the clients pull
//! for real. The clients' own files are in `tests/clients/`.
//!
//! Needs root, the docker CLI, iproute2, nftables, busybox-static, apache2-utils (htpasswd),
//! and the clients: `python3` with docker-py, `ansible-playbook` with `community.docker`,
//! `docker-compose`.

// Test output is the reader's interface here: what the clients printed, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_testkit::{ImageBuilder, Prereq, RegistryProcess, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

#[path = "support/netns.rs"]
mod netns_support;
use netns_support::*;

/// How long one client run (a whole session or playbook) may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// The client files of these tests.
fn client_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(name)
}

/// A daemon and a registry in a namespace of their own, the registry holding
/// `site/busybox:1` (user `site`, password `secret`) and the daemon holding no image.
struct Site {
    // Drop order: the daemon, then its containers' leftovers, then the registry and the
    // namespace.
    daemon: DaemonProcess,
    _cleanup: ContainerCleanup,
    registry: RegistryProcess,
    ns: Ns,
    dir: PathBuf,
}

impl Site {
    fn new(dir: &Path, tag: &str) -> Site {
        let ns = Ns::new(tag);
        let htpasswd = dir.join("htpasswd");
        let out = run(
            Command::new("htpasswd").args(["-Bbn", "site", "secret"]),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "htpasswd: {out}");
        fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
        let reg_root = dir.join("registry");
        let registry = RegistryProcess::start_in(
            Some(&ns.path()),
            Path::new(env!("CARGO_BIN_EXE_berth")),
            &[
                "--root",
                reg_root.to_str().expect("utf-8 path"),
                "--htpasswd",
                htpasswd.to_str().expect("utf-8 path"),
            ],
        )
        .expect("start the registry");
        let cleanup = ContainerCleanup {
            dir: dir.to_path_buf(),
            data_root: Paths::new(dir, "berth").data_root,
        };
        let daemon = DaemonProcess::start_in(Some(&ns.path()), CLIENT_TIMEOUT, dir, "berth", &[]);
        let site = Site {
            daemon,
            _cleanup: cleanup,
            registry,
            ns,
            dir: dir.to_path_buf(),
        };
        let archive = dir.join("busybox.tar");
        ImageBuilder::new()
            .write_docker_archive(&archive, "busybox:latest")
            .expect("write the busybox archive");
        let d = &site.daemon;
        d.docker_ok(&["load", "-i", archive.to_str().expect("utf-8 path")]);
        d.docker_ok(&["login", "-u", "site", "-p", "secret", &site.registry()]);
        d.docker_ok(&["tag", "busybox:latest", &site.image()]);
        d.docker_ok(&["push", &site.image()]);
        d.docker_ok(&["rmi", &site.image(), "busybox:latest"]);
        d.docker_ok(&["logout", &site.registry()]);
        assert_eq!(
            d.docker_ok(&["images", "-q"]).stdout,
            "",
            "the daemon starts with no image"
        );
        site
    }

    /// `127.0.0.1:PORT` in the namespace.
    fn registry(&self) -> String {
        self.registry.addr().to_string()
    }

    fn image(&self) -> String {
        format!("{}/site/busybox:1", self.registry())
    }

    /// A client program, in the namespace (so that it reaches published ports there too),
    /// with the daemon in `DOCKER_HOST` and nothing of the user's own configuration.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path().display()))
            .arg(program)
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_HOST", self.daemon.paths.host())
            .env("DOCKER_CONFIG", &self.daemon.docker_config)
            .env("HOME", &self.dir)
            .current_dir(&self.dir);
        cmd
    }

    /// Nothing the clients made is left: no container, no user network, no volume, and no
    /// published port in the namespace's firewall.
    fn assert_clean(&self, what: &str) {
        let d = &self.daemon;
        assert_eq!(d.docker_ok(&["ps", "-aq"]).stdout, "", "containers left after {what}");
        let nets = d.docker_ok(&["network", "ls", "--format", "{{.Name}}"]).stdout;
        let mut nets: Vec<&str> = nets.lines().collect();
        nets.sort_unstable();
        assert_eq!(nets, ["bridge", "host", "none"], "networks left after {what}");
        assert_eq!(
            d.docker_ok(&["volume", "ls", "-q"]).stdout,
            "",
            "volumes left after {what}"
        );
        let nft = self.ns.exec("nft", &["list", "ruleset"]);
        assert!(
            !nft.stdout.contains("dport"),
            "published ports left after {what}:\n{}",
            nft.stdout
        );
    }
}

fn show(what: &str, out: &Output) {
    println!("$ {what}\n{}{}", out.stdout, out.stderr);
}

#[test]
fn docker_py_session_also_with_pinned_api_versions() {
    if !require(&[Prereq::Root, Prereq::Docker, Prereq::Netns, Prereq::DockerPy]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::new(dir.path(), "py");
    let script = client_file("docker_py_session.py");
    for version in ["auto", "1.41", "1.44"] {
        let out = run(
            site.client("python3")
                .arg(&script)
                .env("BERTH_SOCK", &site.daemon.paths.socket)
                .env("REGISTRY", site.registry())
                .env("API_VERSION", version),
            CLIENT_TIMEOUT,
        );
        show(&format!("python3 docker_py_session.py (API {version})"), &out);
        assert!(
            out.status.success(),
            "docker-py session (API {version}) failed: {out}\n--- daemon log\n{}",
            site.daemon.log()
        );
        let summary: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("no summary line ({e}): {out}"));
        let want = if version == "auto" { "1.45" } else { version };
        assert_eq!(summary["api_version"], want, "{summary}");
        assert_eq!(summary["ip"], "10.77.0.50", "{summary}");
        assert_eq!(summary["logs"], "started\n", "{summary}");
        assert!(
            summary["bad_login"]
                .as_str()
                .is_some_and(|m| m.contains("unauthorized")),
            "a wrong password is refused with the registry's reason: {summary}"
        );
        // The daemon saw the requests under the pinned version's prefix.
        if version != "auto" {
            site.assert_clean(&format!("the docker-py session (API {version})"));
        }
    }
    site.assert_clean("the docker-py sessions");
}

#[test]
fn ansible_playbook_twice_changes_nothing_the_second_time() {
    if !require(&[Prereq::Root, Prereq::Docker, Prereq::Netns, Prereq::Ansible]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::new(dir.path(), "ans");
    let hostdir = dir.path().join("hostdir");
    fs::create_dir_all(&hostdir).expect("create the bind-mounted directory");
    fs::write(hostdir.join("site.conf"), "site=t1\n").expect("write a file to mount");
    let playbook = |phase: &str, extra: &[&str]| {
        let out = run(
            site.client("ansible-playbook")
                // docker_login writes ~/.docker/config.json, where docker_image reads it.
                .env_remove("DOCKER_CONFIG")
                .arg(client_file("ansible_site.yml"))
                .args(["-e", &format!("docker_host={}", site.daemon.paths.host())])
                .args(["-e", &format!("registry={}", site.registry())])
                .args(["-e", &format!("hostdir={}", hostdir.display())])
                .args(["-e", &format!("phase={phase}")])
                .args(extra)
                .env("ANSIBLE_NOCOLOR", "1")
                .env("ANSIBLE_HOME", dir.path().join("ansible"))
                .env("ANSIBLE_LOCAL_TEMP", dir.path().join("ansible-tmp"))
                .env("ANSIBLE_LOCALHOST_WARNING", "false")
                .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
                .env("ANSIBLE_DIFF_ALWAYS", "true"),
            CLIENT_TIMEOUT,
        );
        show(&format!("ansible-playbook ansible_site.yml -e phase={phase}"), &out);
        assert!(
            out.status.success(),
            "playbook (phase {phase}) failed: {out}\n--- daemon log\n{}",
            site.daemon.log()
        );
        recap(&out.stdout)
    };
    let first = playbook("up", &[]);
    assert_eq!(first.failed, 0);
    assert!(
        first.changed >= 6,
        "the first run creates the network, volume and containers: {first:?}"
    );
    // Every option of the containers read back as it was given: nothing to change.
    let second = playbook("up", &[]);
    assert_eq!(second.changed, 0, "the second run changed something: {second:?}");
    assert_eq!(second.ok, first.ok);

    // What the playbook asked for is what runs.
    let d = &site.daemon;
    let wn1 = inspect(d, "wn1");
    assert_eq!(wn1["NetworkSettings"]["Networks"]["sitenet"]["IPAddress"], "10.88.0.10");
    let logs = d.docker_ok(&["logs", "wn1"]).stdout;
    assert!(logs.starts_with("wn1.site.example\n"), "{logs}");
    assert!(
        logs.contains("nameserver 10.88.0.1") && logs.contains("search site.example"),
        "{logs}"
    );
    assert_eq!(
        d.docker_ok(&["exec", "wn1", "cat", "/host/site.conf"]).stdout,
        "site=t1\n"
    );
    let mgmt = inspect(d, "mgmt");
    assert_eq!(mgmt["HostConfig"]["Privileged"], true);
    wait_until("mgmt healthy", Duration::from_secs(15), || {
        inspect(d, "mgmt")["State"]["Health"]["Status"] == "healthy"
    });
    assert_eq!(mgmt["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(mgmt["State"]["Running"], true);
    assert_eq!(inspect(d, "parked")["State"]["Status"], "created");

    // A real change is seen and applied: one container recreated with the new value.
    let before = inspect(d, "wn1")["Id"].clone();
    let third = playbook("up", &["-e", "site_tag=t2"]);
    assert_eq!(third.changed, 1, "only the worker changes: {third:?}");
    let wn1 = inspect(d, "wn1");
    assert_ne!(wn1["Id"], before, "the worker was recreated");
    assert!(
        wn1["Config"]["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "SITE=t2")),
        "{wn1}"
    );
    assert_eq!(
        wn1["NetworkSettings"]["Networks"]["sitenet"]["IPAddress"], "10.88.0.10",
        "same address"
    );

    let cycle = playbook("cycle", &[]);
    assert!(cycle.changed >= 6, "{cycle:?}");
    site.assert_clean("the playbook's cycle phase");
    assert_eq!(d.docker_ok(&["images", "-q"]).stdout, "", "the image was removed");
}

/// The numbers of ansible-playbook's `PLAY RECAP` line.
#[derive(Debug, Default)]
struct Recap {
    ok: u32,
    changed: u32,
    failed: u32,
}

fn recap(stdout: &str) -> Recap {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .unwrap_or_else(|| panic!("no recap line in:\n{stdout}"));
    let field = |name: &str| -> u32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
    };
    Recap {
        ok: field("ok"),
        changed: field("changed"),
        failed: field("failed"),
    }
}

#[test]
fn compose_three_services_up_ps_logs_down() {
    if !require(&[Prereq::Root, Prereq::Docker, Prereq::Netns, Prereq::DockerCompose]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::new(dir.path(), "compose");
    // docker-compose has no `login`: the daemon's credentials come from docker's config.
    site.daemon
        .docker_ok(&["login", "-u", "site", "-p", "secret", &site.registry()]);
    let compose = |args: &[&str]| {
        let out = run(
            site.client("docker-compose")
                .args(["-p", "site", "-f"])
                .arg(client_file("compose.yml"))
                .args(args)
                .env("IMAGE", site.image())
                .env("COMPOSE_INTERACTIVE_NO_CLI", "1"),
            CLIENT_TIMEOUT,
        );
        show(&format!("docker-compose {}", args.join(" ")), &out);
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed: {out}\n--- daemon log\n{}",
            site.daemon.log()
        );
        out
    };
    let up = compose(&["up", "-d"]);
    for name in ["site_db_1", "site_app_1", "site_web_1"] {
        assert!(up.stderr.contains(&format!("Creating {name} ... done")), "{up}");
    }
    // depends_on: db, then app, then web.
    let pos = |n: &str| up.stderr.find(&format!("Creating {n} ... done")).expect("created");
    assert!(
        pos("site_db_1") < pos("site_app_1") && pos("site_app_1") < pos("site_web_1"),
        "{up}"
    );

    let ps = compose(&["ps"]);
    let rows: Vec<&str> = ps.stdout.lines().filter(|l| l.starts_with("site_")).collect();
    assert_eq!(rows.len(), 3, "one row per service: {ps}");
    assert!(rows.iter().all(|r| r.contains(" Up ")), "{ps}");
    assert!(ps.stdout.contains("0.0.0.0:8088->80/tcp"), "{ps}");

    let d = &site.daemon;
    assert_eq!(
        inspect(d, "site_db_1")["NetworkSettings"]["Networks"]["site_site"]["IPAddress"],
        "10.99.0.10"
    );
    assert_eq!(
        inspect(d, "site_app_1")["NetworkSettings"]["Networks"]["site_site"]["IPAddress"],
        "10.99.0.11"
    );
    assert_eq!(
        inspect(d, "site_web_1")["HostConfig"]["RestartPolicy"]["Name"],
        "always"
    );
    // db's health check passes.
    wait_until("db healthy", Duration::from_secs(15), || {
        inspect(d, "site_db_1")["State"]["Health"]["Status"] == "healthy"
    });
    let ps = compose(&["ps"]);
    assert!(ps.stdout.contains("Up (healthy)"), "{ps}");
    // app reached db by its service name and wrote what it got to the shared volume.
    wait_until("app to fetch from db", Duration::from_secs(15), || {
        d.docker(&["exec", "site_app_1", "cat", "/data/from-db"]).stdout == "pong\n"
    });
    // The published port, from the namespace's own address.
    let mut body = None;
    wait_until("web's published port", Duration::from_secs(15), || {
        body = site.ns.fetch("http://127.0.0.1:8088/");
        body.is_some()
    });
    assert_eq!(body.as_deref(), Some("hello from web\n"));

    let logs = compose(&["logs", "--no-color"]);
    for service in ["db", "app", "web"] {
        assert!(
            logs.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{service}_1")) && l.ends_with(&format!("{service} up"))),
            "{logs}"
        );
    }
    let down = compose(&["down", "-v", "-t", "1"]);
    assert!(down.stderr.contains("Removing network site_site"), "{down}");
    assert!(down.stderr.contains("Removing volume site_dbdata"), "{down}");
    site.assert_clean("docker-compose down -v");
}
