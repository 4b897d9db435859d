use super::*;
use http::HeaderValue;

const TOLERANCE: Duration = Duration::from_secs(300);

// Standard Webhooks reference test vector (libraries/go/webhook_test.go TestWebhookSign,
// libraries/javascript/src/webhook.test.ts, libraries/php/tests/WebhookTest.php in
// github.com/standard-webhooks/standard-webhooks).
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1614265330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

// Stripe: HMAC-SHA256 keyed with the whole secret (whsec_ included) over "{t}.{body}",
// computed outside this crate with Python's hmac module and `openssl dgst -sha256 -hmac`.
const STRIPE_SECRET: &str = "whsec_test_secret";
const STRIPE_TS: i64 = 1_700_000_000;
const STRIPE_BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
const STRIPE_V1: &str = "d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";

// GitHub docs, "Validating webhook deliveries" > "Testing the webhook payload validation".
const GH_SECRET: &str = "It's a Secret to Everybody";
const GH_BODY: &[u8] = b"Hello, World!";
const GH_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
const GH_DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn signed(scheme: &Scheme, secret: &str, id: &str, ts: i64, body: &[u8]) -> HeaderMap {
    let pairs = sign(scheme, secret, id, ts, body).unwrap();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    headers(&refs)
}

fn verifier(scheme: Scheme, secrets: &[&str]) -> Verifier {
    let secrets = secrets.iter().map(|s| s.to_string()).collect();
    Verifier::new("test", scheme, secrets, TOLERANCE).unwrap()
}

fn hmac_scheme(
    algorithm: Algorithm,
    encoding: Encoding,
    prefix: Option<&str>,
    timestamp: bool,
    id: bool,
) -> Scheme {
    Scheme::Hmac(HmacScheme {
        header: HeaderName::from_static("x-signature"),
        algorithm,
        encoding,
        prefix: prefix.map(str::to_string),
        timestamp_header: timestamp.then(|| HeaderName::from_static("x-timestamp")),
        id_header: id.then(|| HeaderName::from_static("x-event-id")),
    })
}

fn sw_headers(signature: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", signature),
    ])
}

fn stripe_headers(value: &str) -> HeaderMap {
    headers(&[("stripe-signature", value)])
}

/// A fresh well-formed 32-byte signature that matches nothing.
fn wrong_hex(n: u8) -> String {
    hex::encode([n; 32])
}

// --- published vectors ---

