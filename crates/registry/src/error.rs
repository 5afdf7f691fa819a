//! The registry's errors, and the one table that maps them to OCI error codes and statuses.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Failures inside the registry (storage, index, configuration).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {op} {path}: {source}")]
    Storage {
        op: &'static str,
        path: String,
        source: object_store::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("metadata index {path}: {source}")]
    Index { path: String, source: Box<redb::Error> },
    #[error(
        "metadata index {path} is in use by another process (is a registry already running on this root? \
         Stop it, or let its online GC do the work)"
    )]
    IndexLocked { path: String },
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("htpasswd {path} line {line}: {reason}")]
    Htpasswd { path: String, line: usize, reason: String },
    #[error("TLS: {reason}")]
    Tls { reason: String },
    #[error("corrupt record {what}: {reason}")]
    Corrupt { what: String, reason: String },
}

impl<E: Into<redb::Error>> From<E> for Error {
    fn from(e: E) -> Self {
        Error::Index {
            path: String::new(),
            source: Box::new(e.into()),
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// The distribution spec's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Unsupported,
    RangeInvalid,
    TooLarge,
    Internal,
}

impl Code {
    /// The one table: code -> (wire code, HTTP status, default message).
    fn table(self) -> (&'static str, StatusCode, &'static str) {
        use Code::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND, "blob unknown to registry"),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST, "blob upload invalid"),
            BlobUploadUnknown => (
                "BLOB_UPLOAD_UNKNOWN",
                StatusCode::NOT_FOUND,
                "blob upload unknown to registry",
            ),
            DigestInvalid => (
                "DIGEST_INVALID",
                StatusCode::BAD_REQUEST,
                "provided digest did not match uploaded content",
            ),
            ManifestBlobUnknown => (
                "MANIFEST_BLOB_UNKNOWN",
                StatusCode::BAD_REQUEST,
                "manifest references a manifest or blob unknown to registry",
            ),
            ManifestInvalid => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST, "manifest invalid"),
            ManifestUnknown => (
                "MANIFEST_UNKNOWN",
                StatusCode::NOT_FOUND,
                "manifest unknown to registry",
            ),
            NameInvalid => ("NAME_INVALID", StatusCode::BAD_REQUEST, "invalid repository name"),
            NameUnknown => (
                "NAME_UNKNOWN",
                StatusCode::NOT_FOUND,
                "repository name not known to registry",
            ),
            SizeInvalid => (
                "SIZE_INVALID",
                StatusCode::BAD_REQUEST,
                "provided length did not match content length",
            ),
            Unauthorized => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED, "authentication required"),
            Unsupported => (
                "UNSUPPORTED",
                StatusCode::METHOD_NOT_ALLOWED,
                "the operation is unsupported",
            ),
            RangeInvalid => (
                "BLOB_UPLOAD_INVALID",
                StatusCode::RANGE_NOT_SATISFIABLE,
                "requested range not satisfiable",
            ),
            TooLarge => ("SIZE_INVALID", StatusCode::PAYLOAD_TOO_LARGE, "payload too large"),
            Internal => (
                "UNKNOWN",
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the registry log",
            ),
        }
    }
}

/// An error as the client sees it: a code, a message, and optional detail.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) code: Code,
    pub(crate) message: String,
    pub(crate) status: Option<StatusCode>,
    pub(crate) realm: Option<String>,
}

impl ApiError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            status: None,
            realm: None,
        }
    }

    pub(crate) fn code(code: Code) -> Self {
        ApiError::new(code, code.table().2)
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn unauthorized(realm: &str) -> Self {
        ApiError {
            realm: Some(realm.to_owned()),
            ..ApiError::code(Code::Unauthorized)
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        // Internal detail is logged, not sent.
        tracing::error!(error = %e, "request failed");
        ApiError::code(Code::Internal)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status, _) = self.code.table();
        let status = self.status.unwrap_or(status);
        let body = serde_json::json!({"errors": [{"code": code, "message": self.message, "detail": null}]});
        let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        if let Some(realm) = self.realm {
            let v = format!("Basic realm=\"{}\"", realm.replace('"', ""));
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;
