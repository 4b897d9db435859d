//! Response compression (`response.compression` on a route): the encoding negotiated from
//! `Accept-Encoding` (q-values honoured, the route's order breaking ties), only for
//! compressible types at least `min_size` long, never over an encoding the upstream applied.
//! The encoders are Pingora's (gzip, brotli, zstd); the decision is the gateway's, because
//! Pingora's own negotiation ignores q-values and has no size or type settings.

use crate::config::integration::CompressionDef;
use http::header::{
    ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, TRANSFER_ENCODING, VARY,
};
use http::HeaderValue;
use pingora_core::protocols::http::compression::{Algorithm, Encode};
use pingora_http::ResponseHeader;

/// A body encoder for one answer. Brotli is the crate's own writer: Pingora's brotli
/// encoder only flushes at the end and never writes the stream's last block, which strict
/// decoders refuse.
pub enum Encoder {
    Pingora(Box<dyn Encode + Send + Sync>),
    /// Boxed: the writer is ~5.6 KiB, and the request context holds the encoder.
    Brotli(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
}

impl Encoder {
    fn new(a: Algorithm) -> Option<Encoder> {
        match a {
            // 4 KiB buffer, window 2^19 (as Pingora).
            Algorithm::Brotli => Some(Encoder::Brotli(Some(Box::new(
                brotli::CompressorWriter::new(Vec::new(), 4096, level(a), 19),
            )))),
            _ => a.compressor(level(a)).map(Encoder::Pingora),
        }
    }

    /// Encodes a piece of the body; `end`: the last piece (the stream is finished).
    pub fn encode(&mut self, input: &[u8], end: bool) -> Result<bytes::Bytes, String> {
        use std::io::Write;
        match self {
            Encoder::Pingora(e) => e.encode(input, end).map_err(|e| e.to_string()),
            Encoder::Brotli(slot) => {
                let w = slot
                    .as_mut()
                    .ok_or("the brotli stream is already finished")?;
                w.write_all(input).map_err(|e| e.to_string())?;
                if end {
                    let w = slot.take().ok_or("the brotli stream is already finished")?;
                    return Ok(w.into_inner().into());
                }
                Ok(std::mem::take(w.get_mut()).into())
            }
        }
    }
}

/// A route's compiled `response.compression`.
#[derive(Debug)]
pub struct Compression {
    /// In the route's order of preference.
    algorithms: Vec<Algorithm>,
    min_size: u64,
}

/// Levels measured to compress 100 KiB of JSON at over 100 MB/s on one core
/// (`cargo bench --bench compress`).
fn level(a: Algorithm) -> u32 {
    match a {
        // 390 MiB/s, 20.6 % of the input.
        Algorithm::Zstd => 3,
        // 146 MiB/s with the crate's writer and a 2^19 window, 20.9 % (level 4: 99 MiB/s).
        Algorithm::Brotli => 3,
        // 149 MiB/s, 22.6 % (level 6: 84 MiB/s).
        _ => 4,
    }
}

fn token(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Zstd => "zstd",
        Algorithm::Brotli => "br",
        _ => "gzip",
    }
}

impl Compression {
    pub fn compile(def: &CompressionDef) -> Result<Compression, String> {
        let mut algorithms = Vec::new();
        for name in &def.algorithms {
            let a = match name.as_str() {
                "zstd" => Algorithm::Zstd,
                "br" => Algorithm::Brotli,
                "gzip" => Algorithm::Gzip,
                other => {
                    return Err(format!(
                        "unknown algorithm {other:?}: expected zstd, br or gzip"
                    ))
                }
            };
            if algorithms.contains(&a) {
                return Err(format!("algorithm {name:?} is listed twice"));
            }
            algorithms.push(a);
        }
        if algorithms.is_empty() {
            return Err("`algorithms` is empty".into());
        }
        Ok(Compression {
            algorithms,
            min_size: def.min_size.0,
        })
    }

