//! Crash safety, index rebuild and garbage collection of `berth registry serve`, against the
//! real binary over HTTP.
//!
//! - The crash test pushes many images at once (monolithic, chunked and streamed uploads),
//!   `kill -9`s the registry while some pushes are acknowledged and others are mid-upload,
//!   restarts it on the same root, and checks that every acknowledged push pulls back byte
//!   for byte, that everything listed is complete, that every blob file hashes to its name,
//!   and that an offline `berth registry gc` keeps every acknowledged blob.
//! - The index test deletes `index.redb` (and runs `berth registry reindex`) and checks that
//!   tags, catalog, search and referrers come back identical: the index is derived data.
//! - The GC tests run the online collector beside pushes, and check the grace period.

// Progress and timings of the long tests are the reader's interface: printed to stderr.
#![allow(clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use berth_oci::media_types;
use berth_testkit::RegistryProcess;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
/// Any single HTTP exchange gets this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// `berth registry gc` and `reindex` get this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// The crash test
// ---------------------------------------------------------------------------------------

/// Concurrent pushes per round.
const PUSHES: usize = 24;
/// Each round kills the registry once this share of its pushes is acknowledged.
const KILL_AT: [f64; 3] = [0.4, 0.15, 0.7];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_pushes_loses_no_acknowledged_push() {
    let _exclusive = exclusive().await;
    let started = Instant::now();
    let store = Store::new();
    let mut acked: Vec<Pushed> = Vec::new();
    let blob_acks = Arc::new(Mutex::new(Vec::<BlobAck>::new()));
    let mut registry = store.serve(&[]).expect("registry starts");

    for (round, fraction) in KILL_AT.iter().enumerate() {
        let round_started = Instant::now();
        let client = Client::new(&registry.url()).recording(blob_acks.clone());
        let threshold = ((PUSHES as f64) * fraction).ceil() as usize;
        let outcome = push_and_kill(&client, &mut registry, round, threshold).await;
        let (new, in_flight) = store.outcome(&registry, outcome);
        let n_new = new.len();
        acked.extend(new);

        registry = store.serve(&[]).expect("registry restarts after kill -9");
        let client = Client::new(&registry.url());
        let blobs = blob_acks.lock().expect("blob acks").clone();
        let checked = verify_everything(&client, &store.root, &acked, &blobs).await;
        let report = store.outcome(&registry, checked);
        eprintln!(
            "round {round}: killed after {n_new} of {PUSHES} pushes acknowledged ({in_flight} in flight); \
             after restart {} acknowledged pushes and {} acknowledged blob uploads pull back, {report}; {:.1} s",
            acked.len(),
            blob_acks.lock().expect("blob acks").len(),
            round_started.elapsed().as_secs_f64()
        );
    }

    // GC refuses to run beside the live registry (the index is locked) …
    let out = store.berth(&["registry", "gc", "--root", &store.root_str(), "--dry-run"]);
    let out = store.outcome(&registry, out);
    assert!(
        !out.status.success() && out.stderr.contains("in use"),
        "gc beside a running registry should refuse: {out:?}"
    );
    // … and, run offline with no grace, keeps every blob of every acknowledged push.
    registry.stop();
    let out = store.berth(&[
        "registry",
        "gc",
        "--root",
        &store.root_str(),
        "--grace-secs",
        "0",
        "--format",
        "json",
    ]);
    let out = store.outcome(&registry, out);
    let report: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("gc printed no JSON report ({e}): {out:?}"));
    let removed: HashSet<&str> = report["blobs_removed"]
        .as_array()
        .expect("blobs_removed")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for p in &acked {
        for d in std::iter::once(&p.manifest_digest).chain(p.blobs.iter().map(|(d, _)| d)) {
            assert!(
                !removed.contains(d.as_str()),
                "gc removed {d} of acknowledged {}:{}",
                p.repo,
                p.tag
            );
        }
    }
    registry = store.serve(&[]).expect("registry starts after gc");
    let client = Client::new(&registry.url());
    // Blob uploads of unacknowledged pushes are unreferenced: the GC may take them now.
    let checked = verify_everything(&client, &store.root, &acked, &[]).await;
    let report_after = store.outcome(&registry, checked);
    registry.stop();
    eprintln!(
        "after gc (removed {} unreferenced blobs, {} orphaned files): {report_after}; crash test took {:.1} s",
        removed.len(),
        report["orphans_removed"],
        started.elapsed().as_secs_f64()
    );
    // Checked last, so that the checks above run whatever the collection reported.
    let errors = report["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        out.status.success() && errors.is_empty(),
        "offline gc (exit {}) reported {} failures, the first: {:#?}",
        out.status,
        errors.len(),
        &errors[..errors.len().min(3)]
    );
}

/// Runs `PUSHES` concurrent pushes and `kill -9`s the registry once `threshold` of them are
/// acknowledged. Returns the acknowledged pushes and how many were still running.
async fn push_and_kill(
    client: &Client,
    registry: &mut RegistryProcess,
    round: usize,
    threshold: usize,
) -> Result<(Vec<Pushed>, usize)> {
    let acked = Arc::new(Mutex::new(Vec::<Pushed>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicUsize::new(PUSHES));
    let early_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for i in 0..PUSHES {
        let (client, acked, killed, running, early_errors) = (
            client.clone(),
            acked.clone(),
            killed.clone(),
            running.clone(),
            early_errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let seed = (round as u64 + 1) * 1_000_000 + i as u64;
            let mut rng = Rng(seed);
            let repo = format!("crash/repo{}", i % 5);
            let tag = format!("r{round}-p{i}");
            let n = 2 + rng.below(2) as usize;
            let blobs: Vec<Vec<u8>> = (0..n)
                .map(|j| {
                    // 64 KiB to 4 MiB, spread evenly on a log scale.
                    let size = (64usize << 10 << rng.below(7)) + rng.below(64 << 10) as usize;
                    random_bytes(seed * 10 + j as u64, size.min(4 << 20))
                })
                .collect();
            let ways: Vec<Upload> = (0..=n).map(|j| Upload::ALL[(i + j) % Upload::ALL.len()]).collect();
            let result = client.push_image(&repo, &tag, blobs, &ways, &mut rng).await;
            running.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(p) => acked.lock().expect("acked").push(p),
                Err(e) if !killed.load(Ordering::SeqCst) => early_errors
                    .lock()
                    .expect("errors")
                    .push(format!("{repo}:{tag}: {e:#}")),
                Err(_) => {}
            }
        }));
    }

    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = acked.lock().expect("acked").len();
        if n >= threshold {
            break;
        }
        let errors = early_errors.lock().expect("errors").clone();
        ensure!(errors.is_empty(), "pushes failed before any kill: {errors:#?}");
        ensure!(
            running.load(Ordering::SeqCst) > 0,
            "all pushes ended with only {n} acknowledged"
        );
        ensure!(
            Instant::now() < deadline,
            "only {n} of {threshold} pushes acknowledged in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    killed.store(true, Ordering::SeqCst);
    let in_flight = running.load(Ordering::SeqCst);
    registry.kill9();

    tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks))
        .await
        .context("pushes did not end within 120 s of the kill")?;
    let errors = early_errors.lock().expect("errors").clone();
    ensure!(errors.is_empty(), "pushes failed before the kill: {errors:#?}");
    let acked = acked.lock().expect("acked").clone();
    Ok((acked, in_flight))
}

