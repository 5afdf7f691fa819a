//! A container's volumes: found or made at create (and filled from the image), mounted
//! while it runs, released when it goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::settings::MountRec;
use super::{Containers, Record, io_err};
use crate::error::{Error, Result};
use crate::volumes::Volumes;

impl Containers {
    /// The volumes, shared with the API.
    pub(crate) fn volumes(&self) -> Arc<Volumes> {
        Arc::clone(&self.volumes)
    }

    /// The image's snapshots, top layer first: the overlay's lower directories.
    pub(crate) fn lowers(&self, image: &berth_image::Image) -> Vec<PathBuf> {
        image
            .record
            .chain_ids()
            .iter()
            .rev()
            .map(|c| self.images.snapshot_path(c))
            .collect()
    }

    /// Drops the container's references to its volumes (the container is gone); with
    /// `remove_anonymous` (`rm -v`, `--rm`) its anonymous volumes go too, unless another
    /// container uses them.
    pub(super) fn release_volumes(&self, rec: &Record, remove_anonymous: bool) {
        for m in rec
            .settings
            .mounts
            .iter()
            .filter(|m| m.is_volume() && !m.volume.is_empty())
        {
            self.volumes.release(&m.volume, &rec.id);
            if remove_anonymous && m.anonymous {
                match self.volumes.remove(&m.volume, false) {
                    Ok(()) | Err(Error::VolumeInUse { .. } | Error::NoSuchVolume { .. }) => {}
                    Err(e) => {
                        tracing::warn!(container = %rec.id, volume = %m.volume, error = %e, "failed to remove an anonymous volume")
                    }
                }
            }
        }
    }

    /// Mounts the devices of the container's volumes that have one (a tmpfs, a bind mount
    /// of a host path); undone on failure.
    pub(super) fn activate_volumes(&self, rec: &Record) -> Result<()> {
        let volumes: Vec<&MountRec> = rec.settings.mounts.iter().filter(|m| m.is_volume()).collect();
        for (i, m) in volumes.iter().enumerate() {
            if let Err(e) = self.volumes.activate(&m.volume, &rec.id) {
                for done in &volumes[..i] {
                    self.volumes.deactivate(&done.volume, &rec.id);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// The container stopped using its volumes (`events`: send `unmount` events).
    pub(super) fn deactivate_volumes(&self, rec: &Record, events: bool) {
        for m in rec.settings.mounts.iter().filter(|m| m.is_volume()) {
            self.volumes.deactivate(&m.volume, &rec.id);
            if events {
                self.volumes
                    .emit_mount("unmount", &m.volume, &rec.id, &m.destination, !m.readonly);
            }
        }
    }
}

/// Creates (or finds) the volumes the container names, records its references, and fills
/// new, empty volumes from the image's content at their mount points (dockerd's
/// `populateVolumes`, at create: the container's upper layer is still empty then). Returns
/// the volumes made now; on failure everything is undone.
pub(super) fn prepare_volumes(
    volumes: &Volumes,
    dir: &Path,
    id: &str,
    mounts: &mut [MountRec],
    lowers: &[PathBuf],
) -> Result<Vec<String>> {
    let mut created = Vec::new();
    let mut referenced = Vec::new();
    let result = (|| {
        for m in mounts.iter_mut().filter(|m| m.is_volume()) {
            let name = Some(m.volume.as_str()).filter(|n| !n.is_empty());
            let (v, new) = volumes.create(
                name,
                "local",
                m.volume_options.clone(),
                m.volume_labels.clone(),
                Some(id),
            )?;
            referenced.push(v.name.clone());
            if new {
                created.push(v.name.clone());
            }
            m.source = volumes.data_path(&v.name).display().to_string();
            m.volume = v.name;
        }
        let copies: Vec<&MountRec> = mounts.iter().filter(|m| m.is_volume() && !m.nocopy).collect();
        if copies.is_empty() {
            return Ok(());
        }
        let rootfs = dir.join("rootfs");
        berth_runtime::mount_overlay(lowers, &dir.join("upper"), &dir.join("work"), &rootfs)?;
        let filled = copies.iter().try_for_each(|m| populate(volumes, id, &rootfs, m));
        if let Err(e) = berth_runtime::unmount(&rootfs) {
            tracing::warn!(container = %id, error = %e, "failed to unmount after filling volumes");
        }
        filled
    })();
    match result {
        Ok(()) => Ok(created),
        Err(e) => {
            for v in &referenced {
                volumes.release(v, id);
            }
            for v in &created {
                let _ = volumes.remove(v, false);
            }
            Err(e)
        }
    }
}

/// Copies the image's directory at `m`'s destination into its volume when the volume is
/// empty. A path that is not in the image, or not a directory, is left alone (a symlink is
/// not followed); an anonymous volume over a file is refused, as dockerd refuses it.
fn populate(volumes: &Volumes, id: &str, rootfs: &Path, m: &MountRec) -> Result<()> {
    let src = rootfs.join(m.destination.trim_start_matches('/'));
    let meta = match std::fs::symlink_metadata(&src) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", &src)(e)),
    };
    if !meta.is_dir() {
        if m.anonymous && meta.is_file() {
            return Err(Error::InvalidContainerConfig {
                reason: format!("cannot mount volume over existing file, file exists {}", m.destination),
            });
        }
        return Ok(());
    }
    volumes.activate(&m.volume, id)?;
    let data = volumes.data_path(&m.volume);
    let empty = std::fs::read_dir(&data).is_ok_and(|mut d| d.next().is_none());
    let copied = if empty {
        tracing::debug!(container = %id, volume = %m.volume, from = %m.destination, "filling the volume from the image");
        berth_runtime::copy_tree(&src, &data).map_err(Error::from)
    } else {
        Ok(())
    };
    volumes.deactivate(&m.volume, id);
    copied
}
