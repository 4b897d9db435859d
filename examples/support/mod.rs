//! What the measuring-stick proxies of the benches share: their command line and a Pingora
//! server that stops at once.

use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;

/// `LISTEN UPSTREAM THREADS [MODE]`.
pub struct Args {
    pub listen: String,
    pub upstream: String,
    pub threads: usize,
    // Each example compiles this module on its own; bare_pingora takes no mode.
    #[allow(dead_code)]
    pub mode: Option<String>,
}

/// The command line, or the usage on standard error and exit status 2.
pub fn args(usage: &str) -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, threads, mode) = match args.as_slice() {
        [l, u, t] => (l, u, t, None),
        [l, u, t, m] if usage.contains('[') => (l, u, t, Some(m.clone())),
        _ => {
            eprintln!("usage: {usage}");
            std::process::exit(2);
        }
    };
    let Ok(threads) = threads.parse::<usize>() else {
        eprintln!("THREADS must be a number");
        std::process::exit(2);
    };
    Args {
        listen: listen.clone(),
        upstream: upstream.clone(),
        threads,
        mode,
    }
}

/// A bootstrapped server; its pid file and upgrade socket are `/tmp/NAME-PID.pid|sock`
/// (the bench scripts remove them).
pub fn server(name: &str, threads: usize) -> Server {
    let conf = ServerConf {
        threads,
        pid_file: format!("/tmp/{name}-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/{name}-{}.sock", std::process::id()),
        // Stop within a second of SIGTERM (Pingora's default grace is 5 minutes).
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    server
}
