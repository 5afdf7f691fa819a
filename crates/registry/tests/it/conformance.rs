//! The OCI distribution-spec conformance suite as tests against an in-process registry, one
//! test per requirement and named after it, with the exact statuses, error codes and headers.
//!
//! - the legacy v1.1 Ginkgo suite (`conformance/0{1..4}_*_test.go`): [`pull`], [`push`],
//!   [`discovery`], [`management`];
//! - the 2026 redesign (`conformance/run.go`): [`redesign`] (ping, empty repository, the blob
//!   APIs for sha256 and sha512, range reads, bad digests, manifest errors) and [`data_sets`]
//!   (push, tag list, head, pull, referrers and delete of each data set);
//! - what Berth serves beyond the spec: [`beyond`] (auth, read-only, manifest size limit,
//!   `docker search`, catalog, metrics, uploads across a restart).
//!
//! Where the spec allows alternatives (201 or 202, 400 or 404), exactly those are accepted.

mod beyond;
mod data_sets;
mod discovery;
mod management;
mod pull;
mod push;
mod redesign;
