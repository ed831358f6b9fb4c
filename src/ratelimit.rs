//! Per-key limits (gateway.md §8): `requests_per_minute` (GCRA, governor keyed limiters, burst =
//! the limit) and `max_concurrent` (a slot held until the response or stream ends).
//!
//! There is one [`RateLimiterActor`] per worker; all of them share one [`RateLimits`], whose
//! governor limiters and atomics are `Sync`. So no request queues on another worker's mailbox.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::api::auth::ApiKey;
use crate::error::GatewayError;

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Response headers describing a key's limits (`anthropic-ratelimit-*`).
pub type LimitHeaders = Vec<(&'static str, String)>;

struct KeyState {
    /// Keys with the same limit share one keyed limiter.
    rpm: Option<(Arc<KeyedLimiter>, u32)>,
    max_concurrent: u32,
    in_flight: Arc<AtomicU32>,
}

/// Shared, lock-free limit state for every configured key.
pub struct RateLimits {
    keys: HashMap<String, KeyState>,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new<'a>(keys: impl Iterator<Item = &'a Arc<ApiKey>>) -> Self {
        let mut by_rate: HashMap<u32, Arc<KeyedLimiter>> = HashMap::new();
        let clock = DefaultClock::default();
        let keys = keys
            .map(|k| {
                let rpm = NonZeroU32::new(k.limits.requests_per_minute).map(|n| {
                    let limiter = by_rate
                        .entry(n.get())
                        .or_insert_with(|| {
                            Arc::new(
                                RateLimiter::keyed(Quota::per_minute(n).allow_burst(n))
                                    .with_middleware::<StateInformationMiddleware>(),
                            )
                        })
                        .clone();
                    (limiter, n.get())
                });
                let state = KeyState {
                    rpm,
                    max_concurrent: k.limits.max_concurrent,
                    in_flight: Arc::new(AtomicU32::new(0)),
                };
                (k.name.clone(), state)
            })
            .collect();
        Self { keys, clock }
    }

    /// Takes a concurrency slot, then a request cell. The slot is given back if the cell is refused.
    pub fn admit(&self, key: &ApiKey) -> Result<Admission, Refusal> {
        let Some(state) = self.keys.get(&key.name) else {
            return Ok(Admission {
                permit: None,
                headers: Vec::new(),
            });
        };
        let permit = if state.max_concurrent > 0 {
            let prev = state.in_flight.fetch_add(1, Ordering::AcqRel);
            if prev >= state.max_concurrent {
                state.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal {
                    error: GatewayError::RateLimited {
                        message: "rate limit exceeded: max_concurrent".into(),
                        retry_after: Duration::from_secs(1),
                    },
                    headers: Vec::new(),
                });
            }
            Some(ConcurrencyPermit(state.in_flight.clone()))
        } else {
            None
        };

        let mut headers = Vec::new();
        if let Some((limiter, limit)) = &state.rpm {
            let period = Duration::from_secs(60) / *limit;
            match limiter.check_key(&key.name) {
                Ok(snapshot) => {
                    let remaining = snapshot.remaining_burst_capacity();
                    let until_full = period * (limit - remaining);
                    push_headers(&mut headers, *limit, remaining, until_full);
                }
                Err(not_until) => {
                    drop(permit);
                    let wait = not_until.wait_time_from(self.clock.now());
                    push_headers(&mut headers, *limit, 0, period * *limit);
                    return Err(Refusal {
                        error: GatewayError::RateLimited {
                            message: "rate limit exceeded: requests_per_minute".into(),
                            retry_after: wait.max(Duration::from_millis(1)),
                        },
                        headers,
                    });
                }
            }
        }
        Ok(Admission { permit, headers })
    }
}

fn push_headers(headers: &mut LimitHeaders, limit: u32, remaining: u32, until_full: Duration) {
    let reset = chrono::DateTime::<chrono::Utc>::from(SystemTime::now() + until_full);
    headers.push(("anthropic-ratelimit-requests-limit", limit.to_string()));
    headers.push((
        "anthropic-ratelimit-requests-remaining",
        remaining.to_string(),
    ));
    headers.push((
        "anthropic-ratelimit-requests-reset",
        reset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ));
}

/// A held concurrency slot; released on drop.
#[derive(Debug)]
pub struct ConcurrencyPermit(Arc<AtomicU32>);

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
pub struct Admission {
    pub permit: Option<ConcurrencyPermit>,
    pub headers: LimitHeaders,
}

#[derive(Debug)]
pub struct Refusal {
    pub error: GatewayError,
    pub headers: LimitHeaders,
}

/// The per-worker face of [`RateLimits`].
pub struct RateLimiterActor {
    limits: Arc<RateLimits>,
}

impl RateLimiterActor {
    pub fn new(limits: Arc<RateLimits>) -> Self {
        Self { limits }
    }
}

impl Actor for RateLimiterActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "Result<Admission, Refusal>")]
pub struct Admit {
    pub key: Arc<ApiKey>,
}

impl Handler<Admit> for RateLimiterActor {
    type Result = Result<Admission, Refusal>;

    fn handle(&mut self, msg: Admit, _ctx: &mut Context<Self>) -> Self::Result {
        self.limits.admit(&msg.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitsConfig;

    fn key(rpm: u32, conc: u32) -> Arc<ApiKey> {
        Arc::new(ApiKey {
            name: "k".into(),
            allowed_models: None,
            limits: LimitsConfig {
                requests_per_minute: rpm,
                tokens_per_minute: 0,
                max_concurrent: conc,
            },
            allow_debug: true,
        })
    }

    #[test]
    fn requests_per_minute_with_headers() {
        let k = key(2, 0);
        let limits = RateLimits::new([&k].into_iter());
        let a = limits.admit(&k).unwrap();
        assert_eq!(
            a.headers[1],
            ("anthropic-ratelimit-requests-remaining", "1".into())
        );
        limits.admit(&k).unwrap();
        let r = limits.admit(&k).unwrap_err();
        assert_eq!(
            r.error.to_string(),
            "rate limit exceeded: requests_per_minute"
        );
        let after = r.error.retry_after().unwrap();
        assert!(
            after > Duration::from_secs(25) && after <= Duration::from_secs(30),
            "{after:?}"
        );
    }

    #[test]
    fn concurrency_slot_is_held_until_dropped() {
        let k = key(0, 1);
        let limits = RateLimits::new([&k].into_iter());
        let a = limits.admit(&k).unwrap();
        let r = limits.admit(&k).unwrap_err();
        assert_eq!(r.error.to_string(), "rate limit exceeded: max_concurrent");
        drop(a);
        limits.admit(&k).unwrap();
    }
}
