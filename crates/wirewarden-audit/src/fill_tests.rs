//! Segments filled with zeros ahead of their records (fsync mode): what a crash leaves in
//! them, told apart from damage, and repaired on reopen.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wirewarden_core::{AuditEvent, AuditEventKind, Direction, SessionId};

use crate::format::{
    Frame, FrameRead, SegmentHeader, TORN_WRITE_MAX, ZERO_TAIL_MIN, read_frame, segment_path,
};
use crate::read::read_log;
use crate::testing::transcript_event;
use crate::{
    ChainKey, CheckpointSigner, DamageKind, Durability, FileSink, IoHook, LogReader, Report,
    VerifyKeys, verify_dir,
};

const PAGE: usize = 4096;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn key() -> ChainKey {
    ChainKey::new("fill-key", [7; 32]).unwrap()
}

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed([8; 32])
}

fn keys() -> VerifyKeys {
    VerifyKeys {
        chain: key(),
        checkpoint: signer().public(),
    }
}

/// A transcript event whose text is `len` printable bytes.
fn sized_event(session: SessionId, n: u64, len: usize) -> AuditEvent {
    let mut text = format!("{n}:");
    while text.len() < len {
        text.push((b'a' + (text.len() % 26) as u8) as char);
    }
    transcript_event(session, n, text)
}

/// A log as a power cut leaves it: `n` records with `len` bytes of text each, appended in
/// fsync mode (each on disk when its append returned) and copied while the sink is still
/// open, so its one segment still ends in the zeros its writer filled ahead.
fn crash_image(n: u64, len: usize) -> tempfile::TempDir {
    let live = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let sink = FileSink::builder(live.path(), key(), signer())
            .open()
            .unwrap();
        let s = SessionId::new();
        for i in 0..n {
            assert_eq!(sink.append_event(&sized_event(s, i, len)).await.unwrap(), i);
        }
        for entry in fs::read_dir(live.path()).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), image.path().join(entry.file_name())).unwrap();
        }
        sink.close().await.unwrap();
    });
    image
}

/// The segment's bytes and the (offset, length) of each record, up to the zeros.
fn records(path: &Path) -> (Vec<u8>, Vec<(usize, usize)>) {
    let data = fs::read(path).unwrap();
    let (_, mut off) = SegmentHeader::decode(&data).unwrap();
    let mut out = Vec::new();
    while let FrameRead::Complete(Frame::Event(_), n) = read_frame(&data[off..], 1 << 24) {
        out.push((off, n));
        off += n;
    }
    (data, out)
}

fn seg0(dir: &tempfile::TempDir) -> PathBuf {
    segment_path(dir.path(), 0)
}

/// Appends `n` numbered records to the log in `dir` with a fresh sink and closes it.
fn append_more(dir: &Path, n: u64, durability: Durability) {
    rt().block_on(async {
        let sink = FileSink::builder(dir, key(), signer())
            .durability(durability)
            .open()
            .unwrap();
        let s = SessionId::new();
        for i in 0..n {
            sink.append_event(&sized_event(s, i, 40)).await.unwrap();
        }
        sink.close().await.unwrap();
    });
}

fn ok(r: &Report) -> &Report {
    assert!(r.is_ok(), "{r}");
    r
}

/// `data` with `range` set to zeros, written back to `path`.
fn zero(path: &Path, data: &[u8], range: std::ops::Range<usize>) {
    let mut d = data.to_vec();
    d[range].fill(0);
    fs::write(path, d).unwrap();
}

