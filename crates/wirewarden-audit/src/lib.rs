#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// The docs link to items behind the default features; without them the links stay text.
#![cfg_attr(
    not(all(feature = "webhook", feature = "postgres")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod codec;
mod error;
mod export;
mod file;
mod format;
#[cfg(feature = "postgres")]
mod postgres;
mod read;
mod replay;
mod sink;
mod stdout;
mod verify;
#[cfg(feature = "webhook")]
mod webhook;

#[cfg(test)]
mod fill_tests;
#[cfg(test)]
mod tamper_tests;

#[doc(hidden)]
pub mod testing;

pub use codec::{EVENT_ENCODING_VERSION, decode_event, encode_event};
pub use error::{Error, Result};
pub use export::{ExportFormat, OCSF_VERSION, OcsfExporter, to_json_line};
pub use file::{
    DROP_PAGES_BYTES, FileSink, FileSinkBuilder, IoHook, StdIo, WRITE_BATCH_BYTES, ZERO_AHEAD_BYTES,
};
pub use format::{
    CHECKPOINT_FILE, ChainKey, Checkpoint, CheckpointKey, CheckpointSigner, FORMAT_VERSION, Hash,
    LogId, SegmentHeader, hash_hex, segment_file_name,
};
#[cfg(feature = "postgres")]
pub use postgres::PostgresSink;
pub use read::{Entry, LogReader, read_log};
pub use replay::Transcript;
pub use sink::{Appended, AuditSink, Durability, PartialBatch};
pub use stdout::{StdoutSink, WriterSink};
#[cfg(feature = "postgres")]
pub use tokio_postgres;
pub use verify::{
    Damage, DamageKind, Report, TornTail, Unreadable, VerifyKeys, VerifyOptions, verify_dir,
    verify_dir_with,
};
#[cfg(feature = "webhook")]
pub use webhook::{WebhookConfig, WebhookSink};
pub use wirewarden_core;

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the cargo-fuzz targets in `fuzz/`. Not part of the public API.

    use crate::format::{
        DEFAULT_MAX_RECORD_BYTES, Frame, FrameRead, SegmentHeader, ZERO_TAIL_MIN,
        encode_event_frame, encode_seal_frame, read_checkpoint_entries, read_frame, torn_write,
    };
    use crate::{decode_event, encode_event};

    /// Decodes `data` as a segment file (header, then record frames), as one event and as a
    /// checkpoint file. Whatever decodes must encode back to exactly the same bytes: the
    /// encoding is canonical, so a verifier can re-derive what it hashes.
    pub fn decode_segment(data: &[u8]) {
        if let Ok(event) = decode_event(data) {
            assert_eq!(encode_event(&event).ok().as_deref(), Some(data));
        }
        let _ = read_checkpoint_entries(data);
        let Ok((header, len)) = SegmentHeader::decode(data) else {
            return;
        };
        assert_eq!(Some(header.encode().as_slice()), data.get(..len));
        let mut rest = data.get(len..).unwrap_or_default();
        while let FrameRead::Complete(frame, n) = read_frame(rest, DEFAULT_MAX_RECORD_BYTES) {
            let original = rest.get(..n);
            match frame {
                Frame::Event(rec) => {
                    let mut again = Vec::new();
                    encode_event_frame(
                        &mut again, rec.log_id, rec.seq, &rec.prev, rec.event, &rec.hash,
                    );
                    assert_eq!(Some(again.as_slice()), original);
                    if let Ok(event) = decode_event(rec.event) {
                        assert_eq!(encode_event(&event).ok().as_deref(), Some(rec.event));
                    }
                }
                Frame::Seal(c) => {
                    assert_eq!(Some(encode_seal_frame(&c).as_slice()), original);
                }
            }
            rest = rest.get(n..).unwrap_or_default();
        }
        // Where the frames stop: what a crash cut short over zeros filled ahead, or not.
        let at = (data.len() - rest.len()) as u64;
        if let Some(n) = torn_write(rest, at, header.log_id, DEFAULT_MAX_RECORD_BYTES) {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let zeros = rest.get(n..).unwrap_or_default();
            assert!(zeros.len() as u64 >= ZERO_TAIL_MIN);
            assert!(zeros.iter().all(|b| *b == 0));
            assert!(n == 0 || rest.get(n - 1).is_some_and(|b| *b != 0));
        }
    }
}
