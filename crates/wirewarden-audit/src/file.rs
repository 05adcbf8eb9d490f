//! The default sink: hash-chained, append-only segment files in a directory.
//!
//! Appenders encode their event, then take a short lock to get the next sequence number,
//! compute the chain hash and add the frame to a shared pending buffer. One writer thread
//! owns the files: it takes the whole pending buffer, writes it with one `write`, and in
//! `fsync` mode calls `fdatasync` once for the batch — every append waiting on a record in
//! that batch is released by the same sync (group commit). While it syncs, new appends
//! collect in the buffer for the next batch. Records nobody waits for (every record in
//! buffered mode, [unawaited](FileSink::append_events_unawaited) ones in fsync mode) collect
//! for a short [write delay](FileSinkBuilder::write_delay) before the writer writes them, so
//! a busy sink makes one `write` per interval rather than one per append, and in fsync mode
//! syncs only when someone waits. In fsync mode the writer fills the open segment with
//! zeros [ahead](ZERO_AHEAD_BYTES) of its records and syncs them first, so each later sync
//! only flushes data: a file that grows needs a journal commit for its new size on every
//! sync, a file overwritten in place does not. A seal, and closing, cut the zeros off
//! again. Once records are on disk the writer lets the kernel drop
//! their pages from the page cache, a megabyte at a time (in buffered mode it syncs every
//! megabyte for this; see [`FileSinkBuilder::drop_written_pages`]). A failed write or sync
//! poisons the sink: the writer stops, waiting appenders get an error, and every later
//! append fails. A sync is never retried (after a failed `fsync` the kernel may have dropped
//! the dirty pages, so a retry that succeeds proves nothing).

use std::cell::Cell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;
use wirewarden_core::{AuditEvent, BoxError, Timestamp};

use crate::codec::{Writer, encode_event, encode_event_into};
use crate::format::{
    CHECKPOINT_FILE, ChainKey, Checkpoint, CheckpointSigner, DEFAULT_MAX_RECORD_BYTES, Hash, LogId,
    RecordHasher, SegmentHeader, TORN_WRITE_MAX, ZERO_TAIL_MIN, encode_checkpoint_entry,
    encode_event_frame, encode_seal_frame, event_frame_len, genesis, segment_path,
};
use crate::sink::{Appended, AuditSink, Durability, PartialBatch};
use crate::verify::{VerifyKeys, verify_dir};
use crate::{Error, Result};

// === IoHook ===

/// The file operations the sink performs, so tests can inject failures and slow disks.
///
/// The default methods do the real thing. An implementation may fail, delay, or write
/// part of `buf` and then fail, to simulate a full disk or a failing device.
pub trait IoHook: fmt::Debug + Send + Sync {
    /// Writes all of `buf` to `file` (a segment, the checkpoint file).
    ///
    /// # Errors
    /// The I/O error, which poisons the sink.
    fn write(&self, file: &mut File, path: &Path, buf: &[u8]) -> io::Result<()> {
        let _ = path;
        file.write_all(buf)
    }

