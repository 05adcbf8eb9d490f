//! Content codings (gzip, deflate, brotli) with size and ratio caps.
//!
//! A masked body has to be decoded to be masked and re-encoded for the client that asked for
//! it. Both directions are push-model, synchronous and IO-free: the caller hands over
//! whatever bytes arrived and gets back whatever they produced, so the same code runs under
//! hyper, in tests and in the fuzzer.
//!
//! The [`Decoder`] is the part an upstream can attack: a few kilobytes of gzip expand to
//! gigabytes. It stops at [`DecodeLimits::max_decoded_bytes`] and, once more than
//! [`DecodeLimits::ratio_floor`] bytes came out, at a decoded/encoded ratio above
//! [`DecodeLimits::max_ratio`]. Both are checked on every piece of output before it is
//! buffered, so at most one inflate window (32 KiB) beyond a limit is ever held. A stream that
//! ends early, carries data after its end or does not decode is an error, never a short
//! body.

use std::fmt;
use std::io::{self, Write};

use brotli::{BrotliDecompressStream, BrotliResult, BrotliState, HeapAlloc, HuffmanCode};
use flate2::Compression;
use flate2::write::{DeflateDecoder, GzEncoder, MultiGzDecoder, ZlibDecoder, ZlibEncoder};
use http::{HeaderMap, HeaderValue, header};

/// A content coding this crate can decode and produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// No coding.
    Identity,
    /// `gzip` (and its alias `x-gzip`), RFC 1952; concatenated members are decoded as one
    /// body.
    Gzip,
    /// `deflate`: the zlib format of RFC 1950. Raw RFC 1951 deflate, which some servers send
    /// under this name, is accepted when decoding, as browsers do; the output is always
    /// zlib-wrapped.
    Deflate,
    /// `br`, RFC 7932.
    Brotli,
}

impl Coding {
    /// The coding a single `Content-Encoding` token names (ASCII case-insensitive), or `None`
    /// for a coding this crate does not handle (`compress`, `zstd`, …).
    #[must_use]
    pub fn from_token(token: &str) -> Option<Self> {
        let t = token.trim_matches(|c| c == ' ' || c == '\t');
        [
            ("identity", Self::Identity),
            ("gzip", Self::Gzip),
            ("x-gzip", Self::Gzip),
            ("deflate", Self::Deflate),
            ("br", Self::Brotli),
        ]
        .into_iter()
        .find(|(name, _)| t.eq_ignore_ascii_case(name))
        .map(|(_, c)| c)
    }

    /// The coding of a message from all its `Content-Encoding` fields. `identity` and empty
    /// list elements are ignored; no field means [`Coding::Identity`].
    ///
    /// # Errors
    /// [`CodingError::Unsupported`] for a coding that is not one of ours (or a field that is
    /// not visible ASCII), [`CodingError::Stacked`] when more than one coding was applied.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, CodingError> {
        let mut found: Option<Self> = None;
        let mut stacked = Vec::new();
        for value in headers.get_all(header::CONTENT_ENCODING) {
            let text = value.to_str().map_err(|_| CodingError::Unsupported {
                coding: "<not visible ASCII>".to_owned(),
            })?;
            for token in text.split(',') {
                let token = token.trim_matches(|c| c == ' ' || c == '\t');
                if token.is_empty() {
                    continue;
                }
                match Self::from_token(token) {
                    Some(Self::Identity) => {}
                    Some(c) => {
                        stacked.push(c.as_str());
                        if found.replace(c).is_some() {
                            return Err(CodingError::Stacked {
                                codings: stacked.join(", "),
                            });
                        }
                    }
                    None => {
                        return Err(CodingError::Unsupported {
                            coding: echo(token),
                        });
                    }
                }
            }
        }
        Ok(found.unwrap_or(Self::Identity))
    }

    /// The canonical token (`identity`, `gzip`, `deflate`, `br`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Brotli => "br",
        }
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Upstream text that may go into an error message, and from there to the client: only when
/// it is short and made of letters and a few punctuation characters (no digits, no `@`), so
/// that it cannot carry a card number, an email address or a key.
pub(crate) fn echo(text: &str) -> String {
    let safe = text.len() <= 64
        && !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphabetic() || "-+./_".contains(c));
    if safe {
        text.to_owned()
    } else {
        "(not shown)".to_owned()
    }
}

