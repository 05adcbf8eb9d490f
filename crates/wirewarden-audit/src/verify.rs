//! Verification of a log directory: the first damaged sequence number and what kind of
//! damage it is, or OK.
//!
//! The walk checks every segment header (MAC, log id, genesis, index, first sequence number
//! and the link to the previous segment's last hash) and every record (log id, keyed hash,
//! sequence number, previous hash, canonical decoding), then compares the chain with every
//! signed checkpoint. A record the walk cannot place is classified by what it is: a valid
//! record of this log with a smaller sequence number is a duplicate; a valid record with a
//! larger one is a reorder when the missing number turns up later, a deletion otherwise.
//!
//! An incomplete last record in the last segment is what a crash mid-append leaves; it is
//! reported as a torn tail (not damage) unless a checkpoint covers it, in which case someone
//! cut the log. Zeros after the last record of the last segment are space an fsync-mode
//! writer filled ahead, not damage. A write over them that a crash cut short leaves a record
//! that does not verify followed by the zeros; it is a torn tail too when the cut shows the
//! way a lost page does (a length that is zero, a record running into the zeros, or one of
//! its pages zero from the page boundary on) and no more than one write comes before the
//! zeros. A record changed in place shows none of that and stays damage. Whole records
//! removed from the tail are detectable only back to the latest checkpoint; periodic
//! checkpoints bound that window.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::codec::decode_event;
use crate::format::{
    CHECKPOINT_FILE, ChainKey, Checkpoint, CheckpointKey, DEFAULT_MAX_RECORD_BYTES, Frame,
    FrameRead, Hash, LogId, SegmentHeader, genesis, parse_segment_file_name,
    read_checkpoint_entries, read_frame, torn_write,
};
use crate::{Error, Result};

/// The keys a verifier needs: the chain key (secret, shared with the gateway) and the
/// checkpoint public key.
#[derive(Debug, Clone)]
pub struct VerifyKeys {
    /// The keyed-hash chain key.
    pub chain: ChainKey,
    /// The Ed25519 key that signs checkpoints.
    pub checkpoint: CheckpointKey,
}

/// Extra inputs to verification.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// The largest record frame accepted.
    pub max_record_bytes: u32,
    /// A checkpoint kept outside the log directory (exported to a SIEM, printed in a
    /// ticket); it detects a cut even when the attacker also cut the checkpoint file.
    pub trusted_checkpoint: Option<Checkpoint>,
}

impl VerifyOptions {
    /// Also check the log against `checkpoint`, kept outside the log directory.
    #[must_use]
    pub fn with_trusted_checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.trusted_checkpoint = Some(checkpoint);
        self
    }

    /// Accept record frames up to `bytes`.
    #[must_use]
    pub fn with_max_record_bytes(mut self, bytes: u32) -> Self {
        self.max_record_bytes = bytes;
        self
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            trusted_checkpoint: None,
        }
    }
}

/// What kind of damage verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DamageKind {
    /// A record or header was changed (its keyed hash or MAC no longer matches, or it does
    /// not decode for a reason other than a newer encoding: see [`Unreadable`]).
    Modified,
    /// Records are missing from the middle of the chain.
    Deleted,
    /// Records are present but out of order.
    Reordered,
    /// A record appears a second time.
    Duplicated,
    /// A record, segment or checkpoint belongs to another log.
    Spliced,
    /// Records covered by a signed checkpoint are missing from the end.
    CutFromTail,
    /// A whole segment file is missing.
    MissingSegment,
}

impl DamageKind {
    /// A short snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::Reordered => "reordered",
            Self::Duplicated => "duplicated",
            Self::Spliced => "spliced",
            Self::CutFromTail => "cut_from_tail",
            Self::MissingSegment => "missing_segment",
        }
    }
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first damage found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The first bad sequence number: the position in the chain where the log stops being
    /// what was written.
    pub seq: u64,
    /// What kind of damage.
    pub kind: DamageKind,
    /// The segment it was found in, when it is in one.
    pub segment: Option<u64>,
    /// A readable explanation.
    pub detail: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at sequence number {}", self.kind, self.seq)?;
        if let Some(s) = self.segment {
            write!(f, " (segment {s})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// An incomplete last record: what a crash in the middle of an append leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: u64,
    /// The sequence number the torn record would have had.
    pub seq: u64,
    /// Where it starts in the segment file.
    pub offset: u64,
    /// How many bytes of it are there.
    pub bytes: u64,
}

/// A record whose keyed hash and place in the chain verify but whose event this version
/// cannot decode: a newer writer's encoding version or event kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Its sequence number.
    pub seq: u64,
    /// The segment it is in.
    pub segment: u64,
    /// What this version did not know (`unsupported event encoding version 2`,
    /// `invalid event kind tag 14`).
    pub reason: String,
}

