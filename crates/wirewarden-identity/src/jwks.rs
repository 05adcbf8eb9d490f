//! The issuer's signing keys: fetched, cached, and refreshed at most once per interval.
//!
//! A token naming a `kid` we have not seen triggers a refresh (the issuer may have rotated
//! keys), but never more often than [`JwksOptions::min_refresh_interval`], so a flood of
//! tokens with invented `kid`s costs the issuer one request per interval. Concurrent lookups
//! that need a refresh wait for the same one. A cached set older than
//! [`JwksOptions::max_age`] is refreshed on use; if that refresh fails the cached keys keep
//! working, so a short outage of the issuer does not lock every agent out.

use std::sync::{Arc, RwLock};
use std::time::Duration;
#[cfg(feature = "jwks-fetch")]
use std::time::Instant;

use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

#[cfg(feature = "jwks-fetch")]
use crate::fetch::{Fetcher, TlsRoots, check_url};
use crate::{Error, Result};

/// RSA keys shorter than this many bits are ignored.
const MIN_RSA_BITS: usize = 2048;
/// At most this many keys are kept from one key set.
const MAX_KEYS: usize = 64;

/// Where the keys come from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// A JWKS URL (`http` or `https`).
    #[cfg(feature = "jwks-fetch")]
    Url(String),
    /// OpenID Connect discovery: `{issuer}/.well-known/openid-configuration` names the JWKS
    /// URL, and its `issuer` must equal ours.
    #[cfg(feature = "jwks-fetch")]
    Discovery,
    /// A fixed key set; nothing is ever fetched.
    Static(JwkSet),
}

/// Tuning for a [`JwksCache`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JwksOptions {
    /// The shortest time between two fetches, whatever triggers them.
    pub min_refresh_interval: Duration,
    /// How long a fetched set is used before it is refreshed on use.
    pub max_age: Duration,
    /// A deadline for one fetch (connect, TLS, request and body).
    pub fetch_timeout: Duration,
    /// The largest key set or discovery document accepted, in bytes.
    pub max_document_size: usize,
    /// Trusted roots for `https` URLs; without them only `http` works.
    #[cfg(feature = "jwks-fetch")]
    pub tls: Option<TlsRoots>,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            min_refresh_interval: Duration::from_secs(30),
            max_age: Duration::from_secs(600),
            fetch_timeout: Duration::from_secs(5),
            max_document_size: 256 * 1024,
            #[cfg(feature = "jwks-fetch")]
            tls: None,
        }
    }
}

impl JwksOptions {
    /// Sets [`JwksOptions::min_refresh_interval`].
    #[must_use]
    pub fn min_refresh_interval(mut self, d: Duration) -> Self {
        self.min_refresh_interval = d;
        self
    }

    /// Sets [`JwksOptions::max_age`].
    #[must_use]
    pub fn max_age(mut self, d: Duration) -> Self {
        self.max_age = d;
        self
    }

    /// Sets [`JwksOptions::fetch_timeout`].
    #[must_use]
    pub fn fetch_timeout(mut self, d: Duration) -> Self {
        self.fetch_timeout = d;
        self
    }

    #[cfg(feature = "jwks-fetch")]
    /// Sets [`JwksOptions::tls`].
    #[must_use]
    pub fn tls(mut self, roots: TlsRoots) -> Self {
        self.tls = Some(roots);
        self
    }
}

/// One usable verification key, with the algorithm it is for.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
    #[cfg(feature = "jwks-fetch")]
    fetched_at: Option<Instant>,
}

impl KeySet {
    pub(crate) fn from_jwks(set: &JwkSet) -> Self {
        Self {
            keys: set
                .keys
                .iter()
                .filter_map(verify_key)
                .take(MAX_KEYS)
                .collect(),
            #[cfg(feature = "jwks-fetch")]
            fetched_at: None,
        }
    }

    /// The key for `kid`; a token without `kid` is verified only when the set holds exactly
    /// one key, so the verifier never guesses among several.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&VerifyKey> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
    }

    #[cfg(feature = "jwks-fetch")]
    fn is_fresh(&self, max_age: Duration) -> bool {
        self.fetched_at.is_some_and(|t| t.elapsed() < max_age)
    }
}

fn b64_raw_len(s: &str) -> Option<usize> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .map(|b| b.len())
}

