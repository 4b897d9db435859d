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

// --- timestamps ---

#[test]
fn tolerance_applies_in_both_directions() {
    let tol = TOLERANCE.as_secs() as i64;
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    let h = sw_headers(SW_SIGNATURE);
    // The message is SW_TS; move `now` around it.
    assert!(v.verify(&h, SW_BODY, SW_TS + tol).is_ok());
    assert!(v.verify(&h, SW_BODY, SW_TS - tol).is_ok());
    assert_eq!(
        v.verify(&h, SW_BODY, SW_TS + tol + 1),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        v.verify(&h, SW_BODY, SW_TS - tol - 1),
        Err(Rejection::StaleTimestamp)
    );

    let v = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    let h = stripe_headers(&format!("t={STRIPE_TS},v1={STRIPE_V1}"));
    assert!(v.verify(&h, STRIPE_BODY, STRIPE_TS + tol).is_ok());
    assert!(v.verify(&h, STRIPE_BODY, STRIPE_TS - tol).is_ok());
    assert_eq!(
        v.verify(&h, STRIPE_BODY, STRIPE_TS + tol + 1),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        v.verify(&h, STRIPE_BODY, STRIPE_TS - tol - 1),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        v.verify(&h, STRIPE_BODY, i64::MIN),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        v.verify(&h, STRIPE_BODY, i64::MAX),
        Err(Rejection::StaleTimestamp)
    );
}

#[test]
fn remember_for_covers_the_whole_window() {
    let tol = TOLERANCE.as_secs() as i64;
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    let h = sw_headers(SW_SIGNATURE);
    let remember = |now: i64| v.verify(&h, SW_BODY, now).unwrap().remember_for;
    // Future-dated by the full tolerance: valid through now + 2*tol.
    assert_eq!(remember(SW_TS - tol), Duration::from_secs(2 * 300 + 1));
    assert_eq!(remember(SW_TS), Duration::from_secs(301));
    // Never less than the tolerance.
    assert_eq!(remember(SW_TS + tol), TOLERANCE);
}

#[test]
fn bad_signature_wins_over_stale_timestamp() {
    // Signature first: a stale request with a bad signature tells the caller nothing more.
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    let bad = format!("v1,{}", BASE64.encode([1u8; 32]));
    assert_eq!(
        v.verify(&sw_headers(&bad), SW_BODY, SW_TS + 10_000),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn non_numeric_timestamps_are_invalid() {
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    for ts in [
        "",
        "abc",
        "-1614265330",
        "+1614265330",
        "1614265330.0",
        " 1614265330",
        "99999999999999999999",
    ] {
        let h = headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", ts),
            ("webhook-signature", SW_SIGNATURE),
        ]);
        assert_eq!(
            v.verify(&h, SW_BODY, SW_TS),
            Err(Rejection::InvalidSignature),
            "{ts:?}"
        );
    }
    let v = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    let h = stripe_headers(&format!("t=soon,v1={STRIPE_V1}"));
    assert_eq!(
        v.verify(&h, STRIPE_BODY, STRIPE_TS),
        Err(Rejection::InvalidSignature)
    );
}

// --- tampering and malformed requests ---

