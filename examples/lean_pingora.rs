//! The study of issue 25 (benches/README.md): how much of Pingora's own cost per request is
//! pingora-proxy's `ProxyHttp` machinery. This proxy is built on pingora-core alone: a
//! `ServerSession` in, a pooled upstream session from pingora-core's `Connector` out, the
//! answer copied back. One upstream; no hooks, no cache, no retries, no timeouts, no 502s,
//! no upgrades, no HTTP/2, and the request body is sent whole before the answer is read.
//! It is a measuring stick, not a proxy to run: what it leaves out is what a plain route of
//! the gateway must still do.
//!
//! Usage: `lean_pingora LISTEN UPSTREAM THREADS [pool|pin]`
//!   pool (default): the upstream connection is taken from and returned to the pool per request
//!   pin: one upstream connection kept with each client connection (no pool work per request;
//!        not a general design, it isolates what the pool costs)

mod support;

use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession as ClientSession;
use pingora_core::protocols::http::v1::client::HttpSession as H1Client;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{ErrorType, OkOrErr};
use std::any::Any;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Lean {
    peer: HttpPeer,
    connector: Connector,
    pin: bool,
}

/// The upstream connection carried with the client connection in `pin` mode.
struct Pinned(H1Client);

impl Lean {
    /// One request; `Ok(true)` if both connections may be reused.
    async fn proxy(
        &self,
        session: &mut ServerSession,
        up: &mut H1Client,
    ) -> pingora_error::Result<bool> {
        up.write_request_header(Box::new(session.req_header().clone()))
            .await?;
        while let Some(chunk) = session.read_request_body().await? {
            up.write_body(&chunk).await?;
        }
        up.finish_body().await?;
        up.read_response().await?;
        let resp = up
            .resp_header()
            .or_err(ErrorType::InvalidHTTPHeader, "no response header")?
            .clone();
        session.write_response_header(Box::new(resp)).await?;
        while !up.is_body_done() {
            let Some(b) = up.read_body_bytes().await? else {
                break;
            };
            let end = up.is_body_done();
            session.write_response_body(b, end).await?;
        }
        session.finish_body().await?;
        up.respect_keepalive();
        Ok(up.will_keepalive())
    }

    async fn upstream(&self) -> Option<H1Client> {
        match self.connector.get_http_session(&self.peer).await {
            Ok((ClientSession::H1(h1), _)) => Some(h1),
            _ => None,
        }
    }
}

#[async_trait]
impl HttpServerApp for Lean {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let prev = session.take_connection_user_context();
        if !matches!(session.read_request().await, Ok(true)) {
            return None;
        }
        let mut settings;
        if self.pin {
            let mut up = match prev.and_then(|b| b.downcast::<Pinned>().ok()) {
                Some(p) => p.0,
                None => self.upstream().await?,
            };
            if !self.proxy(&mut session, &mut up).await.unwrap_or(false) {
                return None;
            }
            let next = H1Client::new_with_options(up.reuse().await?, &self.peer);
            settings = HttpPersistentSettings::for_session(&session);
            settings.set_user_context(Box::new(Pinned(next)) as Box<dyn Any + Send + Sync>);
        } else {
            let mut up = self.upstream().await?;
            if !self.proxy(&mut session, &mut up).await.unwrap_or(false) {
                return None;
            }
            self.connector
                .release_http_session(ClientSession::H1(up), &self.peer, None)
                .await;
            settings = HttpPersistentSettings::for_session(&session);
        }
        let stream = session.finish().await.ok().flatten()?;
        Some(ReusedHttpStream::from_reusable_stream(stream, settings))
    }
}

fn main() {
    let args = support::args("lean_pingora LISTEN UPSTREAM THREADS [pool|pin]");
    let mut server = support::server("lean-pingora", args.threads);
    let app = Lean {
        peer: HttpPeer::new(args.upstream.as_str(), false, String::new()),
        connector: Connector::new(None),
        pin: args.mode.as_deref() == Some("pin"),
    };
    let mut svc = Service::new("lean".to_string(), app);
    svc.add_tcp(&args.listen);
    server.add_service(svc);
    server.run_forever();
}
