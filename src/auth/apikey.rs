//! API keys: sent in a header or a query parameter, found through their SHA-256 hash.
//! Configuration holds hashes only.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

pub const DEFAULT_HEADER: &str = "x-api-key";

#[derive(Debug)]
pub struct ApiKeys {
    pub header: http::HeaderName,
    pub query: Option<String>,
    by_hash: HashMap<[u8; 32], Arc<str>>,
}

/// Parses `sha256:<64 hex>`.
pub fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    let hex = s.strip_prefix("sha256:").ok_or_else(|| {
        format!("{s:?} is not a key hash: write sha256:<64 hex> (see `gateway hash-key`)")
    })?;
    let bytes = hex::decode(hex).map_err(|_| format!("{s:?}: the hash is not hexadecimal"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{s:?}: a SHA-256 hash has 64 hex digits"))
}

impl ApiKeys {
    pub fn new(header: http::HeaderName, query: Option<String>) -> ApiKeys {
        ApiKeys {
            header,
            query,
            by_hash: HashMap::new(),
        }
    }

    /// Registers a key hash for a consumer; returns the consumer already holding it, if any.
    pub fn insert(&mut self, hash: [u8; 32], consumer: &str) -> Option<Arc<str>> {
        self.by_hash.insert(hash, consumer.into())
    }

    /// The key the request carries: the header first, then the query parameter.
    pub fn presented<'a>(
        &self,
        req: &'a pingora_http::RequestHeader,
    ) -> Option<std::borrow::Cow<'a, str>> {
        if let Some(v) = req.headers.get(&self.header).and_then(|v| v.to_str().ok()) {
            return Some(std::borrow::Cow::Borrowed(v.trim()));
        }
        let q = self.query.as_deref()?;
        form_urlencoded::parse(req.uri.query()?.as_bytes())
            .find(|(k, _)| k == q)
            .map(|(_, v)| v)
    }

    /// The consumer a key belongs to.
    pub fn consumer(&self, key: &str) -> Option<Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_hash.get(&digest).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes() {
        let h =
            parse_hash("sha256:a2fb8545fcd457204e9fee11be92013aa3240b1b146fe262ba608fdfc159041c")
                .unwrap();
        let mut keys = ApiKeys::new(http::HeaderName::from_static(DEFAULT_HEADER), None);
        assert!(keys.insert(h, "acme").is_none());
        assert_eq!(keys.consumer("demo-acme-key").as_deref(), Some("acme"));
        assert!(keys.consumer("demo-acme-kex").is_none());
        for bad in ["a2fb", "sha256:zz", "sha256:abcd", "md5:00"] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
    }
}
