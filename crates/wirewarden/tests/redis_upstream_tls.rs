//! End to end with TLS on the upstream hop for Redis: redis-cli through the Redis proxy to a
//! real redis-server that listens for TLS only (`port 0`, `tls-port`). The gateway verifies
//! the server's certificate against the authority it was given, for the name it was given,
//! and only then sends `AUTH` with its own credential, inside TLS.
//!
//! Redis has no per-connection "ssl" flag to ask for, so encryption is proven by the
//! server's shape: it has no plaintext listener, and the gateway's own upstream connection
//! (`CLIENT INFO`, asked through the gateway) is on the TLS port under the gateway's user.
//! When the certificate is not trusted, or not for the expected name, the client gets an
//! `-ERR`, the server counts no `AUTH` at all, and an upstream that speaks plaintext gets
//! the TLS ClientHello and nothing else: no fallback. An upstream that never answers the
//! ClientHello (a plaintext redis-server waiting for a newline) is given up after the
//! target's login timeout instead of holding the client.
//!
//! An upstream that demands a client certificate (`tls-auth-clients yes`) gets the one in
//! the rustls configuration an embedder hands to [`UpstreamTls::new`]; without one, the
//! server ends the handshake and executes no `AUTH`.
#![cfg(feature = "redis")]

mod support;

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wirewarden::Pipeline;
use wirewarden::Secret;
use wirewarden::audit::{VerifyKeys, read_log, verify_dir};
use wirewarden::core::{AuditEventKind, Protocol, Target};
use wirewarden::identity::{StaticToken, StaticTokens, StaticTokensConfig, TokenHash};
use wirewarden::mask::{Engine, FieldRule, Profile, Selector, Strategy};
use wirewarden::policy::RuleEngine;
use wirewarden::redis::{DEFAULT_REDIS_POLICY, RedisProxy, RedisTarget, RedisUpstream};
use wirewarden::tls::UpstreamTls;
use wirewarden_testkit::Redis;

const CARD: &str = "4111 1111 1111 1111";
const SSN: &str = "123-45-6789";
const API_KEY: &str = "hunter2-not-a-pattern";

const UPSTREAM_DOWN_REPLY: &[u8] = b"-ERR wirewarden could not reach the upstream server\r\n";

struct Gateway {
    addr: SocketAddr,
    /// What each served connection ended with.
    ended: mpsc::UnboundedReceiver<wirewarden::Result<()>>,
    audit_dir: tempfile::TempDir,
    keys: VerifyKeys,
}

fn tokens() -> StaticTokens {
    StaticTokens::new(StaticTokensConfig {
        hash_key: None,
        tokens: vec![StaticToken {
            id: "agent".into(),
            hash: TokenHash::of("tok-agent", None),
            subject: "agent-1".into(),
            groups: ["agents".to_owned()].into(),
            attributes: Default::default(),
            expires_at: None,
        }],
    })
    .unwrap()
}

/// A redis-server listening for TLS only, seeded with values that must come back masked.
async fn tls_redis() -> Redis {
    tokio::task::spawn_blocking(|| {
        let r = Redis::builder()
            .tls()
            .start()
            .expect("start redis-server with TLS");
        r.cli(&["SET", "ssn", &format!("ssn {SSN}")]).unwrap();
        r.cli(&["SET", "secret:api", API_KEY]).unwrap();
        r.cli(&["HSET", "customer:1", "name", "Ada", "card", CARD])
            .unwrap();
        r
    })
    .await
    .unwrap()
}

/// The upstream's authority, as the gateway should trust it.
fn upstream_root(redis: &Redis) -> CertificateDer<'static> {
    CertificateDer::from(redis.tls().unwrap().ca_der().to_vec())
}

/// A self-signed certificate for `localhost` that signed nothing the server presents.
fn stranger_root() -> CertificateDer<'static> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    ck.cert.der().clone()
}

