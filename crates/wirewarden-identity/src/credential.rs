//! What a client presents, and the context it presents it in.

use std::fmt;
use std::net::SocketAddr;

use wirewarden_core::Timestamp;

/// A secret string (a token or password) whose `Debug` output is redacted, so it cannot reach
/// a log through a `{:?}` of a larger structure.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into().into_boxed_str())
    }

    /// The secret itself. Call only where it is verified.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// A credential as it arrived on the wire.
///
/// Postgres clients present a token as their password, Redis clients through `AUTH`, HTTP
/// clients as `Authorization: Bearer`; a TLS client certificate arrives from the handshake
/// after the TLS library verified its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// A bearer token: a static token or a JWT access token.
    Bearer(Secret),
    /// A user name and password; token providers treat the password as a bearer token.
    Password {
        /// The user name the client gave, if the protocol carries one.
        user: Option<String>,
        /// The password.
        password: Secret,
    },
    /// A client certificate chain, DER encoded, leaf first, already verified by TLS.
    ClientCertificate(Vec<Vec<u8>>),
}

impl Credential {
    /// A bearer token.
    #[must_use]
    pub fn bearer(token: impl Into<String>) -> Self {
        Self::Bearer(Secret::new(token))
    }

    /// A user name and password.
    #[must_use]
    pub fn password(user: Option<&str>, password: impl Into<String>) -> Self {
        Self::Password {
            user: user.map(str::to_owned),
            password: Secret::new(password),
        }
    }

    /// A client certificate chain (DER, leaf first).
    #[must_use]
    pub fn client_certificate(chain: Vec<Vec<u8>>) -> Self {
        Self::ClientCertificate(chain)
    }

    /// A short name for the credential's kind: `bearer`, `password`, `client_certificate`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Bearer(_) => "bearer",
            Self::Password { .. } => "password",
            Self::ClientCertificate(_) => "client_certificate",
        }
    }

    /// The token a bearer or password credential carries.
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        match self {
            Self::Bearer(s) | Self::Password { password: s, .. } => Some(s.expose()),
            Self::ClientCertificate(_) => None,
        }
    }

    /// Whether nothing was presented: an empty token or an empty certificate chain.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Bearer(s) | Self::Password { password: s, .. } => s.is_empty(),
            Self::ClientCertificate(chain) => chain.first().is_none_or(Vec::is_empty),
        }
    }
}

/// Where and when a credential is presented.
///
/// Providers judge every time-dependent check (expiry, not-before) at [`AuthContext::now`],
/// which is the wall clock unless a caller (a test, a replay) fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    target: Option<String>,
    client_addr: Option<SocketAddr>,
    now: Timestamp,
}

impl Default for AuthContext {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthContext {
    /// A context at the current time, with no target or address.
    #[must_use]
    pub fn new() -> Self {
        Self {
            target: None,
            client_addr: None,
            now: Timestamp::now(),
        }
    }

    /// Sets the name of the target the client connects to.
    #[must_use]
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Sets the client's address.
    #[must_use]
    pub fn with_client_addr(mut self, addr: SocketAddr) -> Self {
        self.client_addr = Some(addr);
        self
    }

    /// Fixes the time at which the credential is judged.
    #[must_use]
    pub fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }

    /// The target's name, if known.
    #[must_use]
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// The client's address, if known.
    #[must_use]
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_addr
    }

    /// The time at which the credential is judged.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let c = Credential::password(Some("agent"), "hunter2-hunter2");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("agent"));
        assert_eq!(c.token(), Some("hunter2-hunter2"));
        assert_eq!(c.kind(), "password");
    }

    #[test]
    fn emptiness() {
        assert!(Credential::bearer("").is_empty());
        assert!(Credential::client_certificate(vec![]).is_empty());
        assert!(Credential::client_certificate(vec![vec![]]).is_empty());
        assert!(!Credential::bearer("x").is_empty());
        assert_eq!(Credential::client_certificate(vec![vec![1]]).token(), None);
    }
}
