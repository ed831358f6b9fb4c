//! Logging setup: `log_format = "text" | "json"`, level from the config unless `RUST_LOG` is set.
//!
//! Lines are formatted on the worker that logs them and handed to a writer thread
//! (tracing-appender's non-blocking writer): a worker never waits on a `write` to stderr. The
//! hand-off is bounded and lossy: when [`BUFFERED_LINES`] lines are already waiting, the line is
//! dropped and counted (`gateway_log_lines_dropped_total`) rather than blocking the worker. The
//! [`LogGuard`] flushes what is queued when it drops, so `main` keeps it until the server stopped.

use std::io::{BufWriter, Write};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, ObservabilityConfig};

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

/// Installs the process's subscriber; `None` when one is already installed (tests).
pub fn init(config: &ObservabilityConfig) -> Option<LogGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let (writer, guard) = non_blocking(std::io::stderr(), BUFFERED_LINES);
    let dropped = writer.error_counter();
    // Logs go to stderr, coloured only on a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let installed = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.ok()?;
    let _ = DROPPED.set(dropped);
    Some(LogGuard { _writer: guard })
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
