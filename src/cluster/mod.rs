//! Cluster mode (`[cluster]`): several replicas share per-key limits ([`limits`]) and deployment
//! health ([`health`]) through Redis. Opt-in; without `[cluster]` nothing here runs.
//!
//! Every Redis call is bounded by `timeout_ms`. The first failure marks the state *degraded*
//! (logged once, `gateway_shared_state_errors_total` counts every failed call); while degraded no
//! request waits on Redis: admission goes local (or is refused, `on_redis_error = "deny"`) and one
//! background task pings with a doubling delay until Redis answers again.

pub mod health;
pub mod limits;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;

use crate::config::{ClusterConfig, OnRedisError, Secret};

const PROBE_FIRST: Duration = Duration::from_millis(50);
const PROBE_MAX: Duration = Duration::from_secs(2);

/// The connection every replica-shared piece goes through.
pub struct Redis {
    conn: ConnectionManager,
    pub prefix: String,
    pub timeout: Duration,
    pub on_error: OnRedisError,
    pub lease: Duration,
    /// Redis is not answering: calls fail at once until the probe gets through.
    degraded: AtomicBool,
    probing: AtomicBool,
    errors: IntCounter,
}

impl Redis {
    /// Builds the (lazy) connection and starts probing it; degraded until the first answer.
    /// Must run inside a Tokio runtime. The error never repeats the URL.
    pub fn start(
        config: &ClusterConfig,
        url: &Secret,
        errors: IntCounter,
    ) -> Result<Arc<Self>, &'static str> {
        let client = redis::Client::open(url.expose()).map_err(|_| "not a valid redis:// URL")?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            // The probe below retries; the manager itself tries once per failure.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|_| "cannot create the Redis connection")?;
        let redis = Arc::new(Self {
            conn,
            prefix: config.key_prefix.clone(),
            timeout,
            on_error: config.on_redis_error,
            lease: Duration::from_secs(config.lease_secs),
            degraded: AtomicBool::new(true),
            probing: AtomicBool::new(false),
            errors,
        });
        redis.probe();
        Ok(redis)
    }

    /// A connection handle (cheap: the manager multiplexes one connection).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Runs one Redis call, bounded. `None`: Redis is unavailable (degraded, failed or too slow).
    pub async fn call<T>(
        self: &Arc<Self>,
        what: &'static str,
        f: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        if self.degraded() {
            return None;
        }
        let err = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        self.errors.inc();
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(call = what, error = %err, "shared state (Redis) unavailable; degraded until it answers");
        }
        self.probe();
        None
    }

    /// One background task pings with a doubling delay until Redis answers, then leaves
    /// the degraded state.
    fn probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let redis = self.clone();
        actix_rt::spawn(async move {
            let mut delay = PROBE_FIRST;
            let mut first = true;
            loop {
                let mut conn = redis.conn();
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut conn);
                match tokio::time::timeout(Duration::from_secs(1), ping).await {
                    Ok(Ok(_)) => break,
                    _ if first => first = false,
                    _ => redis.errors.inc(),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(PROBE_MAX);
            }
            redis.probing.store(false, Ordering::Release);
            if redis.degraded.swap(false, Ordering::AcqRel) {
                tracing::info!("shared state (Redis) reachable");
            }
        });
    }

    /// `<prefix>:{<tag>}:<what>`: every key of one API key (or deployment) in one hash slot.
    pub fn key(&self, tag: &str, what: &str) -> String {
        format!("{}:{{{tag}}}:{what}", self.prefix)
    }
}
