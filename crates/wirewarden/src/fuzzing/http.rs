//! A whole HTTP/1.1 connection through [`HttpProxy`] (the `http_relay` fuzz target).
//!
//! Routes `GET /customers/{id}`, `GET /notes`, `POST /notes` and `DELETE /customers/{id}`
//! (all masked); the default HTTP rules, a rule denying deletes and one letting the
//! harness's identity read with the mask profile `read`: the [`CANARY`](super::CANARY)
//! detector and a JSON-path rule (`$..ssn` redacted). The connection's own profile has the
//! detector and not the rule. The gateway sends the server its own credential header
//! (`x-api-key`, [`UPSTREAM_PASSWORD`](super::UPSTREAM_PASSWORD)). After each connection it
//! checks:
//!
//! 1. **Only what policy allowed reaches the server**: each request the server receives has
//!    an allow intent with its method on record before it arrived, in order; no `DELETE`
//!    ever arrives.
//! 2. **No secret crosses**: the client's token (sent as `Authorization: Bearer`) never
//!    reaches the server or the trail; the gateway's credential never reaches the client
//!    or the trail; a value the profile detects never reaches the client or a recorded
//!    response unless the client sent it; and no `ssn` member of a JSON response reaches
//!    the client (the value no detector finds, [`JSON_CANARY`]). Both are looked for in
//!    the bytes as they are and in each response body as a client decodes it: de-chunked,
//!    and decompressed (gzip, deflate, br) as far as it decodes.
//! 3. **Every outcome has its intent and every session its end.**
//! 4. **The connection ends** once both peers have closed.
//!
//! # Input
//!
//! `flags`, a little-endian `u16` length `n`, `n` bytes the client sends (each `@T` in them
//! replaced by the harness's token, so requests can authenticate), and then the server's
//! script: segments (each a little-endian `u16` length and that many bytes), one written
//! back for each whole request the server receives. Flag bit 3: the upstream cannot be
//! reached; bits 4–7: the size of the pieces the client's bytes arrive in (`1 << bits`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use wirewarden_core::{AuditEvent, CommandId, Protocol, Target};
use wirewarden_mask::{Engine, FieldRule, Profile, Selector, Strategy};

use super::{
    Collector, Input, TOKEN, UPSTREAM_PASSWORD, allowed_intents, canary_word, check_trail,
    contains, mentions_canary, pipeline, play_client, runtime, tokens, with_canary,
};
use crate::http::{DEFAULT_HTTP_POLICY, HttpProxy, HttpTarget, Route, Routes};
use crate::listen::{BoxIo, Dial};

/// What no detector finds: only the `$..ssn` rule can hide it.
const JSON_CANARY: &[u8] = b"JSONCANARY";

/// The marker the harness replaces with its token.
const TOKEN_MARKER: &[u8] = b"@T";

struct Harness {
    runtime: tokio::runtime::Runtime,
    proxy: HttpProxy,
    audit: Arc<Collector>,
    next: Arc<Mutex<Option<Script>>>,
    one: Mutex<()>,
}