    /// Makes `file` (a file or a directory) durable with `fdatasync`.
    ///
    /// # Errors
    /// The I/O error, which poisons the sink.
    fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        let _ = path;
        file.sync_data()
    }

    /// Tells the kernel that `len` bytes of `file` from `offset` (to the end of the file
    /// when `len` is 0) are on disk and will not be read again soon, so it may drop them
    /// from the page cache (`posix_fadvise(POSIX_FADV_DONTNEED)`; nothing where the platform
    /// has no `posix_fadvise`). Only called for ranges already synced. Advice: the sink
    /// ignores an error.
    ///
    /// # Errors
    /// The system call's error.
    fn drop_cached(&self, file: &File, path: &Path, offset: u64, len: u64) -> io::Result<()> {
        let _ = path;
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        {
            rustix::fs::fadvise(
                file,
                offset,
                std::num::NonZeroU64::new(len),
                rustix::fs::Advice::DontNeed,
            )
            .map_err(io::Error::from)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        {
            let _ = (file, offset, len);
            Ok(())
        }
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdIo;

impl IoHook for StdIo {}

// === Config ===

/// In buffered mode, records pending for the writer that make it write at once instead of
/// waiting out the [write delay](FileSinkBuilder::write_delay).
pub const WRITE_BATCH_BYTES: usize = 256 << 10;

/// How much of a segment is on disk before the writer lets the kernel drop it from the page
/// cache (see [`FileSinkBuilder::drop_written_pages`]); in buffered mode, how much it writes
/// between two syncs of its own for that purpose.
pub const DROP_PAGES_BYTES: u64 = 1 << 20;

/// In fsync mode, how far ahead of the last record the writer fills the open segment with
/// zeros (and syncs them) before it writes records there. Overwriting bytes that are
/// already on disk lets each `fdatasync` skip the journal commit that a growing file needs
/// for its new size; see the crate documentation.
pub const ZERO_AHEAD_BYTES: u64 = 256 << 10;

/// Builds a [`FileSink`].
#[derive(Debug, Clone)]
pub struct FileSinkBuilder {
    dir: PathBuf,
    key: ChainKey,
    signer: CheckpointSigner,
    durability: Durability,
    segment_max_bytes: u64,
    checkpoint_interval: Duration,
    max_record_bytes: u32,
    max_pending_bytes: usize,
    write_delay: Duration,
    drop_written_pages: bool,
    io: Arc<dyn IoHook>,
}

impl FileSinkBuilder {
    /// `fsync` (the default) or `buffered`.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Rotate to a new segment once the current one reaches this size (default 64 MiB).
    #[must_use]
    pub fn segment_max_bytes(mut self, bytes: u64) -> Self {
        self.segment_max_bytes = bytes.max(1);
        self
    }

    /// Write a signed checkpoint at least this often, also while idle (default 60 s).
    #[must_use]
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The largest record accepted (default 16 MiB); larger events are refused.
    #[must_use]
    pub fn max_record_bytes(mut self, bytes: u32) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// In buffered mode, appends wait for the writer once this much is pending (default
    /// 8 MiB), so a slow disk slows appenders instead of growing memory without bound.
    #[must_use]
    pub fn max_pending_bytes(mut self, bytes: usize) -> Self {
        self.max_pending_bytes = bytes;
        self
    }

    /// How long records nobody waits for may collect in memory before the writer writes
    /// them (default 5 ms; zero writes as soon as the writer is free): every record in
    /// buffered mode, and in fsync mode those of
    /// [`append_events_unawaited`](FileSink::append_events_unawaited). Under load this turns
    /// a `write` (and in fsync mode an `fdatasync`) and a wake-up of the writer per append
    /// into one per interval; a crash may lose the records of the last interval, which their
    /// appenders accepted. Records are written sooner once [`WRITE_BATCH_BYTES`] are
    /// pending, with the next record someone waits for, and at once on
    /// [`flush`](AuditSink::flush), a checkpoint or close.
    #[must_use]
    pub fn write_delay(mut self, delay: Duration) -> Self {
        self.write_delay = delay;
        self
    }

    /// Whether the writer lets the kernel drop the trail from the page cache once it is on
    /// disk (default `true`), [`DROP_PAGES_BYTES`] at a time and a sealed segment whole.
    /// The trail is written once and read rarely (verification, replay, export read it
    /// from disk), so keeping it cached only pushes out pages worth keeping, and a writer
    /// that gives back the pages it filled has them to reuse for the next records instead
    /// of taking fresh ones (which on virtual machines whose memory is backed on first touch
    /// costs several times the copy; see `docs/performance.md`). In buffered mode this
    /// makes the writer sync every [`DROP_PAGES_BYTES`], since only clean pages can be
    /// dropped: the unsynced tail a crash can lose is then at most that large. `false`
    /// leaves the page cache to the kernel (and buffered mode syncs only for checkpoints,
    /// rotation, [`flush`](AuditSink::flush) and close).
    #[must_use]
    pub fn drop_written_pages(mut self, drop: bool) -> Self {
        self.drop_written_pages = drop;
        self
    }

    /// Replaces the file operations (for fault injection in tests).
    #[must_use]
    pub fn io_hook(mut self, io: Arc<dyn IoHook>) -> Self {
        self.io = io;
        self
    }

    /// Opens the log in the directory, creating it if empty.
    ///
    /// An existing log is verified first; the sink refuses to extend a damaged one. A torn
    /// last record (a crash mid-append) that no checkpoint covers is cut off, and so are
    /// zeros left after the last record by an fsync-mode writer when this sink is buffered.
    ///
    /// # Errors
    /// [`Error::Damaged`] for a log that fails verification, [`Error::Io`] for file system
    /// errors, [`Error::Config`] when the log was written under another chain key id.
    pub fn open(self) -> Result<FileSink> {
        FileSink::open(self)
    }
}

// === Shared state ===

#[derive(Debug)]
struct State {
    next_seq: u64,
    head: Hash,
    pending: Vec<u8>,
    poisoned: Option<String>,
    closing: bool,
    sync_upto: u64,
    checkpoint_now: bool,
    /// What the writer is doing, so appends wake it only when it must be woken: a busy
    /// writer is not sent a futex wake per record.
    writer: WriterState,
    /// A record someone waits to see on disk is pending (fsync mode): the writer writes now
    /// rather than letting records collect.
    urgent: bool,
}

/// What the writer thread is doing (under the lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterState {
    /// Writing, or about to look at the pending records again: it needs no wake.
    Busy,
    /// Letting records nobody waits for collect until the write delay is up: woken by a
    /// record someone waits for, or by a full batch.
    Napping,
    /// Nothing pending: woken by any record.
    Idle,
}

#[derive(Debug, Clone, Default)]
struct Progress {
    written: u64,
    durable: u64,
    checkpoints: u64,
    poisoned: Option<Arc<str>>,
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    progress: watch::Sender<Progress>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the chain half-updated in a way that
        // matters: the writer stops and the sink is then poisoned below.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writer waits on `work` as `state` for at most `timeout`.
    fn sleep<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        state: WriterState,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        st.writer = state;
        self.work
            .wait_timeout(st, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0)
    }

    fn poison(&self, reason: String) {
        let mut st = self.lock();
        if st.poisoned.is_none() {
            st.poisoned = Some(reason.clone());
        }
        st.pending.clear();
        drop(st);
        self.progress.send_modify(|p| {
            if p.poisoned.is_none() {
                p.poisoned = Some(reason.into());
            }
            p.stopped = true;
        });
    }
}

// === FileSink ===

