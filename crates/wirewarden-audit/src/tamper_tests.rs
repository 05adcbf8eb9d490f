//! Every kind of tampering, each detected at the right first bad sequence number, and the
//! failure modes of the writer (poisoning, torn tails).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wirewarden_core::{AuditEventKind, SessionId};

use crate::format::{Frame, FrameRead, SegmentHeader, read_frame, segment_path};
use crate::read::read_log;
use crate::testing::numbered_event;
use crate::{
    ChainKey, CheckpointSigner, DamageKind, Durability, Error, FileSink, IoHook, Report,
    VerifyKeys, verify_dir,
};

const EVENTS: u64 = 40;

/// (offset, length, sequence number or None for a seal) of each frame.
type Frames = Vec<(usize, usize, Option<u64>)>;

struct Fixture {
    dir: tempfile::TempDir,
    key: ChainKey,
    signer: CheckpointSigner,
}

impl Fixture {
    fn keys(&self) -> VerifyKeys {
        VerifyKeys {
            chain: self.key.clone(),
            checkpoint: self.signer.public(),
        }
    }

    fn verify(&self) -> Report {
        verify_dir(self.dir.path(), &self.keys()).unwrap()
    }

    fn path(&self, segment: u64) -> PathBuf {
        segment_path(self.dir.path(), segment)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn write_log(key: &ChainKey, signer: &CheckpointSigner, dir: &Path, n: u64) {
    rt().block_on(async {
        let sink = FileSink::builder(dir, key.clone(), signer.clone())
            .segment_max_bytes(1_500)
            .open()
            .unwrap();
        let session = SessionId::new();
        let mut last = None;
        for i in 0..n {
            let seq = sink
                .append_event(&numbered_event(session, i))
                .await
                .unwrap();
            assert!(last.is_none_or(|l| seq == l + 1));
            last = Some(seq);
        }
        sink.close().await.unwrap();
    });
}

fn fixture() -> Fixture {
    let f = Fixture {
        dir: tempfile::tempdir().unwrap(),
        key: ChainKey::new("test-key", [42; 32]).unwrap(),
        signer: CheckpointSigner::from_seed([9; 32]),
    };
    write_log(&f.key, &f.signer, f.dir.path(), EVENTS);
    f
}

/// (offset, length, sequence number or None for a seal) of every frame of a segment.
fn frames(path: &Path) -> (Vec<u8>, Frames) {
    let data = fs::read(path).unwrap();
    let (_, mut off) = SegmentHeader::decode(&data).unwrap();
    let mut out = Vec::new();
    while let FrameRead::Complete(f, n) = read_frame(data.get(off..).unwrap(), 1 << 20) {
        let seq = match f {
            Frame::Event(r) => Some(r.seq),
            Frame::Seal(_) => None,
        };
        out.push((off, n, seq));
        off += n;
    }
    assert_eq!(off, data.len());
    (data, out)
}

/// The segment holding record `seq`, its bytes and frames.
fn locate(f: &Fixture, seq: u64) -> (PathBuf, Vec<u8>, Frames, usize) {
    for s in 0.. {
        let path = f.path(s);
        let (data, fr) = frames(&path);
        if let Some(i) = fr.iter().position(|x| x.2 == Some(seq)) {
            return (path, data, fr, i);
        }
    }
    unreachable!()
}

fn assert_damage(r: &Report, kind: DamageKind, seq: u64) {
    let d = r
        .damage
        .as_ref()
        .unwrap_or_else(|| panic!("no damage found: {r}"));
    assert_eq!((d.kind, d.seq), (kind, seq), "{d}");
}

#[test]
fn an_untouched_log_verifies_and_reads_back() {
    let f = fixture();
    let r = f.verify();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.events, EVENTS);
    assert!(r.segments >= 3, "{r}");
    assert!(r.checkpoints >= r.segments, "{r}");
    assert_eq!(r.last_checkpoint.as_ref().map(|c| c.seq), Some(EVENTS));
    assert!(r.torn_tail.is_none());
    let events = read_log(f.dir.path(), &f.keys()).unwrap();
    assert_eq!(events.len() as u64, EVENTS);
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
}

#[test]
fn modified_record() {
    let f = fixture();
    let (path, mut data, fr, i) = locate(&f, 17);
    let (off, len, _) = fr[i];
    // A byte inside the event text.
    data[off + len - 40] ^= 0x20;
    fs::write(&path, &data).unwrap();
    assert_damage(&f.verify(), DamageKind::Modified, 17);
}

#[test]
fn modified_segment_header() {
    let f = fixture();
    let (data, fr) = frames(&f.path(1));
    let first = fr[0].2.unwrap();
    let mut data = data;
    data[60] ^= 1; // inside first_seq / prev_hash
    fs::write(f.path(1), &data).unwrap();
    assert_damage(&f.verify(), DamageKind::Modified, first);
}

#[test]
fn deleted_record() {
    let f = fixture();
    let (path, mut data, fr, i) = locate(&f, 17);
    let (off, len, _) = fr[i];
    data.drain(off..off + len);
    fs::write(&path, &data).unwrap();
    assert_damage(&f.verify(), DamageKind::Deleted, 17);
}

#[test]
fn deleted_first_record_of_a_segment() {
    let f = fixture();
    let (data, fr) = frames(&f.path(2));
    let (off, len, seq) = fr[0];
    let mut data = data;
    data.drain(off..off + len);
    fs::write(f.path(2), &data).unwrap();
    assert_damage(&f.verify(), DamageKind::Deleted, seq.unwrap());
}

#[test]
fn reordered_records() {
    let f = fixture();
    let (path, data, fr, i) = locate(&f, 17);
    let (o1, l1, _) = fr[i];
    let (o2, l2, s2) = fr[i + 1];
    assert_eq!(s2, Some(18));
    let mut out = data[..o1].to_vec();
    out.extend_from_slice(&data[o2..o2 + l2]);
    out.extend_from_slice(&data[o1..o1 + l1]);
    out.extend_from_slice(&data[o2 + l2..]);
    fs::write(&path, &out).unwrap();
    assert_damage(&f.verify(), DamageKind::Reordered, 17);
}

#[test]
fn duplicated_record() {
    let f = fixture();
    let (path, data, fr, i) = locate(&f, 17);
    let (off, len, _) = fr[i];
    let mut out = data[..off + len].to_vec();
    out.extend_from_slice(&data[off..off + len]);
    out.extend_from_slice(&data[off + len..]);
    fs::write(&path, &out).unwrap();
    assert_damage(&f.verify(), DamageKind::Duplicated, 18);
}

#[test]
fn record_spliced_from_another_log() {
    let f = fixture();
    // Another log under the same key: only the log id tells them apart.
    let other = tempfile::tempdir().unwrap();
    write_log(&f.key, &f.signer, other.path(), EVENTS);
    let (path, data, fr, i) = locate(&f, 17);
    let (off, len, _) = fr[i];
    let other_f = Fixture {
        dir: other,
        key: f.key.clone(),
        signer: f.signer.clone(),
    };
    let (_, odata, ofr, oi) = locate(&other_f, 17);
    let (ooff, olen, _) = ofr[oi];
    let mut out = data[..off].to_vec();
    out.extend_from_slice(&odata[ooff..ooff + olen]);
    out.extend_from_slice(&data[off + len..]);
    fs::write(&path, &out).unwrap();
    assert_damage(&f.verify(), DamageKind::Spliced, 17);
    // And a whole segment.
    let g = fixture();
    let (_, fr1) = frames(&g.path(1));
    fs::copy(other_f.path(1), g.path(1)).unwrap();
    assert_damage(&g.verify(), DamageKind::Spliced, fr1[0].2.unwrap());
}

#[test]
fn records_cut_from_the_tail() {
    let f = fixture();
    let last = (0..).find(|s| !f.path(s + 1).exists()).unwrap();
    let (data, fr) = frames(&f.path(last));
    let n = fr.len();
    let (off, _, seq) = fr[n - 3];
    fs::write(f.path(last), &data[..off]).unwrap();
    assert_damage(&f.verify(), DamageKind::CutFromTail, seq.unwrap());
}

#[test]
fn a_cut_inside_a_checkpointed_record_is_not_a_torn_tail() {
    let f = fixture();
    let (path, data, fr, i) = locate(&f, EVENTS - 1);
    let (off, len, _) = fr[i];
    fs::write(&path, &data[..off + len / 2]).unwrap();
    let r = f.verify();
    assert_damage(&r, DamageKind::CutFromTail, EVENTS - 1);
    assert!(r.torn_tail.is_none());
}

#[test]
fn missing_segment() {
    let f = fixture();
    let (_, fr) = frames(&f.path(1));
    fs::remove_file(f.path(1)).unwrap();
    assert_damage(&f.verify(), DamageKind::MissingSegment, fr[0].2.unwrap());
}

#[test]
fn missing_last_segment_is_caught_by_checkpoints() {
    let f = fixture();
    let last = (0..).find(|s| !f.path(s + 1).exists()).unwrap();
    let (_, fr) = frames(&f.path(last));
    fs::remove_file(f.path(last)).unwrap();
    assert_damage(&f.verify(), DamageKind::MissingSegment, fr[0].2.unwrap());
}

#[test]
fn torn_last_record_is_named_and_repaired_on_reopen() {
    let f = fixture();
    let (path, data, fr, i) = locate(&f, 5);
    let (off, len, _) = fr[i];
    let last = (0..).find(|s| !f.path(s + 1).exists()).unwrap();
    // A crash halfway through appending record 40: half a frame at the end.
    let mut tail = fs::read(f.path(last)).unwrap();
    let partial = &data[off..off + len / 2];
    tail.extend_from_slice(partial);
    fs::write(f.path(last), &tail).unwrap();
    let _ = path;
    let r = f.verify();
    assert!(r.is_ok(), "{r}");
    let t = r.torn_tail.as_ref().unwrap();
    assert_eq!(
        (t.seq, t.segment, t.bytes),
        (EVENTS, last, partial.len() as u64)
    );
    // Reopening cuts the torn bytes and continues the chain.
    write_log(&f.key, &f.signer, f.dir.path(), 3);
    let r = f.verify();
    assert!(r.is_ok() && r.torn_tail.is_none(), "{r}");
    assert_eq!(r.events, EVENTS + 3);
}

#[test]
fn a_damaged_log_is_not_extended() {
    let f = fixture();
    let (path, mut data, fr, i) = locate(&f, 3);
    data[fr[i].0 + 30] ^= 1;
    fs::write(&path, &data).unwrap();
    let err = FileSink::builder(f.dir.path(), f.key.clone(), f.signer.clone())
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::Damaged { .. }), "{err}");
}

