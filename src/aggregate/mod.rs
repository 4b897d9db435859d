//! Backend-for-frontend routes: one client request, several upstream calls made
//! concurrently (each under its own timeout, all under the route's deadline), their JSON
//! answers merged into one response.

pub mod compile;
pub mod merge;
pub mod run;

use crate::config::policy::Merge;
use crate::template::Template;
use crate::upstream::Upstream;
use http::Method;
use std::sync::Arc;
use std::time::Duration;

/// Largest answer body a call may return.
pub const MAX_CALL_BODY: usize = 8 << 20;

/// A compiled `aggregate` section.
#[derive(Debug)]
pub struct Aggregate {
    pub timeout: Duration,
    pub merge: Merge,
    pub calls: Vec<Call>,
    /// Whether any call sends the client's body (which is then read first).
    pub forwards_body: bool,
}

#[derive(Debug)]
pub struct Call {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub path: Template,
    pub required: bool,
    pub timeout: Option<Duration>,
    pub method: Method,
    pub forward_body: bool,
    /// Earlier calls (indices) whose answers this call waits for.
    pub deps: Vec<usize>,
}

/// Why a call has no usable answer: what `_errors` says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Status(u16),
    Connect,
    Reset,
    Unavailable,
    InvalidJson,
    NotAnObject,
    TooLarge,
    /// A call it depends on failed.
    Dependency(Arc<str>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timeout"),
            Failure::Status(s) => write!(f, "status {s}"),
            Failure::Connect => f.write_str("connect"),
            Failure::Reset => f.write_str("reset"),
            Failure::Unavailable => f.write_str("unavailable"),
            Failure::InvalidJson => f.write_str("invalid_json"),
            Failure::NotAnObject => f.write_str("not_an_object"),
            Failure::TooLarge => f.write_str("too_large"),
            Failure::Dependency(c) => write!(f, "dependency {c}"),
        }
    }
}

impl Failure {
    /// The `outcome` label of `gateway_aggregate_calls_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            _ => "error",
        }
    }
}

impl From<crate::upstream::client::CallError> for Failure {
    fn from(e: crate::upstream::client::CallError) -> Self {
        use crate::upstream::client::CallError;
        match e {
            CallError::Unavailable => Failure::Unavailable,
            CallError::Connect => Failure::Connect,
            CallError::Timeout => Failure::Timeout,
            CallError::Reset => Failure::Reset,
            CallError::TooLarge => Failure::TooLarge,
        }
    }
}

/// What one call produced.
pub type Outcome = Result<serde_json::Value, Failure>;
