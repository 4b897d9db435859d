use super::*;
use bytes::Bytes;
use pingora_cache::storage::MissFinishType;
use pingora_cache::trace::Span;

fn storage(max: usize) -> &'static MemoryStorage {
    Box::leak(Box::new(MemoryStorage::new(max)))
}

fn key(route: &str, path: &str, query: &str) -> CacheKey {
    let mut k = CacheKey::new(format!("{route}{path}?{query}"), "");
    k.extensions.insert(EntryTag {
        route: route.into(),
        path: path.into(),
    });
    k
}

fn meta(fresh_for: Duration, stale: u32) -> CacheMeta {
    let now = SystemTime::now();
    let header = ResponseHeader::build(200, None).unwrap();
    CacheMeta::new(now + fresh_for, now, stale, 0, header)
}

async fn put(s: &'static MemoryStorage, k: &CacheKey, body: &[u8]) -> usize {
    let span = Span::inactive().handle();
    let mut miss = s
        .get_miss_handler(k, &meta(Duration::from_secs(60), 0), &span)
        .await
        .unwrap();
    for piece in body.chunks(1000) {
        miss.write_body(Bytes::copy_from_slice(piece), false)
            .await
            .unwrap();
    }
    match miss.finish().await.unwrap() {
        MissFinishType::Created(n) => n,
        MissFinishType::Appended(n, _) => n,
    }
}

async fn get(s: &'static MemoryStorage, k: &CacheKey) -> Option<Vec<u8>> {
    let span = Span::inactive().handle();
    let (_, mut hit) = s.lookup(k, &span).await.unwrap()?;
    let mut out = Vec::new();
    while let Some(b) = hit.read_body().await.unwrap() {
        out.extend_from_slice(&b);
    }
    Some(out)
}

#[tokio::test]
async fn stores_whole_bodies_and_serves_ranges() {
    let s = storage(1 << 20);
    let k = key("r", "/a", "");
    assert!(get(s, &k).await.is_none());
    let body: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    assert!(put(s, &k, &body).await > body.len());
    assert_eq!(get(s, &k).await.unwrap(), body);
    let span = Span::inactive().handle();
    let (_, mut hit) = s.lookup(&k, &span).await.unwrap().unwrap();
    hit.seek(10, Some(20)).unwrap();
    assert_eq!(&hit.read_body().await.unwrap().unwrap()[..], &body[10..20]);
    assert!(hit.read_body().await.unwrap().is_none());
    assert!(hit.seek(10, Some(6000)).is_err());
}

#[tokio::test]
async fn least_recently_used_entries_go_first() {
    let s = storage(10_000);
    let (a, b, c) = (key("r", "/a", ""), key("r", "/b", ""), key("r", "/c", ""));
    put(s, &a, &[1; 4000]).await;
    put(s, &b, &[2; 4000]).await;
    assert!(get(s, &a).await.is_some()); // a is now more recent than b
    put(s, &c, &[3; 4000]).await;
    assert!(get(s, &b).await.is_none());
    assert!(get(s, &a).await.is_some());
    assert!(get(s, &c).await.is_some());
    assert!(s.usage().1 <= 10_000);
    // An entry larger than the whole bound is not kept, and evicts nothing.
    assert_eq!(put(s, &key("r", "/big", ""), &[0; 20_000]).await, 0);
    assert_eq!(s.usage().0, 2);
}

#[tokio::test]
async fn answers_over_the_entry_limit_are_not_kept() {
    let s = storage(64 << 20);
    let k = key("r", "/huge", "");
    assert_eq!(put(s, &k, &vec![0; MAX_ENTRY + 1]).await, 0);
    assert!(get(s, &k).await.is_none());
    assert!(put(s, &k, &vec![0; MAX_ENTRY - 4096]).await > 0);
}

#[tokio::test]
async fn purges_by_route_and_by_path() {
    let s = storage(1 << 20);
    for (route, path, q) in [
        ("r", "/a", "1"),
        ("r", "/a", "2"),
        ("r", "/b", ""),
        ("other", "/a", ""),
    ] {
        put(s, &key(route, path, q), b"x").await;
    }
    assert_eq!(s.purge_route("r", Some("/a")), 2);
    assert!(get(s, &key("r", "/b", "")).await.is_some());
    assert_eq!(s.purge_route("r", None), 1);
    assert_eq!(s.purge_route("r", None), 0);
    assert_eq!(s.purge_route("nope", None), 0);
    assert!(get(s, &key("other", "/a", "")).await.is_some());
    assert_eq!(s.usage().0, 1);
}

#[tokio::test]
async fn dead_entries_are_dropped_on_lookup() {
    let s = storage(1 << 20);
    let k = key("r", "/old", "");
    let span = Span::inactive().handle();
    let past = meta(Duration::ZERO, 0);
    let mut miss = s.get_miss_handler(&k, &past, &span).await.unwrap();
    miss.write_body(Bytes::from_static(b"x"), true)
        .await
        .unwrap();
    miss.finish().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(get(s, &k).await.is_none());
    assert_eq!(s.usage(), (0, 0));
}

#[tokio::test]
async fn keys_without_a_tag_are_not_stored() {
    let s = storage(1 << 20);
    let k = CacheKey::new("untagged", "");
    assert_eq!(put(s, &k, b"x").await, 0);
    assert!(get(s, &k).await.is_none());
}
