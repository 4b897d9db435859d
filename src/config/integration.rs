//! Policy blocks of the integration layer: idempotency keys on routes, and the webhook
//! verifiers that routes name in `auth: [webhook:NAME]`. Checked and compiled by
//! `crate::idempotency` and `crate::webhook`.

use super::values::{Dur, MethodName, Size};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyDef {
    #[serde(default = "default_header")]
    pub header: String,
    #[serde(default = "default_methods")]
    pub methods: Vec<MethodName>,
    /// A listed method without a key: 400 `idempotency_key_missing`.
    #[serde(default)]
    pub required: bool,
    /// How long a completed answer is replayed.
    #[serde(default = "default_ttl")]
    pub ttl: Dur,
    /// Larger answers are not stored; the key is released.
    #[serde(default = "default_max_response")]
    pub max_response: Size,
}

fn default_header() -> String {
    "Idempotency-Key".into()
}

fn default_methods() -> Vec<MethodName> {
    vec![
        MethodName(http::Method::POST),
        MethodName(http::Method::PATCH),
    ]
}

fn default_ttl() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}

fn default_max_response() -> Size {
    Size(1 << 20)
}

/// One entry of `webhook_verifiers`. Scheme-specific keys are checked against the scheme
/// when compiled (with the file and line of the verifier).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookVerifierDef {
    /// `standard`, `stripe`, `github` or `hmac`.
    pub scheme: String,
    /// Environment variables holding the secrets; any one may match (rotation).
    pub secrets_env: Vec<String>,
    /// Timestamp window, both directions; default 5m.
    #[serde(default)]
    pub tolerance: Option<Dur>,
    // `hmac` only.
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub algorithm: Option<String>,
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default)]
    pub id_header: Option<String>,
}

/// One entry of `cors_policies`, named by routes in `cors: NAME`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicyDef {
    /// Exact origins (`https://app.example.com`), `https://*.example.com`, or `"*"`.
    pub allow_origins: Vec<String>,
    /// Default: the route's methods.
    #[serde(default)]
    pub allow_methods: Option<Vec<MethodName>>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub max_age: Option<Dur>,
}

/// A route's `response` block.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseDef {
    #[serde(default)]
    pub compression: Option<CompressionDef>,
    /// Header edits on every answer of the route.
    #[serde(default)]
    pub headers: Option<super::policy::HeaderOpsDef>,
    /// JSON edits of 2xx JSON answers up to 8 MiB.
    #[serde(default)]
    pub transform: Option<super::traffic::TransformDef>,
}

/// A route's `cache` block: its answers kept and served by the gateway.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheDef {
    /// Freshness when the upstream's `Cache-Control` gives no `s-maxage` or `max-age`.
    pub ttl: Dur,
    /// Request parts that select an entry besides method, host, path and query:
    /// `header:NAME`.
    #[serde(default)]
    pub key: Vec<CacheKeyPart>,
    /// How long an expired entry is still served while one request refreshes it.
    #[serde(default)]
    pub stale_while_revalidate: Option<Dur>,
}

/// One `key` entry of a route's cache: `header:NAME`, checked where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheKeyPart(pub http::HeaderName);

impl<'de> Deserialize<'de> for CacheKeyPart {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::values::parse_str(d, "a key part such as header:Accept-Language", |s| {
            let name = s
                .strip_prefix("header:")
                .ok_or_else(|| format!("key part {s:?} is not understood: write header:NAME"))?;
            http::HeaderName::from_bytes(name.trim().as_bytes())
                .map(CacheKeyPart)
                .map_err(|_| format!("key part {s:?}: {name:?} is not a header name"))
        })
    }
}

/// gateway.yaml's `cache`: the memory every cached answer shares.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheSettingsDef {
    /// Least recently used entries go first once the answers held reach this.
    #[serde(default = "default_max_memory")]
    pub max_memory: Size,
}

impl Default for CacheSettingsDef {
    fn default() -> Self {
        CacheSettingsDef {
            max_memory: default_max_memory(),
        }
    }
}

fn default_max_memory() -> Size {
    Size(64 << 20)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompressionDef {
    /// Offered in this order when the client weighs several the same: `zstd`, `br`, `gzip`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Answers known to be smaller are sent as they are.
    #[serde(default = "default_min_size")]
    pub min_size: Size,
}

fn default_algorithms() -> Vec<String> {
    vec!["zstd".into(), "br".into(), "gzip".into()]
}

fn default_min_size() -> Size {
    Size(1024)
}

/// `deliver`: the route queues each request and answers 202; workers deliver it later.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeliverDef {
    pub upstream: String,
    #[serde(default)]
    pub retries: DeliverRetriesDef,
    /// Each attempt's limit.
    #[serde(default = "default_deliver_timeout")]
    pub timeout: Dur,
    /// Messages of the route not yet delivered or dead, across all replicas.
    #[serde(default = "default_max_queued")]
    pub max_queued: u64,
    #[serde(default)]
    pub sign: Option<DeliverSignDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeliverRetriesDef {
    /// Attempts in all, the first included.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The first wait; each later one doubles, up to `max_backoff`, with full jitter.
    #[serde(default = "default_backoff")]
    pub backoff: Dur,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
}

impl Default for DeliverRetriesDef {
    fn default() -> Self {
        DeliverRetriesDef {
            attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

/// Signs every attempt as a webhook sender (Standard Webhooks).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeliverSignDef {
    pub scheme: String,
    /// The variable holding the secret (`whsec_...`).
    pub secret_env: String,
}

fn default_deliver_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

fn default_max_queued() -> u64 {
    100_000
}

fn default_attempts() -> u32 {
    8
}

fn default_backoff() -> Dur {
    Dur(Duration::from_secs(1))
}

fn default_max_backoff() -> Dur {
    Dur(Duration::from_secs(300))
}
