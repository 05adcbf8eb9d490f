//! The contract between the HTTP layers and whoever decides: identity, policy, audit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use wirewarden_core::{Command, MaskedCounts};
use wirewarden_mask::Profile;

use crate::Rejection;
use crate::route::RouteMatch;

/// What the inspection layer knows about a request when it asks the [`Gate`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Admission<'a> {
    /// The request as a command (method, route, path parameters, query).
    pub command: &'a Command,
    /// The route it matched, if any; `None` means the command's class is `Unknown`.
    pub route: Option<&'a RouteMatch>,
    /// The bearer token from `Authorization`, already removed from the request.
    pub bearer: Option<&'a str>,
    /// The request headers, after hop-by-hop headers and `Authorization` were removed.
    pub headers: &'a HeaderMap,
    /// The client's address, when the server knows it.
    pub peer: Option<SocketAddr>,
    /// Whether the whole request body was read and bound into the command's digest (always
    /// true for a request without a body). A gate must not let a review approve a request
    /// whose body it has not seen.
    pub body_bound: bool,
}

impl<'a> Admission<'a> {
    /// An admission for `command`; the other fields start empty.
    #[must_use]
    pub fn new(command: &'a Command, headers: &'a HeaderMap) -> Self {
        Self {
            command,
            route: None,
            bearer: None,
            headers,
            peer: None,
            body_bound: true,
        }
    }

    /// Sets the matched route.
    #[must_use]
    pub fn route(mut self, route: Option<&'a RouteMatch>) -> Self {
        self.route = route;
        self
    }

    /// Sets the bearer token.
    #[must_use]
    pub fn bearer(mut self, bearer: Option<&'a str>) -> Self {
        self.bearer = bearer;
        self
    }

    /// Sets the client's address.
    #[must_use]
    pub fn peer(mut self, peer: Option<SocketAddr>) -> Self {
        self.peer = peer;
        self
    }

    /// Sets whether the body was bound into the command.
    #[must_use]
    pub fn body_bound(mut self, bound: bool) -> Self {
        self.body_bound = bound;
        self
    }
}

/// How a request that was let through ended, reported once per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcome {
    /// The status sent to the client, if a response head was sent.
    pub status: Option<StatusCode>,
    /// Body bytes received from the upstream (before decoding).
    pub bytes_in: u64,
    /// Body bytes sent to the client.
    pub bytes_out: u64,
    /// What masking replaced, by entity.
    pub masked: MaskedCounts,
    /// Why the exchange failed, if it did (upstream error, a body that could not be masked,
    /// a client that went away).
    pub error: Option<String>,
    /// From the admission to the end of the response body.
    pub duration: Duration,
}

/// Called once when the exchange of a forwarded request ends (or is abandoned).
pub type OnComplete = Box<dyn FnOnce(Outcome) + Send + 'static>;

/// A request the gate lets through, and how.
#[non_exhaustive]
pub struct Forward {
    /// The mask profile for the response; `None` sends the response as the upstream wrote
    /// it (after the strict checks).
    pub mask: Option<Arc<Profile>>,
    /// Headers to set on the upstream request (the upstream credential the gateway holds).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Told how the exchange ended.
    pub on_complete: Option<OnComplete>,
    /// When the response must end, and why (the credential of its session or the grant
    /// that allowed it expires then): a body still streaming sends nothing more after it
    /// and is cut ([`Until`](crate::body::Until)).
    pub until: Option<(std::time::Instant, String)>,
    /// How often to ask, while the response streams, whether it may go on (at the next
    /// data once the last answer is that old), and how: a refusal cuts it
    /// ([`Until::rechecked`](crate::body::Until::rechecked)).
    pub recheck: Option<(Duration, crate::body::StreamCheck)>,
}

impl Forward {
    /// Forward with `mask` (or unmasked with `None`), no headers, no completion callback.
    #[must_use]
    pub fn new(mask: Option<Arc<Profile>>) -> Self {
        Self {
            mask,
            headers: Vec::new(),
            on_complete: None,
            until: None,
            recheck: None,
        }
    }

    /// Asks `check` every `every` while the response streams; a refusal cuts it.
    #[must_use]
    pub fn rechecked(mut self, every: Duration, check: crate::body::StreamCheck) -> Self {
        self.recheck = Some((every, check));
        self
    }

    /// Cuts the response at `at` for `reason`, or at the earlier deadline already set.
    #[must_use]
    pub fn until(mut self, at: std::time::Instant, reason: impl Into<String>) -> Self {
        if self.until.as_ref().is_none_or(|(t, _)| at < *t) {
            self.until = Some((at, reason.into()));
        }
        self
    }

    /// Adds a header to set on the upstream request (replacing any the client sent).
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sets the completion callback.
    #[must_use]
    pub fn on_complete(mut self, f: impl FnOnce(Outcome) + Send + 'static) -> Self {
        self.on_complete = Some(Box::new(f));
        self
    }
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("mask", &self.mask.as_ref().map(|p| p.name().to_owned()))
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("on_complete", &self.on_complete.is_some())
            .field("until", &self.until)
            .field("recheck", &self.recheck.as_ref().map(|(every, _)| every))
            .finish()
    }
}

/// The gate's answer.
#[derive(Debug)]
pub enum Verdict {
    /// Send the request upstream.
    Forward(Forward),
    /// Answer the client with this instead (401, 403, 429, 503 …).
    Reject(Rejection),
}

/// Decides on each request: authenticates the bearer token, evaluates policy (holding the
/// request while a review is pending), records the intent, and says how to mask the
/// response. A gate that cannot record the intent must reject.
#[async_trait]
pub trait Gate: Send + Sync + 'static {
    /// Decides on one request.
    async fn admit(&self, admission: Admission<'_>) -> Verdict;

    /// Told about a request the inspection layer refused before it could ask
    /// [`admit`](Self::admit): a request-smuggling shape, an ambiguous path, a malformed or
    /// non-Bearer `Authorization` header. `rejection` is what the client was answered. The
    /// default records nothing; an auditing gate records it (such refusals are how probing
    /// shows up in the trail).
    async fn refused(&self, rejection: &Rejection, peer: Option<SocketAddr>) {
        let _ = (rejection, peer);
    }
}

#[async_trait]
impl<G: Gate + ?Sized> Gate for Arc<G> {
    async fn admit(&self, admission: Admission<'_>) -> Verdict {
        (**self).admit(admission).await
    }

    async fn refused(&self, rejection: &Rejection, peer: Option<SocketAddr>) {
        (**self).refused(rejection, peer).await;
    }
}
