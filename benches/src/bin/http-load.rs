//! A closed-loop HTTP/1.1 load generator for the HTTP proxy benchmark.
//!
//! `http-load <url> <connections> <seconds> [header: value]...` keeps `connections`
//! keep-alive connections busy for `seconds`, each sending the next request as soon as the
//! previous response body has been read, and prints one tab-separated line:
//! `requests  requests/s  MB/s  p50_us  p99_us  errors`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

struct Stats {
    latencies_us: Vec<u32>,
    bytes: u64,
    errors: u64,
}

async fn worker(
    addr: String,
    uri: hyper::Uri,
    headers: Vec<(String, String)>,
    until: Instant,
) -> Stats {
    let mut st = Stats {
        latencies_us: Vec::with_capacity(100_000),
        bytes: 0,
        errors: 0,
    };
    'conn: while Instant::now() < until {
        let Ok(sock) = tokio::net::TcpStream::connect(&addr).await else {
            st.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = sock.set_nodelay(true);
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(sock)).await
        else {
            st.errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let mut req = Request::get(uri.clone());
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let Ok(req) = req.body(Empty::<Bytes>::new()) else {
                st.errors += 1;
                return st;
            };
            let start = Instant::now();
            if send.ready().await.is_err() {
                st.errors += 1;
                continue 'conn;
            }
            let resp = match send.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    st.errors += 1;
                    continue 'conn;
                }
            };
            let ok = resp.status().is_success();
            match resp.into_body().collect().await {
                Ok(b) if ok => {
                    st.bytes += b.to_bytes().len() as u64;
                    let us = start.elapsed().as_micros();
                    st.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                _ => {
                    st.errors += 1;
                    continue 'conn;
                }
            }
        }
    }
    st
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: http-load <url> <connections> <seconds> [header: value]...");
        std::process::exit(2);
    }
    let uri: hyper::Uri = args[1].parse().expect("url");
    let conns: usize = args[2].parse().expect("connections");
    let secs: u64 = args[3].parse().expect("seconds");
    let headers: Vec<(String, String)> = args[4..]
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let addr = format!(
        "{}:{}",
        uri.host().expect("host"),
        uri.port_u16().unwrap_or(80)
    );
    let path: hyper::Uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .expect("path");
    let mut headers = headers;
    headers.push(("host".into(), addr.clone()));
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(worker(addr.clone(), path.clone(), headers.clone(), until)))
        .collect();
    let mut all = Vec::new();
    let (mut bytes, mut errors) = (0u64, 0u64);
    for t in tasks {
        let st = t.await.expect("worker");
        all.extend(st.latencies_us);
        bytes += st.bytes;
        errors += st.errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            0
        } else {
            all[((all.len() - 1) as f64 * p) as usize]
        }
    };
    let n = all.len();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{n}\t{:.0}\t{:.1}\t{}\t{}\t{errors}",
        n as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        pct(0.50),
        pct(0.99)
    );
}
