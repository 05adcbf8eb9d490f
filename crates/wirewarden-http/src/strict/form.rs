//! The method override a form body carries: a `_method` field.
//!
//! Rails (`Rack::MethodOverride`), Laravel and Symfony (`http_method_override`), Spring's
//! `HiddenHttpMethodFilter` and Express `method-override` with a body getter take the method
//! from a `_method` field of a `POST` form, so `POST /customers/1` with `_method=DELETE` would
//! be decided as a `POST` and carried out as a `DELETE`. [`FormScanner`] reads a request
//! body as it streams, without copying it, and stops at the first field so named; the caller
//! ([`crate::inspect`]) then ends the body with an error, so the upstream never receives a
//! complete request, and answers `400 method_override`.
//!
//! A field name is read the way those servers read it ([`NameMatcher`]): percent-decoded
//! (`%5Fmethod`, and IIS's `%u005F`), `+` as a space, ASCII case ignored, leading spaces
//! dropped, `.`, ` ` and `[` first read as `_` (PHP), a bracketed first segment
//! (`[_method]`, read as `_method` by the `qs` parser Express uses), anything from a `[` or
//! a NUL after the name (an array index, a C string's end), and `_method_override` too. The
//! decision on a name is made as soon as its first bytes say enough (`{"a":…` is no override
//! after one byte); [`FormScanner::feed`] says how many bytes at the end of what it was fed
//! belong to a name still undecided, and the caller holds exactly those back, so that the
//! bytes completing a body are never released before the scanner has seen the body's end.
//!
//! Which bodies are forms ([`FormScanner::for_request`]): `application/x-www-form-urlencoded`,
//! a body without `Content-Type` (Rack parses it as a form), and every `multipart/*` (Rack
//! parses `multipart/mixed` and `multipart/related` as well as `multipart/form-data`). In a
//! multipart body, each part's header block is read for a `name` parameter anywhere in it
//! (quoted, with backslash escapes or without, or RFC 2231 `name*=utf-8''%5Fmethod`); a
//! delimiter is looked for anywhere in the body, not only at a line start, and a header
//! block may end in a bare LF blank line, so that a lenient multipart parser finds no part
//! the scanner missed. Bodies whose bytes this reading would not see as the server does are
//! refused instead: a form with a content coding, a charset that is not ASCII-compatible
//! (a UTF-16 form spells `_method` in bytes no ASCII reading sees), a multipart type without
//! exactly one usable boundary, and a part header block over [`MAX_PART_HEAD`] bytes.

use http::StatusCode;
use http::header::{self, HeaderMap};

use crate::Rejection;

/// Most bytes of one multipart part's header block (from its delimiter to the blank line),
/// and most bytes of a urlencoded field name left undecided (`_method` and a run of
/// spaces, say): what the caller holds back stays bounded.
pub const MAX_PART_HEAD: usize = 16 * 1024;

/// Longest multipart boundary accepted (RFC 2046 allows 70 characters).
const MAX_BOUNDARY: usize = 200;

/// The refusal for a form field that would override the method.
pub(crate) fn field_refused() -> Rejection {
    Rejection::new(
        StatusCode::BAD_REQUEST,
        "method_override",
        "form field _method would make the upstream act on another method than the one decided on",
    )
}

fn unreadable_form(message: impl Into<String>) -> Rejection {
    Rejection::new(StatusCode::BAD_REQUEST, "malformed_request", message)
}

fn unsupported_form(message: impl Into<String>) -> Rejection {
    Rejection::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_form",
        message,
    )
}

// === names ===

/// Where a [`NameMatcher`] is in a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    /// Before the first character that is not a space.
    Lead,
    /// After a leading `[`: `[method` (PHP) or `[_method]` (`qs`).
    Bracket,
    /// `n` letters of `method` matched.
    Word(u8),
    /// `method` matched, then spaces.
    Trail,
    /// `method` and a separator matched, then `n` letters of `override`.
    Over(u8),
    /// The name overrides the method, whatever follows.
    Hit,
    /// The name does not override the method, whatever follows.
    Miss,
}

