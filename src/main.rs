//! The `gateway` command line.

use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Mint a signed JWT for local testing.
    Token {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, upgrade } => start(config, upgrade, false),
        Command::Demo { config } => start(config, false, true),
        Command::Check { config } => match gateway::server::check(&config) {
            Ok((gw, store)) => {
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
        Command::Token { .. } => {
            eprintln!("gateway token: JWT providers are not supported yet");
            ExitCode::from(2)
        }
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
