//! Serving the inspection layer: hyper's HTTP/1 and HTTP/2 connection settings taken from
//! [`Limits`], the client's address as a request extension, and the raw-byte HTTP/1 check.
//!
//! [`serve_connection`] is the whole server side of one accepted connection; [`builder`] is
//! for embedders who drive hyper themselves (they then get hyper's parser limits but not the
//! raw-byte [`Http1Scanner`], which needs to see the bytes before hyper does).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;
use wirewarden_core::BoxError;

use crate::strict::{Http1Scanner, Limits};
use crate::{Gate, Rejection};

/// The client's address, inserted by [`serve_connection`] into every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// A connection builder for HTTP/1.1 and HTTP/2 (prior knowledge) with the settings of
/// `limits`:
///
/// - HTTP/1: read buffer [`Limits::max_buf_size`] (a head that does not fit is refused with
///   431 by hyper), [`Limits::max_headers`], [`Limits::header_read_timeout`], no half-close
///   (a client that shuts its write side mid-request is gone), invalid header lines refused
///   rather than skipped;
/// - HTTP/2: [`Limits::h2_max_concurrent_streams`], header list size
///   [`Limits::max_header_bytes`], [`Limits::h2_max_frame_size`],
///   [`Limits::h2_max_send_buf_size`], keep-alive pings, and the reset-stream bounds against
///   rapid-reset floods ([`Limits::h2_max_pending_accept_reset_streams`],
///   [`Limits::h2_max_local_error_reset_streams`]). Extended `CONNECT` stays off.
#[must_use]
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_buf_size.max(8192))
        .max_headers(limits.max_headers)
        .header_read_timeout(limits.header_read_timeout)
        .half_close(false)
        .ignore_invalid_headers(false)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_frame_size(limits.h2_max_frame_size)
        .max_send_buf_size(limits.h2_max_send_buf_size)
        .keep_alive_interval(limits.h2_keep_alive_interval)
        .keep_alive_timeout(limits.h2_keep_alive_timeout)
        .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams);
    b
}

/// Serves one accepted connection: HTTP/1.1 or HTTP/2 with the settings of [`builder`],
/// every request carrying [`PeerAddr`], and every HTTP/1 request head checked on the raw
/// bytes by an [`Http1Scanner`] before `service` sees it. A refused head is answered with
/// its [`Rejection`] and `Connection: close`; a framing violation inside a request body fails
/// the connection (the request was already on its way, so there is nothing left to answer).
///
/// `service` is a [`tower::Service`], cloned for each request — typically
/// `InspectLayer::layer(upstream)`.
///
/// # Errors
/// The connection's IO or protocol error, if it did not end cleanly.
pub async fn serve_connection<I, S, B>(
    io: I,
    peer: SocketAddr,
    service: S,
    limits: &Limits,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    serve(io, peer, service, limits, None).await
}

/// [`serve_connection`], with every request head the raw-byte scanner refuses also reported
/// to `gate` through [`Gate::refused`] (with the client's address), so that smuggling
/// attempts refused before any request reached the service are in the audit trail too.
///
/// # Errors
/// The connection's IO or protocol error, if it did not end cleanly.
pub async fn serve_connection_with_gate<I, S, B, G>(
    io: I,
    peer: SocketAddr,
    service: S,
    limits: &Limits,
    gate: G,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    G: Gate,
{
    serve(io, peer, service, limits, Some(Arc::new(gate))).await
}

async fn serve<I, S, B>(
    io: I,
    peer: SocketAddr,
    service: S,
    limits: &Limits,
    gate: Option<Arc<dyn Gate>>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let scanner = Arc::new(Mutex::new(Http1Scanner::new(limits)));
    let io = TokioIo::new(ScannedIo {
        inner: io,
        scanner: Arc::clone(&scanner),
    });
    let svc = ConnService {
        inner: service,
        peer,
        scanner,
        gate,
    };
    builder(limits).serve_connection(io, svc).await
}

fn lock(scanner: &Mutex<Http1Scanner>) -> MutexGuard<'_, Http1Scanner> {
    // The scanner never panics while locked; a poisoned lock still holds a usable state.
    scanner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// === impl ScannedIo ===

/// The client socket, with every byte read shown to the scanner before hyper sees it.
struct ScannedIo<I> {
    inner: I,
    scanner: Arc<Mutex<Http1Scanner>>,
}

impl<I: AsyncRead + Unpin> AsyncRead for ScannedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().get(before..).unwrap_or_default();
                match lock(&this.scanner).feed(new) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(r) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, r))),
                }
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ScannedIo<I> {
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// === impl ConnService ===

/// Bridges a tower service to hyper for one connection: inserts [`PeerAddr`] and applies the
/// scanner's verdict on each HTTP/1 request.
struct ConnService<S> {
    inner: S,
    peer: SocketAddr,
    scanner: Arc<Mutex<Http1Scanner>>,
    gate: Option<Arc<dyn Gate>>,
}

type ConnFuture<B> =
    Pin<Box<dyn Future<Output = Result<Response<Either<B, Full<Bytes>>>, BoxError>> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Either<B, Full<Bytes>>>;
    type Error = BoxError;
    type Future = ConnFuture<B>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(PeerAddr(self.peer));
        if req.version() < http::Version::HTTP_2
            && let Err(r) = lock(&self.scanner).next_head()
        {
            let gate = self.gate.clone();
            let peer = self.peer;
            return Box::pin(async move {
                if let Some(gate) = gate {
                    gate.refused(&r, Some(peer)).await;
                }
                Ok(refuse_and_close(r))
            });
        }
        let svc = self.inner.clone();
        Box::pin(async move {
            let resp = svc.oneshot(req).await.map_err(Into::into)?;
            Ok(resp.map(Either::Left))
        })
    }
}

fn refuse_and_close<B>(r: Rejection) -> Response<Either<B, Full<Bytes>>> {
    let mut resp = r.into_response::<Full<Bytes>>().map(Either::Right);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
