#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[macro_use]
mod spec;
mod classify;
#[cfg(feature = "codec")]
mod codec;
mod error;
mod frame;
mod inline;
mod interop;
mod session;
mod table;
mod value;
mod wire;

pub use bytes;
pub use classify::{Classified, Flow, Risk, classify};
#[cfg(feature = "codec")]
pub use codec::{CodecError, ReplyCodec, RequestCodec};
pub use error::{Error, Result};
pub use frame::{Frame, FrameKind, ReplyDecoder, Request, RequestDecoder, encode_args};
pub use inline::split_args;
pub use interop::redis_protocol;
pub use session::{Correlated, OutOfBand, Session, correlate_all};
pub use spec::{
    AclCategories, BeginSearch, CommandFlags, CommandSpec, FindKeys, KeySpec, KeySpecFlags, lookup,
};
pub use table::{COMMANDS, SERVER_VERSION};
pub use value::Value;
pub use wire::{Limits, MAX_DEPTH, RespVersion};

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the cargo-fuzz targets in `fuzz/`. Not part of the public API.

    use bytes::{Bytes, BytesMut};

    use crate::{
        Limits, ReplyDecoder, RequestDecoder, RespVersion, Session, Value, classify, split_args,
    };

    /// The limits every fuzz target decodes under (the relay target's proxy too).
    pub fn limits() -> Limits {
        Limits::default()
            .with_max_depth(16)
            .with_max_elements(4096)
            .with_max_frame_len(1 << 20)
            .with_max_bulk_len(1 << 16)
            .with_max_inline_len(4096)
    }

    fn frames(data: &[u8], version: RespVersion, cut: usize) -> Vec<Bytes> {
        let mut d = ReplyDecoder::new(limits());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let cut = cut.min(data.len());
        for piece in [&data[..cut], &data[cut..]] {
            buf.extend_from_slice(piece);
            while let Ok(Some(f)) = d.decode(&mut buf, version) {
                out.push(f.into_raw());
            }
        }
        out
    }

    fn replies(data: &[u8], version: RespVersion) {
        let whole = frames(data, version, data.len());
        // A frame that arrives in two pieces is the same frame.
        let cut = data.first().map_or(0, |b| usize::from(*b));
        let pieces = frames(data, version, cut);
        assert_eq!(pieces, whole);
        let mut session: Session<usize> = Session::new();
        for (i, raw) in whole.iter().enumerate() {
            let f = crate::Frame::from_bytes(raw.clone(), version, &limits())
                .expect("a decoded frame validates on its own");
            let v = f.value().expect("validated frames build");
            let again = Value::decode(&v.to_bytes(), RespVersion::Resp3, &Limits::default())
                .expect("re-encoding decodes")
                .expect("re-encoding is complete");
            assert_eq!(again.0, v);
            if let Some(els) = f.elements().expect("elements of a validated frame") {
                for e in els {
                    assert!(Value::decode(&e, RespVersion::Resp3, &Limits::default()).is_ok());
                }
            }
            let _ = session.on_reply(&f);
            session.on_request(&[Bytes::from_static(b"GET")], i);
        }
    }

    /// Decodes `data` as RESP2 replies; whatever decodes must re-encode and decode again.
    pub fn resp2(data: &[u8]) {
        replies(data, RespVersion::Resp2);
    }

    /// Decodes `data` as RESP3 replies; whatever decodes must re-encode and decode again.
    pub fn resp3(data: &[u8]) {
        replies(data, RespVersion::Resp3);
    }

    fn requests(data: &[u8], cut: usize) -> Vec<crate::Request> {
        let mut d = RequestDecoder::new(limits());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let cut = cut.min(data.len());
        for piece in [&data[..cut], &data[cut..]] {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => break,
                    Err(_) => return out,
                }
            }
        }
        out
    }

    /// Decodes `data` as client requests (inline and RESP), classifies each, and checks that
    /// requests that arrive in two pieces decode as they do whole, and that split inline
    /// arguments, quoted again, split back to themselves.
    pub fn inline(data: &[u8]) {
        let whole = requests(data, data.len());
        for r in &whole {
            assert!(!r.args().is_empty());
            let _ = classify(r.args());
        }
        let cut = data.first().map_or(0, |b| usize::from(*b));
        assert_eq!(requests(data, cut), whole);
        if let Ok(args) = split_args(&Bytes::copy_from_slice(data)) {
            let mut line = Vec::new();
            for a in &args {
                line.push(b'"');
                for &b in a.iter() {
                    match b {
                        b'"' | b'\\' => line.extend_from_slice(&[b'\\', b]),
                        0x20..=0x7e => line.push(b),
                        _ => line.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                    }
                }
                line.extend_from_slice(b"\" ");
            }
            let back = split_args(&Bytes::from(line)).expect("quoted arguments split");
            assert_eq!(back, args);
        }
    }
}
