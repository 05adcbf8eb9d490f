//! Concurrent appenders on a multi-threaded runtime, appending single events and batches,
//! keep one total order, in both durability modes, and group commit shares syncs between them.

use std::sync::Arc;

use wirewarden_audit::testing::numbered_event;
use wirewarden_audit::{
    ChainKey, CheckpointSigner, Durability, FileSink, VerifyKeys, read_log, verify_dir,
};
use wirewarden_core::{AuditEventKind, SessionId};

async fn run(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let key = ChainKey::new("k", [5; 32]).unwrap();
    let signer = CheckpointSigner::from_seed([6; 32]);
    let sink = Arc::new(
        FileSink::builder(dir.path(), key.clone(), signer.clone())
            .durability(durability)
            .segment_max_bytes(8_000)
            .open()
            .unwrap(),
    );
    // Half the appenders append one event at a time, half in batches of five.
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let session = SessionId::new();
                let mut seqs = Vec::new();
                if t % 2 == 0 {
                    for i in 0..60 {
                        seqs.push(
                            sink.append_event(&numbered_event(session, i))
                                .await
                                .unwrap(),
                        );
                    }
                } else {
                    for b in 0..12 {
                        let batch: Vec<_> = (b * 5..b * 5 + 5)
                            .map(|i| numbered_event(session, i))
                            .collect();
                        seqs.extend(sink.append_events(&batch).await.unwrap());
                    }
                }
                (session, seqs)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    sink.close().await.unwrap();
    let keys = VerifyKeys {
        chain: key,
        checkpoint: signer.public(),
    };
    let report = verify_dir(dir.path(), &keys).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.events, 480);
    let log = read_log(dir.path(), &keys).unwrap();
    // The sequence numbers are exactly 0..480, each once.
    let mut all: Vec<u64> = results.iter().flat_map(|(_, s)| s.clone()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..480).collect::<Vec<_>>());
    for (session, seqs) in &results {
        // Each appender's events are in the order it appended them, at the positions the
        // sink reported.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        for (i, seq) in seqs.iter().enumerate() {
            let entry = &log[*seq as usize];
            assert_eq!(entry.event.session, Some(*session));
            let AuditEventKind::Transcript { elapsed_us, .. } = entry.event.kind else {
                panic!("unexpected event");
            };
            assert_eq!(elapsed_us, i as u64);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_keep_one_total_order_fsync() {
    run(Durability::Fsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_keep_one_total_order_buffered() {
    run(Durability::Buffered).await;
}
