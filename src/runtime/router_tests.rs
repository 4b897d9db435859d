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
    let req = RequestHeader::build(m.as_str(), path.as_bytes(), None).unwrap();
    r.find(host, &segs, &m, &req)
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

#[test]
fn constrained_routes_win_over_fewer_constraints_and_need_their_values() {
    use crate::runtime::conditions::Conditions;
    let mut r = Router::default();
    let any = HostPattern::parse(None).unwrap();
    let path = PathPattern::parse("/v2/customers/{id}").unwrap();
    let cond = |h: &[(&str, &str)], q: &[(&str, &str)]| {
        let h: Vec<(String, String)> = h
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let q: Vec<(String, String)> = q
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Conditions::compile(h.iter().map(|(a, b)| (a, b)), q.iter().map(|(a, b)| (a, b)))
            .unwrap()
            .map(std::sync::Arc::new)
    };
    r.add(0, &any, &path, None);
    r.add_constrained(1, &any, &path, None, cond(&[("x-api-version", "2")], &[]));
    r.add_constrained(
        2,
        &any,
        &path,
        None,
        cond(&[("x-api-version", "2")], &[("v", "3")]),
    );
    let find = |uri: &str, headers: &[(&str, &str)]| {
        let mut req = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        for (k, v) in headers {
            req.insert_header(k.to_string(), *v).unwrap();
        }
        let segs = decode_segments(req.uri.path()).unwrap();
        let segs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
        match r.find("h", &segs, &Method::GET, &req) {
            Match::Found { route, .. } => Some(route),
            _ => None,
        }
    };
    assert_eq!(find("/v2/customers/7", &[]), Some(0));
    assert_eq!(find("/v2/customers/7", &[("X-Api-Version", "2")]), Some(1));
    assert_eq!(find("/v2/customers/7", &[("X-Api-Version", "3")]), Some(0));
    assert_eq!(
        find("/v2/customers/7?v=3", &[("X-Api-Version", "2")]),
        Some(2)
    );
    assert_eq!(find("/v2/customers/7?v=3", &[]), Some(0));
    assert!(Conditions::compatible(
        cond(&[("x-a", "1")], &[]).as_deref(),
        cond(&[("x-b", "1")], &[]).as_deref()
    ));
    assert!(!Conditions::compatible(
        cond(&[], &[("v", "1")]).as_deref(),
        cond(&[], &[("v", "2")]).as_deref()
    ));
}
