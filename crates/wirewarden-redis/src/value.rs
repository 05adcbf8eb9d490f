//! A typed, zero-copy view of one RESP value: every string in a [`Value`] is a slice of the
//! frame's own `Bytes`, so building the view copies no payload.
//!
//! The tree is built iteratively from bytes the pre-scan has accepted, so hostile nesting can
//! neither overflow the stack nor allocate more than the limits allow.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::wire::{self, Limits, Mode, RespVersion, Scanner, Token};

/// One RESP2 or RESP3 value.
///
/// Distinctions that matter on the wire are kept (`$-1` vs `*-1` vs `_`, streamed vs counted,
/// the exact text of a double), so [`Value::encode`] writes back the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// `+text`.
    SimpleString(Bytes),
    /// `-ERR text`.
    SimpleError(Bytes),
    /// `:n`.
    Integer(i64),
    /// `$n` with its payload.
    BulkString(Bytes),
    /// `$-1` (RESP2 null).
    NullBulkString,
    /// `*-1` (RESP2 null array).
    NullArray,
    /// `_` (RESP3 null).
    Null,
    /// `,` with the text as sent (`3.5`, `inf`, `-inf`, `nan`).
    Double(Bytes),
    /// `#t` / `#f`.
    Boolean(bool),
    /// `(` with its digits.
    BigNumber(Bytes),
    /// `!n` blob error.
    BlobError(Bytes),
    /// `=n` verbatim string: a three-byte format (`txt`, `mkd`) and the text.
    VerbatimString {
        /// The format, three bytes.
        format: Bytes,
        /// The text after `fmt:`.
        text: Bytes,
    },
    /// `$?` streamed string: its chunks, none empty.
    StreamedString(Vec<Bytes>),
    /// `*n` array.
    Array(Vec<Value>),
    /// `~n` set.
    Set(Vec<Value>),
    /// `%n` map, pairs in wire order.
    Map(Vec<(Value, Value)>),
    /// `>n` push frame (out-of-band data).
    Push(Vec<Value>),
    /// `*?` streamed array.
    StreamedArray(Vec<Value>),
    /// `~?` streamed set.
    StreamedSet(Vec<Value>),
    /// `%?` streamed map.
    StreamedMap(Vec<(Value, Value)>),
    /// `|n` attributes followed by the value they describe.
    Attributed {
        /// The attribute pairs.
        attributes: Vec<(Value, Value)>,
        /// The value.
        value: Box<Value>,
    },
}

/// Permissive limits for walking bytes that were already validated with the real ones.
const VALIDATED: Limits = Limits {
    max_frame_len: usize::MAX,
    max_bulk_len: usize::MAX,
    max_elements: usize::MAX,
    max_depth: wire::MAX_DEPTH,
    max_inline_len: usize::MAX,
};

struct Open {
    kind: u8,
    streamed: bool,
    remaining: u64,
    items: Vec<Value>,
    /// Attribute groups waiting for this level's next child.
    attrs: Vec<Vec<(Value, Value)>>,
}

fn pairs(items: Vec<Value>) -> Vec<(Value, Value)> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

fn close(kind: u8, streamed: bool, items: Vec<Value>) -> Value {
    match (kind, streamed) {
        (b'%', false) => Value::Map(pairs(items)),
        (b'%', true) => Value::StreamedMap(pairs(items)),
        (b'~', false) => Value::Set(items),
        (b'~', true) => Value::StreamedSet(items),
        (b'>', _) => Value::Push(items),
        (_, true) => Value::StreamedArray(items),
        _ => Value::Array(items),
    }
}

impl Value {
    /// Validates and decodes one value at the start of `buf`. `Ok(None)` means more bytes are
    /// needed; on success, also returns the number of bytes the value used.
    ///
    /// # Errors
    /// Any [`Error`] of the pre-scan: malformed input or a limit exceeded.
    pub fn decode(
        buf: &Bytes,
        version: RespVersion,
        limits: &Limits,
    ) -> Result<Option<(Self, usize)>> {
        let Some(scanned) = Scanner::new().scan(buf, version, limits, Mode::Reply)? else {
            return Ok(None);
        };
        let raw = buf.slice(..scanned.len);
        Ok(Some((Self::build(&raw)?, scanned.len)))
    }

