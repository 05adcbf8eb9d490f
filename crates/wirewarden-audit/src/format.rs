//! The on-disk format: keys, segment headers, record frames, the chain hash and checkpoints.
//!
//! A log is a directory of segment files `NNNNNNNNNNNNNNNNNNNN.wwseg` (the segment index in 20
//! decimal digits) and one `checkpoints.wwck`. See `docs/audit-format.md` in the crate README
//! for the byte layout; every length is checked against the remaining input and the
//! configured record limit before anything is allocated.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::codec::{Reader, Writer};
use crate::{Error, Result};

/// Magic bytes at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"WWAUDSEG";
/// The segment format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// The largest record frame accepted by default (16 MiB).
pub(crate) const DEFAULT_MAX_RECORD_BYTES: u32 = 16 << 20;
/// File name of the checkpoint file in a log directory.
pub const CHECKPOINT_FILE: &str = "checkpoints.wwck";
/// File name extension of segment files.
pub(crate) const SEGMENT_EXT: &str = "wwseg";

const KEY_ID_MAX: usize = 64;
const FRAME_EVENT: u8 = 1;
const FRAME_CHECKPOINT: u8 = 2;

const DOMAIN_GENESIS: &[u8] = b"wirewarden audit genesis v1";
const DOMAIN_HEADER: &[u8] = b"wirewarden audit segment header v1";
const DOMAIN_RECORD: &[u8] = b"wirewarden audit record v1";
const DOMAIN_CHECKPOINT: &[u8] = b"wirewarden audit checkpoint v1";

/// A 32-byte hash in the chain.
pub type Hash = [u8; 32];

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N]> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return Err(Error::Config {
            reason: format!("{what} must be {} hexadecimal characters", N * 2),
        });
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (
            pair.first().copied().and_then(nibble),
            pair.get(1).copied().and_then(nibble),
        ) else {
            return Err(Error::Config {
                reason: format!("{what} is not hexadecimal"),
            });
        };
        *o = hi << 4 | lo;
    }
    Ok(out)
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| Error::Config {
        reason: format!("no operating-system randomness: {e}"),
    })?;
    Ok(out)
}

// === Keys ===

/// The secret key of the keyed blake3 chain, with the id recorded in every segment header.
///
/// Whoever holds it can verify records and could also rewrite them, so it stays with the
/// gateway and the auditor; checkpoints are signed with a separate [`CheckpointSigner`].
#[derive(Clone)]
pub struct ChainKey {
    id: String,
    key: [u8; 32],
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ChainKey {
    /// A key with identifier `id` (1 to 64 bytes, recorded in the log) and secret `key`.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or over-long id.
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > KEY_ID_MAX {
            return Err(Error::Config {
                reason: format!("chain key id must be 1 to {KEY_ID_MAX} bytes"),
            });
        }
        Ok(Self { id, key })
    }

    /// Parses the secret from 64 hexadecimal characters.
    ///
    /// # Errors
    /// [`Error::Config`] when the text or the id is malformed.
    pub fn from_hex(id: impl Into<String>, hex_key: &str) -> Result<Self> {
        Self::new(id, unhex::<32>("chain key", hex_key)?)
    }

    /// A fresh random key.
    ///
    /// # Errors
    /// [`Error::Config`] when the id is malformed or the OS has no randomness.
    pub fn generate(id: impl Into<String>) -> Result<Self> {
        Self::new(id, random()?)
    }

    /// The key id recorded in segment headers.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret as hexadecimal, for writing a key file.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex(&self.key)
    }

    /// A key for another purpose derived from this one (BLAKE3 `derive_key` under
    /// `context`, which names that purpose), so whoever keeps the trail keeps one secret. The
    /// same key and context always give the same key; different contexts give unrelated
    /// ones, and none of them reveals the chain key.
    #[must_use]
    pub fn derive_key(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.key)
    }

    fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    fn hasher(&self, domain: &[u8]) -> blake3::Hasher {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&(domain.len() as u64).to_le_bytes());
        h.update(domain);
        h
    }
}

