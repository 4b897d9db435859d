use super::*;
use crate::config::values::Size;

fn route(algs: &[&str]) -> Compression {
    Compression::compile(&CompressionDef {
        algorithms: algs.iter().map(|s| s.to_string()).collect(),
        min_size: Size(100),
    })
    .unwrap()
}

fn ae(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap()
}

#[test]
fn negotiation_honours_q_values_and_the_routes_order() {
    let c = route(&["zstd", "br", "gzip"]);
    assert_eq!(
        c.negotiate(Some(&ae("gzip, br, zstd"))),
        Some(Algorithm::Zstd)
    );
    assert_eq!(c.negotiate(Some(&ae("gzip, br"))), Some(Algorithm::Brotli));
    assert_eq!(
        c.negotiate(Some(&ae("gzip;q=1, br;q=0.5"))),
        Some(Algorithm::Gzip)
    );
    assert_eq!(
        c.negotiate(Some(&ae("zstd;q=0, gzip;q=0.1"))),
        Some(Algorithm::Gzip)
    );
    assert_eq!(c.negotiate(Some(&ae("*"))), Some(Algorithm::Zstd));
    assert_eq!(
        c.negotiate(Some(&ae("*;q=0.5, zstd;q=0"))),
        Some(Algorithm::Brotli)
    );
    assert_eq!(c.negotiate(Some(&ae("identity"))), None);
    assert_eq!(c.negotiate(Some(&ae("deflate, compress"))), None);
    assert_eq!(c.negotiate(Some(&ae("x-gzip"))), Some(Algorithm::Gzip));
    assert_eq!(c.negotiate(None), None);
    assert_eq!(c.negotiate(Some(&ae(";;;,,,q=,;q=abc"))), None);
    let gzip_first = route(&["gzip", "zstd"]);
    assert_eq!(
        gzip_first.negotiate(Some(&ae("zstd, gzip"))),
        Some(Algorithm::Gzip)
    );
    assert!(Compression::compile(&CompressionDef {
        algorithms: vec!["lz4".into()],
        min_size: Size(0)
    })
    .is_err());
    assert!(Compression::compile(&CompressionDef {
        algorithms: vec![],
        min_size: Size(0)
    })
    .is_err());
}

fn answer(ct: &str, len: Option<usize>) -> ResponseHeader {
    let mut r = ResponseHeader::build(200, None).unwrap();
    r.insert_header("content-type", ct).unwrap();
    if let Some(n) = len {
        r.insert_header("content-length", n).unwrap();
    }
    r.insert_header("etag", "\"v1\"").unwrap();
    r
}

#[test]
fn only_compressible_large_enough_unencoded_answers() {
    let c = route(&["gzip"]);
    let gzip = ae("gzip");
    let mut r = answer("application/json; charset=utf-8", Some(5000));
    let mut enc = c.start(&mut r, Some(&gzip), false).unwrap();
    assert_eq!(r.headers["content-encoding"], "gzip");
    assert!(r.headers.get("content-length").is_none());
    assert_eq!(r.headers["vary"], "Accept-Encoding");
    assert_eq!(r.headers["etag"], "W/\"v1\"");
    // The encoder's output decodes to the input.
    let body = vec![b'{'; 5000];
    let mut out = enc.encode(&body, false).unwrap().to_vec();
    out.extend_from_slice(&enc.encode(&[], true).unwrap());
    let mut dec = flate2::read::GzDecoder::new(out.as_slice());
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut dec, &mut back).unwrap();
    assert_eq!(back, body);

    for (ct, len) in [("image/png", Some(5000)), ("application/json", Some(99))] {
        let mut r = answer(ct, len);
        assert!(
            c.start(&mut r, Some(&gzip), false).is_none(),
            "{ct} {len:?}"
        );
        assert!(r.headers.get("content-encoding").is_none());
    }
    for ct in [
        "text/html",
        "application/problem+json",
        "image/svg+xml",
        "application/xml",
    ] {
        assert!(
            c.start(&mut answer(ct, None), Some(&gzip), false).is_some(),
            "{ct}"
        );
    }
    // Already encoded by the upstream: left as it is (Vary still says it depends).
    let mut r = answer("text/plain", Some(5000));
    r.insert_header("content-encoding", "br").unwrap();
    assert!(c.start(&mut r, Some(&gzip), false).is_none());
    assert_eq!(r.headers["content-encoding"], "br");
    // Not accepted, HEAD, 204: nothing.
    let mut r = answer("text/plain", Some(5000));
    assert!(c.start(&mut r, Some(&ae("br")), false).is_none());
    assert_eq!(r.headers["vary"], "Accept-Encoding");
    assert!(c
        .start(&mut answer("text/plain", Some(5000)), Some(&gzip), true)
        .is_none());
    let mut r = answer("text/plain", None);
    r.set_status(204).unwrap();
    assert!(c.start(&mut r, Some(&gzip), false).is_none());
}
