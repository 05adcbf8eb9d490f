//! A fixed-answer HTTP/1.1 server for the HTTP proxy benchmark: fast enough that the proxy,
//! not the upstream, is what the benchmark measures.
//!
//! `http-upstream <port>` serves:
//! - `GET /small`: a ~400-byte JSON customer record with an e-mail, an SSN and a card number;
//! - `GET /large`: a ~100 KB JSON array of 250 such records;
//! - `GET /clean`: a ~100 KB JSON array with no sensitive values at all.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, header};
use hyper_util::rt::TokioIo;

fn record(i: usize, pii: bool) -> String {
    if pii {
        format!(
            r#"{{"id":{i},"name":"Customer {i}","email":"customer{i}@example.com","ssn":"123-45-6789","card":"4111 1111 1111 1111","plan":"pro","notes":"renewal due, called on day {i}"}}"#
        )
    } else {
        format!(
            r#"{{"id":{i},"name":"Customer {i}","email_verified":true,"region":"eu-west","card_brand":"visa","plan":"pro","notes":"renewal due, called on day {i}"}}"#
        )
    }
}

fn array(n: usize, pii: bool) -> Bytes {
    let items: Vec<String> = (0..n).map(|i| record(i, pii)).collect();
    Bytes::from(format!("[{}]", items.join(",")))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let small = Bytes::from(record(1, true));
    let large = array(250, true);
    let clean = array(250, false);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        let (small, large, clean) = (small.clone(), large.clone(), clean.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let body = match req.uri().path() {
                    "/small" => Some(small.clone()),
                    "/large" => Some(large.clone()),
                    "/clean" => Some(clean.clone()),
                    _ => None,
                };
                async move {
                    let resp = match body {
                        Some(b) => Response::builder()
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(Full::new(b)),
                        None => Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::new())),
                    };
                    Ok::<_, Infallible>(resp.unwrap_or_default())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}