/// The Ed25519 key that signs checkpoints. Its public half, [`CheckpointKey`], is all an
/// auditor needs to check them, and cannot forge one.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// From a 32-byte Ed25519 seed.
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Parses a seed from 64 hexadecimal characters.
    ///
    /// # Errors
    /// [`Error::Config`] when the text is malformed.
    pub fn from_hex(hex_seed: &str) -> Result<Self> {
        Ok(Self::from_seed(unhex::<32>(
            "checkpoint signing key",
            hex_seed,
        )?))
    }

    /// A fresh random key.
    ///
    /// # Errors
    /// [`Error::Config`] when the OS has no randomness.
    pub fn generate() -> Result<Self> {
        Ok(Self::from_seed(random()?))
    }

    /// The seed as hexadecimal, for writing a key file.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex(&self.key.to_bytes())
    }

    /// The public key that verifies this signer's checkpoints.
    #[must_use]
    pub fn public(&self) -> CheckpointKey {
        CheckpointKey(self.key.verifying_key())
    }
}

/// The Ed25519 public key that verifies checkpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CheckpointKey(VerifyingKey);

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointKey({})", self.to_hex())
    }
}

impl CheckpointKey {
    /// From the 32 bytes of an Ed25519 public key.
    ///
    /// # Errors
    /// [`Error::Config`] when the bytes are not a valid point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self> {
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| Error::Config {
                reason: "not an Ed25519 public key".into(),
            })
    }

    /// Parses 64 hexadecimal characters.
    ///
    /// # Errors
    /// [`Error::Config`] when the text or the key is malformed.
    pub fn from_hex(s: &str) -> Result<Self> {
        Self::from_bytes(unhex::<32>("checkpoint public key", s)?)
    }

    /// The key as hexadecimal.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex(self.0.as_bytes())
    }

    /// The raw bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

/// The random identity of one log, entered into every hash so that records cannot be moved
/// between logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId(pub [u8; 16]);

impl LogId {
    /// A fresh random id.
    ///
    /// # Errors
    /// [`Error::Config`] when the OS has no randomness.
    pub fn generate() -> Result<Self> {
        Ok(Self(random()?))
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogId({self})")
    }
}

/// Hexadecimal rendering of a hash, for reports.
#[must_use]
pub fn hash_hex(h: &Hash) -> String {
    hex(h)
}

/// The genesis value of a log: the `prev` of its first record.
#[must_use]
pub(crate) fn genesis(key: &ChainKey, log_id: LogId) -> Hash {
    let mut h = key.hasher(DOMAIN_GENESIS);
    h.update(&log_id.0);
    h.update(&(key.id.len() as u64).to_le_bytes());
    h.update(key.id.as_bytes());
    *h.finalize().as_bytes()
}

/// The chain hash of one record: keyed by the chain key over the log id, the genesis, the
/// sequence number, the previous hash and the length-prefixed canonical event bytes.
#[must_use]
pub(crate) fn record_hash(
    key: &ChainKey,
    log_id: LogId,
    genesis: &Hash,
    seq: u64,
    prev: &Hash,
    event: &[u8],
) -> Hash {
    RecordHasher::new(key, log_id, genesis).hash(seq, prev, event)
}

/// Computes [`record_hash`] for the records of one log: the part of the input every record
/// of the log shares (domain, log id, genesis: 82 bytes) is absorbed once, and each record
/// starts from a copy of that state, one block compression less per record.
#[derive(Clone)]
pub(crate) struct RecordHasher {
    base: blake3::Hasher,
}

impl fmt::Debug for RecordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordHasher").finish_non_exhaustive()
    }
}

