//! Response masking for masked routes: the request is prepared so that the upstream can only
//! answer in a form this module can mask ([`prepare_request`]), the response head is masked
//! and checked ([`mask_response_head`]), and the body is masked while it streams
//! ([`BodyMasker`], [`MaskedBody`]).
//!
//! Nothing passes unmasked because of its shape. A body is decoded whatever its content
//! coding (gzip, deflate, brotli, under size and ratio caps), masked by its media type, and
//! re-encoded in the same coding; a coding, media type or charset this module cannot mask is
//! refused with `502 unmaskable_response` before anything is sent, and so are partial
//! content, protocol upgrades and tunnels. Failures after the head was sent (invalid JSON, a
//! decompression bomb, a text body over its limit) end the body with an error: the client
//! sees a truncated or reset response, never clear data.
//!
//! | media type | masking |
//! |---|---|
//! | `application/json`, `application/*+json` | streaming, one document ([`JsonStream::new`]) |
//! | `application/x-ndjson`, `application/ndjson`, `application/jsonl`, `application/x-jsonlines` | streaming, one document per line ([`JsonStream::new`] for each line) |
//! | `text/event-stream` | event by event (each up to [`BodyLimits::max_text_body`]): the data lines of an event joined and masked together, other lines one by one |
//! | `application/x-www-form-urlencoded` | streaming, pair by pair (each up to [`BodyLimits::max_text_body`]): names and values percent-decoded and masked as the member and value of a one-member JSON object, so JSON-path rules such as `$.card` or `$..password` apply by name; a changed pair is re-encoded, the others pass byte for byte |
//! | `text/html`, `text/xml`, `application/xml`, `*/*+xml` | as text, then looked at again with its character references decoded (below) |
//! | `text/*`, `application/javascript` | buffered whole up to [`BodyLimits::max_text_body`], then [`Profile::mask_text`] |
//! | anything else, or no `Content-Type` on a response with a body | refused |
//!
//! JSON must be UTF-8 (RFC 8259), so a JSON type with another charset is refused. Text is
//! masked as UTF-8 unless it declares `iso-8859-1`, `latin1` or `windows-1252`, which are
//! masked as bytes (their digits, `@` and letters are ASCII); any other charset is refused,
//! since a detector would not recognise its digits (UTF-16, say).
//!
//! A form body is read as browsers and servers read it (the WHATWG URL standard's
//! `application/x-www-form-urlencoded` parser): pairs split on `&`, name and value split on
//! the first `=`, `+` a space, `%XX` a byte, the bytes UTF-8. A masker that matched the encoded bytes would miss
//! `card=4111+1111+1111+1111` and `email=ada%40example.com`, so a malformed escape (`%4`,
//! `%zz`) or bytes that are not UTF-8 once decoded end the body with
//! [`BodyError::InvalidForm`] rather than pass unread; so does a `charset` other than UTF-8.
//!
//! XML and HTML spell characters as references too: `ada&#64;example.com`,
//! `&#x31;23-45-6789` and `4111&nbsp;1111&nbsp;1111&nbsp;1111` reach a reader as an email,
//! an SSN and a card number, but no detector sees them in the bytes. After masking, such a
//! body is read again with its numeric references (decimal and hex, with or without `;`,
//! the windows-1252 reading of `&#128;`–`&#159;` included) and the named references of
//! the characters detectors read (the five XML ones, `&commat;`, `&period;`, `&num;`,
//! `&plus;`, `&lowbar;`, `&hyphen;`, `&dash;`, `&ndash;`, `&minus;`, `&nbsp;` and the other
//! spaces, zero-width characters …) decoded; when a value the profile finds there is made
//! of a reference in part or whole, the body ends with [`BodyError::CharacterReference`].
//! The body is refused rather than masked on its decoded text and encoded again: which
//! characters of a masked value were references is not knowable once it is replaced, and a
//! reference nobody hides a value behind (`&amp;`, `&lt;`, `&#39;`, `&nbsp;` between
//! words) costs nothing this way. Field rules do not apply to this second reading (a JSON
//! document in an HTML attribute, quoted as `&quot;`, is read by the detectors only).
//!
//! JSON Lines are held to one document per line, as NDJSON and JSON Lines define them:
//! several values on a line are refused, because scalars separated by spaces
//! (`4111 1111 1111 1111`) can spell a value that none of them holds. Blank lines pass.
//!
//! Trailers are masked like headers. `application/json-seq` (RFC 7464) is refused: its
//! record separators are not JSON whitespace.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use wirewarden_core::{BoxError, MaskedCounts};
use wirewarden_mask::{Field, JsonStream, Profile, ValueType};

use crate::Rejection;
use crate::encoding::{Coding, CodingError, DecodeLimits, Decoder, Encoder};

/// Limits on masking one response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Most bytes a compressed body may decode to.
    pub max_decoded_bytes: u64,
    /// Most decoded bytes per compressed byte, once `ratio_floor` bytes were decoded.
    pub max_ratio: u64,
    /// Decoded size below which the ratio is not checked.
    pub ratio_floor: u64,
    /// Largest text body (`text/*`, XML, forms, JavaScript), which is masked whole.
    pub max_text_body: usize,
}

impl Default for BodyLimits {
    /// 256 MiB decoded, a ratio of 100 after the first MiB, text bodies up to 8 MiB.
    fn default() -> Self {
        let d = DecodeLimits::default();
        Self {
            max_decoded_bytes: d.max_decoded_bytes,
            max_ratio: d.max_ratio,
            ratio_floor: d.ratio_floor,
            max_text_body: 8 << 20,
        }
    }
}

impl BodyLimits {
    fn decode(&self) -> DecodeLimits {
        DecodeLimits {
            max_decoded_bytes: self.max_decoded_bytes,
            max_ratio: self.max_ratio,
            ratio_floor: self.ratio_floor,
        }
    }
}