thread_local! {
    /// The events of one batch encoded back to back, and where each ends: encoded before
    /// the sink's lock is taken, into buffers each thread keeps (taken out while in use, so
    /// a nested append gets empty ones).
    static SCRATCH: Cell<(Vec<u8>, Vec<usize>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// What [`FileSink::enqueue`] did: `out` of each sequence number appended, the first event
/// not appended with the reason, and what [`FileSink::settle`] needs (the last sequence
/// number, the bytes pending, whether to wake the writer) when anything was appended.
type Enqueued<T> = (Vec<T>, Option<(usize, Error)>, Option<(u64, usize, bool)>);

/// The buffers to keep for the next batch on this thread: given back when a batch made them
/// large.
fn scratch_kept(buf: Vec<u8>, ends: Vec<usize>) -> (Vec<u8>, Vec<usize>) {
    const KEPT_BYTES: usize = 1 << 20;
    const KEPT_ENDS: usize = 4096;
    (
        if buf.capacity() > KEPT_BYTES {
            Vec::new()
        } else {
            buf
        },
        if ends.capacity() > KEPT_ENDS {
            Vec::new()
        } else {
            ends
        },
    )
}

/// The default [`AuditSink`]: hash-chained segment files with signed checkpoints.
///
/// See the crate documentation for the format and `docs` for the threat model.
pub struct FileSink {
    shared: Arc<Shared>,
    durability: Durability,
    dir: PathBuf,
    /// Chain hashes of the log's records.
    records: RecordHasher,
    log_id: LogId,
    max_record_bytes: u32,
    max_pending_bytes: usize,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for FileSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSink")
            .field("dir", &self.dir)
            .field("log_id", &self.log_id)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Starts building a sink writing to `dir`, chaining with `key` and signing checkpoints
    /// with `signer`.
    #[must_use]
    pub fn builder(
        dir: impl Into<PathBuf>,
        key: ChainKey,
        signer: CheckpointSigner,
    ) -> FileSinkBuilder {
        FileSinkBuilder {
            dir: dir.into(),
            key,
            signer,
            durability: Durability::Fsync,
            segment_max_bytes: 64 << 20,
            checkpoint_interval: Duration::from_secs(60),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_pending_bytes: 8 << 20,
            write_delay: Duration::from_millis(5),
            drop_written_pages: true,
            io: Arc::new(StdIo),
        }
    }

    /// The log's id.
    #[must_use]
    pub fn log_id(&self) -> LogId {
        self.log_id
    }

    /// The log directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of records accepted but not yet handed to the writer thread (for tests).
    #[doc(hidden)]
    #[must_use]
    pub fn pending_bytes(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Whether an earlier failure has poisoned the sink.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.shared.lock().poisoned.is_some()
    }

    /// Asks the writer for a signed checkpoint now and waits until it is written.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Closed`].
    pub async fn checkpoint(&self) -> Result<()> {
        let before = self.shared.progress.borrow().checkpoints;
        {
            let mut st = self.shared.lock();
            self.check_usable(&st)?;
            st.checkpoint_now = true;
        }
        self.shared.work.notify_one();
        self.wait(|p| p.checkpoints > before).await
    }

    /// Stops accepting events, writes what is pending, a final checkpoint, and stops the
    /// writer.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the sink had failed.
    pub async fn close(&self) -> Result<()> {
        {
            let mut st = self.shared.lock();
            st.closing = true;
        }
        self.shared.work.notify_one();
        let mut rx = self.shared.progress.subscribe();
        let p = rx
            .wait_for(|p| p.stopped)
            .await
            .map(|p| p.clone())
            .unwrap_or_default();
        self.join_writer();
        match p.poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn join_writer(&self) {
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn check_usable(&self, st: &State) -> Result<()> {
        if let Some(reason) = &st.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        if st.closing {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Appends `event`; the typed version of [`AuditSink::append`].
    ///
    /// # Errors
    /// [`Error::Poisoned`] after an earlier failure or when this record's write or sync
    /// failed, [`Error::Closed`] after [`close`](Self::close), [`Error::TooLarge`] for an
    /// event over the record limit, [`Error::Unsupported`] for an event this version cannot
    /// encode.
    pub async fn append_event(&self, event: &AuditEvent) -> Result<u64> {
        // Not through `append_events_as`: for one event its per-thread buffers and result
        // list cost more (about 40 ns of 350 in the `audit` benchmark) than they save.
        let bytes = self.encode(event)?;
        let urgent = self.durability == Durability::Fsync;
        let (seq, pending, wake) = {
            let mut st = self.shared.lock();
            self.check_usable(&st)?;
            let before = st.pending.len();
            let seq = self.chain(&mut st, &bytes)?;
            let wake = self.wake_writer(&mut st, before, urgent);
            (seq, st.pending.len(), wake)
        };
        self.settle(seq, pending, wake, urgent).await?;
        Ok(seq)
    }

    /// Appends `events` in order under one lock, with one wake-up of the writer and (in
    /// fsync mode) one wait for the disk; the typed version of [`AuditSink::append_batch`].
    /// Returns each event's sequence number.
    ///
    /// # Errors
    /// The index of the first event that is not recorded, with the reason (the errors of
    /// [`append_event`](Self::append_event)). The events before it are recorded, except
    /// when the batch's write or sync failed: then the index is 0, since the sink cannot say
    /// which of them reached the disk.
    pub async fn append_events(
        &self,
        events: &[AuditEvent],
    ) -> std::result::Result<Vec<u64>, (usize, Error)> {
        self.append_events_as(events, self.durability == Durability::Fsync, |seq| seq)
            .await
    }

    /// Appends `events` in order without waiting for them to reach the disk, in either mode;
    /// the typed version of [`AuditSink::append_batch_unawaited`]. They are written within the
    /// [write delay](FileSinkBuilder::write_delay), or with the next record someone waits
    /// for, whichever comes first; in fsync mode a later `append`'s `Ok` means these are on
    /// disk too, since the trail is written in order. Returns each event's sequence number.
    ///
    /// # Errors
    /// As [`append_events`](Self::append_events), except that a failed write or sync is
    /// reported by a later append or flush rather than this one.
    pub async fn append_events_unawaited(
        &self,
        events: &[AuditEvent],
    ) -> std::result::Result<Vec<u64>, (usize, Error)> {
        self.append_events_as(events, false, |seq| seq).await
    }

    async fn append_events_as<T>(
        &self,
        events: &[AuditEvent],
        urgent: bool,
        out: impl Fn(u64) -> T,
    ) -> std::result::Result<Vec<T>, (usize, Error)> {
        // Encoding needs no lock; an event that cannot be encoded ends the batch there.
        let (mut buf, mut ends) = SCRATCH.take();
        buf.clear();
        ends.clear();
        let mut unencoded = None;
        for (i, event) in events.iter().enumerate() {
            let start = buf.len();
            let mut w = Writer { buf };
            let encoded = encode_event_into(event, &mut w)
                .and_then(|()| self.check_record_len(w.buf.len() - start));
            buf = w.buf;
            if let Err(e) = encoded {
                buf.truncate(start);
                unencoded = Some((i, e));
                break;
            }
            ends.push(buf.len());
        }
        let enqueued = self.enqueue(&buf, &ends, urgent, out);
        SCRATCH.with(|s| s.set(scratch_kept(buf, ends)));
        let (appended, failed, settle) = enqueued?;
        self.finish(appended, failed.or(unencoded), settle, urgent)
            .await
    }

    /// Chains and appends events already encoded, in order; `Err((n, e))`: the first `n`
    /// were appended, the rest not. For tests that write records no event encodes to.
    #[cfg(test)]
    pub(crate) async fn append_encoded(
        &self,
        encoded: &[Vec<u8>],
        urgent: bool,
    ) -> std::result::Result<Vec<u64>, (usize, Error)> {
        let ends: Vec<usize> = encoded
            .iter()
            .scan(0, |end, e| {
                *end += e.len();
                Some(*end)
            })
            .collect();
        let (appended, failed, settle) = self.enqueue(&encoded.concat(), &ends, urgent, |s| s)?;
        self.finish(appended, failed, settle, urgent).await
    }

    /// Chains the events encoded back to back in `buf` (each ending at the next of `ends`)
    /// into the pending records under one lock.
    fn enqueue<T>(
        &self,
        buf: &[u8],
        ends: &[usize],
        urgent: bool,
        out: impl Fn(u64) -> T,
    ) -> std::result::Result<Enqueued<T>, (usize, Error)> {
        let mut appended = Vec::with_capacity(ends.len());
        if ends.is_empty() {
            return Ok((appended, None, None));
        }
        let mut st = self.shared.lock();
        self.check_usable(&st).map_err(|e| (0, e))?;
        let before = st.pending.len();
        let mut failed = None;
        let mut start = 0;
        let mut last = None;
        for &end in ends {
            match self.chain(&mut st, buf.get(start..end).unwrap_or_default()) {
                Ok(seq) => {
                    appended.push(out(seq));
                    last = Some(seq);
                }
                Err(e) => {
                    failed = Some((appended.len(), e));
                    break;
                }
            }
            start = end;
        }
        let wake = self.wake_writer(&mut st, before, urgent && last.is_some());
        Ok((appended, failed, last.map(|l| (l, st.pending.len(), wake))))
    }

    /// Waits as [`settle`](Self::settle) says for what [`enqueue`](Self::enqueue) appended,
    /// then reports the first event not appended, if any.
    async fn finish<T>(
        &self,
        appended: Vec<T>,
        failed: Option<(usize, Error)>,
        settle: Option<(u64, usize, bool)>,
        urgent: bool,
    ) -> std::result::Result<Vec<T>, (usize, Error)> {
        if let Some((last, pending, wake)) = settle {
            self.settle(last, pending, wake, urgent)
                .await
                .map_err(|e| (0, e))?;
        }
        match failed {
            Some(f) => Err(f),
            None => Ok(appended),
        }
    }

    /// Whether an append that found `before` bytes pending must wake the writer (under the
    /// lock); `urgent` when the appender will wait for the disk. The writer takes everything
    /// pending before it sleeps again, so a busy writer needs no wake and an idle one only
    /// one; a writer letting records collect is woken by an urgent record, or when they
    /// reach [`WRITE_BATCH_BYTES`].
    fn wake_writer(&self, st: &mut State, before: usize, urgent: bool) -> bool {
        st.urgent |= urgent;
        let full = before < WRITE_BATCH_BYTES && st.pending.len() >= WRITE_BATCH_BYTES;
        let wake = match st.writer {
            WriterState::Busy => false,
            WriterState::Idle => true,
            WriterState::Napping => urgent || full,
        };
        if wake {
            st.writer = WriterState::Busy;
        }
        wake
    }

    /// The canonical encoding of `event`, refused when over the record limit.
    fn encode(&self, event: &AuditEvent) -> Result<Vec<u8>> {
        let bytes = encode_event(event)?;
        self.check_record_len(bytes.len())?;
        Ok(bytes)
    }

    /// Refuses an event of `len` encoded bytes whose record would be over the limit.
    fn check_record_len(&self, len: usize) -> Result<()> {
        let frame_len = event_frame_len(len);
        if frame_len.saturating_sub(4) > self.max_record_bytes as usize {
            return Err(Error::TooLarge {
                what: "audit record",
                len: frame_len as u64,
                limit: u64::from(self.max_record_bytes),
            });
        }
        Ok(())
    }

    /// Gives `bytes` the next sequence number and links it into the chain (under the lock).
    fn chain(&self, st: &mut State, bytes: &[u8]) -> Result<u64> {
        let seq = st.next_seq;
        let next = seq.checked_add(1).ok_or(Error::InvalidValue {
            what: "sequence number",
            reason: "exhausted",
        })?;
        let prev = st.head;
        let hash = self.records.hash(seq, &prev, bytes);
        encode_event_frame(&mut st.pending, self.log_id, seq, &prev, bytes, &hash);
        st.head = hash;
        st.next_seq = next;
        Ok(seq)
    }

    /// Wakes the writer if asked and waits as the durability mode requires for `seq`.
    async fn settle(&self, seq: u64, pending: usize, wake: bool, urgent: bool) -> Result<()> {
        if wake {
            self.shared.work.notify_one();
        }
        if urgent {
            self.wait(|p| p.durable > seq).await
        } else if pending > self.max_pending_bytes {
            self.wait(|p| p.written > seq).await
        } else {
            Ok(())
        }
    }

    async fn wait(&self, done: impl Fn(&Progress) -> bool) -> Result<()> {
        let mut rx = self.shared.progress.subscribe();
        let p = rx
            .wait_for(|p| done(p) || p.poisoned.is_some() || p.stopped)
            .await
            .map(|p| p.clone())
            .map_err(|_| Error::Closed)?;
        if done(&p) {
            return Ok(());
        }
        match p.poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.to_string(),
            }),
            None => Err(Error::Closed),
        }
    }

    pub(crate) async fn flush_inner(&self) -> Result<()> {
        let upto = {
            let mut st = self.shared.lock();
            if let Some(reason) = &st.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            st.sync_upto = st.sync_upto.max(st.next_seq);
            st.next_seq
        };
        self.shared.work.notify_one();
        self.wait(|p| p.durable >= upto).await
    }

    fn open(b: FileSinkBuilder) -> Result<Self> {
        std::fs::create_dir_all(&b.dir).map_err(|e| Error::io("create", &b.dir, e))?;
        let keys = VerifyKeys {
            chain: b.key.clone(),
            checkpoint: b.signer.public(),
        };
        let report = verify_dir(&b.dir, &keys)?;
        if let Some(d) = &report.damage {
            return Err(Error::Damaged {
                dir: b.dir.clone(),
                detail: d.to_string(),
            });
        }
        let tail = report.tail.clone();
        let (log_id, next_seq, head, seg_index, seg_file, seg_len, seg_zeroed_to) = match tail
            .last_segment
        {
            None => {
                let log_id = LogId::generate()?;
                let g = genesis(&b.key, log_id);
                let (file, len) = create_segment(&b, log_id, 0, 0, g)?;
                (log_id, 0, g, 0, file, len, len)
            }
            Some(last) => {
                let log_id = tail.log_id.ok_or_else(|| Error::Config {
                    reason: "verified log has no id".into(),
                })?;
                let path = segment_path(&b.dir, last);
                if !tail.last_header_complete {
                    // A crash while the segment was being created: nothing in it yet.
                    std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                    let (file, len) = create_segment(&b, log_id, last, tail.next_seq, tail.head)?;
                    (log_id, tail.next_seq, tail.head, last, file, len, len)
                } else if tail.last_segment_sealed {
                    let next = last.checked_add(1).ok_or(Error::InvalidValue {
                        what: "segment index",
                        reason: "exhausted",
                    })?;
                    let (file, len) = create_segment(&b, log_id, next, tail.next_seq, tail.head)?;
                    (log_id, tail.next_seq, tail.head, next, file, len, len)
                } else {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| Error::io("open", &path, e))?;
                    let valid = tail.last_segment_valid_len;
                    // A torn record goes. So do zeros after the last record (space filled
                    // ahead by an fsync-mode writer) when this sink will not fill ahead:
                    // only a writer that syncs every write may leave zeros after its
                    // records.
                    let trim = report.torn_tail.is_some()
                        || (b.durability != Durability::Fsync && tail.last_segment_len > valid);
                    if trim {
                        file.set_len(valid)
                            .map_err(|e| Error::io("truncate torn record", &path, e))?;
                        b.io.sync(&file, &path)
                            .map_err(|e| Error::io("fdatasync", &path, e))?;
                    }
                    let mut file = file;
                    file.seek(SeekFrom::Start(valid))
                        .map_err(|e| Error::io("seek", &path, e))?;
                    let zeroed = if trim {
                        valid
                    } else {
                        tail.last_segment_len.max(valid)
                    };
                    (log_id, tail.next_seq, tail.head, last, file, valid, zeroed)
                }
            }
        };
        let ck_path = b.dir.join(CHECKPOINT_FILE);
        let ck_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ck_path)
            .map_err(|e| Error::io("open", &ck_path, e))?;
        if tail.checkpoint_torn {
            ck_file
                .set_len(tail.checkpoint_valid_len)
                .map_err(|e| Error::io("truncate torn checkpoint", &ck_path, e))?;
        }
        let g = genesis(&b.key, log_id);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_seq,
                head,
                pending: Vec::new(),
                poisoned: None,
                closing: false,
                sync_upto: 0,
                checkpoint_now: false,
                writer: WriterState::Busy,
                urgent: false,
            }),
            work: Condvar::new(),
            progress: watch::Sender::new(Progress {
                written: next_seq,
                durable: next_seq,
                checkpoints: 0,
                poisoned: None,
                stopped: false,
            }),
        });
        let writer = SegmentWriter {
            dir: b.dir.clone(),
            signer: b.signer.clone(),
            key: b.key.clone(),
            log_id,
            genesis: g,
            durability: b.durability,
            write_delay: b.write_delay,
            segment_max_bytes: b.segment_max_bytes,
            checkpoint_interval: b.checkpoint_interval,
            io: Arc::clone(&b.io),
            seg_index,
            seg_path: segment_path(&b.dir, seg_index),
            seg_file,
            seg_len,
            seg_synced_len: seg_len,
            seg_dropped_len: 0,
            seg_zeroed_to,
            fill_ahead: b.durability == Durability::Fsync,
            drop_written_pages: b.drop_written_pages,
            written: next_seq,
            written_head: head,
            synced: next_seq,
            last_checkpoint: Instant::now(),
            ck_path,
            ck_file,
        };
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("wirewarden-audit-writer".into())
            .spawn(move || writer.run(&thread_shared))
            .map_err(|e| Error::io("spawn writer thread for", &b.dir, e))?;
        Ok(Self {
            shared,
            durability: b.durability,
            dir: b.dir,
            records: RecordHasher::new(&b.key, log_id, &g),
            log_id,
            max_record_bytes: b.max_record_bytes,
            max_pending_bytes: b.max_pending_bytes,
            writer: Mutex::new(Some(handle)),
        })
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.closing = true;
        }
        self.shared.work.notify_one();
        self.join_writer();
    }
}

