//! The upstream client: one origin, pooled connections, never reused after a protocol error.
//!
//! [`Upstream`] is the innermost [`tower::Service`] of the inspection stack: it sends each
//! request to one configured origin, whatever the client put in its request target or `Host`
//! header, so a client can never steer the gateway (and the credential it injects) to another
//! server. Responses are parsed strictly — no obsolete line folding, no spaces before the
//! colon, no invalid header lines — and a connection is only returned to the pool after a
//! response was read to its end with nothing left over: hyper closes a connection on which
//! bytes arrive that no request asked for (a desynchronised or smuggling upstream), so those
//! bytes never become the response to the next request.
//!
//! An `http://` origin is reached over TCP ([`Upstream::http`]), an `https://` origin over
//! TLS ([`Upstream::https`], [`TlsConnector`]); each constructor refuses the other scheme,
//! so TLS that was asked for is never silently dropped, and TLS that was not configured is
//! never guessed at.

mod tls;

pub use tls::{ConnectError, TlsConnector, TlsStream};

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The upstream is unusable or a request to it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The origin is not an absolute `http://` or `https://` URI with no path.
    #[error("upstream origin {origin:?}: {why}")]
    Origin {
        /// The origin as configured.
        origin: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No connection to the upstream could be set up: TCP or, for `https://`, the TLS
    /// handshake ([`connect_error`](Self::connect_error) tells which).
    #[error("upstream connection failed{}", Causes(.0))]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// Writing the request or reading the response head failed.
    #[error("upstream request failed: {0}")]
    Request(#[source] hyper_util::client::legacy::Error),
    /// The response head did not arrive in time.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
}

impl UpstreamError {
    fn from_client(e: hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            Self::Connect(e)
        } else {
            Self::Request(e)
        }
    }

    /// Why the TLS connection could not be set up, when that is what failed (an untrusted
    /// certificate, a name mismatch, no ALPN agreement, a TCP failure under TLS).
    #[must_use]
    pub fn connect_error(&self) -> Option<&ConnectError> {
        let Self::Connect(e) = self else {
            return None;
        };
        let mut cause = e.source();
        while let Some(c) = cause {
            if let Some(found) = c.downcast_ref::<ConnectError>() {
                return Some(found);
            }
            cause = c.source();
        }
        None
    }
}

/// Writes the causes of an error, each after `": "` (hyper-util's own message, "client
/// error (Connect)", says nothing an operator can act on).
struct Causes<'a>(&'a hyper_util::client::legacy::Error);

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cause = self.0.source();
        let mut last = String::new();
        // Bounded: a cyclic chain from a foreign error type must not loop forever.
        for _ in 0..8 {
            let Some(c) = cause else { break };
            let text = c.to_string();
            // Errors that already quote their source are not repeated.
            if !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            cause = c.source();
        }
        Ok(())
    }
}

/// How the gateway talks to an upstream.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpstreamSettings {
    /// Longest wait for a TCP connection, and on its own for the TLS handshake of an
    /// `https://` upstream.
    pub connect_timeout: Duration,
    /// Longest wait for the response head once the request was sent.
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per origin.
    pub max_idle: usize,
    /// Largest response head, in bytes.
    pub max_head_bytes: usize,
    /// Most response header lines.
    pub max_headers: usize,
    /// Speak HTTP/2 instead of HTTP/1.1: with prior knowledge over TCP, agreed through ALPN
    /// `h2` over TLS.
    pub http2: bool,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(30),
            max_idle: 64,
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            http2: false,
        }
    }
}

/// Sends every request to one origin. Cheap to clone (the pool is shared).
pub struct Upstream<C, B> {
    client: Client<C, B>,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    response_timeout: Duration,
    http2: bool,
}

impl<C: Clone, B> Clone for Upstream<C, B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            host: self.host.clone(),
            response_timeout: self.response_timeout,
            http2: self.http2,
        }
    }
}

impl<C, B> fmt::Debug for Upstream<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field(
                "origin",
                &format_args!("{}://{}", self.scheme, self.authority),
            )
            .finish_non_exhaustive()
    }
}

/// Splits an origin such as `http://127.0.0.1:8080` into scheme and authority.
fn parse_origin(origin: &str) -> Result<(Scheme, Authority), UpstreamError> {
    let bad = |why| UpstreamError::Origin {
        origin: origin.to_owned(),
        why,
    };
    let uri: Uri = origin.parse().map_err(|_| bad("not a URI"))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the origin are not allowed"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("an origin has no path or query"));
    }
    Ok((scheme, authority))
}

