//! A small HTTP(S) GET for key sets and discovery documents.
//!
//! Fetches are rare (a key set is cached and refreshed at most once per interval), so each
//! one opens its own connection: no pool, no redirects, a deadline over the whole exchange
//! and a bound on the body checked while reading it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::{Error, Result};

/// The certificate authorities trusted for `https` key-set URLs.
///
/// There is no built-in trust store: a gateway names the roots that sign its identity
/// provider's certificate, or hands over a complete rustls client configuration.
#[derive(Clone)]
pub struct TlsRoots(Arc<rustls::ClientConfig>);

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsRoots(..)")
    }
}

impl TlsRoots {
    /// Trusts the CA certificates in `pem` (one or more `CERTIFICATE` blocks).
    ///
    /// # Errors
    /// [`Error::Config`] if the PEM holds no usable certificate.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let mut reader = pem;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| Error::config(format!("reading CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::config(format!("CA certificate refused: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::config("the CA PEM holds no certificate"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self(Arc::new(config)))
    }

    /// Uses a complete rustls client configuration.
    #[must_use]
    pub fn from_client_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self(config)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    pub(crate) tls: Option<TlsRoots>,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
}

/// Scheme, host and port of an `http`/`https` URL, or why it is not usable.
pub(crate) fn check_url(url: &str, tls: Option<&TlsRoots>) -> Result<http::Uri> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::config(format!("URL {url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if tls.is_some() => {}
        Some("https") => {
            return Err(Error::config(format!(
                "URL {url:?} is https but no TLS roots were configured"
            )));
        }
        _ => return Err(Error::config(format!("URL {url:?} is not http or https"))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::config(format!("URL {url:?} has no host")));
    }
    Ok(uri)
}

impl Fetcher {
    /// GETs `uri` and returns the body of a `200 OK`; any failure as text for the error.
    pub(crate) async fn get(&self, uri: &http::Uri) -> std::result::Result<Bytes, String> {
        tokio::time::timeout(self.timeout, self.get_inner(uri))
            .await
            .map_err(|_| format!("GET {uri} timed out after {:?}", self.timeout))?
    }

    async fn get_inner(&self, uri: &http::Uri) -> std::result::Result<Bytes, String> {
        let host = uri.host().ok_or("no host")?;
        // Bracketed IPv6 literals connect without the brackets.
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((bare_host, port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if https {
            let tls = self.tls.as_ref().ok_or("https without TLS roots")?;
            let name = ServerName::try_from(bare_host.to_owned())
                .map_err(|e| format!("server name {host:?}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.0))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
            self.exchange(stream, uri).await
        } else {
            self.exchange(tcp, uri).await
        }
    }

    async fn exchange<S>(&self, stream: S, uri: &http::Uri) -> std::result::Result<Bytes, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let authority = uri.authority().map_or("", http::uri::Authority::as_str);
        let path = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let request = Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "wirewarden-identity")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building request: {e}"))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("GET {uri}: {e}"))?;
            if response.status() != http::StatusCode::OK {
                return Err(format!("GET {uri}: status {}", response.status()));
            }
            if let Some(len) = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                && len > self.max_body as u64
            {
                return Err(format!(
                    "GET {uri}: body of {len} bytes exceeds the limit of {}",
                    self.max_body
                ));
            }
            Limited::new(response.into_body(), self.max_body)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .map_err(|e| format!("GET {uri}: reading body: {e}"))
        }
        .await;
        driver.abort();
        result
    }
}
