//! A minimal third-party [`AuditSink`]: every event as one JSON line in a single file, made
//! durable with `fdatasync` before `append` returns.
//!
//! It shows what an implementation outside the workspace has to provide: `Debug + Send +
//! Sync`, `#[async_trait]`, errors as `BoxError`, one total order (here: the order of writes
//! under one lock, which is also the order of the reported positions), and an honest
//! [`Durability`]. `tests/conformance.rs` runs the wirewarden conformance suite against it.
//! It has no hash chain: use `wirewarden_audit::FileSink` where tampering matters.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use wirewarden_audit::{Appended, AuditSink, Durability};
use wirewarden_core::{AuditEvent, BoxError};

#[derive(Debug)]
struct Inner {
    file: File,
    next_seq: u64,
    failed: Option<String>,
}

/// Appends events as JSON lines to one file.
#[derive(Debug, Clone)]
pub struct JsonLinesSink {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

impl JsonLinesSink {
    /// Opens (or creates) `path` for appending.
    ///
    /// # Errors
    /// The I/O error from opening the file.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path,
            inner: Arc::new(Mutex::new(Inner {
                file,
                next_seq: 0,
                failed: None,
            })),
        })
    }

    /// The file written to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every event back in file order.
    ///
    /// # Errors
    /// I/O or JSON errors.
    pub fn read_all(path: impl AsRef<Path>) -> Result<Vec<AuditEvent>, BoxError> {
        std::fs::read_to_string(path)?
            .lines()
            .map(|l| serde_json::from_str(l).map_err(BoxError::from))
            .collect()
    }
}

#[async_trait]
impl AuditSink for JsonLinesSink {
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let inner = Arc::clone(&self.inner);
        // File I/O blocks, so it runs off the async worker threads. The position is taken
        // under the same lock as the write, so positions follow file order.
        tokio::task::spawn_blocking(move || {
            let mut inner = inner.lock().map_err(|_| "sink lock poisoned")?;
            if let Some(reason) = &inner.failed {
                return Err(format!("sink failed earlier: {reason}").into());
            }
            let seq = inner.next_seq;
            if let Err(e) = inner
                .file
                .write_all(&line)
                .and_then(|()| inner.file.sync_data())
            {
                // Fail closed: never claim later events are stored after a lost one.
                inner.failed = Some(e.to_string());
                return Err(BoxError::from(e));
            }
            inner.next_seq = seq + 1;
            Ok(Appended::at(seq))
        })
        .await?
    }

    async fn flush(&self) -> Result<(), BoxError> {
        // Every successful append was synced already.
        Ok(())
    }

    fn durability(&self) -> Durability {
        Durability::Fsync
    }
}
