//! Framing: splitting a byte stream into whole messages without parsing their bodies.
//!
//! A [`Frame`] owns the exact bytes of one message (header included), so a relay that does
//! not change a message forwards `frame.as_bytes()` as it came. The decoders only look at
//! headers: the declared length is checked against [`Limits`] before a single byte is
//! reserved, and a length below the header size is an error, never an underflow.

use bytes::{Bytes, BytesMut};

use crate::backend::BackendMessage;
use crate::error::{Direction, Error, Result};
use crate::frontend::{AuthContext, FrontendMessage};
use crate::limits::Limits;

/// Request code of an SSLRequest.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// What kind of frame this is; most are tagged messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// A regular message with its type byte.
    Tagged(u8),
    /// An untagged startup-phase packet (StartupMessage, SSLRequest, GSSENCRequest,
    /// CancelRequest).
    Startup,
    /// The single byte answering an SSLRequest (`S` or `N`).
    SslResponse,
    /// The single byte answering a GSSENCRequest (`G` or `N`).
    GssEncResponse,
}

/// The raw bytes of one whole message, header included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    kind: FrameKind,
    raw: Bytes,
}

impl Frame {
    /// Wraps raw bytes; callers of the public API get frames from a decoder.
    pub(crate) fn new(kind: FrameKind, raw: Bytes) -> Frame {
        Frame { kind, raw }
    }

    /// The kind of frame.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// The message type byte, if the frame is a tagged message.
    pub fn tag(&self) -> Option<u8> {
        match self.kind {
            FrameKind::Tagged(t) => Some(t),
            _ => None,
        }
    }

    /// The whole frame as received: forward these bytes to pass the message on unchanged.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// The whole frame as received.
    pub fn into_bytes(self) -> Bytes {
        self.raw
    }

    /// Total length of the frame in bytes.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the frame is empty (never true for a decoded frame).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The message body after the header (type byte and length word). For a startup packet
    /// this starts with the protocol version or request code; for a one-byte TLS answer it
    /// is that byte.
    pub fn body(&self) -> Bytes {
        let skip = match self.kind {
            FrameKind::Tagged(_) => 5,
            FrameKind::Startup => 4,
            FrameKind::SslResponse | FrameKind::GssEncResponse => 0,
        };
        self.raw.slice(skip.min(self.raw.len())..)
    }

    /// Parses this frame as a frontend message. `auth` says how to read a `p` message,
    /// whose meaning depends on what the server asked for.
    pub fn to_frontend(&self, auth: AuthContext, limits: &Limits) -> Result<FrontendMessage> {
        FrontendMessage::decode(self, auth, limits)
    }

    /// Parses this frame as a backend message.
    pub fn to_backend(&self, limits: &Limits) -> Result<BackendMessage> {
        BackendMessage::decode(self, limits)
    }
}

/// The exact length (length word included) of the messages whose size is fixed, so a
/// hostile peer cannot make us buffer a "Sync" of a gigabyte before the body check.
fn fixed_len(direction: Direction, tag: u8) -> Option<usize> {
    match (direction, tag) {
        (Direction::Frontend, b'S' | b'H' | b'X' | b'c') => Some(4),
        (Direction::Backend, b'1' | b'2' | b'3' | b'n' | b's' | b'I' | b'c') => Some(4),
        (Direction::Backend, b'Z') => Some(5),
        _ => None,
    }
}

/// The limit for one message type: the small limit for those the server itself reads with
/// its small limit, else the direction's limit.
fn limit_for(direction: Direction, tag: u8, limits: &Limits) -> usize {
    let small = match direction {
        Direction::Frontend => matches!(tag, b'C' | b'D' | b'E' | b'f'),
        Direction::Backend => matches!(tag, b'S' | b'K'),
    };
    match direction {
        _ if small => limits.max_small_message_len,
        Direction::Frontend => limits.max_frontend_message_len,
        Direction::Backend => limits.max_backend_message_len,
    }
}

