//! The metadata index: one redb file beside the storage (`<root>/index.redb` by default).
//! Tags lists, the catalog, search, referrers and existence checks read it, so no request
//! walks the storage tree. It is derived data: `rebuild` makes it anew from the repository
//! links in storage, which happens when the file is missing.
//!
//! ```text
//! repos      <repo>                      -> RepoMeta (description for search)
//! tags       <repo>\0<tag>               -> digest
//! manifests  <repo>\0<digest>            -> ManifestMeta (media type, size, what it references)
//! referrers  <repo>\0<subject>\0<digest> -> ()
//! layers     <repo>\0<digest>            -> ()   blob linked into the repository
//! blobs      <digest>                    -> BlobMeta (size, when committed)
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_oci::Digest;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const REPOS: TableDefinition<&str, &[u8]> = TableDefinition::new("repos");
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");
const REFERRERS: TableDefinition<&str, ()> = TableDefinition::new("referrers");
const LAYERS: TableDefinition<&str, ()> = TableDefinition::new("layers");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RepoMeta {
    pub(crate) description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ManifestMeta {
    pub(crate) media_type: String,
    pub(crate) size: u64,
    /// Blobs and child manifests this manifest needs.
    pub(crate) refs: Vec<Digest>,
    pub(crate) subject: Option<Digest>,
    pub(crate) artifact_type: Option<String>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BlobMeta {
    pub(crate) size: u64,
    /// Seconds since the epoch when the blob was committed.
    pub(crate) created: u64,
}

/// What GC needs to decide.
pub(crate) struct GcView {
    pub(crate) referenced: HashSet<Digest>,
    pub(crate) blobs: Vec<(Digest, BlobMeta)>,
}

#[derive(Clone)]
pub(crate) struct Index {
    db: Arc<Database>,
}

fn key2(a: &str, b: &str) -> String {
    format!("{a}\0{b}")
}

/// The key range of everything under `prefix\0`.
fn under(prefix: &str) -> (String, String) {
    (format!("{prefix}\0"), format!("{prefix}\u{1}"))
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("index records serialize")
}

fn parse<T: for<'a> Deserialize<'a>>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

fn digest_of(what: &str, s: &str) -> Result<Digest> {
    s.parse().map_err(|e: berth_oci::Error| Error::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

impl Index {
    /// Opens (or creates) the index. Returns whether it was newly created and so needs a
    /// rebuild from storage.
    pub(crate) fn open(path: &Path) -> Result<(Index, bool)> {
        let fresh = !path.exists();
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::IndexLocked {
                path: path.display().to_string(),
            },
            e => Error::Index {
                path: path.display().to_string(),
                source: Box::new(e.into()),
            },
        })?;
        let txn = db.begin_write()?;
        txn.open_table(REPOS)?;
        txn.open_table(TAGS)?;
        txn.open_table(MANIFESTS)?;
        txn.open_table(REFERRERS)?;
        txn.open_table(LAYERS)?;
        txn.open_table(BLOBS)?;
        txn.commit()?;
        Ok((Index { db: Arc::new(db) }, fresh))
    }

    // --- reads --------------------------------------------------------------------------

    pub(crate) fn blob(&self, d: &Digest) -> Result<Option<BlobMeta>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(BLOBS)?;
        let v = t.get(d.to_string().as_str())?;
        v.map(|v| parse("blob record", v.value())).transpose()
    }

    pub(crate) fn layer_linked(&self, repo: &str, d: &Digest) -> Result<bool> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(LAYERS)?
            .get(key2(repo, &d.to_string()).as_str())?
            .is_some())
    }

    pub(crate) fn manifest(&self, repo: &str, d: &Digest) -> Result<Option<ManifestMeta>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(MANIFESTS)?;
        let v = t.get(key2(repo, &d.to_string()).as_str())?;
        v.map(|v| parse("manifest record", v.value())).transpose()
    }

    pub(crate) fn tag(&self, repo: &str, tag: &str) -> Result<Option<Digest>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(TAGS)?;
        let v = t.get(key2(repo, tag).as_str())?;
        v.map(|v| digest_of("tag record", v.value())).transpose()
    }

    /// Tags of a repository, sorted; `None` if the repository is unknown.
    pub(crate) fn tags(&self, repo: &str) -> Result<Option<Vec<String>>> {
        let r = self.db.begin_read()?;
        if r.open_table(REPOS)?.get(repo)?.is_none() {
            return Ok(None);
        }
        let (lo, hi) = under(repo);
        let t = r.open_table(TAGS)?;
        let mut tags = Vec::new();
        for item in t.range(lo.as_str()..hi.as_str())? {
            let (k, _) = item?;
            tags.push(k.value()[lo.len()..].to_owned());
        }
        Ok(Some(tags))
    }

    /// All repositories with their metadata, sorted by name.
    pub(crate) fn repos(&self) -> Result<Vec<(String, RepoMeta)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(REPOS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_owned(), parse("repo record", v.value())?));
        }
        Ok(out)
    }

    /// Manifests in `repo` whose subject is `subject`.
    pub(crate) fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<(Digest, ManifestMeta)>> {
        let r = self.db.begin_read()?;
        let (lo, hi) = under(&key2(repo, &subject.to_string()));
        let refs = r.open_table(REFERRERS)?;
        let manifests = r.open_table(MANIFESTS)?;
        let mut out = Vec::new();
        for item in refs.range(lo.as_str()..hi.as_str())? {
            let (k, _) = item?;
            let d = digest_of("referrer record", &k.value()[lo.len()..])?;
            if let Some(m) = manifests.get(key2(repo, &d.to_string()).as_str())? {
                out.push((d, parse("manifest record", m.value())?));
            }
        }
        Ok(out)
    }

    /// Total size of all blobs, and their count.
    pub(crate) fn blob_totals(&self) -> Result<(u64, u64)> {
        let r = self.db.begin_read()?;
        let t = r.open_table(BLOBS)?;
        let mut total = 0;
        for item in t.iter()? {
            let (_, v) = item?;
            total += parse::<BlobMeta>("blob record", v.value())?.size;
        }
        Ok((total, t.len()?))
    }

    pub(crate) fn gc_view(&self) -> Result<GcView> {
        let r = self.db.begin_read()?;
        let mut referenced = HashSet::new();
        for item in r.open_table(MANIFESTS)?.iter()? {
            let (k, v) = item?;
            let (_, d) = k.value().split_once('\0').unwrap_or(("", ""));
            referenced.insert(digest_of("manifest key", d)?);
            let m: ManifestMeta = parse("manifest record", v.value())?;
            referenced.extend(m.refs);
        }
        let mut blobs = Vec::new();
        for item in r.open_table(BLOBS)?.iter()? {
            let (k, v) = item?;
            blobs.push((digest_of("blob key", k.value())?, parse("blob record", v.value())?));
        }
        Ok(GcView { referenced, blobs })
    }

    // --- writes (each one transaction, durable on return) ---------------------------------

    /// Records a committed blob and links it into `repo`.
    /// Returns whether the blob was new.
    pub(crate) fn commit_blob(&self, repo: &str, d: &Digest, size: u64) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let new = {
            let mut blobs = txn.open_table(BLOBS)?;
            let key = d.to_string();
            let new = blobs.get(key.as_str())?.is_none();
            if new {
                blobs.insert(
                    key.as_str(),
                    json(&BlobMeta {
                        size,
                        created: now_secs(),
                    })
                    .as_slice(),
                )?;
            }
            txn.open_table(LAYERS)?.insert(key2(repo, &key).as_str(), ())?;
            new
        };
        txn.commit()?;
        Ok(new)
    }

    /// Removes a blob's link from `repo`; false if it was not linked.
    pub(crate) fn unlink_layer(&self, repo: &str, d: &Digest) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let removed = txn
            .open_table(LAYERS)?
            .remove(key2(repo, &d.to_string()).as_str())?
            .is_some();
        txn.commit()?;
        Ok(removed)
    }

    /// Records a manifest in `repo`, points `tags` at it, and sets the description if given.
    pub(crate) fn put_manifest(
        &self,
        repo: &str,
        d: &Digest,
        meta: &ManifestMeta,
        tags: &[String],
        description: Option<&str>,
    ) -> Result<bool> {
        let ds = d.to_string();
        let txn = self.db.begin_write()?;
        let new = {
            let mut blobs = txn.open_table(BLOBS)?;
            let new = blobs.get(ds.as_str())?.is_none();
            if new {
                blobs.insert(
                    ds.as_str(),
                    json(&BlobMeta {
                        size: meta.size,
                        created: now_secs(),
                    })
                    .as_slice(),
                )?;
            }
            txn.open_table(MANIFESTS)?
                .insert(key2(repo, &ds).as_str(), json(meta).as_slice())?;
            let mut t = txn.open_table(TAGS)?;
            for tag in tags {
                t.insert(key2(repo, tag).as_str(), ds.as_str())?;
            }
            if let Some(s) = &meta.subject {
                txn.open_table(REFERRERS)?
                    .insert(key2(&key2(repo, &s.to_string()), &ds).as_str(), ())?;
            }
            let mut repos = txn.open_table(REPOS)?;
            let mut rm: RepoMeta = match repos.get(repo)? {
                Some(v) => parse("repo record", v.value())?,
                None => RepoMeta::default(),
            };
            if let Some(desc) = description {
                rm.description = desc.to_owned();
            }
            repos.insert(repo, json(&rm).as_slice())?;
            new
        };
        txn.commit()?;
        Ok(new)
    }

    /// Removes a manifest from `repo` with every tag that points at it. Returns the removed
    /// tags, or `None` if the manifest was not there.
    pub(crate) fn delete_manifest(&self, repo: &str, d: &Digest) -> Result<Option<Vec<String>>> {
        let ds = d.to_string();
        let txn = self.db.begin_write()?;
        let removed_tags = {
            let mut manifests = txn.open_table(MANIFESTS)?;
            let Some(old) = manifests.remove(key2(repo, &ds).as_str())? else {
                return Ok(None);
            };
            let meta: ManifestMeta = parse("manifest record", old.value())?;
            drop(old);
            let mut tags = txn.open_table(TAGS)?;
            let (lo, hi) = under(repo);
            let mut removed = Vec::new();
            for item in tags.range(lo.as_str()..hi.as_str())? {
                let (k, v) = item?;
                if v.value() == ds {
                    removed.push(k.value()[lo.len()..].to_owned());
                }
            }
            for t in &removed {
                tags.remove(key2(repo, t).as_str())?;
            }
            if let Some(s) = &meta.subject {
                txn.open_table(REFERRERS)?
                    .remove(key2(&key2(repo, &s.to_string()), &ds).as_str())?;
            }
            let (lo, hi) = under(repo);
            if manifests.range(lo.as_str()..hi.as_str())?.next().is_none() {
                txn.open_table(REPOS)?.remove(repo)?;
            }
            removed
        };
        txn.commit()?;
        Ok(Some(removed_tags))
    }

    /// Removes a tag; false if it did not exist.
    pub(crate) fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let removed = txn.open_table(TAGS)?.remove(key2(repo, tag).as_str())?.is_some();
        txn.commit()?;
        Ok(removed)
    }

    /// Forgets blobs (GC): their records and every repository link to them. Returns the
    /// repository links removed, so storage can drop them too.
    pub(crate) fn remove_blobs(&self, digests: &[Digest]) -> Result<Vec<(String, Digest)>> {
        let gone: HashSet<String> = digests.iter().map(|d| d.to_string()).collect();
        let txn = self.db.begin_write()?;
        let mut unlinked = Vec::new();
        {
            let mut blobs = txn.open_table(BLOBS)?;
            for d in &gone {
                blobs.remove(d.as_str())?;
            }
            let mut layers = txn.open_table(LAYERS)?;
            let mut keys = Vec::new();
            for item in layers.iter()? {
                let (k, _) = item?;
                if let Some((repo, d)) = k.value().split_once('\0')
                    && gone.contains(d)
                {
                    keys.push(k.value().to_owned());
                    unlinked.push((repo.to_owned(), digest_of("layer key", d)?));
                }
            }
            for k in keys {
                layers.remove(k.as_str())?;
            }
        }
        txn.commit()?;
        Ok(unlinked)
    }

    /// Replaces the whole index with what the storage holds. `manifests` gives each manifest's
    /// metadata (read from its blob) and the description of a tagged image.
    pub(crate) fn rebuild(
        &self,
        tags: &[(String, String, Digest)],
        manifests: &[(String, Digest, ManifestMeta, Option<String>)],
        layers: &[(String, Digest)],
        blobs: &HashMap<Digest, BlobMeta>,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        for t in [REPOS, MANIFESTS, BLOBS] {
            txn.delete_table(t)?;
        }
        txn.delete_table(TAGS)?;
        txn.delete_table(REFERRERS)?;
        txn.delete_table(LAYERS)?;
        {
            let mut bt = txn.open_table(BLOBS)?;
            for (d, m) in blobs {
                bt.insert(d.to_string().as_str(), json(m).as_slice())?;
            }
            let mut lt = txn.open_table(LAYERS)?;
            for (repo, d) in layers {
                if blobs.contains_key(d) {
                    lt.insert(key2(repo, &d.to_string()).as_str(), ())?;
                }
            }
            let mut mt = txn.open_table(MANIFESTS)?;
            let mut rt = txn.open_table(REFERRERS)?;
            let mut repos: BTreeMap<String, RepoMeta> = BTreeMap::new();
            let mut present = HashSet::new();
            for (repo, d, meta, desc) in manifests {
                mt.insert(key2(repo, &d.to_string()).as_str(), json(meta).as_slice())?;
                if let Some(s) = &meta.subject {
                    rt.insert(key2(&key2(repo, &s.to_string()), &d.to_string()).as_str(), ())?;
                }
                let rm = repos.entry(repo.clone()).or_default();
                if let Some(desc) = desc {
                    rm.description = desc.clone();
                }
                present.insert((repo.clone(), d.clone()));
            }
            let mut tt = txn.open_table(TAGS)?;
            for (repo, tag, d) in tags {
                if present.contains(&(repo.clone(), d.clone())) {
                    tt.insert(key2(repo, tag).as_str(), d.to_string().as_str())?;
                }
            }
            let mut rp = txn.open_table(REPOS)?;
            for (name, meta) in repos {
                rp.insert(name.as_str(), json(&meta).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}
