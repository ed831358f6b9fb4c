//! Observed latency and throughput per deployment, as exponentially weighted moving averages kept
//! in atomics (shared by every worker, no lock), for `sort = latency | throughput`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Weight of the newest sample.
const ALPHA: f64 = 0.2;

#[derive(Debug)]
pub struct DeploymentStats {
    ttft_ms: AtomicU64,
    tokens_per_sec: AtomicU64,
}

impl Default for DeploymentStats {
    fn default() -> Self {
        Self {
            ttft_ms: AtomicU64::new(f64::NAN.to_bits()),
            tokens_per_sec: AtomicU64::new(f64::NAN.to_bits()),
        }
    }
}

fn update(cell: &AtomicU64, sample: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        let old = f64::from_bits(bits);
        let new = if old.is_nan() {
            sample
        } else {
            old + ALPHA * (sample - old)
        };
        Some(new.to_bits())
    });
}

fn read(cell: &AtomicU64) -> Option<f64> {
    let v = f64::from_bits(cell.load(Ordering::Relaxed));
    (!v.is_nan()).then_some(v)
}

impl DeploymentStats {
    /// A successful attempt: time to its first event, and output tokens over the rest.
    pub fn record(&self, ttft: Duration, total: Duration, output_tokens: u64) {
        update(&self.ttft_ms, ttft.as_secs_f64() * 1000.0);
        let generating = total.saturating_sub(ttft).as_secs_f64();
        if output_tokens > 0 && generating > 0.0 {
            update(&self.tokens_per_sec, output_tokens as f64 / generating);
        }
    }

    pub fn ttft_ms(&self) -> Option<f64> {
        read(&self.ttft_ms)
    }

    pub fn tokens_per_sec(&self) -> Option<f64> {
        read(&self.tokens_per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma() {
        let s = DeploymentStats::default();
        assert_eq!(s.ttft_ms(), None);
        s.record(Duration::from_millis(100), Duration::from_millis(1100), 50);
        assert_eq!(s.ttft_ms(), Some(100.0));
        assert_eq!(s.tokens_per_sec(), Some(50.0));
        s.record(Duration::from_millis(200), Duration::from_millis(200), 0);
        assert!((s.ttft_ms().unwrap() - 120.0).abs() < 1e-9);
        assert_eq!(s.tokens_per_sec(), Some(50.0));
    }
}
