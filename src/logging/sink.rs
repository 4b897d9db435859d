//! Where every log line goes: one shared buffer, written out by one thread.
//!
//! A line is appended under a lock that is only ever held for a copy; the writer thread
//! takes the whole buffer every few milliseconds while lines keep coming and writes it with
//! one system call. A request thread never allocates for a line, never waits for the output
//! and never wakes the writer under load: only the first line after the writer has gone
//! idle unparks it, so a lone line still appears at once. tracing-appender's non-blocking
//! writer, used before, sent each line as its own allocation through a channel to a thread
//! that copied it again (about 1.3k instructions a line with the access log on).
//!
//! The buffer is bounded ([`Sink::new`]'s `cap`): while the output cannot keep up, lines
//! beyond it are dropped and counted (`gateway_log_lines_dropped_total`), never queued
//! without limit.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

/// How long the writer lets lines gather while they keep coming.
const GATHER: Duration = Duration::from_millis(5);
/// The longest an idle writer sleeps without being woken (a safety net only).
const IDLE: Duration = Duration::from_secs(1);
/// The longest [`Sink::close`] waits for the output (a stdout nobody reads must not keep the
/// process from exiting).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub struct Sink {
    buf: Mutex<Vec<u8>>,
    cap: usize,
    dropped: AtomicU64,
    /// The writer is parked until woken (its last look found nothing).
    idle: AtomicBool,
    /// Set by [`Sink::close`]: the writer writes what is left and ends.
    closing: AtomicBool,
    /// The writer thread, to unpark it.
    thread: OnceLock<Thread>,
    /// To wait for it at [`Sink::close`].
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Sink {
    /// A sink writing to `out` from its own thread, holding at most `cap` bytes unwritten.
    pub fn new(out: Box<dyn Write + Send>, cap: usize) -> std::io::Result<Arc<Sink>> {
        let sink = Arc::new(Sink {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            cap,
            dropped: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            thread: OnceLock::new(),
            writer: Mutex::new(None),
        });
        let thread = {
            let sink = sink.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || sink.run(out))?
        };
        let _ = sink.thread.set(thread.thread().clone());
        if let Ok(mut w) = sink.writer.lock() {
            *w = Some(thread);
        }
        Ok(sink)
    }

    /// Appends one whole line (or several), or drops it if the buffer is full.
    pub fn push(&self, line: &[u8]) {
        let was_empty = {
            let Ok(mut buf) = self.buf.lock() else {
                return;
            };
            if buf.len() + line.len() > self.cap {
                drop(buf);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let was_empty = buf.is_empty();
            buf.extend_from_slice(line);
            was_empty
        };
        if was_empty && self.idle.swap(false, Ordering::AcqRel) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes out everything pushed so far and stops the writer; later lines are dropped.
    /// Waits at most [`CLOSE_WAIT`] for the output; past it the writer is left behind.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            h.thread().unpark();
            let start = std::time::Instant::now();
            while !h.is_finished() && start.elapsed() < CLOSE_WAIT {
                std::thread::sleep(Duration::from_millis(2));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }

    fn run(&self, mut out: Box<dyn Write + Send>) {
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            let closing = self.closing.load(Ordering::Acquire);
            if let Ok(mut buf) = self.buf.lock() {
                std::mem::swap(&mut *buf, &mut spare);
            }
            if closing {
                let _ = out.write_all(&spare).and_then(|()| out.flush());
                return;
            }
            if spare.is_empty() {
                // Announce the nap, then look again: a line pushed in between either is
                // seen now or finds `idle` set and unparks.
                self.idle.store(true, Ordering::SeqCst);
                let empty = self.buf.lock().map(|b| b.is_empty()).unwrap_or(true);
                if empty {
                    std::thread::park_timeout(IDLE);
                }
                self.idle.store(false, Ordering::SeqCst);
                continue;
            }
            if out.write_all(&spare).and_then(|()| out.flush()).is_err() {
                let lost = spare.iter().filter(|&&b| b == b'\n').count() as u64;
                self.dropped.fetch_add(lost, Ordering::Relaxed);
            }
            spare.clear();
            std::thread::park_timeout(GATHER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output the test can read, and hold shut (a stuck stdout).
    #[derive(Clone, Default)]
    struct Out {
        bytes: Arc<Mutex<Vec<u8>>>,
        shut: Arc<Mutex<()>>,
    }

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _held = self.shut.lock().unwrap();
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(out: &Out) -> String {
        String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn every_line_from_every_thread_comes_out_whole_and_in_order() {
        let out = Out::default();
        let sink = Sink::new(Box::new(out.clone()), 64 * 1024 * 1024).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        sink.push(format!("{{\"thread\":{t},\"n\":{i}}}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.close();
        let text = text(&out);
        let mut next = [0u64; 4];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let t = v["thread"].as_u64().unwrap() as usize;
            assert_eq!(v["n"].as_u64().unwrap(), next[t], "thread {t} out of order");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn a_stuck_output_drops_and_counts_lines_beyond_the_cap() {
        let out = Out::default();
        let shut = out.shut.lock().unwrap();
        let sink = Sink::new(Box::new(out.clone()), 1000).unwrap();
        // The first line is taken by the writer, which then blocks writing it.
        sink.push(b"first\n");
        let start = Instant::now();
        while !sink.buf.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let line = [b'x'; 99];
        for _ in 0..20 {
            let mut l = line.to_vec();
            l.push(b'\n');
            sink.push(&l);
        }
        // 1000 bytes hold ten 100-byte lines.
        assert_eq!(sink.dropped(), 10);
        // Closing while the output is still stuck gives up after its bound, not never.
        let closing = Instant::now();
        sink.close();
        assert!(closing.elapsed() < CLOSE_WAIT + Duration::from_secs(1));
        // Let go, the writer left behind still writes what it held, then ends.
        drop(shut);
        let start = Instant::now();
        while text(&out).lines().count() < 11 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let text = text(&out);
        assert_eq!(text.lines().count(), 11, "{text}");
        assert!(text.starts_with("first\n"));
    }

    #[test]
    fn a_line_after_a_quiet_spell_is_written_at_once() {
        let out = Out::default();
        let sink = Sink::new(Box::new(out.clone()), 1024).unwrap();
        for round in 0..3 {
            // Long enough for the writer to go idle (it then sleeps up to a second).
            std::thread::sleep(Duration::from_millis(300));
            sink.push(format!("line {round}\n").as_bytes());
            let pushed = Instant::now();
            while !text(&out).contains(&format!("line {round}\n")) {
                assert!(
                    pushed.elapsed() < Duration::from_millis(500),
                    "the idle writer was not woken"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sink.close();
    }
}
