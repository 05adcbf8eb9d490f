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

/// One connection's two directions interleaved, fed to a [`Session`] that reports what
/// became of each request. The input is a series of steps: a byte whose low bit says which
/// side speaks (0 the client, 1 the server), a little-endian `u16` length, and that many
/// bytes of that side's messages. Checks that every request numbered is either still
/// waiting or reported exactly once, and that nothing is reported that was not numbered.
pub fn session(data: &[u8]) {
    use crate::backend::{Authentication, TransactionStatus};
    use crate::frontend::{ProtocolVersion, StartupMessage};
    let limits = small_limits();
    let mut session = Session::new();
    let startup = FrontendMessage::Startup(StartupMessage {
        version: ProtocolVersion::V3_0,
        parameters: vec![(
            bytes::Bytes::from_static(b"user"),
            bytes::Bytes::from_static(b"u"),
        )],
    });
    let ready = [
        BackendMessage::Authentication(Authentication::Ok),
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
    ];
    if session.on_frontend(&startup).is_err()
        || ready.iter().any(|m| session.on_backend(m).is_err())
    {
        unreachable!("a fresh session logs in");
    }
    session.report_finished(true);
    let mut front = FrontendDecoder::established(limits);
    let mut back = BackendDecoder::new(limits);
    let (mut front_buf, mut back_buf) = (BytesMut::new(), BytesMut::new());
    let mut numbered: u64 = 0;
    let mut last: Option<u64> = None;
    let mut reported = std::collections::HashSet::new();
    let mut rest = data;
    while let [side, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        let fed = if side & 1 == 0 {
            front_buf.extend_from_slice(chunk);
            let mut fed = Ok(());
            while let Ok(Some(frame)) = front.decode_frame(&mut front_buf) {
                let Ok(msg) = FrontendMessage::decode(&frame, session.auth_context(), &limits)
                else {
                    continue;
                };
                fed = session.on_frontend(&msg);
                if let Some(id) = session.last_request() {
                    assert!(last.is_none_or(|l| id > l), "request numbers go up");
                    last = Some(id);
                    numbered += 1;
                }
                if fed.is_err() {
                    break;
                }
            }
            fed
        } else {
            back_buf.extend_from_slice(chunk);
            let mut fed = Ok(());
            while let Ok(Some(frame)) = back.decode_frame(&mut back_buf) {
                let Ok(msg) = BackendMessage::decode(&frame, &limits) else {
                    continue;
                };
                fed = session.on_backend(&msg);
                if fed.is_err() {
                    break;
                }
            }
            fed
        };
        for (id, _) in session.take_finished() {
            assert!(
                last.is_some_and(|l| id <= l),
                "request {id} reported, never numbered"
            );
            assert!(reported.insert(id), "request {id} reported twice");
        }
        assert_eq!(
            numbered,
            session.in_flight() as u64 + reported.len() as u64,
            "every request numbered is waiting or reported"
        );
        if fed.is_err() {
            // A proxy ends the connection here.
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn step(side: u8, msgs: &[FrontendOrBackend]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for m in msgs {
            match m {
                FrontendOrBackend::F(m) => m.encode(&mut out).unwrap(),
                FrontendOrBackend::B(m) => m.encode(&mut out).unwrap(),
            }
        }
        let mut v = vec![side];
        v.extend_from_slice(&u16::try_from(out.len()).unwrap().to_le_bytes());
        v.extend_from_slice(&out);
        v
    }

    enum FrontendOrBackend {
        F(FrontendMessage),
        B(BackendMessage),
    }

    #[test]
    fn a_batch_with_a_skipped_query_keeps_every_request_accounted_for() {
        use crate::backend::{ErrorFields, TransactionStatus};
        use crate::frontend::Bind;
        use FrontendOrBackend::{B, F};
        let b = |s: &'static str| bytes::Bytes::from_static(s.as_bytes());
        let mut data = step(
            0,
            &[
                F(FrontendMessage::Bind(Bind {
                    portal: b(""),
                    statement: b("nope"),
                    param_formats: vec![],
                    params: vec![],
                    result_formats: vec![],
                })),
                F(FrontendMessage::Query(b("SELECT 1"))),
                F(FrontendMessage::Sync),
            ],
        );
        data.extend(step(
            1,
            &[
                B(BackendMessage::ErrorResponse(ErrorFields::new(
                    "ERROR", "26000", "nope",
                ))),
                B(BackendMessage::ReadyForQuery(TransactionStatus::Idle)),
            ],
        ));
        data.extend(step(0, &[F(FrontendMessage::Query(b("SELECT 2")))]));
        data.extend(step(
            1,
            &[
                B(BackendMessage::CommandComplete(b("SELECT 0"))),
                B(BackendMessage::ReadyForQuery(TransactionStatus::Idle)),
            ],
        ));
        session(&data);
        // Truncated anywhere, it still holds.
        for cut in 0..data.len() {
            session(&data[..cut]);
        }
    }
}
