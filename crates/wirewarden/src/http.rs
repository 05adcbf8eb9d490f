//! The HTTP proxy: an embedder accepts a connection and hands the stream to
//! [`HttpProxy::serve`]; from then on every request is tied to the client's identity,
//! decided by policy, its response masked while it streams, and both recorded.
//!
//! # A connection
//!
//! 1. **TLS** (optional, ALPN `h2` and `http/1.1`) and the HTTP/1.1 or HTTP/2 server with
//!    strict limits ([`wirewarden_http::server`]); request heads that could be read two ways
//!    are refused before anything is decided ([`wirewarden_http::strict`]).
//! 2. **Identity.** A client that presented a TLS client certificate (when the target's TLS
//!    asks for them, [`ServerTls::with_client_certs`](crate::tls::ServerTls::with_client_certs);
//!    rustls verifies the chain in the handshake and a refused handshake is recorded as an
//!    `AuthenticationFailed` event, method `client_certificate`) is identified by it for the
//!    whole connection: the pipeline's identity provider maps the chain once, and every
//!    request is that identity's, in one audit session, with no token needed. A bearer token
//!    sent as well must prove the same identity (a 401 otherwise); a certificate the
//!    provider does not map makes every request on the connection a 401, never a fallback to
//!    a token. Any other client is identified per request by `Authorization: Bearer` (a
//!    static token or a JWT). The header is removed before the request goes anywhere. Each
//!    identity seen on a connection gets its own audit session (`SessionStarted` on first
//!    use, `SessionEnded` when the connection closes); a missing or rejected token is
//!    answered 401 and recorded as `AuthenticationFailed`. The first request's `User-Agent`
//!    is the session's application; a later request with another one (an agent naming each
//!    tool call) records `ApplicationChanged` before its intent.
//! 3. **Decision.** The request becomes a [`Command`](wirewarden_core::Command) (method,
//!    route template, path parameters, query; a request no route matches is `Unknown`, the
//!    riskiest class), policy decides, and the intent is recorded before the request is
//!    forwarded — if it cannot be, the request is refused (503). A denial is a 403 with a
//!    JSON body; a review holds the request until a reviewer decides.
//! 4. **Upstream.** The request goes to the target's one origin with the credential the
//!    gateway holds ([`HttpTarget::credential`]), never the client's: over TCP for an
//!    `http://` origin, over TLS for an `https://` one ([`HttpTarget::upstream_tls`]: the
//!    certificate must chain to the given roots and carry the given name, ALPN must agree
//!    on the protocol). A connection that cannot be set up — refused, untrusted certificate,
//!    wrong name — is answered `502 upstream_unavailable`, counted and recorded as an
//!    upstream failure ([`Pipeline::upstream_failed`]); no request byte is written to it.
//! 5. **Response.** On a masked route (the default) headers and body are masked by the
//!    profile of the request's decision (the session's when the rule names none) while they
//!    stream — JSON by key rules and by content, text and server-sent events by content,
//!    through gzip, deflate and brotli — and anything that cannot be masked is refused
//!    rather than passed through. A response still streaming sends nothing more once the
//!    session's credential or the grant that allowed it has expired, nor once policy,
//!    asked again when it has more to send and the last answer is
//!    [`HttpTarget::stream_recheck`] old, no longer allows it (a grant revoked, a budget
//!    spent): it is cut (the client sees it break off). No timer runs for this.
//!    `CommandCompleted` records status errors, bytes, masked counts and duration.

mod gate;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncRead, AsyncWrite};
use wirewarden_core::{SessionEndReason, Target};
pub use wirewarden_http::body::BodyLimits;
use wirewarden_http::inspect::InspectLayer;
pub use wirewarden_http::route::{Route, Routes};
pub use wirewarden_http::strict::Limits;
pub use wirewarden_http::upstream::UpstreamSettings;
use wirewarden_http::upstream::{ConnectError, TlsConnector, Upstream, UpstreamError};
use wirewarden_identity::{AuthContext, Credential};

use self::gate::{CertificateLogin, ConnectionGate};
use crate::listen::{BoxIo, Dial};
#[cfg(feature = "postgres")]
use crate::postgres::ChannelBinding;
use crate::tls::{CertificateWatch, UpstreamTls};
use crate::{Error, Pipeline, Result};

/// Policy rules (TOML, for [`RuleEngine::from_toml`](wirewarden_policy::RuleEngine)) that
/// deny HTTP requests no route describes: put your own `allow` rules after these.
pub const DEFAULT_HTTP_POLICY: &str = r#"
[[rule]]
id = "http-no-unknown-route"
protocols = ["http"]
class = "unknown"
action = "deny"
reason = "no route of this target describes the request"
"#;