#[test]
fn a_wrong_checkpoint_key_is_caught() {
    let f = fixture();
    let keys = VerifyKeys {
        chain: f.key.clone(),
        checkpoint: CheckpointSigner::from_seed([1; 32]).public(),
    };
    let r = verify_dir(f.dir.path(), &keys).unwrap();
    assert!(!r.is_ok());
}

// === Injected failures ===

#[derive(Debug, Default)]
struct Faults {
    /// Fail the write after this many writes of headers, records and checkpoints.
    fail_write_after: Option<usize>,
    fail_sync_after: Option<usize>,
    /// Fail filling a segment with zeros.
    fail_zero_fill: bool,
    /// Writes of headers, records and checkpoints.
    writes: AtomicUsize,
    /// Writes of zeros filled ahead (not counted in `writes`).
    zero_writes: AtomicUsize,
    syncs: AtomicUsize,
    syncs_after_failure: AtomicUsize,
}

impl IoHook for Faults {
    fn write(&self, file: &mut fs::File, _path: &Path, buf: &[u8]) -> io::Result<()> {
        if buf.iter().all(|b| *b == 0) {
            self.zero_writes.fetch_add(1, Ordering::SeqCst);
            if self.fail_zero_fill {
                return Err(io::Error::other("injected: no space left on device"));
            }
            return io::Write::write_all(file, buf);
        }
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if self.fail_write_after.is_some_and(|k| n >= k) {
            // A short write, then the error: what a full disk does.
            io::Write::write_all(file, &buf[..buf.len() / 2])?;
            return Err(io::Error::other("injected: no space left on device"));
        }
        io::Write::write_all(file, buf)
    }

