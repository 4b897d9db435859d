//! The floor for `benches/load.sh`: Pingora's HTTP proxy with nothing of the gateway in it.
//! One upstream, no routing, no headers added, no metrics, no logs; the same Pingora
//! version, allocator and thread count as the gateway. What this proxy costs per request is
//! what Pingora itself costs; the gateway's own phases come on top.
//!
//! Usage: `bare_pingora LISTEN UPSTREAM THREADS`, e.g.
//! `cargo run --release --example bare_pingora -- 127.0.0.1:8090 127.0.0.1:9001 2`

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, threads] = args.as_slice() else {
        eprintln!("usage: bare_pingora LISTEN UPSTREAM THREADS");
        std::process::exit(2);
    };
    let Ok(threads) = threads.parse::<usize>() else {
        eprintln!("THREADS must be a number");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads,
        pid_file: format!("/tmp/bare-pingora-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/bare-pingora-{}.sock", std::process::id()),
        // Stop within a second of SIGTERM (Pingora's default grace is 5 minutes).
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: upstream.clone(),
        },
    );
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run_forever();
}
