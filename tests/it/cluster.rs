//! Cluster mode: three real gateway binaries sharing one Redis (a fresh `key_prefix` per test)
//! and one PostgreSQL database (a fresh table per test). Redis and PostgreSQL come from
//! `AIGW_TEST_REDIS_URL` / `AIGW_TEST_POSTGRES_URL` (defaults: the machine's local servers);
//! a test fails, saying so, when one is unreachable. Outages use a private `redis-server` and a
//! loopback TCP proxy in front of PostgreSQL.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::binary::{spawn_binary_logged, Logs};
use crate::common::*;

fn redis_url() -> String {
    std::env::var("AIGW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn postgres_url() -> String {
    std::env::var("AIGW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A name no other test (or earlier run) uses: for key prefixes and tables.
fn fresh(what: &str) -> String {
    let dir = temp_path(what);
    let n = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{n}_{t}").to_lowercase()
}

/// Fails loudly when Redis at `url` does not answer.
async fn require_redis(url: &str) -> redis::aio::MultiplexedConnection {
    let fail =
        |e: String| -> ! { panic!("Redis is unreachable at {url} (set AIGW_TEST_REDIS_URL): {e}") };
    let client = redis::Client::open(url).unwrap_or_else(|e| fail(e.to_string()));
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| fail("no answer".into()))
    .unwrap_or_else(|e| fail(e.to_string()));
    conn
}

/// Runs `sql` on PostgreSQL (on a plain thread: the client blocks) and returns the first row's
/// first column as i64s; fails loudly when PostgreSQL is unreachable.
fn pg_query(sql: &str) -> Vec<i64> {
    let (url, sql) = (postgres_url(), sql.to_string());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| {
            panic!("PostgreSQL is unreachable at {url} (set AIGW_TEST_POSTGRES_URL): {e}")
        });
        let row = client
            .query_one(&sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        (0..row.len()).map(|i| row.get::<_, i64>(i)).collect()
    })
    .join()
    .unwrap()
}

fn pg_exec(sql: &str) {
    let (url, sql) = (postgres_url(), sql.to_string());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| {
            panic!("PostgreSQL is unreachable at {url} (set AIGW_TEST_POSTGRES_URL): {e}")
        });
        client.batch_execute(&sql).unwrap();
    })
    .join()
    .unwrap()
}

/// A free loopback port (bound, then released for a server to take).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One gateway replica: the real binary, with its log lines kept.
struct Replica {
    child: Child,
    url: String,
    logs: Logs,
}

impl Replica {
    async fn start(config: &str, dir: &std::path::Path, n: usize) -> Self {
        let path = dir.join(format!("replica{n}.toml"));
        std::fs::write(&path, config).unwrap();
        let (child, url, logs) =
            spawn_binary_logged(&["--config", path.to_str().unwrap()], dir).await;
        Self { child, url, logs }
    }

