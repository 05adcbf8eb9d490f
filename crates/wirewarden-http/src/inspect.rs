//! The inspection layer: strict checks, route → command, the gate, masked responses.
//!
//! [`InspectLayer`] wraps any upstream [`tower::Service`]. Each request goes through, in
//! order:
//!
//! 1. [`strict::check_request`] and [`strict::strip_hop_by_hop`];
//! 2. [`Routes::command`]: the request as a [`Command`], and the route it matched;
//! 3. `Authorization` is taken off the request: a `Bearer` token is handed to the gate, any
//!    other scheme is refused with 401, so the upstream never sees the client's credential;
//! 4. the request body is read ahead, up to [`Limits::max_bound_body`], and bound into the
//!    command's digest (so an approval covers exactly this body) and shown after the request
//!    line in its text; a longer body streams after the decision and the text says so. A
//!    body a server would read as a form is scanned for a `_method` field
//!    ([`FormScanner`]), one it would read as JSON for a top-level `_method` key
//!    ([`JsonScanner`]): found in what was read ahead, the request is refused with
//!    `400 method_override` before the gate is asked; found in the part that streams after
//!    the decision, the body forwarded upstream ends there with an error (the bytes that
//!    would complete it are held back until the scanner has seen them), so the upstream
//!    never receives a complete request, and the client gets the same `400`;
//! 5. [`Gate::admit`]: identity, policy (a review holds the request here), intent audit;
//! 6. on [`Verdict::Forward`], the gate's headers (the upstream credential) replace the
//!    client's, the body is capped at [`Limits::max_body_bytes`] while it streams, and the
//!    request goes upstream;
//! 7. the response's hop-by-hop headers are removed and, on a masked route, its body is
//!    masked as it streams; the gate's [`OnComplete`] is told the status,
//!    bytes, masked counts and any error exactly once, when the body ends or is dropped.
//!
//! Every refusal is a JSON [`Rejection`]; the service itself never fails.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tower::{Layer, Service, ServiceExt};
use wirewarden_core::{BoxError, Command, MaskedCounts};

use crate::Rejection;
use crate::body::{self, BodyLimits, BodyReport};
use crate::gate::{Admission, Forward, Gate, OnComplete, Outcome, Verdict};
use crate::route::{RouteMatch, Routes};
use crate::server::PeerAddr;
use crate::strict::form::FormScanner;
use crate::strict::json::JsonScanner;
use crate::strict::{self, Limits};

/// The body of every response the layer sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A [`tower::Layer`] that puts request inspection in front of a service.
#[derive(Debug, Clone)]
pub struct InspectLayer<G> {
    gate: G,
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    routes: Routes,
    limits: Limits,
    body_limits: BodyLimits,
}

impl<G: Gate + Clone> InspectLayer<G> {
    /// A layer asking `gate` about every request, naming requests with `routes`, with default
    /// [`Limits`] and [`BodyLimits`].
    #[must_use]
    pub fn new(gate: G, routes: Routes) -> Self {
        Self {
            gate,
            config: Arc::new(Config {
                routes,
                limits: Limits::default(),
                body_limits: BodyLimits::default(),
            }),
        }
    }

    /// Sets the request limits (use the same value for [`crate::server::serve_connection`]).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        Arc::make_mut(&mut self.config).limits = limits;
        self
    }

    /// Sets the response body limits for masking.
    #[must_use]
    pub fn body_limits(mut self, limits: BodyLimits) -> Self {
        Arc::make_mut(&mut self.config).body_limits = limits;
        self
    }
}

impl<S, G: Clone> Layer<S> for InspectLayer<G> {
    type Service = InspectService<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        InspectService {
            inner,
            gate: self.gate.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`InspectLayer`] builds: see the module documentation.
///
/// The inner service receives the request with its body wrapped in [`Limited`] (the cap of
/// [`Limits::max_body_bytes`] while the body streams); its response body may be any
/// [`Body`] of [`Bytes`]. The response is always a [`Response<ResponseBody>`]; the error type
/// is [`Infallible`], as every failure becomes a JSON [`Rejection`].
#[derive(Debug, Clone)]
pub struct InspectService<S, G> {
    inner: S,
    gate: G,
    config: Arc<Config>,
}

impl<S, G, B, RB> Service<Request<B>> for InspectService<S, G>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    S: Service<Request<Limited<RequestBody<B>>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
    G: Gate + Clone,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the upstream is awaited per request (`oneshot` on a clone), so a slow
        // upstream holds that request only.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let gate = self.gate.clone();
        let config = Arc::clone(&self.config);
        Box::pin(async move { Ok(handle(inner, gate, config, req).await) })
    }
}

