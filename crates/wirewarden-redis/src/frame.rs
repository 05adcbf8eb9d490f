//! Framing for both directions: [`RequestDecoder`] turns client bytes into [`Request`]s
//! (RESP arrays of bulk strings, or inline lines), [`ReplyDecoder`] turns server bytes into
//! [`Frame`]s. Each keeps the exact bytes it consumed, so a relay forwards what it received.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::inline;
use crate::value::Value;
use crate::wire::{self, Limits, Mode, RespVersion, Scanner, Token};

// === replies ===

/// The type of a frame's value (attributes in front of it are skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// `+`
    SimpleString,
    /// `-`
    SimpleError,
    /// `:`
    Integer,
    /// `$n` or a streamed string `$?`.
    BulkString,
    /// `$-1`, `*-1` or `_`.
    Null,
    /// `,`
    Double,
    /// `#`
    Boolean,
    /// `(`
    BigNumber,
    /// `!`
    BlobError,
    /// `=`
    VerbatimString,
    /// `*n` or `*?`
    Array,
    /// `~n` or `~?`
    Set,
    /// `%n` or `%?`
    Map,
    /// `>n`
    Push,
}

impl FrameKind {
    fn of(header: &[u8]) -> Self {
        let null = header.get(1..5) == Some(b"-1\r\n");
        match header.first() {
            Some(b'+') => Self::SimpleString,
            Some(b'-') => Self::SimpleError,
            Some(b':') => Self::Integer,
            Some(b'$') if null => Self::Null,
            Some(b'$') => Self::BulkString,
            Some(b'*') if null => Self::Null,
            Some(b'*') => Self::Array,
            Some(b',') => Self::Double,
            Some(b'#') => Self::Boolean,
            Some(b'(') => Self::BigNumber,
            Some(b'!') => Self::BlobError,
            Some(b'=') => Self::VerbatimString,
            Some(b'~') => Self::Set,
            Some(b'%') => Self::Map,
            Some(b'>') => Self::Push,
            _ => Self::Null,
        }
    }
}

/// One complete reply frame from the server: its exact bytes and its type. Typed views are
/// parsed on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
    top: usize,
    kind: FrameKind,
}

impl Frame {
    fn new(raw: Bytes, top: usize) -> Self {
        let kind = FrameKind::of(raw.get(top..).unwrap_or_default());
        Self { raw, top, kind }
    }

    /// Validates `raw` as exactly one frame.
    ///
    /// # Errors
    /// Malformed input, a limit exceeded, an incomplete frame or trailing bytes.
    pub fn from_bytes(raw: Bytes, version: RespVersion, limits: &Limits) -> Result<Self> {
        match Scanner::new().scan(&raw, version, limits, Mode::Reply)? {
            Some(s) if s.len == raw.len() => Ok(Self::new(raw, s.top_pos)),
            Some(s) => Err(Error::Unexpected {
                what: "bytes after the frame",
                offset: s.len,
            }),
            None => Err(Error::Unexpected {
                what: "end of an incomplete frame",
                offset: raw.len(),
            }),
        }
    }

    /// The frame's bytes, exactly as received.
    #[must_use]
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The frame's bytes, exactly as received.
    #[must_use]
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Its length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Always false: a frame has at least a type byte and CRLF.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The type of its value.
    #[must_use]
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// True when attributes precede the value.
    #[must_use]
    pub fn has_attributes(&self) -> bool {
        self.top > 0
    }

    /// True for `-` and `!` errors.
    #[must_use]
    pub fn is_error(&self) -> bool {
        matches!(self.kind, FrameKind::SimpleError | FrameKind::BlobError)
    }

    /// True for RESP3 push frames.
    #[must_use]
    pub fn is_push(&self) -> bool {
        self.kind == FrameKind::Push
    }

    /// The text of a simple string or simple error (without type byte and CRLF).
    #[must_use]
    pub fn simple_text(&self) -> Option<&[u8]> {
        match self.kind {
            FrameKind::SimpleString | FrameKind::SimpleError => self
                .raw
                .get(self.top.saturating_add(1)..self.raw.len().saturating_sub(2)),
            _ => None,
        }
    }

