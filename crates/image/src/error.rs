use std::path::PathBuf;

use berth_oci::Digest;

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
    #[error("blob {digest} is not in the content store")]
    BlobNotFound { digest: Digest },
    #[error("content digest mismatch: expected {expected}, computed {computed}")]
    DigestMismatch { expected: Digest, computed: Digest },
    #[error("image metadata ({op}): {source}")]
    Db { op: &'static str, source: Box<redb::Error> },
    #[error("image record {id} is corrupt: {source}")]
    CorruptRecord { id: String, source: serde_json::Error },
    #[error("invalid reference format: {source}")]
    InvalidReference {
        #[from]
        source: berth_oci::Error,
    },
    #[error("invalid reference format: {reference:?} {reason}")]
    UnsupportedReference { reference: String, reason: &'static str },
    #[error("No such image: {reference}")]
    ImageNotFound { reference: String },
    #[error("short ID {prefix} names more than one image; use more characters")]
    AmbiguousId { prefix: String },
    #[error("conflict: unable to delete {short_id} (must be forced) - image is referenced in multiple repositories")]
    ReferencedByTags { short_id: String },
    #[error("invalid change {change:?}: {reason}")]
    InvalidChange { change: String, reason: String },
    #[error("the import is empty: no root filesystem tarball was sent")]
    EmptyImport,
    #[error("invalid image archive: {entry}: {reason}")]
    InvalidArchive { entry: String, reason: String },
}

impl Error {
    /// The class of failure, for the API to pick its status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ImageNotFound { .. } | Error::BlobNotFound { .. } => ErrorKind::NotFound,
            Error::ReferencedByTags { .. } => ErrorKind::Conflict,
            Error::UnsafeEntry { .. }
            | Error::ThroughSymlink { .. }
            | Error::HardlinkTarget { .. }
            | Error::DeviceNode { .. }
            | Error::Read { .. }
            | Error::DigestMismatch { .. }
            | Error::InvalidReference { .. }
            | Error::UnsupportedReference { .. }
            | Error::AmbiguousId { .. }
            | Error::InvalidChange { .. }
            | Error::EmptyImport
            | Error::InvalidArchive { .. } => ErrorKind::InvalidArgument,
            Error::Io { .. } | Error::Db { .. } | Error::CorruptRecord { .. } => ErrorKind::Internal,
        }
    }
}

/// Classes of failure an API maps to its own status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    InvalidArgument,
    Internal,
}

pub(crate) fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Db {
        op,
        source: Box::new(e.into()),
    }
}

pub(crate) fn io<'a>(op: &'static str, path: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}
