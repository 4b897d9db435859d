//! The floor for `benches/load.sh`: Pingora's HTTP proxy with nothing of the gateway in it.
//! One upstream, no routing, no headers added, no metrics, no logs; the same Pingora
//! version, allocator and thread count as the gateway. What this proxy costs per request is
//! what Pingora itself costs; the gateway's own phases come on top.
//!
//! Usage: `bare_pingora LISTEN UPSTREAM THREADS`, e.g.
//! `cargo run --release --example bare_pingora -- 127.0.0.1:8090 127.0.0.1:9001 2`

mod support;

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args = support::args("bare_pingora LISTEN UPSTREAM THREADS");
    let mut server = support::server("bare-pingora", args.threads);
    let mut svc = pingora_proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: args.upstream,
        },
    );
    svc.add_tcp(&args.listen);
    server.add_service(svc);
    server.run_forever();
}
