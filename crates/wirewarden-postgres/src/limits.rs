//! Size limits, checked against each header before anything is reserved or parsed.

/// Configurable bounds for everything a peer can make this crate allocate or walk.
///
/// The defaults follow the server's own hard limits where it has them (a startup packet of
/// at most 10 000 bytes, 1 664 result columns, 65 535 bind parameters) and are generous
/// but finite elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frontend message, counting its length word (not its type byte).
    pub max_frontend_message_len: usize,
    /// Largest backend message, counting its length word (not its type byte).
    pub max_backend_message_len: usize,
    /// Largest message of the kinds the server reads with its small limit of 10 000 bytes
    /// (Close, Describe, Execute, CopyFail from the client), and of the small backend
    /// messages (ParameterStatus, BackendKeyData).
    pub max_small_message_len: usize,
    /// Largest untagged startup-phase packet (the server's own limit is 10 000).
    pub max_startup_packet_len: usize,
    /// Most `name=value` pairs in a StartupMessage.
    pub max_startup_parameters: usize,
    /// Most fields in a RowDescription or cells in a DataRow.
    pub max_columns: usize,
    /// Most parameters (and format codes) in a Parse, Bind or FunctionCall.
    pub max_parameters: usize,
    /// Most fields in an ErrorResponse or NoticeResponse.
    pub max_error_fields: usize,
    /// Most SASL mechanisms or NegotiateProtocolVersion options listed.
    pub max_list_items: usize,
    /// Longest cancel key (protocol 3.2 allows up to 256 bytes).
    pub max_cancel_key_len: usize,
    /// Highest SCRAM iteration count the client side accepts from a server.
    pub max_scram_iterations: u32,
}

impl Limits {
    /// The default limits.
    pub const DEFAULT: Limits = Limits {
        max_frontend_message_len: 64 * 1024 * 1024,
        max_backend_message_len: 1024 * 1024 * 1024,
        max_small_message_len: 10_000,
        max_startup_packet_len: 10_000,
        max_startup_parameters: 64,
        max_columns: 1664,
        max_parameters: 65_535,
        max_error_fields: 32,
        max_list_items: 64,
        max_cancel_key_len: 256,
        max_scram_iterations: 1_000_000,
    };

    /// Limits for the given maximum message length in both directions; the rest default.
    pub fn with_max_message_len(len: usize) -> Limits {
        Limits {
            max_frontend_message_len: len,
            max_backend_message_len: len,
            ..Limits::DEFAULT
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