    /// Builds the tree of a frame the pre-scan accepted.
    pub(crate) fn build(raw: &Bytes) -> Result<Self> {
        let mut stack: Vec<Open> = Vec::new();
        let mut root_attrs: Vec<Vec<(Value, Value)>> = Vec::new();
        let mut chunks: Option<Vec<Bytes>> = None;
        let mut pos = 0usize;
        let truncated = || Error::Unexpected {
            what: "truncated frame",
            offset: raw.len(),
        };
        loop {
            let (tok, next) =
                wire::token(raw, pos, 0, RespVersion::Resp3, &VALIDATED)?.ok_or_else(truncated)?;
            pos = next;
            let slice = |s: usize, e: usize| raw.slice(s..e);
            let mut value = match tok {
                Token::Line { kind, start, end } => match kind {
                    b'+' => Value::SimpleString(slice(start, end)),
                    b'-' => Value::SimpleError(slice(start, end)),
                    b'_' => Value::Null,
                    b',' => Value::Double(slice(start, end)),
                    b'#' => Value::Boolean(raw.get(start) == Some(&b't')),
                    _ => Value::BigNumber(slice(start, end)),
                },
                Token::Integer(n) => Value::Integer(n),
                Token::Blob { kind, start, end } => match kind {
                    b'$' => Value::BulkString(slice(start, end)),
                    b'!' => Value::BlobError(slice(start, end)),
                    _ => {
                        let fmt_end = start.saturating_add(3);
                        Value::VerbatimString {
                            format: slice(start, fmt_end),
                            text: slice(fmt_end.saturating_add(1), end),
                        }
                    }
                },
                Token::NullBulk => Value::NullBulkString,
                Token::NullArray => Value::NullArray,
                Token::StreamedString => {
                    chunks = Some(Vec::new());
                    continue;
                }
                Token::Chunk { start, end } => {
                    chunks
                        .as_mut()
                        .ok_or(Error::Unexpected {
                            what: "string chunk outside a streamed string",
                            offset: start,
                        })?
                        .push(slice(start, end));
                    continue;
                }
                Token::ChunkEnd => Value::StreamedString(chunks.take().unwrap_or_default()),
                Token::Aggregate { kind, count } => {
                    if count == 0 {
                        if kind == b'|' {
                            let slot = match stack.last_mut() {
                                Some(open) => &mut open.attrs,
                                None => &mut root_attrs,
                            };
                            slot.push(Vec::new());
                            continue;
                        }
                        close(kind, false, Vec::new())
                    } else {
                        stack.push(Open {
                            kind,
                            streamed: false,
                            remaining: count,
                            // Bounded by the validated frame, and never more than a page
                            // up front.
                            items: Vec::with_capacity(count.min(256) as usize),
                            attrs: Vec::new(),
                        });
                        continue;
                    }
                }
                Token::StreamedAggregate { kind } => {
                    stack.push(Open {
                        kind,
                        streamed: true,
                        remaining: 0,
                        items: Vec::new(),
                        attrs: Vec::new(),
                    });
                    continue;
                }
                Token::End => {
                    let open = stack.pop().ok_or_else(truncated)?;
                    close(open.kind, true, open.items)
                }
            };
            // Attach pending attributes and climb while aggregates complete.
            loop {
                let slot = match stack.last_mut() {
                    Some(open) => &mut open.attrs,
                    None => &mut root_attrs,
                };
                while let Some(attributes) = slot.pop() {
                    value = Value::Attributed {
                        attributes,
                        value: Box::new(value),
                    };
                }
                let Some(open) = stack.last_mut() else {
                    return Ok(value);
                };
                open.items.push(value);
                if open.streamed {
                    break;
                }
                open.remaining = open.remaining.saturating_sub(1);
                if open.remaining > 0 {
                    break;
                }
                let Some(open) = stack.pop() else {
                    return Err(truncated());
                };
                if open.kind == b'|' {
                    let slot = match stack.last_mut() {
                        Some(parent) => &mut parent.attrs,
                        None => &mut root_attrs,
                    };
                    slot.push(pairs(open.items));
                    break;
                }
                value = close(open.kind, false, open.items);
            }
        }
    }