/// One HTTP target of the gateway.
#[derive(Clone)]
pub struct HttpTarget {
    /// The target as policy and audit name it.
    pub target: Target,
    /// The upstream origin, `http://host[:port]`, or `https://host[:port]` with
    /// [`upstream_tls`](Self::upstream_tls) set.
    pub upstream: String,
    /// The routes that describe the upstream's API.
    pub routes: Routes,
    /// Headers set on every forwarded request: the credential the gateway holds (such as
    /// `Authorization: Bearer …` or `X-Api-Key: …`). Marked sensitive, never logged.
    pub credential: Vec<(HeaderName, HeaderValue)>,
    /// Request limits (head size, header count, body size, timeouts).
    pub limits: Limits,
    /// Response body limits (decoded size, compression ratio, buffered text).
    pub body_limits: BodyLimits,
    /// How the gateway talks to the upstream.
    pub upstream_settings: UpstreamSettings,
    /// TLS towards the upstream: required for an `https://` origin, refused for an
    /// `http://` one. The server certificate must chain to `config`'s roots and be issued
    /// for `server_name` (also sent as SNI); ALPN offers `http/1.1`, or `h2` when
    /// [`UpstreamSettings::http2`] is set, and the server must not pick anything else.
    /// `channel_binding` belongs to PostgreSQL's SCRAM login: an HTTP upstream has no such
    /// login, so [`ChannelBinding::Require`] is refused rather than ignored.
    pub upstream_tls: Option<UpstreamTls>,
    /// TLS towards clients, if set (ALPN `h2` and `http/1.1` are added).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How old the decision of a response that is still streaming (server-sent events, a
    /// long download) may be when it has more to send: older, and its request is decided
    /// again first. Refused now (a grant revoked, a budget spent, a rule's hours over), the
    /// response is cut. Default: one second.
    pub stream_recheck: Duration,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("target", &self.target)
            .field("upstream", &self.upstream)
            .field("routes", &self.routes)
            .field(
                "credential",
                &self.credential.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "upstream_tls",
                &self.upstream_tls.as_ref().map(|t| &t.server_name),
            )
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpTarget {
    /// A target for `upstream` with no routes (every request `Unknown`), no credential,
    /// default limits and no TLS on either side.
    #[must_use]
    pub fn new(target: Target, upstream: impl Into<String>) -> Self {
        Self {
            target,
            upstream: upstream.into(),
            routes: Routes::new(),
            credential: Vec::new(),
            limits: Limits::default(),
            body_limits: BodyLimits::default(),
            upstream_settings: UpstreamSettings::default(),
            upstream_tls: None,
            tls: None,
            stream_recheck: Duration::from_secs(1),
        }
    }

    /// Sets the TLS settings of an `https://` upstream (see
    /// [`upstream_tls`](Self::upstream_tls)).
    #[must_use]
    pub fn upstream_tls(mut self, tls: UpstreamTls) -> Self {
        self.upstream_tls = Some(tls);
        self
    }

    /// Sets the routes.
    #[must_use]
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// Adds a header the gateway sets on every forwarded request.
    #[must_use]
    pub fn credential(mut self, name: HeaderName, mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        self.credential.push((name, value));
        self
    }
}

type ReqBody = http_body_util::Limited<wirewarden_http::inspect::RequestBody<Incoming>>;

// === impl TargetUpstream ===

/// How the upstream is reached: the origin's scheme and the target's TLS settings agree on
/// it when the proxy is built.
#[derive(Debug, Clone)]
enum Transport {
    Tcp(Upstream<HttpConnector, ReqBody>),
    Tls(Upstream<TlsConnector, ReqBody>),
    /// Streams a [`Dial::Given`] hands over (the relay fuzz harness's server).
    Given(Upstream<GivenConnector, ReqBody>),
}

/// A connector whose connections are the streams a [`Dial::Given`] makes, used as they are.
#[derive(Clone)]
struct GivenConnector(Arc<dyn Fn() -> std::io::Result<BoxIo> + Send + Sync>);

impl std::fmt::Debug for GivenConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GivenConnector")
    }
}

impl tower::Service<http::Uri> for GivenConnector {
    type Response = GivenIo;
    type Error = std::io::Error;
    type Future = std::future::Ready<std::io::Result<GivenIo>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        std::future::ready((self.0)().map(|io| GivenIo(hyper_util::rt::TokioIo::new(io))))
    }
}

/// A stream from a [`GivenConnector`], as hyper's client reads and writes it.
struct GivenIo(hyper_util::rt::TokioIo<BoxIo>);