impl<B> Upstream<HttpConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A plain-TCP upstream at `origin` (`http://host:port`).
    ///
    /// # Errors
    /// [`UpstreamError::Origin`] if `origin` is not an `http://` origin.
    pub fn http(origin: &str, settings: &UpstreamSettings) -> Result<Self, UpstreamError> {
        let (scheme, _) = parse_origin(origin)?;
        if scheme != Scheme::HTTP {
            return Err(UpstreamError::Origin {
                origin: origin.to_owned(),
                why: "an https origin needs TLS settings (Upstream::https)",
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        Self::with_connector(origin, connector, settings)
    }
}

impl<B> Upstream<TlsConnector<HttpConnector>, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A TLS upstream at `origin` (`https://host[:port]`, port 443 when absent), trusting
    /// `config`'s roots for a certificate issued for `server_name` (also sent as SNI).
    /// See [`TlsConnector::with_inner`] for ALPN and the handshake timeout.
    ///
    /// # Errors
    /// [`UpstreamError::Origin`] if `origin` is not an `https://` origin: TLS settings
    /// given for an `http://` origin are a configuration mistake, not a reason to speak
    /// plaintext.
    pub fn https(
        origin: &str,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
        settings: &UpstreamSettings,
    ) -> Result<Self, UpstreamError> {
        let (scheme, _) = parse_origin(origin)?;
        if scheme != Scheme::HTTPS {
            return Err(UpstreamError::Origin {
                origin: origin.to_owned(),
                why: "TLS settings are given but the origin is not https",
            });
        }
        let connector = TlsConnector::new(config, server_name, settings);
        Self::with_connector(origin, connector, settings)
    }
}

impl<C, B> Upstream<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// An upstream at `origin` reached through `connector` (for TLS or another transport).
    ///
    /// # Errors
    /// [`UpstreamError::Origin`] if `origin` is not an absolute origin.
    pub fn with_connector(
        origin: &str,
        connector: C,
        settings: &UpstreamSettings,
    ) -> Result<Self, UpstreamError> {
        let (scheme, authority) = parse_origin(origin)?;
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| UpstreamError::Origin {
                origin: origin.to_owned(),
                why: "the host is not a valid header value",
            })?;
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.max_idle)
            .http1_max_buf_size(settings.max_head_bytes.max(8192))
            .http1_max_headers(settings.max_headers)
            .http1_allow_obsolete_multiline_headers_in_responses(false)
            .http1_allow_spaces_after_header_name_in_responses(false)
            .http1_ignore_invalid_headers_in_responses(false)
            .http09_responses(false)
            .http2_only(settings.http2)
            .http2_max_header_list_size(u32::try_from(settings.max_head_bytes).unwrap_or(u32::MAX))
            // The gateway sets Host itself: always the upstream's, never the client's.
            .set_host(false);
        Ok(Self {
            client: builder.build(connector),
            scheme,
            authority,
            host,
            response_timeout: settings.response_timeout,
            http2: settings.http2,
        })
    }

    /// The origin requests go to.
    #[must_use]
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// Points `req` at the origin: its request target becomes origin-form on the upstream,
    /// its `Host` the upstream's authority.
    fn retarget(&self, req: &mut Request<B>) {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        // HTTP/2 carries the authority as a pseudo-header taken from the URI; HTTP/1.1
        // needs Host.
        if self.http2 {
            req.headers_mut().remove(header::HOST);
        } else {
            req.headers_mut().insert(header::HOST, self.host.clone());
        }
    }
}

impl<C, B> tower::Service<Request<B>> for Upstream<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Incoming>;
    type Error = UpstreamError;
    type Future =
        futures_util::future::BoxFuture<'static, Result<Response<Incoming>, UpstreamError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The client's HTTP version is its business with the gateway; the upstream
        // connection speaks what it was configured for.
        *req.version_mut() = if self.http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        self.retarget(&mut req);
        let fut = self.client.request(req);
        let timeout = self.response_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(UpstreamError::from_client),
                Err(_) => Err(UpstreamError::Timeout(timeout)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(parse_origin("http://127.0.0.1:8080").is_ok());
        assert!(parse_origin("https://api.example.com").is_ok());
        assert!(parse_origin("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "127.0.0.1:8080",
            "ftp://example.com",
            "http://user:pw@example.com",
            "http://example.com/api",
            "http://example.com?x=1",
            "not a uri",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    type TestBody = http_body_util::Empty<bytes::Bytes>;

    fn client_config() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }

    fn name() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from("api.example.com").unwrap()
    }

    #[test]
    fn the_scheme_decides_tls_and_a_mismatch_is_refused() {
        let settings = UpstreamSettings::default();
        let e = Upstream::<_, TestBody>::http("https://api.example.com", &settings).unwrap_err();
        assert!(e.to_string().contains("needs TLS settings"), "{e}");
        let e = Upstream::<_, TestBody>::https(
            "http://api.example.com",
            client_config(),
            name(),
            &settings,
        )
        .unwrap_err();
        assert!(e.to_string().contains("origin is not https"), "{e}");
        let up = Upstream::<_, TestBody>::https(
            "https://api.example.com",
            client_config(),
            name(),
            &settings,
        )
        .unwrap();
        assert_eq!(up.origin(), "https://api.example.com");
    }

    #[tokio::test]
    async fn the_tls_connector_never_connects_in_plaintext() {
        // A listener that would accept a plaintext connection: it must never see one.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connector =
            TlsConnector::new(client_config(), name(), &UpstreamSettings::default());
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let e = tower::ServiceExt::oneshot(&mut connector, uri)
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectError::NotHttps { .. }), "{e}");
        // The first connection the listener accepts is this probe, not one of the
        // connector's.
        let probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, from) = listener.accept().await.unwrap();
        assert_eq!(
            from,
            probe.local_addr().unwrap(),
            "the connector opened a connection"
        );
    }
}
