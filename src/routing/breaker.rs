//! The circuit breaker of one deployment (gateway.md §7.5), shared by every worker: a small mutex
//! per deployment, held for a few instructions, never across an await.
//!
//! Closed → Open after `consecutive_failures` in a row, or a failure ratio ≥ `failure_ratio` over
//! `window_secs` with ≥ `min_requests`. Open for `cooldown_secs`, doubled per re-open up to
//! `max_cooldown_secs`. Then one real request probes (half-open): success closes, failure reopens.
//! A 429 also keeps the deployment aside for its `retry-after` (capped).
//!
//! The probe is a [`ProbeGuard`]: its verdict can only come through it, and a probe dropped
//! without one (a cancelled future, a client gone) frees the slot, so no probe can leak.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::CircuitBreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The `gateway_circuit_state` gauge value.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// What an attempt's end means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    /// A 429: a failure, and the deployment is set aside for `cooldown`.
    RateLimited {
        cooldown: Duration,
    },
    /// The attempt was abandoned (client gone, request over): it says nothing about the deployment.
    Abandoned,
}

/// Whether a deployment may take a request now.
#[derive(Debug)]
pub enum Admission {
    /// Report the verdict with [`CircuitBreaker::record`].
    Yes,
    /// Half-open: this request is the probe; report its verdict through the guard.
    Probe(ProbeGuard),
    /// Open (or rate-limited, or a probe is running) until about this instant.
    No { until: Instant },
}

/// The half-open probe slot, held by the request that probes.
///
/// Dropped without a verdict it records "abandoned": the slot is free again and the
/// deployment's state is unchanged (half-open, so the next request probes). Not a failure: the
/// usual reasons are the caller's (its client left, its own timeout fired), and counting them
/// would let one impatient client keep a healthy deployment open.
#[derive(Debug)]
#[must_use = "dropping the guard abandons the probe"]
pub struct ProbeGuard {
    breaker: Option<Arc<CircuitBreaker>>,
}

impl ProbeGuard {
    /// The probe's verdict: success closes the circuit, failure reopens it.
    pub fn record(mut self, verdict: Verdict, now: Instant) {
        if let Some(b) = self.breaker.take() {
            b.settle_probe(verdict, now);
        }
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(b) = self.breaker.take() {
            b.settle_probe(Verdict::Abandoned, Instant::now());
        }
    }
}

