//! Signature verification for inbound webhooks (product spec, "Verified webhooks").
//!
//! Order of checks: the headers are parsed first (size caps, required headers, numeric
//! timestamp, event-id shape), then the signature is verified, and only a request whose
//! signature verifies has its timestamp compared with the window. So a stale timestamp
//! under a bad signature is `invalid_signature`, a stale timestamp under a good signature is
//! `stale_timestamp`, and a stale timestamp is never accepted. Stripe's libraries use the
//! same order; it tells an unauthenticated caller nothing beyond "invalid".
//!
//! Work per request is bounded: header values over [`MAX_HEADER_BYTES`] are refused, at
//! most [`MAX_SIGNATURES`] signature entries are considered, and the HMAC over the body is
//! computed once per configured secret (each presented signature is then a constant-time
//! [`Mac::verify_slice`] on a clone of that state).

use super::schemes;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::{Sha256, Sha512};
use std::fmt;
use std::time::Duration;

/// Signature entries considered per request; further entries are ignored.
pub const MAX_SIGNATURES: usize = 8;
/// Longest header value read; a longer one is refused as `invalid_signature`.
pub const MAX_HEADER_BYTES: usize = 4096;
/// Longest event id accepted (bytes, visible ASCII only).
pub const MAX_EVENT_ID_BYTES: usize = 256;
/// How long a delivery is remembered when its scheme signs no timestamp.
pub const REMEMBER_WITHOUT_TIMESTAMP: Duration = Duration::from_secs(24 * 60 * 60);

/// The `scheme:` values a `webhook_verifiers` entry may name.
pub fn scheme_names() -> &'static [&'static str] {
    &["standard", "stripe", "github", "hmac"]
}

/// The hash under the HMAC (`algorithm:` of an `hmac` verifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// `"sha256"` or `"sha512"`; anything else is `None`.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

/// How an `hmac` verifier's signature is written (`encoding:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Hexadecimal, either case.
    Hex,
    /// Base64, standard alphabet, with padding.
    Base64,
}

impl Encoding {
    /// `"hex"` or `"base64"`; anything else is `None`.
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name {
            "hex" => Some(Encoding::Hex),
            "base64" => Some(Encoding::Base64),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }
}

/// A configurable HMAC scheme. The signed content is the body, or `"{timestamp}.{body}"`
/// when `timestamp_header` is set (then the tolerance applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacScheme {
    /// Where the signature is.
    pub header: HeaderName,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// When set, the header value must start with it; it is stripped before decoding.
    pub prefix: Option<String>,
    pub timestamp_header: Option<HeaderName>,
    /// The event id for replay protection. It is not covered by the signature.
    pub id_header: Option<HeaderName>,
}

/// How a sender signs its webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// `Stripe-Signature: t=<unix>,v1=<hex>`.
    Stripe,
    /// `X-Hub-Signature-256: sha256=<hex>`, event id `X-GitHub-Delivery`.
    Github,
    Hmac(HmacScheme),
}

impl Scheme {
    /// The name used in configuration (one of [`scheme_names`]).
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Standard => "standard",
            Scheme::Stripe => "stripe",
            Scheme::Github => "github",
            Scheme::Hmac(_) => "hmac",
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Scheme::Hmac(hmac) => hmac.algorithm,
            _ => Algorithm::Sha256,
        }
    }

    /// Whether the signed content carries a timestamp (then `tolerance` applies).
    pub fn uses_timestamp(&self) -> bool {
        match self {
            Scheme::Standard | Scheme::Stripe => true,
            Scheme::Github => false,
            Scheme::Hmac(hmac) => hmac.timestamp_header.is_some(),
        }
    }
}

/// One `webhook_verifiers` entry, compiled: its secrets decoded to key bytes.
#[derive(Clone)]
pub struct Verifier {
    name: String,
    scheme: Scheme,
    secrets: Vec<Vec<u8>>,
    tolerance: Duration,
}

/// Never prints the secrets, only how many there are.
impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("name", &self.name)
            .field("scheme", &self.scheme)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// A request whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Remember this (per verifier) and refuse a second delivery under it: the event id
    /// (standard `webhook-id`, github `X-GitHub-Delivery`, hmac `id_header`) or, without
    /// one, [`Verified::signature_id`].
    pub replay_id: String,
    /// How long to remember `replay_id`: until the timestamp leaves the window (never less
    /// than the tolerance), or [`REMEMBER_WITHOUT_TIMESTAMP`] for schemes without one.
    pub remember_for: Duration,
    /// Hex of the HMAC of the signed content under the *first* configured secret: the
    /// matched signature whenever the first secret matched. Canonical per signed content,
    /// so a replay cannot change it by dropping or reordering signatures during a
    /// rotation. Unlike github's and hmac's event ids it is bound to the signature.
    pub signature_id: String,
}

/// Why a request was refused; [`Rejection::reason`] is the metric/log label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("invalid signature")]
    InvalidSignature,
    #[error("timestamp outside the tolerance")]
    StaleTimestamp,
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::InvalidSignature => "invalid_signature",
            Rejection::StaleTimestamp => "stale_timestamp",
        }
    }
}

