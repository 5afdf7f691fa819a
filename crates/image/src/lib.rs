//! Berth's local image store. [`ImageStore`] keeps images under the daemon's data root:
//! blobs in a content store ([`ContentStore`], [`LocalContent`]), image records and tags in one
//! redb file, and layers unpacked once into snapshots keyed by chain ID and reference counted.
//! [`ImageStore::import`] turns a root filesystem tarball into an image. Layers are unpacked
//! by [`extract`], which no entry can trick into writing outside its root, with whiteouts
//! turned into overlayfs whiteouts for overlay lowers, or applied in place.
//! [`ImageStore::export`] and [`ImageStore::load`] write and read `docker save` archives
//! (and OCI layout tarballs). [`resolve`] and [`Resolved::pull`] pull images from registries
//! (parallel, streaming, verified layer downloads). Push follows (issue 4).
//! [`UpperDiff`] reads a container's overlay upper directory (`docker diff`), and
//! [`ImageStore::commit`] stores it as a new image (`docker commit`); [`write_path_archive`]
//! and [`write_tree`] write the tarballs of `docker cp` and `docker export`.

mod archive;
mod chan;
mod commit;
mod config;
mod content;
mod diff;
mod distribution;
mod error;
mod extract;
mod names;
mod pull;
mod recipe;
mod store;
mod tree;

pub use archive::{Export, Loaded};
pub use chan::{BatchReader, BatchSender, batch_channel};
pub use commit::CommitOptions;
pub use config::{ContainerConfig, History, ImageConfig, RootFs, apply_changes};
#[cfg(feature = "testsuite")]
pub use content::testsuite;
pub use content::{ContentStore, ContentWriter, LocalContent, LocalWriter};
pub use diff::{Change, ChangeKind, UpperDiff};
pub use distribution::{
    Credentials, DEFAULT_CERTS_DIR, Distribution, PARALLEL_LAYERS, Progress, PullOutcome, PushOutcome, RegistryOptions,
    Resolved, SearchResult, login, push, push_repository_name, resolve, search, split_search_term,
};
pub use error::{Error, ErrorKind};
pub use extract::{ExtractOptions, ExtractStats, Whiteouts, extract};
pub use names::{familiar, normalize, normalize_reference, split_tag};
pub use store::{Image, ImageRecord, ImageStore, ImportOptions, Layer, Removed, chain_ids};
pub use tree::{PathStat, container_path, follow_in_scope, go_file_mode, stat_path, write_path_archive, write_tree};
