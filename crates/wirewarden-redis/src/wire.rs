//! The bounded, iterative pre-scan: the one place where RESP bytes are validated.
//!
//! [`token`] reads exactly one RESP element header (and, for blobs, checks that the payload
//! and its CRLF are present) and enforces the per-element limits. [`Scanner`] walks tokens
//! with a fixed-size stack — no recursion, no allocation — until one complete frame has been
//! seen, and remembers where it stopped so a frame that arrives in pieces is never re-read
//! from its beginning. Everything else in the crate (frame views, value trees, request
//! arguments, element splitting) only ever walks bytes this module has accepted.

use std::fmt;

use crate::error::{Error, Result};

/// The RESP version a connection speaks. It starts at RESP2 and follows `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RespVersion {
    /// RESP2: simple strings, errors, integers, bulk strings and arrays.
    #[default]
    Resp2,
    /// RESP3: adds nulls, doubles, booleans, big numbers, blob errors, verbatim strings, maps,
    /// sets, attributes, push frames, and streamed strings and aggregates.
    Resp3,
}

impl fmt::Display for RespVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Resp2 => "RESP2",
            Self::Resp3 => "RESP3",
        })
    }
}

/// The deepest nesting any [`Limits`] can allow: the pre-scan keeps its stack in a fixed
/// array of this many levels.
pub const MAX_DEPTH: usize = 128;

/// Limits checked by the pre-scan before anything is allocated or copied.
///
/// The defaults follow the server's own: 512 MiB bulk strings (`proto-max-bulk-len`) and 64 KiB
/// inline commands; frames are capped at 512 MiB, 4 Mi elements and 64 levels of nesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest complete frame, all nested elements included, in bytes.
    pub max_frame_len: usize,
    /// Largest bulk string, blob error, verbatim string or streamed-string chunk, in bytes.
    pub max_bulk_len: usize,
    /// Most elements in one frame, counted over all nested aggregates (a map of `n` pairs
    /// counts `2n`).
    pub max_elements: usize,
    /// Deepest nesting of aggregates (an attribute counts as a level). Capped at
    /// [`MAX_DEPTH`].
    pub max_depth: usize,
    /// Longest inline command line, in bytes.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Limits {
    /// The default limits.
    pub const DEFAULT: Self = Self {
        max_frame_len: 512 << 20,
        max_bulk_len: 512 << 20,
        max_elements: 4 << 20,
        max_depth: 64,
        max_inline_len: 64 << 10,
    };

    /// Limits for a client that has not authenticated yet, as the server keeps for its own
    /// unauthenticated clients (at most 10 arguments of 16 KiB each): until it logs in, a
    /// client may send a login and little else, so nothing it sends should make the reader
    /// hold more than a login needs. A bulk may be 64 KiB, enough for `AUTH` or `HELLO …
    /// AUTH` with a JWT of many claims; ten arguments cover `HELLO 3 AUTH user token
    /// SETNAME name`.
    pub const UNAUTHENTICATED: Self = Self {
        max_frame_len: 96 << 10,
        max_bulk_len: 64 << 10,
        max_elements: 10,
        max_depth: 64,
        max_inline_len: 16 << 10,
    };

    /// Sets [`Limits::max_frame_len`].
    #[must_use]
    pub const fn with_max_frame_len(mut self, n: usize) -> Self {
        self.max_frame_len = n;
        self
    }

    /// Sets [`Limits::max_bulk_len`].
    #[must_use]
    pub const fn with_max_bulk_len(mut self, n: usize) -> Self {
        self.max_bulk_len = n;
        self
    }

    /// Sets [`Limits::max_elements`].
    #[must_use]
    pub const fn with_max_elements(mut self, n: usize) -> Self {
        self.max_elements = n;
        self
    }

    /// Sets [`Limits::max_depth`] (values above [`MAX_DEPTH`] act as [`MAX_DEPTH`]).
    #[must_use]
    pub const fn with_max_depth(mut self, n: usize) -> Self {
        self.max_depth = n;
        self
    }

    /// Sets [`Limits::max_inline_len`].
    #[must_use]
    pub const fn with_max_inline_len(mut self, n: usize) -> Self {
        self.max_inline_len = n;
        self
    }

    fn depth(&self) -> usize {
        self.max_depth.min(MAX_DEPTH)
    }
}

