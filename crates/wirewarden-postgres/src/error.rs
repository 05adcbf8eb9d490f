//! The crate's error type. Every variant names what was being read or checked, and every
//! error knows how to become a backend `ErrorResponse` with the SQLSTATE the server itself
//! would use, so a gateway can answer a hostile or broken peer in its own protocol.

use crate::backend::{BackendMessage, ErrorFields};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which peer sent the bytes that failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    Frontend,
    /// Server to client.
    Backend,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Frontend => "frontend",
            Direction::Backend => "backend",
        })
    }
}

/// Everything that can go wrong while decoding, encoding, authenticating or tracking a
/// session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message header declares a length above the configured limit.
    #[error("{direction} message {tag:?} declares length {len}, limit is {limit}")]
    MessageTooLarge {
        /// Who sent it.
        direction: Direction,
        /// Message type byte.
        tag: char,
        /// Declared length (including the length word itself).
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A startup-phase packet declares a length above the configured limit.
    #[error("startup packet declares length {len}, limit is {limit}")]
    StartupTooLarge {
        /// Declared length.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A declared length is below the minimum for its header.
    #[error("{direction} message {tag:?} declares length {len}, minimum is {min}")]
    LengthTooSmall {
        /// Who sent it.
        direction: Direction,
        /// Message type byte (`'\0'` for untagged startup packets).
        tag: char,
        /// Declared length.
        len: i64,
        /// Minimum length.
        min: usize,
    },
    /// A message type byte that does not exist in this direction.
    #[error("unknown {direction} message type {tag:?}")]
    UnknownMessage {
        /// Who sent it.
        direction: Direction,
        /// Message type byte.
        tag: char,
    },
    /// A startup packet with an unknown request code or protocol version.
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol {
        /// Major version (or the high half of a request code).
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// The message body ends before a field.
    #[error("{message}: truncated while reading {field}")]
    Truncated {
        /// Message being read.
        message: &'static str,
        /// Field being read.
        field: &'static str,
    },
    /// A string field has no terminating NUL byte.
    #[error("{message}: {field} is not NUL-terminated")]
    MissingNul {
        /// Message being read.
        message: &'static str,
        /// Field being read.
        field: &'static str,
    },
    /// Bytes left over after the last field of a message.
    #[error("{message}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Message being read.
        message: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A field holds a value that the protocol does not allow.
    #[error("{message}: invalid {field} {value}")]
    InvalidField {
        /// Message being read or written.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// The offending value.
        value: i64,
    },
    /// More items (fields, parameters, columns…) than the configured limit.
    #[error("{message}: {count} {what}, limit is {limit}")]
    TooMany {
        /// Message being read or written.
        message: &'static str,
        /// What is being counted.
        what: &'static str,
        /// Count found.
        count: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A string to be encoded contains a NUL byte, which the protocol cannot carry.
    #[error("{message}: {field} contains a NUL byte")]
    InteriorNul {
        /// Message being written.
        message: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// A message arrived that the session state does not allow.
    #[error("unexpected {direction} message {tag:?} in state {state}")]
    UnexpectedMessage {
        /// Who sent it.
        direction: Direction,
        /// Message type byte.
        tag: char,
        /// What the session was doing.
        state: &'static str,
    },
    /// Authentication failed: wrong password or proof.
    #[error("password authentication failed")]
    AuthenticationFailed,
    /// The authentication exchange is malformed or out of order.
    #[error("authentication exchange: {reason}")]
    AuthenticationProtocol {
        /// What was wrong.
        reason: &'static str,
    },
    /// The peer asked for an authentication method this side does not implement.
    #[error("unsupported authentication method {method}")]
    UnsupportedAuthentication {
        /// Method name or code.
        method: String,
    },
    /// Channel binding was required and this login cannot provide it.
    #[error("channel binding required: {reason}")]
    ChannelBindingRequired {
        /// Why the login cannot be bound.
        reason: &'static str,
    },
    /// A stored SCRAM verifier could not be parsed.
    #[error("invalid SCRAM verifier: {reason}")]
    InvalidVerifier {
        /// What was wrong.
        reason: &'static str,
    },
    /// A value cannot be represented in the column's type and format.
    #[error("value not valid for type {type_oid} ({format}): {reason}")]
    InvalidValue {
        /// Type OID.
        type_oid: u32,
        /// `"text"` or `"binary"`.
        format: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// A type OID this crate has no encoding for.
    #[error("no encoding known for type {type_oid}")]
    UnsupportedType {
        /// Type OID.
        type_oid: u32,
    },
    /// An I/O error from the transport (only produced by the `codec` layer).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The SQLSTATE a PostgreSQL server would report for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::MessageTooLarge { .. }
            | Error::StartupTooLarge { .. }
            | Error::TooMany { .. } => {
                "54000" // program_limit_exceeded
            }
            Error::UnsupportedProtocol { .. } | Error::UnsupportedAuthentication { .. } => {
                "0A000" // feature_not_supported
            }
            Error::AuthenticationFailed => "28P01", // invalid_password
            Error::AuthenticationProtocol { .. } => "08P01",
            Error::ChannelBindingRequired { .. } => "28000", // invalid_authorization_specification
            Error::InvalidVerifier { .. } => "28000",        // invalid_authorization_specification
            Error::InvalidValue { .. } => "22P02",           // invalid_text_representation
            Error::UnsupportedType { .. } => "0A000",
            Error::Io(_) => "08006", // connection_failure
            _ => "08P01",            // protocol_violation
        }
    }

    /// Whether the connection can go on after this error. Framing, limit and
    /// authentication errors leave the stream in an unknown state and are fatal.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::InvalidValue { .. } | Error::UnsupportedType { .. }
        )
    }

    /// The error fields of an `ErrorResponse` describing this error, with severity `FATAL`
    /// for fatal errors and `ERROR` otherwise.
    pub fn to_error_fields(&self) -> ErrorFields {
        let severity = if self.is_fatal() { "FATAL" } else { "ERROR" };
        let message = match self {
            // Do not tell a client why its password was rejected.
            Error::AuthenticationFailed
            | Error::AuthenticationProtocol { .. }
            | Error::InvalidVerifier { .. } => "password authentication failed".to_owned(),
            other => other.to_string(),
        };
        ErrorFields::new(severity, self.sqlstate(), message)
    }

    /// A backend `ErrorResponse` for this error, ready to send to the client.
    pub fn to_error_response(&self) -> BackendMessage {
        BackendMessage::ErrorResponse(self.to_error_fields())
    }

    pub(crate) fn truncated(message: &'static str, field: &'static str) -> Error {
        Error::Truncated { message, field }
    }
}
