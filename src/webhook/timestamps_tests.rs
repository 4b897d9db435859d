//! Webhook timestamps: the tolerance both ways, the replay window, and which error wins.

use super::*;

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
