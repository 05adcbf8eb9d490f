//! Streaming JSON masking: the same masking as [`Profile::mask_json`], fed chunk by chunk.
//!
//! A push-driven RFC 8259 parser with an explicit stack (no recursion, so no stack growth
//! on hostile nesting). Structure and whitespace are copied to the output as soon as they
//! are seen; a string, number or literal is held back only until it ends, and is then masked
//! with the very functions the whole-document masker uses (`json::mask_*`), so both give the
//! same bytes and the same counts. A value that a JSON-path rule masks as a whole (an
//! object, say) is the one thing that can be longer than a token: it is buffered only when
//! its replacement depends on its content, and then within `max_value_len`.
//!
//! On the clean path nothing is allocated per token: a token that ends in the chunk where it
//! started is masked in place, and unchanged tokens are copied out together with the
//! structure around them, in one `extend` per run.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use wirewarden_core::MaskedCounts;

use crate::json::{mask_member_name, mask_number, mask_ruled, mask_string};
use crate::profile::{FieldRule, Profile};
use crate::rules::PathElem;
use crate::strategy::Strategy;
use crate::{Error, Result};

/// Masks a JSON document (or a sequence of them) that arrives in chunks, such as an HTTP
/// response body.
///
/// For every way of cutting a document into chunks, the concatenated output is exactly what
/// [`Profile::mask_json`] returns for the whole document with [`Field::Unknown`](crate::Field),
/// and the masked counts are the same: JSON-path rules (a rule may cover a whole object or
/// array), content detectors on string values, member names and numbers, and JSON inside
/// strings up to [`Limits::max_nested_json`](crate::Limits).
///
/// Output is released as early as possible: structure and whitespace as soon as they are
/// pushed, a string, number or literal as soon as it ends. Only an incomplete token is held
/// back ([`pending`](Self::pending)), and never more than
/// [`Limits::max_value_len`](crate::Limits) bytes of it; unlike `mask_json`, the document
/// as a whole may be longer than that. Nesting is bounded by
/// [`Limits::max_json_depth`](crate::Limits).
///
/// Invalid JSON, invalid UTF-8 and input that ends in the middle of a document are errors;
/// after an error the stream is poisoned and every later call returns the same error. Bytes
/// already appended to the output are always masked: a caller that stops at an error never
/// lets anything out in clear.
///
/// ```
/// use std::sync::Arc;
/// use wirewarden_mask::{FieldRule, JsonStream, MaskedCounts, Profile, Selector, Strategy};
///
/// let profile = Arc::new(
///     Profile::builder("api")
///         .strategy("card_number", Strategy::keep_last(4))
///         .rule(FieldRule::new(Selector::json_path("$..password")?, Strategy::redact()))
///         .build()?,
/// );
/// let mut stream = JsonStream::new(profile);
/// let (mut out, mut counts) = (Vec::new(), MaskedCounts::new());
///
/// // The card number is cut in two: it is held back until it ends.
/// stream.push(br#"{"user": {"password": "hunter2", "card": "4111 1111 "#, &mut out, &mut counts)?;
/// assert_eq!(out, br#"{"user": {"password": "[REDACTED]", "card": "#);
/// assert_eq!(stream.pending(), 11);
///
/// stream.push(br#"1111 1111"}}"#, &mut out, &mut counts)?;
/// stream.finish(&mut out, &mut counts)?;
/// assert_eq!(
///     String::from_utf8(out).unwrap(),
///     r#"{"user": {"password": "[REDACTED]", "card": "**** **** **** 1111"}}"#,
/// );
/// assert_eq!(counts.0["card_number"], 1);
/// assert_eq!(counts.0["json_path:$..password"], 1);
/// # Ok::<(), wirewarden_mask::Error>(())
/// ```
pub struct JsonStream {
    profile: Arc<Profile>,
    /// Documents separated by whitespace (NDJSON) rather than exactly one.
    sequence: bool,
    expect: Expect,
    /// The open containers, innermost last.
    stack: Vec<Frame>,
    /// The path to the current value, kept only when the profile has JSON-path rules.
    path: Vec<PathElem<'static>>,
    /// Member-name buffers popped off `path`, reused so that tracking allocates nothing in
    /// the steady state.
    spare: Vec<String>,
    /// The bytes of a token that began in an earlier chunk.
    tok: Vec<u8>,
    /// Where the current token began in the current chunk (`None`: in an earlier one).
    tok_at: Option<usize>,
    /// Stream offset of the current token's first byte.
    tok_offset: usize,
    /// Decoded text of a string with escapes.
    scratch: String,
    /// The value a JSON-path rule masks as a whole, while it is being read.
    ruled: Option<Ruled>,
    /// Its raw bytes, when its replacement depends on them.
    whole: Vec<u8>,
    /// Bytes consumed before the current chunk.
    offset: usize,
    /// In a sequence, the last document was a number or literal: whitespace must follow.
    need_sep: bool,
    /// Whether a document has started (a single-document stream must have one).
    started: bool,
    failed: Option<Error>,
}