    /// The encoding to use for a client that sent `accept`: the acceptable one with the
    /// highest q-value, ties going to the route's order.
    pub fn negotiate(&self, accept: Option<&HeaderValue>) -> Option<Algorithm> {
        let accept = accept?.to_str().ok()?;
        let mut star = None;
        let mut weights: Vec<(&str, f32)> = Vec::new();
        for item in accept.split(',').take(32) {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .or_else(|| p.trim().strip_prefix("Q="))
                })
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            if name == "*" {
                star = Some(q);
            } else if !name.is_empty() {
                weights.push((name, q));
            }
        }
        let q_of = |a: Algorithm| {
            let t = token(a);
            weights
                .iter()
                .find(|(n, _)| {
                    n.eq_ignore_ascii_case(t) || (t == "gzip" && n.eq_ignore_ascii_case("x-gzip"))
                })
                .map(|(_, q)| *q)
                .or(star)
                .unwrap_or(0.0)
        };
        let mut best: Option<(Algorithm, f32)> = None;
        for a in &self.algorithms {
            let q = q_of(*a);
            if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((*a, q));
            }
        }
        best.map(|(a, _)| a)
    }

    /// Decides for one answer and, when it is compressed, rewrites its head and returns the
    /// encoder for its body. `head_only`: a HEAD request (no body to encode).
    pub fn start(
        &self,
        resp: &mut ResponseHeader,
        accept: Option<&HeaderValue>,
        head_only: bool,
    ) -> Option<Encoder> {
        let status = resp.status.as_u16();
        if resp.status.is_informational() || matches!(status, 204 | 206 | 304) {
            return None;
        }
        if !compressible(resp.headers.get(CONTENT_TYPE)) {
            return None;
        }
        // The answer depends on Accept-Encoding whatever this client gets.
        add_vary(resp);
        if resp.headers.contains_key(CONTENT_ENCODING) || head_only {
            return None;
        }
        let len = resp
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if len.is_some_and(|n| n < self.min_size) {
            return None;
        }
        let algorithm = self.negotiate(accept)?;
        let encoder = Encoder::new(algorithm)?;
        let _ = resp.insert_header(CONTENT_ENCODING, token(algorithm));
        resp.remove_header(&CONTENT_LENGTH);
        resp.remove_header(&ACCEPT_RANGES);
        let _ = resp.insert_header(TRANSFER_ENCODING, "chunked");
        weaken_etag(resp);
        Some(encoder)
    }
}

/// `text/*`, JSON (also `+json`), JavaScript, XML and SVG. Not an event stream: its
/// events go out as they come, and an encoder would hold them back.
fn compressible(content_type: Option<&HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (mime.starts_with("text/") && mime != "text/event-stream")
        || matches!(
            mime.as_str(),
            "application/json" | "application/javascript" | "application/xml" | "image/svg+xml"
        )
        || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn add_vary(resp: &mut ResponseHeader) {
    let present = resp.headers.get_all(VARY).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            t.trim_ascii().eq_ignore_ascii_case(b"accept-encoding") || t.trim_ascii() == b"*"
        })
    });
    if !present {
        let _ = resp.append_header(VARY, "Accept-Encoding");
    }
}

/// Another byte representation: a strong ETag becomes weak (RFC 9110 §8.8.1), an invalid one
/// is dropped.
fn weaken_etag(resp: &mut ResponseHeader) {
    let Some(etag) = resp.headers.get(ETAG).map(|e| e.as_bytes().to_vec()) else {
        return;
    };
    if etag.starts_with(b"W/") {
        return;
    }
    match HeaderValue::from_bytes(&[b"W/", etag.as_slice()].concat()) {
        Ok(v) if etag.starts_with(b"\"") => {
            let _ = resp.insert_header(ETAG, v);
        }
        _ => {
            resp.remove_header(&ETAG);
        }
    }
}

#[cfg(test)]
#[path = "compress_tests.rs"]
mod tests;
