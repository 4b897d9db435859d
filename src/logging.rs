//! Log output: JSON or text lines through `tracing`, written off the request path.

use crate::config::gateway::{LogFormat, LogSettings};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// The log writer's guard: dropping it flushes what is buffered.
static GUARD: std::sync::Mutex<Option<WorkerGuard>> = std::sync::Mutex::new(None);

/// Writes out every buffered log line; call before exiting the process.
pub fn flush() {
    if let Ok(mut g) = GUARD.lock() {
        drop(g.take());
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level. The writer's
/// guard is kept until [`flush`].
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    let result = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
    if let Ok(mut g) = GUARD.lock() {
        *g = Some(guard);
    }
}
