//! The `AuditSink` extension trait and its contract.

use std::fmt;

use async_trait::async_trait;
use wirewarden_core::{AuditEvent, BoxError};

/// What a successful [`AuditSink::append`] guarantees about the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// `append` returns `Ok` only once the event is on stable storage (after `fdatasync`, or a
    /// committed database transaction). The pipeline relies on this to write an intent
    /// record before it forwards a command.
    Fsync,
    /// `append` returns `Ok` once the event is accepted and ordered; it reaches storage (or
    /// the remote end) later, and a crash may lose the most recent events. `flush` waits for
    /// everything appended so far.
    Buffered,
}

impl Durability {
    /// `fsync` or `buffered`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fsync => "fsync",
            Self::Buffered => "buffered",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "fsync" | "durable" => Ok(Self::Fsync),
            "buffered" => Ok(Self::Buffered),
            _ => Err(crate::Error::Config {
                reason: format!("unknown durability {s:?} (fsync or buffered)"),
            }),
        }
    }
}

/// What a sink tells the caller about an appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Appended {
    /// The event's position in the sink's total order, when the sink assigns one.
    pub seq: Option<u64>,
}

impl Appended {
    /// An append at position `seq`.
    #[must_use]
    pub fn at(seq: u64) -> Self {
        Self { seq: Some(seq) }
    }

    /// An append whose position the sink does not report.
    #[must_use]
    pub fn unordered() -> Self {
        Self { seq: None }
    }
}

/// A batch append that stopped part way: the first [`recorded`](Self::recorded) events of
/// the batch are recorded, in order; the event at that index failed with
/// [`error`](Self::error), and none after it was recorded.
#[derive(Debug)]
pub struct PartialBatch {
    /// How many events of the batch, from its start, are recorded.
    pub recorded: usize,
    /// Why the next one is not.
    pub error: BoxError,
}

impl fmt::Display for PartialBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "audit batch stopped after {} recorded events: {}",
            self.recorded, self.error
        )
    }
}

impl std::error::Error for PartialBatch {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

/// Where the gateway records [`AuditEvent`]s.
///
/// # Contract
///
/// Implementations must uphold all of these; `wirewarden_testkit::conformance::audit`
/// checks them.
///
/// * **One total order.** Every event a sink accepts gets one position in a single order that
///   all readers of the trail see. If `append(a)` returned before `append(b)` was called, `a`
///   comes before `b`. Concurrent appends are ordered in some order, and never interleaved
///   or lost.
/// * **Exactly once in the trail per successful append** (a sink that delivers elsewhere may
///   deliver a second copy with the same [`AuditEvent::id`], which receivers use to
///   de-duplicate; the trail itself must not show it twice).
/// * **Durability.** When [`durability`](Self::durability) is [`Durability::Fsync`], `Ok`
///   from `append` means the event is on stable storage and will survive a crash of this
///   process and of the machine. When it is [`Durability::Buffered`], `Ok` means the event
///   is accepted and ordered, and `Ok` from a later [`flush`](Self::flush) means it, and
///   every event appended before the flush was called, is stored.
/// * **Fail closed.** An `Err` means the event may not be recorded; the pipeline refuses
///   the command. A sink that has lost the ability to record (a failed write or sync) must
///   keep failing: it must not report success for later events whose predecessors it could
///   not store.
/// * **Batches** ([`append_batch`](Self::append_batch)) are a sequence of appends: the
///   events keep their order in the trail (other appends may come between them), `Ok` means
///   what `Ok` from `append` means for every one of them, and a failure records a prefix of
///   the batch and nothing after it.
#[async_trait]
pub trait AuditSink: fmt::Debug + Send + Sync {
    /// Records `event`. See the trait's contract for what `Ok` means.
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError>;

    /// Records `events` in order, as one `append` after another would, and returns where
    /// each was placed. A sink can do better than the default, which does exactly that: take
    /// its lock, wake its writer and (in fsync mode) wait for the disk once for the whole
    /// batch. The proxies hand over a pipeline's intents and a flush's outcomes this way.
    ///
    /// # Errors
    /// [`PartialBatch`]: how many events, from the start, are recorded, and why the next is
    /// not. Events after the failed one are not appended.
    async fn append_batch(&self, events: &[AuditEvent]) -> Result<Vec<Appended>, PartialBatch> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            match self.append(event).await {
                Ok(a) => out.push(a),
                Err(error) => {
                    return Err(PartialBatch {
                        recorded: out.len(),
                        error,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Records `events` in order, like [`append_batch`](Self::append_batch), for a caller
    /// that does not wait for them to be stored: the proxies' records of what a command
    /// returned, which must be in the trail but hold nothing back. `Ok` means the events are
    /// accepted and ordered, as a buffered sink's `Ok`; they are stored by the next
    /// [`flush`](Self::flush), and a sink may store them later than an `append`'s would be.
    /// A sink that writes in order (as [`FileSink`](crate::FileSink) does) stores them no
    /// later than any event appended after them, so waiting for the next durable `append`
    /// waits for these too. The default is `append_batch`, which waits as the durability
    /// mode says: correct for every sink, and what sinks that deliver elsewhere keep.
    ///
    /// # Errors
    /// [`PartialBatch`], as for `append_batch`. A sink that stores the events later reports
    /// a failure to store them through later appends and flushes instead.
    async fn append_batch_unawaited(
        &self,
        events: &[AuditEvent],
    ) -> Result<Vec<Appended>, PartialBatch> {
        self.append_batch(events).await
    }

    /// Waits until every event appended before this call is stored (or delivered).
    async fn flush(&self) -> Result<(), BoxError>;

    /// What a successful `append` guarantees.
    fn durability(&self) -> Durability;
}

#[async_trait]
impl<S: AuditSink + ?Sized> AuditSink for std::sync::Arc<S> {
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        (**self).append(event).await
    }

    async fn append_batch(&self, events: &[AuditEvent]) -> Result<Vec<Appended>, PartialBatch> {
        (**self).append_batch(events).await
    }

    async fn append_batch_unawaited(
        &self,
        events: &[AuditEvent],
    ) -> Result<Vec<Appended>, PartialBatch> {
        (**self).append_batch_unawaited(events).await
    }

    async fn flush(&self) -> Result<(), BoxError> {
        (**self).flush().await
    }

    fn durability(&self) -> Durability {
        (**self).durability()
    }
}
