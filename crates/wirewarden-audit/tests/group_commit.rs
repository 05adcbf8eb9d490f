//! Group commit: appends that arrive while a `fdatasync` is running share the next one, and
//! each returns only after the sync that covers its record.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use wirewarden_audit::testing::numbered_event;
use wirewarden_audit::{ChainKey, CheckpointSigner, FileSink, IoHook};
use wirewarden_core::SessionId;

/// Counts segment syncs once armed, and holds the first one until released.
#[derive(Debug, Default)]
struct Gate {
    armed: AtomicBool,
    syncs: AtomicUsize,
    held: AtomicBool,
    open: Mutex<bool>,
    cv: Condvar,
}

impl IoHook for Gate {
    fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        let segment = path.extension().is_some_and(|e| e == "wwseg");
        if self.armed.load(Ordering::SeqCst) && segment {
            let n = self.syncs.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                self.held.store(true, Ordering::SeqCst);
                let mut open = self.open.lock().unwrap();
                while !*open {
                    open = self.cv.wait(open).unwrap();
                }
            }
        }
        file.sync_data()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_waiting_on_a_sync_share_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let sink = Arc::new(
        FileSink::builder(
            dir.path(),
            ChainKey::new("k", [1; 32]).unwrap(),
            CheckpointSigner::from_seed([2; 32]),
        )
        .io_hook(gate.clone())
        .open()
        .unwrap(),
    );
    let session = SessionId::new();
    // A first record, so that the writer has filled the segment with zeros ahead (a sync of
    // its own) before the gate counts.
    assert_eq!(
        sink.append_event(&numbered_event(session, 0))
            .await
            .unwrap(),
        0
    );
    gate.armed.store(true, Ordering::SeqCst);
    let first = {
        let sink = Arc::clone(&sink);
        tokio::spawn(async move { sink.append_event(&numbered_event(session, 0)).await })
    };
    while !gate.held.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    // The first record's sync is in progress; 15 more appends arrive meanwhile.
    let rest: Vec<_> = (1..16)
        .map(|i| {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move { sink.append_event(&numbered_event(session, i)).await })
        })
        .collect();
    let one_frame = {
        let e = wirewarden_audit::encode_event(&numbered_event(session, 1)).unwrap();
        e.len()
    };
    // A frame is the event plus 97 bytes of framing; events 10..15 are one byte longer.
    while sink.pending_bytes() < 15 * (one_frame + 97) {
        tokio::task::yield_now().await;
    }
    assert!(
        !first.is_finished(),
        "append returned before its sync finished"
    );
    *gate.open.lock().unwrap() = true;
    gate.cv.notify_all();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    let mut seqs = Vec::new();
    for t in rest {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..17).collect::<Vec<_>>());
    // One sync for the first record, one shared by the other fifteen.
    assert_eq!(gate.syncs.load(Ordering::SeqCst), 2);
}
