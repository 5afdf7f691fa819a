//! Berth's engine: the daemon behind `berth daemon`. It owns the data root (one daemon per
//! root, by lock), the pid file and the unix socket, and serves the Docker Engine API there.
//!
//! [`Daemon::bind`] takes a [`Config`] and does everything that can fail at start-up;
//! [`Daemon::run`] serves until [`shutdown_signal`] (or any future) resolves. Failures are an
//! [`Error`]; its [`ErrorKind`] decides the HTTP status an API client sees.
//!
//! Served so far: `/_ping`, `/version`, `/info`, `/events` (image and container events), the
//! image endpoints (pull, push, import, list, inspect, history, tag, remove, prune, save,
//! load) over [`berth_image::ImageStore`], the container endpoints (create, start, stop,
//! kill, wait, remove, list, inspect, logs, attach, exec, pause, unpause, stats, update) over
//! `berth shim` processes that outlive the daemon and their cgroups, and the volume
//! endpoints (local driver); every other path answers 501 with a message naming it.

// `/info` is one large `json!` literal.
#![recursion_limit = "256"]

mod api;
mod config;
mod containers;
mod daemon;
mod error;
mod events;
mod host;
mod networks;
mod volumes;

pub use config::Config;
pub use daemon::{Daemon, shutdown_signal};
pub use error::{Error, ErrorKind};
