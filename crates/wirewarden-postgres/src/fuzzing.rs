//! Entry points for the cargo-fuzz targets in `fuzz/`. Not part of the public API.
//!
//! Each decodes arbitrary bytes as one direction of the protocol; whatever decodes must
//! re-encode to exactly the bytes it came from and decode again to the same message.

use bytes::BytesMut;

use crate::frame::{BackendDecoder, FrontendDecoder};
use crate::frontend::AuthContext;
use crate::limits::Limits;
use crate::rows::{CellEdit, RowRewriter};
use crate::session::Session;
use crate::{BackendMessage, FrontendMessage};

fn small_limits() -> Limits {
    Limits {
        max_frontend_message_len: 1 << 16,
        max_backend_message_len: 1 << 16,
        ..Limits::DEFAULT
    }
}

/// Frontend messages after the startup phase; `p` messages are read in every context.
pub fn frontend(data: &[u8]) {
    let limits = small_limits();
    let mut dec = FrontendDecoder::established(limits);
    let mut buf = BytesMut::from(data);
    let mut session = Session::new();
    while let Ok(Some(frame)) = dec.decode_frame(&mut buf) {
        for ctx in [
            AuthContext::Unknown,
            AuthContext::Password,
            AuthContext::SaslInitial,
            AuthContext::Sasl,
            AuthContext::Gss,
        ] {
            let Ok(msg) = FrontendMessage::decode(&frame, ctx, &limits) else {
                continue;
            };
            let mut out = BytesMut::new();
            msg.encode(&mut out).expect("a decoded message re-encodes");
            assert_eq!(&out[..], &frame.as_bytes()[..]);
            let again = FrontendMessage::decode(&frame, ctx, &limits).expect("decodes again");
            assert_eq!(again, msg);
            let _ = session.on_frontend(&msg);
        }
    }
}

/// Backend messages; also feeds them to a session and rewrites DataRows.
pub fn backend(data: &[u8]) {
    let limits = small_limits();
    let mut dec = BackendDecoder::new(limits);
    let mut buf = BytesMut::from(data);
    let mut session = Session::new();
    let mut rw = RowRewriter::new();
    while let Ok(Some(frame)) = dec.decode_frame(&mut buf) {
        let Ok(msg) = BackendMessage::decode(&frame, &limits) else {
            continue;
        };
        let mut out = BytesMut::new();
        msg.encode(&mut out).expect("a decoded message re-encodes");
        assert_eq!(&out[..], &frame.as_bytes()[..]);
        if let BackendMessage::DataRow(row) = &msg {
            let same = rw.rewrite(row, |_, _, _| CellEdit::Keep).expect("rewrite");
            assert_eq!(&same, row);
            let nulls = rw.rewrite(row, |_, _, _| CellEdit::Null).expect("rewrite");
            assert!(nulls.cells().all(|c| c.is_none()));
            assert_eq!(nulls.len(), row.len());
        }
        let _ = session.on_backend(&msg);
        let _ = session.row_description();
    }
}

/// Startup-phase packets, then whatever follows them.
pub fn startup(data: &[u8]) {
    let limits = small_limits();
    let mut dec = FrontendDecoder::new(limits);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = dec.decode_frame(&mut buf) {
        let Ok(msg) = FrontendMessage::decode(&frame, AuthContext::Unknown, &limits) else {
            continue;
        };
        let mut out = BytesMut::new();
        msg.encode(&mut out).expect("a decoded message re-encodes");
        assert_eq!(&out[..], &frame.as_bytes()[..]);
    }
}