/// Why a body stopped. Whatever was sent before it was masked; the rest never leaves.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body could not be decoded (corrupt, truncated, a decompression bomb) or
    /// re-encoded.
    #[error(transparent)]
    Coding(#[from] CodingError),
    /// The masker refused the content (invalid JSON, invalid UTF-8, a value too large …).
    #[error("body cannot be masked: {0}")]
    Mask(#[from] wirewarden_mask::Error),
    /// A form body (`application/x-www-form-urlencoded`) cannot be read: a malformed
    /// percent-escape, or a name or value that is not UTF-8 once decoded.
    #[error("form body cannot be masked: {reason}")]
    InvalidForm {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An XML or HTML body in which a value the profile masks is written, in part or whole,
    /// as character references (`ada&#64;example.com`, `&#x31;23-45-6789`): it cannot be
    /// masked where it stands, so the body is refused.
    #[error("a value in the body is hidden behind character references")]
    CharacterReference,
    /// A text body, which is masked whole, is larger than allowed.
    #[error("text body exceeds {limit} bytes")]
    TextTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The upstream body failed.
    #[error("upstream body failed: {0}")]
    Upstream(#[source] BoxError),
    /// The masker was used after it failed or finished.
    #[error("body masker used after its end")]
    Finished,
    /// The response outlived what it was allowed under (the credential of its session, the
    /// grant that allowed it) and was cut there ([`Until`]).
    #[error("response cut: {0}")]
    Cut(String),
}

impl BodyError {
    /// An error of the body a masker or counter reads: a cut stays a cut.
    fn of_inner(e: BoxError) -> Self {
        match e.downcast::<Self>() {
            Ok(own) => *own,
            Err(e) => Self::Upstream(e),
        }
    }
}

/// How a body ended, handed to the `done` callback of [`MaskedBody`] and [`CountingBody`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BodyReport {
    /// Body bytes received from the upstream (as sent, before decoding).
    pub bytes_in: u64,
    /// Body bytes passed on to the client (as sent, after re-encoding).
    pub bytes_out: u64,
    /// What masking replaced in the body, by entity (header masking is counted by
    /// [`mask_response_head`]).
    pub masked: MaskedCounts,
    /// Why the body did not end normally: an error, or the body being dropped before its
    /// end (the client went away).
    pub error: Option<String>,
}

// === request ===

/// Prepares a request to a masked route.
///
/// Range requests are refused with `400 range_not_supported`: a part of a representation
/// cannot be masked (a card number may straddle the boundary, a compressed body cannot be
/// decoded from the middle), and answering the full body instead would surprise a client
/// that asked for a part. 400 rather than 416, because download tools read 416 as "you
/// already have all of it". `If-Range` is refused with it, as it only means something with
/// `Range`.
///
/// `Accept-Encoding` is narrowed to the codings this module decodes and re-encodes and that
/// the client accepts ([`narrow_accept_encoding`](crate::encoding::narrow_accept_encoding)),
/// so the coding the upstream picks is one both sides handle.
///
/// # Errors
/// The rejection to send when the request carries `Range` or `If-Range`.
pub fn prepare_request(parts: &mut http::request::Parts) -> Result<(), Rejection> {
    let h = &mut parts.headers;
    if h.contains_key(header::RANGE) || h.contains_key(header::IF_RANGE) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "range_not_supported",
            "range requests are not supported on a masked route",
        ));
    }
    let mut joined: Vec<u8> = Vec::new();
    for v in h.get_all(header::ACCEPT_ENCODING) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    let client = HeaderValue::from_bytes(&joined).ok();
    let narrowed = crate::encoding::narrow_accept_encoding(client.as_ref());
    h.insert(header::ACCEPT_ENCODING, narrowed);
    Ok(())
}

// === response head ===

/// Headers that describe the exact bytes of the upstream's body, which masking changes.
const BODY_DIGESTS: [&str; 5] = [
    "content-length",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
];

/// Headers whose values are framing this module reads and checks, never free text.
const STRUCTURAL: [HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
];

fn unmaskable(message: impl Into<String>) -> Rejection {
    Rejection::new(StatusCode::BAD_GATEWAY, "unmaskable_response", message)
}

/// Prepares the response of a masked route.
///
/// Header values are masked in place by `profile` (field rules for
/// [`Field::Header`]`(name)`, then content); a value that cannot be masked, or whose masked
/// form is not a valid header value, is removed. `Content-Type` is masked by content only,
/// so that a rule on all headers does not make the body unreadable; `Content-Length`,
/// `Content-Encoding` and `Transfer-Encoding` are checked instead of masked. Counts go to
/// `counts`.
///
/// As the body may change, `Content-Length`, `Content-MD5`, `Digest`, `Content-Digest`,
/// `Repr-Digest` and `Accept-Ranges` are removed and a strong `ETag` is made weak (the
/// masked body is semantically, not byte for byte, the upstream's). This is done for
/// responses without a body too, so that `HEAD` and `304` agree with `GET`. A reason phrase
/// the upstream chose (hyper's `ReasonPhrase` extension) is dropped: the client gets the
/// status's own.
///
/// Returns the body masker, or `None` when the response has no body: `HEAD`, `1xx`, `204`,
/// `304`, or `Content-Length: 0`. The framing then guarantees an empty body (hyper's client
/// enforces it); a caller that nonetheless sees data for such a response must not forward
/// it.
///
/// # Errors
/// `502 unmaskable_response` for `206 Partial Content`, `101 Switching Protocols` and a
/// successful `CONNECT` (what follows is not an HTTP body), a content coding that is unknown
/// or stacked, and a media type or charset this module cannot mask (see the module
/// documentation), including a response with a body and no `Content-Type`.
pub fn mask_response_head(
    profile: &Arc<Profile>,
    method: &Method,
    parts: &mut http::response::Parts,
    limits: &BodyLimits,
    counts: &mut MaskedCounts,
) -> Result<Option<BodyMasker>, Rejection> {
    mask_response_head_for(profile, method, parts, limits, counts, None)
}

/// [`mask_response_head`] for a client whose `Accept-Encoding` [`prepare_request`] narrowed
/// to `accepted`: when the upstream answered in a coding that list does not name (an
/// upstream that ignored it), the body is decoded, masked and sent without a content coding
/// rather than re-encoded in a coding the client did not ask for. `None` keeps the
/// upstream's coding.
///
/// # Errors
/// Those of [`mask_response_head`].
pub fn mask_response_head_for(
    profile: &Arc<Profile>,
    method: &Method,
    parts: &mut http::response::Parts,
    limits: &BodyLimits,
    counts: &mut MaskedCounts,
    accepted: Option<&HeaderValue>,
) -> Result<Option<BodyMasker>, Rejection> {
    let status = parts.status;
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(unmaskable("partial content cannot be masked"));
    }
    if status == StatusCode::SWITCHING_PROTOCOLS
        || (method == Method::CONNECT && status.is_success())
    {
        return Err(unmaskable("a protocol switch or tunnel cannot be masked"));
    }
    // A reason phrase other than the status's own is upstream text like any other; clients
    // ignore it (RFC 9112 §4), so the response goes on with the status's own.
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    let headers = &mut parts.headers;
    let declared_empty = declared_length(headers) == Some(0);
    mask_headers(profile, headers, counts);
    for name in BODY_DIGESTS {
        headers.remove(name);
    }
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);

    let no_body = method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if no_body {
        return Ok(None);
    }
    if declared_empty {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        return Ok(None);
    }
    let coding = Coding::from_headers(headers).map_err(|e| unmaskable(e.to_string()))?;
    let shape = shape_of(headers)?;
    let out = match accepted {
        Some(list) if !crate::encoding::narrowed_accepts(list, coding) => {
            headers.remove(header::CONTENT_ENCODING);
            Coding::Identity
        }
        _ => coding,
    };
    Ok(Some(BodyMasker::new(
        Arc::clone(profile),
        coding,
        out,
        shape,
        limits,
    )))
}

/// The `Content-Length` when there is exactly one and it is a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    v.to_str().ok()?.trim().parse().ok()
}

