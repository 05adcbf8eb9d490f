//! The crate's error type: everything hostile or malformed input can produce.
//!
//! Every variant can become the reply a Redis server would send for the same input
//! ([`Error::to_reply`]), so a gateway answers a broken client the way the server would:
//! `-ERR Protocol error: …` and then closes the connection.

use bytes::{BufMut, Bytes, BytesMut};

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while decoding RESP or an inline command.
///
/// Offsets are relative to the start of the frame being decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The frame would be larger than [`Limits::max_frame_len`](crate::Limits::max_frame_len).
    #[error("frame of at least {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Bytes the frame needs at least.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A bulk string, blob error, verbatim string or chunk declares more bytes than
    /// [`Limits::max_bulk_len`](crate::Limits::max_bulk_len).
    #[error("invalid bulk length: {len} exceeds the limit of {limit} bytes")]
    BulkTooLarge {
        /// The declared length.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// An aggregate declares, or a frame holds, more elements than
    /// [`Limits::max_elements`](crate::Limits::max_elements).
    #[error("invalid multibulk length: {count} elements exceed the limit of {limit}")]
    TooManyElements {
        /// Elements declared or seen so far in this frame.
        count: u64,
        /// The configured limit.
        limit: usize,
    },
    /// Aggregates are nested deeper than [`Limits::max_depth`](crate::Limits::max_depth).
    #[error("nesting depth {depth} exceeds the limit of {limit}")]
    TooDeep {
        /// The depth reached.
        depth: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A byte that starts no frame type of the connection's protocol version.
    #[error("invalid frame type byte {byte:#04x} for {version} at offset {offset}")]
    InvalidType {
        /// The offending byte.
        byte: u8,
        /// The protocol version in force.
        version: crate::RespVersion,
        /// Where it was found.
        offset: usize,
    },
    /// A length, count, integer, double, boolean or big number that does not parse.
    #[error("invalid {what} at offset {offset}")]
    InvalidValue {
        /// Which kind of value.
        what: &'static str,
        /// Where its line starts.
        offset: usize,
    },
    /// A line or payload not terminated by `\r\n`.
    #[error("expected CRLF at offset {offset}")]
    MissingCrlf {
        /// Where the terminator should have been.
        offset: usize,
    },
    /// A streamed-aggregate end (`.`) or string chunk (`;`) outside a streamed value, or a
    /// streamed map that ended after a key.
    #[error("unexpected {what} at offset {offset}")]
    Unexpected {
        /// What was out of place.
        what: &'static str,
        /// Where it was found.
        offset: usize,
    },
    /// A request array element that is not a bulk string (the server accepts only `$`).
    #[error("expected '$', got '{}'", char::from(*got))]
    ExpectedBulk {
        /// The type byte found instead.
        got: u8,
    },
    /// An inline command line longer than
    /// [`Limits::max_inline_len`](crate::Limits::max_inline_len).
    #[error("too big inline request ({len} bytes, limit {limit})")]
    InlineTooLong {
        /// Bytes seen without a newline.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An inline command with unbalanced quotes or a closing quote not followed by a space.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An inline command with a NUL byte before its newline (the server's C-string scan
    /// would stall on it; we refuse it instead).
    #[error("NUL byte in inline request at offset {offset}")]
    InlineNul {
        /// Where the NUL was found.
        offset: usize,
    },
    /// Replies that can no longer be tied to the commands they answer: an `EXEC` reply whose
    /// elements do not match the commands queued, or that answers a queued pub/sub command
    /// (the server writes one reply per channel where `EXEC` counts one). A relay must end
    /// the connection: any later reply could be paired with the wrong command.
    #[error("replies out of step with their commands: {what}")]
    OutOfStep {
        /// What did not match.
        what: &'static str,
    },
}

impl Error {
    /// The reply a Redis server sends for this error: `-ERR Protocol error: …\r\n`.
    ///
    /// The message never contains CR or LF, so the reply is always one valid simple error.
    #[must_use]
    pub fn to_reply(&self) -> Bytes {
        let msg = self.to_string();
        let mut out = BytesMut::with_capacity(msg.len() + 24);
        out.put_slice(b"-ERR Protocol error: ");
        for b in msg.bytes() {
            out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        out.put_slice(b"\r\n");
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_single_protocol_errors() {
        let e = Error::ExpectedBulk { got: b'+' };
        assert_eq!(
            &e.to_reply()[..],
            b"-ERR Protocol error: expected '$', got '+'\r\n"
        );
        let e = Error::UnbalancedQuotes;
        assert_eq!(
            &e.to_reply()[..],
            b"-ERR Protocol error: unbalanced quotes in request\r\n"
        );
        let e = Error::ExpectedBulk { got: b'\n' };
        let r = e.to_reply();
        assert_eq!(r.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(r.ends_with(b"\r\n"));
    }
}