    fn sync(&self, file: &fs::File, _path: &Path) -> io::Result<()> {
        let n = self.syncs.fetch_add(1, Ordering::SeqCst);
        if let Some(k) = self.fail_sync_after {
            if n > k {
                self.syncs_after_failure.fetch_add(1, Ordering::SeqCst);
            }
            if n >= k {
                return Err(io::Error::other("injected: fdatasync failed"));
            }
        }
        file.sync_data()
    }
}

fn poisoned_after(faults: Faults, durability: Durability) -> Arc<Faults> {
    let faults = Arc::new(faults);
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let sink = FileSink::builder(
            dir.path(),
            ChainKey::new("k", [1; 32]).unwrap(),
            CheckpointSigner::from_seed([2; 32]),
        )
        .durability(durability)
        .io_hook(faults.clone())
        .open()
        .unwrap();
        let s = SessionId::new();
        let mut failed_at = None;
        for i in 0..20 {
            let r = sink.append_event(&numbered_event(s, i)).await;
            if durability == Durability::Buffered && r.is_ok() {
                // Buffered appends are accepted before they reach the disk; a flush reports.
                if sink.flush_inner().await.is_err() && failed_at.is_none() {
                    failed_at = Some(i);
                }
                continue;
            }
            if r.is_err() && failed_at.is_none() {
                failed_at = Some(i);
            }
            if failed_at.is_some() {
                assert!(r.is_err(), "append {i} succeeded after a failure");
                assert!(matches!(r, Err(Error::Poisoned { .. })), "{r:?}");
            }
        }
        assert!(failed_at.is_some(), "no failure observed");
        assert!(sink.is_poisoned());
        assert!(sink.append_event(&numbered_event(s, 99)).await.is_err());
        assert!(sink.close().await.is_err());
    });
    faults
}