impl RecordHasher {
    /// The hasher of the records of `log_id`, whose chain starts at `genesis`.
    pub(crate) fn new(key: &ChainKey, log_id: LogId, genesis: &Hash) -> Self {
        // The same bytes as `key.hasher(DOMAIN_RECORD)` followed by one `update` per field,
        // in one call (small updates cost more than the bytes they carry).
        const PREFIX: usize = 8 + DOMAIN_RECORD.len() + 16 + 32;
        let mut prefix = [0u8; PREFIX];
        let mut at = 0;
        for part in [
            &(DOMAIN_RECORD.len() as u64).to_le_bytes()[..],
            DOMAIN_RECORD,
            &log_id.0,
            genesis,
        ] {
            prefix[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let mut base = blake3::Hasher::new_keyed(key.key_bytes());
        base.update(&prefix);
        Self { base }
    }

    /// The chain hash of the record `seq` after `prev` holding `event`.
    #[must_use]
    pub(crate) fn hash(&self, seq: u64, prev: &Hash, event: &[u8]) -> Hash {
        let mut head = [0u8; 8 + 32 + 8];
        head[..8].copy_from_slice(&seq.to_le_bytes());
        head[8..40].copy_from_slice(prev);
        head[40..].copy_from_slice(&(event.len() as u64).to_le_bytes());
        let mut h = self.base.clone();
        h.update(&head);
        h.update(event);
        *h.finalize().as_bytes()
    }
}

// === Segment header ===

/// The header at the start of every segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The log.
    pub log_id: LogId,
    /// The log's genesis value.
    pub genesis: Hash,
    /// This segment's index; segments are numbered from 0 without gaps.
    pub index: u64,
    /// The sequence number of the segment's first record.
    pub first_seq: u64,
    /// The hash of the last record of the previous segment (the genesis for segment 0).
    pub prev_hash: Hash,
    /// When the segment was started, Unix nanoseconds.
    pub created_at: i64,
    /// The id of the chain key.
    pub key_id: String,
    /// Keyed hash over all the fields above.
    pub mac: Hash,
}

impl SegmentHeader {
    /// A header for a new segment, with its MAC.
    pub(crate) fn new(
        key: &ChainKey,
        log_id: LogId,
        index: u64,
        first_seq: u64,
        prev_hash: Hash,
        created_at: i64,
    ) -> Self {
        let mut h = Self {
            log_id,
            genesis: genesis(key, log_id),
            index,
            first_seq,
            prev_hash,
            created_at,
            key_id: key.id.clone(),
            mac: [0; 32],
        };
        h.mac = h.compute_mac(key);
        h
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(SEGMENT_MAGIC);
        w.raw(&FORMAT_VERSION.to_le_bytes());
        w.raw(&self.log_id.0);
        w.raw(&self.genesis);
        w.u64(self.index);
        w.u64(self.first_seq);
        w.raw(&self.prev_hash);
        w.i64(self.created_at);
        // Key ids are at most 64 bytes (checked in `ChainKey::new` and on decode).
        w.u8(self.key_id.len().min(KEY_ID_MAX) as u8);
        w.raw(self.key_id.as_bytes());
        w.buf
    }

    /// The MAC this header should carry under `key`.
    #[must_use]
    pub fn compute_mac(&self, key: &ChainKey) -> Hash {
        let mut h = key.hasher(DOMAIN_HEADER);
        h.update(&self.body());
        *h.finalize().as_bytes()
    }

    /// The encoded header.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.mac);
        b
    }

    /// Decodes a header from the start of `data`; returns it and its length.
    ///
    /// # Errors
    /// [`Error::Truncated`] when `data` is shorter than a header, other typed errors for a bad
    /// magic, version or key id.
    pub fn decode(data: &[u8]) -> Result<(Self, usize)> {
        let mut r = Reader::new(data);
        let magic = r.take("segment magic", 8)?;
        if magic != SEGMENT_MAGIC {
            return Err(Error::InvalidValue {
                what: "segment magic",
                reason: "not a wirewarden audit segment",
            });
        }
        let version = r.u16("segment version")?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "segment format",
                version: u32::from(version),
            });
        }
        let log_id = LogId(r.array("log id")?);
        let genesis = r.array("genesis")?;
        let index = r.u64("segment index")?;
        let first_seq = r.u64("first sequence number")?;
        let prev_hash = r.array("previous hash")?;
        let created_at = r.i64("created_at")?;
        let key_len = usize::from(r.u8("key id")?);
        if key_len == 0 || key_len > KEY_ID_MAX {
            return Err(Error::InvalidValue {
                what: "key id",
                reason: "length out of range",
            });
        }
        let key_id = std::str::from_utf8(r.take("key id", key_len)?)
            .map_err(|_| Error::InvalidUtf8 { what: "key id" })?
            .to_owned();
        let mac = r.array("header mac")?;
        Ok((
            Self {
                log_id,
                genesis,
                index,
                first_seq,
                prev_hash,
                created_at,
                key_id,
                mac,
            },
            r.position(),
        ))
    }
}

/// The file name of segment `index`.
#[must_use]
pub fn segment_file_name(index: u64) -> String {
    format!("{index:020}.{SEGMENT_EXT}")
}

