//! PostgreSQL stores for reviews and grants, shared by several gateways.
//!
//! State lives in rows (`wirewarden_reviews`, `wirewarden_grants`; each row keeps the whole
//! record as `jsonb` plus the columns queries filter on). Every change runs in a transaction
//! that locks the row (`SELECT … FOR UPDATE`), applies the same pure state machine as the
//! in-memory store ([`Review::apply`]), writes the row back and sends
//! `NOTIFY wirewarden_reviews`, which PostgreSQL delivers only on commit.
//!
//! Notifications are only a wake-up hint. Each store keeps a dedicated `LISTEN` connection;
//! every notification wakes the local waiters, which re-read their review from the table.
//! When that connection drops, the store reconnects, listens again, and wakes every waiter
//! to re-read, so nothing decided while it was away is missed. Waiters also re-read on a
//! poll interval (30 s by default) as a last resort.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::{Mutex, MutexGuard, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Socket};
use wirewarden_core::{AuditEvent, BoxError, GrantId, ReviewId, Timestamp};
use wirewarden_policy::{Grant, GrantError, GrantStore, Revocation, expired_event, revoked_event};

use crate::review::{Operation, Review, ReviewState, Status};
use crate::store::{ReviewStore, wait_with};
use crate::{Error, Result};

/// The notification channel.
pub const CHANNEL: &str = "wirewarden_reviews";

/// The `application_name` of each store's `LISTEN` connection (operators can see it in
/// `pg_stat_activity`).
pub const LISTENER_APPLICATION_NAME: &str = "wirewarden-review-listener";

const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(7304427281466339);
CREATE TABLE IF NOT EXISTS wirewarden_reviews (
    id text PRIMARY KEY,
    status text NOT NULL,
    requester text NOT NULL,
    created_at_ns bigint NOT NULL,
    expires_at_ns bigint NOT NULL,
    doc jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS wirewarden_reviews_pending
    ON wirewarden_reviews (created_at_ns) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS wirewarden_grants (
    id text PRIMARY KEY,
    subject text NOT NULL,
    target text NOT NULL,
    issued_at_ns bigint NOT NULL,
    expires_at_ns bigint NOT NULL,
    revoked boolean NOT NULL DEFAULT false,
    expiry_reported boolean NOT NULL DEFAULT false,
    doc jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS wirewarden_grants_active
    ON wirewarden_grants (subject, target, expires_at_ns);
COMMIT;
";

type Notifications = mpsc::UnboundedReceiver<()>;
type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<(Client, Notifications), tokio_postgres::Error>> + Send>>;

/// Opens connections (with TLS or not) and drives each on its own task, forwarding
/// notifications; the receiver closes when the connection ends.
#[derive(Clone)]
struct Connector {
    connect: Arc<dyn Fn(bool) -> ConnectFuture + Send + Sync>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

impl Connector {
    fn new<T>(config: Config, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let connect = move |listener: bool| -> ConnectFuture {
            let mut config = config.clone();
            if listener {
                config.application_name(LISTENER_APPLICATION_NAME);
            }
            let tls = tls.clone();
            Box::pin(async move {
                let (client, mut conn) = config.connect(tls).await?;
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(|cx| conn.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(_) = message {
                            let _ = tx.send(());
                        }
                    }
                });
                Ok((client, rx))
            })
        };
        Self {
            connect: Arc::new(connect),
        }
    }
}

fn store_err(e: impl Into<BoxError>) -> Error {
    Error::Store(e.into())
}

/// One query connection, reopened when it has dropped.
#[derive(Debug)]
struct Conn {
    connector: Connector,
    client: Mutex<Option<Client>>,
}

impl Conn {
    async fn get(&self) -> Result<MutexGuard<'_, Option<Client>>, tokio_postgres::Error> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            let (client, _) = (self.connector.connect)(false).await?;
            *guard = Some(client);
        }
        Ok(guard)
    }
}

macro_rules! client {
    ($guard:ident) => {
        $guard
            .as_mut()
            .ok_or_else(|| store_err("no database connection"))?
    };
}

// === PgReviewStore ===

/// A [`ReviewStore`] in PostgreSQL, with `LISTEN`/`NOTIFY` wake-ups.
#[derive(Debug)]
pub struct PgReviewStore {
    conn: Conn,
    wake: watch::Sender<u64>,
    listener: JoinHandle<()>,
    poll: Duration,
}

