//! Reading a log back in order, once or following it while it grows.
//!
//! The reader checks every record it returns (log id, keyed hash, sequence number, link to
//! the previous record, seals) so replay and export never show an event the chain does not
//! vouch for. An incomplete last record, and zeros after the last record of the open
//! segment (space the writer filled ahead), are treated as not written yet; so is a last
//! write over those zeros that is still in progress or that a crash cut short (see
//! `verify`). A poll reads 64 KiB at a time and stops once what it read ends in zeros, so
//! a reader that follows a live log does not read the zeros ahead of it again and again. A
//! record that verifies but was written by a newer version of the event encoding is passed
//! over and counted ([`LogReader::unreadable`]), not taken for damage.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use wirewarden_core::AuditEvent;

use crate::codec::decode_event;
use crate::format::{
    DEFAULT_MAX_RECORD_BYTES, Frame, FrameRead, Hash, LogId, SegmentHeader, ZERO_TAIL_MIN, genesis,
    read_frame, segment_path, torn_write,
};
use crate::verify::VerifyKeys;
use crate::{Error, Result};

/// One event read back with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the log.
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
}

/// Reads a log's events in order; call [`poll`](Self::poll) again to get what was appended
/// since.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    keys: VerifyKeys,
    log_id: Option<LogId>,
    genesis: Hash,
    segment: u64,
    offset: u64,
    header_read: bool,
    sealed: bool,
    next_seq: u64,
    head: Hash,
    unreadable: u64,
    /// How much the next read must take at least (the frame it stopped inside).
    want: u64,
}