#[test]
fn a_failed_fsync_poisons_and_is_never_retried() {
    // Creating segment 0 takes two syncs (file, directory); fail on the 4th record sync.
    let f = poisoned_after(
        Faults {
            fail_sync_after: Some(5),
            ..Faults::default()
        },
        Durability::Fsync,
    );
    assert_eq!(f.syncs_after_failure.load(Ordering::SeqCst), 0);
}

#[test]
fn a_failed_write_poisons_the_sink() {
    let f = poisoned_after(
        Faults {
            fail_write_after: Some(4),
            ..Faults::default()
        },
        Durability::Fsync,
    );
    assert_eq!(f.writes.load(Ordering::SeqCst), 5);
}

#[test]
fn a_failed_zero_fill_poisons_before_any_record_is_written() {
    let f = poisoned_after(
        Faults {
            fail_zero_fill: true,
            ..Faults::default()
        },
        Durability::Fsync,
    );
    // The segment header only: no record went out over space that is not zeros on disk.
    assert_eq!(f.writes.load(Ordering::SeqCst), 1);
    assert_eq!(f.zero_writes.load(Ordering::SeqCst), 1);
}

#[test]
fn buffered_mode_is_poisoned_too() {
    poisoned_after(
        Faults {
            fail_write_after: Some(3),
            ..Faults::default()
        },
        Durability::Buffered,
    );
}

#[test]
fn a_batch_whose_sync_fails_records_nothing_and_poisons() {
    // Creating segment 0 takes two syncs (file, directory) and filling it with zeros ahead
    // of the first records a third.
    let faults = Arc::new(Faults {
        fail_sync_after: Some(4),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let sink = FileSink::builder(
            dir.path(),
            ChainKey::new("k", [1; 32]).unwrap(),
            CheckpointSigner::from_seed([2; 32]),
        )
        .durability(Durability::Fsync)
        .io_hook(faults.clone())
        .open()
        .unwrap();
        let s = SessionId::new();
        let batch: Vec<_> = (0..4).map(|i| numbered_event(s, i)).collect();
        // The first batch's sync succeeds, the second fails.
        assert_eq!(sink.append_events(&batch).await.unwrap(), vec![0, 1, 2, 3]);
        let (recorded, e) = sink.append_events(&batch).await.unwrap_err();
        assert_eq!(
            recorded, 0,
            "none of a batch whose sync failed counts as recorded"
        );
        assert!(matches!(e, Error::Poisoned { .. }), "{e:?}");
        let (recorded, e) = sink.append_events(&batch).await.unwrap_err();
        assert_eq!(recorded, 0);
        assert!(matches!(e, Error::Poisoned { .. }), "{e:?}");
        assert!(sink.append_event(&numbered_event(s, 9)).await.is_err());
        // Through the trait: the same, as a `PartialBatch`.
        let err = crate::AuditSink::append_batch(&sink, &batch)
            .await
            .unwrap_err();
        assert_eq!(err.recorded, 0);
    });
    assert_eq!(faults.syncs_after_failure.load(Ordering::SeqCst), 0);
}