fn weaken_etag(headers: &mut HeaderMap) {
    let Some(tag) = headers.get(header::ETAG) else {
        return;
    };
    let b = tag.as_bytes();
    if b.starts_with(b"W/") {
        return;
    }
    let mut weak = Vec::with_capacity(b.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(b);
    match HeaderValue::from_bytes(&weak) {
        Ok(v) => {
            headers.insert(header::ETAG, v);
        }
        Err(_) => {
            headers.remove(header::ETAG);
        }
    }
}

/// Masks every header value in `headers` with `profile`, in place: field rules for
/// [`Field::Header`]`(name)`, then detectors. A value that cannot be masked, that a strategy
/// turns into NULL, or whose masked form is not a valid header value is removed.
/// `Content-Type` is masked by content only; `Content-Length`, `Content-Encoding` and
/// `Transfer-Encoding` are left alone (they are framing, checked elsewhere). Used for
/// response headers and trailers.
pub fn mask_headers(profile: &Profile, headers: &mut HeaderMap, counts: &mut MaskedCounts) {
    // Decide first, rebuild only if something changed: the clean path copies nothing.
    let mut edits: Vec<Option<Option<HeaderValue>>> = Vec::with_capacity(headers.len());
    let mut changed = false;
    for (name, value) in headers.iter() {
        let edit = mask_header(profile, name, value, counts);
        changed |= edit.is_some();
        edits.push(edit);
    }
    if !changed {
        return;
    }
    let old = std::mem::take(headers);
    headers.reserve(old.len());
    for ((name, value), edit) in old.iter().zip(edits) {
        match edit {
            None => {
                headers.append(name.clone(), value.clone());
            }
            Some(Some(v)) => {
                headers.append(name.clone(), v);
            }
            Some(None) => {}
        }
    }
}

/// `None`: keep; `Some(None)`: remove; `Some(Some(v))`: replace.
fn mask_header(
    profile: &Profile,
    name: &HeaderName,
    value: &HeaderValue,
    counts: &mut MaskedCounts,
) -> Option<Option<HeaderValue>> {
    if STRUCTURAL.contains(name) {
        return None;
    }
    let field = if name == header::CONTENT_TYPE {
        Field::Unknown
    } else {
        Field::Header(name.as_str())
    };
    let raw = value.as_bytes();
    let ty = if std::str::from_utf8(raw).is_ok() {
        ValueType::Text
    } else {
        ValueType::Bytes
    };
    match profile.mask_value(&field, ty, Cow::Borrowed(raw), counts) {
        Ok(Some(Cow::Borrowed(_))) => None,
        Ok(Some(Cow::Owned(v))) => Some(HeaderValue::from_bytes(&v).ok().map(|mut h| {
            h.set_sensitive(value.is_sensitive());
            h
        })),
        Ok(None) | Err(_) => Some(None),
    }
}

/// What a body holds, as far as masking is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One JSON document.
    Json,
    /// One JSON document per line.
    JsonLines,
    /// Text, masked whole; `utf8` false for a single-byte ASCII-compatible charset, `markup`
    /// true for XML and HTML, whose character references are looked behind.
    Text { utf8: bool, markup: bool },
    /// Server-sent events, masked event by event.
    Events,
    /// `application/x-www-form-urlencoded`, masked pair by pair.
    Form,
}

fn shape_of(headers: &HeaderMap) -> Result<Shape, Rejection> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(unmaskable(
            "a response body without exactly one Content-Type cannot be masked",
        ));
    };
    let text = value
        .to_str()
        .map_err(|_| unmaskable("Content-Type is not visible ASCII"))?;
    let mut params = text.split(';');
    let essence = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mut charset: Option<String> = None;
    for p in params {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("charset")
        {
            charset = Some(v.trim().trim_matches('"').to_ascii_lowercase());
        }
    }
    let refuse = || {
        unmaskable(format!(
            "content type {:?} cannot be masked",
            crate::encoding::echo(&essence)
        ))
    };
    let json_charset = |shape| match charset.as_deref() {
        None | Some("utf-8" | "utf8") => Ok(shape),
        Some(_) => Err(unmaskable(
            "JSON in a charset other than UTF-8 cannot be masked",
        )),
    };
    let (top, sub) = essence.split_once('/').ok_or_else(refuse)?;
    match (top, sub) {
        ("application", "json") => json_charset(Shape::Json),
        ("application", s) if s.ends_with("+json") => json_charset(Shape::Json),
        ("application", "x-ndjson" | "ndjson" | "jsonl" | "x-jsonlines" | "jsonlines") => {
            json_charset(Shape::JsonLines)
        }
        ("text", "event-stream") => match charset.as_deref() {
            // The format is UTF-8 whatever the header says (WHATWG HTML, 9.2.5).
            None | Some("utf-8" | "utf8") => Ok(Shape::Events),
            Some(_) => Err(unmaskable(
                "event streams in a charset other than UTF-8 cannot be masked",
            )),
        },
        ("application", "x-www-form-urlencoded") => match charset.as_deref() {
            None | Some("utf-8" | "utf8" | "us-ascii" | "ascii") => Ok(Shape::Form),
            Some(_) => Err(unmaskable(
                "forms in a charset other than UTF-8 cannot be masked",
            )),
        },
        ("text", "html" | "xml") | ("application", "xml") => text_charset(charset.as_deref(), true),
        ("text" | "application", s) if s.ends_with("+xml") => {
            text_charset(charset.as_deref(), true)
        }
        ("text", _) | ("application", "javascript" | "x-javascript" | "ecmascript") => {
            text_charset(charset.as_deref(), false)
        }
        _ => Err(refuse()),
    }
}

fn text_charset(charset: Option<&str>, markup: bool) -> Result<Shape, Rejection> {
    match charset {
        None | Some("utf-8" | "utf8" | "us-ascii" | "ascii") => {
            Ok(Shape::Text { utf8: true, markup })
        }
        Some("iso-8859-1" | "latin1" | "iso_8859-1" | "windows-1252" | "cp1252") => {
            Ok(Shape::Text {
                utf8: false,
                markup,
            })
        }
        Some(_) => Err(unmaskable(
            "text in a charset other than UTF-8, ASCII or Latin-1 cannot be masked",
        )),
    }
}

// === body masker ===

enum Content {
    Json(Box<JsonStream>),
    /// The current line of a JSON Lines body, and whether it holds more than whitespace.
    Lines {
        line: Box<JsonStream>,
        has_value: bool,
    },
    Text {
        buf: Vec<u8>,
        utf8: bool,
        markup: bool,
    },
    /// Decoded bytes after the last complete event.
    Events {
        buf: Vec<u8>,
    },
    /// Decoded bytes after the last `&`: the start of a pair still arriving.
    Form {
        buf: Vec<u8>,
    },
}

/// Masks one response body: decode → mask → re-encode, in the coding the upstream used when
/// the client accepts it ([`prepare_request`] narrowed `Accept-Encoding`, and
/// [`mask_response_head_for`] checks the answer against it), without a coding otherwise.
/// Synchronous and IO-free; [`MaskedBody`] drives it from a stream of frames.
///
/// After an error every call fails: a body is never resumed past something that could not
/// be masked.
pub struct BodyMasker {
    profile: Arc<Profile>,
    decoder: Decoder,
    encoder: Encoder,
    content: Content,
    max_text_body: usize,
    decoded: Vec<u8>,
    masked: Vec<u8>,
    saw_input: bool,
    saw_decoded: bool,
    open: bool,
}

