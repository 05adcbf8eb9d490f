//! Trying several providers in turn, by the shape of the credential.

use std::sync::Arc;

use async_trait::async_trait;
use wirewarden_core::{BoxError, Principal};

use crate::{AuthContext, Credential, Error, IdentityProvider, error_code};

/// An [`IdentityProvider`] that asks each of its providers that
/// [accepts](IdentityProvider::accepts) the credential's shape, in order, and returns the
/// first principal.
///
/// If none accepts the credential it is [`Error::Unsupported`]; if every one that tried
/// refused it, [`Error::Rejected`] lists each provider's index, reason code and message
/// (`#0: expired (credential expired at …)`) for the audit trail. The client is told only
/// [`Error::client_message`], the same sentence for every failure, so it cannot learn which
/// provider or check refused it. There is no default identity: an empty chain refuses
/// everything.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    providers: Vec<Arc<dyn IdentityProvider>>,
}

impl Chain {
    /// An empty chain.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a provider.
    #[must_use]
    pub fn with(mut self, provider: Arc<dyn IdentityProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Appends a provider.
    pub fn push(&mut self, provider: Arc<dyn IdentityProvider>) {
        self.providers.push(provider);
    }

    /// How many providers the chain holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether the chain holds no provider.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

#[async_trait]
impl IdentityProvider for Chain {
    async fn authenticate(
        &self,
        credential: &Credential,
        context: &AuthContext,
    ) -> Result<Principal, BoxError> {
        if credential.is_empty() {
            return Err(Error::Missing.into());
        }
        let mut attempts = Vec::new();
        for (i, provider) in self.providers.iter().enumerate() {
            if !provider.accepts(credential) {
                continue;
            }
            match provider.authenticate(credential, context).await {
                Ok(principal) => return Ok(principal),
                // The code to match on, then the provider's own reason (the listeners'
                // audit record of a refused certificate keeps rustls' reason this way).
                Err(e) => attempts.push(format!("#{i}: {} ({e})", error_code(&e))),
            }
        }
        if attempts.is_empty() {
            Err(Error::Unsupported {
                kind: credential.kind(),
            }
            .into())
        } else {
            Err(Error::Rejected { attempts }.into())
        }
    }

    fn accepts(&self, credential: &Credential) -> bool {
        self.providers.iter().any(|p| p.accepts(credential))
    }
}
