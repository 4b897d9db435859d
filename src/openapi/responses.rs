//! The contract's error answers and headers as shared components, and the responses of
//! one operation: only the answers its route can give (401 only where it authenticates,
//! 429 only where a limit applies, 400/415 where it validates).

use serde_json::{json, Map, Value};

/// `{"error": {"status", "code", "message", "request_id", "details"?}}` (SPEC "Errors").
pub fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error the gateway produces itself.",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["status", "code", "message", "request_id"],
            "properties": {
                "status": {"type": "integer", "description": "The HTTP status, repeated."},
                "code": {"type": "string", "description": "Stable machine-readable code, such as `rate_limited`."},
                "message": {"type": "string"},
                "request_id": {"type": "string", "description": "The request's X-Request-Id."},
                "details": {
                    "type": "array",
                    "description": "Validation errors (at most 20).",
                    "items": {
                        "type": "object",
                        "required": ["path", "message"],
                        "properties": {
                            "path": {"type": "string", "description": "A JSON Pointer into the body or query."},
                            "message": {"type": "string"}
                        }
                    }
                }
            }
        }}
    })
}

fn header(description: &str, schema: Value, required: bool) -> Value {
    json!({"description": description, "required": required, "schema": schema})
}

/// `components.headers`. Each is referenced only where the contract says it is sent, so
/// `required` holds wherever it appears (a `$ref` takes no `required` beside it).
pub fn headers() -> Map<String, Value> {
    let int = json!({"type": "integer", "minimum": 0});
    let mut h = Map::new();
    for (name, text, schema) in [
        ("X-Request-Id", "The request's id: the client's when it sent a valid one (1-128 visible ASCII characters), else generated.", json!({"type": "string"})),
        ("RateLimit-Limit", "The tightest applicable limit's capacity (its burst).", int.clone()),
        ("RateLimit-Remaining", "Requests the tightest applicable limit still admits now.", int.clone()),
        ("RateLimit-Reset", "Seconds until the tightest limit is full again; on a 429, until the request would be admitted.", int.clone()),
        ("Retry-After", "Whole seconds until the request would be admitted (rounded up).", int),
        ("WWW-Authenticate", "`Bearer`, or `Bearer error=\"invalid_token\"` when a token was presented (RFC 6750).", json!({"type": "string"})),
        ("X-Gateway-Partial", "`true` when an optional call of the aggregate failed and was left out (see `_errors`).", json!({"type": "string", "enum": ["true"]})),
    ] {
        h.insert(name.into(), header(text, schema, name != "X-Gateway-Partial"));
    }
    h
}

