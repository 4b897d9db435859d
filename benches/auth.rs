//! Per-request authentication cost: verifying a JWT (HS256, RS256, ES256) through a
//! provider, with and without the verified-token cache, and looking up an API key.

// Benchmark code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::auth::jwt::{Provider, ProviderParts};
use gateway::auth::keys;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

fn provider(alg: Algorithm, key: keys::Key) -> Provider {
    Provider::new(ProviderParts {
        name: "bench".into(),
        issuer: "https://id.example.com/".into(),
        audiences: vec!["api".into()],
        algorithms: vec![alg],
        leeway: 30,
        static_keys: vec![key],
        jwks: None,
        consumer_claim: "sub".into(),
        scopes_claim: "scope".into(),
        forward_claims: vec![],
    })
}

fn token(alg: Algorithm, key: &EncodingKey, kid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = serde_json::json!({
        "iss": "https://id.example.com/", "aud": "api", "sub": "alice",
        "scope": "orders:read users:read", "iat": now, "exp": now + 3600,
    });
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, &claims, key).expect("sign")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(KEYS).join(name)).expect("fixture key")
}

fn bench(c: &mut Criterion) {
    std::env::set_var(
        "BENCH_HS_SECRET",
        "a-bench-secret-of-reasonable-length-0123456789",
    );
    let cases = [
        (
            Algorithm::HS256,
            keys::from_secret_env(Some("k".into()), Some(Algorithm::HS256), "BENCH_HS_SECRET")
                .expect("key"),
            EncodingKey::from_secret(b"a-bench-secret-of-reasonable-length-0123456789"),
        ),
        (
            Algorithm::RS256,
            keys::from_pem_file(
                Some("k".into()),
                Some(Algorithm::RS256),
                &Path::new(KEYS).join("test-only-rsa-1.pub.pem"),
            )
            .expect("key"),
            EncodingKey::from_rsa_pem(&read("test-only-rsa-1.key.pem")).expect("rsa"),
        ),
        (
            Algorithm::ES256,
            keys::from_pem_file(
                Some("k".into()),
                Some(Algorithm::ES256),
                &Path::new(KEYS).join("test-only-ec-p256.pub.pem"),
            )
            .expect("key"),
            EncodingKey::from_ec_pem(&read("test-only-ec-p256.key.pem")).expect("ec"),
        ),
    ];
    for (alg, key, enc) in cases {
        let p = provider(alg, key);
        let t = token(alg, &enc, "k");
        assert!(futures::executor::block_on(p.verify_uncached(&t)).is_ok());
        c.bench_function(&format!("jwt verify {alg:?}"), |b| {
            b.iter(|| futures::executor::block_on(p.verify_uncached(&t)))
        });
        c.bench_function(&format!("jwt verify {alg:?} cached"), |b| {
            b.iter(|| futures::executor::block_on(p.verify(&t)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