/// After a restart: every acknowledged push and blob upload pulls back; everything listed is
/// complete; every blob file hashes to its name. Returns a one-line summary.
async fn verify_everything(client: &Client, root: &Path, acked: &[Pushed], blobs: &[BlobAck]) -> Result<String> {
    let mut verified = HashSet::new();
    let (repos, tags) = client.verify_listing(&mut verified).await?;
    for p in acked {
        client
            .verify_pushed(p, &mut verified)
            .await
            .with_context(|| format!("acknowledged push {}:{} does not pull back", p.repo, p.tag))?;
    }
    for (repo, digest, size) in blobs {
        client
            .verify_blob(repo, digest, *size, &mut verified)
            .await
            .with_context(|| format!("acknowledged blob upload {repo}@{digest} is not served"))?;
    }
    let files = verify_blob_files(root)?;
    let uploads = std::fs::read_dir(root.join("uploads")).map_or(0, |d| d.count());
    let mut summary = format!(
        "{repos} repositories with {tags} tags listed and complete, {} blob files verified, {uploads} upload sessions left",
        files.verified
    );
    if !files.staging.is_empty() {
        summary.push_str(&format!(
            ", staging files in blobs/ (never served, never collected): {:?}",
            files.staging
        ));
    }
    Ok(summary)
}

struct BlobFiles {
    verified: usize,
    /// Files an interrupted object-store write left (`<hex>#<n>`).
    staging: Vec<String>,
}

