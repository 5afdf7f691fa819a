use thiserror::Error;

/// What can be wrong with a digest, name, reference or manifest.
#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: &'static str },
    #[error("unsupported digest algorithm {algorithm:?} (supported: sha256, sha512)")]
    UnsupportedAlgorithm { algorithm: String },
    #[error("invalid repository name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid tag {tag:?}: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag { tag: String },
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: &'static str },
    #[error("invalid manifest: {reason}")]
    InvalidManifest { reason: String },
}
