//! The Redis delivery queue (`gateway::deliver::redis::RedisQueue`) on a real
//! `redis-server`, through the library: accept → next → delivered; a retry is not due
//! before its time and is after; dead → dead letters → requeue → remove; `Full` at
//! `max_queued`; a lease not finished by one worker is claimed by another after the claim
//! time, not before, and the first worker's late answer changes nothing; a group lost by
//! Redis (flush) is created again; names of workers gone are forgotten unless they hold a
//! lease. And one run on a real three-master Redis Cluster, to
//! prove that every script's keys share one slot.
//!
//! The servers run without persistence: a queue surviving a Redis restart needs
//! `appendonly yes` in production and is not tested here.
//!
//! `redis-server` (and `redis-cli` for the cluster) must be installed: these tests fail,
//! never skip, without them.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/redis_cluster.rs"]
mod redis_cluster;
#[path = "common/redis.rs"]
mod redis_server;

use bytes::Bytes;
use gateway::config::gateway::{OnStoreError, RedisStore};
use gateway::config::values::Dur;
use gateway::deliver::now_ms;
use gateway::deliver::queue::{Lease, Message, Queue, QueueError, Status};
use gateway::deliver::redis::RedisQueue;
use gateway::state::redis::RedisPool;
use redis_server::Redis;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PREFIX: &str = "test:";
const MAX: u64 = 100;
const NOW: Duration = Duration::ZERO;
const CLAIM: Duration = Duration::from_secs(30);

fn queue(url: String, cluster: Option<Vec<String>>) -> RedisQueue {
    let cfg = RedisStore {
        url,
        cluster,
        timeout: Dur(Duration::from_millis(500)),
        on_error: OnStoreError::Deny,
        pool: 2,
        prefix: PREFIX.into(),
    };
    let pool = RedisPool::new(&cfg).expect("redis settings");
    RedisQueue::new(Arc::new(pool), PREFIX)
}

fn message(id: &str, route: &str) -> Message {
    Message {
        id: id.into(),
        route: route.into(),
        method: "POST".into(),
        path: "/v1/orders?x=1".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from_static(b"{\"n\":1}\x00\xff"),
        accepted_at: now_ms(),
    }
}

async fn take(q: &RedisQueue, worker: &str) -> Lease {
    q.next(worker, NOW, CLAIM)
        .await
        .expect("next")
        .expect("a message is due")
}

async fn status(q: &RedisQueue, id: &str) -> (Status, u32) {
    let r = q.status(id).await.expect("status").expect("known id");
    (r.status, r.attempts)
}

#[tokio::test]
async fn accept_next_delivered() {
    let redis = Redis::start().await;
    let q = queue(redis.url(), None);
    let msg = message("m1", "orders");
    q.accept(&msg, MAX).await.unwrap();
    assert_eq!(q.depth("orders").await.unwrap(), (1, 0));
    assert_eq!(status(&q, "m1").await, (Status::Queued, 0));

    let lease = take(&q, "w1").await;
    assert_eq!(
        lease.message, msg,
        "the message comes back as it was accepted"
    );
    assert_eq!(lease.attempt, 1);
    assert!(!lease.token.is_empty());
    assert_eq!(status(&q, "m1").await, (Status::Delivering, 1));
    assert!(q.next("w1", NOW, CLAIM).await.unwrap().is_none());

    q.delivered(&lease).await.unwrap();
    let r = q.status("m1").await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, &r.route),
        (Status::Delivered, 1, &"orders".to_string())
    );
    assert_eq!((r.last_error, r.next_attempt_at), (None, None));
    assert_eq!(q.depth("orders").await.unwrap(), (0, 0));
    assert!(q.next("w1", NOW, CLAIM).await.unwrap().is_none());
    assert!(q.status("unknown").await.unwrap().is_none());

    // The record is kept for a while, without its body; the stream is empty again.
    let key = "test:{deliver}:msg:m1";
    assert!(redis.pttl(key).await > 23 * 3600 * 1000, "kept about a day");
    assert_eq!(
        redis.inline(&format!("HEXISTS {key} data")).await.trim(),
        ":0"
    );
    assert_eq!(
        redis.inline("XLEN test:{deliver}:stream").await.trim(),
        ":0"
    );
    // Finishing twice changes nothing.
    q.delivered(&lease).await.unwrap();
    assert_eq!(q.depth("orders").await.unwrap(), (0, 0));
}

#[tokio::test]
async fn next_waits_for_a_message() {
    let redis = Redis::start().await;
    let q = Arc::new(queue(redis.url(), None));
    let t = Instant::now();
    assert!(q
        .next("w", Duration::from_millis(300), CLAIM)
        .await
        .unwrap()
        .is_none());
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "waited the whole wait"
    );

    let q2 = q.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        q2.accept(&message("late", "r"), MAX).await.unwrap();
    });
    let t = Instant::now();
    let lease = q.next("w", Duration::from_secs(3), CLAIM).await.unwrap();
    assert_eq!(lease.map(|l| l.message.id), Some("late".to_string()));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    later.await.unwrap();
}

