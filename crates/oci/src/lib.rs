//! Pure OCI and Docker image types, with no I/O: content digests (`sha256`, `sha512`) and a
//! streaming [`Digester`]; repository names and tags as the distribution spec constrains them;
//! image references (`host:port/ns/name:tag@digest`); media types; and a tolerant view of
//! manifests and indexes ([`Manifest`]) that names every descriptor a manifest points at.

mod digest;
mod error;
mod manifest;
mod media;
mod name;
mod reference;

pub use digest::{Algorithm, Digest, Digester};
pub use error::Error;
pub use manifest::{Descriptor, Manifest, ManifestKind};
pub use media::media_types;
pub use name::{RepoName, Tag};
pub use reference::Reference;
