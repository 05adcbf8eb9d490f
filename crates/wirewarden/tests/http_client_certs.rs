//! Agents identified by TLS client certificates at the HTTP listener: the testkit's
//! throwaway CA issues the gateway's server certificate and a client certificate, curl
//! (`--cert --key`, HTTP/1.1 and HTTP/2) and Python httpx present it, and the identity
//! crate's `ClientCertificates` maps the verified chain to a principal for the whole
//! connection. A hyper server on loopback is the upstream.

#![cfg(feature = "http")]

mod support;
use support::Interactive;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use wirewarden::Pipeline;
use wirewarden::audit::VerifyKeys;
use wirewarden::core::{AuditEvent, AuditEventKind, AuthMethod, Protocol, Target};
use wirewarden::http::{DEFAULT_HTTP_POLICY, HttpProxy, HttpTarget, Route, Routes};
use wirewarden::identity::{CertField, Chain};
use wirewarden::mask::{Engine, MaskKey, Profile};
use wirewarden::policy::RuleEngine;
use wirewarden::tls::{ClientCertMode, ClientCertVerification, ServerTls};
use wirewarden_testkit::{TlsKey, TlsMaterial};

const SSN: &str = "123-45-6789";
const UPSTREAM_SECRET: &str = "upstream-secret-c3e1";
/// The common name of the testkit's client certificate.
const CLIENT_CN: &str = "wirewarden-testkit client";
/// A token of another identity (`agent-1`).
const OTHER_TOKEN: &str = "tok-agent";
/// A token of the certificate's own identity.
const SAME_TOKEN: &str = "tok-same";

/// The `Authorization` header of each request the upstream saw.
type Log = Arc<Mutex<Vec<Option<String>>>>;

async fn api(req: Request<Incoming>, log: Log) -> Result<Response<Full<Bytes>>, Infallible> {
    log.lock().unwrap().push(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    let body = serde_json::json!({ "id": 7, "ssn": SSN, "notes": format!("ssn {SSN} on file") });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap())
}

