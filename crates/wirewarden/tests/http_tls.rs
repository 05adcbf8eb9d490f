//! End to end with TLS on the upstream hop for HTTP: curl through the HTTP proxy to a real
//! hyper server behind tokio-rustls on loopback, with a throwaway authority from the
//! testkit.
//!
//! Between the gateway and that server sits a wire tap that records every byte the gateway
//! sends. It shows what the gateway never does: no request line, path or credential crosses
//! the wire in clear, whether the handshake succeeds (everything after the ClientHello is
//! encrypted) or fails (an untrusted authority, a certificate for another name, a server
//! that does not agree on the application protocol, a server that does not speak TLS at
//! all). Each failure is answered `502 upstream_unavailable`, counted as an upstream
//! failure and recorded with its reason; a target whose origin scheme and TLS settings
//! disagree is refused when the proxy is built.

#![cfg(all(feature = "http", feature = "postgres"))]

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wirewarden::Pipeline;
use wirewarden::audit::{VerifyKeys, verify_dir};
use wirewarden::core::{AuditEvent, AuditEventKind, Decision, Direction, Protocol, Target};
use wirewarden::http::{DEFAULT_HTTP_POLICY, HttpProxy, HttpTarget, Route, Routes};
use wirewarden::identity::{StaticToken, StaticTokens, StaticTokensConfig, TokenHash};
use wirewarden::mask::{Engine, MaskKey, Profile, Strategy};
use wirewarden::policy::RuleEngine;
use wirewarden::postgres::{ChannelBinding, UpstreamTls};
use wirewarden_testkit::{TlsKey, TlsMaterial};

const SSN: &str = "123-45-6789";
const EMAIL: &str = "ada@example.com";
const UPSTREAM_SECRET: &str = "upstream-secret-5d1e";
const AGENT_TOKEN: &str = "tok-agent";

// === the upstream ===

