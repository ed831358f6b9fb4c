//! Logging setup: `log_format = "text" | "json"`, level from the config unless `RUST_LOG` is set;
//! with `[observability.otlp]`, the spans are exported too (see [`crate::observability::otlp`]).
//!
//! Lines are formatted on the worker that logs them and handed to a writer thread
//! (tracing-appender's non-blocking writer): a worker never waits on a `write` to stderr. The
//! hand-off is bounded and lossy: when [`BUFFERED_LINES`] lines are already waiting, the line is
//! dropped and counted (`gateway_log_lines_dropped_total`) rather than blocking the worker. The
//! [`LogGuard`] flushes what is queued when it drops, so `main` keeps it until the server stopped.

use std::io::{BufWriter, Write};
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{Config, LogFormat, ObservabilityConfig};
use crate::observability::otlp;

/// Lines waiting for the writer thread before new ones are dropped: seconds of the heaviest
/// traffic, a few MB at most.
pub const BUFFERED_LINES: usize = 16_384;

/// The process's writer, once [`init`] installed it.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the writer thread's queue was full (0 before [`init`]).
pub fn lines_dropped() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Keeps the writer thread; dropping it writes every queued line and flushes stderr.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// A bounded, lossy non-blocking writer in front of `out`. The writer thread writes lines as
/// they come and flushes whenever its queue is empty, so a burst costs one syscall, not one per
/// line.
pub fn non_blocking<W: Write + Send + 'static>(
    out: W,
    buffered_lines: usize,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(buffered_lines)
        .thread_name("aigw-log")
        .finish(BufWriter::new(out))
}

/// Logs only; `None` when a subscriber is already installed (tests).
pub fn init(config: &ObservabilityConfig) -> Option<LogGuard> {
    install(config, None).ok()
}

/// Logs, and span export when the config asks for it. Call once, inside nothing: the exporter
/// runs on a thread of its own. Keep the guard until the server stopped.
pub fn init_with_export(config: &Config) -> std::io::Result<LogGuard> {
    let provider = match &config.observability.otlp {
        Some(otlp) => Some(otlp::start(otlp, &config.secrets.otlp_headers)?),
        None => None,
    };
    install(&config.observability, provider)
}

fn install(
    config: &ObservabilityConfig,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
) -> std::io::Result<LogGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let (writer, guard) = non_blocking(std::io::stderr(), BUFFERED_LINES);
    let dropped = writer.error_counter();
    // Logs go to stderr, coloured only on a terminal.
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(writer)
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
    let _ = DROPPED.set(dropped);
    Ok(LogGuard { _writer: guard })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Stands for a stalled stderr: each write waits until the test lets it through.
    struct Stalled(mpsc::Receiver<()>, mpsc::Sender<Vec<u8>>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            let _ = self.1.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_instead_of_blocking() {
        let (release, stalled) = mpsc::channel();
        let (written, out) = mpsc::channel();
        let (mut writer, guard) = non_blocking(Stalled(stalled, written), 2);
        let dropped = writer.error_counter();
        // The writer thread takes the first line and stalls on it (its BufWriter passes a line
        // bigger than its buffer straight through); two more fill the queue; the rest are
        // dropped, and none of these writes waits.
        let big = vec![b'x'; 16 * 1024];
        writer.write_all(&big).unwrap();
        while dropped.dropped_lines() == 0 {
            writer.write_all(b"line\n").unwrap();
        }
        let before = dropped.dropped_lines();
        for _ in 0..10 {
            writer.write_all(b"line\n").unwrap();
        }
        assert_eq!(dropped.dropped_lines(), before + 10);
        // Released, the writer writes what was queued and flushes on drop.
        drop(release);
        drop(writer);
        drop(guard);
        let got: Vec<u8> = out.try_iter().flatten().collect();
        assert!(got.starts_with(&big));
        assert!(got.ends_with(b"line\n"), "the queued lines are written");
    }

    #[test]
    fn dropping_the_guard_writes_every_queued_line() {
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut writer, guard) = non_blocking(Shared(out.clone()), 1024);
        // One write per line, as the fmt layer writes (a `writeln!` would be one per piece).
        for i in 0..500 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 500);
        assert!(text.ends_with("line 499\n"));
        assert_eq!(writer.error_counter().dropped_lines(), 0);
    }
}
