//! End to end with TLS on the upstream hop: psql (over TLS to the gateway) through the
//! PostgreSQL proxy to a real PostgreSQL that accepts TCP logins only over TLS
//! (`hostssl`, SCRAM-SHA-256). The gateway logs in with SCRAM-SHA-256-PLUS bound to the
//! upstream's certificate; the upstream itself reports the gateway's session as encrypted.
//!
//! A TLS-intercepting middlebox with a certificate the gateway trusts can read nothing: the
//! gateway's binding names the middlebox's certificate, the real server compares it with
//! its own and refuses the login. If the server also accepts plaintext logins, the
//! middlebox can instead talk plaintext to it; the server then offers no binding, and only
//! a gateway that requires channel binding refuses to log in.
#![cfg(feature = "postgres")]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use wirewarden::Pipeline;
use wirewarden::audit::{VerifyKeys, read_log, verify_dir};
use wirewarden::core::{AuditEventKind, Protocol, Target};
use wirewarden::identity::{StaticToken, StaticTokens, StaticTokensConfig, TokenHash};
use wirewarden::policy::RuleEngine;
use wirewarden::postgres::{
    ChannelBinding, PostgresProxy, PostgresTarget, Secret, ServerTls, UpstreamConfig, UpstreamTls,
};
use wirewarden_testkit::Postgres;

const SEED: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text, ssn text);
INSERT INTO customers VALUES (1, 'Ada Lovelace', '123-45-6789'), (2, 'Alan Turing', '234-56-7890');
";

const POLICY: &str = r#"
[[rule]]
id = "analysts-read"
groups = ["analysts"]
max_class = "read"
action = "allow"
"#;

/// The SSLRequest code, as the first 8 bytes a client sends.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

struct Gateway {
    addr: SocketAddr,
    /// What each served connection ended with.
    ended: mpsc::UnboundedReceiver<wirewarden::Result<()>>,
    audit_dir: tempfile::TempDir,
    keys: VerifyKeys,
    /// The CA file psql trusts for the gateway's own certificate.
    ca: PathBuf,
    _tls_dir: tempfile::TempDir,
}

fn tokens() -> StaticTokens {
    StaticTokens::new(StaticTokensConfig {
        hash_key: None,
        tokens: vec![StaticToken {
            id: "analyst".into(),
            hash: TokenHash::of("tok-analyst", None),
            subject: "analyst-1".into(),
            groups: ["analysts".to_owned()].into(),
            attributes: Default::default(),
            expires_at: None,
        }],
    })
    .unwrap()
}

/// A self-signed certificate for `localhost` and `127.0.0.1`: DER, key and PEM.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (
        ck.cert.der().clone(),
        PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into()),
        ck.cert.pem(),
    )
}

/// A PostgreSQL that accepts TCP logins only over TLS, seeded with customers.
async fn upstream() -> Postgres {
    tokio::task::spawn_blocking(|| {
        Postgres::builder()
            .tls_only()
            .seed_sql(SEED)
            .start()
            .expect("start PostgreSQL with TLS")
    })
    .await
    .unwrap()
}

/// A gateway in front of `upstream_addr` (the real server or a middlebox), logging in as
/// `pg`'s role over TLS, trusting `roots` for the upstream, and terminating TLS from
/// clients with its own certificate. Channel binding is preferred (the default).
async fn gateway(
    pg: &Postgres,
    upstream_addr: SocketAddr,
    roots: &[CertificateDer<'static>],
) -> Gateway {
    gateway_binding(pg, upstream_addr, roots, ChannelBinding::default()).await
}

/// [`gateway`] with this channel binding policy for the upstream login.
async fn gateway_binding(
    pg: &Postgres,
    upstream_addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    channel_binding: ChannelBinding,
) -> Gateway {
    let (audit_dir, keys, sink) = support::audit_trail();
    let engine = Arc::new(RuleEngine::from_toml(POLICY).unwrap());
    let pipeline = Arc::new(
        Pipeline::builder(Arc::new(tokens()), engine)
            .audit(Arc::new(sink))
            .build()
            .unwrap(),
    );
    let upstream = UpstreamConfig {
        addr: upstream_addr.to_string(),
        user: pg.user().to_owned(),
        password: Secret::new(pg.password()),
        database: pg.database().to_owned(),
        tls: Some(
            UpstreamTls::new(
                wirewarden::tls::client_config(roots).unwrap(),
                wirewarden::tls::server_name(pg.tls().map_or("localhost", |t| t.server_name()))
                    .unwrap(),
            )
            .with_channel_binding(channel_binding),
        ),
    };
    let mut target = PostgresTarget::new(Target::new("crm", Protocol::Postgres).unwrap(), upstream);
    let (cert, key, pem) = certificate();
    let tls_dir = tempfile::tempdir().unwrap();
    let ca = tls_dir.path().join("gateway-ca.pem");
    std::fs::write(&ca, pem).unwrap();
    target.tls = Some(ServerTls::new(vec![cert], key).unwrap());
    target.require_tls = true;
    let proxy = PostgresProxy::new(pipeline, target);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, ended) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let (proxy, tx) = (proxy.clone(), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(proxy.serve(stream, Some(peer)).await);
            });
        }
    });
    Gateway {
        addr,
        ended,
        audit_dir,
        keys,
        ca,
        _tls_dir: tls_dir,
    }
}

