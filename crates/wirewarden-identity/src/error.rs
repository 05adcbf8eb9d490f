//! Why a credential was refused.
//!
//! Every variant is detailed enough for the audit trail (which check failed, which issuer or
//! key was involved) while [`Error::client_message`] gives the one uniform sentence a client
//! is told, so a caller probing the gateway learns nothing about which check it tripped.

use wirewarden_core::{BoxError, Timestamp};

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why authentication failed, or why a provider could not be built.
///
/// Presented secrets never appear in an error: neither in `Display` nor in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No credential at all, or an empty one.
    #[error("no credential presented")]
    Missing,
    /// The provider does not handle this kind of credential.
    #[error("a {kind} credential is not accepted by this provider")]
    Unsupported {
        /// The credential's kind ([`crate::Credential::kind`]).
        kind: &'static str,
    },
    /// A well-formed credential that matches nothing configured (an unknown static token).
    #[error("unknown credential")]
    Unknown,
    /// The credential could not be parsed.
    #[error("malformed credential: {reason}")]
    Malformed {
        /// What was wrong with it.
        reason: String,
    },
    /// The signature does not verify with the key it names.
    #[error("signature verification failed")]
    BadSignature,
    /// The token's algorithm is not acceptable (`none`, symmetric, or not the key's own).
    #[error("algorithm {alg:?} refused: {reason}")]
    DisallowedAlgorithm {
        /// The `alg` the token's header claimed.
        alg: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The credential has expired.
    #[error("credential expired at {expired_at}")]
    Expired {
        /// When it expired.
        expired_at: Timestamp,
    },
    /// The credential is not valid yet.
    #[error("credential not valid before {not_before}")]
    NotYetValid {
        /// When it becomes valid.
        not_before: Timestamp,
    },
    /// The token was issued by an issuer we do not trust here.
    #[error("issuer {found:?} is not trusted here")]
    WrongIssuer {
        /// The `iss` claim, if there was one.
        found: Option<String>,
    },
    /// The token was issued for some other audience.
    #[error("audience {found:?} is not accepted here")]
    WrongAudience {
        /// The `aud` claim's values.
        found: Vec<String>,
    },
    /// The token's `typ` header is not one we accept (an ID token offered as an access token).
    #[error("token type {found:?} is not accepted")]
    WrongType {
        /// The `typ` header, if there was one.
        found: Option<String>,
    },
    /// A claim the verification needs is absent or has the wrong type.
    #[error("claim {claim:?} is missing or invalid")]
    InvalidClaim {
        /// The claim's name.
        claim: String,
    },
    /// No key in the issuer's key set has this `kid` (after a refresh, if one was allowed).
    #[error("no signing key {kid:?} in the key set")]
    UnknownKey {
        /// The `kid` the token named.
        kid: Option<String>,
    },
    /// The issuer's key set could not be fetched or parsed, and no cached copy has the key.
    #[error("key set unavailable: {reason}")]
    KeySetUnavailable {
        /// What went wrong.
        reason: String,
    },
    /// A client certificate chain that does not lead to a trusted CA.
    #[error("untrusted client certificate: {reason}")]
    Untrusted {
        /// What the verifier said.
        reason: String,
    },
    /// A client certificate that no mapping rule matched.
    #[error("no mapping rule matches the client certificate")]
    Unmapped,
    /// Every provider of a chain refused the credential.
    #[error("credential refused by every provider ({})", attempts.join("; "))]
    Rejected {
        /// One line per provider that tried, in order: its index, the reason code, and the
        /// provider's message in brackets (`#1: untrusted (untrusted client certificate: …)`).
        attempts: Vec<String>,
    },
    /// The provider's configuration is invalid.
    #[error("invalid identity configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// The one sentence a client is told, whatever failed. Details go to the audit trail.
    #[must_use]
    pub const fn client_message(&self) -> &'static str {
        "authentication failed"
    }

    /// A short stable code for audit records and metrics (`expired`, `wrong_audience`, …).
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Unsupported { .. } => "unsupported",
            Self::Unknown => "unknown",
            Self::Malformed { .. } => "malformed",
            Self::BadSignature => "bad_signature",
            Self::DisallowedAlgorithm { .. } => "disallowed_algorithm",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::WrongIssuer { .. } => "wrong_issuer",
            Self::WrongAudience { .. } => "wrong_audience",
            Self::WrongType { .. } => "wrong_type",
            Self::InvalidClaim { .. } => "invalid_claim",
            Self::UnknownKey { .. } => "unknown_key",
            Self::KeySetUnavailable { .. } => "key_set_unavailable",
            Self::Untrusted { .. } => "untrusted",
            Self::Unmapped => "unmapped",
            Self::Rejected { .. } => "rejected",
            Self::Config { .. } => "config",
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed {
            reason: reason.into(),
        }
    }

    pub(crate) fn untrusted(reason: impl Into<String>) -> Self {
        Self::Untrusted {
            reason: reason.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::Config {
            reason: reason.into(),
        }
    }
}

/// The reason code of any error an [`IdentityProvider`](crate::IdentityProvider) returned:
/// [`Error::code`] for ours, `"rejected"` for a foreign error type.
#[must_use]
pub fn error_code(err: &BoxError) -> &'static str {
    err.downcast_ref::<Error>().map_or("rejected", Error::code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_message_is_uniform() {
        let errors = [
            Error::Unknown,
            Error::BadSignature,
            Error::WrongAudience {
                found: vec!["x".into()],
            },
            Error::Expired {
                expired_at: Timestamp::UNIX_EPOCH,
            },
        ];
        for e in &errors {
            assert_eq!(e.client_message(), "authentication failed");
        }
        let codes: std::collections::BTreeSet<_> = errors.iter().map(Error::code).collect();
        assert_eq!(codes.len(), errors.len());
    }

    #[test]
    fn foreign_errors_have_a_generic_code() {
        let ours: BoxError = Box::new(Error::Unmapped);
        assert_eq!(error_code(&ours), "unmapped");
        let foreign: BoxError = "nope".into();
        assert_eq!(error_code(&foreign), "rejected");
    }
}
