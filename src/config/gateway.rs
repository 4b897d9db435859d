//! `gateway.yaml`: process settings, read at start.

use super::values::{Dur, Size};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub admin: Option<Admin>,
    #[serde(default = "default_policies")]
    pub policies: PathBuf,
    /// Shared state (rate limits, idempotency keys, webhook ids).
    #[serde(default)]
    pub store: Option<RateLimitStore>,
    /// The older name of `store`, still accepted.
    #[serde(default)]
    pub rate_limit_store: Option<RateLimitStore>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub threads: Option<usize>,
    #[serde(default)]
    pub shutdown_grace: Option<Dur>,
    /// OpenTelemetry trace export; off when absent.
    #[serde(default)]
    pub tracing: Option<TracingSettings>,
    /// The response cache's memory (routes opt in with their own `cache` block).
    #[serde(default)]
    pub cache: super::integration::CacheSettingsDef,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// OTLP/HTTP traces endpoint, such as `http://collector:4318/v1/traces`.
    pub otlp_endpoint: String,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces recorded (a client's sampled flag is followed).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// How often finished spans are sent.
    #[serde(default = "default_export_interval")]
    pub export_interval: Dur,
}

fn default_service_name() -> String {
    "gateway".into()
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_export_interval() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

fn default_policies() -> PathBuf {
    PathBuf::from("policies/")
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// HTTP/2 in clear beside HTTP/1.1 (for gRPC clients), told apart by the h2 preface.
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub certs: Vec<CertPair>,
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    pub ca: PathBuf,
    #[serde(default)]
    pub mode: ClientAuthMode,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    #[default]
    Optional,
    Required,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub bind: SocketAddr,
    #[serde(default)]
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitStore {
    #[serde(default)]
    pub backend: StoreBackend,
    #[serde(default)]
    pub redis: Option<RedisStore>,
    /// Memory backend: keys tracked per limit at most, and idempotency and webhook entries
    /// at most; a new key beyond this is admitted untracked and counted
    /// (`gateway_rate_limit_store_errors_total{kind="full"}`,
    /// `gateway_store_errors_total{kind="full"}`).
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
    /// Memory backend: how often keys whose state is back to "fresh" are evicted.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval: Dur,
}

fn default_max_keys() -> u64 {
    1_000_000
}

fn default_sweep_interval() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}

impl Default for RateLimitStore {
    fn default() -> Self {
        RateLimitStore {
            backend: StoreBackend::Memory,
            redis: None,
            max_keys: default_max_keys(),
            sweep_interval: default_sweep_interval(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisStore {
    /// `redis://host:port[/db]` for one server, or `redis+cluster://host:port,host:port/` for
    /// a Redis Cluster (see `crate::state::redis_cluster`). Empty when `cluster` is used.
    #[serde(default)]
    pub url: String,
    /// Redis Cluster seed nodes (`host:port`, any reachable master or replica will do: the
    /// rest of the cluster is discovered); instead of `url`.
    #[serde(default)]
    pub cluster: Option<Vec<String>>,
    /// For the whole rate-limit decision of one request, connection waits included.
    #[serde(default = "default_redis_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub on_error: OnStoreError,
    /// Multiplexed connections, used in turn.
    #[serde(default = "default_redis_pool")]
    pub pool: usize,
    /// Prefix of every key the gateway writes: lets several gateways share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
}

fn default_redis_timeout() -> Dur {
    Dur(std::time::Duration::from_millis(50))
}

fn default_redis_pool() -> usize {
    4
}

fn default_redis_prefix() -> String {
    "gateway:rl:".into()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_max_body")]
    pub max_body: Size,
    /// The whole request head must arrive within this, from the connection's start (first
    /// request) or from the first byte of a later request on a keep-alive connection.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// A keep-alive connection with no request in progress is closed after this.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Request line and header fields together, in bytes.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: Size,
    /// Header fields in one request.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// How long a body that must be read whole (for validation) may take to arrive.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Dur,
}

fn default_body_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}

fn default_header_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}

fn default_idle_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}

fn default_max_header_bytes() -> Size {
    Size(32 << 10)
}

fn default_max_headers() -> usize {
    100
}

fn default_max_body() -> Size {
    Size(1 << 20)
}

/// Bounds of the head limits. Pingora itself refuses heads over 1 MiB or 256 fields, with
/// a bare 400; limits above those would never be reached.
pub const MAX_HEADER_BYTES_RANGE: (u64, u64) = (1 << 10, (1 << 20) - 1);
pub const MAX_HEADERS_RANGE: (usize, usize) = (1, 255);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: default_max_body(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            body_timeout: default_body_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: default_level(),
            format: LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}