    /// The message of an error reply (simple or blob), e.g. `ERR unknown command`.
    #[must_use]
    pub fn error_text(&self) -> Option<Bytes> {
        match self.kind {
            FrameKind::SimpleError => Some(
                self.raw
                    .slice(self.top.saturating_add(1)..self.raw.len().saturating_sub(2)),
            ),
            FrameKind::BlobError => self.value().ok()?.as_bytes().cloned(),
            _ => None,
        }
    }

    /// The typed, zero-copy value tree.
    ///
    /// # Errors
    /// Only if the frame was built from bytes the pre-scan did not accept, which the public
    /// constructors prevent.
    pub fn value(&self) -> Result<Value> {
        Value::build(&self.raw)
    }

    /// The exact bytes of each element of an array, set, push or map (keys and values in
    /// order), each a complete frame that can be forwarded or decoded on its own.
    /// `None` for other kinds.
    ///
    /// # Errors
    /// As for [`Frame::value`].
    pub fn elements(&self) -> Result<Option<Vec<Bytes>>> {
        if !matches!(
            self.kind,
            FrameKind::Array | FrameKind::Set | FrameKind::Map | FrameKind::Push
        ) {
            return Ok(None);
        }
        let limits = Limits::DEFAULT
            .with_max_frame_len(usize::MAX)
            .with_max_bulk_len(usize::MAX)
            .with_max_elements(usize::MAX)
            .with_max_depth(wire::MAX_DEPTH);
        let (tok, mut pos) = wire::token(&self.raw, self.top, 0, RespVersion::Resp3, &limits)?
            .ok_or(Error::Unexpected {
                what: "truncated frame",
                offset: self.top,
            })?;
        let (count, streamed) = match tok {
            Token::Aggregate { count, .. } => (count, false),
            Token::StreamedAggregate { .. } => (0, true),
            _ => return Ok(None),
        };
        let mut out = Vec::with_capacity(count.min(1024) as usize);
        loop {
            if !streamed && out.len() as u64 >= count {
                return Ok(Some(out));
            }
            let rest = self.raw.get(pos..).unwrap_or_default();
            if streamed && rest.first() == Some(&b'.') {
                return Ok(Some(out));
            }
            let n = wire::skip_value(rest, RespVersion::Resp3, &limits)?;
            let end = pos.saturating_add(n);
            out.push(self.raw.slice(pos..end));
            pos = end;
        }
    }
}

/// Decodes server replies, one [`Frame`] at a time, with a resumable pre-scan: bytes of a
/// frame that arrives in pieces are looked at once, not once per read.
#[derive(Debug, Clone, Default)]
pub struct ReplyDecoder {
    scanner: Scanner,
    limits: Limits,
}

impl ReplyDecoder {
    /// A decoder with `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            scanner: Scanner::new(),
            limits,
        }
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Splits the next complete frame off the front of `buf`, decoded as `version` (use
    /// [`Session::reply_version`](crate::Session::reply_version) to follow `HELLO`).
    /// `Ok(None)`: more bytes are needed; call again with the same, grown buffer.
    ///
    /// # Errors
    /// Malformed input or a limit exceeded; the connection should be closed (after sending
    /// [`Error::to_reply`] where that makes sense), as the server does.
    pub fn decode(&mut self, buf: &mut BytesMut, version: RespVersion) -> Result<Option<Frame>> {
        match self.scanner.scan(buf, version, &self.limits, Mode::Reply) {
            Ok(Some(s)) => {
                self.scanner.reset();
                let raw = buf.split_to(s.len).freeze();
                Ok(Some(Frame::new(raw, s.top_pos)))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.scanner.reset();
                Err(e)
            }
        }
    }
}

// === requests ===

/// One client command: its exact bytes and its arguments (the command name first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    raw: Bytes,
    args: Vec<Bytes>,
    inline: bool,
}

