//! Who is asking: the verified identity behind a connection.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Error, Timestamp};

/// How a [`Principal`] proved who it is.
///
/// Recorded in every session-start audit event so an auditor can tell a long-lived static
/// token from a short-lived, provider-signed JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthMethod {
    /// A static bearer token configured in the gateway (stored only as a hash).
    StaticToken {
        /// The configured token's identifier, never the token itself.
        token_id: String,
    },
    /// A JWT access token verified against an issuer's published keys.
    Jwt {
        /// The `iss` claim.
        issuer: String,
        /// The `kid` of the key that verified it, if the token named one.
        key_id: Option<String>,
    },
    /// A TLS client certificate.
    ClientCertificate {
        /// SHA-256 fingerprint of the leaf certificate, lowercase hex.
        fingerprint: String,
    },
    /// A password verified with SCRAM against a stored verifier.
    Scram {
        /// `SCRAM-SHA-256` or `SCRAM-SHA-256-PLUS`.
        mechanism: String,
    },
    /// An identity established by the embedding application itself.
    External {
        /// Free-form description of the mechanism.
        mechanism: String,
    },
}

impl AuthMethod {
    /// A short stable name for the method, for logs and metrics.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::StaticToken { .. } => "static_token",
            Self::Jwt { .. } => "jwt",
            Self::ClientCertificate { .. } => "client_certificate",
            Self::Scram { .. } => "scram",
            Self::External { .. } => "external",
        }
    }
}

/// A verified identity: the subject, its groups and attributes, how it authenticated, and
/// until when the proof holds.
///
/// A principal is only ever produced by an identity provider after verification; nothing in
/// wirewarden falls back to a default principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The stable subject (`sub` of a JWT, the owner of a static token).
    pub subject: String,
    /// Group memberships used by policy (sorted, no duplicates).
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Further attributes (team, environment, agent run id, …) used by policy.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// How the identity was proven.
    pub auth: AuthMethod,
    /// When it was proven.
    pub authenticated_at: Timestamp,
    /// When the proof stops being valid (a token's `exp`); `None` if it does not expire.
    pub expires_at: Option<Timestamp>,
}

impl Principal {
    /// A principal for `subject`, authenticated now by `auth`, with no groups, attributes or
    /// expiry.
    ///
    /// # Errors
    /// [`Error::Empty`] if `subject` is empty: an empty subject would match nothing in policy
    /// and identify nobody in the audit trail.
    pub fn new(subject: impl Into<String>, auth: AuthMethod) -> Result<Self, Error> {
        let subject = subject.into();
        if subject.is_empty() {
            return Err(Error::Empty {
                what: "principal subject",
            });
        }
        Ok(Self {
            subject,
            groups: BTreeSet::new(),
            attributes: BTreeMap::new(),
            auth,
            authenticated_at: Timestamp::now(),
            expires_at: None,
        })
    }

    /// Adds a group.
    #[must_use]
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.groups.insert(group.into());
        self
    }

    /// Sets an attribute.
    #[must_use]
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Sets the expiry.
    #[must_use]
    pub fn with_expiry(mut self, expires_at: Timestamp) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Whether the principal belongs to `group`.
    #[must_use]
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }

    /// Whether the identity has expired at `now`. A principal whose expiry has passed must
    /// not issue further commands, even on a session opened before.
    #[must_use]
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|exp| now >= exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_subject_is_refused() {
        let auth = AuthMethod::StaticToken {
            token_id: "t1".into(),
        };
        assert_eq!(
            Principal::new("", auth).unwrap_err(),
            Error::Empty {
                what: "principal subject"
            }
        );
    }

    #[test]
    fn expiry_is_inclusive() {
        let exp = Timestamp::from_unix_secs(100).unwrap();
        let p = Principal::new(
            "agent-7",
            AuthMethod::Jwt {
                issuer: "https://idp".into(),
                key_id: None,
            },
        )
        .unwrap()
        .with_expiry(exp);
        assert!(!p.is_expired_at(Timestamp::from_unix_secs(99).unwrap()));
        assert!(p.is_expired_at(exp));
    }

    #[test]
    fn json_round_trip() {
        let p = Principal::new(
            "agent-7",
            AuthMethod::ClientCertificate {
                fingerprint: "ab".into(),
            },
        )
        .unwrap()
        .with_group("analysts")
        .with_group("agents")
        .with_attribute("team", "growth");
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""method":"client_certificate""#), "{json}");
        let back: Principal = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            back.groups.iter().collect::<Vec<_>>(),
            ["agents", "analysts"]
        );
    }
}
