//! Dev-only fixtures for Berth's tests and benchmarks.
//!
//! - [`ImageBuilder`] makes the busybox-static test image (several layers, whiteouts, an
//!   opaque directory, symlinks; optionally big random layers) as an OCI image layout, a
//!   `docker save` archive, or raw blobs ([`ImageInfo`]) to push over HTTP.
//! - [`require`] is the one prerequisite gate: a test missing a [`Prereq`] is skipped with a
//!   printed reason, and fails under `CI=true`.
//! - [`RegistryProcess`] runs `berth registry serve` on a free loopback port and keeps its log.
//!
//! The `berth-fixture` binary writes the same images for benchmark scripts.

mod image;
mod prereq;
mod registry;

pub use image::{ImageBuilder, ImageInfo, LayerData, LayerInfo, go_arch};
pub use prereq::{Prereq, require};
pub use registry::RegistryProcess;
