//! Log output: JSON or text lines through `tracing`, written off the request path by one
//! writer thread ([`sink`]). The access log in JSON has its own fast path ([`access`]): one
//! line built in a reused per-thread buffer and appended to the same sink, without
//! tracing's field visitors and JSON maps (the access line is written for every request).

use crate::config::gateway::{LogFormat, LogSettings};
use std::sync::{Arc, OnceLock};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

pub mod access;
mod sink;

/// Most log bytes held unwritten (about 50,000 access lines) before lines are dropped.
const SINK_CAP: usize = 16 * 1024 * 1024;

/// The sink every line goes to, once [`init`] ran.
static SINK: OnceLock<Arc<sink::Sink>> = OnceLock::new();
/// Whether access lines take the JSON fast path (the JSON format is on).
static JSON: OnceLock<()> = OnceLock::new();

/// Writes out every buffered log line; call before exiting the process.
pub fn flush() {
    if let Some(s) = SINK.get() {
        s.close();
    }
}

/// Lines dropped so far because the writer could not keep up (`gateway_log_lines_dropped_total`).
pub fn dropped() -> u64 {
    SINK.get().map_or(0, |s| s.dropped())
}

/// Appends one or more whole lines to the sink (nothing before [`init`]).
fn push(line: &[u8]) {
    if let Some(s) = SINK.get() {
        s.push(line);
    }
}

/// tracing's writer: each event is formatted whole, then written with one `write_all`,
/// which becomes one [`push`].
struct ToSink;

impl std::io::Write for ToSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct MakeToSink;

impl<'a> MakeWriter<'a> for MakeToSink {
    type Writer = ToSink;

    fn make_writer(&'a self) -> ToSink {
        ToSink
    }
}

/// Standard output as a file of its own: the sink writes whole batches with one `write`
/// each (the standard library's stdout is line-buffered: a system call per line).
fn output() -> Box<dyn std::io::Write + Send> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stdout()),
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    match sink::Sink::new(output(), SINK_CAP) {
        Ok(s) => {
            let _ = SINK.set(s);
        }
        Err(e) => eprintln!("log writer thread not started ({e}): log lines are dropped"),
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MakeToSink)
        .with_target(true);
    let result = match settings.format {
        LogFormat::Json => {
            let _ = JSON.set(());
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
}
