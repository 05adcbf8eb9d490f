//! Every sink passes the `AuditSink` conformance suite; the webhook sink retries against a
//! real HTTP server on loopback and de-duplicates by event id; the PostgreSQL sink shares
//! one trail between gateways on a real PostgreSQL.
#![cfg(all(feature = "webhook", feature = "postgres"))]

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use wirewarden_audit::testing::{numbered_event, sample_events};
use wirewarden_audit::{
    AuditSink, ChainKey, CheckpointSigner, Durability, ExportFormat, FileSink, PostgresSink,
    VerifyKeys, WebhookConfig, WebhookSink, WriterSink, read_log,
};
use wirewarden_core::{AuditEvent, BoxError, EventId, SessionId};
use wirewarden_testkit::conformance::audit::audit_sink;

async fn file_sink(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let key = ChainKey::new("k", [3; 32]).unwrap();
    let signer = CheckpointSigner::from_seed([4; 32]);
    let sink = FileSink::builder(dir.path(), key.clone(), signer.clone())
        .durability(durability)
        .segment_max_bytes(4_000)
        .open()
        .unwrap();
    let keys = VerifyKeys {
        chain: key,
        checkpoint: signer.public(),
    };
    let path = dir.path().to_owned();
    audit_sink(&sink, || {
        let (path, keys) = (path.clone(), keys.clone());
        async move {
            Ok(read_log(&path, &keys)?
                .into_iter()
                .map(|e| e.event)
                .collect())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_fsync_conforms() {
    file_sink(Durability::Fsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_buffered_conforms() {
    file_sink(Durability::Buffered).await;
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn writer_sink_conforms() {
    let buf = Shared::default();
    let sink = WriterSink::new(buf.clone(), ExportFormat::Jsonl);
    audit_sink(&sink, || {
        let buf = buf.clone();
        async move {
            let text = String::from_utf8(buf.0.lock().unwrap().clone())?;
            text.lines()
                .map(|l| serde_json::from_str(l).map_err(BoxError::from))
                .collect()
        }
    })
    .await;
}

// === Webhook ===

#[derive(Default)]
struct Collector {
    requests: AtomicUsize,
    /// Requests (1-based) answered with 503 after the events were stored.
    fail: Vec<usize>,
    received: Mutex<Vec<AuditEvent>>,
}

impl Collector {
    fn unique(&self) -> Vec<AuditEvent> {
        let mut seen = HashSet::new();
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|e| seen.insert(e.id))
            .cloned()
            .collect()
    }
}

async fn serve(collector: Arc<Collector>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let collector = Arc::clone(&collector);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let collector = Arc::clone(&collector);
                    async move {
                        let n = collector.requests.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let events: Vec<AuditEvent> = serde_json::from_slice(&body).unwrap();
                        collector.received.lock().unwrap().extend(events);
                        let status = if collector.fail.contains(&n) {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/ingest")
}

fn webhook_config(url: String) -> WebhookConfig {
    WebhookConfig::new(url)
        .batch_max(16)
        .linger(Duration::from_millis(5))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .max_attempts(5)
        .request_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn webhook_sink_conforms() {
    let collector = Arc::new(Collector::default());
    let url = serve(Arc::clone(&collector)).await;
    let sink = WebhookSink::new(webhook_config(url)).unwrap();
    audit_sink(&sink, || {
        let c = Arc::clone(&collector);
        async move { Ok(c.unique()) }
    })
    .await;
}

#[tokio::test]
async fn webhook_retries_and_delivers_at_least_once_with_ids() {
    let collector = Arc::new(Collector {
        fail: vec![1, 2, 4],
        ..Collector::default()
    });
    let url = serve(Arc::clone(&collector)).await;
    let sink = WebhookSink::new(webhook_config(url)).unwrap();
    let session = SessionId::new();
    let events: Vec<AuditEvent> = (0..50).map(|i| numbered_event(session, i)).collect();
    for e in &events {
        sink.append(e).await.unwrap();
    }
    sink.flush().await.unwrap();
    // Failed requests were retried: the collector saw duplicates, and after de-duplication
    // by id it holds every event once, in order.
    let received = collector.received.lock().unwrap().len();
    assert!(received > events.len(), "{received}");
    assert_eq!(collector.unique(), events);
    assert!(collector.requests.load(Ordering::SeqCst) >= 4 + 50 / 16);
}

#[tokio::test]
async fn webhook_gives_up_and_fails_closed() {
    let collector = Arc::new(Collector {
        fail: (1..100).collect(),
        ..Collector::default()
    });
    let url = serve(Arc::clone(&collector)).await;
    let sink = WebhookSink::new(webhook_config(url).max_attempts(3)).unwrap();
    let e = numbered_event(SessionId::new(), 0);
    sink.append(&e).await.unwrap();
    let err = sink.flush().await.unwrap_err();
    assert!(
        err.to_string().contains("gave up after 3 attempts"),
        "{err}"
    );
    assert_eq!(collector.requests.load(Ordering::SeqCst), 3);
    assert!(sink.append(&e).await.is_err());
    // Nothing listens here: refused connections are retried, then reported.
    let dead =
        WebhookSink::new(webhook_config("http://127.0.0.1:1/x".into()).max_attempts(2)).unwrap();
    dead.append(&e).await.unwrap();
    assert!(dead.flush().await.is_err());
    assert!(WebhookSink::new(WebhookConfig::new("https://siem.example/x")).is_err());
}

// === PostgreSQL ===

#[test]
fn postgres_sink_shared_by_two_gateways() {
    let pg = wirewarden_testkit::Postgres::builder()
        .database("audit")
        .start()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = PostgresSink::connect(&pg.url(), "gw-a").await.unwrap();
        let b = PostgresSink::connect(&pg.url(), "gw-b").await.unwrap();
        let reader = PostgresSink::connect(&pg.url(), "reader").await.unwrap();
        let read = || async {
            Ok::<_, BoxError>(
                reader
                    .read_all()
                    .await?
                    .into_iter()
                    .map(|(_, _, e)| e)
                    .collect(),
            )
        };
        audit_sink(&a, read).await;
        audit_sink(&b, read).await;

        // Both gateways at once: one trail, each gateway's events in its own order.
        let (ids_a, ids_b) = tokio::join!(append_30(&a), append_30(&b));
        let trail = reader.read_all().await.unwrap();
        for (ids, gw) in [(ids_a, "gw-a"), (ids_b, "gw-b")] {
            let mine: Vec<EventId> = trail
                .iter()
                .filter(|(_, g, e)| g == gw && ids.contains(&e.id))
                .map(|(_, _, e)| e.id)
                .collect();
            assert_eq!(mine, ids);
        }
        // A re-delivered event is stored once and keeps its position.
        let e = sample_events().remove(0);
        let first = a.append(&e).await.unwrap().seq;
        let again = b.append(&e).await.unwrap().seq;
        assert_eq!(first, again);
        let count = reader
            .read_all()
            .await
            .unwrap()
            .iter()
            .filter(|(_, _, x)| x.id == e.id)
            .count();
        assert_eq!(count, 1);
        assert_eq!(a.durability(), Durability::Fsync);
    });
    let n = pg
        .psql("SELECT count(DISTINCT gateway) FROM wirewarden_audit")
        .unwrap();
    assert_eq!(n.trim(), "2");
}

async fn append_30(sink: &PostgresSink) -> Vec<EventId> {
    let session = SessionId::new();
    let mut ids = Vec::new();
    for i in 0..30 {
        let e = numbered_event(session, i);
        sink.append(&e).await.unwrap();
        ids.push(e.id);
    }
    ids
}