#[derive(Debug)]
struct Bucket {
    second: u64,
    ok: u32,
    failed: u32,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    open_until: Instant,
    probe_in_flight: bool,
    consecutive: u32,
    reopens: u32,
    rate_limited_until: Option<Instant>,
    buckets: Vec<Bucket>,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(config: CircuitBreakerConfig) -> Self {
        let window = config.window_secs.max(1) as usize;
        let now = Instant::now();
        Self {
            config,
            epoch: now,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                open_until: now,
                probe_in_flight: false,
                consecutive: 0,
                reopens: 0,
                rate_limited_until: None,
                buckets: (0..window)
                    .map(|_| Bucket {
                        second: u64::MAX,
                        ok: 0,
                        failed: 0,
                    })
                    .collect(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave it inconsistent in a harmful way.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state as observers see it (an expired open circuit reads as half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        let inner = self.lock();
        match inner.state {
            CircuitState::Open if now >= inner.open_until => CircuitState::HalfOpen,
            s => s,
        }
    }

    /// Whether a request could be sent now, without claiming anything.
    pub fn available(&self, now: Instant) -> Result<(), Instant> {
        let inner = self.lock();
        Self::check(&inner, now)
    }

    fn check(inner: &Inner, now: Instant) -> Result<(), Instant> {
        if let Some(until) = inner.rate_limited_until.filter(|u| *u > now) {
            return Err(until);
        }
        match inner.state {
            CircuitState::Closed => Ok(()),
            CircuitState::Open if now < inner.open_until => Err(inner.open_until),
            _ if inner.probe_in_flight => Err(now + Duration::from_secs(1)),
            _ => Ok(()),
        }
    }

    /// Claims the right to send one request: the probe slot when half-open.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Admission {
        let mut inner = self.lock();
        if let Err(until) = Self::check(&inner, now) {
            return Admission::No { until };
        }
        match inner.state {
            CircuitState::Closed => Admission::Yes,
            _ => {
                inner.state = CircuitState::HalfOpen;
                inner.probe_in_flight = true;
                Admission::Probe(ProbeGuard {
                    breaker: Some(self.clone()),
                })
            }
        }
    }

    /// Records how a request admitted with [`Admission::Yes`] ended.
    pub fn record(&self, verdict: Verdict, now: Instant) {
        let Some(failed) = self.outcome(verdict, now) else {
            return;
        };
        let mut inner = self.lock();
        self.count(&mut inner, failed, now);
        if inner.state != CircuitState::Closed {
            // Admitted before the circuit opened: only the probe decides now.
            return;
        }
        if failed {
            inner.consecutive += 1;
        } else {
            inner.consecutive = 0;
        }
        let (ok, bad) = self.window_totals(&inner, now);
        let total = ok + bad;
        let ratio_trips = total >= self.config.min_requests.max(1)
            && (bad as f64) / (total as f64) >= self.config.failure_ratio
            && bad > 0;
        if failed && (inner.consecutive >= self.config.consecutive_failures.max(1) || ratio_trips) {
            self.open(&mut inner, now);
        }
    }

    /// Whether a verdict is a failure (`None`: it says nothing); a 429 also sets the deployment
    /// aside.
    fn outcome(&self, verdict: Verdict, now: Instant) -> Option<bool> {
        match verdict {
            Verdict::Abandoned => None,
            Verdict::Success => Some(false),
            Verdict::Failure => Some(true),
            Verdict::RateLimited { cooldown } => {
                self.lock().rate_limited_until = Some(now + cooldown);
                Some(true)
            }
        }
    }

    /// The probe's verdict (through its guard).
    fn settle_probe(&self, verdict: Verdict, now: Instant) {
        let failed = self.outcome(verdict, now);
        let mut inner = self.lock();
        inner.probe_in_flight = false;
        let Some(failed) = failed else { return };
        self.count(&mut inner, failed, now);
        if failed {
            self.open(&mut inner, now);
        } else {
            inner.state = CircuitState::Closed;
            inner.reopens = 0;
            inner.consecutive = 0;
            for b in inner.buckets.iter_mut() {
                *b = Bucket {
                    second: u64::MAX,
                    ok: 0,
                    failed: 0,
                };
            }
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        let base = Duration::from_secs(self.config.cooldown_secs);
        let max = Duration::from_secs(self.config.max_cooldown_secs.max(self.config.cooldown_secs));
        let cooldown = base.saturating_mul(1u32 << inner.reopens.min(16)).min(max);
        inner.state = CircuitState::Open;
        inner.open_until = now + cooldown;
        inner.reopens += 1;
        inner.consecutive = 0;
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn count(&self, inner: &mut Inner, failed: bool, now: Instant) {
        let s = self.second(now);
        let n = inner.buckets.len() as u64;
        let b = &mut inner.buckets[(s % n) as usize];
        if b.second != s {
            *b = Bucket {
                second: s,
                ok: 0,
                failed: 0,
            };
        }
        if failed {
            b.failed += 1;
        } else {
            b.ok += 1;
        }
    }

    fn window_totals(&self, inner: &Inner, now: Instant) -> (u32, u32) {
        let s = self.second(now);
        let n = inner.buckets.len() as u64;
        inner
            .buckets
            .iter()
            .filter(|b| b.second != u64::MAX && b.second + n > s && b.second <= s)
            .fold((0, 0), |(ok, bad), b| (ok + b.ok, bad + b.failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            window_secs: 10,
            min_requests: 6,
            cooldown_secs: 10,
            max_cooldown_secs: 25,
            rate_limit_cooldown_ms: 5000,
        }
    }

    fn breaker() -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(cfg()))
    }

    fn probe(b: &Arc<CircuitBreaker>, t: Instant) -> ProbeGuard {
        match b.admit(t) {
            Admission::Probe(g) => g,
            other => panic!("expected the probe, got {other:?}"),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..2 {
            assert!(matches!(b.admit(t), Admission::Yes));
            b.record(Verdict::Failure, t);
        }
        assert_eq!(b.state(t), CircuitState::Closed);
        b.record(Verdict::Failure, t);
        assert_eq!(b.state(t), CircuitState::Open);
        assert!(matches!(
            b.admit(t + Duration::from_secs(9)),
            Admission::No { .. }
        ));
        // Cooldown over: exactly one probe.
        let t1 = t + Duration::from_secs(10);
        assert_eq!(b.state(t1), CircuitState::HalfOpen);
        let p = probe(&b, t1);
        assert!(matches!(b.admit(t1), Admission::No { .. }));
        // The probe fails: reopen with a doubled cooldown (20 s).
        p.record(Verdict::Failure, t1);
        assert_eq!(b.state(t1 + Duration::from_secs(19)), CircuitState::Open);
        let t2 = t1 + Duration::from_secs(20);
        probe(&b, t2).record(Verdict::Failure, t2);
        // Capped at 25 s.
        assert_eq!(b.state(t2 + Duration::from_secs(24)), CircuitState::Open);
        let t3 = t2 + Duration::from_secs(25);
        probe(&b, t3).record(Verdict::Success, t3);
        assert_eq!(b.state(t3), CircuitState::Closed);
        assert!(matches!(b.admit(t3), Admission::Yes));
    }

    #[test]
    fn opens_on_failure_ratio_over_the_window() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        // Alternate: never 3 in a row, but half of 6 failed.
        for i in 0..6 {
            b.record(
                if i % 2 == 0 {
                    Verdict::Success
                } else {
                    Verdict::Failure
                },
                t,
            );
        }
        assert_eq!(b.state(t), CircuitState::Open);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        for _ in 0..2 {
            b.record(Verdict::Failure, t);
        }
        b.record(Verdict::Success, t);
        let later = t + Duration::from_secs(11);
        for i in 0..6 {
            b.record(
                if i == 0 {
                    Verdict::Failure
                } else {
                    Verdict::Success
                },
                later,
            );
        }
        assert_eq!(b.state(later), CircuitState::Closed);
    }

    #[test]
    fn rate_limit_sets_the_deployment_aside() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        b.record(
            Verdict::RateLimited {
                cooldown: Duration::from_secs(2),
            },
            t,
        );
        assert_eq!(b.state(t), CircuitState::Closed);
        assert_eq!(b.available(t), Err(t + Duration::from_secs(2)));
        assert!(matches!(
            Arc::new(b).admit(t + Duration::from_secs(2)),
            Admission::Yes
        ));
    }

    #[test]
    fn a_dropped_probe_frees_the_slot() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.record(Verdict::Failure, t);
        }
        let t1 = t + Duration::from_secs(10);
        // Dropped without a verdict (a cancelled future): neither success nor failure.
        drop(probe(&b, t1));
        assert_eq!(b.state(t1), CircuitState::HalfOpen);
        let p = probe(&b, t1);
        // An explicit `Abandoned` is the same.
        p.record(Verdict::Abandoned, t1);
        probe(&b, t1).record(Verdict::Success, t1);
        assert_eq!(b.state(t1), CircuitState::Closed);
    }

    #[test]
    fn only_the_probe_decides_a_half_open_circuit() {
        let b = breaker();
        let t = Instant::now();
        // Admitted while closed, still running when the circuit opens.
        assert!(matches!(b.admit(t), Admission::Yes));
        for _ in 0..3 {
            b.record(Verdict::Failure, t);
        }
        let t1 = t + Duration::from_secs(10);
        let p = probe(&b, t1);
        // The late request's success says nothing about the probe.
        b.record(Verdict::Success, t1);
        assert!(matches!(b.admit(t1), Admission::No { .. }));
        p.record(Verdict::Failure, t1);
        assert_eq!(b.state(t1), CircuitState::Open);
    }
}
