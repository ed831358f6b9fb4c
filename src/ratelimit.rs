//! Per-key limits (gateway.md §8): `requests_per_minute` (GCRA, governor keyed limiters, burst =
//! the limit), `tokens_per_minute` (a token bucket that admits while its balance is positive and
//! may go negative: requests are admitted on an estimate and reconciled with the real usage) and
//! `max_concurrent` (a slot held until the response or stream ends).
//!
//! There is one [`RateLimiterActor`] per worker; all of them share one [`RateLimits`], whose
//! governor limiters and atomics are `Sync`. So no request queues on another worker's mailbox.
//!
//! In cluster mode the state lives in Redis instead ([`crate::cluster::limits`]); the in-process
//! limits are then the fallback of `on_redis_error = "local"` while Redis is unavailable.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use prometheus::IntCounterVec;

use crate::api::auth::ApiKey;
use crate::cluster::limits::{SharedLimits, SharedSlot};
use crate::config::LimitsConfig;
use crate::config::OnRedisError;
use crate::error::GatewayError;

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Response headers describing a key's limits (`anthropic-ratelimit-*`).
pub type LimitHeaders = Vec<(&'static str, String)>;

struct KeyState {
    /// What this state was built for: a reload keeps the state of a key whose limits are equal.
    limits: LimitsConfig,
    /// Keys with the same limit share one keyed limiter.
    rpm: Option<(Arc<KeyedLimiter>, u32)>,
    tpm: Option<TokenBucket>,
    max_concurrent: u32,
    in_flight: Arc<AtomicU32>,
}

/// Tokens per minute: refills continuously up to the limit; debits may take it below zero.
struct TokenBucket {
    limit: u64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            state: Mutex::new((limit as f64, Instant::now())),
        }
    }

    fn per_sec(&self) -> f64 {
        self.limit as f64 / 60.0
    }

    /// Refills, then applies `f` to the balance; returns the new balance.
    fn with_balance(&self, f: impl FnOnce(&mut f64)) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.saturating_duration_since(s.1).as_secs_f64() * self.per_sec();
        s.0 = (s.0 + refill).min(self.limit as f64);
        s.1 = now;
        f(&mut s.0);
        s.0
    }

    fn headers(&self, balance: f64, headers: &mut LimitHeaders) {
        let remaining = balance.max(0.0).floor() as u64;
        let until_full =
            Duration::from_secs_f64(((self.limit as f64 - balance) / self.per_sec()).max(0.0));
        push_headers(headers, "tokens", self.limit, remaining, until_full);
    }
}

/// Shared, lock-free limit state for every configured key.
pub struct RateLimits {
    keys: HashMap<String, Arc<KeyState>>,
    clock: DefaultClock,
    /// Cluster mode: the shared state in Redis.
    shared: OnceLock<Arc<SharedLimits>>,
}