impl hyper::rt::Read for GivenIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for GivenIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for GivenIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// The upstream of one target, innermost service of the inspection stack: a connection
/// that cannot be set up is counted and recorded with the pipeline, as the PostgreSQL and
/// Redis proxies do, before the client is answered 502.
#[derive(Debug, Clone)]
struct TargetUpstream {
    transport: Transport,
    pipeline: Arc<Pipeline>,
    target: Target,
    origin: Arc<str>,
}

impl TargetUpstream {
    fn new(pipeline: Arc<Pipeline>, config: &HttpTarget) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::Config(format!("target {}: {e}", config.target.name))
        };
        let settings = &config.upstream_settings;
        let transport = match &config.upstream_tls {
            None => {
                Transport::Tcp(Upstream::http(&config.upstream, settings).map_err(|e| bad(&e))?)
            }
            Some(tls) => {
                #[cfg(feature = "postgres")]
                if tls.channel_binding == ChannelBinding::Require {
                    return Err(bad(
                        &"channel binding applies to PostgreSQL's SCRAM login; \
                         an HTTP upstream has no login to bind",
                    ));
                }
                Transport::Tls(
                    Upstream::https(
                        &config.upstream,
                        tls.config.clone(),
                        tls.server_name.clone(),
                        settings,
                    )
                    .map_err(|e| bad(&e))?,
                )
            }
        };
        let origin = match &transport {
            Transport::Tcp(u) => u.origin(),
            Transport::Tls(u) => u.origin(),
            Transport::Given(u) => u.origin(),
        };
        Ok(Self {
            transport,
            pipeline,
            target: config.target.clone(),
            origin: origin.into(),
        })
    }
}

type UpstreamFuture =
    Pin<Box<dyn Future<Output = std::result::Result<Response<Incoming>, UpstreamError>> + Send>>;

impl tower::Service<Request<ReqBody>> for TargetUpstream {
    type Response = Response<Incoming>;
    type Error = UpstreamError;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), UpstreamError>> {
        match &mut self.transport {
            Transport::Tcp(u) => u.poll_ready(cx),
            Transport::Tls(u) => u.poll_ready(cx),
            Transport::Given(u) => u.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let response = match &mut self.transport {
            Transport::Tcp(u) => u.call(req),
            Transport::Tls(u) => u.call(req),
            Transport::Given(u) => u.call(req),
        };
        let pipeline = self.pipeline.clone();
        let target = self.target.clone();
        let origin = self.origin.clone();
        Box::pin(async move {
            let result = response.await;
            if let Err(e @ UpstreamError::Connect(_)) = &result {
                let error = match e.connect_error() {
                    Some(ConnectError::Tcp(_)) | None => {
                        Error::upstream_io(std::io::Error::other(e.to_string()))
                    }
                    Some(tls) => Error::Tls(tls.to_string()),
                };
                pipeline.upstream_failed(&target, &origin, &error).await;
            }
            result
        })
    }
}

/// Serves HTTP clients for one target.
#[derive(Debug, Clone)]
pub struct HttpProxy {
    pipeline: Arc<Pipeline>,
    config: Arc<HttpTarget>,
    credential: Arc<Vec<(HeaderName, HeaderValue)>>,
    routes: Arc<Routes>,
    upstream: TargetUpstream,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl HttpProxy {
    /// A proxy for `config`.
    ///
    /// # Errors
    /// [`Error::Config`] if the upstream origin is not usable, or its scheme and
    /// [`HttpTarget::upstream_tls`] disagree: an `https://` origin without TLS settings, or
    /// TLS settings for an `http://` origin.
    pub fn new(pipeline: Arc<Pipeline>, config: HttpTarget) -> Result<Self> {
        let upstream = TargetUpstream::new(pipeline.clone(), &config)?;
        let tls = config.tls.as_ref().map(|c| {
            let mut c = (**c).clone();
            if c.alpn_protocols.is_empty() {
                c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            }
            Arc::new(c)
        });
        Ok(Self {
            pipeline,
            credential: Arc::new(config.credential.clone()),
            routes: Arc::new(config.routes.clone()),
            config: Arc::new(config),
            upstream,
            tls,
        })
    }

    /// The target this proxy serves.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.config.target
    }

    /// The same proxy, its upstream connections taken from `dial` (a [`Dial::Given`]
    /// stream is used as it is, without TLS).
    pub(crate) fn with_dial(mut self, dial: Dial) -> Result<Self> {
        if let Dial::Given(given) = dial {
            let upstream = Upstream::with_connector(
                &self.config.upstream,
                GivenConnector(given),
                &self.config.upstream_settings,
            )
            .map_err(|e| Error::Config(e.to_string()))?;
            self.upstream.transport = Transport::Given(upstream);
        }
        Ok(self)
    }

