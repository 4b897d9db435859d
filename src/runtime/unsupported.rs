//! Configuration whose feature has not landed yet: parsed (so typos are caught), then
//! refused with a clear error rather than silently ignored. Each feature removes its lines.

use crate::config::{GatewayConfig, Problems};

const NOT_YET: &str = "is not supported yet";

/// Parts of gateway.yaml that a later feature will implement: refused, never ignored.
pub fn check_gateway(gw: &GatewayConfig) -> Problems {
    let mut p = Problems::default();
    if gw.file.limits.header_timeout.is_some() {
        p.push(gw.problem(
            "limits.header_timeout",
            format!("limits.header_timeout {NOT_YET}: Pingora 0.9 reads request headers with its own fixed timeout (60 s per read)"),
        ));
    }
    p
}
