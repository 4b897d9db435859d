//! Configuration whose feature has not landed yet: parsed (so typos are caught), then
//! refused with a clear error rather than silently ignored. Each feature removes its lines.

use crate::config::{GatewayConfig, PolicySet, Problems};

const NOT_YET: &str = "is not supported yet";

/// Parts of gateway.yaml that a later feature will implement: refused, never ignored.
pub fn check_gateway(gw: &GatewayConfig) -> Problems {
    let mut p = Problems::default();
    if gw.file.limits.header_timeout.is_some() {
        p.push(gw.problem(
            "limits.header_timeout",
            format!("limits.header_timeout {NOT_YET}"),
        ));
    }
    p
}

/// Sections whose features have not landed: parsed (so typos are caught) but refused.
pub fn refuse(set: &PolicySet, p: &mut Problems) {
    for src in &set.sources {
        let f = &src.file;
        let mut refuse =
            |at: &str, what: &str| p.push(src.problem(at, format!("{what} {NOT_YET}")));
        for (name, u) in &f.upstreams {
            let at = format!("upstreams.{name}");
            if u.retries.is_some() {
                refuse(&format!("{at}.retries"), "retries");
            }
            if u.circuit_breaker.is_some() {
                refuse(&format!("{at}.circuit_breaker"), "circuit_breaker");
            }
            if u.health_check.is_some() {
                refuse(&format!("{at}.health_check"), "health_check");
            }
        }
    }
}
