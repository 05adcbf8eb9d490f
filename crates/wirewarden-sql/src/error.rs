//! Typed errors of the lexer and splitter.

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a piece of SQL could not be lexed. Offsets are byte offsets into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is longer than [`Limits::max_input_len`](crate::Limits::max_input_len).
    #[error("SQL text of {len} bytes exceeds the limit of {limit} bytes")]
    InputTooLong {
        /// Length of the input.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The input has more tokens than [`Limits::max_tokens`](crate::Limits::max_tokens).
    #[error("SQL text has more than {limit} tokens")]
    TooManyTokens {
        /// The configured limit.
        limit: usize,
    },
    /// Parentheses, brackets or block comments nest deeper than
    /// [`Limits::max_depth`](crate::Limits::max_depth).
    #[error("nesting deeper than {limit} at byte {offset}")]
    NestingTooDeep {
        /// Where the limit was crossed.
        offset: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The input is not valid UTF-8.
    #[error("SQL text is not valid UTF-8 after byte {valid_up_to}")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A NUL byte: the server reads query text as a C string and would silently drop the rest.
    #[error("NUL byte in SQL text at byte {offset}")]
    NulByte {
        /// Where the NUL byte is.
        offset: usize,
    },
    /// A string literal, quoted identifier, dollar-quoted string or block comment is not
    /// closed before the end of the input.
    #[error("unterminated {what} starting at byte {offset}")]
    Unterminated {
        /// What is left open (`quoted string`, `block comment`, `dollar-quoted string`, …).
        what: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// Something the server rejects while lexing: `""`, trailing junk after a number or a
    /// parameter, an over-long operator, a bad Unicode escape.
    #[error("{what} at byte {offset}")]
    Invalid {
        /// What is wrong.
        what: &'static str,
        /// Where.
        offset: usize,
    },
}

impl Error {
    /// The SQLSTATE the server would report for the same problem, for an `ErrorResponse`.
    #[must_use]
    pub const fn sqlstate(&self) -> &'static str {
        match self {
            Self::InputTooLong { .. }
            | Self::TooManyTokens { .. }
            | Self::NestingTooDeep { .. } => "54000",
            Self::InvalidUtf8 { .. } | Self::NulByte { .. } => "22021",
            Self::Unterminated { .. } | Self::Invalid { .. } => "42601",
        }
    }
}