impl std::fmt::Debug for BodyMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyMasker")
            .field("profile", &self.profile.name())
            .field("coding", &self.decoder.coding())
            .field(
                "content",
                &match &self.content {
                    Content::Json(_) => "json",
                    Content::Lines { .. } => "json lines",
                    Content::Text { .. } => "text",
                    Content::Events { .. } => "events",
                    Content::Form { .. } => "form",
                },
            )
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl BodyMasker {
    fn new(
        profile: Arc<Profile>,
        coding: Coding,
        out: Coding,
        shape: Shape,
        limits: &BodyLimits,
    ) -> Self {
        let content = match shape {
            Shape::Json => Content::Json(Box::new(JsonStream::new(Arc::clone(&profile)))),
            Shape::JsonLines => Content::Lines {
                line: Box::new(JsonStream::new(Arc::clone(&profile))),
                has_value: false,
            },
            Shape::Text { utf8, markup } => Content::Text {
                buf: Vec::new(),
                utf8,
                markup,
            },
            Shape::Events => Content::Events { buf: Vec::new() },
            Shape::Form => Content::Form { buf: Vec::new() },
        };
        Self {
            profile,
            decoder: Decoder::new(coding, limits.decode()),
            encoder: Encoder::new(out),
            content,
            max_text_body: limits.max_text_body,
            decoded: Vec::new(),
            masked: Vec::new(),
            saw_input: false,
            saw_decoded: false,
            open: true,
        }
    }

    /// The content coding of the body, in and out.
    #[must_use]
    pub fn coding(&self) -> Coding {
        self.decoder.coding()
    }

    /// Masks the next chunk of the upstream's body; returns what can be sent now (often
    /// empty while a text body is buffered or a token is split across chunks).
    ///
    /// # Errors
    /// See [`BodyError`]; the masker is unusable afterwards.
    pub fn push(&mut self, chunk: &[u8], counts: &mut MaskedCounts) -> Result<Bytes, BodyError> {
        if !self.open {
            return Err(BodyError::Finished);
        }
        let r = self.step(chunk, false, counts);
        if r.is_err() {
            self.open = false;
        }
        r
    }

    /// Ends the body; returns its last bytes (the rest of a text body, the encoder's
    /// trailer).
    ///
    /// # Errors
    /// See [`BodyError`], for example a truncated stream or an incomplete JSON document.
    pub fn finish(&mut self, counts: &mut MaskedCounts) -> Result<Bytes, BodyError> {
        if !self.open {
            return Err(BodyError::Finished);
        }
        self.open = false;
        self.step(&[], true, counts)
    }

    /// Masks trailer fields like header fields ([`mask_headers`]).
    pub fn mask_trailers(&self, trailers: &mut HeaderMap, counts: &mut MaskedCounts) {
        mask_headers(&self.profile, trailers, counts);
    }

    fn step(
        &mut self,
        chunk: &[u8],
        last: bool,
        counts: &mut MaskedCounts,
    ) -> Result<Bytes, BodyError> {
        self.saw_input |= !chunk.is_empty();
        self.decoded.clear();
        self.masked.clear();
        // An identity body is masked straight from the chunk, without a copy.
        let identity = self.decoder.coding() == Coding::Identity;
        let decoded: &[u8] = if identity {
            chunk
        } else {
            self.decoder.push(chunk, &mut self.decoded)?;
            if last {
                self.decoder.finish(&mut self.decoded)?;
            }
            &self.decoded
        };
        self.saw_decoded |= !decoded.is_empty();
        match &mut self.content {
            Content::Json(stream) => {
                stream.push(decoded, &mut self.masked, counts)?;
                // An empty body holds nothing to leak; it stays empty rather than failing
                // as "no JSON document".
                if last && self.saw_decoded {
                    stream.finish(&mut self.masked, counts)?;
                }
            }
            Content::Lines { line, has_value } => {
                let mut rest = decoded;
                loop {
                    // A raw LF is never inside a JSON token (strings escape it): it always
                    // ends a line.
                    let end = memchr::memchr(b'\n', rest);
                    let part = rest.get(..end.unwrap_or(rest.len())).unwrap_or_default();
                    *has_value |= part.iter().any(|b| !b" \t\r".contains(b));
                    line.push(part, &mut self.masked, counts)?;
                    let Some(end) = end else { break };
                    if *has_value {
                        line.finish(&mut self.masked, counts)?;
                    }
                    self.masked.push(b'\n');
                    **line = JsonStream::new(Arc::clone(&self.profile));
                    *has_value = false;
                    rest = rest.get(end + 1..).unwrap_or_default();
                }
                if last && *has_value {
                    line.finish(&mut self.masked, counts)?;
                }
            }
            Content::Text { buf, utf8, markup } => {
                if buf.len().saturating_add(decoded.len()) > self.max_text_body {
                    return Err(BodyError::TextTooLarge {
                        limit: self.max_text_body,
                    });
                }
                buf.extend_from_slice(decoded);
                if last {
                    let ty = if *utf8 {
                        ValueType::Text
                    } else {
                        ValueType::Bytes
                    };
                    let whole = std::mem::take(buf);
                    if let Some(m) = self.profile.mask_value(
                        &Field::Unknown,
                        ty,
                        Cow::Borrowed(&whole),
                        counts,
                    )? {
                        if *markup && crate::markup::references_hide_a_value(&self.profile, &m) {
                            return Err(BodyError::CharacterReference);
                        }
                        self.masked.extend_from_slice(&m);
                    }
                }
            }
            Content::Events { buf } => {
                buf.extend_from_slice(decoded);
                let end = if last {
                    buf.len()
                } else {
                    complete_events(buf)
                };
                if buf.len().saturating_sub(end) > self.max_text_body {
                    return Err(BodyError::TextTooLarge {
                        limit: self.max_text_body,
                    });
                }
                if end > 0 {
                    let events: Vec<u8> = buf.drain(..end).collect();
                    mask_events(&self.profile, &events, &mut self.masked, counts)?;
                }
            }
            Content::Form { buf } => {
                // Complete pairs go out now; the pair after the last `&` waits for its end.
                let (done, rest) = if buf.is_empty() {
                    let end = if last {
                        decoded.len()
                    } else {
                        memchr::memrchr(b'&', decoded).map_or(0, |i| i + 1)
                    };
                    decoded.split_at(end)
                } else {
                    buf.extend_from_slice(decoded);
                    let end = if last {
                        buf.len()
                    } else {
                        memchr::memrchr(b'&', buf).map_or(0, |i| i + 1)
                    };
                    let pairs: Vec<u8> = buf.drain(..end).collect();
                    mask_form(&self.profile, &pairs, &mut self.masked, counts)?;
                    (&[][..], &[][..])
                };
                mask_form(&self.profile, done, &mut self.masked, counts)?;
                buf.extend_from_slice(rest);
                if buf.len() > self.max_text_body {
                    return Err(BodyError::TextTooLarge {
                        limit: self.max_text_body,
                    });
                }
            }
        }
        if identity {
            return Ok(Bytes::from(std::mem::take(&mut self.masked)));
        }
        let mut out = Vec::new();
        self.encoder.push(&self.masked, &mut out)?;
        // An empty upstream body stays empty; any other gets a complete stream.
        if last && self.saw_input {
            self.encoder.finish(&mut out)?;
        }
        Ok(Bytes::from(out))
    }
}

// === forms ===

/// Masks complete `application/x-www-form-urlencoded` pairs (`a=1&b=2`, separators kept).
/// Each pair is decoded and masked as the one-member JSON object `{name: value}`, so the
/// profile's JSON-path rules select values by name and its detectors read names and values
/// as a client will; a pair that comes back unchanged is written byte for byte, a changed
/// name or value is written encoded again (a value a rule turns into `null` becomes empty).
fn mask_form(
    profile: &Profile,
    pairs: &[u8],
    out: &mut Vec<u8>,
    counts: &mut MaskedCounts,
) -> Result<(), BodyError> {
    if pairs.is_empty() {
        return Ok(());
    }
    for (i, pair) in pairs.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        mask_pair(profile, pair, out, counts)?;
    }
    Ok(())
}