impl RateLimits {
    pub fn new<'a>(keys: impl Iterator<Item = &'a Arc<ApiKey>>) -> Self {
        Self::after(None, keys)
    }

    /// The limits of the config generation after `prev`: a key whose limits did not change
    /// keeps its state (a reload refills no bucket); a key whose limits changed starts afresh
    /// but keeps counting the requests it has in flight.
    pub fn after<'a>(
        prev: Option<&RateLimits>,
        keys: impl Iterator<Item = &'a Arc<ApiKey>>,
    ) -> Self {
        let mut by_rate: HashMap<u32, Arc<KeyedLimiter>> = HashMap::new();
        let clock = DefaultClock::default();
        let keys = keys
            .map(|k| {
                let old = prev.and_then(|p| p.keys.get(&k.name));
                if let Some(old) = old.filter(|o| o.limits == k.limits) {
                    return (k.name.clone(), old.clone());
                }
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
                    limits: k.limits.clone(),
                    rpm,
                    tpm: (k.limits.tokens_per_minute > 0)
                        .then(|| TokenBucket::new(k.limits.tokens_per_minute)),
                    max_concurrent: k.limits.max_concurrent,
                    in_flight: old
                        .map_or_else(|| Arc::new(AtomicU32::new(0)), |o| o.in_flight.clone()),
                };
                (k.name.clone(), Arc::new(state))
            })
            .collect();
        Self {
            keys,
            clock,
            shared: OnceLock::new(),
        }
    }

    /// Cluster mode: limits are kept in Redis from now on.
    pub fn set_shared(&self, shared: Arc<SharedLimits>) {
        let _ = self.shared.set(shared);
    }

    pub fn shared(&self) -> Option<&Arc<SharedLimits>> {
        self.shared.get()
    }

    /// Cluster mode while Redis is unavailable: the in-process limits (`local`), or a refusal
    /// (`deny`).
    fn unavailable<T>(
        &self,
        shared: &SharedLimits,
        local: impl FnOnce() -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        match shared.redis().on_error {
            OnRedisError::Local => local(),
            OnRedisError::Deny => Err(Refusal {
                error: GatewayError::Overloaded {
                    message: "shared rate limit state is unavailable".into(),
                    retry_after: Duration::from_secs(1),
                },
                headers: Vec::new(),
                limit: SHARED_STATE,
            }),
        }
    }

    /// Admission in either mode: Redis first in cluster mode.
    pub async fn admit_any(&self, key: &Arc<ApiKey>, estimate: u64) -> Result<Admission, Refusal> {
        let Some(shared) = self.shared() else {
            return self.admit(key, estimate);
        };
        match shared.admit(key, estimate).await {
            Some(result) => result,
            None => self.unavailable(shared, || self.admit(key, estimate)),
        }
    }

    pub async fn admit_request_any(&self, key: &ApiKey) -> Result<LimitHeaders, Refusal> {
        let Some(shared) = self.shared() else {
            return self.admit_request(key);
        };
        match shared.admit_request(key).await {
            Some(result) => result,
            None => self.unavailable(shared, || self.admit_request(key)),
        }
    }

    pub async fn debit_any(&self, key: &ApiKey, tokens: i64) {
        match self.shared() {
            Some(shared) if shared.debit(key, tokens).await => {}
            _ => self.debit(key, tokens),
        }
    }

    /// Takes a concurrency slot, then a request cell, then checks the token balance and debits
    /// `estimate`. The slot is given back if anything is refused.
    pub fn admit(&self, key: &ApiKey, estimate: u64) -> Result<Admission, Refusal> {
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
                return Err(Refusal::new(
                    "max_concurrent",
                    Duration::from_secs(1),
                    Vec::new(),
                ));
            }
            Some(ConcurrencyPermit(Slot::Local(state.in_flight.clone())))
        } else {
            None
        };

        let mut headers = Vec::new();
        self.take_request(state, key, &mut headers)?;
        if let Some(bucket) = &state.tpm {
            let mut admitted = false;
            let balance = bucket.with_balance(|b| {
                if *b > 0.0 {
                    admitted = true;
                    *b -= estimate as f64;
                }
            });
            bucket.headers(balance, &mut headers);
            if !admitted {
                drop(permit);
                let wait = Duration::from_secs_f64((1.0 - balance) / bucket.per_sec());
                return Err(Refusal::new("tokens_per_minute", wait, headers));
            }
        }
        Ok(Admission { permit, headers })
    }

    /// Whether the key's token balance is positive (nested calls check it; they take no request
    /// cell or concurrency slot of their own).
    pub fn tokens_available(&self, key: &ApiKey) -> bool {
        if let Some(shared) = self.shared() {
            if !shared.redis().degraded() {
                return shared.tokens_available(key);
            }
        }
        match self.keys.get(&key.name).and_then(|s| s.tpm.as_ref()) {
            Some(bucket) => bucket.with_balance(|_| {}) > 0.0,
            None => true,
        }
    }

    /// Takes one request cell only (`count_tokens` counts toward RPM only, gateway.md §10).
    pub fn admit_request(&self, key: &ApiKey) -> Result<LimitHeaders, Refusal> {
        let mut headers = Vec::new();
        if let Some(state) = self.keys.get(&key.name) {
            self.take_request(state, key, &mut headers)?;
        }
        Ok(headers)
    }

    /// One cell of the key's requests-per-minute limiter, with its headers.
    fn take_request(
        &self,
        state: &KeyState,
        key: &ApiKey,
        headers: &mut LimitHeaders,
    ) -> Result<(), Refusal> {
        let Some((limiter, limit)) = &state.rpm else {
            return Ok(());
        };
        let period = Duration::from_secs(60) / *limit;
        match limiter.check_key(&key.name) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let until_full = period * (limit - remaining);
                push_headers(
                    headers,
                    "requests",
                    *limit as u64,
                    remaining as u64,
                    until_full,
                );
                Ok(())
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                push_headers(headers, "requests", *limit as u64, 0, period * *limit);
                Err(Refusal::new(
                    "requests_per_minute",
                    wait.max(Duration::from_millis(1)),
                    std::mem::take(headers),
                ))
            }
        }
    }

    /// Reconciles a key's token balance: `tokens` more were used than debited (negative: fewer).
    pub fn debit(&self, key: &ApiKey, tokens: i64) {
        if let Some(bucket) = self.keys.get(&key.name).and_then(|s| s.tpm.as_ref()) {
            bucket.with_balance(|b| *b -= tokens as f64);
        }
    }
}

