//! Per-scheme header formats: parsing what a request presents, and writing what a sender
//! would send. The signed content is always `prefix ++ body`.

use super::verify::Encoding;
use super::verify::{
    compute, HmacScheme, Rejection, Scheme, MAX_EVENT_ID_BYTES, MAX_HEADER_BYTES, MAX_SIGNATURES,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::{HeaderMap, HeaderName};

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
const HUB_SIGNATURE_256: HeaderName = HeaderName::from_static("x-hub-signature-256");
const GITHUB_DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");

const INVALID: Rejection = Rejection::InvalidSignature;

/// What a request presents, parsed from its headers, before any MAC is computed.
pub(super) struct Presented {
    /// Signed content before the body, e.g. `"{id}.{timestamp}."` for standard.
    pub prefix: String,
    /// Decoded signatures, at most [`MAX_SIGNATURES`], none empty-listed.
    pub signatures: Vec<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub event_id: Option<String>,
}

pub(super) fn parse(scheme: &Scheme, headers: &HeaderMap) -> Result<Presented, Rejection> {
    let presented = match scheme {
        Scheme::Standard => parse_standard(headers)?,
        Scheme::Stripe => parse_stripe(headers)?,
        Scheme::Github => parse_github(headers)?,
        Scheme::Hmac(hmac) => parse_hmac(hmac, headers)?,
    };
    if presented.signatures.is_empty() {
        return Err(INVALID);
    }
    Ok(presented)
}

/// `webhook-signature: v1,<base64> v1,<base64>`; entries of other versions are ignored,
/// as are undecodable ones (they cannot match).
fn parse_standard(headers: &HeaderMap) -> Result<Presented, Rejection> {
    let id = event_id(required(headers, &WEBHOOK_ID)?)?;
    let timestamp = parse_timestamp(required(headers, &WEBHOOK_TIMESTAMP)?)?;
    let signatures = required(headers, &WEBHOOK_SIGNATURE)?
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .take(MAX_SIGNATURES)
        .filter_map(|(_, signature)| BASE64.decode(signature).ok())
        .collect();
    Ok(Presented {
        prefix: format!("{id}.{timestamp}."),
        signatures,
        timestamp: Some(timestamp),
        event_id: Some(id),
    })
}

/// `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`; other keys (v0) are ignored. Two `t`
/// are refused: which one was signed would be ambiguous.
fn parse_stripe(headers: &HeaderMap) -> Result<Presented, Rejection> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    let mut considered = 0;
    let items = required(headers, &STRIPE_SIGNATURE)?
        .split(',')
        .filter_map(|item| item.trim().split_once('='));
    for (key, value) in items {
        match key {
            "t" if timestamp.is_some() => return Err(INVALID),
            "t" => timestamp = Some(parse_timestamp(value)?),
            "v1" if considered < MAX_SIGNATURES => {
                considered += 1;
                if let Ok(signature) = hex::decode(value) {
                    signatures.push(signature);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(INVALID)?;
    Ok(Presented {
        prefix: format!("{timestamp}."),
        signatures,
        timestamp: Some(timestamp),
        event_id: None,
    })
}

/// `X-Hub-Signature-256: sha256=<hex>` over the body; `X-GitHub-Delivery` when present.
fn parse_github(headers: &HeaderMap) -> Result<Presented, Rejection> {
    let signature = required(headers, &HUB_SIGNATURE_256)?
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(INVALID)?;
    let event_id = optional(headers, &GITHUB_DELIVERY)?
        .map(event_id)
        .transpose()?;
    Ok(Presented {
        prefix: String::new(),
        signatures: vec![signature],
        timestamp: None,
        event_id,
    })
}

/// A configured prefix must be present. The id header is optional in the request: without
/// it the signature is the replay id.
fn parse_hmac(scheme: &HmacScheme, headers: &HeaderMap) -> Result<Presented, Rejection> {
    let value = required(headers, &scheme.header)?;
    let value = match &scheme.prefix {
        Some(prefix) => value.strip_prefix(prefix.as_str()).ok_or(INVALID)?,
        None => value,
    };
    let signature = match scheme.encoding {
        Encoding::Hex => hex::decode(value).ok(),
        Encoding::Base64 => BASE64.decode(value).ok(),
    }
    .ok_or(INVALID)?;
    let timestamp = match &scheme.timestamp_header {
        Some(name) => Some(parse_timestamp(required(headers, name)?)?),
        None => None,
    };
    let event_id = match &scheme.id_header {
        Some(name) => optional(headers, name)?.map(event_id).transpose()?,
        None => None,
    };
    Ok(Presented {
        prefix: timestamp.map(|t| format!("{t}.")).unwrap_or_default(),
        signatures: vec![signature],
        timestamp,
        event_id,
    })
}

/// The single value of `name`, if any. Refused: repeated (ambiguous), longer than
/// [`MAX_HEADER_BYTES`], or not visible ASCII.
fn optional<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, Rejection> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() || value.len() > MAX_HEADER_BYTES {
        return Err(INVALID);
    }
    value.to_str().map(Some).map_err(|_| INVALID)
}

fn required<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h str, Rejection> {
    optional(headers, name)?.ok_or(INVALID)
}

/// Unix seconds: ASCII digits only (no sign, no fraction), fitting an i64.
fn parse_timestamp(value: &str) -> Result<i64, Rejection> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(INVALID);
    }
    value.parse().map_err(|_| INVALID)
}

fn valid_event_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_EVENT_ID_BYTES && id.bytes().all(|b| b.is_ascii_graphic())
}

