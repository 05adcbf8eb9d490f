//! A sink that writes one JSON object per line to standard output (or any writer), for
//! log shippers that tail a process's output.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;
use wirewarden_core::{AuditEvent, BoxError};

use crate::export::{ExportFormat, OcsfExporter};
use crate::sink::{Appended, AuditSink, Durability};

struct Inner<W> {
    out: W,
    exporter: OcsfExporter,
    next_seq: u64,
    failed: Option<String>,
}

/// Writes each event as a line of JSON. Lines are written in append order under one lock;
/// a write error poisons the sink. Stdout is [`Durability::Buffered`]: `flush` flushes the
/// writer.
pub struct WriterSink<W> {
    format: ExportFormat,
    inner: Mutex<Inner<W>>,
}

/// A [`WriterSink`] on the process's standard output.
pub type StdoutSink = WriterSink<std::io::Stdout>;

impl<W> fmt::Debug for WriterSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterSink")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl StdoutSink {
    /// A sink on standard output.
    #[must_use]
    pub fn stdout(format: ExportFormat) -> Self {
        Self::new(std::io::stdout(), format)
    }
}

impl<W: Write + Send> WriterSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W, format: ExportFormat) -> Self {
        Self {
            format,
            inner: Mutex::new(Inner {
                out,
                exporter: OcsfExporter::new(),
                next_seq: 0,
                failed: None,
            }),
        }
    }

    /// Gives back the writer.
    pub fn into_inner(self) -> W {
        self.inner
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .out
    }

    fn write_event(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(reason) = &inner.failed {
            return Err(crate::Error::Poisoned {
                reason: reason.clone(),
            }
            .into());
        }
        let inner = &mut *inner;
        let seq = inner.next_seq;
        if let Some(value) = self.format.render(&mut inner.exporter, event)? {
            let mut line = serde_json::to_vec(&value)?;
            line.push(b'\n');
            if let Err(e) = inner.out.write_all(&line) {
                inner.failed = Some(e.to_string());
                return Err(e.into());
            }
        }
        inner.next_seq = seq.saturating_add(1);
        Ok(Appended::at(seq))
    }
}

#[async_trait]
impl<W: Write + Send> AuditSink for WriterSink<W> {
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        self.write_event(event)
    }

    async fn flush(&self) -> Result<(), BoxError> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(reason) = &inner.failed {
            return Err(crate::Error::Poisoned {
                reason: reason.clone(),
            }
            .into());
        }
        inner.out.flush()?;
        Ok(())
    }

    fn durability(&self) -> Durability {
        Durability::Buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_events;

    #[tokio::test]
    async fn lines_in_append_order() {
        let sink = WriterSink::new(Vec::new(), ExportFormat::Jsonl);
        let events = sample_events();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(sink.append(e).await.unwrap().seq, Some(i as u64));
        }
        sink.flush().await.unwrap();
        let out = String::from_utf8(sink.into_inner()).unwrap();
        let back: Vec<AuditEvent> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, events);
    }

    #[derive(Debug)]
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("broken pipe"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_write_error_poisons() {
        let sink = WriterSink::new(Broken, ExportFormat::Ocsf);
        let e = &sample_events()[0];
        assert!(sink.append(e).await.is_err());
        assert!(sink.append(e).await.is_err());
        assert!(sink.flush().await.is_err());
    }
}