    fn log_count(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The line reaches the log reader a little after the binary wrote it: wait for it, then
    /// check it came once (once per outage, not once per request).
    async fn logged_once(&self, needle: &str) {
        until(needle, Duration::from_secs(5), || async {
            self.log_count(needle) >= 1
        })
        .await;
        assert_eq!(self.log_count(needle), 1, "{needle}: logged once");
    }

    async fn readyz(&self) -> (u16, Value) {
        let res = get(&self.url, "/readyz").await;
        (res.status, res.json())
    }

    async fn metric(&self, name: &str) -> f64 {
        let res = get(&self.url, "/metrics").await;
        String::from_utf8_lossy(&res.body)
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// SIGTERM, then waits for a clean exit (the request log is flushed by then).
    async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let mut child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "exit status {status:?}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `check` holds, polling; panics with `what` after `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What a test's replicas are configured with.
struct Cluster {
    redis_url: String,
    prefix: String,
    on_redis_error: &'static str,
    lease_secs: u64,
    /// `[[auth.keys]]` entries after the limited key's name/secret: its limits.
    limits: &'static str,
    /// `Some(table)`: the request log goes to PostgreSQL (through `postgres_url`).
    postgres: Option<(String, String)>,
    chunk_delay_ms: u64,
    breaker: &'static str,
}

/// The second key: no limits, so it never touches Redis.
const FREE_KEY: &str = "sk-free-key";

impl Cluster {
    fn new(limits: &'static str) -> Self {
        Self {
            redis_url: redis_url(),
            prefix: fresh("prefix"),
            on_redis_error: "local",
            lease_secs: 30,
            limits,
            postgres: None,
            chunk_delay_ms: 0,
            breaker: "",
        }
    }

    fn config(&self, dir: &std::path::Path, n: usize, upstream: Option<&str>) -> String {
        let request_log = match &self.postgres {
            Some((url, table)) => format!(
                "backend = \"postgres\"\npostgres_url = \"{url}\"\npostgres_table = \"{table}\"\nflush_interval_ms = 50\n"
            ),
            None => format!("path = \"{}\"\n", dir.join(format!("log{n}.sqlite")).display()),
        };
        let upstream = upstream.map_or(String::new(), |u| {
            format!(
                "[[providers]]\nname = \"up\"\nkind = \"anthropic\"\nbase_url = \"{u}\"\n\
                 [[models]]\nid = \"up\"\ndeployments = [{{ provider = \"up\", model = \"claude-x\" }}]\n"
            )
        });
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[[auth.keys]]
name = "limited"
secret_sha256 = "{hash}"
{limits}

[[auth.keys]]
name = "free"
secret_sha256 = "{free}"

[[providers]]
name = "mock"
kind = "mock"
chunk_chars = 4
chunk_delay_ms = {delay}

[[models]]
id = "m"
deployments = [{{ provider = "mock", model = "x" }}]

{upstream}
[circuit_breaker]
{breaker}

[cluster]
redis_url = "{redis}"
key_prefix = "{prefix}"
on_redis_error = "{mode}"
lease_secs = {lease}

[request_log]
{request_log}"#,
            hash = key_hash(KEY),
            free = key_hash(FREE_KEY),
            limits = self.limits,
            delay = self.chunk_delay_ms,
            breaker = self.breaker,
            redis = self.redis_url,
            prefix = self.prefix,
            mode = self.on_redis_error,
            lease = self.lease_secs,
        )
    }

    /// Starts `n` replicas and waits until each reads shared state from Redis.
    async fn start(&self, n: usize, upstream: Option<&str>) -> (PathBuf, Vec<Replica>) {
        let (dir, replicas) = self.spawn(n, upstream).await;
        for r in &replicas {
            until("replica reaches Redis", Duration::from_secs(10), || async {
                r.readyz().await == (200, json!({"status": "ready"}))
            })
            .await;
        }
        (dir, replicas)
    }

    /// Starts `n` replicas without waiting for them to be ready.
    async fn spawn(&self, n: usize, upstream: Option<&str>) -> (PathBuf, Vec<Replica>) {
        require_redis(&self.redis_url).await;
        let dir = temp_path("cluster");
        std::fs::create_dir_all(&dir).unwrap();
        let mut replicas = Vec::new();
        for i in 0..n {
            replicas.push(Replica::start(&self.config(&dir, i, upstream), &dir, i).await);
        }
        (dir, replicas)
    }
}

fn small(stream: bool) -> Value {
    json!({"model": "m", "max_tokens": 16, "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
}

#[actix_web::test]
async fn requests_per_minute_is_exact_across_replicas_and_every_row_lands_in_postgres() {
    let table = fresh("requests");
    let mut c = Cluster::new("requests_per_minute = 30");
    c.postgres = Some((postgres_url(), table.clone()));
    pg_exec(&format!("DROP TABLE IF EXISTS {table}"));
    let (_dir, replicas) = c.start(3, None).await;

    // All at once, so the 90 arrive within the 2 s in which one cell refills.
    let body = small(false);
    let started = Instant::now();
    let sends = (0..90).map(|i| post_as(&replicas[i % 3].url, KEY, &body));
    let responses = futures_util::future::join_all(sends).await;
    let elapsed = started.elapsed();
    let mut remaining = Vec::new();
    let mut refused = 0;
    for res in &responses {
        match res.status {
            200 => {
                assert_eq!(res.header("anthropic-ratelimit-requests-limit"), Some("30"));
                let left: u32 = res
                    .header("anthropic-ratelimit-requests-remaining")
                    .unwrap()
                    .parse()
                    .unwrap();
                remaining.push(left);
            }
            _ => {
                let v = res.assert_error(429, "rate_limit_error");
                assert!(v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("requests_per_minute"));
                let wait: u64 = res.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=3).contains(&wait), "one cell frees every 2 s: {wait}");
                refused += 1;
            }
        }
    }
    let admitted = remaining.len();
    if elapsed < Duration::from_millis(1900) {
        assert_eq!((admitted, refused), (30, 60));
        // One shared count, whichever replica answered: 29, 28, ... 0, each once.
        remaining.sort_unstable();
        assert_eq!(remaining, (0..30).collect::<Vec<_>>());
    } else {
        // A very slow machine: a cell refilled every 2 s since the first request.
        let refills = (elapsed.as_millis() / 2000 + 1) as usize;
        assert!(
            (30..=30 + refills).contains(&admitted),
            "{admitted} admitted in {elapsed:?}"
        );
    }

    for r in replicas {
        r.stop().await;
    }
    let counts = pg_query(&format!(
        "SELECT count(*), count(*) FILTER (WHERE status = 200), \
         count(*) FILTER (WHERE status = 429 AND error_type = 'rate_limit_error'), \
         count(DISTINCT request_id) FROM {table}"
    ));
    assert_eq!(counts, vec![90, admitted as i64, refused, 90]);
    // Proper types: timestamps, booleans, bigints.
    let typed = pg_query(&format!(
        "SELECT count(*) FILTER (WHERE ts > now() - interval '1 hour' AND stream = false \
         AND input_tokens > 0 AND overhead_ms = total_ms - upstream_ms) FROM {table} WHERE status = 200"
    ));
    assert_eq!(typed, vec![admitted as i64]);
    // The README's PostgreSQL queries run on the real table.
    let readme = include_str!("../../README.md");
    for block in readme.split("```postgresql").skip(1) {
        let query =
            block[..block.find("```").unwrap()].replace("FROM requests", &format!("FROM {table}"));
        let counted = format!(
            "SELECT count(*) FROM ({}) q",
            query.trim().trim_end_matches(';')
        );
        assert!(pg_query(&counted)[0] >= 1, "{query}");
    }
    pg_exec(&format!("DROP TABLE {table}"));
}

/// Opens a stream and returns it once its head (200) is here.
async fn open_stream(url: &str, key: &str, body: &Value) -> awc::ClientResponse {
    let res = client()
        .post(format!("{url}/v1/messages"))
        .insert_header(("x-api-key", key))
        .send_body(body.to_string())
        .await
        .expect("stream head");
    assert_eq!(res.status(), 200);
    res
}

/// A stream of about `chunks` mock chunks (4 characters each).
fn slow_stream(chunks: usize) -> Value {
    json!({"model": "m", "max_tokens": 1024, "stream": true,
        "messages": [{"role": "user", "content": "x".repeat(chunks * 4)}]})
}

#[actix_web::test]
async fn max_concurrent_holds_across_replicas_with_slow_streams() {
    let mut c = Cluster::new("max_concurrent = 2");
    c.chunk_delay_ms = 40;
    let (_dir, replicas) = c.start(3, None).await;
    let mut first = open_stream(&replicas[0].url, KEY, &slow_stream(40)).await;
    let _second = open_stream(&replicas[1].url, KEY, &slow_stream(200)).await;
    for r in &replicas {
        let res = post_as(&r.url, KEY, &small(false)).await;
        let v = res.assert_error(429, "rate_limit_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_concurrent"));
    }
    // The key without limits is not held back (and costs no Redis call).
    assert_eq!(
        post_as(&replicas[2].url, FREE_KEY, &small(false))
            .await
            .status,
        200
    );
    // The first stream ends: its slot is released, and another replica may take it.
    let done = collect(&mut first).await;
    assert_eq!(
        assert_stream_grammar(&done.events())
            .last()
            .map(String::as_str),
        Some("message_stop")
    );
    until(
        "the released slot is free",
        Duration::from_secs(5),
        || async { post_as(&replicas[2].url, KEY, &small(false)).await.status == 200 },
    )
    .await;
}

#[actix_web::test]
async fn tokens_per_minute_holds_across_replicas() {
    let c = Cluster::new("tokens_per_minute = 100");
    let (_dir, replicas) = c.start(3, None).await;
    // About 200 tokens: admitted while the shared balance is positive, which it then is not.
    let big = json!({"model": "m", "max_tokens": 16,
        "messages": [{"role": "user", "content": "many words here ".repeat(60)}]});
    let res = post_as(&replicas[0].url, KEY, &big).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("anthropic-ratelimit-tokens-limit"), Some("100"));
    assert_eq!(
        res.header("anthropic-ratelimit-tokens-remaining"),
        Some("0")
    );
    for r in &replicas[1..] {
        let res = post_as(&r.url, KEY, &small(false)).await;
        let v = res.assert_error(429, "rate_limit_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens_per_minute"));
        assert_eq!(
            res.header("anthropic-ratelimit-tokens-remaining"),
            Some("0")
        );
        let wait: u64 = res.header("retry-after").unwrap().parse().unwrap();
        // Over 100 tokens short at 100 a minute: about a minute or more.
        assert!(wait >= 50, "{wait}");
    }
}

