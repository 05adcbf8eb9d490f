//! Request smuggling shapes sent as raw bytes to the inspection front, served by
//! `server::serve_connection` in front of a real recording upstream: each is refused with a
//! 4xx (or 501 for tunnels), the connection is closed, and the upstream never sees the
//! request, nor the one hidden behind it. Well-framed requests refused for their path leave
//! the connection usable; those send `Connection: close` so the test can read to the end.

mod support;

use support::{Recorder, TOKEN, TestGate, json_code, raw, start_front, start_upstream, statuses};
use wirewarden_http::strict::Limits;

/// Who refuses a shape: hyper's own parser (an empty 4xx), or this crate (a JSON rejection
/// with this code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Hyper,
    Us(&'static str),
}

const SMUGGLED: &str = "GET /public/smuggled HTTP/1.1\r\nHost: up\r\n\r\n";

fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

fn cases() -> Vec<(&'static str, String, By)> {
    let a = auth();
    let s = SMUGGLED;
    let n = s.len();
    vec![
        (
            "CL.TE: Content-Length and Transfer-Encoding",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}",
                n + 5
            ),
            By::Us("request_smuggling"),
        ),
        (
            "TE.CL: Transfer-Encoding first",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n",
                n
            ),
            By::Us("request_smuggling"),
        ),
        (
            "TE with a tab before the value, and Content-Length",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding:\tchunked\r\nContent-Length: {}\r\n\r\n0\r\n\r\n{s}",
                n + 5
            ),
            By::Us("request_smuggling"),
        ),
        (
            "space before the colon of Transfer-Encoding",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding : chunked\r\nContent-Length: {}\r\n\r\n0\r\n\r\n{s}",
                n + 5
            ),
            By::Hyper,
        ),
        (
            "chunked then identity",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{s}"
            ),
            By::Hyper,
        ),
        (
            "identity then chunked (two Transfer-Encoding lines)",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}"
            ),
            By::Us("request_smuggling"),
        ),
        (
            "chunked, chunked",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n{s}"
            ),
            By::Us("request_smuggling"),
        ),
        (
            "gzip, chunked",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{s}"
            ),
            By::Us("request_smuggling"),
        ),
        (
            "xchunked",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{s}"
            ),
            By::Hyper,
        ),
        (
            "chunked with a parameter",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: chunked;foo=bar\r\n\r\n0\r\n\r\n{s}"
            ),
            By::Hyper,
        ),
        (
            "quoted chunked",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n{s}"
            ),
            By::Hyper,
        ),
        (
            "two equal Content-Length lines",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Content-Length: {n}\r\nContent-Length: {n}\r\n\r\n{s}"
            ),
            By::Us("request_smuggling"),
        ),
        (
            "two different Content-Length lines",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Content-Length: 0\r\nContent-Length: {n}\r\n\r\n{s}"
            ),
            By::Hyper,
        ),
        (
            "Content-Length as a list",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Content-Length: {n}, {n}\r\n\r\n{s}"
            ),
            By::Hyper,
        ),
        (
            "Content-Length with a plus sign",
            format!("POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Content-Length: +{n}\r\n\r\n{s}"),
            By::Hyper,
        ),
        (
            "Content-Length continued on an obs-fold line",
            format!("POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Content-Length:\r\n {n}\r\n\r\n{s}"),
            By::Hyper,
        ),
        (
            "Transfer-Encoding hidden in an obs-fold line",
            format!(
                "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}X-Pad: a\r\n Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n\r\n{s}"
            ),
            By::Hyper,
        ),
        (
            "bare LF line ends",
            format!("GET /public/a HTTP/1.1\nHost: up\n{}\n\n{s}", a.trim_end()),
            By::Us("malformed_request"),
        ),
        (
            "bare LF inside a CRLF head",
            format!(
                "GET /public/a HTTP/1.1\r\nHost: up\r\n{a}X-A: 1\nContent-Length: {n}\r\n\r\n{s}"
            ),
            By::Us("malformed_request"),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            format!(
                "POST /public/a HTTP/1.0\r\nHost: up\r\n{a}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}"
            ),
            By::Hyper,
        ),
        (
            "a header over the head limit (but inside hyper's buffer)",
            format!(
                "GET /public/a HTTP/1.1\r\nHost: up\r\n{a}X-Big: {}\r\n\r\n{s}",
                "b".repeat(20_000)
            ),
            By::Us("header_too_large"),
        ),
        (
            "a head over hyper's buffer",
            format!(
                "GET /public/a HTTP/1.1\r\nHost: up\r\n{a}X-Big: {}\r\n\r\n{s}",
                "b".repeat(70_000)
            ),
            By::Hyper,
        ),
        (
            "too many header fields",
            format!(
                "GET /public/a HTTP/1.1\r\nHost: up\r\n{a}{}\r\n{s}",
                (0..150)
                    .map(|i| format!("X-{i}: {i}\r\n"))
                    .collect::<String>()
            ),
            By::Hyper,
        ),
        (
            "CONNECT tunnel",
            format!("CONNECT up:443 HTTP/1.1\r\nHost: up:443\r\n{a}\r\n{s}"),
            By::Us("method_unsupported"),
        ),
        (
            "Upgrade to h2c",
            format!(
                "GET /public/a HTTP/1.1\r\nHost: up\r\n{a}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n{s}"
            ),
            By::Us("upgrade_unsupported"),
        ),
        (
            "Upgrade to websocket",
            format!(
                "GET /public/a HTTP/1.1\r\nHost: up\r\n{a}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n{s}"
            ),
            By::Us("upgrade_unsupported"),
        ),
        (
            "dot segments encoded in the path",
            format!(
                "GET /public/%2e%2e/admin/users HTTP/1.1\r\nHost: up\r\n{a}Connection: close\r\n\r\n"
            ),
            By::Us("ambiguous_path"),
        ),
        (
            "encoded slash in the path",
            format!(
                "GET /public/..%2fadmin/users HTTP/1.1\r\nHost: up\r\n{a}Connection: close\r\n\r\n"
            ),
            By::Us("ambiguous_path"),
        ),
        (
            "absolute-form target naming another host",
            format!("GET http://internal.example/public/a HTTP/1.1\r\nHost: up\r\n{a}\r\n"),
            By::Us("request_smuggling"),
        ),
        (
            "Connection header removing Authorization",
            format!(
                "GET /public/a HTTP/1.1\r\nHost: up\r\n{a}Connection: close, Authorization\r\n\r\n"
            ),
            By::Us("hop_by_hop_abuse"),
        ),
        (
            "two spaces in the request line",
            format!("GET  /public/a HTTP/1.1\r\nHost: up\r\n{a}\r\n"),
            By::Hyper,
        ),
        (
            "NUL in a header value",
            format!("GET /public/a HTTP/1.1\r\nHost: up\r\n{a}X-A: a\0b\r\n\r\n"),
            By::Hyper,
        ),
    ]
}

