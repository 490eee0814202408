//! The registry's one error type: the OCI distribution spec's error codes.
//! `api::error` renders it as the spec's JSON body with the matching status.
//!
//! An error's `message` is for the client; its `cause` (a backend's text:
//! bucket names, paths, SDK dumps) is for the server log only.

use std::time::Duration;

use crate::storage::StorageError;

use super::digest::DigestError;

/// How long a client is asked to wait (Retry-After) after a transient
/// storage failure: long enough for a throttled or restarting backend to
/// catch its breath, short enough that a retrying CI job barely notices.
pub const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The spec's error codes (plus distribution's RANGE_INVALID and UNKNOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
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
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    PaginationNumberInvalid,
    /// distribution's UNAVAILABLE: a transient failure, worth a retry.
    Unavailable,
    Unknown,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::RangeInvalid => "RANGE_INVALID",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::Unavailable => "UNAVAILABLE",
            Code::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status the spec (or distribution, where the spec is silent) gives.
    pub fn status(self) -> u16 {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => 404,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid
            | Code::PaginationNumberInvalid => 400,
            Code::Unauthorized => 401,
            Code::Denied => 403,
            Code::Unsupported => 405,
            Code::RangeInvalid => 416,
            Code::TooManyRequests => 429,
            Code::Unknown => 500,
            Code::Unavailable => 503,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    pub code: Code,
    /// What the client reads: never a backend's text.
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Overrides the code's default status (e.g. 413 for an oversized manifest).
    pub status: Option<u16>,
    /// What went wrong inside, for the server log only.
    pub cause: Option<String>,
    /// Ask the client to retry after this long (a 503's Retry-After).
    pub retry_after: Option<Duration>,
    /// Where an upload really stands (bytes stored), when a chunk was
    /// refused for not starting there: a 416's `Range` header.
    pub upload_offset: Option<u64>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            detail: None,
            status: None,
            cause: None,
            retry_after: None,
            upload_offset: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn with_upload_offset(mut self, offset: u64) -> Self {
        self.upload_offset = Some(offset);
        self
    }

    pub fn status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.code.status())
    }

    /// A server-side failure: the client reads a generic message, `cause`
    /// goes to the log.
    pub fn internal(cause: impl Into<String>) -> Self {
        Error::new(Code::Unknown, "internal server error").with_cause(cause)
    }

    /// A storage failure the client may retry (timeout, throttling, backend
    /// down): 503 with Retry-After.
    pub fn unavailable(cause: impl Into<String>) -> Self {
        Error::new(Code::Unavailable, "storage is temporarily unavailable")
            .with_cause(cause)
            .with_retry_after(STORAGE_RETRY_AFTER)
    }
}

/// The whole story, cause included: for logs and the command line, never
/// for a response body (which renders `message` alone).
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<DigestError> for Error {
    fn from(e: DigestError) -> Self {
        Error::new(Code::DigestInvalid, e.to_string())
    }
}

/// Storage failures that reach a handler unclassified are server errors (the
/// registry layer maps expected `NotFound`s to the right spec code itself):
/// 503 when the backend may well answer on a retry, else 500. The driver's
/// text travels as the cause, for the log.
impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        if let Some(mapped) = client_facing(&e) {
            return mapped;
        }
        if e.is_transient() {
            Error::unavailable(e.to_string())
        } else {
            Error::new(Code::Unknown, "storage failed").with_cause(e.to_string())
        }
    }
}

/// Storage errors that are not failures of the store: a spent buffer budget,
/// and limits a client's request ran into. Each keeps what was stored before.
fn client_facing(e: &StorageError) -> Option<Error> {
    Some(match e {
        StorageError::Busy { retry_after } => Error::new(
            Code::Unavailable,
            "the registry's upload buffers are all in use; retry later",
        )
        .with_retry_after(*retry_after),
        // The spec's answer to a chunk that no longer starts at the upload's
        // offset; a GET of the upload gives the offset to resume at.
        StorageError::Conflict { .. } => Error::new(
            Code::RangeInvalid,
            "another request wrote to this upload at the same time; \
             GET the upload for the offset to resume at",
        ),
        StorageError::TooLarge { reason, .. } => Error::new(
            Code::BlobUploadInvalid,
            format!("the upload cannot grow this large: {reason}"),
        ),
        _ => return None,
    })
}
