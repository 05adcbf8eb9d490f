//! What the file holds across restarts: positions continue, and a torn last line is refused.

use custom_audit_sink::JsonLinesSink;
use wirewarden_audit::AuditSink;
use wirewarden_audit::testing::sample_events;

#[tokio::test]
async fn positions_continue_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let events = sample_events();
    let (first, rest) = events.split_at(2);

    let sink = JsonLinesSink::open(&path).unwrap();
    for (i, e) in first.iter().enumerate() {
        assert_eq!(sink.append(e).await.unwrap().seq, Some(i as u64));
    }
    drop(sink);

    // A new process opening the same trail: the next position is the next line.
    let sink = JsonLinesSink::open(&path).unwrap();
    for (i, e) in rest.iter().enumerate() {
        assert_eq!(
            sink.append(e).await.unwrap().seq,
            Some((first.len() + i) as u64)
        );
    }
    assert_eq!(JsonLinesSink::read_all(&path).unwrap(), events);
}

#[tokio::test]
async fn a_partial_last_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let events = sample_events();
    let sink = JsonLinesSink::open(&path).unwrap();
    sink.append(&events[0]).await.unwrap();
    drop(sink);

    // A crash in the middle of the next write leaves half a line behind.
    let whole = serde_json::to_vec(&events[1]).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&whole[..whole.len() / 2]);
    std::fs::write(&path, &bytes).unwrap();

    let err = JsonLinesSink::open(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("after 1 complete ones"), "{err}");
}
