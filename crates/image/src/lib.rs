//! Berth's local image store. So far it owns safe layer extraction ([`extract`]): unpacking
//! an image layer (a tar stream) into a snapshot directory so that no entry can write outside
//! it, with whiteouts turned into overlayfs whiteouts for overlay lowers, or applied in place.
//! The content store, snapshots, pull/push, import/save/load follow (issue 4).

mod error;
mod extract;

pub use error::Error;
pub use extract::{ExtractOptions, ExtractStats, Whiteouts, extract};