/// Why a body could not be decoded or encoded. Every variant means the body must not reach
/// the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodingError {
    /// `Content-Encoding` names a coding this crate cannot decode.
    #[error("unsupported content coding {coding:?}")]
    Unsupported {
        /// The coding, or `(not shown)` when it could carry data.
        coding: String,
    },
    /// More than one content coding was applied.
    #[error("stacked content codings ({codings}) are not supported")]
    Stacked {
        /// The codings, in the order they were listed.
        codings: String,
    },
    /// The decoded body is larger than allowed.
    #[error("decoded body exceeds {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body expands more than allowed: a decompression bomb.
    #[error("body expands beyond {limit}:1 ({decoded} bytes decoded from {encoded})")]
    Ratio {
        /// Bytes decoded so far.
        decoded: u64,
        /// Bytes of input so far.
        encoded: u64,
        /// The ratio limit.
        limit: u64,
    },
    /// The input is not a valid stream of its coding.
    #[error("corrupt {coding} stream: {reason}")]
    Corrupt {
        /// The coding.
        coding: Coding,
        /// What the decoder said.
        reason: String,
    },
    /// The input ended before the stream did.
    #[error("{coding} stream is truncated")]
    Truncated {
        /// The coding.
        coding: Coding,
    },
    /// Bytes follow the end of the stream.
    #[error("data after the end of the {coding} stream")]
    TrailingData {
        /// The coding.
        coding: Coding,
    },
    /// The encoder failed (it writes to memory, so this does not happen in practice).
    #[error("{coding} encoder failed: {reason}")]
    Encode {
        /// The coding.
        coding: Coding,
        /// What the encoder said.
        reason: String,
    },
    /// The decoder or encoder was used after it finished or failed.
    #[error("content coding stream used after its end")]
    Finished,
}

// === Decoder ===

/// Caps on what a [`Decoder`] of a compressed body produces (an identity body is not
/// limited: it does not expand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most bytes one body may decode to.
    pub max_decoded_bytes: u64,
    /// Most decoded bytes per encoded byte, checked once more than `ratio_floor` bytes were
    /// decoded.
    pub max_ratio: u64,
    /// Decoded size below which the ratio is not checked (small bodies of repetitive JSON
    /// legitimately compress very well).
    pub ratio_floor: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_decoded_bytes: 256 << 20,
            max_ratio: 100,
            ratio_floor: 1 << 20,
        }
    }
}

/// Where decoded bytes go: checks the limits on every write, before buffering.
#[derive(Debug)]
struct Sink {
    buf: Vec<u8>,
    decoded: u64,
    encoded: u64,
    limits: DecodeLimits,
    tripped: Option<CodingError>,
}

impl Sink {
    fn new(limits: DecodeLimits) -> Self {
        Self {
            buf: Vec::new(),
            decoded: 0,
            encoded: 0,
            limits,
            tripped: None,
        }
    }

    fn accept(&mut self, data: &[u8]) -> Result<(), CodingError> {
        let decoded = self.decoded.saturating_add(data.len() as u64);
        if decoded > self.limits.max_decoded_bytes {
            return Err(CodingError::TooLarge {
                limit: self.limits.max_decoded_bytes,
            });
        }
        if decoded > self.limits.ratio_floor
            && decoded > self.encoded.saturating_mul(self.limits.max_ratio)
        {
            return Err(CodingError::Ratio {
                decoded,
                encoded: self.encoded,
                limit: self.limits.max_ratio,
            });
        }
        self.buf.extend_from_slice(data);
        self.decoded = decoded;
        Ok(())
    }

    /// Moves what was decoded into `out` (without copying when `out` is empty).
    fn drain_into(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.buf);
        } else {
            out.append(&mut self.buf);
        }
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.tripped {
            return Err(io::Error::other(e.to_string()));
        }
        match self.accept(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => {
                let err = io::Error::other(e.to_string());
                self.tripped = Some(e);
                Err(err)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Brotli = BrotliState<HeapAlloc<u8>, HeapAlloc<u32>, HeapAlloc<HuffmanCode>>;

/// Output buffer of the brotli decoder per call.
const BROTLI_CHUNK: usize = 32 << 10;

enum Inflate {
    Identity(Sink),
    Gzip(MultiGzDecoder<Sink>),
    Zlib(ZlibDecoder<Sink>),
    Raw(DeflateDecoder<Sink>),
    /// `deflate` before its first two bytes arrived: they tell zlib from raw deflate.
    Sniff {
        sink: Option<Sink>,
        head: Vec<u8>,
    },
    Brotli {
        state: Box<Brotli>,
        sink: Sink,
        scratch: Vec<u8>,
        ended: bool,
    },
}

impl fmt::Debug for Inflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Identity(_) => "Identity",
            Self::Gzip(_) => "Gzip",
            Self::Zlib(_) => "Zlib",
            Self::Raw(_) => "Raw",
            Self::Sniff { .. } => "Sniff",
            Self::Brotli { .. } => "Brotli",
        })
    }
}