#[test]
fn a_batch_stops_at_an_event_it_cannot_record() {
    let dir = tempfile::tempdir().unwrap();
    let key = ChainKey::new("k", [1; 32]).unwrap();
    let signer = CheckpointSigner::from_seed([2; 32]);
    rt().block_on(async {
        let sink = FileSink::builder(dir.path(), key.clone(), signer.clone())
            .durability(Durability::Fsync)
            .max_record_bytes(4096)
            .open()
            .unwrap();
        let s = SessionId::new();
        let mut batch: Vec<_> = (0..5).map(|i| numbered_event(s, i)).collect();
        if let AuditEventKind::Transcript { text, .. } = &mut batch[2].kind {
            *text = "x".repeat(10_000);
        }
        let (recorded, e) = sink.append_events(&batch).await.unwrap_err();
        assert_eq!(recorded, 2);
        assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
        // The sink is still usable, and the events before the large one are on record.
        assert!(!sink.is_poisoned());
        assert_eq!(sink.append_events(&batch[3..]).await.unwrap(), vec![2, 3]);
        sink.close().await.unwrap();
    });
    let keys = VerifyKeys {
        chain: key,
        checkpoint: signer.public(),
    };
    let log = read_log(dir.path(), &keys).unwrap();
    let order: Vec<u64> = log
        .iter()
        .map(|e| match e.event.kind {
            AuditEventKind::Transcript { elapsed_us, .. } => elapsed_us,
            _ => u64::MAX,
        })
        .collect();
    assert_eq!(order, vec![0, 1, 3, 4]);
}

#[test]
fn checkpoints_are_written_periodically_also_while_idle() {
    let dir = tempfile::tempdir().unwrap();
    let key = ChainKey::new("k", [1; 32]).unwrap();
    let signer = CheckpointSigner::from_seed([2; 32]);
    let keys = VerifyKeys {
        chain: key.clone(),
        checkpoint: signer.public(),
    };
    rt().block_on(async {
        let sink = FileSink::builder(dir.path(), key, signer)
            .checkpoint_interval(std::time::Duration::from_millis(20))
            .open()
            .unwrap();
        sink.append_event(&numbered_event(SessionId::new(), 0))
            .await
            .unwrap();
        // Nothing more is appended; checkpoints keep coming.
        let mut seen = 0;
        for _ in 0..500 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            seen = verify_dir(dir.path(), &keys).unwrap().checkpoints;
            if seen >= 3 {
                break;
            }
        }
        assert!(seen >= 3, "only {seen} checkpoints while idle");
        sink.checkpoint().await.unwrap();
        sink.close().await.unwrap();
    });
    let r = verify_dir(dir.path(), &keys).unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.last_checkpoint.map(|c| c.seq), Some(1));
}

fn checkpoint_file(f: &Fixture) -> PathBuf {
    f.dir.path().join(crate::CHECKPOINT_FILE)
}

#[test]
fn a_cut_of_log_and_checkpoint_file_is_caught_by_a_checkpoint_kept_elsewhere() {
    let f = fixture();
    let trusted = f.verify().last_checkpoint.unwrap();
    assert_eq!(trusted.seq, EVENTS);
    // Cut the last three records and every checkpoint that mentions them.
    let last = (0..).find(|s| !f.path(s + 1).exists()).unwrap();
    let (data, fr) = frames(&f.path(last));
    let (off, _, seq) = fr[fr.len() - 3];
    fs::write(f.path(last), &data[..off]).unwrap();
    let cps = fs::read(checkpoint_file(&f)).unwrap();
    let (entries, _) = crate::format::read_checkpoint_entries(&cps).unwrap();
    let keep = entries.iter().filter(|c| c.seq <= seq.unwrap()).count();
    fs::write(
        checkpoint_file(&f),
        &cps[..keep * crate::format::checkpoint_entry_len()],
    )
    .unwrap();
    assert!(
        f.verify().is_ok(),
        "undetectable without an outside checkpoint"
    );
    let opts = crate::VerifyOptions::default().with_trusted_checkpoint(trusted);
    let r = crate::verify_dir_with(f.dir.path(), &f.keys(), &opts).unwrap();
    assert_damage(&r, DamageKind::CutFromTail, seq.unwrap());
}

#[test]
fn forged_and_foreign_checkpoints() {
    let f = fixture();
    let mut cps = fs::read(checkpoint_file(&f)).unwrap();
    // Claim more records than were signed: the signature no longer matches.
    let n = cps.len();
    let entry = crate::format::checkpoint_entry_len();
    let seq_at = n - entry + 4 + 16 + 32;
    cps[seq_at] = cps[seq_at].wrapping_add(5);
    fs::write(checkpoint_file(&f), &cps).unwrap();
    assert_damage(&f.verify(), DamageKind::Modified, EVENTS);
    // A validly signed checkpoint of another log.
    let other = tempfile::tempdir().unwrap();
    write_log(&f.key, &f.signer, other.path(), 5);
    let foreign = fs::read(other.path().join(crate::CHECKPOINT_FILE)).unwrap();
    let mut mixed = cps[..n - entry].to_vec();
    mixed.extend_from_slice(&foreign[..entry]);
    fs::write(checkpoint_file(&f), &mixed).unwrap();
    let r = f.verify();
    assert_eq!(
        r.damage.as_ref().map(|d| d.kind),
        Some(DamageKind::Spliced),
        "{r}"
    );
}

