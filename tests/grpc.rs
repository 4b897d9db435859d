//! gRPC through the real `gateway` binary, with a real tonic server and client (messages
//! derived by hand with prost, no protoc): an h2c listener, an `h2c` upstream, unary,
//! server-streaming and bidirectional calls with their trailers, and each gateway refusal as a gRPC status
//! the client reads (UNIMPLEMENTED, UNAUTHENTICATED, PERMISSION_DENIED,
//! RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED).

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ConfigDir, Gateway};
use futures::StreamExt;
use http::uri::PathAndQuery;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

const KEY: &str = "test-only-grpc-key";

/// `test.Echo`: `Say` (echoes; sleeps `count` ms first), `Count` (streams `count` pings),
/// `Chat` (bidirectional: echoes each message of the client's stream as it arrives).
#[derive(Clone)]
struct Echo;

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Ping, Ping>::default());
            Ok(match path.as_str() {
                "/test.Echo/Say" => {
                    let say = tower::service_fn(|r: tonic::Request<Ping>| async move {
                        let p = r.into_inner();
                        tokio::time::sleep(Duration::from_millis(u64::from(p.count))).await;
                        let mut answer = tonic::Response::new(Ping {
                            text: format!("echo:{}", p.text),
                            count: p.count,
                        });
                        answer
                            .metadata_mut()
                            .insert("x-served-by", "echo".parse().unwrap());
                        Ok::<_, Status>(answer)
                    });
                    grpc.unary(say, req).await
                }
                "/test.Echo/Count" => {
                    let count = tower::service_fn(|r: tonic::Request<Ping>| async move {
                        let n = r.into_inner().count;
                        let pings = futures::stream::iter((0..n).map(|i| {
                            Ok::<_, Status>(Ping {
                                text: format!("tick {i}"),
                                count: i,
                            })
                        }));
                        Ok::<_, Status>(tonic::Response::new(pings))
                    });
                    grpc.server_streaming(count, req).await
                }
                "/test.Echo/Chat" => {
                    // Bidirectional: one answer per message, as each arrives.
                    let chat =
                        tower::service_fn(|r: tonic::Request<tonic::Streaming<Ping>>| async move {
                            let answers = r.into_inner().map(|m| {
                                m.map(|p| Ping {
                                    text: format!("echo:{}", p.text),
                                    count: p.count,
                                })
                            });
                            Ok::<_, Status>(tonic::Response::new(answers))
                        });
                    grpc.streaming(chat, req).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

async fn grpc_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream_from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(Echo)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    })
}

