//! A client that connects and then never logs in — no startup message, no TLS handshake, no
//! `AUTH` — is let go when the target's login timeout passes, whatever step it stalls in. No
//! upstream is needed: nothing reaches one before a client has logged in.
#![cfg(all(feature = "postgres", feature = "redis", feature = "http"))]

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use wirewarden::core::{Protocol, Target};
use wirewarden::identity::{StaticTokens, StaticTokensConfig};
use wirewarden::policy::RuleEngine;
use wirewarden::postgres::{PostgresProxy, PostgresTarget, Secret, ServerTls, UpstreamConfig};
use wirewarden::redis::{RedisProxy, RedisTarget, RedisUpstream};
use wirewarden::{Error, Pipeline};

const DEADLINE: Duration = Duration::from_millis(200);
/// How long the test waits for the proxy to give up before it fails (not a timing claim:
/// the proxy is expected to give up after `DEADLINE`, long before this).
const PATIENCE: Duration = Duration::from_secs(30);

fn pipeline() -> (Arc<Pipeline>, tempfile::TempDir) {
    let (dir, _keys, sink) = support::audit_trail();
    let identity = StaticTokens::new(StaticTokensConfig {
        hash_key: None,
        tokens: Vec::new(),
    })
    .unwrap();
    let pipeline = Pipeline::builder(
        Arc::new(identity),
        Arc::new(RuleEngine::from_toml("").unwrap()),
    )
    .audit(Arc::new(sink))
    .build()
    .unwrap();
    (Arc::new(pipeline), dir)
}

fn server_tls() -> ServerTls {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    ServerTls::new(vec![cert.cert.der().clone()], key).unwrap()
}

fn postgres(tls: Option<ServerTls>) -> PostgresProxy {
    let (pipeline, dir) = pipeline();
    std::mem::forget(dir);
    let upstream = UpstreamConfig {
        // Never dialled: no client gets that far.
        addr: "127.0.0.1:9".into(),
        user: "gateway".into(),
        password: Secret::new("unused"),
        database: "crm".into(),
        tls: None,
    };
    let mut target = PostgresTarget::new(Target::new("crm", Protocol::Postgres).unwrap(), upstream);
    target.require_tls = tls.is_some();
    // Without TLS the token would be refused at once; this lets the login reach the
    // password step.
    target.allow_plaintext_password = tls.is_none();
    target.tls = tls;
    target.login_timeout = DEADLINE;
    PostgresProxy::new(pipeline, target)
}

fn redis(tls: bool) -> RedisProxy {
    let (pipeline, dir) = pipeline();
    std::mem::forget(dir);
    let upstream = RedisUpstream {
        addr: "127.0.0.1:9".into(),
        user: None,
        password: Secret::new("unused"),
        tls: None,
    };
    let mut target = RedisTarget::new(Target::new("cache", Protocol::Redis).unwrap(), upstream);
    if tls {
        target.tls = Some(server_tls().config);
    }
    target.login_timeout = DEADLINE;
    RedisProxy::new(pipeline, target)
}

/// Runs `serve` on one end of an in-memory connection whose other end (`client`) stays open
/// and says nothing more; returns how `serve` ended.
async fn stall<F>(serve: F, client: DuplexStream) -> Result<(), Error>
where
    F: Future<Output = Result<(), Error>>,
{
    let outcome = tokio::time::timeout(PATIENCE, serve)
        .await
        .expect("the proxy gave up on a client that never logged in");
    drop(client);
    outcome
}

#[tokio::test]
async fn postgres_client_that_sends_nothing() {
    let proxy = postgres(None);
    let (client, server) = tokio::io::duplex(4096);
    let e = stall(proxy.serve(server, None), client).await.unwrap_err();
    assert!(e.to_string().contains("login timeout"), "{e}");
}

#[tokio::test]
async fn postgres_client_that_stops_after_the_ssl_request() {
    let proxy = postgres(Some(server_tls()));
    let (mut client, server) = tokio::io::duplex(4096);
    let serve = tokio::spawn(async move { proxy.serve(server, None).await });
    // SSLRequest: length 8, code 80877103. The gateway answers `S`; the client never
    // starts the handshake.
    client
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let e = tokio::time::timeout(PATIENCE, serve)
        .await
        .expect("the proxy gave up")
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("login timeout"), "{e}");
    drop(client);
}

#[tokio::test]
async fn postgres_client_that_never_sends_its_password() {
    let proxy = postgres(None);
    let (mut client, server) = tokio::io::duplex(4096);
    let serve = tokio::spawn(async move { proxy.serve(server, None).await });
    // A StartupMessage (protocol 3.0, user and database); the gateway asks for a password.
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for kv in ["user", "agent", "database", "crm"] {
        body.extend_from_slice(kv.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = u32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    msg.extend_from_slice(&body);
    client.write_all(&msg).await.unwrap();
    let mut tag = [0u8; 1];
    client.read_exact(&mut tag).await.unwrap();
    assert_eq!(&tag, b"R", "the gateway asks for authentication");
    let e = tokio::time::timeout(PATIENCE, serve)
        .await
        .expect("the proxy gave up")
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("login timeout"), "{e}");
    drop(client);
}

#[tokio::test]
async fn redis_tls_client_that_never_sends_a_client_hello() {
    let proxy = redis(true);
    let (client, server) = tokio::io::duplex(4096);
    let e = stall(proxy.serve(server, None), client).await.unwrap_err();
    assert!(e.to_string().contains("login timeout"), "{e}");
}

#[tokio::test]
async fn redis_client_that_never_authenticates() {
    let proxy = redis(false);
    let (client, server) = tokio::io::duplex(4096);
    let e = stall(proxy.serve(server, None), client).await.unwrap_err();
    assert!(e.to_string().contains("login timeout"), "{e}");
}

#[cfg(feature = "http")]
#[tokio::test]
async fn http_tls_client_that_never_sends_a_client_hello() {
    use wirewarden::http::{HttpProxy, HttpTarget};
    let (pipeline, dir) = pipeline();
    std::mem::forget(dir);
    let mut target = HttpTarget::new(
        Target::new("api", Protocol::Http).unwrap(),
        "http://127.0.0.1:9",
    );
    target.tls = Some(server_tls().config);
    target.limits.header_read_timeout = DEADLINE;
    let proxy = HttpProxy::new(pipeline, target).unwrap();
    let (client, server) = tokio::io::duplex(4096);
    let e = stall(proxy.serve(server, None), client).await.unwrap_err();
    assert!(e.to_string().contains("header read timeout"), "{e}");
}
