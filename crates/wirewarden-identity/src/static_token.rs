//! Static bearer tokens, stored only as blake3 hashes.
//!
//! The configuration never holds a token: each entry holds `blake3::derive_key` of the token
//! under a fixed context string, or a keyed blake3 hash when a gateway-wide `hash_key` is set
//! (so a leaked configuration is useless without the key as well). A presented token is
//! hashed once and compared against every entry in constant time, without early exit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use wirewarden_core::{AuthMethod, BoxError, Principal, Timestamp};

use crate::{AuthContext, Credential, Error, IdentityProvider, Result};

/// The blake3 `derive_key` context for unkeyed token hashes.
pub const HASH_CONTEXT: &str = "wirewarden 2026-11 static bearer token v1";

/// Tokens longer than this are refused before hashing.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The blake3 hash of a static token (32 bytes, written as 64 lowercase hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token`: keyed blake3 under `key` if given, else `derive_key` under
    /// [`HASH_CONTEXT`].
    #[must_use]
    pub fn of(token: &str, key: Option<&HashKey>) -> Self {
        match key {
            Some(k) => Self(*blake3::keyed_hash(&k.0, token.as_bytes()).as_bytes()),
            None => Self(blake3::derive_key(HASH_CONTEXT, token.as_bytes())),
        }
    }

    /// The raw 32 bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn parse_hex32(s: &str, what: &'static str) -> Result<[u8; 32]> {
    let err = || Error::config(format!("{what} must be 64 hexadecimal digits"));
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return Err(err());
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).map_err(|_| err())?;
        *o = u8::from_str_radix(digits, 16).map_err(|_| err())?;
    }
    Ok(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({self})")
    }
}

impl FromStr for TokenHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_hex32(s, "token hash").map(Self)
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A 32-byte key for keyed token hashes (64 hex digits in configuration). `Debug` is
/// redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey([u8; 32]);

impl HashKey {
    /// A key from raw bytes.
    #[must_use]
    pub const fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        parse_hex32(&s, "hash_key")
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// One configured token: its hash and the identity it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// A name for the token, recorded in audit events (never the token itself).
    pub id: String,
    /// The token's hash ([`TokenHash::of`]).
    pub hash: TokenHash,
    /// The subject of the principal.
    pub subject: String,
    /// Its groups.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Its attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// When the token stops working; `None` if it does not expire.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

/// The configuration of [`StaticTokens`], as it appears in TOML:
///
/// ```toml
/// hash_key = "…64 hex digits…"   # optional
/// [[tokens]]
/// id = "ci-bot"
/// hash = "…64 hex digits…"
/// subject = "ci-bot"
/// groups = ["ci"]
/// attributes = { team = "platform" }
/// expires_at = "2027-01-01T00:00:00Z"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticTokensConfig {
    /// The key for keyed hashes; without it hashes are `derive_key` under [`HASH_CONTEXT`].
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    /// The tokens.
    #[serde(default)]
    pub tokens: Vec<StaticToken>,
}

/// An [`IdentityProvider`] for static bearer tokens.
pub struct StaticTokens {
    key: Option<HashKey>,
    tokens: Vec<StaticToken>,
}

