//! An HTTP answer read in full, with when its request was sent and when the answer was in;
//! the accessors the tests read it with (JSON body, headers, the `RateLimit-*` headers).

use super::{client, Gateway};
use serde_json::Value;
use std::time::{Duration, Instant};

/// An answer, read in full, with when its request was sent and when the answer was in.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub sent: Instant,
    pub done: Instant,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The body's `error.code` (Null when there is none).
    pub fn code(&self) -> Value {
        self.json()["error"]["code"].clone()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<binary>"))
    }

    /// A header the echo upstream received (lower-case name).
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }

    /// A header that must be a whole non-negative number when present.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.header(name).map(|v| {
            v.trim().parse().unwrap_or_else(|_| {
                panic!("{name}: {v:?} is not a whole number; {}", self.describe())
            })
        })
    }

    /// `(RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset)`; panics unless all three
    /// are present.
    pub fn rl(&self) -> (u64, u64, u64) {
        match (
            self.number("ratelimit-limit"),
            self.number("ratelimit-remaining"),
            self.number("ratelimit-reset"),
        ) {
            (Some(l), Some(r), Some(s)) => (l, r, s),
            _ => panic!(
                "expected all three RateLimit-* headers; {}",
                self.describe()
            ),
        }
    }

    /// Whether any `RateLimit-*` header is present.
    pub fn has_rl(&self) -> bool {
        ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"]
            .iter()
            .any(|h| self.headers.contains_key(*h))
    }

    /// How long the answer took, from sending the request to having read the body.
    pub fn took(&self) -> Duration {
        self.done.duration_since(self.sent)
    }

    /// Status, time taken, the headers of interest to the tests, and the body.
    pub fn describe(&self) -> String {
        let shown: Vec<String> = [
            "www-authenticate",
            "retry-after",
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
        ]
        .iter()
        .filter_map(|h| self.header(h).map(|v| format!("{h}: {v}")))
        .collect();
        format!(
            "{} in {:?} [{}] {}",
            self.status,
            self.took(),
            shown.join(", "),
            self.text
        )
    }
}

/// Sends `req` and reads the answer in full.
pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let sent = Instant::now();
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    Reply {
        status,
        headers,
        text,
        sent,
        done: Instant::now(),
    }
}

/// GET `path` on the gateway with the given request headers.
pub async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await
}

/// Asserts a 200 proxied from the echo upstream.
pub fn assert_ok(r: &Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.describe());
    assert!(
        r.json()["headers"].is_object(),
        "{what}: not the upstream's echo: {}",
        r.text
    );
}
