use std::path::PathBuf;

/// Failures of the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("layer entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: &'static str },
    #[error("layer entry {entry:?} goes through the symlink {symlink:?}; refusing to follow it")]
    ThroughSymlink { entry: String, symlink: String },
    #[error("layer entry {entry:?} is a hardlink to {target:?}, which is not in the layer")]
    HardlinkTarget { entry: String, target: String },
    #[error("layer entry {entry:?} is a device node; only a root import that allows devices may create one")]
    DeviceNode { entry: String },
    #[error("reading the layer failed: {source}")]
    Read { source: std::io::Error },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn io<'a>(op: &'static str, path: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}
