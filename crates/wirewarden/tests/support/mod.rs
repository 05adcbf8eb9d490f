//! Helpers shared by the end-to-end tests.

use std::sync::Arc;
use std::time::Duration;

use wirewarden::audit::{Appended, AuditSink, Durability};
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