impl Drop for PgReviewStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgReviewStore {
    /// Connects without TLS (a database on loopback or a private link), creates the tables
    /// if needed and starts listening. `config` is a `postgresql://` URL or a key=value
    /// string.
    ///
    /// # Errors
    /// [`Error::Store`] if the configuration does not parse or the database is unreachable.
    pub async fn connect(config: &str) -> Result<Self> {
        let config: Config = config.parse().map_err(store_err)?;
        Self::connect_with_tls(config, NoTls).await
    }

    /// Connects with a TLS connector (`tokio-postgres-rustls`, `postgres-native-tls`, …).
    ///
    /// # Errors
    /// As [`PgReviewStore::connect`].
    pub async fn connect_with_tls<T>(config: Config, tls: T) -> Result<Self>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let connector = Connector::new(config, tls);
        let conn = Conn {
            connector: connector.clone(),
            client: Mutex::new(None),
        };
        {
            let mut guard = conn.get().await.map_err(store_err)?;
            client!(guard)
                .batch_execute(SCHEMA)
                .await
                .map_err(store_err)?;
        }
        let wake = watch::Sender::new(0u64);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let listener = tokio::spawn(listen(connector, wake.clone(), ready_tx));
        // Wait for the first LISTEN so a waiter started right after connect cannot miss a
        // notification; a failure here is reported, later ones are retried.
        ready_rx
            .await
            .map_err(|_| store_err("listener stopped"))?
            .map_err(store_err)?;
        Ok(Self {
            conn,
            wake,
            listener,
            poll: Duration::from_secs(30),
        })
    }

    /// Sets how often waiters re-read even without a notification (default 30 s).
    #[must_use]
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Deletes reviews whose decision deadline (`expires_at`) is before `before`, whatever
    /// their state, and returns how many. Pass a time at least the approval TTL in the past,
    /// so that no approval that could still be used is removed; the audit trail keeps the
    /// history.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn purge(&self, before: Timestamp) -> Result<u64> {
        let mut guard = self.conn.get().await.map_err(store_err)?;
        client!(guard)
            .execute(
                "DELETE FROM wirewarden_reviews WHERE expires_at_ns < $1",
                &[&before.unix_nanos()],
            )
            .await
            .map_err(store_err)
    }
}

/// Keeps one `LISTEN` connection open, reconnecting with back-off, and bumps `wake` on
/// every notification and after every (re)connection.
async fn listen(
    connector: Connector,
    wake: watch::Sender<u64>,
    ready: tokio::sync::oneshot::Sender<Result<(), tokio_postgres::Error>>,
) {
    let bump = || wake.send_modify(|g| *g = g.wrapping_add(1));
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            let (client, rx) = (connector.connect)(true).await?;
            client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
            Ok::<_, tokio_postgres::Error>((client, rx))
        }
        .await;
        match attempt {
            Ok((client, mut rx)) => {
                backoff = Duration::from_millis(50);
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
                // Anything may have changed while we were not listening.
                bump();
                while rx.recv().await.is_some() {
                    bump();
                }
                drop(client);
                bump();
            }
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn decode_review(doc: &str) -> Result<Review> {
    serde_json::from_str(doc).map_err(store_err)
}

fn stored_status(review: &Review) -> &'static str {
    match review.state {
        ReviewState::Pending => Status::Pending.as_str(),
        ReviewState::Approved { .. } => Status::Approved.as_str(),
        ReviewState::Denied { .. } => Status::Denied.as_str(),
        ReviewState::Cancelled => Status::Cancelled.as_str(),
        ReviewState::Consumed { .. } => Status::Consumed.as_str(),
    }
}