/// An HTTP/2 upstream that ignores `grpc-timeout` (tonic's server honours it, which would
/// hide whether the gateway does): answers after 2 s.
async fn deaf_upstream() -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/deaf.Echo/Say",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (
                [("content-type", "application/grpc"), ("grpc-status", "0")],
                Vec::<u8>::new(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn policy(up: SocketAddr, deaf: SocketAddr) -> String {
    let hash = format!("sha256:{}", hex::encode(Sha256::digest(KEY.as_bytes())));
    format!(
        r#"upstreams:
  echo: {{ targets: ["{up}"], scheme: h2c, timeouts: {{ connect: 1s, read: 5s }} }}
  dead: {{ targets: ["127.0.0.1:9"], scheme: h2c }}
  deaf: {{ targets: ["{deaf}"], scheme: h2c, timeouts: {{ read: 5s }} }}
api_keys: {{ header: X-API-Key }}
consumers:
  acme: {{ api_keys: ["{hash}"], scopes: [echo:read] }}
routes:
  - name: echo
    match: {{ path: /test.Echo/* }}
    auth: none
    upstream: echo
    grpc_web: true
  - name: keyed
    match: {{ path: /keyed.Echo/* }}
    auth: [api_key]
    scopes: [echo:read]
    upstream: echo
    rewrite: {{ path: "/test.Echo/Say" }}
    rate_limit: {{ key: consumer, limits: [ {{ requests: 1, per: 1m }} ] }}
  - name: admin-only
    match: {{ path: /admin.Echo/* }}
    auth: [api_key]
    scopes: [echo:admin]
    upstream: echo
  - name: dead
    match: {{ path: /dead.Echo/* }}
    auth: none
    upstream: dead
  - name: deaf
    match: {{ path: /deaf.Echo/* }}
    auth: none
    upstream: deaf
"#
    )
}

async fn start() -> Gateway {
    let up = grpc_upstream().await;
    let deaf = deaf_upstream().await;
    let config = ConfigDir::new("", &[("p.yaml", &policy(up, deaf))]);
    // The harness writes one listener; make it take h2c beside HTTP/1.1.
    let yaml = std::fs::read_to_string(config.gateway_yaml()).unwrap();
    let yaml = yaml.replacen("    bind: ", "    h2c: true\n    bind: ", 1);
    std::fs::write(config.gateway_yaml(), yaml).unwrap();
    Gateway::start_in(config, &[]).await
}

async fn client(gw: &Gateway) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(gw.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn say(
    gw: &Gateway,
    path: &'static str,
    text: &str,
    delay_ms: u32,
    headers: &[(&'static str, &str)],
) -> Result<tonic::Response<Ping>, Status> {
    let mut grpc = client(gw).await;
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(Ping {
        text: text.into(),
        count: delay_ms,
    });
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    grpc.unary(
        req,
        PathAndQuery::from_static(path),
        ProstCodec::<Ping, Ping>::default(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_pass_with_their_trailers() {
    let gw = start().await;
    let r = say(&gw, "/test.Echo/Say", "hi", 0, &[]).await;
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{}", gw.output()));
    assert_eq!(r.get_ref().text, "echo:hi");
    assert_eq!(r.metadata().get("x-served-by").unwrap(), "echo");

    // Server streaming: every message, then the trailers' OK status.
    let mut grpc = client(&gw).await;
    grpc.ready().await.unwrap();
    let resp = grpc
        .server_streaming(
            tonic::Request::new(Ping {
                text: String::new(),
                count: 5,
            }),
            PathAndQuery::from_static("/test.Echo/Count"),
            ProstCodec::<Ping, Ping>::default(),
        )
        .await
        .unwrap();
    let mut stream = resp.into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.next().await {
        got.push(m.unwrap().text);
    }
    assert_eq!(got, ["tick 0", "tick 1", "tick 2", "tick 3", "tick 4"]);
    // The trailers arrived (grpc-status 0), or the stream would have ended in an error.
    assert!(stream.trailers().await.unwrap().is_some());

    // Bidirectional streaming: each answer comes back before the next message is sent,
    // so neither direction is buffered to its end by the gateway.
    let mut grpc = client(&gw).await;
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Ping>(1);
    let outgoing =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    let resp = grpc.streaming(
        tonic::Request::new(outgoing),
        PathAndQuery::from_static("/test.Echo/Chat"),
        ProstCodec::<Ping, Ping>::default(),
    );
    tx.send(Ping {
        text: "one".into(),
        count: 1,
    })
    .await
    .unwrap();
    let mut answers = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("the call opens while the client's stream is still open")
        .unwrap()
        .into_inner();
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        if i > 0 {
            tx.send(Ping {
                text: (*text).into(),
                count: i as u32 + 1,
            })
            .await
            .unwrap();
        }
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.next())
            .await
            .expect("the answer to this message before the next is sent")
            .unwrap()
            .unwrap();
        assert_eq!(answer.text, format!("echo:{text}"));
    }
    drop(tx);
    assert!(answers.next().await.is_none());
    assert!(answers.trailers().await.unwrap().is_some());

    // HTTP/1.1 clients still work on the h2c listener (and get JSON errors).
    let r = common::client()
        .get(gw.url("/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), http::Version::HTTP_11);
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "no_route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refusals_reach_the_client_as_grpc_statuses() {
    let gw = start().await;
    let code = |r: Result<tonic::Response<Ping>, Status>| r.expect_err("a refusal").code();
    // 404: no route.
    assert_eq!(
        code(say(&gw, "/nope.Echo/Say", "x", 0, &[]).await),
        Code::Unimplemented
    );
    // 401: no key.
    assert_eq!(
        code(say(&gw, "/keyed.Echo/Say", "x", 0, &[]).await),
        Code::Unauthenticated
    );
    // 403: the consumer lacks the route's scope.
    assert_eq!(
        code(say(&gw, "/admin.Echo/Say", "x", 0, &[("x-api-key", KEY)]).await),
        Code::PermissionDenied
    );
    // 429: one call a minute.
    let ok = say(&gw, "/keyed.Echo/Say", "x", 0, &[("x-api-key", KEY)]).await;
    assert_eq!(ok.unwrap().get_ref().text, "echo:x");
    assert_eq!(
        code(say(&gw, "/keyed.Echo/Say", "x", 0, &[("x-api-key", KEY)]).await),
        Code::ResourceExhausted
    );
    // 502/503: nothing listens upstream.
    assert_eq!(
        code(say(&gw, "/dead.Echo/Say", "x", 0, &[]).await),
        Code::Unavailable
    );
    // The message says why, readable.
    let e = say(&gw, "/nope.Echo/Say", "x", 0, &[]).await.unwrap_err();
    assert!(!e.message().is_empty(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_bounds_the_upstream_call() {
    let gw = start().await;
    // A raw HTTP/2 gRPC call (tonic's client would enforce `grpc-timeout` itself) to an
    // upstream that ignores the deadline and takes 2 s; the caller allows 300 ms: the
    // gateway answers DEADLINE_EXCEEDED.
    let frame = |delay: u32| {
        let msg = prost::Message::encode_to_vec(&Ping {
            text: "slow".into(),
            count: delay,
        });
        let mut body = vec![0u8];
        body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        body.extend_from_slice(&msg);
        body
    };
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let r = h2
        .post(gw.url("/deaf.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(frame(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["grpc-status"], "4", "{:?}", r.headers());
    assert!(started.elapsed() < Duration::from_millis(1500));
    // Without a deadline the same call completes (the upstream's read timeout is 5 s).
    let r = say(&gw, "/test.Echo/Say", "slow", 500, &[]).await.unwrap();
    assert_eq!(r.get_ref().text, "echo:slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_from_http1_are_bridged() {
    let gw = start().await;
    let msg = prost::Message::encode_to_vec(&Ping {
        text: "web".into(),
        count: 0,
    });
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let r = common::client()
        .post(gw.url("/test.Echo/Say"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), http::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/grpc-web"), "{ct}");
    let bytes = r.bytes().await.unwrap();
    // A data frame with the answer, then a trailer frame (flag 0x80) with grpc-status 0.
    assert_eq!(bytes[0], 0);
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let answer: Ping = prost::Message::decode(&bytes[5..5 + len]).unwrap();
    assert_eq!(answer.text, "echo:web");
    let rest = &bytes[5 + len..];
    assert_eq!(rest[0], 0x80, "a trailer frame follows");
    let trailers = String::from_utf8_lossy(&rest[5..]).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // A gRPC-Web call to a route without grpc_web is not bridged: the upstream, which
    // speaks gRPC only, does not answer it as gRPC-Web.
    let r = common::client()
        .post(gw.url("/dead.Echo/Say"))
        .header("content-type", "application/grpc-web+proto")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(!ct.starts_with("application/grpc-web"), "{ct}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reaches_an_https_upstream_over_http2() {
    // Gateway A terminates TLS (h2 by ALPN) in front of the tonic server; gateway B sends
    // gRPC to A as an `https` upstream: HTTP/2 is asked for by ALPN, so the trailers arrive.
    let up = grpc_upstream().await;
    let deaf = deaf_upstream().await;
    let a_config = ConfigDir::new("", &[("p.yaml", &policy(up, deaf))]);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(a_config.path().join("c.pem"), cert.cert.pem()).unwrap();
    std::fs::write(
        a_config.path().join("k.pem"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let tls_port = common::free_port();
    let yaml = std::fs::read_to_string(a_config.gateway_yaml()).unwrap();
    let yaml = yaml.replacen(
        "listeners:\n",
        &format!(
            "listeners:\n  - name: tls\n    bind: 127.0.0.1:{tls_port}\n    tls: {{ certs: [ {{ cert: c.pem, key: k.pem }} ] }}\n"
        ),
        1,
    );
    std::fs::write(a_config.gateway_yaml(), yaml).unwrap();
    let _a = Gateway::start_in(a_config, &[]).await;

    let b_policy = format!(
        "upstreams:\n  a: {{ targets: [\"127.0.0.1:{tls_port}\"], scheme: https, tls: {{ sni: localhost, verify: false }} }}\nroutes:\n  - name: via-a\n    match: {{ path: /test.Echo/* }}\n    auth: none\n    upstream: a\n"
    );
    let b_config = ConfigDir::new("", &[("p.yaml", &b_policy)]);
    let yaml = std::fs::read_to_string(b_config.gateway_yaml()).unwrap();
    let yaml = yaml.replacen("    bind: ", "    h2c: true\n    bind: ", 1);
    std::fs::write(b_config.gateway_yaml(), yaml).unwrap();
    let b = Gateway::start_in(b_config, &[]).await;

    let r = say(&b, "/test.Echo/Say", "via tls", 0, &[]).await;
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{}", b.output()));
    assert_eq!(r.get_ref().text, "echo:via tls");
}
