//! The [`ReviewStore`] trait and the in-memory store.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;
use wirewarden_core::{ReviewId, Timestamp};

use crate::review::{Operation, Review, Status};
use crate::{Error, Result};

/// Where reviews live. Several gateways sharing a store share one queue: a reviewer may
/// approve through any of them and the waiter on another wakes up.
///
/// Implementations apply every change with [`Review::apply`] on the current stored state,
/// atomically (a row lock, a mutex), so that approval rules are the same everywhere.
#[async_trait]
pub trait ReviewStore: fmt::Debug + Send + Sync {
    /// Stores a new review.
    ///
    /// # Errors
    /// [`Error::Duplicate`] if the id exists; [`Error::Store`] on storage failure.
    async fn submit(&self, review: &Review) -> Result<()>;

    /// The review with this id.
    ///
    /// # Errors
    /// [`Error::Store`] on storage failure.
    async fn get(&self, id: ReviewId) -> Result<Option<Review>>;

    /// The reviews still pending at `now`, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] on storage failure.
    async fn pending(&self, now: Timestamp) -> Result<Vec<Review>>;

    /// Applies `op` at `now` atomically and returns the review afterwards, waking every
    /// waiter on it.
    ///
    /// # Errors
    /// [`Error::NotFound`], the errors of [`Review::apply`], or [`Error::Store`].
    async fn apply(&self, id: ReviewId, op: &Operation, now: Timestamp) -> Result<Review>;

    /// Waits until the review is no longer pending (decided, expired or cancelled) or
    /// `timeout` passes, and returns its latest state either way.
    ///
    /// Wake-ups are hints: implementations re-read the stored state after every wake-up
    /// (and after reconnecting to a shared backend), so a lost notification delays a waiter
    /// but never confuses it.
    ///
    /// # Errors
    /// [`Error::NotFound`] or [`Error::Store`].
    async fn wait(&self, id: ReviewId, timeout: Duration) -> Result<Review>;
}

/// Waits on `rx` for a change until the earliest of `deadline`, the review's own expiry and
/// `poll` from now; shared by the stores in this crate.
pub(crate) async fn wait_with<F, Fut>(
    id: ReviewId,
    timeout: Duration,
    poll: Duration,
    mut rx: watch::Receiver<u64>,
    mut read: F,
) -> Result<Review>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<Option<Review>>> + Send,
{
    let deadline = Instant::now() + timeout;
    loop {
        // Mark the current wake-up generation as seen *before* reading, so a change that
        // lands between the read and the wait still wakes us.
        rx.borrow_and_update();
        let review = read().await?.ok_or(Error::NotFound { id })?;
        let now = Timestamp::now();
        if review.status(now) != Status::Pending {
            return Ok(review);
        }
        let start = Instant::now();
        if start >= deadline {
            return Ok(review);
        }
        let until_expiry = review.expires_at.saturating_duration_since(now);
        let wake_at = deadline.min(start + until_expiry).min(start + poll);
        if tokio::time::timeout_at(wake_at, rx.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            // Nobody will ever signal again (the store is shutting down): fall back to
            // sleeping until the next re-read.
            tokio::time::sleep_until(wake_at).await;
        }
    }
}

/// A [`ReviewStore`] in process memory: the embedded default for a single gateway.
#[derive(Debug)]
pub struct MemoryReviewStore {
    reviews: Mutex<BTreeMap<ReviewId, Review>>,
    wake: watch::Sender<u64>,
}

impl Default for MemoryReviewStore {
    fn default() -> Self {
        Self {
            reviews: Mutex::new(BTreeMap::new()),
            wake: watch::Sender::new(0),
        }
    }
}

impl MemoryReviewStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ReviewId, Review>> {
        // Reviews are replaced whole after a successful apply: a poisoned lock holds
        // consistent data.
        self.reviews.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ReviewStore for MemoryReviewStore {
    async fn submit(&self, review: &Review) -> Result<()> {
        {
            let mut map = self.lock();
            if map.contains_key(&review.id) {
                return Err(Error::Duplicate { id: review.id });
            }
            map.insert(review.id, review.clone());
        }
        self.wake.send_modify(|g| *g = g.wrapping_add(1));
        Ok(())
    }

    async fn get(&self, id: ReviewId) -> Result<Option<Review>> {
        Ok(self.lock().get(&id).cloned())
    }

    async fn pending(&self, now: Timestamp) -> Result<Vec<Review>> {
        let mut v: Vec<Review> = self
            .lock()
            .values()
            .filter(|r| r.status(now) == Status::Pending)
            .cloned()
            .collect();
        v.sort_by_key(|r| (r.created_at, r.id));
        Ok(v)
    }

    async fn apply(&self, id: ReviewId, op: &Operation, now: Timestamp) -> Result<Review> {
        let updated = {
            let mut map = self.lock();
            let stored = map.get_mut(&id).ok_or(Error::NotFound { id })?;
            let mut next = stored.clone();
            next.apply(op, now)?;
            *stored = next.clone();
            next
        };
        self.wake.send_modify(|g| *g = g.wrapping_add(1));
        Ok(updated)
    }

    async fn wait(&self, id: ReviewId, timeout: Duration) -> Result<Review> {
        let rx = self.wake.subscribe();
        // In memory every change signals, so the poll interval only bounds the wait for
        // the review's own expiry.
        wait_with(id, timeout, Duration::from_secs(3600), rx, || async move {
            Ok(self.lock().get(&id).cloned())
        })
        .await
    }
}
