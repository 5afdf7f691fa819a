//! Networking end to end, with the real docker CLI against a Berth daemon that runs in a
//! network namespace the test makes (`nsenter --net`): a fake "site" with a host bridge `br0`
//! (10.0.3.1/24) whose uplink veth leads to an "outside" namespace (10.0.3.200/24). The
//! host's own links, addresses, routes and nftables ruleset are never touched, and each test
//! checks that they are the same afterwards.
//!
//! Needs root, the docker CLI, iproute2, nftables, curl and busybox-static on the host.

// Test output is the reader's interface here: the docker CLI's output, for the record.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_testkit::{ImageBuilder, Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

#[path = "support/containers.rs"]
mod container_support;
use container_support::*;

#[path = "support/netns.rs"]
mod netns_support;
use netns_support::*;

/// The site: `br0` with 10.0.3.1/24 and an uplink to `outside` (10.0.3.200/24).
struct Site {
    host: Ns,
    outside: Ns,
}

impl Site {
    fn new() -> Site {
        let host = Ns::new("site");
        let outside = Ns::new("out");
        host.ip(&["link", "add", "br0", "type", "bridge"]);
        host.ip(&["addr", "add", "10.0.3.1/24", "dev", "br0"]);
        host.ip(&["link", "set", "br0", "up"]);
        host.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        host.ip(&["link", "set", "up0", "master", "br0", "up"]);
        outside.ip(&["addr", "add", "10.0.3.200/24", "dev", "eth0"]);
        outside.ip(&["link", "set", "eth0", "up"]);
        Site { host, outside }
    }
}

/// What a test must leave as it found it on the host.
fn host_snapshot() -> String {
    let mut s = String::new();
    for args in [
        &["-o", "link", "show"][..],
        &["-o", "addr", "show"][..],
        &["route", "show", "table", "all"][..],
    ] {
        let out = Command::new("ip").args(args).output().expect("run ip");
        // Counters and neighbour churn aside, the lines name what exists.
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let l = l.split(" qlen").next().unwrap_or(l);
            s.push_str(l.split("link/").next().unwrap_or(l));
            s.push('\n');
        }
    }
    let nft = Command::new("nft").args(["list", "ruleset"]).output().expect("run nft");
    s.push_str(&String::from_utf8_lossy(&nft.stdout));
    s
}

fn start(dir: &Path, ns: &Ns, extra: &[&str]) -> (ContainerCleanup, DaemonProcess) {
    let cleanup = ContainerCleanup {
        dir: dir.to_path_buf(),
        data_root: Paths::new(dir, "berth").data_root,
    };
    let daemon = DaemonProcess::start_in(Some(&ns.path()), CLI_TIMEOUT, dir, "berth", extra);
    let archive = dir.join("busybox.tar");
    if !archive.exists() {
        ImageBuilder::new()
            .write_docker_archive(&archive, "busybox:latest")
            .expect("write the busybox archive");
    }
    daemon.docker_ok(&["load", "-i", archive.to_str().expect("utf-8 path")]);
    (cleanup, daemon)
}

