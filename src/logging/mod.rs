//! Log output: JSON or text lines through `tracing`, written off the request path by a
//! non-blocking writer. The access log in JSON has its own fast path ([`access`]): one
//! line built in a reused per-thread buffer and handed to the same writer, without
//! tracing's field visitors and JSON maps (the access line is written for every request).

use crate::config::gateway::{LogFormat, LogSettings};
use std::sync::OnceLock;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};
use tracing_subscriber::EnvFilter;

pub mod access;

/// The log writer's guard: dropping it flushes what is buffered.
static GUARD: std::sync::Mutex<Option<WorkerGuard>> = std::sync::Mutex::new(None);
/// The writer, for JSON access lines (set only with the JSON format).
static JSON_WRITER: OnceLock<NonBlocking> = OnceLock::new();
/// Lines the writer dropped because its buffer was full.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Writes out every buffered log line; call before exiting the process.
pub fn flush() {
    if let Ok(mut g) = GUARD.lock() {
        drop(g.take());
    }
}

/// Lines dropped so far because the writer could not keep up (`gateway_log_lines_dropped_total`).
pub fn dropped() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Standard output without the standard library's line buffering: one `write` per line
/// would be a system call per request with the access log on. The writer's thread writes
/// what is queued into this buffer and flushes it each time the queue is empty, so lines
/// still appear at once when traffic is light, in batches when it is not.
fn output() -> Box<dyn std::io::Write + Send> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::fs::File::from(fd),
        )),
        Err(_) => Box::new(std::io::stdout()),
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level. The writer's
/// guard is kept until [`flush`].
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(output());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .with_target(true);
    let result = match settings.format {
        LogFormat::Json => {
            let _ = JSON_WRITER.set(writer);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .try_init()
        }
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
    if let Ok(mut g) = GUARD.lock() {
        *g = Some(guard);
    }
}