/// A streaming decoder for one body: push encoded bytes, take decoded bytes.
#[derive(Debug)]
pub struct Decoder {
    coding: Coding,
    inner: Inflate,
    encoded: u64,
    state: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Finished,
    Failed,
}

impl Decoder {
    /// A decoder for `coding` under `limits`.
    #[must_use]
    pub fn new(coding: Coding, limits: DecodeLimits) -> Self {
        let sink = Sink::new(limits);
        let inner = match coding {
            Coding::Identity => Inflate::Identity(sink),
            Coding::Gzip => Inflate::Gzip(MultiGzDecoder::new(sink)),
            Coding::Deflate => Inflate::Sniff {
                sink: Some(sink),
                head: Vec::with_capacity(2),
            },
            Coding::Brotli => Inflate::Brotli {
                // Strict: no large-window streams, so the ring buffer stays within the
                // 16 MiB that RFC 7932 allows.
                state: Box::new(BrotliState::new_strict(
                    HeapAlloc::default(),
                    HeapAlloc::default(),
                    HeapAlloc::default(),
                )),
                sink,
                scratch: Vec::new(),
                ended: false,
            },
        };
        Self {
            coding,
            inner,
            encoded: 0,
            state: Phase::Open,
        }
    }

    /// The coding being decoded.
    #[must_use]
    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// Encoded bytes pushed so far.
    #[must_use]
    pub fn bytes_in(&self) -> u64 {
        self.encoded
    }

    /// Bytes decoded so far.
    #[must_use]
    pub fn bytes_out(&self) -> u64 {
        self.sink().map_or(0, |s| s.decoded)
    }