impl fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticTokens")
            .field("keyed", &self.key.is_some())
            .field(
                "tokens",
                &self.tokens.iter().map(|t| &t.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl StaticTokens {
    /// Builds the provider.
    ///
    /// # Errors
    /// [`Error::Config`] on an empty or duplicate id, an empty subject, or two entries with
    /// the same hash.
    pub fn new(config: StaticTokensConfig) -> Result<Self> {
        let mut ids = BTreeSet::new();
        let mut hashes = BTreeSet::new();
        for t in &config.tokens {
            if t.id.is_empty() {
                return Err(Error::config("a static token has an empty id"));
            }
            if !ids.insert(t.id.as_str()) {
                return Err(Error::config(format!("static token id {:?} repeats", t.id)));
            }
            if t.subject.is_empty() {
                return Err(Error::config(format!(
                    "static token {:?} has an empty subject",
                    t.id
                )));
            }
            if !hashes.insert(t.hash.0) {
                return Err(Error::config(format!(
                    "static token {:?} has the hash of another token",
                    t.id
                )));
            }
        }
        Ok(Self {
            key: config.hash_key,
            tokens: config.tokens,
        })
    }

    /// Builds the provider from TOML ([`StaticTokensConfig`]).
    ///
    /// # Errors
    /// [`Error::Config`] if the TOML does not parse or [`StaticTokens::new`] refuses it.
    pub fn from_toml(toml: &str) -> Result<Self> {
        let config: StaticTokensConfig =
            toml::from_str(toml).map_err(|e| Error::config(e.to_string()))?;
        Self::new(config)
    }

    /// The hash of `token` as this provider computes it (for writing configuration).
    #[must_use]
    pub fn hash(&self, token: &str) -> TokenHash {
        TokenHash::of(token, self.key.as_ref())
    }

    /// A fresh random token: `ww_` and 43 base64url characters (256 bits from the OS).
    ///
    /// # Errors
    /// [`Error::Config`] if the operating system's random source fails.
    pub fn generate_token() -> Result<String> {
        use base64::Engine as _;
        let mut buf = [0u8; 32];
        getrandom::fill(&mut buf)
            .map_err(|e| Error::config(format!("the OS random source failed: {e}")))?;
        Ok(format!(
            "ww_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
        ))
    }

    /// Verifies `token` at `now`.
    ///
    /// # Errors
    /// [`Error::Missing`] for an empty token, [`Error::Malformed`] for one longer than
    /// [`MAX_TOKEN_LEN`], [`Error::Unknown`] if no entry matches, [`Error::Expired`] if the
    /// matching entry has expired.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Principal> {
        if token.is_empty() {
            return Err(Error::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::malformed("token too long"));
        }
        let presented = self.hash(token);
        // Index + 1 of the match, 0 for none; every entry is compared so the time taken does
        // not depend on which entry (if any) matched.
        let mut found = 0u32;
        for (i, t) in self.tokens.iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
            let eq = t.hash.0.ct_eq(&presented.0);
            found = u32::conditional_select(&found, &idx, eq);
        }
        let entry = usize::try_from(found)
            .ok()
            .and_then(|f| f.checked_sub(1))
            .and_then(|i| self.tokens.get(i))
            .ok_or(Error::Unknown)?;
        if let Some(exp) = entry.expires_at
            && now >= exp
        {
            return Err(Error::Expired { expired_at: exp });
        }
        let mut principal = Principal::new(
            entry.subject.clone(),
            AuthMethod::StaticToken {
                token_id: entry.id.clone(),
            },
        )
        .map_err(|e| Error::config(e.to_string()))?;
        principal.groups.clone_from(&entry.groups);
        principal.attributes.clone_from(&entry.attributes);
        principal.authenticated_at = now;
        principal.expires_at = entry.expires_at;
        Ok(principal)
    }
}

#[async_trait]
impl IdentityProvider for StaticTokens {
    async fn authenticate(
        &self,
        credential: &Credential,
        context: &AuthContext,
    ) -> std::result::Result<Principal, BoxError> {
        let token = credential.token().ok_or(Error::Unsupported {
            kind: credential.kind(),
        })?;
        Ok(self.verify(token, context.now())?)
    }

