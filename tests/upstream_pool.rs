//! The upstream keep-alive pool as patched in `vendor/pingora-core` (connectors/fresh.rs):
//! a released connection is watched only once it stays idle. These drive Pingora's own
//! `TransportConnector` against real sockets on loopback and check what the patch must keep
//! from stock Pingora: reuse, the idle timeout, closing what the server closed, eviction.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::upstreams::peer::{BasicPeer, Peer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the test server saw of one connection: its number and when it read end of file.
struct Closed {
    conn: usize,
    at: Instant,
}

/// A server that accepts connections and reports each one's end of file. With `close_after`
/// it closes each connection itself after that long instead of waiting.
async fn server(
    close_after: Option<Duration>,
) -> (u16, mpsc::UnboundedReceiver<Closed>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let conn = count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(after) = close_after {
                    tokio::time::sleep(after).await;
                    drop(sock);
                    return;
                }
                let mut buf = [0u8; 64];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = tx.send(Closed {
                    conn,
                    at: Instant::now(),
                });
            });
        }
    });
    (port, rx, accepted)
}

fn connector(pool_size: usize) -> TransportConnector {
    TransportConnector::new(Some(ConnectorOptions::new(pool_size)))
}

/// Sockets on this machine in CLOSE_WAIT (the other side closed, this side not yet) to `port`.
fn close_wait_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2].ends_with(&remote) && f[3] == "08"
        })
        .count()
}

/// [`close_wait_to`] once it is 0, or after 3 s: a sweep and a watcher have had their chance.
async fn close_wait_settled(port: u16) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    while close_wait_to(port) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    close_wait_to(port)
}

#[tokio::test]
async fn a_connection_taken_again_at_once_is_reused_and_not_closed() {
    let (port, mut closed, accepted) = server(None).await;
    let c = connector(8);
    let peer = BasicPeer::new(&format!("127.0.0.1:{port}"));
    for _ in 0..50 {
        let (stream, _reused) = c.get_stream(&peer).await.unwrap();
        c.release_stream(stream, peer.reuse_hash(), Some(Duration::from_secs(60)));
    }
    // And once more after a sweep gave it a watcher: taking it ends the watch, not the socket.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stream = c
        .reused_stream(&peer)
        .await
        .expect("the idle connection is reused");
    c.release_stream(stream, peer.reuse_hash(), Some(Duration::from_secs(60)));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for every request"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(closed.try_recv().is_err(), "a pooled connection was closed");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_its_idle_timeout() {
    for timeout_ms in [700u64, 150] {
        // 700 ms: listed, then watched at a sweep with what is left of it; 150 ms: shorter
        // than two sweeps, watched at once.
        let (port, mut closed, _) = server(None).await;
        let c = connector(8);
        let peer = BasicPeer::new(&format!("127.0.0.1:{port}"));
        let stream = c.new_stream(&peer).await.unwrap();
        let released = Instant::now();
        c.release_stream(
            stream,
            peer.reuse_hash(),
            Some(Duration::from_millis(timeout_ms)),
        );
        let seen = tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the idle connection was closed")
            .unwrap();
        let idle = seen.at - released;
        assert!(
            idle >= Duration::from_millis(timeout_ms - 20),
            "closed after {idle:?}"
        );
        assert!(
            c.reused_stream(&peer).await.is_none(),
            "a timed-out connection was reused"
        );
    }
}

#[tokio::test]
async fn a_connection_the_server_closes_is_closed_here_too() {
    let (port, _closed, _) = server(Some(Duration::from_millis(50))).await;
    let c = connector(8);
    let peer = BasicPeer::new(&format!("127.0.0.1:{port}"));
    let stream = c.new_stream(&peer).await.unwrap();
    c.release_stream(stream, peer.reuse_hash(), Some(Duration::from_secs(60)));
    // Without a watcher the socket would stay in CLOSE_WAIT until the pool is used again.
    assert_eq!(
        close_wait_settled(port).await,
        0,
        "the closed connection is still open here"
    );
    let (_, reused) = c.get_stream(&peer).await.unwrap();
    assert!(!reused, "a connection the server closed was reused");
}

#[tokio::test]
async fn a_connection_evicted_from_a_full_pool_is_closed_and_reported() {
    let (port, mut closed, _) = server(None).await;
    let evicted = Arc::new(AtomicUsize::new(0));
    let count = evicted.clone();
    let mut options = ConnectorOptions::new(1);
    options.keepalive_pool_callback = Some(Arc::new(move |_idle| {
        count.fetch_add(1, Ordering::SeqCst);
    }));
    let c = TransportConnector::new(Some(options));
    let peer = BasicPeer::new(&format!("127.0.0.1:{port}"));
    let first = c.new_stream(&peer).await.unwrap();
    let second = c.new_stream(&peer).await.unwrap();
    c.release_stream(first, peer.reuse_hash(), Some(Duration::from_secs(60)));
    c.release_stream(second, peer.reuse_hash(), Some(Duration::from_secs(60)));
    let seen = tokio::time::timeout(Duration::from_secs(3), closed.recv())
        .await
        .expect("the evicted connection was closed")
        .unwrap();
    assert_eq!(seen.conn, 0, "the older connection is the one evicted");
    let deadline = Instant::now() + Duration::from_secs(3);
    while evicted.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        evicted.load(Ordering::SeqCst),
        1,
        "the pool callback saw the eviction"
    );
    assert!(
        c.reused_stream(&peer).await.is_some(),
        "the newer connection stays pooled"
    );
}

#[test]
fn the_sweep_starts_again_when_its_runtime_is_gone() {
    let c = connector(8);
    // The first release starts the sweep on this runtime, which then shuts down. A
    // current-thread runtime runs no task outside `block_on`: the sweep's task is dropped
    // before it ever ran (what a busy runtime shutting down can also do).
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        let (port, _closed, _) = server(None).await;
        let peer = BasicPeer::new(&format!("127.0.0.1:{port}"));
        let stream = c.new_stream(&peer).await.unwrap();
        c.release_stream(stream, peer.reuse_hash(), Some(Duration::from_secs(60)));
    });
    drop(first);
    // A connection released on another runtime is still watched: closed here once the
    // server closes it.
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let (port, _closed, _) = server(Some(Duration::from_millis(50))).await;
        let peer = BasicPeer::new(&format!("127.0.0.1:{port}"));
        let stream = c.new_stream(&peer).await.unwrap();
        c.release_stream(stream, peer.reuse_hash(), Some(Duration::from_secs(60)));
        assert_eq!(
            close_wait_settled(port).await,
            0,
            "no sweep watched the connection"
        );
    });
}