    /// Decodes `input` and appends what it produced to `out`.
    ///
    /// # Errors
    /// A limit was crossed, the stream is corrupt or has data after its end, or the decoder
    /// already finished or failed. After an error every call fails.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CodingError> {
        if self.state != Phase::Open {
            return Err(CodingError::Finished);
        }
        let r = self.push_inner(input, out);
        if r.is_err() {
            self.state = Phase::Failed;
        }
        r
    }

    /// Ends the stream and appends the last decoded bytes to `out`. An empty input is an
    /// empty body whatever the coding.
    ///
    /// # Errors
    /// The stream is truncated or corrupt, or the decoder already finished or failed.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CodingError> {
        if self.state != Phase::Open {
            return Err(CodingError::Finished);
        }
        let r = self.finish_inner(out);
        self.state = if r.is_ok() {
            Phase::Finished
        } else {
            Phase::Failed
        };
        r
    }

    fn sink(&self) -> Option<&Sink> {
        match &self.inner {
            Inflate::Identity(s) | Inflate::Brotli { sink: s, .. } => Some(s),
            Inflate::Gzip(d) => Some(d.get_ref()),
            Inflate::Zlib(d) => Some(d.get_ref()),
            Inflate::Raw(d) => Some(d.get_ref()),
            Inflate::Sniff { sink, .. } => sink.as_ref(),
        }
    }

    fn push_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CodingError> {
        self.encoded = self.encoded.saturating_add(input.len() as u64);
        let coding = self.coding;
        let encoded = self.encoded;
        if let Inflate::Sniff { sink, head } = &mut self.inner {
            let take = 2usize.saturating_sub(head.len()).min(input.len());
            head.extend_from_slice(input.get(..take).unwrap_or_default());
            if head.len() < 2 {
                return Ok(());
            }
            let Some(sink) = sink.take() else {
                return Err(CodingError::Finished);
            };
            let zlib = is_zlib_header(head);
            let head = std::mem::take(head);
            self.inner = if zlib {
                Inflate::Zlib(ZlibDecoder::new(sink))
            } else {
                Inflate::Raw(DeflateDecoder::new(sink))
            };
            // The two bytes held back go in first, then the rest of this input.
            self.feed(&head, encoded)?;
            self.feed(input.get(take..).unwrap_or_default(), encoded)?;
        } else {
            self.feed(input, encoded)?;
        }
        self.flush_into(out, coding)
    }

    /// Writes `input` into the decoder.
    fn feed(&mut self, input: &[u8], encoded: u64) -> Result<(), CodingError> {
        let coding = self.coding;
        match &mut self.inner {
            // Nothing is expanded: the caps are for decompression, not for body size.
            Inflate::Identity(sink) => {
                sink.buf.extend_from_slice(input);
                sink.decoded = sink.decoded.saturating_add(input.len() as u64);
                Ok(())
            }
            Inflate::Gzip(d) => {
                d.get_mut().encoded = encoded;
                write_flate(d, input, coding)
            }
            Inflate::Zlib(d) => {
                d.get_mut().encoded = encoded;
                write_flate(d, input, coding)
            }
            Inflate::Raw(d) => {
                d.get_mut().encoded = encoded;
                write_flate(d, input, coding)
            }
            Inflate::Sniff { .. } => Err(CodingError::Finished),
            Inflate::Brotli {
                state,
                sink,
                scratch,
                ended,
            } => {
                sink.encoded = encoded;
                brotli_feed(state, sink, scratch, ended, input)
            }
        }
    }

    /// Moves everything decoded so far into `out`; flate2's writers keep up to a window of
    /// output internally until flushed.
    fn flush_into(&mut self, out: &mut Vec<u8>, coding: Coding) -> Result<(), CodingError> {
        match &mut self.inner {
            Inflate::Identity(sink) | Inflate::Brotli { sink, .. } => sink.drain_into(out),
            Inflate::Gzip(d) => {
                flush_flate(d, coding)?;
                d.get_mut().drain_into(out);
            }
            Inflate::Zlib(d) => {
                flush_flate(d, coding)?;
                d.get_mut().drain_into(out);
            }
            Inflate::Raw(d) => {
                flush_flate(d, coding)?;
                d.get_mut().drain_into(out);
            }
            Inflate::Sniff { .. } => {}
        }
        Ok(())
    }

    fn finish_inner(&mut self, out: &mut Vec<u8>) -> Result<(), CodingError> {
        if self.encoded == 0 {
            return Ok(());
        }
        let coding = self.coding;
        match &mut self.inner {
            Inflate::Identity(sink) => sink.drain_into(out),
            Inflate::Gzip(d) => {
                let r = d.try_finish();
                flate_result(r, d.get_mut(), coding)?;
                d.get_mut().drain_into(out);
            }
            Inflate::Zlib(d) => {
                let r = d.try_finish();
                flate_result(r, d.get_mut(), coding)?;
                d.get_mut().drain_into(out);
            }
            Inflate::Raw(d) => {
                let r = d.try_finish();
                flate_result(r, d.get_mut(), coding)?;
                d.get_mut().drain_into(out);
            }
            // One byte of deflate is never a complete stream.
            Inflate::Sniff { .. } => return Err(CodingError::Truncated { coding }),
            Inflate::Brotli { sink, ended, .. } => {
                if !*ended {
                    return Err(CodingError::Truncated { coding });
                }
                sink.drain_into(out);
            }
        }
        Ok(())
    }
}

