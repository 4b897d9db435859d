use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn ip_rules_deny_first_then_allow_lists() {
    let rules = IpRules {
        allow: vec![net("10.0.0.0/8"), net("192.0.2.7/32")],
        deny: vec![net("10.9.0.0/16")],
    };
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert!(rules.admits(ip("10.1.2.3")));
    assert!(rules.admits(ip("192.0.2.7")));
    assert!(!rules.admits(ip("192.0.2.8")));
    assert!(!rules.admits(ip("10.9.1.1")));
    assert!(!rules.admits(None));
    let deny_only = IpRules {
        allow: Vec::new(),
        deny: vec![net("127.0.0.1/32")],
    };
    assert!(!deny_only.admits(ip("127.0.0.1")));
    assert!(deny_only.admits(ip("127.0.0.2")));
    assert!(deny_only.admits(None));
}

#[test]
fn sticky_points_are_stable_and_spread() {
    assert_eq!(Split::point_of("c:alice"), Split::point_of("c:alice"));
    let mut seen = [0u32; 10];
    for i in 0..10_000 {
        let p = Split::point_of(&format!("ip:10.0.{}.{}", i / 256, i % 256));
        assert!(p < 100);
        seen[(p / 10) as usize] += 1;
    }
    // Every tenth of the range gets a fair share of 10,000 keys.
    assert!(seen.iter().all(|n| (700..1300).contains(n)), "{seen:?}");
    for _ in 0..1000 {
        assert!(Split::random_point() < 100);
    }
}

#[test]
fn header_edits_write_names_as_insert_header_would() {
    // Names parsed at load time must reach the wire in the same case as before they were:
    // title case for the standard names Pingora knows, lower case otherwise.
    let ops = HeaderOps {
        set: vec![
            (
                HeaderName::from_static("x-edited").into(),
                HeaderValue::from_static("1"),
            ),
            (
                http::header::CACHE_CONTROL.into(),
                HeaderValue::from_static("no-store"),
            ),
        ],
        remove: vec![HeaderName::from_static("x-gone")],
    };
    let mut resp = pingora_http::ResponseHeader::build(200, None).unwrap();
    resp.insert_header("X-Gone", "old").unwrap();
    resp.insert_header("Cache-Control", "max-age=60").unwrap();
    ops.apply(&mut resp);
    let mut wire = Vec::new();
    resp.header_to_h1_wire(&mut wire);
    let wire = String::from_utf8(wire).unwrap();
    assert_eq!(wire, "Cache-Control: no-store\r\nx-edited: 1\r\n", "{wire}");
}
