//! The SQLite backend: one file per gateway, in WAL mode.

use std::time::{Duration, SystemTime};

use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{params, params_from_iter, Connection, ToSql};

use super::{columns, Backend, Column, COLUMNS};
use crate::observability::record::RequestRecord;

/// The table, its indexes, and nothing else: the schema is the documented interface.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    request_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    key_name TEXT,
    session_id TEXT,
    user_id TEXT,
    model TEXT,
    deployment TEXT,
    provider TEXT,
    upstream_model TEXT,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    error_type TEXT,
    stop_reason TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_creation_input_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL,
    web_search_requests INTEGER NOT NULL,
    web_fetch_requests INTEGER NOT NULL,
    datetime_requests INTEGER NOT NULL,
    advisor_requests INTEGER NOT NULL,
    image_generation_requests INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    total_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    upstream_ms INTEGER NOT NULL,
    overhead_ms INTEGER NOT NULL,
    cost_usd REAL,
    request_body TEXT,
    response_body TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (key_name, ts);
";

/// `ts`: RFC 3339 UTC with milliseconds, so text order is time order and SQLite's date
/// functions read it.
pub fn timestamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl ToSql for Column<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Column::Time(t) => ToSqlOutput::Owned(Value::Text(timestamp(*t))),
            Column::Text(v) | Column::Json(v) => v.to_sql()?,
            Column::Int(v) => v.to_sql()?,
            Column::Real(v) => v.to_sql()?,
            Column::Bool(v) => v.to_sql()?,
        })
    }
}

/// Opens (creating if needed) the database in WAL mode with the schema in place.
pub fn open(path: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL + NORMAL: a crash may lose the last commits, never corrupt the file.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Writes rows in one transaction.
pub fn insert(conn: &mut Connection, rows: &[RequestRecord]) -> rusqlite::Result<()> {
    let sql = format!(
        "INSERT INTO requests ({}) VALUES ({})",
        COLUMNS.join(", "),
        (1..=COLUMNS.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(&sql)?;
        for r in rows {
            stmt.execute(params_from_iter(columns(r)))?;
        }
    }
    tx.commit()
}

/// Deletes rows older than `days` days; returns how many.
pub fn purge(conn: &Connection, days: u32, now: SystemTime) -> rusqlite::Result<usize> {
    let cutoff = now - Duration::from_secs(u64::from(days) * 86_400);
    delete_before(conn, cutoff)
}

fn delete_before(conn: &Connection, cutoff: SystemTime) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM requests WHERE ts < ?1",
        params![timestamp(cutoff)],
    )
}

/// The default backend.
pub struct Sqlite(pub Connection);

impl Backend for Sqlite {
    fn insert(&mut self, rows: &[RequestRecord]) -> Result<(), String> {
        insert(&mut self.0, rows).map_err(|e| e.to_string())
    }

    fn purge(&mut self, cutoff: SystemTime) -> Result<u64, String> {
        delete_before(&self.0, cutoff)
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }
}
