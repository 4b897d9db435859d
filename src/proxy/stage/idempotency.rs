//! Idempotency keys (after authentication and validation, so that a refused request never
//! takes a key): a listed method with a key takes the key in the shared store, or gets the
//! stored answer back, or is refused while the first is in flight or when the key was used
//! for another request. The answer is stored by `proxy::after` once it is complete.

use super::Flow;
use crate::error::GatewayError;
use crate::idempotency::{fingerprint, store_id, valid_key, Entry, Idempotency};
use crate::metrics;
use crate::proxy::after::{Capture, Pending};
use crate::proxy::ctx::Ctx;
use crate::runtime::Route;
use pingora_proxy::Session;

fn count(route: &Route, outcome: &str) {
    metrics::IDEMPOTENCY
        .with_label_values(&[&route.name, outcome])
        .inc();
}

/// Who the key belongs to: the consumer, or the client address on public routes (behind a
/// trusted proxy, the address it forwarded for, as rate limits see it).
fn scope(req: &pingora_http::RequestHeader, ctx: &Ctx) -> String {
    let ip = || crate::proxy::client::client_ip(req, ctx);
    match (ctx.consumer(), ip()) {
        (Some(c), _) => format!("consumer:{c}"),
        (None, Some(ip)) => format!("ip:{ip}"),
        (None, None) => "anonymous".into(),
    }
}

pub async fn run(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    let Some(idem) = &route.idempotency else {
        return Ok(Flow::Next);
    };
    let req = session.req_header();
    if !idem.methods.contains(&req.method) {
        return Ok(Flow::Next);
    }
    let key = match req.headers.get(&idem.header) {
        None if idem.required => {
            return Err(GatewayError::IdempotencyKeyMissing(
                idem.header_text.clone(),
            ))
        }
        None => return Ok(Flow::Next),
        Some(k) if !valid_key(k.as_bytes()) => {
            return Err(GatewayError::BadRequest(format!(
                "the {} header must be 1 to 255 visible ASCII characters",
                idem.header_text
            )))
        }
        Some(k) => k.as_bytes().to_vec(),
    };
    let body = super::body::hold(session, ctx, route.max_body).await?;
    let req = session.req_header();
    let fp = fingerprint(&req.method, req.uri.path(), req.uri.query(), &body);
    let shared = ctx.snapshot.state.clone();
    let id = store_id(&route.name, &scope(req, ctx), &key);
    let key = shared.key("idem", &id);
    let lock = Entry::Lock {
        fingerprint: fp,
        token: rand::random(),
    }
    .encode();
    let held = match shared.kv.claim(&key, &lock, idem.lock_ttl).await {
        Ok(held) => held,
        Err(e) if shared.tolerate("idempotency", &e) => return Ok(Flow::Next),
        Err(_) => return Err(GatewayError::StoreUnavailable),
    };
    let Some(raw) = held else {
        ctx.after.idempotency = Some(Box::new(pending(route, idem, key, lock, fp)));
        return Ok(Flow::Next);
    };
    match Entry::decode(&raw) {
        Some(e) if e.fingerprint() != &fp => {
            count(route, "reused");
            Err(GatewayError::IdempotencyKeyReused)
        }
        Some(Entry::Lock { .. }) => {
            count(route, "in_flight");
            Err(GatewayError::IdempotencyKeyInFlight)
        }
        Some(Entry::Answer { answer, .. }) => {
            count(route, "replayed");
            let mut headers: Vec<(&str, &[u8])> = answer
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_ref()))
                .collect();
            headers.push(("idempotent-replayed", b"true"));
            crate::proxy::respond::write_answer(
                session,
                ctx,
                answer.status,
                &headers,
                answer.body.clone(),
            )
            .await;
            Ok(Flow::Answered)
        }
        None => {
            // Not something this gateway wrote: never replayed, and the key is left alone.
            let e = crate::state::StoreError::Failed("unreadable idempotency entry".into());
            match shared.tolerate("idempotency", &e) {
                true => Ok(Flow::Next),
                false => Err(GatewayError::StoreUnavailable),
            }
        }
    }
}

fn pending(route: &Route, idem: &Idempotency, key: String, lock: Vec<u8>, fp: [u8; 32]) -> Pending {
    Pending {
        route: route.name.clone(),
        key,
        lock,
        fingerprint: fp,
        ttl: idem.ttl,
        max_response: idem.max_response,
        capture: Capture::Waiting,
    }
}
