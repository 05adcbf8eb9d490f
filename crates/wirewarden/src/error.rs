//! Errors of the pipeline and the proxies.

use wirewarden_core::BoxError;

/// `Result` with the pipeline's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a session could not be served or a command could not be handled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading from or writing to a peer failed.
    #[error("{peer} i/o: {source}")]
    Io {
        /// `client` or `upstream`.
        peer: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A peer broke the PostgreSQL protocol.
    #[cfg(feature = "postgres")]
    #[error("postgres protocol: {0}")]
    Postgres(#[from] wirewarden_postgres::Error),
    /// A TLS handshake or configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The client could not be authenticated.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The upstream refused the gateway's own login.
    #[error("upstream login failed: {0}")]
    UpstreamLogin(String),
    /// The audit sink could not record an event; the command was refused.
    #[error("audit sink unavailable: {0}")]
    Audit(BoxError),
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// A peer closed the connection at a point where the protocol does not allow it.
    #[error("{0} closed the connection")]
    Closed(&'static str),
}

impl Error {
    #[cfg(any(feature = "postgres", feature = "redis"))]
    pub(crate) fn client_io(source: std::io::Error) -> Self {
        Self::Io {
            peer: "client",
            source,
        }
    }

    #[cfg(any(feature = "postgres", feature = "redis", feature = "http"))]
    pub(crate) fn upstream_io(source: std::io::Error) -> Self {
        Self::Io {
            peer: "upstream",
            source,
        }
    }
}