/// Percent-decoding state inside a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After `%`.
    Percent,
    /// After `%` and one hex digit.
    Hex(u8),
    /// After `%u` and `n` hex digits making `acc`.
    Unicode {
        n: u8,
        acc: u32,
    },
}

/// Decides, byte by byte, whether a form field name (percent-encoded, as on the wire) names
/// the method override. See the module documentation for the readings it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameMatcher {
    name: Name,
    escape: Escape,
}

impl Default for NameMatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl NameMatcher {
    /// A matcher at the start of a name.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            name: Name::Lead,
            escape: Escape::None,
        }
    }

    /// Whether the name overrides the method whatever follows.
    #[must_use]
    pub fn is_hit(&self) -> bool {
        self.name == Name::Hit
    }

    /// Whether the bytes so far leave the name undecided.
    #[must_use]
    pub fn is_undecided(&self) -> bool {
        !matches!(self.name, Name::Hit | Name::Miss)
    }

    /// Reads the next byte of the name as it is on the wire.
    pub fn push(&mut self, b: u8) {
        if !self.is_undecided() {
            return;
        }
        let hex = |c: u8| char::from(c).to_digit(16);
        match (self.escape, b) {
            (Escape::None, b'%') => self.escape = Escape::Percent,
            (Escape::None, b'+') => self.decoded(b' '),
            (Escape::None, b) => self.decoded(b),
            (Escape::Percent, b'u' | b'U') => self.escape = Escape::Unicode { n: 0, acc: 0 },
            (Escape::Percent, b) => match hex(b) {
                Some(h) => self.escape = Escape::Hex(u8::try_from(h).unwrap_or(0)),
                None => self.malformed(),
            },
            (Escape::Hex(hi), b) => match hex(b) {
                Some(lo) => {
                    self.escape = Escape::None;
                    self.decoded(
                        hi.wrapping_mul(16)
                            .wrapping_add(u8::try_from(lo).unwrap_or(0)),
                    );
                }
                None => self.malformed(),
            },
            (Escape::Unicode { n, acc }, b) => match hex(b) {
                Some(d) if n < 3 => {
                    self.escape = Escape::Unicode {
                        n: n.saturating_add(1),
                        acc: acc.wrapping_mul(16).wrapping_add(d),
                    }
                }
                Some(d) => {
                    self.escape = Escape::None;
                    let c = acc.wrapping_mul(16).wrapping_add(d);
                    // Only ASCII can spell the name; anything else ends the match.
                    self.decoded(u8::try_from(c).ok().filter(u8::is_ascii).unwrap_or(0x80));
                }
                None => self.malformed(),
            },
        }
    }

    /// Reads the next character of a name whose escapes are already decoded (a JSON key):
    /// no percent-decoding, `+` is itself. Anything not ASCII is to be passed as a byte of
    /// `0x80` or above.
    pub fn push_decoded(&mut self, c: u8) {
        if self.is_undecided() {
            self.decoded(c);
        }
    }

    /// Reads each byte of `bytes`.
    pub fn push_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if !self.is_undecided() {
                return;
            }
            self.push(b);
        }
    }

    /// Ends the name; whether it overrides the method.
    #[must_use]
    pub fn finish(mut self) -> bool {
        if self.escape != Escape::None {
            self.malformed();
        }
        matches!(
            self.name,
            Name::Hit | Name::Word(6) | Name::Trail | Name::Over(8)
        )
    }

    /// A malformed escape stays as it is, and a literal `%` is in no spelling of the name.
    fn malformed(&mut self) {
        self.escape = Escape::None;
        self.name = Name::Miss;
    }

    fn decoded(&mut self, c: u8) {
        const METHOD: &[u8; 6] = b"method";
        const OVERRIDE: &[u8; 8] = b"override";
        let c = c.to_ascii_lowercase();
        self.name = match (self.name, c) {
            (Name::Lead, b' ') => Name::Lead,
            (Name::Lead, b'_' | b'.') => Name::Word(0),
            (Name::Lead, b'[') => Name::Bracket,
            (Name::Bracket, b'_' | b'.' | b' ') => Name::Word(0),
            (Name::Bracket, b'm') => Name::Word(1),
            (Name::Word(6), b'[' | b']' | 0) | (Name::Trail, b'[' | 0) => Name::Hit,
            (Name::Word(6), b' ') | (Name::Trail, b' ') => Name::Trail,
            (Name::Word(6), b'_' | b'.') => Name::Over(0),
            (Name::Word(n), c) if METHOD.get(usize::from(n)) == Some(&c) => {
                Name::Word(n.saturating_add(1))
            }
            (Name::Over(8), b'[' | b']' | 0) => Name::Hit,
            (Name::Over(8), b' ') => Name::Trail,
            (Name::Over(n), c) if OVERRIDE.get(usize::from(n)) == Some(&c) => {
                Name::Over(n.saturating_add(1))
            }
            _ => Name::Miss,
        };
    }
}

