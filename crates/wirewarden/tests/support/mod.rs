//! Helpers shared by the end-to-end tests.

// Each test binary uses some of them.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wirewarden::audit::{
    Appended, AuditSink, ChainKey, CheckpointSigner, Durability, FileSink, VerifyKeys, read_log,
    verify_dir,
};
use wirewarden::core::{AuditEvent, AuditEventKind, BoxError, Timestamp};
use wirewarden::review::{Review, Reviews};

/// A sink that refuses every intent (`CommandDecided`) and records everything else: the
/// pipeline must refuse the commands whose intent it could not record.
#[derive(Debug)]
pub(crate) struct RefuseIntents(pub(crate) Arc<dyn AuditSink>);

#[async_trait::async_trait]
impl AuditSink for RefuseIntents {
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        if matches!(event.kind, AuditEventKind::CommandDecided { .. }) {
            return Err("disk full".into());
        }
        self.0.append(event).await
    }

    async fn flush(&self) -> Result<(), BoxError> {
        self.0.flush().await
    }

    fn durability(&self) -> Durability {
        Durability::Fsync
    }
}

/// The first pending review, once one has been requested (panics after 30 s).
pub(crate) async fn pending_review(reviews: &Reviews) -> Review {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let p = reviews.store().pending(Timestamp::now()).await.unwrap();
            if let Some(r) = p.into_iter().next() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a review was requested")
}

/// A fresh hash-chained audit trail in durable (`fsync`) mode: its directory, the keys that
/// verify it, and the sink.
pub(crate) fn audit_trail() -> (tempfile::TempDir, VerifyKeys, FileSink) {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainKey::generate("k1").unwrap();
    let signer = CheckpointSigner::generate().unwrap();
    let keys = VerifyKeys {
        chain: chain.clone(),
        checkpoint: signer.public(),
    };
    let sink = FileSink::builder(dir.path(), chain, signer)
        .durability(Durability::Fsync)
        .open()
        .unwrap();
    (dir, keys, sink)
}

/// A client's output as text.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The kinds of the events in the trail in `dir`, in trail order.
pub(crate) fn events(dir: &Path, keys: &VerifyKeys) -> Vec<AuditEventKind> {
    read_log(dir, keys)
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect()
}

/// Panics unless the trail in `dir` verifies with `keys`.
pub(crate) fn assert_verifies(dir: &Path, keys: &VerifyKeys) {
    let report = verify_dir(dir, keys).unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// Each decided command's text and the session's application when it was decided, walking
/// the trail in order: `SessionStarted` sets the application, `ApplicationChanged` changes it.
pub(crate) fn applications_at_decision(
    kinds: &[AuditEventKind],
) -> Vec<(wirewarden::core::Command, Option<String>)> {
    let mut current = None;
    let mut out = Vec::new();
    for k in kinds {
        match k {
            AuditEventKind::SessionStarted { application, .. }
            | AuditEventKind::ApplicationChanged { application } => {
                current.clone_from(application);
            }
            AuditEventKind::CommandDecided { command, .. } => {
                out.push((command.clone(), current.clone()));
            }
            _ => {}
        }
    }
    out
}
