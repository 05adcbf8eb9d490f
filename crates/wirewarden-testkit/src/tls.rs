//! Throwaway TLS material for the servers the testkit starts: a certificate authority made
//! for one server alone, the server certificate it issues for `localhost` and `127.0.0.1`,
//! and a client certificate for servers that ask for one, written where the server reads
//! them. A client that trusts that authority
//! trusts that one server and nothing else; nothing outlives the server's directory.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The key type of a TLS-enabled server's certificate authority and server certificate.
///
/// The authority signs the server certificate with its own key, so this also fixes the
/// certificate's signature algorithm, from which SCRAM's `tls-server-end-point` channel
/// binding (RFC 5929) takes its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsKey {
    /// ECDSA on P-256, certificates signed with ECDSA-SHA256: the binding hashes with
    /// SHA-256.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384, certificates signed with ECDSA-SHA384: the binding hashes with
    /// SHA-384.
    EcdsaP384,
}

impl TlsKey {
    fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            TlsKey::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            TlsKey::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

/// The authority's name and uses: what it signs with, and what a revocation list it signs
/// names as its issuer.
/// The client certificates' parameters: the common name `wirewarden-testkit client`, for
/// client authentication.
fn client_params() -> std::result::Result<rcgen::CertificateParams, rcgen::Error> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, "wirewarden-testkit client");
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(client)
}

fn ca_params() -> std::result::Result<rcgen::CertificateParams, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "wirewarden-testkit throwaway CA");
    Ok(ca)
}

/// The serial number of the client certificate, so a revocation list can name it.
const CLIENT_SERIAL: u64 = 0x5157_0001;

/// The TLS material of a server started with TLS (`PostgresBuilder::tls`,
/// `RedisBuilder::tls`): a throwaway certificate authority made for this server alone, and
/// the server certificate it issued for `localhost` and `127.0.0.1`. A client that trusts
/// [`ca_der`](Self::ca_der) (or the file [`ca_file`](Self::ca_file), e.g. as libpq's
/// `sslrootcert` or redis-cli's `--cacert`) trusts this server and nothing else. The server's
/// private key stays with the server. The same authority also issued a client certificate
/// ([`client_cert_der`](Self::client_cert_der) and [`client_key_der`](Self::client_key_der))
/// for a client to present to a server that demands one.
#[derive(Clone)]
pub struct TlsMaterial {
    key: TlsKey,
    ca_pem: String,
    ca_der: Vec<u8>,
    cert_pem: String,
    cert_der: Vec<u8>,
    client_cert_der: Vec<u8>,
    client_key_der: Vec<u8>,
    /// The authority's key, PEM: a throwaway made for this material, kept to sign
    /// revocation lists.
    ca_key_pem: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_cert_file: PathBuf,
    client_key_file: PathBuf,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("key", &self.key)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("client_cert_file", &self.client_cert_file)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Generates the authority and the server certificate and writes them, with the server
    /// key (mode 0600, as PostgreSQL demands), into `dir`, which must not exist yet; with
    /// `owner`, everything is handed to that uid and gid (the server's account).
    pub(crate) fn generate(key: TlsKey, dir: &Path, owner: Option<(u32, u32)>) -> Result<Self> {
        use rcgen::{
            CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair,
            KeyUsagePurpose, SanType,
        };
        use std::os::unix::fs::PermissionsExt;

        let bad = |e: rcgen::Error| Error::Certificate {
            reason: e.to_string(),
        };
        let ca = ca_params().map_err(bad)?;
        let ca_key = KeyPair::generate_for(key.algorithm()).map_err(bad)?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(bad)?;

        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).map_err(bad)?;
        leaf.subject_alt_names
            .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate_for(key.algorithm()).map_err(bad)?;
        let cert = leaf.signed_by(&leaf_key, &ca).map_err(bad)?;

        let mut client = client_params().map_err(bad)?;
        client.serial_number = Some(rcgen::SerialNumber::from(CLIENT_SERIAL));
        let client_key = KeyPair::generate_for(key.algorithm()).map_err(bad)?;
        let client_cert = client.signed_by(&client_key, &ca).map_err(bad)?;