#[actix_web::test]
async fn slots_of_a_sigkilled_replica_free_within_the_lease() {
    let mut c = Cluster::new("max_concurrent = 1");
    c.lease_secs = 2;
    c.chunk_delay_ms = 100;
    let (_dir, replicas) = c.start(3, None).await;
    let _stream = open_stream(&replicas[0].url, KEY, &slow_stream(300)).await;
    replicas[0].signal(libc::SIGKILL);
    let killed = Instant::now();
    // The dead replica cannot release its slot: it is still held...
    let res = post_as(&replicas[1].url, KEY, &small(false)).await;
    res.assert_error(429, "rate_limit_error");
    // ...until its lease runs out.
    until(
        "the dead replica's slot frees",
        Duration::from_secs(10),
        || async { post_as(&replicas[2].url, KEY, &small(false)).await.status == 200 },
    )
    .await;
    let freed = killed.elapsed();
    assert!(
        freed <= Duration::from_millis(2000 + 1500),
        "freed {freed:?} after the kill, lease 2 s"
    );
}

/// A private `redis-server` on an ephemeral port, for outages.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start() -> Self {
        let mut r = Self {
            port: free_port(),
            child: None,
        };
        r.restart().await;
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server cannot start (is it installed?): {e}"));
        self.child = Some(child);
        let url = self.url();
        until(
            "the private redis-server answers",
            Duration::from_secs(10),
            || {
                let url = url.clone();
                async move {
                    let Ok(client) = redis::Client::open(url) else {
                        return false;
                    };
                    client.get_multiplexed_async_connection().await.is_ok()
                }
            },
        )
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

