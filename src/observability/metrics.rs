//! `GET /metrics`: the Prometheus families of gateway.md §11, in one registry per gateway (tests
//! run many gateways in one process, so nothing is global).
//!
//! Every label value comes from the config (model ids, deployment, provider and key names) or
//! from a fixed set (statuses, error types, classes): never a request or session id, never a
//! model name a client made up.

use std::time::{Duration, Instant};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::record::RequestRecord;
use crate::routing::ModelIndex;

/// Whole-request latencies: 5 ms to 10 min.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// The gateway's own time: 50 µs to 1 s.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    overhead: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_attempts: IntCounterVec,
    retries: IntCounterVec,
    fallbacks: IntCounterVec,
    tokens: IntCounterVec,
    tool_calls: IntCounterVec,
    tool_duration: HistogramVec,
    active_streams: IntGauge,
    circuit_state: IntGaugeVec,
    /// `{key, limit}`; incremented by the rate limiter actors.
    pub rate_limited: IntCounterVec,
    /// Rows the request log could not queue.
    pub log_dropped: IntCounter,
    /// `{result = ok | error | restart_required}`.
    pub config_reloads: IntCounterVec,
    /// The applied config's generation: 1 at start, one more per applied reload.
    pub config_generation: IntGauge,
    /// Log lines the writer thread could not queue: the process's count, read at each scrape.
    log_lines_dropped: IntCounter,
    /// Failed or timed-out Redis calls (cluster mode).
    pub shared_state_errors: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let by_request = ["endpoint", "model", "stream"];
        let active_streams = IntGauge::new(
            "gateway_active_streams",
            "SSE responses currently open towards clients",
        )
        .expect("valid metric");
        r.register(Box::new(active_streams.clone()))
            .expect("unique metric");
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                "gateway_circuit_state",
                "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open",
            ),
            &["model", "deployment"],
        )
        .expect("valid metric");
        r.register(Box::new(circuit_state.clone()))
            .expect("unique metric");
        let log_dropped = IntCounter::new(
            "gateway_request_log_dropped_total",
            "Request log rows dropped because the writer's queue was full",
        )
        .expect("valid metric");
        r.register(Box::new(log_dropped.clone()))
            .expect("unique metric");
        let config_generation = IntGauge::new(
            "gateway_config_generation",
            "Generation of the applied config: 1 at start, one more per applied reload",
        )
        .expect("valid metric");
        r.register(Box::new(config_generation.clone()))
            .expect("unique metric");
        config_generation.set(1);
        r.register(Box::new(super::otlp::dropped_spans().clone()))
            .expect("unique metric");
        let config_reloads = counter(
            &r,
            "gateway_config_reloads_total",
            "Config reloads by result",
            &["result"],
        );
        for result in ["ok", "error", "restart_required"] {
            config_reloads.with_label_values(&[result]);
        }
        let log_lines_dropped = IntCounter::new(
            "gateway_log_lines_dropped_total",
            "Log lines dropped because the log writer's queue was full",
        )
        .expect("valid metric");
        r.register(Box::new(log_lines_dropped.clone()))
            .expect("unique metric");
        let shared_state_errors = IntCounter::new(
            "gateway_shared_state_errors_total",
            "Redis calls of the cluster's shared state that failed or timed out",
        )
        .expect("valid metric");
        r.register(Box::new(shared_state_errors.clone()))
            .expect("unique metric");
        Self {
            requests: counter(
                &r,
                "gateway_requests_total",
                "API requests by outcome",
                &[
                    "endpoint",
                    "model",
                    "provider",
                    "key",
                    "status",
                    "error_type",
                ],
            ),
            errors: counter(
                &r,
                "gateway_errors_total",
                "API requests that ended in an error (HTTP or in-band)",
                &["endpoint", "model", "type"],
            ),
            duration: histogram(
                &r,
                "gateway_request_duration_seconds",
                "Request duration, received to last byte",
                &by_request,
                LATENCY_BUCKETS,
            ),
            ttft: histogram(
                &r,
                "gateway_ttft_seconds",
                "Time to the first byte of the response body (stream: the first event)",
                &by_request,
                LATENCY_BUCKETS,
            ),
            overhead: histogram(
                &r,
                "gateway_overhead_seconds",
                "Gateway overhead: total minus upstream time",
                &by_request,
                OVERHEAD_BUCKETS,
            ),
            upstream_duration: histogram(
                &r,
                "gateway_upstream_duration_seconds",
                "Duration of each upstream attempt",
                &["deployment", "outcome"],
                LATENCY_BUCKETS,
            ),
            upstream_attempts: counter(
                &r,
                "gateway_upstream_attempts_total",
                "Upstream attempts by result class",
                &["deployment", "class"],
            ),
            retries: counter(
                &r,
                "gateway_retries_total",
                "Attempts that retried the deployment of the attempt before",
                &["deployment"],
            ),
            fallbacks: counter(
                &r,
                "gateway_fallbacks_total",
                "Attempts that fell back to this deployment after another one failed",
                &["deployment"],
            ),
            tokens: counter(
                &r,
                "gateway_tokens_total",
                "Tokens by model and kind",
                &["model", "kind"],
            ),
            tool_calls: counter(
                &r,
                "gateway_tool_calls_total",
                "Gateway tool calls by tool and outcome",
                &["tool", "outcome"],
            ),
            tool_duration: histogram(
                &r,
                "gateway_tool_duration_seconds",
                "Gateway tool call duration",
                &["tool", "outcome"],
                LATENCY_BUCKETS,
            ),
            rate_limited: counter(
                &r,
                "gateway_rate_limited_total",
                "Requests refused by a per-key limit",
                &["key", "limit"],
            ),
            active_streams,
            circuit_state,
            log_dropped,
            config_reloads,
            config_generation,
            log_lines_dropped,
            shared_state_errors,
            registry: r,
        }
    }

    /// Counts a finished request: one call per request, from [`super::record`].
    pub fn observe(&self, r: &RequestRecord) {
        let endpoint = r.endpoint.as_str();
        let model = r.model.as_deref().unwrap_or("");
        let status = r.status.to_string();
        let error_type = r.error_type.as_deref().unwrap_or("");
        self.requests
            .with_label_values(&[
                endpoint,
                model,
                r.provider.as_deref().unwrap_or(""),
                r.key_name.as_deref().unwrap_or(""),
                &status,
                error_type,
            ])
            .inc();
        if !error_type.is_empty() {
            self.errors
                .with_label_values(&[endpoint, model, error_type])
                .inc();
        }
        let stream = if r.stream { "true" } else { "false" };
        let labels = [endpoint, model, stream];
        self.duration
            .with_label_values(&labels)
            .observe(r.total.as_secs_f64());
        self.overhead
            .with_label_values(&labels)
            .observe(r.overhead().as_secs_f64());
        if let Some(ttft) = r.ttft {
            self.ttft
                .with_label_values(&labels)
                .observe(ttft.as_secs_f64());
        }
        if r.model.is_some() {
            let u = &r.usage;
            for (kind, n) in [
                ("input", u.input_tokens),
                ("output", u.output_tokens),
                ("cache_read", u.cache_read_input_tokens),
                ("cache_creation", u.cache_creation_input_tokens),
            ] {
                if n > 0 {
                    self.tokens.with_label_values(&[model, kind]).inc_by(n);
                }
            }
        }
        let mut previous: Option<&str> = None;
        for a in &r.attempts {
            let class = a.class.unwrap_or("success");
            self.upstream_attempts
                .with_label_values(&[&a.deployment, class])
                .inc();
            self.upstream_duration
                .with_label_values(&[&a.deployment, class])
                .observe(a.duration.as_secs_f64());
            match previous {
                Some(p) if p == a.deployment => self.retries.with_label_values(&[p]).inc(),
                Some(_) => self.fallbacks.with_label_values(&[&a.deployment]).inc(),
                None => {}
            }
            previous = Some(&a.deployment);
        }
    }

    /// One gateway tool call (`outcome`: `ok`, `error`, `timeout`, …).
    pub fn tool_call(&self, tool: &str, outcome: &str, duration: Duration) {
        self.tool_calls.with_label_values(&[tool, outcome]).inc();
        self.tool_duration
            .with_label_values(&[tool, outcome])
            .observe(duration.as_secs_f64());
    }

    /// Counts an open client stream until the returned guard drops.
    pub fn stream_opened(&self) -> ActiveStream {
        self.active_streams.inc();
        ActiveStream(self.active_streams.clone())
    }

    /// The text exposition; circuit states are read from the breakers now.
    pub fn render(&self, models: &ModelIndex) -> String {
        let now = Instant::now();
        for m in &models.ordered {
            for d in &m.deployments {
                self.circuit_state
                    .with_label_values(&[m.id(), &d.name])
                    .set(d.breaker.state(now).gauge());
            }
        }
        // The writer is the process's: catch the counter up with it (it only grows).
        let dropped = crate::telemetry::lines_dropped();
        let seen = self.log_lines_dropped.get();
        if dropped > seen {
            self.log_lines_dropped.inc_by(dropped - seen);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of valid metrics cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// An open stream, counted in `gateway_active_streams` while it lives.
pub struct ActiveStream(IntGauge);

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