#[async_trait]
impl ReviewStore for PgReviewStore {
    async fn submit(&self, review: &Review) -> Result<()> {
        let doc = serde_json::to_string(review).map_err(store_err)?;
        let mut guard = self.conn.get().await.map_err(store_err)?;
        let client = client!(guard);
        let tx = client.transaction().await.map_err(store_err)?;
        let n = tx
            .execute(
                "INSERT INTO wirewarden_reviews (id, status, requester, created_at_ns, expires_at_ns, doc)
                 VALUES ($1, $2, $3, $4, $5, $6::text::jsonb) ON CONFLICT (id) DO NOTHING",
                &[
                    &review.id.to_string(),
                    &stored_status(review),
                    &review.binding.requester,
                    &review.created_at.unix_nanos(),
                    &review.expires_at.unix_nanos(),
                    &doc,
                ],
            )
            .await
            .map_err(store_err)?;
        if n == 0 {
            return Err(Error::Duplicate { id: review.id });
        }
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &review.id.to_string()],
        )
        .await
        .map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    async fn get(&self, id: ReviewId) -> Result<Option<Review>> {
        let mut guard = self.conn.get().await.map_err(store_err)?;
        let row = client!(guard)
            .query_opt(
                "SELECT doc::text FROM wirewarden_reviews WHERE id = $1",
                &[&id.to_string()],
            )
            .await
            .map_err(store_err)?;
        row.map(|r| decode_review(r.try_get::<_, &str>(0).map_err(store_err)?))
            .transpose()
    }

    async fn pending(&self, now: Timestamp) -> Result<Vec<Review>> {
        let mut guard = self.conn.get().await.map_err(store_err)?;
        let rows = client!(guard)
            .query(
                "SELECT doc::text FROM wirewarden_reviews
                 WHERE status = 'pending' AND expires_at_ns > $1
                 ORDER BY created_at_ns, id",
                &[&now.unix_nanos()],
            )
            .await
            .map_err(store_err)?;
        rows.iter()
            .map(|r| decode_review(r.try_get::<_, &str>(0).map_err(store_err)?))
            .collect()
    }

    async fn apply(&self, id: ReviewId, op: &Operation, now: Timestamp) -> Result<Review> {
        let mut guard = self.conn.get().await.map_err(store_err)?;
        let client = client!(guard);
        let tx = client.transaction().await.map_err(store_err)?;
        let row = tx
            .query_opt(
                "SELECT doc::text FROM wirewarden_reviews WHERE id = $1 FOR UPDATE",
                &[&id.to_string()],
            )
            .await
            .map_err(store_err)?
            .ok_or(Error::NotFound { id })?;
        let mut review = decode_review(row.try_get::<_, &str>(0).map_err(store_err)?)?;
        // On a rule violation the transaction is dropped, which rolls it back.
        review.apply(op, now)?;
        let doc = serde_json::to_string(&review).map_err(store_err)?;
        tx.execute(
            "UPDATE wirewarden_reviews SET status = $2, doc = $3::text::jsonb WHERE id = $1",
            &[&id.to_string(), &stored_status(&review), &doc],
        )
        .await
        .map_err(store_err)?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id.to_string()])
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(review)
    }

    async fn wait(&self, id: ReviewId, timeout: Duration) -> Result<Review> {
        let rx = self.wake.subscribe();
        wait_with(id, timeout, self.poll, rx, || self.get(id)).await
    }
}

// === PgGrantStore ===

/// A [`GrantStore`] in PostgreSQL, shared by several gateways.
#[derive(Debug)]
pub struct PgGrantStore {
    conn: Conn,
}

fn grant_err(e: impl Into<BoxError>) -> GrantError {
    GrantError::Store(e.into())
}

fn decode_grant(doc: &str) -> Result<Grant, GrantError> {
    serde_json::from_str(doc).map_err(grant_err)
}

macro_rules! grant_client {
    ($guard:ident) => {
        $guard
            .as_mut()
            .ok_or_else(|| grant_err("no database connection"))?
    };
}

impl PgGrantStore {
    /// Connects without TLS and creates the tables if needed.
    ///
    /// # Errors
    /// [`GrantError::Store`] if the configuration does not parse or the database is
    /// unreachable.
    pub async fn connect(config: &str) -> Result<Self, GrantError> {
        let config: Config = config.parse().map_err(grant_err)?;
        Self::connect_with_tls(config, NoTls).await
    }

    /// Connects with a TLS connector.
    ///
    /// # Errors
    /// As [`PgGrantStore::connect`].
    pub async fn connect_with_tls<T>(config: Config, tls: T) -> Result<Self, GrantError>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let conn = Conn {
            connector: Connector::new(config, tls),
            client: Mutex::new(None),
        };
        {
            let mut guard = conn.get().await.map_err(grant_err)?;
            grant_client!(guard)
                .batch_execute(SCHEMA)
                .await
                .map_err(grant_err)?;
        }
        Ok(Self { conn })
    }
}