#[tokio::test]
async fn a_retry_is_due_at_its_time() {
    let redis = Redis::start().await;
    let q = queue(redis.url(), None);
    q.accept(&message("m", "r"), MAX).await.unwrap();
    let first = take(&q, "w").await;
    let at = now_ms() + 700;
    q.retry_later(&first, at, "upstream answered 503")
        .await
        .unwrap();

    let r = q.status("m").await.unwrap().unwrap();
    assert_eq!((r.status, r.attempts), (Status::Queued, 1));
    assert_eq!(r.last_error.as_deref(), Some("upstream answered 503"));
    assert_eq!(r.next_attempt_at, Some(at));
    assert_eq!(
        q.depth("r").await.unwrap(),
        (1, 0),
        "a waiting retry still counts"
    );
    assert!(
        q.next("w", NOW, CLAIM).await.unwrap().is_none(),
        "not due yet"
    );

    // Due within the wait: `next` picks it up once its time has come.
    let lease = q
        .next("w", Duration::from_secs(3), CLAIM)
        .await
        .unwrap()
        .expect("due after its time");
    assert!(now_ms() >= at, "not before its time");
    assert_eq!((lease.message.id.as_str(), lease.attempt), ("m", 2));
    assert_ne!(lease.token, first.token, "a new stream entry");
    let r = q.status("m").await.unwrap().unwrap();
    assert_eq!((r.status, r.next_attempt_at), (Status::Delivering, None));
    // The first lease is over: its late answers change nothing.
    q.dead(&first, "late").await.unwrap();
    assert_eq!(status(&q, "m").await, (Status::Delivering, 2));

    q.delivered(&lease).await.unwrap();
    assert_eq!(status(&q, "m").await, (Status::Delivered, 2));
    assert_eq!(q.depth("r").await.unwrap(), (0, 0));
}

#[tokio::test]
async fn dead_letters_requeue_and_remove() {
    let redis = Redis::start().await;
    let q = queue(redis.url(), None);
    for (id, route) in [("d1", "a"), ("d2", "b"), ("d3", "a")] {
        q.accept(&message(id, route), MAX).await.unwrap();
        let lease = take(&q, "w").await;
        assert_eq!(lease.message.id, id);
        q.dead(&lease, &format!("{id} refused")).await.unwrap();
        // Distinct death times, for the order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(q.depth("a").await.unwrap(), (0, 2));
    assert_eq!(q.depth("b").await.unwrap(), (0, 1));
    let ids =
        |v: Vec<gateway::deliver::queue::Record>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(q.dead_letters(None, 10).await.unwrap()),
        ["d3", "d2", "d1"]
    );
    assert_eq!(ids(q.dead_letters(None, 2).await.unwrap()), ["d3", "d2"]);
    assert_eq!(
        ids(q.dead_letters(Some("a"), 10).await.unwrap()),
        ["d3", "d1"]
    );
    assert!(q.dead_letters(Some("none"), 10).await.unwrap().is_empty());
    assert!(q.dead_letters(None, 0).await.unwrap().is_empty());
    let d1 = q.status("d1").await.unwrap().unwrap();
    assert_eq!((d1.status, d1.attempts), (Status::Dead, 1));
    assert_eq!(d1.last_error.as_deref(), Some("d1 refused"));

    // Requeue: due now, attempts start over.
    assert!(q.requeue("d1").await.unwrap());
    assert!(!q.requeue("d1").await.unwrap(), "no longer dead");
    assert!(!q.requeue("unknown").await.unwrap());
    assert_eq!(q.depth("a").await.unwrap(), (1, 1));
    assert_eq!(status(&q, "d1").await, (Status::Queued, 0));
    let lease = take(&q, "w").await;
    assert_eq!((lease.message.id.as_str(), lease.attempt), ("d1", 1));
    assert_eq!(lease.message.body, message("d1", "a").body);
    q.delivered(&lease).await.unwrap();
    assert_eq!(q.depth("a").await.unwrap(), (0, 1));
    assert!(!q.remove("d1").await.unwrap(), "delivered, not dead");

    // Remove: gone.
    assert!(q.remove("d3").await.unwrap());
    assert!(!q.remove("d3").await.unwrap());
    assert!(q.status("d3").await.unwrap().is_none());
    assert_eq!(q.depth("a").await.unwrap(), (0, 0));
    assert_eq!(ids(q.dead_letters(None, 10).await.unwrap()), ["d2"]);
}

