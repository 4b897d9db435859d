//! TLS termination: certificates chosen by SNI, client certificates, and their reload.
//!
//! Each TLS listener has a [`ListenerTls`]: its certificate pairs and (with `client_auth`)
//! its client-certificate verifier, both behind `ArcSwap`s that the handshakes read. A
//! reload reads every file again and swaps the new material in only if all of it loads;
//! connections already open keep the session they negotiated.

pub mod client;
pub mod pem;

use crate::config::gateway::{ClientAuthMode, ListenerTls as ListenerTlsDef};
use crate::config::{GatewayConfig, Problems};
use arc_swap::ArcSwap;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, ResolvesServerCert};
use std::path::PathBuf;
use std::sync::Arc;

type DynVerifier = Arc<dyn pingora_rustls::ClientCertVerifier>;

/// Certificates that expire sooner than this are reported by `gateway check`.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// One loaded certificate chain and key.
#[derive(Debug)]
pub struct Pair {
    pub key: Arc<CertifiedKey>,
    /// DNS names from the SANs (or the CN when there are none), lower case.
    pub names: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
}

impl Pair {
    fn matches(&self, sni: &str) -> bool {
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            // A wildcard covers exactly one label.
            Some(suffix) => sni
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => n == sni,
        })
    }
}

/// The certificates of one listener, chosen by SNI.
#[derive(Debug)]
pub struct Certs {
    pairs: ArcSwap<Vec<Pair>>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let pairs = self.pairs.load();
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let exact = sni
            .as_deref()
            .and_then(|s| pairs.iter().find(|p| p.names.iter().any(|n| n == s)));
        let any = || {
            sni.as_deref()
                .and_then(|s| pairs.iter().find(|p| p.matches(s)))
        };
        exact
            .or_else(any)
            .or_else(|| pairs.first())
            .map(|p| p.key.clone())
    }
}

/// The TLS material of one listener.
#[derive(Debug)]
pub struct ListenerTls {
    pub name: String,
    pub certs: Arc<Certs>,
    pub client: Option<Arc<client::Verifier>>,
}

/// Material read from files, not yet in use.
pub struct Loaded {
    pairs: Vec<Vec<Pair>>,
    verifiers: Vec<Option<DynVerifier>>,
    /// `file:line: warning: ...` for certificates close to expiry.
    pub warnings: Vec<String>,
}

/// Every file a listener's TLS refers to.
pub fn files(gw: &GatewayConfig) -> Vec<PathBuf> {
    let dir = gw.dir();
    let mut out = Vec::new();
    for l in gw.file.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        for c in &l.certs {
            out.push(dir.join(&c.cert));
            out.push(dir.join(&c.key));
        }
        if let Some(ca) = &l.client_auth {
            out.push(dir.join(&ca.ca));
        }
    }
    out
}

fn load_listener(
    gw: &GatewayConfig,
    i: usize,
    def: &ListenerTlsDef,
    warnings: &mut Vec<String>,
    p: &mut Problems,
) -> Option<(Vec<Pair>, Option<DynVerifier>)> {
    let dir = gw.dir();
    let at = format!("listeners.{i}.tls");
    let before = p.len();
    if def.certs.is_empty() {
        p.push(gw.problem(
            &format!("{at}.certs"),
            "a TLS listener needs at least one certificate",
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut pairs = Vec::new();
    for (j, c) in def.certs.iter().enumerate() {
        match pem::load_pair(&dir.join(&c.cert), &dir.join(&c.key)) {
            Ok(pair) => {
                let days = (pair.not_after - now) / 86_400;
                if pair.not_after <= now {
                    p.push(gw.problem(
                        &format!("{at}.certs.{j}"),
                        format!("certificate {} has expired", c.cert.display()),
                    ));
                } else if days < EXPIRY_WARNING_DAYS {
                    let msg = format!(
                        "warning: certificate {} expires in {days} days",
                        c.cert.display()
                    );
                    warnings.push(gw.problem(&format!("{at}.certs.{j}"), msg).to_string());
                }
                pairs.push(pair);
            }
            Err(e) => p.push(gw.problem(&format!("{at}.certs.{j}"), e)),
        }
    }
    let verifier = match &def.client_auth {
        None => None,
        Some(ca) => {
            match client::webpki_verifier(&dir.join(&ca.ca), ca.mode == ClientAuthMode::Required) {
                Ok(v) => Some(v),
                Err(e) => {
                    p.push(gw.problem(&format!("{at}.client_auth.ca"), e));
                    None
                }
            }
        }
    };
    (p.len() == before).then_some((pairs, verifier))
}

/// Reads every listener's certificates, keys and CAs; all problems together.
pub fn load(gw: &GatewayConfig) -> Result<Loaded, Problems> {
    pingora_rustls::install_default_crypto_provider();
    let mut p = Problems::default();
    let mut loaded = Loaded {
        pairs: Vec::new(),
        verifiers: Vec::new(),
        warnings: Vec::new(),
    };
    for (i, l) in gw.file.listeners.iter().enumerate() {
        let Some(def) = &l.tls else { continue };
        if let Some((pairs, verifier)) = load_listener(gw, i, def, &mut loaded.warnings, &mut p) {
            loaded.pairs.push(pairs);
            loaded.verifiers.push(verifier);
        }
    }
    p.into_result(loaded)
}

/// The live TLS material of every TLS listener, in listener order.
#[derive(Debug, Default)]
pub struct TlsSet {
    pub listeners: Vec<Arc<ListenerTls>>,
}

impl TlsSet {
    /// Builds the set from material loaded at start.
    pub fn new(gw: &GatewayConfig, loaded: Loaded) -> TlsSet {
        let names = gw.file.listeners.iter().filter(|l| l.tls.is_some());
        let listeners = names
            .zip(loaded.pairs.into_iter().zip(loaded.verifiers))
            .map(|(l, (pairs, verifier))| {
                Arc::new(ListenerTls {
                    name: l.name.clone(),
                    certs: Arc::new(Certs {
                        pairs: ArcSwap::from_pointee(pairs),
                    }),
                    client: verifier.map(|v| Arc::new(client::Verifier::new(v))),
                })
            })
            .collect();
        TlsSet { listeners }
    }

    /// Puts reloaded material in use. Listeners are fixed at start, so the shapes agree.
    pub fn apply(&self, loaded: Loaded) {
        let material = loaded.pairs.into_iter().zip(loaded.verifiers);
        for (l, (pairs, verifier)) in self.listeners.iter().zip(material) {
            l.certs.pairs.store(Arc::new(pairs));
            if let (Some(live), Some(v)) = (&l.client, verifier) {
                live.replace(v);
            }
        }
    }
}
