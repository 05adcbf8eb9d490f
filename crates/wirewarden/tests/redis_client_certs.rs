//! Agents identified by TLS client certificates at the Redis listener: the testkit's
//! throwaway CA issues the gateway's server certificate and a client certificate, redis-cli
//! (`--tls --cert --key`) and redis-py (`ssl_certfile`, RESP2 and RESP3) connect with it and
//! send commands with no `AUTH`, and the identity crate's `ClientCertificates` maps the
//! verified chain to a principal. A real redis-server (wirewarden-testkit) is the upstream.
#![cfg(feature = "redis")]

mod support;
use support::{Interactive, assert_verifies, events, text};

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use wirewarden::audit::VerifyKeys;
use wirewarden::core::{AuditEventKind, AuthMethod, Protocol, Target};
use wirewarden::identity::{CertField, Chain};
use wirewarden::policy::RuleEngine;
use wirewarden::redis::{DEFAULT_REDIS_POLICY, RedisProxy, RedisTarget, RedisUpstream};
use wirewarden::tls::{ClientCertMode, ServerTls};
use wirewarden::{Pipeline, Secret};
use wirewarden_testkit::{Redis, TlsKey, TlsMaterial};

/// The common name of the testkit's client certificate.
const CLIENT_CN: &str = "wirewarden-testkit client";

struct Gateway {
    redis: Redis,
    addr: SocketAddr,
    audit_dir: tempfile::TempDir,
    keys: VerifyKeys,
    pki: TlsMaterial,
    _pki_dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

/// Certificates whose common name matches `cn_pattern` map to that name in group
/// `agents`; the token `tok-agent` is `agent-1`, also in `agents`.
fn identity(cn_pattern: &str) -> Chain {
    support::agents(
        CertField::CommonName,
        cn_pattern,
        &[("agent", "tok-agent", "agent-1")],
    )
}

/// A throwaway Redis holding `plain` = `hello`.
async fn redis_with_plain() -> Redis {
    tokio::task::spawn_blocking(|| {
        let r = Redis::builder().start().unwrap();
        r.cli(&["SET", "plain", "hello"]).unwrap();
        r
    })
    .await
    .unwrap()
}

async fn gateway(mode: ClientCertMode, cn_pattern: &str) -> Gateway {
    gateway_with(mode, cn_pattern, None).await
}

/// With `crl`: the listener also checks the testkit CA's revocation list, made with
/// `(revoke_client, stale)` ([`TlsMaterial::crl_pem`]).
async fn gateway_with(
    mode: ClientCertMode,
    cn_pattern: &str,
    crl: Option<(bool, bool)>,
) -> Gateway {
    let redis = redis_with_plain().await;
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TlsMaterial::generate_in(&pki_dir.path().join("pki"), TlsKey::EcdsaP256).unwrap();
    let crls = match crl {
        Some((revoke, stale)) => {
            wirewarden::tls::crls_from_pem(pki.crl_pem(revoke, stale).unwrap().as_bytes()).unwrap()
        }
        None => Vec::new(),
    };
    let tls =
        |chain, key, ca| ServerTls::with_client_certs_and_crls(chain, key, &[ca], &crls, mode);
    gateway_on(
        redis,
        pki_dir,
        pki,
        tls,
        Arc::new(identity(cn_pattern)),
        None,
    )
    .await
}

/// A gateway in front of `redis` whose listener TLS `tls` builds from `pki`'s server
/// certificate, key and authority, identifying clients with `identity`; with
/// `certificates`, open certificate sessions are rechecked when its lists are replaced.
async fn gateway_on(
    redis: Redis,
    pki_dir: tempfile::TempDir,
    pki: TlsMaterial,
    tls: impl FnOnce(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
        CertificateDer<'static>,
    ) -> wirewarden::Result<ServerTls>,
    identity: Arc<dyn wirewarden::identity::IdentityProvider>,
    certificates: Option<Arc<wirewarden::tls::ClientCertVerification>>,
) -> Gateway {
    let chain = wirewarden::tls::load_certs(pki.cert_file()).unwrap();
    let key = wirewarden::tls::key_from_pem(&std::fs::read(pki.key_file()).unwrap()).unwrap();
    let ca = CertificateDer::from(pki.ca_der().to_vec());
    let tls = tls(chain, key, ca).unwrap();

    let (audit_dir, keys, sink) = support::audit_trail();
    let policy = format!(
        "{DEFAULT_REDIS_POLICY}\n[[rule]]\nid = \"deletes-need-ops\"\nverbs = [\"DEL\"]\naction = \"review\"\nreviewers = [\"ops\"]\ntimeout = \"60s\"\n\n[[rule]]\nid = \"agents-data\"\ngroups = [\"agents\"]\nmax_class = \"write\"\naction = \"allow\"\n"
    );
    let engine = Arc::new(RuleEngine::from_toml(&policy).unwrap());
    let mut builder = Pipeline::builder(identity, engine);
    if let Some(v) = certificates {
        builder = builder.client_cert_verification(v);
    }
    let pipeline = Arc::new(builder.audit(Arc::new(sink)).build().unwrap());
    let upstream = RedisUpstream {
        addr: redis.addr().to_string(),
        user: Some(redis.user().to_owned()),
        password: Secret::new(redis.password()),
        tls: None,
    };
    let mut target = RedisTarget::new(Target::new("cache", Protocol::Redis).unwrap(), upstream);
    target.tls = Some(tls.config);
    let proxy = RedisProxy::new(pipeline, target);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = proxy.listen(listener).await;
    });
    Gateway {
        redis,
        addr,
        audit_dir,
        keys,
        pki,
        _pki_dir: pki_dir,
        _task: task,
    }
}