fn b64_len(s: &str) -> Option<usize> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .map(|b| b.iter().skip_while(|&&x| x == 0).count())
}

/// The verification key a JWK describes, with its algorithm; `None` for a key that is not a
/// signature key, is symmetric, too weak, or names an algorithm that does not fit its type.
fn verify_key(jwk: &Jwk) -> Option<VerifyKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let declared = match jwk.common.key_algorithm {
        Some(a) => Some(Algorithm::try_from(a).ok()?),
        None => None,
    };
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            if b64_len(&p.n)?.checked_mul(8)? < MIN_RSA_BITS {
                return None;
            }
            Algorithm::RS256
        }
        // Coordinates of the exact length only: the verifiers below slice by length.
        AlgorithmParameters::EllipticCurve(p) => {
            match (p.curve.clone(), b64_raw_len(&p.x)?, b64_raw_len(&p.y)?) {
                (EllipticCurve::P256, 32, 32) => Algorithm::ES256,
                (EllipticCurve::P384, 48, 48) => Algorithm::ES384,
                _ => return None,
            }
        }
        AlgorithmParameters::OctetKeyPair(p) => match (p.curve.clone(), b64_raw_len(&p.x)?) {
            (EllipticCurve::Ed25519, 32) => Algorithm::EdDSA,
            _ => return None,
        },
        // Symmetric keys never verify tokens here: anyone who can read the key set could
        // otherwise forge them.
        _ => return None,
    };
    let alg = match declared {
        None => implied,
        Some(a) if a == implied => a,
        // An RSA key may be declared for another RSA algorithm (RS384, PS256, …).
        Some(a)
            if AlgorithmFamily::Rsa.algorithms().contains(&a) && implied == Algorithm::RS256 =>
        {
            a
        }
        Some(_) => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[cfg(feature = "jwks-fetch")]
#[derive(Debug, Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    jwks_uri: Option<http::Uri>,
    fetches: u64,
}

/// A cached JSON Web Key Set for one issuer.
#[derive(Debug)]
pub struct JwksCache {
    issuer: String,
    source: KeySource,
    #[cfg(feature = "jwks-fetch")]
    url: Option<http::Uri>,
    #[cfg(feature = "jwks-fetch")]
    options: JwksOptions,
    #[cfg(feature = "jwks-fetch")]
    fetcher: Fetcher,
    current: RwLock<Arc<KeySet>>,
    #[cfg(feature = "jwks-fetch")]
    refresh: tokio::sync::Mutex<RefreshState>,
}

impl JwksCache {
    /// A cache for `issuer`'s keys from `source`. Nothing is fetched until a key is needed.
    ///
    /// # Errors
    /// [`Error::Config`] if a URL (the JWKS URL, or the issuer for discovery) is not `http`
    /// or `https`, or is `https` without [`JwksOptions::tls`].
    pub fn new(issuer: impl Into<String>, source: KeySource, options: JwksOptions) -> Result<Self> {
        let issuer = issuer.into();
        #[cfg(feature = "jwks-fetch")]
        let url = match &source {
            KeySource::Url(u) => Some(check_url(u, options.tls.as_ref())?),
            KeySource::Discovery => {
                let base = issuer.trim_end_matches('/');
                Some(check_url(
                    &format!("{base}/.well-known/openid-configuration"),
                    options.tls.as_ref(),
                )?)
            }
            KeySource::Static(_) => None,
        };
        let current = match &source {
            KeySource::Static(set) => KeySet::from_jwks(set),
            #[cfg(feature = "jwks-fetch")]
            _ => KeySet::default(),
        };
        // Without fetching there is nothing to tune: a static set never refreshes.
        #[cfg(not(feature = "jwks-fetch"))]
        let _ = options;
        Ok(Self {
            #[cfg(feature = "jwks-fetch")]
            fetcher: Fetcher {
                tls: options.tls.clone(),
                timeout: options.fetch_timeout,
                max_body: options.max_document_size,
            },
            issuer,
            source,
            #[cfg(feature = "jwks-fetch")]
            url,
            #[cfg(feature = "jwks-fetch")]
            options,
            current: RwLock::new(Arc::new(current)),
            #[cfg(feature = "jwks-fetch")]
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        })
    }

    /// The issuer these keys belong to.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    #[cfg(feature = "jwks-fetch")]
    /// How many fetches of the key set were attempted so far.
    pub async fn fetch_count(&self) -> u64 {
        self.refresh.lock().await.fetches
    }