/// Whether the percent-encoded form field name `name` names the method override.
#[must_use]
pub fn is_method_field(name: &[u8]) -> bool {
    let mut m = NameMatcher::new();
    m.push_all(name);
    m.finish()
}

// === the scanner ===

/// Scans a request body that a server would read as a form for a method override field.
#[derive(Debug, Clone)]
pub struct FormScanner {
    /// Bytes fed so far.
    offset: u64,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    UrlEncoded(UrlEncoded),
    Multipart(Multipart),
}

#[derive(Debug, Clone)]
struct UrlEncoded {
    /// In a value: nothing to look at until the next separator.
    in_value: bool,
    name: NameMatcher,
    /// Where the current name started, in stream offsets.
    name_start: u64,
}

#[derive(Debug, Clone)]
struct Multipart {
    /// `--` and the boundary.
    delimiter: Vec<u8>,
    /// The last bytes fed (fewer than the delimiter), for a delimiter split across chunks.
    carry: Vec<u8>,
    /// The header block of the part being read, from just after its delimiter.
    head: Option<Vec<u8>>,
    /// Where that block's delimiter started, in stream offsets.
    head_start: u64,
}

impl FormScanner {
    /// The scanner for a request with these headers, or `None` when a server would not read
    /// its body as a form.
    ///
    /// # Errors
    /// `415 unsupported_form` for a form with a content coding or a charset that is not
    /// ASCII-compatible, `400 malformed_request` for more than one `Content-Type` or a
    /// multipart type without exactly one boundary of at most 200 bytes.
    pub fn for_request(headers: &HeaderMap) -> Result<Option<Self>, Rejection> {
        let mut values = headers.get_all(header::CONTENT_TYPE).iter();
        let kind = match (values.next(), values.next()) {
            (None, _) => Kind::UrlEncoded(UrlEncoded::new()),
            (Some(_), Some(_)) => {
                return Err(unreadable_form("more than one Content-Type"));
            }
            (Some(v), None) => {
                let text = std::str::from_utf8(v.as_bytes())
                    .map_err(|_| unreadable_form("Content-Type is not UTF-8"))?;
                let mut params = text.split(';');
                let essence = params
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase();
                let mut charsets = Vec::new();
                let mut boundaries = Vec::new();
                let mut extended_boundary = false;
                for p in params {
                    let Some((k, v)) = p.split_once('=') else {
                        continue;
                    };
                    let k = k.trim().to_ascii_lowercase();
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v);
                    match k.as_str() {
                        "charset" | "charset*" => charsets.push(v.to_ascii_lowercase()),
                        "boundary" => boundaries.push(v.to_owned()),
                        // RFC 2231 would give another boundary than the one read here.
                        "boundary*" => extended_boundary = true,
                        _ => {}
                    }
                }
                let kind = if essence == "application/x-www-form-urlencoded" {
                    Kind::UrlEncoded(UrlEncoded::new())
                } else if essence.starts_with("multipart/") {
                    if extended_boundary {
                        return Err(unreadable_form("an extended multipart boundary"));
                    }
                    let [boundary] = boundaries.as_slice() else {
                        return Err(unreadable_form(
                            "a multipart body needs exactly one boundary",
                        ));
                    };
                    // RFC 2046 `bchars`: a quote, `;` or a backslash left over means the
                    // parameter was not read as a server would read it.
                    let bchar = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
                    if boundary.is_empty()
                        || boundary.len() > MAX_BOUNDARY
                        || !boundary.bytes().all(bchar)
                    {
                        return Err(unreadable_form(format!(
                            "a multipart boundary must be 1 to {MAX_BOUNDARY} of the characters RFC 2046 allows"
                        )));
                    }
                    let mut delimiter = b"--".to_vec();
                    delimiter.extend_from_slice(boundary.as_bytes());
                    Kind::Multipart(Multipart {
                        delimiter,
                        carry: Vec::new(),
                        head: None,
                        head_start: 0,
                    })
                } else {
                    return Ok(None);
                };
                charsets
                    .iter()
                    .try_fold(kind, |kind, c| kind.check_charset(c))?
            }
        };
        let coded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
            v.to_str().map_or(true, |v| {
                v.split(',')
                    .any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"))
            })
        });
        if coded {
            return Err(unsupported_form(
                "a form body with a content coding cannot be checked for a method override",
            ));
        }
        Ok(Some(Self { offset: 0, kind }))
    }

    /// Reads the next bytes of the body. Returns how many bytes at the end of everything fed
    /// so far belong to a field name not decided yet; the caller must not release those
    /// before a later call returns a smaller number (or [`finish`](Self::finish) succeeds).
    /// The number may cover bytes of earlier chunks already released: releasing the start
    /// of a name is harmless, as long as the body's last bytes are held.
    ///
    /// # Errors
    /// `400 method_override` at the first method override field; `400 malformed_request`
    /// for a multipart part header block, or an undecided field name, over
    /// [`MAX_PART_HEAD`] bytes. The scanner is not
    /// to be fed after an error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<usize, Rejection> {
        let start = self.offset;
        self.offset = self
            .offset
            .saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        let held_from = match &mut self.kind {
            Kind::UrlEncoded(u) => u.feed(start, chunk)?,
            Kind::Multipart(m) => m.feed(start, chunk)?,
        };
        let undecided = held_from.map_or(0, |from| {
            usize::try_from(self.offset.saturating_sub(from)).unwrap_or(usize::MAX)
        });
        // A multipart header block has its own bound, checked as it is read.
        if matches!(self.kind, Kind::UrlEncoded(_)) && undecided > MAX_PART_HEAD {
            return Err(unreadable_form(format!(
                "a form field name undecided after {MAX_PART_HEAD} bytes"
            )));
        }
        Ok(undecided)
    }

    /// Ends the body.
    ///
    /// # Errors
    /// `400 method_override` when the last field name, ended by the body's end, is the
    /// method override (a multipart header block the body ends in is read as it is).
    pub fn finish(&mut self) -> Result<(), Rejection> {
        match &mut self.kind {
            Kind::UrlEncoded(u) => {
                if !u.in_value && std::mem::take(&mut u.name).finish() {
                    return Err(field_refused());
                }
                u.in_value = true;
            }
            Kind::Multipart(m) => {
                if let Some(head) = m.head.take()
                    && head_names_method(&head)
                {
                    return Err(field_refused());
                }
            }
        }
        Ok(())
    }
}

