//! `docker commit`: a container's changes become a new image on top of the one it runs.
//! The layer tar is written from the container's upper directory on one thread and unpacked
//! into a new snapshot on another, in one pass: the snapshot is the new image's top overlay
//! lower at once, and a recipe (as for an import) rebuilds the exact layer blob when a push
//! or save needs it, so no copy of the tar is kept.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use berth_oci::media_types;

use crate::config::{ContainerConfig, History, ImageConfig, RootFs};
use crate::content::fsync_dir;
use crate::diff::UpperDiff;
use crate::error::{Error, io};
use crate::names::normalize;
use crate::store::{Image, ImageRecord, ImageStore, Layer, chain_ids, remove_tree};

/// What a commit needs besides the container's changes.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `repo[:tag]` to tag the image with.
    pub reference: Option<String>,
    pub author: String,
    pub comment: String,
    /// The container's ID, recorded in the config as docker does.
    pub container_id: String,
    /// The history's `created_by`: the container's command, space-joined.
    pub created_by: String,
    /// The new image's config (the container's, with the `--change`s applied).
    pub config: ContainerConfig,
}

impl ImageStore {
    /// Stores `diff` (nothing, when empty: docker adds no layer then) as a new layer on
    /// `parent`, with a config whose history has one more entry, and tags it. Nothing is
    /// visible unless all of it succeeds.
    pub fn commit(&self, parent: &ImageRecord, diff: &UpperDiff, opts: &CommitOptions) -> Result<Image, Error> {
        let tag = opts.reference.as_deref().map(normalize).transpose()?;
        let tmp = self.snapshots.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let recipe_tmp = tmp.with_extension("recipe");
        let result = self.commit_into(parent, diff, opts, tag, &tmp);
        if tmp.exists() {
            remove_tree(&tmp)?;
        }
        let _ = fs::remove_file(&recipe_tmp);
        result
    }

    fn commit_into(
        &self,
        parent: &ImageRecord,
        diff: &UpperDiff,
        opts: &CommitOptions,
        tag: Option<String>,
        tmp: &Path,
    ) -> Result<Image, Error> {
        let new_layer = if diff.is_empty() {
            None
        } else {
            fs::create_dir(tmp).map_err(io("create directory", tmp))?;
            Some(self.unpack_diff(diff, tmp)?)
        };
        let now = time::OffsetDateTime::now_utc();
        let created = now
            .format(&time::format_description::well_known::Rfc3339)
            .expect("now formats as RFC 3339");
        let mut layers = parent.layers.clone();
        let mut diff_ids = parent.config.rootfs.diff_ids.clone();
        if let Some((diff_id, diff_size)) = &new_layer {
            diff_ids.push(diff_id.clone());
            layers.push(Layer {
                digest: diff_id.clone(),
                media_type: media_types::OCI_LAYER_TAR.to_owned(),
                size: *diff_size,
                diff_id: diff_id.clone(),
                diff_size: *diff_size,
            });
        }
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut history = parent.config.history.clone();
        history.push(History {
            created: Some(created.clone()),
            author: non_empty(&opts.author),
            created_by: non_empty(&opts.created_by),
            comment: non_empty(&opts.comment),
            empty_layer: new_layer.is_none(),
        });
        let config = ImageConfig {
            created: Some(created),
            author: non_empty(&opts.author),
            architecture: parent.config.architecture.clone(),
            os: parent.config.os.clone(),
            config: opts.config.clone(),
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids,
            },
            history,
            container: non_empty(&opts.container_id),
        };
        let (id, manifest) = self.put_config_and_manifest(&config, &layers)?;
        let record = ImageRecord {
            id,
            manifest: Some(manifest),
            config,
            size: layers.iter().map(|l| l.diff_size).sum(),
            layers,
            created: now.unix_timestamp(),
        };

        let chains = record.chain_ids();
        let parent_chains = chain_ids(&parent.config.rootfs.diff_ids);
        // The parent's snapshots are shared, not moved: they must still be there.
        let absent = self.snapshots.join(".absent");
        let mut dirs: Vec<&Path> = parent_chains.iter().map(|_| absent.as_path()).collect();
        if new_layer.is_some() {
            dirs.push(tmp);
        }
        let guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if parent_chains.iter().any(|c| !self.snapshot_path(c).is_dir()) {
            return Err(Error::ParentGone {
                id: parent.id.to_string(),
            });
        }
        if new_layer.is_some() {
            let top = chains.last().expect("a new layer has a chain ID");
            let recipe_path = self.recipe_path(top);
            let recipe_tmp = tmp.with_extension("recipe");
            if recipe_path.exists() {
                let _ = fs::remove_file(&recipe_tmp);
            } else {
                fs::rename(&recipe_tmp, &recipe_path).map_err(io("rename", &recipe_path))?;
                fsync_dir(&self.snapshots)?;
            }
        }
        let image = self.add_locked(record, &dirs, tag)?;
        drop(guard);
        Ok(image)
    }

    /// Writes `diff`'s tar on a thread of its own into a pipe that [`unpack_layer`] reads.
    fn unpack_diff(&self, diff: &UpperDiff, tmp: &Path) -> Result<(berth_oci::Digest, u64), Error> {
        let (reader, writer) = nix::unistd::pipe().map_err(|e| io("create a pipe for", tmp)(e.into()))?;
        let (reader, writer) = (fs::File::from(reader), fs::File::from(writer));
        std::thread::scope(|s| {
            let producer = s.spawn(move || -> std::io::Result<()> {
                let out = diff.write_tar(BufWriter::with_capacity(1 << 20, writer))?;
                out.into_inner().map_err(|e| e.into_error())?.flush()
            });
            // Devices in the layer were made in the container (with CAP_MKNOD): keep them.
            let unpacked = self.unpack_layer(reader, tmp, true);
            // A writer that failed ended the stream early, which the tar reader may take for
            // its end: its error decides.
            let produced = producer.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            let unpacked = unpacked?;
            produced.map_err(|source| Error::Io {
                op: "read the container's changes for",
                path: tmp.to_path_buf(),
                source,
            })?;
            Ok(unpacked)
        })
    }
}