// === tokens ===

/// One RESP element header. Positions are absolute indexes into the scanned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// `+ - ( , # _` lines: the type byte and the text between the type byte and CRLF.
    Line { kind: u8, start: usize, end: usize },
    /// `:` integer.
    Integer(i64),
    /// `$ ! =` with their payload (for `=`, the payload includes the `fmt:` prefix).
    Blob { kind: u8, start: usize, end: usize },
    /// `$-1`.
    NullBulk,
    /// `*-1`.
    NullArray,
    /// `$?`: a streamed string follows as chunks.
    StreamedString,
    /// `;n` with `n > 0`.
    Chunk { start: usize, end: usize },
    /// `;0`: the end of a streamed string.
    ChunkEnd,
    /// `* % ~ > |` with its element count (a map or attribute of `n` pairs counts `2n`).
    Aggregate { kind: u8, count: u64 },
    /// `*? %? ~?`: a streamed aggregate follows, ended by `.`.
    StreamedAggregate { kind: u8 },
    /// `.`: the end of a streamed aggregate.
    End,
}

/// Where the CR of the line starting at `start` is, if the line is complete. Lines of
/// lengths and numbers are short; `max` bounds how far a missing CRLF is looked for.
fn line_end(buf: &[u8], start: usize, max: usize) -> Result<Option<usize>, usize> {
    let Some(hay) = buf.get(start..) else {
        return Ok(None);
    };
    let window = hay.get(..max.saturating_add(1)).unwrap_or(hay);
    // Length and number lines are a few bytes: a plain loop finds their CR sooner than
    // setting up a vectorised search.
    let found = if max <= NUMBER_LINE_MAX {
        window.iter().position(|&b| b == b'\r')
    } else {
        memchr::memchr(b'\r', window)
    };
    match found {
        Some(i) => {
            let cr = start.saturating_add(i);
            match buf.get(cr.saturating_add(1)) {
                Some(b'\n') => Ok(Some(cr)),
                Some(_) => Err(cr.saturating_add(1)),
                None => Ok(None),
            }
        }
        None if window.len() > max => Err(start.saturating_add(window.len())),
        None => Ok(None),
    }
}