/// Every file under `<root>/blobs/<alg>/<xx>/<hex>` must hash to its name. Staging files of
/// interrupted writes are counted apart; anything else is an error.
fn verify_blob_files(root: &Path) -> Result<BlobFiles> {
    let dir = root.join("blobs");
    let mut out = BlobFiles {
        verified: 0,
        staging: vec![],
    };
    for rel in files_under(&dir)? {
        let parts: Vec<&str> = rel.split('/').collect();
        let [alg, prefix, name] = parts.as_slice() else {
            bail!("unexpected file blobs/{rel}");
        };
        if name.contains('#') {
            out.staging.push(rel.clone());
            continue;
        }
        ensure!(*alg == "sha256", "blob of another algorithm: blobs/{rel}");
        ensure!(
            name.len() == 64 && name.starts_with(prefix) && name.bytes().all(|b| b.is_ascii_hexdigit()),
            "misnamed blob file blobs/{rel}"
        );
        let bytes = std::fs::read(dir.join(&rel)).with_context(|| format!("failed to read blobs/{rel}"))?;
        let hash = hex::encode(Sha256::digest(&bytes));
        ensure!(
            hash == *name,
            "blobs/{rel} holds content hashing to {hash} ({} bytes)",
            bytes.len()
        );
        out.verified += 1;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The index is derived from storage
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_index_rebuilds_tags_catalog_search_and_referrers() {
    let store = Store::new();
    let mut registry = store.serve(&[]).expect("registry starts");
    let client = Client::new(&registry.url());
    let pushed = store.outcome(&registry, populate(&client).await);
    let before = store.outcome(&registry, view(&client, &pushed).await);
    assert!(before.catalog.len() >= 5 && before.search.len() >= 5, "{before:#?}");

    // Delete the index with the registry stopped; it is rebuilt on start.
    registry.stop();
    std::fs::remove_file(store.root.join("index.redb")).expect("remove index.redb");
    registry = store.serve(&[]).expect("registry starts without an index");
    assert!(
        registry.log().contains("index rebuilt from storage"),
        "{}",
        registry.log()
    );
    let client = Client::new(&registry.url());
    let after = store.outcome(&registry, view(&client, &pushed).await);
    assert_views_equal(&before, &after, "after deleting index.redb");
    let checked = verify_everything(&client, &store.root, &[], &[]).await;
    store.outcome(&registry, checked);

    // `berth registry reindex` does the same offline.
    registry.stop();
    let out = store.berth(&["registry", "reindex", "--root", &store.root_str()]);
    let out = store.outcome(&registry, out);
    assert!(out.status.success(), "reindex failed: {out:?}");
    registry = store.serve(&[]).expect("registry starts after reindex");
    let client = Client::new(&registry.url());
    let again = store.outcome(&registry, view(&client, &pushed).await);
    assert_views_equal(&before, &again, "after berth registry reindex");
    registry.stop();
}

/// A tag may start with `_` (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`); its link
/// `repositories/<repo>/_tags/_x` must not be mistaken for a link kind when rebuilding.
#[tokio::test]
async fn rebuilt_index_keeps_tags_that_start_with_an_underscore() {
    let store = Store::new();
    let mut registry = store.serve(&[]).expect("registry starts");
    let client = Client::new(&registry.url());
    let r = async {
        let p = client
            .push_image(
                "under/score",
                "_build",
                vec![random_bytes(1, 1000)],
                &[Upload::Monolithic; 2],
                &mut Rng(1),
            )
            .await?;
        let r = client.put_manifest("under/score", "_tags", &p.manifest).await?;
        ensure!(r.status() == StatusCode::CREATED, "PUT tag _tags: {}", r.status());
        let r = client.put_manifest("under/score", "plain", &p.manifest).await?;
        ensure!(r.status() == StatusCode::CREATED, "PUT tag plain: {}", r.status());
        client.tags("under/score").await
    }
    .await;
    let before = store.outcome(&registry, r);
    assert_eq!(before, ["_build", "_tags", "plain"]);
    registry.stop();
    std::fs::remove_file(store.root.join("index.redb")).expect("remove index.redb");
    registry = store.serve(&[]).expect("registry restarts");
    let client = Client::new(&registry.url());
    let after = store.outcome(&registry, client.tags("under/score").await);
    assert_eq!(after, before, "tags of under/score after the index was rebuilt");
}

/// `docker search` shows a repository's description: the one of the image pushed last with
/// a tag. A rebuilt index must show the same, not whichever manifest it happens to read last.
#[tokio::test]
async fn rebuilt_index_keeps_search_descriptions() {
    let store = Store::new();
    let mut registry = store.serve(&[]).expect("registry starts");
    let client = Client::new(&registry.url());
    let r = async {
        // Several repositories, so that a rebuild reading manifests in storage order instead of
        // push order cannot match by luck.
        for k in 0..6u64 {
            let repo = format!("describe/r{k}");
            for (n, text) in ["first description", "second description"].iter().enumerate() {
                let layer = random_bytes(100 + k * 10 + n as u64, 500);
                let config = serde_json::to_vec(&json!({"os": "linux", "architecture": "amd64", "n": n}))?;
                client.upload(&repo, &layer, Upload::Monolithic, &mut Rng(k)).await?;
                client.upload(&repo, &config, Upload::Monolithic, &mut Rng(k)).await?;
                let m = manifest_json(&config, &[layer], json!({"org.opencontainers.image.description": text}));
                let r = client
                    .put_manifest(&repo, &format!("v{n}"), &serde_json::to_vec(&m)?)
                    .await?;
                ensure!(r.status() == StatusCode::CREATED, "push {repo}:v{n}: {}", r.status());
            }
        }
        client.search("describe").await
    }
    .await;
    let before = store.outcome(&registry, r);
    for (name, desc) in &before {
        assert_eq!(desc, "second description", "live description of {name}");
    }
    registry.stop();
    std::fs::remove_file(store.root.join("index.redb")).expect("remove index.redb");
    registry = store.serve(&[]).expect("registry restarts");
    let client = Client::new(&registry.url());
    let after = store.outcome(&registry, client.search("describe").await);
    assert_eq!(after, before, "search descriptions after the index was rebuilt");
}

/// Deleting the last tag, the last manifest or the last blob link of a repository empties a
/// directory of the storage layout; the delete must still succeed, and leave index and
/// storage agreeing (what is listed before a rebuild is listed after it).
#[tokio::test]
async fn deleting_the_last_tag_manifest_or_blob_link_succeeds() {
    let store = Store::new();
    let mut registry = store.serve(&[]).expect("registry starts");
    let client = Client::new(&registry.url());
    let r = async {
        let mut rng = Rng(77);
        let mut failures = Vec::new();
        // The only tag of a repository, deleted by name.
        client
            .push_image(
                "last/tag",
                "v1",
                vec![random_bytes(770, 1_000)],
                &[Upload::Monolithic],
                &mut rng,
            )
            .await?;
        let r = client
            .http
            .delete(client.url("/v2/last/tag/manifests/v1"))
            .send()
            .await?;
        if r.status() != StatusCode::ACCEPTED {
            failures.push(format!(
                "DELETE /v2/last/tag/manifests/v1 (its only tag): {}",
                r.status()
            ));
        }
        // The only manifest of a repository, deleted by digest with its tag.
        let b = client
            .push_image(
                "last/manifest",
                "v1",
                vec![random_bytes(771, 1_000)],
                &[Upload::Monolithic],
                &mut rng,
            )
            .await?;
        let path = format!("/v2/last/manifest/manifests/{}", b.manifest_digest);
        let r = client.http.delete(client.url(&path)).send().await?;
        if r.status() != StatusCode::ACCEPTED {
            failures.push(format!("DELETE {path} (its only manifest): {}", r.status()));
        }
        // The only blob linked into a repository.
        let d = client
            .upload("last/blob", &random_bytes(772, 1_000), Upload::Monolithic, &mut rng)
            .await?;
        let path = format!("/v2/last/blob/blobs/{d}");
        let r = client.http.delete(client.url(&path)).send().await?;
        if r.status() != StatusCode::ACCEPTED {
            failures.push(format!("DELETE {path} (its only blob link): {}", r.status()));
        }
        let r = client.get(&path).await?;
        if r.status() != StatusCode::NOT_FOUND {
            failures.push(format!("GET {path} after the delete: {}", r.status()));
        }
        let live = (client.catalog().await?, client.tags("last/tag").await.ok());
        Ok((failures, live))
    }
    .await;
    let (mut failures, live) = store.outcome(&registry, r);
    if live.0.iter().any(|r| r == "last/manifest") {
        failures.push(format!(
            "last/manifest still in the catalog {:?} after its only manifest was deleted",
            live.0
        ));
    }
    if live.1.as_ref().is_some_and(|t| !t.is_empty()) {
        failures.push(format!(
            "last/tag still lists tags {:?} after its only tag was deleted",
            live.1
        ));
    }
    registry.stop();
    std::fs::remove_file(store.root.join("index.redb")).expect("remove index.redb");
    registry = store.serve(&[]).expect("registry restarts");
    let client = Client::new(&registry.url());
    let rebuilt = async { Ok((client.catalog().await?, client.tags("last/tag").await.ok())) }.await;
    let rebuilt = store.outcome(&registry, rebuilt);
    if rebuilt != live {
        failures.push(format!(
            "catalog and tags before a rebuild {live:?}, after it {rebuilt:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "deletes emptying a directory:\n{}",
        failures.join("\n")
    );
}

/// What a rebuild must reproduce.
#[derive(Debug, PartialEq)]
struct View {
    catalog: Vec<String>,
    tags: BTreeMap<String, BTreeMap<String, String>>,
    search: Vec<(String, String)>,
    search_page: Value,
    referrers: Vec<Value>,
    untagged: BTreeMap<String, u16>,
}

fn assert_views_equal(before: &View, after: &View, when: &str) {
    assert_eq!(before.catalog, after.catalog, "catalog {when}");
    assert_eq!(before.tags, after.tags, "tags {when}");
    assert_eq!(before.search, after.search, "search {when}");
    assert_eq!(before.search_page, after.search_page, "search page {when}");
    assert_eq!(before.referrers, after.referrers, "referrers {when}");
    assert_eq!(before.untagged, after.untagged, "manifests pushed by digest {when}");
}

/// What `populate` pushed, to look up afterwards.
struct Populated {
    subject: String,
    untagged: Vec<(String, String)>,
}

/// Pushes a varied registry: several repositories and tags, descriptions from an annotation
/// and from a config label, an image index, a referrer, a manifest pushed by digest only, a
/// deleted tag and a deleted manifest.
async fn populate(client: &Client) -> Result<Populated> {
    let mut rng = Rng(42);
    let described = |text: &str| json!({"org.opencontainers.image.description": text});
    let image = |seed: u64, annotations: Value| {
        let layer = random_bytes(seed, 3_000 + seed as usize);
        let config = serde_json::to_vec(&json!({"os": "linux", "architecture": "amd64", "seed": seed})).expect("json");
        let m = serde_json::to_vec(&manifest_json(&config, std::slice::from_ref(&layer), annotations)).expect("json");
        (vec![layer, config], m)
    };
    let push = async |repo: &str,
                      refs: &[&str],
                      (blobs, m): (Vec<Vec<u8>>, Vec<u8>),
                      rng: &mut Rng|
           -> Result<(String, usize)> {
        for b in &blobs {
            client.upload(repo, b, Upload::Monolithic, rng).await?;
        }
        for r in refs {
            let resp = client.put_manifest(repo, r, &m).await?;
            ensure!(
                resp.status() == StatusCode::CREATED,
                "push {repo}:{r}: {}",
                resp.status()
            );
        }
        Ok((sha256_digest(&m), m.len()))
    };

    let (a1, a1_size) = push(
        "alpha/app",
        &["v1", "v2", "latest"],
        image(1, described("Alpha application")),
        &mut rng,
    )
    .await?;
    let (a2, a2_size) = push("alpha/app", &["v3"], image(2, described("Alpha application")), &mut rng).await?;
    // An index of both, tagged.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": [
            {"mediaType": media_types::OCI_MANIFEST, "digest": a1, "size": a1_size, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media_types::OCI_MANIFEST, "digest": a2, "size": a2_size, "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))?;
    let r = client
        .http
        .put(client.url("/v2/alpha/app/manifests/multi"))
        .header("content-type", media_types::OCI_INDEX)
        .body(index)
        .send()
        .await?;
    ensure!(r.status() == StatusCode::CREATED, "push index: {}", r.status());
    // A signature-like referrer of a1, pushed by digest.
    let empty = b"{}".to_vec();
    client.upload("alpha/app", &empty, Upload::Monolithic, &mut rng).await?;
    let sig = random_bytes(7, 200);
    client.upload("alpha/app", &sig, Upload::Monolithic, &mut rng).await?;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": media_types::OCI_EMPTY, "digest": sha256_digest(&empty), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha256_digest(&sig), "size": sig.len()}],
        "subject": {"mediaType": media_types::OCI_MANIFEST, "digest": a1, "size": a1_size},
        "annotations": {"org.example.signed-by": "test"},
    }))?;
    let rd = sha256_digest(&referrer);
    let r = client.put_manifest("alpha/app", &rd, &referrer).await?;
    ensure!(r.status() == StatusCode::CREATED, "push referrer: {}", r.status());

    // A description from the config's label.
    let layer = random_bytes(3, 2_000);
    let config = serde_json::to_vec(&json!({
        "os": "linux", "architecture": "amd64",
        "config": {"Labels": {"org.opencontainers.image.description": "Beta tools"}},
    }))?;
    let m = serde_json::to_vec(&manifest_json(&config, std::slice::from_ref(&layer), json!({})))?;
    push("beta", &["latest", "1.0"], (vec![layer, config], m), &mut rng).await?;

    // Pushed by digest only: listed in the catalog, no tags.
    let (blobs, m) = image(4, json!({}));
    let gd = sha256_digest(&m);
    push("gamma/x/y", &[gd.as_str()], (blobs, m), &mut rng).await?;

    // A tag deleted, another kept.
    push("delta", &["old"], image(5, described("Delta")), &mut rng).await?;
    push("delta", &["keep"], image(6, described("Delta")), &mut rng).await?;
    let r = client.http.delete(client.url("/v2/delta/manifests/old")).send().await?;
    ensure!(r.status() == StatusCode::ACCEPTED, "delete tag: {}", r.status());

    // A manifest deleted by digest (with its tag), another kept.
    let (ed, _) = push("epsilon", &["v1"], image(8, described("Epsilon")), &mut rng).await?;
    push("epsilon", &["v2"], image(10, described("Epsilon")), &mut rng).await?;
    let r = client
        .http
        .delete(client.url(&format!("/v2/epsilon/manifests/{ed}")))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::ACCEPTED, "delete manifest: {}", r.status());

    // Same image in two repositories, with ?tag= on a PUT by digest.
    let (blobs, m) = image(9, described("Zeta"));
    let zd = sha256_digest(&m);
    for b in &blobs {
        client.upload("zeta/one", b, Upload::Chunked, &mut rng).await?;
        client.upload("zeta/two", b, Upload::Streamed, &mut rng).await?;
    }
    for repo in ["zeta/one", "zeta/two"] {
        let r = client.put_manifest(repo, &format!("{zd}?tag=a&tag=b"), &m).await?;
        ensure!(
            r.status() == StatusCode::CREATED,
            "push {repo} with ?tag=: {}",
            r.status()
        );
    }

    Ok(Populated {
        subject: a1,
        untagged: vec![
            ("gamma/x/y".to_owned(), gd),
            ("alpha/app".to_owned(), rd),
            ("epsilon".to_owned(), ed),
        ],
    })
}

async fn view(client: &Client, pushed: &Populated) -> Result<View> {
    let catalog = client.catalog().await?;
    let mut tags = BTreeMap::new();
    for repo in &catalog {
        let mut digests = BTreeMap::new();
        for t in client.tags(repo).await? {
            let (d, _) = client.manifest(repo, &t).await?;
            digests.insert(t, d);
        }
        tags.insert(repo.clone(), digests);
    }
    let search = client.search("").await?;
    let search_page = client.get_json("/v1/search?q=a&n=2&page=2").await?;
    let mut referrers: Vec<Value> = client
        .get_json(&format!("/v2/alpha/app/referrers/{}", pushed.subject))
        .await?["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    referrers.sort_by_key(|v| v["digest"].as_str().unwrap_or("").to_owned());
    let mut untagged = BTreeMap::new();
    for (repo, d) in &pushed.untagged {
        let r = client
            .http
            .get(client.url(&format!("/v2/{repo}/manifests/{d}")))
            .send()
            .await?;
        untagged.insert(format!("{repo}@{d}"), r.status().as_u16());
    }
    Ok(View {
        catalog,
        tags,
        search,
        search_page,
        referrers,
        untagged,
    })
}

// ---------------------------------------------------------------------------------------
// Garbage collection
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_gc_collects_unreferenced_blobs_beside_pushes() {
    let _exclusive = exclusive().await;
    let store = Store::new();
    let registry = store
        .serve(&["--gc-interval-secs", "1", "--gc-grace-secs", "2"])
        .expect("registry starts");
    let client = Client::new(&registry.url());
    let r = async {
        let mut rng = Rng(7);
        let a = client
            .push_image(
                "gc/a",
                "a",
                vec![random_bytes(70, 200_000), random_bytes(71, 50_000)],
                &Upload::ALL,
                &mut rng,
            )
            .await?;
        let x = random_bytes(72, 100_000);
        let uploaded = Instant::now();
        let xd = client.upload("gc/a", &x, Upload::Monolithic, &mut rng).await?;
        let r = client.get(&format!("/v2/gc/a/blobs/{xd}")).await?;
        ensure!(
            r.status() == StatusCode::OK,
            "unreferenced blob right after upload: {}",
            r.status()
        );
        // GET (unlike HEAD) does not renew the grace period.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client.get(&format!("/v2/gc/a/blobs/{xd}")).await?;
            if r.status() == StatusCode::NOT_FOUND {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "unreferenced blob still served 10 s after upload"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let x_lived = uploaded.elapsed();
        let mut verified = HashSet::new();
        client
            .verify_pushed(&a, &mut verified)
            .await
            .context("image A after GC")?;

        // Pushes beside GC runs for 6 s: each uploads its layers, then its manifest.
        let acked = Arc::new(Mutex::new(Vec::<(Pushed, Duration)>::new()));
        let lost = Arc::new(Mutex::new(Vec::<(String, Duration)>::new()));
        let until = Instant::now() + Duration::from_secs(6);
        let mut workers = Vec::new();
        for w in 0..2u64 {
            let (client, acked, lost) = (client.clone(), acked.clone(), lost.clone());
            workers.push(tokio::spawn(async move {
                let mut rng = Rng(1000 + w);
                let mut n = 0u64;
                while Instant::now() < until {
                    let tag = format!("w{w}-{n}");
                    let blobs = (0..2)
                        .map(|j| random_bytes(w * 100_000 + n * 10 + j, (64 << 10) + rng.below(448 << 10) as usize))
                        .collect();
                    let ways = [
                        Upload::ALL[(n as usize) % 4],
                        Upload::ALL[(n as usize + 1) % 4],
                        Upload::Monolithic,
                    ];
                    let t = Instant::now();
                    match client.push_image("gc/b", &tag, blobs, &ways, &mut rng).await {
                        Ok(p) => acked.lock().expect("acked").push((p, t.elapsed())),
                        Err(e)
                            if e.downcast_ref::<ManifestRefused>()
                                .is_some_and(|r| r.code == "MANIFEST_BLOB_UNKNOWN") =>
                        {
                            lost.lock().expect("lost").push((tag, t.elapsed()))
                        }
                        Err(e) => return Err(e.context(format!("push gc/b:{tag}"))),
                    }
                    n += 1;
                }
                Ok(())
            }));
        }
        for w in workers {
            tokio::time::timeout(Duration::from_secs(120), w)
                .await
                .context("pusher did not stop")???;
        }
        // Let GC run twice more over the finished pushes, then pull everything back.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let acked = acked.lock().expect("acked").clone();
        let lost = lost.lock().expect("lost").clone();
        ensure!(acked.len() >= 10, "only {} pushes in 6 s", acked.len());
        for (p, _) in &acked {
            client
                .verify_pushed(p, &mut verified)
                .await
                .with_context(|| format!("acknowledged push {}:{} after GC", p.repo, p.tag))?;
        }
        client
            .verify_pushed(&a, &mut verified)
            .await
            .context("image A at the end")?;
        // A push slower than the grace period may lose its layers (the documented trade-off);
        // a faster one must not.
        let within_grace: Vec<_> = lost.iter().filter(|(_, t)| *t < Duration::from_secs(2)).collect();
        ensure!(
            within_grace.is_empty(),
            "pushes faster than the 2 s grace period lost their layers to GC: {within_grace:?}"
        );
        let metrics = client.get("/metrics").await?.text().await?;
        let runs = metric(&metrics, "berth_registry_gc_runs_total")?;
        let removed = metric(&metrics, "berth_registry_gc_blobs_removed_total")?;
        ensure!(
            runs >= 5,
            "berth_registry_gc_runs_total = {runs} after ~10 s at 1 s intervals"
        );
        ensure!(removed >= 1, "berth_registry_gc_blobs_removed_total = {removed}");
        let slowest = acked.iter().map(|(_, t)| *t).max().unwrap_or_default();
        eprintln!(
            "online gc: unreferenced blob collected {:.1} s after upload; {} pushes beside GC \
             (slowest {:.2} s), {} lost to GC; {runs} GC runs removed {removed} blobs",
            x_lived.as_secs_f64(),
            acked.len(),
            slowest.as_secs_f64(),
            lost.len()
        );
        // Every collection ran without failures (checked last: GC only logs them).
        let log = registry.log();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("garbage collection") && (l.contains("ERROR") || !l.contains("errors=0")))
            .collect();
        ensure!(errors.is_empty(), "GC runs reported failures:\n{}", errors.join("\n"));
        Ok(())
    }
    .await;
    store.outcome(&registry, r);
}

/// The grace period is measured from the upload: with `--grace-secs 2`, a blob uploaded 1.2 s
/// ago is not collected, wherever the upload fell within its wall-clock second.
#[tokio::test]
async fn gc_grace_is_not_shortened_by_rounding_to_seconds() {
    let _exclusive = exclusive().await;
    let store = Store::new();
    let mut last = String::new();
    // The upload is placed late in a wall-clock second and the GC early in the second after
    // next; a slow machine can miss that window, so up to three tries.
    for attempt in 0..3 {
        let mut registry = store.serve(&[]).expect("registry starts");
        let client = Client::new(&registry.url());
        let x = random_bytes(500 + attempt, 10_000);
        sleep_until_fraction(0.8).await;
        let second = wall_clock().floor();
        let uploaded = Instant::now();
        let up = client
            .upload("grace/a", &x, Upload::Monolithic, &mut Rng(attempt))
            .await;
        let xd = store.outcome(&registry, up);
        // Acknowledged within the second it started in: the registry stamped that second.
        let in_time = wall_clock() < second + 1.0;
        registry.stop();
        // GC early in the second after next, about 1.2 s after the upload: if it has finished
        // within 1.95 s of the upload, it judged a blob younger than the 2 s grace period.
        let wait = second + 2.02 - wall_clock();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        let out = store.berth(&[
            "registry",
            "gc",
            "--root",
            &store.root_str(),
            "--dry-run",
            "--grace-secs",
            "2",
            "--format",
            "json",
        ]);
        let out = store.outcome(&registry, out);
        let age = uploaded.elapsed();
        if !in_time || age >= Duration::from_millis(1950) {
            last = format!("attempt {attempt}: upload in time {in_time}, gc done {age:?} after it; too slow to tell");
            continue;
        }
        assert!(out.status.success(), "gc failed: {out:?}");
        let report: Value = serde_json::from_str(&out.stdout).expect("gc prints JSON");
        let removed: Vec<&str> = report["blobs_removed"]
            .as_array()
            .expect("blobs_removed")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !removed.contains(&xd.as_str()),
            "gc --grace-secs 2 would remove {xd}, uploaded only {age:?} before (report: {})",
            out.stdout
        );
        return;
    }
    panic!("could not place the GC within the grace period: {last}");
}

/// A blob uploaded again (without HEAD, as a monolithic POST) is "uploaded" then: the grace
/// period must start over, or GC removes it between the upload and the manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_grace_starts_over_when_a_blob_is_uploaded_again() {
    let _exclusive = exclusive().await;
    let store = Store::new();
    let registry = store
        .serve(&["--gc-interval-secs", "3", "--gc-grace-secs", "2"])
        .expect("registry starts");
    let client = Client::new(&registry.url());
    let r = async {
        let mut rng = Rng(9);
        let layer = random_bytes(900, 50_000);
        let config = serde_json::to_vec(&json!({"os": "linux", "architecture": "amd64"}))?;
        // Right after a GC run (tick A), upload the layer: an abandoned push.
        wait_for_gc_runs(&client, 1).await?;
        let ld = client.upload("regrace/a", &layer, Upload::Monolithic, &mut rng).await?;
        // 2.5 s later it is past the grace period; a new push uploads it again, then the
        // next GC run (tick B, 3 s after A) comes before that push's manifest.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let again = client.upload("regrace/a", &layer, Upload::Monolithic, &mut rng).await?;
        ensure!(again == ld, "digest");
        wait_for_gc_runs(&client, 2).await?;
        client
            .upload("regrace/a", &config, Upload::Monolithic, &mut rng)
            .await?;
        let r = client.get(&format!("/v2/regrace/a/blobs/{ld}")).await?;
        ensure!(
            r.status() == StatusCode::OK,
            "the layer uploaded again 0.5 s before a GC run is gone: GET {}",
            r.status()
        );
        let m = serde_json::to_vec(&manifest_json(&config, std::slice::from_ref(&layer), json!({})))?;
        let r = client.put_manifest("regrace/a", "v1", &m).await?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        ensure!(
            status == StatusCode::CREATED,
            "manifest after uploading its layer again: {status} {body}"
        );
        Ok(())
    }
    .await;
    store.outcome(&registry, r);
}

