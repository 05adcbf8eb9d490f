//! tokio-util `Decoder`/`Encoder` layers over the IO-free decoders (feature `codec`).
//!
//! A relay that correlates replies should drive [`ReplyDecoder`] itself so it can pass
//! [`Session::reply_version`](crate::Session::reply_version) for each frame;
//! [`ReplyCodec`] holds a version the caller updates with [`ReplyCodec::set_version`].

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;
use crate::frame::{Frame, ReplyDecoder, Request, RequestDecoder};
use crate::wire::{Limits, RespVersion};

/// Client → server: decodes [`Request`]s, encodes raw bytes (a request's or a frame's).
#[derive(Debug, Clone, Default)]
pub struct RequestCodec {
    inner: RequestDecoder,
}

impl RequestCodec {
    /// A codec with `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: RequestDecoder::new(limits),
        }
    }
}

impl Decoder for RequestCodec {
    type Item = Request;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, CodecError> {
        Ok(self.inner.decode(src)?)
    }
}

/// Server → client: decodes [`Frame`]s in the version set with [`ReplyCodec::set_version`].
#[derive(Debug, Clone, Default)]
pub struct ReplyCodec {
    inner: ReplyDecoder,
    version: RespVersion,
}

impl ReplyCodec {
    /// A codec with `limits`, starting in RESP2.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: ReplyDecoder::new(limits),
            version: RespVersion::Resp2,
        }
    }

    /// Sets the version the next frames are decoded with.
    pub fn set_version(&mut self, version: RespVersion) {
        self.version = version;
    }
}

impl Decoder for ReplyCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(self.inner.decode(src, self.version)?)
    }
}

macro_rules! encode_raw {
    ($codec:ty) => {
        impl Encoder<Bytes> for $codec {
            type Error = CodecError;

            fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
                dst.extend_from_slice(&item);
                Ok(())
            }
        }

        impl Encoder<&Request> for $codec {
            type Error = CodecError;

            fn encode(&mut self, item: &Request, dst: &mut BytesMut) -> Result<(), CodecError> {
                dst.extend_from_slice(item.raw());
                Ok(())
            }
        }

        impl Encoder<&Frame> for $codec {
            type Error = CodecError;

            fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
                dst.extend_from_slice(item.raw());
                Ok(())
            }
        }
    };
}

encode_raw!(RequestCodec);
encode_raw!(ReplyCodec);

/// An error of the codec layer: the protocol or the socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Malformed input or a limit exceeded.
    #[error(transparent)]
    Protocol(#[from] Error),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders_and_raw_encoders() {
        let mut c = RequestCodec::default();
        let mut buf = BytesMut::from(&b"PING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let a = c.decode(&mut buf).unwrap().unwrap();
        let b = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!(a.args(), b.args());
        let mut out = BytesMut::new();
        c.encode(&b, &mut out).unwrap();
        assert_eq!(&out[..], b.raw());
        let mut r = ReplyCodec::default();
        let mut buf = BytesMut::from(&b"_\r\n"[..]);
        assert!(r.decode(&mut buf).is_err());
        r.set_version(RespVersion::Resp3);
        let mut buf = BytesMut::from(&b"_\r\n"[..]);
        assert!(r.decode(&mut buf).unwrap().is_some());
    }
}
