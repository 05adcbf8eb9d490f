//! Column names behind result columns.
//!
//! A RowDescription names each column by its output alias, which the client chooses
//! (`SELECT ssn AS x`), so masking rules cannot trust it. It also carries the source table's
//! OID and the column's attribute number, which the client cannot forge. This cache resolves
//! those to the real table and column names, once per table, over the gateway's own
//! upstream connection.
//!
//! A view (or materialized view) is the source the server names for its columns, and a
//! rule on `customers.name` must still reach `name` read through `CREATE VIEW v AS SELECT
//! name FROM customers`. So a view's columns are traced to the table columns its rewrite
//! rule depends on (`pg_depend`): a view column is that table column when exactly one
//! column the view reads has its name, and cannot be named otherwise (renamed, computed, or
//! read through another view), which a profile with column rules answers by withholding it.

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
    /// For a view: each column's source, the table and column it reads, or `None` when it
    /// cannot be told. `None` for a table.
    pub(crate) view: Option<HashMap<i16, Option<(String, String)>>>,
}

impl TableInfo {
    /// The table and column behind the column `attnum`: `Some((table, column))`, or
    /// `None` for a view column whose source cannot be told.
    pub(crate) fn source(&self, attnum: i16) -> Option<(Option<&str>, Option<&str>)> {
        match &self.view {
            None => Some((
                (!self.name.is_empty()).then_some(self.name.as_str()),
                self.columns.get(&attnum).map(String::as_str),
            )),
            Some(sources) => sources
                .get(&attnum)
                .and_then(Option::as_ref)
                .map(|(t, c)| (Some(t.as_str()), Some(c.as_str()))),
        }
    }
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
            "SELECT c.oid, c.relname, a.attnum, a.attname, c.relkind IN ('v', 'm') \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
             WHERE c.oid IN ({list}) AND a.attnum > 0 AND NOT a.attisdropped"
        );
        // For views among them: the table columns their rewrite rules read, and whether
        // each of those relations is itself a view.
        let view_sql = format!(
            "SELECT r.ev_class, t.relname, a.attname, t.relkind IN ('v', 'm') \
             FROM pg_catalog.pg_rewrite r \
             JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
               AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND d.refobjsubid > 0 AND d.refobjid <> r.ev_class \
             JOIN pg_catalog.pg_class t ON t.oid = d.refobjid \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
             WHERE r.ev_class IN ({list})"
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
        let is_view = |cell: &Option<String>| cell.as_deref() == Some("t");
        let any_view = rows.iter().any(|r| r.get(4).is_some_and(is_view));
        let view_rows = if any_view {
            upstream::simple_query(&mut conn, &view_sql).await?
        } else {
            Vec::new()
        };
        *guard = Some(conn);
        drop(guard);
        let mut found: HashMap<u32, TableInfo> =
            missing.iter().map(|o| (*o, TableInfo::default())).collect();
        for row in rows {
            let view = row.get(4).is_some_and(is_view);
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
                if view {
                    t.view.get_or_insert_with(HashMap::new);
                }
            }
        }
        // What each view reads: (view oid) → [(table, column, through another view)].
        let mut reads: HashMap<u32, Vec<(String, String, bool)>> = HashMap::new();
        for row in view_rows {
            let through_view = row.get(3).is_some_and(is_view);
            let mut cells = row.into_iter();
            let (Some(Some(oid)), Some(Some(rel)), Some(Some(att))) =
                (cells.next(), cells.next(), cells.next())
            else {
                continue;
            };
            if let Ok(oid) = oid.parse::<u32>() {
                reads.entry(oid).or_default().push((rel, att, through_view));
            }
        }
        for (oid, t) in &mut found {
            let Some(sources) = t.view.as_mut() else {
                continue;
            };
            let read = reads.get(oid).map(Vec::as_slice).unwrap_or_default();
            for (num, name) in &t.columns {
                sources.insert(*num, view_column_source(name, read));
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

/// The table column a view's column `name` reads, among the columns the view reads
/// (`(table, column, through another view)`): the one column of that name, from a table.
/// Several of that name, none, or one read through another view: not told.
fn view_column_source(name: &str, read: &[(String, String, bool)]) -> Option<(String, String)> {
    let mut same = read.iter().filter(|(_, c, _)| c == name);
    let (table, column, through_view) = same.next()?;
    if *through_view || same.any(|(t, _, _)| t != table) {
        return None;
    }
    Some((table.clone(), column.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_column_is_the_one_table_column_of_its_name() {
        let read = |v: &[(&str, &str, bool)]| -> Vec<(String, String, bool)> {
            v.iter()
                .map(|(t, c, w)| ((*t).to_owned(), (*c).to_owned(), *w))
                .collect()
        };
        let simple = read(&[("customers", "name", false), ("customers", "id", false)]);
        assert_eq!(
            view_column_source("name", &simple),
            Some(("customers".into(), "name".into()))
        );
        // Renamed or computed: no table column has the name.
        assert_eq!(view_column_source("nick", &simple), None);
        // Two tables with a column of that name (a join): which one cannot be told.
        let joined = read(&[("customers", "name", false), ("orders", "name", false)]);
        assert_eq!(view_column_source("name", &joined), None);
        // Read through another view: its own sources are not followed.
        let nested = read(&[("people", "name", true)]);
        assert_eq!(view_column_source("name", &nested), None);
    }
}