/// psql through the gateway over TLS, verifying the gateway's certificate; `sql` are
/// separate `-c` commands in one session.
async fn psql(g: &Gateway, sql: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    for s in sql {
        cmd.args(["-c", s]);
    }
    cmd.arg(format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=analyst dbname=app sslmode=verify-full sslrootcert={}",
        g.addr.port(),
        g.ca.display()
    ))
    .env("PGPASSWORD", "tok-analyst")
    .env("PGCONNECT_TIMEOUT", "10")
    .env_remove("PGSSLMODE");
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("psql finished")
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

/// The upstream's authority, as the gateway should trust it.
fn upstream_root(pg: &Postgres) -> CertificateDer<'static> {
    CertificateDer::from(pg.tls().unwrap().ca_der().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_a_tls_only_upstream_with_scram_plus() {
    let pg = upstream().await;
    let mut g = gateway(&pg, pg.addr(), &[upstream_root(&pg)]).await;
    let out = psql(
        &g,
        &[
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            "SELECT current_user",
            "SELECT name, ssn FROM customers ORDER BY id",
        ],
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    // The upstream, asked about the gateway's own session, reports it encrypted.
    assert_eq!(lines.first(), Some(&"t|TLSv1.3"), "{stdout}");
    // The gateway's credential, not the client's.
    assert_eq!(lines.get(1), Some(&pg.user()), "{stdout}");
    // Rows come back through the pipeline, masked.
    assert!(stdout.contains("Ada Lovelace"), "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert!(!stdout.contains("234-56-7890"), "{stdout}");
    let served = tokio::time::timeout(Duration::from_secs(30), g.ended.recv())
        .await
        .expect("the session ended")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");

    // The server's rules allow SCRAM logins over TLS only.
    let hba = pg
        .psql("SELECT DISTINCT type FROM pg_hba_file_rules WHERE 'scram-sha-256' = auth_method")
        .unwrap();
    assert_eq!(hba.trim(), "hostssl");

    let report = verify_dir(g.audit_dir.path(), &g.keys).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let kinds: Vec<AuditEventKind> = read_log(g.audit_dir.path(), &g.keys)
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect();
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::SessionStarted { tls: true, .. })),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_reaches_the_tls_upstream() {
    let pg = upstream().await;
    let g = gateway(&pg, pg.addr(), &[upstream_root(&pg)]).await;
    let script = format!(
        r#"
import psycopg, threading
conn = psycopg.connect(host="localhost", hostaddr="127.0.0.1", port={port}, user="analyst", password="tok-analyst", dbname="app", sslmode="verify-full", sslrootcert="{ca}", autocommit=True)
print("ssl", conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0])
threading.Timer(0.5, conn.cancel).start()
try:
    conn.execute("SELECT pg_sleep(60)")
    print("not cancelled")
except psycopg.errors.QueryCanceled as e:
    print("cancelled", e.sqlstate)
print("then", conn.execute("SELECT 1").fetchone()[0])
"#,
        port = g.addr.port(),
        ca = g.ca.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output(),
    )
    .await
    .expect("python finished")
    .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("ssl True"), "{stdout}");
    assert!(stdout.contains("cancelled 57014"), "{stdout}");
    assert!(stdout.contains("then 1"), "{stdout}");
}

