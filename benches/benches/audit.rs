//! Audit appends per second: buffered and durable (fsync with group commit), with one and
//! with many concurrent appenders, and one appender handing over batches. Every iteration
//! is one event of ~120 bytes appended to a hash-chained segment file.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirewarden_audit::testing::numbered_event;
use wirewarden_audit::{ChainKey, CheckpointSigner, Durability, FileSink};
use wirewarden_core::SessionId;

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("audit_append");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for durability in [Durability::Buffered, Durability::Fsync] {
        for appenders in [1u64, 16] {
            let dir = tempfile::tempdir().expect("tempdir");
            let sink = Arc::new(
                FileSink::builder(
                    dir.path(),
                    ChainKey::new("bench", [1; 32]).expect("key"),
                    CheckpointSigner::from_seed([2; 32]),
                )
                .durability(durability)
                .open()
                .expect("sink"),
            );
            let name = format!("{}/{appenders}_appenders", durability.as_str());
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let per = iters.div_ceil(appenders);
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..appenders)
                            .map(|_| {
                                let sink = Arc::clone(&sink);
                                tokio::spawn(async move {
                                    let session = SessionId::new();
                                    for i in 0..per {
                                        let e = numbered_event(session, i);
                                        black_box(sink.append_event(&e).await.expect("append"));
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("appender");
                        }
                        start.elapsed()
                    })
                })
            });
            rt.block_on(sink.close()).expect("close");
        }
        // One appender handing over batches of 16 (a pipeline's intents, a flush's outcomes).
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = FileSink::builder(
            dir.path(),
            ChainKey::new("bench", [1; 32]).expect("key"),
            CheckpointSigner::from_seed([2; 32]),
        )
        .durability(durability)
        .open()
        .expect("sink");
        let session = SessionId::new();
        let batch: Vec<_> = (0..16).map(|i| numbered_event(session, i)).collect();
        g.bench_function(
            format!("{}/1_appender_batches_of_16", durability.as_str()),
            |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters.div_ceil(16) {
                            black_box(sink.append_events(&batch).await.expect("append"));
                        }
                        start.elapsed()
                    })
                })
            },
        );
        rt.block_on(sink.close()).expect("close");
    }
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