/// Where the log ends, for a sink that reopens it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TailState {
    pub(crate) log_id: Option<LogId>,
    pub(crate) next_seq: u64,
    pub(crate) head: Hash,
    pub(crate) last_segment: Option<u64>,
    pub(crate) last_segment_valid_len: u64,
    /// The last segment file's length: zeros after `last_segment_valid_len` when longer.
    pub(crate) last_segment_len: u64,
    pub(crate) last_segment_sealed: bool,
    pub(crate) last_header_complete: bool,
    pub(crate) checkpoint_valid_len: u64,
    pub(crate) checkpoint_torn: bool,
}

/// The result of verifying a log directory.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The log's id, when there is a log.
    pub log_id: Option<LogId>,
    /// Records verified before the first damage (all of them when OK).
    pub events: u64,
    /// Segment files found.
    pub segments: u64,
    /// Signed checkpoints found (seals and checkpoint file entries).
    pub checkpoints: u64,
    /// The checkpoint covering the most records.
    pub last_checkpoint: Option<Checkpoint>,
    /// An incomplete last record that no checkpoint covers (a crash, not damage).
    pub torn_tail: Option<TornTail>,
    /// The first damage, if any.
    pub damage: Option<Damage>,
    /// Records (counted in `events`) that verify but that this version cannot decode:
    /// written by a newer version of the event encoding. They are not damage; read them
    /// with the version that wrote them.
    pub unreadable: u64,
    /// The first of them.
    pub first_unreadable: Option<Unreadable>,
    pub(crate) tail: TailState,
}

