//! Policy files (`policies/*.yaml`): upstreams, identity, plans and routes. Hot-reloaded.

pub use super::plans::{LimitDef, PlanDef, QuotaDef, QuotaPeriod, RouteRateLimitDef};
use super::values::{ClientKey, Dur, MethodName, Size};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamDef>,
    #[serde(default)]
    pub jwt_providers: BTreeMap<String, JwtProviderDef>,
    #[serde(default)]
    pub api_keys: Option<ApiKeysDef>,
    #[serde(default)]
    pub consumers: BTreeMap<String, ConsumerDef>,
    #[serde(default)]
    pub plans: BTreeMap<String, PlanDef>,
    #[serde(default)]
    pub webhook_verifiers: BTreeMap<String, super::integration::WebhookVerifierDef>,
    #[serde(default)]
    pub cors_policies: BTreeMap<String, super::integration::CorsPolicyDef>,
    #[serde(default)]
    pub routes: Vec<RouteDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDef {
    pub targets: Vec<String>,
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default)]
    pub tls: Option<UpstreamTlsDef>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub hash_key: Option<ClientKey>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retries: Option<RetriesDef>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerDef>,
    #[serde(default)]
    pub health_check: Option<HealthCheckDef>,
    /// How often host names among `targets` are resolved again; default 30s.
    #[serde(default)]
    pub dns_refresh: Option<Dur>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    #[default]
    Http,
    Https,
    /// HTTP/2 in clear, with prior knowledge (gRPC services).
    H2c,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsDef {
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    Random,
    ConsistentHash,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "default_connect")]
    pub connect: Dur,
    #[serde(default = "default_read")]
    pub read: Dur,
}