/// Parses a strict decimal `i64` (optional `-`, at least one digit).
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    // Canonical form only, like the server's string2ll: no leading zeros, no "-0".
    if digits.is_empty()
        || digits.len() > 20
        || (digits.first() == Some(&b'0') && (neg || digits.len() > 1))
    {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

enum Len {
    Null,
    Streamed,
    N(u64),
}

fn parse_len(s: &[u8]) -> Option<Len> {
    if s == b"?" {
        return Some(Len::Streamed);
    }
    match parse_i64(s)? {
        -1 => Some(Len::Null),
        n => u64::try_from(n).ok().map(Len::N),
    }
}

fn valid_double(s: &[u8]) -> bool {
    // The server writes `inf`, `-inf`, `nan` and `%.17g` output; Rust's parser accepts all
    // of those and nothing with embedded junk.
    std::str::from_utf8(s).is_ok_and(|t| !t.is_empty() && t.parse::<f64>().is_ok())
}

fn valid_big_number(s: &[u8]) -> bool {
    let digits = match s.split_first() {
        Some((b'-' | b'+', rest)) => rest,
        _ => s,
    };
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// Longest header line we accept for lengths, counts and numbers (`-9223372036854775808`
/// is 20 bytes).
const NUMBER_LINE_MAX: usize = 24;

/// Reads the element header starting at `pos` (`base` is where the frame started, for
/// error offsets). `Ok(None)` means more bytes are needed.
pub(crate) fn token(
    buf: &[u8],
    pos: usize,
    base: usize,
    version: RespVersion,
    limits: &Limits,
) -> Result<Option<(Token, usize)>> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let rel = |at: usize| at.saturating_sub(base);
    let resp3 = version == RespVersion::Resp3;
    let allowed = match kind {
        b'+' | b'-' | b':' | b'$' | b'*' => true,
        b'_' | b',' | b'#' | b'(' | b'!' | b'=' | b'%' | b'~' | b'>' | b'|' | b';' | b'.' => resp3,
        _ => false,
    };
    if !allowed {
        return Err(Error::InvalidType {
            byte: kind,
            version,
            offset: rel(pos),
        });
    }
    let start = pos.saturating_add(1);
    let text_line = matches!(kind, b'+' | b'-' | b'(' | b',' | b'#' | b'_');
    let max = if text_line {
        limits.max_frame_len.saturating_sub(rel(start))
    } else {
        NUMBER_LINE_MAX
    };
    let cr = match line_end(buf, start, max) {
        Ok(Some(cr)) => cr,
        Ok(None) => return Ok(None),
        Err(at) if text_line => return Err(Error::MissingCrlf { offset: rel(at) }),
        Err(_) => {
            return Err(Error::InvalidValue {
                what: "length or number line",
                offset: rel(pos),
            });
        }
    };
    let next = cr.saturating_add(2);
    let text = buf.get(start..cr).unwrap_or_default();
    let invalid = |what| Error::InvalidValue {
        what,
        offset: rel(pos),
    };
    let tok = match kind {
        b'+' | b'-' => Token::Line {
            kind,
            start,
            end: cr,
        },
        b'_' => {
            if !text.is_empty() {
                return Err(invalid("null"));
            }
            Token::Line {
                kind,
                start,
                end: cr,
            }
        }
        b'#' => {
            if text != b"t" && text != b"f" {
                return Err(invalid("boolean"));
            }
            Token::Line {
                kind,
                start,
                end: cr,
            }
        }
        b',' => {
            if !valid_double(text) {
                return Err(invalid("double"));
            }
            Token::Line {
                kind,
                start,
                end: cr,
            }
        }
        b'(' => {
            if !valid_big_number(text) {
                return Err(invalid("big number"));
            }
            Token::Line {
                kind,
                start,
                end: cr,
            }
        }
        b':' => Token::Integer(parse_i64(text).ok_or_else(|| invalid("integer"))?),
        b'.' => {
            if !text.is_empty() {
                return Err(invalid("end of stream"));
            }
            Token::End
        }
        b'$' | b'!' | b'=' | b';' => {
            let len = match parse_len(text) {
                Some(Len::N(n)) => n,
                Some(Len::Null) if kind == b'$' => return Ok(Some((Token::NullBulk, next))),
                Some(Len::Streamed) if kind == b'$' && resp3 => {
                    return Ok(Some((Token::StreamedString, next)));
                }
                _ => return Err(invalid("bulk length")),
            };
            if kind == b';' && len == 0 {
                return Ok(Some((Token::ChunkEnd, next)));
            }
            if len > limits.max_bulk_len as u64 {
                return Err(Error::BulkTooLarge {
                    len,
                    limit: limits.max_bulk_len,
                });
            }
            if kind == b'=' && len < 4 {
                return Err(invalid("verbatim string length"));
            }
            // Both fit in usize: `len` is at most max_bulk_len.
            let data_end = next.saturating_add(len as usize);
            let after = data_end.saturating_add(2);
            if rel(after) > limits.max_frame_len {
                return Err(Error::FrameTooLarge {
                    len: rel(after) as u64,
                    limit: limits.max_frame_len,
                });
            }
            match buf.get(data_end..after) {
                None => return Ok(None),
                Some(b"\r\n") => {}
                Some(_) => {
                    return Err(Error::MissingCrlf {
                        offset: rel(data_end),
                    });
                }
            }
            if kind == b'=' && buf.get(next.saturating_add(3)) != Some(&b':') {
                return Err(invalid("verbatim string format"));
            }
            let (start, end) = (next, data_end);
            let tok = if kind == b';' {
                Token::Chunk { start, end }
            } else {
                Token::Blob { kind, start, end }
            };
            return Ok(Some((tok, after)));
        }
        // Aggregates: * % ~ > |
        _ => {
            let count = match parse_len(text) {
                Some(Len::N(n)) => n,
                Some(Len::Null) if kind == b'*' => return Ok(Some((Token::NullArray, next))),
                Some(Len::Streamed) if resp3 && matches!(kind, b'*' | b'%' | b'~') => {
                    return Ok(Some((Token::StreamedAggregate { kind }, next)));
                }
                _ => return Err(invalid("aggregate length")),
            };
            let count = if matches!(kind, b'%' | b'|') {
                count
                    .checked_mul(2)
                    .ok_or_else(|| invalid("aggregate length"))?
            } else {
                count
            };
            if count > limits.max_elements as u64 {
                return Err(Error::TooManyElements {
                    count,
                    limit: limits.max_elements,
                });
            }
            Token::Aggregate { kind, count }
        }
    };
    if rel(next) > limits.max_frame_len {
        return Err(Error::FrameTooLarge {
            len: rel(next) as u64,
            limit: limits.max_frame_len,
        });
    }
    Ok(Some((tok, next)))
}

// === scanner ===

/// What the scanner is validating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A server reply (any type of the version).
    Reply,
    /// A client request: an array of bulk strings and nothing else.
    Request,
}