impl Report {
    /// Whether the log verified (a torn tail is not damage, nor are records of a newer
    /// encoding: see [`is_fully_readable`](Self::is_fully_readable)).
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.damage.is_none()
    }

    /// Whether this version could decode every record it verified.
    #[must_use]
    pub fn is_fully_readable(&self) -> bool {
        self.unreadable == 0
    }

    /// The exit status the command-line tools give this report: 0 when the log verified
    /// and every record was read, 1 when it is damaged, 3 when it verified but holds
    /// records of a newer encoding this version cannot read. (2 is left for errors.)
    #[must_use]
    pub fn exit_status(&self) -> u8 {
        match (self.is_ok(), self.is_fully_readable()) {
            (false, _) => 1,
            (true, false) => 3,
            (true, true) => 0,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.damage {
            Some(d) => write!(f, "DAMAGED: {d}")?,
            None => {
                write!(
                    f,
                    "OK: {} in {}, {}",
                    counted(self.events, "record"),
                    counted(self.segments, "segment"),
                    counted(self.checkpoints, "checkpoint")
                )?;
                if let Some(c) = &self.last_checkpoint {
                    write!(f, ", last checkpoint covers {}", counted(c.seq, "record"))?;
                }
                if let Some(t) = &self.torn_tail {
                    write!(
                        f,
                        "; torn last record (crash during append) at sequence number {} in segment {}: {} bytes ignored",
                        t.seq, t.segment, t.bytes
                    )?;
                }
                if let Some(u) = &self.first_unreadable {
                    write!(
                        f,
                        "; {} intact but written by a newer version of the event encoding, which this version cannot read (the first at sequence number {} in segment {}: {})",
                        counted(self.unreadable, "record"),
                        u.seq,
                        u.segment,
                        u.reason
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// `n` and `noun`, in the plural unless `n` is 1.
fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Verifies the log in `dir` with default options.
///
/// # Errors
/// [`Error::Io`] when the directory or a file cannot be read, [`Error::Config`] when the log
/// was written under another chain key id. Damage is not an error: it is in the report.
pub fn verify_dir(dir: &Path, keys: &VerifyKeys) -> Result<Report> {
    verify_dir_with(dir, keys, &VerifyOptions::default())
}

/// Verifies the log in `dir`.
///
/// # Errors
/// As [`verify_dir`].
pub fn verify_dir_with(dir: &Path, keys: &VerifyKeys, opts: &VerifyOptions) -> Result<Report> {
    let segments = list_segments(dir)?;
    let ck_path = dir.join(CHECKPOINT_FILE);
    let ck_data = match std::fs::read(&ck_path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("read", &ck_path, e)),
    };
    let mut w = Walk {
        keys,
        max: opts.max_record_bytes,
        report: Report {
            log_id: None,
            events: 0,
            segments: segments.len() as u64,
            checkpoints: 0,
            last_checkpoint: None,
            torn_tail: None,
            damage: None,
            unreadable: 0,
            first_unreadable: None,
            tail: TailState::default(),
        },
        genesis: [0; 32],
        head: [0; 32],
        needed: BTreeSet::new(),
        heads: HashMap::new(),
        torn: None,
    };
    let (file_cps, ck_torn, ck_bad) = match read_checkpoint_entries(&ck_data) {
        Ok((cps, torn)) => (cps, torn, None),
        Err(e) => (Vec::new(), false, Some(e)),
    };
    w.report.tail.checkpoint_torn = ck_torn;
    w.report.tail.checkpoint_valid_len =
        (file_cps.len() * crate::format::checkpoint_entry_len()) as u64;
    let mut cps = file_cps;
    cps.extend(opts.trusted_checkpoint.clone());
    w.needed = cps.iter().map(|c| c.seq).collect();
    if let Some(e) = ck_bad {
        w.damage(
            0,
            DamageKind::Modified,
            None,
            format!("checkpoint file: {e}"),
        );
    }
    if w.report.damage.is_none() {
        w.walk_segments(&segments)?;
    }
    if w.report.damage.is_none() {
        w.check_checkpoints(&cps);
    }
    if w.report.damage.is_none() {
        w.report.torn_tail = w.torn.take();
    }
    w.report.tail.next_seq = w.report.events;
    w.report.tail.head = w.head;
    w.report.tail.log_id = w.report.log_id;
    Ok(w.report)
}

fn list_segments(dir: &Path) -> Result<BTreeMap<u64, PathBuf>> {
    let mut out = BTreeMap::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        if let Some(index) = name.to_str().and_then(parse_segment_file_name) {
            out.insert(index, entry.path());
        }
    }
    Ok(out)
}

struct Walk<'k> {
    keys: &'k VerifyKeys,
    max: u32,
    report: Report,
    genesis: Hash,
    head: Hash,
    needed: BTreeSet<u64>,
    heads: HashMap<u64, Hash>,
    torn: Option<TornTail>,
}

enum Flow {
    Continue,
    Stop,
}

impl Walk<'_> {
    fn damage(&mut self, seq: u64, kind: DamageKind, segment: Option<u64>, detail: String) {
        if self.report.damage.is_none() {
            self.report.damage = Some(Damage {
                seq,
                kind,
                segment,
                detail,
            });
        }
    }

    fn expected(&self) -> u64 {
        self.report.events
    }

    fn advance(&mut self, hash: Hash) {
        self.head = hash;
        self.report.events = self.report.events.saturating_add(1);
        if self.needed.contains(&self.report.events) {
            self.heads.insert(self.report.events, hash);
        }
    }

    fn walk_segments(&mut self, segments: &BTreeMap<u64, PathBuf>) -> Result<()> {
        let paths: Vec<(u64, &PathBuf)> = segments.iter().map(|(i, p)| (*i, p)).collect();
        let mut expected_index = 0u64;
        for (pos, (index, path)) in paths.iter().enumerate() {
            let is_last = pos + 1 == paths.len();
            if *index != expected_index {
                let seq = self.expected();
                self.damage(
                    seq,
                    DamageKind::MissingSegment,
                    Some(expected_index),
                    format!("segment {expected_index} is missing (next present is {index})"),
                );
                return Ok(());
            }
            let data = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
            let later: Vec<&PathBuf> = paths
                .get(pos + 1..)
                .unwrap_or_default()
                .iter()
                .map(|(_, p)| *p)
                .collect();
            if let Flow::Stop = self.walk_segment(*index, &data, is_last, &later)? {
                return Ok(());
            }
            expected_index = expected_index.saturating_add(1);
        }
        Ok(())
    }

    fn walk_segment(
        &mut self,
        index: u64,
        data: &[u8],
        is_last: bool,
        later: &[&PathBuf],
    ) -> Result<Flow> {
        let seq = self.expected();
        let seg = Some(index);
        self.report.tail.last_segment = Some(index);
        self.report.tail.last_segment_sealed = false;
        self.report.tail.last_segment_len = data.len() as u64;
        self.report.tail.last_header_complete = false;
        self.report.tail.last_segment_valid_len = 0;
        let (header, header_len) = match SegmentHeader::decode(data) {
            Ok(h) => h,
            Err(Error::Truncated { .. }) if is_last => {
                // A crash while the segment was being created.
                self.torn = Some(TornTail {
                    segment: index,
                    seq,
                    offset: 0,
                    bytes: data.len() as u64,
                });
                return Ok(Flow::Stop);
            }
            Err(e) => {
                self.damage(
                    seq,
                    DamageKind::Modified,
                    seg,
                    format!("segment header: {e}"),
                );
                return Ok(Flow::Stop);
            }
        };
        self.report.tail.last_header_complete = true;
        match self.report.log_id {
            None => {
                if header.key_id != self.keys.chain.id() {
                    return Err(Error::Config {
                        reason: format!(
                            "the log was written with chain key {:?}, the verifier holds {:?}",
                            header.key_id,
                            self.keys.chain.id()
                        ),
                    });
                }
                self.report.log_id = Some(header.log_id);
                self.genesis = genesis(&self.keys.chain, header.log_id);
                self.head = self.genesis;
                if self.needed.contains(&0) {
                    self.heads.insert(0, self.genesis);
                }
            }
            Some(id) if id != header.log_id => {
                self.damage(
                    seq,
                    DamageKind::Spliced,
                    seg,
                    format!("segment belongs to log {}", header.log_id),
                );
                return Ok(Flow::Stop);
            }
            Some(_) => {}
        }
        if header.compute_mac(&self.keys.chain) != header.mac || header.genesis != self.genesis {
            self.damage(
                seq,
                DamageKind::Modified,
                seg,
                "segment header MAC does not match".into(),
            );
            return Ok(Flow::Stop);
        }
        if header.index != index && header.first_seq < seq {
            self.damage(
                seq,
                DamageKind::Duplicated,
                seg,
                format!(
                    "file of segment {index} is a copy of segment {}",
                    header.index
                ),
            );
            return Ok(Flow::Stop);
        }
        if header.index != index {
            self.damage(
                seq,
                DamageKind::Reordered,
                seg,
                format!("file of segment {index} holds segment {}", header.index),
            );
            return Ok(Flow::Stop);
        }
        if header.first_seq > seq {
            self.damage(
                seq,
                DamageKind::Deleted,
                seg,
                format!(
                    "segment starts at {} but the chain is at {seq}",
                    header.first_seq
                ),
            );
            return Ok(Flow::Stop);
        }
        if header.first_seq < seq {
            self.damage(
                seq,
                DamageKind::Duplicated,
                seg,
                format!("segment starts again at {}", header.first_seq),
            );
            return Ok(Flow::Stop);
        }
        if header.prev_hash != self.head {
            self.damage(
                seq,
                DamageKind::Modified,
                seg,
                "segment does not chain to the previous segment's last record".into(),
            );
            return Ok(Flow::Stop);
        }
        let mut offset = header_len;
        self.report.tail.last_segment_valid_len = offset as u64;
        let mut sealed = false;
        while let Some(rest) = data.get(offset..).filter(|r| !r.is_empty()) {
            let seq = self.expected();
            if is_last && !sealed && rest.iter().all(|b| *b == 0) {
                // No record here: space an fsync-mode writer filled with zeros ahead of its
                // records, or a file system that extended the file before its data arrived.
                break;
            }
            // A frame that does not verify at the end of the open segment, where a crash may
            // have cut a write short.
            let torn = |w: &mut Self| {
                let bytes = match w.report.log_id {
                    Some(log_id) if is_last && !sealed => {
                        torn_write(rest, offset as u64, log_id, w.max)
                    }
                    _ => None,
                };
                if let Some(bytes) = bytes {
                    w.torn = Some(TornTail {
                        segment: index,
                        seq,
                        offset: offset as u64,
                        bytes,
                    });
                }
                bytes.is_some()
            };
            match read_frame(rest, self.max) {
                FrameRead::Complete(Frame::Event(rec), n) => {
                    if sealed {
                        self.damage(
                            seq,
                            DamageKind::Modified,
                            seg,
                            "record after the segment's seal".into(),
                        );
                        return Ok(Flow::Stop);
                    }
                    if rec.log_id != self.report.log_id.unwrap_or(rec.log_id) {
                        if torn(self) {
                            return Ok(Flow::Stop);
                        }
                        self.damage(
                            seq,
                            DamageKind::Spliced,
                            seg,
                            format!("record {} belongs to log {}", rec.seq, rec.log_id),
                        );
                        return Ok(Flow::Stop);
                    }
                    if !rec.hash_is_valid(&self.keys.chain, &self.genesis) {
                        if torn(self) {
                            return Ok(Flow::Stop);
                        }
                        self.damage(
                            seq,
                            DamageKind::Modified,
                            seg,
                            "record hash does not match its content".into(),
                        );
                        return Ok(Flow::Stop);
                    }
                    if rec.seq < seq {
                        self.damage(
                            seq,
                            DamageKind::Duplicated,
                            seg,
                            format!("record {} appears again", rec.seq),
                        );
                        return Ok(Flow::Stop);
                    }
                    if rec.seq > seq {
                        let tail = rest.get(n..).unwrap_or_default();
                        let found = self.find_seq(seq, tail, later);
                        let (kind, detail) = if found {
                            (
                                DamageKind::Reordered,
                                format!("record {} comes before {seq}", rec.seq),
                            )
                        } else {
                            (
                                DamageKind::Deleted,
                                format!("records {seq}..{} are missing", rec.seq),
                            )
                        };
                        self.damage(seq, kind, seg, detail);
                        return Ok(Flow::Stop);
                    }
                    if rec.prev != self.head {
                        self.damage(
                            seq,
                            DamageKind::Modified,
                            seg,
                            "record does not extend the chain".into(),
                        );
                        return Ok(Flow::Stop);
                    }
                    match decode_event(rec.event) {
                        Ok(_) => {}
                        // The keyed hash vouches for these bytes: a newer writer's event.
                        Err(e) if e.is_newer_encoding() => {
                            self.report.unreadable = self.report.unreadable.saturating_add(1);
                            self.report.first_unreadable.get_or_insert(Unreadable {
                                seq,
                                segment: index,
                                reason: e.to_string(),
                            });
                        }
                        Err(e) => {
                            self.damage(
                                seq,
                                DamageKind::Modified,
                                seg,
                                format!("event does not decode: {e}"),
                            );
                            return Ok(Flow::Stop);
                        }
                    }
                    self.advance(rec.hash);
                    offset = offset.saturating_add(n);
                }
                FrameRead::Complete(Frame::Seal(c), n) => {
                    if sealed
                        || !c.verify(&self.keys.checkpoint)
                        || Some(c.log_id) != self.report.log_id
                        || c.seq != seq
                        || c.head != self.head
                        || c.segment != index
                    {
                        self.damage(
                            seq,
                            DamageKind::Modified,
                            seg,
                            "segment seal does not match the chain".into(),
                        );
                        return Ok(Flow::Stop);
                    }
                    sealed = true;
                    self.note_checkpoint(&c);
                    offset = offset.saturating_add(n);
                }
                FrameRead::Incomplete => {
                    if is_last {
                        self.torn = Some(TornTail {
                            segment: index,
                            seq,
                            offset: offset as u64,
                            bytes: rest.len() as u64,
                        });
                        return Ok(Flow::Stop);
                    }
                    self.damage(
                        seq,
                        DamageKind::Deleted,
                        seg,
                        "segment ends inside a record".into(),
                    );
                    return Ok(Flow::Stop);
                }
                FrameRead::Unframed(e) => {
                    if torn(self) {
                        return Ok(Flow::Stop);
                    }
                    self.damage(
                        seq,
                        DamageKind::Modified,
                        seg,
                        format!("unreadable record: {e}"),
                    );
                    return Ok(Flow::Stop);
                }
                FrameRead::Invalid(e) => {
                    if torn(self) {
                        return Ok(Flow::Stop);
                    }
                    self.damage(
                        seq,
                        DamageKind::Modified,
                        seg,
                        format!("unreadable record: {e}"),
                    );
                    return Ok(Flow::Stop);
                }
            }
            self.report.tail.last_segment_valid_len = offset as u64;
        }
        self.report.tail.last_segment_sealed = sealed;
        if !is_last && !sealed {
            let seq = self.expected();
            // An unsealed segment followed by a copy of an earlier one: the copy is the
            // damage, not a cut.
            let next = later.first().and_then(|p| std::fs::read(p).ok());
            let copy = next
                .as_deref()
                .and_then(|d| SegmentHeader::decode(d).ok())
                .is_some_and(|(h, _)| h.first_seq < seq && h.index <= index);
            let (kind, detail) = if copy {
                (
                    DamageKind::Duplicated,
                    "the next segment file is a copy of an earlier segment",
                )
            } else {
                (
                    DamageKind::Deleted,
                    "segment is not sealed: records were cut from its end",
                )
            };
            self.damage(seq, kind, seg, detail.into());
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }

    /// Whether a valid record `seq` of this log appears in `rest` or a later segment.
    fn find_seq(&self, seq: u64, rest: &[u8], later: &[&PathBuf]) -> bool {
        if self.scan_for(seq, rest) {
            return true;
        }
        for path in later {
            let Ok(data) = std::fs::read(path) else {
                continue;
            };
            let Ok((_, hl)) = SegmentHeader::decode(&data) else {
                continue;
            };
            if self.scan_for(seq, data.get(hl..).unwrap_or_default()) {
                return true;
            }
        }
        false
    }

    fn scan_for(&self, seq: u64, mut data: &[u8]) -> bool {
        while let FrameRead::Complete(frame, n) = read_frame(data, self.max) {
            if let Frame::Event(rec) = frame
                && rec.seq == seq
                && Some(rec.log_id) == self.report.log_id
                && rec.hash_is_valid(&self.keys.chain, &self.genesis)
            {
                return true;
            }
            data = data.get(n..).unwrap_or_default();
        }
        false
    }

    fn note_checkpoint(&mut self, c: &Checkpoint) {
        self.report.checkpoints = self.report.checkpoints.saturating_add(1);
        if self
            .report
            .last_checkpoint
            .as_ref()
            .is_none_or(|l| c.seq >= l.seq)
        {
            self.report.last_checkpoint = Some(c.clone());
        }
    }

    fn check_checkpoints(&mut self, cps: &[Checkpoint]) {
        let events = self.report.events;
        let last_segment = self.report.tail.last_segment;
        let mut worst: Option<(u64, DamageKind, Option<u64>, String)> = None;
        let mut consider = |d: (u64, DamageKind, Option<u64>, String)| {
            if worst.as_ref().is_none_or(|w| d.0 < w.0) {
                worst = Some(d);
            }
        };
        for c in cps {
            let at = c.seq.min(events);
            if Some(c.log_id) != self.report.log_id && self.report.log_id.is_some() {
                consider((
                    at,
                    DamageKind::Spliced,
                    None,
                    format!("checkpoint belongs to log {}", c.log_id),
                ));
                continue;
            }
            if !c.verify(&self.keys.checkpoint) {
                consider((
                    at,
                    DamageKind::Modified,
                    None,
                    "checkpoint signature does not verify".into(),
                ));
                continue;
            }
            if self.report.log_id.is_some() && c.genesis != self.genesis {
                consider((
                    at,
                    DamageKind::Spliced,
                    None,
                    "checkpoint has another genesis".into(),
                ));
                continue;
            }
            self.note_checkpoint(c);
            if last_segment.is_none_or(|l| c.segment > l) {
                let missing = last_segment.map_or(0, |l| l.saturating_add(1));
                consider((
                    events,
                    DamageKind::MissingSegment,
                    Some(missing),
                    format!(
                        "a checkpoint was signed while segment {} was written, and it is gone",
                        c.segment
                    ),
                ));
                continue;
            }
            if c.seq > events {
                let detail = match &self.torn {
                    Some(t) => format!(
                        "the log ends in an incomplete record at {}, but a checkpoint covers {} records: cut, not a crash",
                        t.seq, c.seq
                    ),
                    None => format!(
                        "a checkpoint covers {} records but the log has {events}",
                        c.seq
                    ),
                };
                consider((events, DamageKind::CutFromTail, last_segment, detail));
                continue;
            }
            if self.heads.get(&c.seq) != Some(&c.head) {
                consider((
                    c.seq.saturating_sub(1),
                    DamageKind::Modified,
                    None,
                    format!(
                        "the chain head after {} records differs from the signed checkpoint",
                        c.seq
                    ),
                ));
            }
        }
        if let Some((seq, kind, seg, detail)) = worst {
            self.damage(seq, kind, seg, detail);
        }
    }
}
