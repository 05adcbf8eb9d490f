//! Column names behind result columns.
//!
//! A RowDescription names each column by its output alias, which the client chooses
//! (`SELECT ssn AS x`), so masking rules cannot trust it. It also carries the source table's
//! OID and the column's attribute number, which the client cannot forge. This cache resolves
//! those to the real table and column names, once per table, over the gateway's own
//! upstream connection.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use tokio::sync::Mutex;
use wirewarden_postgres::Limits;

use super::UpstreamConfig;
use super::upstream::{self, Upstream};
use crate::Result;
use crate::listen::Dial;

/// A table's name and its columns by attribute number.
#[derive(Debug, Default)]
pub(crate) struct TableInfo {
    pub(crate) name: String,
    pub(crate) columns: HashMap<i16, String>,
}

/// Resolves table OIDs to names, caching every answer.
#[derive(Debug)]
pub(crate) struct Catalog {
    upstream: UpstreamConfig,
    limits: Limits,
    dial: Dial,
    conn: Mutex<Option<Upstream>>,
    tables: std::sync::RwLock<HashMap<u32, Arc<TableInfo>>>,
}

impl Catalog {
    pub(crate) fn new(upstream: UpstreamConfig, limits: Limits, dial: Dial) -> Self {
        Self {
            upstream,
            limits,
            dial,
            conn: Mutex::new(None),
            tables: Default::default(),
        }
    }

    /// The cached table, if known.
    pub(crate) fn get(&self, oid: u32) -> Option<Arc<TableInfo>> {
        self.tables.read().ok()?.get(&oid).cloned()
    }

    /// Makes sure every OID in `oids` is cached. OIDs that name no table (dropped since)
    /// are cached as nameless, so their columns are masked by content only.
    pub(crate) async fn resolve(&self, oids: &[u32]) -> Result<()> {
        let missing: Vec<u32> = {
            let tables = self
                .tables
                .read()
                .map_err(|_| crate::Error::Config("catalog lock poisoned".into()))?;
            let mut m: Vec<u32> = oids
                .iter()
                .copied()
                .filter(|o| *o != 0 && !tables.contains_key(o))
                .collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut list = String::new();
        for (i, oid) in missing.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            let _ = write!(list, "{oid}");
        }
        let sql = format!(
            "SELECT c.oid, c.relname, a.attnum, a.attname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
             WHERE c.oid IN ({list}) AND a.attnum > 0 AND NOT a.attisdropped"
        );
        let mut guard = self.conn.lock().await;
        // The connection is out of its slot while it is used: if this future is dropped
        // half-way through the query (its session ended), the connection goes with it
        // rather than stay behind with an answer unread that the next lookup would take
        // for its own.
        let mut conn = match guard.take() {
            Some(conn) => conn,
            None => upstream::connect(&self.upstream, &self.limits, &self.dial, &[]).await?,
        };
        let rows = upstream::simple_query(&mut conn, &sql).await?;
        *guard = Some(conn);
        drop(guard);
        let mut found: HashMap<u32, TableInfo> =
            missing.iter().map(|o| (*o, TableInfo::default())).collect();
        for row in rows {
            let mut cells = row.into_iter();
            let (Some(Some(oid)), Some(Some(rel)), Some(Some(num)), Some(Some(att))) =
                (cells.next(), cells.next(), cells.next(), cells.next())
            else {
                continue;
            };
            let (Ok(oid), Ok(num)) = (oid.parse::<u32>(), num.parse::<i16>()) else {
                continue;
            };
            if let Some(t) = found.get_mut(&oid) {
                t.name = rel;
                t.columns.insert(num, att);
            }
        }
        let mut tables = self
            .tables
            .write()
            .map_err(|_| crate::Error::Config("catalog lock poisoned".into()))?;
        for (oid, info) in found {
            tables.insert(oid, Arc::new(info));
        }
        Ok(())
    }
}