/// RFC 1950: method 8 (deflate), a window of at most 32 KiB, and a check value that makes the
/// first two bytes a multiple of 31.
fn is_zlib_header(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && ((u16::from(*cmf) << 8) | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

trait FlateSink: Write {
    fn sink(&mut self) -> &mut Sink;
}

impl FlateSink for MultiGzDecoder<Sink> {
    fn sink(&mut self) -> &mut Sink {
        self.get_mut()
    }
}

impl FlateSink for ZlibDecoder<Sink> {
    fn sink(&mut self) -> &mut Sink {
        self.get_mut()
    }
}

impl FlateSink for DeflateDecoder<Sink> {
    fn sink(&mut self) -> &mut Sink {
        self.get_mut()
    }
}

fn write_flate<D: FlateSink>(
    d: &mut D,
    mut input: &[u8],
    coding: Coding,
) -> Result<(), CodingError> {
    while !input.is_empty() {
        let n = match d.write(input) {
            Ok(n) => n,
            Err(e) => return flate_result(Err(e), d.sink(), coding),
        };
        if n == 0 {
            return Err(CodingError::TrailingData { coding });
        }
        input = input.get(n..).unwrap_or_default();
    }
    Ok(())
}

fn flush_flate<D: FlateSink>(d: &mut D, coding: Coding) -> Result<(), CodingError> {
    let r = d.flush();
    flate_result(r, d.sink(), coding)
}

/// Turns flate2's `io::Error` into ours; a limit the sink tripped wins over whatever the
/// decoder made of it.
fn flate_result(r: io::Result<()>, sink: &mut Sink, coding: Coding) -> Result<(), CodingError> {
    match r {
        Ok(()) => match sink.tripped.take() {
            Some(e) => Err(e),
            None => Ok(()),
        },
        Err(e) => Err(match sink.tripped.take() {
            Some(t) => t,
            None if e.kind() == io::ErrorKind::UnexpectedEof => CodingError::Truncated { coding },
            None => CodingError::Corrupt {
                coding,
                reason: e.to_string(),
            },
        }),
    }
}

fn brotli_feed(
    state: &mut Brotli,
    sink: &mut Sink,
    scratch: &mut Vec<u8>,
    ended: &mut bool,
    input: &[u8],
) -> Result<(), CodingError> {
    let coding = Coding::Brotli;
    if input.is_empty() {
        return Ok(());
    }
    if *ended {
        return Err(CodingError::TrailingData { coding });
    }
    if scratch.len() != BROTLI_CHUNK {
        scratch.resize(BROTLI_CHUNK, 0);
    }
    let mut avail_in = input.len();
    let mut in_off = 0usize;
    let mut total_out = 0usize;
    loop {
        let mut avail_out = scratch.len();
        let mut out_off = 0usize;
        let r = BrotliDecompressStream(
            &mut avail_in,
            &mut in_off,
            input,
            &mut avail_out,
            &mut out_off,
            scratch,
            &mut total_out,
            state,
        );
        sink.accept(scratch.get(..out_off).unwrap_or_default())?;
        match r {
            BrotliResult::NeedsMoreOutput => {}
            BrotliResult::NeedsMoreInput => return Ok(()),
            BrotliResult::ResultSuccess => {
                *ended = true;
                return if in_off < input.len() {
                    Err(CodingError::TrailingData { coding })
                } else {
                    Ok(())
                };
            }
            BrotliResult::ResultFailure => {
                return Err(CodingError::Corrupt {
                    coding,
                    reason: "invalid brotli data".to_owned(),
                });
            }
        }
    }
}

// === Encoder ===

/// Brotli quality and window for re-encoding: fast, with a 256 KiB window so that a body in
/// flight costs little memory.
const BROTLI_QUALITY: u32 = 3;
const BROTLI_LGWIN: u32 = 18;

enum Deflate {
    Identity,
    Gzip(GzEncoder<Vec<u8>>),
    Zlib(ZlibEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Done,
}

impl fmt::Debug for Deflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Identity => "Identity",
            Self::Gzip(_) => "Gzip",
            Self::Zlib(_) => "Zlib",
            Self::Brotli(_) => "Brotli",
            Self::Done => "Done",
        })
    }
}

/// A streaming encoder for one body, with fast settings. Every [`Encoder::push`] flushes, so
/// the client can decode everything pushed so far: a stream of JSON lines stays live.
#[derive(Debug)]
pub struct Encoder {
    coding: Coding,
    inner: Deflate,
}