#[async_trait]
impl GrantStore for PgGrantStore {
    async fn issue(&self, grant: Grant) -> Result<AuditEvent, GrantError> {
        let doc = serde_json::to_string(&grant).map_err(grant_err)?;
        let mut guard = self.conn.get().await.map_err(grant_err)?;
        let n = grant_client!(guard)
            .execute(
                "INSERT INTO wirewarden_grants
                     (id, subject, target, issued_at_ns, expires_at_ns, revoked, doc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb) ON CONFLICT (id) DO NOTHING",
                &[
                    &grant.id.to_string(),
                    &grant.subject,
                    &grant.target,
                    &grant.issued_at.unix_nanos(),
                    &grant.expires_at.unix_nanos(),
                    &grant.revoked.is_some(),
                    &doc,
                ],
            )
            .await
            .map_err(grant_err)?;
        if n == 0 {
            return Err(GrantError::Duplicate { id: grant.id });
        }
        Ok(grant.issued_event())
    }

    async fn get(&self, id: GrantId) -> Result<Option<Grant>, GrantError> {
        let mut guard = self.conn.get().await.map_err(grant_err)?;
        let row = grant_client!(guard)
            .query_opt(
                "SELECT doc::text FROM wirewarden_grants WHERE id = $1",
                &[&id.to_string()],
            )
            .await
            .map_err(grant_err)?;
        row.map(|r| decode_grant(r.try_get::<_, &str>(0).map_err(grant_err)?))
            .transpose()
    }

    async fn active(
        &self,
        subject: &str,
        target: &str,
        now: Timestamp,
    ) -> Result<Vec<Grant>, GrantError> {
        let mut guard = self.conn.get().await.map_err(grant_err)?;
        let rows = grant_client!(guard)
            .query(
                "SELECT doc::text FROM wirewarden_grants
                 WHERE subject = $1 AND target = $2 AND NOT revoked
                   AND issued_at_ns <= $3 AND expires_at_ns > $3
                 ORDER BY issued_at_ns, id",
                &[&subject, &target, &now.unix_nanos()],
            )
            .await
            .map_err(grant_err)?;
        rows.iter()
            .map(|r| decode_grant(r.try_get::<_, &str>(0).map_err(grant_err)?))
            .collect()
    }

    async fn revoke(
        &self,
        id: GrantId,
        revoked_by: &str,
        now: Timestamp,
    ) -> Result<AuditEvent, GrantError> {
        let mut guard = self.conn.get().await.map_err(grant_err)?;
        let client = grant_client!(guard);
        let tx = client.transaction().await.map_err(grant_err)?;
        let row = tx
            .query_opt(
                "SELECT doc::text FROM wirewarden_grants WHERE id = $1 FOR UPDATE",
                &[&id.to_string()],
            )
            .await
            .map_err(grant_err)?
            .ok_or(GrantError::NotFound { id })?;
        let mut grant = decode_grant(row.try_get::<_, &str>(0).map_err(grant_err)?)?;
        if grant.revoked.is_some() {
            return Err(GrantError::AlreadyRevoked { id });
        }
        if now >= grant.expires_at {
            return Err(GrantError::Expired { id });
        }
        grant.revoked = Some(Revocation {
            by: revoked_by.to_owned(),
            at: now,
        });
        let doc = serde_json::to_string(&grant).map_err(grant_err)?;
        tx.execute(
            "UPDATE wirewarden_grants SET revoked = true, doc = $2::text::jsonb WHERE id = $1",
            &[&id.to_string(), &doc],
        )
        .await
        .map_err(grant_err)?;
        tx.commit().await.map_err(grant_err)?;
        Ok(revoked_event(id, revoked_by))
    }

    async fn sweep_expired(&self, now: Timestamp) -> Result<Vec<AuditEvent>, GrantError> {
        let mut guard = self.conn.get().await.map_err(grant_err)?;
        // One statement: concurrent sweeps from several gateways each claim a disjoint set
        // of rows, so every expiry is reported once.
        let rows = grant_client!(guard)
            .query(
                "UPDATE wirewarden_grants SET expiry_reported = true
                 WHERE NOT expiry_reported AND NOT revoked AND expires_at_ns <= $1
                 RETURNING id",
                &[&now.unix_nanos()],
            )
            .await
            .map_err(grant_err)?;
        rows.iter()
            .map(|r| {
                let id: &str = r.try_get(0).map_err(grant_err)?;
                let id: GrantId = id.parse().map_err(grant_err)?;
                Ok(expired_event(id))
            })
            .collect()
    }
}
