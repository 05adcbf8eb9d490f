//! The admin HTTP API (health, metrics, reviews, grants) and the client the CLI uses.
//!
//! Every route but `/healthz` requires `Authorization: Bearer <admin token>`, compared in
//! constant time. State-changing calls record their audit events before answering.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use wirewarden::Pipeline;
use wirewarden::core::{AuditEvent, CommandClass, GrantId, ReviewId, Timestamp};
use wirewarden::policy::{Grant, GrantScope};
use wirewarden::review::{ApprovalScope, Reviewer};

type Body = Full<Bytes>;

/// Serves the admin API on `listener` until the task is dropped.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    pipeline: Arc<Pipeline>,
    token: Arc<String>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let pipeline = pipeline.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let pipeline = pipeline.clone();
                let token = token.clone();
                async move { Ok::<_, Infallible>(handle(req, &pipeline, &token).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    reply(status, json!({ "error": message.to_string() }))
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(h) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = h.strip_prefix("Bearer ") else {
        return false;
    };
    // Compare digests so the comparison time does not depend on the length either.
    let a = blake3::hash(given.as_bytes());
    let b = blake3::hash(token.as_bytes());
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[derive(Deserialize)]
struct Decide {
    reviewer: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    grant_minutes: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct IssueGrant {
    subject: String,
    target: String,
    max_class: CommandClass,
    #[serde(default)]
    objects: Vec<String>,
    minutes: u64,
    issued_by: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn record_all(pipeline: &Pipeline, events: &[AuditEvent]) -> Result<(), Response<Body>> {
    for e in events {
        pipeline.record(e).await.map_err(|e| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("audit trail unavailable: {e}"),
            )
        })?;
    }
    Ok(())
}

async fn handle(req: Request<Incoming>, pipeline: &Pipeline, token: &str) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    if req.method() == Method::GET && path == "/healthz" {
        return reply(StatusCode::OK, json!({ "status": "ok" }));
    }
    if !authorized(&req, token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
    }
    let method = req.method().clone();
    // Bounded before anything is buffered.
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, e),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let now = Timestamp::now();
    match (method, segments.as_slice()) {
        (Method::GET, ["metrics"]) => {
            let mut r = Response::new(Full::new(Bytes::from(
                pipeline.metrics().render_prometheus(),
            )));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (Method::GET, ["reviews"]) => match pipeline.reviews().store().pending(now).await {
            Ok(list) => reply(StatusCode::OK, json!({ "reviews": list })),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (Method::POST, ["reviews", id, action @ ("approve" | "deny")]) => {
            let Ok(id) = id.parse::<ReviewId>() else {
                return error(StatusCode::BAD_REQUEST, "bad review id");
            };
            let d: Decide = match serde_json::from_slice(&body) {
                Ok(d) => d,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            let mut reviewer = Reviewer::new(d.reviewer);
            for g in d.groups {
                reviewer = reviewer.with_group(g);
            }
            let result = if *action == "approve" {
                let scope = match d.grant_minutes {
                    Some(m) => ApprovalScope::Grant {
                        secs: m.saturating_mul(60),
                    },
                    None => ApprovalScope::Once,
                };
                pipeline.reviews().approve(id, &reviewer, scope, now).await
            } else {
                pipeline
                    .reviews()
                    .deny(id, &reviewer, d.reason.as_deref().unwrap_or("denied"), now)
                    .await
            };
            match result {
                Ok(res) => {
                    if let Err(r) = record_all(pipeline, &res.events).await {
                        return r;
                    }
                    reply(
                        StatusCode::OK,
                        json!({ "review": res.review, "grant": res.grant }),
                    )
                }
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (Method::GET, ["grants"]) => {
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                    .map(str::to_owned)
            };
            let (Some(subject), Some(target)) = (param("subject"), param("target")) else {
                return error(StatusCode::BAD_REQUEST, "subject and target are required");
            };
            match pipeline.grants().active(&subject, &target, now).await {
                Ok(list) => reply(StatusCode::OK, json!({ "grants": list })),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
            }
        }
        (Method::POST, ["grants"]) => {
            let g: IssueGrant = match serde_json::from_slice(&body) {
                Ok(g) => g,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            let mut scope = GrantScope::up_to(g.max_class);
            for o in g.objects {
                scope = scope.on(o);
            }
            let grant = match Grant::new(
                g.subject,
                g.target,
                scope,
                now,
                Duration::from_secs(g.minutes.saturating_mul(60)),
                g.issued_by,
            ) {
                Ok(grant) => match g.reason {
                    Some(r) => grant.with_reason(r),
                    None => grant,
                },
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            match pipeline.grants().issue(grant.clone()).await {
                Ok(event) => {
                    if let Err(r) = record_all(pipeline, &[event]).await {
                        return r;
                    }
                    reply(StatusCode::CREATED, json!({ "grant": grant }))
                }
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (Method::DELETE, ["grants", id]) => {
            let Ok(id) = id.parse::<GrantId>() else {
                return error(StatusCode::BAD_REQUEST, "bad grant id");
            };
            let by = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("by="))
                .unwrap_or("admin")
                .to_owned();
            match pipeline.grants().revoke(id, &by, now).await {
                Ok(event) => {
                    if let Err(r) = record_all(pipeline, &[event]).await {
                        return r;
                    }
                    reply(StatusCode::OK, json!({ "revoked": id.to_string() }))
                }
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// A minimal client for the CLI subcommands.
pub(crate) async fn call(
    addr: SocketAddr,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok((status, value))
}
