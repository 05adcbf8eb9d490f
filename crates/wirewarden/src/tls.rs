//! TLS configuration helpers: load PEM certificates, keys and revocation lists into rustls
//! configurations; [`ServerTls`], the TLS a listener offers its clients (and whether it asks
//! them for certificates, [`ClientCertMode`]); [`ClientCertVerification`], client
//! certificate verification shared by listeners and the identity provider, with revocation
//! lists kept current from files by [`CrlFiles`] and checked again for open sessions by
//! [`CertificateWatch`]; and [`UpstreamTls`], the TLS settings every proxy uses towards its
//! upstream.
//!
//! The gateway terminates TLS from clients (so a token sent as a password travels
//! encrypted, or a client certificate proves who the client is) and may speak TLS to the
//! upstream. Both sides use rustls with the *ring* provider.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

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

/// Whether clients must present a TLS client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCertMode {
    /// A client may present a certificate; one that does logs in with it alone, one that
    /// does not goes on to the password login (a token, or SCRAM for PostgreSQL).
    Optional,
    /// Every client must present a certificate: the TLS handshake refuses one without, and
    /// a PostgreSQL client that did not use TLS at all is refused before any password is
    /// asked.
    Required,
}

/// TLS towards clients: the rustls configuration, whether clients are asked for
/// certificates, and (with the `postgres` feature) the `tls-server-end-point` channel
/// binding data of the certificate, for SCRAM-SHA-256-PLUS.
///
/// Build with [`ServerTls::new`] or [`ServerTls::with_client_certs`]. The PostgreSQL proxy
/// takes the whole value; the Redis and HTTP proxies take its [`config`](Self::config), which
/// carries the client certificate verifier with it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerTls {
    /// The rustls server configuration.
    pub config: Arc<ServerConfig>,
    /// The hash of the leaf certificate, as SCRAM channel binding uses it. Present with the
    /// `postgres` feature.
    #[cfg(feature = "postgres")]
    pub channel_binding: Option<Vec<u8>>,
    /// Whether client certificates are requested; `None` never asks for one.
    pub client_certs: Option<ClientCertMode>,
}

