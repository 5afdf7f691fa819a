//! Failures of a pull, each naming the registry, reference or layer it is about.

use berth_oci::Digest;

/// Why a pull failed. The engine maps the variants to status codes before the progress
/// stream starts, and to `errorDetail` lines after.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("invalid reference format: {source}")]
    InvalidReference {
        #[from]
        source: berth_oci::Error,
    },
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
    DigestMismatch {
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
    Layer { digest: Digest, source: crate::Error },
    #[error("reading layer {digest} from {host} failed: {reason}")]
    Download {
        digest: Digest,
        host: String,
        reason: String,
    },
    #[error("{source}")]
    Store {
        #[from]
        source: crate::Error,
    },
}
