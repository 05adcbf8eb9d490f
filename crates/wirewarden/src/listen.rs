//! The accept loop every proxy shares, and what they share around a held command.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

#[cfg(any(feature = "postgres", feature = "redis"))]
use crate::Error;
use crate::Result;

/// A byte stream to a peer: TCP, TLS over TCP, or an in-process stream.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A boxed stream.
pub(crate) type BoxIo = Box<dyn Io>;

/// Where a proxy's upstream connections come from.
#[derive(Clone, Default)]
pub(crate) enum Dial {
    /// TCP (and TLS, if configured) to the target's address.
    #[default]
    Tcp,
    /// A stream handed over in process, used as it is (no TLS): the relay fuzz harnesses
    /// play the server through it, so a hostile upstream's every byte is theirs to choose.
    Given(std::sync::Arc<dyn Fn() -> std::io::Result<BoxIo> + Send + Sync>),
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "Tcp",
            Self::Given(_) => "Given",
        })
    }
}

/// How much a client may send while one of its commands waits for review before the
/// gateway stops reading (and so stops noticing that it left) until the review is done.
#[cfg(any(feature = "postgres", feature = "redis"))]
const HELD_READ_LIMIT: usize = 1 << 20;

/// Completes when the client closes its connection (or it fails), keeping whatever it
/// sends before that in `buf`, after what is there: run beside a review wait, so a client
/// that leaves gives up the wait (which cancels the review) rather than have its command
/// run for nobody.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) async fn client_gone<R>(io: &mut R, buf: &mut bytes::BytesMut)
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt as _;
    loop {
        if buf.len() >= HELD_READ_LIMIT {
            return std::future::pending().await;
        }
        buf.reserve(16 * 1024);
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A timer that fires when a session's credential expires (`None`: never). The PostgreSQL
/// and Redis proxies end the session then (`SessionEndReason::CredentialExpired`), rather
/// than keep a connection open whose every command would be refused.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) fn credential_expiry(
    expires_at: Option<wirewarden_core::Timestamp>,
) -> std::pin::Pin<Box<tokio::time::Sleep>> {
    // Far enough to be never; tokio caps a deadline at about two years anyway.
    const NEVER: Duration = Duration::from_secs(60 * 60 * 24 * 365);
    let wait = expires_at.map_or(NEVER, |at| {
        at.saturating_duration_since(wirewarden_core::Timestamp::now())
    });
    Box::pin(tokio::time::sleep(wait))
}

/// Accepts connections and serves each on its own task. Accept errors (out of file
/// descriptors, a connection reset before it was accepted) are transient: the loop backs off
/// briefly and goes on, so a burst of connections cannot stop a listener for good.
pub(crate) async fn accept_loop<F, Fut>(listener: TcpListener, serve: F) -> Result<()>
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, peer));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs the gateway's own connection to an upstream (connect, TLS handshake, login) within
/// `limit`: an upstream that never answers (a TLS hello sent to a plaintext server, a stalled
/// login) would otherwise hold the client that waits for it. Running out of time is an
/// upstream I/O error (`TimedOut`) saying what did not happen.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) async fn upstream_within<T>(
    limit: Duration,
    connect: impl Future<Output = Result<T>>,
    what: &'static str,
) -> Result<T> {
    tokio::time::timeout(limit, connect)
        .await
        .unwrap_or_else(|_| {
            Err(Error::upstream_io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                what,
            )))
        })
}