#[derive(Debug, Clone, Copy, Default)]
struct Level {
    kind: u8,
    /// Children still expected (counted aggregates).
    remaining: u64,
    /// Children seen (streamed aggregates).
    seen: u64,
    streamed: bool,
}

/// A resumable pre-scan of one frame. Feed it the same growing buffer until it reports the
/// frame's length, then [`Scanner::reset`] it for the next frame.
#[derive(Clone)]
pub(crate) struct Scanner {
    pos: usize,
    depth: usize,
    stack: [Level; MAX_DEPTH],
    elements: u64,
    in_string: bool,
    attr_pending: bool,
    top_pos: usize,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("pos", &self.pos)
            .field("depth", &self.depth)
            .field("elements", &self.elements)
            .finish_non_exhaustive()
    }
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

/// A complete frame found by the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Its length in bytes.
    pub(crate) len: usize,
    /// Where the header of its value starts (after any attributes).
    pub(crate) top_pos: usize,
}

impl Scanner {
    pub(crate) const fn new() -> Self {
        Self {
            pos: 0,
            depth: 0,
            stack: [Level {
                kind: 0,
                remaining: 0,
                seen: 0,
                streamed: false,
            }; MAX_DEPTH],
            elements: 0,
            in_string: false,
            attr_pending: false,
            top_pos: 0,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.pos = 0;
        self.depth = 0;
        self.elements = 0;
        self.in_string = false;
        self.attr_pending = false;
        self.top_pos = 0;
    }

    fn count_element(&mut self, limits: &Limits) -> Result<()> {
        self.elements = self.elements.saturating_add(1);
        if self.elements > limits.max_elements as u64 {
            return Err(Error::TooManyElements {
                count: self.elements,
                limit: limits.max_elements,
            });
        }
        Ok(())
    }

    /// A value finished at the current depth. Returns true when the whole frame is done.
    fn value_done(&mut self) -> bool {
        self.attr_pending = false;
        loop {
            let Some(idx) = self.depth.checked_sub(1) else {
                return true;
            };
            let Some(level) = self.stack.get_mut(idx) else {
                return true;
            };
            if level.streamed {
                level.seen = level.seen.saturating_add(1);
                return false;
            }
            level.remaining = level.remaining.saturating_sub(1);
            if level.remaining > 0 {
                return false;
            }
            let kind = level.kind;
            self.depth = idx;
            if kind == b'|' {
                // An attribute is not a value: the value it describes comes next, in the
                // same slot of the parent.
                self.attr_pending = true;
                return false;
            }
        }
    }

    fn push(&mut self, level: Level, limits: &Limits) -> Result<()> {
        let limit = limits.depth();
        if self.depth >= limit {
            return Err(Error::TooDeep {
                depth: self.depth.saturating_add(1),
                limit,
            });
        }
        match self.stack.get_mut(self.depth) {
            Some(slot) => *slot = level,
            None => {
                return Err(Error::TooDeep {
                    depth: self.depth.saturating_add(1),
                    limit,
                });
            }
        }
        self.depth = self.depth.saturating_add(1);
        Ok(())
    }

    /// Where the scan will go on from: 0 for a new frame.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Continues scanning the frame that starts at `buf[0]`. `Ok(None)`: need more bytes.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        version: RespVersion,
        limits: &Limits,
        mode: Mode,
    ) -> Result<Option<Scanned>> {
        self.scan_with(buf, version, limits, mode, &mut |_, _| {})
    }

