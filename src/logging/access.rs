//! The JSON access line, built by hand: the same keys as tracing's JSON formatter writes
//! for the `access` target (`timestamp`, `level`, the fields, `target`), in one buffer
//! reused by each thread, then appended to the log sink in one piece. tracing's path costs
//! a field visitor, a JSON map and several allocations per line.

use std::cell::RefCell;
use std::fmt::Write as _;

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    /// The second the last line was written in, and its text up to the seconds
    /// (`2026-12-06T09:39:07`): formatting a date costs more than the rest of a line.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `2026-12-06T09:39:07.188107Z`, the date part formatted once a second per thread.
fn timestamp(out: &mut String) {
    let now = std::time::SystemTime::now();
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with(|cell| {
        let Ok(mut second) = cell.try_borrow_mut() else {
            let _ = write!(out, "{}", humantime::format_rfc3339_micros(now));
            return;
        };
        if second.0 != since.as_secs() {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(since.as_secs());
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            second.1 = text.trim_end_matches('Z').to_string();
            second.0 = since.as_secs();
        }
        out.push_str(&second.1);
    });
    out.push('.');
    let micros = since.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let text = digits.format(micros);
    for _ in text.len()..6 {
        out.push('0');
    }
    out.push_str(text);
    out.push('Z');
}

/// Whether access lines go through [`write`]: JSON format, and the `access` target enabled
/// at info by the filter.
pub fn fast() -> bool {
    super::JSON.get().is_some()
        && super::SINK.get().is_some()
        && tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// One access line under construction.
pub struct Line<'a> {
    out: &'a mut String,
}

impl Line<'_> {
    fn key(&mut self, k: &str) {
        self.out.push_str(",\"");
        self.out.push_str(k);
        self.out.push_str("\":");
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        escape(self.out, v);
        self
    }

    pub fn uint(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.out.push_str(itoa::Buffer::new().format(v));
        self
    }

    /// Milliseconds with microsecond precision.
    pub fn millis(&mut self, k: &str, d: std::time::Duration) -> &mut Self {
        self.key(k);
        let micros = d.as_micros();
        self.out.push_str(itoa::Buffer::new().format(micros / 1000));
        self.out.push('.');
        let frac = (micros % 1000) as u16;
        let mut digits = itoa::Buffer::new();
        let text = digits.format(frac);
        for _ in text.len()..3 {
            self.out.push('0');
        }
        self.out.push_str(text);
        self
    }

    /// A value written by `f` as a JSON string (it must not need escaping: addresses).
    pub fn plain(&mut self, k: &str, f: impl FnOnce(&mut String)) -> &mut Self {
        self.key(k);
        self.out.push('"');
        f(self.out);
        self.out.push('"');
        self
    }
}

/// Builds one line with `fields` and writes it.
pub fn write(fields: impl FnOnce(&mut Line<'_>)) {
    if super::SINK.get().is_none() {
        return;
    }
    LINE.with(|buf| {
        let Ok(mut out) = buf.try_borrow_mut() else {
            return;
        };
        out.clear();
        out.push_str("{\"timestamp\":\"");
        timestamp(&mut out);
        out.push_str("\",\"level\":\"INFO\"");
        fields(&mut Line { out: &mut out });
        out.push_str(",\"target\":\"access\"}\n");
        // One push is one line for the sink (it never splits or interleaves it).
        super::push(out.as_bytes());
    });
}

/// Whether a byte of `s` must be escaped in a JSON string: a quote, a backslash or a
/// control character. Eight bytes a step (the ids, routes and paths of most lines need
/// nothing, and a byte-by-byte scan was the largest part of building a line).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Some byte of `x` is below `n` (exact for n <= 128; bytes of 0x80 and above never match).
    let below = |x: u64, n: u64| x.wrapping_sub(n * ONES) & !x & HIGHS;
    let zero_byte = |x: u64| below(x, 1);
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let Ok(bytes) = <[u8; 8]>::try_from(c) else {
            return true;
        };
        let x = u64::from_le_bytes(bytes);
        let quote = zero_byte(x ^ (u64::from(b'"') * ONES));
        let backslash = zero_byte(x ^ (u64::from(b'\\') * ONES));
        if below(x, 0x20) | quote | backslash != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `s` as a JSON string.
fn escape(out: &mut String, s: &str) {
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if rep.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(rep);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_humantime() {
        for _ in 0..3 {
            let mut out = String::new();
            let before = std::time::SystemTime::now();
            timestamp(&mut out);
            let parsed = humantime::parse_rfc3339(&out).unwrap();
            let after = std::time::SystemTime::now();
            assert!(
                parsed >= before - std::time::Duration::from_micros(1) && parsed <= after,
                "{out}"
            );
            assert_eq!(out.len(), "2026-12-06T09:39:07.188107Z".len(), "{out}");
        }
    }

    #[test]
    fn the_wide_escape_check_agrees_with_a_byte_by_byte_one() {
        let naive = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in [0usize, 1, 7, 8, 9, 16, 17, 24] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(needs_escape(&s), naive(&s), "byte {b:#x} at {at} of {len}");
                    // Beside bytes of 0x80 and above (UTF-8), which must not trip it.
                    let mut hi = vec![0xc3u8; len];
                    hi[at] = b;
                    assert_eq!(
                        needs_escape(&hi),
                        naive(&hi),
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn lines_are_valid_json_whatever_the_values() {
        let mut out = String::new();
        let mut line = Line { out: &mut out };
        line.str("path", "/a\"b\\c\n\u{1}é")
            .uint("status", 200)
            .millis("duration_ms", std::time::Duration::from_micros(2_500_042))
            .millis("short", std::time::Duration::from_micros(7));
        let json = format!("{{\"x\":1{out}}}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\n\u{1}é");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"].as_f64(), Some(2500.042));
        assert_eq!(v["short"].as_f64(), Some(0.007));
    }
}
