//! What can go wrong while starting a server.

use std::time::Duration;

/// `Result` with the testkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a server could not be started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the server needs is not installed.
    #[error(
        "`{binary}` not found: install the Debian package `{package}` (apt-get install {package})"
    )]
    MissingBinary {
        /// The program looked for.
        binary: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// Running as root, and there is no unprivileged user to run PostgreSQL as.
    #[error(
        "PostgreSQL refuses to run as root and there is no `{user}` user to run it as: install the Debian package `postgresql`, which creates it"
    )]
    NoUnprivilegedUser {
        /// The user looked for.
        user: &'static str,
    },
    /// An I/O operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper program exited with an error.
    #[error("`{program}` failed ({status}): {stderr}")]
    Command {
        /// The program that failed.
        program: String,
        /// Its exit status.
        status: String,
        /// What it wrote to standard error.
        stderr: String,
    },
    /// The server exited during start-up.
    #[error("{server} exited during start-up; its log:\n{log}")]
    StartFailed {
        /// `postgres` or `redis-server`.
        server: &'static str,
        /// The server's log.
        log: String,
    },
    /// The server did not accept connections in time.
    #[error("{server} did not accept connections within {waited:?}; its log:\n{log}")]
    Timeout {
        /// `postgres` or `redis-server`.
        server: &'static str,
        /// How long we waited.
        waited: Duration,
        /// The server's log.
        log: String,
    },
    /// A throwaway TLS certificate could not be generated.
    #[error("generating a TLS certificate: {reason}")]
    Certificate {
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_program_and_the_package() {
        let e = Error::MissingBinary {
            binary: "redis-cli",
            package: "redis-tools",
        };
        assert_eq!(
            e.to_string(),
            "`redis-cli` not found: install the Debian package `redis-tools` \
             (apt-get install redis-tools)"
        );
    }
}