/// Checks that the log verifies with a torn tail at `seq` (offset `offset`), reads back
/// `seq` records, and that a reopened sink cuts the tail and goes on.
fn assert_torn_then_repaired(dir: &tempfile::TempDir, seq: u64, offset: usize) {
    let r = verify_dir(dir.path(), &keys()).unwrap();
    ok(&r);
    let t = r
        .torn_tail
        .as_ref()
        .unwrap_or_else(|| panic!("no torn tail: {r}"));
    assert_eq!((t.seq, t.segment, t.offset), (seq, 0, offset as u64), "{r}");
    assert_eq!(r.events, seq);
    assert_eq!(read_log(dir.path(), &keys()).unwrap().len() as u64, seq);
    append_more(dir.path(), 3, Durability::Fsync);
    let r = verify_dir(dir.path(), &keys()).unwrap();
    ok(&r);
    assert!(r.torn_tail.is_none(), "{r}");
    assert_eq!(r.events, seq + 3);
}

#[test]
fn an_open_segment_ends_in_zeros_and_verifies() {
    let dir = crash_image(50, 100);
    let (data, recs) = records(&seg0(&dir));
    let end = recs.last().map(|(o, n)| o + n).unwrap();
    assert!(data.len() - end >= ZERO_TAIL_MIN as usize, "{}", data.len());
    assert!(data[end..].iter().all(|b| *b == 0));
    let r = verify_dir(dir.path(), &keys()).unwrap();
    assert_eq!(ok(&r).events, 50);
    assert!(r.torn_tail.is_none(), "{r}");
    assert_eq!(read_log(dir.path(), &keys()).unwrap().len(), 50);
    // A reader that follows the log stops at the zeros, and picks up what comes later.
    let mut reader = LogReader::new(dir.path(), keys());
    assert_eq!(reader.poll().unwrap().len(), 50);
    assert!(reader.poll().unwrap().is_empty());

    // Reopened in fsync mode, the sink writes over the zeros; closed, the log ends at its
    // last record.
    append_more(dir.path(), 3, Durability::Fsync);
    assert_eq!(reader.poll().unwrap().len(), 3);
    let (data, recs) = records(&seg0(&dir));
    assert_eq!(recs.len(), 53);
    assert_eq!(recs.last().map(|(o, n)| o + n), Some(data.len()));
    assert_eq!(ok(&verify_dir(dir.path(), &keys()).unwrap()).events, 53);
}

#[test]
fn a_buffered_sink_cuts_the_zeros_before_it_appends() {
    let dir = crash_image(20, 100);
    let (data, recs) = records(&seg0(&dir));
    let end = recs.last().map(|(o, n)| o + n).unwrap();
    assert!(data.len() > end);
    rt().block_on(async {
        let sink = FileSink::builder(dir.path(), key(), signer())
            .durability(Durability::Buffered)
            .open()
            .unwrap();
        assert_eq!(fs::metadata(seg0(&dir)).unwrap().len(), end as u64);
        sink.close().await.unwrap();
    });
    append_more(dir.path(), 2, Durability::Buffered);
    let (data, recs) = records(&seg0(&dir));
    assert_eq!(recs.len(), 22);
    assert_eq!(recs.last().map(|(o, n)| o + n), Some(data.len()));
}

/// A crash image of `n` records with `len` bytes of text each, whose bytes `lost` (chosen
/// from the records' offsets and lengths) went back to zeros: pages a write never got onto
/// the disk, or a disk lost later. Returns the image and the records' offsets and lengths.
fn with_lost_bytes(
    n: u64,
    len: usize,
    lost: impl Fn(&[(usize, usize)]) -> std::ops::Range<usize>,
) -> (tempfile::TempDir, Vec<(usize, usize)>) {
    let dir = crash_image(n, len);
    let path = seg0(&dir);
    let (data, recs) = records(&path);
    zero(&path, &data, lost(&recs));
    (dir, recs)
}

/// The first page boundary after `offset`.
fn next_page(offset: usize) -> usize {
    (offset / PAGE + 1) * PAGE
}

/// A whole page inside the record at `offset`, `len` bytes long.
fn page_inside(offset: usize, len: usize) -> std::ops::Range<usize> {
    let page = next_page(offset);
    assert!(page + PAGE <= offset + len, "no whole page in the record");
    page..page + PAGE
}