/// `anthropic-ratelimit-<what>-{limit,remaining,reset}` (`reset` RFC 3339).
pub(crate) fn push_headers(
    headers: &mut LimitHeaders,
    what: &'static str,
    limit: u64,
    remaining: u64,
    until_full: Duration,
) {
    let reset = chrono::DateTime::<chrono::Utc>::from(SystemTime::now() + until_full);
    let names = match what {
        "requests" => [
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ],
        _ => [
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ],
    };
    headers.push((names[0], limit.to_string()));
    headers.push((names[1], remaining.to_string()));
    headers.push((
        names[2],
        reset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ));
}

/// A held concurrency slot; released on drop.
#[derive(Debug)]
pub struct ConcurrencyPermit(Slot);

#[derive(Debug)]
enum Slot {
    Local(Arc<AtomicU32>),
    /// Released by its own drop.
    Shared(#[allow(dead_code)] SharedSlot),
}

impl ConcurrencyPermit {
    pub(crate) fn shared(slot: SharedSlot) -> Self {
        Self(Slot::Shared(slot))
    }
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        if let Slot::Local(n) = &self.0 {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The `limit` of a refusal because the shared state is unavailable (`deny`).
const SHARED_STATE: &str = "shared_state";

#[derive(Debug)]
pub struct Admission {
    pub permit: Option<ConcurrencyPermit>,
    pub headers: LimitHeaders,
}

#[derive(Debug)]
pub struct Refusal {
    pub error: GatewayError,
    pub headers: LimitHeaders,
    /// Which limit refused: `requests_per_minute`, `tokens_per_minute`, `max_concurrent`.
    pub limit: &'static str,
}

impl Refusal {
    pub(crate) fn new(limit: &'static str, retry_after: Duration, headers: LimitHeaders) -> Self {
        Self {
            error: GatewayError::RateLimited {
                message: format!("rate limit exceeded: {limit}"),
                retry_after,
            },
            headers,
            limit,
        }
    }
}

/// The per-worker face of [`RateLimits`].
pub struct RateLimiterActor {
    limits: Arc<RateLimits>,
    /// `gateway_rate_limited_total{key, limit}`.
    refused: IntCounterVec,
}

impl RateLimiterActor {
    pub fn new(limits: Arc<RateLimits>, refused: IntCounterVec) -> Self {
        Self { limits, refused }
    }
}

fn count<T>(refused: &IntCounterVec, key: &ApiKey, result: &Result<T, Refusal>) {
    match result {
        Err(r) if r.limit != SHARED_STATE => refused.with_label_values(&[&key.name, r.limit]).inc(),
        _ => {}
    }
}

impl Actor for RateLimiterActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "Result<Admission, Refusal>")]
pub struct Admit {
    pub key: Arc<ApiKey>,
    /// Estimated tokens, debited at admission and reconciled by [`Debit`].
    pub estimate: u64,
}

impl Handler<Admit> for RateLimiterActor {
    type Result = Response<Result<Admission, Refusal>>;

    fn handle(&mut self, msg: Admit, _ctx: &mut Context<Self>) -> Self::Result {
        if self.limits.shared().is_none() {
            let result = self.limits.admit(&msg.key, msg.estimate);
            count(&self.refused, &msg.key, &result);
            return Response::reply(result);
        }
        let (limits, refused) = (self.limits.clone(), self.refused.clone());
        Response::fut(async move {
            let result = limits.admit_any(&msg.key, msg.estimate).await;
            count(&refused, &msg.key, &result);
            result
        })
    }
}

/// Admission by requests-per-minute alone.
#[derive(Message)]
#[rtype(result = "Result<LimitHeaders, Refusal>")]
pub struct AdmitRequest {
    pub key: Arc<ApiKey>,
}

impl Handler<AdmitRequest> for RateLimiterActor {
    type Result = Response<Result<LimitHeaders, Refusal>>;