/// redis-cli over TLS through the gateway, trusting the testkit CA, presenting the client
/// certificate when `cert` is set; commands read from stdin (one session).
async fn cli(g: &Gateway, cert: bool, extra: &[&str], stdin: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &g.addr.port().to_string()])
        .args(["--no-auth-warning", "--tls", "--cacert"])
        .arg(g.pki.ca_file());
    if cert {
        cmd.arg("--cert")
            .arg(g.pki.client_cert_file())
            .arg("--key")
            .arg(g.pki.client_key_file());
    }
    cmd.args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("redis-cli finished")
        .unwrap()
}

/// A redis-py script over TLS with the client certificate and no password; `r` is the
/// client, in RESP `protocol`.
async fn python(g: &Gateway, protocol: u8, body: &str) -> Output {
    let script = format!(
        "import os, redis\nr = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), ssl=True, ssl_ca_certs=os.environ['CA'], ssl_certfile=os.environ['CERT'], ssl_keyfile=os.environ['KEY'], protocol=int(os.environ['PROTO']), decode_responses=True, socket_timeout=20)\n{body}\nprint('DONE')\n"
    );
    let cmd = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .env("PORT", g.addr.port().to_string())
        .env("PROTO", protocol.to_string())
        .env("CA", g.pki.ca_file())
        .env("CERT", g.pki.client_cert_file())
        .env("KEY", g.pki.client_key_file())
        .output();
    tokio::time::timeout(Duration::from_secs(60), cmd)
        .await
        .expect("python finished")
        .unwrap()
}

/// The subjects and auth methods of the sessions on record.
fn sessions(kinds: &[AuditEventKind]) -> Vec<(String, &'static str)> {
    kinds
        .iter()
        .filter_map(|k| match k {
            AuditEventKind::SessionStarted { principal, tls, .. } => {
                assert!(*tls);
                Some((principal.subject.clone(), principal.auth.name()))
            }
            _ => None,
        })
        .collect()
}

fn cert_failures(kinds: &[AuditEventKind]) -> Vec<String> {
    kinds
        .iter()
        .filter_map(|k| match k {
            AuditEventKind::AuthenticationFailed { method, reason, .. }
                if method == "client_certificate" =>
            {
                Some(reason.clone())
            }
            _ => None,
        })
        .collect()
}

