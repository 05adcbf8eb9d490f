//! TLS to the upstream: a hyper-util connector for `https://` origins.
//!
//! [`TlsConnector`] opens the TCP connection through an inner connector (by default
//! hyper-util's [`HttpConnector`], with the upstream's connect timeout), then runs a rustls
//! client handshake with the configured roots and server name: SNI carries that name and
//! the certificate must be issued for it by a trusted authority. ALPN offers exactly the
//! protocol the upstream is configured to speak, and a server that picks something else is
//! refused before any request byte is written.
//!
//! The connector never speaks plaintext: asked for anything but an `https://` URI it fails,
//! so a configuration that asked for TLS cannot end up in clear text.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::Uri;
use http::uri::Scheme;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};

use super::UpstreamSettings;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ALPN_HTTP11: &str = "http/1.1";
const ALPN_H2: &str = "h2";

/// Why a TLS connection to the upstream could not be set up.
///
/// Reached from a failed request through
/// [`UpstreamError::connect_error`](super::UpstreamError::connect_error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connector was asked for a URI that is not `https://`: it never falls back to
    /// plaintext.
    #[error("refusing to connect to {uri} in plaintext: this upstream is reached over TLS only")]
    NotHttps {
        /// The URI asked for.
        uri: String,
    },
    /// The TCP connection could not be opened (refused, unreachable, timed out).
    #[error("TCP connection failed: {0}")]
    Tcp(#[source] BoxError),
    /// The server's certificate does not chain to an authority the gateway trusts (no
    /// trusted root names its issuer, or the one named did not sign it).
    #[error(
        "TLS handshake with {server_name}: the server certificate is not issued by a trusted \
         authority ({source})"
    )]
    UntrustedCertificate {
        /// The name the certificate was checked for.
        server_name: String,
        /// The verifier's error.
        #[source]
        source: rustls::Error,
    },
    /// The server's certificate is trusted but not issued for the expected name.
    #[error(
        "TLS handshake with {server_name}: the server certificate is not valid for that name \
         ({source})"
    )]
    NameMismatch {
        /// The name the certificate was checked for.
        server_name: String,
        /// The verifier's error, with the names the certificate carries.
        #[source]
        source: rustls::Error,
    },
    /// The server's certificate was refused for another reason (expired, not yet valid,
    /// revoked, wrong purpose, bad signature).
    #[error("TLS handshake with {server_name}: the server certificate was refused ({source})")]
    Certificate {
        /// The name the certificate was checked for.
        server_name: String,
        /// The verifier's error.
        #[source]
        source: rustls::Error,
    },
    /// The server answered the ClientHello with something that is not TLS: most likely a
    /// plaintext port.
    #[error(
        "TLS handshake with {server_name}: the server did not answer in TLS, is this a \
         plaintext port? ({source})"
    )]
    NotTls {
        /// The name the handshake was for.
        server_name: String,
        /// The error rustls saw.
        #[source]
        source: rustls::Error,
    },
    /// The handshake failed otherwise: no common version or cipher suite, an alert from the
    /// server, a peer that does not speak TLS, a connection closed mid-handshake.
    #[error("TLS handshake with {server_name} failed: {source}")]
    Handshake {
        /// The name the handshake was for.
        server_name: String,
        /// The error (a [`rustls::Error`] inside when TLS itself failed).
        #[source]
        source: io::Error,
    },
    /// The server did not finish the handshake within the connect timeout.
    #[error("TLS handshake with {server_name}: no answer within {timeout:?}")]
    HandshakeTimeout {
        /// The name the handshake was for.
        server_name: String,
        /// The time it had.
        timeout: Duration,
    },
    /// The server did not select the application protocol the upstream is configured for
    /// (ALPN, RFC 7301): speaking it anyway could have the server read the request as
    /// something else.
    #[error(
        "TLS handshake with {server_name}: the server selected ALPN protocol {}, \
         but {required:?} is required",
        selected.as_deref().map_or_else(|| "none".to_owned(), |s| format!("{s:?}"))
    )]
    Alpn {
        /// The name the handshake was for.
        server_name: String,
        /// The protocol required.
        required: &'static str,
        /// What the server selected, if anything (lossy UTF-8).
        selected: Option<String>,
    },
}

impl ConnectError {
    /// Sorts a handshake error: certificate problems get their own variants.
    fn handshake(server_name: &ServerName<'_>, e: io::Error) -> Self {
        let server_name = server_name.to_str().into_owned();
        let rustls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let cert = match rustls_error {
            Some(rustls::Error::InvalidCertificate(cert)) => cert,
            Some(
                not_tls @ rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            ) => {
                return Self::NotTls {
                    server_name,
                    source: not_tls.clone(),
                };
            }
            _ => {
                return Self::Handshake {
                    server_name,
                    source: e,
                };
            }
        };
        let source = rustls::Error::InvalidCertificate(cert.clone());
        match cert {
            // No trusted root issued it: either none is named as its issuer, or one is but
            // did not sign it (an impostor under a trusted authority's name).
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                Self::UntrustedCertificate {
                    server_name,
                    source,
                }
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Self::NameMismatch {
                    server_name,
                    source,
                }
            }
            _ => Self::Certificate {
                server_name,
                source,
            },
        }
    }
}

