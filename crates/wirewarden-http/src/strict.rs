//! Strict request parsing: the shapes behind request smuggling are refused, not repaired.
//!
//! Two checks run on every request:
//!
//! - [`Http1Scanner`] reads the raw HTTP/1 bytes of a connection as they arrive, before hyper
//!   parses them, because hyper repairs some ambiguous heads silently (it drops
//!   `Content-Length` when `Transfer-Encoding` is present, keeps one of two equal
//!   `Content-Length` lines, accepts bare LF line ends). A front end and a back end that repair
//!   differently is exactly what request smuggling needs, so each head the scanner finds
//!   ambiguous becomes a [`Rejection`] for that request, and the connection is closed after
//!   it. [`crate::server::serve_connection`] wires it in.
//! - [`check_request`] checks what reaches the service (HTTP/1 and HTTP/2): framing headers,
//!   upgrades and `CONNECT`, method and target overrides (`X-HTTP-Method-Override`,
//!   `X-Original-URL`, `?_method=` …), absolute-form targets against `Host`, header count and
//!   size, declared body size. [`strip_hop_by_hop`] then removes the headers that belong to one
//!   connection only, refusing a `Connection` header that tries to remove a header the
//!   gateway must keep control of.
//!
//! A method override can also come in a form body (`_method=DELETE`) or as a top-level key of
//! a JSON body (`{"_method":"DELETE"}`): [`form::FormScanner`] and [`json::JsonScanner`] find
//! it while the body streams.

use std::collections::VecDeque;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::Rejection;

pub mod form;
pub mod json;

/// Limits shared by the server settings ([`crate::server::builder`]), the raw-byte scanner
/// and [`check_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most header fields in one request (HTTP/1 head or HTTP/2 header list). Default 100.
    pub max_headers: usize,
    /// Most bytes in one request head: request line and header lines (HTTP/1), or the
    /// header list size as HTTP/2 counts it (name + value + 32 per field). Default 16 KiB.
    pub max_header_bytes: usize,
    /// Most bytes in a request target. Default 8 KiB.
    pub max_uri_bytes: usize,
    /// Most request body bytes, enforced on `Content-Length` and again while the body
    /// streams. Default 16 MiB.
    pub max_body_bytes: u64,
    /// Most time for a client to send a whole HTTP/1 request head. Default 10 s.
    pub header_read_timeout: Duration,
    /// hyper's HTTP/1 read buffer (at least 8 KiB; hyper panics below that, so smaller values
    /// are raised). Default 64 KiB.
    pub max_buf_size: usize,
    /// Most concurrent HTTP/2 streams per connection. Default 100.
    pub h2_max_concurrent_streams: u32,
    /// Largest HTTP/2 frame payload the server accepts. Default 16 KiB (the protocol minimum).
    pub h2_max_frame_size: u32,
    /// Most bytes buffered per HTTP/2 stream for sending. Default 400 KiB.
    pub h2_max_send_buf_size: usize,
    /// Interval of HTTP/2 keep-alive pings; `None` sends none. Default 20 s.
    pub h2_keep_alive_interval: Option<Duration>,
    /// How long to wait for a keep-alive ping's answer before closing. Default 20 s.
    pub h2_keep_alive_timeout: Duration,
    /// Most streams reset by the client before the server accepted them (the "rapid reset"
    /// bound). Default 20.
    pub h2_max_pending_accept_reset_streams: usize,
    /// Most streams the server resets because of client errors before it closes the
    /// connection. Default 1024.
    pub h2_max_local_error_reset_streams: usize,
    /// Most bytes of chunk extensions on one chunk-size line, and of one trailer line.
    /// Default 4 KiB.
    pub max_chunk_line_bytes: usize,
    /// Most request body bytes read before the request is decided, so that the command's
    /// digest — and with it any review approval — binds to the body as well as to the method
    /// and target. A longer body is streamed after the decision instead, and the command's
    /// text says its body was not bound. Default 1 MiB.
    pub max_bound_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_buf_size: 64 * 1024,
            h2_max_concurrent_streams: 100,
            h2_max_frame_size: 16 * 1024,
            h2_max_send_buf_size: 400 * 1024,
            h2_keep_alive_interval: Some(Duration::from_secs(20)),
            h2_keep_alive_timeout: Duration::from_secs(20),
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 1024,
            max_chunk_line_bytes: 4 * 1024,
            max_bound_body: 1024 * 1024,
        }
    }
}

fn smuggling(message: impl Into<String>) -> Rejection {
    Rejection::new(StatusCode::BAD_REQUEST, "request_smuggling", message)
}

fn malformed(message: impl Into<String>) -> Rejection {
    Rejection::new(StatusCode::BAD_REQUEST, "malformed_request", message)
}

fn too_large_head(message: impl Into<String>) -> Rejection {
    Rejection::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "header_too_large",
        message,
    )
}

fn upgrade_refused() -> Rejection {
    Rejection::new(
        StatusCode::NOT_IMPLEMENTED,
        "upgrade_unsupported",
        "protocol upgrades cannot be inspected",
    )
}

fn override_refused(what: &str) -> Rejection {
    Rejection::new(
        StatusCode::BAD_REQUEST,
        "method_override",
        format!(
            "{what} would make the upstream act on another method or target than the one decided on"
        ),
    )
}

fn connect_refused() -> Rejection {
    Rejection::new(
        StatusCode::NOT_IMPLEMENTED,
        "method_unsupported",
        "CONNECT tunnels cannot be inspected",
    )
}

