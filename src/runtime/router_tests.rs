use super::*;

type RouteSpec<'a> = (&'a str, Option<&'a str>, Option<&'a [Method]>);

fn router(routes: &[RouteSpec<'_>]) -> Router {
    let mut r = Router::default();
    for (i, (path, host, methods)) in routes.iter().enumerate() {
        r.add(
            i,
            &HostPattern::parse(*host).unwrap(),
            &PathPattern::parse(path).unwrap(),
            methods.map(|m| m.to_vec()),
        );
    }
    r
}

fn find(r: &Router, host: &str, path: &str, m: Method) -> Match {
    let segs = decode_segments(path).unwrap();
    let segs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
    r.find(host, &segs, &m)
}

fn found(route: usize, params: &[&str]) -> Match {
    Match::Found {
        route,
        params: params.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn literal_beats_param_beats_rest() {
    let r = router(&[
        ("/v1/*", None, None),
        ("/v1/users/{id}", None, None),
        ("/v1/users/me", None, None),
    ]);
    assert_eq!(find(&r, "h", "/v1/users/me", Method::GET), found(2, &[]));
    assert_eq!(find(&r, "h", "/v1/users/7", Method::GET), found(1, &["7"]));
    assert_eq!(find(&r, "h", "/v1/users/7/x", Method::GET), found(0, &[]));
    assert_eq!(find(&r, "h", "/v1", Method::GET), found(0, &[]));
    assert_eq!(find(&r, "h", "/v2", Method::GET), Match::NotFound);
}

#[test]
fn backtracks_from_a_dead_literal_branch() {
    let r = router(&[("/a/{x}/c", None, None), ("/a/b/d", None, None)]);
    assert_eq!(find(&r, "h", "/a/b/c", Method::GET), found(0, &["b"]));
}

#[test]
fn methods_and_allow() {
    let get: &[Method] = &[Method::GET];
    let del: &[Method] = &[Method::DELETE];
    let r = router(&[("/u/me", None, Some(get)), ("/u/{id}", None, Some(del))]);
    assert_eq!(find(&r, "h", "/u/me", Method::DELETE), found(1, &["me"]));
    assert_eq!(find(&r, "h", "/u/me", Method::HEAD), found(0, &[]));
    assert_eq!(
        find(&r, "h", "/u/me", Method::POST),
        Match::MethodNotAllowed(vec![Method::DELETE, Method::GET, Method::HEAD])
    );
}

#[test]
fn hosts_exact_then_wildcard_then_any() {
    let r = router(&[
        ("/x", None, None),
        ("/x", Some("*.example.com"), None),
        ("/x", Some("api.example.com"), None),
        ("/x", Some("*.eu.example.com"), None),
    ]);
    assert_eq!(
        find(&r, "api.example.com", "/x", Method::GET),
        found(2, &[])
    );
    assert_eq!(
        find(&r, "web.example.com", "/x", Method::GET),
        found(1, &[])
    );
    assert_eq!(
        find(&r, "a.eu.example.com", "/x", Method::GET),
        found(3, &[])
    );
    assert_eq!(find(&r, "example.com", "/x", Method::GET), found(0, &[]));
    assert_eq!(find(&r, "other.org", "/x", Method::GET), found(0, &[]));
}

#[test]
fn params_are_decoded() {
    let r = router(&[("/f/{name}", None, None)]);
    assert_eq!(
        find(&r, "h", "/f/a%20b%2Fc", Method::GET),
        found(0, &["a b/c"])
    );
}

#[test]
fn bad_paths() {
    assert_eq!(
        decode_segments("/a%zz").unwrap_err(),
        PathError::BadEncoding
    );
    assert_eq!(decode_segments("/a%4").unwrap_err(), PathError::BadEncoding);
    assert_eq!(
        decode_segments("/a%ff").unwrap_err(),
        PathError::BadEncoding
    );
    assert_eq!(
        decode_segments("/a/../b").unwrap_err(),
        PathError::DotSegment
    );
    assert_eq!(
        decode_segments("/a/%2e%2E/b").unwrap_err(),
        PathError::DotSegment
    );
    assert_eq!(decode_segments("*").unwrap_err(), PathError::NotOrigin);
    assert_eq!(decode_segments("/a/.").unwrap_err(), PathError::DotSegment);
    assert_eq!(
        decode_segments("/a/%2e").unwrap_err(),
        PathError::DotSegment
    );
    // Unescaped segments are borrowed as they are; escaped ones decoded.
    let segs = decode_segments("/a.b/..c/%41").unwrap();
    assert!(matches!(segs[0], std::borrow::Cow::Borrowed("a.b")));
    assert_eq!(segs, ["a.b", "..c", "A"]);
}

#[test]
fn bad_patterns() {
    for bad in [
        "x",
        "/a/*/b",
        "/a/{b",
        "/a/{}",
        "/a/{b}/{b}",
        "/a/x{b}",
        "/a/..",
        "/a/{b-c}",
    ] {
        assert!(PathPattern::parse(bad).is_err(), "{bad}");
    }
    for bad in ["", "*.", "a..b", "exa mple.com"] {
        assert!(HostPattern::parse(Some(bad)).is_err(), "{bad}");
    }
}