/// Terminates the gateway's TLS with its own certificate (which the gateway trusts) and
/// opens its own TLS connection to the real server, relaying the bytes in between: it sees
/// everything in clear, unless channel binding stops the login.
async fn interceptor(pg: &Postgres) -> (SocketAddr, CertificateDer<'static>) {
    let (cert, key, _) = certificate();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        wirewarden::tls::server_config(vec![cert.clone()], key).unwrap(),
    );
    let connector = tokio_rustls::TlsConnector::from(
        wirewarden::tls::client_config(&[upstream_root(pg)]).unwrap(),
    );
    let server_name = wirewarden::tls::server_name(pg.tls().unwrap().server_name()).unwrap();
    let upstream = pg.addr();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut gw, _)) = listener.accept().await {
            let (acceptor, connector, server_name) =
                (acceptor.clone(), connector.clone(), server_name.clone());
            tokio::spawn(async move {
                let mut req = [0u8; 8];
                gw.read_exact(&mut req).await.unwrap();
                assert_eq!(req, SSL_REQUEST, "the gateway asks for TLS first");
                gw.write_all(b"S").await.unwrap();
                let Ok(mut gw) = acceptor.accept(gw).await else {
                    return;
                };
                let mut up = TcpStream::connect(upstream).await.unwrap();
                up.write_all(&SSL_REQUEST).await.unwrap();
                let mut answer = [0u8; 1];
                up.read_exact(&mut answer).await.unwrap();
                assert_eq!(&answer, b"S");
                let mut up = connector.connect(server_name, up).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut gw, &mut up).await;
            });
        }
    });
    (addr, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_tls_interceptor_cannot_carry_the_upstream_login() {
    let pg = upstream().await;
    let (middlebox, middlebox_cert) = interceptor(&pg).await;
    // The gateway trusts the middlebox's certificate as well as the real authority, as it
    // would if the middlebox held a certificate from a trusted but compromised authority.
    let mut g = gateway(&pg, middlebox, &[upstream_root(&pg), middlebox_cert]).await;
    let out = psql(&g, &["SELECT name FROM customers"]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("wirewarden could not reach the upstream server"),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("Ada"));
    let ended = tokio::time::timeout(Duration::from_secs(30), g.ended.recv())
        .await
        .expect("the session ended")
        .unwrap();
    match ended {
        Err(wirewarden::Error::UpstreamLogin(reason)) => {
            assert!(
                reason.contains("SCRAM channel binding check failed"),
                "{reason}"
            );
        }
        other => panic!("the intercepted login was not refused: {other:?}"),
    }
    // The server logged the refusal on its side.
    assert!(
        pg.log().contains("SCRAM channel binding check failed"),
        "{}",
        pg.log()
    );

    // libpq as a second opinion on the same middlebox: without channel binding it is carried
    // through (so the middlebox is a working relay that reads the session in clear); with
    // channel binding required it is refused exactly as the gateway was.
    let direct = |binding: &'static str| {
        let conninfo = format!(
            "host=localhost hostaddr=127.0.0.1 port={} user={} dbname={} sslmode=require channel_binding={binding}",
            middlebox.port(),
            pg.user(),
            pg.database()
        );
        let password = pg.password().to_owned();
        async move {
            let mut cmd = tokio::process::Command::new("psql");
            cmd.args(["-X", "-A", "-t", "-c", "SELECT count(*) FROM customers"])
                .arg(conninfo)
                .env("PGPASSWORD", password)
                .env("PGCONNECT_TIMEOUT", "10")
                .env_remove("PGSSLMODE");
            tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .expect("psql finished")
                .unwrap()
        }
    };
    let carried = direct("disable").await;
    assert!(carried.status.success(), "{}", text(&carried.stderr));
    assert_eq!(text(&carried.stdout), "2");
    let bound = direct("require").await;
    assert!(!bound.status.success());
    assert!(
        text(&bound.stderr).contains("SCRAM channel binding check failed"),
        "{}",
        text(&bound.stderr)
    );
}

