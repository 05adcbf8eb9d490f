//! End to end: real clients (curl, Python httpx over HTTP/1.1 and HTTP/2) through the HTTP
//! proxy to a real HTTP server on loopback that answers with customer records in every
//! content encoding, in one piece or in tiny chunks.
//!
//! Each test starts its own upstream, audit directory and proxy, so they run in parallel.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wirewarden::Pipeline;
use wirewarden::audit::{AuditSink, VerifyKeys, read_log, verify_dir};
use wirewarden::core::{AuditEventKind, Decision, Protocol, Target, Timestamp};
use wirewarden::http::{DEFAULT_HTTP_POLICY, HttpProxy, HttpTarget, Route, Routes};
use wirewarden::identity::{StaticToken, StaticTokens, StaticTokensConfig, TokenHash};
use wirewarden::mask::{Engine, FieldRule, MaskKey, Profile, Selector, Strategy};
use wirewarden::policy::RuleEngine;

const CARD: &str = "4111 1111 1111 1111";
const SSN: &str = "123-45-6789";
const EMAIL: &str = "ada@example.com";
const UPSTREAM_SECRET: &str = "upstream-secret-7f3a";
const AGENT_TOKEN: &str = "tok-agent";

fn customer(id: u32) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "name": format!("Customer {id}"),
        "email": EMAIL,
        "ssn": SSN,
        "card": CARD,
        "internal": {"api_key": "k-123456"},
        "notes": format!("called on day {id}, card {CARD} on file"),
    })
}

/// What the upstream saw of each request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        _ => data.to_vec(),
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).boxed()
}

/// The method a form body overrides a `POST` with, as `Rack::MethodOverride` reads it: the
/// value of a `_method` field, urlencoded or in a multipart part.
fn method_field(content_type: &str, body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    if content_type.starts_with("multipart/") {
        let at = text.find("name=\"_method\"")?;
        let value = text.get(at..)?.split("\r\n\r\n").nth(1)?;
        return Some(value.split("\r\n").next()?.to_owned());
    }
    text.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name.replace("%5F", "_") == "_method").then(|| value.to_owned())
    })
}

/// The method a JSON body overrides a `POST` with, as Laravel reads it: the string value of
/// a `_method` member of the top-level object (`null` when the body is not JSON).
fn method_member(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(value.as_object()?.get("_method")?.as_str()?.to_owned())
}

