//! The request log (gateway.md §11): one SQLite row per API request, written by a
//! [`RequestLogActor`] on its own thread (a `SyncArbiter`: SQLite calls block) in batched
//! transactions, off the hot path.
//!
//! A request never waits for the log. [`RequestLog::push`] is a counter check and a mailbox send:
//! when `queue_capacity` rows are already waiting to be written, the row is dropped and
//! `gateway_request_log_dropped_total` rises. The actor writes when `batch_size` rows are
//! buffered, on a timer every `flush_interval_ms`, and on shutdown; rows older than
//! `retention_days` are purged at start and then daily.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use prometheus::IntCounter;
use rusqlite::{params, Connection};

use super::record::RequestRecord;
use crate::config::RequestLogConfig;

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

const INSERT: &str = "INSERT INTO requests (
    ts, request_id, endpoint, key_name, session_id, user_id, model, deployment, provider,
    upstream_model, stream, status, error_type, stop_reason, input_tokens, output_tokens,
    cache_creation_input_tokens, cache_read_input_tokens, web_search_requests,
    web_fetch_requests, datetime_requests, advisor_requests, image_generation_requests, rounds,
    attempts, total_ms, ttft_ms, upstream_ms, overhead_ms, cost_usd, request_body, response_body
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)";

const PURGE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// `ts`: RFC 3339 UTC with milliseconds, so text order is time order and SQLite's date
/// functions read it.
pub fn timestamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
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
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for r in rows {
            let total = ms(r.total);
            let upstream = ms(r.upstream);
            let tools = &r.server_tool_use;
            let u = &r.usage;
            stmt.execute(params![
                timestamp(r.ts),
                r.request_id,
                r.endpoint.as_str(),
                r.key_name,
                r.session_id,
                r.user_id,
                r.model.as_ref().or(r.requested_model.as_ref()),
                r.deployment,
                r.provider,
                r.upstream_model,
                r.stream,
                r.status,
                r.error_type,
                r.stop_reason,
                u.input_tokens as i64,
                u.output_tokens as i64,
                u.cache_creation_input_tokens as i64,
                u.cache_read_input_tokens as i64,
                tools.web_search_requests as i64,
                tools.web_fetch_requests as i64,
                tools.datetime_requests as i64,
                tools.advisor_requests as i64,
                tools.image_generation_requests as i64,
                r.rounds,
                r.attempts.len() as i64,
                total,
                r.ttft.map(ms),
                upstream,
                // From the rounded figures, so the three columns always add up.
                (total - upstream).max(0),
                r.cost_usd(),
                r.request_body,
                r.response_body,
            ])?;
        }
    }
    tx.commit()
}

/// Deletes rows older than `days` days; returns how many.
pub fn purge(conn: &Connection, days: u32, now: SystemTime) -> rusqlite::Result<usize> {
    let cutoff = now - Duration::from_secs(u64::from(days) * 86_400);
    conn.execute(
        "DELETE FROM requests WHERE ts < ?1",
        params![timestamp(cutoff)],
    )
}

/// Writer health, for `/readyz`.
const RUNNING: u8 = 0;
const FAILING: u8 = 1;
const STOPPED: u8 = 2;

/// The handle the gateway keeps: push rows, check health, flush on shutdown.
pub struct RequestLog {
    addr: Addr<RequestLogActor>,
    /// Rows waiting to cross to the writer thread: they go over a batch at a time (when
    /// `batch_size` are staged, or on the flush timer), so a busy gateway wakes the writer once
    /// per batch, not once per request.
    staged: Arc<Mutex<Vec<RequestRecord>>>,
    batch_size: usize,
    /// Rows pushed and not yet written (or given up).
    pending: Arc<AtomicUsize>,
    capacity: usize,
    dropped: IntCounter,
    health: Arc<AtomicU8>,
    ticker: Mutex<Option<actix_rt::task::JoinHandle<()>>>,
}

/// Why the request log could not start.
#[derive(Debug, thiserror::Error)]
#[error("request_log.path {path}: {source}")]
pub struct OpenError {
    path: String,
    source: rusqlite::Error,
}