/// The rejection for a body larger than [`Limits::max_body_bytes`].
pub(crate) fn body_too_large(limit: u64) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body over {limit} bytes"),
    )
}

// === check_request ===

/// Checks a parsed request head for the shapes that parsers disagree on.
///
/// Refused: `Transfer-Encoding` together with `Content-Length`; more than one of either;
/// `Transfer-Encoding` other than exactly `chunked`, or on HTTP/1.0; `Content-Length` other
/// than plain digits, or over [`Limits::max_body_bytes`] (413); `Upgrade`, `HTTP2-Settings`
/// and `CONNECT` (501: the bytes after them cannot be inspected); more than one `Host`, a
/// missing `Host` on HTTP/1.1, an absolute-form target whose authority is not `Host`; more
/// header fields or bytes than the limits allow (431); a target over
/// [`Limits::max_uri_bytes`] (414); a method or target override (400 `method_override`):
/// `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`, `X-Original-Method`,
/// `X-Forwarded-Method`, `X-Original-URL`, `X-Rewrite-URL`, `X-Original-URI`,
/// `X-Forwarded-URI`, `X-Forwarded-Path` or `X-Envoy-Original-Path` (any case, `_` for `-`,
/// any value), or a `_method` query parameter, by which the upstream would carry out another
/// request than the one the policy decided on.
///
/// # Errors
/// The [`Rejection`] to send instead of forwarding.
pub fn check_request(parts: &http::request::Parts, limits: &Limits) -> Result<(), Rejection> {
    let headers = &parts.headers;

    if parts.method == Method::CONNECT {
        return Err(connect_refused());
    }
    if headers.contains_key(header::UPGRADE) || headers.contains_key("http2-settings") {
        return Err(upgrade_refused());
    }
    if let Some(name) = headers.keys().find(|n| is_override_header(n)) {
        return Err(override_refused(&format!("header {}", name.as_str())));
    }
    if parts.uri.query().is_some_and(has_method_param) {
        return Err(override_refused("query parameter _method"));
    }

    // Head size, counted the way HTTP/2 counts a header list (RFC 9113 §6.5.2).
    if headers.len() > limits.max_headers {
        return Err(too_large_head(format!(
            "more than {} header fields",
            limits.max_headers
        )));
    }
    let head_bytes = headers.iter().fold(0usize, |acc, (n, v)| {
        acc.saturating_add(n.as_str().len())
            .saturating_add(v.len())
            .saturating_add(32)
    });
    if head_bytes > limits.max_header_bytes {
        return Err(too_large_head(format!(
            "header fields over {} bytes",
            limits.max_header_bytes
        )));
    }
    let target_len = parts
        .uri
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len())
        .saturating_add(parts.uri.authority().map_or(0, |a| a.as_str().len()));
    if target_len > limits.max_uri_bytes {
        return Err(Rejection::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("request target over {} bytes", limits.max_uri_bytes),
        ));
    }

    // Framing.
    let te: Vec<_> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    let cl: Vec<_> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    if !te.is_empty() {
        if parts.version == Version::HTTP_2 || parts.version == Version::HTTP_3 {
            return Err(smuggling("Transfer-Encoding is not allowed in HTTP/2"));
        }
        if parts.version < Version::HTTP_11 {
            return Err(smuggling("Transfer-Encoding on HTTP/1.0"));
        }
        if te.len() > 1 {
            return Err(smuggling("more than one Transfer-Encoding header"));
        }
        if !cl.is_empty() {
            return Err(smuggling("both Transfer-Encoding and Content-Length"));
        }
        if !te
            .iter()
            .all(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
        {
            return Err(smuggling("Transfer-Encoding other than chunked"));
        }
    }
    if cl.len() > 1 {
        return Err(smuggling("more than one Content-Length header"));
    }
    if let Some(v) = cl.first() {
        let n = parse_digits(v.as_bytes())
            .ok_or_else(|| smuggling("Content-Length is not a plain number"))?;
        if n > limits.max_body_bytes {
            return Err(body_too_large(limits.max_body_bytes));
        }
    }

    // Host and authority.
    let hosts: Vec<_> = headers.get_all(header::HOST).iter().collect();
    if hosts.len() > 1 {
        return Err(smuggling("more than one Host header"));
    }
    if parts.version == Version::HTTP_11 && hosts.is_empty() && parts.uri.authority().is_none() {
        return Err(malformed("HTTP/1.1 request without Host"));
    }
    if let (Some(authority), Some(host)) = (parts.uri.authority(), hosts.first()) {
        let same = host
            .to_str()
            .is_ok_and(|h| h.eq_ignore_ascii_case(authority.as_str()));
        if !same {
            return Err(smuggling("request target authority differs from Host"));
        }
    }
    if let Some(authority) = parts.uri.authority()
        && authority.as_str().contains('@')
    {
        return Err(malformed("userinfo in the request target"));
    }
    Ok(())
}

// === overrides ===

/// Headers by which an upstream framework or server takes its method or target from the
/// request instead of the request line, so that policy would decide on one request and the
/// upstream carry out another:
///
/// - the method: `X-HTTP-Method-Override` (Express `method-override`, Symfony and Laravel,
///   ASP.NET, Ktor, Jersey, Google APIs), `X-HTTP-Method` (OData, SharePoint),
///   `X-Method-Override` (Express `method-override`, ArangoDB); `X-Original-Method` and
///   `X-Forwarded-Method`, which nginx `auth_request` setups and Traefik's forward
///   authentication hand to the service that decides;
/// - the target: `X-Original-URL` and `X-Rewrite-URL` (Symfony and Zend behind IIS URL
///   Rewrite), `X-Original-URI` and `X-Forwarded-URI` (nginx `auth_request`, Traefik, nginx
///   ingress), `X-Forwarded-Path` and `X-Envoy-Original-Path`.
const OVERRIDE_HEADERS: [&str; 11] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-forwarded-method",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-envoy-original-path",
];

