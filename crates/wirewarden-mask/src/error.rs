//! Errors of the masking engine. Every one of them means "this value must not leave": callers
//! turn them into a refusal (a protocol-native error), never into the original value.

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a value could not be masked, or why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value that must be text is not valid UTF-8.
    #[error("value is not valid UTF-8 (first invalid byte at offset {offset})")]
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A value that must be JSON does not parse.
    #[error("value is not valid JSON at offset {offset}: {reason}")]
    InvalidJson {
        /// Byte offset where parsing failed.
        offset: usize,
        /// What was expected there.
        reason: &'static str,
    },
    /// JSON nesting (arrays and objects, or JSON documents inside JSON strings) is deeper than
    /// the configured limit.
    #[error("JSON nesting deeper than {limit}")]
    JsonTooDeep {
        /// The configured limit that was exceeded.
        limit: usize,
    },
    /// A value is longer than the configured limit.
    #[error("value of {len} bytes exceeds the limit of {limit}")]
    ValueTooLarge {
        /// Length of the value.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The value must be masked but its type cannot hold any masked form the strategy can
    /// produce (for example an opaque binary type and a redaction text).
    #[error("a {value_type} value cannot hold the masked form produced by {strategy}")]
    Unrepresentable {
        /// The declared type of the value.
        value_type: &'static str,
        /// The strategy that was asked for.
        strategy: &'static str,
    },
    /// A strategy needs the engine's secret key (tokenize, hash, format-preserving) and none
    /// was configured.
    #[error("strategy {strategy} needs a masking key and none is configured")]
    MissingKey {
        /// The strategy that needs the key.
        strategy: &'static str,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {what}: {reason}")]
    Config {
        /// Which setting.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No profile with this name is configured.
    #[error("unknown mask profile {name:?}")]
    UnknownProfile {
        /// The name asked for.
        name: String,
    },
}

impl Error {
    pub(crate) fn config(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
