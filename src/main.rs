//! The `gateway` command line.

use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: Pingora allocates per request (headers, buffers), and
/// glibc's allocator was ~15% of the gateway's CPU in the profile (see benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "An API gateway on Cloudflare's Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway.
    Run {
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
        /// Take over the sockets of a running gateway (zero-downtime binary upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Load and validate gateway.yaml, every policy file and everything they reference.
    Check {
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Print `sha256:<hex>` for an API key (read from stdin when KEY is absent).
    HashKey { key: Option<String> },
    /// Start the gateway on the demo configuration with the built-in demo upstreams.
    Demo {
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Open a WebSocket (ws://) or read server-sent events (http://) through the gateway,
    /// printing one line per message or event.
    Stream {
        /// ws://host:port/path or http://host:port/path
        url: String,
        /// A header for the opening request, `Name: value`; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// A WebSocket text message to send; repeatable, sent in order.
        #[arg(long)]
        send: Vec<String>,
        /// Stop after this many messages or events (WebSocket default: one per --send).
        #[arg(long)]
        count: Option<usize>,
        /// Give up after this long, such as 30s.
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// Mint a signed JWT for local testing from a provider configured with a static key.
    Token(Box<TokenArgs>),
    /// OpenAPI documents and the routes.
    #[command(subcommand)]
    Openapi(OpenapiCommand),
    /// Sign a webhook body as a sender would, with a verifier's first secret: prints the
    /// headers as curl arguments (`-H name:value ...`).
    WebhookSign {
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
        /// The verifier (a name under webhook_verifiers).
        #[arg(long)]
        verifier: String,
        /// The event id (standard, and hmac with id_header); default: a new one.
        #[arg(long)]
        id: Option<String>,
        /// Unix seconds; default: now.
        #[arg(long)]
        timestamp: Option<i64>,
        /// The body, exactly as it will be sent (read from stdin when absent).
        body: Option<String>,
    },
}

#[derive(Subcommand)]
enum OpenapiCommand {
    /// Print the routes as an OpenAPI 3.1 document (what `GET /openapi.json` on the admin
    /// port answers for this configuration).
    Export {
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
        /// Write the document here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write routes (and request schema files) from an OpenAPI 3.0/3.1 document.
    Import(gateway::openapi::import::Args),
}

#[derive(clap::Args)]
struct TokenArgs {
    #[arg(short, long, default_value = "gateway.yaml")]
    config: PathBuf,
    /// The jwt provider (a name under jwt_providers).
    #[arg(long)]
    provider: String,
    /// The subject (and consumer) of the token.
    #[arg(long)]
    sub: Option<String>,
    /// Scopes, space-separated or repeated.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Lifetime, such as 15m or 1h.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Audience (default: the provider's first).
    #[arg(long)]
    aud: Option<String>,
    /// The key to sign with, by kid.
    #[arg(long)]
    kid: Option<String>,
    /// An extra claim, name=value (JSON values allowed); repeatable.
    #[arg(long = "claim")]
    claims: Vec<String>,
    /// A private key (PEM) for a provider whose static key is a public key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The algorithm for --key, such as RS256 or ES256.
    #[arg(long, default_value = "RS256")]
    alg: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, upgrade } => start(config, upgrade, false),
        Command::Demo { config } => {
            gateway::demo::default_webhook_secret();
            start(config, false, true)
        }
        Command::WebhookSign {
            config,
            verifier,
            id,
            timestamp,
            body,
        } => match webhook_sign(&config, &verifier, id, timestamp, body) {
            Ok(args) => {
                println!("{args}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway webhook-sign: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Stream {
            url,
            headers,
            send,
            count,
            timeout,
        } => match stream(url, headers, send, count, &timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway stream: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match gateway::server::check(&config) {
            Ok((gw, store)) => {
                for w in &store.warnings {
                    eprintln!("{w}");
                }
                let s = store.load();
                let files =
                    gateway::config::policy_files(&gw.policies_path()).map_or(0, |f| f.len());
                println!(
                    "ok: {} listener(s), {} policy file(s), {} upstream(s), {} route(s)",
                    gw.file.listeners.len(),
                    files,
                    s.upstreams.len(),
                    s.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in &problems.0 {
                    eprintln!("{p}");
                }
                eprintln!("{} problem(s) found", problems.0.len());
                ExitCode::FAILURE
            }
        },
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                        eprintln!("cannot read the key from stdin: {e}");
                        return ExitCode::FAILURE;
                    }
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if key.is_empty() {
                eprintln!("the key is empty");
                return ExitCode::FAILURE;
            }
            println!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())));
            ExitCode::SUCCESS
        }
        Command::Openapi(OpenapiCommand::Export { config, output }) => {
            gateway::openapi::export_cli::main(&config, output.as_deref())
        }
        Command::Openapi(OpenapiCommand::Import(args)) => gateway::openapi::import::main(&args),
        Command::Token(args) => match token(*args) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway token: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn start(config: PathBuf, upgrade: bool, demo: bool) -> ExitCode {
    let opts = gateway::server::RunOptions {
        config,
        upgrade,
        demo,
    };
    match gateway::server::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn webhook_sign(
    config: &std::path::Path,
    name: &str,
    id: Option<String>,
    timestamp: Option<i64>,
    body: Option<String>,
) -> Result<String, String> {
    gateway::demo::default_webhook_secret();
    let (_, store) = gateway::server::check(config).map_err(|p| p.to_string())?;
    let snapshot = store.load();
    let v = snapshot
        .identities
        .webhooks
        .get(name)
        .ok_or_else(|| format!("no webhook verifier {name:?} in the configuration"))?;
    let body = match body {
        Some(b) => b,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read the body from stdin: {e}"))?;
            s
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let ts = timestamp.unwrap_or(i64::try_from(now).map_err(|e| e.to_string())?);
    let id = id.unwrap_or_else(|| format!("evt_{}", uuid::Uuid::new_v4().simple()));
    let headers = v.sign(&id, ts, body.as_bytes())?;
    Ok(headers
        .iter()
        .map(|(k, v)| format!("-H {k}:{v}"))
        .collect::<Vec<_>>()
        .join(" "))
}

fn token(
    TokenArgs {
        config,
        provider,
        sub,
        scopes,
        ttl,
        aud,
        kid,
        claims,
        key,
        alg,
    }: TokenArgs,
) -> Result<String, String> {
    gateway::demo::default_webhook_secret();
    let (_, store) = gateway::server::check(&config).map_err(|p| p.to_string())?;
    let snapshot = store.load();
    let p = snapshot
        .identities
        .providers
        .get(&provider)
        .ok_or_else(|| format!("no jwt provider {provider:?} in the configuration"))?;
    let lifetime = gateway::config::values::parse_duration(&ttl)?;
    let private_key = match key {
        Some(path) => {
            let pem =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Some((pem, gateway::auth::keys::parse_alg(&alg)?))
        }
        None => None,
    };
    let opts = gateway::auth::mint::MintOptions {
        subject: sub,
        scopes: scopes
            .iter()
            .flat_map(|s| s.split_whitespace())
            .map(str::to_string)
            .collect(),
        lifetime,
        audience: aud,
        kid,
        claims,
        private_key,
    };
    gateway::auth::mint::mint(p, &opts)
}

fn stream(
    url: String,
    headers: Vec<String>,
    send: Vec<String>,
    count: Option<usize>,
    timeout: &str,
) -> Result<(), String> {
    let timeout = humantime::parse_duration(timeout).map_err(|e| format!("--timeout: {e}"))?;
    let opts = gateway::demo::client::Options {
        url,
        headers,
        send,
        count,
        timeout,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(gateway::demo::client::run(opts, &mut std::io::stdout()))
        .map_err(|e| e.to_string())
}