/// Whether `name` is one of [`OVERRIDE_HEADERS`], in any case and with `_` for `-`: CGI,
/// PHP, Rack and WSGI servers read both spellings into the same `HTTP_X_…` variable.
fn is_override_header(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    OVERRIDE_HEADERS.iter().any(|o| {
        o.len() == name.len()
            && o.bytes().zip(name).all(|(a, &b)| {
                let b = if b == b'_' { b'-' } else { b };
                a == b.to_ascii_lowercase()
            })
    })
}

/// Whether the query holds a `_method` (or `_method_override`) parameter, the method
/// override that Symfony and Laravel read from the query of a `POST`, Spring's
/// `HiddenHttpMethodFilter` reads from any parameter of a `POST`, Jersey's
/// `OverrideMethodFilter` from the query of a `GET` or `POST`, and wai-extra from a `GET`.
/// Names are compared as those servers see them ([`form::NameMatcher`]): percent-decoded,
/// `+` as a space, ASCII case ignored, and as PHP registers them (leading spaces dropped,
/// `.`, ` ` and `[` read as `_`, anything from a later `[` on being an array index).
fn has_method_param(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        form::is_method_field(name.as_bytes())
    })
}

/// `1*DIGIT`, at most 19 digits (no overflow), nothing else: no sign, no spaces, no list.
fn parse_digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        if c.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

// === hop-by-hop ===

/// Headers that belong to one connection and never travel further (RFC 9110 §7.6.1), plus
/// the proxy credentials and the HTTP/2 upgrade settings.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Headers a client may not make disappear by naming them in `Connection`: removing them
/// would change the credential, the target, the framing or what the upstream logs about the
/// client.
const PROTECTED: [&str; 13] = [
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "content-type",
    "content-encoding",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "via",
];

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authorization`, `Proxy-Authenticate`, `TE`, `Trailer`,
/// `Transfer-Encoding` (hyper frames the forwarded body itself), `Upgrade` and
/// `HTTP2-Settings`.
///
/// # Errors
/// 400 `hop_by_hop_abuse` when `Connection` names a header the gateway must keep control of
/// (`Authorization`, `Host`, `Content-Length`, `Cookie`, the `Forwarded` family …) or
/// something that is not a header name; nothing is removed then.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Result<(), Rejection> {
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let bad = || {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                "hop_by_hop_abuse",
                "Connection header is not a list of header names",
            )
        };
        let text = value.to_str().map_err(|_| bad())?;
        for token in text.split(',') {
            let token = token.trim_matches([' ', '\t']);
            if token.is_empty() {
                continue;
            }
            let name = HeaderName::from_bytes(token.as_bytes()).map_err(|_| bad())?;
            if PROTECTED.contains(&name.as_str()) {
                return Err(Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "hop_by_hop_abuse",
                    format!("Connection may not remove {}", name.as_str()),
                ));
            }
            listed.push(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    for name in listed {
        headers.remove(name);
    }
    Ok(())
}

// === forwarding headers ===

/// Headers that tell an upstream who the client is or how it reached the proxy: an
/// upstream that trusts them for an address allow-list, rate limits or its logs must get
/// them from the gateway, never from the client.
const FORWARDING: [&str; 16] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-original-forwarded-for",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
];

/// Removes what the client said about where it came from (`Forwarded`, `X-Forwarded-For`,
/// `-Host`, `-Proto`, `X-Real-IP`, `True-Client-IP` and the rest of their family, in any
/// case, `_` read as `-` as CGI-style servers read it) and, when the client's address is
/// known, sets `X-Forwarded-For` to it: the gateway is the one hop the upstream sees, so it
/// alone says who its client was.
pub fn own_forwarding(headers: &mut HeaderMap, client: Option<std::net::IpAddr>) {
    let foreign: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            FORWARDING.iter().any(|f| {
                n.len() == f.len()
                    && n.bytes()
                        .zip(f.bytes())
                        .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
            })
        })
        .cloned()
        .collect();
    for name in foreign {
        headers.remove(name);
    }
    if let Some(ip) = client
        && let Ok(v) = HeaderValue::from_str(&ip.to_string())
    {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
}

// === Http1Scanner ===

const H2_PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` so far.
    Size { size: u64, digits: u8 },
    /// Spaces or tabs after the size.
    SizeLws { size: u64 },
    /// A chunk extension; bytes so far.
    Ext { size: u64, len: usize },
    /// CR seen after the size line; LF next.
    SizeLf { size: u64 },
    /// Chunk data left.
    Data(u64),
    /// CR after the data.
    DataCr,
    /// LF after the data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer line; bytes so far.
    Trailer { len: usize },
    /// CR seen in a trailer line; LF next.
    TrailerLf,
    /// CR of the final empty line seen; LF next.
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for or reading a request head.
    Head,
    /// Skipping a `Content-Length` body.
    Body(u64),
    /// Following a chunked body.
    Chunked(Chunk),
    /// An HTTP/2 connection: nothing more to check here.
    Passthrough,
    /// Framing is no longer known (a refused head, an upgrade): every later head is refused.
    Lost,
}