    fn accepts(&self, credential: &Credential) -> bool {
        // JWTs go to the JWT providers of a chain; everything else token-shaped is ours.
        credential
            .token()
            .is_some_and(|t| !crate::jwt::looks_like_jwt(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(expires_at: Option<Timestamp>) -> StaticTokens {
        StaticTokens::new(StaticTokensConfig {
            hash_key: None,
            tokens: vec![
                StaticToken {
                    id: "ci".into(),
                    hash: TokenHash::of("ww_ci_token", None),
                    subject: "ci-bot".into(),
                    groups: ["ci".to_owned()].into(),
                    attributes: [("team".to_owned(), "platform".to_owned())].into(),
                    expires_at,
                },
                StaticToken {
                    id: "other".into(),
                    hash: TokenHash::of("ww_other", None),
                    subject: "other".into(),
                    groups: BTreeSet::new(),
                    attributes: BTreeMap::new(),
                    expires_at: None,
                },
            ],
        })
        .unwrap()
    }

    #[test]
    fn known_token_maps_to_its_principal() {
        let now = Timestamp::from_unix_secs(1_000).unwrap();
        let p = provider(None).verify("ww_ci_token", now).unwrap();
        assert_eq!(p.subject, "ci-bot");
        assert!(p.in_group("ci"));
        assert_eq!(p.attributes["team"], "platform");
        assert_eq!(
            p.auth,
            AuthMethod::StaticToken {
                token_id: "ci".into()
            }
        );
        assert_eq!(p.authenticated_at, now);
        let p = provider(None).verify("ww_other", now).unwrap();
        assert_eq!(p.subject, "other");
    }

    #[test]
    fn unknown_empty_long_and_expired_are_refused() {
        let exp = Timestamp::from_unix_secs(2_000).unwrap();
        let p = provider(Some(exp));
        let before = Timestamp::from_unix_secs(1_999).unwrap();
        assert!(p.verify("ww_ci_token", before).is_ok());
        assert_eq!(
            p.verify("ww_ci_token", exp),
            Err(Error::Expired { expired_at: exp })
        );
        assert_eq!(p.verify("ww_ci_tokeN", before), Err(Error::Unknown));
        assert_eq!(p.verify("", before), Err(Error::Missing));
        assert_eq!(
            p.verify(&"a".repeat(5000), before).unwrap_err().code(),
            "malformed"
        );
    }

    #[test]
    fn keyed_hashes_differ_and_verify() {
        let key = HashKey::new([7; 32]);
        assert_ne!(TokenHash::of("t", Some(&key)), TokenHash::of("t", None));
        let toml = format!(
            "hash_key = \"{}\"\n[[tokens]]\nid = \"a\"\nhash = \"{}\"\nsubject = \"agent-a\"\ngroups = [\"g\"]\nexpires_at = \"2100-01-01T00:00:00Z\"\n",
            "07".repeat(32),
            TokenHash::of("secret-a", Some(&key))
        );
        let p = StaticTokens::from_toml(&toml).unwrap();
        assert_eq!(
            p.verify("secret-a", Timestamp::now()).unwrap().subject,
            "agent-a"
        );
        // The unkeyed hash of the same token is not accepted.
        let unkeyed =
            StaticTokens::from_toml(&toml.replace(&"07".repeat(32), &"08".repeat(32))).unwrap();
        assert_eq!(
            unkeyed.verify("secret-a", Timestamp::now()),
            Err(Error::Unknown)
        );
        assert!(!format!("{p:?}").contains(&"07".repeat(32)));
    }

    #[test]
    fn bad_configuration_is_refused() {
        let h = TokenHash::of("x", None);
        let dup = format!(
            "[[tokens]]\nid = \"a\"\nhash = \"{h}\"\nsubject = \"s\"\n[[tokens]]\nid = \"a\"\nhash = \"{}\"\nsubject = \"s\"\n",
            TokenHash::of("y", None)
        );
        assert_eq!(StaticTokens::from_toml(&dup).unwrap_err().code(), "config");
        let same_hash = format!(
            "[[tokens]]\nid = \"a\"\nhash = \"{h}\"\nsubject = \"s\"\n[[tokens]]\nid = \"b\"\nhash = \"{h}\"\nsubject = \"s\"\n"
        );
        assert!(
            StaticTokens::from_toml(&same_hash)
                .unwrap_err()
                .to_string()
                .contains("hash")
        );
        let empty_subject = format!("[[tokens]]\nid = \"a\"\nhash = \"{h}\"\nsubject = \"\"\n");
        assert!(StaticTokens::from_toml(&empty_subject).is_err());
        let short_hash = "[[tokens]]\nid = \"a\"\nhash = \"abcd\"\nsubject = \"s\"\n";
        assert!(StaticTokens::from_toml(short_hash).is_err());
        let unknown_field =
            format!("[[tokens]]\nid = \"a\"\nhash = \"{h}\"\nsubject = \"s\"\ntoken = \"x\"\n");
        assert!(StaticTokens::from_toml(&unknown_field).is_err());
    }

    #[test]
    fn generated_tokens_are_random_and_hash_round_trips() {
        let a = StaticTokens::generate_token().unwrap();
        assert!(a.starts_with("ww_") && a.len() == 46, "{a}");
        assert_ne!(a, StaticTokens::generate_token().unwrap());
        let h = TokenHash::of(&a, None);
        assert_eq!(h.to_string().parse::<TokenHash>().unwrap(), h);
    }
}