async fn front() -> (Recorder, TestGate, std::net::SocketAddr) {
    let upstream = start_upstream().await;
    let gate = TestGate::default();
    let front = start_front(upstream.addr, gate.clone(), Limits::default()).await;
    (upstream, gate, front)
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_never_reach_the_upstream() {
    let (upstream, gate, front) = front().await;
    let mut failures = Vec::new();
    for (name, bytes, by) in cases() {
        let resp = raw(front, bytes.as_bytes()).await;
        let st = statuses(&resp);
        let status = st.first().copied().unwrap_or(0);
        let refused = (400..500).contains(&status) || status == 501;
        let who = match json_code(&resp) {
            Some(code) => By::Us(Box::leak(code.into_boxed_str())),
            None => By::Hyper,
        };
        let seen = upstream.take();
        // Our refusals are reported to the gate (with the client's address), hyper's are not.
        let reported: Vec<_> = std::mem::take(&mut *gate.refused.lock().unwrap());
        let want_reported = match by {
            By::Us(code) => vec![code],
            By::Hyper => vec![],
        };
        let got_reported: Vec<_> = reported.iter().map(|(c, _)| *c).collect();
        let peers_known = reported
            .iter()
            .all(|(_, p)| p.is_some_and(|p| p.ip().is_loopback()));
        if !refused
            || st.len() != 1
            || who != by
            || !seen.is_empty()
            || got_reported != want_reported
            || !peers_known
        {
            failures.push(format!(
                "{name}: statuses {st:?}, refused by {who:?} (expected {by:?}), reported \
                 {reported:?}, upstream saw {:?}",
                seen.iter().map(|s| &s.target).collect::<Vec<_>>()
            ));
        }
        assert!(
            gate.admitted.lock().unwrap().is_empty(),
            "{name}: reached the gate"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn clean_pipelined_requests_do_pass() {
    // The harness can tell: the same requests, framed cleanly, all reach the upstream.
    let (upstream, _gate, front) = front().await;
    let a = auth();
    let bytes = format!(
        "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Content-Length: 5\r\n\r\nhello\
         POST /public/b HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
         GET /public/c HTTP/1.1\r\nHost: up\r\n{a}Content-Length:   0\r\nConnection: close\r\n\r\n"
    );
    let resp = raw(front, bytes.as_bytes()).await;
    assert_eq!(statuses(&resp), vec![200, 200, 200], "{resp}");
    let seen = upstream.take();
    let got: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.target.as_str(), s.body.as_ref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("POST", "/public/a", &b"hello"[..]),
            ("POST", "/public/b", &b"abc"[..]),
            ("GET", "/public/c", &b""[..]),
        ]
    );
    assert!(
        seen.iter()
            .all(|s| !s.headers.contains_key("authorization"))
    );
}

#[tokio::test]
async fn a_refused_request_closes_the_connection_before_the_next_one() {
    let (upstream, gate, front) = front().await;
    let a = auth();
    // A clean request, then a smuggling one, then a clean one: only the first goes through.
    let bytes = format!(
        "GET /public/first HTTP/1.1\r\nHost: up\r\n{a}\r\n\
         POST /public/x HTTP/1.1\r\nHost: up\r\n{a}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc\
         GET /public/third HTTP/1.1\r\nHost: up\r\n{a}\r\n"
    );
    let resp = raw(front, bytes.as_bytes()).await;
    assert_eq!(statuses(&resp), vec![200, 400], "{resp}");
    assert!(resp.contains("connection: close"), "{resp}");
    let seen: Vec<_> = upstream.take().into_iter().map(|s| s.target).collect();
    assert_eq!(seen, vec!["/public/first"]);
    let reported: Vec<_> = gate
        .refused
        .lock()
        .unwrap()
        .iter()
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(reported, vec!["request_smuggling"]);
}

#[tokio::test]
async fn a_broken_chunk_fails_the_connection_without_a_second_request() {
    let (upstream, _gate, front) = front().await;
    let a = auth();
    // Chunk data longer than its size: what follows must never be read as a request.
    let bytes = format!(
        "POST /public/a HTTP/1.1\r\nHost: up\r\n{a}Transfer-Encoding: chunked\r\n\r\n\
         3\r\nabcGET /public/smuggled HTTP/1.1\r\nHost: up\r\n\r\n0\r\n\r\n"
    );
    let resp = raw(front, bytes.as_bytes()).await;
    assert!(!statuses(&resp).contains(&200), "{resp}");
    let seen = upstream.take();
    assert!(
        seen.iter().all(|s| s.target != "/public/smuggled"),
        "{:?}",
        seen.iter().map(|s| &s.target).collect::<Vec<_>>()
    );
    // Whatever reached the upstream did not get the bytes after the broken chunk as a body.
    assert!(seen.iter().all(|s| s.body.len() <= 3));
}