/// Follows the request framing of one HTTP/1 connection over its raw bytes and judges each
/// request head before hyper parses it.
///
/// IO-free: [`feed`](Self::feed) the bytes read from the client, in order, and take one
/// verdict per request hyper delivers with [`next_head`](Self::next_head). The scanner is
/// stricter than hyper, so any head it accepts is framed the same way by both; after a head it
/// refuses it stops following the connection, and every later request on it is refused too
/// (the refusal closes the connection).
///
/// Refused heads: bare LF or CR line ends, obs-fold continuation lines, whitespace before a
/// header's colon, control bytes in a value, a request line that is not
/// `METHOD SP target SP HTTP/1.x`, `Transfer-Encoding` with `Content-Length`, more than one
/// `Transfer-Encoding` or `Content-Length` line (even with equal values), `Transfer-Encoding`
/// other than exactly `chunked` or on HTTP/1.0, `Content-Length` other than plain digits,
/// `Upgrade` and `CONNECT`, and heads over [`Limits::max_header_bytes`] or
/// [`Limits::max_headers`].
#[derive(Debug)]
pub struct Http1Scanner {
    max_head: usize,
    max_headers: usize,
    max_chunk_line: usize,
    state: State,
    head: Vec<u8>,
    /// Bytes of the current head line so far (with its CRLF once complete).
    line_len: usize,
    /// The last head byte taken was a CR (its LF is still to come).
    prev_cr: bool,
    verdicts: VecDeque<Result<(), Rejection>>,
    heads_seen: u64,
}

