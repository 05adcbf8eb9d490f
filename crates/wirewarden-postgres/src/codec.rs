//! tokio-util `Decoder`/`Encoder` adapters over the IO-free decoders, for `Framed`.
//!
//! Decoding yields [`Frame`]s (raw bytes, header checked against the limits); parse them
//! with [`Frame::to_frontend`] or [`Frame::to_backend`] when the content matters, and
//! forward them unchanged with the `Frame` encoder. Messages can be encoded directly too.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::backend::BackendMessage;
use crate::error::Error;
use crate::frame::{BackendDecoder, Frame, FrontendDecoder};
use crate::frontend::FrontendMessage;

/// Codec for the client's byte stream: decodes frontend frames, encodes anything.
#[derive(Debug, Clone)]
pub struct FrontendCodec {
    /// The underlying IO-free decoder (startup phase, auth context, limits).
    pub decoder: FrontendDecoder,
}

impl FrontendCodec {
    /// Wraps a decoder.
    pub fn new(decoder: FrontendDecoder) -> FrontendCodec {
        FrontendCodec { decoder }
    }
}

impl Decoder for FrontendCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        self.decoder.decode_frame(src)
    }
}

/// Codec for the server's byte stream: decodes backend frames, encodes anything.
#[derive(Debug, Clone)]
pub struct BackendCodec {
    /// The underlying IO-free decoder.
    pub decoder: BackendDecoder,
}

impl BackendCodec {
    /// Wraps a decoder.
    pub fn new(decoder: BackendDecoder) -> BackendCodec {
        BackendCodec { decoder }
    }
}

impl Decoder for BackendCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        self.decoder.decode_frame(src)
    }
}

macro_rules! encoders {
    ($($codec:ty),*) => {$(
        impl Encoder<Frame> for $codec {
            type Error = Error;

            fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), Error> {
                dst.extend_from_slice(item.as_bytes());
                Ok(())
            }
        }

        impl Encoder<&Frame> for $codec {
            type Error = Error;

            fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
                dst.extend_from_slice(item.as_bytes());
                Ok(())
            }
        }

        impl Encoder<FrontendMessage> for $codec {
            type Error = Error;

            fn encode(&mut self, item: FrontendMessage, dst: &mut BytesMut) -> Result<(), Error> {
                item.encode(dst)
            }
        }

        impl Encoder<BackendMessage> for $codec {
            type Error = Error;

            fn encode(&mut self, item: BackendMessage, dst: &mut BytesMut) -> Result<(), Error> {
                item.encode(dst)
            }
        }
    )*};
}

encoders!(FrontendCodec, BackendCodec);
