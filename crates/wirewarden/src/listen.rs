//! The accept loop every proxy shares.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::Result;

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
