//! The gateway's own errors and the one function that turns them into a response.

use crate::auth::Reason;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::json;

/// A failure the gateway answers itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("method not allowed on this route")]
    MethodNotAllowed { allow: String },
    #[error("{0}")]
    BadRequest(String),
    /// A request whose framing or syntax is broken (smuggling attempts included): answered
    /// and the connection closed.
    #[error("{0}")]
    Malformed(String),
    #[error("the request line and headers are larger than allowed ({0})")]
    HeaderTooLarge(&'static str),
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<Detail>,
    },
    #[error("the body must be JSON: send Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("{}", .reason.message())]
    Unauthorized { reason: Reason, token: bool },
    #[error("the scope {scope:?} is required")]
    Forbidden { scope: String },
    #[error("this client address may not call this route")]
    AddressForbidden,
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("too many requests: retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the consumer's quota is used up: it resets in {retry_after} s")]
    QuotaExceeded { retry_after: u64 },
    #[error("the rate-limit store is unavailable")]
    RateLimitUnavailable,
    #[error("the required call {call:?} failed: {reason}")]
    CallFailed { call: String, reason: String },
    #[error("the upstream refused or reset the connection")]
    BadGateway,
    #[error("no upstream target is available")]
    UpstreamUnavailable,
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("this request needs an idempotency key in the {0} header")]
    IdempotencyKeyMissing(String),
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyKeyInFlight,
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    #[error("the webhook signature is missing, invalid or outside the time tolerance")]
    InvalidSignature,
    #[error("this event is being delivered: try again shortly")]
    WebhookInFlight,
    #[error("the shared store is unavailable")]
    StoreUnavailable,
    #[error("the delivery queue is full")]
    QueueFull,
    #[error("internal error")]
    Internal,
}

/// One validation problem: where in the document (a JSON Pointer) and what.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detail {
    pub path: String,
    pub message: String,
}

/// What an error looks like on the wire.
pub struct ErrorResponse {
    pub status: StatusCode,
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl GatewayError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use GatewayError::*;
        match self {
            NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            BadRequest(_) | Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            Malformed(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            HeaderTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_too_large",
            ),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Forbidden { .. } | AddressForbidden => (StatusCode::FORBIDDEN, "forbidden"),
            BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            RateLimitUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "rate_limit_unavailable"),
            BadGateway | CallFailed { .. } => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            UpstreamUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"),
            UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            IdempotencyKeyMissing(_) => (StatusCode::BAD_REQUEST, "idempotency_key_missing"),
            IdempotencyKeyInFlight => (StatusCode::CONFLICT, "idempotency_key_in_flight"),
            IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            InvalidSignature => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            WebhookInFlight => (StatusCode::CONFLICT, "webhook_in_flight"),
            StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            QueueFull => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// The JSON error body and any headers this error requires (such as `Allow`).
    /// The gRPC status of this refusal for a gRPC client (the contract's mapping; the
    /// other statuses by their nearest gRPC meaning).
    pub fn grpc_status(&self) -> u8 {
        match self.status_and_code().0.as_u16() {
            400 | 415 | 422 => 3, // INVALID_ARGUMENT
            401 => 16,            // UNAUTHENTICATED
            403 => 7,             // PERMISSION_DENIED
            404 | 405 => 12,      // UNIMPLEMENTED
            408 | 504 => 4,       // DEADLINE_EXCEEDED
            409 => 10,            // ABORTED
            413 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
            502 | 503 => 14,      // UNAVAILABLE
            _ => 13,              // INTERNAL
        }
    }

    pub fn to_response(&self, request_id: &str) -> ErrorResponse {
        let (status, code) = self.status_and_code();
        let mut body = json!({
            "error": {
                "status": status.as_u16(),
                "code": code,
                "message": self.to_string(),
                "request_id": request_id,
            }
        });
        if let GatewayError::Invalid { details, .. } = self {
            body["error"]["details"] = json!(details);
        }
        let mut headers = Vec::new();
        match self {
            GatewayError::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    headers.push((http::header::ALLOW, v));
                }
            }
            // RFC 6750 §3: a presented token that failed is `invalid_token`.
            GatewayError::Unauthorized { token, .. } => {
                let v = if *token {
                    HeaderValue::from_static("Bearer error=\"invalid_token\"")
                } else {
                    HeaderValue::from_static("Bearer")
                };
                headers.push((http::header::WWW_AUTHENTICATE, v));
            }
            GatewayError::Forbidden { scope } => {
                let v = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.push((http::header::WWW_AUTHENTICATE, v));
                }
            }
            GatewayError::RateLimited { retry_after }
            | GatewayError::QuotaExceeded { retry_after } => {
                headers.push((http::header::RETRY_AFTER, HeaderValue::from(*retry_after)));
            }
            GatewayError::IdempotencyKeyInFlight | GatewayError::WebhookInFlight => {
                headers.push((http::header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            _ => {}
        }
        ErrorResponse {
            status,
            headers,
            body: Bytes::from(body.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let r = GatewayError::MethodNotAllowed {
            allow: "GET, HEAD".into(),
        }
        .to_response("rid");
        assert_eq!(r.status, 405);
        assert_eq!(r.headers[0].1, "GET, HEAD");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["code"], "method_not_allowed");
        assert_eq!(v["error"]["status"], 405);
        assert_eq!(v["error"]["request_id"], "rid");
    }
}
