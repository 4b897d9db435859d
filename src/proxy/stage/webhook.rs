//! Signed inbound events (`auth: [webhook:NAME]`), in place of authentication: the body is
//! read whole, its signature checked over the raw bytes, and the verifier's name becomes
//! the consumer. An event already delivered (the upstream answered 2xx) is answered as a
//! duplicate and not forwarded again; one still in flight is refused with 409
//! (`webhook_in_flight`), so that a quick retry by the sender is not processed twice. The
//! outcome is recorded by `proxy::after`: delivered on a 2xx, released otherwise.

use super::Flow;
use crate::auth::Identity;
use crate::error::GatewayError;
use crate::metrics;
use crate::proxy::after::Delivery;
use crate::proxy::ctx::Ctx;
use crate::runtime::Route;
use crate::webhook::Scheme;
use pingora_proxy::Session;
use sha2::{Digest, Sha256};
use std::time::Duration;

pub async fn run(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    let Some(verifier) = route.auth.webhook.clone() else {
        return Ok(Flow::Next);
    };
    let body = super::body::hold(session, ctx, route.max_body).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let verified = match verifier.verify(&session.req_header().headers, &body, now) {
        Ok(v) => v,
        Err(rejection) => {
            metrics::AUTH_FAILURES
                .with_label_values(&[&route.name, rejection.reason()])
                .inc();
            return Err(GatewayError::InvalidSignature);
        }
    };
    ctx.identity = Some(Identity {
        consumer: Some(verifier.name().into()),
        scopes: Vec::new(),
        claims: None,
        provider: None,
        by_api_key: false,
    });
    let shared = ctx.snapshot.state.clone();
    let key = |id: &str| {
        let mut h = Sha256::new();
        h.update(verifier.name().as_bytes());
        h.update([0]);
        h.update(id.as_bytes());
        shared.key("webhook", &hex::encode(h.finalize()))
    };
    // The event id, and, where the scheme does not sign it (github, hmac's `id_header`),
    // the signature too: a captured delivery sent again under another id is still a replay.
    let mut keys = vec![key(&verified.replay_id)];
    if !matches!(verifier.scheme(), Scheme::Standard) && verified.signature_id != verified.replay_id
    {
        keys.push(key(&verified.signature_id));
    }
    // The event is taken while it is in flight, so that a sender's quick retry is not
    // forwarded a second time beside it; the marker lives as long as the upstream may take.
    let lock_ttl = route
        .upstream
        .as_ref()
        .map_or(Duration::from_secs(60), |u| u.longest_answer())
        + Duration::from_secs(5);
    let claimed = match shared.kv.claim(&keys[0], IN_FLIGHT, lock_ttl).await {
        Ok(None) => true,
        Ok(Some(v)) if v.as_ref() == IN_FLIGHT => return Err(GatewayError::WebhookInFlight),
        Ok(Some(_)) => return duplicate(route, session, ctx).await,
        Err(e) if shared.tolerate("webhook", &e) => false,
        Err(_) => return Err(GatewayError::StoreUnavailable),
    };
    // Where the id is not signed, the signature was perhaps delivered under another id.
    for k in keys.iter().skip(1) {
        match shared.kv.get(k).await {
            Ok(Some(_)) => {
                if claimed {
                    let _ = shared.kv.release(&keys[0], IN_FLIGHT).await;
                }
                return duplicate(route, session, ctx).await;
            }
            Ok(None) => {}
            Err(e) if shared.tolerate("webhook", &e) => break,
            Err(_) => {
                if claimed {
                    let _ = shared.kv.release(&keys[0], IN_FLIGHT).await;
                }
                return Err(GatewayError::StoreUnavailable);
            }
        }
    }
    ctx.after.webhook = Some(Box::new(Delivery {
        keys,
        ttl: verified.remember_for,
        claimed,
    }));
    Ok(Flow::Next)
}

/// The value under an event's key while its first delivery is in flight (a delivered
/// event's is `DELIVERED`).
pub const IN_FLIGHT: &[u8] = b"in-flight";
pub const DELIVERED: &[u8] = b"1";

/// 200 `{"duplicate":true}`, nothing forwarded.
async fn duplicate(
    route: &Route,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Flow, GatewayError> {
    metrics::WEBHOOK_DUPLICATES
        .with_label_values(&[&route.name])
        .inc();
    let headers: [(&str, &[u8]); 2] = [
        ("content-type", b"application/json"),
        ("webhook-duplicate", b"true"),
    ];
    let body = bytes::Bytes::from_static(b"{\"duplicate\":true}");
    crate::proxy::respond::write_answer(session, ctx, 200, &headers, body).await;
    Ok(Flow::Answered)
}
