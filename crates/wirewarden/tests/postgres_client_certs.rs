//! Agents identified by TLS client certificates at the PostgreSQL listener: a throwaway CA
//! issues the gateway's server certificate and the agents' client certificates, psql logs in
//! with `sslcert`/`sslkey` and no password, and the identity crate's `ClientCertificates`
//! maps the verified chain to a principal. A real PostgreSQL (wirewarden-testkit) is the
//! upstream.
#![cfg(feature = "postgres")]

mod support;
use support::{Interactive, assert_verifies, events, text};

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use wirewarden::Pipeline;
use wirewarden::audit::VerifyKeys;
use wirewarden::core::{AuditEventKind, AuthMethod, Protocol, Target};
use wirewarden::identity::{CertField, Chain};
use wirewarden::policy::RuleEngine;
use wirewarden::postgres::{
    ClientCertMode, PostgresProxy, PostgresTarget, Secret, ServerTls, UpstreamConfig,
};
use wirewarden::tls::ClientCertVerification;
use wirewarden_testkit::Postgres;

const SEED: &str = "CREATE TABLE widgets (id int PRIMARY KEY, name text);
INSERT INTO widgets VALUES (1, 'sprocket');";

const POLICY: &str = r#"
[[rule]]
id = "agents-read"
groups = ["agents"]
max_class = "read"
action = "allow"
"#;

const AGENT_URI: &str = "spiffe://prod.example/agents/agent-7";

/// A CA and the files psql reads.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca }
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// The gateway's certificate, for `localhost` and `127.0.0.1`.
    fn server_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    /// A client certificate with this common name and URI SAN, written as `<file>.crt` and
    /// `<file>.key` (mode 0600, as libpq insists); returns the two paths.
    fn client(&self, file: &str, cn: &str, uri: &str) -> (PathBuf, PathBuf) {
        self.numbered_client(file, cn, uri, None)
    }

    /// As `client`, with a chosen serial number (for a revocation list to name).
    fn numbered_client(
        &self,
        file: &str,
        cn: &str,
        uri: &str,
        serial: Option<u64>,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.serial_number = serial.map(rcgen::SerialNumber::from);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let crt = self.dir.path().join(format!("{file}.crt"));
        let pem_key = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&pem_key, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&pem_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        (crt, pem_key)
    }
}

impl Pki {
    /// Two agents' certificates (paths as `client` returns them): `agent-7`, serial 71,
    /// which the tests' lists leave alone, and `agent-8`, serial 72, which they revoke.
    fn kept_and_gone(&self) -> ((PathBuf, PathBuf), (PathBuf, PathBuf)) {
        let kept = self.numbered_client("kept", "agent-7", AGENT_URI, Some(71));
        let gone = self.numbered_client(
            "gone",
            "agent-8",
            "spiffe://prod.example/agents/agent-8",
            Some(72),
        );
        (kept, gone)
    }

    /// A current revocation list from this CA naming the serial numbers `revoked`.
    fn crl(&self, revoked: &[u64]) -> Vec<CertificateRevocationListDer<'static>> {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2200, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        vec![params.signed_by(&self.ca).unwrap().der().clone()]
    }
}

struct Gateway {
    _pg: Postgres,
    addr: SocketAddr,
    audit_dir: tempfile::TempDir,
    keys: VerifyKeys,
    _task: tokio::task::JoinHandle<()>,
}

fn identity() -> Chain {
    support::agents(
        CertField::SanUri,
        "spiffe://prod.example/agents/*",
        &[("batch", "tok-batch", "batch-job")],
    )
}

async fn gateway(pki: &Pki, mode: ClientCertMode) -> Gateway {
    gateway_with(pki, mode, &[]).await
}