/// Connects to an `https://` upstream: TCP through the inner connector `C`, then TLS.
///
/// Build it with [`TlsConnector::new`] (TCP through [`HttpConnector`]) and hand it to
/// [`Upstream::https`](super::Upstream::https), or to
/// [`Upstream::with_connector`](super::Upstream::with_connector) with another transport
/// wrapped by [`TlsConnector::with_inner`].
#[derive(Clone)]
pub struct TlsConnector<C = HttpConnector> {
    inner: C,
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    alpn: &'static str,
    handshake_timeout: Duration,
}

impl<C> fmt::Debug for TlsConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .field("alpn", &self.alpn)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConnector<HttpConnector> {
    /// TLS over TCP from an [`HttpConnector`] with `settings.connect_timeout` and
    /// `TCP_NODELAY`; see [`with_inner`](Self::with_inner) for the TLS side.
    #[must_use]
    pub fn new(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        settings: &UpstreamSettings,
    ) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(settings.connect_timeout));
        // The scheme is checked here, before the inner connector is asked: it only opens
        // the TCP connection.
        tcp.enforce_http(false);
        Self::with_inner(tcp, config, server_name, settings)
    }
}

impl<C> TlsConnector<C> {
    /// TLS over the connections `inner` opens. `inner` is called with the `https://` URI
    /// and must only open the transport (an [`HttpConnector`] needs
    /// `enforce_http(false)`, as [`new`](Self::new) sets).
    ///
    /// `config` gives the trusted roots (and a client certificate, if the upstream demands
    /// one); its ALPN list is replaced by the one protocol the upstream speaks: `h2` when
    /// `settings.http2` is set, `http/1.1` otherwise. `server_name` is sent as SNI and is
    /// the name the server certificate must carry. The handshake gets
    /// `settings.connect_timeout`, on top of the time the TCP connection took.
    #[must_use]
    pub fn with_inner(
        inner: C,
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        settings: &UpstreamSettings,
    ) -> Self {
        let alpn = if settings.http2 { ALPN_H2 } else { ALPN_HTTP11 };
        let mut config = (*config).clone();
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        Self {
            inner,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            alpn,
            handshake_timeout: settings.connect_timeout,
        }
    }

    /// The name the server certificate must carry.
    #[must_use]
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }
}

impl<C> tower::Service<Uri> for TlsConnector<C>
where
    C: tower::Service<Uri> + Send + 'static,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = TlsStream<C::Response>;
    type Error = ConnectError;
    type Future = BoxFuture<'static, Result<Self::Response, ConnectError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| ConnectError::Tcp(e.into()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        if dst.scheme() != Some(&Scheme::HTTPS) {
            let uri = dst.to_string();
            return Box::pin(async move { Err(ConnectError::NotHttps { uri }) });
        }
        let connect = self.inner.call(dst);
        let tls = self.tls.clone();
        let server_name = self.server_name.clone();
        let required = self.alpn;
        let timeout = self.handshake_timeout;
        Box::pin(async move {
            let tcp = connect.await.map_err(|e| ConnectError::Tcp(e.into()))?;
            let handshake = tls.connect(server_name.clone(), TokioIo::new(tcp));
            let stream = tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| ConnectError::HandshakeTimeout {
                    server_name: server_name.to_str().into_owned(),
                    timeout,
                })?
                .map_err(|e| ConnectError::handshake(&server_name, e))?;
            let selected = stream.get_ref().1.alpn_protocol();
            // No ALPN answer means HTTP/1.1 (RFC 7301 §3.2: the server does not take part,
            // the default protocol applies); HTTP/2 over TLS is only ever agreed through
            // ALPN (RFC 9113 §3.2). rustls itself refuses a protocol that was not offered.
            let agreed = match selected {
                Some(p) => p == required.as_bytes(),
                None => required == ALPN_HTTP11,
            };
            if !agreed {
                return Err(ConnectError::Alpn {
                    server_name: server_name.to_str().into_owned(),
                    required,
                    selected: selected.map(|p| String::from_utf8_lossy(p).into_owned()),
                });
            }
            Ok(TlsStream {
                inner: TokioIo::new(stream),
                h2: required == ALPN_H2,
            })
        })
    }
}

/// A TLS connection to the upstream, as [`TlsConnector`] hands it to hyper.
pub struct TlsStream<T> {
    inner: TokioIo<tokio_rustls::client::TlsStream<TokioIo<T>>>,
    h2: bool,
}

impl<T> fmt::Debug for TlsStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("h2", &self.h2)
            .finish_non_exhaustive()
    }
}

impl<T> TlsStream<T> {
    /// The rustls connection state: protocol version, cipher suite, the server's
    /// certificates.
    #[must_use]
    pub fn tls(&self) -> &rustls::ClientConnection {
        self.inner.inner().get_ref().1
    }
}

impl<T: Connection + Read + Write + Unpin> Connection for TlsStream<T> {
    fn connected(&self) -> Connected {
        let connected = self.inner.inner().get_ref().0.inner().connected();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl<T: Read + Write + Unpin> Read for TlsStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Read + Write + Unpin> Write for TlsStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}