/// The servers of one client connection: every connection the gateway opens for it (one
/// per request: none is pooled) answers from the same script.
#[derive(Clone)]
struct Script {
    segments: Arc<Mutex<std::collections::VecDeque<Bytes>>>,
    seen: Arc<Mutex<Upstream>>,
    closed: tokio::sync::watch::Receiver<bool>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = runtime();
        let policy = format!(
            "{DEFAULT_HTTP_POLICY}\n[[rule]]\nid = \"no-deletes\"\nverbs = [\"DELETE\"]\n\
             action = \"deny\"\nreason = \"agents do not delete\"\n\n[[rule]]\n\
             id = \"agents-read\"\ngroups = [\"agents\"]\nmax_class = \"read\"\n\
             action = \"allow\"\nmask_profile = \"read\"\n"
        );
        let masks = Engine::builder()
            .profile(with_canary(Profile::builder("session")))
            .profile(with_canary(Profile::builder("read")).rule(FieldRule::new(
                Selector::json_path("$..ssn").expect("a JSON path"),
                Strategy::redact(),
            )))
            .default_profile("session")
            .build()
            .expect("harness mask profiles");
        let audit = Arc::new(Collector::default());
        let pipeline = pipeline(tokens(None), &policy, masks, audit.clone());
        let route = |method, path| Route::new(Some(method), path).expect("a route");
        let routes = Routes::new()
            .route(route(http::Method::GET, "/customers/{id}"))
            .route(route(http::Method::GET, "/notes"))
            .route(route(http::Method::POST, "/notes"))
            .route(route(http::Method::DELETE, "/customers/{id}"));
        let mut target = HttpTarget::new(
            Target::new("api", Protocol::Http).expect("target"),
            "http://upstream.invalid",
        )
        .routes(routes)
        .credential(
            http::HeaderName::from_static("x-api-key"),
            http::HeaderValue::from_static(UPSTREAM_PASSWORD),
        );
        // A connection per request: a pooled one would carry an earlier input's server.
        target.upstream_settings.max_idle = 0;
        target.upstream_settings.response_timeout = Duration::from_secs(20);
        let next: Arc<Mutex<Option<Script>>> = Arc::default();
        let given = next.clone();
        let collector = audit.clone();
        let proxy = HttpProxy::new(pipeline, target)
            .and_then(|p| {
                p.with_dial(Dial::Given(Arc::new(move || {
                    let script = given
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                        .ok_or_else(|| {
                            std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
                        })?;
                    let (gateway, server) = tokio::io::duplex(1 << 16);
                    tokio::spawn(serve_script(server, script, collector.clone()));
                    Ok(Box::new(gateway) as BoxIo)
                })))
            })
            .expect("harness proxy");
        Harness {
            runtime,
            proxy,
            audit,
            next,
            one: Mutex::new(()),
        }
    })
}

/// What the server saw.
#[derive(Default)]
struct Upstream {
    /// Every byte the gateway sent it.
    received: Vec<u8>,
    /// Each request line, with how many events were on record when its head arrived.
    requests: Vec<(Vec<u8>, usize)>,
}

/// Runs one connection from fuzz input: see the module documentation.
pub fn http_relay(data: &[u8]) {
    run(data);
}

/// Runs and checks one connection; the trail.
fn run(data: &[u8]) -> Vec<AuditEvent> {
    let Some(input) = Input::parse(data) else {
        return Vec::new();
    };
    let piece = input.piece;
    let script: Vec<Bytes> = input
        .script
        .iter()
        .map(|s| Bytes::copy_from_slice(s))
        .collect();
    let client = input.client;
    let client = with_token(client);
    let h = harness();
    let _one = h.one.lock().unwrap_or_else(PoisonError::into_inner);
    h.audit.events().clear();
    h.runtime.block_on(async {
        match tokio::time::timeout(
            Duration::from_secs(60),
            connection(h, &client, piece, script, input.unreachable),
        )
        .await
        {
            Ok(()) => {}
            Err(_) => panic!("the connection did not end within 60 s"),
        }
    });
    h.audit.events().clone()
}