/// A request body as the layer forwards it: the part read ahead before the decision, then
/// (for a body longer than [`Limits::max_bound_body`]) the rest as the client sends it.
pub struct RequestBody<B> {
    head: Option<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Pin<Box<B>>>,
    scan: Option<OverrideScan>,
}

/// The scanners that look for a method override in a request body: a body can be read both
/// as a form and as JSON (`multipart/related; type="application/json"`), by different
/// servers.
#[derive(Debug)]
struct MethodScanner {
    form: Option<FormScanner>,
    json: Option<JsonScanner>,
}

impl MethodScanner {
    /// The scanners for a request with these headers, or `None` when no server would read
    /// its body for a method override.
    fn for_request(headers: &HeaderMap) -> Result<Option<Self>, Rejection> {
        let form = FormScanner::for_request(headers)?;
        let json = JsonScanner::for_request(headers)?;
        Ok((form.is_some() || json.is_some()).then_some(Self { form, json }))
    }

    /// Feeds both; how many bytes at the end either still needs held.
    fn feed(&mut self, chunk: &[u8]) -> Result<usize, Rejection> {
        let form = self.form.as_mut().map_or(Ok(0), |f| f.feed(chunk))?;
        let json = self.json.as_mut().map_or(Ok(0), |j| j.feed(chunk))?;
        Ok(form.max(json))
    }

    fn finish(&mut self) -> Result<(), Rejection> {
        self.form.as_mut().map_or(Ok(()), FormScanner::finish)?;
        self.json.as_mut().map_or(Ok(()), JsonScanner::finish)
    }
}

/// The scan of a body's streamed part for a method override field or key.
struct OverrideScan {
    scanner: MethodScanner,
    /// Bytes that may end an undecided field name or key, held back until it is decided.
    held: VecDeque<Bytes>,
    held_len: usize,
    /// Bytes decided on, to forward before anything else.
    ready: VecDeque<Bytes>,
    /// Set when a method override field is found; the caller answers with it.
    refused: Arc<OnceLock<Rejection>>,
}

impl OverrideScan {
    /// Takes `data` in and moves to `ready` what the scanner no longer needs held.
    fn push(&mut self, data: Bytes) -> Result<(), Rejection> {
        let undecided = self.scanner.feed(&data)?;
        self.held_len = self.held_len.saturating_add(data.len());
        self.held.push_back(data);
        self.release(undecided);
        Ok(())
    }

    /// Moves held bytes to `ready` until at most `keep` are held (zero-copy splits).
    fn release(&mut self, keep: usize) {
        while self.held_len > keep {
            let excess = self.held_len.saturating_sub(keep);
            let Some(front) = self.held.front_mut() else {
                break;
            };
            if front.len() <= excess {
                let len = front.len();
                if let Some(b) = self.held.pop_front() {
                    self.ready.push_back(b);
                }
                self.held_len = self.held_len.saturating_sub(len);
            } else {
                self.ready.push_back(front.split_to(excess));
                self.held_len = self.held_len.saturating_sub(excess);
            }
        }
    }

    /// The body ended: releases everything, or records the refusal.
    fn finish(&mut self) -> Result<(), Rejection> {
        self.scanner.finish()?;
        self.release(0);
        Ok(())
    }

    fn refuse(&mut self, r: Rejection) -> BoxError {
        self.held.clear();
        self.ready.clear();
        self.held_len = 0;
        let _ = self.refused.set(r);
        Box::new(OverrideRefused)
    }
}

/// The error a request body ends with when its streamed part carries a method override
/// field: the upstream sees the body cut short, never complete.
#[derive(Debug)]
struct OverrideRefused;

impl std::fmt::Display for OverrideRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body carries a method override field")
    }
}

impl std::error::Error for OverrideRefused {}

impl<B> RequestBody<B> {
    /// Whether the whole body was read before the decision (and so bound to the command).
    #[must_use]
    pub fn is_bound(&self) -> bool {
        self.rest.is_none()
    }
}