impl RequestLog {
    /// Opens the database (so a bad path fails at start), then starts the writer thread and
    /// its flush timer. Must run inside an actix system.
    pub fn start(config: &RequestLogConfig, dropped: IntCounter) -> Result<Self, OpenError> {
        let err = |source| OpenError {
            path: config.path.clone(),
            source,
        };
        let conn = open(&config.path).map_err(err)?;
        if config.retention_days > 0 {
            purge(&conn, config.retention_days, SystemTime::now()).map_err(err)?;
        }
        let pending = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU8::new(RUNNING));
        let staged = Arc::new(Mutex::new(Vec::with_capacity(config.batch_size)));
        // The factory runs once, on the writer thread; the connection moves there.
        let conn = Mutex::new(Some(conn));
        let actor_config = config.clone();
        let (p, h, d, st) = (
            pending.clone(),
            health.clone(),
            dropped.clone(),
            staged.clone(),
        );
        let addr = SyncArbiter::start(1, move || RequestLogActor {
            conn: conn.lock().unwrap_or_else(|e| e.into_inner()).take(),
            staged: st.clone(),
            config: actor_config.clone(),
            buffer: Vec::with_capacity(actor_config.batch_size),
            pending: p.clone(),
            health: h.clone(),
            dropped: d.clone(),
            last_purge: Instant::now(),
        });
        let tick = addr.clone();
        let interval = Duration::from_millis(config.flush_interval_ms);
        let ticker = actix_rt::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if tick.send(Flush { last: false }).await.is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            addr,
            staged,
            batch_size: config.batch_size.max(1),
            pending,
            capacity: config.queue_capacity,
            dropped,
            health,
            ticker: Mutex::new(Some(ticker)),
        })
    }

    /// Queues a row; never blocks. Over capacity (or after shutdown) the row is dropped and
    /// counted.
    pub fn push(&self, record: RequestRecord) {
        let queued = self.pending.fetch_add(1, Ordering::AcqRel);
        if queued >= self.capacity || self.health.load(Ordering::Acquire) == STOPPED {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        let full = {
            let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
            staged.push(record);
            (staged.len() >= self.batch_size).then(|| std::mem::take(&mut *staged))
        };
        if let Some(rows) = full {
            self.addr.do_send(Rows(rows));
        }
    }

    /// `None` while the writer runs and its last write succeeded; else why not.
    pub fn unhealthy(&self) -> Option<&'static str> {
        match self.health.load(Ordering::Acquire) {
            RUNNING => None,
            FAILING => Some("request log writes are failing"),
            _ => Some("request log writer is not running"),
        }
    }

    /// Writes every queued row and stops the writer (graceful shutdown). Rows pushed before this
    /// call are in the database when it returns.
    pub async fn shutdown(&self) {
        if let Some(t) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        let _ = self.addr.send(Flush { last: true }).await;
        self.health.store(STOPPED, Ordering::Release);
    }
}

pub struct RequestLogActor {
    /// `None` when the connection could not move to this thread (a restarted actor).
    conn: Option<Connection>,
    /// Rows pushed but not yet sent over (taken on every flush).
    staged: Arc<Mutex<Vec<RequestRecord>>>,
    config: RequestLogConfig,
    buffer: Vec<RequestRecord>,
    pending: Arc<AtomicUsize>,
    health: Arc<AtomicU8>,
    dropped: IntCounter,
    last_purge: Instant,
}

impl RequestLogActor {
    /// Writes the buffer. On failure the rows stay buffered for the next flush (the queue bound
    /// still holds: they count as pending) unless this is the last flush.
    fn flush(&mut self, last: bool) {
        if self.buffer.is_empty() {
            return;
        }
        let n = self.buffer.len();
        let result = match &mut self.conn {
            Some(conn) => insert(conn, &self.buffer).map_err(|e| e.to_string()),
            None => Err("no database connection".into()),
        };
        match result {
            Ok(()) => {
                self.health.store(RUNNING, Ordering::Release);
            }
            Err(e) => {
                self.health.store(FAILING, Ordering::Release);
                tracing::error!(rows = n, error = %e, "request log write failed");
                if !last {
                    return;
                }
                self.dropped.inc_by(n as u64);
            }
        }
        self.buffer.clear();
        self.pending.fetch_sub(n, Ordering::AcqRel);
    }

    fn purge_if_due(&mut self) {
        let days = self.config.retention_days;
        if days == 0 || self.last_purge.elapsed() < PURGE_EVERY {
            return;
        }
        self.last_purge = Instant::now();
        if let Some(conn) = &self.conn {
            match purge(conn, days, SystemTime::now()) {
                Ok(n) => tracing::info!(rows = n, days, "request log: purged old rows"),
                Err(e) => tracing::error!(error = %e, "request log purge failed"),
            }
        }
    }
}

