//! Strategies (how a sensitive value is replaced) and value types (what the replacement must
//! stay valid as).

use std::fmt;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::unicode::{digit_like, digit_value, is_ignorable};
use crate::{Error, Result};

/// How a sensitive value is replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StrategyRepr", into = "StrategyTable")]
#[non_exhaustive]
pub enum Strategy {
    /// Replace with a fixed text (`[REDACTED]` unless configured).
    Redact {
        /// The replacement text; `None` for `[REDACTED]`.
        text: Option<String>,
    },
    /// Keep the first and last few letters or digits, mask the rest with `mask_char`;
    /// separators stay. If nothing would be masked, everything is.
    Partial {
        /// Letters or digits kept at the start.
        keep_first: usize,
        /// Letters or digits kept at the end.
        keep_last: usize,
        /// The character that replaces the others.
        mask_char: char,
    },
    /// A deterministic keyed token (`tok_` and 16 hex digits of a keyed blake3 hash of the
    /// normalised value): equal values give equal tokens, so joins and group-bys still work,
    /// and nobody without the key can tell what the value was.
    Tokenize,
    /// The full keyed blake3 hash (64 hex digits).
    Hash,
    /// Replace the whole value with NULL (JSON `null` inside JSON).
    Null,
    /// Keyed, deterministic replacement that keeps the shape: digits stay digits (of the same
    /// script), letters stay letters of the same case, length and separators are kept.
    FormatPreserving,
}

impl Strategy {
    /// A redaction with the default text.
    #[must_use]
    pub const fn redact() -> Self {
        Self::Redact { text: None }
    }

    /// Keep the last `n` letters or digits (`**** **** **** 1111`).
    #[must_use]
    pub const fn keep_last(n: usize) -> Self {
        Self::Partial {
            keep_first: 0,
            keep_last: n,
            mask_char: '*',
        }
    }

    /// A short name for errors and logs.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Redact { .. } => "redact",
            Self::Partial { .. } => "partial",
            Self::Tokenize => "tokenize",
            Self::Hash => "hash",
            Self::Null => "null",
            Self::FormatPreserving => "format_preserving",
        }
    }

    /// Whether the strategy needs the engine's key.
    #[must_use]
    pub const fn needs_key(&self) -> bool {
        matches!(self, Self::Tokenize | Self::Hash | Self::FormatPreserving)
    }
}

/// The configuration form: a bare name (`"tokenize"`) or a table with `kind`.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrategyRepr {
    Name(String),
    Table(StrategyTable),
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum StrategyTable {
    Redact {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    Partial {
        #[serde(default)]
        keep_first: usize,
        #[serde(default)]
        keep_last: usize,
        #[serde(default = "star")]
        mask_char: char,
    },
    Tokenize,
    Hash,
    Null,
    FormatPreserving,
}

fn star() -> char {
    '*'
}

impl TryFrom<StrategyRepr> for Strategy {
    type Error = String;

    fn try_from(r: StrategyRepr) -> Result<Self, String> {
        Ok(match r {
            StrategyRepr::Name(n) => match n.as_str() {
                "redact" => Self::redact(),
                "tokenize" => Self::Tokenize,
                "hash" => Self::Hash,
                "null" => Self::Null,
                "format_preserving" => Self::FormatPreserving,
                other => return Err(format!("unknown strategy {other:?}")),
            },
            StrategyRepr::Table(t) => match t {
                StrategyTable::Redact { text } => Self::Redact { text },
                StrategyTable::Partial {
                    keep_first,
                    keep_last,
                    mask_char,
                } => Self::Partial {
                    keep_first,
                    keep_last,
                    mask_char,
                },
                StrategyTable::Tokenize => Self::Tokenize,
                StrategyTable::Hash => Self::Hash,
                StrategyTable::Null => Self::Null,
                StrategyTable::FormatPreserving => Self::FormatPreserving,
            },
        })
    }
}

impl From<Strategy> for StrategyTable {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::Redact { text } => Self::Redact { text },
            Strategy::Partial {
                keep_first,
                keep_last,
                mask_char,
            } => Self::Partial {
                keep_first,
                keep_last,
                mask_char,
            },
            Strategy::Tokenize => Self::Tokenize,
            Strategy::Hash => Self::Hash,
            Strategy::Null => Self::Null,
            Strategy::FormatPreserving => Self::FormatPreserving,
        }
    }
}