/// The gateway's view of an upstream that must not be trusted with the login.
async fn refused(g: &mut Gateway) -> wirewarden::Error {
    let out = psql(g, &["SELECT 1"]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("wirewarden could not reach the upstream server"),
        "{stderr}"
    );
    tokio::time::timeout(Duration::from_secs(30), g.ended.recv())
        .await
        .expect("the session ended")
        .unwrap()
        .expect_err("the session failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_fallback_and_no_bytes_before_the_handshake() {
    // A real server without TLS answers the SSLRequest with N: the gateway stops there
    // instead of logging in in clear.
    let plain = tokio::task::spawn_blocking(|| {
        Postgres::builder()
            .setting("log_connections", "on")
            .start()
            .unwrap()
    })
    .await
    .unwrap();
    let mut g = gateway(&plain, plain.addr(), &[]).await;
    match refused(&mut g).await {
        wirewarden::Error::Tls(reason) => {
            assert!(reason.contains("does not accept TLS"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The server saw the gateway's TCP connection and never a login on it.
    let log = plain.log();
    assert!(log.contains("connection received: host=127.0.0.1"), "{log}");
    let user = format!("user={}", plain.user());
    assert!(!log.lines().any(|l| l.contains(&user)), "{log}");
    assert!(!log.contains("authentication failed"), "{log}");

    // An upstream (or a man in the middle) that follows its S with bytes of its own, to
    // have them read as if they had come over TLS (CVE-2021-23222): refused, and no
    // password message ever leaves the gateway.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let injector = listener.local_addr().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut gw, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 8];
                if gw.read_exact(&mut req).await.is_err() {
                    return;
                }
                // S, then AuthenticationCleartextPassword in the same write.
                let _ = gw.write_all(b"SR\0\0\0\x08\0\0\0\x03").await;
                let mut after = Vec::new();
                let _ = gw.read_to_end(&mut after).await;
                let _ = seen_tx.send((req, after));
            });
        }
    });
    let mut g = gateway(&plain, injector, &[]).await;
    match refused(&mut g).await {
        wirewarden::Error::Tls(reason) => {
            assert!(reason.contains("before the TLS handshake"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let (req, after) = tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("the gateway hung up")
        .unwrap();
    assert_eq!(req, SSL_REQUEST);
    // Nothing after the SSLRequest, or at most the start of a TLS handshake: never a
    // startup packet or a password ('p').
    assert!(
        after.is_empty() || after.first() == Some(&0x16),
        "{after:?}"
    );
}

/// What a middlebox relayed on one connection, each direction in order.
#[derive(Debug, Default)]
struct Relayed {
    to_server: Vec<u8>,
    to_gateway: Vec<u8>,
}

/// Copies `from` to `to`, recording each chunk before it is passed on.
async fn tap(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    conns: Arc<StdMutex<Vec<Relayed>>>,
    index: usize,
    to_server: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        {
            let mut conns = conns.lock().unwrap();
            let c = &mut conns[index];
            if to_server {
                c.to_server.extend_from_slice(chunk);
            } else {
                c.to_gateway.extend_from_slice(chunk);
            }
        }
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A middlebox that terminates the gateway's TLS with its own certificate (which the
/// gateway trusts) and talks plaintext to the real server, recording every byte of each
/// connection; each connection's index is sent on the channel once both directions ended.
async fn plaintext_interceptor(
    pg: &Postgres,
) -> (
    SocketAddr,
    CertificateDer<'static>,
    Arc<StdMutex<Vec<Relayed>>>,
    mpsc::UnboundedReceiver<usize>,
) {
    let (cert, key, _) = certificate();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        wirewarden::tls::server_config(vec![cert.clone()], key).unwrap(),
    );
    let upstream = pg.addr();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns: Arc<StdMutex<Vec<Relayed>>> = Arc::default();
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let recorded = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut gw, _)) = listener.accept().await {
            let (acceptor, conns, closed_tx) =
                (acceptor.clone(), Arc::clone(&recorded), closed_tx.clone());
            tokio::spawn(async move {
                let mut req = [0u8; 8];
                gw.read_exact(&mut req).await.unwrap();
                assert_eq!(req, SSL_REQUEST, "the gateway asks for TLS first");
                gw.write_all(b"S").await.unwrap();
                let Ok(gw) = acceptor.accept(gw).await else {
                    return;
                };
                // No SSLRequest towards the server: plaintext, which it accepts.
                let up = TcpStream::connect(upstream).await.unwrap();
                let index = {
                    let mut c = conns.lock().unwrap();
                    c.push(Relayed::default());
                    c.len() - 1
                };
                let (gw_read, gw_write) = tokio::io::split(gw);
                let (up_read, up_write) = up.into_split();
                tokio::join!(
                    tap(gw_read, up_write, Arc::clone(&conns), index, true),
                    tap(up_read, gw_write, conns, index, false),
                );
                let _ = closed_tx.send(index);
            });
        }
    });
    (addr, cert, conns, closed)
}

