//! Errors shared by every crate, and the boxed error that extension traits return.

/// The error type that extension traits (`AuditSink`, `PolicyEngine`, …) return, so that
/// implementors outside this workspace are not forced into our enums.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised while building or parsing the shared vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A timestamp string is not RFC 3339 in UTC, or is out of range.
    #[error("invalid timestamp {input:?}: {reason}")]
    InvalidTimestamp {
        /// The text that failed to parse.
        input: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// An identifier is not a hyphenated UUID.
    #[error("invalid {kind} {input:?}")]
    InvalidId {
        /// Which identifier was expected (`session id`, `event id`, …).
        kind: &'static str,
        /// The text that failed to parse.
        input: String,
    },
    /// A command digest is not 64 lowercase hexadecimal characters.
    #[error("invalid command digest {input:?}")]
    InvalidDigest {
        /// The text that failed to parse.
        input: String,
    },
    /// A name that must be non-empty (subject, target name, verb) was empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which field was empty.
        what: &'static str,
    },
    /// The name of a protocol or class is not one we know.
    #[error("unknown {kind} {input:?}")]
    UnknownName {
        /// What kind of name (`protocol`, `command class`).
        kind: &'static str,
        /// The name given.
        input: String,
    },
}