/// The type a value must remain after masking. Values are in their text form (Postgres text
/// format, Redis bulk strings, HTTP bodies); `Bytes` are raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ValueType {
    /// UTF-8 text; invalid UTF-8 is an error.
    Text,
    /// Raw bytes; scanned where they hold text.
    Bytes,
    /// An integer: masked forms are digits (never larger in magnitude) or NULL.
    Integer,
    /// A decimal number: digits are replaced, sign, point and exponent kept.
    Numeric,
    /// `true`/`false`: a masked boolean is NULL.
    Boolean,
    /// A UUID: masked forms are token-derived valid UUIDs or NULL.
    Uuid,
    /// A date (`YYYY-MM-DD`): masked forms are token-derived dates or NULL.
    Date,
    /// A timestamp: masked forms are token-derived ISO timestamps or NULL.
    Timestamp,
    /// A JSON document: masked inside, re-serialised as valid JSON.
    Json,
    /// A type the masker knows nothing about: only NULL can replace it.
    Opaque,
}

impl ValueType {
    /// The lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Bytes => "bytes",
            Self::Integer => "integer",
            Self::Numeric => "numeric",
            Self::Boolean => "boolean",
            Self::Uuid => "uuid",
            Self::Date => "date",
            Self::Timestamp => "timestamp",
            Self::Json => "json",
            Self::Opaque => "opaque",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The secret behind tokenization, hashing and format-preserving replacement. Each strategy
/// uses its own key derived from it, so a token never equals a hash prefix.
#[derive(Clone)]
pub struct MaskKey {
    token: [u8; 32],
    hash: [u8; 32],
    fpe: [u8; 32],
}

impl fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

impl MaskKey {
    /// A key from 32 secret bytes.
    #[must_use]
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            token: blake3::derive_key("wirewarden-mask v1 tokenize", &secret),
            hash: blake3::derive_key("wirewarden-mask v1 hash", &secret),
            fpe: blake3::derive_key("wirewarden-mask v1 format-preserving", &secret),
        }
    }

    /// A key from 64 hexadecimal digits.
    ///
    /// # Errors
    /// [`Error::Config`] if `hex` is not 64 hexadecimal digits.
    pub fn from_hex(hex: &str) -> Result<Self> {
        let bad = || Error::config("key", "expected 64 hexadecimal digits");
        let b = hex.as_bytes();
        if b.len() != 64 {
            return Err(bad());
        }
        let mut secret = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| bad())?;
            let v = u8::from_str_radix(s, 16).map_err(|_| bad())?;
            if let Some(slot) = secret.get_mut(i) {
                *slot = v;
            }
        }
        Ok(Self::new(secret))
    }
}

/// How an entity's value is normalised before keyed hashing, so that `4111-1111…` and
/// `4111 1111…` give the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Canon {
    /// Only digit values count (cards, SSNs, phones).
    Digits,
    /// Letters and digits, case-folded (emails, IBANs).
    Folded,
    /// Exactly as written.
    Raw,
}

/// The input of a keyed hash: the entity (length-prefixed) and the value's canonical bytes.
///
/// Gathered on the stack and hashed in one call when short — the usual case (an email, a card
/// number), where setting up and moving a streaming hasher would cost more than hashing — and
/// streamed through a boxed hasher otherwise. Either way the hash is the same: blake3 does not
/// depend on how its input is split.
struct KeyedInput<'k> {
    key: &'k [u8; 32],
    buf: [u8; 256],
    n: usize,
    spill: Option<Box<blake3::Hasher>>,
}

impl<'k> KeyedInput<'k> {
    fn new(key: &'k [u8; 32], entity: &str, canon: Canon, value: &[u8]) -> Self {
        let mut b = Self {
            key,
            buf: [0; 256],
            n: 0,
            spill: None,
        };
        b.push(&(entity.len() as u64).to_le_bytes());
        b.push(entity.as_bytes());
        // ASCII (nearly every value) is canonicalised byte by byte; the loops below agree with
        // the character loops on it.
        let ascii = value.is_ascii();
        match canon {
            Canon::Digits if ascii => {
                for &c in value {
                    if c.is_ascii_digit() {
                        b.push_byte(c - b'0');
                    }
                }
            }
            Canon::Folded if ascii => {
                for &c in value {
                    b.push_byte(c.to_ascii_lowercase());
                }
            }
            Canon::Raw => b.push(value),
            Canon::Digits | Canon::Folded => match std::str::from_utf8(value) {
                Ok(s) if canon == Canon::Digits => {
                    for c in s.chars() {
                        if let Some(d) = digit_value(c) {
                            b.push_byte(d);
                        }
                    }
                }
                Ok(s) => {
                    for c in s.chars() {
                        if c.is_ascii() {
                            b.push_byte(c.to_ascii_lowercase() as u8);
                            continue;
                        }
                        if is_ignorable(c) {
                            continue;
                        }
                        let mut tmp = [0u8; 4];
                        let c = match digit_value(c) {
                            Some(d) => char::from(b'0' + d),
                            None => c,
                        };
                        for l in c.to_lowercase() {
                            b.push(l.encode_utf8(&mut tmp).as_bytes());
                        }
                    }
                }
                // Not text: hashed as it is.
                Err(_) => b.push(value),
            },
        }
        b
    }