fn default_connect() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn default_read() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: default_connect(),
            read: default_read(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetriesDef {
    pub attempts: u32,
    #[serde(default)]
    pub backoff: Option<Dur>,
    #[serde(default)]
    pub max_backoff: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerDef {
    pub failures: u32,
    pub open_for: Dur,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckDef {
    pub path: String,
    pub interval: Dur,
    #[serde(default)]
    pub healthy: Option<u32>,
    #[serde(default)]
    pub unhealthy: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderDef {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub keys: Vec<JwtKeyDef>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub jwks_refresh: Option<Dur>,
    #[serde(default)]
    pub jwks_timeout: Option<Dur>,
    #[serde(default)]
    pub leeway: Option<Dur>,
    #[serde(default)]
    pub consumer_claim: Option<String>,
    #[serde(default)]
    pub scopes_claim: Option<String>,
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyDef {
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
    #[serde(default)]
    pub jwk: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysDef {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsumerDef {
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub client_cert: Option<ClientCertDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientCertDef {
    pub subject: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteDef {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchDef,
    #[serde(default)]
    pub auth: Option<AuthDef>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<RouteRateLimitDef>,
    #[serde(default)]
    pub request: Option<RequestDef>,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub rewrite: Option<RewriteDef>,
    #[serde(default)]
    pub aggregate: Option<AggregateDef>,
    #[serde(default)]
    pub idempotency: Option<super::integration::IdempotencyDef>,
    /// A `cors_policies` name: preflights answered, CORS headers on every answer.
    #[serde(default)]
    pub cors: Option<String>,
    /// What is done to the upstream's answer (compression).
    #[serde(default)]
    pub response: Option<super::integration::ResponseDef>,
    /// Answers kept and served by the gateway (GET and HEAD).
    #[serde(default)]
    pub cache: Option<super::integration::RouteCacheDef>,
    /// Canary: shares of the requests sent to other upstreams.
    #[serde(default)]
    pub split: Vec<super::traffic::SplitDef>,
    /// Keeps each client on one side of the split: consumer, client_ip or header:NAME.
    #[serde(default)]
    pub sticky: Option<super::values::ClientKey>,
    /// Copies of requests to a shadow upstream; its answers are discarded.
    #[serde(default)]
    pub mirror: Option<super::traffic::MirrorDef>,
    /// Only clients in these blocks (checked right after routing): others get 403.
    #[serde(default)]
    pub allow_ips: Vec<super::traffic::IpRange>,
    /// Clients in these blocks get 403.
    #[serde(default)]
    pub deny_ips: Vec<super::traffic::IpRange>,
    /// Stream settings: `idle` for WebSockets and event streams (default 5m).
    #[serde(default)]
    pub timeouts: Option<super::traffic::RouteTimeoutsDef>,
    /// Also accept gRPC-Web (binary) from browsers, bridged to gRPC for the upstream.
    #[serde(default)]
    pub grpc_web: bool,
    /// Instead of `upstream`: queue the request, answer 202, deliver it later.
    #[serde(default)]
    pub deliver: Option<super::integration::DeliverDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchDef {
    #[serde(default)]
    pub host: Option<String>,
    pub path: String,
    #[serde(default)]
    pub methods: Option<Vec<MethodName>>,
    /// Exact header values the request must carry.
    #[serde(default)]
    pub headers: indexmap::IndexMap<String, String>,
    /// Exact query parameter values the request must carry.
    #[serde(default)]
    pub query: indexmap::IndexMap<String, String>,
}

/// `auth: none`, or a list of methods of which any one suffices.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthDef {
    None,
    AnyOf(Vec<AuthMethod>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt(String),
    ApiKey,
    /// A verified TLS client certificate whose subject names a consumer.
    ClientCert,
    /// A signed inbound event, checked by the named `webhook_verifiers` entry.
    Webhook(String),
}

/// As written in `auth:` (the inverse of `FromStr`).
impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMethod::Jwt(p) => write!(f, "jwt:{p}"),
            AuthMethod::ApiKey => f.write_str("api_key"),
            AuthMethod::ClientCert => f.write_str("client_cert"),
            AuthMethod::Webhook(v) => write!(f, "webhook:{v}"),
        }
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "api_key" => Ok(AuthMethod::ApiKey),
            "client_cert" => Ok(AuthMethod::ClientCert),
            _ => match (s.strip_prefix("jwt:"), s.strip_prefix("webhook:")) {
                (Some(p), _) if !p.is_empty() => Ok(AuthMethod::Jwt(p.to_string())),
                (_, Some(v)) if !v.is_empty() => Ok(AuthMethod::Webhook(v.to_string())),
                _ => Err(format!(
                    "invalid auth method {s:?}: expected jwt:PROVIDER, api_key, client_cert or webhook:VERIFIER (or `auth: none`)"
                )),
            },
        }
    }
}

impl<'de> Deserialize<'de> for AuthDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than a buffered untagged enum: errors raised inside the
        // deserializer are reported by serde_yaml at the `auth` value's own line.
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = AuthDef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`none` or a list such as [jwt:corp, api_key]")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AuthDef, E> {
                if s == "none" {
                    return Ok(AuthDef::None);
                }
                s.parse()
                    .map(|m| AuthDef::AnyOf(vec![m]))
                    .map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<AuthDef, A::Error> {
                let mut items = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    items.push(s.parse().map_err(de::Error::custom)?);
                }
                if items.is_empty() {
                    return Err(de::Error::custom(
                        "auth list is empty: name at least one method, or write `auth: none`",
                    ));
                }
                Ok(AuthDef::AnyOf(items))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestDef {
    #[serde(default)]
    pub max_body: Option<Size>,
    #[serde(default)]
    pub schema: Option<serde_yaml::Value>,
    #[serde(default)]
    pub query_schema: Option<serde_yaml::Value>,
    #[serde(default)]
    pub headers: Option<HeaderOpsDef>,
    /// JSON body edits, after validation.
    #[serde(default)]
    pub transform: Option<super::traffic::TransformDef>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsDef {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RewriteDef {
    #[serde(default)]
    pub strip_prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregateDef {
    pub timeout: Dur,
    pub calls: Vec<CallDef>,
    #[serde(default)]
    pub merge: Merge,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    #[default]
    Nest,
    Root,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallDef {
    pub name: String,
    pub upstream: String,
    pub path: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub method: Option<MethodName>,
    #[serde(default)]
    pub body: Option<CallBody>,
    /// Calls (earlier in the list) whose answers this call's path refers to.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// What a call sends as its body.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum CallBody {
    /// The client's request body, with its Content-Type.
    Forward,
}
