//! JWT providers: verify a bearer token against a provider's static and remote keys, with
//! issuer, audience, expiry, not-before and leeway checks.

use super::cache::{TokenCache, CAPACITY_BYTES};
use super::jwks::{JwksSource, MIN_REFETCH};
use super::keys::Key;
use super::Reason;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN: usize = 8 * 1024;

pub type Claims = Map<String, Value>;

pub struct Provider {
    pub name: Arc<str>,
    pub issuer: String,
    pub audiences: Vec<String>,
    /// One prepared validation per accepted algorithm.
    validations: HashMap<Algorithm, Validation>,
    pub static_keys: Vec<Key>,
    pub jwks: Option<Arc<JwksSource>>,
    pub consumer_claim: String,
    pub scopes_claim: String,
    /// Claim name and the upstream header it is forwarded in.
    pub forward_claims: Vec<(String, http::HeaderName)>,
    leeway: u64,
    cache: TokenCache,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .finish()
    }
}

pub struct ProviderParts {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: u64,
    pub static_keys: Vec<Key>,
    pub jwks: Option<Arc<JwksSource>>,
    pub consumer_claim: String,
    pub scopes_claim: String,
    pub forward_claims: Vec<(String, http::HeaderName)>,
}

impl Provider {
    pub fn new(p: ProviderParts) -> Provider {
        let validations = p
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = p.leeway;
                v.validate_nbf = true;
                v.set_issuer(&[&p.issuer]);
                let mut required = vec!["exp", "iss"];
                if p.audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&p.audiences);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();
        Provider {
            name: p.name.into(),
            issuer: p.issuer,
            audiences: p.audiences,
            validations,
            static_keys: p.static_keys,
            jwks: p.jwks,
            consumer_claim: p.consumer_claim,
            scopes_claim: p.scopes_claim,
            forward_claims: p.forward_claims,
            leeway: p.leeway,
            cache: TokenCache::new(CAPACITY_BYTES),
        }
    }

    /// Keys that may verify a token with this `kid` (if any) and algorithm.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Key>, Reason> {
        let remote = self.jwks.as_ref().map(|j| j.keys()).unwrap_or_default();
        let all = self.static_keys.iter().chain(remote.iter());
        let named: Vec<&Key> = match kid {
            Some(kid) => all.filter(|k| k.kid.as_deref() == Some(kid)).collect(),
            None => all.collect(),
        };
        if named.is_empty() {
            return Err(Reason::UnknownKey);
        }
        let usable: Vec<Key> = named
            .into_iter()
            .filter(|k| k.verifies(alg))
            .cloned()
            .collect();
        match (usable.is_empty(), kid) {
            // The named key exists but is not for this algorithm: a confusion attempt.
            (true, Some(_)) => Err(Reason::Algorithm),
            (true, None) => Err(Reason::UnknownKey),
            (false, _) => Ok(usable),
        }
    }

    /// Verifies a token's signature and claims, or finds it verified in the cache.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, Reason> {
        let version = self.jwks.as_ref().map_or(0, |j| j.version());
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(claims) = self.cache.get(token, now, version) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_uncached(token).await?);
        if let Some(exp) = claims
            .get("exp")
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
        {
            self.cache.put(
                token,
                claims.clone(),
                exp.saturating_add(self.leeway),
                version,
            );
        }
        Ok(claims)
    }

    /// Verifies a token's signature and claims, every time.
    pub async fn verify_uncached(&self, token: &str) -> Result<Claims, Reason> {
        if token.len() > MAX_TOKEN || token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(Reason::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Reason::Malformed)?;
        // We understand no extension: any critical one must be refused (RFC 7515 §4.1.11).
        if header.crit.is_some() {
            return Err(Reason::Malformed);
        }
        let Some(validation) = self.validations.get(&header.alg) else {
            return Err(Reason::Algorithm);
        };
        let kid = header.kid.as_deref();
        let keys = match self.candidates(kid, header.alg) {
            Err(Reason::UnknownKey) if self.jwks.is_some() => {
                if let Some(j) = &self.jwks {
                    j.fetch_for_unknown_kid(MIN_REFETCH).await;
                }
                self.candidates(kid, header.alg)?
            }
            other => other?,
        };
        let mut last = Reason::BadSignature;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    last = map_error(e.kind());
                    if last != Reason::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// The consumer a token names, if any.
    pub fn consumer(&self, claims: &Claims) -> Option<String> {
        claim_string(claims.get(&self.consumer_claim)?)
    }

    /// The scopes a token grants: a space-separated string or an array of strings.
    pub fn scopes(&self, claims: &Claims) -> Vec<String> {
        match claims.get(&self.scopes_claim) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A claim as header-friendly text: strings as they are, other scalars printed, objects
/// and arrays as JSON.
pub fn claim_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn map_error(kind: &ErrorKind) -> Reason {
    match kind {
        ErrorKind::InvalidSignature => Reason::BadSignature,
        ErrorKind::ExpiredSignature => Reason::Expired,
        ErrorKind::ImmatureSignature => Reason::NotYetValid,
        ErrorKind::InvalidIssuer => Reason::Issuer,
        ErrorKind::InvalidAudience => Reason::Audience,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Reason::Algorithm,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => Reason::Issuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => Reason::Audience,
        ErrorKind::MissingRequiredClaim(_) => Reason::Malformed,
        _ => Reason::Malformed,
    }
}