impl<B> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("head", &self.head.as_ref().map(Bytes::len))
            .field("streaming", &self.rest.is_some())
            .field("override_scanned", &self.scan.is_some())
            .finish()
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take()
            && !head.is_empty()
        {
            return Poll::Ready(Some(Ok(http_body::Frame::data(head))));
        }
        let Some(form) = this.scan.as_mut() else {
            if let Some(rest) = this.rest.as_mut() {
                return rest.as_mut().poll_frame(cx).map_err(Into::into);
            }
            return Poll::Ready(
                this.trailers
                    .take()
                    .map(|t| Ok(http_body::Frame::trailers(t))),
            );
        };
        loop {
            if let Some(data) = form.ready.pop_front() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
            }
            let Some(rest) = this.rest.as_mut() else {
                return Poll::Ready(
                    this.trailers
                        .take()
                        .map(|t| Ok(http_body::Frame::trailers(t))),
                );
            };
            let ended = match std::task::ready!(rest.as_mut().poll_frame(cx)) {
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(r) = form.push(data) {
                            this.rest = None;
                            return Poll::Ready(Some(Err(form.refuse(r))));
                        }
                        false
                    }
                    Err(frame) => {
                        // Trailers come last: the body's data has ended.
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                        }
                        true
                    }
                },
                None => true,
            };
            if ended {
                this.rest = None;
                if let Err(r) = form.finish() {
                    this.trailers = None;
                    return Poll::Ready(Some(Err(form.refuse(r))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.as_ref().is_none_or(Bytes::is_empty)
            && self
                .scan
                .as_ref()
                .is_none_or(|f| f.ready.is_empty() && f.held.is_empty())
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let waiting = self.scan.as_ref().map_or(0, |f| {
            f.held_len
                .saturating_add(f.ready.iter().map(Bytes::len).sum::<usize>())
        });
        let head = self
            .head
            .as_ref()
            .map_or(0, Bytes::len)
            .saturating_add(waiting) as u64;
        match &self.rest {
            None => http_body::SizeHint::with_exact(head),
            Some(r) => {
                let h = r.size_hint();
                let mut hint = http_body::SizeHint::new();
                hint.set_lower(h.lower().saturating_add(head));
                if let Some(u) = h.upper() {
                    hint.set_upper(u.saturating_add(head));
                }
                hint
            }
        }
    }
}

/// Most body bytes shown after the request line in a command's text.
const BODY_EXCERPT: usize = 2048;

/// Reads up to `max` bytes of `body` before the decision and binds them to `command`: its
/// digest covers the request line and the body, its text shows the request line and the
/// start of the body (or says the body was too long to bind).
async fn bind_body<B>(
    body: B,
    command: &mut Command,
    max: usize,
) -> Result<RequestBody<B>, BoxError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        return Ok(RequestBody {
            head: None,
            trailers: None,
            rest: None,
            scan: None,
        });
    }
    let mut body = Box::pin(body);
    let mut buf = bytes::BytesMut::new();
    let mut trailers = None;
    let mut complete = false;
    while buf.len() <= max {
        match body.frame().await {
            None => {
                complete = true;
                break;
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            },
        }
    }
    let head = buf.freeze();
    let line = command.text.clone();
    if complete {
        command.digest = wirewarden_core::CommandDigest::compute(
            command.protocol,
            line.as_bytes(),
            [Some(&head[..])],
        );
        if !head.is_empty() {
            let mut end = head.len().min(BODY_EXCERPT);
            let shown = loop {
                match std::str::from_utf8(&head[..end]) {
                    Ok(t) => break Some(t),
                    Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
                        end = e.valid_up_to();
                    }
                    Err(_) => break None,
                }
            };
            command.text = match shown {
                Some(t) if end == head.len() => format!("{line}\n\n{t}"),
                Some(t) => format!("{line}\n\n{t}… ({} bytes in all)", head.len()),
                None => format!("{line}\n\n({} bytes of binary body)", head.len()),
            };
        }
        Ok(RequestBody {
            head: Some(head),
            trailers,
            rest: None,
            scan: None,
        })
    } else {
        command.text = format!(
            "{line}\n\n(a body of more than {max} bytes, streamed after the decision and not bound to it)"
        );
        command.digest =
            wirewarden_core::CommandDigest::compute(command.protocol, command.text.as_bytes(), []);
        Ok(RequestBody {
            head: Some(head),
            trailers: None,
            rest: Some(body),
            scan: None,
        })
    }
}