async fn upstream(log: Log) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| api(req, log.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

/// Certificates whose common name matches `cn_pattern` map to that name in group
/// `agents`; `tok-agent` is `agent-1` and `tok-same` is the certificate's own subject.
fn identity(cn_pattern: &str) -> Chain {
    support::agents(
        CertField::CommonName,
        cn_pattern,
        &[
            ("agent", OTHER_TOKEN, "agent-1"),
            ("same", SAME_TOKEN, CLIENT_CN),
        ],
    )
}

struct Gateway {
    addr: SocketAddr,
    pipeline: Arc<Pipeline>,
    audit_dir: tempfile::TempDir,
    keys: VerifyKeys,
    pki: TlsMaterial,
    seen: Log,
    /// The listener's client certificate verification.
    verification: Arc<ClientCertVerification>,
    _pki_dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// With `crl`: the testkit CA's revocation list made with `(revoke_client, stale)`.
async fn gateway(mode: ClientCertMode, cn_pattern: &str, crl: Option<(bool, bool)>) -> Gateway {
    gateway_with(mode, cn_pattern, crl, false).await
}

/// As `gateway`; with `watch`, the pipeline also ends open connections whose certificate
/// replaced lists refuse.
async fn gateway_with(
    mode: ClientCertMode,
    cn_pattern: &str,
    crl: Option<(bool, bool)>,
    watch: bool,
) -> Gateway {
    let seen = Log::default();
    let origin = upstream(seen.clone()).await;
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TlsMaterial::generate_in(&pki_dir.path().join("pki"), TlsKey::EcdsaP256).unwrap();
    let chain = wirewarden::tls::load_certs(pki.cert_file()).unwrap();
    let key = wirewarden::tls::key_from_pem(&std::fs::read(pki.key_file()).unwrap()).unwrap();
    let ca = rustls::pki_types::CertificateDer::from(pki.ca_der().to_vec());
    let crls = match crl {
        Some((revoke, stale)) => {
            wirewarden::tls::crls_from_pem(pki.crl_pem(revoke, stale).unwrap().as_bytes()).unwrap()
        }
        None => Vec::new(),
    };
    let verification = ClientCertVerification::new(&[ca], &crls).unwrap();
    let tls =
        ServerTls::with_client_cert_verification(chain, key, verification.clone(), mode).unwrap();

    let (audit_dir, keys, sink) = support::audit_trail();
    let policy = format!(
        "{DEFAULT_HTTP_POLICY}\n[[rule]]\nid = \"agents-read\"\ngroups = [\"agents\"]\nmax_class = \"read\"\naction = \"allow\"\n"
    );
    let masks = Engine::builder()
        .key(MaskKey::new([5; 32]))
        .profile(Profile::builder("api"))
        .default_profile("api")
        .build()
        .unwrap();
    let mut builder = Pipeline::builder(
        Arc::new(identity(cn_pattern)),
        Arc::new(RuleEngine::from_toml(&policy).unwrap()),
    )
    .masking(Arc::new(masks));
    if watch {
        builder = builder.client_cert_verification(verification.clone());
    }
    let pipeline = Arc::new(builder.audit(Arc::new(sink)).build().unwrap());
    let mut target = HttpTarget::new(
        Target::new("crm-api", Protocol::Http).unwrap(),
        format!("http://{origin}"),
    )
    .routes(Routes::new().route(Route::new(Some(http::Method::GET), "/customers/{id}").unwrap()))
    .credential(
        header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {UPSTREAM_SECRET}")).unwrap(),
    );
    target.tls = Some(tls.config);
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
        pki,
        seen,
        verification,
        _pki_dir: pki_dir,
        task,
    }
}

impl Gateway {
    /// curl over TLS trusting the testkit CA, presenting the client certificate when
    /// `cert`, with `extra` arguments, for each of `paths` in turn on one connection;
    /// `-w` prints each status on its own line.
    async fn curl(&self, cert: bool, extra: &[&str], paths: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "--max-time".into(),
            "30".into(),
            "--cacert".into(),
            self.pki.ca_file().display().to_string(),
            "-w".into(),
            "\n%{http_code}\n".into(),
        ];
        if cert {
            args.extend([
                "--cert".into(),
                self.pki.client_cert_file().display().to_string(),
                "--key".into(),
                self.pki.client_key_file().display().to_string(),
            ]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.extend(
            paths
                .iter()
                .map(|p| format!("https://127.0.0.1:{}{p}", self.addr.port())),
        );
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(args)
                .output()
                .expect("run curl")
        })
        .await
        .unwrap()
    }

    /// The audit trail once `done` holds for it (outcomes and refused handshakes are
    /// recorded on their own tasks, so this polls, bounded; no timing is asserted).
    async fn events_when(&self, done: impl Fn(&[AuditEvent]) -> bool) -> Vec<AuditEvent> {
        support::events_when(&self.pipeline, self.audit_dir.path(), &self.keys, done).await
    }
}

/// The last request curl made answered `200`.
fn assert_served(out: &Output) {
    let stdout = text(&out.stdout);
    assert!(stdout.ends_with("\n200\n"), "{stdout}");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The reasons of failed logins by `method`.
fn failures<'e>(events: &'e [AuditEvent], method: &str) -> Vec<&'e str> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::AuthenticationFailed {
                method: m, reason, ..
            } if m == method => Some(reason.as_str()),
            _ => None,
        })
        .collect()
}

/// The principals of the sessions on record, with how they authenticated.
fn sessions(events: &[AuditEvent]) -> Vec<(String, &'static str, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::SessionStarted {
                principal,
                application,
                tls,
                ..
            } => {
                assert!(*tls);
                Some((
                    principal.subject.clone(),
                    principal.auth.name(),
                    application.clone(),
                ))
            }
            _ => None,
        })
        .collect()
}