/// Waits (10 s at most) until `berth_registry_gc_runs_total` reaches `n`.
async fn wait_for_gc_runs(client: &Client, n: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client.get("/metrics").await?.text().await?;
        if metric(&text, "berth_registry_gc_runs_total")? >= n {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "no GC run {n} within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn metric(text: &str, name: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no {name} in /metrics:\n{text}"))
}

/// Seconds since the epoch.
fn wall_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Sleeps until the wall clock's fraction of a second is `f` (the next time it is).
async fn sleep_until_fraction(f: f64) {
    let mut wait = f - wall_clock().fract();
    if wait <= 0.0 {
        wait += 1.0;
    }
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Serialises the tests whose timing matters (GC grace, pushes beside GC) with the crash
/// test, which keeps both cores busy.
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A small deterministic generator (splitmix64).
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Pseudo-random bytes, distinct for every seed.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len()})
}

fn manifest_json(config: &[u8], layers: &[Vec<u8>], annotations: Value) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": descriptor(media_types::OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(media_types::OCI_LAYER_TAR, l)).collect::<Vec<_>>(),
        "annotations": annotations,
    })
}

/// Every regular file under `dir`, as paths relative to it, sorted.
fn files_under(dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("failed to list {}", d.display())),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                let path = entry.path();
                out.insert(path.strip_prefix(dir).expect("under dir").display().to_string());
            }
        }
    }
    Ok(out)
}