    /// [`Scanner::scan`], calling `on_blob(start, end)` with the payload of every bulk
    /// string, blob error and verbatim string as it is accepted, once each, in order, however
    /// the frame arrives in pieces (a request's arguments, without a second pass over it).
    pub(crate) fn scan_with<F: FnMut(usize, usize)>(
        &mut self,
        buf: &[u8],
        version: RespVersion,
        limits: &Limits,
        mode: Mode,
        on_blob: &mut F,
    ) -> Result<Option<Scanned>> {
        if buf.len() < self.pos {
            self.reset();
        }
        loop {
            let at = self.pos;
            let Some((tok, next)) = token(buf, at, 0, version, limits)? else {
                return Ok(None);
            };
            if self.depth == 0
                && !self.in_string
                && !matches!(tok, Token::Aggregate { kind: b'|', .. })
            {
                self.top_pos = at;
            }
            if mode == Mode::Request {
                match (self.depth, tok) {
                    (0, Token::Aggregate { kind: b'*', .. } | Token::NullArray) => {}
                    (0, _) => {
                        return Err(Error::Unexpected {
                            what: "non-array request",
                            offset: at,
                        });
                    }
                    (_, Token::Blob { kind: b'$', .. }) => {}
                    (_, Token::NullBulk) => {
                        return Err(Error::InvalidValue {
                            what: "bulk length",
                            offset: at,
                        });
                    }
                    (_, _) => {
                        return Err(Error::ExpectedBulk {
                            got: buf.get(at).copied().unwrap_or(0),
                        });
                    }
                }
            }
            if self.in_string {
                match tok {
                    Token::Chunk { .. } => {
                        self.pos = next;
                        continue;
                    }
                    Token::ChunkEnd => {
                        self.pos = next;
                        self.in_string = false;
                        if self.value_done() {
                            return Ok(Some(Scanned {
                                len: next,
                                top_pos: self.top_pos,
                            }));
                        }
                        continue;
                    }
                    _ => {
                        return Err(Error::Unexpected {
                            what: "frame inside a streamed string",
                            offset: at,
                        });
                    }
                }
            }
            let in_streamed = self
                .depth
                .checked_sub(1)
                .and_then(|i| self.stack.get(i))
                .filter(|l| l.streamed)
                .copied();
            if in_streamed.is_some() && !matches!(tok, Token::End) {
                self.count_element(limits)?;
            }
            let attr_before = self.attr_pending;
            if !matches!(tok, Token::End | Token::Aggregate { kind: b'|', .. }) {
                // The next value has started: it is the one the attribute describes.
                self.attr_pending = false;
            }
            let done = match tok {
                Token::Blob { start, end, .. } => {
                    on_blob(start, end);
                    self.value_done()
                }
                Token::Line { .. } | Token::Integer(_) | Token::NullBulk | Token::NullArray => {
                    self.value_done()
                }
                Token::StreamedString => {
                    self.in_string = true;
                    false
                }
                Token::Chunk { .. } | Token::ChunkEnd => {
                    return Err(Error::Unexpected {
                        what: "string chunk outside a streamed string",
                        offset: at,
                    });
                }
                Token::Aggregate { kind, count } => {
                    self.elements = self.elements.saturating_add(count);
                    if self.elements > limits.max_elements as u64 {
                        return Err(Error::TooManyElements {
                            count: self.elements,
                            limit: limits.max_elements,
                        });
                    }
                    if count == 0 {
                        if kind == b'|' {
                            self.attr_pending = true;
                            false
                        } else {
                            self.value_done()
                        }
                    } else {
                        self.push(
                            Level {
                                kind,
                                remaining: count,
                                seen: 0,
                                streamed: false,
                            },
                            limits,
                        )?;
                        false
                    }
                }
                Token::StreamedAggregate { kind } => {
                    self.push(
                        Level {
                            kind,
                            remaining: 0,
                            seen: 0,
                            streamed: true,
                        },
                        limits,
                    )?;
                    false
                }
                Token::End => {
                    let Some(level) = in_streamed else {
                        return Err(Error::Unexpected {
                            what: "end of stream outside a streamed aggregate",
                            offset: at,
                        });
                    };
                    if attr_before {
                        return Err(Error::Unexpected {
                            what: "end of stream after an attribute",
                            offset: at,
                        });
                    }
                    if level.kind == b'%' && level.seen % 2 != 0 {
                        return Err(Error::Unexpected {
                            what: "end of a streamed map after a key",
                            offset: at,
                        });
                    }
                    self.depth = self.depth.saturating_sub(1);
                    self.value_done()
                }
            };
            self.pos = next;
            if done {
                return Ok(Some(Scanned {
                    len: next,
                    top_pos: self.top_pos,
                }));
            }
        }
    }
}

