//! Client certificates mapped to principals by subject CN or SAN.
//!
//! Normally the TLS layer verifies the chain (rustls' `WebPkiClientVerifier` with the
//! gateway's client CA) and this provider maps the verified leaf to an identity, refusing a
//! leaf outside its validity window at [`AuthContext::now`] in case the two clocks disagree.
//! Given trust anchors ([`ClientCertificates::with_trust_anchors_pem`]) it also verifies the
//! chain itself, for certificates that arrive some other way (a forwarding proxy), and with
//! revocation lists ([`ClientCertificates::with_trust_anchors_and_crls_pem`]) refuses revoked
//! certificates, failing closed when no current list covers one. Rules are
//! tried in order; the first rule with a matching name wins, and the matched name becomes
//! the subject. No rule matching is [`Error::Unmapped`], never a default identity.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wirewarden_core::{AuthMethod, BoxError, Principal, Timestamp};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{AuthContext, Credential, Error, IdentityProvider, Result};

/// Leaf certificates larger than this are refused before parsing.
const MAX_CERT_LEN: usize = 64 * 1024;

/// Which name in the certificate a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CertField {
    /// The subject's common name(s).
    CommonName,
    /// A DNS subject alternative name.
    SanDns,
    /// A URI subject alternative name (SPIFFE IDs: `spiffe://trust-domain/path`).
    SanUri,
    /// An email (RFC 822) subject alternative name.
    SanEmail,
}

/// One mapping rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRule {
    /// The name to look at.
    pub field: CertField,
    /// The value to match: exact, or a prefix when it ends in `*`
    /// (`spiffe://prod.example/agents/*`). Matching is case-sensitive except for DNS names
    /// and email domains, which are compared in lowercase.
    pub pattern: String,
    /// Groups of the principal.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Attributes of the principal.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl CertRule {
    fn matches(&self, value: &str) -> bool {
        let fold = matches!(self.field, CertField::SanDns | CertField::SanEmail);
        let (value, pattern) = if fold {
            (
                value.to_ascii_lowercase(),
                self.pattern.to_ascii_lowercase(),
            )
        } else {
            (value.to_owned(), self.pattern.clone())
        };
        match pattern.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix) && value.len() > prefix.len(),
            None => value == pattern,
        }
    }
}

/// Configuration of [`ClientCertificates`], as it appears in TOML:
///
/// ```toml
/// [[rules]]
/// field = "san_uri"
/// pattern = "spiffe://prod.example/agents/*"
/// groups = ["agents"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertConfig {
    /// The rules, tried in order.
    pub rules: Vec<CertRule>,
    /// A PEM file of CA certificates; when set, every presented chain is verified against
    /// them ([`ClientCertificates::with_trust_anchors_pem`]).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM files of certificate revocation lists issued by that CA (`ca_file` is required
    /// with them): a certificate they revoke is refused. Revocation fails closed — a
    /// certificate no list covers, or a list past its next update, is refused too
    /// ([`ClientCertificates::with_trust_anchors_and_crls_pem`]).
    #[serde(default)]
    pub crl_files: Vec<std::path::PathBuf>,
}

/// An [`IdentityProvider`] for TLS client certificates.
#[derive(Clone)]
pub struct ClientCertificates {
    rules: Vec<CertRule>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl fmt::Debug for ClientCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificates")
            .field("rules", &self.rules)
            .field("verifies_chain", &self.verifier.is_some())
            .finish()
    }
}

