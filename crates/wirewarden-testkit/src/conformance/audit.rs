//! Conformance suite for `AuditSink` implementations.
//!
//! Call [`audit_sink`] with the sink and a function that reads the sink's trail back in trail
//! order (from the files, the table, whatever the sink writes to). The trail may hold other
//! events too: the suite looks only at the events it appended. It checks the contract written
//! on `wirewarden_audit::AuditSink`:
//!
//! * every kind of event reads back exactly as appended, exactly once;
//! * reported positions (`Appended::seq`) increase in append order and agree with the trail;
//! * an append that returned comes before every append started after it, also with several
//!   concurrent appenders, whose events are never lost, doubled or interleaved out of order;
//! * with `Durability::Fsync`, an event is in the trail as soon as `append` returns, before
//!   any `flush`; with `Durability::Buffered`, after `flush`;
//! * `append_batch` places its events in batch order, one position each, with the same
//!   durability, while single appends run alongside;
//! * `append_batch_unawaited` places its events in batch order before later appends, and
//!   they are in the trail after `flush`.

use std::collections::HashMap;
use std::future::Future;

use wirewarden_audit::testing::{numbered_event, sample_events};
use wirewarden_audit::{AuditSink, Durability};
use wirewarden_core::{AuditEvent, BoxError, EventId, SessionId};