#[tokio::test]
async fn full_at_max_queued() {
    let redis = Redis::start().await;
    let q = queue(redis.url(), None);
    q.accept(&message("f1", "r"), 2).await.unwrap();
    q.accept(&message("f2", "r"), 2).await.unwrap();
    assert_eq!(
        q.accept(&message("f3", "r"), 2).await,
        Err(QueueError::Full)
    );
    assert!(q.status("f3").await.unwrap().is_none(), "nothing stored");
    q.accept(&message("o1", "other"), 2).await.unwrap();

    // A leased one and a waiting retry still count; a delivered one does not.
    let l1 = take(&q, "w").await;
    q.retry_later(&l1, now_ms() + 60_000, "later")
        .await
        .unwrap();
    assert_eq!(
        q.accept(&message("f3", "r"), 2).await,
        Err(QueueError::Full)
    );
    let mut l2 = take(&q, "w").await;
    if l2.message.route != "r" {
        q.delivered(&l2).await.unwrap();
        l2 = take(&q, "w").await;
    }
    assert_eq!(
        q.accept(&message("f3", "r"), 2).await,
        Err(QueueError::Full)
    );
    q.delivered(&l2).await.unwrap();
    q.accept(&message("f3", "r"), 2).await.unwrap();
    assert_eq!(q.depth("r").await.unwrap(), (2, 0));
}

