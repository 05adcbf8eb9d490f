#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod codec;
mod error;
mod export;
mod file;
mod format;
mod postgres;
mod read;
mod replay;
mod sink;
mod stdout;
mod verify;
mod webhook;

#[cfg(test)]
mod tamper_tests;

#[doc(hidden)]
pub mod testing;

pub use codec::{EVENT_ENCODING_VERSION, decode_event, encode_event};
pub use error::{Error, Result};
pub use export::{ExportFormat, OCSF_VERSION, OcsfExporter, to_json_line};
pub use file::{FileSink, FileSinkBuilder, IoHook, StdIo};
pub use format::{
    CHECKPOINT_FILE, ChainKey, Checkpoint, CheckpointKey, CheckpointSigner, FORMAT_VERSION, Hash,
    LogId, SegmentHeader, hash_hex, segment_file_name,
};
pub use postgres::PostgresSink;
pub use read::{Entry, LogReader, read_log};
pub use replay::Transcript;
pub use sink::{Appended, AuditSink, Durability};
pub use stdout::{StdoutSink, WriterSink};
pub use verify::{
    Damage, DamageKind, Report, TornTail, VerifyKeys, VerifyOptions, verify_dir, verify_dir_with,
};
pub use webhook::{WebhookConfig, WebhookSink};
pub use wirewarden_core;
