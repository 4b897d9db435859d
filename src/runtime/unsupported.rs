//! Settings of gateway.yaml that parse but cannot be honoured as written: refused with a
//! clear error rather than silently ignored or clamped.

use crate::config::gateway::{MAX_HEADERS_RANGE, MAX_HEADER_BYTES_RANGE};
use crate::config::{GatewayConfig, Problems};

/// Problems with gateway.yaml values that the types alone do not catch.
pub fn check_gateway(gw: &GatewayConfig) -> Problems {
    let mut p = Problems::default();
    let limits = &gw.file.limits;
    let (lo, hi) = MAX_HEADER_BYTES_RANGE;
    if !(lo..=hi).contains(&limits.max_header_bytes.0) {
        p.push(gw.problem(
            "limits.max_header_bytes",
            format!(
                "limits.max_header_bytes must be between 1KiB and 1MiB - 1 byte; it is {}",
                limits.max_header_bytes.0
            ),
        ));
    }
    let (lo, hi) = MAX_HEADERS_RANGE;
    if !(lo..=hi).contains(&limits.max_headers) {
        p.push(gw.problem(
            "limits.max_headers",
            format!(
                "limits.max_headers must be between {lo} and {hi}; it is {}",
                limits.max_headers
            ),
        ));
    }
    p
}
