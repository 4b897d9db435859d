//! Verifier tests, continued: tampered and malformed requests, the configurable hmac
//! scheme, replay ids per scheme, construction and labels.

use super::*;

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