    #[inline]
    fn push_byte(&mut self, c: u8) {
        match self.buf.get_mut(self.n) {
            Some(slot) => {
                *slot = c;
                self.n += 1;
            }
            None => self.push(&[c]),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if let Some(slot) = self.buf.get_mut(self.n..self.n + bytes.len()) {
            slot.copy_from_slice(bytes);
            self.n += bytes.len();
            return;
        }
        let key = self.key;
        let h = self
            .spill
            .get_or_insert_with(|| Box::new(blake3::Hasher::new_keyed(key)));
        h.update(self.buf.get(..self.n).unwrap_or_default());
        self.n = 0;
        match self.buf.get_mut(..bytes.len()) {
            Some(slot) => {
                slot.copy_from_slice(bytes);
                self.n = bytes.len();
            }
            None => {
                h.update(bytes);
            }
        }
    }

    fn gathered(&self) -> &[u8] {
        self.buf.get(..self.n).unwrap_or_default()
    }

    fn hash(self) -> blake3::Hash {
        match self.spill {
            None => blake3::keyed_hash(self.key, self.gathered()),
            Some(mut h) => {
                h.update(self.buf.get(..self.n).unwrap_or_default());
                h.finalize()
            }
        }
    }

    fn xof(self) -> blake3::OutputReader {
        let mut h = match self.spill {
            Some(h) => h,
            None => Box::new(blake3::Hasher::new_keyed(self.key)),
        };
        h.update(self.buf.get(..self.n).unwrap_or_default());
        h.finalize_xof()
    }
}

fn need_key<'k>(key: Option<&'k MaskKey>, s: &Strategy) -> Result<&'k MaskKey> {
    key.ok_or(Error::MissingKey { strategy: s.name() })
}

fn token(key: &MaskKey, entity: &str, canon: Canon, value: &[u8]) -> [u8; 32] {
    *KeyedInput::new(&key.token, entity, canon, value)
        .hash()
        .as_bytes()
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xF)]));
    }
}

/// Replacement of one span of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    /// The replacement was appended.
    Written,
    /// The strategy nulls the whole value.
    Null,
}

/// A stream of pseudo-random digits and letters for format-preserving replacement.
struct Fpe(blake3::OutputReader);

impl Fpe {
    fn new(key: &MaskKey, entity: &str, canon: Canon, value: &[u8]) -> Self {
        Self(KeyedInput::new(&key.fpe, entity, canon, value).xof())
    }

    /// Uniform in `0..n` (rejection sampling, so no digit is likelier than another).
    fn below(&mut self, n: u8) -> u8 {
        let limit = 256 - (256 % u16::from(n));
        loop {
            let mut b = [0u8; 1];
            self.0.fill(&mut b);
            if u16::from(b[0]) < limit {
                return b[0] % n;
            }
        }
    }
}

