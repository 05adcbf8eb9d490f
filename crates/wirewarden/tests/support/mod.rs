//! Helpers shared by the end-to-end tests.

use std::sync::Arc;

use wirewarden::audit::{Appended, AuditSink, Durability};
use wirewarden::core::{AuditEvent, AuditEventKind, BoxError};

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