/// The path of segment `index` in `dir`.
#[must_use]
pub(crate) fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(segment_file_name(index))
}

/// Parses a segment file name back to its index.
#[must_use]
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

// === Checkpoints ===

/// A signed statement that the log `log_id` held `seq` records ending in `head` at `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log.
    pub log_id: LogId,
    /// The log's genesis value.
    pub genesis: Hash,
    /// The number of records covered (the next sequence number).
    pub seq: u64,
    /// The hash of record `seq - 1`, or the genesis when `seq == 0`.
    pub head: Hash,
    /// The segment that was being written.
    pub segment: u64,
    /// When it was signed, Unix nanoseconds.
    pub time: i64,
    /// The public key that signed it.
    pub signer: [u8; 32],
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

const CHECKPOINT_LEN: usize = 16 + 32 + 8 + 32 + 8 + 8 + 32 + 64;

/// The size of one entry of the checkpoint file.
pub(crate) const fn checkpoint_entry_len() -> usize {
    4 + CHECKPOINT_LEN
}

impl Checkpoint {
    fn signed_message(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(&(DOMAIN_CHECKPOINT.len() as u64).to_le_bytes());
        w.raw(DOMAIN_CHECKPOINT);
        w.raw(&self.log_id.0);
        w.raw(&self.genesis);
        w.u64(self.seq);
        w.raw(&self.head);
        w.u64(self.segment);
        w.i64(self.time);
        w.raw(&self.signer);
        w.buf
    }

    /// A new checkpoint signed by `signer`.
    #[must_use]
    pub fn sign(
        signer: &CheckpointSigner,
        log_id: LogId,
        genesis: Hash,
        seq: u64,
        head: Hash,
        segment: u64,
        time: i64,
    ) -> Self {
        let mut c = Self {
            log_id,
            genesis,
            seq,
            head,
            segment,
            time,
            signer: signer.public().to_bytes(),
            signature: [0; 64],
        };
        c.signature = signer.key.sign(&c.signed_message()).to_bytes();
        c
    }

    /// Whether `key` signed exactly this checkpoint.
    #[must_use]
    pub fn verify(&self, key: &CheckpointKey) -> bool {
        self.signer == key.to_bytes()
            && key
                .0
                .verify(
                    &self.signed_message(),
                    &Signature::from_bytes(&self.signature),
                )
                .is_ok()
    }

    /// The checkpoint as hexadecimal, to keep outside the log (a SIEM, a ticket) and pass
    /// back to verification as a trusted checkpoint.
    #[must_use]
    pub fn to_hex(&self) -> String {
        let mut w = Writer::default();
        self.encode_into(&mut w);
        hex(&w.buf)
    }

    /// Parses [`to_hex`](Self::to_hex) output. The signature is checked by verification.
    ///
    /// # Errors
    /// [`Error::Config`] for text that is not a hex-encoded checkpoint.
    pub fn from_hex(s: &str) -> Result<Self> {
        let bytes = unhex::<CHECKPOINT_LEN>("checkpoint", s)?;
        let mut r = Reader::new(&bytes);
        let c = Self::decode_from(&mut r)?;
        r.finish("checkpoint")?;
        Ok(c)
    }

    pub(crate) fn encode_into(&self, w: &mut Writer) {
        w.raw(&self.log_id.0);
        w.raw(&self.genesis);
        w.u64(self.seq);
        w.raw(&self.head);
        w.u64(self.segment);
        w.i64(self.time);
        w.raw(&self.signer);
        w.raw(&self.signature);
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            log_id: LogId(r.array("checkpoint log id")?),
            genesis: r.array("checkpoint genesis")?,
            seq: r.u64("checkpoint seq")?,
            head: r.array("checkpoint head")?,
            segment: r.u64("checkpoint segment")?,
            time: r.i64("checkpoint time")?,
            signer: r.array("checkpoint signer")?,
            signature: r.array("checkpoint signature")?,
        })
    }
}

// === Frames ===

/// One event record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRecord<'a> {
    /// The log the record says it belongs to.
    pub log_id: LogId,
    /// Its sequence number.
    pub seq: u64,
    /// The hash of the record before it.
    pub prev: Hash,
    /// The canonical event bytes.
    pub event: &'a [u8],
    /// Its chain hash.
    pub hash: Hash,
}