/// How a blob travels.
#[derive(Debug, Clone, Copy)]
enum Upload {
    /// `POST ?digest=` with the body.
    Monolithic,
    /// `POST`, then `PUT ?digest=` with the body.
    MonolithicPut,
    /// `POST`, several `PATCH`es with `Content-Range`, then `PUT ?digest=`.
    Chunked,
    /// `POST`, one `PATCH` with a chunked-encoded body of unknown length, `PUT ?digest=`.
    Streamed,
}

impl Upload {
    const ALL: [Upload; 4] = [
        Upload::Monolithic,
        Upload::MonolithicPut,
        Upload::Chunked,
        Upload::Streamed,
    ];
}

/// A push the registry acknowledged (manifest PUT answered 201).
#[derive(Debug, Clone)]
struct Pushed {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    manifest_digest: String,
    /// Config and layers, with their sizes.
    blobs: Vec<(String, u64)>,
}

/// The registry refused a manifest with an error code.
#[derive(Debug)]
struct ManifestRefused {
    status: u16,
    code: String,
    body: String,
}

impl std::fmt::Display for ManifestRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "manifest refused: {} {}", self.status, self.body)
    }
}

impl std::error::Error for ManifestRefused {}

/// A blob upload the registry acknowledged (201): repository, digest, size.
type BlobAck = (String, String, u64);

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    /// When set, every acknowledged blob upload is recorded here.
    blob_acks: Option<Arc<Mutex<Vec<BlobAck>>>>,
}