/// What the HTTPS server saw of each request, and over what.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    version: http::Version,
    authorization: Option<String>,
    alpn: Option<Vec<u8>>,
    /// Which TLS connection of the server carried it (numbered from 0).
    connection: usize,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn api(
    req: Request<Incoming>,
    alpn: Option<Vec<u8>>,
    connection: usize,
    log: Log,
) -> Result<Response<Full<Bytes>>, Infallible> {
    log.lock().unwrap().push(Seen {
        path: req.uri().path().to_owned(),
        version: req.version(),
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        alpn,
        connection,
    });
    let body = serde_json::json!({
        "id": 7,
        "email": EMAIL,
        "ssn": SSN,
        "notes": format!("ssn {SSN} on file"),
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap())
}

/// A hyper server (HTTP/1.1 and HTTP/2) behind tokio-rustls, presenting `material`'s
/// server certificate and offering `alpn`.
async fn https_server(material: &TlsMaterial, alpn: &[&str], log: Log) -> SocketAddr {
    let chain = wirewarden::tls::load_certs(material.cert_file()).unwrap();
    let key = wirewarden::tls::key_from_pem(&std::fs::read(material.key_file()).unwrap()).unwrap();
    let mut config = (*wirewarden::tls::server_config(chain, key).unwrap()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let log = log.clone();
            let handshakes = handshakes.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(sock).await else {
                    return;
                };
                let connection = handshakes.fetch_add(1, Ordering::SeqCst);
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let svc = hyper::service::service_fn(move |req| {
                    api(req, alpn.clone(), connection, log.clone())
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A plaintext HTTP/1.1 server that reads what it is sent and answers 400, as one does to
/// a TLS ClientHello.
async fn plaintext_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

// === the wire tap ===

/// Every byte the gateway sent towards the upstream, over all connections.
#[derive(Debug, Default)]
struct Wire {
    bytes: Mutex<Vec<u8>>,
    opened: AtomicUsize,
    /// Connections whose gateway side reached end of stream (or failed).
    closed: AtomicUsize,
}

impl Wire {
    fn contains(&self, needle: &[u8]) -> bool {
        self.bytes
            .lock()
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    }

    /// Waits until every connection the gateway opened has been closed by it, so
    /// everything it sent is on record.
    async fn settled(&self) {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let opened = self.opened.load(Ordering::SeqCst);
                if opened > 0 && self.closed.load(Ordering::SeqCst) == opened {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the gateway closed its upstream connections");
    }

    /// Checks that nothing of the request crossed in clear, and that what did cross
    /// started as TLS (a handshake record).
    fn assert_nothing_in_clear(&self) {
        let bytes = self.bytes.lock().unwrap().clone();
        assert_eq!(
            bytes.first(),
            Some(&0x16),
            "the first byte on the wire is a TLS handshake record"
        );
        drop(bytes);
        // (The ClientHello carries the ALPN name `http/1.1` and the SNI in clear, as TLS
        // does; a request line would carry `HTTP/1.1`.)
        for clear in [
            b"/customers".as_slice(),
            b"HTTP/1.1",
            b"PRI * HTTP/2.0",
            UPSTREAM_SECRET.as_bytes(),
            AGENT_TOKEN.as_bytes(),
        ] {
            assert!(
                !self.contains(clear),
                "{:?} crossed the wire in clear",
                String::from_utf8_lossy(clear)
            );
        }
    }
}

/// A TCP relay to `upstream` that records what the gateway sends.
async fn wire_tap(upstream: SocketAddr) -> (SocketAddr, Arc<Wire>) {
    let wire = Arc::new(Wire::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tap = wire.clone();
    tokio::spawn(async move {
        loop {
            let Ok((gateway, _)) = listener.accept().await else {
                return;
            };
            tap.opened.fetch_add(1, Ordering::SeqCst);
            let tap = tap.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    tap.closed.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let (mut from_gateway, mut to_gateway) = gateway.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_gateway).await;
                    let _ = to_gateway.shutdown().await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match from_gateway.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let chunk = buf.get(..n).unwrap_or_default();
                            tap.bytes.lock().unwrap().extend_from_slice(chunk);
                            if to_server.write_all(chunk).await.is_err() {
                                // The server is gone; keep recording what the gateway
                                // sends until it closes.
                                continue;
                            }
                        }
                    }
                }
                let _ = to_server.shutdown().await;
                tap.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, wire)
}

// === the gateway ===

fn tokens() -> StaticTokens {
    StaticTokens::new(StaticTokensConfig {
        hash_key: None,
        tokens: vec![StaticToken {
            id: "agent".into(),
            hash: TokenHash::of(AGENT_TOKEN, None),
            subject: "agent-1".into(),
            groups: ["agents".to_owned()].into(),
            attributes: BTreeMap::default(),
            expires_at: None,
        }],
    })
    .unwrap()
}

fn pipeline() -> (Arc<Pipeline>, tempfile::TempDir, VerifyKeys) {
    let (audit_dir, keys, sink) = support::audit_trail();
    let policy = format!(
        "{DEFAULT_HTTP_POLICY}
[[rule]]
id = \"agents-read\"
groups = [\"agents\"]
max_class = \"read\"
action = \"allow\"
"
    );
    let masks = Engine::builder()
        .key(MaskKey::new([9; 32]))
        .profile(Profile::builder("api").strategy("email", Strategy::Tokenize))
        .default_profile("api")
        .build()
        .unwrap();
    let pipeline = Pipeline::builder(
        Arc::new(tokens()),
        Arc::new(RuleEngine::from_toml(&policy).unwrap()),
    )
    .masking(Arc::new(masks))
    .audit(Arc::new(sink))
    .build()
    .unwrap();
    (Arc::new(pipeline), audit_dir, keys)
}

/// Trust in `material`'s authority, for a certificate named `name`.
fn trust(material: &TlsMaterial, name: &str) -> UpstreamTls {
    let roots = [CertificateDer::from(material.ca_der().to_vec())];
    UpstreamTls::new(
        wirewarden::tls::client_config(&roots).unwrap(),
        wirewarden::tls::server_name(name).unwrap(),
    )
}

fn target(origin: String, tls: Option<UpstreamTls>, http2: bool) -> HttpTarget {
    let mut t = HttpTarget::new(Target::new("crm-api", Protocol::Http).unwrap(), origin)
        .routes(
            Routes::new().route(Route::new(Some(http::Method::GET), "/customers/{id}").unwrap()),
        )
        .credential(
            header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {UPSTREAM_SECRET}")).unwrap(),
        );
    t.upstream_tls = tls;
    t.upstream_settings.http2 = http2;
    t
}

struct Gateway {
    addr: SocketAddr,
    pipeline: Arc<Pipeline>,
    audit_dir: tempfile::TempDir,
    keys: VerifyKeys,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    /// Stops the proxy, and with it the pool of upstream connections.
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn gateway(target: HttpTarget) -> Gateway {
    let (pipeline, audit_dir, keys) = pipeline();
    let proxy = HttpProxy::new(pipeline.clone(), target).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = proxy.listen(listener).await;
    });
    Gateway {
        addr,
        pipeline,
        audit_dir,
        keys,
        task,
    }
}

impl Gateway {
    /// `GET path` with the agent's token, through curl: the status and the body.
    async fn get(&self, path: &str) -> (u16, String) {
        let args = vec![
            "-sS".to_owned(),
            "--max-time".into(),
            "30".into(),
            "-H".into(),
            format!("Authorization: Bearer {AGENT_TOKEN}"),
            "-w".into(),
            "\n%{http_code}".into(),
            format!("http://{}{path}", self.addr),
        ];
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(args)
                .output()
                .expect("run curl")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = out.rsplit_once('\n').expect("status line");
        (status.parse().expect("status"), body.to_owned())
    }

    /// The audit trail once `done` holds for it (outcomes are recorded when a response
    /// ends, on their own task).
    async fn events_when(&self, done: impl Fn(&[AuditEvent]) -> bool) -> Vec<AuditEvent> {
        support::events_when(&self.pipeline, self.audit_dir.path(), &self.keys, done).await
    }

    fn upstream_failures(&self) -> u64 {
        self.pipeline
            .metrics()
            .upstream_failures
            .load(Ordering::Relaxed)
    }
}

fn completed(events: &[AuditEvent]) -> Vec<(&wirewarden::core::MaskedCounts, Option<&str>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::CommandCompleted { masked, error, .. } => {
                Some((masked, error.as_deref()))
            }
            _ => None,
        })
        .collect()
}

fn upstream_errors(events: &[AuditEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::ProtocolError {
                direction: Direction::FromUpstream,
                error,
            } => Some(error.as_str()),
            _ => None,
        })
        .collect()
}

fn material(dir: &Path, name: &str) -> TlsMaterial {
    TlsMaterial::generate_in(&dir.join(name), TlsKey::EcdsaP256).unwrap()
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_an_https_upstream_masked_audited_and_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = material(dir.path(), "ca");
    let log: Log = Arc::default();
    let server = https_server(&ca, &["h2", "http/1.1"], log.clone()).await;
    let (tap, wire) = wire_tap(server).await;
    let gw = gateway(target(
        format!("https://{tap}"),
        Some(trust(&ca, ca.server_name())),
        false,
    ))
    .await;

    for id in ["7", "8"] {
        let (status, body) = gw.get(&format!("/customers/{id}")).await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(SSN), "{body}");
        assert!(!body.contains(EMAIL), "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], 7);
    }

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert!(s.path.starts_with("/customers/"));
        // The gateway's credential, never the agent's token, inside TLS.
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {UPSTREAM_SECRET}").as_str())
        );
        // Offered both, the server was only asked for HTTP/1.1.
        assert_eq!(s.alpn.as_deref(), Some(b"http/1.1".as_slice()));
        assert_eq!(s.version, http::Version::HTTP_11);
    }

    let events = gw.events_when(|e| completed(e).len() == 2).await;
    for (masked, error) in completed(&events) {
        assert_eq!(error, None);
        assert!(masked.total() >= 2, "{masked:?}");
    }
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        AuditEventKind::CommandDecided {
            decision: Decision::Allow { .. },
            ..
        }
    )));
    assert!(upstream_errors(&events).is_empty());
    assert_eq!(gw.upstream_failures(), 0);
    verify_dir(gw.audit_dir.path(), &gw.keys).unwrap();

    drop(gw);
    wire.settled().await;
    wire.assert_nothing_in_clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstreams_are_agreed_through_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = material(dir.path(), "ca");
    let log: Log = Arc::default();
    let server = https_server(&ca, &["h2", "http/1.1"], log.clone()).await;
    let gw = gateway(target(
        format!("https://{server}"),
        Some(trust(&ca, ca.server_name())),
        true,
    ))
    .await;
    for _ in 0..3 {
        let (status, body) = gw.get("/customers/7").await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(SSN), "{body}");
    }
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.alpn.as_deref(), Some(b"h2".as_slice()));
        assert_eq!(s.version, http::Version::HTTP_2);
        // An HTTP/2 connection is pooled as soon as it is up and shared by every request
        // after it: the pool took the TLS stream for what it is.
        assert_eq!(s.connection, 0, "one TLS connection for every request");
    }
}