async fn gateway_with(
    pki: &Pki,
    mode: ClientCertMode,
    crls: &[CertificateRevocationListDer<'static>],
) -> Gateway {
    let verification = ClientCertVerification::new(&[pki.ca_der()], crls).unwrap();
    gateway_verifying(pki, mode, verification, false).await
}

/// A gateway whose listener verifies client certificates with `verification`; with
/// `watch`, the pipeline also ends open sessions whose certificate replaced lists refuse.
async fn gateway_verifying(
    pki: &Pki,
    mode: ClientCertMode,
    verification: Arc<ClientCertVerification>,
    watch: bool,
) -> Gateway {
    let pg = tokio::task::spawn_blocking(|| Postgres::builder().seed_sql(SEED).start().unwrap())
        .await
        .unwrap();
    let (audit_dir, keys, sink) = support::audit_trail();
    let engine = Arc::new(RuleEngine::from_toml(POLICY).unwrap());
    let mut builder = Pipeline::builder(Arc::new(identity()), engine);
    if watch {
        builder = builder.client_cert_verification(verification.clone());
    }
    let pipeline = Arc::new(builder.audit(Arc::new(sink)).build().unwrap());
    let upstream = UpstreamConfig {
        addr: pg.addr().to_string(),
        user: pg.user().to_owned(),
        password: Secret::new(pg.password()),
        database: pg.database().to_owned(),
        tls: None,
    };
    let (chain, key) = pki.server_identity();
    let tls = ServerTls::with_client_cert_verification(chain, key, verification, mode).unwrap();
    let mut target = PostgresTarget::new(
        Target::new("inventory", Protocol::Postgres).unwrap(),
        upstream,
    );
    target.require_tls = true;
    target.tls = Some(tls);
    let proxy = PostgresProxy::new(pipeline, target);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = proxy.listen(listener).await;
    });
    Gateway {
        _pg: pg,
        addr,
        audit_dir,
        keys,
        _task: task,
    }
}

/// psql through the gateway with `sslmode=verify-full` against `root`; a client certificate
/// when `cert` is given (otherwise a path that does not exist, so none is sent), a password
/// only when `password` is given, and `-w` so a password request fails rather than prompts.
async fn psql(
    addr: SocketAddr,
    root: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
    password: Option<&str>,
    sql: &str,
) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    let none = scratch.path().join("none");
    let (crt, key) = match cert {
        Some((c, k)) => (c.clone(), k.clone()),
        None => (none.join("client.crt"), none.join("client.key")),
    };
    let conninfo = format!(
        "host=127.0.0.1 port={} user=agent dbname=app sslmode=verify-full \
         sslrootcert={} sslcert={} sslkey={} connect_timeout=10",
        addr.port(),
        root.display(),
        crt.display(),
        key.display(),
    );
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-w", "-d", &conninfo, "-c", sql])
        .env("HOME", scratch.path())
        .env_remove("PGPASSWORD")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLCERT")
        .env_remove("PGSSLKEY");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("psql finished")
        .unwrap()
}

/// psql with `cert` (or none) and a valid token as password is refused, and never asked
/// for that password: the refusal comes in the handshake.
async fn refused_without_password(g: &Gateway, pki: &Pki, cert: Option<&(PathBuf, PathBuf)>) {
    let out = psql(g.addr, &pki.ca_pem(), cert, Some("tok-batch"), "SELECT 1").await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(!err.contains("password"), "{err}");
}