impl Kind {
    /// `self`, when `charset` is one whose bytes spell ASCII as ASCII does.
    fn check_charset(self, charset: &str) -> Result<Self, Rejection> {
        if is_ascii_compatible(charset) {
            Ok(self)
        } else {
            Err(unsupported_form(
                "a form in a charset that is not ASCII-compatible cannot be checked for a method override",
            ))
        }
    }
}

/// Whether `charset` (lowercase) is one whose bytes spell ASCII as ASCII does.
pub(crate) fn is_ascii_compatible(charset: &str) -> bool {
    let c = charset.trim();
    matches!(
        c,
        "utf-8"
            | "utf8"
            | "us-ascii"
            | "ascii"
            | "latin1"
            | "shift_jis"
            | "euc-jp"
            | "euc-kr"
            | "gb2312"
            | "gbk"
            | "gb18030"
            | "big5"
            | "koi8-r"
            | "koi8-u"
    ) || c.starts_with("iso-8859-")
        || c.starts_with("iso_8859-")
        || c.starts_with("windows-125")
        || c.starts_with("cp125")
}

impl UrlEncoded {
    fn new() -> Self {
        Self {
            in_value: false,
            name: NameMatcher::new(),
            name_start: 0,
        }
    }

    /// Scans `chunk`, which starts at stream offset `start`; returns where the undecided
    /// name starts, if one is.
    fn feed(&mut self, start: u64, chunk: &[u8]) -> Result<Option<u64>, Rejection> {
        let mut i = 0;
        while i < chunk.len() {
            let rest = chunk.get(i..).unwrap_or_default();
            if self.in_value || !self.name.is_undecided() {
                // Nothing to read until the next pair.
                let Some(at) = memchr::memchr2(b'&', b';', rest) else {
                    break;
                };
                i = i.saturating_add(at);
            }
            let Some(&b) = chunk.get(i) else {
                break;
            };
            match b {
                b'&' | b';' => {
                    if !self.in_value && std::mem::take(&mut self.name).finish() {
                        return Err(field_refused());
                    }
                    self.in_value = false;
                    self.name_start = start
                        .saturating_add(u64::try_from(i).unwrap_or(u64::MAX))
                        .saturating_add(1);
                }
                b'=' if !self.in_value => {
                    if std::mem::take(&mut self.name).finish() {
                        return Err(field_refused());
                    }
                    self.in_value = true;
                }
                b => {
                    if !self.in_value {
                        self.name.push(b);
                        if self.name.is_hit() {
                            return Err(field_refused());
                        }
                    }
                }
            }
            i = i.saturating_add(1);
        }
        Ok((!self.in_value && self.name.is_undecided()).then_some(self.name_start))
    }
}

