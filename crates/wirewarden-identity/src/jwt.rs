//! JWT access tokens (RFC 9068) verified against the issuer's published keys.
//!
//! The order of checks: shape and size; the header (`alg` must be an asymmetric algorithm we
//! allow, `typ` one we accept, no `crit`); the unverified `iss` (so a stranger's token never
//! makes us fetch keys); the key named by `kid`; the header's `alg` must be the *key's*
//! algorithm; the signature; then the verified claims: issuer, audience, `exp` (required),
//! `nbf` and `iat` with a bounded leeway, all judged at [`AuthContext::now`]. Only then are
//! claims mapped to the principal's subject, groups and attributes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use wirewarden_core::{AuthMethod, BoxError, Principal, Timestamp};

use crate::jwks::{JwksCache, JwksOptions, KeySource, VerifyKey};
use crate::{AuthContext, Credential, Error, IdentityProvider, Result};

/// The largest leeway for `exp`/`nbf`/`iat` a configuration may ask for.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Groups taken from one claim: an array of strings, or a space-separated string (`scope`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimGroups {
    /// The claim's name, or a dotted path into nested objects (`realm_access.roles`).
    pub claim: String,
    /// Prepended to each value (`scope:` turns scope `read` into group `scope:read`).
    #[serde(default)]
    pub prefix: String,
}

/// Configuration of a [`JwtProvider`], as it appears in TOML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The exact `iss` expected.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Must not be empty.
    pub audiences: Vec<String>,
    /// The JWKS URL; without it, OpenID discovery from the issuer.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A PEM file of the CA certificates trusted for `https` JWKS and discovery URLs.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Allowed clock skew for `exp`, `nbf` and `iat`, at most [`MAX_LEEWAY`].
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Accepted signature algorithms (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Accepted `typ` header values, compared case-insensitively.
    #[serde(default = "default_types")]
    pub accepted_types: Vec<String>,
    /// Whether a token without `typ` is accepted.
    #[serde(default = "default_true")]
    pub allow_missing_type: bool,
    /// The claim that holds the subject.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Claims that hold groups.
    #[serde(default = "default_group_claims")]
    pub group_claims: Vec<ClaimGroups>,
    /// Attribute name → claim (or dotted path) whose string, number or boolean value it
    /// takes.
    #[serde(default)]
    pub attribute_claims: BTreeMap<String, String>,
    /// Tokens longer than this are refused before parsing.
    #[serde(default = "default_max_token_len")]
    pub max_token_len: usize,
    /// The shortest time between two key-set fetches, in seconds.
    #[serde(default = "default_min_refresh")]
    pub min_refresh_interval_secs: u64,
    /// How long a fetched key set is used before it is refreshed, in seconds.
    #[serde(default = "default_max_age")]
    pub max_key_age_secs: u64,
}

fn default_leeway() -> u64 {
    30
}
fn default_algorithms() -> Vec<String> {
    [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ]
    .map(str::to_owned)
    .to_vec()
}
fn default_types() -> Vec<String> {
    ["at+jwt", "application/at+jwt", "JWT"]
        .map(str::to_owned)
        .to_vec()
}
fn default_true() -> bool {
    true
}
fn default_subject_claim() -> String {
    "sub".to_owned()
}
fn default_group_claims() -> Vec<ClaimGroups> {
    vec![
        ClaimGroups {
            claim: "groups".into(),
            prefix: String::new(),
        },
        ClaimGroups {
            claim: "scope".into(),
            prefix: "scope:".into(),
        },
    ]
}
fn default_max_token_len() -> usize {
    16 * 1024
}
fn default_min_refresh() -> u64 {
    30
}
fn default_max_age() -> u64 {
    600
}