/// Appends the masked form of `span` (text of entity `entity`) to `out`.
pub(crate) fn mask_span(
    strategy: &Strategy,
    key: Option<&MaskKey>,
    entity: &str,
    canon: Canon,
    span: &str,
    out: &mut String,
) -> Result<Span> {
    match strategy {
        Strategy::Redact { text } => out.push_str(text.as_deref().unwrap_or("[REDACTED]")),
        Strategy::Partial {
            keep_first,
            keep_last,
            mask_char,
        } if span.is_ascii() => {
            // The common case, byte by byte: for ASCII, alphanumeric is the same test and no
            // character is ignorable.
            let n = span.bytes().filter(u8::is_ascii_alphanumeric).count();
            let (first, last) = if keep_first.saturating_add(*keep_last) >= n {
                (0, 0)
            } else {
                (*keep_first, *keep_last)
            };
            let masked = *mask_char;
            out.reserve(span.len());
            let mut k = 0;
            for b in span.bytes() {
                if b.is_ascii_alphanumeric() {
                    out.push(if k < first || k >= n - last {
                        char::from(b)
                    } else {
                        masked
                    });
                    k += 1;
                } else {
                    out.push(char::from(b));
                }
            }
        }
        Strategy::Partial {
            keep_first,
            keep_last,
            mask_char,
        } => {
            let significant = |c: char| c.is_alphanumeric();
            let n = span.chars().filter(|c| significant(*c)).count();
            let (first, last) = if keep_first.saturating_add(*keep_last) >= n {
                (0, 0)
            } else {
                (*keep_first, *keep_last)
            };
            let mut k = 0;
            for c in span.chars() {
                if significant(c) {
                    if k < first || k >= n - last {
                        out.push(c);
                    } else {
                        out.push(*mask_char);
                    }
                    k += 1;
                } else if !is_ignorable(c) {
                    out.push(c);
                }
            }
        }
        Strategy::Tokenize => {
            let t = token(need_key(key, strategy)?, entity, canon, span.as_bytes());
            out.push_str("tok_");
            push_hex(out, t.get(..8).unwrap_or_default());
        }
        Strategy::Hash => {
            let k = need_key(key, strategy)?;
            let h = KeyedInput::new(&k.hash, entity, canon, span.as_bytes()).hash();
            push_hex(out, h.as_bytes());
        }
        Strategy::Null => return Ok(Span::Null),
        Strategy::FormatPreserving => {
            let mut r = Fpe::new(need_key(key, strategy)?, entity, canon, span.as_bytes());
            for c in span.chars() {
                if digit_value(c).is_some() {
                    out.push(digit_like(c, r.below(10)));
                } else if c.is_ascii_uppercase() {
                    out.push(char::from(b'A' + r.below(26)));
                } else if c.is_ascii_lowercase() || c.is_alphabetic() {
                    out.push(char::from(b'a' + r.below(26)));
                } else if !is_ignorable(c) {
                    out.push(c);
                }
            }
        }
    }
    Ok(Span::Written)
}

/// The masked form of a whole value of type `ty` (not text: text is masked span by span).
/// `None` is NULL.
pub(crate) fn mask_whole(
    strategy: &Strategy,
    key: Option<&MaskKey>,
    entity: &str,
    ty: ValueType,
    value: &[u8],
) -> Result<Option<Vec<u8>>> {
    if matches!(strategy, Strategy::Null) {
        return Ok(None);
    }
    let canon = Canon::Raw;
    let text = std::str::from_utf8(value).ok();
    match ty {
        ValueType::Text | ValueType::Bytes => {
            let mut out = String::new();
            match text {
                Some(t) => {
                    if mask_span(strategy, key, entity, canon, t, &mut out)? == Span::Null {
                        return Ok(None);
                    }
                }
                None => {
                    // Bytes that are not text: shapes cannot be kept, so keyed strategies
                    // give their token and the others a redaction.
                    let s = match strategy {
                        Strategy::Hash | Strategy::Tokenize => strategy.clone(),
                        Strategy::FormatPreserving => Strategy::Tokenize,
                        _ => Strategy::redact(),
                    };
                    let lossy = String::from_utf8_lossy(value);
                    let _ = mask_span(&s, key, entity, canon, &lossy, &mut out)?;
                }
            }
            Ok(Some(out.into_bytes()))
        }
        ValueType::Integer | ValueType::Numeric => {
            let Some(t) = text.filter(|t| is_number(t, ty == ValueType::Integer)) else {
                return Ok(None);
            };
            match strategy {
                Strategy::Redact { .. } => Ok(None),
                Strategy::Partial {
                    keep_first,
                    keep_last,
                    ..
                } => {
                    let s = Strategy::Partial {
                        keep_first: *keep_first,
                        keep_last: *keep_last,
                        mask_char: '0',
                    };
                    let mut out = String::new();
                    mask_span(&s, key, entity, canon, t, &mut out)?;
                    Ok(Some(bounded_digits(t, &out).into_bytes()))
                }
                _ => {
                    let k = need_key(key, strategy)?;
                    let mut r = Fpe::new(k, entity, Canon::Digits, t.as_bytes());
                    let cand: String = t
                        .chars()
                        .map(|c| {
                            if c.is_ascii_digit() {
                                char::from(b'0' + r.below(10))
                            } else {
                                c
                            }
                        })
                        .collect();
                    Ok(Some(bounded_digits(t, &cand).into_bytes()))
                }
            }
        }
        ValueType::Boolean => Ok(None),
        ValueType::Uuid | ValueType::Date | ValueType::Timestamp => match strategy {
            Strategy::Tokenize | Strategy::Hash | Strategy::FormatPreserving => {
                let k = need_key(key, strategy)?;
                let t = token(k, entity, Canon::Folded, value);
                Ok(Some(derived(ty, &t).into_bytes()))
            }
            _ => Ok(None),
        },
        ValueType::Json => {
            let mut out = String::new();
            let t = String::from_utf8_lossy(value);
            if mask_span(strategy, key, entity, canon, &t, &mut out)? == Span::Null {
                return Ok(None);
            }
            Ok(Some(json_string(&out).into_bytes()))
        }
        ValueType::Opaque => Err(Error::Unrepresentable {
            value_type: ty.as_str(),
            strategy: strategy.name(),
        }),
    }
}

