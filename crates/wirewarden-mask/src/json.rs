//! JSON masking without a round trip through a document model: a strict RFC 8259 parser that
//! walks the text once, tracks the path for JSON-path rules, decodes strings (escapes such as
//! `\u0073` included) before matching, unpacks JSON held in strings up to a limit, and
//! rewrites only the tokens that change. Everything else — key order, whitespace, number
//! spelling — is kept byte for byte, and unchanged documents are not copied at all.

use std::borrow::Cow;

use wirewarden_core::MaskedCounts;

use crate::profile::{Edit, FieldRule, Profile};
use crate::rules::PathElem;
use crate::strategy::{ValueType, json_string, mask_whole};
use crate::{Error, Result};

/// Masks the JSON document `text`; `nested` counts the JSON levels around it.
pub(crate) fn mask(
    profile: &Profile,
    text: &str,
    nested: usize,
    counts: &mut MaskedCounts,
) -> Result<Edit> {
    let mut w = Walker {
        p: profile,
        b: text.as_bytes(),
        i: 0,
        nested,
        counts,
        edits: Vec::new(),
        path: Vec::new(),
        suppress: 0,
    };
    w.value(0)?;
    w.ws();
    if w.i != w.b.len() {
        return Err(w.err("trailing characters after the document"));
    }
    if w.edits.is_empty() {
        return Ok(Edit::Unchanged);
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut last = 0;
    for (s, e, r) in &w.edits {
        out.push_str(text.get(last..*s).unwrap_or_default());
        out.push_str(r);
        last = *e;
    }
    out.push_str(text.get(last..).unwrap_or_default());
    Ok(Edit::Changed(out))
}

// === per-value masking, shared with the streaming masker ===
//
// Each returns the JSON text that replaces the token, or `None` when the token stays as it
// is; both maskers call these so that a document masked whole and the same document masked
// chunk by chunk come out byte for byte the same.

/// A member name, by content only: never unpacked as JSON, and never `null` (a member name
/// cannot be).
pub(crate) fn mask_member_name(
    p: &Profile,
    s: &str,
    counts: &mut MaskedCounts,
) -> Result<Option<String>> {
    Ok(match p.spans(s.as_bytes(), counts)? {
        Edit::Unchanged => None,
        Edit::Null => Some(json_string("[REDACTED]")),
        Edit::Changed(b) => Some(json_string(&String::from_utf8_lossy(&b))),
    })
}

/// A string value (decoded), by content; JSON inside it is unpacked up to the profile's
/// limit, `nested` counting the levels around it.
pub(crate) fn mask_string(
    p: &Profile,
    s: &str,
    nested: usize,
    counts: &mut MaskedCounts,
) -> Result<Option<String>> {
    Ok(match p.text(s, nested, counts)? {
        Edit::Unchanged => None,
        Edit::Null => Some("null".to_owned()),
        Edit::Changed(m) => Some(json_string(&m)),
    })
}

/// A number token (its raw text), by content: a card number can be written as a number.
/// A masked number becomes a string, since its masked form is rarely a number.
pub(crate) fn mask_number(
    p: &Profile,
    raw: &[u8],
    counts: &mut MaskedCounts,
) -> Result<Option<String>> {
    Ok(match p.spans(raw, counts)? {
        Edit::Unchanged => None,
        Edit::Null => Some("null".to_owned()),
        Edit::Changed(m) => Some(json_string(&String::from_utf8_lossy(&m))),
    })
}

/// A value that the JSON-path rule `rule` masks as a whole: `content` is the decoded text of
/// a string, the raw text of anything else (an object or array included).
pub(crate) fn mask_ruled(
    p: &Profile,
    rule: &FieldRule,
    content: &[u8],
    counts: &mut MaskedCounts,
) -> Result<String> {
    counts.add(&rule.entity, 1);
    let out = mask_whole(
        &rule.strategy,
        p.key(),
        &rule.entity,
        ValueType::Text,
        content,
    )?;
    Ok(match out {
        None => "null".to_owned(),
        Some(b) => json_string(&String::from_utf8_lossy(&b)),
    })
}

// === impl Walker ===

struct Walker<'t, 'p, 'c> {
    p: &'p Profile,
    b: &'t [u8],
    i: usize,
    nested: usize,
    counts: &'c mut MaskedCounts,
    /// Replacements `(start, end, text)`, in document order, never overlapping.
    edits: Vec<(usize, usize, String)>,
    path: Vec<PathElem<'t>>,
    /// Greater than zero inside a value that a rule masks as a whole.
    suppress: usize,
}

impl<'t> Walker<'t, '_, '_> {
    fn err(&self, reason: &'static str) -> Error {
        Error::InvalidJson {
            offset: self.i,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8, reason: &'static str) -> Result<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    fn value(&mut self, depth: usize) -> Result<()> {
        self.ws();
        let start = self.i;
        let rule = if self.suppress == 0 && self.p.has_json_rules() && !self.path.is_empty() {
            self.p.json_rule(&self.path).cloned()
        } else {
            None
        };
        if rule.is_some() {
            self.suppress += 1;
        }
        let content = self.token(depth)?;
        if let Some(rule) = rule {
            self.suppress -= 1;
            let raw: Cow<'_, str> = match &content {
                Some(c) => Cow::Borrowed(c.as_ref()),
                None => String::from_utf8_lossy(self.b.get(start..self.i).unwrap_or_default()),
            };
            let repl = mask_ruled(self.p, &rule, raw.as_bytes(), self.counts)?;
            self.edits.push((start, self.i, repl));
        }
        Ok(())
    }