/// A mapped certificate is the login for every request on its connection, over HTTP/1.1 and
/// HTTP/2, with no token: one audit session, the gateway's own credential upstream, the
/// response masked. A token of the same identity may come along; one of another identity
/// is refused, because a connection keeps the identity of its certificate. Without a
/// certificate the handshake fails where one is required, and that is on record too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_identifies_every_request_on_its_connection() {
    let g = gateway(ClientCertMode::Required, CLIENT_CN, None).await;
    for version in ["--http1.1", "--http2"] {
        let out = g
            .curl(true, &[version], &["/customers/7", "/customers/8"])
            .await;
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(stdout.matches("\n200\n").count(), 2, "{stdout}");
        assert!(!stdout.contains(SSN), "{stdout}");
    }
    let out = g
        .curl(
            true,
            &["-H", &format!("Authorization: Bearer {SAME_TOKEN}")],
            &["/customers/9"],
        )
        .await;
    assert_served(&out);
    let out = g
        .curl(
            true,
            &["-H", &format!("Authorization: Bearer {OTHER_TOKEN}")],
            &["/customers/10"],
        )
        .await;
    let stdout = text(&out.stdout);
    assert!(stdout.ends_with("\n401\n"), "{stdout}");
    assert!(
        stdout.contains("keeps the identity of its certificate"),
        "{stdout}"
    );
    // No certificate: the handshake refuses the client before any request.
    let out = g
        .curl(
            false,
            &["-H", &format!("Authorization: Bearer {OTHER_TOKEN}")],
            &["/customers/11"],
        )
        .await;
    assert!(
        !text(&out.stdout).contains("\n200\n"),
        "{}",
        text(&out.stdout)
    );

    // The upstream saw five requests, each with the gateway's credential only.
    let seen = g.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5, "{seen:?}");
    let upstream = format!("Bearer {UPSTREAM_SECRET}");
    assert!(seen.iter().all(|a| a.as_deref() == Some(upstream.as_str())));

    let events = g
        .events_when(|e| {
            !failures(e, "client_certificate").is_empty()
                && e.iter()
                    .filter(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. }))
                    .count()
                    >= 5
        })
        .await;
    support::assert_verifies(g.audit_dir.path(), &g.keys);
    let sessions = sessions(&events);
    // One session per connection that got in (the refused bearer's connection opened none).
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    for (subject, method, application) in &sessions {
        assert_eq!(subject, CLIENT_CN);
        assert_eq!(*method, "client_certificate");
        assert!(
            application
                .as_deref()
                .is_some_and(|a| a.starts_with("curl/"))
        );
    }
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        AuditEventKind::SessionStarted { principal, .. }
            if matches!(&principal.auth, AuthMethod::ClientCertificate { fingerprint } if fingerprint.len() == 64)
    )));
    let decided = events
        .iter()
        .filter(|e| matches!(e.kind, AuditEventKind::CommandDecided { .. }))
        .count();
    assert_eq!(decided, 5);
    let bearer = failures(&events, "bearer");
    assert_eq!(bearer.len(), 1, "{bearer:?}");
    assert!(bearer[0].contains("agent-1"), "{bearer:?}");
    assert_eq!(
        failures(&events, "client_certificate"),
        ["no client certificate presented"]
    );
}