    /// Appends the RESP encoding of this value to `out`.
    ///
    /// Recursive in the nesting of the value: values decoded by this crate are bounded by
    /// [`Limits::max_depth`].
    pub fn encode(&self, out: &mut BytesMut) {
        fn header(out: &mut BytesMut, kind: u8, n: usize) {
            out.put_u8(kind);
            out.put_slice(n.to_string().as_bytes());
            out.put_slice(b"\r\n");
        }
        fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
            out.put_u8(kind);
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
        fn blob(out: &mut BytesMut, kind: u8, data: &[u8]) {
            header(out, kind, data.len());
            out.put_slice(data);
            out.put_slice(b"\r\n");
        }
        fn map(out: &mut BytesMut, kind: u8, items: &[(Value, Value)]) {
            header(out, kind, items.len());
            for (k, v) in items {
                k.encode(out);
                v.encode(out);
            }
        }
        fn seq(out: &mut BytesMut, kind: u8, items: &[Value]) {
            header(out, kind, items.len());
            for v in items {
                v.encode(out);
            }
        }
        match self {
            Self::SimpleString(s) => line(out, b'+', s),
            Self::SimpleError(s) => line(out, b'-', s),
            Self::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Self::BulkString(b) => blob(out, b'$', b),
            Self::NullBulkString => out.put_slice(b"$-1\r\n"),
            Self::NullArray => out.put_slice(b"*-1\r\n"),
            Self::Null => out.put_slice(b"_\r\n"),
            Self::Double(t) => line(out, b',', t),
            Self::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Self::BigNumber(t) => line(out, b'(', t),
            Self::BlobError(b) => blob(out, b'!', b),
            Self::VerbatimString { format, text } => {
                header(out, b'=', text.len().saturating_add(4));
                out.put_slice(format);
                out.put_u8(b':');
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Self::StreamedString(chunks) => {
                out.put_slice(b"$?\r\n");
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    blob(out, b';', c);
                }
                out.put_slice(b";0\r\n");
            }
            Self::Array(items) => seq(out, b'*', items),
            Self::Set(items) => seq(out, b'~', items),
            Self::Push(items) => seq(out, b'>', items),
            Self::Map(items) => map(out, b'%', items),
            Self::StreamedArray(items) | Self::StreamedSet(items) => {
                out.put_slice(if matches!(self, Self::StreamedSet(_)) {
                    b"~?\r\n"
                } else {
                    b"*?\r\n"
                });
                for v in items {
                    v.encode(out);
                }
                out.put_slice(b".\r\n");
            }
            Self::StreamedMap(items) => {
                out.put_slice(b"%?\r\n");
                for (k, v) in items {
                    k.encode(out);
                    v.encode(out);
                }
                out.put_slice(b".\r\n");
            }
            Self::Attributed { attributes, value } => {
                map(out, b'|', attributes);
                value.encode(out);
            }
        }
    }

    /// The RESP encoding of this value.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// The value without its attributes.
    #[must_use]
    pub fn unattributed(&self) -> &Self {
        let mut v = self;
        while let Self::Attributed { value, .. } = v {
            v = value;
        }
        v
    }

    /// True for `-` simple errors and `!` blob errors.
    #[must_use]
    pub fn is_error(&self) -> bool {
        matches!(
            self.unattributed(),
            Self::SimpleError(_) | Self::BlobError(_)
        )
    }

    /// True for every form of null.
    #[must_use]
    pub fn is_null(&self) -> bool {
        matches!(
            self.unattributed(),
            Self::Null | Self::NullBulkString | Self::NullArray
        )
    }