impl Client {
    fn new(base: &str) -> Client {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Client {
            http,
            base: base.to_owned(),
            blob_acks: None,
        }
    }

    /// This client, recording every acknowledged blob upload in `acks`.
    fn recording(mut self, acks: Arc<Mutex<Vec<BlobAck>>>) -> Client {
        self.blob_acks = Some(acks);
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        Ok(self.http.get(self.url(path)).send().await?)
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        let r = self.get(path).await?;
        ensure!(r.status() == StatusCode::OK, "GET {path}: {}", r.status());
        Ok(r.json().await?)
    }

    /// Starts an upload session; returns its location path.
    async fn start_upload(&self, repo: &str) -> Result<String> {
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await?;
        ensure!(r.status() == StatusCode::ACCEPTED, "POST upload: {}", r.status());
        location(&r)
    }

    /// Uploads `bytes` to `repo` the given way; returns the digest.
    async fn upload(&self, repo: &str, bytes: &[u8], how: Upload, rng: &mut Rng) -> Result<String> {
        let d = sha256_digest(bytes);
        let finish = |loc: &str| {
            let sep = if loc.contains('?') { '&' } else { '?' };
            self.url(&format!("{loc}{sep}digest={d}"))
        };
        let r = match how {
            Upload::Monolithic => {
                self.http
                    .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.to_vec())
                    .send()
                    .await?
            }
            Upload::MonolithicPut => {
                let loc = self.start_upload(repo).await?;
                self.http
                    .put(finish(&loc))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.to_vec())
                    .send()
                    .await?
            }
            Upload::Chunked => {
                let mut loc = self.start_upload(repo).await?;
                let mut at = 0;
                while at < bytes.len() {
                    let n = ((256 << 10) + rng.below(768 << 10) as usize).min(bytes.len() - at);
                    let r = self
                        .http
                        .patch(self.url(&loc))
                        .header("content-type", "application/octet-stream")
                        .header("content-range", format!("{at}-{}", at + n - 1))
                        .body(bytes[at..at + n].to_vec())
                        .send()
                        .await?;
                    ensure!(r.status() == StatusCode::ACCEPTED, "PATCH {at}+{n}: {}", r.status());
                    loc = location(&r)?;
                    at += n;
                }
                self.http.put(finish(&loc)).send().await?
            }
            Upload::Streamed => {
                let loc = self.start_upload(repo).await?;
                let parts: Vec<Result<Vec<u8>, std::io::Error>> =
                    bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
                let r = self
                    .http
                    .patch(self.url(&loc))
                    .header("content-type", "application/octet-stream")
                    .body(reqwest::Body::wrap_stream(futures::stream::iter(parts)))
                    .send()
                    .await?;
                ensure!(r.status() == StatusCode::ACCEPTED, "streamed PATCH: {}", r.status());
                let loc = location(&r)?;
                self.http.put(finish(&loc)).send().await?
            }
        };
        let status = r.status();
        ensure!(
            status == StatusCode::CREATED,
            "{how:?} upload of {d} to {repo}: {status} {}",
            r.text().await.unwrap_or_default()
        );
        if let Some(acks) = &self.blob_acks {
            acks.lock()
                .expect("blob acks")
                .push((repo.to_owned(), d.clone(), bytes.len() as u64));
        }
        Ok(d)
    }

    async fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> Result<reqwest::Response> {
        Ok(self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_types::OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await?)
    }

    /// Pushes `layers` (each its own way, from `ways`; the config takes the last way) and a
    /// manifest tagged `tag`.
    async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: Vec<Vec<u8>>,
        ways: &[Upload],
        rng: &mut Rng,
    ) -> Result<Pushed> {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"pushed-as": format!("{repo}:{tag}")}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256_digest(l)).collect::<Vec<_>>()},
        }))?;
        let mut blobs = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let d = self.upload(repo, layer, ways[i % ways.len()], rng).await?;
            blobs.push((d, layer.len() as u64));
        }
        let d = self.upload(repo, &config, ways[ways.len() - 1], rng).await?;
        blobs.push((d, config.len() as u64));
        let manifest = serde_json::to_vec(&manifest_json(&config, &layers, json!({})))?;
        let r = self.put_manifest(repo, tag, &manifest).await?;
        let status = r.status();
        if status != StatusCode::CREATED {
            let body = r.text().await.unwrap_or_default();
            let code = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(ManifestRefused {
                status: status.as_u16(),
                code,
                body,
            }
            .into());
        }
        Ok(Pushed {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            manifest_digest: sha256_digest(&manifest),
            manifest,
            blobs,
        })
    }

    /// The manifest `repo:reference`: its digest (checked against the header) and JSON.
    async fn manifest(&self, repo: &str, reference: &str) -> Result<(String, Value)> {
        let r = self
            .http
            .get(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header(
                "accept",
                format!("{}, {}", media_types::OCI_MANIFEST, media_types::OCI_INDEX),
            )
            .send()
            .await?;
        ensure!(
            r.status() == StatusCode::OK,
            "GET manifest {repo}:{reference}: {}",
            r.status()
        );
        let header = r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = r.bytes().await?;
        let d = sha256_digest(&body);
        ensure!(
            header == d,
            "manifest {repo}:{reference} hashes to {d}, served as {header}"
        );
        if reference.contains(':') {
            ensure!(d == reference, "manifest {repo}@{reference} hashes to {d}");
        }
        let v = serde_json::from_slice(&body).with_context(|| format!("manifest {repo}:{reference} is not JSON"))?;
        Ok((d, v))
    }

    /// GETs a blob and checks its bytes against `digest` (and `size`), once per `verified`.
    async fn verify_blob(&self, repo: &str, digest: &str, size: u64, verified: &mut HashSet<String>) -> Result<()> {
        let key = format!("{repo}@{digest}");
        if verified.contains(&key) {
            return Ok(());
        }
        let r = self.get(&format!("/v2/{repo}/blobs/{digest}")).await?;
        ensure!(r.status() == StatusCode::OK, "GET blob {repo}@{digest}: {}", r.status());
        let body = r.bytes().await?;
        ensure!(
            body.len() as u64 == size,
            "blob {repo}@{digest}: {} bytes, descriptor says {size}",
            body.len()
        );
        let got = sha256_digest(&body);
        ensure!(got == digest, "blob {repo}@{digest} serves content hashing to {got}");
        verified.insert(key);
        Ok(())
    }

    /// Checks a manifest (recursively for an index) and every blob it names.
    async fn verify_manifest(&self, repo: &str, m: &Value, verified: &mut HashSet<String>) -> Result<()> {
        let descriptors = m["config"].as_object().into_iter().chain(
            m["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object),
        );
        for d in descriptors {
            let digest = d["digest"].as_str().context("descriptor without digest")?;
            let size = d["size"].as_u64().context("descriptor without size")?;
            self.verify_blob(repo, digest, size, verified).await?;
        }
        for child in m["manifests"].as_array().into_iter().flatten() {
            let digest = child["digest"].as_str().context("child without digest")?;
            if verified.insert(format!("{repo}@{digest}")) {
                let (_, cm) = self.manifest(repo, digest).await?;
                Box::pin(self.verify_manifest(repo, &cm, verified)).await?;
            }
        }
        Ok(())
    }

    /// An acknowledged push pulls back: the tag resolves to its manifest, every blob verifies.
    async fn verify_pushed(&self, p: &Pushed, verified: &mut HashSet<String>) -> Result<()> {
        let (d, m) = self.manifest(&p.repo, &p.tag).await?;
        ensure!(
            d == p.manifest_digest,
            "{}:{} resolves to {d}, pushed {}",
            p.repo,
            p.tag,
            p.manifest_digest
        );
        for (digest, size) in &p.blobs {
            self.verify_blob(&p.repo, digest, *size, verified).await?;
        }
        self.verify_manifest(&p.repo, &m, verified).await
    }

    async fn catalog(&self) -> Result<Vec<String>> {
        Ok(serde_json::from_value(
            self.get_json("/v2/_catalog").await?["repositories"].clone(),
        )?)
    }

    async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let v = self.get_json(&format!("/v2/{repo}/tags/list")).await?;
        Ok(serde_json::from_value(v["tags"].clone()).unwrap_or_default())
    }

    /// `docker search` results: (name, description), in the order served.
    async fn search(&self, q: &str) -> Result<Vec<(String, String)>> {
        let v = self.get_json(&format!("/v1/search?q={q}&n=100")).await?;
        Ok(v["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("").to_owned(),
                    r["description"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect())
    }

    /// Everything listed is whole: every tag of every repository in the catalog resolves to
    /// a manifest whose blobs all verify. Returns (repositories, tags).
    async fn verify_listing(&self, verified: &mut HashSet<String>) -> Result<(usize, usize)> {
        let catalog = self.catalog().await?;
        let mut n_tags = 0;
        for repo in &catalog {
            for tag in self.tags(repo).await? {
                let (_, m) = self
                    .manifest(repo, &tag)
                    .await
                    .with_context(|| format!("listed tag {repo}:{tag}"))?;
                self.verify_manifest(repo, &m, verified)
                    .await
                    .with_context(|| format!("listed tag {repo}:{tag}"))?;
                n_tags += 1;
            }
        }
        Ok((catalog.len(), n_tags))
    }
}

fn location(r: &reqwest::Response) -> Result<String> {
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("response without Location")?;
    Ok(match loc.find("/v2/") {
        Some(i) => loc[i..].to_owned(),
        None => loc.to_owned(),
    })
}

/// A temporary storage root that registries are started on, one after another.
struct Store {
    dir: tempfile::TempDir,
    root: PathBuf,
}

/// What a `berth` command printed.
#[derive(Debug)]
struct Output {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().join("root");
        Store { dir, root }
    }

    fn root_str(&self) -> String {
        self.root.display().to_string()
    }

    /// Starts `berth registry serve` on this root; online GC off unless `extra` says.
    fn serve(&self, extra: &[&str]) -> Result<RegistryProcess> {
        let root = self.root_str();
        let mut args = vec!["--root", root.as_str()];
        if !extra.contains(&"--gc-interval-secs") {
            args.extend(["--gc-interval-secs", "0"]);
        }
        args.extend(extra);
        RegistryProcess::start(Path::new(BERTH), &args)
    }

    /// Runs `berth <args>` to completion (killed after `COMMAND_TIMEOUT`).
    fn berth(&self, args: &[&str]) -> Result<Output> {
        let out_path = self.dir.path().join("cmd.stdout");
        let err_path = self.dir.path().join("cmd.stderr");
        let mut child = Command::new(BERTH)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()
            .with_context(|| format!("failed to run berth {args:?}"))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("berth {args:?} did not finish within {COMMAND_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Output {
            status,
            stdout: std::fs::read_to_string(&out_path)?,
            stderr: std::fs::read_to_string(&err_path)?,
        })
    }

    /// The value, or a panic with the error and the end of the registry's log.
    fn outcome<T>(&self, registry: &RegistryProcess, r: Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                let log = registry.log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                panic!("{e:?}\n--- registry log (last 40 lines) ---\n{tail}");
            }
        }
    }
}