/// A gateway (plaintext towards the client) in front of `upstream_addr`, logging in as
/// `redis`'s ACL user over TLS, trusting `roots` for a certificate naming `server_name`.
async fn gateway(
    redis: &Redis,
    upstream_addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    server_name: &str,
) -> Gateway {
    gateway_with(redis, upstream_addr, roots, server_name, |_| {}).await
}

/// [`gateway`] with the target adjusted by `configure`.
async fn gateway_with(
    redis: &Redis,
    upstream_addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    server_name: &str,
    configure: impl FnOnce(&mut RedisTarget),
) -> Gateway {
    let config = wirewarden::tls::client_config(roots).unwrap();
    gateway_tls(redis, upstream_addr, config, server_name, configure).await
}

/// [`gateway_with`] with this rustls client configuration for the upstream.
async fn gateway_tls(
    redis: &Redis,
    upstream_addr: SocketAddr,
    config: Arc<wirewarden::tls::ClientConfig>,
    server_name: &str,
    configure: impl FnOnce(&mut RedisTarget),
) -> Gateway {
    let (audit_dir, keys, sink) = support::audit_trail();
    let policy = format!(
        "{DEFAULT_REDIS_POLICY}\n[[rule]]\nid = \"agents-data\"\ngroups = [\"agents\"]\nmax_class = \"write\"\naction = \"allow\"\n"
    );
    let masks = Engine::builder()
        .profile(Profile::builder("cache").rule(FieldRule::new(
            Selector::redis_key("secret:*"),
            Strategy::redact(),
        )))
        .default_profile("cache")
        .build()
        .unwrap();
    let pipeline = Arc::new(
        Pipeline::builder(
            Arc::new(tokens()),
            Arc::new(RuleEngine::from_toml(&policy).unwrap()),
        )
        .masking(Arc::new(masks))
        .audit(Arc::new(sink))
        .build()
        .unwrap(),
    );
    let upstream = RedisUpstream {
        addr: upstream_addr.to_string(),
        user: Some(redis.user().to_owned()),
        password: Secret::new(redis.password()),
        tls: Some(UpstreamTls::new(
            config,
            wirewarden::tls::server_name(server_name).unwrap(),
        )),
    };
    let mut target = RedisTarget::new(Target::new("cache", Protocol::Redis).unwrap(), upstream);
    configure(&mut target);
    let proxy = RedisProxy::new(pipeline, target);
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
    }
}

/// redis-cli through the gateway as the agent, commands read from stdin (one session).
async fn cli(g: &Gateway, stdin: &str) -> Output {
    cli_with(g, &[], stdin).await
}

