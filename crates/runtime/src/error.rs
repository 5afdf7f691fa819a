//! The runtime's errors.

use std::path::PathBuf;

/// Failures of bundle generation, the rootfs mount and the shim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("unable to find user {user}: no matching entries in passwd file")]
    NoSuchUser { user: String },
    #[error("unable to find group {group}: no matching entries in group file")]
    NoSuchGroup { group: String },
    #[error("error gathering device information while adding custom device {path:?}: {reason}")]
    Device { path: PathBuf, reason: String },
    #[error("invalid device cgroup format '{rule}'")]
    DeviceCgroupRule { rule: String },
    #[error("sysctl {name:?} {reason}")]
    Sysctl { name: String, reason: String },
    #[error("invalid seccomp profile: {reason}")]
    Seccomp { reason: String },
    #[error("invalid OCI runtime spec: {reason}")]
    Spec { reason: String },
    #[error("failed to mount the root filesystem at {}: {source}", target.display())]
    Mount { target: PathBuf, source: nix::Error },
    #[error("failed to start the shim for container {id}: {reason}")]
    Shim { id: String, reason: String },
    #[error("invalid shim record {}: {source}", path.display())]
    Record { path: PathBuf, source: serde_json::Error },
    #[error("cgroup {}: {reason}", path.display())]
    Cgroup { path: PathBuf, reason: String },
    #[error("failed to write {value:?} to {}: {source}", path.display())]
    CgroupWrite {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
}

/// The classes of failure callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request cannot work as given (bad user, bad capability, bad mount).
    InvalidArgument,
    /// Something on the host failed.
    Internal,
}

impl Error {
    /// What class of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. }
            | Error::NoSuchUser { .. }
            | Error::NoSuchGroup { .. }
            | Error::Spec { .. }
            | Error::Seccomp { .. }
            | Error::Device { .. }
            | Error::DeviceCgroupRule { .. }
            | Error::Sysctl { .. } => ErrorKind::InvalidArgument,
            Error::Io { .. }
            | Error::Mount { .. }
            | Error::Shim { .. }
            | Error::Record { .. }
            | Error::Cgroup { .. }
            | Error::CgroupWrite { .. } => ErrorKind::Internal,
        }
    }
}

pub(crate) fn io(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}