/// Sends one request through a gateway whose upstream handshake must fail, and checks
/// what the client, the audit trail, the metrics, the server and the wire saw. Returns the
/// recorded upstream failure and the request's recorded outcome.
async fn refused_upstream(
    server: SocketAddr,
    tls: UpstreamTls,
    http2: bool,
    log: &Log,
) -> (String, String) {
    let (tap, wire) = wire_tap(server).await;
    let gw = gateway(target(format!("https://{tap}"), Some(tls), http2)).await;

    let (status, body) = gw.get("/customers/7").await;
    assert_eq!(status, 502, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{body}");
    assert!(!body.contains(SSN));

    let events = gw
        .events_when(|e| !completed(e).is_empty() && !upstream_errors(e).is_empty())
        .await;
    let errors = upstream_errors(&events);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = errors[0].to_owned();
    assert!(error.contains("target crm-api"), "{error}");
    let outcome = completed(&events);
    let outcome = outcome[0].1.expect("the outcome has an error").to_owned();
    assert!(outcome.starts_with("upstream_unavailable"), "{outcome}");
    assert_eq!(gw.upstream_failures(), 1);
    verify_dir(gw.audit_dir.path(), &gw.keys).unwrap();

    assert!(
        log.lock().unwrap().is_empty(),
        "the server answered a request"
    );
    drop(gw);
    wire.settled().await;
    wire.assert_nothing_in_clear();
    (error, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_authority_is_a_502_audited_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = material(dir.path(), "trusted");
    let other = material(dir.path(), "other");
    let log: Log = Arc::default();
    // The server's certificate is for the right name, from an impostor authority: another
    // throwaway CA under the same distinguished name as the trusted one, so the chain is
    // built and its signature fails to verify.
    let server = https_server(&other, &["http/1.1"], log.clone()).await;
    let (error, outcome) =
        refused_upstream(server, trust(&trusted, "localhost"), false, &log).await;
    for e in [&error, &outcome] {
        assert!(e.contains("not issued by a trusted authority"), "{e}");
        // The verifier's words once, not once per error in the chain.
        assert_eq!(e.matches("invalid peer certificate").count(), 1, "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_a_502_audited_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = material(dir.path(), "ca");
    let log: Log = Arc::default();
    let server = https_server(&ca, &["http/1.1"], log.clone()).await;
    let (error, _) = refused_upstream(server, trust(&ca, "api.internal"), false, &log).await;
    assert!(error.contains("not valid for that name"), "{error}");
    assert!(error.contains("api.internal"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_agree_on_h2_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = material(dir.path(), "ca");
    let log: Log = Arc::default();
    // No ALPN on the server: HTTP/1.1 by default, and the gateway was told to speak h2.
    let server = https_server(&ca, &[], log.clone()).await;
    let (error, _) = refused_upstream(server, trust(&ca, ca.server_name()), true, &log).await;
    assert!(error.contains("selected ALPN protocol none"), "{error}");
    assert!(error.contains("\"h2\" is required"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_server_gets_a_client_hello_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let ca = material(dir.path(), "ca");
    let server = plaintext_server().await;
    let (error, _) =
        refused_upstream(server, trust(&ca, ca.server_name()), false, &Log::default()).await;
    assert!(
        error.contains("the server did not answer in TLS"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tcp_connection_is_an_upstream_failure_too() {
    let dir = tempfile::tempdir().unwrap();
    let ca = material(dir.path(), "ca");
    // A port nothing listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    for (origin, tls) in [
        (
            format!("https://{closed}"),
            Some(trust(&ca, ca.server_name())),
        ),
        (format!("http://{closed}"), None),
    ] {
        let gw = gateway(target(origin.clone(), tls, false)).await;
        let (status, body) = gw.get("/customers/7").await;
        assert_eq!(status, 502, "{body}");
        let events = gw
            .events_when(|e| !completed(e).is_empty() && !upstream_errors(e).is_empty())
            .await;
        let error = upstream_errors(&events)[0];
        assert!(error.contains(&format!("upstream {origin}")), "{error}");
        assert!(error.contains("upstream i/o"), "{error}");
        assert!(!error.contains("tls:"), "{error}");
        assert_eq!(gw.upstream_failures(), 1);
    }
}

#[tokio::test]
async fn origin_scheme_and_tls_settings_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let ca = material(dir.path(), "ca");
    let (pipeline, _audit, _keys) = pipeline();
    let refused = |t: HttpTarget| {
        HttpProxy::new(pipeline.clone(), t)
            .expect_err("refused at construction")
            .to_string()
    };

    let e = refused(target("https://127.0.0.1:1".into(), None, false));
    assert!(e.contains("an https origin needs TLS settings"), "{e}");
    let e = refused(target(
        "http://127.0.0.1:1".into(),
        Some(trust(&ca, "localhost")),
        false,
    ));
    assert!(
        e.contains("TLS settings are given but the origin is not https"),
        "{e}"
    );
    let e = refused(target(
        "https://127.0.0.1:1".into(),
        Some(trust(&ca, "localhost").with_channel_binding(ChannelBinding::Require)),
        false,
    ));
    assert!(e.contains("channel binding"), "{e}");

    // Agreeing settings build, whatever the channel binding preference.
    for binding in [ChannelBinding::Prefer, ChannelBinding::Disable] {
        let t = target(
            "https://127.0.0.1:1".into(),
            Some(trust(&ca, "localhost").with_channel_binding(binding)),
            false,
        );
        HttpProxy::new(pipeline.clone(), t).unwrap();
    }
    HttpProxy::new(
        pipeline.clone(),
        target("http://127.0.0.1:1".into(), None, false),
    )
    .unwrap();
}

/// The connector's errors are typed: an embedder can tell an untrusted authority from a
/// name mismatch, a protocol disagreement and a plaintext server without reading messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_failures_are_typed() {
    use wirewarden_http::upstream::{ConnectError, Upstream, UpstreamError, UpstreamSettings};

    let dir = tempfile::tempdir().unwrap();
    let ca = material(dir.path(), "ca");
    let other = material(dir.path(), "other");
    let log: Log = Arc::default();
    let good = https_server(&ca, &["h2", "http/1.1"], log.clone()).await;
    let impostor = https_server(&other, &["http/1.1"], log.clone()).await;
    let no_alpn = https_server(&ca, &[], log.clone()).await;
    let plaintext = plaintext_server().await;

    let fail = |server: SocketAddr, name: &'static str, http2: bool| {
        let tls = trust(&ca, name);
        async move {
            let mut settings = UpstreamSettings::default();
            settings.http2 = http2;
            let mut up = Upstream::<_, http_body_util::Empty<Bytes>>::https(
                &format!("https://{server}"),
                tls.config,
                tls.server_name,
                &settings,
            )
            .unwrap();
            let req = Request::get("/customers/1")
                .body(http_body_util::Empty::new())
                .unwrap();
            let e: UpstreamError = tower::ServiceExt::oneshot(&mut up, req)
                .await
                .expect_err("the handshake must fail");
            assert!(matches!(e, UpstreamError::Connect(_)), "{e}");
            e
        }
    };
    let e = fail(impostor, "localhost", false).await;
    assert!(
        matches!(
            e.connect_error(),
            Some(ConnectError::UntrustedCertificate { .. })
        ),
        "{e}"
    );
    let e = fail(good, "api.internal", false).await;
    assert!(
        matches!(e.connect_error(), Some(ConnectError::NameMismatch { server_name, .. }) if server_name == "api.internal"),
        "{e}"
    );
    let e = fail(no_alpn, "localhost", true).await;
    assert!(
        matches!(
            e.connect_error(),
            Some(ConnectError::Alpn {
                required: "h2",
                selected: None,
                ..
            })
        ),
        "{e}"
    );
    let e = fail(plaintext, "localhost", false).await;
    assert!(
        matches!(e.connect_error(), Some(ConnectError::NotTls { .. })),
        "{e}"
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "a server answered a request"
    );
}