#[async_trait]
impl AuditSink for FileSink {
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        Ok(Appended::at(self.append_event(event).await?))
    }

    async fn append_batch(&self, events: &[AuditEvent]) -> Result<Vec<Appended>, PartialBatch> {
        let urgent = self.durability == Durability::Fsync;
        self.append_events_as(events, urgent, Appended::at)
            .await
            .map_err(|(recorded, e)| PartialBatch {
                recorded,
                error: Box::new(e),
            })
    }

    async fn append_batch_unawaited(
        &self,
        events: &[AuditEvent],
    ) -> Result<Vec<Appended>, PartialBatch> {
        self.append_events_as(events, false, Appended::at)
            .await
            .map_err(|(recorded, e)| PartialBatch {
                recorded,
                error: Box::new(e),
            })
    }

    async fn flush(&self) -> Result<(), BoxError> {
        Ok(self.flush_inner().await?)
    }

    fn durability(&self) -> Durability {
        self.durability
    }
}

fn create_segment(
    b: &FileSinkBuilder,
    log_id: LogId,
    index: u64,
    first_seq: u64,
    prev: Hash,
) -> Result<(File, u64)> {
    let path = segment_path(&b.dir, index);
    let header = SegmentHeader::new(
        &b.key,
        log_id,
        index,
        first_seq,
        prev,
        Timestamp::now().unix_nanos(),
    )
    .encode();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    b.io.write(&mut file, &path, &header)
        .map_err(|e| Error::io("write", &path, e))?;
    b.io.sync(&file, &path)
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    sync_dir(&*b.io, &b.dir)?;
    Ok((file, header.len() as u64))
}

