//! WebSockets and server-sent events through the real `gateway` binary, with a real
//! WebSocket client (tokio-tungstenite) and real upstreams (axum's WebSocket echo and an
//! event stream with timed events): frames both ways past the upstream's read timeout,
//! the route's idle timeout, the handshake refused by authentication and rate limits, a
//! reload in the middle of a stream, the open-streams gauge, and events forwarded one by
//! one, uncompressed and not cut by the read timeout.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{metric, ConfigDir, Gateway};
use futures::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "test-only-streams-key";

/// A WebSocket echo at `/ws` and an event stream at `/events` (five events, `gap_ms`
/// apart), one upstream.
async fn upstream(gap_ms: u64) -> SocketAddr {
    use axum::extract::ws::{Message as M, WebSocket, WebSocketUpgrade};
    use axum::response::sse::{Event, Sse};
    use axum::routing::get;
    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                M::Text(t) => M::Text(format!("echo:{t}").into()),
                M::Close(_) => break,
                other => other,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    }
    let events = move || async move {
        let stream = futures::stream::unfold(0u32, move |i| async move {
            if i == 5 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(gap_ms)).await;
            }
            let e = Event::default().data(format!("tick {i}"));
            Some((Ok::<_, std::convert::Infallible>(e), i + 1))
        });
        Sse::new(stream)
    };
    let app = axum::Router::new()
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .route("/events", get(events));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Routes: `/ws` (default idle timeout), `/short/ws` (idle 1s), `/key/ws` (API key,
/// one handshake a minute), `/events` (compressed route). The upstream's read timeout is
/// 1 s: shorter than the pauses below.
fn policy(up: SocketAddr, extra_route: &str) -> String {
    let hash = format!("sha256:{}", hex::encode(Sha256::digest(KEY.as_bytes())));
    format!(
        r#"upstreams:
  up: {{ targets: ["{up}"], timeouts: {{ connect: 1s, read: 1s }} }}
api_keys: {{ header: X-API-Key }}
consumers:
  acme: {{ api_keys: ["{hash}"] }}
routes:
  - name: ws
    match: {{ path: /ws }}
    auth: none
    upstream: up
  - name: short
    match: {{ path: /short/ws }}
    auth: none
    upstream: up
    rewrite: {{ strip_prefix: /short }}
    timeouts: {{ idle: 1s }}
  - name: keyed
    match: {{ path: /key/ws }}
    auth: [api_key]
    upstream: up
    rewrite: {{ strip_prefix: /key }}
    rate_limit: {{ key: consumer, limits: [ {{ requests: 1, per: 1m }} ] }}
  - name: events
    match: {{ path: /events }}
    auth: none
    upstream: up
    response: {{ compression: {{ min_size: 1B }} }}
  - name: small
    match: {{ path: /small/ws }}
    auth: none
    upstream: up
    rewrite: {{ strip_prefix: /small }}
    request: {{ max_body: 1KiB }}
{extra_route}"#
    )
}

async fn start(gap_ms: u64) -> Gateway {
    let up = upstream(gap_ms).await;
    Gateway::start_in(ConfigDir::new("", &[("p.yaml", &policy(up, ""))]), &[]).await
}

fn ws_url(gw: &Gateway, path: &str) -> String {
    gw.url(path).replace("http://", "ws://")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn say(ws: &mut Ws, text: &str) -> Message {
    ws.send(Message::Text(text.into())).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an answer in time")
        .expect("the stream is open")
        .expect("a frame")
}

async fn open_streams(gw: &Gateway, route: &str) -> f64 {
    metric(
        &gw.metrics().await,
        "gateway_open_streams",
        &[("route", route)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_flow_both_ways_past_the_upstream_read_timeout() {
    let gw = start(100).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(ws_url(&gw, "/ws"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(say(&mut ws, "hi").await, Message::Text("echo:hi".into()));
    assert_eq!(open_streams(&gw, "ws").await, 1.0);
    // Quiet for 2.5 s: the upstream's read timeout (1 s) does not apply to a stream.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        say(&mut ws, "again").await,
        Message::Text("echo:again".into())
    );
    let big = vec![7u8; 256 * 1024];
    assert_eq!(say_binary(&mut ws, &big).await, big);
    ws.close(None).await.unwrap();
    drop(ws);
    let m = gw
        .metrics_when(|m| metric(m, "gateway_open_streams", &[("route", "ws")]) == 0.0)
        .await;
    assert_eq!(
        metric(
            &m,
            "gateway_streams_closed_total",
            &[("route", "ws"), ("reason", "closed")]
        ),
        1.0,
        "{m}"
    );
    // The access log line is written when the stream ends, with its duration.
    let line = gw.wait_log(|l| l["route"] == "ws").await;
    assert_eq!(line["status"], 101);
    assert!(line["duration_ms"].as_f64().unwrap() >= 2500.0, "{line}");
}

async fn say_binary(ws: &mut Ws, data: &[u8]) -> Vec<u8> {
    ws.send(Message::Binary(data.to_vec().into()))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => b.to_vec(),
        other => panic!("no binary echo: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_bytes_are_counted_not_held_to_max_body_and_traced() {
    let (endpoint, spans) = common::collector::start().await;
    let up = upstream(100).await;
    let extra = format!("tracing: {{ otlp_endpoint: \"{endpoint}\", export_interval: 200ms }}\n");
    let gw = Gateway::start_in(ConfigDir::new(&extra, &[("p.yaml", &policy(up, ""))]), &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&gw, "/small/ws"))
        .await
        .unwrap();
    // Eight frames of 1,000 bytes: 8 KB through a route whose bodies stop at 1 KiB. The
    // limit is for request bodies; frames after an upgrade are not one.
    for i in 0..8u8 {
        let data = vec![i; 1000];
        assert_eq!(say_binary(&mut ws, &data).await, data, "frame {i}");
    }
    ws.close(None).await.unwrap();
    drop(ws);
    let m = gw
        .metrics_when(|m| metric(m, "gateway_open_streams", &[("route", "small")]) == 0.0)
        .await;
    let bytes = |direction| {
        metric(
            &m,
            "gateway_stream_bytes_total",
            &[("route", "small"), ("direction", direction)],
        )
    };
    // Each frame is 1,000 bytes plus its header (and the client's mask): counted as carried.
    assert!((8000.0..8200.0).contains(&bytes("from_client")), "{m}");
    assert!((8000.0..8200.0).contains(&bytes("to_client")), "{m}");
    let line = gw.wait_log(|l| l["route"] == "small").await;
    assert_eq!(line["status"], 101, "{line}");
    assert_eq!(line["stream_end"], "closed", "{line}");
    let received = line["bytes_received"].as_u64().unwrap();
    let sent = line["bytes_sent"].as_u64().unwrap();
    assert!((8000..8200).contains(&received), "{line}");
    assert!((8000..8200).contains(&sent), "{line}");
    assert_eq!(received as f64, bytes("from_client"), "{line}");
    // The request's span lasts as long as the stream and says how it ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = spans.lock().unwrap().concat();
        if common::collector::contains(&all, b"gateway.stream.end")
            && common::collector::contains(&all, b"gateway.stream.bytes_to_client")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no stream span exported");
        drop(all);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_quiet_longer_than_the_route_idle_timeout_is_closed() {
    let gw = start(100).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&gw, "/short/ws"))
        .await
        .unwrap();
    assert_eq!(say(&mut ws, "hi").await, Message::Text("echo:hi".into()));
    let started = Instant::now();
    // Nothing either way: the gateway closes it after `timeouts.idle` (1 s).
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed within the idle timeout and then some");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "no frame expected: {end:?}"
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    let m = gw
        .metrics_when(|m| {
            metric(
                m,
                "gateway_streams_closed_total",
                &[("route", "short"), ("reason", "idle")],
            ) == 1.0
        })
        .await;
    assert_eq!(
        metric(&m, "gateway_open_streams", &[("route", "short")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_passes_authentication_and_rate_limits() {
    let gw = start(100).await;
    // No key: refused at the handshake.
    let err = tokio_tungstenite::connect_async(ws_url(&gw, "/key/ws"))
        .await
        .expect_err("no key");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 401),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    let keyed = || {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = ws_url(&gw, "/key/ws").into_client_request().unwrap();
        req.headers_mut().insert("X-API-Key", KEY.parse().unwrap());
        req
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(keyed()).await.unwrap();
    assert_eq!(say(&mut ws, "ok").await, Message::Text("echo:ok".into()));
    // One handshake a minute: the second is 429.
    match tokio_tungstenite::connect_async(keyed()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected 429, got {:?}", other.map(|(_, r)| r.status())),
    }
    // The open stream is not affected by the refused handshake.
    assert_eq!(
        say(&mut ws, "still").await,
        Message::Text("echo:still".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_does_not_close_an_open_stream() {
    let up = upstream(100).await;
    let gw = Gateway::start_in(ConfigDir::new("", &[("p.yaml", &policy(up, ""))]), &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&gw, "/ws"))
        .await
        .unwrap();
    assert_eq!(
        say(&mut ws, "before").await,
        Message::Text("echo:before".into())
    );
    let extra = "  - name: added\n    match: { path: /added }\n    auth: none\n    upstream: up\n";
    gw.config.write_policy("p.yaml", &policy(up, extra));
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.config().await["generation"] != 2 {
        assert!(Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        say(&mut ws, "after").await,
        Message::Text("echo:after".into())
    );
    assert_eq!(open_streams(&gw, "ws").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_one_by_one_uncompressed_past_the_read_timeout() {
    // Events 1.2 s apart: longer than the upstream's read timeout (1 s).
    let gw = start(1200).await;
    let started = Instant::now();
    let r = common::client()
        .get(gw.url("/events"))
        .header("Accept", "text/event-stream")
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let mut first_at = None;
    while let Some(piece) = body.next().await {
        text.push_str(std::str::from_utf8(&piece.unwrap()).unwrap());
        if first_at.is_none() && text.contains("tick 0") {
            first_at = Some(started.elapsed());
        }
    }
    for i in 0..5 {
        assert!(text.contains(&format!("data: tick {i}")), "{text}");
    }
    // The first event came at once, not when the stream ended (~4.8 s later).
    let first = first_at.unwrap();
    assert!(first < Duration::from_millis(1000), "{first:?}");
    assert!(started.elapsed() >= Duration::from_millis(4500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_run_until_the_shutdown_grace_then_closes_it() {
    let up = upstream(100).await;
    // The harness's gateway.yaml has `shutdown_grace: 1s`.
    let config = ConfigDir::new("", &[("p.yaml", &policy(up, ""))]);
    let mut gw = Gateway::start_in(config, &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&gw, "/ws"))
        .await
        .unwrap();
    assert_eq!(say(&mut ws, "hi").await, Message::Text("echo:hi".into()));
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let signalled = Instant::now();
    // Within the grace the stream still works ...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        say(&mut ws, "during").await,
        Message::Text("echo:during".into())
    );
    // ... and the gateway exits once it is over, closing the stream.
    let exit = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    assert!(exit.is_some(), "the gateway exits after its shutdown grace");
    let waited = signalled.elapsed();
    assert!(waited >= Duration::from_millis(800), "{waited:?}");
    let end = tokio::time::timeout(Duration::from_secs(3), ws.next()).await;
    assert!(
        !matches!(end, Ok(Some(Ok(Message::Text(_))))),
        "the stream is closed: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_websocket_leaves_no_upstream_connection_for_the_next_request() {
    let gw = start(100).await;
    for round in 0..5 {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&gw, "/ws"))
            .await
            .unwrap();
        let text = format!("round {round}");
        assert_eq!(
            say(&mut ws, &text).await,
            Message::Text(format!("echo:{text}").into())
        );
        if round % 2 == 0 {
            ws.close(None).await.unwrap();
            // Read to the end of the close handshake.
            while let Some(Ok(_)) = ws.next().await {}
        } else {
            // Gone without a close handshake.
            drop(ws);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_opened_concurrently_all_stay_open() {
    // cloudflare/pingora#946 (patched in vendor/pingora-proxy): an upgrade whose 101 was
    // read before the request's empty body end was torn down at once; opening many at a
    // time and speaking at once showed it within a few hundred connections.
    let gw = start(100).await;
    let url = ws_url(&gw, "/ws");
    let mut held = Vec::new();
    for batch in 0..15 {
        let opened = futures::future::join_all((0..20).map(|i| {
            let url = url.clone();
            async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                let text = format!("{batch}-{i}");
                let answer = say(&mut ws, &text).await;
                assert_eq!(answer, Message::Text(format!("echo:{text}").into()));
                ws
            }
        }))
        .await;
        held.extend(opened);
    }
    assert_eq!(open_streams(&gw, "ws").await, 300.0);
}
