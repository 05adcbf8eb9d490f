//! TLS configuration helpers: load PEM certificates and keys into rustls configurations,
//! and [`UpstreamTls`], the TLS settings every proxy uses towards its upstream.
//!
//! The gateway terminates TLS from clients (so a token sent as a password travels
//! encrypted) and may speak TLS to the upstream. Both sides use rustls with the *ring*
//! provider.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[cfg(feature = "postgres")]
use crate::postgres::ChannelBinding;
use crate::{Error, Result};

/// The rustls configurations these helpers build, re-exported so an embedder needs no
/// direct rustls dependency to hold them.
pub use rustls::{ClientConfig, ServerConfig};

/// TLS settings for the upstream connection. Build with [`UpstreamTls::new`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UpstreamTls {
    /// The rustls client configuration (trusted roots).
    pub config: Arc<ClientConfig>,
    /// The name the server certificate must carry.
    pub server_name: ServerName<'static>,
    /// Whether the PostgreSQL login must be bound to this TLS connection
    /// (SCRAM-SHA-256-PLUS, `tls-server-end-point`), as libpq's `channel_binding`. The
    /// default, [`ChannelBinding::Prefer`], binds when the server offers it; only
    /// [`ChannelBinding::Require`] stops a middlebox holding a certificate the gateway
    /// trusts that talks plaintext to a server also accepting plaintext logins. Redis
    /// targets ignore it. Present with the `postgres` feature.
    #[cfg(feature = "postgres")]
    pub channel_binding: ChannelBinding,
}

impl UpstreamTls {
    /// TLS trusting `config`'s roots for a server certificate naming `server_name`, with
    /// channel binding preferred.
    #[must_use]
    pub fn new(config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Self {
        Self {
            config,
            server_name,
            #[cfg(feature = "postgres")]
            channel_binding: ChannelBinding::default(),
        }
    }

    /// Sets the channel binding policy of the PostgreSQL login.
    #[cfg(feature = "postgres")]
    #[must_use]
    pub fn with_channel_binding(mut self, channel_binding: ChannelBinding) -> Self {
        self.channel_binding = channel_binding;
        self
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
///
/// # Errors
/// [`Error::Tls`] if the file cannot be read or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    certs_from_pem(&pem)
}

/// Parses every certificate in PEM text.
///
/// # Errors
/// [`Error::Tls`] if the text holds no certificate.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// Parses the first private key in PEM text.
///
/// # Errors
/// [`Error::Tls`] if there is none.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| Error::Tls(format!("bad key PEM: {e}")))?
        .ok_or_else(|| Error::Tls("no private key in PEM".into()))
}

/// A server configuration from a certificate chain and its key (TLS 1.2 and 1.3, no
/// client certificates).
///
/// # Errors
/// [`Error::Tls`] if the key does not match or is unsupported.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A client configuration trusting exactly the given roots.
///
/// # Errors
/// [`Error::Tls`] if a root cannot be added.
pub fn client_config(roots: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| Error::Tls(e.to_string()))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Parses a host name or IP address for certificate verification.
///
/// # Errors
/// [`Error::Tls`] if it is neither.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|e| Error::Tls(format!("{host}: {e}")))
}
