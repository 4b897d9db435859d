//! Policy blocks of transformation and traffic control: JSON transforms of requests and
//! answers, response header edits, canary splits, mirroring and IP rules. Compiled by
//! `crate::transform` and `crate::runtime::compile`.

use indexmap::IndexMap;
use serde::Deserialize;

/// `request.transform` / `response.transform`: JSON Pointers, `*` standing for every
/// element of an array. Applied in this order: rename, remove, set, allow.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransformDef {
    /// `{from: to}`, in the order written.
    #[serde(default)]
    pub rename: IndexMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
    /// `{pointer: value}`; a string value may hold `{consumer.id}`, `{header.NAME}`,
    /// `{path.NAME}`, `{query.NAME}`, `{claims.NAME}`.
    #[serde(default)]
    pub set: IndexMap<String, serde_json::Value>,
    /// Keep only these (and what is under them).
    #[serde(default)]
    pub allow: Option<Vec<String>>,
}

/// One `split` entry: this share of the route's requests goes to another upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitDef {
    pub upstream: String,
    /// A percentage, 0 to 100; the route's own upstream gets what the entries leave.
    pub weight: u32,
}

/// `mirror`: copies of the route's requests to a shadow upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorDef {
    pub upstream: String,
    /// The share of requests copied, 0 to 100 (default 100).
    #[serde(default = "all")]
    pub percent: u32,
}

fn all() -> u32 {
    100
}

/// An address or a CIDR block: `192.0.2.7`, `10.0.0.0/8`, `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::values::parse_str(d, "an address or CIDR block such as 10.0.0.0/8", |s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| IpRange(n.trunc()))
                .map_err(|_| format!("{s:?} is not an address or CIDR block"))
        })
    }
}

/// A route's `timeouts`: settings of the streams it carries (the upstream's `timeouts`
/// hold `connect` and `read`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeoutsDef {
    /// A WebSocket or event stream with no data either way this long is closed.
    #[serde(default = "five_minutes")]
    pub idle: super::values::Dur,
}

fn five_minutes() -> super::values::Dur {
    super::values::Dur(std::time::Duration::from_secs(300))
}