#[test]
fn tampered_body_is_invalid() {
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    assert_eq!(
        v.verify(&sw_headers(SW_SIGNATURE), br#"{"test": 2432232315}"#, SW_TS),
        Err(Rejection::InvalidSignature)
    );
    let v = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    let h = stripe_headers(&format!("t={STRIPE_TS},v1={STRIPE_V1}"));
    assert_eq!(
        v.verify(&h, b"{}", STRIPE_TS),
        Err(Rejection::InvalidSignature)
    );
    // The timestamp is signed: a different t with the same v1 fails.
    let h = stripe_headers(&format!("t={},v1={STRIPE_V1}", STRIPE_TS + 1));
    assert_eq!(
        v.verify(&h, STRIPE_BODY, STRIPE_TS),
        Err(Rejection::InvalidSignature)
    );
    let v = verifier(Scheme::Github, &[GH_SECRET]);
    let h = headers(&[("X-Hub-Signature-256", GH_SIGNATURE)]);
    assert_eq!(
        v.verify(&h, b"Hello, World?", 0),
        Err(Rejection::InvalidSignature)
    );
    // The id is signed in standard.
    let h = headers(&[
        ("webhook-id", "msg_other"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIGNATURE),
    ]);
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    assert_eq!(
        v.verify(&h, SW_BODY, SW_TS),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn missing_and_garbage_headers_are_invalid() {
    let invalid = Err(Rejection::InvalidSignature);
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    assert_eq!(v.verify(&HeaderMap::new(), SW_BODY, SW_TS), invalid);
    let full = [
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIGNATURE),
    ];
    for skip in 0..full.len() {
        let partial: Vec<_> = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(v.verify(&headers(&partial), SW_BODY, SW_TS), invalid);
    }
    for sig in [
        "",
        "v1",
        "v1,",
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
    ] {
        assert_eq!(
            v.verify(&sw_headers(sig), SW_BODY, SW_TS),
            invalid,
            "{sig:?}"
        );
    }
    // A repeated header is ambiguous.
    let mut twice = sw_headers(SW_SIGNATURE);
    twice.append("webhook-id", HeaderValue::from_static("msg_2"));
    assert_eq!(v.verify(&twice, SW_BODY, SW_TS), invalid);

    let v = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    assert_eq!(v.verify(&HeaderMap::new(), STRIPE_BODY, STRIPE_TS), invalid);
    for value in [
        String::new(),
        "garbage".to_string(),
        format!("v1={STRIPE_V1}"),
        format!("t={STRIPE_TS}"),
        format!("t={STRIPE_TS},v1=xyz"),
        format!("t={STRIPE_TS},t={STRIPE_TS},v1={STRIPE_V1}"),
    ] {
        assert_eq!(
            v.verify(&stripe_headers(&value), STRIPE_BODY, STRIPE_TS),
            invalid,
            "{value:?}"
        );
    }

    let v = verifier(Scheme::Github, &[GH_SECRET]);
    assert_eq!(v.verify(&HeaderMap::new(), GH_BODY, 0), invalid);
    let hex_part = GH_SIGNATURE.trim_start_matches("sha256=");
    for value in [
        hex_part,
        "sha1=757107ea",
        "sha256=",
        "sha256=zz",
        "sha256=757107ea",
    ] {
        let h = headers(&[("X-Hub-Signature-256", value)]);
        assert_eq!(v.verify(&h, GH_BODY, 0), invalid, "{value:?}");
    }
    // Non-ASCII header bytes.
    let mut h = HeaderMap::new();
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_bytes(b"sha256=\xff").unwrap(),
    );
    assert_eq!(v.verify(&h, GH_BODY, 0), invalid);
}

#[test]
fn event_ids_are_checked() {
    let gh = verifier(Scheme::Github, &[GH_SECRET]);
    let with_id = |id: &str| {
        headers(&[
            ("X-Hub-Signature-256", GH_SIGNATURE),
            ("X-GitHub-Delivery", id),
        ])
    };
    let max = "a".repeat(MAX_EVENT_ID_BYTES);
    assert_eq!(
        gh.verify(&with_id(&max), GH_BODY, 0).unwrap().replay_id,
        max
    );
    let too_long = "a".repeat(MAX_EVENT_ID_BYTES + 1);
    for id in [too_long.as_str(), "", "with space", "tab\there"] {
        assert_eq!(
            gh.verify(&with_id(id), GH_BODY, 0),
            Err(Rejection::InvalidSignature),
            "{id:?}"
        );
    }
    // Standard: the id must be well formed even though it is signed.
    let sw = verifier(Scheme::Standard, &[SW_SECRET]);
    let pairs = sign(&Scheme::Standard, SW_SECRET, "msg_ok", SW_TS, SW_BODY).unwrap();
    let mut h = headers(
        &pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    assert!(sw.verify(&h, SW_BODY, SW_TS).is_ok());
    h.insert("webhook-id", HeaderValue::from_str(&too_long).unwrap());
    assert_eq!(
        sw.verify(&h, SW_BODY, SW_TS),
        Err(Rejection::InvalidSignature)
    );
    assert!(sign(&Scheme::Standard, SW_SECRET, "has space", SW_TS, SW_BODY).is_err());
    assert!(sign(&Scheme::Standard, SW_SECRET, "", SW_TS, SW_BODY).is_err());
}

// --- the configurable hmac scheme ---

#[test]
fn hmac_sha512_base64_with_prefix() {
    let scheme = hmac_scheme(
        Algorithm::Sha512,
        Encoding::Base64,
        Some("sha512="),
        false,
        false,
    );
    let v = verifier(scheme.clone(), &["Jefe"]);
    let body = b"what do ya want for nothing?";
    // RFC 4231 test case 2, HMAC-SHA-512, written as the sender would.
    let rfc = hex::decode(
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75\
         c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    )
    .unwrap();
    let value = format!("sha512={}", BASE64.encode(&rfc));
    let h = headers(&[("X-Signature", value.as_str())]);
    let verified = v.verify(&h, body, 0).unwrap();
    assert_eq!(verified.replay_id, hex::encode(&rfc));
    assert_eq!(verified.remember_for, REMEMBER_WITHOUT_TIMESTAMP);
    assert_eq!(
        sign(&scheme, "Jefe", "", 0, body).unwrap(),
        vec![("x-signature".to_string(), value.clone())]
    );

    // The configured prefix is required; the encoding is not guessed.
    let bare = BASE64.encode(&rfc);
    let h = headers(&[("X-Signature", bare.as_str())]);
    assert_eq!(v.verify(&h, body, 0), Err(Rejection::InvalidSignature));
    let as_hex = format!("sha512={}", hex::encode(&rfc));
    let h = headers(&[("X-Signature", as_hex.as_str())]);
    assert_eq!(v.verify(&h, body, 0), Err(Rejection::InvalidSignature));
    // A SHA-256 MAC under the same key is not a SHA-512 one.
    let sha256 = format!(
        "sha512={}",
        BASE64.encode(compute(Algorithm::Sha256, b"Jefe", b"", body).unwrap())
    );
    let h = headers(&[("X-Signature", sha256.as_str())]);
    assert_eq!(v.verify(&h, body, 0), Err(Rejection::InvalidSignature));
}

#[test]
fn hmac_sha256_hex_accepts_either_case() {
    let v = verifier(
        hmac_scheme(Algorithm::Sha256, Encoding::Hex, None, false, false),
        &["Jefe"],
    );
    let lower = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    for value in [lower.to_string(), lower.to_uppercase()] {
        let h = headers(&[("x-signature", value.as_str())]);
        assert_eq!(
            v.verify(&h, b"what do ya want for nothing?", 0)
                .unwrap()
                .replay_id,
            lower
        );
    }
}

#[test]
fn hmac_with_timestamp_header() {
    let scheme = hmac_scheme(
        Algorithm::Sha256,
        Encoding::Hex,
        Some("sha256="),
        true,
        true,
    );
    let v = verifier(scheme.clone(), &["partner-secret"]);
    let now = 1_700_000_000;
    let h = signed(&scheme, "partner-secret", "evt_42", now, b"{}");
    // Signed content is "{timestamp}.{body}", checked independently here.
    let expected = compute(
        Algorithm::Sha256,
        b"partner-secret",
        format!("{now}.").as_bytes(),
        b"{}",
    )
    .unwrap();
    assert_eq!(
        h["x-signature"],
        format!("sha256={}", hex::encode(expected)).as_str()
    );
    assert_eq!(h["x-timestamp"], now.to_string().as_str());
    let verified = v.verify(&h, b"{}", now).unwrap();
    assert_eq!(verified.replay_id, "evt_42");
    assert_eq!(verified.remember_for, TOLERANCE + Duration::from_secs(1));
    assert_eq!(
        v.verify(&h, b"{}", now + 301),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        v.verify(&h, b"{}", now - 301),
        Err(Rejection::StaleTimestamp)
    );
    assert!(v.verify(&h, b"{}", now - 300).is_ok());

    // The timestamp is signed; its header is required.
    let mut moved = h.clone();
    moved.insert("x-timestamp", HeaderValue::from(now + 1));
    assert_eq!(
        v.verify(&moved, b"{}", now),
        Err(Rejection::InvalidSignature)
    );
    let mut missing = h.clone();
    missing.remove("x-timestamp");
    assert_eq!(
        v.verify(&missing, b"{}", now),
        Err(Rejection::InvalidSignature)
    );
    // Without the id header, the signature is the replay id.
    let mut no_id = h.clone();
    no_id.remove("x-event-id");
    let verified = v.verify(&no_id, b"{}", now).unwrap();
    assert_eq!(verified.replay_id, verified.signature_id);
}

// --- replay ids per scheme ---

#[test]
fn replay_ids_per_scheme() {
    let sw = verifier(Scheme::Standard, &[SW_SECRET])
        .verify(&sw_headers(SW_SIGNATURE), SW_BODY, SW_TS)
        .unwrap();
    assert_eq!(sw.replay_id, SW_ID);

    let stripe_h = stripe_headers(&format!("t={STRIPE_TS},v1={STRIPE_V1}"));
    let stripe = verifier(Scheme::Stripe, &[STRIPE_SECRET])
        .verify(&stripe_h, STRIPE_BODY, STRIPE_TS)
        .unwrap();
    assert_eq!(stripe.replay_id, STRIPE_V1);
    assert_eq!(stripe.remember_for, TOLERANCE + Duration::from_secs(1));

    let gh_h = headers(&[
        ("X-Hub-Signature-256", GH_SIGNATURE),
        ("X-GitHub-Delivery", GH_DELIVERY),
    ]);
    let gh = verifier(Scheme::Github, &[GH_SECRET])
        .verify(&gh_h, GH_BODY, 0)
        .unwrap();
    assert_eq!(
        (gh.replay_id.as_str(), gh.remember_for),
        (GH_DELIVERY, REMEMBER_WITHOUT_TIMESTAMP)
    );

    let with_id = hmac_scheme(Algorithm::Sha256, Encoding::Base64, None, false, true);
    let h = signed(&with_id, "k", "evt_1", 0, b"b");
    let verified = verifier(with_id, &["k"]).verify(&h, b"b", 0).unwrap();
    assert_eq!(
        (verified.replay_id.as_str(), verified.remember_for),
        ("evt_1", REMEMBER_WITHOUT_TIMESTAMP)
    );

    let without = hmac_scheme(Algorithm::Sha256, Encoding::Base64, None, false, false);
    let h = signed(&without, "k", "evt_1", 0, b"b");
    assert!(h.get("x-event-id").is_none());
    let verified = verifier(without, &["k"]).verify(&h, b"b", 0).unwrap();
    let mac = compute(Algorithm::Sha256, b"k", b"", b"b").unwrap();
    assert_eq!(verified.replay_id, hex::encode(mac));
}

// --- construction, secrets, labels ---

#[test]
fn debug_output_never_contains_a_secret() {
    let v = Verifier::new(
        "stripe",
        Scheme::Stripe,
        vec![
            "whsec_super_secret_value".into(),
            "whsec_previous_value".into(),
        ],
        TOLERANCE,
    )
    .unwrap();
    let debug = format!("{v:?} {v:#?}");
    assert!(
        debug.contains("stripe") && debug.contains("2 redacted"),
        "{debug}"
    );
    for leak in ["super_secret", "previous_value", "whsec_"] {
        assert!(!debug.contains(leak), "{debug}");
    }
    let std = verifier(Scheme::Standard, &[SW_SECRET]);
    let debug = format!("{std:?}");
    assert!(!debug.contains("MfKQ9r8G"), "{debug}");
    // Nor the decoded key bytes.
    let key = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(!debug.contains(&format!("{key:?}")[1..20]), "{debug}");
}

#[test]
fn construction_errors_name_the_secret_by_position_only() {
    let new = |scheme: Scheme, secrets: &[&str]| {
        Verifier::new(
            "x",
            scheme,
            secrets.iter().map(|s| s.to_string()).collect(),
            TOLERANCE,
        )
    };
    assert_eq!(
        new(Scheme::Stripe, &[]).unwrap_err(),
        "no secret is configured"
    );
    assert_eq!(
        new(Scheme::Github, &["ok", ""]).unwrap_err(),
        "secret 2 is empty"
    );
    assert_eq!(
        new(Scheme::Standard, &[SW_SECRET, "whsec_not*base64!"]).unwrap_err(),
        "secret 2 is not valid base64 after whsec_"
    );
    let err = new(Scheme::Standard, &["plain-secret!"]).unwrap_err();
    assert!(
        err.starts_with("secret 1 is not valid base64") && !err.contains("plain"),
        "{err}"
    );
    assert_eq!(
        new(Scheme::Standard, &["whsec_"]).unwrap_err(),
        "secret 1 is empty"
    );
    let zero = Verifier::new("x", Scheme::Stripe, vec!["s".into()], Duration::ZERO);
    assert!(zero.unwrap_err().contains("tolerance"));
    // Without a timestamp the tolerance is unused.
    assert!(Verifier::new("x", Scheme::Github, vec!["s".into()], Duration::ZERO).is_ok());
    assert!(sign(&Scheme::Standard, "whsec_*", "id", 0, b"").is_err());
    assert!(sign(&Scheme::Stripe, "s", "", -1, b"").is_err());
}

#[test]
fn names_and_labels() {
    assert_eq!(scheme_names(), &["standard", "stripe", "github", "hmac"]);
    let hmac = hmac_scheme(Algorithm::Sha256, Encoding::Hex, None, false, false);
    for (scheme, name) in [
        (Scheme::Standard, "standard"),
        (Scheme::Stripe, "stripe"),
        (Scheme::Github, "github"),
        (hmac, "hmac"),
    ] {
        assert_eq!(scheme.name(), name);
        assert!(scheme_names().contains(&scheme.name()));
    }
    assert_eq!(Rejection::InvalidSignature.reason(), "invalid_signature");
    assert_eq!(Rejection::StaleTimestamp.reason(), "stale_timestamp");
    assert_eq!(
        Rejection::StaleTimestamp.to_string(),
        "timestamp outside the tolerance"
    );
    assert_eq!(Algorithm::from_name("sha512"), Some(Algorithm::Sha512));
    assert_eq!(Algorithm::from_name("sha1"), None);
    assert_eq!(
        Encoding::from_name("base64").map(Encoding::name),
        Some("base64")
    );
    assert_eq!(verifier(Scheme::Github, &["s"]).name(), "test");
}