impl Verifier {
    /// Decodes the secrets (all of them may match, for rotation). The error names the
    /// secret by position (1-based), never by value.
    pub fn new(
        name: &str,
        scheme: Scheme,
        secrets: Vec<String>,
        tolerance: Duration,
    ) -> Result<Verifier, String> {
        if secrets.is_empty() {
            return Err("no secret is configured".to_string());
        }
        let secrets = secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| decode_secret(&scheme, &format!("secret {}", i + 1), secret))
            .collect::<Result<Vec<_>, _>>()?;
        if scheme.uses_timestamp() && tolerance.as_secs() == 0 {
            return Err(format!(
                "tolerance must be at least 1s for the {} scheme",
                scheme.name()
            ));
        }
        Ok(Verifier {
            name: name.to_string(),
            scheme,
            secrets,
            tolerance,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// What a sender would send for `body`, signed with the first secret; see [`sign`].
    pub fn sign(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let key = self.secrets.first().ok_or("no secret is configured")?;
        schemes::sign(&self.scheme, key, id, timestamp, body)
    }

    /// Verifies `body` (the raw bytes) against the signature in `headers`; `now` is the
    /// current time in unix seconds.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, Rejection> {
        let presented = schemes::parse(&self.scheme, headers)?;
        let signature_id = first_match(
            self.scheme.algorithm(),
            &self.secrets,
            presented.prefix.as_bytes(),
            body,
            &presented.signatures,
        )
        .ok_or(Rejection::InvalidSignature)?;
        let remember_for = match presented.timestamp {
            Some(timestamp) => self.window(timestamp, now)?,
            None => REMEMBER_WITHOUT_TIMESTAMP,
        };
        let replay_id = presented.event_id.unwrap_or_else(|| signature_id.clone());
        Ok(Verified {
            replay_id,
            remember_for,
            signature_id,
        })
    }

    /// Refuses a timestamp more than the tolerance in the past or the future; otherwise
    /// how long a replay of this delivery would still pass the window check.
    fn window(&self, timestamp: i64, now: i64) -> Result<Duration, Rejection> {
        let tolerance = i128::from(self.tolerance.as_secs());
        let age = i128::from(now) - i128::from(timestamp);
        if age > tolerance || -age > tolerance {
            return Err(Rejection::StaleTimestamp);
        }
        // Accepted while `now' - timestamp <= tolerance`, i.e. through second
        // `timestamp + tolerance`: a future-dated timestamp stays valid for up to twice the
        // tolerance, so remembering it for the tolerance alone would let it replay.
        let left = u64::try_from(tolerance - age + 1).unwrap_or(u64::MAX);
        Ok(Duration::from_secs(left).max(self.tolerance))
    }
}

/// What a sender of `scheme` would send for `body`: header name and value pairs. `id` is
/// used by standard, github (`X-GitHub-Delivery`, when not empty) and hmac with
/// `id_header` (when not empty); `timestamp` by standard, stripe and hmac with
/// `timestamp_header`.
pub fn sign(
    scheme: &Scheme,
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let key = decode_secret(scheme, "the secret", secret)?;
    schemes::sign(scheme, &key, id, timestamp, body)
}

/// The key bytes of a secret: its UTF-8 bytes, except standard's, which are base64 (after
/// an optional `whsec_`). Errors name the secret by `label`, never by value.
fn decode_secret(scheme: &Scheme, label: &str, secret: &str) -> Result<Vec<u8>, String> {
    let key = match scheme {
        Scheme::Standard => match secret.strip_prefix("whsec_") {
            Some(rest) => BASE64
                .decode(rest)
                .map_err(|_| format!("{label} is not valid base64 after whsec_"))?,
            None => BASE64.decode(secret).map_err(|_| {
                format!("{label} is not valid base64 (a standard secret is whsec_<base64>)")
            })?,
        },
        _ => secret.as_bytes().to_vec(),
    };
    if key.is_empty() {
        return Err(format!("{label} is empty"));
    }
    Ok(key)
}

/// HMAC of `prefix ++ body` under `key`.
pub(super) fn compute(
    algorithm: Algorithm,
    key: &[u8],
    prefix: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let bytes =
        match algorithm {
            Algorithm::Sha256 => keyed::<Hmac<Sha256>>(key, prefix, body)
                .map(|mac| mac.finalize().into_bytes().to_vec()),
            Algorithm::Sha512 => keyed::<Hmac<Sha512>>(key, prefix, body)
                .map(|mac| mac.finalize().into_bytes().to_vec()),
        };
    bytes.ok_or_else(|| "the secret cannot key an HMAC".to_string())
}

/// The signature id (see [`Verified::signature_id`]) when any presented signature is the
/// HMAC of `prefix ++ body` under any secret.
fn first_match(
    algorithm: Algorithm,
    secrets: &[Vec<u8>],
    prefix: &[u8],
    body: &[u8],
    signatures: &[Vec<u8>],
) -> Option<String> {
    match algorithm {
        Algorithm::Sha256 => first_match_with::<Hmac<Sha256>>(secrets, prefix, body, signatures),
        Algorithm::Sha512 => first_match_with::<Hmac<Sha512>>(secrets, prefix, body, signatures),
    }
}

fn first_match_with<M: Mac + KeyInit + Clone>(
    secrets: &[Vec<u8>],
    prefix: &[u8],
    body: &[u8],
    signatures: &[Vec<u8>],
) -> Option<String> {
    // The state under the first secret, kept for the signature id if a later one matches.
    let mut first: Option<M> = None;
    for secret in secrets {
        let Some(mac) = keyed::<M>(secret, prefix, body) else {
            continue;
        };
        // verify_slice: constant-time, and a wrong length is a mismatch.
        if signatures
            .iter()
            .any(|signature| mac.clone().verify_slice(signature).is_ok())
        {
            let canonical = first.unwrap_or(mac);
            return Some(hex::encode(canonical.finalize().into_bytes()));
        }
        first.get_or_insert(mac);
    }
    None
}

fn keyed<M: Mac + KeyInit>(key: &[u8], prefix: &[u8], body: &[u8]) -> Option<M> {
    let mut mac = <M as Mac>::new_from_slice(key).ok()?;
    mac.update(prefix);
    mac.update(body);
    Some(mac)
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
