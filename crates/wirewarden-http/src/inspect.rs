//! The inspection layer: strict checks, route → command, the gate, masked responses.
//!
//! [`InspectLayer`] wraps any upstream [`tower::Service`]. Each request goes through, in
//! order:
//!
//! 1. [`strict::check_request`] and [`strict::strip_hop_by_hop`];
//! 2. [`Routes::command`]: the request as a [`Command`], and the route it matched;
//! 3. `Authorization` is taken off the request: a `Bearer` token is handed to the gate, any
//!    other scheme is refused with 401, so the upstream never sees the client's credential;
//! 4. [`Gate::admit`]: identity, policy (a review holds the request here), intent audit;
//! 5. on [`Verdict::Forward`], the gate's headers (the upstream credential) replace the
//!    client's, the body is capped at [`Limits::max_body_bytes`] while it streams, and the
//!    request goes upstream;
//! 6. the response's hop-by-hop headers are removed and, on a masked route, its body is
//!    masked as it streams; the gate's [`OnComplete`] is told the status,
//!    bytes, masked counts and any error exactly once, when the body ends or is dropped.
//!
//! Every refusal is a JSON [`Rejection`]; the service itself never fails.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    S: Service<Request<Limited<B>>, Response = Response<RB>> + Clone + Send + 'static,
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
    S: Service<Request<Limited<B>>, Response = Response<RB>> + Send + 'static,
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
    let start = Instant::now();
    let verdict = gate
        .admit(
            Admission::new(&checked.command, &parts.headers)
                .route(checked.route.as_ref())
                .bearer(checked.bearer.as_deref())
                .peer(peer),
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

    let method: Method = parts.method.clone();
    let limit = usize::try_from(config.limits.max_body_bytes).unwrap_or(usize::MAX);
    let upstream_req = Request::from_parts(parts, Limited::new(req_body, limit));
    let resp = match inner.oneshot(upstream_req).await {
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
    match body::mask_response_head(
        &profile,
        &method,
        &mut rparts,
        &config.body_limits,
        &mut head_counts,
    ) {
        Err(r) => {
            // The upstream body is dropped unread: nothing of it reaches the client.
            completion.fail(r.status, r.to_string());
            reject(r)
        }
        Ok(None) => {
            let done = move |report: BodyReport| {
                completion.finish(outcome(status, report, Some(head_counts)));
            };
            let body = body::CountingBody::new(rbody, done);
            Response::from_parts(rparts, boxed(body))
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
