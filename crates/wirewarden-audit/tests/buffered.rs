//! Buffered mode lets records collect before it writes them: one `write` for many appends,
//! at once when a batch fills or on `flush`, and nothing lost or reordered either way.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wirewarden_audit::testing::numbered_event;
use wirewarden_audit::{
    AuditSink, ChainKey, CheckpointSigner, Durability, FileSink, IoHook, VerifyKeys,
    WRITE_BATCH_BYTES, read_log,
};
use wirewarden_core::SessionId;

/// Counts the writes to segment files (the checkpoint file is `checkpoints.wwck`).
#[derive(Debug, Default)]
struct CountWrites {
    /// Writes of records, headers and seals to segments (not of zeros filled ahead).
    segment_writes: AtomicUsize,
}

impl IoHook for CountWrites {
    fn write(&self, file: &mut File, path: &Path, buf: &[u8]) -> io::Result<()> {
        if path.extension().is_some_and(|e| e == "wwseg") && buf.iter().any(|b| *b != 0) {
            self.segment_writes.fetch_add(1, Ordering::SeqCst);
        }
        io::Write::write_all(file, buf)
    }
}

fn keys() -> (ChainKey, CheckpointSigner) {
    (
        ChainKey::new("k", [5; 32]).unwrap(),
        CheckpointSigner::from_seed([6; 32]),
    )
}

/// A sink in `dir` whose write delay outlasts any test: only a full batch, an awaited
/// record, a flush or close writes what is pending.
fn sink(dir: &Path, durability: Durability, io: &Arc<CountWrites>) -> FileSink {
    let (key, signer) = keys();
    FileSink::builder(dir, key, signer)
        .durability(durability)
        .write_delay(Duration::from_secs(3600))
        .io_hook(io.clone())
        .open()
        .unwrap()
}

fn verify_keys() -> VerifyKeys {
    let (chain, signer) = keys();
    VerifyKeys {
        chain,
        checkpoint: signer.public(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_appends_become_one_write_and_flush_writes_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(CountWrites::default());
    let sink = sink(dir.path(), Durability::Buffered, &io);
    let before = io.segment_writes.load(Ordering::SeqCst);
    let s = SessionId::new();
    for i in 0..200 {
        sink.append_event(&numbered_event(s, i)).await.unwrap();
    }
    assert!(
        sink.pending_bytes() > 0,
        "records were written before the delay"
    );
    assert_eq!(io.segment_writes.load(Ordering::SeqCst), before);
    AuditSink::flush(&sink).await.unwrap();
    assert_eq!(sink.pending_bytes(), 0);
    assert_eq!(
        io.segment_writes.load(Ordering::SeqCst),
        before + 1,
        "200 appends, one write"
    );
    sink.close().await.unwrap();
    let events = read_log(dir.path(), &verify_keys()).unwrap();
    let got: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
    let want: Vec<_> = (0..200).map(|i| numbered_event(s, i)).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.kind, w.kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_is_written_without_waiting_for_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(CountWrites::default());
    let sink = sink(dir.path(), Durability::Buffered, &io);
    let before = io.segment_writes.load(Ordering::SeqCst);
    let s = SessionId::new();
    let mut i = 0;
    while sink.pending_bytes() < WRITE_BATCH_BYTES
        && io.segment_writes.load(Ordering::SeqCst) == before
    {
        sink.append_event(&numbered_event(s, i)).await.unwrap();
        i += 1;
    }
    // The append that filled the batch woke the writer: it writes with no flush, well
    // before the hour-long delay (the bound here only stops a broken build from hanging).
    let wrote = tokio::time::timeout(Duration::from_secs(60), async {
        while io.segment_writes.load(Ordering::SeqCst) == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(wrote.is_ok(), "a full batch was not written");
    sink.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_fsync_mode_unawaited_records_wait_for_the_next_awaited_one() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(CountWrites::default());
    let sink = sink(dir.path(), Durability::Fsync, &io);
    let before = io.segment_writes.load(Ordering::SeqCst);
    let s = SessionId::new();
    let outcomes: Vec<_> = (0..10).map(|i| numbered_event(s, i)).collect();
    let seqs = sink.append_events_unawaited(&outcomes).await.unwrap();
    assert_eq!(seqs.len(), 10);
    // Nobody waits for these: they are not written on their own.
    assert!(sink.pending_bytes() > 0);
    assert_eq!(io.segment_writes.load(Ordering::SeqCst), before);
    // An awaited append is durable on return, and the trail is written in order: the
    // unawaited records before it are on disk with it, in one write.
    let intent = numbered_event(s, 10);
    sink.append_event(&intent).await.unwrap();
    assert_eq!(io.segment_writes.load(Ordering::SeqCst), before + 1);
    // Read while the sink is open: what is there is what reached the disk.
    let on_disk = read_log(dir.path(), &verify_keys()).unwrap();
    assert_eq!(on_disk.len(), 11);
    assert_eq!(on_disk[10].event.kind, intent.kind);
    sink.close().await.unwrap();
}
