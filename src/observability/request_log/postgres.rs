//! The PostgreSQL backend: the rows of every replica in one table, same columns as the SQLite
//! log with PostgreSQL's types. Connected lazily on the writer thread (the `postgres` client
//! blocks there, on its own small runtime), reconnected after any failure.

use std::error::Error;
use std::time::{Duration, SystemTime};

use ::postgres::types::{to_sql_checked, IsNull, Json, ToSql, Type};
use ::postgres::{Client, Config, NoTls};
use bytes::BytesMut;

use super::{columns, Backend, Column, COLUMNS};
use crate::config::Secret;
use crate::observability::record::RequestRecord;

/// Parameters per statement are capped at 65535 by the protocol: 32 columns, so at most 2047
/// rows a statement; a batch is split in statements of this many rows, in one transaction.
const ROWS_PER_STATEMENT: usize = 1000;
/// Serialises the `CREATE ... IF NOT EXISTS` of replicas starting together (they race on the
/// catalog otherwise).
const SCHEMA_LOCK: i64 = 0x6169_6777; // "aigw"

/// The table and its indexes, for `table`.
pub fn schema(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts timestamptz NOT NULL,
    request_id text NOT NULL,
    endpoint text NOT NULL,
    key_name text,
    session_id text,
    user_id text,
    model text,
    deployment text,
    provider text,
    upstream_model text,
    stream boolean NOT NULL,
    status integer NOT NULL,
    error_type text,
    stop_reason text,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cache_creation_input_tokens bigint NOT NULL,
    cache_read_input_tokens bigint NOT NULL,
    web_search_requests integer NOT NULL,
    web_fetch_requests integer NOT NULL,
    datetime_requests integer NOT NULL,
    advisor_requests integer NOT NULL,
    image_generation_requests integer NOT NULL,
    rounds integer NOT NULL,
    attempts integer NOT NULL,
    total_ms bigint NOT NULL,
    ttft_ms bigint,
    upstream_ms bigint NOT NULL,
    overhead_ms bigint NOT NULL,
    cost_usd double precision,
    request_body jsonb,
    response_body jsonb
);
CREATE UNIQUE INDEX IF NOT EXISTS {table}_request_id ON {table} (request_id);
CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (ts);
CREATE INDEX IF NOT EXISTS {table}_key_ts ON {table} (key_name, ts);
"
    )
}

impl ToSql for Column<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Column::Time(t) => chrono::DateTime::<chrono::Utc>::from(*t).to_sql(ty, out),
            Column::Text(v) => v.to_sql(ty, out),
            Column::Int(v) if *ty == Type::INT4 => v
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX))
                .to_sql(ty, out),
            Column::Int(v) => v.to_sql(ty, out),
            Column::Real(v) => v.to_sql(ty, out),
            Column::Bool(v) => v.to_sql(ty, out),
            // The bodies are JSON; one that is not (cut short) is kept as a JSON string.
            Column::Json(v) => v
                .map(|s| {
                    Json(
                        serde_json::from_str::<serde_json::Value>(s)
                            .unwrap_or_else(|_| serde_json::Value::String(s.into())),
                    )
                })
                .to_sql(ty, out),
        }
    }

    /// The statement's types come from the table, which [`schema`] fixes.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

pub struct Postgres {
    config: Config,
    table: String,
    client: Option<Client>,
}

impl Postgres {
    /// Parses the URL; connects on first use. The error never repeats the URL.
    pub fn new(url: &Secret, table: &str) -> Result<Self, &'static str> {
        let mut config: Config = url
            .expose()
            .parse()
            .map_err(|_| "not a valid PostgreSQL connection URL")?;
        config.connect_timeout(Duration::from_secs(2));
        // A server that stops answering must not hold the writer forever: the kernel gives up
        // on unacknowledged sends, keepalives find a dead peer, the server cancels slow writes.
        config.tcp_user_timeout(Duration::from_secs(10));
        config.keepalives_idle(Duration::from_secs(10));
        config.options("-c statement_timeout=30000");
        config.application_name("aigw");
        Ok(Self {
            config,
            table: table.to_string(),
            client: None,
        })
    }

    /// The connection, opened (with the schema in place) when there is none.
    fn client(&mut self) -> Result<&mut Client, ::postgres::Error> {
        if self.client.is_none() {
            let mut client = self.config.connect(NoTls)?;
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            tx.batch_execute(&schema(&self.table))?;
            tx.commit()?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    fn try_insert(&mut self, rows: &[RequestRecord]) -> Result<(), ::postgres::Error> {
        let table = self.table.clone();
        let client = self.client()?;
        let mut tx = client.transaction()?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<Column<'_>> = chunk.iter().flat_map(columns).collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            tx.execute(&insert_sql(&table, chunk.len()), &params)?;
        }
        tx.commit()
    }

    /// Runs `f`; any failure drops the connection, so the next call reconnects.
    fn or_reconnect<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ::postgres::Error>,
    ) -> Result<T, String> {
        f(self).map_err(|e| {
            self.client = None;
            e.to_string()
        })
    }
}

/// `INSERT INTO table (columns) VALUES ($1, ..), ..` for `rows` rows.
fn insert_sql(table: &str, rows: usize) -> String {
    let n = COLUMNS.len();
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", COLUMNS.join(", "));
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        let row: Vec<String> = (1..=n).map(|c| format!("${}", r * n + c)).collect();
        sql.push_str(&row.join(", "));
        sql.push(')');
    }
    // A batch whose commit was not acknowledged (the connection dropped) is sent again: rows
    // already in are skipped, so each request still has one row.
    sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
    sql
}

impl Backend for Postgres {
    fn ready(&mut self) -> Result<(), String> {
        self.or_reconnect(|pg| pg.client().map(|_| ()))
    }

    fn insert(&mut self, rows: &[RequestRecord]) -> Result<(), String> {
        self.or_reconnect(|pg| pg.try_insert(rows))
    }

    fn purge(&mut self, cutoff: SystemTime) -> Result<u64, String> {
        let sql = format!("DELETE FROM {} WHERE ts < $1", self.table);
        let cutoff = chrono::DateTime::<chrono::Utc>::from(cutoff);
        self.or_reconnect(|pg| pg.client()?.execute(&sql, &[&cutoff]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_numbers_every_row_s_parameters() {
        let sql = insert_sql("t", 2);
        assert!(sql.starts_with("INSERT INTO t (ts, request_id, "), "{sql}");
        assert!(sql.contains("($1, $2, "), "{sql}");
        assert!(
            sql.ends_with("$63, $64) ON CONFLICT (request_id) DO NOTHING"),
            "{sql}"
        );
        assert!(sql.contains("$32), ($33, "), "{sql}");
    }
}