/// The type bytes and bodies of a stream of tagged protocol messages.
fn messages(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let [tag, l0, l1, l2, l3, rest @ ..] = b {
        let len = usize::try_from(u32::from_be_bytes([*l0, *l1, *l2, *l3])).unwrap();
        let body = rest.get(..len - 4).expect("a whole message");
        out.push((*tag, body.to_vec()));
        b = &rest[len - 4..];
    }
    assert!(b.is_empty(), "a partial message: {b:?}");
    out
}

/// The untagged startup packet, then the messages after it.
fn after_startup(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let len = usize::try_from(u32::from_be_bytes(b[..4].try_into().unwrap())).unwrap();
    messages(&b[len..])
}

fn authorized_logins(pg: &Postgres) -> usize {
    pg.log().matches("connection authorized").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_channel_binding_refuses_a_middlebox_that_talks_plaintext_upstream() {
    // TLS on, and plaintext TCP logins (SCRAM-SHA-256) still accepted.
    let pg = tokio::task::spawn_blocking(|| {
        Postgres::builder()
            .tls()
            .setting("log_connections", "on")
            .seed_sql(SEED)
            .start()
            .expect("start PostgreSQL with TLS")
    })
    .await
    .unwrap();
    let hba = pg
        .psql("SELECT DISTINCT type FROM pg_hba_file_rules WHERE 'scram-sha-256' = auth_method")
        .unwrap();
    assert_eq!(hba.trim(), "host");
    let (middlebox, middlebox_cert, relayed, mut closed) = plaintext_interceptor(&pg).await;
    let roots = [upstream_root(&pg), middlebox_cert];

    // Required: the server, reached in plaintext, offers no SCRAM-SHA-256-PLUS, and the
    // gateway hangs up before sending any proof.
    let before = authorized_logins(&pg);
    let mut g = gateway_binding(&pg, middlebox, &roots, ChannelBinding::Require).await;
    match refused(&mut g).await {
        wirewarden::Error::UpstreamLogin(reason) => assert!(
            reason.contains("channel binding required")
                && reason.contains("did not offer SCRAM-SHA-256-PLUS"),
            "{reason}"
        ),
        other => panic!("unexpected {other:?}"),
    }
    let index = tokio::time::timeout(Duration::from_secs(30), closed.recv())
        .await
        .expect("the gateway hung up on the middlebox")
        .unwrap();
    {
        let conns = relayed.lock().unwrap();
        let conn = &conns[index];
        // The startup packet and nothing after it: no SASLInitialResponse, no password.
        let sent = after_startup(&conn.to_server);
        assert!(sent.iter().all(|(tag, _)| *tag == b'X'), "{sent:?}");
        // The server asked for SASL offering plain SCRAM only, and never said Ok.
        let got = messages(&conn.to_gateway);
        let [(b'R', auth)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert_eq!(auth.get(..4), Some(&10u32.to_be_bytes()[..]));
        assert_eq!(auth.get(4..), Some(&b"SCRAM-SHA-256\0\0"[..]));
    }
    // The server was reached, and no login completed on it.
    assert!(pg.log().contains("connection received: host=127.0.0.1"));
    assert_eq!(authorized_logins(&pg), before, "{}", pg.log());

    // Preferred (the default): the same middlebox carries the login and reads the session
    // in clear, queries and rows. This is what `require` is for.
    let mut g = gateway_binding(&pg, middlebox, &roots, ChannelBinding::Prefer).await;
    let out = psql(
        &g,
        &[
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            "SELECT name FROM customers ORDER BY id",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The server, asked about the gateway's session, reports it unencrypted.
    assert_eq!(stdout.lines().next(), Some("f"), "{stdout}");
    let served = tokio::time::timeout(Duration::from_secs(30), g.ended.recv())
        .await
        .expect("the session ended")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
    {
        let conns = relayed.lock().unwrap();
        let seen = |f: fn(&Relayed) -> &[u8], what: &str| {
            conns
                .iter()
                .any(|c| f(c).windows(what.len()).any(|w| w == what.as_bytes()))
        };
        assert!(seen(|c| &c.to_server, "SELECT name FROM customers"));
        assert!(seen(|c| &c.to_gateway, "Ada Lovelace"));
    }
    assert!(authorized_logins(&pg) > before);

    // Required, straight to the server over TLS: bound, and logged in.
    let mut g = gateway_binding(&pg, pg.addr(), &roots, ChannelBinding::Require).await;
    let out = psql(
        &g,
        &["SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "t");
    let served = tokio::time::timeout(Duration::from_secs(30), g.ended.recv())
        .await
        .expect("the session ended")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
}