fn href(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

/// An error answer with the shared body and the given headers.
fn error(description: &str, headers: &[&str]) -> Value {
    let mut hs = Map::new();
    for h in std::iter::once(&"X-Request-Id").chain(headers) {
        hs.insert((*h).to_string(), href(h));
    }
    json!({
        "description": description,
        "headers": hs,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", super::schemas::ERROR)}}}
    })
}

/// `components.responses`: every error answer, by status and what it means.
pub fn components() -> Map<String, Value> {
    let mut r = Map::new();
    for (name, text, headers) in [
        ("BadRequest", "`invalid_request`: the body is not strict JSON, or the body or query does not match the schema (with `details`); or `bad_request` for a malformed request.", &[][..]),
        ("Unauthorized", "`unauthorized`: credentials missing, malformed, expired or not accepted.", &["WWW-Authenticate"][..]),
        ("InvalidSignature", "`invalid_signature`: the webhook signature is missing, wrong, or its timestamp is outside the tolerance.", &[][..]),
        ("Forbidden", "`forbidden`: a required scope is missing, or the client address is not allowed.", &[][..]),
        ("NotFound", "`no_route`: the request carries none of the header or query values (or the host) the routes of this path match on.", &[][..]),
        ("RequestTimeout", "`request_timeout`: the body did not arrive within the body timeout.", &[][..]),
        ("Conflict", "`idempotency_key_in_flight` or `webhook_in_flight`: the same request is still in progress; retry shortly.", &["Retry-After"][..]),
        ("PayloadTooLarge", "`body_too_large`: the body is over the route's `max_body`.", &[][..]),
        ("UnsupportedMediaType", "`unsupported_media_type`: the body must be `application/json` or `application/*+json`.", &[][..]),
        ("Unprocessable", "`idempotency_key_reused`: the idempotency key was used for a different request.", &[][..]),
        ("TooManyRequests", "`rate_limited`: over an applicable rate limit.", &["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"][..]),
        ("BadGateway", "`bad_gateway`: the upstream refused or reset the connection (or a required aggregate call failed); an upstream's own 502 is passed through.", &[][..]),
        ("ServiceUnavailable", "`upstream_unavailable` (no healthy target, circuit open), `rate_limit_unavailable` or `store_unavailable`; an upstream's own 503 is passed through.", &[][..]),
        ("GatewayTimeout", "`upstream_timeout`: the upstream did not answer in time; an upstream's own 504 is passed through.", &[][..]),
    ] {
        r.insert(name.into(), error(text, headers));
    }
    r
}

/// What an operation's route does, as far as its answers go.
#[derive(Debug, Default, Clone, Copy)]
pub struct Shape {
    pub authenticates: bool,
    pub webhook: bool,
    pub forbids: bool,
    pub constrained: bool,
    pub reads_body: bool,
    pub carries_body: bool,
    pub validates: bool,
    pub validates_body: bool,
    pub idempotent: bool,
    pub limited: bool,
    /// Every request is decided by a limit of the route's own (not only by a consumer's
    /// plan, which a consumer without one does not have): RateLimit-* on every answer.
    pub always_limited: bool,
    pub aggregate: bool,
}

fn rref(name: &str) -> Value {
    json!({"$ref": format!("#/components/responses/{name}")})
}

/// The operation's `responses`.
pub fn of(shape: Shape) -> Map<String, Value> {
    let mut r = Map::new();
    let mut ok_headers = Map::new();
    ok_headers.insert("X-Request-Id".into(), href("X-Request-Id"));
    for h in ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] {
        if shape.always_limited {
            ok_headers.insert(h.into(), href(h));
        } else if shape.limited {
            ok_headers.insert(
                h.into(),
                json!({
                    "description": "Sent when a limit decided the request: always on a route with limits of its own, else only for a consumer with a plan.",
                    "required": false,
                    "schema": {"type": "integer", "minimum": 0},
                }),
            );
        }
    }
    if shape.aggregate {
        ok_headers.insert("X-Gateway-Partial".into(), href("X-Gateway-Partial"));
        r.insert("200".into(), json!({
            "description": "The calls' answers merged into one object (`nest`: one key per call; `root`: their keys merged); failed optional calls are listed under `_errors`.",
            "headers": ok_headers,
            "content": {"application/json": {"schema": {"type": "object"}}}
        }));
    } else {
        let text = if shape.webhook {
            "The upstream's answer, passed through; an event delivered before is answered 200 `{\"duplicate\": true}` with `Webhook-Duplicate: true`."
        } else {
            "The upstream service's answer, passed through (any status)."
        };
        r.insert(
            "default".into(),
            json!({"description": text, "headers": ok_headers}),
        );
    }
    let mut add = |status: &str, on: bool, name: &str| {
        if on {
            r.insert(status.into(), rref(name));
        }
    };
    add("400", shape.validates || shape.idempotent, "BadRequest");
    add("401", shape.authenticates, "Unauthorized");
    add("401", shape.webhook, "InvalidSignature");
    add("403", shape.forbids, "Forbidden");
    add("404", shape.constrained, "NotFound");
    add("408", shape.reads_body, "RequestTimeout");
    add("409", shape.idempotent || shape.webhook, "Conflict");
    add("413", shape.carries_body, "PayloadTooLarge");
    add("415", shape.validates_body, "UnsupportedMediaType");
    add("422", shape.idempotent, "Unprocessable");
    add("429", shape.limited, "TooManyRequests");
    add("502", true, "BadGateway");
    add("503", true, "ServiceUnavailable");
    add("504", true, "GatewayTimeout");
    r
}