/// The body framing a checked head announces.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl Http1Scanner {
    /// A scanner for a new connection.
    #[must_use]
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_head: limits.max_header_bytes,
            max_headers: limits.max_headers,
            max_chunk_line: limits.max_chunk_line_bytes,
            state: State::Head,
            head: Vec::new(),
            line_len: 0,
            prev_cr: false,
            verdicts: VecDeque::new(),
            heads_seen: 0,
        }
    }

    /// Whether the connection turned out to be HTTP/2 (prior knowledge).
    #[must_use]
    pub fn is_http2(&self) -> bool {
        self.state == State::Passthrough
    }

    /// The verdict on the next request head, in the order the heads arrived. A request with
    /// no verdict (the bytes were never fed, or the scanner stopped following the connection)
    /// is refused.
    ///
    /// # Errors
    /// The [`Rejection`] for that request.
    pub fn next_head(&mut self) -> Result<(), Rejection> {
        self.verdicts.pop_front().unwrap_or_else(|| {
            Err(smuggling(
                "request framing on this connection could not be followed",
            ))
        })
    }

    /// Feeds bytes read from the client.
    ///
    /// # Errors
    /// A violation inside a request body (chunk framing): the request it belongs to was
    /// already delivered, so the connection must be failed rather than answered.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Rejection> {
        while let Some((&b, rest)) = data.split_first() {
            match self.state {
                State::Passthrough | State::Lost => return Ok(()),
                State::Body(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    let left = n.saturating_sub(take as u64);
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                    data = data.get(take..).unwrap_or_default();
                }
                State::Chunked(Chunk::Data(n)) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    let left = n.saturating_sub(take as u64);
                    self.state = State::Chunked(if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    });
                    data = data.get(take..).unwrap_or_default();
                }
                State::Chunked(c) => {
                    match self.chunk_byte(c, b) {
                        Ok(next) => self.state = next,
                        Err(r) => {
                            self.state = State::Lost;
                            return Err(r);
                        }
                    }
                    data = rest;
                }
                State::Head => {
                    let used = self.head_bytes(data);
                    data = data.get(used..).unwrap_or_default();
                }
            }
        }
        Ok(())
    }

    fn refuse(&mut self, r: Rejection) {
        self.verdicts.push_back(Err(r));
        self.head.clear();
        self.state = State::Lost;
    }

    /// Consumes request-head bytes from `data`, up to the end of one head; returns how many.
    ///
    /// Works a line at a time (one search for LF, one copy) rather than a byte at a time:
    /// reading back the byte just written costs a store-forwarding stall per byte.
    fn head_bytes(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        // Empty lines before a request line are skipped, as hyper does.
        if self.head.is_empty() {
            used = data
                .iter()
                .position(|&c| c != b'\r' && c != b'\n')
                .unwrap_or(data.len());
        }
        while let Some(rest) = data.get(used..).filter(|r| !r.is_empty()) {
            let lf = memchr::memchr(b'\n', rest);
            let seg = match lf {
                Some(p) => rest.get(..=p).unwrap_or(rest),
                None => rest,
            };
            // A CR may only stand right before an LF.
            if self.prev_cr && seg.first() != Some(&b'\n') {
                self.refuse(malformed("bare CR in the request head"));
                return data.len();
            }
            let text = match lf {
                Some(p) => seg.get(..p).unwrap_or_default(),
                None => seg,
            };
            // The only CR allowed is the one of this line's CRLF, or (no LF yet) the last
            // byte so far.
            let cr_ok = memchr::memchr(b'\r', text).is_none_or(|i| i + 1 == text.len());
            if !cr_ok {
                self.refuse(malformed("bare CR in the request head"));
                return data.len();
            }
            if lf.is_some() {
                let crlf = text.last() == Some(&b'\r') || (text.is_empty() && self.prev_cr);
                if !crlf {
                    self.refuse(malformed("bare LF in the request head"));
                    return data.len();
                }
            }
            if self.head.len().saturating_add(seg.len()) > self.max_head {
                let limit = self.max_head;
                self.refuse(too_large_head(format!("request head over {limit} bytes")));
                return data.len();
            }
            self.head.extend_from_slice(seg);
            used += seg.len();
            self.prev_cr = lf.is_none() && text.last() == Some(&b'\r');
            let line = self.line_len.saturating_add(seg.len());
            if lf.is_none() {
                self.line_len = line;
                continue;
            }
            self.line_len = 0;
            if line == 2 {
                self.end_of_head();
                return used;
            }
        }
        used
    }

    /// The head in `self.head` is complete (it ends with an empty line): judge it.
    fn end_of_head(&mut self) {
        let head = std::mem::take(&mut self.head);
        let first = self.heads_seen == 0;
        self.heads_seen = self.heads_seen.saturating_add(1);
        if first && head == H2_PREFACE_HEAD {
            self.state = State::Passthrough;
            return;
        }
        match self.check_head(&head) {
            Ok(Framing::None) | Ok(Framing::Length(0)) => {
                self.verdicts.push_back(Ok(()));
            }
            Ok(Framing::Length(n)) => {
                self.verdicts.push_back(Ok(()));
                self.state = State::Body(n);
            }
            Ok(Framing::Chunked) => {
                self.verdicts.push_back(Ok(()));
                self.state = State::Chunked(Chunk::Size { size: 0, digits: 0 });
            }
            Err(r) => self.refuse(r),
        }
        // Hand the buffer back to reuse its allocation.
        self.head = head;
        self.head.clear();
    }

    fn check_head(&self, head: &[u8]) -> Result<Framing, Rejection> {
        let body = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
        let mut lines = body
            .split(|&c| c == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let request_line = lines.next().unwrap_or_default();
        let (method, http10) = check_request_line(request_line)?;
        if method == b"CONNECT" {
            return Err(connect_refused());
        }
        let mut count = 0usize;
        let mut te: Option<&[u8]> = None;
        let mut te_count = 0u32;
        let mut cl: Option<&[u8]> = None;
        let mut cl_count = 0u32;
        for line in lines {
            count = count.saturating_add(1);
            if count > self.max_headers {
                return Err(too_large_head(format!(
                    "more than {} header fields",
                    self.max_headers
                )));
            }
            let (name, value) = split_header(line)?;
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te_count = te_count.saturating_add(1);
                te = Some(value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                cl_count = cl_count.saturating_add(1);
                cl = Some(value);
            } else if name.eq_ignore_ascii_case(b"upgrade")
                || name.eq_ignore_ascii_case(b"http2-settings")
            {
                return Err(upgrade_refused());
            }
        }
        if te_count > 1 {
            return Err(smuggling("more than one Transfer-Encoding header"));
        }
        if cl_count > 1 {
            return Err(smuggling("more than one Content-Length header"));
        }
        match (te, cl) {
            (Some(_), Some(_)) => Err(smuggling("both Transfer-Encoding and Content-Length")),
            (Some(_), None) if http10 => Err(smuggling("Transfer-Encoding on HTTP/1.0")),
            (Some(v), None) if v.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            (Some(_), None) => Err(smuggling("Transfer-Encoding other than chunked")),
            (None, Some(v)) => parse_digits(v)
                .map(Framing::Length)
                .ok_or_else(|| smuggling("Content-Length is not a plain number")),
            (None, None) => Ok(Framing::None),
        }
    }

    fn chunk_byte(&self, c: Chunk, b: u8) -> Result<State, Rejection> {
        let bad = |what: &str| smuggling(format!("chunked body: {what}"));
        let next = match c {
            Chunk::Size { size, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let d = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        _ => b - b'A' + 10,
                    };
                    if digits >= 16 {
                        return Err(bad("chunk size too long"));
                    }
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .ok_or_else(|| bad("chunk size overflows"))?;
                    Chunk::Size {
                        size,
                        digits: digits.saturating_add(1),
                    }
                }
                _ if digits == 0 => return Err(bad("chunk size missing")),
                b' ' | b'\t' => Chunk::SizeLws { size },
                b';' => Chunk::Ext { size, len: 0 },
                b'\r' => Chunk::SizeLf { size },
                _ => return Err(bad("invalid chunk size")),
            },
            Chunk::SizeLws { size } => match b {
                b' ' | b'\t' => Chunk::SizeLws { size },
                b';' => Chunk::Ext { size, len: 0 },
                b'\r' => Chunk::SizeLf { size },
                _ => return Err(bad("invalid chunk size")),
            },
            Chunk::Ext { size, len } => match b {
                b'\r' => Chunk::SizeLf { size },
                b'\n' => return Err(bad("bare LF in a chunk extension")),
                0..=0x08 | 0x0a..=0x1f | 0x7f => {
                    return Err(bad("control byte in a chunk extension"));
                }
                _ if len >= self.max_chunk_line => return Err(bad("chunk extension too long")),
                _ => Chunk::Ext {
                    size,
                    len: len.saturating_add(1),
                },
            },
            Chunk::SizeLf { size } => match b {
                b'\n' if size == 0 => Chunk::TrailerStart,
                b'\n' => Chunk::Data(size),
                _ => return Err(bad("bare CR after a chunk size")),
            },
            Chunk::Data(_) => return Ok(State::Chunked(c)),
            Chunk::DataCr => match b {
                b'\r' => Chunk::DataLf,
                _ => return Err(bad("chunk data longer than its size")),
            },
            Chunk::DataLf => match b {
                b'\n' => Chunk::Size { size: 0, digits: 0 },
                _ => return Err(bad("bare CR after chunk data")),
            },
            Chunk::TrailerStart => match b {
                b'\r' => Chunk::EndLf,
                b'\n' => return Err(bad("bare LF in the trailer section")),
                b' ' | b'\t' => return Err(bad("obs-fold in the trailer section")),
                _ => Chunk::Trailer { len: 1 },
            },
            Chunk::Trailer { len } => match b {
                b'\r' => Chunk::TrailerLf,
                b'\n' => return Err(bad("bare LF in the trailer section")),
                _ if len >= self.max_chunk_line => return Err(bad("trailer line too long")),
                _ => Chunk::Trailer {
                    len: len.saturating_add(1),
                },
            },
            Chunk::TrailerLf => match b {
                b'\n' => Chunk::TrailerStart,
                _ => return Err(bad("bare CR in the trailer section")),
            },
            Chunk::EndLf => match b {
                b'\n' => return Ok(State::Head),
                _ => return Err(bad("bare CR at the end of the body")),
            },
        };
        Ok(State::Chunked(next))
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(c: u8) -> bool {
    TCHAR.get(usize::from(c)).copied().unwrap_or(false)
}