/// The certificate failures on record once the gateway has recorded one. A refused
/// handshake reaches the client as a TLS alert, possibly before the gateway's record is
/// written, so this waits for the record (a bounded number of polls, no timing asserted).
async fn handshake_failures(g: &Gateway) -> Vec<String> {
    for _ in 0..100 {
        let failures = cert_failures(&events(g.audit_dir.path(), &g.keys));
        if !failures.is_empty() {
            return failures;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Vec::new()
}

fn ok(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("DONE"),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_certificate_is_the_login() {
    let g = gateway(ClientCertMode::Required, CLIENT_CN).await;
    // No AUTH: the first command runs as the certificate's identity.
    let out = cli(&g, true, &[], "SET from-cli v1\nGET from-cli\nGET plain\n").await;
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        ["OK", "v1", "hello"],
        "stderr: {}",
        text(&out.stderr)
    );
    // The default policy still decides: KEYS is refused, the session goes on.
    let out = cli(&g, true, &[], "KEYS *\nGET plain\n").await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("wirewarden"), "{stdout}");
    assert!(stdout.trim_end().ends_with("hello"), "{stdout}");
    for protocol in [2u8, 3] {
        ok(&python(
            &g,
            protocol,
            &format!(
                "assert r.set('py{protocol}', 'x') is True\nassert r.get('py{protocol}') == 'x'\nassert r.get('plain') == 'hello'"
            ),
        )
        .await);
    }
    let stored = g.redis.cli(&["GET", "py3"]).unwrap();
    assert_eq!(stored.trim(), "x");

    assert_verifies(g.audit_dir.path(), &g.keys);
    let kinds = events(g.audit_dir.path(), &g.keys);
    let sessions = sessions(&kinds);
    assert_eq!(sessions.len(), 4, "{kinds:?}");
    for (subject, method) in &sessions {
        assert_eq!(subject, CLIENT_CN);
        assert_eq!(*method, "client_certificate");
    }
    assert!(kinds.iter().any(|k| matches!(
        k,
        AuditEventKind::SessionStarted { principal, .. }
            if matches!(&principal.auth, AuthMethod::ClientCertificate { fingerprint } if fingerprint.len() == 64)
    )));
    assert!(cert_failures(&kinds).is_empty(), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_after_a_certificate_login_keeps_the_identity() {
    let g = gateway(ClientCertMode::Optional, CLIENT_CN).await;
    // The token is agent-1's: the certificate's session cannot become it. It is answered
    // as a wrong token (no oracle for which tokens are valid); the trail says what it was.
    let out = cli(&g, true, &[], "AUTH tok-agent\nGET plain\n").await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("WRONGPASS"), "{stdout}");
    assert!(stdout.trim_end().ends_with("hello"), "{stdout}");
    // HELLO … AUTH likewise, from redis-py (which drops a connection whose login failed
    // and tries again on a new one).
    let out = python(
        &g,
        3,
        "try:\n    r.execute_command('HELLO', '3', 'AUTH', 'agent', 'tok-agent')\n    raise SystemExit('HELLO AUTH as another identity was accepted')\nexcept redis.AuthenticationError as e:\n    assert 'invalid username-password pair' in str(e), e\nassert r.get('plain') == 'hello'",
    )
    .await;
    ok(&out);
    assert_verifies(g.audit_dir.path(), &g.keys);
    let kinds = events(g.audit_dir.path(), &g.keys);
    let sessions = sessions(&kinds);
    assert!(sessions.len() >= 2, "{kinds:?}");
    assert!(sessions.iter().all(|(s, _)| s == CLIENT_CN), "{sessions:?}");
    let refused = kinds
        .iter()
        .filter(|k| matches!(k, AuditEventKind::AuthenticationFailed { reason, .. } if reason.contains("keeps the identity")))
        .count();
    assert!(refused >= 2, "{refused}");
}

/// A certificate session starts before the client speaks, so the name it gives itself
/// (`HELLO 3 SETNAME`, redis-py's `client_name`) arrives as its first command: it goes on
/// record as the session's application before any command after it is decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_session_takes_the_name_the_client_gives_itself() {
    let g = gateway(ClientCertMode::Required, CLIENT_CN).await;
    let out = cli(&g, true, &[], "HELLO 3 SETNAME run=4_call=w\nGET plain\n").await;
    let stdout = text(&out.stdout);
    assert!(stdout.trim_end().ends_with("hello"), "{stdout}");
    for protocol in [2u8, 3] {
        ok(&python(
            &g,
            protocol,
            &format!(
                "n = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), ssl=True, ssl_ca_certs=os.environ['CA'], ssl_certfile=os.environ['CERT'], ssl_keyfile=os.environ['KEY'], protocol={protocol}, client_name='run=5_call={protocol}', decode_responses=True)\nassert n.client_getname() == 'run=5_call={protocol}'\nassert n.get('plain') == 'hello'"
            ),
        )
        .await);
    }
    assert_verifies(g.audit_dir.path(), &g.keys);
    let kinds = events(g.audit_dir.path(), &g.keys);
    let gets: Vec<Option<String>> = support::applications_at_decision(&kinds)
        .into_iter()
        .filter(|(command, _)| command.verb == "GET")
        .map(|(_, app)| app)
        .collect();
    let name = |n: &str| Some(n.to_owned());
    assert_eq!(
        gets,
        [
            name("run=4_call=w"),
            name("run=5_call=2"),
            name("run=5_call=3")
        ],
        "{kinds:?}"
    );
}

/// A revocation list withdraws an agent's certificate before it expires: the handshake
/// refuses it, the refusal is on record with its reason, and nothing reaches the server. The
/// check fails closed: a list past its next update refuses every certificate, while a
/// current list that does not name the certificate lets it log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_fails_the_handshake_and_is_on_record() {
    let listed = gateway_with(ClientCertMode::Required, CLIENT_CN, Some((false, false))).await;
    let out = cli(&listed, true, &[], "GET plain\n").await;
    assert_eq!(text(&out.stdout).trim(), "hello", "{}", text(&out.stderr));

    let revoked = gateway_with(ClientCertMode::Required, CLIENT_CN, Some((true, false))).await;
    let out = cli(&revoked, true, &[], "SET leaked 1\n").await;
    assert!(!text(&out.stdout).contains("OK"), "{}", text(&out.stdout));
    ok(&python(
        &revoked,
        3,
        "try:\n    r.set('leaked', '2')\n    raise SystemExit('a revoked certificate was served')\nexcept (redis.ConnectionError, OSError) as e:\n    print('refused:', e)",
    )
    .await);
    let failures = handshake_failures(&revoked).await;
    assert!(
        !failures.is_empty() && failures.iter().all(|f| f.contains("Revoked")),
        "{failures:?}"
    );
    assert_eq!(
        revoked.redis.cli(&["EXISTS", "leaked"]).unwrap().trim(),
        "0"
    );
    assert!(sessions(&events(revoked.audit_dir.path(), &revoked.keys)).is_empty());

    let stale = gateway_with(ClientCertMode::Required, CLIENT_CN, Some((false, true))).await;
    let out = cli(&stale, true, &[], "GET plain\n").await;
    assert!(
        !text(&out.stdout).contains("hello"),
        "{}",
        text(&out.stdout)
    );
    let failures = handshake_failures(&stale).await;
    assert!(
        failures
            .iter()
            .any(|f| f.contains("revocation list expired")),
        "{failures:?}"
    );
    for g in [&listed, &revoked, &stale] {
        assert_verifies(g.audit_dir.path(), &g.keys);
    }
}