impl Multipart {
    fn feed(&mut self, start: u64, chunk: &[u8]) -> Result<Option<u64>, Rejection> {
        let finder = memchr::memmem::Finder::new(&self.delimiter);
        let dlen = self.delimiter.len();
        let mut i = 0;
        // A delimiter begun at the end of the last chunk.
        if self.head.is_none() && !self.carry.is_empty() {
            let take = chunk.len().min(dlen.saturating_sub(1));
            let mut joint = self.carry.clone();
            joint.extend_from_slice(chunk.get(..take).unwrap_or_default());
            if let Some(at) = finder.find(&joint) {
                // The delimiter ends inside this chunk, `end` bytes in.
                let end = at.saturating_add(dlen).saturating_sub(self.carry.len());
                let carried = u64::try_from(self.carry.len().saturating_sub(at)).unwrap_or(0);
                self.head = Some(Vec::new());
                self.head_start = start.saturating_sub(carried);
                i = end;
            }
        }
        let old_carry = std::mem::take(&mut self.carry);
        while i < chunk.len() {
            let rest = chunk.get(i..).unwrap_or_default();
            match &mut self.head {
                Some(head) => {
                    let before = head.len();
                    let room = MAX_PART_HEAD.saturating_sub(before);
                    head.extend_from_slice(rest.get(..rest.len().min(room)).unwrap_or(rest));
                    if head.starts_with(b"--") {
                        // The close delimiter: what follows is the epilogue, still searched
                        // for delimiters.
                        i = i.saturating_add(2usize.saturating_sub(before));
                        self.head = None;
                        continue;
                    }
                    match head_end(head, before) {
                        Some(end) => {
                            let block = head.get(..end).unwrap_or_default();
                            if head_names_method(block) {
                                return Err(field_refused());
                            }
                            i = i.saturating_add(end.saturating_sub(before));
                            self.head = None;
                        }
                        None if head.len() >= MAX_PART_HEAD => {
                            return Err(unreadable_form(format!(
                                "a multipart part's headers over {MAX_PART_HEAD} bytes"
                            )));
                        }
                        None => {
                            i = chunk.len();
                        }
                    }
                }
                None => match finder.find(rest) {
                    Some(at) => {
                        self.head_start =
                            start.saturating_add(u64::try_from(i.saturating_add(at)).unwrap_or(0));
                        self.head = Some(Vec::new());
                        i = i.saturating_add(at).saturating_add(dlen);
                    }
                    None => {
                        // The last bytes seen, which may begin a delimiter; a short chunk
                        // adds to those of the chunk before.
                        let mut tail = if i == 0 {
                            old_carry.clone()
                        } else {
                            Vec::new()
                        };
                        tail.extend_from_slice(rest);
                        let keep = tail.len().min(dlen.saturating_sub(1));
                        self.carry = tail.split_off(tail.len().saturating_sub(keep));
                        i = chunk.len();
                    }
                },
            }
        }
        Ok(self.head.as_ref().map(|_| self.head_start))
    }
}

