//! Network namespaces for end-to-end tests: made with `ip netns add`, deleted when dropped
//! (also when the test fails), and commands run inside them.
//!
//! Include it after `support/daemon.rs`:
//! `#[path = "support/netns.rs"] mod netns_support; use netns_support::*;`

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::daemon_support::*;

/// Runs `cmd` (30 s at most) and prints it with its output, for the record.
pub(crate) fn sh(cmd: &mut Command) -> Output {
    let out = run(cmd, Duration::from_secs(30));
    println!("$ {cmd:?}\n{}{}", out.stdout, out.stderr);
    out
}

pub(crate) fn text(o: &Output) -> String {
    o.stdout.clone()
}

/// A namespace made with `ip netns add`, deleted when dropped (also when the test fails).
pub(crate) struct Ns {
    pub(crate) name: String,
}

impl Ns {
    pub(crate) fn new(tag: &str) -> Ns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "berth-net-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let out = sh(Command::new("ip").args(["netns", "add", &name]));
        assert!(out.status.success(), "ip netns add {name}");
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let out = sh(Command::new("ip").args(["-n", &self.name]).args(args));
        assert!(out.status.success(), "ip -n {} {args:?}", self.name);
        text(&out)
    }

    /// A program run inside the namespace.
    pub(crate) fn exec(&self, program: &str, args: &[&str]) -> Output {
        sh(Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .arg(program)
            .args(args))
    }

    /// `curl URL` from inside the namespace.
    pub(crate) fn fetch(&self, url: &str) -> Option<String> {
        let out = self.exec("curl", &["-sS", "-m", "3", url]);
        out.status.success().then(|| text(&out))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}
