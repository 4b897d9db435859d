//! Response compression through the real `gateway` binary: zstd, br and gzip negotiated
//! from `Accept-Encoding` (q-values, the route's order breaking ties), only compressible
//! types of at least `min_size`, never over the upstream's own encoding; every compressed
//! answer decodes to exactly the upstream's bytes, on keep-alive connections.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ConfigDir, Gateway};
use std::io::Read;
use std::net::SocketAddr;

/// 200 KiB of JSON, varied enough to stream in several pieces.
fn catalog() -> Vec<u8> {
    let mut out = String::from("[");
    let mut i = 0u64;
    while out.len() < 200 * 1024 {
        let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        out.push_str(&format!(
            r#"{{"id":"sku-{i}","name":"Product {h:x}","stock":{}}},"#,
            h % 57
        ));
        i += 1;
    }
    out.push_str("{}]");
    out.into_bytes()
}

async fn upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::http::header;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/catalog",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], catalog()) }),
        )
        .route(
            "/small",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{\"a\":1}") }),
        )
        .route(
            "/png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![7u8; 50_000]) }),
        )
        .route(
            "/encoded",
            get(|| async {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut e, &catalog()).unwrap();
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    e.finish().unwrap(),
                )
            }),
        )
        .route(
            "/etag",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/plain"),
                        (header::ETAG, "\"v7\""),
                    ],
                    "x".repeat(4096),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

async fn start() -> (Gateway, tokio::task::JoinHandle<()>) {
    let (up, task) = upstream().await;
    let policy = format!(
        "upstreams:\n  up:\n    targets: [\"{up}\"]\nroutes:\n  - name: catalog\n    match: {{ path: /* }}\n    auth: none\n    upstream: up\n    response:\n      compression: {{ algorithms: [zstd, br, gzip], min_size: 1KiB }}\n  - name: plain\n    match: {{ path: /plain/* }}\n    auth: none\n    upstream: up\n    rewrite: {{ strip_prefix: /plain }}\n"
    );
    let gw = Gateway::start("", &[("p.yaml", &policy)]).await;
    (gw, task)
}

/// A client that never decodes by itself (reqwest is built without those features).
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

fn decode(encoding: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        None => out.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("zstd") => out = zstd::stream::decode_all(body).unwrap(),
        Some(other) => panic!("unexpected encoding {other}"),
    }
    out
}

async fn fetch(
    gw: &Gateway,
    path: &str,
    accept: Option<&str>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut r = raw_client().get(gw.url(path));
    if let Some(a) = accept {
        r = r.header("Accept-Encoding", a);
    }
    let r = r.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.bytes().await.unwrap().to_vec())
}

fn encoding(h: &reqwest::header::HeaderMap) -> Option<&str> {
    h.get("content-encoding").map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiated_encodings_decode_to_the_upstreams_bytes() {
    let (gw, _up) = start().await;
    let want = catalog();
    for (accept, expected) in [
        (Some("gzip, deflate, br, zstd"), Some("zstd")),
        (Some("gzip, br"), Some("br")),
        (Some("gzip"), Some("gzip")),
        (Some("br;q=0.5, gzip;q=0.9"), Some("gzip")),
        (Some("zstd;q=0, *;q=0.3"), Some("br")),
        (Some("identity"), None),
        (Some("deflate"), None),
        (None, None),
    ] {
        let (status, h, body) = fetch(&gw, "/catalog", accept).await;
        assert_eq!(status, 200, "{accept:?}");
        assert_eq!(encoding(&h), expected, "{accept:?}");
        assert_eq!(h["vary"], "Accept-Encoding", "{accept:?}");
        if expected.is_some() {
            assert!(h.get("content-length").is_none(), "{accept:?}");
            assert!(
                body.len() < want.len() / 3,
                "{accept:?}: {} bytes",
                body.len()
            );
        }
        assert_eq!(
            decode(expected, &body),
            want,
            "{accept:?}: decodes to the upstream's bytes"
        );
    }
    // The same client connection carries on after compressed answers.
    let c = raw_client();
    for _ in 0..3 {
        let r = c
            .get(gw.url("/catalog"))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        let e = encoding(r.headers()).map(str::to_string);
        assert_eq!(decode(e.as_deref(), &r.bytes().await.unwrap()), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_uncompressible_and_encoded_answers_pass_as_they_are() {
    let (gw, _up) = start().await;
    let all = Some("zstd, br, gzip");
    let (_, h, body) = fetch(&gw, "/small", all).await;
    assert_eq!(encoding(&h), None, "under min_size");
    assert_eq!(body, b"{\"a\":1}");
    let (_, h, body) = fetch(&gw, "/png", all).await;
    assert_eq!(encoding(&h), None, "not a compressible type");
    assert!(h.get("vary").is_none());
    assert_eq!(body, vec![7u8; 50_000]);
    // Already gzip from the upstream: never encoded again, even for a client preferring zstd.
    let (_, h, body) = fetch(&gw, "/encoded", Some("zstd, gzip")).await;
    assert_eq!(encoding(&h), Some("gzip"));
    assert_eq!(decode(Some("gzip"), &body), catalog());
    // A strong ETag becomes weak on the encoded variant.
    let (_, h, _) = fetch(&gw, "/etag", Some("gzip")).await;
    assert_eq!(h["etag"], "W/\"v7\"");
    let (_, h, _) = fetch(&gw, "/etag", None).await;
    assert_eq!(h["etag"], "\"v7\"");
    // HEAD: no body, no encoding.
    let r = raw_client()
        .head(gw.url("/catalog"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
    // A route without compression never encodes.
    let (_, h, body) = fetch(&gw, "/plain/catalog", all).await;
    assert_eq!(encoding(&h), None);
    assert!(h.get("vary").is_none());
    assert_eq!(body, catalog());
}

#[test]
fn check_refuses_an_unknown_algorithm_with_file_and_line() {
    let text = "upstreams:\n  up:\n    targets: [\"127.0.0.1:9\"]\nroutes:\n  - name: r\n    match: { path: /r }\n    auth: none\n    upstream: up\n    response:\n      compression: { algorithms: [lz4] }\n";
    let c = ConfigDir::new("", &[("p.yaml", text)]);
    let (ok, out) = c.check();
    assert!(!ok);
    let line = common::line_of(text, "compression:");
    let prefix = format!(
        "{}:{line}:",
        c.path().join("policies").join("p.yaml").display()
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&prefix) && l.contains("unknown algorithm \"lz4\"")),
        "{out}"
    );
}