        fs::create_dir(dir).map_err(|e| Error::io("creating the TLS directory", e))?;
        let ca_file = dir.join("ca.crt");
        let cert_file = dir.join("server.crt");
        let key_file = dir.join("server.key");
        let client_cert_file = dir.join("client.crt");
        let client_key_file = dir.join("client.key");
        fs::write(&ca_file, ca.pem()).map_err(|e| Error::io("writing the CA certificate", e))?;
        fs::write(&cert_file, cert.pem())
            .map_err(|e| Error::io("writing the server certificate", e))?;
        fs::write(&client_cert_file, client_cert.pem())
            .map_err(|e| Error::io("writing the client certificate", e))?;
        for (path, pem) in [
            (&key_file, leaf_key.serialize_pem()),
            (&client_key_file, client_key.serialize_pem()),
        ] {
            // Created with 0600 before the key is written, so it is never readable by others.
            let mut key_out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::io("creating a key file", e))?;
            key_out
                .write_all(pem.as_bytes())
                .map_err(|e| Error::io("writing a key", e))?;
            drop(key_out);
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io("restricting a key file", e))?;
        }
        if let Some((uid, gid)) = owner {
            for p in [dir, &ca_file, &cert_file, &key_file] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| {
                    Error::io(format!("handing {} to the server's user", p.display()), e)
                })?;
            }
        }
        Ok(Self {
            key,
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            client_cert_der: client_cert.der().to_vec(),
            client_key_der: client_key.serialize_der(),
            ca_key_pem,
            ca_file,
            cert_file,
            key_file,
            client_cert_file,
            client_key_file,
        })
    }

    /// Generates a fresh authority, server and client certificate into `dir`, which must not
    /// exist yet, for a server a test runs itself (an HTTPS server on loopback, say).
    ///
    /// # Errors
    /// [`Error::Certificate`] if generation fails, [`Error::Io`] if a file cannot be
    /// written.
    pub fn generate_in(dir: &Path, key: TlsKey) -> Result<Self> {
        Self::generate(key, dir, None)
    }

    /// The server certificate's file, PEM, for the server's configuration.
    #[must_use]
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The server key's file, PEM (mode 0600), for the server's configuration.
    #[must_use]
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The key type of the authority and the server certificate.
    #[must_use]
    pub fn key(&self) -> TlsKey {
        self.key
    }

    /// The certificate authority, PEM.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The certificate authority, DER: the one root a client should trust.
    #[must_use]
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// A file holding [`ca_pem`](Self::ca_pem), for clients that take a path (libpq's
    /// `sslrootcert`, redis-cli's `--cacert`). Removed with the server.
    #[must_use]
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The server certificate, PEM.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The server certificate, DER, exactly as the server presents it in the handshake
    /// (and so the input of the `tls-server-end-point` channel binding).
    #[must_use]
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A client certificate issued by the same authority (extended key usage
    /// `clientAuth`), DER, for a server that demands one.
    #[must_use]
    pub fn client_cert_der(&self) -> &[u8] {
        &self.client_cert_der
    }

    /// A certificate revocation list signed by this authority, PEM. It lists the client
    /// certificate when `revoke_client`, and is current (next update in 2200) unless
    /// `stale` (next update in 2021, long passed), for testing a verifier that must refuse a
    /// revoked certificate and a list nobody refreshed.
    ///
    /// # Errors
    /// [`Error::Certificate`] if signing fails.
    pub fn crl_pem(&self, revoke_client: bool, stale: bool) -> Result<String> {
        use rcgen::{
            CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevocationReason,
            RevokedCertParams, SerialNumber, date_time_ymd,
        };
        let bad = |e: rcgen::Error| Error::Certificate {
            reason: e.to_string(),
        };
        let key = KeyPair::from_pem(&self.ca_key_pem).map_err(bad)?;
        let issuer = Issuer::new(ca_params().map_err(bad)?, key);
        let revoked_certs = if revoke_client {
            vec![RevokedCertParams {
                serial_number: SerialNumber::from(CLIENT_SERIAL),
                revocation_time: date_time_ymd(2021, 1, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }]
        } else {
            Vec::new()
        };
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(if stale { 2021 } else { 2200 }, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&issuer).map_err(bad)?.pem().map_err(bad)
    }

    /// Another client certificate from the same authority and with the same common name as
    /// the material's own, valid from a minute ago until `valid_for` from now: for testing
    /// what happens when a certificate's validity ends while its connection is open.
    /// Written into `dir` as `<name>.crt` and `<name>.key` (mode 0600); returns the two
    /// paths.
    ///
    /// # Errors
    /// [`Error::Certificate`] if signing fails, [`Error::Io`] if a file cannot be written.
    pub fn short_lived_client(
        &self,
        dir: &Path,
        name: &str,
        valid_for: std::time::Duration,
    ) -> Result<(PathBuf, PathBuf)> {
        use rcgen::{Issuer, KeyPair, date_time_ymd};
        use std::os::unix::fs::OpenOptionsExt;
        let bad = |e: rcgen::Error| Error::Certificate {
            reason: e.to_string(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| Error::Certificate {
                reason: format!("the clock is before 1970: {e}"),
            })?;
        let epoch = date_time_ymd(1970, 1, 1);
        let issuer = Issuer::new(
            ca_params().map_err(bad)?,
            KeyPair::from_pem(&self.ca_key_pem).map_err(bad)?,
        );
        let mut client = client_params().map_err(bad)?;
        client.not_before = epoch + now.saturating_sub(std::time::Duration::from_secs(60));
        client.not_after = epoch + now + valid_for;
        let key = KeyPair::generate_for(self.key.algorithm()).map_err(bad)?;
        let cert = client.signed_by(&key, &issuer).map_err(bad)?;
        let crt = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        fs::write(&crt, cert.pem()).map_err(|e| Error::io("writing a client certificate", e))?;
        // Created with 0600 before the key is written, so it is never readable by others.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .and_then(|mut f| f.write_all(key.serialize_pem().as_bytes()))
            .map_err(|e| Error::io("writing a client key", e))?;
        Ok((crt, key_file))
    }

    /// The client certificate's private key, PKCS#8 DER.
    #[must_use]
    pub fn client_key_der(&self) -> &[u8] {
        &self.client_key_der
    }

    /// A file holding the client certificate, PEM (redis-cli's `--cert`).
    #[must_use]
    pub fn client_cert_file(&self) -> &Path {
        &self.client_cert_file
    }

    /// A file holding the client certificate's key, PEM, mode 0600 (redis-cli's `--key`).
    #[must_use]
    pub fn client_key_file(&self) -> &Path {
        &self.client_key_file
    }

    /// The DNS name the server certificate is issued for (`localhost`); it also carries
    /// the IP address `127.0.0.1`.
    #[must_use]
    pub fn server_name(&self) -> &'static str {
        "localhost"
    }
}
