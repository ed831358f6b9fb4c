//! The cluster's view of a deployment's health, beside its local [`CircuitBreaker`]: a circuit
//! another replica opened, or a 429 cool-down it received, sets the deployment aside here too.
//! The view is atomics refreshed in the background ([`crate::cluster::health`]); the hot path
//! reads them and never waits on Redis. Without cluster mode the hold stays empty.
//!
//! When a cluster-wide open circuit's cool-down ends, the deployment is half-open for the whole
//! cluster: only the replica that claimed the probe (in Redis, `SET NX PX`) may send, once.
//!
//! [`CircuitBreaker`]: super::CircuitBreaker

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use super::breaker::{Admission, ProbeGuard, Verdict};
use super::Deployment;

/// A change this replica saw, for the others (written to Redis in the background).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// The circuit opened (or reopened) until then.
    Open { id: String, until_ms: u64 },
    /// A 429 set the deployment aside until then.
    RateLimited { id: String, until_ms: u64 },
    /// The cluster's probe succeeded: closed everywhere.
    Closed { id: String },
    /// The probe was abandoned: another replica may claim it.
    ProbeReleased { id: String },
}

/// Unix time in milliseconds (the replicas share it, unlike `Instant`).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug)]
pub struct SharedHold {
    /// `<model>/<deployment>`: the deployment's name in Redis.
    pub id: String,
    /// Set aside cluster-wide until then (unix ms; 0: not).
    until_ms: AtomicU64,
    /// The hold is an open circuit (not a 429): when it runs out, the cluster is half-open.
    open: AtomicBool,
    /// This replica may send the cluster's probe until then (unix ms).
    probe_until_ms: AtomicU64,
    /// This replica's probe is in flight.
    probing: AtomicBool,
    /// The last `until` this replica published (not to publish one twice).
    published_ms: AtomicU64,
    events: OnceLock<UnboundedSender<HealthEvent>>,
}

impl SharedHold {
    pub fn new(id: String) -> Self {
        Self {
            id,
            until_ms: AtomicU64::new(0),
            open: AtomicBool::new(false),
            probe_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            published_ms: AtomicU64::new(0),
            events: OnceLock::new(),
        }
    }

    /// Cluster mode: changes go to `events`.
    pub fn connect(&self, events: UnboundedSender<HealthEvent>) {
        let _ = self.events.set(events);
    }

    /// The background refresh: the cluster's current hold (`open`: a circuit, else a 429).
    pub fn set_view(&self, until_ms: u64, open: bool) {
        self.until_ms.store(until_ms, Ordering::Release);
        self.open.store(open, Ordering::Release);
        if until_ms == 0 {
            self.probe_until_ms.store(0, Ordering::Release);
        }
    }

    /// The background refresh claimed the cluster's probe for this replica until then.
    pub fn grant_probe(&self, until_ms: u64) {
        self.probe_until_ms.store(until_ms, Ordering::Release);
    }

    /// The hold as it reads now; `Err(until_ms)` when the deployment is set aside.
    fn check(&self, now_ms: u64) -> Result<bool, u64> {
        let until = self.until_ms.load(Ordering::Acquire);
        if until > now_ms {
            return Err(until);
        }
        if until == 0 || !self.open.load(Ordering::Acquire) {
            return Ok(false);
        }
        // Half-open cluster-wide: only with the probe, and only one request.
        if self.probe_until_ms.load(Ordering::Acquire) > now_ms
            && !self.probing.load(Ordering::Acquire)
        {
            Ok(true)
        } else {
            Err(now_ms + 1000)
        }
    }

    fn publish(&self, event: HealthEvent) {
        if let Some(tx) = self.events.get() {
            let _ = tx.send(event);
        }
    }
}

fn instant_at(until_ms: u64, now_ms: u64, now: Instant) -> Instant {
    now + Duration::from_millis(until_ms.saturating_sub(now_ms))
}

/// Whether `d` may take a request now, by its breaker and the cluster's hold (claims nothing).
pub fn available(d: &Deployment, now: Instant) -> Result<(), Instant> {
    d.breaker.available(now)?;
    let now_ms = unix_ms(SystemTime::now());
    d.shared
        .check(now_ms)
        .map(|_| ())
        .map_err(|u| instant_at(u, now_ms, now))
}

/// The right to send one request to a deployment, from [`admit`]. Its verdict goes to
/// [`Permit::record`]; dropped without one (the session stopped), a half-open probe it holds,
/// local or cluster-wide, is released, so no probe can leak.
#[derive(Debug)]
pub struct Permit {
    deployment: Arc<Deployment>,
    /// The local breaker's half-open probe slot, when this request is it.
    local_probe: Option<ProbeGuard>,
    /// This request is the cluster's one probe of the deployment.
    cluster_probe: bool,
}

impl Permit {
    /// Whether this request probes a half-open deployment (locally or for the cluster).
    pub fn is_probe(&self) -> bool {
        self.local_probe.is_some() || self.cluster_probe
    }