/// [`cli`] with `extra` options.
async fn cli_with(g: &Gateway, extra: &[&str], stdin: &str) -> Output {
    let mut child = tokio::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &g.addr.port().to_string()])
        .args(extra)
        .args([
            "--user",
            "agent",
            "--pass",
            "tok-agent",
            "--no-auth-warning",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("redis-cli finished")
        .unwrap()
}

/// One client session that logs in as the agent; everything the gateway sent back until it
/// closed the connection. (redis-cli would reconnect after the
/// refusal and so open a second session.)
async fn login_refused(g: &Gateway) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"*3\r\n$4\r\nAUTH\r\n$5\r\nagent\r\n$9\r\ntok-agent\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut reply))
        .await
        .expect("the gateway closed the connection")
        .unwrap();
    reply
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

/// How the session the gateway served ended.
async fn ended(g: &mut Gateway) -> wirewarden::Result<()> {
    tokio::time::timeout(Duration::from_secs(30), g.ended.recv())
        .await
        .expect("the session ended")
        .expect("the gateway is running")
}

/// Runs a blocking admin call on the upstream (redis-cli over TLS as `default`).
async fn admin(redis: &Redis, args: &[&str]) -> String {
    tokio::task::block_in_place(|| redis.cli(args).unwrap())
}

/// `AUTH` calls the server has executed since its statistics were last reset.
async fn auth_calls(redis: &Redis) -> u64 {
    let stats = admin(redis, &["INFO", "commandstats"]).await;
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_auth:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// The audit trail verifies and records the upstream failure without a session.
fn assert_refusal_audited(g: &Gateway, what: &str) {
    let report = verify_dir(g.audit_dir.path(), &g.keys).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let kinds: Vec<AuditEventKind> = read_log(g.audit_dir.path(), &g.keys)
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect();
    assert!(
        kinds.iter().any(|k| matches!(
            k,
            AuditEventKind::ProtocolError { error, .. }
                if error.contains("connection or login failed") && error.contains(what)
        )),
        "{kinds:?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::SessionStarted { .. })),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_through_the_gateway_to_a_tls_only_upstream() {
    let redis = tls_redis().await;
    let mut g = gateway(&redis, redis.addr(), &[upstream_root(&redis)], "localhost").await;
    let out = cli(
        &g,
        "SET greeting hello\nGET greeting\nGET ssn\nGET secret:api\nHGET customer:1 card\nCLIENT INFO\n",
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert_eq!(&lines[..2], ["OK", "hello"], "{stdout}");
    // Values come back through the pipeline masked: by content and by key.
    assert!(
        lines[2].starts_with("ssn ") && !lines[2].contains(SSN),
        "{stdout}"
    );
    assert!(!lines[3].is_empty() && lines[3] != API_KEY, "{stdout}");
    assert!(!lines[4].is_empty() && lines[4] != CARD, "{stdout}");
    assert!(
        !stdout.contains(CARD) && !stdout.contains(API_KEY),
        "{stdout}"
    );

    // The upstream connection the session ran on is the gateway's user, on the TLS port…
    let info = lines[5];
    let field = |name: &str| {
        info.split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_default()
    };
    assert_eq!(field("user"), redis.user(), "{info}");
    // (The addresses themselves come back masked, as any IP address in a reply does.)
    assert!(
        field("laddr").ends_with(&format!(":{}", redis.port())),
        "{info}"
    );
    // …and that port is the server's only one: the plaintext listener is off.
    let port = admin(&redis, &["CONFIG", "GET", "port"]).await;
    assert_eq!(port.lines().collect::<Vec<_>>(), ["port", "0"]);
    let tls_port = admin(&redis, &["CONFIG", "GET", "tls-port"]).await;
    assert_eq!(
        tls_port.lines().nth(1),
        Some(redis.port().to_string().as_str())
    );
    // The write reached the real server.
    assert_eq!(admin(&redis, &["GET", "greeting"]).await.trim(), "hello");

    let served = ended(&mut g).await;
    assert!(served.is_ok(), "{served:?}");

    // RESP3: the client's HELLO 3 (without its AUTH part) goes upstream inside TLS too.
    let out = cli_with(&g, &["-3"], "HELLO\nHGETALL customer:1\n").await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.lines().any(|l| l == "proto 3"), "{stdout}");
    assert!(stdout.contains("Ada") && !stdout.contains(CARD), "{stdout}");
    let served = ended(&mut g).await;
    assert!(served.is_ok(), "{served:?}");

    let report = verify_dir(g.audit_dir.path(), &g.keys).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let kinds: Vec<AuditEventKind> = read_log(g.audit_dir.path(), &g.keys)
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect();
    assert!(
        kinds.iter().any(|k| matches!(
            k,
            AuditEventKind::SessionStarted { principal, .. } if principal.subject == "agent-1"
        )),
        "{kinds:?}"
    );
    let masked: u64 = kinds
        .iter()
        .filter_map(|k| match k {
            AuditEventKind::CommandCompleted { masked, .. } => Some(masked.total()),
            _ => None,
        })
        .sum();
    assert!(masked >= 3, "{masked}");
    // Each reply as the client saw it is in its command's completion; no separate records.
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::Transcript { .. }))
    );
    let transcripts: Vec<&String> = kinds
        .iter()
        .filter_map(|k| match k {
            AuditEventKind::CommandCompleted {
                reply: Some(reply), ..
            } => Some(&reply.text),
            _ => None,
        })
        .collect();
    assert!(transcripts.iter().any(|t| t.contains("hello")));
    assert!(
        transcripts
            .iter()
            .all(|t| !t.contains(CARD) && !t.contains(SSN) && !t.contains(API_KEY))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_from_another_authority_is_refused_before_auth() {
    let redis = tls_redis().await;
    let mut g = gateway(&redis, redis.addr(), &[stranger_root()], "localhost").await;
    admin(&redis, &["CONFIG", "RESETSTAT"]).await;
    assert_eq!(login_refused(&g).await, UPSTREAM_DOWN_REPLY);
    match ended(&mut g).await {
        Err(wirewarden::Error::Tls(reason)) => {
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("an untrusted upstream was not refused: {other:?}"),
    }
    // The only AUTH the server executed since the reset is the one of this very query.
    assert_eq!(auth_calls(&redis).await, 1);
    assert_refusal_audited(&g, "UnknownIssuer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_for_another_name_is_refused_before_auth() {
    let redis = tls_redis().await;
    let mut g = gateway(
        &redis,
        redis.addr(),
        &[upstream_root(&redis)],
        "redis.internal.example",
    )
    .await;
    admin(&redis, &["CONFIG", "RESETSTAT"]).await;
    assert_eq!(login_refused(&g).await, UPSTREAM_DOWN_REPLY);
    match ended(&mut g).await {
        Err(wirewarden::Error::Tls(reason)) => {
            assert!(
                reason.contains("not valid for name \"redis.internal.example\""),
                "{reason}"
            );
        }
        other => panic!("a certificate for another name was accepted: {other:?}"),
    }
    assert_eq!(auth_calls(&redis).await, 1);
    assert_refusal_audited(&g, "not valid for name");
}

/// TLS record content types a client may send before it has a session: handshake and alert.
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;

/// Splits `bytes` into TLS records (type, body); `None` if they are not exactly that.
fn tls_records(mut bytes: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let (&[kind, major, _, hi, lo], rest) = bytes.split_first_chunk::<5>()?;
        if major != 3 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let body = rest.get(..len)?;
        records.push((kind, body));
        bytes = rest.get(len..)?;
    }
    Some(records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_upstream_gets_the_client_hello_and_nothing_else() {
    // The gateway is sent to something that answers like a plaintext Redis would. It must
    // not take the answer as a reason to log in without TLS, on this connection or another.
    let redis = tls_redis().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut gw, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut received = vec![0u8; 5];
                if gw.read_exact(&mut received).await.is_err() {
                    let _ = seen_tx.send(received);
                    return;
                }
                let len = usize::from(u16::from_be_bytes([received[3], received[4]]));
                let mut body = vec![0u8; len];
                if gw.read_exact(&mut body).await.is_ok() {
                    received.extend_from_slice(&body);
                    // What redis-server answers a line it cannot parse.
                    let _ = gw.write_all(b"-ERR unknown command\r\n").await;
                    let _ = gw.read_to_end(&mut received).await;
                }
                let _ = seen_tx.send(received);
            });
        }
    });
    let mut g = gateway(&redis, fake, &[upstream_root(&redis)], "localhost").await;
    assert_eq!(login_refused(&g).await, UPSTREAM_DOWN_REPLY);
    match ended(&mut g).await {
        Err(wirewarden::Error::Tls(_)) => {}
        other => panic!("a plaintext upstream was not refused: {other:?}"),
    }
    let received = tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("the gateway hung up")
        .unwrap();
    // One connection, and on it only TLS records: the ClientHello first, then at most an
    // alert. Never a RESP command, never the credential.
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let records = tls_records(&received).unwrap_or_else(|| panic!("not TLS: {received:?}"));
    let (first, hello) = records.first().expect("a ClientHello");
    assert_eq!(*first, HANDSHAKE);
    assert_eq!(hello.first(), Some(&1), "handshake type client_hello");
    assert!(
        records.iter().skip(1).all(|(kind, _)| *kind == ALERT),
        "{records:?}"
    );
    let password = redis.password().as_bytes();
    assert!(!received.windows(4).any(|w| w.eq_ignore_ascii_case(b"AUTH")));
    assert!(!received.windows(password.len()).any(|w| w == password));
    assert_refusal_audited(&g, "upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_real_plaintext_redis_is_refused_before_auth() {
    // The operator pointed `upstream_tls` at a plaintext port. redis-server reads the
    // ClientHello as an inline command: it answers an error if the hello happens to contain
    // a newline and otherwise waits for one. Either way the client is refused, within the
    // target's login timeout, and the server never executes an AUTH.
    let plain = tokio::task::spawn_blocking(|| Redis::start().unwrap())
        .await
        .unwrap();
    let stranger = tls_redis().await;
    let mut g = gateway_with(
        &plain,
        plain.addr(),
        &[upstream_root(&stranger)],
        "localhost",
        |t| t.login_timeout = Duration::from_secs(2),
    )
    .await;
    admin(&plain, &["CONFIG", "RESETSTAT"]).await;
    assert_eq!(login_refused(&g).await, UPSTREAM_DOWN_REPLY);
    assert!(ended(&mut g).await.is_err());
    assert_eq!(auth_calls(&plain).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_the_client_hello_is_given_up() {
    // Accepts, reads, never answers: without a bound the client would wait forever.
    let redis = tls_redis().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut gw, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let _ = gw.read_to_end(&mut received).await;
                let _ = seen_tx.send(received);
            });
        }
    });
    let mut g = gateway_with(&redis, silent, &[upstream_root(&redis)], "localhost", |t| {
        t.login_timeout = Duration::from_secs(1)
    })
    .await;
    assert_eq!(login_refused(&g).await, UPSTREAM_DOWN_REPLY);
    match ended(&mut g).await {
        Err(wirewarden::Error::Io { peer, source }) => {
            assert_eq!(peer, "upstream");
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
        }
        other => panic!("a silent upstream was not given up: {other:?}"),
    }
    let received = tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("the gateway hung up")
        .unwrap();
    let records = tls_records(&received).unwrap_or_else(|| panic!("not TLS: {received:?}"));
    assert_eq!(
        records.iter().map(|(kind, _)| *kind).collect::<Vec<_>>(),
        [HANDSHAKE],
        "only the ClientHello"
    );
    assert_refusal_audited(&g, "login timeout");
}