/// Scans a form or JSON body for a method override: a bound body whole, now; the part read
/// ahead of a longer one now, and the rest as it streams (recording a refusal in
/// `refused`), its undecided tail held back.
///
/// # Errors
/// `400 method_override` for a field or key found in what was read ahead.
fn scan_for_override<B>(
    mut body: RequestBody<B>,
    mut scanner: MethodScanner,
    refused: &Arc<OnceLock<Rejection>>,
) -> Result<RequestBody<B>, Rejection> {
    let head = body.head.take().unwrap_or_default();
    let undecided = scanner.feed(&head)?;
    if body.is_bound() {
        scanner.finish()?;
        body.head = Some(head);
        return Ok(body);
    }
    let mut head = head;
    let held = head.split_off(head.len().saturating_sub(undecided));
    let held_len = held.len();
    body.head = Some(head);
    body.scan = Some(OverrideScan {
        scanner,
        held: VecDeque::from([held]),
        held_len,
        ready: VecDeque::new(),
        refused: Arc::clone(refused),
    });
    Ok(body)
}

fn boxed<T>(body: T) -> ResponseBody
where
    T: Body<Data = Bytes> + Send + 'static,
    T::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

fn reject(r: Rejection) -> Response<ResponseBody> {
    r.into_response::<Full<Bytes>>()
        .map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

/// The parts of a request that the admission needs, checked.
struct Checked {
    command: Command,
    route: Option<RouteMatch>,
    bearer: Option<String>,
}

fn check(parts: &mut http::request::Parts, config: &Config) -> Result<Checked, Rejection> {
    strict::check_request(parts, &config.limits)?;
    strict::strip_hop_by_hop(&mut parts.headers)?;
    let client = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
    strict::own_forwarding(&mut parts.headers, client);
    let (command, route) = config.routes.command(&parts.method, &parts.uri)?;
    let bearer = take_bearer(&mut parts.headers)?;
    Ok(Checked {
        command,
        route,
        bearer,
    })
}

/// Removes `Authorization` and returns its bearer token.
///
/// # Errors
/// 401 for another scheme, more than one `Authorization`, or a token that is not `token68`.
fn take_bearer(headers: &mut HeaderMap) -> Result<Option<String>, Rejection> {
    let values: Vec<_> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    let unauthenticated =
        |m: &str| Rejection::new(StatusCode::UNAUTHORIZED, "unauthenticated", m.to_owned());
    let value = match values.as_slice() {
        [] => return Ok(None),
        [v] => v,
        _ => return Err(unauthenticated("more than one Authorization header")),
    };
    let text = value
        .to_str()
        .map_err(|_| unauthenticated("Authorization is not ASCII"))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| unauthenticated("Authorization must be \"Bearer <token>\""))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated("only Bearer tokens are accepted"));
    }
    let token = token.trim_matches(' ');
    // token68 (RFC 9110 §11.2).
    let token68 = !token.is_empty()
        && token
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !token68 {
        return Err(unauthenticated("malformed bearer token"));
    }
    Ok(Some(token.to_owned()))
}

/// Calls `on_complete` exactly once: with the outcome it is given, or — when dropped before
/// that (the client went away, the future was cancelled) — with an "abandoned" outcome.
struct Completion {
    on_complete: Option<OnComplete>,
    start: Instant,
    status: Option<StatusCode>,
}

impl Completion {
    fn finish(mut self, mut outcome: Outcome) {
        outcome.duration = self.start.elapsed();
        if let Some(f) = self.on_complete.take() {
            f(outcome);
        }
    }

    fn fail(self, status: StatusCode, error: String) {
        let outcome = Outcome {
            status: Some(status),
            error: Some(error),
            ..Outcome::default()
        };
        self.finish(outcome);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(f) = self.on_complete.take() {
            f(Outcome {
                status: self.status,
                error: Some("abandoned before the exchange ended".to_owned()),
                duration: self.start.elapsed(),
                ..Outcome::default()
            });
        }
    }
}

fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<LengthLimitError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

