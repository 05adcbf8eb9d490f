#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
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
    /// Opens (or creates) `path` for appending. Positions continue after the events already
    /// in the file, so they stay line numbers across restarts.
    ///
    /// # Errors
    /// The I/O error from opening the file or syncing its directory; `InvalidData` if the
    /// file ends in a partial line (a write cut short by a crash), which appending would
    /// turn into a corrupt record.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_owned();
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let next_seq = complete_lines(&mut file)?;
        // The file's own fdatasync does not make a newly created name durable; syncing the
        // directory does.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
        Ok(Self {
            path,
            inner: Arc::new(Mutex::new(Inner {
                file,
                next_seq,
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

/// The number of lines in `file`, read in fixed-size chunks; an error if the last one is
/// not terminated.
fn complete_lines(file: &mut File) -> std::io::Result<u64> {
    let mut buf = [0u8; 64 * 1024];
    let mut lines = 0u64;
    let mut last = b'\n';
    loop {
        let n = file.read(&mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        last = chunk.last().copied().unwrap_or(last);
    }
    if last == b'\n' {
        Ok(lines)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the audit file ends in a partial line after {lines} complete ones; \
                 remove it before appending"
            ),
        ))
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
