//! OTLP/HTTP trace export (`[observability.otlp]`): the tracing spans become OpenTelemetry spans
//! (through `tracing-opentelemetry`), queued here and posted in batches to `<endpoint>/v1/traces`
//! from a thread of their own, with the awc client the gateway already has (so no second HTTP or
//! TLS stack).
//!
//! A request never waits on export: a finished span is offered to a bounded queue and dropped
//! (and counted in `gateway_otlp_dropped_spans_total`) when the queue is full; a batch the
//! collector does not take is dropped and counted too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::config::{OtlpConfig, OtlpProtocol, Secret};

/// Spans waiting for export, at most; more are dropped.
const QUEUE: usize = 4096;
/// Spans per export request, at most.
const BATCH: usize = 512;
/// How long a batch waits to fill before it is sent.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// One export request's limit; a collector that takes longer loses the batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: without `[observability.otlp]` nothing OpenTelemetry runs.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `gateway_otlp_dropped_spans_total`: one process-wide counter (the exporter is process-wide),
/// registered in every gateway's registry.
pub fn dropped_spans() -> &'static IntCounter {
    static DROPPED: OnceLock<IntCounter> = OnceLock::new();
    DROPPED.get_or_init(|| {
        IntCounter::new(
            "gateway_otlp_dropped_spans_total",
            "Spans not exported: the export queue was full or the collector refused them",
        )
        .expect("valid metric")
    })
}

/// Starts the export thread and returns the tracer provider whose spans it exports.
pub fn start(
    config: &OtlpConfig,
    headers: &[(String, Secret)],
) -> std::io::Result<SdkTracerProvider> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .build();
    let target = Target {
        url: config.traces_url(),
        protocol: config.protocol,
        headers: headers.to_vec(),
        resource: (&resource).into(),
    };
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || actix_rt::System::new().block_on(export_loop(rx, target)))?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue { tx })
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    // Kept for the life of the process: the provider's last handle going away shuts it down.
    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
    let _ = PROVIDER.set(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(provider)
}

/// A tracer of `provider`, for the tracing layer.
pub fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("aigw")
}

/// Hands finished spans to the export thread without ever waiting.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            dropped_spans().inc();
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

struct Target {
    url: String,
    protocol: OtlpProtocol,
    headers: Vec<(String, Secret)>,
    resource: ResourceAttributesWithSchema,
}

async fn export_loop(mut rx: mpsc::Receiver<SpanData>, target: Target) {
    let client = awc::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .disable_redirects()
        .finish();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let fill = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(fill);
        while batch.len() < BATCH {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(s) => batch.push(s),
                    None => break,
                },
                _ = &mut fill => break,
            }
        }
        let n = batch.len() as u64;
        if let Err(e) = send(&client, &target, batch).await {
            dropped_spans().inc_by(n);
            tracing::debug!("otlp export failed: {e}");
        }
    }
}

async fn send(client: &awc::Client, target: &Target, batch: Vec<SpanData>) -> Result<(), String> {
    let request = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(batch, &target.resource),
    };
    let (content_type, body) = match target.protocol {
        OtlpProtocol::HttpProtobuf => (
            "application/x-protobuf",
            prost::Message::encode_to_vec(&request),
        ),
        OtlpProtocol::HttpJson => (
            "application/json",
            serde_json::to_vec(&request).map_err(|e| e.to_string())?,
        ),
    };
    let mut req = client
        .post(&target.url)
        .insert_header(("content-type", content_type));
    for (name, value) in &target.headers {
        req = req.insert_header((name.as_str(), value.expose()));
    }
    let res = req.send_body(body).await.map_err(|e| e.to_string())?;
    match res.status().as_u16() {
        200..=299 => Ok(()),
        s => Err(format!("collector answered {s}")),
    }
}

/// The W3C trace context of incoming headers (`traceparent`, `tracestate`).
pub fn extract(headers: &actix_web::http::header::HeaderMap) -> opentelemetry::Context {
    struct Headers<'a>(&'a actix_web::http::header::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The `traceparent` header value of a context, if it holds a valid span.
pub fn traceparent(cx: &opentelemetry::Context) -> Option<String> {
    struct One(Option<String>);
    impl Injector for One {
        fn set(&mut self, key: &str, value: String) {
            if key == "traceparent" {
                self.0 = Some(value);
            }
        }
    }
    let mut one = One(None);
    TraceContextPropagator::new().inject_context(cx, &mut one);
    one.0
}
