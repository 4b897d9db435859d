//! Assembles the Pingora server: one proxy service per listener, the admin service, the
//! readiness probe and, for `gateway demo`, the demo upstreams.

use crate::admin::Admin;
use crate::auth::refresh::JwksService;
use crate::config::{self, GatewayConfig, Problems};
use crate::conn::Guard;
use crate::proxy::Gateway;
use crate::runtime::reload::ReloadService;
use crate::runtime::Store;
use crate::{demo, logging, metrics};
use async_trait::async_trait;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct RunOptions {
    pub config: PathBuf,
    /// Take over the listening sockets of a running gateway (zero-downtime upgrade).
    pub upgrade: bool,
    /// Also start the demo upstream services.
    pub demo: bool,
}

/// Loads and checks everything `run` would, without starting anything. Needs no network:
/// upstream host names are not resolved; the warnings name them.
pub fn check(path: &std::path::Path) -> Result<(GatewayConfig, Store), Problems> {
    let (gw, mut store) = load(path)?;
    let names = crate::upstream::dns::check_warnings(&store.load());
    store.warnings.extend(names);
    Ok((gw, store))
}

fn load(path: &std::path::Path) -> Result<(GatewayConfig, Store), Problems> {
    let gw = config::load_gateway(path)?;
    let store = Store::open(gw.clone())?;
    Ok((gw, store))
}

