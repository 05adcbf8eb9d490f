//! A recording upstream, a test gate and the inspection front, all on loopback.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::Layer;
use wirewarden_core::Command;
use wirewarden_http::inspect::InspectLayer;
use wirewarden_http::route::{Route, RouteMatch, Routes};
use wirewarden_http::server::serve_connection_with_gate;
use wirewarden_http::strict::Limits;
use wirewarden_http::upstream::{Upstream, UpstreamSettings};
use wirewarden_http::{Admission, Forward, Gate, Outcome, Rejection, Verdict};
use wirewarden_mask::Profile;

pub const TOKEN: &str = "agent-t0ken";
pub const UPSTREAM_KEY: &str = "x-upstream-key";
pub const UPSTREAM_SECRET: &str = "gateway-held-s3cret";
pub const CUSTOMER_JSON: &str =
    r#"{"name":"Ann Lee","ssn":"123-45-6789","note":"card 4111 1111 1111 1111 on file"}"#;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP/1.1 server that records every request it receives.
#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

pub async fn start_upstream() -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = Recorder {
        addr,
        seen: Arc::clone(&seen),
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let target = parts
                            .uri
                            .path_and_query()
                            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
                        seen.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            target: target.clone(),
                            headers: parts.headers,
                            body: body.clone(),
                        });
                        let resp = if target.starts_with("/public/stream") {
                            // One chunk, then nothing more: the body never ends.
                            let first = futures_util::stream::iter([Ok::<_, Infallible>(
                                http_body::Frame::data(Bytes::from_static(b"first chunk")),
                            )]);
                            let body =
                                http_body_util::StreamBody::new(futures_util::StreamExt::chain(
                                    first,
                                    futures_util::stream::pending(),
                                ));
                            return Ok::<_, Infallible>(Response::new(
                                http_body_util::combinators::UnsyncBoxBody::new(body),
                            ));
                        } else if target.starts_with("/customers/") {
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(CUSTOMER_JSON.as_bytes())))
                        } else {
                            Response::builder()
                                .header("x-from", "upstream")
                                .body(Full::new(Bytes::from(format!(
                                    "ok {} {} {}",
                                    parts.method,
                                    target,
                                    body.len()
                                ))))
                        };
                        Ok::<_, Infallible>(
                            resp.unwrap()
                                .map(http_body_util::combinators::UnsyncBoxBody::new),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    rec
}

/// A refusal `Gate::refused` was told about: its code and the client's address.
pub type Refused = (&'static str, Option<SocketAddr>);

/// What the gate saw of one admission.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub command: Command,
    pub route: Option<RouteMatch>,
    pub bearer: Option<String>,
    pub headers: HeaderMap,
    pub peer: Option<SocketAddr>,
}

/// Allows requests with [`TOKEN`], denies `/admin/…`, holds `/review/…` until released, injects the upstream credential,
/// masks routes marked masked with `profile`, records admissions and outcomes.
#[derive(Clone, Default)]
pub struct TestGate {
    pub admitted: Arc<Mutex<Vec<Admitted>>>,
    pub outcomes: Arc<Mutex<Vec<(String, Outcome)>>>,
    pub profile: Option<Arc<Profile>>,
    /// Notified when a `/review/…` request is being held.
    pub held: Arc<tokio::sync::Notify>,
    /// Releases a held request.
    pub release: Arc<tokio::sync::Notify>,
    /// The codes of requests refused before the gate was asked, as `Gate::refused` saw them.
    pub refused: Arc<Mutex<Vec<Refused>>>,
}

#[async_trait]
impl Gate for TestGate {
    async fn admit(&self, a: Admission<'_>) -> Verdict {
        self.admitted.lock().unwrap().push(Admitted {
            command: a.command.clone(),
            route: a.route.cloned(),
            bearer: a.bearer.map(str::to_owned),
            headers: a.headers.clone(),
            peer: a.peer,
        });
        if a.bearer != Some(TOKEN) {
            return Verdict::Reject(Rejection::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unknown or missing token",
            ));
        }
        if a.route.is_some_and(|r| r.template.starts_with("/admin/")) {
            return Verdict::Reject(Rejection::new(
                StatusCode::FORBIDDEN,
                "denied",
                "rule \"no-admin\" denies this request",
            ));
        }
        if a.route.is_some_and(|r| r.template.starts_with("/review/")) {
            // A review: the request waits here until someone approves.
            self.held.notify_one();
            self.release.notified().await;
        }
        let mask = match a.route {
            Some(r) if r.masked => self.profile.clone(),
            _ => None,
        };
        let outcomes = Arc::clone(&self.outcomes);
        let text = a.command.text.clone();
        Verdict::Forward(
            Forward::new(mask)
                .header(
                    HeaderName::from_static(UPSTREAM_KEY),
                    HeaderValue::from_static(UPSTREAM_SECRET),
                )
                .on_complete(move |o| outcomes.lock().unwrap().push((text, o))),
        )
    }

    async fn refused(&self, rejection: &Rejection, peer: Option<SocketAddr>) {
        self.refused.lock().unwrap().push((rejection.code, peer));
    }
}

pub fn routes() -> Routes {
    Routes::new()
        .route(
            Route::new(Some(http::Method::GET), "/customers/{id}")
                .unwrap()
                .masked(true),
        )
        .route(Route::new(None, "/customers/{id}/orders/{order}").unwrap())
        .route(Route::new(None, "/admin/{*rest}").unwrap())
        .route(Route::new(None, "/public/{*rest}").unwrap())
        .route(Route::new(None, "/review/{*rest}").unwrap())
}

/// The inspection layer over an [`Upstream`] to `upstream`, served by
/// `serve_connection_with_gate`.
pub async fn start_front(upstream: SocketAddr, gate: TestGate, limits: Limits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inner = Upstream::http(&format!("http://{upstream}"), &UpstreamSettings::default())
        .expect("upstream origin");
    let svc = InspectLayer::new(gate.clone(), routes())
        .limits(limits.clone())
        .layer(inner);
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let (svc, limits, gate) = (svc.clone(), limits.clone(), gate.clone());
            tokio::spawn(async move {
                let _ = serve_connection_with_gate(stream, peer, svc, &limits, gate).await;
            });
        }
    });
    addr
}

/// Sends `bytes` on a fresh connection and reads until the server closes it.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(buf.get(..n).unwrap()),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes of every response in a raw HTTP/1 byte stream.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12))
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The `error.code` of a JSON rejection in a raw response, if it is one.
pub fn json_code(raw: &str) -> Option<String> {
    let body = raw.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["error"]["code"].as_str().map(str::to_owned)
}

/// A plain HTTP/1.1 (or, with `h2`, HTTP/2 prior knowledge) client.
pub fn client(
    h2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http()
}

/// Sends a request and collects the response.
pub async fn send(h2: bool, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let resp = client(h2).request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}