fn mask_pair(
    profile: &Profile,
    pair: &[u8],
    out: &mut Vec<u8>,
    counts: &mut MaskedCounts,
) -> Result<(), BodyError> {
    if pair.is_empty() {
        return Ok(());
    }
    let (raw_name, raw_value) = match memchr::memchr(b'=', pair) {
        Some(eq) => (
            pair.get(..eq).unwrap_or_default(),
            Some(pair.get(eq + 1..).unwrap_or_default()),
        ),
        None => (pair, None),
    };
    let name = form_decode(raw_name)?;
    let value = form_decode(raw_value.unwrap_or_default())?;
    let mut object = serde_json::Map::new();
    object.insert(name.clone().into_owned(), serde_json::Value::from(&*value));
    let doc = serde_json::Value::Object(object).to_string();
    let masked = match profile.mask_json(&Field::Unknown, Cow::Borrowed(&doc), counts)? {
        Some(Cow::Borrowed(_)) => {
            out.extend_from_slice(pair);
            return Ok(());
        }
        Some(Cow::Owned(m)) => m,
        // The whole pair is withheld.
        None => return Ok(()),
    };
    let unreadable = || BodyError::InvalidForm {
        reason: "a masked pair is not a one-member object",
    };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&masked).map_err(|_| unreadable())?;
    let mut members = object.into_iter();
    let (Some((new_name, new_value)), None) = (members.next(), members.next()) else {
        return Err(unreadable());
    };
    let new_value = match new_value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    if new_name == name {
        out.extend_from_slice(raw_name);
    } else {
        form_encode(&new_name, out);
    }
    if let Some(raw_value) = raw_value {
        out.push(b'=');
        if new_value == value {
            out.extend_from_slice(raw_value);
        } else {
            form_encode(&new_value, out);
        }
    } else if !new_value.is_empty() {
        out.push(b'=');
        form_encode(&new_value, out);
    }
    Ok(())
}

/// Decodes one name or value of a form: `+` is a space, `%XX` a byte, and the result must be
/// UTF-8. Borrowed when there is nothing to decode.
fn form_decode(raw: &[u8]) -> Result<Cow<'_, str>, BodyError> {
    let not_utf8 = || BodyError::InvalidForm {
        reason: "a name or value is not UTF-8 once decoded",
    };
    if !raw.iter().any(|b| matches!(b, b'+' | b'%')) {
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| not_utf8());
    }
    let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let (Some(hi), Some(lo)) = (hex(raw.get(i + 1)), hex(raw.get(i + 2))) else {
                    return Err(BodyError::InvalidForm {
                        reason: "a malformed percent-escape",
                    });
                };
                bytes.push(u8::try_from(hi * 16 + lo).map_err(|_| not_utf8())?);
                i += 2;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| not_utf8())
}

/// Encodes a name or value as the `application/x-www-form-urlencoded` serializer does:
/// ASCII letters, digits and `*-._` as they are, a space as `+`, every other byte as `%XX`.
fn form_encode(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            b' ' => out.push(b'+'),
            b => {
                out.push(b'%');
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xF)]);
            }
        }
    }
}

// === server-sent events ===

/// The length of the complete events at the start of `buf`, through the blank line that ends
/// the last of them; 0 when there is none yet. Lines end in CRLF, LF or CR; a CR at the very
/// end waits for the next byte, which may be its LF.
fn complete_events(buf: &[u8]) -> usize {
    let mut end = 0;
    let mut line_start = 0;
    let mut i = 0;
    while let Some(&b) = buf.get(i) {
        if b != b'\n' && b != b'\r' {
            i += 1;
            continue;
        }
        let len = match (b, buf.get(i + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', None) => break,
            _ => 1,
        };
        let blank = i == line_start;
        i += len;
        line_start = i;
        if blank {
            end = i;
        }
    }
    end
}

/// Masks complete events (or, at the end of the body, whatever is left). Each event's data
/// lines are joined as a client joins them and masked together, so a value (a JSON document,
/// a card number) split over several `data:` lines is seen whole; every other line (`event`,
/// `id`, comments) is masked on its own. Lines are written back with LF endings.
fn mask_events(
    profile: &Profile,
    events: &[u8],
    out: &mut Vec<u8>,
    counts: &mut MaskedCounts,
) -> Result<(), BodyError> {
    let text = std::str::from_utf8(events).map_err(|e| {
        BodyError::Mask(wirewarden_mask::Error::InvalidUtf8 {
            offset: e.valid_up_to(),
        })
    })?;
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let (line, tail) = rest.split_at(cut);
        lines.push(line);
        rest = tail
            .strip_prefix("\r\n")
            .or_else(|| tail.strip_prefix('\r'))
            .or_else(|| tail.strip_prefix('\n'))
            .unwrap_or(tail);
    }
    let mut event: Vec<&str> = Vec::new();
    for line in lines {
        if line.is_empty() {
            mask_event(profile, &event, out, counts)?;
            out.push(b'\n');
            event.clear();
        } else {
            event.push(line);
        }
    }
    mask_event(profile, &event, out, counts)
}

fn mask_event(
    profile: &Profile,
    lines: &[&str],
    out: &mut Vec<u8>,
    counts: &mut MaskedCounts,
) -> Result<(), BodyError> {
    let data_of = |line: &str| -> Option<String> {
        let value = line.strip_prefix("data")?;
        if value.is_empty() {
            return Some(String::new());
        }
        let value = value.strip_prefix(':')?;
        Some(value.strip_prefix(' ').unwrap_or(value).to_owned())
    };
    let data: Vec<String> = lines.iter().filter_map(|l| data_of(l)).collect();
    let mut data_written = false;
    for line in lines {
        if data_of(line).is_some() {
            if data_written {
                continue;
            }
            data_written = true;
            let joined = data.join("\n");
            let masked = profile.mask_value(
                &Field::Unknown,
                ValueType::Text,
                Cow::Borrowed(joined.as_bytes()),
                counts,
            )?;
            let masked = masked.unwrap_or_default();
            let masked = String::from_utf8_lossy(&masked);
            for part in masked.split(['\r', '\n']) {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(part.as_bytes());
                out.push(b'\n');
            }
        } else {
            let masked = profile.mask_value(
                &Field::Unknown,
                ValueType::Text,
                Cow::Borrowed(line.as_bytes()),
                counts,
            )?;
            let masked = masked.unwrap_or_default();
            // A replacement never holds a line break; should one appear, it must not start
            // a field of its own.
            for b in masked.iter() {
                out.push(if *b == b'\r' || *b == b'\n' { b' ' } else { *b });
            }
            out.push(b'\n');
        }
    }
    Ok(())
}

// === bodies ===

type Done = Box<dyn FnOnce(BodyReport) + Send + 'static>;

/// Calls `done` exactly once: when the body ends, fails, or is dropped before either.
struct Reporter {
    // A mutex only so that bodies holding it are `Sync`; it is taken once.
    done: Mutex<Option<Done>>,
    report: BodyReport,
}

impl Reporter {
    fn new(done: impl FnOnce(BodyReport) + Send + 'static) -> Self {
        Self {
            done: Mutex::new(Some(Box::new(done))),
            report: BodyReport::default(),
        }
    }

    fn end(&mut self, error: Option<String>) {
        let done = self
            .done
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(done) = done {
            let mut report = std::mem::take(&mut self.report);
            report.error = error;
            done(report);
        }
    }

