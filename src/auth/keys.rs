//! Verification keys: static ones from configuration (`secret_env`, `pem_file`, inline `jwk`)
//! and those of a remote JWKS. Each key is bound to the algorithms it may verify, so a token
//! can never choose how its own key is interpreted (no algorithm confusion).

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::path::Path;
use std::sync::Arc;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The algorithms this key verifies: its configured `alg`, or its family's.
    pub algorithms: Vec<Algorithm>,
    pub decoding: Arc<DecodingKey>,
    /// A signing key, when the configuration holds a secret (for `gateway token`).
    pub encoding: Option<Arc<EncodingKey>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl Key {
    pub fn verifies(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

pub fn parse_alg(s: &str) -> Result<Algorithm, String> {
    if s.eq_ignore_ascii_case("none") {
        return Err("algorithm \"none\" is never accepted".into());
    }
    s.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm {s:?}: use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"))
}

fn family_algs(key: &DecodingKey) -> Vec<Algorithm> {
    key.family().algorithms().to_vec()
}

/// The algorithms a key verifies: the configured one (which must fit the key's family),
/// else every algorithm of its family.
fn bind(alg: Option<Algorithm>, key: &DecodingKey) -> Result<Vec<Algorithm>, String> {
    match alg {
        Some(a) if a.family() == key.family() => Ok(vec![a]),
        Some(a) => Err(format!("algorithm {a:?} does not fit this kind of key")),
        None => Ok(family_algs(key)),
    }
}

/// A static key from `secret_env`.
pub fn from_secret_env(
    kid: Option<String>,
    alg: Option<Algorithm>,
    var: &str,
) -> Result<Key, String> {
    let secret = std::env::var(var)
        .map_err(|_| format!("environment variable {var} (secret_env) is not set"))?;
    if secret.is_empty() {
        return Err(format!("environment variable {var} (secret_env) is empty"));
    }
    let alg = alg.unwrap_or(Algorithm::HS256);
    let decoding = DecodingKey::from_secret(secret.as_bytes());
    let algorithms = bind(Some(alg), &decoding)?;
    Ok(Key {
        kid,
        algorithms,
        decoding: Arc::new(decoding),
        encoding: Some(Arc::new(EncodingKey::from_secret(secret.as_bytes()))),
    })
}

/// A static public key from `pem_file` (RSA, EC or Ed25519 public key PEM).
pub fn from_pem_file(
    kid: Option<String>,
    alg: Option<Algorithm>,
    path: &Path,
) -> Result<Key, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let decoding = DecodingKey::from_rsa_pem(&pem)
        .or_else(|_| DecodingKey::from_ec_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .map_err(|_| {
            format!(
                "{} is not an RSA, EC or Ed25519 public key in PEM form",
                path.display()
            )
        })?;
    let algorithms = bind(alg, &decoding)?;
    Ok(Key {
        kid,
        algorithms,
        decoding: Arc::new(decoding),
        encoding: None,
    })
}

/// A key from a JWK (inline in configuration, or from a JWKS).
pub fn from_jwk(jwk: &Jwk, alg: Option<Algorithm>) -> Result<Key, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("the key is for encryption, not signatures".into());
    }
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWK: {e}"))?;
    let jwk_alg = match jwk.common.key_algorithm {
        Some(ka) => Some(
            ka.to_string()
                .parse::<Algorithm>()
                .map_err(|_| format!("unsupported JWK alg {ka}"))?,
        ),
        None => None,
    };
    let algorithms = bind(alg.or(jwk_alg), &decoding)?;
    let encoding = match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::OctetKey(p) => {
            EncodingKey::from_base64_secret(&p.value).ok().map(Arc::new)
        }
        _ => None,
    };
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        decoding: Arc::new(decoding),
        encoding,
    })
}

/// The usable keys of a JWKS document; unusable ones are skipped with a warning.
pub fn from_jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        match from_jwk(jwk, None) {
            Ok(k) => keys.push(k),
            Err(e) => tracing::warn!(kid = ?jwk.common.key_id, error = %e, "skipping JWKS key"),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_and_unknown_algorithms_are_refused() {
        assert!(parse_alg("none").is_err());
        assert!(parse_alg("NONE").is_err());
        assert!(parse_alg("HS999").is_err());
        assert_eq!(parse_alg("ES384").unwrap(), Algorithm::ES384);
    }

    #[test]
    fn a_secret_cannot_be_bound_to_rsa() {
        std::env::set_var("KEYS_TEST_SECRET", "s3cret");
        assert!(from_secret_env(None, Some(Algorithm::RS256), "KEYS_TEST_SECRET").is_err());
        let k =
            from_secret_env(Some("k".into()), Some(Algorithm::HS512), "KEYS_TEST_SECRET").unwrap();
        assert_eq!(k.algorithms, vec![Algorithm::HS512]);
        assert!(from_secret_env(None, None, "KEYS_TEST_MISSING").is_err());
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let body = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a","alg":"HS256"},{"kty":"weird","kid":"b"}]}"#;
        let keys = from_jwks(body).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("a"));
        assert!(from_jwks(b"nope").is_err());
    }
}