impl ClientCertificates {
    /// Builds the provider.
    ///
    /// # Errors
    /// [`Error::Config`] if a pattern is empty or is a bare `*`, or the CA file is unreadable
    /// or holds no certificate.
    pub fn new(config: ClientCertConfig) -> Result<Self> {
        for r in &config.rules {
            if r.pattern.is_empty() || r.pattern == "*" {
                return Err(Error::config(format!(
                    "certificate rule pattern {:?} would match anything",
                    r.pattern
                )));
            }
        }
        let provider = Self {
            rules: config.rules,
            verifier: None,
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| Error::config(format!("reading {}: {e}", path.display())))
        };
        let mut crls = Vec::with_capacity(config.crl_files.len());
        for path in &config.crl_files {
            crls.push(read(path)?);
        }
        match &config.ca_file {
            None if crls.is_empty() => Ok(provider),
            None => Err(Error::config(
                "crl_files need ca_file: revocation lists are checked against the CA",
            )),
            Some(path) => provider.with_trust_anchors_and_crls_pem(&read(path)?, &crls),
        }
    }

    /// Also verifies each presented chain (leaf first, then intermediates) against the CA
    /// certificates in `pem`, at [`AuthContext::now`], before mapping it.
    ///
    /// # Errors
    /// [`Error::Config`] if the PEM holds no usable CA certificate.
    pub fn with_trust_anchors_pem(self, pem: &[u8]) -> Result<Self> {
        self.with_trust_anchors_and_crls_pem(pem, &[])
    }

    /// As [`with_trust_anchors_pem`](Self::with_trust_anchors_pem), and each chain must
    /// also pass the certificate revocation lists in `crl_pems` (each PEM text may hold
    /// several). With lists given, revocation fails closed: a revoked certificate, a
    /// certificate of the chain that no list from its issuer covers, and a list whose next
    /// update has passed (at [`AuthContext::now`]) all fail verification.
    ///
    /// # Errors
    /// [`Error::Config`] if the CA PEM holds no usable certificate, or a CRL PEM holds no
    /// list or one that cannot be parsed.
    pub fn with_trust_anchors_and_crls_pem(
        mut self,
        pem: &[u8],
        crl_pems: &[Vec<u8>],
    ) -> Result<Self> {
        let mut crls = Vec::new();
        for crl_pem in crl_pems {
            let before = crls.len();
            for crl in rustls_pemfile::crls(&mut &crl_pem[..]) {
                crls.push(crl.map_err(|e| Error::config(format!("reading CRL PEM: {e}")))?);
            }
            if crls.len() == before {
                return Err(Error::config("a CRL PEM holds no revocation list"));
            }
        }
        let mut roots = rustls::RootCertStore::empty();
        let mut reader = pem;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| Error::config(format!("reading CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::config(format!("CA certificate refused: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::config("the CA PEM holds no certificate"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = if crls.is_empty() {
            builder
        } else {
            builder.with_crls(crls).enforce_revocation_expiration()
        };
        let verifier = builder
            .build()
            .map_err(|e| Error::config(format!("client certificate verifier: {e}")))?;
        self.verifier = Some(verifier);
        Ok(self)
    }

    /// Verifies each presented chain with `verifier` (rustls' `ClientCertVerifier`, such as
    /// the one a TLS listener uses) before mapping it, instead of trust anchors of its own:
    /// one verifier shared with the listeners means one set of anchors and revocation lists,
    /// replaced for both at once.
    #[must_use]
    pub fn with_verifier(
        mut self,
        verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Verifies a whole chain (when trust anchors are set) and maps its leaf at `now`.
    ///
    /// # Errors
    /// As [`ClientCertificates::verify`], and [`Error::Untrusted`] if the chain does not
    /// lead to a trust anchor.
    pub fn verify_chain(&self, chain: &[Vec<u8>], now: Timestamp) -> Result<Principal> {
        let leaf = chain.first().ok_or(Error::Missing)?;
        let principal = self.verify(leaf, now)?;
        if let Some(verifier) = &self.verifier {
            let secs = u64::try_from(now.unix_secs())
                .map_err(|_| Error::untrusted("the time is before 1970"))?;
            let intermediates: Vec<_> = chain
                .iter()
                .skip(1)
                .map(|c| rustls::pki_types::CertificateDer::from(c.as_slice()))
                .collect();
            verifier
                .verify_client_cert(
                    &rustls::pki_types::CertificateDer::from(leaf.as_slice()),
                    &intermediates,
                    rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(secs)),
                )
                .map_err(|e| Error::untrusted(e.to_string()))?;
        }
        Ok(principal)
    }

    /// Builds the provider from TOML ([`ClientCertConfig`]).
    ///
    /// # Errors
    /// [`Error::Config`] if the TOML does not parse or [`ClientCertificates::new`] refuses it.
    pub fn from_toml(toml: &str) -> Result<Self> {
        let config: ClientCertConfig =
            toml::from_str(toml).map_err(|e| Error::config(e.to_string()))?;
        Self::new(config)
    }

    /// Maps the leaf certificate `der` at `now`.
    ///
    /// # Errors
    /// [`Error::Missing`] for an empty certificate, [`Error::Malformed`] if it does not
    /// parse, [`Error::Expired`]/[`Error::NotYetValid`] outside its validity,
    /// [`Error::Unmapped`] if no rule matches.
    pub fn verify(&self, der: &[u8], now: Timestamp) -> Result<Principal> {
        if der.is_empty() {
            return Err(Error::Missing);
        }
        if der.len() > MAX_CERT_LEN {
            return Err(Error::malformed("certificate too large"));
        }
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|_| Error::malformed("not a DER X.509 certificate"))?;
        if !rest.is_empty() {
            return Err(Error::malformed("trailing bytes after the certificate"));
        }
        let validity = cert.validity();
        // Timestamps cover 1677–2262; certificates may say 9999-12-31 ("no well-defined
        // expiration", RFC 5280 4.1.2.5), which we read as no expiry.
        let not_before = Timestamp::from_unix_secs(validity.not_before.timestamp());
        let not_after = Timestamp::from_unix_secs(validity.not_after.timestamp());
        if validity.not_after.timestamp() < 0 && not_after.is_none() {
            return Err(Error::malformed("notAfter out of range"));
        }
        if let Some(not_before) = not_before
            && now < not_before
        {
            return Err(Error::NotYetValid { not_before });
        }
        if not_before.is_none() && validity.not_before.timestamp() > 0 {
            return Err(Error::malformed("notBefore out of range"));
        }
        if let Some(not_after) = not_after
            && now > not_after
        {
            return Err(Error::Expired {
                expired_at: not_after,
            });
        }
        let mut names: Vec<(CertField, &str)> = Vec::new();
        for cn in cert.subject().iter_common_name() {
            let cn = cn
                .as_str()
                .map_err(|_| Error::malformed("common name is not a string"))?;
            names.push((CertField::CommonName, cn));
        }
        let san = cert
            .subject_alternative_name()
            .map_err(|_| Error::malformed("invalid subjectAltName extension"))?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => names.push((CertField::SanDns, d)),
                    GeneralName::URI(u) => names.push((CertField::SanUri, u)),
                    GeneralName::RFC822Name(e) => names.push((CertField::SanEmail, e)),
                    _ => {}
                }
            }
        }
        let (rule, subject) = self
            .rules
            .iter()
            .find_map(|r| {
                names
                    .iter()
                    .find(|(f, v)| *f == r.field && r.matches(v))
                    .map(|(_, v)| (r, *v))
            })
            .ok_or(Error::Unmapped)?;
        let fingerprint: String = Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut principal = Principal::new(subject, AuthMethod::ClientCertificate { fingerprint })
            .map_err(|e| Error::malformed(e.to_string()))?;
        principal.groups.clone_from(&rule.groups);
        principal.attributes.clone_from(&rule.attributes);
        principal.authenticated_at = now;
        principal.expires_at = not_after;
        Ok(principal)
    }
}

#[async_trait]
impl IdentityProvider for ClientCertificates {
    async fn authenticate(
        &self,
        credential: &Credential,
        context: &AuthContext,
    ) -> std::result::Result<Principal, BoxError> {
        let Credential::ClientCertificate(chain) = credential else {
            return Err(Error::Unsupported {
                kind: credential.kind(),
            }
            .into());
        };
        Ok(self.verify_chain(chain, context.now())?)
    }

    fn accepts(&self, credential: &Credential) -> bool {
        matches!(credential, Credential::ClientCertificate(_))
    }
}