/// One `ClientCertVerification` shared by the listener and the identity provider, its lists
/// kept current from a file (`CrlFiles`): a certificate revoked while the gateway runs is
/// refused from the next handshake on, by both, and reinstated when a new list no longer
/// names it — no restart. A file that cannot be parsed changes nothing.
/// A gateway whose listener and identity provider share one verification of the testkit
/// authority, with its revocation list in a file (`crl_file`, naming nothing yet) that
/// `files` applies; with `watch`, the pipeline also ends open sessions the lists come to
/// refuse. Certificates map as in `gateway`; the token `tok-agent` logs in too.
struct ListFileGateway {
    g: Gateway,
    crl_file: std::path::PathBuf,
    files: wirewarden::tls::CrlFiles,
    verification: Arc<wirewarden::tls::ClientCertVerification>,
    /// The certificate provider, verifying with the shared lists.
    provider: wirewarden::identity::ClientCertificates,
}

async fn gateway_with_list_file(mode: ClientCertMode, watch: bool) -> ListFileGateway {
    use wirewarden::tls::{ClientCertVerification, CrlFiles};
    let redis = redis_with_plain().await;
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TlsMaterial::generate_in(&pki_dir.path().join("pki"), TlsKey::EcdsaP256).unwrap();
    let crl_file = pki_dir.path().join("agents.crl");
    std::fs::write(&crl_file, pki.crl_pem(false, false).unwrap()).unwrap();
    let files = CrlFiles::new(vec![crl_file.clone()]);
    let ca = CertificateDer::from(pki.ca_der().to_vec());
    let verification = ClientCertVerification::new(&[ca], &files.load().unwrap()).unwrap();
    let provider = support::agent_certificates(CertField::CommonName, CLIENT_CN)
        .with_verifier(verification.verifier());
    let identity = Chain::new()
        .with(Arc::new(provider.clone()))
        .with(Arc::new(identity("nobody")));
    let shared = verification.clone();
    let g = gateway_on(
        redis,
        pki_dir,
        pki,
        move |chain, key, _| ServerTls::with_client_cert_verification(chain, key, shared, mode),
        Arc::new(identity),
        watch.then(|| verification.clone()),
    )
    .await;
    ListFileGateway {
        g,
        crl_file,
        files,
        verification,
        provider,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_lists_are_replaced_while_the_listener_runs() {
    let ListFileGateway {
        g,
        crl_file,
        mut files,
        verification,
        provider,
    } = gateway_with_list_file(ClientCertMode::Required, false).await;
    let client_chain = vec![g.pki.client_cert_der().to_vec()];
    let now = wirewarden::core::Timestamp::now();
    let served = |out: &Output| text(&out.stdout).trim() == "hello";

    assert!(served(&cli(&g, true, &[], "GET plain\n").await));
    assert!(!files.check(&verification).unwrap(), "nothing changed yet");

    std::fs::write(&crl_file, g.pki.crl_pem(true, false).unwrap()).unwrap();
    assert!(files.check(&verification).unwrap());
    assert!(!served(&cli(&g, true, &[], "GET plain\n").await));
    assert!(provider.verify_chain(&client_chain, now).is_err());
    let failures = handshake_failures(&g).await;
    assert!(
        failures.iter().any(|f| f.contains("Revoked")),
        "{failures:?}"
    );

    // A broken file is not applied: the certificate stays revoked.
    std::fs::write(
        &crl_file,
        "-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n",
    )
    .unwrap();
    assert!(files.check(&verification).is_err());
    assert!(!served(&cli(&g, true, &[], "GET plain\n").await));

    std::fs::write(&crl_file, g.pki.crl_pem(false, false).unwrap()).unwrap();
    assert!(files.check(&verification).unwrap());
    assert!(served(&cli(&g, true, &[], "GET plain\n").await));
    assert!(provider.verify_chain(&client_chain, now).is_ok());
    assert_verifies(g.audit_dir.path(), &g.keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_session_ends_when_its_certificate_is_revoked() {
    let ListFileGateway {
        g,
        crl_file,
        mut files,
        verification,
        ..
    } = gateway_with_list_file(ClientCertMode::Optional, true).await;
    // One session per login: RESP3 with the certificate, RESP2 with the certificate, RESP2
    // with a token on the same listener. No retries: a dropped connection is an error.
    let env = support::pki_env(g.addr.port(), &g.pki);
    let connect = |login: &str| {
        format!(
            "import redis, redis.backoff, redis.retry\nr = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), ssl=True, ssl_ca_certs=os.environ['CA'], decode_responses=True, socket_timeout=20, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0), {login})"
        )
    };
    let cert = "ssl_certfile=os.environ['CERT'], ssl_keyfile=os.environ['KEY']";
    let mut by_cert3 = Interactive::start(&connect(&format!("{cert}, protocol=3")), &env).await;
    let mut by_cert2 = Interactive::start(&connect(cert), &env).await;
    let mut by_token =
        Interactive::start(&connect("username='agent', password='tok-agent'"), &env).await;
    const GET: &str = "r.get('plain')";
    for client in [&mut by_cert3, &mut by_cert2, &mut by_token] {
        assert_eq!(client.eval(GET).await, "hello");
    }

    // New lists that still accept the certificate change nothing.
    std::fs::write(&crl_file, g.pki.crl_pem(false, false).unwrap()).unwrap();
    assert!(files.check(&verification).unwrap());
    for client in [&mut by_cert3, &mut by_cert2, &mut by_token] {
        assert_eq!(client.eval(GET).await, "hello");
    }

    // One certificate session has a DEL held for review when the certificate is revoked.
    by_cert2.send("r.delete('plain')").await;
    support::kinds_when(g.audit_dir.path(), &g.keys, |kinds| {
        kinds
            .iter()
            .any(|k| matches!(k, AuditEventKind::ReviewRequested { .. }))
    })
    .await;

    // Revoked: both certificate sessions end without a command from their clients (the
    // held DEL is refused and never runs); the token session goes on.
    std::fs::write(&crl_file, g.pki.crl_pem(true, false).unwrap()).unwrap();
    assert!(files.check(&verification).unwrap());
    let kinds = support::kinds_when(g.audit_dir.path(), &g.keys, |kinds| {
        support::revoked_sessions(kinds).len() == 2
    })
    .await;
    let ended = support::revoked_sessions(&kinds);
    assert!(ended.iter().all(|r| r.contains("Revoked")), "{ended:?}");
    let held = by_cert2.result().await;
    assert!(
        held.starts_with("ERROR ResponseError") && held.contains("no longer accepted"),
        "{held}"
    );
    assert_eq!(g.redis.cli(&["GET", "plain"]).unwrap().trim(), "hello");
    // Its review is cancelled on record: no reviewer is left to approve a DEL nobody waits
    // for.
    support::kinds_when(g.audit_dir.path(), &g.keys, |kinds| {
        kinds.iter().any(|k| {
            matches!(
                k,
                AuditEventKind::ReviewResolved {
                    outcome: wirewarden::core::ReviewOutcome::Cancelled,
                    ..
                }
            )
        })
    })
    .await;
    for client in [&mut by_cert3, &mut by_cert2] {
        // The connection is gone, and a new one is refused at the handshake.
        let after = client.eval(GET).await;
        assert!(after.starts_with("ERROR ConnectionError"), "{after}");
    }
    assert_eq!(by_token.eval(GET).await, "hello");
    for client in [by_cert3, by_cert2, by_token] {
        client.finish().await;
    }

    assert_verifies(g.audit_dir.path(), &g.keys);
    let kinds = events(g.audit_dir.path(), &g.keys);
    // Three sessions, then only the certificate's new connections, refused at the handshake.
    assert_eq!(sessions(&kinds).len(), 3, "{kinds:?}");
    let refused = cert_failures(&kinds);
    assert!(!refused.is_empty() && refused.iter().all(|f| f.contains("Revoked")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_certificate_is_refused_and_never_falls_back_to_auth() {
    // The CA is trusted, but no rule maps the certificate's name.
    let g = gateway(ClientCertMode::Optional, "someone-else").await;
    // A valid token after the certificate does not help: the first request is refused and
    // the connection closed.
    let out = cli(&g, true, &[], "AUTH tok-agent\nSET leaked 1\n").await;
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("WRONGPASS"), "{all}");
    assert!(!all.contains("OK"), "{all}");
    let out = cli(&g, true, &["-a", "tok-agent"], "SET leaked 2\n").await;
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("OK"), "{all}");
    for protocol in [2u8, 3] {
        ok(&python(
            &g,
            protocol,
            "try:\n    r.set('leaked', '3')\n    raise SystemExit('an unmapped certificate was served')\nexcept redis.AuthenticationError as e:\n    print('refused:', e)",
        )
        .await);
    }
    // Nothing reached the server.
    let stored = g.redis.cli(&["EXISTS", "leaked"]).unwrap();
    assert_eq!(stored.trim(), "0");

    assert_verifies(g.audit_dir.path(), &g.keys);
    let kinds = events(g.audit_dir.path(), &g.keys);
    assert!(sessions(&kinds).is_empty(), "{kinds:?}");
    let failures = cert_failures(&kinds);
    assert!(failures.len() >= 4, "{kinds:?}");
    // No token login was attempted in their place.
    assert!(
        !kinds.iter().any(|k| matches!(
            k,
            AuditEventKind::AuthenticationFailed { method, .. } if method == "token"
        )),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_refuses_a_client_without_a_certificate() {
    let g = gateway(ClientCertMode::Required, CLIENT_CN).await;
    let out = cli(
        &g,
        false,
        &["-a", "tok-agent"],
        "SET no-cert 1\nGET plain\n",
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("OK") && !stdout.contains("hello"),
        "{stdout}"
    );
    // redis-py sees the TLS alert as a connection error; the token is never asked for.
    let out = python(
        &g,
        2,
        "bare = redis.Redis(host='127.0.0.1', port=int(os.environ['PORT']), ssl=True, ssl_ca_certs=os.environ['CA'], password='tok-agent', socket_timeout=20)\ntry:\n    bare.set('no-cert', '2')\n    raise SystemExit('served without a certificate')\nexcept redis.ConnectionError as e:\n    print('refused:', e)",
    )
    .await;
    let stdout = ok(&out);
    assert!(
        stdout.to_lowercase().contains("certificate required"),
        "{stdout}"
    );
    let stored = g.redis.cli(&["EXISTS", "no-cert"]).unwrap();
    assert_eq!(stored.trim(), "0");
    // The handshake failure is on record as a refused login.
    let failures = handshake_failures(&g).await;
    assert!(
        failures.iter().any(|r| r.contains("no client certificate")),
        "{failures:?}"
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
    assert!(sessions(&events(g.audit_dir.path(), &g.keys)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_authority_fails_the_handshake() {
    // Optional: a client without a certificate could use a token, but one that presents a
    // certificate the trust anchors did not issue is refused outright.
    let g = gateway(ClientCertMode::Optional, CLIENT_CN).await;
    let dir = tempfile::tempdir().unwrap();
    let stranger = TlsMaterial::generate_in(&dir.path().join("pki"), TlsKey::EcdsaP256).unwrap();
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &g.addr.port().to_string()])
        .args(["--no-auth-warning", "-a", "tok-agent", "--tls", "--cacert"])
        .arg(g.pki.ca_file())
        .arg("--cert")
        .arg(stranger.client_cert_file())
        .arg("--key")
        .arg(stranger.client_key_file())
        .args(["SET", "stranger", "1"]);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("redis-cli finished")
        .unwrap();
    assert!(!text(&out.stdout).contains("OK"), "{}", text(&out.stdout));
    let stored = g.redis.cli(&["EXISTS", "stranger"]).unwrap();
    assert_eq!(stored.trim(), "0");
    let failures = handshake_failures(&g).await;
    assert!(
        failures
            .iter()
            .any(|r| r.contains("invalid peer certificate")),
        "{failures:?}"
    );
    assert_verifies(g.audit_dir.path(), &g.keys);
    assert!(sessions(&events(g.audit_dir.path(), &g.keys)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_without_a_certificate_logs_in_with_a_token() {
    let g = gateway(ClientCertMode::Optional, CLIENT_CN).await;
    // Without AUTH nothing runs.
    let out = cli(&g, false, &[], "GET plain\n").await;
    assert!(
        text(&out.stdout).contains("NOAUTH"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&g, false, &["-a", "tok-agent"], "GET plain\n").await;
    assert_eq!(text(&out.stdout).trim(), "hello", "{}", text(&out.stderr));
    assert_verifies(g.audit_dir.path(), &g.keys);
    let kinds = events(g.audit_dir.path(), &g.keys);
    assert_eq!(
        sessions(&kinds),
        [("agent-1".to_owned(), "static_token")],
        "{kinds:?}"
    );
}