fn ip_of(daemon: &DaemonProcess, name: &str, network: &str) -> String {
    let v = inspect(daemon, name);
    v["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn addr_in(daemon: &DaemonProcess, name: &str) -> String {
    text(&daemon.docker_ok(&["exec", name, "busybox", "ip", "-o", "-4", "addr", "show", "eth0"]))
}

#[test]
fn site_bridge_static_addresses_names_and_published_ports() {
    require(&[Prereq::Root, Prereq::Docker, Prereq::Netns]);
    let before = host_snapshot();
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::new();
    let br0_before = site.host.ip(&["-o", "-4", "addr", "show", "br0"]);
    let routes_before = site.host.ip(&["route", "show"]);
    {
        let (_cleanup, mut daemon) = start(
            dir.path(),
            &site.host,
            &[
                "--bridge=br0",
                "--fixed-cidr=10.0.3.144/28",
                "--mtu=9000",
                "--ipv6=false",
            ],
        );

        // The Tier-1 recipe: an address from the fixed range on the site's bridge, MTU 9000,
        // and the site reachable.
        let out = daemon.docker_ok(&[
            "run", "--rm", "busybox", "sh", "-c",
            "busybox ip -o -4 addr show eth0; cat /sys/class/net/eth0/mtu; busybox ping -c1 -W3 10.0.3.200 >/dev/null && echo reached",
        ]);
        let got = text(&out);
        let addr: std::net::Ipv4Addr = got
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {got}"));
        assert!(
            (144..160).contains(&addr.octets()[3]) && addr.to_string().starts_with("10.0.3."),
            "{got}"
        );
        assert!(got.contains("/24"), "{got}");
        assert!(got.lines().any(|l| l.trim() == "9000"), "MTU 9000 inside\n{got}");
        assert!(got.contains("reached"), "the site is reachable\n{got}");
        // The site's bridge keeps its address and the host its routes.
        assert_eq!(site.host.ip(&["-o", "-4", "addr", "show", "br0"]), br0_before);
        assert_eq!(site.host.ip(&["route", "show"]), routes_before);

        // The xCAT native recipe.
        daemon.docker_ok(&[
            "network",
            "create",
            "--driver=bridge",
            "--subnet=10.5.107.0/24",
            "--gateway=10.5.107.1",
            "--ip-range=10.5.107.128/25",
            "-o",
            "com.docker.network.bridge.name=br1",
            "-o",
            "com.docker.network.bridge.host_binding_ipv4=10.0.3.1",
            "subnet1",
        ]);
        daemon.docker_ok(&[
            "run",
            "-d",
            "--name",
            "xcatmn",
            "--net=subnet1",
            "--ip=10.5.107.101",
            "--hostname",
            "xcatmn.clusters.com",
            "--add-host",
            "xcatmn.clusters.com xcatmn:10.5.107.101",
            "--dns",
            "10.5.107.1",
            "--dns-search",
            "clusters.com",
            "busybox",
            "sleep",
            "1000",
        ]);
        let check_xcat = |daemon: &DaemonProcess, when: &str| {
            assert_eq!(ip_of(daemon, "xcatmn", "subnet1"), "10.5.107.101", "{when}");
            assert!(addr_in(daemon, "xcatmn").contains("inet 10.5.107.101/24"), "{when}");
        };
        check_xcat(&daemon, "after run");
        let hosts = text(&daemon.docker_ok(&["exec", "xcatmn", "cat", "/etc/hosts"]));
        assert!(hosts.contains("10.5.107.101\txcatmn.clusters.com xcatmn\n"), "{hosts}");
        let resolv = text(&daemon.docker_ok(&["exec", "xcatmn", "cat", "/etc/resolv.conf"]));
        assert_eq!(resolv, "search clusters.com\nnameserver 10.5.107.1\n");
        assert_eq!(
            text(&daemon.docker_ok(&["exec", "xcatmn", "hostname"])).trim(),
            "xcatmn.clusters.com"
        );
        daemon.docker_ok(&["restart", "-t", "1", "xcatmn"]);
        check_xcat(&daemon, "after docker restart");
        daemon.docker_ok(&["stop", "-t", "1", "xcatmn"]);
        daemon.docker_ok(&["start", "xcatmn"]);
        check_xcat(&daemon, "after stop and start");
        // Another container cannot take the address.
        let out = daemon.docker(&["run", "--rm", "--net=subnet1", "--ip=10.5.107.101", "busybox", "true"]);
        assert!(!out.status.success(), "{out}");
        assert!(
            out.stderr.contains("10.5.107.101") && out.stderr.contains("xcatmn"),
            "names the holder\n{out}"
        );

        // Names: containers on one user network resolve each other, aliases too.
        daemon.docker_ok(&["network", "create", "n1"]);
        daemon.docker_ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--net",
            "n1",
            "--network-alias",
            "www",
            "busybox",
            "sleep",
            "1000",
        ]);
        let web_ip = ip_of(&daemon, "web", "n1");
        for name in ["web", "www", "WEB"] {
            let out = daemon.docker_ok(&["run", "--rm", "--net", "n1", "busybox", "busybox", "nslookup", name]);
            assert!(text(&out).contains(&web_ip), "{name} resolves to {web_ip}\n{out}");
        }

        // connect/disconnect on a running container, with a static address, IPv6 and an
        // alias; --mac-address.
        daemon.docker_ok(&[
            "network",
            "create",
            "--ipv6",
            "--subnet",
            "fd00:5::/64",
            "--subnet",
            "10.6.0.0/24",
            "v6net",
        ]);
        daemon.docker_ok(&[
            "network",
            "connect",
            "--ip",
            "10.6.0.9",
            "--ip6",
            "fd00:5::9",
            "--alias",
            "webv6",
            "v6net",
            "web",
        ]);
        let addrs = text(&daemon.docker_ok(&["exec", "web", "busybox", "ip", "-o", "addr"]));
        assert!(
            addrs.contains("10.6.0.9/24") && addrs.contains("fd00:5::9/64"),
            "{addrs}"
        );
        let out = daemon.docker_ok(&[
            "run", "--rm", "--net", "v6net", "busybox", "busybox", "nslookup", "webv6",
        ]);
        assert!(text(&out).contains("10.6.0.9"), "{out}");
        let out = daemon.docker_ok(&[
            "run",
            "--rm",
            "--net",
            "v6net",
            "busybox",
            "busybox",
            "ping",
            "-c1",
            "-W3",
            "fd00:5::9",
        ]);
        assert!(out.status.success(), "{out}");
        daemon.docker_ok(&["network", "disconnect", "v6net", "web"]);
        let addrs = text(&daemon.docker_ok(&["exec", "web", "busybox", "ip", "-o", "addr"]));
        assert!(!addrs.contains("10.6.0.9"), "{addrs}");
        let out = daemon.docker_ok(&[
            "run",
            "--rm",
            "--net",
            "v6net",
            "--mac-address",
            "02:42:aa:bb:cc:dd",
            "busybox",
            "cat",
            "/sys/class/net/eth0/address",
        ]);
        assert_eq!(text(&out).trim(), "02:42:aa:bb:cc:dd");

        // A published port: reachable from the host (its address and loopback) and from
        // another namespace, without a proxy process.
        daemon.docker_ok(&[
            "run",
            "-d",
            "--name",
            "srv",
            "--net",
            "n1",
            "-p",
            "8080:80",
            "busybox",
            "sh",
            "-c",
            "echo hello > /tmp/index.html; exec busybox httpd -f -p 80 -h /tmp",
        ]);
        wait_until("httpd answers", Duration::from_secs(10), || {
            site.host.fetch("http://10.0.3.1:8080/").is_some()
        });
        assert_eq!(site.host.fetch("http://10.0.3.1:8080/").as_deref(), Some("hello\n"));
        assert_eq!(site.host.fetch("http://127.0.0.1:8080/").as_deref(), Some("hello\n"));
        assert_eq!(site.outside.fetch("http://10.0.3.1:8080/").as_deref(), Some("hello\n"));
        // From containers too: another one on the network, and the server itself (hairpin).
        for from in ["web", "srv"] {
            // busybox-static's wget crashes in its resolver here; nc speaks HTTP/1.0 as well.
            let out = daemon.docker_ok(&[
                "exec",
                from,
                "sh",
                "-c",
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 5 10.0.3.1 8080",
            ]);
            assert!(text(&out).ends_with("hello\n"), "from {from}: {out}");
        }
        let port = text(&daemon.docker_ok(&["port", "srv"]));
        assert!(port.contains("80/tcp -> 0.0.0.0:8080"), "{port}");
        let ps = text(&daemon.docker_ok(&["ps", "--filter", "name=srv", "--format", "{{.Ports}}"]));
        assert!(ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
        // ps filters: publish= is the host's port, expose= the container's.
        for (filter, want) in [
            ("publish=8080", "srv"),
            ("publish=8000-8090/tcp", "srv"),
            ("expose=80", "srv"),
            ("publish=80", ""),
            ("publish=8080/udp", ""),
        ] {
            let ps = text(&daemon.docker_ok(&[
                "ps",
                "--filter",
                filter,
                "--filter",
                "name=srv",
                "--format",
                "{{.Names}}",
            ]));
            assert_eq!(ps.trim(), want, "--filter {filter}");
        }
        let out = daemon.docker(&["ps", "--filter", "publish=http"]);
        assert!(!out.status.success() && out.stderr.contains("PORT[/PROTO]"), "{out}");
        // -P picks a free port; host_binding_ipv4 is the default address of subnet1's.
        daemon.docker_ok(&[
            "run",
            "-d",
            "--name",
            "srv2",
            "--net",
            "subnet1",
            "-p",
            "80",
            "busybox",
            "sh",
            "-c",
            "echo two > /tmp/index.html; exec busybox httpd -f -p 80 -h /tmp",
        ]);
        let port = text(&daemon.docker_ok(&["port", "srv2", "80"]));
        assert!(port.starts_with("10.0.3.1:"), "{port}");
        let url = format!("http://{}/", port.trim());
        wait_until("srv2 answers", Duration::from_secs(10), || {
            site.outside.fetch(&url).is_some()
        });
        let out = daemon.docker(&["run", "--rm", "--net", "n1", "-p", "8080:81", "busybox", "true"]);
        assert!(
            !out.status.success() && out.stderr.contains("port is already allocated"),
            "{out}"
        );
        daemon.docker_ok(&["stop", "-t", "1", "srv"]);
        assert_eq!(
            site.host.fetch("http://10.0.3.1:8080/"),
            None,
            "the rule went with the container"
        );
        let rules = text(&site.host.exec("nft", &["list", "table", "inet", "berth"]));
        assert!(!rules.contains("8080"), "{rules}");
        let out = daemon.docker(&["run", "--rm", "--net", "host", "-p", "80:80", "busybox", "true"]);
        assert!(
            !out.status.success() && out.stderr.contains("host"),
            "-p with --net=host is refused\n{out}"
        );

        // An internal network reaches nothing outside, but its members reach each other.
        daemon.docker_ok(&["network", "create", "--internal", "int1"]);
        daemon.docker_ok(&[
            "run", "-d", "--name", "in1", "--net", "int1", "busybox", "sleep", "1000",
        ]);
        let in1 = ip_of(&daemon, "in1", "int1");
        let out = daemon.docker(&[
            "run",
            "--rm",
            "--net",
            "int1",
            "busybox",
            "busybox",
            "ping",
            "-c1",
            "-W2",
            "10.0.3.200",
        ]);
        assert!(!out.status.success(), "an internal network reaches the site\n{out}");
        daemon.docker_ok(&[
            "run", "--rm", "--net", "int1", "busybox", "busybox", "ping", "-c1", "-W2", &in1,
        ]);

        // A daemon killed and restarted: the containers still run, with their addresses,
        // names and ports; a restart after that keeps the static address.
        daemon.docker_ok(&["start", "srv"]);
        let _ = daemon.child.kill();
        let _ = daemon.child.wait();
        let daemon = DaemonProcess::start_in(
            Some(&site.host.path()),
            CLI_TIMEOUT,
            dir.path(),
            "berth",
            &["--bridge=br0", "--fixed-cidr=10.0.3.144/28", "--mtu=9000"],
        );
        check_xcat(&daemon, "after a daemon restart");
        wait_until("srv answers after the daemon restart", Duration::from_secs(10), || {
            site.outside.fetch("http://10.0.3.1:8080/").is_some()
        });
        let out = daemon.docker_ok(&["run", "--rm", "--net", "n1", "busybox", "busybox", "nslookup", "web"]);
        assert!(text(&out).contains(&web_ip), "{out}");
        daemon.docker_ok(&["restart", "-t", "1", "xcatmn"]);
        check_xcat(&daemon, "after a restart by the new daemon");

        daemon.docker_ok(&["rm", "-f", "xcatmn", "web", "srv", "srv2", "in1"]);
        for n in ["subnet1", "n1", "int1", "v6net"] {
            daemon.docker_ok(&["network", "rm", n]);
        }
        // The kernel destroys a container's namespace, and its veth pair, soon after the exit.
        wait_until("the veth pairs are gone", Duration::from_secs(10), || {
            !site.host.ip(&["-o", "link", "show"]).contains("bv")
        });
        let links = site.host.ip(&["-o", "link", "show"]);
        assert!(!links.contains("br1") && !links.contains("br-"), "{links}");
        assert_eq!(site.host.ip(&["-o", "-4", "addr", "show", "br0"]), br0_before);
        let (status, _) = daemon.terminate();
        assert!(status.success());
    }
    drop(site);
    assert_eq!(
        host_snapshot(),
        before,
        "the host's links, addresses, routes and ruleset changed"
    );
}