    fn snapshot(&self) -> Arc<KeySet> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the Arc itself
        // is always whole.
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub(crate) fn static_keys(&self) -> Option<Arc<KeySet>> {
        matches!(self.source, KeySource::Static(_)).then(|| self.snapshot())
    }

    /// The key for `kid`, refreshing the set if it is stale or lacks the key and the rate
    /// limit allows.
    pub(crate) async fn key(&self, kid: Option<&str>) -> Result<VerifyKey> {
        let unknown = || Error::UnknownKey {
            kid: kid.map(str::to_owned),
        };
        let snap = self.snapshot();
        if matches!(self.source, KeySource::Static(_)) {
            return snap.find(kid).cloned().ok_or_else(unknown);
        }
        #[cfg(feature = "jwks-fetch")]
        {
            self.refreshed_key(kid, &snap).await
        }
        #[cfg(not(feature = "jwks-fetch"))]
        {
            Err(unknown())
        }
    }

    /// The rest of [`JwksCache::key`] for a fetched set: `snap` is stale or lacks `kid`.
    #[cfg(feature = "jwks-fetch")]
    async fn refreshed_key(&self, kid: Option<&str>, snap: &KeySet) -> Result<VerifyKey> {
        let unknown = || Error::UnknownKey {
            kid: kid.map(str::to_owned),
        };
        if snap.is_fresh(self.options.max_age)
            && let Some(k) = snap.find(kid)
        {
            return Ok(k.clone());
        }
        let mut state = self.refresh.lock().await;
        // Someone else may have refreshed while we waited for the lock.
        let snap = self.snapshot();
        if snap.is_fresh(self.options.max_age)
            && let Some(k) = snap.find(kid)
        {
            return Ok(k.clone());
        }
        let allowed = state
            .last_attempt
            .is_none_or(|t| t.elapsed() >= self.options.min_refresh_interval);
        if allowed {
            state.last_attempt = Some(Instant::now());
            state.fetches = state.fetches.saturating_add(1);
            match self.fetch(&mut state).await {
                Ok(mut set) => {
                    set.fetched_at = Some(Instant::now());
                    state.last_error = None;
                    *self
                        .current
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
                }
                Err(e) => state.last_error = Some(e),
            }
        }
        let snap = self.snapshot();
        if let Some(k) = snap.find(kid) {
            return Ok(k.clone());
        }
        match (&state.last_error, snap.fetched_at) {
            // Never fetched successfully: say why, rather than blaming the token's kid.
            (Some(e), None) => Err(Error::KeySetUnavailable { reason: e.clone() }),
            _ => Err(unknown()),
        }
    }

    #[cfg(feature = "jwks-fetch")]
    async fn fetch(&self, state: &mut RefreshState) -> std::result::Result<KeySet, String> {
        let jwks_uri = match (&self.source, &state.jwks_uri) {
            (KeySource::Discovery, Some(u)) => u.clone(),
            (KeySource::Discovery, None) => {
                let u = self.discover().await?;
                state.jwks_uri = Some(u.clone());
                u
            }
            _ => self.url.clone().ok_or("no key set URL")?,
        };
        let body = self.fetcher.get(&jwks_uri).await?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("key set is not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or("key set has no \"keys\" array")?;
        // Parse key by key: one key of a type we do not know must not hide the others.
        let keys = keys
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .collect();
        Ok(KeySet::from_jwks(&JwkSet { keys }))
    }

    #[cfg(feature = "jwks-fetch")]
    async fn discover(&self) -> std::result::Result<http::Uri, String> {
        let url = self.url.clone().ok_or("no discovery URL")?;
        let body = self.fetcher.get(&url).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("discovery document is not JSON: {e}"))?;
        let issuer = doc.get("issuer").and_then(serde_json::Value::as_str);
        if issuer != Some(self.issuer.as_str()) {
            return Err(format!(
                "discovery document names issuer {issuer:?}, expected {:?}",
                self.issuer
            ));
        }
        let jwks = doc
            .get("jwks_uri")
            .and_then(serde_json::Value::as_str)
            .ok_or("discovery document has no jwks_uri")?;
        check_url(jwks, self.options.tls.as_ref()).map_err(|e| e.to_string())
    }
}