const UNAVAILABLE_LOG: &str = "shared state (Redis) unavailable";

#[actix_web::test]
async fn redis_outage_in_local_mode_falls_back_then_shares_again() {
    let mut redis = PrivateRedis::start().await;
    let mut c = Cluster::new("requests_per_minute = 3");
    c.redis_url = redis.url();
    let (_dir, replicas) = c.start(2, None).await;
    let statuses = |n: usize| {
        let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
        async move {
            let mut out = Vec::new();
            for i in 0..n {
                out.push(
                    post_as(&urls[i % urls.len()], KEY, &small(false))
                        .await
                        .status,
                );
            }
            out
        }
    };
    assert_eq!(statuses(4).await, [200, 200, 200, 429], "shared");

    redis.kill();
    // Each replica alone enforces the configured limit, from the first request on.
    for r in &replicas {
        for _ in 0..3 {
            assert_eq!(post_as(&r.url, KEY, &small(false)).await.status, 200);
        }
        post_as(&r.url, KEY, &small(false))
            .await
            .assert_error(429, "rate_limit_error");
        assert_eq!(
            r.readyz().await,
            (
                200,
                json!({"status": "ready", "reasons": ["shared_state_degraded"]})
            )
        );
        assert!(r.metric("gateway_shared_state_errors_total").await >= 1.0);
        r.logged_once(UNAVAILABLE_LOG).await;
    }

    redis.restart().await;
    for r in &replicas {
        until(
            "the replica is back on Redis",
            Duration::from_secs(15),
            || async { r.readyz().await == (200, json!({"status": "ready"})) },
        )
        .await;
    }
    // The new Redis is empty: a fresh shared budget of 3 for both replicas together.
    assert_eq!(statuses(6).await.iter().filter(|s| **s == 200).count(), 3);
}

