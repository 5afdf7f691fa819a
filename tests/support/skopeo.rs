//! Seeding a registry for the daemon's end-to-end tests: `skopeo copy` of the testkit image
//! (written as an OCI layout) to a registry. Included with `#[path]` next to `daemon.rs`,
//! whose `run` and `CLI_TIMEOUT`-style deadlines it uses.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_testkit::{ImageBuilder, ImageInfo};

use super::daemon_support::run;

/// A copy may take this long.
const COPY_TIMEOUT: Duration = Duration::from_secs(180);

/// `skopeo copy --quiet --dest-tls-verify=false SRC DEST` with `extra` flags, run in the
/// network namespace `netns` (`/run/netns/NAME`) when given; panics with skopeo's output
/// unless it succeeds. TLS is not checked: seeding is not what these tests test.
pub(crate) fn copy(src: &str, dest: &str, extra: &[&str], netns: Option<&Path>) {
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", ns.display())).arg("skopeo");
            cmd
        }
        None => Command::new("skopeo"),
    };
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .args([src, dest]);
    let out = run(&mut cmd, COPY_TIMEOUT);
    assert!(out.status.success(), "seeding the registry failed\n{out}");
}

/// Writes `builder`'s image as an OCI layout under `work` and copies it to
/// `host/repo:tag`, with `creds` (`user:password`) when the registry wants them.
pub(crate) fn push(
    builder: &ImageBuilder,
    work: &Path,
    host: &str,
    repo: &str,
    tag: &str,
    creds: Option<&str>,
    netns: Option<&Path>,
) -> ImageInfo {
    let layout = work.join(format!("layout-{}-{tag}", repo.replace('/', "-")));
    let info = builder.write_oci_layout(&layout, tag).expect("write the OCI layout");
    let mut extra = Vec::new();
    if let Some(c) = creds {
        extra.extend(["--dest-creds", c]);
    }
    copy(
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{host}/{repo}:{tag}"),
        &extra,
        netns,
    );
    info
}