#[test]
fn standard_webhooks_published_vector_verifies() {
    let verified = verifier(Scheme::Standard, &[SW_SECRET])
        .verify(&sw_headers(SW_SIGNATURE), SW_BODY, SW_TS)
        .unwrap();
    assert_eq!(verified.replay_id, SW_ID);
    let raw = BASE64
        .decode("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        .unwrap();
    assert_eq!(verified.signature_id, hex::encode(raw));
    assert_eq!(verified.remember_for, TOLERANCE + Duration::from_secs(1));

    // Without whsec_ the whole secret is base64, as in the reference libraries.
    let bare = verifier(Scheme::Standard, &["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
    assert!(bare
        .verify(&sw_headers(SW_SIGNATURE), SW_BODY, SW_TS)
        .is_ok());
}

#[test]
fn sign_reproduces_the_standard_webhooks_vector() {
    let pairs = sign(&Scheme::Standard, SW_SECRET, SW_ID, SW_TS, SW_BODY).unwrap();
    let expected = [
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIGNATURE),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(pairs, expected);
}

#[test]
fn verifier_signs_with_its_first_secret() {
    let v = verifier(
        Scheme::Standard,
        &[SW_SECRET, "whsec_b2xkLXNlY3JldC1ieXRlcw=="],
    );
    assert_eq!(
        v.sign(SW_ID, SW_TS, SW_BODY).unwrap(),
        sign(&Scheme::Standard, SW_SECRET, SW_ID, SW_TS, SW_BODY).unwrap()
    );
    let v = verifier(Scheme::Github, &[GH_SECRET]);
    let pairs = v.sign("", 0, GH_BODY).unwrap();
    assert_eq!(
        pairs,
        vec![("X-Hub-Signature-256".to_string(), GH_SIGNATURE.to_string())]
    );
}

#[test]
fn hmac_primitive_matches_published_vectors() {
    // RFC 4231 test case 2.
    let rfc = b"what do ya want for nothing?";
    assert_eq!(
        hex::encode(compute(Algorithm::Sha256, b"Jefe", b"", rfc).unwrap()),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hex::encode(compute(Algorithm::Sha512, b"Jefe", b"", rfc).unwrap()),
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75\
         c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
    );
    // Signed content is prefix ++ body.
    assert_eq!(
        compute(
            Algorithm::Sha256,
            b"Jefe",
            b"what do ya ",
            b"want for nothing?"
        )
        .unwrap(),
        compute(Algorithm::Sha256, b"Jefe", b"", rfc).unwrap()
    );
    // stripe-node test/crypto/helpers.ts (its computeHMACSignature, secret "test_secret").
    let stripe = |payload: &[u8]| {
        hex::encode(compute(Algorithm::Sha256, b"test_secret", b"", payload).unwrap())
    };
    assert_eq!(
        stripe(b""),
        "f7f9bd47fb987337b5796fdc1fdb9ba221d0d5396814bfcaf9521f43fd8927fd"
    );
    assert_eq!(
        stripe(br#"{"obj1":"hello","obj2":"world"}"#),
        "bebb1a643997f419b315ddba19e6f5411e1ce7f810ba6d3617ce72823092f363"
    );
    assert_eq!(
        stripe("\u{1F600}".as_bytes()),
        "837da296d05c4fe31f61d5d7ead035099d9585a5bcde87de952012a78f0b0c43"
    );
}

#[test]
fn stripe_independently_computed_vector_verifies_and_signs() {
    let header = format!("t={STRIPE_TS},v1={STRIPE_V1}");
    let verified = verifier(Scheme::Stripe, &[STRIPE_SECRET])
        .verify(&stripe_headers(&header), STRIPE_BODY, STRIPE_TS)
        .unwrap();
    assert_eq!(verified.replay_id, STRIPE_V1);
    assert_eq!(verified.signature_id, STRIPE_V1);
    let pairs = sign(&Scheme::Stripe, STRIPE_SECRET, "", STRIPE_TS, STRIPE_BODY).unwrap();
    assert_eq!(pairs, vec![("Stripe-Signature".to_string(), header)]);
}

#[test]
fn stripe_round_trip_and_v0_ignored() {
    let v = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    let h = signed(
        &Scheme::Stripe,
        STRIPE_SECRET,
        "",
        1_234_567_890,
        b"payload",
    );
    assert!(v.verify(&h, b"payload", 1_234_567_890).is_ok());
    // v0 carrying the right value is not a v1 signature.
    let v0 = format!("t={STRIPE_TS},v0={STRIPE_V1}");
    assert_eq!(
        v.verify(&stripe_headers(&v0), STRIPE_BODY, STRIPE_TS),
        Err(Rejection::InvalidSignature)
    );
    let both = format!("t={STRIPE_TS},v0={},v1={STRIPE_V1}", wrong_hex(1));
    assert!(v
        .verify(&stripe_headers(&both), STRIPE_BODY, STRIPE_TS)
        .is_ok());
}

#[test]
fn github_documented_example_verifies_and_signs() {
    let v = verifier(Scheme::Github, &[GH_SECRET]);
    let h = headers(&[
        ("X-Hub-Signature-256", GH_SIGNATURE),
        ("X-GitHub-Delivery", GH_DELIVERY),
    ]);
    let verified = v.verify(&h, GH_BODY, 0).unwrap();
    assert_eq!(verified.replay_id, GH_DELIVERY);
    assert_eq!(verified.remember_for, Duration::from_secs(86_400));
    let hex_part = GH_SIGNATURE.trim_start_matches("sha256=");
    assert_eq!(verified.signature_id, hex_part);

    // Without a delivery id, the signature is the replay id.
    let h = headers(&[("X-Hub-Signature-256", GH_SIGNATURE)]);
    assert_eq!(v.verify(&h, GH_BODY, 0).unwrap().replay_id, hex_part);

    let pairs = sign(&Scheme::Github, GH_SECRET, GH_DELIVERY, 0, GH_BODY).unwrap();
    assert_eq!(
        pairs,
        vec![
            ("X-Hub-Signature-256".to_string(), GH_SIGNATURE.to_string()),
            ("X-GitHub-Delivery".to_string(), GH_DELIVERY.to_string()),
        ]
    );
    // No timestamp involved: `now` does not matter.
    assert!(v.verify(&h, GH_BODY, i64::MAX).is_ok());
}

// --- rotation and multiple signatures ---

#[test]
fn any_listed_secret_may_match() {
    let old = "whsec_b2xkLXNlY3JldC1ieXRlcw==";
    let v = verifier(Scheme::Standard, &[old, SW_SECRET]);
    assert!(v.verify(&sw_headers(SW_SIGNATURE), SW_BODY, SW_TS).is_ok());

    let v = verifier(Scheme::Stripe, &["whsec_new", STRIPE_SECRET]);
    let header = format!("t={STRIPE_TS},v1={STRIPE_V1}");
    assert!(v
        .verify(&stripe_headers(&header), STRIPE_BODY, STRIPE_TS)
        .is_ok());

    let v = verifier(Scheme::Github, &["new secret", GH_SECRET]);
    let h = headers(&[("X-Hub-Signature-256", GH_SIGNATURE)]);
    assert!(v.verify(&h, GH_BODY, 0).is_ok());

    let v = verifier(Scheme::Github, &["new secret", "other"]);
    assert_eq!(v.verify(&h, GH_BODY, 0), Err(Rejection::InvalidSignature));
}

#[test]
fn any_listed_signature_may_match() {
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    let garbage = format!(
        "v1,{} v1,not-base64 v2,x {SW_SIGNATURE}",
        BASE64.encode([7u8; 32])
    );
    assert!(v.verify(&sw_headers(&garbage), SW_BODY, SW_TS).is_ok());

    let v = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    let header = format!("t={STRIPE_TS},v1={},v1=zz,v1={STRIPE_V1}", wrong_hex(2));
    assert!(v
        .verify(&stripe_headers(&header), STRIPE_BODY, STRIPE_TS)
        .is_ok());
}

#[test]
fn signature_id_is_canonical_under_rotation() {
    // Sender signs with both secrets; an attacker replaying with only the second
    // signature must land on the same replay id.
    let v = verifier(Scheme::Stripe, &["whsec_primary", "whsec_previous"]);
    let primary = hex::encode(compute(Algorithm::Sha256, b"whsec_primary", b"5.", b"x").unwrap());
    let previous = hex::encode(compute(Algorithm::Sha256, b"whsec_previous", b"5.", b"x").unwrap());
    let both = v.verify(
        &stripe_headers(&format!("t=5,v1={primary},v1={previous}")),
        b"x",
        5,
    );
    let only_previous = v.verify(&stripe_headers(&format!("t=5,v1={previous}")), b"x", 5);
    assert_eq!(both.unwrap().replay_id, primary);
    assert_eq!(only_previous.unwrap().replay_id, primary);
}

#[test]
fn at_most_eight_signature_entries_are_considered() {
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    let decoy = format!("v1,{}", BASE64.encode([9u8; 32]));
    let eighth = format!("{} {SW_SIGNATURE}", [decoy.as_str(); 7].join(" "));
    assert!(v.verify(&sw_headers(&eighth), SW_BODY, SW_TS).is_ok());
    let ninth = format!("{} {SW_SIGNATURE}", [decoy.as_str(); 8].join(" "));
    assert_eq!(
        v.verify(&sw_headers(&ninth), SW_BODY, SW_TS),
        Err(Rejection::InvalidSignature)
    );

    let v = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    let decoys = |n: usize| format!(",v1={}", wrong_hex(3)).repeat(n);
    let eighth = format!("t={STRIPE_TS}{},v1={STRIPE_V1}", decoys(7));
    assert!(v
        .verify(&stripe_headers(&eighth), STRIPE_BODY, STRIPE_TS)
        .is_ok());
    let ninth = format!("t={STRIPE_TS}{},v1={STRIPE_V1}", decoys(8));
    assert_eq!(
        v.verify(&stripe_headers(&ninth), STRIPE_BODY, STRIPE_TS),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn oversized_header_is_refused() {
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    let padded = format!(
        "{SW_SIGNATURE}{}",
        " ".repeat(MAX_HEADER_BYTES - SW_SIGNATURE.len())
    );
    assert_eq!(padded.len(), MAX_HEADER_BYTES);
    assert!(v.verify(&sw_headers(&padded), SW_BODY, SW_TS).is_ok());
    let over = format!("{padded} ");
    assert_eq!(
        v.verify(&sw_headers(&over), SW_BODY, SW_TS),
        Err(Rejection::InvalidSignature)
    );

    let v = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    let over = format!(
        "t={STRIPE_TS},v1={STRIPE_V1},x={}",
        "a".repeat(MAX_HEADER_BYTES)
    );
    assert_eq!(
        v.verify(&stripe_headers(&over), STRIPE_BODY, STRIPE_TS),
        Err(Rejection::InvalidSignature)
    );
}

// Timestamps, in their own file with the helpers above.
#[path = "timestamps_tests.rs"]
mod timestamps;

// Tampering, malformed requests, the hmac scheme, replay ids and construction: in their
// own file, with the helpers above.
#[path = "requests_tests.rs"]
mod requests;