impl EventRecord<'_> {
    /// Whether the stored hash is the one `key` and `genesis` give for this record's fields.
    #[must_use]
    pub(crate) fn hash_is_valid(&self, key: &ChainKey, genesis: &Hash) -> bool {
        record_hash(key, self.log_id, genesis, self.seq, &self.prev, self.event) == self.hash
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// An event record.
    Event(EventRecord<'a>),
    /// A checkpoint that seals the segment.
    Seal(Checkpoint),
}

/// The result of reading one frame from the front of a buffer.
#[derive(Debug)]
pub(crate) enum FrameRead<'a> {
    /// A whole frame and the bytes it took.
    Complete(Frame<'a>, usize),
    /// The buffer ends inside a frame (a torn write, or a write still in progress).
    Incomplete,
    /// The frame's length is known but its content is malformed.
    Invalid(Error),
    /// The length prefix is impossible (zero or over the limit), so nothing after it can be
    /// framed.
    Unframed(Error),
}

/// Zero bytes an fsync-mode writer keeps on disk after the end of each write into an open
/// segment (it fills the segment with zeros ahead of its records).
pub(crate) const ZERO_TAIL_MIN: u64 = 4096;

/// The most an fsync-mode writer writes into an open segment between two syncs, unless a
/// single record is longer.
pub(crate) const TORN_WRITE_MAX: u64 = 1 << 20;

const PAGE: u64 = 4096;

/// Whether `rest` — the end of an open segment of log `log_id`, from a frame that does not
/// verify at file offset `at` to the end of the file — is what a crash in the middle of a
/// write over zeros filled ahead leaves. Returns how many bytes come before the trailing
/// zeros.
///
/// Such a write reaches the disk page by page, and a page that did not keeps its zeros. So
/// the segment must end in at least [`ZERO_TAIL_MIN`] zeros, and the frame must show the
/// cut: its length lost (zero), its end in the trailing zeros, or one of its pages zero from
/// the page boundary on. A record changed in place shows none of these. And what comes
/// before the trailing zeros can be no longer than one write: [`TORN_WRITE_MAX`], or one
/// frame of up to `max_record` bytes, as long as the frame claims (when its length is there)
/// or, with no record of the log after its start (when the length is lost).
pub(crate) fn torn_write(rest: &[u8], at: u64, log_id: LogId, max_record: u32) -> Option<u64> {
    let written = rest.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    if ((rest.len() - written) as u64) < ZERO_TAIL_MIN {
        return None;
    }
    let written_len = written as u64;
    let len = rest
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes);
    let one_record = 4 + u64::from(if len == 0 {
        max_record
    } else {
        len.min(max_record)
    });
    if written_len > TORN_WRITE_MAX.max(one_record) {
        return None;
    }
    if len == 0 {
        // Longer than one write of several records: one record, with no other after it.
        let record_after = |i: usize| {
            rest.get(i + 4..i + 21).is_some_and(|b| {
                b.first() == Some(&FRAME_EVENT) && b.get(1..) == Some(&log_id.0[..])
            })
        };
        if written_len > TORN_WRITE_MAX && (1..written).any(record_after) {
            return None;
        }
        return Some(written_len);
    }
    let end = 4 + u64::from(len);
    if end > written_len {
        return Some(written_len);
    }
    let mut page = (at / PAGE + 1) * PAGE;
    while page < at + end {
        let from = (page - at) as usize;
        let to = ((page + PAGE - at) as usize).min(written);
        if rest
            .get(from..to)
            .is_some_and(|b| b.iter().all(|x| *x == 0))
        {
            return Some(written_len);
        }
        page += PAGE;
    }
    None
}

/// Encodes an event record frame into `w`.
pub(crate) fn encode_event_frame(
    w: &mut Vec<u8>,
    log_id: LogId,
    seq: u64,
    prev: &Hash,
    event: &[u8],
    hash: &Hash,
) {
    let body_len = 1 + 16 + 8 + 32 + 4 + event.len() + 32;
    w.reserve(4 + body_len);
    // Record sizes are limited far below 4 GiB before we get here.
    w.extend_from_slice(&(body_len as u32).to_le_bytes());
    w.push(FRAME_EVENT);
    w.extend_from_slice(&log_id.0);
    w.extend_from_slice(&seq.to_le_bytes());
    w.extend_from_slice(prev);
    w.extend_from_slice(&(event.len() as u32).to_le_bytes());
    w.extend_from_slice(event);
    w.extend_from_slice(hash);
}