impl JwtConfig {
    /// A configuration with every default, for `issuer` and `audiences`.
    #[must_use]
    pub fn new(issuer: impl Into<String>, audiences: &[&str]) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: audiences.iter().map(|&a| a.to_owned()).collect(),
            jwks_url: None,
            tls_ca_file: None,
            leeway_secs: default_leeway(),
            algorithms: default_algorithms(),
            accepted_types: default_types(),
            allow_missing_type: true,
            subject_claim: default_subject_claim(),
            group_claims: default_group_claims(),
            attribute_claims: BTreeMap::new(),
            max_token_len: default_max_token_len(),
            min_refresh_interval_secs: default_min_refresh(),
            max_key_age_secs: default_max_age(),
        }
    }

    /// Parses the configuration from TOML.
    ///
    /// # Errors
    /// [`Error::Config`] if it does not parse.
    pub fn from_toml(toml: &str) -> Result<Self> {
        toml::from_str(toml).map_err(|e| Error::config(e.to_string()))
    }
}

/// Whether `token` has the shape of a compact JWS: three non-empty base64url parts.
/// A look at the shape only, for routing in a [`Chain`](crate::Chain).
#[must_use]
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0usize;
    for part in token.split('.') {
        parts = parts.saturating_add(1);
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3 && token.starts_with("eyJ")
}

/// An [`IdentityProvider`] for JWT access tokens of one issuer.
#[derive(Debug)]
pub struct JwtProvider {
    issuer: String,
    audiences: Vec<String>,
    leeway_secs: i64,
    algorithms: Vec<Algorithm>,
    accepted_types: Vec<String>,
    allow_missing_type: bool,
    subject_claim: String,
    group_claims: Vec<ClaimGroups>,
    attribute_claims: BTreeMap<String, String>,
    max_token_len: usize,
    keys: Arc<JwksCache>,
}

/// The parts of the JOSE header we look at.
#[derive(Debug)]
pub(crate) struct JoseHeader {
    alg: Algorithm,
    kid: Option<String>,
}

fn b64(part: &str, what: &str, limit: usize) -> Result<Vec<u8>> {
    if part.len() > limit {
        return Err(Error::malformed(format!("{what} too long")));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Error::malformed(format!("{what} is not base64url")))
}

