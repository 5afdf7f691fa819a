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
    #[error("{entry:?}: {reason}")]
    Overwrite { entry: String, reason: &'static str },
    #[error(
        "{path:?} in the container's layer is a renamed directory or a metadata-only copy (overlay redirect_dir or metacopy); its layer cannot be read from the upper directory"
    )]
    OverlayRedirect { path: String },
    #[error("the image {id} a commit builds on is gone (removed while the commit ran)")]
    ParentGone { id: String },
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

    // Talking to registries (pull, push, login, search).
    #[error("registry {host} is blocked (--block-registry); refusing to pull {reference}")]
    Blocked { host: String, reference: String },
    #[error("failed to reach registry {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("unauthorized: {message} (registry {host})")]
    Unauthorized { host: String, message: String },
    #[error("manifest for {reference} not found: {message}")]
    ManifestNotFound { reference: String, message: String },
    #[error("registry {host} answered {status} for {what}: {message}")]
    Registry {
        host: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("invalid manifest for {reference}: {source}")]
    InvalidManifest {
        reference: String,
        source: berth_oci::Error,
    },
    #[error("{reference} has no manifest for linux/{arch}")]
    NoPlatform { reference: String, arch: String },
    #[error("digest mismatch for {what} of {reference}: expected {expected}, computed {computed}")]
    RegistryDigestMismatch {
        reference: String,
        what: &'static str,
        expected: Digest,
        computed: Digest,
    },
    #[error("image config {digest}: {reason}")]
    InvalidConfig { digest: Digest, reason: String },
    #[error("layer {digest}: its uncompressed content is {computed}, but the image config says {expected}")]
    DiffIdMismatch {
        digest: Digest,
        expected: Digest,
        computed: Digest,
    },
    #[error("layer {digest}: {source}")]
    Layer { digest: Digest, source: Box<Error> },
    #[error("reading layer {digest} from {host} failed: {reason}")]
    Download {
        digest: Digest,
        host: String,
        reason: String,
    },
    /// dockerd's words for a search the registry refused.
    #[error("Unexpected status code {status}")]
    SearchStatus { status: u16 },
    #[error(
        "searching Docker Hub is not possible: Berth has no route to docker.io; name a registry, as in `docker search myregistry:5000/{term}`"
    )]
    NoDockerHub { term: String },
    #[error("error decoding registry search results from {host}: {reason}")]
    SearchDecode { host: String, reason: String },
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
            | Error::Overwrite { .. }
            | Error::Read { .. }
            | Error::DigestMismatch { .. }
            | Error::InvalidReference { .. }
            | Error::UnsupportedReference { .. }
            | Error::AmbiguousId { .. }
            | Error::InvalidChange { .. }
            | Error::EmptyImport
            | Error::InvalidArchive { .. }
            | Error::Blocked { .. } => ErrorKind::InvalidArgument,
            Error::Io { .. } | Error::Db { .. } | Error::CorruptRecord { .. } | Error::OverlayRedirect { .. } => {
                ErrorKind::Internal
            }
            Error::ParentGone { .. } => ErrorKind::Conflict,
            // Not "unauthorized": dockerd answers a refused pull as not found ("pull access
            // denied"), and on a 401 the docker CLI would prompt for a login and retry.
            Error::Unauthorized { .. } | Error::ManifestNotFound { .. } | Error::NoPlatform { .. } => {
                ErrorKind::NotFound
            }
            // The registry's fault, not the daemon's.
            Error::Unreachable { .. }
            | Error::Registry { .. }
            | Error::InvalidManifest { .. }
            | Error::RegistryDigestMismatch { .. }
            | Error::InvalidConfig { .. }
            | Error::DiffIdMismatch { .. }
            | Error::Layer { .. }
            | Error::Download { .. }
            | Error::SearchStatus { .. }
            | Error::SearchDecode { .. }
            | Error::NoDockerHub { .. } => ErrorKind::Unavailable,
        }
    }
}

/// Classes of failure an API maps to its own status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    InvalidArgument,
    /// A registry failed or sent something wrong.
    Unavailable,
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
