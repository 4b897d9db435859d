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