impl JwtProvider {
    /// A provider that fetches keys from `config.jwks_url`, or by discovery from the issuer.
    /// `https` URLs need `config.tls_ca_file` (or [`JwtProvider::with_keys`] and a cache
    /// built with [`TlsRoots`](crate::TlsRoots)).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration or an unreadable CA file.
    #[cfg(feature = "jwks-fetch")]
    pub fn new(config: JwtConfig) -> Result<Self> {
        let source = match &config.jwks_url {
            Some(u) => KeySource::Url(u.clone()),
            None => KeySource::Discovery,
        };
        let mut options = JwksOptions::default()
            .min_refresh_interval(Duration::from_secs(config.min_refresh_interval_secs))
            .max_age(Duration::from_secs(config.max_key_age_secs));
        if let Some(path) = &config.tls_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| Error::config(format!("reading {}: {e}", path.display())))?;
            options = options.tls(crate::TlsRoots::from_pem(&pem)?);
        }
        let keys = JwksCache::new(config.issuer.clone(), source, options)?;
        Self::with_keys(config, Arc::new(keys))
    }

    /// A provider using an existing key cache (static keys, TLS roots, or a cache shared by
    /// several providers of one issuer). `config.jwks_url` and the refresh settings are
    /// ignored: the cache has its own.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, or a cache for another issuer.
    pub fn with_keys(config: JwtConfig, keys: Arc<JwksCache>) -> Result<Self> {
        if config.issuer.is_empty() {
            return Err(Error::config("the JWT issuer is empty"));
        }
        if keys.issuer() != config.issuer {
            return Err(Error::config("the key cache belongs to another issuer"));
        }
        if config.audiences.is_empty() || config.audiences.iter().any(String::is_empty) {
            return Err(Error::config(
                "a JWT provider needs at least one non-empty audience",
            ));
        }
        if Duration::from_secs(config.leeway_secs) > MAX_LEEWAY {
            return Err(Error::config(format!(
                "leeway of {}s exceeds the maximum of {}s",
                config.leeway_secs,
                MAX_LEEWAY.as_secs()
            )));
        }
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let alg: Algorithm = name
                .parse()
                .map_err(|_| Error::config(format!("unknown JWT algorithm {name:?}")))?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(Error::config(format!(
                    "symmetric JWT algorithm {name} is not supported"
                )));
            }
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err(Error::config("no JWT algorithm allowed"));
        }
        if config.subject_claim.is_empty() {
            return Err(Error::config("the subject claim name is empty"));
        }
        Ok(Self {
            issuer: config.issuer,
            audiences: config.audiences,
            leeway_secs: i64::try_from(config.leeway_secs).unwrap_or(0),
            algorithms,
            accepted_types: config
                .accepted_types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            allow_missing_type: config.allow_missing_type,
            subject_claim: config.subject_claim,
            group_claims: config.group_claims,
            attribute_claims: config.attribute_claims,
            max_token_len: config.max_token_len,
            keys,
        })
    }

    /// The key cache (for its fetch count, or to share it).
    #[must_use]
    pub fn keys(&self) -> &Arc<JwksCache> {
        &self.keys
    }

    /// Verifies `token` at `now`.
    ///
    /// # Errors
    /// The [`Error`] variant of the first check that fails (see the module documentation).
    pub async fn verify(&self, token: &str, now: Timestamp) -> Result<Principal> {
        let header = self.check_header(token)?;
        let key = self.keys.key(header.kid.as_deref()).await?;
        self.verify_with_key(token, &header, &key, now)
    }

    /// Shape, header and unverified issuer: everything that can be refused before a key
    /// lookup.
    pub(crate) fn check_header(&self, token: &str) -> Result<JoseHeader> {
        if token.is_empty() {
            return Err(Error::Missing);
        }
        if token.len() > self.max_token_len {
            return Err(Error::malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::malformed(
                "not a compact JWS (three dot-separated parts)",
            ));
        };
        if h.is_empty() || p.is_empty() || s.is_empty() {
            return Err(Error::malformed("empty JWS part"));
        }
        let header: Map<String, Value> = serde_json::from_slice(&b64(h, "header", 4096)?)
            .map_err(|_| Error::malformed("header is not a JSON object"))?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::malformed("header has no alg"))?;
        let refuse = |reason| {
            Err(Error::DisallowedAlgorithm {
                alg: alg_name.chars().take(32).collect(),
                reason,
            })
        };
        if alg_name.eq_ignore_ascii_case("none") {
            return refuse("unsigned tokens are never accepted");
        }
        let Ok(alg) = alg_name.parse::<Algorithm>() else {
            return refuse("unknown algorithm");
        };
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return refuse("symmetric algorithms are never accepted");
        }
        if !self.algorithms.contains(&alg) {
            return refuse("not allowed by configuration");
        }
        if header.contains_key("crit") {
            return Err(Error::malformed(
                "critical header extensions are not supported",
            ));
        }
        match header.get("typ") {
            None if self.allow_missing_type => {}
            None => return Err(Error::WrongType { found: None }),
            Some(Value::String(t)) if self.accepted_types.contains(&t.to_ascii_lowercase()) => {}
            Some(t) => {
                return Err(Error::WrongType {
                    found: Some(
                        t.as_str()
                            .unwrap_or("(not a string)")
                            .chars()
                            .take(64)
                            .collect(),
                    ),
                });
            }
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) if k.len() <= 256 => Some(k.clone()),
            Some(_) => return Err(Error::malformed("kid is not a short string")),
        };
        // The issuer, unverified: a token from elsewhere must not trigger a key fetch.
        let claims: Map<String, Value> =
            serde_json::from_slice(&b64(p, "payload", self.max_token_len)?)
                .map_err(|_| Error::malformed("payload is not a JSON object"))?;
        self.check_issuer(&claims)?;
        Ok(JoseHeader { alg, kid })
    }

    fn check_issuer(&self, claims: &Map<String, Value>) -> Result<()> {
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.issuer => Ok(()),
            other => Err(Error::WrongIssuer {
                found: other.map(|v| {
                    v.as_str()
                        .unwrap_or("(not a string)")
                        .chars()
                        .take(256)
                        .collect()
                }),
            }),
        }
    }

    /// Signature and claims, with the key already chosen. Synchronous: no I/O.
    pub(crate) fn verify_with_key(
        &self,
        token: &str,
        header: &JoseHeader,
        key: &VerifyKey,
        now: Timestamp,
    ) -> Result<Principal> {
        // The algorithm is the key's; the header may only agree with it.
        if header.alg != key.alg {
            return Err(Error::DisallowedAlgorithm {
                alg: format!("{:?}", header.alg),
                reason: "not the algorithm of the key it names",
            });
        }
        let mut validation = Validation::new(key.alg);
        // Time and audience checks are ours, against `now`, with typed errors.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Error::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Error::DisallowedAlgorithm {
                    alg: format!("{:?}", header.alg),
                    reason: "not the algorithm of the key it names",
                },
                _ => Error::malformed("token does not decode"),
            })?;
        let claims = data.claims;
        self.check_issuer(&claims)?;
        self.check_audience(&claims)?;
        let exp = self
            .time_claim(&claims, "exp")?
            .ok_or_else(|| Error::InvalidClaim {
                claim: "exp".into(),
            })?;
        let now_s = now.unix_secs();
        if now_s >= exp.saturating_add(self.leeway_secs) {
            return Err(Error::Expired {
                expired_at: ts(exp),
            });
        }
        for claim in ["nbf", "iat"] {
            if let Some(t) = self.time_claim(&claims, claim)?
                && t > now_s.saturating_add(self.leeway_secs)
            {
                return Err(Error::NotYetValid { not_before: ts(t) });
            }
        }
        let subject = match lookup(&claims, &self.subject_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(Error::InvalidClaim {
                    claim: self.subject_claim.clone(),
                });
            }
        };
        let mut principal = Principal::new(
            subject,
            AuthMethod::Jwt {
                issuer: self.issuer.clone(),
                key_id: header.kid.clone(),
            },
        )
        .map_err(|e| Error::malformed(e.to_string()))?;
        for g in &self.group_claims {
            match lookup(&claims, &g.claim) {
                Some(Value::String(s)) => principal
                    .groups
                    .extend(s.split_whitespace().map(|v| format!("{}{v}", g.prefix))),
                Some(Value::Array(items)) => principal.groups.extend(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|v| format!("{}{v}", g.prefix)),
                ),
                _ => {}
            }
        }
        for (attr, claim) in &self.attribute_claims {
            let value = match lookup(&claims, claim) {
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                _ => continue,
            };
            principal.attributes.insert(attr.clone(), value);
        }
        principal.authenticated_at = now;
        // The instant after which this provider itself refuses the token: a principal it
        // returns is never already expired for the pipeline's own checks.
        principal.expires_at = Some(ts(exp.saturating_add(self.leeway_secs)));
        Ok(principal)
    }

    fn check_audience(&self, claims: &Map<String, Value>) -> Result<()> {
        let found: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        if found.iter().any(|a| self.audiences.contains(a)) {
            Ok(())
        } else {
            Err(Error::WrongAudience {
                found: found.into_iter().take(8).collect(),
            })
        }
    }

    /// A NumericDate claim in whole seconds; absent is `None`, anything but a number is an
    /// error.
    fn time_claim(&self, claims: &Map<String, Value>, claim: &str) -> Result<Option<i64>> {
        match claims.get(claim) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.is_finite() && f.abs() < 1e15)
                        .map(|f| f.floor() as i64)
                })
                .map(Some)
                .ok_or_else(|| Error::InvalidClaim {
                    claim: claim.to_owned(),
                }),
            Some(_) => Err(Error::InvalidClaim {
                claim: claim.to_owned(),
            }),
        }
    }
}