/// `-?digits` (integer) or a decimal with optional point and exponent.
fn is_number(t: &str, integer: bool) -> bool {
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    if body.is_empty() || !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return false;
    }
    if integer {
        body.bytes().all(|b| b.is_ascii_digit())
    } else {
        body.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    }
}

/// `cand` (same shape as `orig`) with its first digit lowered to 0 when it would be larger in
/// magnitude than `orig`: the result always fits wherever the original fitted.
fn bounded_digits(orig: &str, cand: &str) -> String {
    let od = orig.bytes().filter(u8::is_ascii_digit);
    let cd = cand.bytes().filter(u8::is_ascii_digit);
    if cd.cmp(od) != std::cmp::Ordering::Greater {
        return cand.to_owned();
    }
    let mut done = false;
    cand.chars()
        .map(|c| {
            if !done && c.is_ascii_digit() {
                done = true;
                '0'
            } else {
                c
            }
        })
        .collect()
}

/// A valid value of `ty` derived from token bytes.
fn derived(ty: ValueType, t: &[u8; 32]) -> String {
    let b = |i: usize| u32::from(t.get(i).copied().unwrap_or(0));
    match ty {
        ValueType::Uuid => {
            let mut u = [0u8; 16];
            u.copy_from_slice(t.get(..16).unwrap_or(&[0; 16]));
            // Version 8 (custom), RFC 9562 variant.
            u[6] = (u[6] & 0x0F) | 0x80;
            u[8] = (u[8] & 0x3F) | 0x80;
            let mut s = String::with_capacity(36);
            for (i, x) in u.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                let _ = write!(s, "{x:02x}");
            }
            s
        }
        _ => {
            let year = 1900 + (b(0) << 8 | b(1)) % 120;
            let month = 1 + b(2) % 12;
            let day = 1 + b(3) % 28;
            if ty == ValueType::Date {
                format!("{year:04}-{month:02}-{day:02}")
            } else {
                format!(
                    "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
                    b(4) % 24,
                    b(5) % 60,
                    b(6) % 60
                )
            }
        }
    }
}