#[actix_web::test]
async fn redis_outage_in_deny_mode_refuses_what_needs_a_shared_limit() {
    let mut redis = PrivateRedis::start().await;
    let mut c = Cluster::new("requests_per_minute = 100");
    c.redis_url = redis.url();
    c.on_redis_error = "deny";
    let (_dir, replicas) = c.start(2, None).await;
    assert_eq!(
        post_as(&replicas[0].url, KEY, &small(false)).await.status,
        200
    );

    redis.kill();
    for r in &replicas {
        for _ in 0..3 {
            let res = post_as(&r.url, KEY, &small(false)).await;
            res.assert_error(529, "overloaded_error");
            assert_eq!(res.header("x-should-retry"), Some("true"));
        }
        // A key without limits needs nothing shared.
        assert_eq!(post_as(&r.url, FREE_KEY, &small(false)).await.status, 200);
        r.logged_once(UNAVAILABLE_LOG).await;
    }

    redis.restart().await;
    for r in &replicas {
        until("admission works again", Duration::from_secs(15), || async {
            post_as(&r.url, KEY, &small(false)).await.status == 200
        })
        .await;
    }
}

/// A loopback TCP proxy in front of PostgreSQL that can be stopped (every connection cut,
/// nothing listening) and started again on the same port. It runs on its own thread and
/// runtime, so a test blocking on a query never stalls it.
struct Proxy {
    port: u16,
    target: String,
    running: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            std::thread::JoinHandle<()>,
        )>,
    >,
}

impl Proxy {
    fn new(target: String) -> Self {
        Self {
            port: free_port(),
            target,
            running: Mutex::new(None),
        }
    }

    fn start(&self) {
        let listener = StdListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let target = self.target.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    while let Ok((mut inbound, _)) = listener.accept().await {
                        let target = target.clone();
                        tokio::spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await
                            {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task: each socket closes.
            drop(rt);
        });
        *self.running.lock().unwrap() = Some((stop, thread));
    }