/// Scans one complete value (attributes included) at the start of `buf`, which must already
/// have been validated as part of a larger frame.
pub(crate) fn skip_value(buf: &[u8], version: RespVersion, limits: &Limits) -> Result<usize> {
    let mut s = Scanner::new();
    match s.scan(buf, version, limits, Mode::Reply)? {
        Some(scanned) => Ok(scanned.len),
        None => Err(Error::Unexpected {
            what: "truncated element",
            offset: buf.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan3(b: &[u8]) -> Result<Option<Scanned>> {
        Scanner::new().scan(b, RespVersion::Resp3, &Limits::default(), Mode::Reply)
    }

    fn len3(b: &[u8]) -> Option<usize> {
        scan3(b).unwrap().map(|s| s.len)
    }

    #[test]
    fn every_prefix_needs_more_bytes_and_the_whole_completes() {
        let frames: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":-12\r\n",
            b"$3\r\nabc\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"_\r\n",
            b",3.25\r\n",
            b",-inf\r\n",
            b"#t\r\n",
            b"(-123456789012345678901234567890\r\n",
            b"!3\r\nbad\r\n",
            b"=8\r\ntxt:abcd\r\n",
            b"%1\r\n+k\r\n:1\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b">2\r\n+message\r\n+x\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
            b"$?\r\n;2\r\nab\r\n;1\r\nc\r\n;0\r\n",
            b"*?\r\n:1\r\n*?\r\n.\r\n.\r\n",
            b"*?\r\n|1\r\n+k\r\n+v\r\n*?\r\n.\r\n.\r\n",
            b"%?\r\n+a\r\n:1\r\n.\r\n",
            b"*1\r\n|1\r\n+a\r\n+b\r\n:5\r\n",
            b"|0\r\n:5\r\n",
        ];
        for f in frames {
            for cut in 0..f.len() {
                assert_eq!(len3(&f[..cut]), None, "{:?} cut at {cut}", f);
            }
            assert_eq!(len3(f), Some(f.len()), "{:?}", String::from_utf8_lossy(f));
            let mut two = f.to_vec();
            two.extend_from_slice(b"+next\r\n");
            assert_eq!(len3(&two), Some(f.len()));
        }
    }

    #[test]
    fn resumes_where_it_stopped() {
        let f = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut s = Scanner::new();
        let l = Limits::default();
        for cut in 0..f.len() {
            assert_eq!(
                s.scan(&f[..cut], RespVersion::Resp2, &l, Mode::Request)
                    .unwrap(),
                None
            );
        }
        assert_eq!(
            s.scan(f, RespVersion::Resp2, &l, Mode::Request)
                .unwrap()
                .map(|s| s.len),
            Some(f.len())
        );
    }

    #[test]
    fn top_kind_skips_attributes() {
        assert_eq!(
            scan3(b"|1\r\n+a\r\n+b\r\n:5\r\n").unwrap().unwrap().top_pos,
            12
        );
        assert_eq!(scan3(b">1\r\n+a\r\n").unwrap().unwrap().top_pos, 0);
    }

    #[test]
    fn limits_are_enforced_before_payload_arrives() {
        let l = Limits::default().with_max_bulk_len(10);
        let e = Scanner::new()
            .scan(b"$11\r\n", RespVersion::Resp2, &l, Mode::Reply)
            .unwrap_err();
        assert!(matches!(e, Error::BulkTooLarge { len: 11, limit: 10 }));
        let l = Limits::default().with_max_frame_len(20);
        let e = Scanner::new()
            .scan(b"*1\r\n$10\r\n", RespVersion::Resp2, &l, Mode::Reply)
            .unwrap_err();
        assert!(matches!(e, Error::FrameTooLarge { .. }), "{e:?}");
        let l = Limits::default().with_max_elements(3);
        let e = Scanner::new()
            .scan(b"*2\r\n*2\r\n", RespVersion::Resp2, &l, Mode::Reply)
            .unwrap_err();
        assert!(
            matches!(e, Error::TooManyElements { count: 4, .. }),
            "{e:?}"
        );
        let e = Scanner::new()
            .scan(
                b"*?\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
                RespVersion::Resp3,
                &l,
                Mode::Reply,
            )
            .unwrap_err();
        assert!(matches!(e, Error::TooManyElements { .. }), "{e:?}");
        let l = Limits::default().with_max_depth(3);
        let e = Scanner::new()
            .scan(
                b"*1\r\n*1\r\n*1\r\n*1\r\n",
                RespVersion::Resp2,
                &l,
                Mode::Reply,
            )
            .unwrap_err();
        assert!(matches!(e, Error::TooDeep { depth: 4, limit: 3 }), "{e:?}");
        // A million levels of nesting cost nothing but an error.
        let deep = b"*1\r\n".repeat(1_000_000);
        assert!(matches!(scan3(&deep).unwrap_err(), Error::TooDeep { .. }));
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        for bad in [
            &b"?\r\n"[..],
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b":12a\r\n",
            b":1\rx",
            b"#x\r\n",
            b",1.2.3\r\n",
            b"(12a\r\n",
            b"=3\r\ntxt\r\n",
            b"=5\r\ntxtx1\r\n",
            b".\r\n",
            b";3\r\nabc\r\n",
            b"$?\r\n:1\r\n",
            b"%?\r\n+a\r\n.\r\n",
            b"*?\r\n|1\r\n+a\r\n+b\r\n.\r\n",
            b"_x\r\n",
            b":99999999999999999999\r\n",
            b":01\r\n",
            b"*-01\r\n",
            b"$-0\r\n",
            b"*123456789012345678901234567890\r\n",
        ] {
            assert!(scan3(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // RESP3 types are not RESP2.
        let e = Scanner::new()
            .scan(
                b"_\r\n",
                RespVersion::Resp2,
                &Limits::default(),
                Mode::Reply,
            )
            .unwrap_err();
        assert!(matches!(e, Error::InvalidType { byte: b'_', .. }));
    }

    #[test]
    fn requests_are_arrays_of_bulk_strings() {
        let l = Limits::default();
        let e = Scanner::new()
            .scan(b"*1\r\n:1\r\n", RespVersion::Resp2, &l, Mode::Request)
            .unwrap_err();
        assert_eq!(e, Error::ExpectedBulk { got: b':' });
        let e = Scanner::new()
            .scan(b"*1\r\n*0\r\n", RespVersion::Resp2, &l, Mode::Request)
            .unwrap_err();
        assert_eq!(e, Error::ExpectedBulk { got: b'*' });
    }
}
