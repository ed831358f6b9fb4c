//! Logging setup: `log_format = "text" | "json"`, level from the config unless `RUST_LOG` is set;
//! with `[observability.otlp]`, the spans are exported too (see [`crate::observability::otlp`]).

use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{Config, LogFormat, ObservabilityConfig};
use crate::observability::otlp;

/// Logs only.
pub fn init(config: &ObservabilityConfig) {
    let _ = install(config, None);
}

/// Logs, and span export when the config asks for it. Call once, inside nothing: the exporter
/// runs on a thread of its own.
pub fn init_with_export(config: &Config) -> std::io::Result<()> {
    let provider = match &config.observability.otlp {
        Some(otlp) => Some(otlp::start(otlp, &config.secrets.otlp_headers)?),
        None => None,
    };
    install(&config.observability, provider)
}

fn install(
    config: &ObservabilityConfig,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
) -> std::io::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    // Logs go to stderr, coloured only on a terminal.
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = match config.log_format {
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().flatten_event(true);
            fmt.fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(WithTraceIds(json))
                .with_filter(filter)
                .boxed()
        }
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    // Exported spans do not depend on the log level: the gateway's own spans, always.
    let export = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(otlp::tracer(&p))
            .with_filter(filter_fn(|m| m.is_span() && m.target().starts_with("aigw")))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(export)
        .try_init()
        .map_err(std::io::Error::other)?;
    let _ = DISPATCH.set(tracing::dispatcher::get_default(|d| d.downgrade()));
    Ok(())
}

/// The installed subscriber, to look up a span's OpenTelemetry ids while formatting an event.
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// The JSON log format plus `trace_id` and `span_id` of the current span, when spans are
/// exported (so a log line leads to its trace).
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let ids = otlp::enabled()
            .then(|| ctx.lookup_current())
            .flatten()
            .and_then(|span| {
                let dispatch = DISPATCH.get()?.upgrade()?;
                let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
                let sc = cx.span().span_context().clone();
                sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
            });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
}