#[tokio::test]
async fn an_unfinished_lease_is_claimed_after_the_claim_time() {
    let redis = Redis::start().await;
    let q = queue(redis.url(), None);
    let claim = Duration::from_millis(600);
    q.accept(&message("c", "r"), MAX).await.unwrap();
    let a = q.next("A", NOW, claim).await.unwrap().expect("A leases it");
    assert!(
        q.next("B", NOW, claim).await.unwrap().is_none(),
        "not before"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        q.next("B", NOW, claim).await.unwrap().is_none(),
        "not before"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = q.next("B", NOW, claim).await.unwrap().expect("B claims it");
    assert_eq!((b.message.id.as_str(), b.attempt), ("c", 2));
    assert_eq!(status(&q, "c").await, (Status::Delivering, 2));
    assert!(
        q.next("A", NOW, claim).await.unwrap().is_none(),
        "B holds it now"
    );

    // A's late answers change nothing: B holds the message.
    q.retry_later(&a, now_ms(), "A timed out").await.unwrap();
    q.delivered(&a).await.unwrap();
    assert_eq!(status(&q, "c").await, (Status::Delivering, 2));
    assert_eq!(q.depth("r").await.unwrap(), (1, 0));

    q.delivered(&b).await.unwrap();
    assert_eq!(status(&q, "c").await, (Status::Delivered, 2));
    assert_eq!(q.depth("r").await.unwrap(), (0, 0));
    assert!(q.next("A", NOW, Duration::ZERO).await.unwrap().is_none());
}

#[tokio::test]
async fn a_claim_finds_an_old_lease_behind_many_fresh_ones() {
    let redis = Redis::start().await;
    let q = queue(redis.url(), None);
    let claim = Duration::from_millis(300);
    for i in 0..12 {
        q.accept(&message(&format!("p{i:02}"), "r"), MAX)
            .await
            .unwrap();
    }
    for _ in 0..12 {
        take(&q, "A").await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // B takes them over one by one, oldest first: the last one is behind 11 fresh leases
    // (more than one XAUTOCLAIM call scans).
    let mut got = Vec::new();
    for _ in 0..12 {
        let lease = q.next("B", NOW, claim).await.unwrap().expect("claimed");
        assert_eq!(lease.attempt, 2);
        got.push(lease.message.id);
    }
    let want: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
    assert_eq!(got, want);
    assert!(q.next("B", NOW, claim).await.unwrap().is_none());
}

#[tokio::test]
async fn an_entry_whose_message_is_gone_is_skipped() {
    let redis = Redis::start().await;
    let q = queue(redis.url(), None);
    q.accept(&message("gone", "r"), MAX).await.unwrap();
    q.accept(&message("kept", "r"), MAX).await.unwrap();
    assert_eq!(
        redis.inline("DEL test:{deliver}:msg:gone").await.trim(),
        ":1"
    );
    let lease = take(&q, "w").await;
    assert_eq!(lease.message.id, "kept");
    q.delivered(&lease).await.unwrap();
    assert!(q.next("w", NOW, CLAIM).await.unwrap().is_none());
    assert_eq!(
        redis.inline("XLEN test:{deliver}:stream").await.trim(),
        ":0"
    );
    // Summary form: `*4`, then the number of pending entries.
    let pending = redis.inline("XPENDING test:{deliver}:stream workers").await;
    assert!(pending.starts_with("*4\r\n:0\r\n"), "{pending:?}");
}

#[tokio::test]
async fn a_lost_group_is_created_again() {
    let redis = Redis::start().await;
    let q = queue(redis.url(), None);
    assert!(q.next("w", NOW, CLAIM).await.unwrap().is_none());
    assert!(redis.inline("FLUSHALL").await.contains("OK"));
    q.accept(&message("g", "r"), MAX).await.unwrap();
    let lease = take(&q, "w").await;
    assert_eq!(lease.message.id, "g");
}

#[tokio::test]
async fn on_a_redis_cluster_every_script_runs_in_one_slot() {
    let cluster = redis_cluster::RedisCluster::start().await;
    let q = queue(String::new(), Some(cluster.nodes()));
    // Routes and ids hashing to other slots on their own.
    for (id, route) in [("k1", "alpha"), ("k2", "beta"), ("k3", "gamma")] {
        q.accept(&message(id, route), MAX).await.unwrap();
    }
    let mut dead = None;
    for _ in 0..3 {
        let lease = take(&q, "w").await;
        assert_eq!(lease.attempt, 1);
        match lease.message.id.as_str() {
            "k1" => q.delivered(&lease).await.unwrap(),
            "k2" => q.retry_later(&lease, now_ms(), "again").await.unwrap(),
            _ => {
                q.dead(&lease, "refused").await.unwrap();
                dead = Some(lease.message.id.clone());
            }
        }
    }
    assert_eq!(dead.as_deref(), Some("k3"));
    let again = take(&q, "w").await;
    assert_eq!((again.message.id.as_str(), again.attempt), ("k2", 2));
    q.delivered(&again).await.unwrap();

    let letters = q.dead_letters(Some("gamma"), 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(q.depth("gamma").await.unwrap(), (0, 1));
    assert!(q.requeue("k3").await.unwrap());
    let lease = take(&q, "w").await;
    assert_eq!((lease.message.id.as_str(), lease.attempt), ("k3", 1));
    q.dead(&lease, "refused again").await.unwrap();
    assert!(q.remove("k3").await.unwrap());
    assert_eq!(status(&q, "k1").await, (Status::Delivered, 1));
    assert_eq!(status(&q, "k2").await, (Status::Delivered, 2));
    for route in ["alpha", "beta", "gamma"] {
        assert_eq!(q.depth(route).await.unwrap(), (0, 0), "{route}");
    }
    // `w` holds no lease: forgotten once idle (here: any idle time at all).
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(q.prune_workers(Duration::ZERO).await.unwrap(), 1);
    // Every key of the queue is on one master.
    let owner = cluster.owner("test:{deliver}:stream");
    assert_eq!(cluster.owner("test:{deliver}:msg:k1"), owner);
    assert_eq!(cluster.owner("test:{deliver}:depth:gamma"), owner);
}

/// The consumer names in the group, from `XINFO CONSUMERS` (each consumer's `name` field).
async fn consumers(redis: &Redis) -> Vec<String> {
    let text = redis
        .inline("XINFO CONSUMERS test:{deliver}:stream workers")
        .await;
    let lines: Vec<&str> = text.split("\r\n").collect();
    let mut names: Vec<String> = lines
        .windows(3)
        .filter(|w| w[0] == "name")
        .map(|w| w[2].to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn workers_gone_are_forgotten_unless_they_hold_a_lease() {
    const IDLE: Duration = Duration::from_millis(1000);
    let redis = Redis::start().await;
    let q = queue(redis.url(), None);
    q.accept(&message("done", "r"), MAX).await.unwrap();
    let done = take(&q, "gone").await;
    q.delivered(&done).await.unwrap();
    q.accept(&message("held", "r"), MAX).await.unwrap();
    let held = take(&q, "holder").await;
    assert_eq!(consumers(&redis).await, ["gone", "holder"]);

    // (`consumers` itself takes 300 ms: it reads until Redis goes quiet.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    q.accept(&message("recent", "r"), MAX).await.unwrap();
    let recent = take(&q, "live").await;
    q.delivered(&recent).await.unwrap();
    assert_eq!(q.prune_workers(IDLE).await.unwrap(), 1);
    assert_eq!(
        consumers(&redis).await,
        ["holder", "live"],
        "idle without a lease: forgotten; holding one or recently seen: kept"
    );
    assert_eq!(q.prune_workers(IDLE).await.unwrap(), 0);

    // The lease held through the prune still finishes, and is not handed out again.
    q.delivered(&held).await.unwrap();
    assert_eq!(status(&q, "held").await, (Status::Delivered, 1));
    assert!(q.next("live", NOW, Duration::ZERO).await.unwrap().is_none());
    // A name forgotten while idle comes back when its worker asks again.
    q.accept(&message("later", "r"), MAX).await.unwrap();
    let later = take(&q, "gone").await;
    assert_eq!(later.message.id, "later");
    assert!(consumers(&redis).await.contains(&"gone".to_string()));
}