async fn handle<S, G, B, RB>(
    inner: S,
    gate: G,
    config: Arc<Config>,
    req: Request<B>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    S: Service<Request<Limited<RequestBody<B>>>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
    G: Gate,
{
    let (mut parts, req_body) = req.into_parts();
    let checked = match check(&mut parts, &config) {
        Ok(c) => c,
        Err(r) => {
            // A head that was malformed or ambiguous says nothing good about the bytes after
            // it: an HTTP/1 connection is closed after the refusal.
            let close = matches!(
                r.code,
                "request_smuggling" | "malformed_request" | "hop_by_hop_abuse" | "header_too_large"
            );
            // Refusals before the gate was asked are still the gate's to record.
            let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0);
            gate.refused(&r, peer).await;
            let mut resp = reject(r);
            if close && parts.version < Version::HTTP_2 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return resp;
        }
    };
    let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0);
    // A body a server would read as a form or as JSON is scanned for a method override.
    let form = if req_body.is_end_stream() {
        None
    } else {
        match MethodScanner::for_request(&parts.headers) {
            Ok(f) => f,
            Err(r) => {
                gate.refused(&r, peer).await;
                return reject(r);
            }
        }
    };
    let mut checked = checked;
    let req_body =
        match bind_body(req_body, &mut checked.command, config.limits.max_bound_body).await {
            Ok(b) => b,
            Err(e) => {
                let r = if is_length_limit(&*e) {
                    strict::body_too_large(config.limits.max_body_bytes)
                } else {
                    Rejection::new(
                        StatusCode::BAD_REQUEST,
                        "malformed_request",
                        "the request body could not be read",
                    )
                };
                gate.refused(&r, peer).await;
                return reject(r);
            }
        };
    let refused = Arc::new(OnceLock::new());
    let req_body = match form {
        None => req_body,
        Some(scanner) => match scan_for_override(req_body, scanner, &refused) {
            Ok(b) => b,
            Err(r) => {
                gate.refused(&r, peer).await;
                return reject(r);
            }
        },
    };
    let start = Instant::now();
    let verdict = gate
        .admit(
            Admission::new(&checked.command, &parts.headers)
                .route(checked.route.as_ref())
                .bearer(checked.bearer.as_deref())
                .peer(peer)
                .body_bound(req_body.is_bound()),
        )
        .await;
    let forward: Forward = match verdict {
        Verdict::Reject(r) => return reject(r),
        Verdict::Forward(f) => f,
    };
    let Forward {
        mask,
        headers,
        on_complete,
        until,
        recheck,
        ..
    } = forward;
    let completion = Completion {
        on_complete,
        start,
        status: None,
    };

    // The upstream credential replaces whatever the client sent under those names.
    for (name, _) in &headers {
        parts.headers.remove(name);
    }
    for (name, value) in headers {
        parts.headers.append(name, value);
    }
    if mask.is_some()
        && let Err(r) = body::prepare_request(&mut parts)
    {
        completion.fail(r.status, r.to_string());
        return reject(r);
    }
    // What the client accepts (narrowed): the masked body goes out in one of these codings.
    let accepted = mask
        .as_ref()
        .and_then(|_| parts.headers.get(header::ACCEPT_ENCODING).cloned());

    let method: Method = parts.method.clone();
    let limit = usize::try_from(config.limits.max_body_bytes).unwrap_or(usize::MAX);
    let upstream_req = Request::from_parts(parts, Limited::new(req_body, limit));
    let result = inner.oneshot(upstream_req).await;
    if let Some(r) = refused.get() {
        // The body was cut short for a method override field: whatever the upstream made
        // of an incomplete request is dropped.
        drop(result);
        let r = r.clone();
        completion.fail(r.status, r.to_string());
        return reject(r);
    }
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let e: BoxError = e.into();
            let r = if is_length_limit(&*e) {
                strict::body_too_large(config.limits.max_body_bytes)
            } else {
                Rejection::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the upstream did not answer",
                )
            };
            completion.fail(r.status, format!("{}: {e}", r.code));
            return reject(r);
        }
    };

    let (mut rparts, rbody) = resp.into_parts();
    // A response does not outlive what it was allowed under.
    let mut rbody = body::Until::new(rbody, until);
    if let Some((every, check)) = recheck {
        rbody = rbody.rechecked(every, check);
    }
    if strict::strip_hop_by_hop(&mut rparts.headers).is_err() {
        let r = Rejection::new(
            StatusCode::BAD_GATEWAY,
            "bad_upstream_response",
            "the upstream response has an invalid Connection header",
        );
        completion.fail(r.status, r.to_string());
        return reject(r);
    }
    let status = rparts.status;
    let mut completion = completion;
    completion.status = Some(status);

    let Some(profile) = mask else {
        let done = move |report: BodyReport| completion.finish(outcome(status, report, None));
        let body = body::CountingBody::new(rbody, done);
        return Response::from_parts(rparts, boxed(body));
    };

    let mut head_counts = MaskedCounts::new();
    match body::mask_response_head_for(
        &profile,
        &method,
        &mut rparts,
        &config.body_limits,
        &mut head_counts,
        accepted.as_ref(),
    ) {
        Err(r) => {
            // The upstream body is dropped unread: nothing of it reaches the client.
            completion.fail(r.status, r.to_string());
            reject(r)
        }
        Ok(None) => {
            // A response that has no body (HEAD, 1xx, 204, 304, an empty length) gets none:
            // whatever the upstream's body holds is dropped unread, never passed through
            // unmasked.
            drop(rbody);
            completion.finish(outcome(status, BodyReport::default(), Some(head_counts)));
            Response::from_parts(rparts, boxed(http_body_util::Empty::<Bytes>::new()))
        }
        Ok(Some(masker)) => {
            let done = move |report: BodyReport| {
                completion.finish(outcome(status, report, Some(head_counts)));
            };
            let body = body::MaskedBody::new(rbody, masker, done);
            Response::from_parts(rparts, boxed(body))
        }
    }
}

