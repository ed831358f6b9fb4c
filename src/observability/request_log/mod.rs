//! The request log (gateway.md §11): one row per API request, written by a [`RequestLogActor`]
//! on its own thread (a `SyncArbiter`: database calls block) in batches, off the hot path. The
//! rows go to SQLite ([`sqlite`], the default) or PostgreSQL ([`postgres`], several replicas
//! sharing one table); both are a [`Backend`] behind the same queue and writer.
//!
//! A request never waits for the log. [`RequestLog::push`] is a counter check and a mailbox send:
//! when `queue_capacity` rows are already waiting to be written, the row is dropped and
//! `gateway_request_log_dropped_total` rises. The actor writes when `batch_size` rows are
//! buffered, on a timer every `flush_interval_ms`, and on shutdown; rows older than
//! `retention_days` are purged at start and then daily. A failed write keeps its rows queued and
//! is retried with a growing delay, so a database outage loses only what overflows the queue.

pub mod postgres;
pub mod sqlite;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use prometheus::IntCounter;

use super::record::RequestRecord;
use crate::config::{RequestLogBackend, RequestLogConfig, Secret};

pub use sqlite::{insert, open, purge, timestamp, SCHEMA};

const PURGE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// The retry delays after a failed write: doubled from the first up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where rows are written. Calls block; they run on the writer thread only.
pub trait Backend: Send + 'static {
    /// Writes rows in one transaction: all or none.
    fn insert(&mut self, rows: &[RequestRecord]) -> Result<(), String>;
    /// Deletes rows older than `cutoff`; returns how many.
    fn purge(&mut self, cutoff: SystemTime) -> Result<u64, String>;
    /// Makes sure the database can be written (connects, creates the table): at start, and
    /// while writes fail with nothing to write, so readiness recovers on its own.
    fn ready(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The columns after `id`, in order, as both backends name them.
pub const COLUMNS: [&str; 32] = [
    "ts",
    "request_id",
    "endpoint",
    "key_name",
    "session_id",
    "user_id",
    "model",
    "deployment",
    "provider",
    "upstream_model",
    "stream",
    "status",
    "error_type",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "web_search_requests",
    "web_fetch_requests",
    "datetime_requests",
    "advisor_requests",
    "image_generation_requests",
    "rounds",
    "attempts",
    "total_ms",
    "ttft_ms",
    "upstream_ms",
    "overhead_ms",
    "cost_usd",
    "request_body",
    "response_body",
];

/// One column's value, typed once here; each backend maps it to its own SQL type.
#[derive(Debug, Clone, PartialEq)]
pub enum Column<'a> {
    Time(SystemTime),
    Text(Option<&'a str>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(bool),
    /// A JSON document (the redacted bodies), kept as text by SQLite.
    Json(Option<&'a str>),
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// A record as the row's values, in [`COLUMNS`] order.
pub fn columns(r: &RequestRecord) -> [Column<'_>; 32] {
    use Column::*;
    let total = ms(r.total);
    let upstream = ms(r.upstream);
    let tools = &r.server_tool_use;
    let u = &r.usage;
    let n = |v: u64| Int(Some(v as i64));
    [
        Time(r.ts),
        Text(Some(&r.request_id)),
        Text(Some(r.endpoint.as_str())),
        Text(r.key_name.as_deref()),
        Text(r.session_id.as_deref()),
        Text(r.user_id.as_deref()),
        Text(
            r.model
                .as_ref()
                .or(r.requested_model.as_ref())
                .map(|s| s.as_str()),
        ),
        Text(r.deployment.as_deref()),
        Text(r.provider.as_deref()),
        Text(r.upstream_model.as_deref()),
        Bool(r.stream),
        n(u64::from(r.status)),
        Text(r.error_type.as_deref()),
        Text(r.stop_reason.as_deref()),
        n(u.input_tokens),
        n(u.output_tokens),
        n(u.cache_creation_input_tokens),
        n(u.cache_read_input_tokens),
        n(tools.web_search_requests),
        n(tools.web_fetch_requests),
        n(tools.datetime_requests),
        n(tools.advisor_requests),
        n(tools.image_generation_requests),
        n(u64::from(r.rounds)),
        n(r.attempts.len() as u64),
        Int(Some(total)),
        Int(r.ttft.map(ms)),
        Int(Some(upstream)),
        // From the rounded figures, so the three columns always add up.
        Int(Some((total - upstream).max(0))),
        Real(r.cost_usd()),
        Json(r.request_body.as_deref()),
        Json(r.response_body.as_deref()),
    ]
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
pub enum OpenError {
    #[error("request_log.path {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    /// Never carries the URL (it may hold a password).
    #[error("request_log.postgres_url: {0}")]
    Postgres(&'static str),
}

impl RequestLog {
    /// Opens the backend and starts the writer thread and its flush timer. Must run inside an
    /// actix system. A bad SQLite path fails here; PostgreSQL is connected (and its table
    /// created) by the writer, which retries until the server answers.
    pub fn start(
        config: &RequestLogConfig,
        postgres_url: Option<&Secret>,
        dropped: IntCounter,
    ) -> Result<Self, OpenError> {
        let backend: Box<dyn Backend> = match (config.backend, postgres_url) {
            (RequestLogBackend::Postgres, Some(url)) => Box::new(
                self::postgres::Postgres::new(url, &config.postgres_table)
                    .map_err(OpenError::Postgres)?,
            ),
            _ => {
                let err = |source| OpenError::Sqlite {
                    path: config.path.clone(),
                    source,
                };
                Box::new(sqlite::Sqlite(open(&config.path).map_err(err)?))
            }
        };
        Self::start_with(config, backend, dropped)
    }

    /// Starts the writer on `backend`; purges old rows first (on the writer thread).
    pub fn start_with(
        config: &RequestLogConfig,
        backend: Box<dyn Backend>,
        dropped: IntCounter,
    ) -> Result<Self, OpenError> {
        let pending = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU8::new(RUNNING));
        let staged = Arc::new(Mutex::new(Vec::with_capacity(config.batch_size)));
        // The factory runs once, on the writer thread; the backend moves there.
        let backend = Mutex::new(Some(backend));
        let actor_config = config.clone();
        let (p, h, d, st) = (
            pending.clone(),
            health.clone(),
            dropped.clone(),
            staged.clone(),
        );
        let addr = SyncArbiter::start(1, move || {
            let mut actor = RequestLogActor {
                backend: backend.lock().unwrap_or_else(|e| e.into_inner()).take(),
                staged: st.clone(),
                config: actor_config.clone(),
                buffer: Vec::with_capacity(actor_config.batch_size),
                pending: p.clone(),
                health: h.clone(),
                dropped: d.clone(),
                last_purge: None,
                retry: None,
            };
            actor.check_ready();
            actor.purge_if_due();
            actor
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

/// A failed database call: why, and whether it starts an outage.
struct Failure {
    message: String,
    first: bool,
}

pub struct RequestLogActor {
    /// `None` when the backend could not move to this thread (a restarted actor).
    backend: Option<Box<dyn Backend>>,
    /// Rows pushed but not yet sent over (taken on every flush).
    staged: Arc<Mutex<Vec<RequestRecord>>>,
    config: RequestLogConfig,
    buffer: Vec<RequestRecord>,
    pending: Arc<AtomicUsize>,
    health: Arc<AtomicU8>,
    dropped: IntCounter,
    /// The last successful purge.
    last_purge: Option<Instant>,
    /// After a failed write: when to try again, and the delay after that.
    retry: Option<(Instant, Duration)>,
}

impl RequestLogActor {
    /// Writes the buffer. On failure the rows stay buffered (the queue bound still holds: they
    /// count as pending) and the next try waits a doubling delay, unless this is the last flush.
    fn flush(&mut self, last: bool) {
        if let Some((at, _)) = self.retry {
            if !last && Instant::now() < at {
                return;
            }
        }
        if self.buffer.is_empty() {
            if self.retry.is_some() && !last {
                self.check_ready();
            }
            return;
        }
        let n = self.buffer.len();
        let result = match &mut self.backend {
            Some(backend) => backend.insert(&self.buffer),
            None => Err("no database connection".into()),
        };
        if let Err(e) = self.settle(result) {
            // Once per outage at error level; the retries after it at debug.
            if e.first || last {
                tracing::error!(rows = n, error = %e.message, "request log write failed");
            } else {
                tracing::debug!(rows = n, error = %e.message, "request log write failed again");
            }
            if !last {
                return;
            }
            self.dropped.inc_by(n as u64);
        }
        self.buffer.clear();
        self.pending.fetch_sub(n, Ordering::AcqRel);
    }

    /// Connects (PostgreSQL) so that readiness says at once when the database is unreachable.
    fn check_ready(&mut self) {
        let Some(backend) = &mut self.backend else {
            return;
        };
        let result = backend.ready();
        if let Err(e) = self.settle(result) {
            if e.first {
                tracing::error!(error = %e.message, "request log database unreachable");
            }
        }
    }

    /// Health and the retry delay after a database call: a success clears both, a failure
    /// sets `FAILING` and doubles the delay.
    fn settle(&mut self, result: Result<(), String>) -> Result<(), Failure> {
        match result {
            Ok(()) => {
                if self.retry.take().is_some() {
                    tracing::info!("request log writes succeed again");
                }
                self.health.store(RUNNING, Ordering::Release);
                Ok(())
            }
            Err(message) => {
                self.health.store(FAILING, Ordering::Release);
                let first = self.retry.is_none();
                let delay = self
                    .retry
                    .map_or(RETRY_FIRST, |(_, d)| (d * 2).min(RETRY_MAX));
                self.retry = Some((Instant::now() + delay, delay));
                Err(Failure { message, first })
            }
        }
    }

    /// Purges rows past `retention_days`: at start, then daily (retried on the next flush when
    /// the database was unreachable).
    fn purge_if_due(&mut self) {
        let days = self.config.retention_days;
        if days == 0 || self.last_purge.is_some_and(|t| t.elapsed() < PURGE_EVERY) {
            return;
        }
        if self.retry.is_some_and(|(at, _)| Instant::now() < at) {
            return;
        }
        let Some(backend) = &mut self.backend else {
            return;
        };
        let cutoff = SystemTime::now() - Duration::from_secs(u64::from(days) * 86_400);
        match backend.purge(cutoff) {
            Ok(n) => {
                self.last_purge = Some(Instant::now());
                if n > 0 {
                    tracing::info!(rows = n, days, "request log: purged old rows");
                }
            }
            Err(e) => tracing::debug!(error = %e, "request log purge failed"),
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
        let readme = include_str!("../../../README.md");
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