/// What comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value: at the top level, after `:`, after `,` in an array.
    Value,
    /// A value or `]`, just after `[`.
    ValueOrClose,
    /// A member name or `}`, just after `{`.
    KeyOrClose,
    /// A member name, after `,` in an object.
    Key,
    /// The `:` after a member name.
    Colon,
    /// `,` or the end of the enclosing container.
    After,
    /// Whitespace only: the single document is complete.
    End,
    /// Inside a string token.
    Str {
        key: bool,
        esc: Esc,
        /// Whether the string has an escape (and so must be decoded, not borrowed).
        escaped: bool,
    },
    /// Inside a number token.
    Num(Num),
    /// Inside `true`, `false` or `null`: `n` bytes of `lit` seen.
    Lit { lit: &'static [u8], n: usize },
    /// [`JsonStream::finish`] has run.
    Finished,
}

/// Where a string is in an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    /// After `\`.
    Backslash,
    /// After `\u` and this many hex digits.
    Hex(u8),
}

/// RFC 8259 number grammar, one state per position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    /// Whether a number may end here.
    fn complete(self) -> bool {
        matches!(self, Self::Zero | Self::Int | Self::Frac | Self::Exp)
    }

    /// The state after `b`; `Ok(None)` when `b` is not part of the number (which ends
    /// before it), an error reason when the number cannot end here.
    fn step(self, b: u8) -> Result<Option<Self>, &'static str> {
        Ok(Some(match (self, b) {
            (Self::Minus, b'0') => Self::Zero,
            (Self::Minus, b'1'..=b'9') => Self::Int,
            (Self::Minus, _) => return Err("invalid number"),
            (Self::Int, b'0'..=b'9') => Self::Int,
            (Self::Zero | Self::Int, b'.') => Self::Dot,
            (Self::Zero | Self::Int | Self::Frac, b'e' | b'E') => Self::E,
            (Self::Dot | Self::Frac, b'0'..=b'9') => Self::Frac,
            (Self::Dot, _) => return Err("invalid fraction"),
            (Self::E, b'+' | b'-') => Self::ESign,
            (Self::E | Self::ESign | Self::Exp, b'0'..=b'9') => Self::Exp,
            (Self::E | Self::ESign, _) => return Err("invalid exponent"),
            (Self::Zero | Self::Int | Self::Frac | Self::Exp, _) => return Ok(None),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Object,
    /// An array and the index of its next element.
    Array(usize),
}

/// A value masked as a whole by a JSON-path rule.
#[derive(Debug)]
struct Ruled {
    rule: FieldRule,
    /// Stack depth at its start: the value ends when a token or container ends there.
    depth: usize,
    /// Whether its raw bytes are kept (the replacement depends on them).
    keep: bool,
    /// Whether it is a string (the rule then sees the decoded text).
    string: bool,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether `run` holds a byte below 0x20. No early exit: the loop vectorises, and clean
/// text (the common case) is read to the end anyway.
fn has_control(run: &[u8]) -> bool {
    run.iter().fold(0u8, |acc, b| acc | u8::from(*b < 0x20)) != 0
}

// === impl JsonStream ===

impl JsonStream {
    /// A stream holding one JSON document (RFC 8259): anything but whitespace after it is an
    /// error, and so is an input with no document at all.
    #[must_use]
    pub fn new(profile: Arc<Profile>) -> Self {
        Self::with(profile, false)
    }

    /// A stream holding a sequence of JSON documents separated by whitespace or newlines
    /// (NDJSON, JSON Lines); each is masked as [`Profile::mask_json`] masks it alone, and the
    /// whitespace between them is kept. Objects, arrays and strings need no separator; a
    /// number or literal must be followed by whitespace. An empty sequence is valid.
    #[must_use]
    pub fn sequence(profile: Arc<Profile>) -> Self {
        Self::with(profile, true)
    }

    fn with(profile: Arc<Profile>, sequence: bool) -> Self {
        Self {
            profile,
            sequence,
            expect: Expect::Value,
            stack: Vec::new(),
            path: Vec::new(),
            spare: Vec::new(),
            tok: Vec::new(),
            tok_at: None,
            tok_offset: 0,
            scratch: String::new(),
            ruled: None,
            whole: Vec::new(),
            offset: 0,
            need_sep: false,
            started: false,
            failed: None,
        }
    }

    /// Feeds the next chunk; appends the output that is final to `out` and counts what was
    /// masked in `counts`.
    ///
    /// # Errors
    /// [`Error::InvalidJson`], [`Error::InvalidUtf8`] (in a string), [`Error::JsonTooDeep`],
    /// [`Error::ValueTooLarge`] (a token longer than `max_value_len`), or an error from a
    /// strategy. The stream is then poisoned: every later call returns the same error.
    pub fn push(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<u8>,
        counts: &mut MaskedCounts,
    ) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.expect == Expect::Finished && !chunk.is_empty() {
            return Err(self.fail(Error::InvalidJson {
                offset: self.offset,
                reason: "input after the end of the stream",
            }));
        }
        let r = self.run(chunk, false, out, counts);
        self.offset = self.offset.saturating_add(chunk.len());
        r.map_err(|e| self.fail(e))
    }

    /// Ends the input and appends the remaining output (a number at the very end is complete
    /// only now).
    ///
    /// # Errors
    /// [`Error::InvalidJson`] if the input ends inside a document, or holds no document in a
    /// single-document stream; the errors of [`Self::push`]; the stream's earlier error if
    /// it is poisoned. Calling it again after success does nothing.
    pub fn finish(&mut self, out: &mut Vec<u8>, counts: &mut MaskedCounts) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.expect == Expect::Finished {
            return Ok(());
        }
        self.run(&[], true, out, counts).map_err(|e| self.fail(e))?;
        let ok = match self.expect {
            Expect::End => true,
            Expect::Value => self.stack.is_empty() && (self.sequence || self.started),
            _ => false,
        };
        if !ok {
            let reason = if self.stack.is_empty() && !self.started {
                "expected a value"
            } else {
                "unexpected end of input"
            };
            return Err(self.fail(Error::InvalidJson {
                offset: self.offset,
                reason,
            }));
        }
        self.expect = Expect::Finished;
        Ok(())
    }

    /// How many bytes are held back: the start of a token that has not ended yet, and the
    /// raw text of a value that a JSON-path rule masks as a whole, while it is being read.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.tok.len().saturating_add(self.whole.len())
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e.clone());
        e
    }

    fn limit(&self) -> usize {
        self.profile.limits().max_value_len
    }

    fn err(&self, at: usize, reason: &'static str) -> Error {
        Error::InvalidJson {
            offset: self.offset.saturating_add(at),
            reason,
        }
    }

    /// Sends masked output where it belongs: to `out`, or while a ruled value is read, to
    /// its buffer (or nowhere, when its replacement does not depend on it).
    fn write(
        ruled: Option<&Ruled>,
        whole: &mut Vec<u8>,
        limit: usize,
        out: &mut Vec<u8>,
        bytes: &[u8],
    ) -> Result<()> {
        match ruled {
            None => out.extend_from_slice(bytes),
            Some(r) if r.keep => {
                let len = whole.len().saturating_add(bytes.len());
                if len > limit {
                    return Err(Error::ValueTooLarge { len, limit });
                }
                whole.extend_from_slice(bytes);
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The parser. `mark` is where the bytes of `chunk` not yet written start: clean tokens
    /// do not move it, so a run of structure and unchanged tokens is written at once.
    fn run(
        &mut self,
        chunk: &[u8],
        eof: bool,
        out: &mut Vec<u8>,
        counts: &mut MaskedCounts,
    ) -> Result<()> {
        let profile = Arc::clone(&self.profile);
        let p = &*profile;
        let mut i = 0usize;
        let mut mark = 0usize;
        self.tok_at = None;
        while let Some(&b) = chunk.get(i) {
            match self.expect {
                Expect::Str { key, esc, escaped } => {
                    let mut escaped = escaped;
                    let mut esc = esc;
                    // Scan to the closing quote; escapes are checked here, UTF-8 when the
                    // string is complete.
                    let mut end = None;
                    while let Some(&c) = chunk.get(i) {
                        match esc {
                            Esc::None => {
                                let rest = chunk.get(i..).unwrap_or_default();
                                let stop = memchr::memchr2(b'"', b'\\', rest);
                                let run =
                                    rest.get(..stop.unwrap_or(rest.len())).unwrap_or_default();
                                if has_control(run) {
                                    let k = run.iter().position(|x| *x < 0x20).unwrap_or(0);
                                    return Err(self.err(i + k, "control character in string"));
                                }
                                let Some(stop) = stop else {
                                    i = chunk.len();
                                    break;
                                };
                                i += stop;
                                if chunk.get(i) == Some(&b'"') {
                                    i += 1;
                                    end = Some(i);
                                    break;
                                }
                                i += 1;
                                escaped = true;
                                esc = Esc::Backslash;
                            }
                            Esc::Backslash => {
                                esc = match c {
                                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                                        Esc::None
                                    }
                                    b'u' => Esc::Hex(0),
                                    _ => return Err(self.err(i, "invalid escape")),
                                };
                                i += 1;
                            }
                            Esc::Hex(n) => {
                                if !c.is_ascii_hexdigit() {
                                    return Err(self.err(i, "invalid \\u escape"));
                                }
                                esc = if n >= 3 { Esc::None } else { Esc::Hex(n + 1) };
                                i += 1;
                            }
                        }
                    }
                    match end {
                        None => self.expect = Expect::Str { key, esc, escaped },
                        Some(e) => {
                            self.string_end(p, chunk, &mut mark, e, key, escaped, out, counts)?;
                        }
                    }
                }
                Expect::Num(st) => {
                    let mut st = st;
                    let mut end = None;
                    while let Some(&c) = chunk.get(i) {
                        match st.step(c) {
                            Ok(Some(next)) => {
                                st = next;
                                i += 1;
                            }
                            Ok(None) => {
                                end = Some(i);
                                break;
                            }
                            Err(reason) => return Err(self.err(i, reason)),
                        }
                    }
                    self.expect = Expect::Num(st);
                    if let Some(e) = end {
                        self.number_end(p, chunk, &mut mark, e, out, counts)?;
                    }
                }
                Expect::Lit { lit, n } => {
                    if lit.get(n) != Some(&b) {
                        return Err(Error::InvalidJson {
                            offset: self.tok_offset,
                            reason: "invalid literal",
                        });
                    }
                    i += 1;
                    if n + 1 == lit.len() {
                        self.literal_end(p, chunk, &mut mark, i, out, counts)?;
                    } else {
                        self.expect = Expect::Lit { lit, n: n + 1 };
                    }
                }
                _ if is_ws(b) => {
                    i += 1;
                    self.need_sep = false;
                }
                Expect::Value | Expect::ValueOrClose => {
                    if b == b']' && self.expect == Expect::ValueOrClose {
                        i += 1;
                        self.close(p, chunk, &mut mark, i, out, counts)?;
                    } else {
                        self.value_start(p, chunk, &mut mark, i, out)?;
                        i += self.begin(i, b)?;
                    }
                }
                Expect::KeyOrClose | Expect::Key => {
                    if b == b'}' && self.expect == Expect::KeyOrClose {
                        i += 1;
                        self.close(p, chunk, &mut mark, i, out, counts)?;
                    } else if b == b'"' {
                        self.start_token(
                            i,
                            Expect::Str {
                                key: true,
                                esc: Esc::None,
                                escaped: false,
                            },
                        );
                        i += 1;
                    } else {
                        return Err(self.err(i, "expected a member name"));
                    }
                }
                Expect::Colon => {
                    if b != b':' {
                        return Err(self.err(i, "expected ':'"));
                    }
                    i += 1;
                    self.expect = Expect::Value;
                }
                Expect::After => {
                    let top = self.stack.last().copied();
                    match (top, b) {
                        (Some(Frame::Object), b',') => self.expect = Expect::Key,
                        (Some(Frame::Array(_)), b',') => self.expect = Expect::Value,
                        (Some(Frame::Object), b'}') | (Some(Frame::Array(_)), b']') => {}
                        (Some(Frame::Array(_)), _) => {
                            return Err(self.err(i, "expected ',' or ']'"));
                        }
                        _ => return Err(self.err(i, "expected ',' or '}'")),
                    }
                    i += 1;
                    if b != b',' {
                        self.close(p, chunk, &mut mark, i, out, counts)?;
                    }
                }
                Expect::End => {
                    return Err(self.err(i, "trailing characters after the document"));
                }
                Expect::Finished => {
                    return Err(self.err(i, "input after the end of the stream"));
                }
            }
        }
        if eof
            && let Expect::Num(st) = self.expect
            && st.complete()
            && self.stack.is_empty()
        {
            self.number_end(p, chunk, &mut mark, chunk.len(), out, counts)?;
        }
        // Release everything up to the token in progress, and hold that back.
        let in_token = matches!(
            self.expect,
            Expect::Str { .. } | Expect::Num(_) | Expect::Lit { .. }
        );
        let hold = if in_token {
            self.tok_at.unwrap_or(0)
        } else {
            chunk.len()
        };
        let limit = self.limit();
        Self::write(
            self.ruled.as_ref(),
            &mut self.whole,
            limit,
            out,
            chunk.get(mark..hold).unwrap_or_default(),
        )?;
        let rest = chunk.get(hold..).unwrap_or_default();
        let len = self.tok.len().saturating_add(rest.len());
        if len > limit {
            return Err(Error::ValueTooLarge { len, limit });
        }
        self.tok.extend_from_slice(rest);
        self.tok_at = None;
        Ok(())
    }

    fn start_token(&mut self, i: usize, expect: Expect) {
        self.tok_at = Some(i);
        self.tok_offset = self.offset.saturating_add(i);
        self.expect = expect;
    }

    /// A value starts at `i`: its place in the path, and whether a rule masks it whole.
    fn value_start(
        &mut self,
        p: &Profile,
        chunk: &[u8],
        mark: &mut usize,
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if self.need_sep {
            return Err(self.err(i, "expected whitespace between documents"));
        }
        self.started = true;
        if !p.has_json_rules() {
            return Ok(());
        }
        if let Some(Frame::Array(n)) = self.stack.last() {
            self.path.push(PathElem::Index(*n));
        }
        if self.ruled.is_some() || self.path.is_empty() {
            return Ok(());
        }
        let Some(rule) = p.json_rule(&self.path) else {
            return Ok(());
        };
        out.extend_from_slice(chunk.get(*mark..i).unwrap_or_default());
        *mark = i;
        // Redaction and null do not depend on what they replace: nothing to keep.
        let keep = !matches!(rule.strategy, Strategy::Redact { .. } | Strategy::Null);
        self.ruled = Some(Ruled {
            rule: rule.clone(),
            depth: self.stack.len(),
            keep,
            string: chunk.get(i) == Some(&b'"'),
        });
        Ok(())
    }

    /// Begins the value whose first byte `b` is at `i`; returns how many bytes it consumed.
    fn begin(&mut self, i: usize, b: u8) -> Result<usize> {
        match b {
            b'{' | b'[' => {
                let limit = self.profile.limits().max_json_depth;
                if self.stack.len() >= limit {
                    return Err(Error::JsonTooDeep { limit });
                }
                if b == b'{' {
                    self.stack.push(Frame::Object);
                    self.expect = Expect::KeyOrClose;
                } else {
                    self.stack.push(Frame::Array(0));
                    self.expect = Expect::ValueOrClose;
                }
                Ok(1)
            }
            b'"' => {
                self.start_token(
                    i,
                    Expect::Str {
                        key: false,
                        esc: Esc::None,
                        escaped: false,
                    },
                );
                Ok(1)
            }
            b't' | b'f' | b'n' => {
                let lit: &'static [u8] = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                self.start_token(i, Expect::Lit { lit, n: 1 });
                Ok(1)
            }
            b'-' => {
                self.start_token(i, Expect::Num(Num::Minus));
                Ok(1)
            }
            b'0' => {
                self.start_token(i, Expect::Num(Num::Zero));
                Ok(1)
            }
            b'1'..=b'9' => {
                self.start_token(i, Expect::Num(Num::Int));
                Ok(1)
            }
            _ => Err(self.err(i, "expected a value")),
        }
    }

    /// The current token, ending at `e` in `chunk`: `Some(start)` when it lies in `chunk`
    /// from `start`, `None` when its bytes were appended to `self.tok`.
    fn token(&mut self, chunk: &[u8], e: usize) -> Result<Option<usize>> {
        let limit = self.limit();
        if self.tok.is_empty() {
            let start = self.tok_at.unwrap_or(0);
            let len = e.saturating_sub(start);
            if len > limit {
                return Err(Error::ValueTooLarge { len, limit });
            }
            return Ok(Some(start));
        }
        let head = chunk.get(..e).unwrap_or_default();
        let len = self.tok.len().saturating_add(head.len());
        if len > limit {
            return Err(Error::ValueTooLarge { len, limit });
        }
        self.tok.extend_from_slice(head);
        Ok(None)
    }

    /// Writes a finished token: `repl` in its place, or the held-back bytes in `self.tok`
    /// when it stays and began in an earlier chunk (one that began in this chunk is written
    /// later, with what follows it).
    fn token_done(
        &mut self,
        chunk: &[u8],
        mark: &mut usize,
        e: usize,
        repl: Option<String>,
        at: Option<usize>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let limit = self.limit();
        if let Some(r) = repl {
            let start = at.unwrap_or(0);
            let before = chunk.get(*mark..start).unwrap_or_default();
            Self::write(self.ruled.as_ref(), &mut self.whole, limit, out, before)?;
            Self::write(
                self.ruled.as_ref(),
                &mut self.whole,
                limit,
                out,
                r.as_bytes(),
            )?;
            *mark = e;
        } else if at.is_none() {
            Self::write(self.ruled.as_ref(), &mut self.whole, limit, out, &self.tok)?;
            *mark = e;
        }
        self.tok.clear();
        self.tok_at = None;
        Ok(())
    }

    /// A string token ended at `e`.
    #[allow(clippy::too_many_arguments)]
    fn string_end(
        &mut self,
        p: &Profile,
        chunk: &[u8],
        mark: &mut usize,
        e: usize,
        key: bool,
        escaped: bool,
        out: &mut Vec<u8>,
        counts: &mut MaskedCounts,
    ) -> Result<()> {
        let at = self.token(chunk, e)?;
        let raw = match at {
            Some(s) => chunk.get(s..e).unwrap_or_default(),
            None => &self.tok,
        };
        let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
        let base = self.tok_offset.saturating_add(1);
        let text: &str = if escaped {
            unescape(inner, &mut self.scratch).map_err(|k| Error::InvalidUtf8 {
                offset: base.saturating_add(k),
            })?;
            &self.scratch
        } else {
            std::str::from_utf8(inner).map_err(|err| Error::InvalidUtf8 {
                offset: base.saturating_add(err.valid_up_to()),
            })?
        };
        if key && p.has_json_rules() {
            let mut s = self.spare.pop().unwrap_or_default();
            s.clear();
            s.push_str(text);
            self.path.push(PathElem::Key(Cow::Owned(s)));
        }
        let repl = if self.ruled.is_some() {
            None
        } else if key {
            mask_member_name(p, text, counts)?
        } else {
            mask_string(p, text, 0, counts)?
        };
        self.token_done(chunk, mark, e, repl, at, out)?;
        if key {
            self.expect = Expect::Colon;
            Ok(())
        } else {
            self.value_end(p, chunk, mark, e, out, counts)
        }
    }

    /// A number token ended at `e` (the byte there, if any, is not part of it).
    fn number_end(
        &mut self,
        p: &Profile,
        chunk: &[u8],
        mark: &mut usize,
        e: usize,
        out: &mut Vec<u8>,
        counts: &mut MaskedCounts,
    ) -> Result<()> {
        let at = self.token(chunk, e)?;
        let raw = match at {
            Some(s) => chunk.get(s..e).unwrap_or_default(),
            None => &self.tok,
        };
        let repl = if self.ruled.is_some() {
            None
        } else {
            mask_number(p, raw, counts)?
        };
        self.token_done(chunk, mark, e, repl, at, out)?;
        self.value_end(p, chunk, mark, e, out, counts)?;
        if self.stack.is_empty() {
            self.need_sep = true;
        }
        Ok(())
    }

    /// A literal ended at `e`. Literals are never masked by content, only by rules.
    fn literal_end(
        &mut self,
        p: &Profile,
        chunk: &[u8],
        mark: &mut usize,
        e: usize,
        out: &mut Vec<u8>,
        counts: &mut MaskedCounts,
    ) -> Result<()> {
        let at = self.token(chunk, e)?;
        self.token_done(chunk, mark, e, None, at, out)?;
        self.value_end(p, chunk, mark, e, out, counts)?;
        if self.stack.is_empty() {
            self.need_sep = true;
        }
        Ok(())
    }

    /// The container on top of the stack closed; its last byte is before `e`.
    fn close(
        &mut self,
        p: &Profile,
        chunk: &[u8],
        mark: &mut usize,
        e: usize,
        out: &mut Vec<u8>,
        counts: &mut MaskedCounts,
    ) -> Result<()> {
        self.stack.pop();
        self.value_end(p, chunk, mark, e, out, counts)
    }

    /// A value ended at `e`: replace it if a rule masks it whole, step the path, and say what
    /// may follow.
    fn value_end(
        &mut self,
        p: &Profile,
        chunk: &[u8],
        mark: &mut usize,
        e: usize,
        out: &mut Vec<u8>,
        counts: &mut MaskedCounts,
    ) -> Result<()> {
        if self
            .ruled
            .as_ref()
            .is_some_and(|r| r.depth == self.stack.len())
        {
            let limit = self.limit();
            Self::write(
                self.ruled.as_ref(),
                &mut self.whole,
                limit,
                out,
                chunk.get(*mark..e).unwrap_or_default(),
            )?;
            *mark = e;
            if let Some(r) = self.ruled.take() {
                let repl = if !r.keep {
                    mask_ruled(p, &r.rule, &[], counts)?
                } else if r.string {
                    let inner = self
                        .whole
                        .get(1..self.whole.len().saturating_sub(1))
                        .unwrap_or_default();
                    let off = self.offset;
                    unescape(inner, &mut self.scratch).map_err(|k| Error::InvalidUtf8 {
                        offset: off.saturating_add(k),
                    })?;
                    mask_ruled(p, &r.rule, self.scratch.as_bytes(), counts)?
                } else {
                    mask_ruled(p, &r.rule, &self.whole, counts)?
                };
                self.whole.clear();
                out.extend_from_slice(repl.as_bytes());
            }
        }
        match self.stack.last_mut() {
            Some(Frame::Array(n)) => {
                *n = n.saturating_add(1);
                if p.has_json_rules() {
                    self.path.pop();
                }
                self.expect = Expect::After;
            }
            Some(Frame::Object) => {
                if p.has_json_rules()
                    && let Some(PathElem::Key(Cow::Owned(s))) = self.path.pop()
                {
                    self.spare.push(s);
                }
                self.expect = Expect::After;
            }
            None => {
                self.expect = if self.sequence {
                    Expect::Value
                } else {
                    Expect::End
                };
            }
        }
        Ok(())
    }
}

/// Decodes the content of a string token whose escapes were checked while it was scanned,
/// as the whole-document masker does: a lone surrogate becomes U+FFFD. `Err` holds the
/// offset of invalid UTF-8 (or of an escape that should not have got through).
fn unescape(inner: &[u8], out: &mut String) -> Result<(), usize> {
    out.clear();
    let mut i = 0usize;
    loop {
        let rest = inner.get(i..).unwrap_or_default();
        let n = memchr::memchr(b'\\', rest).unwrap_or(rest.len());
        let seg = rest.get(..n).unwrap_or_default();
        out.push_str(std::str::from_utf8(seg).map_err(|e| i + e.valid_up_to())?);
        i += n;
        let Some(&e) = inner.get(i + 1) else {
            return if i >= inner.len() { Ok(()) } else { Err(i) };
        };
        let at = i;
        i += 2;
        match e {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let hi = hex4(inner.get(i..i + 4)).ok_or(at)?;
                i += 4;
                let mut c = char::from_u32(hi);
                if (0xD800..0xDC00).contains(&hi) && inner.get(i..i + 2) == Some(b"\\u") {
                    let lo = hex4(inner.get(i + 2..i + 6)).ok_or(i)?;
                    if (0xDC00..0xE000).contains(&lo) {
                        c = char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
                        i += 6;
                    }
                }
                // Lone surrogates are valid JSON but not text.
                out.push(c.unwrap_or('\u{FFFD}'));
            }
            _ => return Err(at),
        }
    }
}

fn hex4(h: Option<&[u8]>) -> Option<u32> {
    let h = h?;
    if h.len() != 4 {
        return None;
    }
    h.iter().try_fold(0u32, |acc, b| {
        let d = char::from(*b).to_digit(16)?;
        Some(acc * 16 + d)
    })
}

impl fmt::Debug for JsonStream {
    /// Shows the parser's position, never the bytes it holds (they may be sensitive).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonStream")
            .field("profile", &self.profile.name())
            .field("sequence", &self.sequence)
            .field("expect", &self.expect)
            .field("depth", &self.stack.len())
            .field("offset", &self.offset)
            .field("pending", &self.pending())
            .field("ruled", &self.ruled.as_ref().map(|r| &r.rule.entity))
            .field("failed", &self.failed)
            .finish()
    }
}