impl ServerTls {
    /// TLS with this certificate chain (leaf first) and key.
    ///
    /// # Errors
    /// [`Error::Tls`] if the key does not match the certificate or the chain is empty.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self> {
        let leaf = chain
            .first()
            .ok_or_else(|| Error::Tls("empty certificate chain".into()))?;
        #[cfg(feature = "postgres")]
        let channel_binding = wirewarden_postgres::auth::tls_server_end_point(leaf.as_ref()).ok();
        #[cfg(not(feature = "postgres"))]
        let _ = leaf;
        let config = server_config(chain, key)?;
        Ok(Self {
            config,
            #[cfg(feature = "postgres")]
            channel_binding,
            client_certs: None,
        })
    }

    /// TLS with this certificate chain (leaf first) and key that also requests client
    /// certificates issued under `trust_anchors` (DER CA certificates).
    ///
    /// The handshake verifies the presented chain (signatures, validity, client-auth key
    /// usage) with rustls' `WebPkiClientVerifier`; a chain that does not verify ends the
    /// handshake. The verified chain then goes to the pipeline's identity provider as
    /// [`Credential::ClientCertificate`](wirewarden_identity::Credential::ClientCertificate)
    /// (for example [`ClientCertificates`](wirewarden_identity::ClientCertificates)), which
    /// maps it to a principal or refuses it; a client whose certificate is refused is never
    /// offered a password login instead. Both the PostgreSQL and the Redis proxy log such
    /// clients in.
    ///
    /// # Errors
    /// [`Error::Tls`] if the chain is empty, the key does not match, no trust anchor is
    /// given or one cannot be used.
    pub fn with_client_certs(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        trust_anchors: &[CertificateDer<'static>],
        mode: ClientCertMode,
    ) -> Result<Self> {
        Self::with_client_certs_and_crls(chain, key, trust_anchors, &[], mode)
    }

    /// As [`with_client_certs`](Self::with_client_certs), and a presented certificate must
    /// also not be revoked by `crls` (DER certificate revocation lists, from
    /// [`load_crls`]): an agent's certificate is withdrawn by listing it, without waiting
    /// for it to expire.
    ///
    /// With lists given, revocation fails closed: every certificate of the chain below the
    /// trust anchor must be covered by a list from its issuer, and every list must be
    /// current (its next update not passed), or the handshake refuses the client — a
    /// revoked certificate, one no list covers and a stale list alike. The refusal is
    /// recorded as a failed login (method `client_certificate`) with rustls' reason
    /// (`Revoked`, `UnknownRevocationStatus`, `certificate revocation list expired`). These
    /// lists are fixed; to replace them while the listener runs, build the configuration
    /// with [`with_client_cert_verification`](Self::with_client_cert_verification).
    ///
    /// # Errors
    /// As `with_client_certs`, and [`Error::Tls`] if a list cannot be parsed.
    pub fn with_client_certs_and_crls(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        trust_anchors: &[CertificateDer<'static>],
        crls: &[CertificateRevocationListDer<'static>],
        mode: ClientCertMode,
    ) -> Result<Self> {
        let verification = ClientCertVerification::new(trust_anchors, crls)?;
        Self::with_client_cert_verification(chain, key, verification, mode)
    }

    /// As [`with_client_certs_and_crls`](Self::with_client_certs_and_crls), verifying with
    /// `verification`, which may be shared with other listeners and with the identity
    /// provider, and whose revocation lists can be replaced while they run
    /// ([`ClientCertVerification::replace_crls`], [`CrlFiles`]): the next handshake uses
    /// the new lists.
    ///
    /// # Errors
    /// [`Error::Tls`] if the chain is empty or the key does not match.
    pub fn with_client_cert_verification(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        verification: Arc<ClientCertVerification>,
        mode: ClientCertMode,
    ) -> Result<Self> {
        let leaf = chain
            .first()
            .ok_or_else(|| Error::Tls("empty certificate chain".into()))?;
        #[cfg(feature = "postgres")]
        let channel_binding = wirewarden_postgres::auth::tls_server_end_point(leaf.as_ref()).ok();
        #[cfg(not(feature = "postgres"))]
        let _ = leaf;
        let verifier = Arc::new(ListenerVerifier {
            shared: verification,
            mandatory: mode == ClientCertMode::Required,
        });
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self {
            config: Arc::new(config),
            #[cfg(feature = "postgres")]
            channel_binding,
            client_certs: Some(mode),
        })
    }
}

/// Verification of client certificate chains against trust anchors and, optionally,
/// certificate revocation lists that can be replaced while listeners use it.
///
/// Built once and shared: every listener that asks for client certificates
/// ([`ServerTls::with_client_cert_verification`]) and the identity provider (through
/// [`verifier`](Self::verifier)) see the same lists, and [`replace_crls`](Self::replace_crls)
/// changes them for the next handshake and the next verification, with no restart. It
/// checks signatures, validity, client-auth usage and revocation with rustls'
/// `WebPkiClientVerifier`.
///
/// With lists, revocation fails closed: a revoked certificate, a certificate no list from
/// its issuer covers, and a list past its next update are all refused.
///
/// Sessions that logged in with a certificate are not left alone once accepted: a
/// [`CertificateWatch`] ([`watch`](Self::watch)) re-verifies a session's chain every time
/// the lists are replaced and reports the first refusal, and the proxies end the session
/// then (for the proxies of this crate, through
/// [`PipelineBuilder::client_cert_verification`](crate::PipelineBuilder::client_cert_verification)).
#[derive(Debug)]
pub struct ClientCertVerification {
    anchors: Arc<rustls::RootCertStore>,
    hints: Vec<rustls::DistinguishedName>,
    current: std::sync::RwLock<Arc<dyn ClientCertVerifier>>,
    /// Counts replacements of the lists; every [`CertificateWatch`] holds a receiver.
    replaced: tokio::sync::watch::Sender<u64>,
}

impl ClientCertVerification {
    /// Verification against `trust_anchors` (DER CA certificates) and `crls` (none: no
    /// revocation check).
    ///
    /// # Errors
    /// [`Error::Tls`] if no trust anchor is given, one cannot be used, or a list cannot be
    /// parsed.
    pub fn new(
        trust_anchors: &[CertificateDer<'static>],
        crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<Arc<Self>> {
        if trust_anchors.is_empty() {
            return Err(Error::Tls("no client certificate trust anchor".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for anchor in trust_anchors {
            roots
                .add(anchor.clone())
                .map_err(|e| Error::Tls(format!("client CA refused: {e}")))?;
        }
        let anchors = Arc::new(roots);
        let verifier = Self::build(&anchors, crls)?;
        Ok(Arc::new(Self {
            hints: verifier.root_hint_subjects().to_vec(),
            anchors,
            current: std::sync::RwLock::new(verifier),
            replaced: tokio::sync::watch::Sender::new(0),
        }))
    }

    fn build(
        anchors: &Arc<rustls::RootCertStore>,
        crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<Arc<dyn ClientCertVerifier>> {
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            anchors.clone(),
            provider(),
        );
        let builder = if crls.is_empty() {
            builder
        } else {
            builder
                .with_crls(crls.iter().cloned())
                .enforce_revocation_expiration()
        };
        builder
            .build()
            .map_err(|e| Error::Tls(format!("client certificate verifier: {e}")))
    }

    /// Replaces the revocation lists (none: no revocation check). The next handshake and
    /// the next verification use the new lists, and every [`CertificateWatch`] re-verifies
    /// its session's chain against them.
    ///
    /// # Errors
    /// [`Error::Tls`] if a list cannot be parsed; the lists in use stay.
    pub fn replace_crls(&self, crls: &[CertificateRevocationListDer<'static>]) -> Result<()> {
        let verifier = Self::build(&self.anchors, crls)?;
        match self.current.write() {
            Ok(mut current) => *current = verifier,
            Err(poisoned) => *poisoned.into_inner() = verifier,
        }
        self.replaced.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Verifies a chain (DER, leaf first) as a handshake would now, with the lists in use:
    /// `Err` holds rustls' reason for refusing it (`Revoked`, `UnknownRevocationStatus`,
    /// `Expired`…).
    ///
    /// # Errors
    /// The reason, as text, when the chain is refused or empty.
    pub fn recheck(&self, chain: &[CertificateDer<'_>]) -> std::result::Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".into());
        };
        self.current()
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A watch over a chain a handshake accepted (DER, leaf first): it reports when lists
    /// that replace the current ones refuse the chain. Take it as soon as the handshake is
    /// done, before the chain is mapped to an identity: lists replaced after that are
    /// checked by the watch, lists replaced before it by the handshake or the identity
    /// provider's own verification.
    #[must_use]
    pub fn watch(self: &Arc<Self>, chain: Vec<CertificateDer<'static>>) -> CertificateWatch {
        CertificateWatch {
            inner: Some((self.clone(), self.replaced.subscribe())),
            chain,
        }
    }

    /// This verification as rustls' `ClientCertVerifier`, requiring a certificate: for the
    /// identity provider
    /// ([`ClientCertificates::with_verifier`](wirewarden_identity::ClientCertificates::with_verifier)),
    /// or any other rustls server configuration.
    #[must_use]
    pub fn verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(ListenerVerifier {
            shared: self.clone(),
            mandatory: true,
        })
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        match self.current.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Watches whether a session's client certificate is still accepted: each time the
/// [`ClientCertVerification`] it came from replaces its revocation lists,
/// [`refused`](Self::refused) re-verifies the chain. A session that logged in another way
/// holds an [`inert`](Self::inert) watch, which never reports.
#[derive(Debug)]
pub struct CertificateWatch {
    inner: Option<(
        Arc<ClientCertVerification>,
        tokio::sync::watch::Receiver<u64>,
    )>,
    chain: Vec<CertificateDer<'static>>,
}

impl CertificateWatch {
    /// A watch that never reports: for a session without a certificate, or a deployment
    /// whose lists never change.
    #[must_use]
    pub fn inert() -> Self {
        Self {
            inner: None,
            chain: Vec::new(),
        }
    }

    /// Whether this watch can ever report.
    #[must_use]
    pub fn is_inert(&self) -> bool {
        self.inner.is_none()
    }

    /// Waits until replaced lists refuse the chain, and returns the reason. Lists replaced
    /// with ones that still accept it change nothing. Never completes for an inert watch.
    ///
    /// Cancel safe: a `select!` may drop it and call it again; a replacement that happened
    /// in between is checked by the next call.
    pub async fn refused(&mut self) -> String {
        let Some((verification, replaced)) = self.inner.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            if replaced.changed().await.is_err() {
                // The verification is held here, so its sender lives: unreachable, but a
                // watch that cannot learn of replacements must not report either.
                return std::future::pending().await;
            }
            if let Err(reason) = verification.recheck(&self.chain) {
                return reason;
            }
        }
    }
}

/// A view of a shared [`ClientCertVerification`] as rustls' verifier: whether a client must
/// present a certificate is the listener's own setting.
#[derive(Debug)]
struct ListenerVerifier {
    shared: Arc<ClientCertVerification>,
    mandatory: bool,
}

impl ClientCertVerifier for ListenerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.shared.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.shared
            .current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.shared
            .current()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.shared
            .current()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.shared.current().supported_verify_schemes()
    }
}

/// Revocation list files kept current in a [`ClientCertVerification`]: [`check`](Self::check)
/// reads them and, when one's content changed, replaces the lists.
/// Call it periodically (the reference gateway does every `crl_refresh_secs`).
///
/// A set of files that cannot be read or parsed is not applied: the lists in use stay, and
/// they still fail closed once past their next update.
#[derive(Debug)]
pub struct CrlFiles {
    paths: Vec<std::path::PathBuf>,
    /// The digest of each file's content as last applied (`None`: unreadable).
    stamps: Vec<Option<[u8; 32]>>,
}

impl CrlFiles {
    /// Watches `paths`, taking the lists as they are now as the ones in use.
    #[must_use]
    pub fn new(paths: Vec<std::path::PathBuf>) -> Self {
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        Self { paths, stamps }
    }

    /// Whether no file is watched.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Every list in the files, read now.
    ///
    /// # Errors
    /// [`Error::Tls`] naming the file that cannot be read or holds no list.
    pub fn load(&self) -> Result<Vec<CertificateRevocationListDer<'static>>> {
        let mut crls = Vec::new();
        for path in &self.paths {
            crls.extend(load_crls(path)?);
        }
        Ok(crls)
    }

    /// Replaces `verification`'s lists if a file changed since the last check. `Ok(true)`:
    /// the lists were replaced.
    ///
    /// # Errors
    /// [`Error::Tls`] if a changed file cannot be read or parsed; nothing was replaced, and
    /// the next check tries again.
    pub fn check(&mut self, verification: &ClientCertVerification) -> Result<bool> {
        let now: Vec<_> = self.paths.iter().map(|p| stamp(p)).collect();
        if now == self.stamps {
            return Ok(false);
        }
        let crls = self.load()?;
        verification.replace_crls(&crls)?;
        self.stamps = now;
        Ok(true)
    }
}

fn stamp(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| *blake3::hash(&bytes).as_bytes())
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

/// Reads every certificate revocation list in a PEM file (`-----BEGIN X509 CRL-----`).
///
/// # Errors
/// [`Error::Tls`] if the file cannot be read or holds no list.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    crls_from_pem(&pem).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))
}

/// Parses every certificate revocation list in PEM text.
///
/// # Errors
/// [`Error::Tls`] if the text holds no list.
pub fn crls_from_pem(pem: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let crls: Vec<_> = rustls_pemfile::crls(&mut &pem[..])
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(format!("bad CRL PEM: {e}")))?;
    if crls.is_empty() {
        return Err(Error::Tls("no certificate revocation list in PEM".into()));
    }
    Ok(crls)
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

/// The verified chain a client presented in the TLS handshake, leaf first (DER), if it
/// presented one: rustls reports it only once its verifier accepted it.
#[cfg(any(feature = "postgres", feature = "redis", feature = "http"))]
pub(crate) fn presented_chain(conn: &rustls::ServerConnection) -> Option<Vec<Vec<u8>>> {
    conn.peer_certificates()
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect())
}

/// Why a client's TLS handshake failed, when it failed over its certificate: none presented
/// to a listener that requires one, or one that does not verify (another issuer, expired,
/// revoked). Such a failure is a refused login and goes on record as one; other handshake
/// failures are not about identity.
#[cfg(any(feature = "postgres", feature = "redis", feature = "http"))]
pub(crate) fn certificate_refusal(e: &std::io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::NoCertificatesPresented => Some("no client certificate presented".into()),
        rustls::Error::InvalidCertificate(_) => Some(tls.to_string()),
        _ => None,
    }
}
