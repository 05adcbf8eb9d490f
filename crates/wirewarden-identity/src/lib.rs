#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// The docs link to items behind the default features; without them the links stay text.
#![cfg_attr(not(feature = "jwks-fetch"), allow(rustdoc::broken_intra_doc_links))]

mod cert;
mod chain;
mod credential;
mod error;
#[cfg(feature = "jwks-fetch")]
mod fetch;
mod jwks;
mod jwt;
mod static_token;

use async_trait::async_trait;
pub use wirewarden_core::{AuthMethod, BoxError, Principal, Timestamp};

pub use cert::{CertField, CertRule, ClientCertConfig, ClientCertificates};
pub use chain::Chain;
pub use credential::{AuthContext, Credential, Secret};
pub use error::{Error, Result, error_code};
#[cfg(feature = "jwks-fetch")]
pub use fetch::TlsRoots;
pub use jwks::{JwksCache, JwksOptions, KeySource};
pub use jwt::{ClaimGroups, JwtConfig, JwtProvider, MAX_LEEWAY, looks_like_jwt};
pub use static_token::{
    HASH_CONTEXT, HashKey, MAX_TOKEN_LEN, StaticToken, StaticTokens, StaticTokensConfig, TokenHash,
};

/// Re-exported for [`KeySource::Static`] and tests that sign tokens.
pub use jsonwebtoken;

/// Turns a credential into a verified [`Principal`].
///
/// Implementations must fail closed: an unknown, malformed, empty or expired credential is an
/// error, never some default identity, and every time-dependent check is judged at
/// [`AuthContext::now`]. Errors are boxed so implementors are not tied to our [`Error`]; ours
/// return [`Error`] inside the box ([`error_code`] reads it back for audit). The pipeline
/// keeps providers as `Arc<dyn IdentityProvider>`; `wirewarden-testkit`'s identity
/// conformance suite checks an implementation against these rules.
#[async_trait]
pub trait IdentityProvider: std::fmt::Debug + Send + Sync {
    /// Verifies `credential` and returns the principal it proves.
    ///
    /// # Errors
    /// Whenever the credential does not prove an identity, for whatever reason.
    async fn authenticate(
        &self,
        credential: &Credential,
        context: &AuthContext,
    ) -> std::result::Result<Principal, BoxError>;

    /// Whether this provider handles credentials of this shape at all; a [`Chain`] asks only
    /// the providers that do. A cheap look at the shape, never a verification.
    fn accepts(&self, credential: &Credential) -> bool {
        let _ = credential;
        true
    }
}

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the cargo-fuzz targets in `fuzz/`. Not part of the public API.

    pub use crate::jwt::fuzz_verify as jwt_parse;
}