    /// Parses one value; for strings returns the decoded content, and masks leaves by content
    /// unless a rule covers them.
    fn token(&mut self, depth: usize) -> Result<Option<Cow<'t, str>>> {
        let start = self.i;
        match self.peek() {
            Some(b'{') => {
                self.enter(depth)?;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(None);
                }
                loop {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.err("expected a member name"));
                    }
                    let ks = self.i;
                    let key = self.string()?;
                    let ke = self.i;
                    if self.suppress == 0 {
                        self.content(ks, ke, &key, true)?;
                    }
                    self.ws();
                    self.expect(b':', "expected ':'")?;
                    self.path.push(PathElem::Key(key));
                    self.value(depth + 1)?;
                    self.path.pop();
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(None);
                        }
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(b'[') => {
                self.enter(depth)?;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(None);
                }
                let mut n = 0usize;
                loop {
                    self.path.push(PathElem::Index(n));
                    self.value(depth + 1)?;
                    self.path.pop();
                    n += 1;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(None);
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => {
                let s = self.string()?;
                if self.suppress == 0 {
                    self.content(start, self.i, &s, false)?;
                }
                Ok(Some(s))
            }
            Some(b't') => self.literal(b"true").map(|()| None),
            Some(b'f') => self.literal(b"false").map(|()| None),
            Some(b'n') => self.literal(b"null").map(|()| None),
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                if self.suppress == 0 {
                    let raw = self.b.get(start..self.i).unwrap_or_default();
                    if let Some(m) = mask_number(self.p, raw, self.counts)? {
                        self.edits.push((start, self.i, m));
                    }
                }
                Ok(None)
            }
            _ => Err(self.err("expected a value")),
        }
    }

    fn enter(&mut self, depth: usize) -> Result<()> {
        let limit = self.p.limits().max_json_depth;
        if depth >= limit {
            return Err(Error::JsonTooDeep { limit });
        }
        self.i += 1;
        Ok(())
    }

    /// Masks the decoded string `s` (the token `start..end`) by content.
    fn content(&mut self, start: usize, end: usize, s: &str, key: bool) -> Result<()> {
        let repl = if key {
            mask_member_name(self.p, s, self.counts)?
        } else {
            mask_string(self.p, s, self.nested, self.counts)?
        };
        if let Some(m) = repl {
            self.edits.push((start, end, m));
        }
        Ok(())
    }

    fn literal(&mut self, lit: &[u8]) -> Result<()> {
        if self.b.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn digits(&mut self) -> usize {
        let n = self
            .b
            .get(self.i..)
            .map_or(0, |s| s.iter().take_while(|b| b.is_ascii_digit()).count());
        self.i += n;
        n
    }

    fn number(&mut self) -> Result<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid fraction"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid exponent"));
            }
        }
        Ok(())
    }

    /// A string token at `"`: its decoded content, borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'t, str>> {
        self.i += 1;
        let start = self.i;
        let rest = self.b.get(start..).unwrap_or_default();
        let Some(stop) = memchr::memchr2(b'"', b'\\', rest) else {
            return Err(self.err("unterminated string"));
        };
        let plain = rest.get(..stop).unwrap_or_default();
        if plain.iter().any(|b| *b < 0x20) {
            return Err(self.err("control character in string"));
        }
        if rest.get(stop) == Some(&b'"') {
            self.i = start + stop + 1;
            let s = std::str::from_utf8(plain).map_err(|_| self.err("invalid UTF-8"))?;
            return Ok(Cow::Borrowed(s));
        }
        // Escapes: decode.
        let mut out = String::from_utf8_lossy(plain).into_owned();
        self.i = start + stop;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            match b {
                b'"' => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek().ok_or_else(|| self.err("unterminated escape"))?;
                    self.i += 1;
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
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi)
                                && self.b.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                } else {
                                    self.i = save;
                                    None
                                }
                            } else {
                                char::from_u32(hi)
                            };
                            // Lone surrogates are valid JSON but not text.
                            out.push(c.unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                0..0x20 => return Err(self.err("control character in string")),
                _ => {
                    let run = self.b.get(self.i..).unwrap_or_default();
                    let n = memchr::memchr2(b'"', b'\\', run).unwrap_or(run.len());
                    let seg = run.get(..n).unwrap_or_default();
                    if seg.iter().any(|b| *b < 0x20) {
                        return Err(self.err("control character in string"));
                    }
                    out.push_str(std::str::from_utf8(seg).map_err(|_| self.err("invalid UTF-8"))?);
                    self.i += n;
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("invalid \\u escape"))?;
        self.i += 4;
        Ok(h)
    }
}