/// The end of a header block (after its blank line) in `head`, looking from a little before
/// `from` (where the newest bytes begin); a blank line is CRLF CRLF or LF LF, or mixed.
fn head_end(head: &[u8], from: usize) -> Option<usize> {
    let look = from.saturating_sub(3);
    let mut i = look;
    while let Some(at) = memchr::memchr(b'\n', head.get(i..).unwrap_or_default()) {
        let nl = i.saturating_add(at);
        let next = nl.saturating_add(1);
        match head.get(next..) {
            Some([b'\n', ..]) => return Some(next.saturating_add(1)),
            Some([b'\r', b'\n', ..]) => return Some(next.saturating_add(2)),
            _ => {}
        }
        i = next;
    }
    None
}

/// Whether a multipart part's header block has a `name` parameter that names the method
/// override, anywhere in it.
fn head_names_method(block: &[u8]) -> bool {
    let lower = block.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(lower.get(from..).unwrap_or_default(), b"name") {
        let at = from.saturating_add(at);
        from = at.saturating_add(4);
        let before = at.checked_sub(1).and_then(|p| lower.get(p)).copied();
        if !matches!(
            before,
            None | Some(b';' | b' ' | b'\t' | b'\r' | b'\n' | b':')
        ) {
            continue;
        }
        let mut j = from;
        let skip_ws = |j: &mut usize| {
            while matches!(lower.get(*j), Some(b' ' | b'\t')) {
                *j = j.saturating_add(1);
            }
        };
        skip_ws(&mut j);
        let extended = lower.get(j) == Some(&b'*');
        if extended {
            j = j.saturating_add(1);
            skip_ws(&mut j);
        }
        if lower.get(j) != Some(&b'=') {
            continue;
        }
        j = j.saturating_add(1);
        skip_ws(&mut j);
        for value in param_values(block, j) {
            if is_method_field(&value) {
                return true;
            }
            // RFC 2231: charset'language'percent-encoded.
            if let Some(tail) = value.splitn(3, |&b| b == b'\'').nth(2)
                && is_method_field(tail)
            {
                return true;
            }
        }
    }
    false
}