fn event_id(id: &str) -> Result<String, Rejection> {
    if valid_event_id(id) {
        Ok(id.to_string())
    } else {
        Err(INVALID)
    }
}

pub(super) fn sign(
    scheme: &Scheme,
    key: &[u8],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let mac = |prefix: &str| compute(scheme.algorithm(), key, prefix.as_bytes(), body);
    let id_ok = || {
        if valid_event_id(id) {
            Ok(())
        } else {
            Err(format!(
                "the id must be 1 to {MAX_EVENT_ID_BYTES} visible ASCII characters"
            ))
        }
    };
    if scheme.uses_timestamp() && timestamp < 0 {
        return Err("the timestamp must not be negative".to_string());
    }
    let pair = |name: &str, value: String| (name.to_string(), value);
    let headers = match scheme {
        Scheme::Standard => {
            id_ok()?;
            let signature = BASE64.encode(mac(&format!("{id}.{timestamp}."))?);
            vec![
                pair("webhook-id", id.to_string()),
                pair("webhook-timestamp", timestamp.to_string()),
                pair("webhook-signature", format!("v1,{signature}")),
            ]
        }
        Scheme::Stripe => {
            let signature = hex::encode(mac(&format!("{timestamp}."))?);
            vec![pair(
                "Stripe-Signature",
                format!("t={timestamp},v1={signature}"),
            )]
        }
        Scheme::Github => {
            let mut headers = vec![pair(
                "X-Hub-Signature-256",
                format!("sha256={}", hex::encode(mac("")?)),
            )];
            if !id.is_empty() {
                id_ok()?;
                headers.push(pair("X-GitHub-Delivery", id.to_string()));
            }
            headers
        }
        Scheme::Hmac(hmac) => {
            let prefix = match hmac.timestamp_header {
                Some(_) => format!("{timestamp}."),
                None => String::new(),
            };
            let signature = mac(&prefix)?;
            let encoded = match hmac.encoding {
                Encoding::Hex => hex::encode(signature),
                Encoding::Base64 => BASE64.encode(signature),
            };
            let value = format!("{}{encoded}", hmac.prefix.as_deref().unwrap_or(""));
            let mut headers = vec![pair(hmac.header.as_str(), value)];
            if let Some(name) = &hmac.timestamp_header {
                headers.push(pair(name.as_str(), timestamp.to_string()));
            }
            if let (Some(name), false) = (&hmac.id_header, id.is_empty()) {
                id_ok()?;
                headers.push(pair(name.as_str(), id.to_string()));
            }
            headers
        }
    };
    Ok(headers)
}
