//! The HTTP proxy: an embedder accepts a connection and hands the stream to
//! [`HttpProxy::serve`]; from then on every request is tied to the client's identity,
//! decided by policy, its response masked while it streams, and both recorded.
//!
//! # A connection
//!
//! 1. **TLS** (optional, ALPN `h2` and `http/1.1`) and the HTTP/1.1 or HTTP/2 server with
//!    strict limits ([`wirewarden_http::server`]); request heads that could be read two ways
//!    are refused before anything is decided ([`wirewarden_http::strict`]).
//! 2. **Identity per request** from `Authorization: Bearer` (a static token or a JWT), which
//!    is removed before the request goes anywhere. Each identity seen on a connection gets
//!    its own audit session (`SessionStarted` on first use, `SessionEnded` when the
//!    connection closes); a missing or rejected token is answered 401 and recorded as
//!    `AuthenticationFailed`.
//! 3. **Decision.** The request becomes a [`Command`](wirewarden_core::Command) (method,
//!    route template, path parameters, query; a request no route matches is `Unknown`, the
//!    riskiest class), policy decides, and the intent is recorded before the request is
//!    forwarded — if it cannot be, the request is refused (503). A denial is a 403 with a
//!    JSON body; a review holds the request until a reviewer decides.
//! 4. **Upstream.** The request goes to the target's one origin with the credential the
//!    gateway holds ([`HttpTarget::credential`]), never the client's.
//! 5. **Response.** On a masked route (the default) headers and body are masked by the
//!    session's profile while they stream — JSON by key rules and by content, text by
//!    content, through gzip, deflate and brotli — and anything that cannot be masked is
//!    refused rather than passed through. `CommandCompleted` records status errors, bytes,
//!    masked counts and duration.

mod gate;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncRead, AsyncWrite};
use wirewarden_core::{SessionEndReason, Target};
pub use wirewarden_http::body::BodyLimits;
use wirewarden_http::inspect::InspectLayer;
pub use wirewarden_http::route::{Route, Routes};
pub use wirewarden_http::strict::Limits;
use wirewarden_http::upstream::Upstream;
pub use wirewarden_http::upstream::UpstreamSettings;

use self::gate::ConnectionGate;
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
    /// The upstream origin, `http://host:port`.
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
    /// TLS towards clients, if set (ALPN `h2` and `http/1.1` are added).
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpTarget {
    /// A target for `upstream` with no routes (every request `Unknown`), no credential,
    /// default limits and no TLS.
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
            tls: None,
        }
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

/// Serves HTTP clients for one target.
#[derive(Debug, Clone)]
pub struct HttpProxy {
    pipeline: Arc<Pipeline>,
    config: Arc<HttpTarget>,
    credential: Arc<Vec<(HeaderName, HeaderValue)>>,
    routes: Arc<Routes>,
    upstream: Upstream<HttpConnector, ReqBody>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl HttpProxy {
    /// A proxy for `config`.
    ///
    /// # Errors
    /// [`Error::Config`] if the upstream origin is not usable.
    pub fn new(pipeline: Arc<Pipeline>, config: HttpTarget) -> Result<Self> {
        let upstream = Upstream::http(&config.upstream, &config.upstream_settings)
            .map_err(|e| Error::Config(format!("target {}: {e}", config.target.name)))?;
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
                let tls = tokio::time::timeout(self.config.limits.header_read_timeout, accept)
                    .await
                    .map_err(|_| {
                        Error::Tls("no TLS handshake within the header read timeout".into())
                    })?
                    .map_err(|e| Error::Tls(e.to_string()))?;
                self.serve_http(tls, peer, true).await
            }
            None => self.serve_http(stream, peer, false).await,
        }
    }

    async fn serve_http<S>(&self, stream: S, peer: Option<SocketAddr>, tls: bool) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let gate = Arc::new(ConnectionGate::new(
            self.pipeline.clone(),
            self.config.target.clone(),
            self.credential.clone(),
            peer,
            tls,
        ));
        let layer = InspectLayer::new(gate.clone(), (*self.routes).clone())
            .limits(self.config.limits.clone())
            .body_limits(self.config.body_limits);
        let service = tower::Layer::layer(&layer, self.upstream.clone());
        let addr = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let result = wirewarden_http::server::serve_connection_with_gate(
            stream,
            addr,
            service,
            &self.config.limits,
            gate.clone(),
        )
        .await;
        let reason = match &result {
            Ok(()) => SessionEndReason::ClientClosed,
            Err(e) => SessionEndReason::Error {
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