/// A client configuration that trusts `redis`'s authority and presents the client
/// certificate it issued: what an embedder builds for an upstream that demands one.
fn client_config_with_certificate(redis: &Redis) -> Arc<wirewarden::tls::ClientConfig> {
    let tls = redis.tls().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(upstream_root(redis)).unwrap();
    let config = wirewarden::tls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from(tls.client_cert_der().to_vec())],
        PrivateKeyDer::Pkcs8(tls.client_key_der().to_vec().into()),
    )
    .unwrap();
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_demanding_a_client_certificate_gets_the_gateways() {
    let redis = tokio::task::spawn_blocking(|| Redis::builder().tls_client_auth().start().unwrap())
        .await
        .unwrap();
    let mut g = gateway_tls(
        &redis,
        redis.addr(),
        client_config_with_certificate(&redis),
        "localhost",
        |_| {},
    )
    .await;
    let out = cli(&g, "SET k v\nGET k\n").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), ["OK", "v"]);
    let served = ended(&mut g).await;
    assert!(served.is_ok(), "{served:?}");

    // Without a certificate the server ends the handshake, and it executes no AUTH: in
    // TLS 1.3 the gateway has already sent it, encrypted, when the server's alert arrives.
    let mut g = gateway(&redis, redis.addr(), &[upstream_root(&redis)], "localhost").await;
    admin(&redis, &["CONFIG", "RESETSTAT"]).await;
    assert_eq!(login_refused(&g).await, UPSTREAM_DOWN_REPLY);
    let refused = ended(&mut g).await.expect_err("the session failed");
    assert!(refused.to_string().contains("alert"), "{refused}");
    assert_eq!(auth_calls(&redis).await, 1);
}