/// A certificate no rule maps makes every request on its connection a 401, whatever token
/// comes with it: it is never a fallback to a token login. One refusal per connection is on
/// record, and nothing reaches the upstream. A client without a certificate logs in with its
/// token where certificates are optional, and Python httpx presents one as curl does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_certificate_is_refused_and_never_falls_back_to_a_token() {
    let g = gateway(ClientCertMode::Optional, "someone-else", None).await;
    let out = g
        .curl(
            true,
            &["-H", &format!("Authorization: Bearer {OTHER_TOKEN}")],
            &["/customers/7", "/customers/8"],
        )
        .await;
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("\n401\n").count(), 2, "{stdout}");
    assert!(
        stdout.contains("client certificate was not accepted"),
        "{stdout}"
    );
    assert!(g.seen.lock().unwrap().is_empty());

    let script = format!(
        "import ssl, httpx\nctx = ssl.create_default_context(cafile={ca:?})\nctx.load_cert_chain({cert:?}, {key:?})\nc = httpx.Client(verify=ctx)\nr = c.get('https://127.0.0.1:{port}/customers/7', headers={{'Authorization': 'Bearer {OTHER_TOKEN}'}})\nprint(r.status_code)\n",
        ca = g.pki.ca_file().display().to_string(),
        cert = g.pki.client_cert_file().display().to_string(),
        key = g.pki.client_key_file().display().to_string(),
        port = g.addr.port(),
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "401", "{}", text(&out.stderr));

    // Optional: without a certificate the token is the login.
    let out = g
        .curl(
            false,
            &["-H", &format!("Authorization: Bearer {OTHER_TOKEN}")],
            &["/customers/9"],
        )
        .await;
    assert_served(&out);
    assert_eq!(g.seen.lock().unwrap().len(), 1);

    let events = g
        .events_when(|e| {
            failures(e, "client_certificate").len() >= 2
                && e.iter()
                    .any(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. }))
        })
        .await;
    support::assert_verifies(g.audit_dir.path(), &g.keys);
    assert_eq!(failures(&events, "client_certificate").len(), 2);
    assert!(failures(&events, "bearer").is_empty());
    let sessions = sessions(&events);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].0, "agent-1");
    assert_eq!(sessions[0].1, "static_token");
}

/// A revoked certificate, or any certificate while the revocation list is stale, fails the
/// handshake; the refusal is on record with its reason and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_fails_the_handshake() {
    for (crl, reason) in [
        ((true, false), "Revoked"),
        ((false, true), "revocation list expired"),
    ] {
        let g = gateway(ClientCertMode::Required, CLIENT_CN, Some(crl)).await;
        let out = g.curl(true, &[], &["/customers/7"]).await;
        assert!(
            !text(&out.stdout).contains("\n200\n"),
            "{}",
            text(&out.stdout)
        );
        let events = g
            .events_when(|e| !failures(e, "client_certificate").is_empty())
            .await;
        let refused = failures(&events, "client_certificate");
        assert!(refused.iter().all(|r| r.contains(reason)), "{refused:?}");
        assert!(sessions(&events).is_empty());
        assert!(g.seen.lock().unwrap().is_empty());
    }
    // A current list that does not name the certificate lets it in.
    let g = gateway(ClientCertMode::Required, CLIENT_CN, Some((false, false))).await;
    let out = g.curl(true, &[], &["/customers/7"]).await;
    assert!(
        text(&out.stdout).ends_with("\n200\n"),
        "{}",
        text(&out.stderr)
    );
}