    fn stop(&self) {
        if let Some((stop, thread)) = self.running.lock().unwrap().take() {
            let _ = stop.send(());
            thread.join().unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[actix_web::test]
async fn postgres_outage_keeps_rows_queued_until_it_is_back() {
    let table = fresh("outage");
    pg_exec(&format!("DROP TABLE IF EXISTS {table}"));
    let real = url::Url::parse(&postgres_url()).unwrap();
    let target = format!(
        "{}:{}",
        real.host_str().unwrap(),
        real.port().unwrap_or(5432)
    );
    let proxy = Proxy::new(target);
    let mut through = real.clone();
    through.set_port(Some(proxy.port)).unwrap();
    let mut c = Cluster::new("");
    c.postgres = Some((through.to_string(), table.clone()));
    // PostgreSQL is unreachable at start: the gateway serves, and says the log is failing.
    let (_dir, replicas) = c.spawn(1, None).await;
    let r = &replicas[0];
    let failing = (
        503,
        json!({"status": "not_ready", "reasons": ["request log writes are failing"]}),
    );
    until(
        "the writer reports failing at start",
        Duration::from_secs(10),
        || async { r.readyz().await == failing },
    )
    .await;
    assert_eq!(post_as(&r.url, KEY, &small(false)).await.status, 200);
    // Reachable: the writer connects by itself, creates the table, writes the queued row.
    proxy.start();
    until("the writer is ready", Duration::from_secs(15), || async {
        r.readyz().await == (200, json!({"status": "ready"}))
    })
    .await;
    let count = || pg_query(&format!("SELECT count(*) FROM {table}"))[0];
    // The writer creates the table (and its indexes) at start.
    let tables = format!("SELECT count(*) FROM pg_indexes WHERE tablename = '{table}'");
    until(
        "the table and its 4 indexes exist",
        Duration::from_secs(10),
        || async { pg_query(&tables)[0] == 4 },
    )
    .await;

    for _ in 0..4 {
        assert_eq!(post_as(&r.url, KEY, &small(false)).await.status, 200);
    }
    until("5 rows", Duration::from_secs(10), || async { count() == 5 }).await;

    proxy.stop();
    for _ in 0..5 {
        assert_eq!(post_as(&r.url, KEY, &small(false)).await.status, 200);
    }
    until(
        "the writer reports failing",
        Duration::from_secs(10),
        || async {
            r.readyz().await
                == (
                    503,
                    json!({"status": "not_ready", "reasons": ["request log writes are failing"]}),
                )
        },
    )
    .await;
    assert_eq!(count(), 5);

    proxy.start();
    let deadline = Instant::now() + Duration::from_secs(15);
    while count() != 10 {
        assert!(
            Instant::now() < deadline,
            "the queued rows land; {} now; log: {:#?}",
            count(),
            r.logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    until("the writer is healthy", Duration::from_secs(10), || async {
        r.readyz().await == (200, json!({"status": "ready"}))
    })
    .await;
    assert_eq!(r.metric("gateway_request_log_dropped_total").await, 0.0);
    proxy.stop();
    pg_exec(&format!("DROP TABLE {table}"));
}

/// The shared health hash, read straight from Redis.
async fn health_entries(c: &Cluster) -> std::collections::HashMap<String, String> {
    let mut conn = require_redis(&c.redis_url).await;
    redis::AsyncCommands::hgetall(&mut conn, format!("{}:{{health}}:deployments", c.prefix))
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_breaker_opened_on_one_replica_is_seen_by_the_others_and_probed_once() {
    use crate::common::upstream::{error_body, text_message, MockUpstream, Reply};
    use std::sync::atomic::{AtomicBool, Ordering};
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let upstream = MockUpstream::start(Arc::new(move |_| {
        if h.load(Ordering::Acquire) {
            Reply::Json(200, text_message("claude-x", "ok"), vec![])
        } else {
            Reply::Json(500, error_body("api_error", "down"), vec![])
        }
    }));
    let mut c = Cluster::new("");
    c.breaker = "consecutive_failures = 1\ncooldown_secs = 3";
    let (_dir, replicas) = c.start(3, Some(&upstream.url)).await;
    let body = json!({"model": "up", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}]});

    // One failure opens the circuit on replica 0 (its retries see it open).
    let res = post_as(&replicas[0].url, KEY, &body).await;
    assert!(res.status >= 500, "{}", res.status);
    assert_eq!(upstream.count(), 1);
    until(
        "replica 0 publishes the open circuit",
        Duration::from_secs(5),
        || async { health_entries(&c).await.contains_key("up/up/claude-x") },
    )
    .await;
    let published = Instant::now();
    // The others stop within 1 s: they refuse without calling the upstream.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(published.elapsed())).await;
    for r in &replicas[1..] {
        post_as(&r.url, KEY, &body)
            .await
            .assert_error(529, "overloaded_error");
    }
    assert_eq!(
        upstream.count(),
        1,
        "no other replica called the open deployment"
    );

    // Past the cool-down the cluster is half-open: one probe, whichever replica claims it.
    healthy.store(true, Ordering::Release);
    let mut i = 0;
    until(
        "the cluster's probe succeeds",
        Duration::from_secs(15),
        || {
            i += 1;
            let url = replicas[i % 3].url.clone();
            let body = body.clone();
            async move { post_as(&url, KEY, &body).await.status == 200 }
        },
    )
    .await;
    assert_eq!(upstream.count(), 2, "exactly one probe went upstream");
    // Closed everywhere.
    for r in &replicas {
        until(
            "the replica sees the circuit closed",
            Duration::from_secs(5),
            || async { post_as(&r.url, KEY, &body).await.status == 200 },
        )
        .await;
    }
    assert!(health_entries(&c).await.is_empty());
    upstream.stop().await;
}

#[actix_web::test]
async fn an_upstream_429_cool_down_is_shared() {
    use crate::common::upstream::{error_body, MockUpstream, Reply};
    let upstream = MockUpstream::start(Arc::new(|_| {
        Reply::Json(
            429,
            error_body("rate_limit_error", "slow down"),
            vec![("retry-after".into(), "30".into())],
        )
    }));
    let mut c = Cluster::new("");
    // The breaker would not open on one failure: only the cool-down sets the deployment aside.
    c.breaker = "consecutive_failures = 50";
    let (_dir, replicas) = c.start(3, Some(&upstream.url)).await;
    let body = json!({"model": "up", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}]});
    post_as(&replicas[0].url, KEY, &body).await;
    let calls = upstream.count();
    until(
        "replica 0 publishes the cool-down",
        Duration::from_secs(5),
        || async {
            health_entries(&c)
                .await
                .get("up/up/claude-x")
                .is_some_and(|v| v.starts_with("r:"))
        },
    )
    .await;
    let published = Instant::now();
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(published.elapsed())).await;
    for r in &replicas[1..] {
        let res = post_as(&r.url, KEY, &body).await;
        assert!(res.status == 529 || res.status == 429, "{}", res.status);
    }
    assert_eq!(
        upstream.count(),
        calls,
        "the others did not call it during the cool-down"
    );
    upstream.stop().await;
}

/// The key's shared token balance, read straight from Redis.
async fn shared_balance(c: &Cluster) -> f64 {
    let mut conn = require_redis(&c.redis_url).await;
    let b: Option<String> =
        redis::AsyncCommands::hget(&mut conn, format!("{}:{{limited}}:tpm", c.prefix), "b")
            .await
            .unwrap();
    b.expect("the bucket exists").parse().unwrap()
}

#[actix_web::test]
async fn token_usage_is_reconciled_in_the_shared_bucket() {
    let c = Cluster::new("tokens_per_minute = 600");
    let (_dir, replicas) = c.start(3, None).await;
    // The mock echoes the prompt: real usage (input + output) is well above the estimate.
    let body = json!({"model": "m", "max_tokens": 512,
        "messages": [{"role": "user", "content": "some words ".repeat(40)}]});
    let res = post_as(&replicas[0].url, KEY, &body).await;
    assert_eq!(res.status, 200);
    let after_estimate: f64 = res
        .header("anthropic-ratelimit-tokens-remaining")
        .unwrap()
        .parse()
        .unwrap();
    let usage = &res.json()["usage"];
    let used =
        (usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()) as f64;
    let estimate = 600.0 - after_estimate;
    assert!(used > estimate + 30.0, "used {used}, estimated {estimate}");
    // The end of the request debits the difference: the shared balance follows the real usage
    // (give or take the refill, 10 tokens a second).
    until(
        "the usage is reconciled",
        Duration::from_secs(5),
        || async { (shared_balance(&c).await - (600.0 - used)).abs() < 20.0 },
    )
    .await;
    // Another replica sees it: its estimate is debited from the reconciled balance.
    let res = post_as(&replicas[1].url, KEY, &body).await;
    assert_eq!(res.status, 200);
    let remaining: f64 = res
        .header("anthropic-ratelimit-tokens-remaining")
        .unwrap()
        .parse()
        .unwrap();
    let expected = 600.0 - used - estimate;
    assert!(
        (expected - 1.0..expected + 30.0).contains(&remaining),
        "remaining {remaining}, expected about {expected}"
    );
}