/// Checks that the log in `dir` is damaged, `modified` at `seq`, and is not reopened.
fn assert_modified(dir: &tempfile::TempDir, seq: u64) {
    let r = verify_dir(dir.path(), &keys()).unwrap();
    let d = r
        .damage
        .as_ref()
        .unwrap_or_else(|| panic!("no damage: {r}"));
    assert_eq!((d.kind, d.seq), (DamageKind::Modified, seq), "{d}");
    assert!(r.torn_tail.is_none());
    assert!(
        FileSink::builder(dir.path(), key(), signer())
            .open()
            .is_err(),
        "a damaged log was reopened"
    );
}

#[test]
fn a_last_record_whose_end_never_reached_the_disk_is_a_torn_tail() {
    // Its first page arrived, the rest kept the zeros.
    let (dir, recs) = with_lost_bytes(30, 6000, |recs| {
        let (off, n) = recs[29];
        next_page(off)..off + n
    });
    assert_torn_then_repaired(&dir, 29, recs[29].0);
}

#[test]
fn a_write_whose_first_page_never_reached_the_disk_is_a_torn_tail() {
    // The last two records went out in one write; the page holding the start of the first
    // kept its zeros (from that record on), the pages after it arrived.
    let (dir, recs) = with_lost_bytes(30, 3000, |recs| recs[28].0..next_page(recs[28].0));
    assert_torn_then_repaired(&dir, 28, recs[28].0);
}

#[test]
fn a_page_lost_inside_the_last_write_is_a_torn_tail_even_with_whole_records_after_it() {
    // A whole page inside record 27 kept its zeros; records 28 and 29 arrived.
    let (dir, recs) = with_lost_bytes(30, 9000, |recs| page_inside(recs[27].0, recs[27].1));
    assert_torn_then_repaired(&dir, 27, recs[27].0);
}

#[test]
fn a_record_longer_than_one_write_whose_first_page_was_lost_is_a_torn_tail() {
    let (dir, recs) = with_lost_bytes(2, TORN_WRITE_MAX as usize + 20_000, |recs| {
        recs[1].0..next_page(recs[1].0)
    });
    assert!(recs[1].1 as u64 > TORN_WRITE_MAX);
    assert_torn_then_repaired(&dir, 1, recs[1].0);
}

#[test]
fn a_record_changed_in_place_before_the_zeros_is_damage_not_a_torn_tail() {
    for seq in [29, 28] {
        let dir = crash_image(30, 3000);
        let path = seg0(&dir);
        let (mut data, recs) = records(&path);
        let (off, n) = recs[seq];
        data[off + n / 2] ^= 0x20;
        fs::write(&path, &data).unwrap();
        assert!(LogReader::new(dir.path(), keys()).poll().is_err());
        assert_modified(&dir, seq as u64);
    }
}

/// More than one write's worth of records after the lost bytes: those records were on disk
/// before the lost page could have been written, so the page was lost later.
const MORE_THAN_ONE_WRITE: u64 = TORN_WRITE_MAX / 9000 + 10;

#[test]
fn a_lost_page_further_back_than_one_write_is_damage() {
    let (dir, _) = with_lost_bytes(MORE_THAN_ONE_WRITE, 9000, |recs| {
        page_inside(recs[2].0, recs[2].1)
    });
    assert_modified(&dir, 2);
}

#[test]
fn a_lost_first_page_with_more_than_one_write_of_records_after_it_is_damage() {
    let (dir, _) = with_lost_bytes(MORE_THAN_ONE_WRITE, 9000, |recs| {
        recs[2].0..next_page(recs[2].0)
    });
    assert_modified(&dir, 2);
}

/// Records the length of every write of records (not zeros) to a segment.
#[derive(Debug, Default)]
struct WriteSizes(Mutex<Vec<usize>>);

impl IoHook for WriteSizes {
    fn write(&self, file: &mut fs::File, path: &Path, buf: &[u8]) -> io::Result<()> {
        if path.extension().is_some_and(|e| e == "wwseg") && buf.iter().any(|b| *b != 0) {
            self.0.lock().unwrap().push(buf.len());
        }
        io::Write::write_all(file, buf)
    }
}