fn sync_dir(io: &dyn IoHook, dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    io.sync(&d, dir).map_err(|e| Error::io("fsync", dir, e))
}

// === The writer thread ===

struct SegmentWriter {
    dir: PathBuf,
    signer: CheckpointSigner,
    key: ChainKey,
    log_id: LogId,
    genesis: Hash,
    durability: Durability,
    write_delay: Duration,
    segment_max_bytes: u64,
    checkpoint_interval: Duration,
    io: Arc<dyn IoHook>,
    seg_index: u64,
    seg_path: PathBuf,
    seg_file: File,
    seg_len: u64,
    /// How much of the current segment is known to be on disk.
    seg_synced_len: u64,
    /// How much of the current segment the kernel has been told it may drop from the cache.
    seg_dropped_len: u64,
    /// The length of the segment file: zeros, already on disk, from `seg_len` to here.
    seg_zeroed_to: u64,
    /// Whether records are written over zeros filled ahead (fsync mode).
    fill_ahead: bool,
    drop_written_pages: bool,
    written: u64,
    written_head: Hash,
    synced: u64,
    last_checkpoint: Instant,
    ck_path: PathBuf,
    ck_file: File,
}

struct Batch {
    bytes: Vec<u8>,
    end_seq: u64,
    end_head: Hash,
    sync_upto: u64,
    checkpoint_now: bool,
    closing: bool,
}

