//! The writer gives the trail's pages back to the kernel once they are on disk: only ranges
//! already synced, in order, a sealed segment whole, the tail on close; and not at all when
//! told to keep them.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wirewarden_audit::testing::numbered_event;
use wirewarden_audit::{
    ChainKey, CheckpointSigner, DROP_PAGES_BYTES, Durability, FileSink, IoHook, StdIo, VerifyKeys,
    read_log,
};
use wirewarden_core::{AuditEvent, SessionId};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Write(PathBuf, u64),
    Sync(PathBuf),
    Drop(PathBuf, u64, u64),
}

/// Does the real thing and writes down every segment operation, in order.
#[derive(Debug, Default)]
struct Ledger {
    ops: Mutex<Vec<Op>>,
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wwseg")
}

impl Ledger {
    fn note(&self, path: &Path, op: Op) {
        if is_segment(path) {
            self.ops.lock().unwrap().push(op);
        }
    }

    fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

impl IoHook for Ledger {
    fn write(&self, file: &mut File, path: &Path, buf: &[u8]) -> io::Result<()> {
        StdIo.write(file, path, buf)?;
        self.note(path, Op::Write(path.to_owned(), buf.len() as u64));
        Ok(())
    }

    fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        StdIo.sync(file, path)?;
        self.note(path, Op::Sync(path.to_owned()));
        Ok(())
    }

    fn drop_cached(&self, file: &File, path: &Path, offset: u64, len: u64) -> io::Result<()> {
        self.note(path, Op::Drop(path.to_owned(), offset, len));
        StdIo.drop_cached(file, path, offset, len)
    }
}

fn keys() -> (ChainKey, CheckpointSigner) {
    (
        ChainKey::new("k", [7; 32]).unwrap(),
        CheckpointSigner::from_seed([8; 32]),
    )
}

fn sink(
    dir: &Path,
    durability: Durability,
    segment_max: u64,
    drop: bool,
    io: &Arc<Ledger>,
) -> FileSink {
    let (key, signer) = keys();
    FileSink::builder(dir, key, signer)
        .durability(durability)
        .segment_max_bytes(segment_max)
        .drop_written_pages(drop)
        .io_hook(io.clone())
        .open()
        .unwrap()
}

/// Appends about `bytes` of records, a thousand at a time.
async fn fill(sink: &FileSink, bytes: u64) -> Vec<AuditEvent> {
    let s = SessionId::new();
    let mut all = Vec::new();
    let mut n = 0;
    while (all.len() as u64) * 100 < bytes {
        let batch: Vec<_> = (n..n + 1000).map(|i| numbered_event(s, i)).collect();
        n += 1000;
        sink.append_events(&batch).await.unwrap();
        all.extend(batch);
    }
    all
}

/// Replays the ledger: every drop covers only bytes synced before it, per file, and the
/// ranges of one file move forward. Returns, per file, whether it was dropped whole (or
/// to its end) and how many bytes were dropped in chunks.
fn check_drops(ops: &[Op]) -> Vec<(PathBuf, bool, u64)> {
    let mut files: Vec<(PathBuf, u64, u64, u64, bool, u64)> = Vec::new();
    for op in ops {
        let path = match op {
            Op::Write(p, _) | Op::Sync(p) | Op::Drop(p, _, _) => p,
        };
        let i = match files.iter().position(|f| &f.0 == path) {
            Some(i) => i,
            None => {
                files.push((path.clone(), 0, 0, 0, false, 0));
                files.len() - 1
            }
        };
        let (_, written, synced, dropped_to, whole, chunked) = &mut files[i];
        match op {
            Op::Write(_, n) => *written += n,
            Op::Sync(_) => *synced = *written,
            Op::Drop(p, offset, len) => {
                assert!(
                    *offset >= *dropped_to && *offset <= *synced,
                    "{p:?}: drop from {offset}, earlier drops reached {dropped_to}, {synced} synced"
                );
                if *len == 0 {
                    assert_eq!(
                        *synced, *written,
                        "{p:?}: dropped to the end while unsynced"
                    );
                    *whole = true;
                    *dropped_to = *written & !4095;
                } else {
                    assert!(
                        offset + len <= *synced,
                        "{p:?}: dropped {offset}+{len}, only {synced} synced"
                    );
                    *chunked += len;
                    *dropped_to = (offset + len) & !4095;
                }
            }
        }
    }
    files
        .into_iter()
        .map(|(p, _, _, _, whole, chunked)| (p, whole, chunked))
        .collect()
}

fn verify(dir: &Path, want: &[AuditEvent]) {
    let (chain, signer) = keys();
    let keys = VerifyKeys {
        chain,
        checkpoint: signer.public(),
    };
    let got = read_log(dir, &keys).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(want).all(|(g, w)| g.event == *w));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_chunks_are_dropped_while_writing_and_the_tail_on_close() {
    for durability in [Durability::Fsync, Durability::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(Ledger::default());
        let sink = sink(dir.path(), durability, 64 << 20, true, &io);
        let events = fill(&sink, 3 * DROP_PAGES_BYTES + DROP_PAGES_BYTES / 2).await;
        // In buffered mode too, the writer has synced and given back the first megabytes
        // before anyone asked for a sync.
        let before_close = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                let files = check_drops(&io.ops());
                let chunked: u64 = files.iter().map(|f| f.2).sum();
                if chunked >= 2 * DROP_PAGES_BYTES {
                    return chunked;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(before_close.is_ok(), "{durability:?}: {:?}", io.ops());
        sink.close().await.unwrap();
        let files = check_drops(&io.ops());
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].1,
            "{durability:?}: the tail was not dropped on close"
        );
        verify(dir.path(), &events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_segment_is_dropped_whole() {
    // Small segments are sealed before any chunk of them is dropped; segments larger than a
    // chunk are dropped in chunks while written and the rest when sealed, never going back.
    for (segment_max, total, min_files) in [
        (256 << 10, 2 * DROP_PAGES_BYTES, 4),
        (3 * DROP_PAGES_BYTES / 2, 6 * DROP_PAGES_BYTES, 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(Ledger::default());
        let sink = sink(dir.path(), Durability::Buffered, segment_max, true, &io);
        let events = fill(&sink, total).await;
        sink.close().await.unwrap();
        let files = check_drops(&io.ops());
        assert!(files.len() >= min_files, "{segment_max}: {files:?}");
        assert!(files.iter().all(|f| f.1), "{segment_max}: {files:?}");
        if segment_max > DROP_PAGES_BYTES {
            assert!(files.iter().any(|f| f.2 > 0), "{segment_max}: {files:?}");
        }
        verify(dir.path(), &events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_pages_are_left_to_the_kernel_and_buffered_mode_syncs_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(Ledger::default());
    let sink = sink(dir.path(), Durability::Buffered, 64 << 20, false, &io);
    let events = fill(&sink, 3 * DROP_PAGES_BYTES).await;
    wirewarden_audit::AuditSink::flush(&sink).await.unwrap();
    let ops = io.ops();
    // The segment's header at creation, then the flush: nothing in between.
    let syncs = ops.iter().filter(|o| matches!(o, Op::Sync(_))).count();
    assert_eq!(syncs, 2, "{ops:?}");
    sink.close().await.unwrap();
    assert!(!io.ops().iter().any(|o| matches!(o, Op::Drop(..))));
    verify(dir.path(), &events);
}
