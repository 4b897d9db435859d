//! A bounded cache of verified tokens: a token seen before is not verified again until its
//! `exp` (plus leeway). Only successful verifications are stored, keyed by the exact token;
//! an entry made under an older JWKS key set is verified again.

use super::jwt::Claims;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use std::sync::Arc;

/// Bytes of tokens (and an estimate of their claims) a provider's cache may hold.
pub const CAPACITY_BYTES: u64 = 8 << 20;
/// Estimated size of an entry's claims, added to the token's length.
const CLAIMS_ESTIMATE: u64 = 256;

#[derive(Clone)]
struct Entry {
    claims: Arc<Claims>,
    /// Unix seconds after which the token is expired, leeway included.
    expires: u64,
    keys_version: u64,
}

#[derive(Clone)]
struct ByLength;

impl Weighter<Box<str>, Entry> for ByLength {
    fn weight(&self, key: &Box<str>, _val: &Entry) -> u64 {
        key.len() as u64 + CLAIMS_ESTIMATE
    }
}

pub struct TokenCache {
    inner: Cache<Box<str>, Entry, ByLength>,
}

impl TokenCache {
    pub fn new(capacity_bytes: u64) -> TokenCache {
        let items = (capacity_bytes / 1024).max(16) as usize;
        TokenCache {
            inner: Cache::with_weighter(items, capacity_bytes, ByLength),
        }
    }

    /// The claims of a token verified before, still valid at `now` under `keys_version`.
    pub fn get(&self, token: &str, now: u64, keys_version: u64) -> Option<Arc<Claims>> {
        let e = self.inner.get(token)?;
        if now > e.expires || e.keys_version != keys_version {
            self.inner.remove(token);
            return None;
        }
        Some(e.claims)
    }

    pub fn put(&self, token: &str, claims: Arc<Claims>, expires: u64, keys_version: u64) {
        self.inner.insert(
            token.into(),
            Entry {
                claims,
                expires,
                keys_version,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_key_changes_invalidate() {
        let c = TokenCache::new(1 << 20);
        let claims = Arc::new(Claims::new());
        c.put("t", claims, 100, 1);
        assert!(c.get("t", 100, 1).is_some());
        assert!(
            c.get("t", 100, 2).is_none(),
            "another key set: verify again"
        );
        c.put("t", Arc::new(Claims::new()), 100, 1);
        assert!(c.get("t", 101, 1).is_none(), "expired");
        assert!(c.get("t", 50, 1).is_none(), "removed when found expired");
        assert!(c.get("other", 0, 1).is_none());
    }

    #[test]
    fn bounded_by_bytes() {
        let c = TokenCache::new(64 * 1024);
        for i in 0..10_000 {
            c.put(&format!("{i:0>1000}"), Arc::new(Claims::new()), u64::MAX, 0);
        }
        assert!(c.inner.weight() <= 64 * 1024, "weight {}", c.inner.weight());
    }
}