impl Actor for RequestLogActor {
    type Context = SyncContext<Self>;

    fn stopped(&mut self, _ctx: &mut SyncContext<Self>) {
        self.flush(true);
        self.health.store(STOPPED, Ordering::Release);
    }
}

impl Drop for RequestLogActor {
    /// A panic on the writer thread drops the actor without `stopped`: readiness must see it.
    fn drop(&mut self) {
        self.health.store(STOPPED, Ordering::Release);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Rows(Vec<RequestRecord>);

/// Write what is buffered; `last` also gives up on rows that cannot be written.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush {
    last: bool,
}

impl Handler<Rows> for RequestLogActor {
    type Result = ();

    fn handle(&mut self, Rows(rows): Rows, _ctx: &mut SyncContext<Self>) {
        self.buffer.extend(rows);
        if self.buffer.len() >= self.config.batch_size {
            self.flush(false);
        }
    }
}

impl Handler<Flush> for RequestLogActor {
    type Result = ();

    fn handle(&mut self, msg: Flush, _ctx: &mut SyncContext<Self>) {
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|e| e.into_inner()));
        self.buffer.extend(staged);
        self.flush(msg.last);
        if !msg.last {
            self.purge_if_due();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::record::Endpoint;
    use crate::protocol::anthropic::Usage;

    fn row(key: &str, ts: SystemTime, input: u64, output: u64) -> RequestRecord {
        let mut r = RequestRecord::new(Endpoint::Messages, "req_x", ts);
        r.key_name = Some(key.into());
        r.model = Some("m".into());
        r.usage = Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        };
        r.price = Some(crate::config::Price {
            input: 3.0,
            output: 15.0,
        });
        r.total = Duration::from_millis(120);
        r.upstream = Duration::from_millis(100);
        r
    }

    /// The README's example query, verbatim, on the real schema.
    #[test]
    fn readme_spend_per_key_per_day() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("-- spend per key per day")
            .expect("the README has the example");
        let sql = &readme[start..];
        let sql = &sql[..sql.find("```").expect("the example's code block ends")];

        let mut conn = open(":memory:").unwrap();
        let day = |d: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(d * 86_400 + 3600);
        insert(
            &mut conn,
            &[
                row("alice", day(20_000), 1_000_000, 0),
                row("alice", day(20_000), 0, 1_000_000),
                row("bob", day(20_000), 2_000_000, 0),
                row("alice", day(20_001), 1_000_000, 0),
            ],
        )
        .unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let rows: Vec<(String, String, i64, f64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // Every other SQL example in the README runs on the schema too.
        for block in readme.split("```sql").skip(1) {
            let query = &block[..block.find("```").unwrap()];
            let mut stmt = conn
                .prepare(query)
                .unwrap_or_else(|e| panic!("{query}: {e}"));
            let mut rows = stmt.query([]).unwrap();
            rows.next().unwrap();
        }
        let d0 = timestamp(day(20_000))[..10].to_string();
        let d1 = timestamp(day(20_001))[..10].to_string();
        assert_eq!(
            rows,
            vec![
                (d1, "alice".to_string(), 1, 3.0),
                (d0.clone(), "alice".to_string(), 2, 18.0),
                (d0, "bob".to_string(), 1, 6.0),
            ]
        );
    }

    #[test]
    fn rows_hold_the_record_and_purge_keeps_recent_ones() {
        let mut conn = open(":memory:").unwrap();
        let now = SystemTime::now();
        let old = now - Duration::from_secs(31 * 86_400);
        insert(&mut conn, &[row("k", old, 1, 2), row("k", now, 10, 20)]).unwrap();
        let (n, overhead, cost): (i64, i64, f64) = conn
            .query_row(
                "SELECT count(*), max(overhead_ms), max(cost_usd) FROM requests",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((n, overhead), (2, 20));
        assert!((cost - (10.0 * 3.0 + 20.0 * 15.0) / 1e6).abs() < 1e-12);
        assert_eq!(purge(&conn, 30, now).unwrap(), 1);
        let left: i64 = conn
            .query_row("SELECT input_tokens FROM requests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 10);
    }
}