const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// `METHOD SP request-target SP HTTP/1.x`, single spaces; returns the method and whether the
/// version is 1.0.
fn check_request_line(line: &[u8]) -> Result<(&[u8], bool), Rejection> {
    let bad = || malformed("request line is not METHOD SP target SP HTTP/1.x");
    let mut parts = line.split(|&c| c == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return Err(bad());
    }
    if target.is_empty() || !target.iter().all(|&c| (0x21..=0x7e).contains(&c)) {
        return Err(bad());
    }
    match version {
        b"HTTP/1.1" => Ok((method, false)),
        b"HTTP/1.0" => Ok((method, true)),
        _ => Err(bad()),
    }
}

/// `field-name ":" OWS field-value OWS`, with no whitespace before the colon, no obs-fold and
/// no control bytes in the value.
fn split_header(line: &[u8]) -> Result<(&[u8], &[u8]), Rejection> {
    if line.first().is_some_and(|&c| c == b' ' || c == b'\t') {
        return Err(malformed("obs-fold continuation line"));
    }
    let colon = line
        .iter()
        .position(|&c| c == b':')
        .ok_or_else(|| malformed("header line without a colon"))?;
    let (name, value) = line.split_at(colon);
    let value = value.get(1..).unwrap_or_default();
    if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
        return Err(malformed(
            "invalid header name (whitespace before the colon?)",
        ));
    }
    let value = value.trim_ascii_start();
    let value = value
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .and_then(|end| value.get(..=end))
        .unwrap_or_default();
    if value.iter().any(|&c| c != b'\t' && (c < 0x20 || c == 0x7f)) {
        return Err(malformed("control byte in a header value"));
    }
    Ok((name, value))
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_gateway_says_where_its_client_came_from() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-forwarded-for", "10.0.0.1"),
            ("X_Real_IP", "10.0.0.2"),
            ("forwarded", "for=10.0.0.3"),
            ("true-client-ip", "10.0.0.4"),
            ("x-forwarded-host", "admin.internal"),
            ("x-client", "kept"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        own_forwarding(&mut h, Some("127.0.0.9".parse().unwrap()));
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        assert_eq!(h["x-client"], "kept");
        // No address known: nothing said at all.
        own_forwarding(&mut h, None);
        assert!(h.get("x-forwarded-for").is_none());
    }

    use super::*;

    fn parts(raw: http::Request<()>) -> http::request::Parts {
        raw.into_parts().0
    }

    fn scan(bytes: &[u8]) -> (Http1Scanner, Result<(), Rejection>) {
        let mut s = Http1Scanner::new(&Limits::default());
        let r = s.feed(bytes);
        (s, r)
    }

    fn code(s: &mut Http1Scanner) -> &'static str {
        match s.next_head() {
            Ok(()) => "ok",
            Err(r) => r.code,
        }
    }

    #[test]
    fn clean_pipeline_is_followed() {
        let (mut s, r) = scan(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n\
              5;ext=1\r\nGET /\r\n0\r\nX-T: 1\r\n\r\n\
              GET /c HTTP/1.0\r\n\r\n",
        );
        assert!(r.is_ok());
        assert_eq!(code(&mut s), "ok");
        assert_eq!(code(&mut s), "ok");
        assert_eq!(code(&mut s), "ok");
        // No fourth head was seen: a request without a verdict is refused.
        assert_eq!(code(&mut s), "request_smuggling");
    }

    #[test]
    fn bytes_split_anywhere_give_the_same_verdicts() {
        let raw: &[u8] = b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        for split in 0..raw.len() {
            let mut s = Http1Scanner::new(&Limits::default());
            let (a, b) = raw.split_at(split);
            assert!(s.feed(a).is_ok());
            assert!(s.feed(b).is_ok());
            assert_eq!(code(&mut s), "ok", "split at {split}");
            assert_eq!(code(&mut s), "request_smuggling", "split at {split}");
        }
    }

    #[test]
    fn smuggling_heads_are_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 4\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n", "malformed_request"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", "request_smuggling"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", "malformed_request"),
            (b"GET / HTTP/1.1\nHost: x\r\n\r\n", "malformed_request"),
            (b"GET / HTTP/1.1\r\nHost: x\rY: 1\r\n\r\n", "malformed_request"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", "malformed_request"),
            (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", "malformed_request"),
            (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", "malformed_request"),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "method_unsupported"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n", "upgrade_unsupported"),
        ];
        for (raw, want) in cases {
            let (mut s, r) = scan(raw);
            assert!(r.is_ok());
            assert_eq!(code(&mut s), *want, "{}", String::from_utf8_lossy(raw));
            // Nothing after a refused head is trusted.
            let _ = s.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_ne!(code(&mut s), "ok");
        }
    }

    #[test]
    fn head_limits() {
        let limits = Limits {
            max_headers: 3,
            max_header_bytes: 128,
            ..Limits::default()
        };
        let mut s = Http1Scanner::new(&limits);
        assert!(
            s.feed(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")
                .is_ok()
        );
        assert_eq!(code(&mut s), "header_too_large");
        let mut s = Http1Scanner::new(&limits);
        let long = format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "a".repeat(200));
        assert!(s.feed(long.as_bytes()).is_ok());
        assert_eq!(code(&mut s), "header_too_large");
    }

    #[test]
    fn chunk_violations_fail_the_connection() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            let mut s = Http1Scanner::new(&Limits::default());
            assert!(s.feed(head).is_ok());
            assert!(s.feed(body).is_err(), "{}", String::from_utf8_lossy(body));
            assert_eq!(code(&mut s), "ok");
            assert_ne!(code(&mut s), "ok");
        }
    }

    #[test]
    fn h2_preface_passes_through() {
        let (s, r) = scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00");
        assert!(r.is_ok());
        assert!(s.is_http2());
        // Not as a later head.
        let (mut s, _) = scan(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPRI * HTTP/2.0\r\n\r\n");
        assert_eq!(code(&mut s), "ok");
        assert_eq!(code(&mut s), "malformed_request");
    }

    #[test]
    fn check_request_framing() {
        let l = Limits::default();
        let ok = http::Request::post("http://x/a")
            .header("host", "x")
            .header("content-length", "3")
            .body(())
            .unwrap();
        assert!(check_request(&parts(ok), &l).is_ok());
        let both = http::Request::post("/a")
            .header("host", "x")
            .header("content-length", "3")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        assert_eq!(
            check_request(&parts(both), &l).unwrap_err().code,
            "request_smuggling"
        );
        for te in [
            "gzip, chunked",
            "chunked;foo",
            "\"chunked\"",
            "chunked, chunked",
        ] {
            let r = http::Request::post("/a")
                .header("host", "x")
                .header("transfer-encoding", te)
                .body(())
                .unwrap();
            assert_eq!(
                check_request(&parts(r), &l).unwrap_err().code,
                "request_smuggling"
            );
        }
        let r = http::Request::post("/a")
            .header("host", "x")
            .header("transfer-encoding", "CHUNKED")
            .body(())
            .unwrap();
        assert!(check_request(&parts(r), &l).is_ok());
        let r = http::Request::post("/a")
            .version(Version::HTTP_10)
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        assert_eq!(
            check_request(&parts(r), &l).unwrap_err().code,
            "request_smuggling"
        );
        for cl in ["+3", " 3", "3 ", "0x3", "", "99999999999999999999"] {
            let r = http::Request::post("/a")
                .header("host", "x")
                .header("content-length", cl)
                .body(())
                .unwrap();
            assert!(check_request(&parts(r), &l).is_err(), "{cl:?}");
        }
        let r = http::Request::post("/a")
            .header("host", "x")
            .header("content-length", (l.max_body_bytes + 1).to_string())
            .body(())
            .unwrap();
        assert_eq!(check_request(&parts(r), &l).unwrap_err().status, 413);
    }

    #[test]
    fn check_request_authority_upgrade_connect_limits() {
        let l = Limits::default();
        let r = http::Request::get("http://other/a")
            .header("host", "x")
            .body(())
            .unwrap();
        assert_eq!(
            check_request(&parts(r), &l).unwrap_err().code,
            "request_smuggling"
        );
        let r = http::Request::get("http://X/a")
            .header("host", "x")
            .body(())
            .unwrap();
        assert!(check_request(&parts(r), &l).is_ok());
        let r = http::Request::get("/a").body(()).unwrap();
        assert_eq!(
            check_request(&parts(r), &l).unwrap_err().code,
            "malformed_request"
        );
        let r = http::Request::get("/a")
            .header("host", "x")
            .header("host", "y")
            .body(())
            .unwrap();
        assert!(check_request(&parts(r), &l).is_err());
        let r = http::Request::get("/a")
            .header("host", "x")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(check_request(&parts(r), &l).unwrap_err().status, 501);
        let r = http::Request::connect("x:443").body(()).unwrap();
        assert_eq!(check_request(&parts(r), &l).unwrap_err().status, 501);
        let small = Limits {
            max_headers: 2,
            ..Limits::default()
        };
        let r = http::Request::get("/a")
            .header("host", "x")
            .header("a", "1")
            .header("b", "1")
            .body(())
            .unwrap();
        assert_eq!(check_request(&parts(r), &small).unwrap_err().status, 431);
        let r = http::Request::get(format!("/{}", "a".repeat(9000)))
            .header("host", "x")
            .body(())
            .unwrap();
        assert_eq!(check_request(&parts(r), &l).unwrap_err().status, 414);
    }

    #[test]
    fn method_and_target_overrides_are_refused() {
        let l = Limits::default();
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
            "X-Original-Method",
            "X-Forwarded-Method",
            "X-Original-URL",
            "X-Rewrite-URL",
            "X-Original-URI",
            "X-Forwarded-Uri",
            "X-Forwarded-Path",
            "X-Envoy-Original-Path",
            "X_HTTP_METHOD_OVERRIDE",
            "x-http_method-override",
        ] {
            for value in ["DELETE", "", "/admin/users"] {
                let r = http::Request::get("/customers/1")
                    .header("host", "x")
                    .header(name, value)
                    .body(())
                    .unwrap();
                let err = check_request(&parts(r), &l).unwrap_err();
                assert_eq!(
                    (err.status.as_u16(), err.code),
                    (400, "method_override"),
                    "{name}"
                );
            }
        }
        for query in [
            "_method=DELETE",
            "a=1&_method=DELETE",
            "a=1;_METHOD=put",
            "_method",
            "%5Fmethod=DELETE",
            "%5fmethod=DELETE",
            ".method=DELETE",
            "+_method=DELETE",
            "%20.method=DELETE",
            "[method=DELETE",
            "_method[]=DELETE",
            "_method_override=DELETE",
        ] {
            let r = http::Request::post(format!("/customers/1?{query}"))
                .header("host", "x")
                .body(())
                .unwrap();
            let err = check_request(&parts(r), &l).unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.code),
                (400, "method_override"),
                "{query}"
            );
        }
        // Near misses pass.
        for query in [
            "method=DELETE",
            "q=_method",
            "x_method=1",
            "_methods=1",
            "a=%5Fmethod",
        ] {
            let r = http::Request::get(format!("/customers/1?{query}"))
                .header("host", "x")
                .header("x-http-method-overrides", "1")
                .header("x-forwarded-for", "10.0.0.1")
                .body(())
                .unwrap();
            assert!(check_request(&parts(r), &l).is_ok(), "{query}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_protected_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("upgrade", "h2c".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h).unwrap();
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        for listed in [
            "Authorization",
            "host",
            "Content-Length",
            "x-forwarded-for",
            "a b",
        ] {
            let mut h = HeaderMap::new();
            h.insert("connection", format!("close, {listed}").parse().unwrap());
            h.insert("authorization", "Bearer t".parse().unwrap());
            let err = strip_hop_by_hop(&mut h).unwrap_err();
            assert_eq!(err.code, "hop_by_hop_abuse");
            assert!(
                h.contains_key("authorization"),
                "nothing removed on refusal"
            );
        }
    }

    fn verdicts(s: &mut Http1Scanner) -> Vec<Result<(), &'static str>> {
        std::iter::from_fn(|| s.verdicts.pop_front())
            .map(|v| v.map_err(|r| r.code))
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_in_any_split_give_the_same_verdicts(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            split in 0usize..512,
        ) {
            let mut whole = Http1Scanner::new(&Limits::default());
            let r1 = whole.feed(&data).map_err(|r| r.code);
            let (a, b) = data.split_at(split.min(data.len()));
            let mut parts = Http1Scanner::new(&Limits::default());
            let r2 = parts.feed(a).and_then(|()| parts.feed(b)).map_err(|r| r.code);
            proptest::prop_assert_eq!(r1, r2);
            proptest::prop_assert_eq!(verdicts(&mut whole), verdicts(&mut parts));
        }

        #[test]
        fn protocol_shaped_bytes_in_any_split_give_the_same_verdicts(
            tokens in proptest::collection::vec(0usize..14, 0..80),
            cuts in proptest::collection::vec(0usize..1024, 0..4),
        ) {
            const T: [&[u8]; 14] = [
                b"GET / HTTP/1.1", b"POST /a HTTP/1.0", b"\r\n", b"\r", b"\n", b"Host: x",
                b"Content-Length: 3", b"Transfer-Encoding: chunked", b"abc", b"3", b"0",
                b" ", b";e=1", b"PRI * HTTP/2.0",
            ];
            let data: Vec<u8> = tokens.iter().flat_map(|&t| T[t].iter().copied()).collect();
            let mut whole = Http1Scanner::new(&Limits::default());
            let r1 = whole.feed(&data).map_err(|r| r.code);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Http1Scanner::new(&Limits::default());
            let mut r2 = Ok(());
            let mut from = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                if r2.is_ok() {
                    r2 = pieces.feed(&data[from..c]).map_err(|r| r.code);
                }
                from = c;
            }
            proptest::prop_assert_eq!(r1, r2);
            proptest::prop_assert_eq!(verdicts(&mut whole), verdicts(&mut pieces));
        }

        #[test]
        fn well_framed_pipelines_are_followed(
            bodies in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), proptest::prelude::any::<bool>()),
                1..6,
            ),
        ) {
            let mut raw = Vec::new();
            for (body, chunked) in &bodies {
                if *chunked {
                    raw.extend_from_slice(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
                    for piece in body.chunks(7) {
                        raw.extend_from_slice(format!("{:X}\r\n", piece.len()).as_bytes());
                        raw.extend_from_slice(piece);
                        raw.extend_from_slice(b"\r\n");
                    }
                    raw.extend_from_slice(b"0\r\n\r\n");
                } else {
                    raw.extend_from_slice(format!("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
                    raw.extend_from_slice(body);
                }
            }
            let mut s = Http1Scanner::new(&Limits::default());
            proptest::prop_assert!(s.feed(&raw).is_ok());
            proptest::prop_assert_eq!(verdicts(&mut s), vec![Ok(()); bodies.len()]);
        }
    }
}