    fn handle(&mut self, msg: AdmitRequest, _ctx: &mut Context<Self>) -> Self::Result {
        if self.limits.shared().is_none() {
            let result = self.limits.admit_request(&msg.key);
            count(&self.refused, &msg.key, &result);
            return Response::reply(result);
        }
        let (limits, refused) = (self.limits.clone(), self.refused.clone());
        Response::fut(async move {
            let result = limits.admit_request_any(&msg.key).await;
            count(&refused, &msg.key, &result);
            result
        })
    }
}

/// Real usage minus what was debited so far (after each round and nested call).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Debit {
    pub key: Arc<ApiKey>,
    pub tokens: i64,
}

impl Handler<Debit> for RateLimiterActor {
    type Result = Response<()>;

    fn handle(&mut self, msg: Debit, _ctx: &mut Context<Self>) -> Self::Result {
        if self.limits.shared().is_none() {
            self.limits.debit(&msg.key, msg.tokens);
            return Response::reply(());
        }
        let limits = self.limits.clone();
        Response::fut(async move { limits.debit_any(&msg.key, msg.tokens).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rpm: u32, conc: u32) -> Arc<ApiKey> {
        key_tpm(rpm, conc, 0)
    }

    fn key_tpm(rpm: u32, conc: u32, tpm: u64) -> Arc<ApiKey> {
        Arc::new(ApiKey {
            name: "k".into(),
            allowed_models: None,
            limits: LimitsConfig {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                max_concurrent: conc,
            },
            allow_debug: true,
        })
    }

    #[test]
    fn requests_per_minute_with_headers() {
        let k = key(2, 0);
        let limits = RateLimits::new([&k].into_iter());
        let a = limits.admit(&k, 0).unwrap();
        assert_eq!(
            a.headers[1],
            ("anthropic-ratelimit-requests-remaining", "1".into())
        );
        limits.admit(&k, 0).unwrap();
        let r = limits.admit(&k, 0).unwrap_err();
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
    fn tokens_per_minute_admits_while_positive_and_reconciles() {
        let k = key_tpm(0, 0, 600);
        let limits = RateLimits::new([&k].into_iter());
        let a = limits.admit(&k, 500).unwrap();
        assert!(a
            .headers
            .contains(&("anthropic-ratelimit-tokens-limit", "600".into())));
        assert!(a
            .headers
            .contains(&("anthropic-ratelimit-tokens-remaining", "100".into())));
        // Still positive: admitted, and the balance may go negative.
        limits.admit(&k, 500).unwrap();
        let r = limits.admit(&k, 1).unwrap_err();
        assert_eq!(
            r.error.to_string(),
            "rate limit exceeded: tokens_per_minute"
        );
        // About 401 tokens short at 10 tokens/s: ~40 s.
        let wait = r.error.retry_after().unwrap();
        assert!(
            wait > Duration::from_secs(38) && wait < Duration::from_secs(42),
            "{wait:?}"
        );
        // The real usage was smaller: refund, and the key is admitted again.
        limits.debit(&k, -900);
        limits.admit(&k, 1).unwrap();
    }

    #[test]
    fn concurrency_slot_is_held_until_dropped() {
        let k = key(0, 1);
        let limits = RateLimits::new([&k].into_iter());
        let a = limits.admit(&k, 0).unwrap();
        let r = limits.admit(&k, 0).unwrap_err();
        assert_eq!(r.error.to_string(), "rate limit exceeded: max_concurrent");
        drop(a);
        limits.admit(&k, 0).unwrap();
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_keys() {
        let k = key(2, 1);
        let limits = RateLimits::new([&k].into_iter());
        let held = limits.admit(&k, 0).unwrap();
        // The same limits: the one request cell taken and the slot held carry over.
        let same = RateLimits::after(Some(&limits), [&key(2, 1)].into_iter());
        assert_eq!(
            same.admit(&k, 0).unwrap_err().limit,
            "max_concurrent",
            "the slot held before the reload still counts"
        );
        drop(held);
        same.admit(&k, 0).unwrap();
        assert_eq!(same.admit(&k, 0).unwrap_err().limit, "requests_per_minute");
        // A changed limit starts a fresh limiter.
        let changed_key = key(5, 1);
        let changed = RateLimits::after(Some(&same), [&changed_key].into_iter());
        changed.admit(&changed_key, 0).unwrap();
    }
}