    fn ended(&mut self) -> bool {
        self.done
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.end(Some("response body dropped before its end".to_owned()));
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    Ended,
}

pin_project! {
    /// A response body masked while it streams: each data frame from the upstream goes
    /// through the [`BodyMasker`]; trailers are masked like headers and sent after the last
    /// data. An error (from the upstream or from masking) ends the body with that error.
    /// `done` is called exactly once, with the report, when the body ends, fails or is
    /// dropped.
    pub struct MaskedBody<B> {
        #[pin]
        inner: B,
        masker: BodyMasker,
        reporter: Reporter,
        trailers: Option<HeaderMap>,
        phase: Phase,
    }
}

impl<B> std::fmt::Debug for MaskedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedBody")
            .field("masker", &self.masker)
            .field("reporter", &self.reporter)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<B> MaskedBody<B> {
    /// Masks `inner` with `masker`; `done` receives the report.
    pub fn new(
        inner: B,
        masker: BodyMasker,
        done: impl FnOnce(BodyReport) + Send + 'static,
    ) -> Self {
        Self {
            inner,
            masker,
            reporter: Reporter::new(done),
            trailers: None,
            phase: Phase::Streaming,
        }
    }
}

impl<B> Body for MaskedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        loop {
            if *this.phase == Phase::Ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    *this.phase = Phase::Ended;
                    let e = BodyError::of_inner(e.into());
                    this.reporter.end(Some(e.to_string()));
                    return Poll::Ready(Some(Err(e)));
                }
                None => match end(this.masker, this.reporter, this.phase) {
                    Some(r) => return Poll::Ready(Some(r)),
                    None => continue,
                },
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    let report = &mut this.reporter.report;
                    report.bytes_in = report.bytes_in.saturating_add(data.len() as u64);
                    match this.masker.push(&data, &mut report.masked) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => {
                            report.bytes_out = report.bytes_out.saturating_add(out.len() as u64);
                            if this.inner.is_end_stream() {
                                // The last chunk: finish now, so the client gets the body's
                                // end in the same frame (one write, not two).
                                return Poll::Ready(Some(
                                    match end(this.masker, this.reporter, this.phase) {
                                        None => Ok(Frame::data(out)),
                                        Some(Ok(last)) => {
                                            let last = last.into_data().unwrap_or_default();
                                            let mut both = bytes::BytesMut::with_capacity(
                                                out.len() + last.len(),
                                            );
                                            both.extend_from_slice(&out);
                                            both.extend_from_slice(&last);
                                            Ok(Frame::data(both.freeze()))
                                        }
                                        Some(Err(e)) => Err(e),
                                    },
                                ));
                            }
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        Err(e) => {
                            *this.phase = Phase::Ended;
                            this.reporter.end(Some(e.to_string()));
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
                Err(frame) => frame,
            };
            if let Ok(mut trailers) = frame.into_trailers() {
                this.masker
                    .mask_trailers(&mut trailers, &mut this.reporter.report.masked);
                match end(this.masker, this.reporter, this.phase) {
                    // The last data goes first; the trailers follow on the next poll.
                    Some(Ok(data)) => {
                        *this.trailers = Some(trailers);
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None => return Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                }
            }
            // Frames of other kinds carry nothing for the client of a masked route.
        }
    }

