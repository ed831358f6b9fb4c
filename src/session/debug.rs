//! The `debug` object (gateway.md §4): what happened to a request, returned to the client that
//! asked for it, with every secret redacted. Built only when requested.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::error::ErrorDetail;
use crate::providers::SentRequest;

/// Parsed by validation with the other extensions.
pub use crate::protocol::extensions::DebugFlags;

/// Kept with the request record, which owns the attempt log.
pub use crate::observability::record::AttemptRecord;

/// Collects what only debug output needs.
#[derive(Debug)]
pub struct DebugRecorder {
    pub flags: DebugFlags,
    start: Instant,
    trace: Vec<Value>,
    upstream_request: Vec<Value>,
    upstream_response: Vec<Value>,
}

/// Timings of the request so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub total: Duration,
    pub upstream: Duration,
    pub tools: Duration,
    pub ttft: Option<Duration>,
}

/// Everything else the debug object reports.
pub struct Summary<'a> {
    pub request_id: &'a str,
    pub strictness: &'a str,
    pub warnings: &'a [ErrorDetail],
    pub rounds: u32,
    pub model: &'a str,
    pub candidates: &'a [String],
    pub sort: &'a str,
    pub attempts: &'a [AttemptRecord],
    /// `(provider, deployment, upstream_model)` of the deployment that answered.
    pub chosen: Option<(&'a str, &'a str, &'a str)>,
    pub timings: Timings,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl DebugRecorder {
    pub fn new(flags: DebugFlags, start: Instant) -> Self {
        Self {
            flags,
            start,
            trace: Vec::new(),
            upstream_request: Vec::new(),
            upstream_response: Vec::new(),
        }
    }

    pub fn event(&mut self, event: &str) {
        if self.flags.trace {
            self.trace
                .push(json!({"t_ms": ms(self.start.elapsed()), "event": event}));
        }
    }

    pub fn sent(&mut self, round: u32, sent: &SentRequest) {
        if !self.flags.upstream_request {
            return;
        }
        let headers: Map<String, Value> = sent
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let body = serde_json::from_slice::<Value>(&sent.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&sent.body).into_owned()));
        self.upstream_request
            .push(json!({"round": round, "url": sent.url, "headers": headers, "body": body}));
    }

    /// An upstream payload: the whole body (non-stream) or one event (stream).
    pub fn received(&mut self, payload: &[u8]) {
        if self.flags.upstream_response {
            let v = serde_json::from_slice::<Value>(payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()));
            self.upstream_response.push(v);
        }
    }

    pub fn build(&self, s: &Summary<'_>, stream: bool) -> Value {
        let attempts: Vec<Value> = s
            .attempts
            .iter()
            .map(|a| {
                let mut o = Map::new();
                o.insert("n".into(), json!(a.n));
                o.insert("round".into(), json!(a.round));
                o.insert("deployment".into(), json!(a.deployment));
                o.insert("status".into(), json!(a.status));
                if let Some(c) = a.class {
                    o.insert("class".into(), json!(c));
                }
                o.insert("duration_ms".into(), json!(ms(a.duration)));
                if let Some(r) = a.retry_in {
                    o.insert("retry_in_ms".into(), json!(ms(r)));
                }
                if let Some(id) = &a.upstream_request_id {
                    o.insert("upstream_request_id".into(), json!(id));
                }
                Value::Object(o)
            })
            .collect();
        let t = s.timings;
        let mut d = Map::new();
        d.insert("request_id".into(), json!(s.request_id));
        d.insert("strictness".into(), json!(s.strictness));
        d.insert("warnings".into(), json!(s.warnings));
        d.insert("rounds".into(), json!(s.rounds));
        d.insert(
            "routing".into(),
            json!({"model": s.model, "candidates": s.candidates, "sort": s.sort}),
        );
        d.insert("attempts".into(), Value::Array(attempts));
        d.insert(
            "chosen".into(),
            match s.chosen {
                Some((p, dep, m)) => json!({"provider": p, "deployment": dep, "upstream_model": m}),
                None => Value::Null,
            },
        );
        d.insert(
            "timings".into(),
            json!({
                "total_ms": ms(t.total),
                "upstream_ms": ms(t.upstream),
                "tools_ms": ms(t.tools),
                // From the rounded figures, so the three always add up.
                "overhead_ms": ms(t.total).saturating_sub(ms(t.upstream)),
                "ttft_ms": t.ttft.map(ms),
            }),
        );
        if self.flags.trace {
            d.insert("trace".into(), Value::Array(self.trace.clone()));
        }
        if self.flags.upstream_request {
            d.insert(
                "upstream_request".into(),
                Value::Array(self.upstream_request.clone()),
            );
        }
        if self.flags.upstream_response {
            let v = if stream || self.upstream_response.len() != 1 {
                Value::Array(self.upstream_response.clone())
            } else {
                self.upstream_response[0].clone()
            };
            d.insert("upstream_response".into(), v);
        }
        Value::Object(d)
    }
}
