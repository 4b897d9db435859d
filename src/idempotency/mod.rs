//! Idempotency keys: a write sent twice with the same key runs once. The first request
//! takes the key (an in-flight lock in the shared store), its answer is stored under the
//! key, and a repeat gets that answer back without reaching the upstream.
//!
//! What the store holds under a key is an [`Entry`]: the lock (fingerprint and a token
//! only this request knows, so it can release or complete only its own lock), or the
//! stored answer (fingerprint and response). The fingerprint is the SHA-256 of method,
//! path, query and the body's SHA-256, so a key reused for another request is told apart.

pub mod codec;

use crate::config::integration::IdempotencyDef;
use http::{HeaderName, Method};
use sha2::{Digest, Sha256};
use std::time::Duration;

pub use codec::{Answer, Entry};

/// A route's compiled `idempotency` block.
#[derive(Debug)]
pub struct Idempotency {
    pub header: HeaderName,
    /// The header as configured (for messages: `Idempotency-Key`, not `idempotency-key`).
    pub header_text: String,
    pub methods: Vec<Method>,
    pub required: bool,
    pub ttl: Duration,
    pub max_response: usize,
    /// How long an in-flight lock lives: the longest the first request can take (every
    /// try to its read timeout) plus 5 s, so that a replica that dies mid-request cannot
    /// leave a key answering 409 for ever.
    pub lock_ttl: Duration,
}

impl Idempotency {
    /// `longest`: the longest the route's upstream may take to answer.
    pub fn compile(def: &IdempotencyDef, longest: Duration) -> Result<Idempotency, String> {
        let header = HeaderName::from_bytes(def.header.as_bytes())
            .map_err(|_| format!("invalid header name {:?}", def.header))?;
        if def.methods.is_empty() {
            return Err("`methods` is empty: list the methods that take a key".into());
        }
        if def.ttl.0 < Duration::from_secs(1) || def.ttl.0 > Duration::from_secs(30 * 86_400) {
            return Err("`ttl` must be between 1s and 30d".into());
        }
        if def.max_response.0 > 64 << 20 {
            return Err("`max_response` must be at most 64MiB".into());
        }
        Ok(Idempotency {
            header,
            header_text: def.header.clone(),
            methods: def.methods.iter().map(|m| m.0.clone()).collect(),
            required: def.required,
            ttl: def.ttl.0,
            max_response: usize::try_from(def.max_response.0).unwrap_or(usize::MAX),
            lock_ttl: longest + Duration::from_secs(5),
        })
    }
}

/// A client's key, if it is one: 1–255 visible ASCII characters.
pub fn valid_key(key: &[u8]) -> bool {
    (1..=255).contains(&key.len()) && key.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The store id of a key: scoped by route and by who sent it (consumer, or client
/// address on public routes), hashed so that its length and characters are fixed.
pub fn store_id(route: &str, scope: &str, key: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [route.as_bytes(), scope.as_bytes(), key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// The request's fingerprint: method, path, query and the SHA-256 of the body.
pub fn fingerprint(method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        method.as_str().as_bytes(),
        path.as_bytes(),
        query.unwrap_or("").as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(Sha256::digest(body));
    h.finalize().into()
}

/// Whether an answer with this status may be stored (and so replayed): below 500, and
/// not 408 or 429, which ask the client to try again.
pub fn storable(status: u16) -> bool {
    status < 500 && status != 408 && status != 429
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key(b"order-1"));
        assert!(valid_key(&[b'a'; 255]));
        assert!(!valid_key(&[b'a'; 256]));
        assert!(!valid_key(b""));
        assert!(!valid_key(b"a b"));
        assert!(!valid_key("é".as_bytes()));
        // Scopes are kept apart, even when concatenations would agree.
        assert_ne!(store_id("r", "ab", b"c"), store_id("r", "a", b"bc"));
        assert_ne!(store_id("r1", "c", b"k"), store_id("r2", "c", b"k"));
        assert_eq!(store_id("r", "c", b"k").len(), 64);
    }

    #[test]
    fn fingerprints() {
        let f = |m: &Method, p, q, b: &[u8]| fingerprint(m, p, q, b);
        let base = f(&Method::POST, "/o", None, b"{}");
        assert_eq!(base, f(&Method::POST, "/o", Some(""), b"{}"));
        assert_ne!(base, f(&Method::PUT, "/o", None, b"{}"));
        assert_ne!(base, f(&Method::POST, "/p", None, b"{}"));
        assert_ne!(base, f(&Method::POST, "/o", Some("a=1"), b"{}"));
        assert_ne!(base, f(&Method::POST, "/o", None, b"{ }"));
    }

    #[test]
    fn statuses() {
        for s in [200, 201, 204, 301, 400, 404, 409, 422] {
            assert!(storable(s), "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(!storable(s), "{s}");
        }
    }
}