impl Encoder {
    /// An encoder for `coding`.
    #[must_use]
    pub fn new(coding: Coding) -> Self {
        let inner = match coding {
            Coding::Identity => Deflate::Identity,
            Coding::Gzip => Deflate::Gzip(GzEncoder::new(Vec::new(), Compression::fast())),
            Coding::Deflate => Deflate::Zlib(ZlibEncoder::new(Vec::new(), Compression::fast())),
            Coding::Brotli => Deflate::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 << 10,
                BROTLI_QUALITY,
                BROTLI_LGWIN,
            ))),
        };
        Self { coding, inner }
    }

    /// The coding produced.
    #[must_use]
    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// Encodes `input`, flushes, and appends the output to `out`. An empty `input` writes
    /// nothing.
    ///
    /// # Errors
    /// The encoder already finished, or failed.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CodingError> {
        if input.is_empty() {
            return match self.inner {
                Deflate::Done => Err(CodingError::Finished),
                _ => Ok(()),
            };
        }
        let coding = self.coding;
        let err = |e: io::Error| CodingError::Encode {
            coding,
            reason: e.to_string(),
        };
        match &mut self.inner {
            Deflate::Identity => out.extend_from_slice(input),
            Deflate::Gzip(e) => {
                e.write_all(input).map_err(err)?;
                e.flush().map_err(err)?;
                out.append(e.get_mut());
            }
            Deflate::Zlib(e) => {
                e.write_all(input).map_err(err)?;
                e.flush().map_err(err)?;
                out.append(e.get_mut());
            }
            Deflate::Brotli(e) => {
                e.write_all(input).map_err(err)?;
                e.flush().map_err(err)?;
                out.append(e.get_mut());
            }
            Deflate::Done => return Err(CodingError::Finished),
        }
        Ok(())
    }

    /// Ends the stream and appends its last bytes (trailer) to `out`.
    ///
    /// # Errors
    /// The encoder already finished, or failed.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CodingError> {
        let coding = self.coding;
        let err = |e: io::Error| CodingError::Encode {
            coding,
            reason: e.to_string(),
        };
        match std::mem::replace(&mut self.inner, Deflate::Done) {
            Deflate::Identity => {}
            Deflate::Gzip(e) => out.append(&mut e.finish().map_err(err)?),
            Deflate::Zlib(e) => out.append(&mut e.finish().map_err(err)?),
            Deflate::Brotli(e) => out.append(&mut e.into_inner()),
            Deflate::Done => return Err(CodingError::Finished),
        }
        Ok(())
    }
}

// === Accept-Encoding ===

/// The codings we can re-encode, in the order they are listed.
const OURS: [Coding; 3] = [Coding::Gzip, Coding::Deflate, Coding::Brotli];

/// The `Accept-Encoding` to send upstream for a masked route: the client's list intersected
/// with `gzip`, `deflate` and `br`, keeping the client's preferences (q-values); `identity`
/// when nothing usable remains or the client sent nothing. The upstream can then only answer
/// in a coding this crate decodes and the client accepts, which is the one the masked body is
/// re-encoded in.
#[must_use]
pub fn narrow_accept_encoding(value: Option<&HeaderValue>) -> HeaderValue {
    let Some(text) = value.and_then(|v| v.to_str().ok()) else {
        return HeaderValue::from_static("identity");
    };
    // q in thousandths per coding of ours; `None` = not listed.
    let mut listed: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    for element in text.split(',') {
        let mut parts = element.split(';');
        let name = parts.next().unwrap_or_default().trim();
        if name.is_empty() {
            continue;
        }
        let mut q = Some(1000u16);
        for param in parts {
            let Some((k, v)) = param.split_once('=') else {
                q = None;
                continue;
            };
            if k.trim().eq_ignore_ascii_case("q") {
                q = parse_qvalue(v.trim());
            }
        }
        // A malformed weight makes the element unusable rather than guessed.
        let Some(q) = q else { continue };
        if name == "*" {
            star = Some(q);
            continue;
        }
        let Some(coding) = Coding::from_token(name) else {
            continue;
        };
        if let Some(i) = OURS.iter().position(|c| *c == coding)
            && let Some(slot) = listed.get_mut(i)
        {
            *slot = Some(q);
        }
    }
    let mut out = String::new();
    for (coding, q) in OURS.iter().zip(listed) {
        let Some(q) = q.or(star) else { continue };
        if q == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(coding.as_str());
        if q < 1000 {
            out.push_str(&format!(";q=0.{q:03}"));
        }
    }
    if out.is_empty() {
        return HeaderValue::from_static("identity");
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("identity"))
}

/// Whether a response in `coding` may go to a client whose `Accept-Encoding` was narrowed to
/// `narrowed` by [`narrow_accept_encoding`]. `identity` always may (a client that refuses it
/// gets it anyway rather than a coding it did not ask for); another coding only when the
/// narrowed list names it (it holds no zero weights).
#[must_use]
pub fn narrowed_accepts(narrowed: &HeaderValue, coding: Coding) -> bool {
    if coding == Coding::Identity {
        return true;
    }
    let Ok(text) = narrowed.to_str() else {
        return false;
    };
    text.split(',').any(|element| {
        let name = element.split(';').next().unwrap_or_default().trim();
        Coding::from_token(name) == Some(coding)
    })
}