#[test]
fn bad_network_input_is_refused_and_leaves_nothing() {
    require(&[Prereq::Root, Prereq::Docker, Prereq::Netns]);
    let before = host_snapshot();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = Ns::new("bad");
    {
        let (_cleanup, daemon) = start(dir.path(), &ns, &[]);
        let refused = |args: &[&str], says: &str| {
            let out = daemon.docker(args);
            assert!(!out.status.success(), "{args:?} succeeded\n{out}");
            assert!(out.stderr.contains(says), "{args:?} should say {says:?}\n{out}");
        };
        daemon.docker_ok(&["network", "create", "--subnet", "10.9.0.0/16", "a"]);
        refused(&["network", "create", "--subnet", "10.9.1.0/24", "b"], "overlaps");
        refused(&["network", "create", "--subnet", "10.8.0.0/16", "a"], "already exists");
        refused(&["network", "create", "--subnet", "10.7.0.1/16", "c"], "host bits");
        // The CLI checks this one itself; the daemon must too.
        let out = sh(Command::new("curl").args([
            "-sS",
            "--unix-socket",
            daemon.paths.socket.to_str().expect("utf-8"),
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "http://berth/networks/create",
            "-d",
            r#"{"Name":"c","IPAM":{"Config":[{"Subnet":"10.7.0.0/16","Gateway":"10.6.0.1"}]}}"#,
        ]));
        assert!(
            out.stdout.contains("gateway 10.6.0.1 is not inside subnet 10.7.0.0/16"),
            "{out}"
        );
        refused(
            &["run", "--rm", "--net", "a", "--ip", "10.10.0.5", "busybox", "true"],
            "no configured subnet",
        );
        refused(
            &["run", "--rm", "--ip", "172.17.0.9", "busybox", "true"],
            "user defined networks only",
        );
        refused(
            &["run", "--rm", "--net", "nope", "busybox", "true"],
            "network nope not found",
        );
        daemon.docker_ok(&[
            "run",
            "-d",
            "--name",
            "one",
            "--net",
            "a",
            "--ip",
            "10.9.0.50",
            "busybox",
            "sleep",
            "1000",
        ]);
        refused(
            &[
                "run",
                "-d",
                "--name",
                "two",
                "--net",
                "a",
                "--ip",
                "10.9.0.50",
                "busybox",
                "sleep",
                "1",
            ],
            "one",
        );
        refused(&["network", "rm", "a"], "active endpoints");
        refused(&["network", "rm", "bridge"], "pre-defined");
        // A link that is not a bridge (a veth end: this kernel may lack the dummy driver).
        ns.ip(&["link", "add", "dum0", "type", "veth", "peer", "name", "dum0p"]);
        refused(
            &["network", "create", "-o", "com.docker.network.bridge.name=dum0", "x"],
            "not a bridge",
        );
        refused(
            &[
                "network",
                "create",
                "-o",
                "com.docker.network.bridge.name=waytoolongname00",
                "x",
            ],
            "at most 15",
        );
        refused(
            &[
                "network",
                "create",
                "-d",
                "macvlan",
                "-o",
                "parent=nope0",
                "--subnet",
                "10.20.0.0/24",
                "mv",
            ],
            "no such network interface",
        );
        refused(&["network", "create", "-d", "overlay", "ov"], "overlay");

        // macvlan on a NIC (a veth end stands in for it).
        ns.ip(&["link", "add", "nic0", "type", "veth", "peer", "name", "nic0p"]);
        ns.ip(&["link", "set", "nic0", "up"]);
        ns.ip(&["link", "set", "nic0p", "up"]);
        daemon.docker_ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "-o",
            "parent=nic0",
            "--subnet",
            "10.30.0.0/24",
            "mv",
        ]);
        let out = daemon.docker_ok(&[
            "run",
            "--rm",
            "--net",
            "mv",
            "--ip",
            "10.30.0.5",
            "busybox",
            "busybox",
            "ip",
            "-o",
            "-4",
            "addr",
        ]);
        assert!(text(&out).contains("10.30.0.5/24"), "{out}");
        refused(
            &[
                "network",
                "create",
                "-d",
                "macvlan",
                "-o",
                "parent=nic0",
                "--subnet",
                "10.31.0.0/24",
                "mv2",
            ],
            "already using parent interface",
        );
        daemon.docker_ok(&["network", "rm", "mv"]);
        assert!(
            ns.ip(&["-o", "link", "show"]).contains("nic0"),
            "a parent Berth did not make stays"
        );

        let nets = text(&daemon.docker_ok(&["network", "ls", "--format", "{{.Name}}"]));
        let mut nets: Vec<&str> = nets.lines().collect();
        nets.sort();
        assert_eq!(nets, ["a", "bridge", "host", "none"]);
        let ps = text(&daemon.docker_ok(&["ps", "-a", "--format", "{{.Names}}"]));
        assert_eq!(ps.trim(), "one", "refused containers are not left behind");
        // The same through `berth network`.
        let berth = |args: &[&str]| {
            sh(Command::new(env!("CARGO_BIN_EXE_berth"))
                .env_remove("BERTH_HOST")
                .env_remove("DOCKER_HOST")
                .args(["-H", &daemon.paths.host()])
                .args(args))
        };
        let out = berth(&[
            "network",
            "create",
            "--subnet",
            "10.40.0.0/24",
            "--gateway",
            "10.40.0.1",
            "-o",
            "com.docker.network.bridge.name=brcli",
            "--label",
            "site=lab",
            "cli1",
        ]);
        assert!(out.status.success(), "{out}");
        let ls = berth(&["network", "ls"]);
        assert!(
            ls.stdout.starts_with("NETWORK ID") && ls.stdout.contains(" cli1 "),
            "{ls}"
        );
        let ls = berth(&["network", "ls", "--format", "json", "-f", "label=site=lab"]);
        let rows: Vec<serde_json::Value> = ls
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(rows.len(), 1, "{ls}");
        assert_eq!(rows[0]["Name"], "cli1");
        assert!(berth(&["network", "inspect", "cli1"]).stdout.contains("10.40.0.0/24"));
        assert!(
            berth(&[
                "network",
                "connect",
                "--ip",
                "10.40.0.9",
                "--alias",
                "uno",
                "cli1",
                "one"
            ])
            .status
            .success()
        );
        let addrs = text(&daemon.docker_ok(&["exec", "one", "busybox", "ip", "-o", "-4", "addr"]));
        assert!(addrs.contains("10.40.0.9/24"), "{addrs}");
        assert!(berth(&["network", "disconnect", "cli1", "one"]).status.success());
        let out = berth(&["network", "create", "--subnet", "10.40.0.0/25", "cli2"]);
        assert!(!out.status.success() && out.stderr.contains("overlaps"), "{out}");
        assert!(berth(&["network", "rm", "cli1"]).status.success());
        let out = berth(&["network", "rm", "nosuch"]);
        assert!(
            !out.status.success() && out.stderr.contains("network nosuch not found"),
            "{out}"
        );
        assert!(berth(&["network", "prune"]).status.success());
        daemon.docker_ok(&["rm", "-f", "one"]);
        daemon.docker_ok(&["network", "rm", "a"]);
        wait_until("the veth pairs are gone", Duration::from_secs(10), || {
            !ns.ip(&["-o", "link", "show"]).contains("bv")
        });
        let links = ns.ip(&["-o", "link", "show"]);
        assert!(!links.contains("br-"), "{links}");
    }
    drop(ns);
    assert_eq!(
        host_snapshot(),
        before,
        "the host's links, addresses, routes and ruleset changed"
    );
}