fn sessions(kinds: &[AuditEventKind]) -> usize {
    kinds
        .iter()
        .filter(|k| matches!(k, AuditEventKind::SessionStarted { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_without_a_password() {
    let pki = Pki::new("wirewarden test CA");
    let agent = pki.client("agent", "agent-7", AGENT_URI);
    let g = gateway(&pki, ClientCertMode::Required).await;

    let out = psql(
        g.addr,
        &pki.ca_pem(),
        Some(&agent),
        None,
        "SELECT name FROM widgets WHERE id = 1",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "sprocket");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let kinds = events(g.audit_dir.path(), &g.keys);
    let started = kinds
        .iter()
        .find_map(|k| match k {
            AuditEventKind::SessionStarted { principal, tls, .. } => Some((principal, *tls)),
            _ => None,
        })
        .expect("a session was recorded");
    assert!(started.1, "the session ran over TLS");
    assert_eq!(started.0.subject, AGENT_URI);
    assert!(started.0.groups.contains("agents"));
    match &started.0.auth {
        AuthMethod::ClientCertificate { fingerprint } => {
            assert_eq!(fingerprint.len(), 64);
            assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        other => panic!("expected a certificate login, got {other:?}"),
    }
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::AuthenticationFailed { .. }))
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_refuses_other_cas_and_missing_certificates_at_the_handshake() {
    let pki = Pki::new("wirewarden test CA");
    let rogue = Pki::new("another CA");
    let forged = rogue.client("forged", "agent-7", AGENT_URI);
    let g = gateway(&pki, ClientCertMode::Required).await;

    // Same names, wrong issuer: the TLS handshake fails before any login message.
    refused_without_password(&g, &pki, Some(&forged)).await;

    // No certificate at all, even with a valid token: refused in the handshake too.
    refused_without_password(&g, &pki, None).await;

    // Both refusals are failed logins on record, with rustls' reason.
    let failures = handshake_failures(&g, 2).await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures.iter().any(|f| f.contains("UnknownIssuer")),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|f| f == "no client certificate presented"),
        "{failures:?}"
    );
    assert_eq!(sessions(&events(g.audit_dir.path(), &g.keys)), 0);
}

/// The reasons of the failed certificate logins on record, once there are `n` of them. A
/// refused handshake reaches the client as a TLS alert, possibly before the gateway's
/// record is written, so this polls (a bounded number of times, no timing asserted).
async fn handshake_failures(g: &Gateway, n: usize) -> Vec<String> {
    let mut failures = Vec::new();
    for _ in 0..100 {
        failures = events(g.audit_dir.path(), &g.keys)
            .into_iter()
            .filter_map(|k| match k {
                AuditEventKind::AuthenticationFailed { method, reason, .. }
                    if method == "client_certificate" =>
                {
                    Some(reason)
                }
                _ => None,
            })
            .collect();
        if failures.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    failures
}

/// A revocation list withdraws one agent's certificate before it expires: the handshake
/// refuses it (the client sees a TLS alert, no password prompt), the refusal is on record,
/// and an agent whose certificate the list does not name logs in as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_at_the_handshake_and_on_record() {
    let pki = Pki::new("wirewarden test CA");
    let (kept, gone) = pki.kept_and_gone();
    let g = gateway_with(&pki, ClientCertMode::Required, &pki.crl(&[72])).await;
    let out = psql(g.addr, &pki.ca_pem(), Some(&kept), None, "SELECT 1").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1");
    refused_without_password(&g, &pki, Some(&gone)).await;
    let failures = handshake_failures(&g, 1).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("Revoked"), "{failures:?}");
    assert_verifies(g.audit_dir.path(), &g.keys);
    assert_eq!(sessions(&events(g.audit_dir.path(), &g.keys)), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_session_ends_when_its_certificate_is_revoked() {
    let pki = Pki::new("wirewarden test CA");
    let (kept, gone) = pki.kept_and_gone();
    let verification = ClientCertVerification::new(&[pki.ca_der()], &pki.crl(&[])).unwrap();
    let g = gateway_verifying(&pki, ClientCertMode::Required, verification.clone(), true).await;
    let connect = |(crt, key): &(PathBuf, PathBuf)| {
        format!(
            "import psycopg\nc = psycopg.connect('host=127.0.0.1 port={} user=agent dbname=app sslmode=verify-full sslrootcert={} sslcert={} sslkey={} connect_timeout=10')",
            g.addr.port(),
            pki.ca_pem().display(),
            crt.display(),
            key.display()
        )
    };
    let mut kept = Interactive::start(&connect(&kept), &[]).await;
    let mut gone = Interactive::start(&connect(&gone), &[]).await;
    const NAME: &str = "c.execute('SELECT name FROM widgets WHERE id = 1').fetchone()[0]";
    for client in [&mut kept, &mut gone] {
        assert_eq!(client.eval(NAME).await, "sprocket");
    }
    // psycopg opened a transaction with that SELECT; it stays open.
    assert_eq!(gone.eval("c.info.transaction_status.name").await, "INTRANS");

    // New lists that still accept both certificates change nothing.
    verification.replace_crls(&pki.crl(&[])).unwrap();
    for client in [&mut kept, &mut gone] {
        assert_eq!(client.eval(NAME).await, "sprocket");
    }

    // Revoking one ends its session at once, with no statement from its client; the other
    // goes on.
    verification.replace_crls(&pki.crl(&[72])).unwrap();
    let kinds = support::kinds_when(g.audit_dir.path(), &g.keys, |kinds| {
        !support::revoked_sessions(kinds).is_empty()
    })
    .await;
    let ended = support::revoked_sessions(&kinds);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(ended[0].contains("Revoked"), "{ended:?}");
    // The client reads the server-style FATAL (28000) the gateway sent as it closed.
    let after = gone.eval(NAME).await;
    assert!(
        after.starts_with("ERROR InvalidAuthorizationSpecification")
            && after.contains("no longer accepted"),
        "{after}"
    );
    assert_eq!(gone.eval("c.closed").await, "True");
    assert_eq!(kept.eval(NAME).await, "sprocket");
    kept.finish().await;
    gone.finish().await;

    assert_verifies(g.audit_dir.path(), &g.keys);
    let kinds = events(g.audit_dir.path(), &g.keys);
    assert_eq!(sessions(&kinds), 2, "{kinds:?}");
    assert_eq!(support::revoked_sessions(&kinds).len(), 1, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_falls_back_to_the_token_only_without_a_certificate() {
    let pki = Pki::new("wirewarden test CA");
    let agent = pki.client("agent", "agent-7", AGENT_URI);
    let g = gateway(&pki, ClientCertMode::Optional).await;

    // No certificate: the token as password logs in.
    let out = psql(
        g.addr,
        &pki.ca_pem(),
        None,
        Some("tok-batch"),
        "SELECT name FROM widgets WHERE id = 1",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "sprocket");

    // No certificate and no password: the password request cannot be answered.
    let out = psql(g.addr, &pki.ca_pem(), None, None, "SELECT 1").await;
    assert!(!out.status.success());

    // A certificate still logs in by itself.
    let out = psql(g.addr, &pki.ca_pem(), Some(&agent), None, "SELECT 1").await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    tokio::time::sleep(Duration::from_millis(100)).await;
    let subjects: Vec<(String, &'static str)> = events(g.audit_dir.path(), &g.keys)
        .iter()
        .filter_map(|k| match k {
            AuditEventKind::SessionStarted { principal, .. } => {
                Some((principal.subject.clone(), principal.auth.name()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        subjects,
        vec![
            ("batch-job".to_owned(), "static_token"),
            (AGENT_URI.to_owned(), "client_certificate"),
        ]
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_certificate_is_refused_with_no_password_step() {
    let pki = Pki::new("wirewarden test CA");
    let stranger = pki.client(
        "stranger",
        "printer-3",
        "spiffe://prod.example/devices/printer-3",
    );
    for mode in [ClientCertMode::Optional, ClientCertMode::Required] {
        let g = gateway(&pki, mode).await;
        // The token is offered too: it must never be asked for once a certificate failed.
        let out = psql(
            g.addr,
            &pki.ca_pem(),
            Some(&stranger),
            Some("tok-batch"),
            "SELECT 1",
        )
        .await;
        assert!(!out.status.success(), "{mode:?}");
        let err = text(&out.stderr);
        assert!(err.contains("certificate authentication failed"), "{err}");

        tokio::time::sleep(Duration::from_millis(100)).await;
        let kinds = events(g.audit_dir.path(), &g.keys);
        assert_eq!(sessions(&kinds), 0, "{mode:?}");
        let failed: Vec<_> = kinds
            .iter()
            .filter_map(|k| match k {
                AuditEventKind::AuthenticationFailed { method, .. } => Some(method.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(failed, vec!["client_certificate"], "{mode:?}");
        assert_verifies(g.audit_dir.path(), &g.keys);
    }
}

/// Logs in over raw TLS with the client certificate in `cert`, and returns the first
/// message the gateway answers the startup with: its type byte and body.
async fn raw_login(
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    cert: &(PathBuf, PathBuf),
) -> (u8, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut &std::fs::read(&cert.0).unwrap()[..])
            .collect::<Result<_, _>>()
            .unwrap();
    let key = rustls_pemfile::private_key(&mut &std::fs::read(&cert.1).unwrap()[..])
        .unwrap()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();

    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", "agent"), ("database", "app")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = u32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    startup.extend_from_slice(&body);
    tls.write_all(&startup).await.unwrap();

    let mut header = [0u8; 5];
    tls.read_exact(&mut header).await.unwrap();
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let mut rest = vec![0u8; usize::try_from(len).unwrap() - 4];
    tls.read_exact(&mut rest).await.unwrap();
    (header[0], rest)
}

/// The value of field `code` in an ErrorResponse body.
fn error_field(body: &[u8], code: u8) -> Option<String> {
    body.split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .find(|f| f.first() == Some(&code))
        .map(|f| String::from_utf8_lossy(f.get(1..).unwrap_or_default()).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_shows_28000_and_no_password_request_for_a_refused_certificate() {
    let pki = Pki::new("wirewarden test CA");
    let stranger = pki.client(
        "stranger",
        "printer-3",
        "spiffe://prod.example/devices/printer-3",
    );
    let agent = pki.client("agent", "agent-7", AGENT_URI);
    let g = gateway(&pki, ClientCertMode::Optional).await;

    // Refused: the first answer to the startup is the error, not an authentication request.
    let (kind, body) = raw_login(g.addr, pki.ca_der(), &stranger).await;
    assert_eq!(kind, b'E', "{body:?}");
    assert_eq!(error_field(&body, b'C').as_deref(), Some("28000"));

    // Accepted: the first answer is AuthenticationOk (`R`, code 0), with no request between.
    let (kind, body) = raw_login(g.addr, pki.ca_der(), &agent).await;
    assert_eq!(kind, b'R');
    assert_eq!(body, vec![0, 0, 0, 0]);
}