/// The encoded size of an event frame holding `event_len` bytes of event.
pub(crate) fn event_frame_len(event_len: usize) -> usize {
    4 + 1 + 16 + 8 + 32 + 4 + event_len + 32
}

/// Encodes a seal (checkpoint) frame.
pub(crate) fn encode_seal_frame(c: &Checkpoint) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32((1 + CHECKPOINT_LEN) as u32);
    w.u8(FRAME_CHECKPOINT);
    c.encode_into(&mut w);
    w.buf
}

/// Encodes an entry of the checkpoint file.
pub(crate) fn encode_checkpoint_entry(c: &Checkpoint) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(CHECKPOINT_LEN as u32);
    c.encode_into(&mut w);
    w.buf
}

/// Reads one frame from the front of `data`.
#[must_use]
pub(crate) fn read_frame(data: &[u8], max_record: u32) -> FrameRead<'_> {
    let mut r = Reader::new(data);
    let Ok(len) = r.u32("frame length") else {
        return FrameRead::Incomplete;
    };
    if len == 0 || len > max_record {
        return FrameRead::Unframed(Error::TooLarge {
            what: "record frame",
            len: u64::from(len),
            limit: u64::from(max_record),
        });
    }
    let total = 4 + len as usize;
    let Ok(body) = r.take("frame", len as usize) else {
        return FrameRead::Incomplete;
    };
    match parse_body(body) {
        Ok(f) => FrameRead::Complete(f, total),
        Err(e) => FrameRead::Invalid(e),
    }
}

fn parse_body(body: &[u8]) -> Result<Frame<'_>> {
    let mut r = Reader::new(body);
    let frame = match r.u8("frame type")? {
        FRAME_EVENT => {
            let log_id = LogId(r.array("log id")?);
            let seq = r.u64("sequence number")?;
            let prev = r.array("previous hash")?;
            let event = r.bytes("event")?;
            let hash = r.array("hash")?;
            Frame::Event(EventRecord {
                log_id,
                seq,
                prev,
                event,
                hash,
            })
        }
        FRAME_CHECKPOINT => Frame::Seal(Checkpoint::decode_from(&mut r)?),
        tag => {
            return Err(Error::InvalidTag {
                what: "frame type",
                tag,
            });
        }
    };
    r.finish("frame")?;
    Ok(frame)
}