/// Seconds since the epoch as a timestamp, clamped to the representable range.
fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(secs.clamp(-9_000_000_000, 9_000_000_000))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A claim by exact name, or else by dotted path into nested objects.
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for part in parts {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

#[async_trait]
impl IdentityProvider for JwtProvider {
    async fn authenticate(
        &self,
        credential: &Credential,
        context: &AuthContext,
    ) -> std::result::Result<Principal, BoxError> {
        let token = credential.token().ok_or(Error::Unsupported {
            kind: credential.kind(),
        })?;
        Ok(self.verify(token, context.now()).await?)
    }

    fn accepts(&self, credential: &Credential) -> bool {
        credential.token().is_some_and(looks_like_jwt)
    }
}

/// Fuzz entry: any bytes as a token against a fixed key set; nothing may panic, and nothing
/// the fuzzer makes can verify.
#[doc(hidden)]
pub fn fuzz_verify(data: &[u8]) {
    use std::sync::OnceLock;
    static PROVIDER: OnceLock<JwtProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| {
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(FUZZ_JWKS).expect("fixed JWKS");
        let cache = JwksCache::new(
            "https://issuer.fuzz",
            KeySource::Static(jwks),
            JwksOptions::default(),
        )
        .expect("static cache");
        JwtProvider::with_keys(
            JwtConfig::new("https://issuer.fuzz", &["fuzz"]),
            Arc::new(cache),
        )
        .expect("fuzz provider")
    });
    let _ = looks_like_jwt(&String::from_utf8_lossy(data));
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(header) = provider.check_header(token) else {
        return;
    };
    let Some(keys) = provider.keys.static_keys() else {
        return;
    };
    if let Some(key) = keys.find(header.kid.as_deref()) {
        let now = Timestamp::from_unix_secs(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        assert!(
            provider.verify_with_key(token, &header, key, now).is_err(),
            "a fuzzed token verified"
        );
    }
}

/// Public keys whose private halves are not kept anywhere.
const FUZZ_JWKS: &str = r#"{"keys":[
 {"kty":"EC","crv":"P-256","kid":"ec-1","alg":"ES256","use":"sig",
  "x":"c2AK76_h9-0POcoS47ceJ3Jg3xLjGsK947Kd0POsI-Y","y":"EB93rthPcGAMmQqZbils31u-JWUitOhik5aQo__WzIk"},
 {"kty":"OKP","crv":"Ed25519","kid":"ed-1","alg":"EdDSA","use":"sig",
  "x":"A6RIDWDTwAdT4t0oAB1-dRPBeeyc6qYcFmSUaSAYSVY"}
]}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"));
        for not in [
            "",
            "eyJ.eyJ",
            "eyJ.eyJ.",
            "eyJ..sig",
            "eyJ.eyJ.s.t",
            "ww_static_token",
            "abc.def.ghi",
            "eyJ a.b.c",
            "eyJ+/.b.c",
        ] {
            assert!(!looks_like_jwt(not), "{not:?}");
        }
    }

    #[test]
    fn claims_by_name_then_by_path() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"a.b": 1, "a": {"b": 2, "c": {"d": "x"}}, "https://x.test/groups": ["g"]}"#,
        )
        .unwrap();
        assert_eq!(lookup(&claims, "a.b"), Some(&Value::from(1)));
        assert_eq!(lookup(&claims, "a.c.d"), Some(&Value::from("x")));
        assert_eq!(lookup(&claims, "a.c.e"), None);
        assert_eq!(lookup(&claims, "a.b.c"), None);
        assert!(lookup(&claims, "https://x.test/groups").is_some());
    }

    #[test]
    fn numeric_dates_clamp() {
        assert_eq!(ts(i64::MAX), ts(9_000_000_000));
        assert_eq!(ts(i64::MIN), ts(-9_000_000_000));
        assert_eq!(ts(10).unix_secs(), 10);
    }
}