/// The client's bytes with each [`TOKEN_MARKER`] replaced by the token.
fn with_token(client: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(client.len());
    let mut rest = client;
    while !rest.is_empty() {
        if rest.starts_with(TOKEN_MARKER) {
            out.extend_from_slice(TOKEN.as_bytes());
            rest = &rest[TOKEN_MARKER.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

async fn connection(
    h: &'static Harness,
    client_bytes: &[u8],
    piece: usize,
    script: Vec<Bytes>,
    unreachable: bool,
) {
    let (client, gateway_client) = tokio::io::duplex(1 << 16);
    let seen = Arc::new(Mutex::new(Upstream::default()));
    let (close, closed) = tokio::sync::watch::channel(false);
    let script_bytes = script.concat();
    // No script: every dial is refused.
    *h.next.lock().unwrap_or_else(PoisonError::into_inner) = (!unreachable).then(|| Script {
        segments: Arc::new(Mutex::new(script.into())),
        seen: seen.clone(),
        closed,
    });
    let proxy = h.proxy.clone();
    let served = tokio::spawn(async move { proxy.serve(gateway_client, None).await });
    let received = play_client(client, b"", client_bytes, piece, || {
        let _ = close.send(true);
    })
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), served).await;
    assert!(
        ended.is_ok(),
        "the connection did not end within 10 s of both peers closing"
    );
    h.next.lock().unwrap_or_else(PoisonError::into_inner).take();
    let events = h.audit.events().clone();
    let upstream = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    check(client_bytes, &received, &upstream, &events, &script_bytes);
}

/// How many bytes of `buf` the request at its start takes, once it is whole.
fn request_len(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        let end = buf[head..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some(head + end + 5);
    }
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head + length).then_some(head + length)
}

/// Plays the server on one connection: one segment for each whole request.
async fn serve_script(mut io: DuplexStream, script: Script, audit: Arc<Collector>) {
    let Script {
        segments,
        seen,
        mut closed,
    } = script;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::select! {
            n = io.read(&mut chunk) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = closed.wait_for(|done| *done) => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .received
            .extend_from_slice(&chunk[..n]);
        while let Some(len) = request_len(&buf) {
            let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
            let line = buf[..line_end].to_vec();
            let on_record = audit.events().len();
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .requests
                .push((line, on_record));
            buf.drain(..len);
            let answer = segments
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            if let Some(answer) = answer
                && io.write_all(&answer).await.is_err()
            {
                return;
            }
        }
    }
    let _ = io.shutdown().await;
}

/// Whether a JSON response in `received` shows an `ssn` member (any case) whose value
/// starts with [`JSON_CANARY`], as `"ssn": "JSONCANARY…`, in the bytes as they are.
/// Compressed bodies, and members a chunk boundary cuts, are for [`responses`] to see.
fn ssn_member_shown(received: &[u8]) -> bool {
    let lower = received.to_ascii_lowercase();
    let starts: Vec<usize> = (0..lower.len())
        .filter(|&i| lower[i..].starts_with(b"http/1.") && (i == 0 || lower[i - 1] == b'\n'))
        .collect();
    starts.iter().enumerate().any(|(n, &start)| {
        let end = starts.get(n + 1).copied().unwrap_or(lower.len());
        let response = &lower[start..end];
        let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let (head, body) = response.split_at(head_end);
        contains(head, b"content-type: application/json") && json_ssn_shown(body)
    })
}

/// One response as a client's HTTP/1.1 decoder sees it.
struct Response {
    /// Whether its `Content-Type` is JSON.
    json: bool,
    /// Its body, de-chunked and decoded by its `Content-Encoding` (gzip, deflate, br) as far
    /// as it decodes: a lenient client shows what came before an error.
    body: Vec<u8>,
}

/// The most a decoded body is looked at: a bomb in the script costs the harness no more.
const DECODED_LIMIT: usize = 1 << 20;

/// The responses in `received`, framed as RFC 9112 section 6.3 says (a response to `HEAD`,
/// which the framing cannot tell, takes the next one as its body: missed, never invented).
/// Bytes that do not start a response are skipped to the next line that does.
fn responses(received: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut rest = received;
    while !rest.is_empty() {
        if !rest.starts_with(b"HTTP/1.") {
            match rest.windows(8).position(|w| w == b"\nHTTP/1.") {
                Some(i) => rest = &rest[i + 1..],
                None => break,
            }
            continue;
        }
        let Some(head_end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        rest = &rest[head_end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut json = false;
        let mut chunked = None;
        let mut length = None;
        let mut encodings = Vec::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim() {
                "content-type" => json |= value.contains("json"),
                "transfer-encoding" => {
                    chunked = Some(
                        value
                            .rsplit(',')
                            .next()
                            .is_some_and(|c| c.trim() == "chunked"),
                    );
                }
                "content-length" => length = value.parse::<usize>().ok(),
                "content-encoding" => encodings.extend(
                    value
                        .split(',')
                        .map(|e| e.trim().to_owned())
                        .filter(|e| !e.is_empty()),
                ),
                _ => {}
            }
        }
        let raw: Vec<u8> = if (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else if let Some(chunked) = chunked {
            if chunked {
                let (body, used) = dechunk(rest);
                rest = &rest[used..];
                body
            } else {
                std::mem::take(&mut rest).to_vec()
            }
        } else if let Some(length) = length {
            let (body, after) = rest.split_at(length.min(rest.len()));
            rest = after;
            body.to_vec()
        } else {
            std::mem::take(&mut rest).to_vec()
        };
        let mut body = raw;
        for encoding in encodings.iter().rev() {
            match decode_leniently(encoding, &body) {
                Some(decoded) => body = decoded,
                // An encoding no client decodes: what it shows is the bytes as they are.
                None => break,
            }
        }
        out.push(Response { json, body });
    }
    out
}

/// A chunked body's data, and how many bytes of `bytes` it took (all of them when it ends
/// early or a size line is malformed: what came before is what a client shows).
fn dechunk(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = bytes[at..].windows(2).position(|w| w == b"\r\n") else {
            return (body, bytes.len());
        };
        let line = String::from_utf8_lossy(&bytes[at..at + line_end]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return (body, bytes.len());
        };
        at += line_end + 2;
        if size == 0 {
            // Trailers, up to the empty line.
            return match bytes[at..].windows(2).position(|w| w == b"\r\n") {
                Some(0) => (body, at + 2),
                _ => match bytes[at..].windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(i) => (body, at + i + 4),
                    None => (body, bytes.len()),
                },
            };
        }
        let end = at.saturating_add(size).min(bytes.len());
        body.extend_from_slice(&bytes[at..end]);
        if end == bytes.len() {
            return (body, end);
        }
        at = (end + 2).min(bytes.len());
    }
}

/// `body` decoded as `encoding` as far as it decodes (up to [`DECODED_LIMIT`]); `None`
/// for an encoding this harness does not know.
fn decode_leniently(encoding: &str, body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    fn drain(mut reader: impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < DECODED_LIMIT {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    }
    Some(match encoding {
        "identity" => body.to_vec(),
        "gzip" | "x-gzip" => drain(flate2::read::MultiGzDecoder::new(body)),
        // Zlib-wrapped as RFC 9110 says; some servers send raw deflate, which clients take.
        "deflate" => {
            let zlib = drain(flate2::read::ZlibDecoder::new(body));
            if zlib.is_empty() {
                drain(flate2::read::DeflateDecoder::new(body))
            } else {
                zlib
            }
        }
        "br" => drain(brotli::Decompressor::new(body, 4096)),
        _ => return None,
    })
}

/// Whether a JSON body has an `ssn` member (any case) whose value starts with
/// [`JSON_CANARY`].
fn json_ssn_shown(body: &[u8]) -> bool {
    let body = body.to_ascii_lowercase();
    (0..body.len()).any(|i| {
        let Some(rest) = body[i..].strip_prefix(b"\"ssn\"") else {
            return false;
        };
        let rest = rest.trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b":") else {
            return false;
        };
        rest.trim_ascii_start()
            .strip_prefix(b"\"")
            .is_some_and(|v| v.starts_with(b"jsoncanary"))
    })
}

fn check(
    client: &[u8],
    received: &[u8],
    upstream: &Upstream,
    events: &[AuditEvent],
    script: &[u8],
) {
    // 1. Each request the server received had its allow intent first, in order.
    let allowed: Vec<(usize, &str, CommandId)> = allowed_intents(events)
        .into_iter()
        .map(|(i, command, id)| (i, command.verb.as_str(), id))
        .collect();
    let mut intents = allowed.iter();
    for (line, on_record) in &upstream.requests {
        let method = line.split(|&b| b == b' ').next().unwrap_or_default();
        assert!(
            !method.eq_ignore_ascii_case(b"DELETE"),
            "a denied request reached the server: {:?}",
            String::from_utf8_lossy(line)
        );
        let Some(&(at, verb, _)) = intents.next() else {
            panic!(
                "{:?} reached the server without an allow intent on record",
                String::from_utf8_lossy(line)
            );
        };
        assert!(
            verb.as_bytes().eq_ignore_ascii_case(method),
            "{:?} reached the server in the place of the intent for {verb}",
            String::from_utf8_lossy(line)
        );
        assert!(
            at < *on_record,
            "{:?} reached the server before its intent was on record",
            String::from_utf8_lossy(line)
        );
    }

    // 2. No secret crosses the wire. The token may travel only where the client put it in
    // its Authorization header, which the gateway removes.
    let token_only_in_authorization = {
        let lower = client.to_ascii_lowercase();
        let token = TOKEN.as_bytes();
        let mut ok = true;
        let mut from = 0;
        while let Some(i) = lower[from..]
            .windows(token.len())
            .position(|w| w == token)
            .map(|i| i + from)
        {
            ok &= lower[..i].ends_with(b"\nauthorization: bearer ");
            from = i + 1;
        }
        ok
    };
    if token_only_in_authorization {
        assert!(
            !contains(&upstream.received, TOKEN.as_bytes()),
            "the client's token reached the server"
        );
    }
    let password = UPSTREAM_PASSWORD.as_bytes();
    if !contains(script, password) && !contains(client, password) {
        assert!(
            !contains(received, password),
            "the gateway's credential reached the client"
        );
    }
    if !mentions_canary(client) {
        assert!(
            !canary_word(received),
            "a detected value reached the client in clear: {:?}",
            String::from_utf8_lossy(received)
        );
    }
    if !contains(client, JSON_CANARY) {
        assert!(
            !ssn_member_shown(received),
            "an ssn member reached the client: {:?}",
            String::from_utf8_lossy(received)
        );
    }
    // The same, in the bodies a client decodes: de-chunked (a value a chunk boundary cuts is
    // whole again) and decompressed.
    for response in responses(received) {
        if !mentions_canary(client) {
            assert!(
                !canary_word(&response.body),
                "a detected value reached the client in a body it decodes: {:?}",
                String::from_utf8_lossy(&response.body)
            );
        }
        if response.json && !contains(client, JSON_CANARY) {
            assert!(
                !json_ssn_shown(&response.body),
                "an ssn member reached the client in a body it decodes: {:?}",
                String::from_utf8_lossy(&response.body)
            );
        }
    }

    // 3. The trail. The client's token is in its own bytes, so the trail check that looks
    // for it runs on the bytes without it (where it sent it only to authenticate).
    let mut without_token = client.to_vec();
    while token_only_in_authorization
        && let Some(i) = without_token
            .windows(TOKEN.len())
            .position(|w| w == TOKEN.as_bytes())
    {
        without_token.drain(i..i + TOKEN.len());
    }
    check_trail(events, &without_token, script, &[], false, true);
}

#[cfg(test)]
mod tests {
    use wirewarden_core::{AuditEventKind, Decision};

    use super::super::input;
    use super::*;

    #[test]
    fn a_clean_connection_passes_every_check() {
        let client = b"GET /customers/1 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer @T\r\n\r\n\
            DELETE /customers/1 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer @T\r\n\r\n\
            GET /notes HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer @T\r\n\r\n";
        let body = br#"{"name":"Ada","ssn":"JSONCANARY","note":"LEAKCANARY"}"#;
        let mut customer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        customer.extend_from_slice(body);
        let notes =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nLEAKCANARY";
        let events = run(&input(0xf0, client, &[&customer, notes]));
        let decisions: Vec<bool> = events
            .iter()
            .filter_map(|e| match &e.kind {
                AuditEventKind::CommandDecided { decision, .. } => {
                    Some(matches!(decision, Decision::Allow { .. }))
                }
                _ => None,
            })
            .collect();
        assert_eq!(decisions, [true, false, true], "{events:#?}");
        let completed = events
            .iter()
            .filter(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. }))
            .count();
        assert_eq!(completed, 2, "{events:#?}");
    }

    #[test]
    fn ssn_members_are_found_in_json_responses_only() {
        let json =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"SSN\" : \"JSONCANARY\"}";
        assert!(ssn_member_shown(json));
        let other =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ssf\":\"JSONCANARY\"}";
        assert!(!ssn_member_shown(other));
        let text = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{\"ssn\":\"JSONCANARY\"}";
        assert!(!ssn_member_shown(text));
        let masked =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ssn\":\"[REDACTED]\"}";
        assert!(!ssn_member_shown(masked));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn response(head: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\n{head}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// Compresses: its compressed bytes do not show the member.
    const JSON: &[u8] =
        br#"{"name":"Ada Ada Ada Ada Ada Ada","ssn":"JSONCANARY","note":"Ada Ada Ada"}"#;

    #[test]
    fn bodies_are_seen_as_a_client_decodes_them() {
        let mut received = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            4\r\nLEAK\r\n6;x=y\r\nCANARY\r\n0\r\n\r\n"
            .to_vec();
        received.extend(response(
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
            &gzip(JSON),
        ));
        received.extend(response(
            "Content-Encoding: deflate\r\n",
            &raw_deflate(b"a LEAKCANARY"),
        ));
        received.extend(b"HTTP/1.1 204 No Content\r\n\r\n");
        // Two encodings, and cut short: what decodes before the cut still shows.
        let twice = brotli(&gzip(b"LEAKCANARY and more"));
        received.extend(response(
            "Content-Encoding: gzip, br\r\n",
            &twice[..twice.len() - 1],
        ));
        let found = responses(&received);
        let bodies: Vec<&[u8]> = found.iter().map(|r| r.body.as_slice()).collect();
        assert_eq!(bodies.len(), 5);
        assert_eq!(bodies[0], b"LEAKCANARY");
        assert!(found[1].json && json_ssn_shown(bodies[1]));
        assert_eq!(bodies[2], b"a LEAKCANARY");
        assert!(bodies[3].is_empty());
        assert!(bodies[4].starts_with(b"LEAKCANARY"), "{:?}", bodies[4]);
    }

    /// The gateway masks what it decodes: compressed and chunked bodies pass the checks.
    #[test]
    fn compressed_and_chunked_bodies_are_masked() {
        let client = b"GET /customers/1 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer @T\r\n\r\n\
            GET /notes HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer @T\r\n\r\n\
            GET /notes HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer @T\r\n\r\n";
        let customer = response(
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
            &gzip(JSON),
        );
        let notes = response(
            "Content-Type: text/plain\r\nContent-Encoding: br\r\n",
            &brotli(b"note: LEAKCANARY"),
        );
        let split = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
            Transfer-Encoding: chunked\r\n\r\n4\r\nLEAK\r\n6\r\nCANARY\r\n0\r\n\r\n";
        let events = run(&input(0xf0, client, &[&customer, &notes, split]));
        let completed = events
            .iter()
            .filter(|e| matches!(e.kind, AuditEventKind::CommandCompleted { .. }))
            .count();
        assert_eq!(completed, 3, "{events:#?}");
    }

    #[test]
    #[should_panic(expected = "an ssn member reached the client in a body it decodes")]
    fn a_compressed_leak_is_caught() {
        let received = response(
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
            &gzip(JSON),
        );
        assert!(
            !ssn_member_shown(&received),
            "compressed: not seen in the raw bytes"
        );
        check(b"", &received, &Upstream::default(), &[], b"");
    }

    #[test]
    fn the_token_marker_becomes_the_token() {
        assert_eq!(
            with_token(b"Bearer @T\r\n@"),
            format!("Bearer {TOKEN}\r\n@").into_bytes()
        );
    }

    #[test]
    fn requests_are_whole_with_their_bodies() {
        assert_eq!(request_len(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        let post = b"POST /n HTTP/1.1\r\ncontent-length: 3\r\n\r\nab";
        assert_eq!(request_len(post), None);
        let post = b"POST /n HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(request_len(post), Some(post.len()));
        let chunked =
            b"POST /n HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(request_len(chunked), Some(chunked.len()));
    }
}