/// `s` as a JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"[REDACTED]\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MaskKey {
        MaskKey::new([7; 32])
    }

    fn span(s: &Strategy, entity: &str, canon: Canon, v: &str) -> String {
        let mut out = String::new();
        assert_eq!(
            mask_span(s, Some(&key()), entity, canon, v, &mut out).unwrap(),
            Span::Written
        );
        out
    }

    /// The keyed hash as first written: a streaming hasher fed the entity and then the
    /// canonical form character by character. Tokens must never change across versions
    /// (they are joined on), so the gathered one-shot hash is checked against it.
    fn keyed_reference(key: &[u8; 32], entity: &str, canon: Canon, value: &[u8]) -> blake3::Hasher {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(&(entity.len() as u64).to_le_bytes());
        h.update(entity.as_bytes());
        match (canon, std::str::from_utf8(value)) {
            (Canon::Digits, Ok(s)) => {
                for c in s.chars() {
                    if let Some(d) = digit_value(c) {
                        h.update(&[d]);
                    }
                }
            }
            (Canon::Folded, Ok(s)) => {
                for c in s.chars() {
                    if c.is_ascii() {
                        h.update(&[c.to_ascii_lowercase() as u8]);
                        continue;
                    }
                    if is_ignorable(c) {
                        continue;
                    }
                    let c = match digit_value(c) {
                        Some(d) => char::from(b'0' + d),
                        None => c,
                    };
                    for l in c.to_lowercase() {
                        h.update(l.encode_utf8(&mut [0u8; 4]).as_bytes());
                    }
                }
            }
            _ => {
                h.update(value);
            }
        }
        h
    }

    #[test]
    fn keyed_input_matches_the_streaming_reference() {
        let k = [9u8; 32];
        let long_ascii = "Ab-9.".repeat(120);
        let long_unicode = "Ｊöｒｇ\u{200B}٣İ".repeat(40);
        let values: Vec<&[u8]> = vec![
            b"",
            b"Bob@Example.COM",
            b"4111 1111-1111 1111",
            "４１１１\u{200B}１１１１".as_bytes(),
            "JÖRG@BÜCHER.DE".as_bytes(),
            "İstanbul@x.io".as_bytes(),
            &[0xFF, 0x00, b'1', 0xC3],
            long_ascii.as_bytes(),
            long_unicode.as_bytes(),
            &[b'7'; 300],
        ];
        for entity in ["email", "", &"e".repeat(300)] {
            for canon in [Canon::Digits, Canon::Folded, Canon::Raw] {
                for v in &values {
                    let want = keyed_reference(&k, entity, canon, v);
                    let got = KeyedInput::new(&k, entity, canon, v);
                    assert_eq!(got.hash(), want.finalize(), "{entity:?} {canon:?} {v:?}");
                    let mut a = [0u8; 40];
                    let mut b = [0u8; 40];
                    KeyedInput::new(&k, entity, canon, v).xof().fill(&mut a);
                    want.finalize_xof().fill(&mut b);
                    assert_eq!(a, b);
                }
            }
        }
    }

    #[test]
    fn partial_keeps_ends_and_separators() {
        let s = Strategy::keep_last(4);
        assert_eq!(
            span(&s, "card_number", Canon::Digits, "4111 1111 1111 1234"),
            "**** **** **** 1234"
        );
        let s = Strategy::Partial {
            keep_first: 1,
            keep_last: 0,
            mask_char: '#',
        };
        assert_eq!(span(&s, "email", Canon::Folded, "bob@x.io"), "b##@#.##");
        // Keeping everything would reveal everything: mask it all.
        assert_eq!(
            span(&Strategy::keep_last(9), "ssn", Canon::Digits, "1-2"),
            "*-*"
        );
    }

    #[test]
    fn tokens_are_deterministic_and_normalised() {
        let a = span(
            &Strategy::Tokenize,
            "card_number",
            Canon::Digits,
            "4111 1111 1111 1111",
        );
        let b = span(
            &Strategy::Tokenize,
            "card_number",
            Canon::Digits,
            "4111-1111-1111-1111",
        );
        let c = span(
            &Strategy::Tokenize,
            "card_number",
            Canon::Digits,
            "４１１１１１１１１１１１１１１１",
        );
        let d = span(
            &Strategy::Tokenize,
            "card_number",
            Canon::Digits,
            "4111 1111 1111 1112",
        );
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_ne!(a, d);
        assert!(a.starts_with("tok_") && a.len() == 20);
        let other = MaskKey::new([8; 32]);
        let mut e = String::new();
        mask_span(
            &Strategy::Tokenize,
            Some(&other),
            "card_number",
            Canon::Digits,
            "4111 1111 1111 1111",
            &mut e,
        )
        .unwrap();
        assert_ne!(a, e);
        let h = span(&Strategy::Hash, "ssn", Canon::Raw, "x");
        assert_eq!(h.len(), 64);
    }

    #[test]
    fn missing_key_is_an_error() {
        let mut out = String::new();
        assert_eq!(
            mask_span(&Strategy::Tokenize, None, "e", Canon::Raw, "x", &mut out),
            Err(Error::MissingKey {
                strategy: "tokenize"
            })
        );
    }

    #[test]
    fn format_preserving_keeps_shape() {
        let v = "4111-1111 1111.1111";
        let m = span(&Strategy::FormatPreserving, "card_number", Canon::Digits, v);
        assert_eq!(m.len(), v.len());
        assert_ne!(m, v);
        for (a, b) in v.chars().zip(m.chars()) {
            assert_eq!(a.is_ascii_digit(), b.is_ascii_digit());
            if !a.is_ascii_digit() {
                assert_eq!(a, b);
            }
        }
        let fw = span(
            &Strategy::FormatPreserving,
            "card_number",
            Canon::Digits,
            "４１１",
        );
        assert!(fw.chars().all(|c| ('０'..='９').contains(&c)));
        let e = span(
            &Strategy::FormatPreserving,
            "email",
            Canon::Folded,
            "Bob@x.io",
        );
        assert!(e.starts_with(|c: char| c.is_ascii_uppercase()));
        assert_eq!(&e[3..4], "@");
    }

    #[test]
    fn whole_values_stay_valid_for_their_type() {
        let k = Some(&key());
        let int = |s: &Strategy, v: &str| {
            mask_whole(s, k, "c", ValueType::Integer, v.as_bytes())
                .unwrap()
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(int(&Strategy::Null, "42"), None);
        assert_eq!(int(&Strategy::redact(), "42"), None);
        for v in ["2147483647", "-9223372036854775808", "0", "7", "100"] {
            let m = int(&Strategy::FormatPreserving, v).unwrap();
            assert_eq!(m.len(), v.len());
            let a: i128 = m.parse().unwrap();
            let b: i128 = v.parse().unwrap();
            assert!(a.abs() <= b.abs(), "{v} -> {m}");
            assert_eq!(int(&Strategy::FormatPreserving, v).unwrap(), m);
        }
        assert_eq!(int(&Strategy::keep_last(2), "123456").unwrap(), "000056");
        let num = mask_whole(&Strategy::Tokenize, k, "c", ValueType::Numeric, b"0.50")
            .unwrap()
            .unwrap();
        let num = String::from_utf8(num).unwrap();
        assert!(num.parse::<f64>().unwrap() <= 0.5, "{num}");
        let u = mask_whole(
            &Strategy::Tokenize,
            k,
            "c",
            ValueType::Uuid,
            b"6f1c2a9e-0000-4000-8000-000000000000",
        )
        .unwrap()
        .unwrap();
        let u = String::from_utf8(u).unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8");
        assert_eq!(
            mask_whole(&Strategy::redact(), k, "c", ValueType::Uuid, b"x").unwrap(),
            None
        );
        let d = mask_whole(&Strategy::Tokenize, k, "c", ValueType::Date, b"1980-01-02")
            .unwrap()
            .unwrap();
        assert_eq!(d.len(), 10);
        let ts = mask_whole(
            &Strategy::Hash,
            k,
            "c",
            ValueType::Timestamp,
            b"1980-01-02 03:04:05",
        )
        .unwrap()
        .unwrap();
        assert_eq!(ts.len(), 19);
        assert_eq!(
            mask_whole(&Strategy::Tokenize, k, "c", ValueType::Boolean, b"t").unwrap(),
            None
        );
        let j = mask_whole(&Strategy::redact(), k, "c", ValueType::Json, b"{\"a\":1}")
            .unwrap()
            .unwrap();
        assert_eq!(j, b"\"[REDACTED]\"");
        assert!(matches!(
            mask_whole(&Strategy::redact(), k, "c", ValueType::Opaque, b"x"),
            Err(Error::Unrepresentable { .. })
        ));
        assert_eq!(
            mask_whole(&Strategy::Null, k, "c", ValueType::Opaque, b"x").unwrap(),
            None
        );
        let raw = mask_whole(&Strategy::Tokenize, k, "c", ValueType::Bytes, &[0xFF, 0x00])
            .unwrap()
            .unwrap();
        assert!(raw.starts_with(b"tok_"));
    }

    #[test]
    fn strategy_config_forms() {
        #[derive(Deserialize)]
        struct W {
            s: Vec<Strategy>,
        }
        let w: W = toml::from_str(
            r#"s = ["tokenize", { kind = "partial", keep_last = 4 }, { kind = "redact", text = "X" }, "null"]"#,
        )
        .unwrap();
        assert_eq!(
            w.s,
            vec![
                Strategy::Tokenize,
                Strategy::keep_last(4),
                Strategy::Redact {
                    text: Some("X".into())
                },
                Strategy::Null
            ]
        );
        assert!(toml::from_str::<W>(r#"s = ["rot13"]"#).is_err());
        assert!(MaskKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(MaskKey::from_hex("abc").is_err());
        assert!(MaskKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