/// Reads the checkpoint file's entries; a torn last entry is skipped. Returns the valid
/// entries and whether the file ended in a torn entry.
///
/// # Errors
/// A typed error for an entry whose length or content is malformed.
pub(crate) fn read_checkpoint_entries(data: &[u8]) -> Result<(Vec<Checkpoint>, bool)> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let mut r = Reader::new(rest);
        let Ok(len) = r.u32("checkpoint length") else {
            return Ok((out, true));
        };
        if len as usize != CHECKPOINT_LEN {
            if rest.iter().all(|b| *b == 0) {
                return Ok((out, true));
            }
            return Err(Error::InvalidValue {
                what: "checkpoint entry",
                reason: "wrong length",
            });
        }
        let Ok(body) = r.take("checkpoint", CHECKPOINT_LEN) else {
            return Ok((out, true));
        };
        let mut br = Reader::new(body);
        out.push(Checkpoint::decode_from(&mut br)?);
        rest = rest.get(4 + CHECKPOINT_LEN..).unwrap_or_default();
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ChainKey {
        ChainKey::new("k1", [7; 32]).unwrap()
    }

    #[test]
    fn derived_keys_depend_on_key_and_context_and_are_not_the_key() {
        let k = key();
        let a = k.derive_key("purpose a");
        assert_eq!(a, k.derive_key("purpose a"));
        assert_ne!(a, k.derive_key("purpose b"));
        assert_ne!(
            a,
            ChainKey::new("k1", [8; 32])
                .unwrap()
                .derive_key("purpose a")
        );
        assert_ne!(a, *k.key_bytes());
        assert_eq!(a, blake3::derive_key("purpose a", &[7; 32]));
    }

    #[test]
    fn header_round_trips_and_mac_binds_fields() {
        let k = key();
        let h = SegmentHeader::new(&k, LogId([1; 16]), 3, 42, [9; 32], 1_000);
        let bytes = h.encode();
        let (back, len) = SegmentHeader::decode(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(back, h);
        assert_eq!(back.compute_mac(&k), back.mac);
        let mut other = back.clone();
        other.first_seq = 43;
        assert_ne!(other.compute_mac(&k), other.mac);
        for n in 0..bytes.len() {
            assert!(SegmentHeader::decode(bytes.get(..n).unwrap()).is_err());
        }
    }

    #[test]
    fn record_hash_is_the_keyed_hash_of_its_fields_in_order() {
        // The definition in the crate README, one field after the other.
        let k = key();
        let log = LogId([2; 16]);
        let g = genesis(&k, log);
        for event in [&b""[..], b"event", &[0xa5; 1000][..]] {
            let mut h = k.hasher(DOMAIN_RECORD);
            h.update(&log.0);
            h.update(&g);
            h.update(&5u64.to_le_bytes());
            h.update(&[3; 32]);
            h.update(&(event.len() as u64).to_le_bytes());
            h.update(event);
            assert_eq!(
                record_hash(&k, log, &g, 5, &[3; 32], event),
                *h.finalize().as_bytes()
            );
        }
    }

    #[test]
    fn frames_round_trip_and_prefixes_are_incomplete() {
        let k = key();
        let log = LogId([2; 16]);
        let g = genesis(&k, log);
        let hash = record_hash(&k, log, &g, 0, &g, b"event");
        let mut buf = Vec::new();
        encode_event_frame(&mut buf, log, 0, &g, b"event", &hash);
        assert_eq!(buf.len(), event_frame_len(5));
        let FrameRead::Complete(Frame::Event(rec), n) = read_frame(&buf, 1 << 20) else {
            panic!("not a complete event frame");
        };
        assert_eq!(n, buf.len());
        assert!(rec.hash_is_valid(&k, &g));
        for cut in 0..buf.len() {
            assert!(matches!(
                read_frame(buf.get(..cut).unwrap(), 1 << 20),
                FrameRead::Incomplete
            ));
        }
        assert!(matches!(
            read_frame(&[0, 0, 0, 0], 1 << 20),
            FrameRead::Unframed(_)
        ));
    }

    #[test]
    fn checkpoints_verify_only_with_their_key() {
        let signer = CheckpointSigner::from_seed([3; 32]);
        let other = CheckpointSigner::from_seed([4; 32]);
        let c = Checkpoint::sign(&signer, LogId([1; 16]), [0; 32], 5, [8; 32], 0, 99);
        assert!(c.verify(&signer.public()));
        assert!(!c.verify(&other.public()));
        let mut forged = c.clone();
        forged.seq = 6;
        assert!(!forged.verify(&signer.public()));
        let entry = encode_checkpoint_entry(&c);
        let (list, torn) = read_checkpoint_entries(&entry).unwrap();
        assert_eq!(list, vec![c]);
        assert!(!torn);
        let (list, torn) = read_checkpoint_entries(entry.get(..entry.len() - 3).unwrap()).unwrap();
        assert!(list.is_empty() && torn);
    }

    #[test]
    fn checkpoint_hex_round_trips() {
        let signer = CheckpointSigner::from_seed([3; 32]);
        let c = Checkpoint::sign(&signer, LogId([1; 16]), [0; 32], 5, [8; 32], 0, 99);
        assert_eq!(Checkpoint::from_hex(&c.to_hex()).unwrap(), c);
        assert!(Checkpoint::from_hex("00").is_err());
    }

    #[test]
    fn key_hex_round_trips() {
        let k = ChainKey::generate("main").unwrap();
        assert_eq!(ChainKey::from_hex("main", &k.to_hex()).unwrap().key, k.key);
        let s = CheckpointSigner::generate().unwrap();
        let back = CheckpointSigner::from_hex(&s.to_hex()).unwrap();
        assert_eq!(back.public(), s.public());
        assert_eq!(
            CheckpointKey::from_hex(&s.public().to_hex()).unwrap(),
            s.public()
        );
        assert!(ChainKey::from_hex("x", "zz").is_err());
        assert!(ChainKey::new("", [0; 32]).is_err());
        assert_eq!(parse_segment_file_name(&segment_file_name(17)), Some(17));
        assert_eq!(parse_segment_file_name("17.wwseg"), None);
    }
}