impl Request {
    /// A request encoded as a RESP array of bulk strings (how a gateway sends commands of
    /// its own, such as `AUTH` upstream).
    #[must_use]
    pub fn from_args<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Bytes>,
    {
        let args: Vec<Bytes> = args.into_iter().map(Into::into).collect();
        let mut out = BytesMut::new();
        encode_args(&args, &mut out);
        let raw = out.freeze();
        // Re-slice the arguments out of the encoding so they share its buffer.
        let mut pos = raw.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut shared = Vec::with_capacity(args.len());
        for a in &args {
            let header = 1 + a.len().to_string().len() + 2;
            let start = pos + header;
            shared.push(raw.slice(start..start + a.len()));
            pos = start + a.len() + 2;
        }
        Self {
            raw,
            args: shared,
            inline: false,
        }
    }

    /// The bytes as received (or as encoded by [`Request::from_args`]).
    #[must_use]
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The bytes as received.
    #[must_use]
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// The arguments, the command name first. Never empty.
    #[must_use]
    pub fn args(&self) -> &[Bytes] {
        &self.args
    }

    /// The command name as sent.
    #[must_use]
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[], |b| &b[..])
    }

    /// True if it arrived as an inline command line.
    #[must_use]
    pub fn is_inline(&self) -> bool {
        self.inline
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode_args<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    out.put_u8(b'*');
    out.put_slice(args.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        out.put_u8(b'$');
        out.put_slice(a.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
}

/// Decodes client requests: RESP arrays of bulk strings, or inline command lines when the
/// first byte is not `*` — the server's own rule. Empty arrays and blank lines are consumed
/// and skipped, as the server skips them.
#[derive(Debug, Clone, Default)]
pub struct RequestDecoder {
    scanner: Scanner,
    limits: Limits,
    /// Where the arguments of the request being scanned are, as the scan accepts them.
    spans: Vec<(usize, usize)>,
}

/// Above this many arguments, the span list is not kept for the next request.
const SPANS_KEPT: usize = 256;

impl RequestDecoder {
    /// A decoder with `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            scanner: Scanner::new(),
            limits,
            spans: Vec::new(),
        }
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Splits the next complete request off the front of `buf`. `Ok(None)`: more bytes are
    /// needed.
    ///
    /// # Errors
    /// Malformed input or a limit exceeded. Send [`Error::to_reply`] and close, as the server
    /// does.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>> {
        loop {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let request = if first == b'*' {
                self.decode_multibulk(buf)?
            } else {
                self.decode_inline(buf)?
            };
            match request {
                None => return Ok(None),
                Some(r) if r.args.is_empty() => continue,
                Some(r) => return Ok(Some(r)),
            }
        }
    }

    fn decode_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Request>> {
        if self.scanner.pos() > buf.len() {
            // The scanner starts over when the buffer shrank; so do the spans. (Every other
            // start over, after a request or an error, has cleared them already.)
            self.spans.clear();
        }
        let spans = &mut self.spans;
        let scanned = match self.scanner.scan_with(
            buf,
            RespVersion::Resp2,
            &self.limits,
            Mode::Request,
            &mut |start, end| spans.push((start, end)),
        ) {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.scanner.reset();
                self.spans.clear();
                return Err(e);
            }
        };
        self.scanner.reset();
        let raw = buf.split_to(scanned.len).freeze();
        // In request mode the scan accepts only an array of bulk strings, so its blobs are
        // exactly the arguments.
        let args = self
            .spans
            .iter()
            .map(|&(start, end)| raw.slice(start..end))
            .collect();
        if self.spans.capacity() > SPANS_KEPT {
            self.spans = Vec::new();
        } else {
            self.spans.clear();
        }
        Ok(Some(Request {
            raw,
            args,
            inline: false,
        }))
    }

    fn decode_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Request>> {
        let max = self.limits.max_inline_len;
        let window = buf.get(..max.saturating_add(1)).unwrap_or(&buf[..]);
        let Some(nl) = memchr::memchr(b'\n', window) else {
            if let Some(nul) = memchr::memchr(0, window) {
                return Err(Error::InlineNul { offset: nul });
            }
            if buf.len() > max {
                return Err(Error::InlineTooLong {
                    len: buf.len(),
                    limit: max,
                });
            }
            return Ok(None);
        };
        if let Some(nul) = memchr::memchr(0, window.get(..nl).unwrap_or_default()) {
            return Err(Error::InlineNul { offset: nul });
        }
        let line_len = if nl > 0 && window.get(nl - 1) == Some(&b'\r') {
            nl - 1
        } else {
            nl
        };
        let raw = buf.split_to(nl + 1).freeze();
        let args = inline::split_args(&raw.slice(..line_len))?;
        Ok(Some(Request {
            raw,
            args,
            inline: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(input: &[u8]) -> Result<Vec<Request>> {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = d.decode(&mut buf)? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn pipelined_requests_keep_their_bytes() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*0\r\nPING\r\n\r\nSET a 'b c'\n*-1\r\n";
        let rs = requests(input).unwrap();
        assert_eq!(rs.len(), 3);
        assert_eq!(&rs[0].raw()[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(rs[0].args(), &[Bytes::from("GET"), Bytes::from("k")]);
        assert!(!rs[0].is_inline());
        assert_eq!(rs[1].name(), b"PING");
        assert_eq!(&rs[1].raw()[..], b"PING\r\n");
        assert!(rs[1].is_inline());
        assert_eq!(rs[2].args()[2], "b c");
    }

    #[test]
    fn inline_limits_and_errors() {
        let mut d = RequestDecoder::new(Limits::default().with_max_inline_len(8));
        let mut buf = BytesMut::from(&b"GET 1234567"[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(Error::InlineTooLong { .. })
        ));
        assert_eq!(requests(b"GET \"a\n"), Err(Error::UnbalancedQuotes));
        assert!(matches!(
            requests(b"GET a\0b\n"),
            Err(Error::InlineNul { offset: 5 })
        ));
        assert_eq!(requests(b"GET a").unwrap(), vec![]);
    }

    #[test]
    fn from_args_round_trips() {
        let r = Request::from_args(["SET", "key", "a value"]);
        assert_eq!(
            &r.raw()[..],
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$7\r\na value\r\n"
        );
        let back = requests(r.raw()).unwrap();
        assert_eq!(back, vec![r]);
    }

    #[test]
    fn non_canonical_null_is_not_a_null() {
        // Found by fuzzing: `*-01` once passed as a null array but not as an array.
        let mut d = ReplyDecoder::default();
        let mut buf = BytesMut::from(&b"*0\r\n*-01\r\n"[..]);
        let f = d.decode(&mut buf, RespVersion::Resp2).unwrap().unwrap();
        assert_eq!(f.elements().unwrap(), Some(vec![]));
        assert!(d.decode(&mut buf, RespVersion::Resp2).is_err());
    }

    #[test]
    fn reply_frames_and_elements() {
        let mut d = ReplyDecoder::default();
        let mut buf = BytesMut::from(
            &b"*3\r\n+QUEUED\r\n$-1\r\n*1\r\n:1\r\n-ERR no\r\n|1\r\n+a\r\n+b\r\n>2\r\n+x\r\n+y\r\n"
                [..],
        );
        let f = d.decode(&mut buf, RespVersion::Resp3).unwrap().unwrap();
        assert_eq!(f.kind(), FrameKind::Array);
        let els = f.elements().unwrap().unwrap();
        assert_eq!(els.len(), 3);
        assert_eq!(&els[1][..], b"$-1\r\n");
        assert_eq!(&els[2][..], b"*1\r\n:1\r\n");
        let e = d.decode(&mut buf, RespVersion::Resp3).unwrap().unwrap();
        assert!(e.is_error());
        assert_eq!(e.error_text().unwrap(), "ERR no");
        let p = d.decode(&mut buf, RespVersion::Resp3).unwrap().unwrap();
        assert!(p.is_push() && p.has_attributes());
        assert_eq!(p.elements().unwrap().unwrap().len(), 2);
        assert!(buf.is_empty());
        assert!(d.decode(&mut buf, RespVersion::Resp3).unwrap().is_none());
    }
}