/// Waits until every listener accepts connections and the reload service is armed, then
/// marks the gateway ready.
struct Readiness {
    addrs: Vec<SocketAddr>,
    reload_armed: Arc<AtomicBool>,
    store: Arc<Store>,
    ready: Arc<AtomicBool>,
}

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        for addr in &self.addrs {
            let mut probe = *addr;
            if probe.ip().is_unspecified() {
                probe.set_ip(match probe {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            loop {
                if tokio::net::TcpStream::connect(probe).await.is_ok() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
        // The shared store's connections are up (or failed once, within its timeout).
        let state = self.store.load().state.clone();
        if let crate::state::Kv::Redis(pool) = &state.kv {
            tokio::select! {
                _ = pool.warm() => {}
                _ = shutdown.changed() => return,
            }
        }
        // Every remote key set has had its first fetch and every upstream host name its
        // first lookup (successful or not: a provider or a name that is down must not keep
        // the other routes out of service).
        while !self.reload_armed.load(Ordering::Acquire)
            || !self.store.load().jwks.iter().all(|j| j.attempted())
            || !self
                .store
                .load()
                .upstreams
                .values()
                .all(|u| u.resolved_once())
        {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = shutdown.changed() => return,
            }
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(listeners = self.addrs.len(), "gateway ready");
    }
}

/// Fails early, with a clear message, when an address is already taken.
fn check_bindable(addrs: &[SocketAddr]) -> Result<(), String> {
    for a in addrs {
        std::net::TcpListener::bind(a).map_err(|e| format!("cannot listen on {a}: {e}"))?;
    }
    Ok(())
}

/// A TLS listener's settings: certificates by SNI, the client verifier, ALPN h2 and
/// http/1.1, and the callback that keeps the client certificate's subject.
fn tls_settings(
    tls: &crate::tls::ListenerTls,
) -> Result<pingora_core::listeners::tls::TlsSettings, String> {
    let mut s = pingora_core::listeners::tls::TlsSettings::with_callbacks(Box::new(
        crate::tls::client::Callbacks,
    ))
    .map_err(|e| format!("listener {}: {e}", tls.name))?;
    s.set_cert_resolver(tls.certs.clone());
    if let Some(v) = &tls.client {
        s.set_client_cert_verifier(v.clone());
    }
    s.enable_h2();
    Ok(s)
}

/// Runs the gateway until it is told to stop. Returns an error message for start-up
/// failures; never returns once the server is running.
pub fn run(opts: RunOptions) -> Result<(), String> {
    let (gw, store) = load(&opts.config).map_err(|p| p.to_string())?;
    logging::init(&gw.file.log);
    metrics::init();
    if let Err(e) = crate::telemetry::init(gw.file.tracing.as_ref()) {
        tracing::error!(error = %e, "trace export is off");
    }

    let mut addrs: Vec<SocketAddr> = gw.file.listeners.iter().map(|l| l.bind).collect();
    let live = Arc::new(crate::console::stats::Live::default());
    if let Some(a) = &gw.file.admin {
        addrs.push(a.bind);
    }
    if opts.demo {
        addrs.extend(
            demo::ADDRS
                .iter()
                .filter_map(|a| a.parse::<SocketAddr>().ok()),
        );
    }
    if !opts.upgrade {
        check_bindable(&addrs)?;
    }

    // Default: one worker thread per core (Pingora's own default is one).
    let threads = gw.file.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let grace = gw.file.shutdown_grace.map_or(10, |d| d.0.as_secs().max(1));
    conf.grace_period_seconds = Some(grace);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    conf.upgrade_sock = format!(
        "/tmp/gateway-upgrade-{}.sock",
        gw.file.listeners[0].bind.port()
    );
    conf.pid_file = format!("/tmp/gateway-{}.pid", gw.file.listeners[0].bind.port());
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    crate::cache::configure(&gw.file.cache);
    let store = Arc::new(store);
    for l in &gw.file.listeners {
        let mut proxy =
            pingora_proxy::http_proxy(&server.configuration, Gateway::new(store.clone()));
        if l.h2c {
            let mut options = pingora_core::apps::HttpServerOptions::default();
            options.h2c = true;
            proxy.server_options = Some(options);
        }
        let mut svc = Service::new(
            format!("listener {}", l.name),
            Guard::new(proxy, store.clone()),
        );
        match store.tls.listeners.iter().find(|t| t.name == l.name) {
            Some(tls) => svc.add_tls_with_settings(&l.bind.to_string(), None, tls_settings(tls)?),
            // No read buffer under plain HTTP: Pingora reads heads and bodies into buffers
            // of its own, so the 64 KiB one it puts in front of every accepted socket only
            // helps TLS (16 KiB records). Each open connection, idle WebSockets included,
            // keeps 64 KiB less.
            None => svc.add_listener(
                ListenerConfig::tcp(l.bind.to_string())
                    .l4_buffer(L4BufferSettings::default().read(0)),
            ),
        }
        server.add_service(svc);
    }

    let ready = Arc::new(AtomicBool::new(false));
    if let Some(a) = &gw.file.admin {
        let token = a.token_env.as_ref().and_then(|v| std::env::var(v).ok());
        let mut svc = Service::new(
            "admin".to_string(),
            Admin::new(store.clone(), ready.clone(), live.clone(), token),
        );
        svc.add_tcp(&a.bind.to_string());
        server.add_service(svc);
    }
    if opts.demo {
        for svc in demo::services() {
            server.add_service(svc);
        }
        server.add_service(demo::live_service());
    }
    if gw.file.admin.is_some() {
        server.add_service(background_service(
            "console figures",
            crate::console::stats::Sampler(live),
        ));
    }
    server.add_service(background_service(
        "delivery workers",
        crate::deliver::worker::Workers::new(store.clone()),
    ));
    server.add_service(background_service("jwks", JwksService::new(store.clone())));
    server.add_service(background_service(
        "health checks",
        crate::upstream::health::HealthService::new(store.clone()),
    ));
    server.add_service(background_service(
        "upstream dns",
        crate::upstream::dns::DnsService::new(store.clone()),
    ));
    server.add_service(background_service(
        "rate-limit sweep",
        crate::ratelimit::sweep::SweepService::new(store.clone()),
    ));
    server.add_service(background_service(
        "cache purges from other replicas",
        crate::cache::purge::PurgeService::new(store.clone()),
    ));
    let reload_armed = Arc::new(AtomicBool::new(false));
    server.add_service(background_service(
        "reload",
        ReloadService::new(store.clone(), reload_armed.clone()),
    ));
    server.add_service(background_service(
        "readiness",
        Readiness {
            addrs: gw.file.listeners.iter().map(|l| l.bind).collect(),
            reload_armed,
            store: store.clone(),
            ready,
        },
    ));
    for w in &store.warnings {
        tracing::warn!(warning = %w, "configuration warning");
    }
    tracing::info!(
        config = %opts.config.display(),
        generation = store.load().generation,
        routes = store.load().routes.len(),
        "gateway starting"
    );
    drain_on_stop(&server);
    server.run_forever()
}

/// On SIGTERM Pingora stops accepting and then waits the whole grace period before it
/// stops; the gateway exits as soon as no request is in flight instead (still at most
/// `shutdown_grace`, which Pingora enforces). A rolling update then waits only for the
/// requests that are really running.
fn drain_on_stop(server: &Server) {
    use pingora_core::server::ExecutionPhase;
    let mut phases = server.watch_execution_phase();
    let spawned = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::GracefulTerminate) => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
            // A request whose head was being read as the signal came gets a moment to
            // register; then the process leaves once nothing is in flight twice in a row.
            std::thread::sleep(Duration::from_millis(100));
            let mut idle_checks = 0;
            while idle_checks < 2 {
                idle_checks = if crate::conn::in_flight() == 0 {
                    idle_checks + 1
                } else {
                    0
                };
                std::thread::sleep(Duration::from_millis(25));
            }
            tracing::info!("no request in flight: exiting");
            logging::flush();
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "graceful stop waits the whole shutdown_grace");
    }
}