/// The customer API the gateway protects.
///
/// Like the frameworks that take a method override from a form (Rails, Laravel, Symfony),
/// it reads a form body whole before routing, runs a `POST` whose form has a `_method`
/// field as that method, and runs nothing when the body does not arrive complete. Like
/// Laravel, it does the same with a JSON body (a `Content-Type` containing `/json` or
/// `+json`) and its top-level `_method` member.
async fn api(req: Request<Incoming>, log: Log) -> Result<Response<UpBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut method = parts.method.clone();
    if content_type.contains("/json") || content_type.contains("+json") {
        let Ok(body) = body.collect().await else {
            return Ok(Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(full("incomplete json"))
                .unwrap());
        };
        if method == http::Method::POST
            && let Some(m) = method_member(&body.to_bytes())
        {
            method = m.to_ascii_uppercase().parse().unwrap_or(method);
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded")
        || content_type.starts_with("multipart/")
    {
        let Ok(body) = body.collect().await else {
            return Ok(Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(full("incomplete form"))
                .unwrap());
        };
        if method == http::Method::POST
            && let Some(m) = method_field(&content_type, &body.to_bytes())
        {
            method = m.to_ascii_uppercase().parse().unwrap_or(method);
        }
    }
    let req = Request::from_parts(parts, ());
    let path = req.uri().path().to_owned();
    log.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        headers: req.headers().clone(),
    });
    let accept = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // The server's preference, as real servers have one: br, then gzip, then deflate.
    // Customer 99 is served by a server that compresses whatever the client accepts.
    let coding = if path == "/customers/99" {
        "br"
    } else {
        ["br", "gzip", "deflate"]
            .into_iter()
            .find(|c| {
                accept
                    .split(',')
                    .any(|a| a.trim().split(';').next() == Some(c))
            })
            .unwrap_or("identity")
    };
    let json = |status: StatusCode, v: serde_json::Value| {
        let body = encode(coding, v.to_string().as_bytes());
        let mut r = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-customer-email", EMAIL);
        if coding != "identity" {
            r = r.header(header::CONTENT_ENCODING, coding);
        }
        r.body(full(body)).unwrap()
    };
    let resp = match (method.as_str(), path.as_str()) {
        ("GET", "/health") => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(full("ok"))
            .unwrap(),
        ("GET", "/customers") => {
            // Streamed in 7-byte chunks, so values are split across chunks.
            let all: Vec<_> = (1..=40).map(customer).collect();
            let body = encode(coding, serde_json::Value::from(all).to_string().as_bytes());
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> = body
                .chunks(7)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let mut r = Response::builder().header(header::CONTENT_TYPE, "application/json");
            if coding != "identity" {
                r = r.header(header::CONTENT_ENCODING, coding);
            }
            r.body(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
                .unwrap()
        }
        ("GET", "/events") => {
            // Server-sent events: `n` (the query, 50 by default) ticks, one every `gap`
            // milliseconds (100 by default), each with an email the profile tokenizes.
            let param = |name: &str, default: u64| -> u64 {
                req.uri()
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            };
            let (n, gap) = (param("n", 50), Duration::from_millis(param("gap", 100)));
            let ticks = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= n {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                let event = format!("data: tick {i} for {EMAIL}\n\n");
                Some((Ok(Frame::data(Bytes::from(event))), i + 1))
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(StreamBody::new(ticks).boxed())
                .unwrap()
        }
        ("GET", "/export") => Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(full(format!("raw {SSN}")))
            .unwrap(),
        ("GET", "/notes") => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(full(format!("remember: ssn {SSN}, mail {EMAIL}\n")))
            .unwrap(),
        (_, p) if p.starts_with("/customers/") => {
            let id: u32 = p
                .trim_start_matches("/customers/")
                .split('/')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            match method.as_str() {
                "GET" => json(StatusCode::OK, customer(id)),
                "POST" => json(StatusCode::OK, serde_json::json!({"refunded": id})),
                "DELETE" => Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(full(Bytes::new()))
                    .unwrap(),
                _ => json(StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({})),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such thing"}),
        ),
    };
    Ok(resp)
}

async fn start_upstream(log: Log) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

fn tokens() -> StaticTokens {
    let token = |id: &str, secret: &str, subject: &str, groups: &[&str]| StaticToken {
        id: id.into(),
        hash: TokenHash::of(secret, None),
        subject: subject.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        attributes: BTreeMap::default(),
        expires_at: None,
    };
    StaticTokens::new(StaticTokensConfig {
        hash_key: None,
        tokens: vec![
            token("agent", AGENT_TOKEN, "agent-1", &["agents"]),
            token("other", "tok-other", "agent-2", &["agents"]),
            // Expires soon after the gateway starts.
            StaticToken {
                expires_at: Timestamp::now().checked_add(BRIEF),
                ..token("brief", "tok-brief", "agent-3", &["agents"])
            },
        ],
    })
    .unwrap()
}

/// How long after the gateway starts the token `tok-brief` expires.
const BRIEF: Duration = Duration::from_secs(6);

struct Gateway {
    addr: SocketAddr,
    log: Log,
    pipeline: Arc<Pipeline>,
    audit_dir: tempfile::TempDir,
    keys: VerifyKeys,
    _task: tokio::task::JoinHandle<()>,
}

async fn gateway() -> Gateway {
    gateway_with(|sink| sink).await
}

async fn gateway_with(wrap: impl FnOnce(Arc<dyn AuditSink>) -> Arc<dyn AuditSink>) -> Gateway {
    gateway_tls(wrap, None).await
}

async fn gateway_tls(
    wrap: impl FnOnce(Arc<dyn AuditSink>) -> Arc<dyn AuditSink>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Gateway {
    gateway_configured(wrap, tls, |_| {}).await
}

/// [`gateway_tls`], the target changed by `configure` first.
async fn gateway_configured(
    wrap: impl FnOnce(Arc<dyn AuditSink>) -> Arc<dyn AuditSink>,
    tls: Option<Arc<rustls::ServerConfig>>,
    configure: impl FnOnce(&mut HttpTarget),
) -> Gateway {
    let log: Log = Arc::default();
    let upstream = start_upstream(log.clone()).await;
    let (audit_dir, keys, sink) = support::audit_trail();
    let policy = format!(
        "{DEFAULT_HTTP_POLICY}
[[rule]]
id = \"no-deletes\"
verbs = [\"DELETE\"]
action = \"deny\"
reason = \"agents do not delete customers\"

[[rule]]
id = \"refunds-need-ops\"
verbs = [\"POST\"]
paths = [\"/customers/{{id}}/refund\"]
action = \"review\"
reviewers = [\"ops\"]
timeout = \"20s\"

[[rule]]
id = \"events-need-a-grant\"
subjects = [\"agent-2\"]
paths = [\"/events\"]
action = \"review\"
reviewers = [\"ops\"]
timeout = \"20s\"

[[rule]]
id = \"agents-annotate\"
groups = [\"agents\"]
verbs = [\"POST\"]
paths = [\"/customers/{{id}}/notes\"]
action = \"allow\"

[[rule]]
id = \"agents-read\"
groups = [\"agents\"]
max_class = \"read\"
action = \"allow\"
"
    );
    let masks = Engine::builder()
        .key(MaskKey::new([7; 32]))
        .profile(
            Profile::builder("api")
                .strategy("email", Strategy::Tokenize)
                .rule(FieldRule::new(
                    Selector::json_path("$..api_key").unwrap(),
                    Strategy::redact(),
                ))
                .rule(FieldRule::new(
                    Selector::header("x-customer-*"),
                    Strategy::redact(),
                )),
        )
        .default_profile("api")
        .build()
        .unwrap();
    let engine = Arc::new(RuleEngine::from_toml(&policy).unwrap());
    let pipeline = Arc::new(
        Pipeline::builder(Arc::new(tokens()), engine)
            .masking(Arc::new(masks))
            .audit(wrap(Arc::new(sink)))
            .build()
            .unwrap(),
    );
    let routes = Routes::new()
        .route(
            Route::new(Some(http::Method::GET), "/health")
                .unwrap()
                .masked(false),
        )
        .route(Route::new(Some(http::Method::GET), "/customers").unwrap())
        .route(Route::new(Some(http::Method::GET), "/customers/{id}").unwrap())
        .route(Route::new(Some(http::Method::DELETE), "/customers/{id}").unwrap())
        .route(Route::new(Some(http::Method::POST), "/customers/{id}/refund").unwrap())
        .route(Route::new(Some(http::Method::POST), "/customers/{id}/notes").unwrap())
        .route(Route::new(Some(http::Method::GET), "/export").unwrap())
        .route(Route::new(Some(http::Method::GET), "/notes").unwrap())
        .route(Route::new(Some(http::Method::GET), "/events").unwrap());
    let target = HttpTarget::new(
        Target::new("crm-api", Protocol::Http).unwrap(),
        format!("http://{upstream}"),
    )
    .routes(routes)
    .credential(
        header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {UPSTREAM_SECRET}")).unwrap(),
    );
    let mut target = target;
    target.tls = tls;
    configure(&mut target);
    let proxy = HttpProxy::new(pipeline.clone(), target).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = proxy.listen(listener).await;
    });
    Gateway {
        addr,
        log,
        pipeline,
        audit_dir,
        keys,
        _task: task,
    }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn events(&self) -> Vec<wirewarden::core::AuditEvent> {
        // Outcomes are recorded when a response body ends; give the writer a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.pipeline.audit_sink().flush().await.unwrap();
        read_log(self.audit_dir.path(), &self.keys)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    }
}

async fn run(cmd: &str, args: Vec<String>) -> Output {
    let cmd = cmd.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .expect("run client")
    })
    .await
    .unwrap()
}

async fn curl(args: &[&str]) -> (String, String) {
    let mut a = vec!["-sS".to_owned(), "--max-time".into(), "20".into()];
    a.extend(args.iter().map(|s| (*s).to_owned()));
    let out = run("curl", a).await;
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn python(script: &str) -> String {
    let out = run("python3", vec!["-c".into(), script.to_owned()]).await;
    assert!(
        out.status.success(),
        "python: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_masked(body: &str) {
    assert!(!body.contains(SSN), "{body}");
    assert!(!body.contains(CARD), "{body}");
    assert!(!body.contains("4111111111111111"), "{body}");
    assert!(!body.contains(EMAIL), "{body}");
    assert!(!body.contains("k-123456"), "{body}");
}

fn agent_auth() -> String {
    format!("Authorization: Bearer {AGENT_TOKEN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reads_masked_json_in_every_content_encoding() {
    let gw = gateway().await;
    let auth = agent_auth();
    for coding in ["identity", "gzip", "deflate", "br"] {
        let accept = format!("Accept-Encoding: {coding}");
        let (out, err) = curl(&[
            "--compressed",
            "-D",
            "/dev/stderr",
            "-H",
            &auth,
            "-H",
            &accept,
            &gw.url("/customers/7"),
        ])
        .await;
        assert_masked(&out);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["id"], 7);
        assert_eq!(v["name"], "Customer 7");
        // The e-mail is tokenized (stable), the API key redacted by its JSON path.
        assert_ne!(v["email"], EMAIL);
        assert!(v["email"].is_string());
        assert_ne!(v["internal"]["api_key"], "k-123456");
        let head = err.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{err}");
        if coding == "identity" {
            assert!(!head.contains("content-encoding"), "{err}");
        } else {
            assert!(
                head.contains(&format!("content-encoding: {coding}")),
                "{err}"
            );
        }
        // Headers are masked too.
        assert!(!head.contains(EMAIL), "{err}");
    }
    // The upstream saw the gateway's credential, never the agent's token.
    let seen = gw.log.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(
            s.headers[header::AUTHORIZATION],
            format!("Bearer {UPSTREAM_SECRET}").as_str()
        );
        assert!(!format!("{:?}", s.headers).contains(AGENT_TOKEN));
    }

    let events = gw.events().await;
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::SessionStarted {
                principal, target, ..
            } => Some((principal.subject.clone(), target.protocol)),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 4, "one connection per curl run");
    assert!(
        started
            .iter()
            .all(|(s, p)| s == "agent-1" && *p == Protocol::Http)
    );
    let completed: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::CommandCompleted {
                masked,
                bytes,
                error,
                ..
            } => Some((masked.clone(), *bytes, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(completed.len(), 4);
    for (masked, bytes, error) in &completed {
        assert!(error.is_none(), "{error:?}");
        assert!(*bytes > 0);
        assert!(masked.total() >= 4, "{masked:?}");
    }
    verify_dir(gw.audit_dir.path(), &gw.keys).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_ignores_accept_encoding_is_answered_in_a_coding_the_client_took() {
    let gw = gateway().await;
    let auth = agent_auth();
    // curl without --compressed: it accepts no coding and would print brotli bytes as is.
    let (out, err) = curl(&[
        "-D",
        "/dev/stderr",
        "-H",
        &auth,
        "-H",
        "Accept-Encoding: gzip",
        &gw.url("/customers/99"),
    ])
    .await;
    let head = err.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{err}");
    assert!(!head.contains("content-encoding"), "{err}");
    assert_masked(&out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["id"], 99);
    assert_ne!(v["email"], EMAIL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpx_over_http2_streams_a_chunked_masked_list() {
    let gw = gateway().await;
    let script = format!(
        r#"
import httpx, json
with httpx.Client(http1=False, http2=True, headers={{"authorization": "Bearer {AGENT_TOKEN}"}}) as c:
    for enc in ["identity", "gzip", "br"]:
        r = c.get("{url}", headers={{"accept-encoding": enc}})
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.http_version == "HTTP/2", r.http_version
        rows = json.loads(r.text)
        assert len(rows) == 40
        assert rows[5]["name"] == "Customer 6"
        print(r.text)
    # The same connection goes on after a denial.
    r = c.delete("{base}/customers/3")
    assert r.status_code == 403, r.status_code
    body = r.json()
    assert body["error"]["code"] == "denied", body
    assert "no-deletes" in body["error"]["message"], body
    r = c.get("{base}/customers/3")
    assert r.status_code == 200
    print(r.text)
"#,
        url = gw.url("/customers"),
        base = gw.url(""),
    );
    let out = python(&script).await;
    assert_masked(&out);
    // The upstream never saw the DELETE.
    let seen = gw.log.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.method != "DELETE"));
    assert_eq!(seen.len(), 4);

    let events = gw.events().await;
    let sessions = events
        .iter()
        .filter(|e| matches!(e.kind, AuditEventKind::SessionStarted { .. }))
        .count();
    assert_eq!(
        sessions, 1,
        "one HTTP/2 connection, one identity: one session"
    );
    let denied = events.iter().any(|e| {
        matches!(&e.kind, AuditEventKind::CommandDecided { decision: Decision::Deny { rule, .. }, command, .. }
            if rule.as_str() == "no-deletes" && command.verb == "DELETE")
    });
    assert!(denied);
    verify_dir(gw.audit_dir.path(), &gw.keys).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_required_and_never_forwarded() {
    let gw = gateway().await;
    let script = format!(
        r#"
import httpx
r = httpx.get("{url}")
assert r.status_code == 401, r.status_code
assert r.headers["www-authenticate"].startswith("Bearer"), r.headers
assert r.json()["error"]["code"] == "unauthenticated"
r = httpx.get("{url}", headers={{"authorization": "Bearer not-a-token"}})
assert r.status_code == 401, r.status_code
r = httpx.get("{url}", auth=("agent", "{AGENT_TOKEN}"))
assert r.status_code == 401, r.status_code
r = httpx.get("{url}", headers={{"authorization": "Bearer {AGENT_TOKEN}"}})
assert r.status_code == 200, r.status_code
"#,
        url = gw.url("/customers/1"),
    );
    python(&script).await;
    assert_eq!(gw.log.lock().unwrap().len(), 1);
    let events = gw.events().await;
    let failures = events
        .iter()
        .filter(|e| matches!(e.kind, AuditEventKind::AuthenticationFailed { .. }))
        .count();
    assert_eq!(failures, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_masked_or_classified_is_refused() {
    let gw = gateway().await;
    let auth = agent_auth();
    // A binary body on a masked route.
    let (out, _) = curl(&["-H", &auth, "-w", "\n%{http_code}", &gw.url("/export")]).await;
    assert!(out.ends_with("\n502"), "{out}");
    assert!(!out.contains(SSN));
    assert!(out.contains("unmaskable_response"), "{out}");
    // A range of a masked resource.
    let (out, _) = curl(&[
        "-H",
        &auth,
        "-H",
        "Range: bytes=0-10",
        "-w",
        "\n%{http_code}",
        &gw.url("/customers/1"),
    ])
    .await;
    assert!(!out.ends_with("\n200") && !out.ends_with("\n206"), "{out}");
    assert!(!out.contains(SSN));
    // A path no route describes is Unknown, and denied by the default rule.
    let (out, _) = curl(&["-H", &auth, "-w", "\n%{http_code}", &gw.url("/admin/users")]).await;
    assert!(out.ends_with("\n403"), "{out}");
    assert!(out.contains("http-no-unknown-route"), "{out}");
    // Text is masked by content; an unmasked route passes through untouched.
    let (out, _) = curl(&["-H", &auth, &gw.url("/notes")]).await;
    assert!(out.starts_with("remember: ssn "), "{out}");
    assert_masked(&out);
    let (out, _) = curl(&["-H", &auth, &gw.url("/health")]).await;
    assert_eq!(out, "ok");
    // Neither the export's body nor the unknown path reached a client; the unknown path
    // never reached the upstream.
    let seen = gw.log.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.path != "/admin/users"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_goes_on_after_approval() {
    let gw = gateway().await;
    let url = gw.url("/customers/9/refund");
    let client = tokio::spawn(async move {
        python(&format!(
            r#"
import httpx
r = httpx.post("{url}", headers={{"authorization": "Bearer {AGENT_TOKEN}"}}, json={{"amount": 20}}, timeout=30)
print(r.status_code, r.text)
"#
        ))
        .await
    });
    let reviews = gw.pipeline.reviews().clone();
    let pending = support::pending_review(&reviews).await;
    // The reviewer sees the body, and the approval binds to it.
    assert_eq!(
        pending.command_text, "POST /customers/9/refund\n\n{\"amount\":20}",
        "{:?}",
        pending.command_text
    );
    assert!(gw.log.lock().unwrap().is_empty(), "held, not forwarded");
    support::approve(&reviews, pending.id, "ops").await.unwrap();
    let out = client.await.unwrap();
    assert!(out.starts_with("200 "), "{out}");
    assert!(out.contains("\"refunded\":9"), "{out}");
    let seen = gw.log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
}

/// A client that drops its connection while its request waits for review gives up the
/// wait, over HTTP/1.1 and HTTP/2 alike: the review is cancelled on record, a reviewer can
/// no longer approve it, and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_whose_client_leaves_is_cancelled() {
    let gw = gateway().await;
    let reviews = gw.pipeline.reviews().clone();
    for http2 in [false, true] {
        let mut args = vec![
            "-sS".to_owned(),
            "--max-time".to_owned(),
            "30".to_owned(),
            "-H".to_owned(),
            agent_auth(),
            "--json".to_owned(),
            "{\"amount\": 5}".to_owned(),
        ];
        if http2 {
            args.push("--http2-prior-knowledge".to_owned());
        }
        args.push(gw.url("/customers/4/refund"));
        let mut client = tokio::process::Command::new("curl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pending = support::pending_review(&reviews).await;
        client.kill().await.unwrap();
        support::events_when(&gw.pipeline, gw.audit_dir.path(), &gw.keys, |events| {
            support::review_cancelled(events, pending.id)
        })
        .await;
        let late = support::approve(&reviews, pending.id, "ops").await;
        assert!(late.is_err(), "http2: {http2}");
    }
    assert!(gw.log.lock().unwrap().is_empty());
}

/// A token that expires while its session is open ends the session (on record) and its
/// next request is a `401` saying `invalid_token`, as RFC 6750 asks, so the client fetches
/// a fresh token; a request with a current token on the same connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_ends_its_session_with_invalid_token() {
    let gw = gateway().await;
    let expired_by = tokio::time::Instant::now() + BRIEF + Duration::from_millis(500);
    let mut client = support::Interactive::start(
        &format!(
            "import httpx\nc = httpx.Client(timeout=20, limits=httpx.Limits(keepalive_expiry=60))\nurl = '{}'\nget = lambda token: (lambda r: f\"{{r.status_code}} {{r.headers.get('www-authenticate')}} {{r.json()['error']['code'] if r.status_code >= 400 else 'ok'}}\")(c.get(url, headers={{'Authorization': 'Bearer ' + token}}))",
            gw.url("/customers/1")
        ),
        &[],
    )
    .await;
    assert_eq!(client.eval("get('tok-brief')").await, "200 None ok");
    tokio::time::sleep_until(expired_by).await;
    assert_eq!(
        client.eval("get('tok-brief')").await,
        "401 Bearer realm=\"wirewarden\", error=\"invalid_token\" invalid_token"
    );
    // On the same connection, a current token is served.
    assert_eq!(client.eval("get('tok-agent')").await, "200 None ok");
    client.finish().await;
    let events = gw.events().await;
    let ended = support::end_reasons(&events);
    assert_eq!(
        ended.first(),
        Some(&wirewarden::core::SessionEndReason::CredentialExpired),
        "{ended:?}"
    );
    // Both sessions on the one connection (the same client address).
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditEventKind::SessionStarted {
                principal,
                client_addr,
                ..
            } => Some((principal.subject.clone(), client_addr.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 2, "{started:?}");
    assert_eq!((&*started[0].0, &*started[1].0), ("agent-3", "agent-1"));
    assert_eq!(started[0].1, started[1].1);
    support::assert_verifies(gw.audit_dir.path(), &gw.keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_intent_cannot_be_recorded_is_refused() {
    let gw = gateway_with(|sink| Arc::new(support::RefuseIntents(sink))).await;
    let auth = agent_auth();
    let (out, _) = curl(&["-H", &auth, "-w", "\n%{http_code}", &gw.url("/customers/1")]).await;
    assert!(out.ends_with("\n503"), "{out}");
    assert!(out.contains("audit_unavailable"), "{out}");
    assert!(gw.log.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_never_reach_the_upstream() {
    let gw = gateway().await;
    let attempts: [&[u8]; 3] = [
        b"POST /customers/1/refund HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-agent\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /customers/2 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /customers/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-agent\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"GET /customers/1/../../admin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-agent\r\n\r\n",
    ];
    for raw in attempts {
        let mut sock = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        sock.write_all(raw).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    }
    assert!(gw.log.lock().unwrap().is_empty());
    // The ambiguous path is refused after parsing, and recorded as a protocol error.
    let events = gw.events().await;
    assert!(events.iter().any(|e| matches!(&e.kind,
        AuditEventKind::ProtocolError { error, .. } if error.starts_with("ambiguous_path"))));
}

/// A server configuration for `localhost` with a fresh self-signed certificate, and the
/// certificate's PEM file (in the returned directory) for clients to trust.
fn self_signed_tls() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<rustls::ServerConfig>,
) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let chain = vec![cert.cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let tls = wirewarden::tls::server_config(chain, key).unwrap();
    (dir, ca, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_serves_http2_and_http1() {
    let (_dir, ca, tls) = self_signed_tls();
    let gw = gateway_tls(|sink| sink, Some(tls)).await;
    let url = format!("https://localhost:{}/customers/4", gw.addr.port());
    let ca = ca.display().to_string();
    let auth = agent_auth();
    for version in ["--http2", "--http1.1"] {
        let (out, err) = curl(&[
            version,
            "--cacert",
            &ca,
            "-H",
            &auth,
            "-D",
            "/dev/stderr",
            "--resolve",
            &format!("localhost:{}:127.0.0.1", gw.addr.port()),
            &url,
        ])
        .await;
        assert_masked(&out);
        assert!(out.contains("\"name\":\"Customer 4\""), "{out}");
        let want = if version == "--http2" {
            "HTTP/2 200"
        } else {
            "HTTP/1.1 200"
        };
        assert!(err.starts_with(want), "{err}");
    }
    let events = gw.events().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, AuditEventKind::SessionStarted { tls: true, .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_to_bind_is_never_put_to_a_reviewer() {
    let gw = gateway().await;
    let out = python(&format!(
        r#"
import httpx
r = httpx.post("{url}", headers={{"authorization": "Bearer {AGENT_TOKEN}"}}, content=b"x" * (2 << 20), timeout=30)
print(r.status_code, r.json()["error"]["code"])
"#,
        url = gw.url("/customers/9/refund")
    ))
    .await;
    assert_eq!(out.trim(), "413 body_too_large_to_review");
    let pending = gw
        .pipeline
        .reviews()
        .store()
        .pending(Timestamp::now())
        .await
        .unwrap();
    assert!(pending.is_empty());
    assert!(gw.log.lock().unwrap().is_empty());
}

/// An agent that names each request (its run and tool call in the `User-Agent`) on one
/// kept-alive connection renames its session: the `ApplicationChanged` record precedes the
/// intent of the first request under the new name, and a repeated name records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_agent_on_a_connection_renames_its_session() {
    let gw = gateway().await;
    let auth = agent_auth();
    let mut args: Vec<String> = Vec::new();
    for (i, call) in ["a", "a", "b"].iter().enumerate() {
        if i > 0 {
            args.push("--next".into());
        }
        args.extend([
            "-sS".into(),
            "-H".into(),
            auth.clone(),
            "-A".into(),
            format!("agent run=1 call={call}"),
            gw.url(&format!("/customers/{}", i + 1)),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, _) = curl(&args).await;
    assert_masked(&out);
    let events = gw.events().await;
    let kinds: Vec<AuditEventKind> = events.iter().map(|e| e.kind.clone()).collect();
    let sessions = kinds
        .iter()
        .filter(|k| matches!(k, AuditEventKind::SessionStarted { .. }))
        .count();
    assert_eq!(
        sessions, 1,
        "one kept-alive connection, one identity: {kinds:?}"
    );
    let at_decision: Vec<Option<String>> = support::applications_at_decision(&kinds)
        .into_iter()
        .map(|(_, app)| app)
        .collect();
    let name = |c: &str| Some(format!("agent run=1 call={c}"));
    assert_eq!(at_decision, [name("a"), name("a"), name("b")]);
    let changes = events
        .iter()
        .filter(|e| matches!(e.kind, AuditEventKind::ApplicationChanged { .. }))
        .count();
    assert_eq!(changes, 1);
}

/// What curl printed of a stream of `/events` with `token`, and whether it ended cleanly.
async fn stream_events(g: &Gateway, token: &str, n: u32) -> (String, String, bool) {
    let (stdout, stderr, status) = stream_events_with(g, token, &format!("n={n}")).await;
    (stdout, stderr, status.success())
}

/// What curl printed of a stream of `/events?{query}` with `token` (given 30 s), and how it
/// exited.
async fn stream_events_with(
    g: &Gateway,
    token: &str,
    query: &str,
) -> (String, String, std::process::ExitStatus) {
    let out = run(
        "curl",
        vec![
            "-sS".into(),
            "-N".into(),
            "--max-time".into(),
            "30".into(),
            "-H".into(),
            format!("Authorization: Bearer {token}"),
            g.url(&format!("/events?{query}")),
        ],
    )
    .await;
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status,
    )
}

/// The error the trail holds for the `/events` request that completed.
async fn events_outcome(g: &Gateway) -> Option<String> {
    let events = support::events_when(&g.pipeline, g.audit_dir.path(), &g.keys, |events| {
        events
            .iter()
            .any(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. }))
    })
    .await;
    support::outcome_error(&events, |command| command.text.starts_with("GET /events")).flatten()
}

/// A response a grant let through streams only while the grant lasts: past its expiry the
/// body is cut (the client sees it break off, not end), and the outcome says why. Ticks
/// sent before went out masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_the_grant_that_allowed_it() {
    let g = gateway().await;
    let grant = support::read_grant("agent-2", "crm-api", Duration::from_secs(2));
    g.pipeline.grants().issue(grant).await.unwrap();
    // 100 ticks take ten seconds.
    let (stdout, stderr, clean) = stream_events(&g, "tok-other", 100).await;
    assert!(!clean, "the stream ended cleanly: {stdout}");
    assert!(stdout.contains("data: tick 0 for "), "{stdout}\n{stderr}");
    assert!(!stdout.contains("tick 99"), "{stdout}");
    assert!(!stdout.contains(EMAIL), "{stdout}");
    let error = events_outcome(&g).await;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("response cut: the grant that allowed it expired")),
        "{error:?}"
    );
    verify_dir(g.audit_dir.path(), &g.keys).unwrap();
}

/// A stream that waits for its next event when its grant expires is cut then, not when
/// (if ever) that event comes: the client is not left holding a response no decision
/// stands behind, and the trail says when it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_is_cut_when_its_grant_expires() {
    let g = gateway().await;
    let grant = support::read_grant("agent-2", "crm-api", Duration::from_secs(2));
    g.pipeline.grants().issue(grant).await.unwrap();
    // One tick, then the next an hour later.
    let (stdout, stderr, status) = stream_events_with(&g, "tok-other", "n=2&gap=3600000").await;
    assert!(stdout.contains("data: tick 0 for "), "{stdout}\n{stderr}");
    // curl's 28 is its own timeout: the stream would still be open.
    assert!(
        !status.success() && status.code() != Some(28),
        "{status:?}: {stdout}\n{stderr}"
    );
    let error = events_outcome(&g).await;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("response cut: the grant that allowed it expired")),
        "{error:?}"
    );
    verify_dir(g.audit_dir.path(), &g.keys).unwrap();
}

/// A response streamed to a session whose credential expires is cut then, as a PostgreSQL
/// or Redis session ends with its credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_the_credential_of_its_session() {
    let g = gateway().await;
    // `tok-brief` expires six seconds after the gateway starts; 200 ticks take twenty.
    let (stdout, _, clean) = stream_events(&g, "tok-brief", 200).await;
    assert!(!clean, "the stream ended cleanly: {stdout}");
    assert!(stdout.contains("data: tick 0 for "), "{stdout}");
    assert!(!stdout.contains("tick 199"), "{stdout}");
    let error = events_outcome(&g).await;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("response cut: the credential of this session expired")),
        "{error:?}"
    );
    // A stream with no such deadline runs to its end.
    let (stdout, stderr, clean) = stream_events(&g, AGENT_TOKEN, 5).await;
    assert!(clean && stdout.contains("tick 4"), "{stdout}\n{stderr}");
}

/// A response still streaming has its request decided again (here every 200 ms): once the
/// grant that allowed it is revoked, it is cut, and the outcome says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_grant_is_revoked() {
    let g = gateway_configured(
        |s| s,
        None,
        |t| {
            t.stream_recheck = Duration::from_millis(200);
        },
    )
    .await;
    let grant = support::read_grant("agent-2", "crm-api", Duration::from_secs(3600));
    let id = grant.id;
    g.pipeline.grants().issue(grant).await.unwrap();
    let (audit_dir, keys) = (g.audit_dir.path().to_owned(), g.keys.clone());
    let pipeline = g.pipeline.clone();
    let revoke = tokio::spawn(async move {
        // Revoked once the request is on record as allowed: its response is streaming.
        support::events_when(&pipeline, &audit_dir, &keys, |events| {
            events.iter().any(|e| {
                matches!(&e.kind, AuditEventKind::CommandDecided { command, decision: Decision::Allow { .. }, .. }
                    if command.text.starts_with("GET /events"))
            })
        })
        .await;
        pipeline
            .grants()
            .revoke(id, "ops-lead", Timestamp::now())
            .await
            .unwrap();
    });
    let (stdout, stderr, clean) = stream_events(&g, "tok-other", 100).await;
    revoke.await.unwrap();
    assert!(!clean, "the stream ended cleanly: {stdout}");
    assert!(stdout.contains("data: tick 0 for "), "{stdout}\n{stderr}");
    assert!(!stdout.contains("tick 99"), "{stdout}");
    let error = events_outcome(&g).await;
    assert!(
        error.as_deref().is_some_and(
            |e| e.contains("response cut: ") && e.contains("(rule events-need-a-grant)")
        ),
        "{error:?}"
    );
    verify_dir(g.audit_dir.path(), &g.keys).unwrap();
}

/// Over HTTP/2 the cut resets the stream: the client sees it end in error, not cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_is_reset_when_its_grant_expires() {
    let (_dir, ca, tls) = self_signed_tls();
    let g = gateway_tls(|sink| sink, Some(tls)).await;
    let grant = support::read_grant("agent-2", "crm-api", Duration::from_secs(2));
    g.pipeline.grants().issue(grant).await.unwrap();
    let port = g.addr.port();
    let out = run(
        "curl",
        vec![
            "-sS".into(),
            "-N".into(),
            "--http2".into(),
            "--max-time".into(),
            "30".into(),
            "--cacert".into(),
            ca.display().to_string(),
            "--resolve".into(),
            format!("localhost:{port}:127.0.0.1"),
            "-H".into(),
            "Authorization: Bearer tok-other".into(),
            format!("https://localhost:{port}/events?n=100"),
        ],
    )
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "the stream ended cleanly: {stdout}");
    assert!(stdout.contains("data: tick 0 for "), "{stdout}\n{stderr}");
    assert!(!stdout.contains("tick 99"), "{stdout}");
    let error = events_outcome(&g).await;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("response cut: the grant that allowed it expired")),
        "{error:?}"
    );
}

/// A `POST` whose form body carries a `_method` field would be decided as the `POST` it is
/// and run by the upstream as the method the field names. Whether the field is in what the
/// gateway reads ahead (refused before the decision) or in the streamed rest of a long body
/// (the upstream's body is cut short, so its form is never complete), the upstream never runs
/// the request and the client gets `400 method_override`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_field_in_a_form_body_never_reaches_the_upstream() {
    let gw = gateway().await;
    let auth = agent_auth();
    let url = gw.url("/customers/1/notes");

    // A form without the field goes through as the POST it is.
    let (out, _) = curl(&[
        "-H",
        &auth,
        "-d",
        "note=hello",
        "-w",
        "\n%{http_code}",
        &url,
    ])
    .await;
    assert!(out.ends_with("\n200"), "{out}");

    for form in [
        &["-d", "note=hi&_method=DELETE"][..],
        &["-d", "%5Fmethod=DELETE"],
        &["-d", "note=hi&_METHOD[]=delete"],
        &["-F", "note=hi", "-F", "_method=DELETE"],
        // No Content-Type at all: Rack reads such a POST body as a form.
        &["-H", "Content-Type:", "--data-binary", "_method=DELETE"],
    ] {
        let mut args = vec!["-H", auth.as_str(), "-w", "\n%{http_code}"];
        args.extend_from_slice(form);
        args.push(&url);
        let (out, _) = curl(&args).await;
        assert!(out.ends_with("\n400"), "{form:?}: {out}");
        assert!(out.contains("method_override"), "{form:?}: {out}");
    }

    // Past what is read ahead (1 MiB): the field at the end of a 2 MiB form, as a field
    // and as a bare name that only the body's end decides, over HTTP/1.1 and HTTP/2.
    let out = python(&format!(
        r#"
import httpx
h = {{"authorization": "Bearer {AGENT_TOKEN}"}}
form = {{**h, "content-type": "application/x-www-form-urlencoded"}}
for http2 in (False, True):
    with httpx.Client(http1=not http2, http2=http2, timeout=30) as c:
        r = c.post("{url}", headers=h, data={{"note": "x" * (2 << 20), "_method": "DELETE"}})
        print(r.http_version, r.status_code, r.json()["error"]["code"])
        r = c.post("{url}", headers=form, content=b"note=" + b"x" * (2 << 20) + b"&_method")
        print(r.http_version, r.status_code, r.json()["error"]["code"])
"#
    ))
    .await;
    assert_eq!(
        out.trim(),
        "HTTP/1.1 400 method_override\nHTTP/1.1 400 method_override\n\
         HTTP/2 400 method_override\nHTTP/2 400 method_override"
    );

    assert_only_the_clean_post_ran(&gw, 4).await;
}

/// A `POST` whose JSON body has a top-level `_method` member is run by Laravel as the method
/// it names. Refused like a form field: before the decision when the member is in what the
/// gateway reads ahead, by cutting the upstream's body when it comes last in a body over
/// 1 MiB; the upstream never runs a `DELETE`, and a `_method` that is a value or a nested
/// key goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_member_in_a_json_body_never_reaches_the_upstream() {
    let gw = gateway().await;
    let auth = agent_auth();
    let url = gw.url("/customers/1/notes");

    // `_method` as a value, a nested key, or text in a string goes through as the POST.
    let (out, _) = curl(&[
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"note":"_method","meta":{"_method":"DELETE"},"text":"\"_method\":\"DELETE\""}"#,
        "-w",
        "\n%{http_code}",
        &url,
    ])
    .await;
    assert!(out.ends_with("\n200"), "{out}");

    for (content_type, body) in [
        ("application/json", r#"{"_method":"DELETE"}"#),
        (
            "application/json",
            r#"{"note":"hi", "\u005fmethod" : "DELETE"}"#,
        ),
        (
            "application/vnd.api+json",
            r#"{"\u005F\u006Dethod":"DELETE"}"#,
        ),
        (
            "application/json; charset=utf-8",
            r#"garbage {"_method":"DELETE"}"#,
        ),
    ] {
        let ct = format!("Content-Type: {content_type}");
        let (out, _) = curl(&[
            "-H",
            &auth,
            "-H",
            &ct,
            "--data-binary",
            body,
            "-w",
            "\n%{http_code}",
            &url,
        ])
        .await;
        assert!(out.ends_with("\n400"), "{body}: {out}");
        assert!(out.contains("method_override"), "{body}: {out}");
    }

    // Past what is read ahead (1 MiB): the member last in a 2 MiB object, over HTTP/1.1 and
    // HTTP/2.
    let out = python(&format!(
        r#"
import httpx
h = {{"authorization": "Bearer {AGENT_TOKEN}"}}
for http2 in (False, True):
    with httpx.Client(http1=not http2, http2=http2, timeout=30) as c:
        r = c.post("{url}", headers=h, json={{"note": "x" * (2 << 20), "items": [{{"_method": "PUT"}}], "_method": "DELETE"}})
        print(r.http_version, r.status_code, r.json()["error"]["code"])
"#
    ))
    .await;
    assert_eq!(
        out.trim(),
        "HTTP/1.1 400 method_override\nHTTP/2 400 method_override"
    );

    assert_only_the_clean_post_ran(&gw, 2).await;
}

/// The upstream ran only the one clean `POST` of a method-override test; the overrides
/// refused before the decision left a protocol error, and each of the `cut` long bodies cut
/// short after it an outcome that says why.
async fn assert_only_the_clean_post_ran(gw: &Gateway, cut: usize) {
    let seen: Vec<_> = gw
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    assert_eq!(seen, [("POST".to_owned(), "/customers/1/notes".to_owned())]);
    let events = gw.events().await;
    assert!(events.iter().any(|e| matches!(&e.kind,
        AuditEventKind::ProtocolError { error, .. } if error.starts_with("method_override"))));
    let outcomes = events
        .iter()
        .filter(|e| matches!(&e.kind,
            AuditEventKind::CommandCompleted { error: Some(error), .. } if error.contains("method_override")))
        .count();
    assert_eq!(outcomes, cut);
}