/// Revoking a certificate while its connections are open ends them: each connection is
/// closed with no request from its client and its session ends on record as revoked, over
/// HTTP/1.1 and HTTP/2; a connection with a token goes on, and the certificate's next
/// connection fails the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_end_when_their_certificate_is_revoked() {
    let g = gateway_with(
        ClientCertMode::Optional,
        CLIENT_CN,
        Some((false, false)),
        true,
    )
    .await;
    let env = support::pki_env(g.addr.port(), &g.pki);
    let client = |cert: bool, http2: bool| {
        let load = if cert {
            "ctx.load_cert_chain(os.environ['CERT'], os.environ['KEY'])\n"
        } else {
            ""
        };
        let py = if http2 { "True" } else { "False" };
        format!(
            "import ssl, httpx\nctx = ssl.create_default_context(cafile=os.environ['CA'])\n{load}c = httpx.Client(verify=ctx, http2={py}, timeout=20, headers={{'Authorization': 'Bearer {OTHER_TOKEN}'}} if {token} else {{}})\nurl = f\"https://127.0.0.1:{{os.environ['PORT']}}/customers/7\"",
            token = if cert { "False" } else { "True" },
        )
    };
    // The status and the HTTP version of one request.
    const GET: &str = "(lambda r: f'{r.status_code} {r.http_version}')(c.get(url))";
    let mut h1 = Interactive::start(&client(true, false), &env).await;
    let mut h2 = Interactive::start(&client(true, true), &env).await;
    let mut token = Interactive::start(&client(false, false), &env).await;
    assert_eq!(h1.eval(GET).await, "200 HTTP/1.1");
    assert_eq!(h2.eval(GET).await, "200 HTTP/2");
    assert_eq!(token.eval(GET).await, "200 HTTP/1.1");

    // New lists that still accept the certificate change nothing.
    let lists = |revoke| {
        wirewarden::tls::crls_from_pem(g.pki.crl_pem(revoke, false).unwrap().as_bytes()).unwrap()
    };
    g.verification.replace_crls(&lists(false)).unwrap();
    assert_eq!(h1.eval(GET).await, "200 HTTP/1.1");
    assert_eq!(h2.eval(GET).await, "200 HTTP/2");

    g.verification.replace_crls(&lists(true)).unwrap();
    let revoked = |events: &[AuditEvent]| support::revoked_sessions(events.iter().map(|e| &e.kind));
    let events = g.events_when(|e| revoked(e).len() == 2).await;
    assert!(revoked(&events).iter().all(|r| r.contains("Revoked")));
    // Their connections are gone (httpx either finds its connection closed or connects
    // again at once), and a new connection's handshake refuses the certificate (the
    // client reads the `certificate_revoked` alert or, when it is already writing its
    // request, the close that follows it; the reason is on record below).
    for c in [&mut h1, &mut h2] {
        for _ in 0..2 {
            let after = c.eval(GET).await;
            assert!(after.starts_with("ERROR"), "{after}");
        }
    }
    assert_eq!(token.eval(GET).await, "200 HTTP/1.1");
    for c in [h1, h2, token] {
        c.finish().await;
    }

    let events = g
        .events_when(|e| {
            e.iter()
                .filter(|e| matches!(e.kind, AuditEventKind::SessionEnded { .. }))
                .count()
                == 3
                && !failures(e, "client_certificate").is_empty()
        })
        .await;
    let started = sessions(&events);
    assert_eq!(started.len(), 3, "{started:?}");
    let refused = failures(&events, "client_certificate");
    assert!(!refused.is_empty() && refused.iter().all(|f| f.contains("Revoked")));
    support::assert_verifies(g.audit_dir.path(), &g.keys);
}

/// A certificate whose validity ends while its connection is open ends the connection's
/// session (on record as `credential_expired`), and every later request on it is a `401`;
/// the handshake then refuses the certificate on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_mid_connection_ends_its_session() {
    let g = gateway(ClientCertMode::Required, CLIENT_CN, None).await;
    let valid_for = Duration::from_secs(5);
    let expired_by = tokio::time::Instant::now() + valid_for + Duration::from_millis(1500);
    let scratch = tempfile::tempdir().unwrap();
    let (cert, key) = g
        .pki
        .short_lived_client(scratch.path(), "brief", valid_for)
        .unwrap();
    let mut env = support::pki_env(g.addr.port(), &g.pki);
    env[2].1 = cert.display().to_string();
    env[3].1 = key.display().to_string();
    let mut client = Interactive::start(
        "import ssl, httpx\nctx = ssl.create_default_context(cafile=os.environ['CA'])\nctx.load_cert_chain(os.environ['CERT'], os.environ['KEY'])\nc = httpx.Client(verify=ctx, timeout=20, limits=httpx.Limits(keepalive_expiry=60))\nurl = f\"https://127.0.0.1:{os.environ['PORT']}/customers/7\"",
        &env,
    )
    .await;
    const GET: &str = "(lambda r: f'{r.status_code} {r.json().get(\"error\", {}).get(\"code\", \"ok\")}')(c.get(url))";
    assert_eq!(client.eval(GET).await, "200 ok");
    tokio::time::sleep_until(expired_by).await;
    assert_eq!(client.eval(GET).await, "401 unauthenticated");
    assert_eq!(client.eval(GET).await, "401 unauthenticated");
    client.finish().await;
    let events = g.events_when(|e| support::end_reasons(e).len() == 1).await;
    assert_eq!(
        support::end_reasons(&events),
        [wirewarden::core::SessionEndReason::CredentialExpired]
    );
    assert_eq!(sessions(&events).len(), 1);
    support::assert_verifies(g.audit_dir.path(), &g.keys);
}