#[test]
fn a_batch_larger_than_one_write_goes_out_in_pieces_of_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = Arc::new(WriteSizes::default());
    let s = SessionId::new();
    let events: Vec<_> = (0..300).map(|i| sized_event(s, i, 9000)).collect();
    rt().block_on(async {
        let sink = FileSink::builder(dir.path(), key(), signer())
            .io_hook(sizes.clone())
            .open()
            .unwrap();
        assert_eq!(sink.append_events(&events).await.unwrap().len(), 300);
        sink.close().await.unwrap();
    });
    let (data, recs) = records(&seg0(&dir));
    assert_eq!(recs.len(), 300);
    let sizes = sizes.0.lock().unwrap().clone();
    // The header, then the records in pieces.
    let pieces = &sizes[1..];
    assert!(pieces.len() >= 3, "{sizes:?}");
    assert!(
        pieces.iter().all(|n| *n as u64 <= TORN_WRITE_MAX),
        "{sizes:?}"
    );
    let written: usize = pieces.iter().sum();
    let (first, _) = recs[0];
    assert_eq!(written, data.len() - first);
    // Each piece ends at a record boundary.
    let mut at = first;
    for n in pieces {
        at += n;
        assert!(
            recs.iter().any(|(o, len)| o + len == at),
            "a piece ends inside a record at {at}"
        );
    }
    assert_eq!(ok(&verify_dir(dir.path(), &keys()).unwrap()).events, 300);
}

#[test]
fn a_single_record_longer_than_one_write_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = Arc::new(WriteSizes::default());
    let len = TORN_WRITE_MAX as usize + 5000;
    rt().block_on(async {
        let sink = FileSink::builder(dir.path(), key(), signer())
            .io_hook(sizes.clone())
            .open()
            .unwrap();
        let s = SessionId::new();
        sink.append_event(&sized_event(s, 0, len)).await.unwrap();
        sink.close().await.unwrap();
    });
    let sizes = sizes.0.lock().unwrap().clone();
    assert!(sizes[1] > len, "{sizes:?}");
    assert_eq!(ok(&verify_dir(dir.path(), &keys()).unwrap()).events, 1);
}

#[test]
fn a_reader_that_stops_at_zeros_inside_a_record_reads_on() {
    // Records holding runs of zero bytes longer than a page, across the reader's chunks.
    let live = tempfile::tempdir().unwrap();
    let s = SessionId::new();
    let event = |n: u64| {
        AuditEvent::new(
            Some(s),
            AuditEventKind::Transcript {
                command_id: None,
                direction: Direction::FromUpstream,
                elapsed_us: n,
                text: format!("{n}{}", "\0".repeat(100_000)),
                truncated: false,
            },
        )
    };
    rt().block_on(async {
        let sink = FileSink::builder(live.path(), key(), signer())
            .open()
            .unwrap();
        let mut reader = LogReader::new(live.path(), keys());
        let mut seen = 0u64;
        let mut stopped_inside = 0;
        for n in 0..12 {
            let appended = event(n);
            sink.append_event(&appended).await.unwrap();
            // A reader may stop at zeros inside the new record; it gets it by the next
            // poll at the latest.
            for _ in 0..2 {
                let got = reader.poll().unwrap();
                if got.is_empty() && seen == n {
                    stopped_inside += 1;
                }
                for e in got {
                    assert_eq!(e.seq, seen);
                    assert_eq!(e.event, appended);
                    seen += 1;
                }
            }
            assert_eq!(seen, n + 1);
        }
        // Records longer than a read, with zeros where a read ends: some polls stopped
        // inside them.
        assert!(stopped_inside > 0);
        sink.close().await.unwrap();
    });
    assert_eq!(ok(&verify_dir(live.path(), &keys()).unwrap()).events, 12);
}