fn outcome(status: StatusCode, report: BodyReport, head: Option<MaskedCounts>) -> Outcome {
    let BodyReport {
        bytes_in,
        bytes_out,
        masked,
        error,
        ..
    } = report;
    let masked = match head {
        Some(mut h) => {
            h.merge(&masked);
            h
        }
        None => masked,
    };
    Outcome {
        status: Some(status),
        bytes_in,
        bytes_out,
        masked,
        error,
        ..Outcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post() -> Command {
        Command::new(
            wirewarden_core::Protocol::Http,
            "POST",
            wirewarden_core::CommandClass::Write,
            "POST /refunds",
        )
        .unwrap()
    }

    fn chunks(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = Infallible> + use<> {
        let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = parts
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn forwarded<B>(b: RequestBody<B>) -> Bytes
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        b.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn the_body_is_bound_to_the_command() {
        let mut a = post();
        let plain = a.digest;
        let body = bind_body(chunks(&["{\"amount\":", " 20}"]), &mut a, 1024)
            .await
            .unwrap();
        assert_eq!(a.text, "POST /refunds\n\n{\"amount\": 20}");
        assert_ne!(a.digest, plain);
        assert_eq!(body.size_hint().exact(), Some(14));
        assert_eq!(forwarded(body).await, "{\"amount\": 20}");

        // Another body, another digest: an approval for one never covers the other.
        let mut b = post();
        let _ = bind_body(chunks(&["{\"amount\": 2000}"]), &mut b, 1024)
            .await
            .unwrap();
        assert_ne!(a.digest, b.digest);

        // No body: the command is left as it was.
        let mut c = post();
        let body = bind_body(http_body_util::Empty::<Bytes>::new(), &mut c, 1024)
            .await
            .unwrap();
        assert_eq!((c.text.as_str(), c.digest), ("POST /refunds", plain));
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_long_body_streams_unbound_and_intact() {
        let mut a = post();
        let body = bind_body(
            chunks(&["0123456789", "abcdefghij", "KLMNOPQRST"]),
            &mut a,
            12,
        )
        .await
        .unwrap();
        assert!(a.text.contains("not bound"), "{}", a.text);
        assert_eq!(
            forwarded(body).await,
            "0123456789abcdefghijKLMNOPQRST",
            "every byte is forwarded once, in order"
        );

        // Long text is shown cut at a character boundary.
        let mut b = post();
        let long: &'static str = Box::leak("é".repeat(BODY_EXCERPT).into_boxed_str());
        let _ = bind_body(chunks(&[long]), &mut b, 1 << 20).await.unwrap();
        assert!(
            b.text
                .ends_with(&format!("… ({} bytes in all)", long.len()))
        );
    }

    fn form_scanner() -> MethodScanner {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        MethodScanner::for_request(&h).unwrap().unwrap()
    }

    /// Binds and scans `parts` as a form with a read-ahead limit of `max`; returns the
    /// refusal before the decision, or the bytes forwarded, whether the body completed, and
    /// the refusal recorded while it streamed.
    async fn scanned(
        parts: &[&'static str],
        max: usize,
    ) -> Result<(Vec<u8>, bool, Option<&'static str>), &'static str> {
        let mut c = post();
        let body = bind_body(chunks(parts), &mut c, max).await.unwrap();
        let refused = Arc::new(OnceLock::new());
        let mut body = scan_for_override(body, form_scanner(), &refused).map_err(|r| r.code)?;
        let mut out = Vec::new();
        let complete = loop {
            match body.frame().await {
                None => break true,
                Some(Err(e)) => {
                    assert!(e.is::<OverrideRefused>());
                    break false;
                }
                Some(Ok(f)) => out.extend_from_slice(&f.into_data().unwrap()),
            }
        };
        Ok((out, complete, refused.get().map(|r| r.code)))
    }

    #[tokio::test]
    async fn a_method_field_is_refused_before_the_decision_or_cuts_the_body() {
        // Read ahead whole: refused before the gate is asked.
        assert_eq!(
            scanned(&["note=hi&_met", "hod=DELETE"], 1024).await,
            Err("method_override")
        );
        // In the part read ahead of a long body: refused before the gate too.
        assert_eq!(
            scanned(&["_method=DELETE&", "note=0123456789"], 4).await,
            Err("method_override")
        );
        // In the streamed part, split anywhere, at the very end included: the body stops
        // with an error and what went out is never the whole body.
        let body = "note=0123456789&x=1&_method";
        for at in 16..body.len() {
            let (a, b) = body.split_at(at);
            let a: &'static str = Box::leak(a.to_owned().into_boxed_str());
            let b: &'static str = Box::leak(b.to_owned().into_boxed_str());
            let (out, complete, refused) =
                scanned(&["note=0123456789", a.get(15..).unwrap(), b], 8)
                    .await
                    .unwrap();
            assert!(!complete, "split at {at}");
            assert_eq!(refused, Some("method_override"));
            assert!(out.len() < body.len(), "split at {at}: {}", out.len());
            assert!(body.as_bytes().starts_with(&out));
        }
    }

    #[tokio::test]
    async fn a_clean_form_streams_intact_in_the_pieces_it_came_in() {
        let (out, complete, refused) = scanned(&["note=0123", "456789&_met", "a=1&_", "x=2"], 4)
            .await
            .unwrap();
        assert!(complete);
        assert_eq!(refused, None);
        assert_eq!(out, b"note=0123456789&_meta=1&_x=2");
    }

    #[test]
    fn bearer_is_taken_and_other_schemes_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer abc.DEF-_~+/==".parse().unwrap(),
        );
        assert_eq!(
            take_bearer(&mut h).unwrap().as_deref(),
            Some("abc.DEF-_~+/==")
        );
        assert!(h.is_empty());

        let mut h = HeaderMap::new();
        assert_eq!(take_bearer(&mut h).unwrap(), None);

        for v in [
            "Basic dTpw",
            "Bearer",
            "Bearer a b",
            "Bearer a=b",
            "bearer  ",
            "Token x",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            let err = take_bearer(&mut h).unwrap_err();
            assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{v}");
            assert!(h.is_empty(), "removed even when refused");
        }
        let mut h = HeaderMap::new();
        h.append(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        h.append(header::AUTHORIZATION, "Bearer b".parse().unwrap());
        assert!(take_bearer(&mut h).is_err());
    }

    #[test]
    fn completion_runs_once_even_when_dropped() {
        use std::sync::Mutex;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let c = Completion {
            on_complete: Some(Box::new(move |o: Outcome| s.lock().unwrap().push(o))),
            start: Instant::now(),
            status: Some(StatusCode::OK),
        };
        drop(c);
        let s = Arc::clone(&seen);
        let c = Completion {
            on_complete: Some(Box::new(move |o: Outcome| s.lock().unwrap().push(o))),
            start: Instant::now(),
            status: None,
        };
        c.fail(StatusCode::BAD_GATEWAY, "x".into());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].status, Some(StatusCode::OK));
        assert!(seen[0].error.as_deref().unwrap().contains("abandoned"));
        assert_eq!(seen[1].status, Some(StatusCode::BAD_GATEWAY));
    }
}