impl LogReader {
    /// A reader at the start of the log in `dir`.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>, keys: VerifyKeys) -> Self {
        Self {
            dir: dir.into(),
            keys,
            log_id: None,
            genesis: [0; 32],
            segment: 0,
            offset: 0,
            header_read: false,
            sealed: false,
            next_seq: 0,
            head: [0; 32],
            unreadable: 0,
            want: 0,
        }
    }

    /// How many records read so far verified but could not be decoded by this version
    /// (written by a newer version of the event encoding); [`poll`](Self::poll) passes
    /// over them.
    #[must_use]
    pub fn unreadable(&self) -> u64 {
        self.unreadable
    }

    /// A note for whoever reads the output when records were passed over
    /// ([`unreadable`](Self::unreadable)), or `None`.
    #[must_use]
    pub fn passed_over(&self) -> Option<String> {
        (self.unreadable > 0).then(|| {
            format!(
                "{} intact record(s) written by a newer version of the event encoding were left out; read them with that version",
                self.unreadable
            )
        })
    }

    /// The sequence number of the next event to be read.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn damaged(&self, detail: String) -> Error {
        Error::Damaged {
            dir: self.dir.clone(),
            detail: format!(
                "segment {} at sequence number {}: {detail}",
                self.segment, self.next_seq
            ),
        }
    }

    /// Every complete event appended since the last call (all of them the first time).
    ///
    /// # Errors
    /// [`Error::Damaged`] when a record does not verify, [`Error::Io`] for read errors.
    pub fn poll(&mut self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        loop {
            if self.sealed {
                let next = segment_path(&self.dir, self.segment.saturating_add(1));
                if !next.exists() {
                    return Ok(out);
                }
                self.segment = self.segment.saturating_add(1);
                self.offset = 0;
                self.header_read = false;
                self.sealed = false;
            }
            let path = segment_path(&self.dir, self.segment);
            let want = std::mem::take(&mut self.want);
            let Some(data) = read_from(&path, self.offset, want)? else {
                return Ok(out);
            };
            let mut pos = 0usize;
            if !self.header_read {
                let (h, len) = match SegmentHeader::decode(&data) {
                    Ok(h) => h,
                    Err(Error::Truncated { .. }) => return Ok(out),
                    Err(e) => return Err(self.damaged(format!("segment header: {e}"))),
                };
                self.check_header(&h)?;
                self.header_read = true;
                pos = len;
            }
            while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
                match read_frame(rest, DEFAULT_MAX_RECORD_BYTES) {
                    FrameRead::Complete(Frame::Event(rec), n) => {
                        if Some(rec.log_id) != self.log_id
                            || rec.seq != self.next_seq
                            || rec.prev != self.head
                            || !rec.hash_is_valid(&self.keys.chain, &self.genesis)
                        {
                            if self.being_written(rest, pos) {
                                break;
                            }
                            return Err(self.damaged("record does not verify".into()));
                        }
                        match decode_event(rec.event) {
                            Ok(event) => out.push(Entry {
                                seq: rec.seq,
                                event,
                            }),
                            // Vouched for by the keyed hash: a newer writer's event.
                            Err(e) if e.is_newer_encoding() => {
                                self.unreadable = self.unreadable.saturating_add(1);
                            }
                            Err(e) => {
                                return Err(self.damaged(format!("event does not decode: {e}")));
                            }
                        }
                        self.head = rec.hash;
                        self.next_seq = self.next_seq.saturating_add(1);
                        pos = pos.saturating_add(n);
                    }
                    FrameRead::Complete(Frame::Seal(c), n) => {
                        if !c.verify(&self.keys.checkpoint)
                            || c.seq != self.next_seq
                            || c.head != self.head
                        {
                            return Err(self.damaged("segment seal does not verify".into()));
                        }
                        self.sealed = true;
                        pos = pos.saturating_add(n);
                        break;
                    }
                    FrameRead::Incomplete => {
                        // Read at least to the end of this frame next time, in case what
                        // stopped this read were zeros inside it.
                        self.want = rest
                            .get(..4)
                            .and_then(|b| <[u8; 4]>::try_from(b).ok())
                            .map_or(0, |len| 4 + u64::from(u32::from_le_bytes(len)));
                        break;
                    }
                    FrameRead::Unframed(e) | FrameRead::Invalid(e) => {
                        if rest.iter().all(|b| *b == 0) || self.being_written(rest, pos) {
                            break;
                        }
                        return Err(self.damaged(format!("unreadable record: {e}")));
                    }
                }
            }
            self.offset = self.offset.saturating_add(pos as u64);
            if !self.sealed {
                return Ok(out);
            }
        }
    }

    /// Whether `rest`, read from `pos` of what was read this time, may be records the
    /// writer is writing over the zeros it filled ahead right now (or that a crash cut
    /// short): not written yet, like an incomplete last record.
    fn being_written(&self, rest: &[u8], pos: usize) -> bool {
        self.log_id.is_some_and(|log_id| {
            torn_write(
                rest,
                self.offset.saturating_add(pos as u64),
                log_id,
                DEFAULT_MAX_RECORD_BYTES,
            )
            .is_some()
        })
    }

    fn check_header(&mut self, h: &SegmentHeader) -> Result<()> {
        match self.log_id {
            None => {
                if h.key_id != self.keys.chain.id() {
                    return Err(Error::Config {
                        reason: format!(
                            "the log was written with chain key {:?}, the reader holds {:?}",
                            h.key_id,
                            self.keys.chain.id()
                        ),
                    });
                }
                self.log_id = Some(h.log_id);
                self.genesis = genesis(&self.keys.chain, h.log_id);
                self.head = self.genesis;
            }
            Some(id) if id != h.log_id => {
                return Err(self.damaged("segment of another log".into()));
            }
            Some(_) => {}
        }
        if h.compute_mac(&self.keys.chain) != h.mac
            || h.index != self.segment
            || h.first_seq != self.next_seq
            || h.prev_hash != self.head
        {
            return Err(self.damaged("segment header does not verify".into()));
        }
        Ok(())
    }
}

/// How much a reader reads at a time: it stops at the end of the file, or once what it has
/// read (at least `at_least` bytes) ends in zeros, the space a writer filled ahead.
const READ_CHUNK: u64 = 64 << 10;

fn read_from(path: &Path, offset: u64, at_least: u64) -> Result<Option<Vec<u8>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io("seek", path, e))?;
    let mut buf = Vec::new();
    loop {
        let n = f
            .by_ref()
            .take(READ_CHUNK)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        let zeros_at_end = buf
            .len()
            .checked_sub(ZERO_TAIL_MIN as usize)
            .and_then(|from| buf.get(from..))
            .is_some_and(|tail| tail.iter().all(|b| *b == 0));
        if n == 0 || (buf.len() as u64 >= at_least && zeros_at_end) {
            return Ok(Some(buf));
        }
    }
}

/// Reads every event of the log in `dir`, in order, after checking each record.
///
/// Use [`verify_dir`](crate::verify_dir) for the full check (checkpoints, cuts); this reads
/// what the chain vouches for.
///
/// # Errors
/// As [`LogReader::poll`].
pub fn read_log(dir: &Path, keys: &VerifyKeys) -> Result<Vec<Entry>> {
    LogReader::new(dir, keys.clone()).poll()
}
