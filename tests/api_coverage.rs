//! `docs/api-coverage.md` cannot drift from the daemon: every row (each operation of the
//! Docker Engine API v1.45) is called on a real daemon; `served` and `partial` rows must not
//! answer 501 and `not served` rows must. The counts in its summary line are the rows'.
//!
//! Needs root (the daemon's overlay and cgroups).

#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;

use berth_testkit::{Prereq, require};

#[path = "support/daemon.rs"]
mod daemon_support;
use daemon_support::*;

/// Operations in moby's `api/docs/v1.45.yaml`.
const OPERATIONS: usize = 107;

struct Row {
    method: String,
    path: String,
    state: String,
    note: String,
}

fn rows(doc: &str) -> Vec<Row> {
    doc.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Method"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a row has method, path, state, notes: {l}");
            Row {
                method: cells[0].to_owned(),
                path: cells[1].trim_matches('`').to_owned(),
                state: cells[2].to_owned(),
                note: cells[3].to_owned(),
            }
        })
        .collect()
}

/// A concrete path for a row: path parameters name things that do not exist, and image
/// names point at a closed loopback port, so nothing is changed and nothing leaves the host.
fn concrete(path: &str) -> String {
    let name = if path.starts_with("/images/") || path.starts_with("/distribution/") {
        "127.0.0.1:9/berth-coverage/missing:1"
    } else {
        "berth-coverage-missing"
    };
    path.replace("{id}", "berth-coverage-missing").replace("{name}", name)
}

#[test]
fn coverage_list_matches_what_the_daemon_serves() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api-coverage.md"))
        .expect("read docs/api-coverage.md");
    let rows = rows(&doc);
    assert_eq!(rows.len(), OPERATIONS, "one row per operation of API v1.45");
    let unique: BTreeSet<(&str, &str)> = rows.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    assert_eq!(unique.len(), rows.len(), "an operation is listed twice");
    for r in &rows {
        assert!(
            ["served", "partial", "not served"].contains(&r.state.as_str()),
            "unknown state {:?} for {} {}",
            r.state,
            r.method,
            r.path
        );
        assert!(
            r.state == "served" || !r.note.is_empty(),
            "{} {} is {} without saying what is missing",
            r.method,
            r.path,
            r.state
        );
    }
    let count = |s: &str| rows.iter().filter(|r| r.state == s).count();
    let (full, partial, none) = (count("served"), count("partial"), count("not served"));
    let summary = format!(
        "**{} of {} operations served ({}%): {full} fully, {partial} partially; {none} not served.**",
        full + partial,
        rows.len(),
        (full + partial) * 100 / rows.len()
    );
    assert!(doc.contains(&summary), "the summary line should read:\n{summary}");

    if !require(&[Prereq::Root]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProcess::start(dir.path(), "berth", &[]);
    let mut wrong = Vec::new();
    for r in &rows {
        let path = concrete(&r.path);
        let (status, _) = daemon.request(&r.method, &format!("/v1.45{path}"), &[], b"", true);
        let served = status != 501;
        println!("{:<6} {:<40} {:<10} -> {status}", r.method, r.path, r.state);
        if served != (r.state != "not served") {
            wrong.push(format!(
                "{} {} is listed {:?} but answers {status}",
                r.method, r.path, r.state
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/api-coverage.md is out of date:\n{}",
        wrong.join("\n")
    );
    // The probe can tell: a path no API has is a 501 too.
    let (status, _) = daemon.request("GET", "/v1.45/berth-coverage/none", &[], b"", true);
    assert_eq!(status, 501);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");
}