/// Runs the suite. Panics with a description of the first violation.
pub async fn audit_sink<F, Fut>(sink: &dyn AuditSink, read_back: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<AuditEvent>, BoxError>>,
{
    let durable = sink.durability() == Durability::Fsync;
    let mut appended: Vec<AuditEvent> = Vec::new();
    let mut last_seq: Option<u64> = None;

    // 1. Every kind, one after the other.
    for event in sample_events() {
        let a = sink
            .append(&event)
            .await
            .expect("append of a valid event failed");
        if let Some(seq) = a.seq {
            assert!(
                last_seq.is_none_or(|l| seq > l),
                "positions must increase in append order: {seq} after {last_seq:?}"
            );
            last_seq = Some(seq);
        }
        appended.push(event.clone());
        if durable {
            let trail = read_back().await.expect("read back");
            assert!(
                trail.iter().any(|e| e.id == event.id),
                "a sink that reports Durability::Fsync must hold the event when append returns"
            );
        }
    }
    sink.flush().await.expect("flush");
    let trail = read_back().await.expect("read back");
    let ours = only_ours(&trail, &appended);
    assert_eq!(
        ours, appended,
        "the trail must hold every appended event exactly once, unchanged and in append order"
    );

    // 2. Concurrent appenders: four at once, each appending its own numbered events.
    let appender = |n: u64| async move {
        let session = SessionId::new();
        let mut mine = Vec::new();
        for i in 0..25 {
            let e = numbered_event(session, i * 10 + n);
            let a = sink.append(&e).await.expect("concurrent append failed");
            mine.push((e, a.seq));
        }
        mine
    };
    let (a, b, c, d) = tokio::join!(appender(0), appender(1), appender(2), appender(3));
    sink.flush().await.expect("flush after concurrent appends");
    let trail = read_back().await.expect("read back");
    let all: Vec<(AuditEvent, Option<u64>)> = [a, b, c, d].into_iter().flatten().collect();
    let expected: Vec<AuditEvent> = all.iter().map(|(e, _)| e.clone()).collect();
    let mut ours = only_ours(&trail, &expected);
    assert_eq!(
        ours.len(),
        expected.len(),
        "concurrent appends were lost or doubled"
    );
    let position: HashMap<EventId, usize> =
        ours.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
    for session_events in expected.chunks(25) {
        let positions: Vec<usize> = session_events.iter().map(|e| position[&e.id]).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "one appender's events are out of its append order in the trail"
        );
    }
    let seqs: Vec<(usize, u64)> = all
        .iter()
        .filter_map(|(e, s)| s.map(|s| (position[&e.id], s)))
        .collect();
    if seqs.len() == all.len() {
        let mut by_trail = seqs.clone();
        by_trail.sort_unstable();
        assert!(
            by_trail.windows(2).all(|w| w[0].1 < w[1].1),
            "reported positions disagree with the trail order"
        );
    }
    ours.sort_by_key(|e| e.id);
    let mut sorted = expected.clone();
    sorted.sort_by_key(|e| e.id);
    assert_eq!(ours, sorted, "concurrent events changed on the way");

    // 3. Causality: an append started after another returned comes after it.
    let first = numbered_event(SessionId::new(), 1);
    let second = numbered_event(SessionId::new(), 2);
    sink.append(&second).await.expect("append");
    sink.append(&first).await.expect("append");
    sink.flush().await.expect("flush");
    let trail = read_back().await.expect("read back");
    let order = ours_ids(&trail, &[second.id, first.id]);
    assert_eq!(
        order,
        vec![second.id, first.id],
        "the trail must follow append order, not event ids or times"
    );

    // 4. Batches: in order, one position each, durable on return in fsync mode, and in
    //    order also while single appends run at the same time.
    let session = SessionId::new();
    let batch: Vec<AuditEvent> = (0..8).map(|i| numbered_event(session, i)).collect();
    let single = numbered_event(SessionId::new(), 0);
    let (placed, alone) = tokio::join!(sink.append_batch(&batch), sink.append(&single));
    let placed = placed.expect("append_batch of valid events failed");
    alone.expect("append alongside a batch failed");
    assert_eq!(
        placed.len(),
        batch.len(),
        "append_batch must report one position per event"
    );
    let seqs: Vec<u64> = placed.iter().filter_map(|a| a.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "a batch's positions must increase in batch order: {seqs:?}"
    );
    if durable {
        let trail = read_back().await.expect("read back");
        assert_eq!(
            only_ours(&trail, &batch),
            batch,
            "a sink that reports Durability::Fsync must hold a batch when append_batch returns"
        );
    }
    sink.flush().await.expect("flush");
    let trail = read_back().await.expect("read back");
    assert_eq!(
        only_ours(&trail, &batch),
        batch,
        "the trail must hold a batch's events exactly once and in batch order"
    );
    assert!(
        trail.iter().any(|e| e.id == single.id),
        "an append made during a batch was lost"
    );
    let empty = sink.append_batch(&[]).await.expect("an empty batch");
    assert!(empty.is_empty(), "an empty batch places nothing");

    // 5. Unawaited batches: in order, one position each, before what is appended after them,
    //    and in the trail after `flush`.
    let session = SessionId::new();
    let unawaited: Vec<AuditEvent> = (0..5).map(|i| numbered_event(session, i)).collect();
    let placed = sink
        .append_batch_unawaited(&unawaited)
        .await
        .expect("append_batch_unawaited of valid events failed");
    assert_eq!(
        placed.len(),
        unawaited.len(),
        "append_batch_unawaited must report one position per event"
    );
    let seqs: Vec<u64> = placed.iter().filter_map(|a| a.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "an unawaited batch's positions must increase in batch order: {seqs:?}"
    );
    let after = numbered_event(session, 5);
    sink.append(&after)
        .await
        .expect("append after an unawaited batch failed");
    sink.flush().await.expect("flush");
    let trail = read_back().await.expect("read back");
    let mut want = unawaited.clone();
    want.push(after);
    assert_eq!(
        only_ours(&trail, &want),
        want,
        "the trail must hold an unawaited batch once, in order, before later appends"
    );
}

fn only_ours(trail: &[AuditEvent], appended: &[AuditEvent]) -> Vec<AuditEvent> {
    let ids: std::collections::HashSet<EventId> = appended.iter().map(|e| e.id).collect();
    trail
        .iter()
        .filter(|e| ids.contains(&e.id))
        .cloned()
        .collect()
}

fn ours_ids(trail: &[AuditEvent], ids: &[EventId]) -> Vec<EventId> {
    trail
        .iter()
        .filter(|e| ids.contains(&e.id))
        .map(|e| e.id)
        .collect()
}