/// RFC 9110 `qvalue`: `0[.ddd]` or `1[.000]`, in thousandths.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, b) in frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .enumerate()
    {
        let d = u16::from(b - b'0');
        thousandths += d * [100, 10, 1].get(i).copied().unwrap_or(0);
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode_all(coding: Coding, data: &[u8], chunk: usize) -> Result<Vec<u8>, CodingError> {
        let mut d = Decoder::new(coding, DecodeLimits::default());
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            d.push(c, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    fn encode_all(coding: Coding, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut e = Encoder::new(coding);
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            e.push(c, &mut out).unwrap();
        }
        e.finish(&mut out).unwrap();
        out
    }

    fn sample() -> Vec<u8> {
        (0..5000)
            .map(|i| format!("{{\"id\":{i},\"name\":\"customer {i}\"}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn tokens() {
        assert_eq!(Coding::from_token("GZip"), Some(Coding::Gzip));
        assert_eq!(Coding::from_token("x-gzip"), Some(Coding::Gzip));
        assert_eq!(Coding::from_token(" br "), Some(Coding::Brotli));
        assert_eq!(Coding::from_token("deflate"), Some(Coding::Deflate));
        assert_eq!(Coding::from_token("zstd"), None);
        assert_eq!(Coding::from_token("compress"), None);
    }

    #[test]
    fn content_encoding_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(Coding::from_headers(&h), Ok(Coding::Identity));
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity, gzip"),
        );
        assert_eq!(Coding::from_headers(&h), Ok(Coding::Gzip));
        h.append(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(matches!(
            Coding::from_headers(&h),
            Err(CodingError::Stacked { .. })
        ));
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip, gzip"),
        );
        assert!(matches!(
            Coding::from_headers(&h),
            Err(CodingError::Stacked { .. })
        ));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(
            Coding::from_headers(&h),
            Err(CodingError::Unsupported {
                coding: "zstd".into()
            })
        );
    }

    #[test]
    fn round_trips_in_every_chunking() {
        let data = sample();
        for coding in [
            Coding::Identity,
            Coding::Gzip,
            Coding::Deflate,
            Coding::Brotli,
        ] {
            for chunk in [1, 7, 1000, 1 << 20] {
                let enc = encode_all(coding, &data, chunk.max(333));
                let dec = decode_all(coding, &enc, chunk).unwrap();
                assert!(dec == data, "{coding} chunk {chunk}");
            }
        }
    }

    #[test]
    fn every_push_is_decodable_at_once() {
        // Flushing after each push: a reader sees each line as soon as it was pushed.
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
            let mut e = Encoder::new(coding);
            let mut d = Decoder::new(coding, DecodeLimits::default());
            let mut seen = Vec::new();
            for line in ["{\"a\":1}\n", "{\"b\":2}\n", "{\"c\":3}\n"] {
                let mut wire = Vec::new();
                e.push(line.as_bytes(), &mut wire).unwrap();
                let mut out = Vec::new();
                d.push(&wire, &mut out).unwrap();
                assert_eq!(out, line.as_bytes(), "{coding}");
                seen.extend(out);
            }
            let mut wire = Vec::new();
            e.finish(&mut wire).unwrap();
            d.push(&wire, &mut seen).unwrap();
            d.finish(&mut seen).unwrap();
        }
    }

    #[test]
    fn raw_deflate_is_accepted() {
        let data = sample();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(&data).unwrap();
        let raw = e.finish().unwrap();
        assert!(!is_zlib_header(&raw));
        assert_eq!(decode_all(Coding::Deflate, &raw, 1).unwrap(), data);
        assert_eq!(decode_all(Coding::Deflate, &raw, 4096).unwrap(), data);
    }

    #[test]
    fn concatenated_gzip_members_are_one_body() {
        let mut two = gzip(b"first ");
        two.extend(gzip(b"second"));
        assert_eq!(decode_all(Coding::Gzip, &two, 3).unwrap(), b"first second");
    }

    #[test]
    fn empty_input_is_an_empty_body() {
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
            assert_eq!(decode_all(coding, b"", 1).unwrap(), b"");
        }
    }

    #[test]
    fn truncated_streams_are_errors() {
        let data = sample();
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
            let enc = encode_all(coding, &data, 4096);
            for cut in [1, 2, 5, enc.len() / 2, enc.len() - 1] {
                let r = decode_all(coding, enc.get(..cut).unwrap(), 512);
                assert!(r.is_err(), "{coding} cut at {cut} of {}", enc.len());
            }
        }
    }

    #[test]
    fn trailing_data_and_garbage_are_errors() {
        let data = sample();
        for coding in [Coding::Deflate, Coding::Brotli] {
            let mut enc = encode_all(coding, &data, 4096);
            enc.extend_from_slice(b"tail");
            assert_eq!(
                decode_all(coding, &enc, 100),
                Err(CodingError::TrailingData { coding })
            );
        }
        let mut gz = gzip(&data);
        gz.extend_from_slice(b"tail");
        assert!(decode_all(Coding::Gzip, &gz, 100).is_err());
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
            assert!(decode_all(coding, b"this is not compressed at all", 5).is_err());
        }
    }

    #[test]
    fn size_cap_stops_before_buffering_the_bomb() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = gzip(&zeros);
        let limits = DecodeLimits {
            max_decoded_bytes: 1 << 20,
            max_ratio: u64::MAX,
            ratio_floor: 0,
        };
        let mut d = Decoder::new(Coding::Gzip, limits);
        let mut out = Vec::new();
        let err = d.push(&bomb, &mut out).unwrap_err();
        assert_eq!(err, CodingError::TooLarge { limit: 1 << 20 });
        assert!(out.len() <= 1 << 20);
        assert!(d.bytes_out() <= 1 << 20);
        // Poisoned from now on.
        assert_eq!(d.push(b"", &mut out), Err(CodingError::Finished));
        assert_eq!(d.finish(&mut out), Err(CodingError::Finished));
    }

    #[test]
    fn identity_is_not_capped() {
        let limits = DecodeLimits {
            max_decoded_bytes: 10,
            max_ratio: 1,
            ratio_floor: 0,
        };
        let mut d = Decoder::new(Coding::Identity, limits);
        let mut out = Vec::new();
        d.push(&[b'x'; 100], &mut out).unwrap();
        d.finish(&mut out).unwrap();
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn ratio_cap_after_the_floor() {
        let zeros = vec![0u8; 4 << 20];
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
            let bomb = encode_all(coding, &zeros, 1 << 20);
            let limits = DecodeLimits {
                max_decoded_bytes: u64::MAX,
                max_ratio: 50,
                ratio_floor: 1 << 20,
            };
            let mut d = Decoder::new(coding, limits);
            let mut out = Vec::new();
            let mut err = None;
            for c in bomb.chunks(64) {
                if let Err(e) = d.push(c, &mut out) {
                    err = Some(e);
                    break;
                }
            }
            assert!(
                matches!(err, Some(CodingError::Ratio { limit: 50, .. })),
                "{coding}: {err:?}"
            );
            assert!(d.bytes_out() <= (1 << 20) + (64 << 10));
            // Below the floor the same ratio is fine.
            let small = encode_all(coding, &zeros[..512 << 10], 4096);
            assert_eq!(decode_all(coding, &small, 64).unwrap().len(), 512 << 10);
        }
    }

    #[test]
    fn accept_encoding_is_narrowed() {
        let n = |s: &str| narrow_accept_encoding(Some(&HeaderValue::from_str(s).unwrap()));
        assert_eq!(narrow_accept_encoding(None), "identity");
        assert_eq!(n("gzip, deflate, br, zstd"), "gzip, deflate, br");
        assert_eq!(n("zstd, compress"), "identity");
        assert_eq!(n("br;q=0.5, x-gzip;q=0.8"), "gzip;q=0.800, br;q=0.500");
        assert_eq!(n("*"), "gzip, deflate, br");
        assert_eq!(n("*;q=0.1, gzip;q=0"), "deflate;q=0.100, br;q=0.100");
        assert_eq!(n("gzip;q=2, br;q=abc, deflate"), "deflate");
        assert_eq!(n("identity"), "identity");
        assert_eq!(n(""), "identity");
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue(""), None);
        assert_eq!(parse_qvalue("-0"), None);
    }
}