    /// The bytes of a string-like value (simple, bulk, verbatim text, error text, big number,
    /// double text); `None` for other types and for streamed strings.
    #[must_use]
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self.unattributed() {
            Self::SimpleString(b)
            | Self::SimpleError(b)
            | Self::BulkString(b)
            | Self::BlobError(b)
            | Self::BigNumber(b)
            | Self::Double(b)
            | Self::VerbatimString { text: b, .. } => Some(b),
            _ => None,
        }
    }

    /// The integer of a `:` value.
    #[must_use]
    pub fn as_integer(&self) -> Option<i64> {
        match self.unattributed() {
            Self::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements of an array, set or push frame (counted or streamed).
    #[must_use]
    pub fn as_elements(&self) -> Option<&[Value]> {
        match self.unattributed() {
            Self::Array(v)
            | Self::Set(v)
            | Self::Push(v)
            | Self::StreamedArray(v)
            | Self::StreamedSet(v) => Some(v),
            _ => None,
        }
    }

    /// The pairs of a map (counted or streamed).
    #[must_use]
    pub fn as_pairs(&self) -> Option<&[(Value, Value)]> {
        match self.unattributed() {
            Self::Map(v) | Self::StreamedMap(v) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(b: &'static [u8]) -> Value {
        let raw = Bytes::from_static(b);
        let (v, n) = Value::decode(&raw, RespVersion::Resp3, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(n, b.len());
        assert_eq!(&v.to_bytes()[..], b, "{v:?}");
        v
    }

    #[test]
    fn decodes_every_type_and_encodes_the_same_bytes() {
        assert_eq!(round(b"+OK\r\n"), Value::SimpleString("OK".into()));
        assert_eq!(round(b"$-1\r\n"), Value::NullBulkString);
        assert_eq!(round(b"*-1\r\n"), Value::NullArray);
        assert_eq!(round(b"_\r\n"), Value::Null);
        assert_eq!(round(b":-7\r\n"), Value::Integer(-7));
        assert_eq!(round(b"#f\r\n"), Value::Boolean(false));
        round(b",1.5\r\n");
        round(b"(12345678901234567890\r\n");
        round(b"!5\r\noops!\r\n");
        assert_eq!(
            round(b"=9\r\ntxt:hello\r\n"),
            Value::VerbatimString {
                format: "txt".into(),
                text: "hello".into()
            }
        );
        assert_eq!(
            round(b"$?\r\n;2\r\nab\r\n;1\r\nc\r\n;0\r\n"),
            Value::StreamedString(vec!["ab".into(), "c".into()])
        );
        round(b"*?\r\n:1\r\n~?\r\n+a\r\n.\r\n%?\r\n+k\r\n+v\r\n.\r\n.\r\n");
        round(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n");
        let v = round(b"%2\r\n+a\r\n*1\r\n:1\r\n+b\r\n%0\r\n");
        assert_eq!(v.as_pairs().map(<[_]>::len), Some(2));
        let v = round(b"|1\r\n+ttl\r\n:3\r\n*2\r\n|1\r\n+x\r\n+y\r\n:1\r\n:2\r\n");
        let Value::Attributed { attributes, value } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(attributes.len(), 1);
        let inner = value.as_elements().unwrap();
        assert!(matches!(inner[0], Value::Attributed { .. }));
        assert_eq!(inner[1], Value::Integer(2));
        assert_eq!(v.unattributed().as_elements().map(<[_]>::len), Some(2));
    }

    #[test]
    fn strings_are_slices_of_the_frame() {
        let raw = Bytes::from_static(b"*2\r\n$5\r\nhello\r\n+world\r\n");
        let (v, _) = Value::decode(&raw, RespVersion::Resp2, &Limits::default())
            .unwrap()
            .unwrap();
        let items = v.as_elements().unwrap();
        let hello = items[0].as_bytes().unwrap();
        assert_eq!(hello, "hello");
        assert_eq!(hello.as_ptr(), raw[8..].as_ptr(), "no copy");
    }
}