impl SegmentWriter {
    fn run(mut self, shared: &Shared) {
        let mut spare = Vec::new();
        loop {
            let batch = {
                let mut st = shared.lock();
                // In buffered mode, when the records pending now may be written.
                let mut write_at: Option<Instant> = None;
                loop {
                    if st.closing || st.checkpoint_now || st.sync_upto > self.synced {
                        break;
                    }
                    if !st.pending.is_empty() {
                        if st.urgent || st.pending.len() >= WRITE_BATCH_BYTES {
                            break;
                        }
                        let at = *write_at.get_or_insert_with(|| Instant::now() + self.write_delay);
                        let left = at.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        // Letting records collect: only an urgent record or a full batch
                        // wakes the writer.
                        st = shared.sleep(st, WriterState::Napping, left);
                        continue;
                    }
                    let left = self
                        .checkpoint_interval
                        .saturating_sub(self.last_checkpoint.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    st = shared.sleep(st, WriterState::Idle, left);
                }
                st.writer = WriterState::Busy;
                st.urgent = false;
                if st.poisoned.is_some() {
                    return;
                }
                let bytes = std::mem::replace(&mut st.pending, std::mem::take(&mut spare));
                let b = Batch {
                    bytes,
                    end_seq: st.next_seq,
                    end_head: st.head,
                    sync_upto: st.sync_upto,
                    checkpoint_now: std::mem::take(&mut st.checkpoint_now),
                    closing: st.closing,
                };
                drop(st);
                b
            };
            let closing = batch.closing;
            match self.step(batch, shared) {
                Ok(mut buf) => {
                    buf.clear();
                    spare = buf;
                }
                Err(e) => {
                    shared.poison(e.to_string());
                    return;
                }
            }
            if closing {
                shared.progress.send_modify(|p| p.stopped = true);
                return;
            }
        }
    }

    fn step(&mut self, batch: Batch, shared: &Shared) -> Result<Vec<u8>> {
        // Rotation happens when the next batch arrives, so the last segment is never left
        // empty and a seal always comes before a segment's successor exists.
        let rotated = !batch.bytes.is_empty() && self.seg_len >= self.segment_max_bytes;
        if rotated {
            self.rotate()?;
        }
        if !batch.bytes.is_empty() {
            self.write_frames(&batch.bytes)?;
            self.written = batch.end_seq;
            self.written_head = batch.end_head;
            // In buffered mode the writer syncs now and then only so that it can give the
            // pages back (dirty pages cannot be dropped).
            let sync = self.durability == Durability::Fsync
                || (self.drop_written_pages
                    && self.seg_len - self.seg_synced_len >= DROP_PAGES_BYTES);
            let durable = if sync {
                self.sync_segment()?;
                Some(self.synced)
            } else {
                None
            };
            let written = self.written;
            shared.progress.send_modify(|p| {
                p.written = written;
                if let Some(d) = durable {
                    p.durable = d;
                }
            });
        }
        if batch.sync_upto > self.synced {
            self.sync_segment()?;
            let d = self.synced;
            shared.progress.send_modify(|p| p.durable = d);
        }
        let due = batch.checkpoint_now
            || batch.closing
            || self.last_checkpoint.elapsed() >= self.checkpoint_interval;
        let wrote_checkpoint = if rotated && !batch.checkpoint_now && !batch.closing {
            true
        } else if due {
            self.checkpoint()?;
            true
        } else {
            false
        };
        if wrote_checkpoint {
            let d = self.synced;
            shared.progress.send_modify(|p| {
                p.durable = d;
                p.checkpoints = p.checkpoints.saturating_add(1);
            });
        }
        if batch.closing && self.seg_zeroed_to > self.seg_len {
            // A closed log ends at its last record (the closing checkpoint synced it).
            self.trim_zeros()?;
        }
        if batch.closing && self.drop_written_pages && self.seg_synced_len == self.seg_len {
            // Everything is on disk (the closing checkpoint synced it).
            let _ = self
                .io
                .drop_cached(&self.seg_file, &self.seg_path, self.seg_dropped_len, 0);
        }
        Ok(batch.bytes)
    }

    /// Writes `bytes` (whole frames) at the end of the segment. Filling ahead, it writes
    /// only over zeros already on disk, with at least [`ZERO_TAIL_MIN`] of them left after
    /// the write, and it cuts a write of more than [`TORN_WRITE_MAX`] at frame boundaries
    /// with a sync after each piece but the last: whatever a crash in the middle of a write
    /// leaves is then no longer than that (or than one record) and ends in zeros, which is
    /// how verification tells it apart from damage.
    fn write_frames(&mut self, bytes: &[u8]) -> Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = if self.fill_ahead {
                write_piece_len(rest, TORN_WRITE_MAX as usize)
            } else {
                rest.len()
            };
            let (piece, after) = rest.split_at(len);
            if self.fill_ahead {
                self.fill_zeros_for(piece.len() as u64)?;
            }
            self.io
                .write(&mut self.seg_file, &self.seg_path, piece)
                .map_err(|e| Error::io("write", &self.seg_path, e))?;
            self.seg_len = self.seg_len.saturating_add(piece.len() as u64);
            if !after.is_empty() {
                self.io
                    .sync(&self.seg_file, &self.seg_path)
                    .map_err(|e| Error::io("fdatasync", &self.seg_path, e))?;
                self.seg_synced_len = self.seg_len;
            }
            rest = after;
        }
        Ok(())
    }

    /// Makes sure `len` more bytes and [`ZERO_TAIL_MIN`] after them lie over zeros on
    /// disk: if not, fills [`ZERO_AHEAD_BYTES`] more (not much past the segment's size
    /// limit) and syncs them.
    fn fill_zeros_for(&mut self, len: u64) -> Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let end = self.seg_len.saturating_add(len);
        let need = end.saturating_add(ZERO_TAIL_MIN);
        if self.seg_zeroed_to >= need {
            return Ok(());
        }
        let limit = self
            .segment_max_bytes
            .max(end)
            .saturating_add(ZERO_TAIL_MIN);
        let target = end
            .saturating_add(ZERO_AHEAD_BYTES)
            .min(limit)
            .max(need)
            .next_multiple_of(4096);
        let path = &self.seg_path;
        self.seg_file
            .seek(SeekFrom::Start(self.seg_zeroed_to))
            .map_err(|e| Error::io("seek", path, e))?;
        let mut at = self.seg_zeroed_to;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64) as usize;
            self.io
                .write(&mut self.seg_file, path, ZEROS.get(..n).unwrap_or_default())
                .map_err(|e| Error::io("fill with zeros", path, e))?;
            at += n as u64;
        }
        self.io
            .sync(&self.seg_file, path)
            .map_err(|e| Error::io("fdatasync", path, e))?;
        self.seg_zeroed_to = target;
        self.seg_file
            .seek(SeekFrom::Start(self.seg_len))
            .map_err(|e| Error::io("seek", path, e))?;
        Ok(())
    }

    /// Cuts the zeros filled ahead off the segment, durably: before a seal, and at close.
    fn trim_zeros(&mut self) -> Result<()> {
        let path = &self.seg_path;
        self.seg_file
            .set_len(self.seg_len)
            .map_err(|e| Error::io("truncate", path, e))?;
        self.io
            .sync(&self.seg_file, path)
            .map_err(|e| Error::io("fdatasync", path, e))?;
        self.seg_zeroed_to = self.seg_len;
        Ok(())
    }

    fn sync_segment(&mut self) -> Result<()> {
        if self.synced < self.written || self.durability == Durability::Fsync {
            self.io
                .sync(&self.seg_file, &self.seg_path)
                .map_err(|e| Error::io("fdatasync", &self.seg_path, e))?;
        }
        self.synced = self.written;
        self.seg_synced_len = self.seg_len;
        if self.drop_written_pages && self.seg_synced_len - self.seg_dropped_len >= DROP_PAGES_BYTES
        {
            let len = self.seg_synced_len - self.seg_dropped_len;
            let _ = self
                .io
                .drop_cached(&self.seg_file, &self.seg_path, self.seg_dropped_len, len);
            // The kernel drops whole pages only; the partly written last one is offered
            // again next time.
            self.seg_dropped_len = self.seg_synced_len & !4095;
        }
        Ok(())
    }

    fn sign(&self) -> Checkpoint {
        Checkpoint::sign(
            &self.signer,
            self.log_id,
            self.genesis,
            self.written,
            self.written_head,
            self.seg_index,
            Timestamp::now().unix_nanos(),
        )
    }

    fn append_checkpoint_entry(&mut self, c: &Checkpoint) -> Result<()> {
        self.io
            .write(
                &mut self.ck_file,
                &self.ck_path,
                &encode_checkpoint_entry(c),
            )
            .map_err(|e| Error::io("write", &self.ck_path, e))?;
        self.io
            .sync(&self.ck_file, &self.ck_path)
            .map_err(|e| Error::io("fdatasync", &self.ck_path, e))
    }

    /// A checkpoint covers only records that are already on disk.
    fn checkpoint(&mut self) -> Result<()> {
        if self.synced < self.written {
            self.sync_segment()?;
        }
        let c = self.sign();
        self.append_checkpoint_entry(&c)?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Seals the current segment with a checkpoint and starts the next one, whose header
    /// carries the last hash of this one.
    fn rotate(&mut self) -> Result<()> {
        if self.seg_zeroed_to > self.seg_len {
            // Synced before the seal is written, so a seal is never followed by zeros.
            self.trim_zeros()?;
        }
        let c = self.sign();
        self.io
            .write(&mut self.seg_file, &self.seg_path, &encode_seal_frame(&c))
            .map_err(|e| Error::io("write", &self.seg_path, e))?;
        self.io
            .sync(&self.seg_file, &self.seg_path)
            .map_err(|e| Error::io("fdatasync", &self.seg_path, e))?;
        self.synced = self.written;
        if self.drop_written_pages {
            // Sealed and on disk: the rest of the segment may go, from where earlier drops
            // reached to its end.
            let _ = self
                .io
                .drop_cached(&self.seg_file, &self.seg_path, self.seg_dropped_len, 0);
        }
        self.append_checkpoint_entry(&c)?;
        self.last_checkpoint = Instant::now();
        let next = self.seg_index.checked_add(1).ok_or(Error::InvalidValue {
            what: "segment index",
            reason: "exhausted",
        })?;
        let path = segment_path(&self.dir, next);
        let header = SegmentHeader::new(
            &self.key,
            self.log_id,
            next,
            self.written,
            self.written_head,
            Timestamp::now().unix_nanos(),
        )
        .encode();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        self.io
            .write(&mut file, &path, &header)
            .map_err(|e| Error::io("write", &path, e))?;
        self.io
            .sync(&file, &path)
            .map_err(|e| Error::io("fdatasync", &path, e))?;
        sync_dir(&*self.io, &self.dir)?;
        self.seg_index = next;
        self.seg_path = path;
        self.seg_file = file;
        self.seg_len = header.len() as u64;
        self.seg_synced_len = self.seg_len;
        self.seg_dropped_len = 0;
        self.seg_zeroed_to = self.seg_len;
        Ok(())
    }
}

/// How much of `frames` (whole frames, each behind its 4-byte length) to write in one
/// piece: whole frames up to `max` bytes, and at least the first frame however long.
fn write_piece_len(frames: &[u8], max: usize) -> usize {
    let mut n = 0usize;
    while n < frames.len() {
        let Some(len) = frames
            .get(n..n.saturating_add(4))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        else {
            break;
        };
        let next = n
            .saturating_add(4)
            .saturating_add(u32::from_le_bytes(len) as usize);
        if n > 0 && next > max {
            return n;
        }
        n = next;
    }
    frames.len()
}
