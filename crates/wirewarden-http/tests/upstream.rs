//! The upstream client against raw TCP servers that misbehave on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};
use wirewarden_http::upstream::{Upstream, UpstreamSettings};

/// Reads one request head; `None` when the peer closed first.
async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A server whose first response on its first connection carries a second, unrequested
/// response in the same write; every other response says which connection it came on.
async fn desync_server(
    accepted: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = accepted.fetch_add(1, Ordering::SeqCst) + 1;
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut first = n == 1;
                while let Some(head) = read_head(&mut sock).await {
                    heads.lock().unwrap().push(head);
                    let reply = if first {
                        first = false;
                        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
                         HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
                            .to_owned()
                    } else {
                        let body = format!("conn-{n}");
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn get(
    up: &mut Upstream<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    target: &str,
) -> String {
    let req = Request::get(target)
        .header(header::HOST, "attacker.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = up.ready().await.unwrap().call(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn a_connection_with_leftover_bytes_is_never_reused() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = desync_server(accepted.clone(), heads.clone()).await;
    let mut up = Upstream::http(
        &format!("http://127.0.0.1:{port}"),
        &UpstreamSettings::default(),
    )
    .unwrap();

    assert_eq!(get(&mut up, "/first").await, "hello");
    // The unrequested response never answers the next request: that connection is gone.
    let second = get(&mut up, "/second").await;
    assert_ne!(second, "smuggled");
    assert_eq!(second, "conn-2");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A clean connection is reused.
    assert_eq!(get(&mut up, "/third").await, "conn-2");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // Every request went to the origin with the origin's Host, whatever the client said, and
    // an absolute-form target from the client does not redirect it.
    assert_eq!(
        get(&mut up, "http://elsewhere.example/fourth").await,
        "conn-2"
    );
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 4);
    for (h, path) in heads.iter().zip(["/first", "/second", "/third", "/fourth"]) {
        assert!(h.starts_with(&format!("GET {path} HTTP/1.1\r\n")), "{h}");
        assert!(
            h.to_ascii_lowercase()
                .contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{h}"
        );
        assert!(
            !h.contains("attacker.example") && !h.contains("elsewhere.example"),
            "{h}"
        );
    }
}

#[tokio::test]
async fn a_malformed_response_is_an_error_not_a_response() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let responses: [&[u8]; 4] = [
            // Obsolete line folding.
            b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
            // Space before the colon.
            b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
            // Two different lengths.
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            // Not HTTP at all.
            b"SSH-2.0-OpenSSH_9.2\r\n",
        ];
        for r in responses {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            if read_head(&mut sock).await.is_some() {
                let _ = sock.write_all(r).await;
                let _ = sock.shutdown().await;
            }
        }
    });
    let mut up = Upstream::http(
        &format!("http://127.0.0.1:{port}"),
        &UpstreamSettings::default(),
    )
    .unwrap();
    for i in 0..4 {
        let req = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        let r = up.ready().await.unwrap().call(req).await;
        assert!(r.is_err(), "response {i} was accepted");
    }
}

#[test]
fn https_needs_a_tls_connector() {
    let r = Upstream::<_, Empty<Bytes>>::http("https://example.com", &UpstreamSettings::default());
    assert!(r.is_err());
}
