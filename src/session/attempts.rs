//! Which attempt comes next after a failure (gateway.md §7.3): pure decisions over the ordered
//! candidates, the retry budget and the failure class. Timers, breakers and I/O stay in the
//! session.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;
use crate::providers::{FailureClass, UpstreamError};
use crate::routing::Deployment;

/// The next move.
#[derive(Debug)]
pub enum Step {
    /// Send an attempt to this deployment after `delay`.
    Try {
        deployment: Arc<Deployment>,
        delay: Duration,
    },
    /// Nothing more to try.
    Stop,
}

#[derive(Debug)]
pub struct AttemptPlan {
    candidates: VecDeque<Arc<Deployment>>,
    current: Option<Arc<Deployment>>,
    /// Retries used on `current`.
    retries: u32,
    /// Attempts started so far.
    pub started: u32,
    config: RetryConfig,
    /// How long a 429 without `retry-after` keeps a deployment aside.
    rate_limit_cooldown: Duration,
}

impl AttemptPlan {
    pub fn new(
        candidates: Vec<Arc<Deployment>>,
        config: RetryConfig,
        rate_limit_cooldown: Duration,
    ) -> Self {
        Self {
            candidates: candidates.into(),
            current: None,
            retries: 0,
            started: 0,
            config,
            rate_limit_cooldown,
        }
    }

    /// The first attempt, or the next candidate when the current one cannot be used.
    pub fn next_candidate(&mut self) -> Step {
        if self.started >= self.config.max_attempts {
            return Step::Stop;
        }
        match self.candidates.pop_front() {
            Some(d) => {
                self.current = Some(d.clone());
                self.retries = 0;
                Step::Try {
                    deployment: d,
                    delay: Duration::ZERO,
                }
            }
            None => Step::Stop,
        }
    }

    /// Records that an attempt was sent.
    pub fn started(&mut self) {
        self.started += 1;
    }

