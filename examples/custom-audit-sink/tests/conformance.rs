//! The example sink passes the wirewarden `AuditSink` conformance suite.

use std::sync::Arc;

use custom_audit_sink::JsonLinesSink;
use wirewarden_audit::AuditSink;
use wirewarden_testkit::conformance::audit::audit_sink;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_sink_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // Stored the way the pipeline stores sinks.
    let sink: Arc<dyn AuditSink> = Arc::new(JsonLinesSink::open(&path).unwrap());
    audit_sink(&*sink, || {
        let path = path.clone();
        async move { JsonLinesSink::read_all(&path) }
    })
    .await;
}
