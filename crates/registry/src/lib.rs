//! Berth's OCI distribution registry. It owns the HTTP API (distribution-spec v1.1, the
//! referrers API, Docker's legacy `/v1/search`), upload sessions, blob and manifest storage
//! over `object_store`, the metadata index that serves tags, catalog and search without
//! walking storage, htpasswd + TLS, online garbage collection and metrics.
//!
//! Main types: [`Config`] (the settings), [`Server`] (bind, then `run`), [`Registry`] (the
//! state, also used offline by `gc` and `reindex`).

mod auth;
mod blobs;
mod config;
mod error;
mod gc;
mod index;
mod manifests;
mod metrics;
mod registry;
mod routes;
mod search;
mod server;
mod storage;
mod zerocopy;

pub use config::Config;
pub use error::Error;
pub use gc::GcReport;
pub use registry::Registry;
pub use routes::router;
pub use server::Server;