    /// Whether another deployment is left to fall back to.
    pub fn has_fallback(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// How long a 429 keeps a deployment aside: its `retry-after`, capped, or the default.
    pub fn rate_limit_cooldown(&self, err: &UpstreamError) -> Duration {
        let cap = Duration::from_millis(self.config.max_retry_after_ms);
        err.retry_after
            .map_or(self.rate_limit_cooldown, |r| r.min(cap))
    }

    /// The step after the current attempt failed with `err`.
    pub fn after_failure(&mut self, err: &UpstreamError, rng: &mut impl Rng) -> Step {
        let cap = Duration::from_millis(self.config.max_retry_after_ms);
        match err.class {
            FailureClass::ClientFault => Step::Stop,
            FailureClass::DeploymentFault => self.next_candidate(),
            FailureClass::RateLimited => {
                if self.has_fallback() {
                    return self.next_candidate();
                }
                // No other candidate: wait out its retry-after (≤ cap) and try it again.
                match err.retry_after {
                    Some(r) if r > cap => Step::Stop,
                    r => self.retry_current(r.unwrap_or(self.rate_limit_cooldown)),
                }
            }
            FailureClass::Transient => {
                if self.retries >= self.config.max_retries {
                    return self.next_candidate();
                }
                let backoff = self.backoff(self.retries + 1, rng);
                match err.retry_after {
                    // A longer wait than we accept moves on at once.
                    Some(r) if r > cap => self.next_candidate(),
                    Some(r) => self.retry_current(backoff.max(r)),
                    None => self.retry_current(backoff),
                }
            }
        }
    }

    fn retry_current(&mut self, delay: Duration) -> Step {
        if self.started >= self.config.max_attempts || self.retries >= self.config.max_retries {
            return Step::Stop;
        }
        match &self.current {
            Some(d) => {
                self.retries += 1;
                Step::Try {
                    deployment: d.clone(),
                    delay,
                }
            }
            None => Step::Stop,
        }
    }

    /// Full jitter: `random(0, min(max_delay, base · 2^(n−1)))`.
    fn backoff(&self, n: u32, rng: &mut impl Rng) -> Duration {
        let exp = self
            .config
            .base_delay_ms
            .saturating_mul(1u64 << (n - 1).min(20));
        let ceiling = exp.min(self.config.max_delay_ms);
        Duration::from_millis(if ceiling == 0 {
            0
        } else {
            rng.random_range(0..=ceiling)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn dep(name: &str) -> Arc<Deployment> {
        crate::routing::test_deployment("p", "mock", name, 1, None, Default::default())
    }

    fn plan(names: &[&str]) -> AttemptPlan {
        AttemptPlan::new(
            names.iter().map(|n| dep(n)).collect(),
            RetryConfig::default(),
            Duration::from_secs(5),
        )
    }

    fn err(status: u16, retry_after_ms: Option<u64>) -> UpstreamError {
        let mut e = UpstreamError::from_status(status, "x");
        e.retry_after = retry_after_ms.map(Duration::from_millis);
        e
    }

    fn expect_try(step: Step) -> (String, Duration) {
        match step {
            Step::Try { deployment, delay } => (deployment.name.clone(), delay),
            Step::Stop => panic!("expected a try"),
        }
    }

    /// Drives a plan: each failure in turn, returning the attempted deployments.
    fn run(p: &mut AttemptPlan, failures: &[UpstreamError]) -> (Vec<String>, bool) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut tried = Vec::new();
        let mut step = p.next_candidate();
        for e in failures {
            match step {
                Step::Try { deployment, .. } => {
                    p.started();
                    tried.push(deployment.name.clone());
                }
                Step::Stop => return (tried, true),
            }
            step = p.after_failure(e, &mut rng);
        }
        (tried, matches!(step, Step::Stop))
    }

    #[test]
    fn transient_retries_twice_then_falls_back() {
        let mut p = plan(&["a", "b"]);
        let (tried, stopped) = run(&mut p, &vec![err(503, None); 4]);
        assert_eq!(tried, ["a", "a", "a", "b"]);
        assert!(stopped, "max_attempts (4) reached");
    }

    #[test]
    fn backoff_is_full_jitter_within_the_ceiling() {
        let mut p = plan(&["a"]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for n in 1..=8 {
            let d = p.backoff(n, &mut rng);
            let ceiling = (250u64 << (n - 1)).min(8000);
            assert!(d <= Duration::from_millis(ceiling), "{n}: {d:?}");
        }
        p.next_candidate();
        p.started();
        let (_, delay) = expect_try(p.after_failure(&err(500, Some(1500)), &mut rng));
        assert!(
            delay >= Duration::from_millis(1500),
            "retry-after is a floor"
        );
    }

    #[test]
    fn too_long_retry_after_moves_on() {
        let mut p = plan(&["a", "b"]);
        let (tried, _) = run(&mut p, &[err(503, Some(60_000)), err(503, None)]);
        assert_eq!(tried, ["a", "b"]);
    }

    #[test]
    fn rate_limited_falls_back_at_once_or_waits_when_alone() {
        let mut p = plan(&["a", "b"]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        p.next_candidate();
        p.started();
        assert_eq!(
            expect_try(p.after_failure(&err(429, Some(2000)), &mut rng)),
            ("b".into(), Duration::ZERO)
        );
        p.started();
        // Alone now: wait its retry-after, then retry.
        assert_eq!(
            expect_try(p.after_failure(&err(429, Some(700)), &mut rng)),
            ("b".into(), Duration::from_millis(700))
        );
        p.started();
        // Without retry-after: the default cooldown.
        assert_eq!(
            expect_try(p.after_failure(&err(429, None), &mut rng)),
            ("b".into(), Duration::from_secs(5))
        );
        p.started();
        // Over the cap: give up.
        let mut q = plan(&["a"]);
        q.next_candidate();
        q.started();
        assert!(matches!(
            q.after_failure(&err(429, Some(30_000)), &mut rng),
            Step::Stop
        ));
        assert_eq!(
            q.rate_limit_cooldown(&err(429, Some(30_000))),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn deployment_fault_falls_back_without_retry_and_client_fault_stops() {
        let mut p = plan(&["a", "b"]);
        let (tried, stopped) = run(&mut p, &[err(401, None), err(404, None)]);
        assert_eq!(tried, ["a", "b"]);
        assert!(stopped);
        let mut p = plan(&["a", "b"]);
        let (tried, stopped) = run(&mut p, &[err(400, None)]);
        assert_eq!(tried, ["a"]);
        assert!(stopped);
    }

    #[test]
    fn connect_errors_are_transient() {
        let mut p = plan(&["a"]);
        let (tried, stopped) = run(&mut p, &vec![UpstreamError::transient("refused"); 3]);
        assert_eq!(tried, ["a", "a", "a"]);
        assert!(stopped);
    }
}
