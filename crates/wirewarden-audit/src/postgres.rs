//! A sink that stores events in a PostgreSQL table, so several gateways share one trail.
//!
//! Each event is one row: a `bigserial` position, the event id (unique, so a re-delivered
//! event is stored once), the gateway that wrote it, its time, kind and session, and the
//! native event as `jsonb`. `append` returns after the insert has committed, so the sink is
//! [`Durability::Fsync`] as far as the server's `synchronous_commit` is. Readers order by
//! `seq`; positions are assigned at insert, so a reader may briefly see a gap while a
//! concurrent insert of a smaller position commits.

use std::fmt;

use async_trait::async_trait;
use tokio_postgres::{Client, NoTls};
use wirewarden_core::{AuditEvent, BoxError};

use crate::sink::{Appended, AuditSink, Durability};
use crate::{Error, Result};

/// Stores events in a shared PostgreSQL table.
pub struct PostgresSink {
    client: Client,
    gateway: String,
    table: String,
    insert: tokio_postgres::Statement,
}

impl fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("gateway", &self.gateway)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl PostgresSink {
    /// Connects (without TLS; use a loopback or a private network) to `url`, creates the
    /// table `wirewarden_audit` if needed, and writes as `gateway`. Must be called within a
    /// tokio runtime.
    ///
    /// # Errors
    /// [`Error::Postgres`] when the connection or the schema set-up fails.
    pub async fn connect(url: &str, gateway: impl Into<String>) -> Result<Self> {
        Self::connect_table(url, gateway, "wirewarden_audit").await
    }

    /// As [`connect`](Self::connect), with another table name (lowercase letters, digits
    /// and `_`).
    ///
    /// # Errors
    /// As [`connect`](Self::connect); [`Error::Config`] for an invalid table name.
    pub async fn connect_table(url: &str, gateway: impl Into<String>, table: &str) -> Result<Self> {
        if !valid_ident(table) {
            return Err(Error::Config {
                reason: format!("invalid table name {table:?}"),
            });
        }
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(connection);
        // Gateways starting together must not race on CREATE TABLE.
        client
            .batch_execute(&format!(
                "BEGIN;
                 SELECT pg_advisory_xact_lock(4242000001);
                 CREATE TABLE IF NOT EXISTS {table} (
                     seq bigserial PRIMARY KEY,
                     event_id uuid NOT NULL UNIQUE,
                     gateway text NOT NULL,
                     time timestamptz NOT NULL,
                     kind text NOT NULL,
                     session uuid,
                     event jsonb NOT NULL
                 );
                 COMMIT;"
            ))
            .await?;
        let insert = client
            .prepare(&format!(
                "WITH ins AS (
                     INSERT INTO {table} (event_id, gateway, time, kind, session, event)
                     VALUES ($1::text::uuid, $2, to_timestamp($3::bigint / 1000000.0), $4,
                             $5::text::uuid, $6::text::jsonb)
                     ON CONFLICT (event_id) DO NOTHING
                     RETURNING seq)
                 SELECT seq FROM ins
                 UNION ALL
                 SELECT seq FROM {table} WHERE event_id = $1::text::uuid
                 LIMIT 1"
            ))
            .await?;
        Ok(Self {
            client,
            gateway: gateway.into(),
            table: table.to_owned(),
            insert,
        })
    }

    /// Every stored event in trail order, with the gateway that wrote it.
    ///
    /// # Errors
    /// [`Error::Postgres`] or [`Error::Json`].
    pub async fn read_all(&self) -> Result<Vec<(i64, String, AuditEvent)>> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT seq, gateway, event::text FROM {} ORDER BY seq",
                    self.table
                ),
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let json: String = r.try_get(2)?;
                Ok((r.try_get(0)?, r.try_get(1)?, serde_json::from_str(&json)?))
            })
            .collect()
    }

    async fn insert(&self, event: &AuditEvent) -> Result<i64> {
        let json = serde_json::to_string(event)?;
        let micros = event.time.unix_nanos().div_euclid(1_000);
        let row = self
            .client
            .query_one(
                &self.insert,
                &[
                    &event.id.to_string(),
                    &self.gateway,
                    &micros,
                    &event.kind.name(),
                    &event.session.map(|s| s.to_string()),
                    &json,
                ],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}

#[async_trait]
impl AuditSink for PostgresSink {
    async fn append(&self, event: &AuditEvent) -> Result<Appended, BoxError> {
        let seq = self.insert(event).await?;
        Ok(Appended::at(u64::try_from(seq).unwrap_or_default()))
    }

    async fn flush(&self) -> Result<(), BoxError> {
        // Every successful append has committed already.
        Ok(())
    }

    fn durability(&self) -> Durability {
        Durability::Fsync
    }
}
