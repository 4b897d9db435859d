//! Runs an aggregate's calls concurrently. A call with dependencies starts as soon as they
//! have answered; every call is cut at its own timeout or at the route's deadline.

use super::{Aggregate, Call, Failure, Outcome, MAX_CALL_BODY};
use crate::metrics;
use crate::template::Values;
use crate::upstream::client;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{FuturesUnordered, StreamExt};
use http::HeaderName;
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::sync::Arc;
use tokio::time::Instant;

/// What every call of one request shares.
pub struct Inputs<'a> {
    /// Template values of the client's request.
    pub values: &'a (dyn Values + Sync),
    /// Headers every call carries (request id, trace, forwarding, identity).
    pub headers: &'a RequestHeader,
    /// The client's body and Content-Type, for calls with `body: forward`.
    pub body: Option<(Bytes, Option<http::HeaderValue>)>,
    /// The consistent-hashing key of each call, in call order.
    pub keys: Vec<Vec<u8>>,
    /// The request's trace span (with `tracing`): each call gets a child.
    pub span: Option<&'a opentelemetry::Context>,
}

/// The request's values plus the answers of a call's dependencies.
struct CallValues<'a> {
    base: &'a (dyn Values + Sync),
    answers: Vec<(&'a str, Arc<Outcome>)>,
}

impl Values for CallValues<'_> {
    fn path_param(&self, index: usize) -> Option<&str> {
        self.base.path_param(index)
    }
    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        self.base.query(name)
    }
    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.base.header(name)
    }
    fn claim(&self, name: &str) -> Option<Cow<'_, str>> {
        self.base.claim(name)
    }
    fn consumer_id(&self) -> Option<&str> {
        self.base.consumer_id()
    }
    fn call_field(&self, call: &str, pointer: &str) -> Option<Cow<'_, str>> {
        let (_, answer) = self.answers.iter().find(|(n, _)| *n == call)?;
        match answer.as_ref().as_ref().ok()?.pointer(pointer)? {
            serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
            v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                Some(Cow::Owned(v.to_string()))
            }
            _ => None,
        }
    }
}

fn request(
    call: &Call,
    path: &str,
    inputs: &Inputs<'_>,
    span: Option<&opentelemetry::Context>,
) -> Option<(RequestHeader, Option<Bytes>)> {
    let mut req = RequestHeader::build(call.method.clone(), path.as_bytes(), None).ok()?;
    for (k, v) in inputs.headers.headers.iter() {
        req.append_header(k.clone(), v.clone()).ok()?;
    }
    if let Some(cx) = span {
        let _ = req.insert_header("traceparent", crate::telemetry::traceparent(cx));
    }
    let _ = req.insert_header(http::header::ACCEPT, "application/json");
    let body = match (&inputs.body, call.forward_body) {
        (Some((body, content_type)), true) => {
            if let Some(ct) = content_type {
                let _ = req.insert_header(http::header::CONTENT_TYPE, ct.clone());
            }
            let _ = req.insert_header(http::header::CONTENT_LENGTH, body.len());
            Some(body.clone())
        }
        _ => None,
    };
    if body.is_none() && !matches!(call.method, http::Method::GET | http::Method::HEAD) {
        let _ = req.insert_header(http::header::CONTENT_LENGTH, 0);
    }
    Some((req, body))
}

/// One call, after its dependencies answered.
async fn one(
    call: &Call,
    key: &[u8],
    path: String,
    inputs: &Inputs<'_>,
    span: Option<&opentelemetry::Context>,
) -> Outcome {
    let Some((req, body)) = request(call, &path, inputs, span) else {
        return Err(Failure::Reset);
    };
    let answer = client::send(&call.upstream, key, &req, body, MAX_CALL_BODY).await?;
    let status = answer.header.status;
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    if answer.body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&answer.body).map_err(|_| Failure::InvalidJson)
}

/// Runs every call; the outcomes are in call order. When a required call fails the others
/// are abandoned (their outcome is `None`): the answer is a 502 whatever they say.
pub async fn run(agg: &Aggregate, inputs: &Inputs<'_>) -> Vec<Option<Arc<Outcome>>> {
    let deadline = Instant::now() + agg.timeout;
    let mut started: Vec<Shared<BoxFuture<'_, Arc<Outcome>>>> = Vec::with_capacity(agg.calls.len());
    for (i, call) in agg.calls.iter().enumerate() {
        let deps: Vec<_> = call
            .deps
            .iter()
            .filter_map(|&d| Some((&*agg.calls.get(d)?.name, started.get(d)?.clone())))
            .collect();
        let key = inputs.keys.get(i).map(Vec::as_slice).unwrap_or_default();
        let fut = async move {
            let mut answers = Vec::with_capacity(deps.len());
            for (name, dep) in deps {
                let outcome = dep.await;
                if outcome.is_err() {
                    return Arc::new(Err(Failure::Dependency(name.into())));
                }
                answers.push((name, outcome));
            }
            let values = CallValues {
                base: inputs.values,
                answers,
            };
            let path = call.path.render(&values);
            let until = match call.timeout {
                Some(t) => deadline.min(Instant::now() + t),
                None => deadline,
            };
            let span = inputs.span.and_then(|p| {
                let attrs = vec![
                    opentelemetry::KeyValue::new("gateway.call", call.name.to_string()),
                    opentelemetry::KeyValue::new(
                        "gateway.upstream",
                        call.upstream.name.to_string(),
                    ),
                ];
                crate::telemetry::child(p, "gateway.aggregate_call", attrs)
            });
            let call_future = one(call, key, path, inputs, span.as_ref());
            let outcome = match tokio::time::timeout_at(until, call_future).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    metrics::UPSTREAM_ERRORS
                        .with_label_values(&[&call.upstream.name, "timeout"])
                        .inc();
                    Err(Failure::Timeout)
                }
            };
            if let Some(cx) = &span {
                let error = outcome.as_ref().err().map(ToString::to_string);
                crate::telemetry::end(cx, 0, error);
            }
            Arc::new(outcome)
        };
        started.push(fut.boxed().shared());
    }
    let mut pending: FuturesUnordered<_> = started
        .into_iter()
        .enumerate()
        .map(|(i, call)| call.map(move |outcome| (i, outcome)))
        .collect();
    let mut outcomes = vec![None; agg.calls.len()];
    while let Some((i, outcome)) = pending.next().await {
        let required_failed = outcome.is_err() && agg.calls.get(i).is_some_and(|c| c.required);
        if let Some(slot) = outcomes.get_mut(i) {
            *slot = Some(outcome);
        }
        if required_failed {
            break;
        }
    }
    outcomes
}
