//! The store side of a pull: committing a pulled image whose blobs are in the content store
//! and whose new layers are unpacked in `.tmp-` snapshot directories.

use std::path::Path;
use std::sync::Arc;

use berth_oci::Descriptor;

use crate::config::ImageConfig;
use crate::content::ContentStore;
use crate::distribution::layer::Unpacked;
use crate::error::Error;
use crate::store::{Image, ImageRecord, ImageStore, Layer};

/// Everything a pull fetched, ready to commit.
pub(crate) struct Pulled {
    pub(crate) config: ImageConfig,
    pub(crate) config_bytes: Vec<u8>,
    /// The image manifest (for one platform).
    pub(crate) manifest_bytes: Vec<u8>,
    pub(crate) layers: Vec<Descriptor>,
    /// Per layer: what this pull unpacked, or `None` when the snapshot was already here.
    pub(crate) unpacked: Vec<Option<Arc<Unpacked>>>,
    /// The full name to tag (`registry/repo:tag`), if pulled by tag.
    pub(crate) tag: Option<String>,
}

impl ImageStore {
    /// Deletes a blob a failed pull committed, unless an image names it by now.
    pub(crate) fn forget_blob(&self, digest: &berth_oci::Digest) {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let named = match self.images() {
            Ok(images) => images.iter().any(|i| {
                &i.record.id == digest
                    || i.record.manifest.as_ref() == Some(digest)
                    || i.record.layers.iter().any(|l| &l.digest == digest)
            }),
            Err(e) => {
                tracing::warn!(blob = %digest, error = %e, "cannot tell whether a blob is used; keeping it");
                true
            }
        };
        if !named && let Err(e) = self.content.delete(digest) {
            tracing::warn!(blob = %digest, error = %e, "failed to delete an unused blob");
        }
    }

    /// Stores the config and manifest blobs, then — holding the write lock, with every layer
    /// blob checked to be present — moves the new snapshots into place and records the image
    /// and its tag in one transaction. Nothing is visible before that transaction.
    pub(crate) fn commit_pull(&self, p: Pulled) -> Result<Image, Error> {
        let (id, _) = self.put_blob(&p.config_bytes)?;
        let (manifest, _) = self.put_blob(&p.manifest_bytes)?;
        let layers: Vec<Layer> = p
            .layers
            .iter()
            .zip(&p.unpacked)
            .zip(&p.config.rootfs.diff_ids)
            .map(|((desc, u), diff_id)| match u {
                Some(u) => u.layer.clone(),
                None => Layer {
                    digest: desc.digest.clone(),
                    media_type: desc.media_type.clone(),
                    size: desc.size,
                    diff_id: diff_id.clone(),
                    // Unknown without unpacking again; the snapshot is shared anyway.
                    diff_size: 0,
                },
            })
            .collect();
        let created = p.config.created_unix();
        let record = ImageRecord {
            id,
            manifest: Some(manifest),
            config: p.config,
            size: layers.iter().map(|l| l.diff_size).sum(),
            layers,
            created,
        };
        // Layers already here need no directory: their snapshot row exists, so none is moved.
        let absent = self.snapshots.join(".absent");
        let dirs: Vec<&Path> = p
            .unpacked
            .iter()
            .map(|u| u.as_ref().map_or(absent.as_path(), |u| u.dir.as_path()))
            .collect();
        let guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        for l in &record.layers {
            if !self.content.contains(&l.digest) {
                return Err(Error::BlobNotFound {
                    digest: l.digest.clone(),
                });
            }
        }
        let image = self.add_locked(record, &dirs, p.tag)?;
        drop(guard);
        Ok(image)
    }
}
