//! Throwaway network namespaces for the nft and dns tests: created with `ip netns add`,
//! deleted when dropped (also when the test panics), and code run inside one on a thread
//! that entered it. Traffic stays inside namespaces the test made.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};

use berth_testkit::{Prereq, require};

/// Root, network namespaces and a working `nft`; see `berth_testkit::require` for the
/// skip/fail rule.
pub fn require_nft() -> bool {
    if !require(&[Prereq::Root, Prereq::Netns]) {
        return false;
    }
    if let Err(e) = berth_net::nft::available() {
        let message = format!("skipped: needs nftables ({e})");
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
            panic!("{message}");
        }
        let _ = writeln!(std::io::stderr(), "{message}");
        return false;
    }
    true
}

/// A network namespace `berth-t-<random>`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!("berth-t-{:08x}", rand::random::<u32>());
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n <name> <args>`; panics when it fails.
    pub fn ip(&self, args: &str) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args.split_whitespace());
        run("ip", &all);
    }

    /// A command inside the namespace (through `nsenter --net`); its stdout.
    pub fn output(&self, program: &str, args: &[&str]) -> String {
        let net = format!("--net=/run/netns/{}", self.name);
        let mut all = vec![net.as_str(), program];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    /// Runs `f` on a thread inside the namespace and returns what it returns (a panic in it
    /// is the caller's panic).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = self.file();
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                enter(&file);
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a detached thread inside the namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let file = self.file();
        std::thread::spawn(move || {
            enter(&file);
            f()
        })
    }

    fn file(&self) -> File {
        let path = format!("/run/netns/{}", self.name);
        File::open(&path).unwrap_or_else(|e| panic!("failed to open {path}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "failed to delete netns {}: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "failed to run ip netns delete {}: {e}", self.name);
            }
        }
    }
}

fn enter(file: &File) {
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
