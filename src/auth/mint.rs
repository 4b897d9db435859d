//! `gateway token`: mints a signed JWT for local testing from a provider's static key.

use super::jwt::Provider;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct MintOptions {
    pub subject: Option<String>,
    pub scopes: Vec<String>,
    pub lifetime: Duration,
    pub audience: Option<String>,
    pub kid: Option<String>,
    /// Extra claims as `name=value`; the value is JSON when it parses as JSON.
    pub claims: Vec<String>,
    /// A private key in PEM form, for providers whose static keys are public keys.
    pub private_key: Option<(Vec<u8>, Algorithm)>,
}

fn signing_key(
    p: &Provider,
    o: &MintOptions,
) -> Result<(EncodingKey, Algorithm, Option<String>), String> {
    if let Some((pem, alg)) = &o.private_key {
        let key = match alg.family() {
            jsonwebtoken::AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem),
            jsonwebtoken::AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem),
            jsonwebtoken::AlgorithmFamily::Ed => EncodingKey::from_ed_pem(pem),
            jsonwebtoken::AlgorithmFamily::Hmac => {
                return Err("--key is for RSA, EC or Ed25519 private keys".into())
            }
        }
        .map_err(|e| format!("cannot use the private key: {e}"))?;
        return Ok((key, *alg, o.kid.clone()));
    }
    let key = p
        .static_keys
        .iter()
        .filter(|k| o.kid.is_none() || k.kid == o.kid)
        .find(|k| k.encoding.is_some())
        .ok_or_else(|| {
            format!(
                "provider {:?} has no static secret to sign with: configure a secret_env or an oct jwk key, or pass --key with a private key",
                p.name
            )
        })?;
    let alg = *key.algorithms.first().ok_or("the key has no algorithm")?;
    let enc = key
        .encoding
        .as_deref()
        .cloned()
        .ok_or("the key cannot sign")?;
    Ok((enc, alg, key.kid.clone()))
}

/// Mints a token the provider accepts (issuer, first audience, scopes in its scopes claim).
pub fn mint(p: &Provider, o: &MintOptions) -> Result<String, String> {
    let (key, alg, kid) = signing_key(p, o)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut claims = Map::new();
    claims.insert("iss".into(), Value::String(p.issuer.clone()));
    if let Some(aud) = o.audience.clone().or_else(|| p.audiences.first().cloned()) {
        claims.insert("aud".into(), Value::String(aud));
    }
    if let Some(sub) = &o.subject {
        claims.insert(p.consumer_claim.clone(), Value::String(sub.clone()));
        claims.insert("sub".into(), Value::String(sub.clone()));
    }
    if !o.scopes.is_empty() {
        claims.insert(p.scopes_claim.clone(), Value::String(o.scopes.join(" ")));
    }
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + o.lifetime.as_secs()).into());
    for c in &o.claims {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| format!("--claim {c:?}: write name=value"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        claims.insert(k.to_string(), v);
    }
    let mut header = Header::new(alg);
    header.kid = kid;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("cannot sign: {e}"))
}
