//! berth-registry's integration tests, against a registry served in-process.

mod conformance;
mod fixtures;
mod harness;