/// Reads a tagged frame from `src` if a whole one is there.
fn tagged_frame(
    src: &mut BytesMut,
    direction: Direction,
    limits: &Limits,
) -> Result<Option<Frame>> {
    let (Some(&tag), Some(len)) = (src.first(), src.get(1..5)) else {
        return Ok(None);
    };
    let mut word = [0u8; 4];
    word.copy_from_slice(len);
    let len = i32::from_be_bytes(word);
    if len < 4 {
        return Err(Error::LengthTooSmall {
            direction,
            tag: char::from(tag),
            len: len.into(),
            min: 4,
        });
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if fixed_len(direction, tag).is_some_and(|fixed| len != fixed) {
        return Err(Error::InvalidField {
            message: "message header",
            field: "length",
            value: i64::try_from(len).unwrap_or(i64::MAX),
        });
    }
    let limit = limit_for(direction, tag, limits);
    if len > limit {
        return Err(Error::MessageTooLarge {
            direction,
            tag: char::from(tag),
            len,
            limit,
        });
    }
    let total = len.saturating_add(1);
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    Ok(Some(Frame::new(
        FrameKind::Tagged(tag),
        src.split_to(total).freeze(),
    )))
}

// === impl FrontendDecoder ===

/// Splits the client's byte stream into frames and parses them.
///
/// It starts in the startup phase, where packets are untagged, and moves to the message
/// phase by itself after a StartupMessage. SSLRequest and GSSENCRequest keep it in the
/// startup phase (the client sends a StartupMessage next, perhaps over TLS).
#[derive(Debug, Clone)]
pub struct FrontendDecoder {
    limits: Limits,
    startup: bool,
    auth: AuthContext,
}

impl FrontendDecoder {
    /// A decoder for a new connection (startup phase).
    pub fn new(limits: Limits) -> FrontendDecoder {
        FrontendDecoder {
            limits,
            startup: true,
            auth: AuthContext::Unknown,
        }
    }

    /// A decoder for a connection whose startup phase is over.
    pub fn established(limits: Limits) -> FrontendDecoder {
        FrontendDecoder {
            limits,
            startup: false,
            auth: AuthContext::Unknown,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the next frame is an untagged startup packet.
    pub fn in_startup(&self) -> bool {
        self.startup
    }

    /// Sets how the next `p` messages are read (what the server asked the client for).
    pub fn set_auth_context(&mut self, auth: AuthContext) {
        self.auth = auth;
    }

    /// How `p` messages are currently read.
    pub fn auth_context(&self) -> AuthContext {
        self.auth
    }

    /// Takes one whole frame off `src`, or returns `None` if more bytes are needed.
    pub fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Frame>> {
        if !self.startup {
            return tagged_frame(src, Direction::Frontend, &self.limits);
        }
        let Some(len) = src.get(0..4) else {
            return Ok(None);
        };
        let mut word = [0u8; 4];
        word.copy_from_slice(len);
        let len = i32::from_be_bytes(word);
        if len < 8 {
            return Err(Error::LengthTooSmall {
                direction: Direction::Frontend,
                tag: '\0',
                len: len.into(),
                min: 8,
            });
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let limit = self.limits.max_startup_packet_len;
        if len > limit {
            return Err(Error::StartupTooLarge { len, limit });
        }
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let frame = Frame::new(FrameKind::Startup, src.split_to(len).freeze());
        let code = frame
            .body()
            .get(0..4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        if code.is_some_and(|c| c >> 16 == 3) {
            self.startup = false;
        }
        Ok(Some(frame))
    }

    /// Takes one whole frame off `src` and parses it.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<(Frame, FrontendMessage)>> {
        let Some(frame) = self.decode_frame(src)? else {
            return Ok(None);
        };
        let msg = FrontendMessage::decode(&frame, self.auth, &self.limits)?;
        Ok(Some((frame, msg)))
    }
}

// === impl BackendDecoder ===

/// Splits the server's byte stream into frames and parses them.
#[derive(Debug, Clone)]
pub struct BackendDecoder {
    limits: Limits,
    single_byte: Option<FrameKind>,
}

impl BackendDecoder {
    /// A decoder for a server's byte stream.
    pub fn new(limits: Limits) -> BackendDecoder {
        BackendDecoder {
            limits,
            single_byte: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The next frame is the one-byte answer to an SSLRequest.
    pub fn expect_ssl_response(&mut self) {
        self.single_byte = Some(FrameKind::SslResponse);
    }

    /// The next frame is the one-byte answer to a GSSENCRequest.
    pub fn expect_gssenc_response(&mut self) {
        self.single_byte = Some(FrameKind::GssEncResponse);
    }

    /// Takes one whole frame off `src`, or returns `None` if more bytes are needed.
    pub fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Frame>> {
        if let Some(kind) = self.single_byte {
            let Some(&b) = src.first() else {
                return Ok(None);
            };
            // A server that does not speak TLS at all may answer with an ErrorResponse.
            if b != b'E' {
                self.single_byte = None;
                return Ok(Some(Frame::new(kind, src.split_to(1).freeze())));
            }
            self.single_byte = None;
        }
        tagged_frame(src, Direction::Backend, &self.limits)
    }

    /// Takes one whole frame off `src` and parses it.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<(Frame, BackendMessage)>> {
        let Some(frame) = self.decode_frame(src)? else {
            return Ok(None);
        };
        let msg = BackendMessage::decode(&frame, &self.limits)?;
        Ok(Some((frame, msg)))
    }
}
