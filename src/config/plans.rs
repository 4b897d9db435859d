//! What a plan or a route allows: rate limits (`{requests, per, burst}`) and a plan's
//! calendar quotas (`{requests, per: day|month}`).

use super::values::{ClientKey, Dur};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanDef {
    #[serde(default)]
    pub rate_limits: Vec<LimitDef>,
    /// Requests per UTC calendar day or month.
    #[serde(default)]
    pub quotas: Vec<QuotaDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaDef {
    pub requests: u64,
    pub per: QuotaPeriod,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    Day,
    Month,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitDef {
    pub requests: u64,
    pub per: Dur,
    #[serde(default)]
    pub burst: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteRateLimitDef {
    #[serde(default = "consumer_key")]
    pub key: ClientKey,
    pub limits: Vec<LimitDef>,
}

fn consumer_key() -> ClientKey {
    ClientKey::Consumer
}