    /// Accepts connections on `listener` and serves each on its own task, until the task
    /// running this is dropped.
    ///
    /// # Errors
    /// None in practice: accept errors are retried.
    pub async fn listen(self, listener: tokio::net::TcpListener) -> Result<()> {
        crate::listen::accept_loop(listener, move |stream, peer| {
            let proxy = self.clone();
            async move {
                let _ = proxy.serve(stream, Some(peer)).await;
            }
        })
        .await
    }

    /// Serves one client connection to completion.
    ///
    /// # Errors
    /// TLS and connection-level HTTP errors; each request's own failures are answered on
    /// the connection and recorded.
    pub async fn serve<S>(&self, stream: S, peer: Option<SocketAddr>) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match &self.tls {
            Some(config) => {
                // The handshake gets the time a request head gets: a client that connects
                // and never finishes it holds nothing for longer.
                let accept = tokio_rustls::TlsAcceptor::from(config.clone()).accept(stream);
                let accepted = tokio::time::timeout(self.config.limits.header_read_timeout, accept)
                    .await
                    .map_err(|_| {
                        Error::Tls("no TLS handshake within the header read timeout".into())
                    })?;
                let tls = match accepted {
                    Ok(tls) => tls,
                    Err(e) => {
                        // rustls has sent the alert; a refusal over the client's certificate
                        // is a failed login and goes on record as one.
                        if let Some(reason) = crate::tls::certificate_refusal(&e) {
                            gate::auth_failed(
                                &self.pipeline,
                                &self.config.target,
                                peer,
                                "client_certificate",
                                reason,
                            )
                            .await;
                        }
                        return Err(Error::Tls(e.to_string()));
                    }
                };
                let chain = crate::tls::presented_chain(tls.get_ref().1);
                // Taken before the chain maps to an identity: lists replaced from here on
                // are checked by the watch.
                let watch = chain.as_ref().map_or_else(CertificateWatch::inert, |c| {
                    self.pipeline.certificate_watch(c)
                });
                let certificate = match chain {
                    Some(chain) => Some(self.certificate_login(chain, peer).await),
                    None => None,
                };
                self.serve_http(tls, peer, true, certificate, watch).await
            }
            None => {
                self.serve_http(stream, peer, false, None, CertificateWatch::inert())
                    .await
            }
        }
    }

    /// Maps a verified client certificate to the connection's identity, once per
    /// connection; a refusal is recorded here, and every request on the connection is then
    /// answered 401.
    async fn certificate_login(
        &self,
        chain: Vec<Vec<u8>>,
        peer: Option<SocketAddr>,
    ) -> CertificateLogin {
        let mut ctx = AuthContext::new().with_target(self.config.target.name.clone());
        if let Some(p) = peer {
            ctx = ctx.with_client_addr(p);
        }
        match self
            .pipeline
            .authenticate(&Credential::ClientCertificate(chain), &ctx)
            .await
        {
            Ok(principal) => CertificateLogin::Accepted(principal),
            Err(e) => {
                let reason = e.to_string();
                gate::auth_failed(
                    &self.pipeline,
                    &self.config.target,
                    peer,
                    "client_certificate",
                    reason.clone(),
                )
                .await;
                CertificateLogin::Refused(reason)
            }
        }
    }

    async fn serve_http<S>(
        &self,
        stream: S,
        peer: Option<SocketAddr>,
        tls: bool,
        certificate: Option<CertificateLogin>,
        mut watch: CertificateWatch,
    ) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let gate = Arc::new(ConnectionGate::new(
            self.pipeline.clone(),
            self.config.target.clone(),
            self.credential.clone(),
            peer,
            tls,
            certificate,
            self.config.stream_recheck,
        ));
        let layer = InspectLayer::new(gate.clone(), (*self.routes).clone())
            .limits(self.config.limits.clone())
            .body_limits(self.config.body_limits);
        let service = tower::Layer::layer(&layer, self.upstream.clone());
        let addr = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let served = wirewarden_http::server::serve_connection_with_gate(
            stream,
            addr,
            service,
            &self.config.limits,
            gate.clone(),
        );
        // When replaced revocation lists refuse the connection's certificate, the connection
        // is dropped (closed, as a server ends a connection it no longer serves), and a
        // request still being admitted is refused.
        let (result, revoked) = tokio::select! {
            result = served => (result, None),
            reason = watch.refused() => {
                gate.revoke(reason.clone());
                (Ok(()), Some(reason))
            }
        };
        let reason = match (revoked, &result) {
            (Some(reason), _) => SessionEndReason::CredentialRevoked { reason },
            (None, Ok(())) => SessionEndReason::ClientClosed,
            (None, Err(e)) => SessionEndReason::Error {
                message: e.to_string(),
            },
        };
        gate.close(reason).await;
        result.map_err(|e| Error::Io {
            peer: "client",
            source: std::io::Error::other(e.to_string()),
        })
    }
}