/// The readings of a parameter value starting at `at`: a quoted string with its backslash
/// escapes applied and as it is, or a token.
fn param_values(block: &[u8], at: usize) -> Vec<Vec<u8>> {
    let rest = block.get(at..).unwrap_or_default();
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let mut unescaped = Vec::new();
        let mut raw_end = quoted.len();
        let mut i = 0;
        while let Some(&b) = quoted.get(i) {
            match b {
                b'\\' => {
                    if let Some(&n) = quoted.get(i.saturating_add(1)) {
                        unescaped.push(n);
                    }
                    i = i.saturating_add(2);
                    continue;
                }
                b'"' | b'\r' | b'\n' => {
                    raw_end = i;
                    break;
                }
                b => unescaped.push(b),
            }
            i = i.saturating_add(1);
        }
        // As it is: up to the first quote, for a parser that knows no escapes.
        let raw_to = memchr::memchr3(b'"', b'\r', b'\n', quoted).unwrap_or(raw_end);
        vec![unescaped, quoted.get(..raw_to).unwrap_or_default().to_vec()]
    } else {
        let end = rest
            .iter()
            .position(|b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n'))
            .unwrap_or(rest.len());
        vec![rest.get(..end).unwrap_or_default().to_vec()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(content_type: Option<&str>) -> FormScanner {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        }
        FormScanner::for_request(&h).unwrap().unwrap()
    }

    /// The verdict on `body` fed whole, and checks that every split into two and into
    /// single bytes gives the same verdict, with the undecided tail never covering bytes
    /// that a later byte decided.
    fn verdict(content_type: Option<&str>, body: &[u8]) -> Result<(), &'static str> {
        let whole = {
            let mut s = scanner(content_type);
            s.feed(body).and_then(|_| s.finish()).map_err(|r| r.code)
        };
        for at in 0..=body.len() {
            let (a, b) = body.split_at(at);
            let mut s = scanner(content_type);
            let split = s
                .feed(a)
                .and_then(|_| s.feed(b))
                .and_then(|_| s.finish())
                .map_err(|r| r.code);
            assert_eq!(
                split,
                whole,
                "split at {at} of {:?}",
                String::from_utf8_lossy(body)
            );
        }
        let mut s = scanner(content_type);
        let bytewise = body
            .iter()
            .try_for_each(|b| s.feed(std::slice::from_ref(b)).map(drop))
            .and_then(|()| s.finish())
            .map_err(|r| r.code);
        assert_eq!(bytewise, whole, "byte by byte");
        whole
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn method_fields_are_found_in_urlencoded_bodies() {
        for body in [
            "_method=DELETE",
            "note=hi&_method=DELETE",
            "note=hi;_METHOD=put",
            "a=1&_method",
            "%5Fmethod=DELETE",
            "%5fMETHOD=DELETE",
            "%u005Fmethod=DELETE",
            "_%6Dethod=DELETE",
            ".method=DELETE",
            "+_method=DELETE",
            "%20%20.method=DELETE",
            "[method=DELETE",
            "[_method]=DELETE",
            "_method[]=DELETE",
            "_method+=DELETE",
            "_method%00x=DELETE",
            "_method_override=DELETE",
            "_method.override=DELETE",
            "_method=",
            "a=%26&_method=x",
        ] {
            assert_eq!(
                verdict(FORM, body.as_bytes()),
                Err("method_override"),
                "{body}"
            );
            assert_eq!(
                verdict(None, body.as_bytes()),
                Err("method_override"),
                "untyped {body}"
            );
        }
    }

    #[test]
    fn other_fields_and_values_pass() {
        for body in [
            "",
            "method=DELETE",
            "note=_method",
            "note=_method&x=1",
            "x_method=1",
            "_methods=1",
            "_meth%6",
            "%5_method=1",
            "_method%zz=1",
            "%u00Fmethod=1",
            "{\"_method\":\"DELETE\"}",
            "a=1&b=2&&c",
        ] {
            assert_eq!(verdict(FORM, body.as_bytes()), Ok(()), "{body}");
        }
    }

    #[test]
    fn only_an_undecided_name_is_held_back() {
        let mut s = scanner(FORM);
        // A name that cannot be the override is decided at once.
        assert_eq!(s.feed(b"note=long value").unwrap(), 0);
        assert_eq!(s.feed(b"&{\"json").unwrap(), 0);
        // `&_me` could still be `_method`: those three bytes wait.
        assert_eq!(s.feed(b"&_me").unwrap(), 3);
        assert_eq!(s.feed(b"ta").unwrap(), 0);
        assert_eq!(s.feed(b"&  _meth").unwrap(), 7);
        assert!(s.feed(b"od=DELETE").is_err());
        // What is held stays bounded.
        let mut s = scanner(FORM);
        assert_eq!(s.feed(b"a=1&_method").unwrap(), 7);
        let spaces = vec![b'+'; MAX_PART_HEAD];
        assert_eq!(s.feed(&spaces).unwrap_err().code, "malformed_request");
    }

    const MULTIPART: Option<&str> = Some("multipart/form-data; boundary=XyZ");

    fn part(headers: &str, content: &str) -> String {
        format!("--XyZ\r\n{headers}\r\n\r\n{content}\r\n")
    }

    #[test]
    fn method_fields_are_found_in_multipart_bodies() {
        for headers in [
            "Content-Disposition: form-data; name=\"_method\"",
            "content-disposition: form-data; NAME=\"_METHOD\"",
            "Content-Disposition: form-data; name=_method",
            "Content-Disposition: form-data; name = \"_method\"",
            "Content-Disposition: form-data; name=\"%5Fmethod\"",
            "Content-Disposition: form-data; name=\"_meth\\od\"",
            "Content-Disposition: form-data; name*=utf-8''%5Fmethod",
            "Content-Disposition: form-data; name=\"_method\"; filename=\"a.txt\"\r\nContent-Type: text/plain",
            "Content-Type: text/plain\r\nContent-Disposition: form-data;name=\"_method[]\"",
        ] {
            let body = format!(
                "{}{}--XyZ--\r\n",
                part(
                    "Content-Disposition: form-data; name=\"note\"",
                    "hi --XyZ- _method"
                ),
                part(headers, "DELETE")
            );
            assert_eq!(
                verdict(MULTIPART, body.as_bytes()),
                Err("method_override"),
                "{headers}"
            );
        }
        // Bare LF line ends, as lenient parsers accept them.
        let lf = "--XyZ\nContent-Disposition: form-data; name=\"_method\"\n\nDELETE\n--XyZ--\n";
        assert_eq!(verdict(MULTIPART, lf.as_bytes()), Err("method_override"));
        // A body that ends inside a header block is read as it is.
        let cut = "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"";
        assert_eq!(verdict(MULTIPART, cut.as_bytes()), Err("method_override"));
    }

    #[test]
    fn other_parts_pass() {
        let body = format!(
            "preamble\r\n{}{}{}--XyZ--\r\nepilogue",
            part(
                "Content-Disposition: form-data; name=\"note\"",
                "_method=DELETE"
            ),
            part(
                "Content-Disposition: form-data; name=\"file\"; filename=\"_method\"",
                "name=\"_method\""
            ),
            part("Content-Disposition: form-data; name=\"x_method\"", ""),
        );
        assert_eq!(verdict(MULTIPART, body.as_bytes()), Ok(()));
    }

    #[test]
    fn a_huge_part_head_is_refused() {
        let body = format!("--XyZ\r\nX-Pad: {}\r\n", "a".repeat(MAX_PART_HEAD));
        let mut s = scanner(MULTIPART);
        assert_eq!(
            s.feed(body.as_bytes()).unwrap_err().code,
            "malformed_request"
        );
        // Content after a head is not held back; a head is, from its delimiter on.
        let mut s = scanner(MULTIPART);
        assert_eq!(
            s.feed(b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n")
                .unwrap(),
            0
        );
        assert_eq!(s.feed(b"content\r\n--X").unwrap(), 0);
        assert_eq!(s.feed(b"yZ\r\nContent-").unwrap(), 15);
    }

    #[test]
    fn which_bodies_are_forms() {
        let for_type = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            FormScanner::for_request(&h)
                .map(|s| s.is_some())
                .map_err(|r| r.code)
        };
        assert_eq!(for_type("application/json"), Ok(false));
        assert_eq!(for_type("text/plain"), Ok(false));
        assert_eq!(
            for_type("Application/X-WWW-Form-URLEncoded; charset=UTF-8"),
            Ok(true)
        );
        assert_eq!(for_type("multipart/mixed; boundary=\"a b\""), Ok(true));
        assert_eq!(for_type("multipart/form-data"), Err("malformed_request"));
        assert_eq!(
            for_type("multipart/form-data; boundary=a; boundary=b"),
            Err("malformed_request")
        );
        assert_eq!(
            for_type("application/x-www-form-urlencoded; charset=utf-16le"),
            Err("unsupported_form")
        );
        assert_eq!(
            for_type("application/x-www-form-urlencoded; charset=utf-16; charset=utf-8"),
            Err("unsupported_form")
        );
        // A boundary read otherwise by a server that knows quoted strings, or RFC 2231.
        for ct in [
            "multipart/form-data; boundary=\"a;b\"",
            "multipart/form-data; boundary=\"a\\\"b\"",
            "multipart/form-data; boundary*=utf-8''abc",
            "multipart/form-data; boundary=abc; boundary*=utf-8''abc",
        ] {
            assert_eq!(for_type(ct), Err("malformed_request"), "{ct}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(
            FormScanner::for_request(&h).unwrap_err().code,
            "unsupported_form"
        );
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(FormScanner::for_request(&h).unwrap().is_none());
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        h.append(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert_eq!(
            FormScanner::for_request(&h).unwrap_err().code,
            "malformed_request"
        );
    }
}