    fn is_end_stream(&self) -> bool {
        self.phase == Phase::Ended && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The upstream body ended: finish masking and report. Returns the last data frame, the
/// error, or — when nothing is left — the trailers or the end.
fn end(
    masker: &mut BodyMasker,
    reporter: &mut Reporter,
    phase: &mut Phase,
) -> Option<Result<Frame<Bytes>, BodyError>> {
    *phase = Phase::Ended;
    match masker.finish(&mut reporter.report.masked) {
        Ok(out) => {
            let report = &mut reporter.report;
            report.bytes_out = report.bytes_out.saturating_add(out.len() as u64);
            reporter.end(None);
            if out.is_empty() {
                None
            } else {
                Some(Ok(Frame::data(out)))
            }
        }
        Err(e) => {
            reporter.end(Some(e.to_string()));
            Some(Err(e))
        }
    }
}

pin_project! {
    /// A body passed through untouched (an unmasked route), with the same reporting as
    /// [`MaskedBody`]: `done` is called exactly once with the bytes that went through.
    pub struct CountingBody<B: Body> {
        #[pin]
        inner: B,
        reporter: Reporter,
    }

    impl<B: Body> PinnedDrop for CountingBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A body that is at its end when dropped unpolled (an empty body, a HEAD
            // response) ended normally.
            if !this.reporter.ended() && this.inner.is_end_stream() {
                this.reporter.end(None);
            }
        }
    }
}

impl<B: Body> std::fmt::Debug for CountingBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingBody")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl<B: Body> CountingBody<B> {
    /// Passes `inner` through; `done` receives the report.
    pub fn new(inner: B, done: impl FnOnce(BodyReport) + Send + 'static) -> Self {
        Self {
            inner,
            reporter: Reporter::new(done),
        }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    let report = &mut this.reporter.report;
                    report.bytes_in = report.bytes_in.saturating_add(n);
                    report.bytes_out = report.bytes_out.saturating_add(n);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let e = BodyError::of_inner(e.into());
                this.reporter.end(Some(e.to_string()));
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.reporter.end(None);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One answer of a [`StreamCheck`]: `Ok` to go on, `Err(reason)` to cut the response.
pub type StreamVerdict = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Asks whether a response may go on streaming.
pub type StreamCheck = Arc<dyn Fn() -> StreamVerdict + Send + Sync>;

/// The periodic [`StreamCheck`] of an [`Until`] body.
struct Recheck {
    every: std::time::Duration,
    /// When the next check is due.
    next: std::time::Instant,
    check: StreamCheck,
    running: Option<StreamVerdict>,
}

impl Recheck {
    /// Whether the body may go on at `now`: `Ready(Err(reason))` once a check refuses,
    /// `Pending` while a due check runs (its future wakes the body's task).
    fn poll_go_on(
        &mut self,
        cx: &mut Context<'_>,
        now: std::time::Instant,
    ) -> Poll<Result<(), String>> {
        if self.running.is_none() {
            if now < self.next {
                return Poll::Ready(Ok(()));
            }
            self.running = Some((self.check)());
        }
        let Some(running) = self.running.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let answer = ready!(running.as_mut().poll(cx));
        self.running = None;
        self.next = std::time::Instant::now() + self.every;
        Poll::Ready(answer)
    }
}

pin_project! {
    /// A body that is cut, with [`BodyError::Cut`], once it is past a deadline or a
    /// periodic check refuses it: a response streamed under a credential or grant that
    /// expires, or that policy no longer allows, does not outlive it. Both are looked at
    /// whenever the body has more to send, before it is sent. A body that has sent a frame
    /// and then waits for its next one (an idle event stream) arms one timer, for the
    /// deadline or the next check, so that it is cut then rather than at its next frame;
    /// a body that arrives without waiting never creates one. The client sees the response
    /// break off (HTTP/1.1: the connection closes before the body's end; HTTP/2: the stream
    /// is reset), never a clean end.
    pub struct Until<B> {
        #[pin]
        inner: B,
        deadline: Option<(std::time::Instant, String)>,
        recheck: Option<Recheck>,
        cut: bool,
        // Whether a frame went out: only then does waiting for the next one arm `idle`.
        sent: bool,
        // Wakes an idle body at its deadline or next check.
        idle: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<B> std::fmt::Debug for Until<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Until")
            .field("deadline", &self.deadline)
            .field("recheck", &self.recheck.as_ref().map(|r| r.every))
            .field("cut", &self.cut)
            .finish_non_exhaustive()
    }
}

impl<B> Until<B> {
    /// `inner`, cut once past `at` (if any), for the reason given with it.
    pub fn new(inner: B, at: Option<(std::time::Instant, String)>) -> Self {
        Self {
            inner,
            deadline: at,
            recheck: None,
            cut: false,
            sent: false,
            idle: None,
        }
    }

    /// When an idle body must be looked at again: its deadline, or its next check (a check
    /// asked for with no interval is left to the next frame), whichever comes first.
    fn wake_at(
        deadline: Option<&(std::time::Instant, String)>,
        recheck: Option<&Recheck>,
    ) -> Option<std::time::Instant> {
        let check = recheck.filter(|r| !r.every.is_zero()).map(|r| r.next);
        match (deadline.map(|d| d.0), check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Also asks `check`, when the body has more to send and the last answer is `every`
    /// old (first `every` after this), and cuts the body when the answer is a refusal.
    #[must_use]
    pub fn rechecked(mut self, every: std::time::Duration, check: StreamCheck) -> Self {
        self.recheck = Some(Recheck {
            every,
            next: std::time::Instant::now() + every,
            check,
            running: None,
        });
        self
    }
}

impl<B> Body for Until<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        // The instant a timer that fired in this call was set for: it counts as come, so
        // that what it was armed for is done and the loop cannot spin on it.
        let mut fired: Option<std::time::Instant> = None;
        loop {
            if *this.cut {
                return Poll::Ready(None);
            }
            let limited = this.deadline.is_some() || this.recheck.is_some();
            if limited {
                let now = std::time::Instant::now();
                let now = fired.map_or(now, |f| now.max(f));
                if let Some((at, reason)) = this.deadline.as_mut()
                    && now >= *at
                {
                    *this.cut = true;
                    *this.idle = None;
                    return Poll::Ready(Some(Err(BodyError::Cut(std::mem::take(reason)))));
                }
                if let Some(r) = this.recheck.as_mut()
                    && let Err(reason) = ready!(r.poll_go_on(cx, now))
                {
                    *this.cut = true;
                    *this.idle = None;
                    return Poll::Ready(Some(Err(BodyError::Cut(reason))));
                }
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    *this.sent = true;
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(BodyError::of_inner(e.into()))));
                }
                Poll::Ready(None) => {
                    *this.idle = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            // Waiting for the next frame: a stream that has started is woken at its
            // deadline or next check, to be cut then if it must be.
            let wake = if limited && *this.sent {
                Self::wake_at(this.deadline.as_ref(), this.recheck.as_ref())
            } else {
                None
            };
            let Some(at) = wake else {
                return Poll::Pending;
            };
            let at = tokio::time::Instant::from_std(at);
            let idle = this
                .idle
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if idle.deadline() != at {
                idle.as_mut().reset(at);
            }
            if idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Due: looked at again from the top.
            fired = Some(at.into_std());
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn shape(ct: &str) -> Option<Shape> {
        shape_of(&headers(&[("content-type", ct)])).ok()
    }

    /// A body that sends `tick`, again and again.
    fn ticking() -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        let frames =
            futures_util::stream::repeat_with(|| Ok(Frame::data(Bytes::from_static(b"tick"))));
        http_body_util::StreamBody::new(frames)
    }

    #[tokio::test]
    async fn a_body_past_its_deadline_is_cut_once() {
        use http_body_util::BodyExt;
        let past = std::time::Instant::now()
            .checked_sub(std::time::Duration::from_millis(1))
            .unwrap();
        let mut body = std::pin::pin!(Until::new(
            ticking(),
            Some((past, "the grant expired".into()))
        ));
        match body.frame().await {
            Some(Err(BodyError::Cut(why))) => assert_eq!(why, "the grant expired"),
            other => panic!("{other:?}"),
        }
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
        // A cut keeps its kind through the masker's and the counter's reading of it.
        let cut: BoxError = Box::new(BodyError::Cut("x".into()));
        assert!(matches!(BodyError::of_inner(cut), BodyError::Cut(_)));
        let other: BoxError = "reset".into();
        assert!(matches!(BodyError::of_inner(other), BodyError::Upstream(_)));
    }

    #[tokio::test]
    async fn a_body_is_cut_when_a_check_refuses_it() {
        use http_body_util::BodyExt;
        use std::sync::atomic::{AtomicU32, Ordering};
        let asked = Arc::new(AtomicU32::new(0));
        let counter = asked.clone();
        // Allowed at the first check, refused at the second.
        let check: StreamCheck = Arc::new(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::task::yield_now().await;
                if n == 0 {
                    Ok(())
                } else {
                    Err("the grant was revoked".to_owned())
                }
            })
        });
        // Due at every frame: the first goes out after an allow, the second is refused.
        let mut body =
            std::pin::pin!(Until::new(ticking(), None).rechecked(std::time::Duration::ZERO, check));
        assert!(body.frame().await.unwrap().is_ok());
        match body.frame().await {
            Some(Err(BodyError::Cut(why))) => assert_eq!(why, "the grant was revoked"),
            other => panic!("{other:?}"),
        }
        assert!(body.frame().await.is_none());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    /// A body that sends one `tick` and then waits for ever, as an idle event stream does.
    fn one_tick_then_idle() -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        let first = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"tick")))
        });
        let frames = futures_util::StreamExt::chain(first, futures_util::stream::pending());
        http_body_util::StreamBody::new(frames)
    }

    #[tokio::test]
    async fn an_idle_body_is_cut_at_its_deadline_not_at_its_next_frame() {
        use http_body_util::BodyExt;
        let at = std::time::Instant::now() + std::time::Duration::from_millis(50);
        let mut body = std::pin::pin!(Until::new(
            one_tick_then_idle(),
            Some((at, "the grant expired".into()))
        ));
        assert!(body.frame().await.unwrap().is_ok());
        // No frame ever comes: without the timer this would wait for ever.
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
            .await
            .expect("the idle body was never cut");
        match next {
            Some(Err(BodyError::Cut(why))) => assert_eq!(why, "the grant expired"),
            other => panic!("{other:?}"),
        }
        assert!(std::time::Instant::now() >= at);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn an_idle_body_is_checked_on_time_and_cut_when_refused() {
        use http_body_util::BodyExt;
        use std::sync::atomic::{AtomicU32, Ordering};
        let asked = Arc::new(AtomicU32::new(0));
        let counter = asked.clone();
        // Allowed twice, refused at the third check.
        let check: StreamCheck = Arc::new(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < 2 {
                    Ok(())
                } else {
                    Err("revoked".to_owned())
                }
            })
        });
        let mut body = std::pin::pin!(
            Until::new(one_tick_then_idle(), None)
                .rechecked(std::time::Duration::from_millis(20), check)
        );
        assert!(body.frame().await.unwrap().is_ok());
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
            .await
            .expect("the idle body was never checked");
        match next {
            Some(Err(BodyError::Cut(why))) => assert_eq!(why, "revoked"),
            other => panic!("{other:?}"),
        }
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_waiting_for_its_first_frame_arms_no_timer() {
        use http_body_util::BodyExt;
        let at = std::time::Instant::now() + std::time::Duration::from_millis(20);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let late = futures_util::stream::once(async move {
            let _ = rx.await;
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"late")))
        });
        let mut body = Box::pin(Until::new(
            http_body_util::StreamBody::new(late),
            Some((at, "expired".into())),
        ));
        // Nothing has gone out: waiting for the first frame arms nothing; the deadline is
        // looked at when that frame is ready.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert!(body.idle.is_none());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tx.send(()).unwrap();
        match body.frame().await {
            Some(Err(BodyError::Cut(why))) => assert_eq!(why, "expired"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_body_without_a_deadline_or_done_before_it_is_untouched() {
        use http_body_util::BodyExt;
        let later = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        for at in [None, Some((later, "never".to_owned()))] {
            let body = Until::new(
                http_body_util::Full::new(Bytes::from_static(b"all of it")),
                at,
            );
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"all of it");
        }
        // A body done before its first check is never checked.
        let never: StreamCheck = Arc::new(|| panic!("checked a body that had ended"));
        let body = Until::new(
            http_body_util::Full::new(Bytes::from_static(b"short")),
            None,
        )
        .rechecked(std::time::Duration::from_secs(1), never);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"short");
    }

    #[test]
    fn media_types() {
        assert_eq!(shape("application/json"), Some(Shape::Json));
        assert_eq!(
            shape(" Application/Problem+JSON ;charset=UTF-8"),
            Some(Shape::Json)
        );
        assert_eq!(
            shape("application/json; charset=\"utf-8\""),
            Some(Shape::Json)
        );
        assert_eq!(shape("application/json; charset=iso-8859-1"), None);
        assert_eq!(shape("application/x-ndjson"), Some(Shape::JsonLines));
        assert_eq!(
            shape("text/plain"),
            Some(Shape::Text {
                utf8: true,
                markup: false
            })
        );
        for ct in [
            "text/html",
            "text/xml",
            "application/xml",
            "application/rss+xml",
        ] {
            assert!(
                matches!(shape(ct), Some(Shape::Text { markup: true, .. })),
                "{ct}"
            );
        }
        assert_eq!(
            shape("text/plain; charset=latin1"),
            Some(Shape::Text {
                utf8: false,
                markup: false
            })
        );
        assert_eq!(shape("text/plain; charset=utf-7"), None);
        assert_eq!(
            shape("application/soap+xml"),
            Some(Shape::Text {
                utf8: true,
                markup: true
            })
        );
        assert_eq!(
            shape("application/x-www-form-urlencoded"),
            Some(Shape::Form)
        );
        assert_eq!(
            shape("application/x-www-form-urlencoded; charset=UTF-8"),
            Some(Shape::Form)
        );
        assert_eq!(
            shape("application/x-www-form-urlencoded; charset=latin1"),
            None
        );
        assert_eq!(shape("application/octet-stream"), None);
        assert_eq!(shape("application/jsonx"), None);
        assert_eq!(shape("json"), None);
        assert_eq!(shape(""), None);
    }

    #[test]
    fn refusals_do_not_echo_what_could_be_data() {
        let msg = |ct: &str| {
            shape_of(&headers(&[("content-type", ct)]))
                .unwrap_err()
                .message
        };
        assert!(msg("image/png").contains("\"image/png\""));
        let m = msg("application/4111111111111111");
        assert!(!m.contains("4111"), "{m}");
        let m = msg("x/alice@example.com");
        assert!(!m.contains("alice"), "{m}");
    }

    #[test]
    fn form_names_and_values_decode_and_encode_as_browsers_do() {
        assert_eq!(form_decode(b"a+b%20c%2B").unwrap(), "a b c+");
        assert!(matches!(
            form_decode(b"plain").unwrap(),
            Cow::Borrowed("plain")
        ));
        assert_eq!(form_decode(b"%E2%82%AC").unwrap(), "€");
        for bad in [&b"%"[..], b"%4", b"%4g", b"%FF", b"\xff"] {
            assert!(form_decode(bad).is_err(), "{bad:?}");
        }
        let mut out = Vec::new();
        form_encode("a b+c/ä*-._~", &mut out);
        assert_eq!(out, b"a+b%2Bc%2F%C3%A4*-._%7E");
    }

    #[test]
    fn form_pairs_are_masked_by_name_rules() {
        let p = Profile::builder("t")
            .rule(wirewarden_mask::FieldRule::new(
                wirewarden_mask::Selector::json_path("$.token").unwrap(),
                wirewarden_mask::Strategy::redact(),
            ))
            .build()
            .unwrap();
        let mut out = Vec::new();
        let mut counts = MaskedCounts::new();
        mask_form(&p, b"TOKEN=abc&token&id=7&", &mut out, &mut counts).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TOKEN=%5BREDACTED%5D&token=%5BREDACTED%5D&id=7&"
        );
        assert_eq!(counts.0["json_path:$.token"], 2);
    }

    #[test]
    fn event_boundaries() {
        assert_eq!(complete_events(b""), 0);
        assert_eq!(complete_events(b"data: a\n"), 0);
        assert_eq!(complete_events(b"data: a\n\n"), 9);
        assert_eq!(complete_events(b"data: a\n\ndata: b\n"), 9);
        assert_eq!(complete_events(b"data: a\r\n\r\nx"), 11);
        assert_eq!(complete_events(b"data: a\r\rx"), 9);
        // A CR at the end may be the start of CRLF: wait.
        assert_eq!(complete_events(b"data: a\r\n\r"), 0);
        assert_eq!(complete_events(b"\n"), 1);
    }

    #[test]
    fn events_are_masked_with_their_data_joined() {
        let p = Profile::builder("t").build().unwrap();
        let mut out = Vec::new();
        let mut counts = MaskedCounts::new();
        mask_events(
            &p,
            b"id: 7\r\ndata:alice@example.com\r\ndata\rdata:  x\n\n",
            &mut out,
            &mut counts,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id: 7\ndata: [REDACTED]\ndata: \ndata:  x\n\n"
        );
        assert_eq!(counts.0["email"], 1);
        let mut out = Vec::new();
        assert!(mask_events(&p, b"data: \xff\n\n", &mut out, &mut counts).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn bodies_are_send_and_sync() {
        // So that an embedder may box them as `BoxBody`, not only `UnsyncBoxBody`.
        fn check<T: Send + Sync>() {}
        check::<MaskedBody<http_body_util::Full<Bytes>>>();
        check::<CountingBody<http_body_util::Full<Bytes>>>();
        check::<BodyMasker>();
    }

    #[test]
    fn etags() {
        let mut h = headers(&[("etag", "\"v1\"")]);
        weaken_etag(&mut h);
        assert_eq!(h["etag"], "W/\"v1\"");
        weaken_etag(&mut h);
        assert_eq!(h["etag"], "W/\"v1\"");
    }

    #[test]
    fn content_length() {
        assert_eq!(
            declared_length(&headers(&[("content-length", "0")])),
            Some(0)
        );
        assert_eq!(
            declared_length(&headers(&[("content-length", "12")])),
            Some(12)
        );
        assert_eq!(declared_length(&headers(&[("content-length", "x")])), None);
        assert_eq!(
            declared_length(&headers(&[
                ("content-length", "0"),
                ("content-length", "0")
            ])),
            None
        );
        assert_eq!(declared_length(&HeaderMap::new()), None);
    }

    #[test]
    fn clean_headers_are_not_rebuilt() {
        let p = Profile::builder("t").build().unwrap();
        let mut h = headers(&[("x-a", "1"), ("x-b", "two"), ("x-a", "3")]);
        let before = h.clone();
        let mut counts = MaskedCounts::new();
        mask_headers(&p, &mut h, &mut counts);
        assert_eq!(h, before);
        assert!(counts.is_empty());
    }
}
