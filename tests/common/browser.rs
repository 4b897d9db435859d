//! A real browser for tests: headless Chromium (Debian's package) driven over the Chrome
//! DevTools Protocol with the WebSocket client the tests already use. `eval` runs script
//! in the page (a click, typing into a field) and returns its value; `wait_for` polls an
//! expression until it is true.
// Shared by several test binaries; each uses part of it.
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The flags this closed network needs (no background connections), for every start.
pub const FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1440,900",
];

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    page: Ws,
    next: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn installed() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium package)"
    );
}

impl Browser {
    /// Starts Chromium on `url` and attaches to its page.
    pub async fn open(url: &str) -> Browser {
        installed();
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(CHROMIUM)
            .args(FLAGS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // Chromium prints where its DevTools endpoint listens on stderr.
        let stderr = child.stderr.take().unwrap();
        let endpoint = tokio::task::spawn_blocking(move || {
            for line in BufReader::new(stderr).lines() {
                let line = line.ok()?;
                if let Some(at) = line.find("ws://") {
                    return Some(line[at..].trim().to_string());
                }
            }
            None
        });
        let endpoint = tokio::time::timeout(Duration::from_secs(20), endpoint)
            .await
            .expect("chromium printed its DevTools address in time")
            .unwrap()
            .expect("a DevTools address");
        let port = endpoint
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        let page_ws = loop {
            let list: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let page = list
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string));
            if let Some(p) = page {
                break p;
            }
            assert!(Instant::now() < deadline, "no page target: {list}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (page, _) = tokio_tungstenite::connect_async(page_ws).await.unwrap();
        Browser {
            child,
            _profile: profile,
            page,
            next: 0,
        }
    }

    /// Runs `expression` in the page (promises awaited) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        match self.try_eval(expression).await {
            Ok(v) => v,
            Err(e) => panic!("{expression}: {e}"),
        }
    }

    /// As `eval`, with the script's exception as an error.
    pub async fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let call = json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true, "awaitPromise": true},
        });
        self.page
            .send(Message::Text(call.to_string().into()))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.page.next())
                .await
                .expect("an answer from the browser")
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                if !v["result"]["exceptionDetails"].is_null() {
                    return Err(v);
                }
                return Ok(v["result"]["result"]["value"].clone());
            }
        }
    }

    /// Polls `expression` until it is `true` (an exception, such as an element not there
    /// yet while the page loads, counts as not yet); panics with `what` after ten seconds.
    pub async fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_eval(expression).await != Ok(Value::Bool(true)) {
            assert!(Instant::now() < deadline, "the page never showed {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