    /// Records how the request ended, in the breaker, and tells the cluster what changed.
    pub fn record(mut self, verdict: Verdict, now: Instant) {
        let d = self.deployment.clone();
        match self.local_probe.take() {
            Some(probe) => probe.record(verdict, now),
            None => d.breaker.record(verdict, now),
        }
        let cluster_probe = std::mem::take(&mut self.cluster_probe);
        publish(&d, verdict, cluster_probe, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Without a verdict: the local guard abandons itself when dropped; the cluster's probe
        // claim is handed back.
        if std::mem::take(&mut self.cluster_probe) {
            publish(&self.deployment, Verdict::Abandoned, true, Instant::now());
        }
    }
}

/// Admission to a deployment, the cluster's view included.
#[derive(Debug)]
pub enum SharedAdmission {
    Go(Permit),
    /// Set aside (here or by the cluster) until about this instant.
    No {
        until: Instant,
    },
}

/// Claims the right to send one request to `d`: the cluster's hold first, then the breaker.
pub fn admit(d: &Arc<Deployment>, now: Instant) -> SharedAdmission {
    let now_ms = unix_ms(SystemTime::now());
    let cluster_probe = match d.shared.check(now_ms) {
        Err(until) => {
            return SharedAdmission::No {
                until: instant_at(until, now_ms, now),
            }
        }
        Ok(probe) => probe,
    };
    if cluster_probe && d.shared.probing.swap(true, Ordering::AcqRel) {
        // Another request here took the probe first.
        return SharedAdmission::No {
            until: now + Duration::from_secs(1),
        };
    }
    let local_probe = match d.breaker.admit(now) {
        Admission::No { until } => {
            if cluster_probe {
                d.shared.probing.store(false, Ordering::Release);
            }
            return SharedAdmission::No { until };
        }
        Admission::Probe(guard) => Some(guard),
        Admission::Yes => None,
    };
    SharedAdmission::Go(Permit {
        deployment: d.clone(),
        local_probe,
        cluster_probe,
    })
}

/// Tells the cluster what a verdict changed (nothing without cluster mode).
fn publish(d: &Deployment, verdict: Verdict, cluster_probe: bool, now: Instant) {
    let hold = &d.shared;
    if hold.events.get().is_none() {
        return;
    }
    let id = || hold.id.clone();
    if cluster_probe && hold.probing.swap(false, Ordering::AcqRel) {
        hold.probe_until_ms.store(0, Ordering::Release);
        match verdict {
            Verdict::Success => {
                hold.set_view(0, false);
                return hold.publish(HealthEvent::Closed { id: id() });
            }
            Verdict::Abandoned => return hold.publish(HealthEvent::ProbeReleased { id: id() }),
            _ => {}
        }
    }
    let failed = matches!(verdict, Verdict::Failure | Verdict::RateLimited { .. });
    // Set aside by the breaker now (an open circuit, or a 429's cool-down): say until when.
    if let (true, Err(until)) = (failed, d.breaker.available(now)) {
        let now_ms = unix_ms(SystemTime::now());
        let until_ms = now_ms + until.saturating_duration_since(now).as_millis() as u64;
        if until_ms <= now_ms || hold.published_ms.swap(until_ms, Ordering::AcqRel) == until_ms {
            return;
        }
        let event = match verdict {
            Verdict::RateLimited { .. } if d.breaker.state(now) == super::CircuitState::Closed => {
                HealthEvent::RateLimited { id: id(), until_ms }
            }
            _ => HealthEvent::Open { id: id(), until_ms },
        };
        hold.publish(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CircuitBreakerConfig;

    fn dep() -> std::sync::Arc<Deployment> {
        let breaker = CircuitBreakerConfig {
            consecutive_failures: 1,
            cooldown_secs: 10,
            ..Default::default()
        };
        super::super::test_deployment("p", "mock", "d", 1, None, breaker)
    }

    #[test]
    fn a_cluster_hold_sets_the_deployment_aside_then_allows_one_probe() {
        let d = dep();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        d.shared.connect(tx);
        let now = Instant::now();
        let now_ms = unix_ms(SystemTime::now());
        d.shared.set_view(now_ms + 5000, true);
        assert!(available(&d, now).is_err());
        assert!(matches!(admit(&d, now), SharedAdmission::No { .. }));
        // The cool-down is over: half-open, nobody here has the probe.
        d.shared.set_view(now_ms - 1, true);
        assert!(matches!(admit(&d, now), SharedAdmission::No { .. }));
        // Granted: exactly one request is the probe; dropped without a verdict it is handed
        // back for another replica to claim.
        d.shared.grant_probe(now_ms + 5000);
        let SharedAdmission::Go(probe) = admit(&d, now) else {
            panic!("the granted probe is admitted");
        };
        assert!(probe.is_probe());
        assert!(matches!(admit(&d, now), SharedAdmission::No { .. }));
        drop(probe);
        assert_eq!(
            rx.try_recv().unwrap(),
            HealthEvent::ProbeReleased { id: "d".into() }
        );
        // Granted again: its success closes the cluster's circuit.
        d.shared.grant_probe(now_ms + 5000);
        let SharedAdmission::Go(probe) = admit(&d, now) else {
            panic!("the granted probe is admitted");
        };
        assert!(matches!(admit(&d, now), SharedAdmission::No { .. }));
        probe.record(Verdict::Success, now);
        assert_eq!(
            rx.try_recv().unwrap(),
            HealthEvent::Closed { id: "d".into() }
        );
        let SharedAdmission::Go(next) = admit(&d, now) else {
            panic!("closed everywhere");
        };
        assert!(!next.is_probe());
    }

    #[test]
    fn a_local_open_or_429_is_published_once() {
        let d = dep();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        d.shared.connect(tx);
        let now = Instant::now();
        let go = |d| match admit(d, now) {
            SharedAdmission::Go(p) => p,
            SharedAdmission::No { .. } => panic!("admitted"),
        };
        go(&d).record(
            Verdict::RateLimited {
                cooldown: Duration::from_secs(2),
            },
            now,
        );
        // consecutive_failures = 1: the 429 also opened the circuit.
        assert!(matches!(rx.try_recv().unwrap(), HealthEvent::Open { .. }));
        // Open now: a failure recorded by a request admitted before says nothing new.
        publish(&d, Verdict::Failure, false, now);
        assert!(rx.try_recv().is_err(), "already published");
    }
}
