//! The engine's errors, their classes, and the one place that maps a class to the Docker
//! status code and `{"message": …}` body.

use std::path::PathBuf;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// Failures of the daemon: start-up (config, lock, socket) and API requests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("invalid host {host:?}: only unix://ABSOLUTE_PATH is supported")]
    InvalidHost { host: String },
    #[error(
        "socket group {name:?} does not exist; create it (groupadd --system {name}) or pass another with -G/--group"
    )]
    NoSuchGroup { name: String },
    #[error("invalid {flag} {value:?}: {reason}")]
    InvalidRegistry {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "data root {} is in use by another berth daemon ({holder}); stop that daemon or choose another --data-root",
        data_root.display()
    )]
    DataRootLocked { data_root: PathBuf, holder: String },
    #[error(
        "pid file {} names a running process (pid {pid}); is another daemon using it? Choose another --pidfile",
        path.display()
    )]
    PidfileInUse { path: PathBuf, pid: i32 },
    #[error(
        "socket {} is in use by a running daemon; stop it or choose another -H unix://PATH",
        path.display()
    )]
    SocketInUse { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("client version {version} is too new. Maximum supported API version is {max}")]
    ApiVersionTooNew { version: String, max: &'static str },
    #[error(
        "client version {version} is too old. Minimum supported API version is {min}, please upgrade your client to a newer version"
    )]
    ApiVersionTooOld { version: String, min: &'static str },
    #[error("invalid value for {name}: {value:?} ({reason})")]
    InvalidQuery {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("berth: {method} {path} is not implemented yet")]
    NotImplemented { method: String, path: String },
    #[error("No such container: {name}")]
    NoSuchContainer { name: String },
    #[error("invalid filter '{name}'")]
    InvalidFilter { name: String },
    #[error("berth: {what} is not implemented yet")]
    NotBuilt { what: String },
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameConflict { name: String, id: String },
    #[error("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName { name: String },
    #[error("No such image: {reference}")]
    NoSuchImage { reference: String },
    #[error("{reason}")]
    InvalidContainerConfig { reason: String },
    #[error("network {name} not found")]
    NoSuchNetwork { name: String },
    /// A network named in a networks request (404, unlike [`Error::NoSuchNetwork`]).
    #[error("network {name} not found")]
    NetworkNotFound { name: String },
    /// A network request that cannot work as given (bad subnet, overlap, bad option).
    #[error("{0}")]
    InvalidNetwork(String),
    /// A network that is in use or predefined, or a name taken.
    #[error("{0}")]
    NetworkConflict(String),
    /// An address another container holds.
    #[error("Address already in use: {ip} on network {network} is held by container {holder}")]
    AddressInUse {
        ip: String,
        network: String,
        holder: String,
    },
    /// A host port another container publishes or another program listens on.
    #[error("Bind for {addr} failed: port is already allocated{detail}")]
    PortAllocated { addr: String, detail: String },
    #[error("{0}")]
    Net(#[from] berth_net::Error),
    #[error(
        "cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"
    )]
    ContainerRunning { name: String },
    #[error("Container {id} is not running")]
    NotRunning { id: String },
    #[error("No such exec instance: {id}")]
    NoSuchExec { id: String },
    #[error("You cannot attach to a stopped container, start it first")]
    AttachStopped,
    #[error(
        "--init: no init binary found (searched {searched}); install an init such as Debian's tini package (its tini-static), or give the daemon one with --init-path"
    )]
    NoInitBinary { searched: String },
    #[error("{message}")]
    StartFailed { message: String, exec_error: bool },
    #[error("Container {id} is already paused")]
    AlreadyPaused { id: String },
    #[error("Container {id} is not paused")]
    NotPaused { id: String },
    #[error("Container {name} is paused, unpause the container before exec")]
    ExecPaused { name: String },
    /// A request that conflicts with the container's settings (`docker update`).
    #[error("Cannot update container {id}: {reason}")]
    UpdateConflict { id: String, reason: String },
    /// The host refused an operation (freeze, a live limit); the message says why, as
    /// dockerd's does.
    #[error("{message}")]
    HostRefused { message: String },
    #[error("get {name}: no such volume")]
    NoSuchVolume { name: String },
    #[error("remove {name}: volume is in use - [{}]", users.join(", "))]
    VolumeInUse { name: String, users: Vec<String> },
    #[error("create {name}: {reason}")]
    InvalidVolume { name: String, reason: String },
    #[error("create {name}: error looking up volume plugin {driver}: plugin \"{driver}\" not found")]
    NoSuchVolumeDriver { name: String, driver: String },
    #[error("a prune operation is already running")]
    PruneRunning,
    #[error("{0}")]
    ImageInUse(String),
    #[error("Could not find the file {path} in container {container}")]
    ContainerFileNotFound { path: String, container: String },
    #[error("{path} in container {container}: {source}")]
    ContainerPath {
        path: String,
        container: String,
        source: std::io::Error,
    },
    #[error("{reason}")]
    CopyRefused { reason: &'static str },
    #[error("{0}")]
    Runtime(#[from] berth_runtime::Error),
    #[error("{0}")]
    Image(#[from] berth_image::Error),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// The classes of failure that API clients can act on; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    Conflict,
    InvalidArgument,
    Unauthorized,
    NotImplemented,
    Unavailable,
    Internal,
}

impl Error {
    /// What class of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Internal,
            Error::Config { .. }
            | Error::InvalidHost { .. }
            | Error::NoSuchGroup { .. }
            | Error::InvalidRegistry { .. }
            | Error::ApiVersionTooNew { .. }
            | Error::ApiVersionTooOld { .. }
            | Error::InvalidQuery { .. }
            | Error::InvalidFilter { .. } => ErrorKind::InvalidArgument,
            Error::DataRootLocked { .. }
            | Error::PidfileInUse { .. }
            | Error::SocketInUse { .. }
            | Error::NotASocket { .. } => ErrorKind::Conflict,
            Error::NotImplemented { .. } | Error::NotBuilt { .. } => ErrorKind::NotImplemented,
            Error::NoSuchContainer { .. }
            | Error::NoSuchImage { .. }
            | Error::NoSuchExec { .. }
            | Error::NoSuchVolume { .. }
            | Error::ContainerFileNotFound { .. } => ErrorKind::NotFound,
            Error::ContainerPath { .. } | Error::CopyRefused { .. } => ErrorKind::InvalidArgument,
            Error::AlreadyPaused { .. }
            | Error::NotPaused { .. }
            | Error::ExecPaused { .. }
            | Error::UpdateConflict { .. }
            | Error::VolumeInUse { .. }
            | Error::PruneRunning => ErrorKind::Conflict,
            // Not 404 (as dockerd's plugin lookup is): the CLI would pull the image on it.
            Error::InvalidVolume { .. } | Error::NoSuchVolumeDriver { .. } => ErrorKind::InvalidArgument,
            Error::HostRefused { .. } => ErrorKind::Internal,
            // Not 404: on any 404 from create the docker CLI pulls the image and tries again.
            Error::NoSuchNetwork { .. } | Error::InvalidNetwork(_) => ErrorKind::InvalidArgument,
            Error::NetworkNotFound { .. } => ErrorKind::NotFound,
            Error::NetworkConflict(_) | Error::AddressInUse { .. } | Error::PortAllocated { .. } => ErrorKind::Conflict,
            Error::Net(e) => match e.kind() {
                berth_net::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
                berth_net::ErrorKind::Internal => ErrorKind::Internal,
            },
            Error::NameConflict { .. }
            | Error::ContainerRunning { .. }
            | Error::NotRunning { .. }
            | Error::AttachStopped
            | Error::ImageInUse(_) => ErrorKind::Conflict,
            Error::InvalidName { .. } | Error::InvalidContainerConfig { .. } => ErrorKind::InvalidArgument,
            // A command that is not in the image is the client's mistake (dockerd: 400).
            Error::StartFailed { exec_error: true, .. } | Error::NoInitBinary { .. } => ErrorKind::InvalidArgument,
            Error::StartFailed { .. } => ErrorKind::Internal,
            Error::Runtime(e) => match e.kind() {
                berth_runtime::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
                berth_runtime::ErrorKind::Internal => ErrorKind::Internal,
            },
            Error::Image(e) => match e.kind() {
                berth_image::ErrorKind::NotFound => ErrorKind::NotFound,
                berth_image::ErrorKind::Conflict => ErrorKind::Conflict,
                berth_image::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
                berth_image::ErrorKind::Unavailable => ErrorKind::Unavailable,
                berth_image::ErrorKind::Internal => ErrorKind::Internal,
            },
        }
    }
}

impl ErrorKind {
    /// The status dockerd answers with (moby `errdefs/http_helpers.go`).
    fn status(self) -> StatusCode {
        match self {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let kind = self.kind();
        // Internal detail (paths, OS errors) goes to the log, not to the client.
        // A failed start says why (as dockerd's OCI runtime errors do): the user has to act.
        let message = if kind == ErrorKind::Internal
            && !matches!(
                self,
                Error::StartFailed { .. } | Error::HostRefused { .. } | Error::Net(_)
            ) {
            tracing::error!(error = %self, "request failed");
            "internal error; see the daemon log".to_owned()
        } else {
            self.to_string()
        };
        (kind.status(), Json(serde_json::json!({ "message": message }))).into_response()
    }
}
