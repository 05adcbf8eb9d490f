//! The crate's error type.

use std::path::PathBuf;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while encoding, writing, reading or verifying an audit log,
/// or delivering events to a sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before a field was complete.
    #[error("truncated {what}: needed {needed} bytes, {remaining} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A tag byte names no known variant.
    #[error("invalid {what} tag {tag}")]
    InvalidTag {
        /// The field being read.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// A string field is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },
    /// A field holds a value outside its range.
    #[error("invalid {what}: {reason}")]
    InvalidValue {
        /// The field being read.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A set or map was not in strictly increasing order, so the bytes are not canonical.
    #[error("{what} are not in canonical order")]
    NotCanonical {
        /// The field being read.
        what: &'static str,
    },
    /// Bytes were left over after a complete value.
    #[error("{len} trailing bytes after {what}")]
    TrailingBytes {
        /// The value that ended early.
        what: &'static str,
        /// How many bytes were left.
        len: usize,
    },
    /// A length is over its limit.
    #[error("{what} of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The value.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A format version this crate does not read.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// Which format.
        what: &'static str,
        /// The version found.
        version: u32,
    },
    /// A variant of a `#[non_exhaustive]` core enum that this version cannot encode.
    #[error("cannot encode this {what}: unknown to this version of wirewarden-audit")]
    Unsupported {
        /// Which type.
        what: &'static str,
    },
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`write`, `fdatasync`, `open`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An earlier write or sync failed, so the sink refuses every append from then on.
    #[error("audit sink is poisoned after an earlier failure: {reason}")]
    Poisoned {
        /// The failure that poisoned it.
        reason: String,
    },
    /// The sink was closed.
    #[error("audit sink is closed")]
    Closed,
    /// The existing log in the directory failed verification, so the sink will not extend it.
    #[error("the audit log in {} is damaged: {detail}", dir.display())]
    Damaged {
        /// The log directory.
        dir: PathBuf,
        /// The verification finding.
        detail: String,
    },
    /// The configuration is unusable.
    #[error("invalid audit configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A JSON value could not be produced or read.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A webhook delivery failed.
    #[error("webhook delivery to {url} failed: {reason}")]
    Webhook {
        /// The endpoint.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A PostgreSQL operation failed.
    #[cfg(feature = "postgres")]
    #[error("postgres audit sink: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl Error {
    /// Whether this decoding error says the bytes come from a newer version of the event
    /// encoding (an encoding version or a tag this version does not know), rather than
    /// that they are malformed. A record whose keyed hash verifies and whose event fails
    /// this way was written by a newer writer: intact, but unreadable here.
    #[must_use]
    pub fn is_newer_encoding(&self) -> bool {
        matches!(
            self,
            Self::UnsupportedVersion { .. } | Self::InvalidTag { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