#[test]
fn duplicated_and_swapped_segment_files() {
    let f = fixture();
    let last = (0..).find(|s| !f.path(s + 1).exists()).unwrap();
    fs::copy(f.path(1), f.path(last + 1)).unwrap();
    assert_damage(&f.verify(), DamageKind::Duplicated, EVENTS);
    let g = fixture();
    let (_, fr1) = frames(&g.path(1));
    let tmp = g.dir.path().join("swap");
    fs::rename(g.path(1), &tmp).unwrap();
    fs::rename(g.path(2), g.path(1)).unwrap();
    fs::rename(&tmp, g.path(2)).unwrap();
    assert_damage(&g.verify(), DamageKind::Reordered, fr1[0].2.unwrap());
}

/// Records a newer writer appended (a new encoding version, an event kind this version
/// does not know) are chained like any other: verification vouches for them and says this
/// version cannot read them, readers pass over them and count them, and nothing after them
/// is lost. A record that does not decode for any other reason is still damage.
#[test]
fn records_of_a_newer_encoding_verify_and_are_passed_over() {
    use crate::codec::{EVENT_ENCODING_VERSION, encode_event};
    use crate::read::LogReader;

    let f = Fixture {
        dir: tempfile::tempdir().unwrap(),
        key: ChainKey::new("test-key", [42; 32]).unwrap(),
        signer: CheckpointSigner::from_seed([9; 32]),
    };
    let session = SessionId::new();
    // A kind whose encoding ends in its tag and a one-byte `None`.
    let renamed = |tag: u8| {
        let event = wirewarden_core::AuditEvent::new(
            Some(session),
            AuditEventKind::ApplicationChanged { application: None },
        );
        let mut bytes = encode_event(&event).unwrap();
        let at = bytes.len() - 2;
        assert_eq!(bytes[at], 13, "the kind tag");
        bytes[at] = tag;
        bytes
    };
    let mut newer_version = encode_event(&numbered_event(session, 1)).unwrap();
    newer_version[0] = EVENT_ENCODING_VERSION + 1;
    let write = |records: Vec<Vec<u8>>| {
        rt().block_on(async {
            let sink = FileSink::builder(f.dir.path(), f.key.clone(), f.signer.clone())
                .open()
                .unwrap();
            sink.append_event(&numbered_event(session, 0))
                .await
                .unwrap();
            sink.append_encoded(&records, true).await.unwrap();
            sink.append_event(&numbered_event(session, 2))
                .await
                .unwrap();
            sink.close().await.unwrap();
        });
    };
    write(vec![newer_version, renamed(200)]);

    let r = f.verify();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.events, 4, "{r}");
    assert_eq!(r.unreadable, 2, "{r}");
    assert!(!r.is_fully_readable());
    assert_eq!(r.exit_status(), 3);
    let first = r.first_unreadable.as_ref().unwrap();
    assert_eq!(first.seq, 1);
    assert!(first.reason.contains("version 2"), "{}", first.reason);
    assert!(r.to_string().contains("newer version"), "{r}");

    let mut reader = LogReader::new(f.dir.path(), f.keys());
    let seqs: Vec<u64> = reader.poll().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [0, 3]);
    assert_eq!(reader.unreadable(), 2);
    assert!(reader.passed_over().is_some());

    // A known kind whose bytes do not decode (here: trailing bytes) is not a newer writer's.
    let f2 = Fixture {
        dir: tempfile::tempdir().unwrap(),
        key: f.key.clone(),
        signer: f.signer.clone(),
    };
    let mut trailing = encode_event(&numbered_event(session, 1)).unwrap();
    trailing.push(0);
    rt().block_on(async {
        let sink = FileSink::builder(f2.dir.path(), f2.key.clone(), f2.signer.clone())
            .open()
            .unwrap();
        sink.append_encoded(&[trailing], true).await.unwrap();
        sink.close().await.unwrap();
    });
    let r = f2.verify();
    assert_damage(&r, DamageKind::Modified, 0);
    assert_eq!(r.exit_status(), 1);
    assert!(LogReader::new(f2.dir.path(), f2.keys()).poll().is_err());
}
