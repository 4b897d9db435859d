//! TLS end to end through the real `gateway` binary: certificates chosen by SNI (exact
//! names, wildcards, the default for unknown or absent SNI, chains), ALPN and HTTP/2 for
//! proxied and aggregate routes, `X-Forwarded-Proto: https`, TLS 1.2 and 1.3 only,
//! certificate rotation on reload (open connections keep working, a bad pair is refused
//! with 422 and the old pair kept, file changes are watched), client certificates (modes
//! `optional` and `required`, the `client_cert` auth method, consumers by subject, their
//! scopes), upstream TLS (`scheme: https`, CA, SNI, `verify`), and what `gateway check`
//! says about keys and expiring certificates.
//!
//! Every certificate is made by the test with rcgen; the upstreams behind TLS are axum
//! behind tokio-rustls, started in the test.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, free_port, line_of, ConfigDir, Gateway, Upstream};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, ProtocolVersion, SignatureScheme, SupportedProtocolVersion};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// A certificate authority made by the test (a root, or an intermediate of one).
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
    /// This CA's own chain up to, not including, the root (for intermediates).
    chain_pem: String,
}

/// A certificate and its key, PEM and DER.
struct Leaf {
    /// The leaf followed by the intermediates of its issuer (what a server presents).
    chain_pem: String,
    key_pem: String,
    der: Vec<u8>,
    key_der: Vec<u8>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Gateway TLS tests");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl Ca {
    /// A self-signed root.
    fn root(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("ca key");
        let params = ca_params(cn);
        let cert = params.self_signed(&key).expect("self-sign ca");
        Ca {
            params,
            key,
            cert_pem: cert.pem(),
            chain_pem: String::new(),
        }
    }

    /// An intermediate CA signed by this one.
    fn intermediate(&self, cn: &str) -> Ca {
        let key = KeyPair::generate().expect("intermediate key");
        let params = ca_params(cn);
        let cert = params
            .signed_by(&key, &self.issuer())
            .expect("sign intermediate");
        let cert_pem = cert.pem();
        Ca {
            params,
            key,
            chain_pem: format!("{cert_pem}{}", self.chain_pem),
            cert_pem,
        }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// A server certificate for `sans`.
    fn server(&self, sans: &[&str]) -> Leaf {
        self.issue(sans, &[(DnType::CommonName, sans[0])], false, None)
    }

    /// A client certificate with `subject`.
    fn client(&self, subject: &[(DnType, &str)]) -> Leaf {
        self.issue(&[], subject, true, None)
    }

    /// A certificate; `not_after` as (year, month, day) when it must expire soon.
    fn issue(
        &self,
        sans: &[&str],
        subject: &[(DnType, &str)],
        client: bool,
        not_after: Option<(i32, u8, u8)>,
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<String>>())
                .expect("leaf params");
        let mut dn = DistinguishedName::new();
        for (t, v) in subject {
            dn.push(t.clone(), *v);
        }
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        p.use_authority_key_identifier_extension = true;
        if let Some((y, m, d)) = not_after {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let cert = p.signed_by(&key, &self.issuer()).expect("sign leaf");
        let cert_pem = cert.pem();
        Leaf {
            chain_pem: format!("{cert_pem}{}", self.chain_pem),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

impl Leaf {
    /// A self-signed server certificate for `sans`.
    fn self_signed(sans: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<String>>())
            .expect("params");
        let cert = p.self_signed(&key).expect("self-sign");
        Leaf {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// A client identity for reqwest: key and certificate in one PEM.
    fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.key_pem, self.chain_pem).as_bytes())
            .expect("identity")
    }

    fn rustls_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.der.clone())]
    }

    fn rustls_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// Today plus `days` as (year, month, day) in UTC.
fn date_in(days: i64) -> (i32, u8, u8) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    civil_from_days(now / 86_400 + days)
}

/// Howard Hinnant's days-to-civil algorithm (days since 1970-01-01).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    ((if m <= 2 { y + 1 } else { y }) as i32, m as u8, d as u8)
}

/// Writes `text` at `rel` under `dir` (creating folders) through a rename, so that a
/// watcher never reads half a file.
fn put(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}

/// Writes a certificate (with its chain) and its key as `certs/NAME.pem` and `certs/NAME.key`.
fn put_pair(dir: &Path, name: &str, leaf: &Leaf) {
    put(dir, &format!("certs/{name}.pem"), &leaf.chain_pem);
    put(dir, &format!("certs/{name}.key"), &leaf.key_pem);
}

fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

// ---------------------------------------------------------------------------------------
// The gateway with a TLS listener
// ---------------------------------------------------------------------------------------

/// A gateway with the plain listener `public` (the harness's port) and the TLS listener
/// `secure` on `tls_port`.
struct TlsGateway {
    gw: Gateway,
    tls_port: u16,
}

impl TlsGateway {
    fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls_port))
    }

    /// `https://HOST:PORT/PATH` on the TLS listener.
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.tls_port)
    }

    fn dir(&self) -> &Path {
        self.gw.config.path()
    }

    async fn reload(&self) -> (u16, Value) {
        let r = client()
            .post(self.gw.admin_url("/reload"))
            .send()
            .await
            .expect("POST /reload");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// gateway.yaml with the plain listener on `c.port`, the TLS listener on `tls_port` with
/// `tls` (YAML lines at the indentation of `tls:`'s contents, i.e. 6 spaces) and the
/// harness's admin settings.
fn gateway_yaml(c: &ConfigDir, tls_port: u16, tls: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    bind: 127.0.0.1:{port}\n  - name: secure\n    bind: 127.0.0.1:{tls_port}\n    tls:\n{tls}admin:\n  bind: 127.0.0.1:{admin}\npolicies: policies/\nthreads: 2\nshutdown_grace: 1s\n",
        port = c.port,
        admin = c.admin,
    )
}

/// The `tls:` contents for `certs` (names of pairs written with `put_pair`) and an
/// optional `client_auth` (CA file name, mode).
fn tls_block(certs: &[&str], client_auth: Option<(&str, &str)>) -> String {
    let mut s = String::from("      certs:\n");
    for c in certs {
        s.push_str(&format!(
            "        - {{ cert: certs/{c}.pem, key: certs/{c}.key }}\n"
        ));
    }
    if let Some((ca, mode)) = client_auth {
        s.push_str(&format!(
            "      client_auth: {{ ca: certs/{ca}.pem, mode: {mode} }}\n"
        ));
    }
    s
}

/// Starts the gateway on `policy` with the TLS listener configured by `tls`; `files`
/// (pairs, CA files) are written by `prepare` into the configuration directory first.
async fn start_tls(policy: &str, tls: &str, prepare: impl FnOnce(&Path)) -> TlsGateway {
    let c = ConfigDir::new("", &[("routes.yaml", policy)]);
    prepare(c.path());
    let tls_port = free_port();
    std::fs::write(c.gateway_yaml(), gateway_yaml(&c, tls_port, tls)).expect("gateway.yaml");
    let gw = Gateway::start_in(c, &[]).await;
    TlsGateway { gw, tls_port }
}

/// The API key of consumer `keyed`.
const KEYED_KEY: &str = "test-only-tls-keyed-key";

/// Routes on upstream `echo`:
/// - `public` `/public/*`: no auth;
/// - `mtls` `/mtls/*`: `auth: [client_cert]`;
/// - `scoped` `/scoped/*`: `auth: [client_cert]`, scope orders:read;
/// - `either` `/either/*`: `auth: [client_cert, api_key]`;
/// - `agg` `/agg`: public aggregate of calls `one` and `two` on `echo`.
///
/// Consumers: `acme` (subject `CN=acme, O=Acme Corp`, scope orders:read), `beta` (subject
/// `CN=beta`, no scopes), `keyed` (API key `KEYED_KEY`).
fn policy(echo: &str) -> String {
    format!(
        r#"upstreams:
  echo:
    targets: ["{echo}"]
api_keys:
  header: X-API-Key
consumers:
  acme:
    client_cert: {{ subject: "CN=acme, O=Acme Corp" }}
    scopes: [orders:read]
  beta:
    client_cert: {{ subject: "CN=beta" }}
  keyed:
    api_keys: ["{keyed}"]
routes:
  - name: public
    match: {{ path: /public/* }}
    auth: none
    upstream: echo
  - name: mtls
    match: {{ path: /mtls/* }}
    auth: [client_cert]
    upstream: echo
  - name: scoped
    match: {{ path: /scoped/* }}
    auth: [client_cert]
    scopes: [orders:read]
    upstream: echo
  - name: either
    match: {{ path: /either/* }}
    auth: [client_cert, api_key]
    upstream: echo
  - name: agg
    match: {{ path: /agg, methods: [GET] }}
    auth: none
    aggregate:
      timeout: 5s
      calls:
        - {{ name: one, upstream: echo, path: /one, required: true }}
        - {{ name: two, upstream: echo, path: /two, required: true }}
      merge: nest
"#,
        keyed = key_hash(KEYED_KEY),
    )
}

/// The names the HTTPS clients resolve to 127.0.0.1 (the URL gives the port).
const NAMES: &[&str] = &[
    "a.example.test",
    "b.example.test",
    "x.w.example.test",
    "w.example.test",
    "unknown.example.test",
];

/// An HTTPS client trusting only `ca_pem`, resolving `NAMES` to 127.0.0.1, recording the
/// server's certificate (`TlsInfo`).
fn https(ca_pem: &str) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca"))
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15));
    for n in NAMES {
        b = b.resolve(n, SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    b
}

/// The end-entity certificate the server presented for `resp`.
fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("no TlsInfo / peer certificate on the response")
        .to_vec()
}

/// Which of `known` `der` is (by name), for readable assertion messages.
fn which<'a>(der: &[u8], known: &[(&'a str, &Leaf)]) -> &'a str {
    known
        .iter()
        .find(|(_, l)| l.der == der)
        .map(|(n, _)| *n)
        .unwrap_or("<unknown certificate>")
}

// ---------------------------------------------------------------------------------------
// A raw TLS client (rustls) and HTTP/1.1 over it
// ---------------------------------------------------------------------------------------

/// Accepts any server certificate (the tests compare what was presented themselves) but
/// still checks the handshake signatures.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a raw TLS connection is made.
struct Dial<'a> {
    /// SNI sent (None: none).
    sni: Option<&'a str>,
    versions: &'a [&'static SupportedProtocolVersion],
    alpn: &'a [&'a str],
    identity: Option<&'a Leaf>,
}

impl Default for Dial<'_> {
    fn default() -> Self {
        Dial {
            sni: Some("a.example.test"),
            versions: rustls::ALL_VERSIONS,
            alpn: &["http/1.1"],
            identity: None,
        }
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects and completes the handshake (as far as the client can tell: with TLS 1.3 a
/// refused client certificate shows only on the first read).
async fn dial(addr: SocketAddr, d: &Dial<'_>) -> io::Result<Tls> {
    let p = provider();
    let b = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(d.versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(p)));
    let mut cfg = match d.identity {
        Some(l) => b
            .with_client_auth_cert(l.rustls_chain(), l.rustls_key())
            .expect("client auth cert"),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = d.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    cfg.enable_sni = d.sni.is_some();
    let name =
        ServerName::try_from(d.sni.unwrap_or("no-sni.invalid").to_string()).expect("server name");
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// The end-entity certificate of a raw connection.
fn presented(s: &Tls) -> Vec<u8> {
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("no server certificate")
}

/// An HTTP/1.1 keep-alive connection over TLS.
struct H1 {
    s: Tls,
    buf: Vec<u8>,
}

impl H1 {
    fn new(s: Tls) -> H1 {
        H1 { s, buf: Vec::new() }
    }

    /// `GET path` with `Host: host`; (status, body).
    async fn get(&mut self, host: &str, path: &str) -> io::Result<(u16, String)> {
        tokio::time::timeout(Duration::from_secs(10), self.get_inner(host, path))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?
    }

    async fn get_inner(&mut self, host: &str, path: &str) -> io::Result<(u16, String)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tls-test\r\n\r\n");
        self.s.write_all(req.as_bytes()).await?;
        self.s.flush().await?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line: {head}")))?;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let body = if let Some(n) = header("content-length") {
            let n: usize = n.parse().map_err(io::Error::other)?;
            while self.buf.len() < n {
                self.fill().await?;
            }
            self.buf.drain(..n).collect::<Vec<u8>>()
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(io::Error::other)?;
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // Trailers (none expected), then the final CRLF.
                    loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            let empty = i == 0;
                            self.buf.drain(..i + 2);
                            if empty {
                                break;
                            }
                        } else {
                            self.fill().await?;
                        }
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
            }
            body
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            return Err(io::Error::other(format!(
                "answer without length (the connection would not stay open): {head}"
            )));
        };
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Connects with `d` and sends one `GET path`; Ok(status) or the error (handshake refused,
/// connection closed, alert) as text.
async fn try_get(addr: SocketAddr, d: &Dial<'_>, path: &str) -> Result<u16, String> {
    let s = dial(addr, d).await.map_err(|e| format!("handshake: {e}"))?;
    let mut h = H1::new(s);
    h.get(d.sni.unwrap_or("127.0.0.1"), path)
        .await
        .map(|(status, _)| status)
        .map_err(|e| format!("request: {e}"))
}

// ---------------------------------------------------------------------------------------
// Upstreams behind TLS (axum over tokio-rustls)
// ---------------------------------------------------------------------------------------

/// Streams whose TLS handshake completed, handed to axum.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// An HTTPS upstream echoing each request as JSON (path, headers, `"tls": true`); records
/// the SNI of every completed handshake and counts the failed ones.
struct TlsUpstream {
    addr: SocketAddr,
    sni: Arc<Mutex<Vec<Option<String>>>>,
    failed_handshakes: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl TlsUpstream {
    async fn start(leaf: &Leaf) -> TlsUpstream {
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(leaf.rustls_chain(), leaf.rustls_key())
            .expect("upstream server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sni = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (sni2, failed2) = (sni.clone(), failed.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, tx, sni, failed) =
                    (acceptor.clone(), tx.clone(), sni2.clone(), failed2.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            sni.lock()
                                .unwrap()
                                .push(s.get_ref().1.server_name().map(str::to_string));
                            let _ = tx.send((s, peer)).await;
                        }
                        _ => {
                            failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
            let headers: serde_json::Map<String, Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            axum::Json(serde_json::json!({
                "path": req.uri().path(),
                "headers": headers,
                "tls": true,
            }))
        });
        let serve = tokio::spawn(async move {
            let _ = axum::serve(TlsListener { rx, addr }, app).await;
        });
        TlsUpstream {
            addr,
            sni,
            failed_handshakes: failed,
            tasks: vec![accept, serve],
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. SNI
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate_by_name_wildcard_and_falls_back_to_the_first() {
    let echo = Upstream::start("echo").await;
    let ca = Ca::root("Test Root CA");
    let inter = ca.intermediate("Test Intermediate CA");
    let a = ca.server(&["a.example.test"]);
    // b is issued by an intermediate: its file holds the chain, which the client (that
    // trusts only the root) needs.
    let b = inter.server(&["b.example.test"]);
    let w = ca.server(&["*.w.example.test"]);
    let known = [("a", &a), ("b", &b), ("w", &w)];
    let gw = start_tls(
        &policy(&echo.target()),
        &tls_block(&["a", "b", "w"], None),
        |d| {
            put_pair(d, "a", &a);
            put_pair(d, "b", &b);
            put_pair(d, "w", &w);
        },
    )
    .await;

    // Verified clients: the CA as the only root, SNI from the URL's name.
    let verified = https(&ca.cert_pem).build().unwrap();
    for (host, want) in [
        ("a.example.test", "a"),
        ("b.example.test", "b"),
        ("x.w.example.test", "w"),
    ] {
        let r = verified
            .get(gw.url(host, "/public/sni"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}; output:\n{}", gw.gw.output()));
        assert_eq!(r.status(), 200, "{host}");
        let got = peer_cert(&r);
        assert_eq!(
            which(&got, &known),
            want,
            "certificate presented for {host}"
        );
    }

    // Unknown names, the bare parent of the wildcard, and no SNI at all: the first pair.
    let lax = https(&ca.cert_pem)
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for host in ["unknown.example.test", "w.example.test", "127.0.0.1"] {
        let r = lax
            .get(gw.url(host, "/public/sni"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(r.status(), 200, "{host}");
        assert_eq!(
            which(&peer_cert(&r), &known),
            "a",
            "certificate presented for {host}"
        );
    }
    // With SNI switched off in the client, b.example.test gets the default too.
    let no_sni = https(&ca.cert_pem)
        .danger_accept_invalid_certs(true)
        .tls_sni(false)
        .build()
        .unwrap();
    let r = no_sni
        .get(gw.url("b.example.test", "/public/sni"))
        .send()
        .await
        .unwrap();
    assert_eq!(which(&peer_cert(&r), &known), "a", "no SNI");

    // The same through a raw rustls client, which also sees the chain sent for b.
    for (sni, want) in [
        (Some("a.example.test"), "a"),
        (Some("b.example.test"), "b"),
        (Some("deep.w.example.test"), "w"),
        (Some("nothing.test"), "a"),
        (None, "a"),
    ] {
        let s = dial(
            gw.tls_addr(),
            &Dial {
                sni,
                ..Dial::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{sni:?}: {e}"));
        assert_eq!(
            which(&presented(&s), &known),
            want,
            "raw client, SNI {sni:?}"
        );
        if want == "b" {
            let chain = s.get_ref().1.peer_certificates().unwrap().len();
            assert_eq!(
                chain, 2,
                "b.pem holds leaf + intermediate; all of it is sent"
            );
        }
        let mut h = H1::new(s);
        let (status, _) = h
            .get(sni.unwrap_or("127.0.0.1"), "/public/raw")
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
}

// ---------------------------------------------------------------------------------------
// 2. ALPN, HTTP/2, X-Forwarded-Proto
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_negotiated_by_alpn_for_proxied_and_aggregate_routes() {
    let echo = Upstream::start("echo").await;
    let ca = Ca::root("Test Root CA");
    let a = ca.server(&["a.example.test"]);
    let gw = start_tls(&policy(&echo.target()), &tls_block(&["a"], None), |d| {
        put_pair(d, "a", &a)
    })
    .await;

    // ALPN as a raw client sees it.
    for (offer, want) in [
        (&["h2", "http/1.1"][..], Some("h2")),
        (&["http/1.1"][..], Some("http/1.1")),
        (&["h2"][..], Some("h2")),
    ] {
        let s = dial(
            gw.tls_addr(),
            &Dial {
                alpn: offer,
                ..Dial::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("ALPN {offer:?}: {e}"));
        let got = s
            .get_ref()
            .1
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        assert_eq!(got.as_deref(), want, "ALPN offered {offer:?}");
    }

    // reqwest offers h2 and http/1.1 (not prior knowledge): HTTP/2 is chosen.
    let h2 = https(&ca.cert_pem).build().unwrap();
    let r = h2
        .get(gw.url("a.example.test", "/public/h2?x=1"))
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}; output:\n{}", gw.gw.output()));
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "proxied route");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/public/h2", "{body}");
    assert_eq!(body["query"], "x=1", "{body}");
    assert_eq!(
        body["headers"]["x-forwarded-proto"], "https",
        "upstream behind a TLS listener: {body}"
    );

    // A request body over HTTP/2 arrives whole.
    let payload = vec![b'z'; 200_000];
    let r = h2
        .post(gw.url("a.example.test", "/public/upload"))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body_len"], payload.len(), "{body}");
    assert_eq!(
        body["body_sha256"],
        hex::encode(Sha256::digest(&payload)),
        "{body}"
    );

    // Several streams at once on the one HTTP/2 connection.
    let many = futures::future::join_all((0..20).map(|i| {
        let h2 = h2.clone();
        let url = gw.url("a.example.test", &format!("/public/many/{i}"));
        async move {
            let r = h2.get(url).send().await.expect("concurrent h2");
            (r.version(), r.status().as_u16())
        }
    }))
    .await;
    assert!(
        many.iter()
            .all(|(v, s)| *v == reqwest::Version::HTTP_2 && *s == 200),
        "{many:?}"
    );

    // HTTP/2 heads are held to the same limits as HTTP/1 ones once decoded: 150 fields
    // (default limit 100) and one 40 KiB value (default 32KiB) are 431, never forwarded.
    let hits = echo.hits.load(std::sync::atomic::Ordering::SeqCst);
    let mut many_fields = h2.get(gw.url("a.example.test", "/public/fields"));
    for i in 0..150 {
        many_fields = many_fields.header(format!("x-field-{i}"), "v");
    }
    let big_value = h2
        .get(gw.url("a.example.test", "/public/big"))
        .header("x-big", "b".repeat(40 << 10));
    for (what, req) in [("150 fields", many_fields), ("a 40 KiB value", big_value)] {
        let r = req.send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "{what}");
        assert_eq!(r.status(), 431, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "request_header_too_large",
            "{what}: {body}"
        );
    }
    assert_eq!(
        echo.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits,
        "an oversized HTTP/2 head reached the upstream"
    );

    // An aggregate route over HTTP/2; every call carries X-Forwarded-Proto: https.
    let r = h2
        .get(gw.url("a.example.test", "/agg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "aggregate route");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    for call in ["one", "two"] {
        assert_eq!(body[call]["path"], format!("/{call}"), "{body}");
        assert_eq!(
            body[call]["headers"]["x-forwarded-proto"], "https",
            "aggregate call {call}: {body}"
        );
    }

    // HTTP/1.1 when the client asks for it only, with X-Forwarded-Proto https too.
    let h1 = https(&ca.cert_pem).http1_only().build().unwrap();
    let r = h1
        .get(gw.url("a.example.test", "/public/h1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https", "{body}");

    // The plain listener still says http.
    let body: Value = client()
        .get(gw.gw.url("/public/plain"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "http", "{body}");
    let body: Value = client()
        .get(gw.gw.url("/agg"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["one"]["headers"]["x-forwarded-proto"], "http",
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Protocol versions
// ---------------------------------------------------------------------------------------

/// Runs `openssl s_client` against `port` with `args`; (exit success, output).
async fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "a.example.test",
    ])
    .args(args)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("openssl s_client hung")
        .expect("openssl s_client (the openssl command line tool must be installed)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Whether s_client's output shows a completed handshake.
fn handshake_done(out: &str) -> bool {
    !out.contains("Cipher is (NONE)") && out.contains("-----BEGIN CERTIFICATE-----")
}

const OLD_CIPHERS: &str = "DEFAULT:@SECLEVEL=0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_1_3_are_accepted() {
    let echo = Upstream::start("echo").await;
    let ca = Ca::root("Test Root CA");
    let a = ca.server(&["a.example.test"]);
    let gw = start_tls(&policy(&echo.target()), &tls_block(&["a"], None), |d| {
        put_pair(d, "a", &a)
    })
    .await;

    // Control: this openssl can speak TLS 1.1 with this kind of certificate, so a refusal
    // below is the gateway's.
    let port = free_port();
    let dir = gw.dir().join("certs");
    let mut server = tokio::process::Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(dir.join("a.pem"))
        .arg("-key")
        .arg(dir.join("a.key"))
        .args(["-tls1_1", "-cipher", OLD_CIPHERS, "-quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, out) = s_client(port, &["-tls1_1", "-cipher", OLD_CIPHERS]).await;
    assert!(
        ok && handshake_done(&out) && out.contains("TLSv1.1"),
        "control: openssl should do TLS 1.1 with its own server:\n{out}"
    );
    let _ = server.kill().await;

    // TLS 1.1 and 1.0 are refused.
    for v in ["-tls1_1", "-tls1"] {
        let (ok, out) = s_client(gw.tls_port, &[v, "-cipher", OLD_CIPHERS]).await;
        assert!(
            !ok && !handshake_done(&out),
            "{v} must be refused, got:\n{out}"
        );
    }
    // TLS 1.2 and 1.3 are accepted.
    for (v, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, out) = s_client(gw.tls_port, &[v]).await;
        assert!(
            ok && handshake_done(&out) && out.contains(&format!("New, {name}, Cipher is")),
            "{v} must be accepted, got:\n{out}"
        );
    }

    // The same with rustls, which reports the negotiated version, and serves a request.
    for (versions, want) in [
        (&[&rustls::version::TLS12][..], ProtocolVersion::TLSv1_2),
        (&[&rustls::version::TLS13][..], ProtocolVersion::TLSv1_3),
    ] {
        let s = dial(
            gw.tls_addr(),
            &Dial {
                versions,
                ..Dial::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{want:?}: {e}"));
        assert_eq!(s.get_ref().1.protocol_version(), Some(want));
        let mut h = H1::new(s);
        assert_eq!(h.get("a.example.test", "/public/v").await.unwrap().0, 200);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Rotation
// ---------------------------------------------------------------------------------------

/// The certificate a new connection (SNI a.example.test) is given.
async fn current_cert(addr: SocketAddr) -> Vec<u8> {
    presented(&dial(addr, &Dial::default()).await.expect("handshake"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_reload_without_dropping_open_connections() {
    let echo = Upstream::start("echo").await;
    let ca = Ca::root("Test Root CA");
    let a1 = ca.server(&["a.example.test"]);
    let a2 = ca.server(&["a.example.test"]);
    let a3 = ca.server(&["a.example.test"]);
    let a4 = ca.server(&["a.example.test"]);
    let other = ca.server(&["a.example.test"]);
    let known = [("a1", &a1), ("a2", &a2), ("a3", &a3), ("a4", &a4)];
    let gw = start_tls(&policy(&echo.target()), &tls_block(&["a"], None), |d| {
        put_pair(d, "a", &a1)
    })
    .await;
    let addr = gw.tls_addr();

    // A keep-alive connection on a1.
    let s = dial(addr, &Dial::default()).await.expect("handshake");
    assert_eq!(which(&presented(&s), &known), "a1");
    let mut old = H1::new(s);
    assert_eq!(old.get("a.example.test", "/public/1").await.unwrap().0, 200);
    // An HTTP/2 connection too (reqwest keeps it).
    let h2 = https(&ca.cert_pem).build().unwrap();
    let r = h2
        .get(gw.url("a.example.test", "/public/h2-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(which(&peer_cert(&r), &known), "a1");

    // New pair, POST /reload: new connections get a2.
    put_pair(gw.dir(), "a", &a2);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "reload: {body}");
    assert_eq!(
        which(&current_cert(addr).await, &known),
        "a2",
        "a new connection after the reload"
    );
    // The open connections keep working (on the certificate they started with).
    let (status, _) = old
        .get("a.example.test", "/public/2")
        .await
        .expect("the keep-alive connection opened before the reload");
    assert_eq!(status, 200);
    assert_eq!(which(&presented(&old.s), &known), "a1");
    let r = h2
        .get(gw.url("a.example.test", "/public/h2-2"))
        .send()
        .await
        .expect("HTTP/2 client after the reload");
    assert_eq!(r.status(), 200);

    // A key that does not belong to the certificate: 422, a2 still served.
    let generation = gw.gw.config().await["generation"].clone();
    put(gw.dir(), "certs/a.key", &other.key_pem);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 422, "mismatched key must fail the reload: {body}");
    let errors = body["errors"].as_array().cloned().unwrap_or_default();
    assert!(!errors.is_empty(), "422 without errors: {body}");
    let config = gw.gw.config().await;
    assert!(
        config["last_error"].is_string(),
        "/config must show the failure: {config}"
    );
    assert_eq!(config["generation"], generation, "{config}");
    assert_eq!(
        which(&current_cert(addr).await, &known),
        "a2",
        "after a failed reload"
    );
    assert_eq!(old.get("a.example.test", "/public/3").await.unwrap().0, 200);

    // Garbage PEM in the certificate file: 422 too, a2 still served.
    put_pair(gw.dir(), "a", &a2);
    put(
        gw.dir(),
        "certs/a.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    let (status, body) = gw.reload().await;
    assert_eq!(
        status, 422,
        "garbage certificate must fail the reload: {body}"
    );
    assert!(gw.gw.config().await["last_error"].is_string());
    assert_eq!(which(&current_cert(addr).await, &known), "a2");
    // Not PEM at all.
    put(gw.dir(), "certs/a.pem", "hello\n");
    let (status, body) = gw.reload().await;
    assert_eq!(
        status, 422,
        "a non-PEM certificate must fail the reload: {body}"
    );
    assert_eq!(which(&current_cert(addr).await, &known), "a2");

    // A good pair again: 200, served, last_error cleared.
    put_pair(gw.dir(), "a", &a3);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "reload: {body}");
    assert_eq!(which(&current_cert(addr).await, &known), "a3");
    let config = gw.gw.config().await;
    assert!(config["last_error"].is_null(), "{config}");
    assert_eq!(old.get("a.example.test", "/public/4").await.unwrap().0, 200);

    // Changed files are picked up without being asked.
    put_pair(gw.dir(), "a", &a4);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = which(&current_cert(addr).await, &known);
        if now == "a4" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "changed certificate files not picked up within 15s (still {now}); output:\n{}",
            gw.gw.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(old.get("a.example.test", "/public/5").await.unwrap().0, 200);
}

// ---------------------------------------------------------------------------------------
// 5. Client certificates
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_identify_consumers() {
    let echo = Upstream::start("echo").await;
    let ca = Ca::root("Server CA");
    let clients = Ca::root("Partners CA");
    let stranger_ca = Ca::root("Stranger CA");
    let a = ca.server(&["a.example.test"]);
    let acme = clients.client(&[
        (DnType::CommonName, "acme"),
        (DnType::OrganizationName, "Acme Corp"),
        (DnType::CountryName, "DE"),
    ]);
    let acme_wrong_org = clients.client(&[
        (DnType::CommonName, "acme"),
        (DnType::OrganizationName, "Other Corp"),
    ]);
    let acme_no_org = clients.client(&[(DnType::CommonName, "acme")]);
    let beta = clients.client(&[
        (DnType::CommonName, "beta"),
        (DnType::OrganizationName, "Beta Ltd"),
    ]);
    let nobody = clients.client(&[(DnType::CommonName, "nobody")]);
    let forged = stranger_ca.client(&[
        (DnType::CommonName, "acme"),
        (DnType::OrganizationName, "Acme Corp"),
    ]);
    let gw = start_tls(
        &policy(&echo.target()),
        &tls_block(&["a"], Some(("partners-ca", "optional"))),
        |d| {
            put_pair(d, "a", &a);
            put(d, "certs/partners-ca.pem", &clients.cert_pem);
        },
    )
    .await;
    let with = |leaf: Option<&Leaf>| {
        let b = https(&ca.cert_pem);
        match leaf {
            Some(l) => b.identity(l.identity()),
            None => b,
        }
        .build()
        .unwrap()
    };
    let get = |c: reqwest::Client, path: &'static str| {
        let url = gw.url("a.example.test", path);
        async move {
            c.get(url)
                .header("x-consumer-id", "spoofed")
                .send()
                .await
                .map_err(|e| format!("{e:?}"))
        }
    };

    // No certificate: public routes work, client_cert routes answer 401.
    let r = get(with(None), "/public/x").await.expect("no cert, public");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["headers"]["x-consumer-id"].is_null(),
        "spoofed consumer header must be removed: {body}"
    );
    let r = get(with(None), "/mtls/x").await.expect("no cert, mtls");
    assert_eq!(r.status(), 401);
    assert!(
        r.headers().contains_key("www-authenticate"),
        "401 without WWW-Authenticate: {:?}",
        r.headers()
    );
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");

    // acme's certificate: 200, X-Consumer-Id acme (the client's own value replaced), and
    // its scope lets it into `scoped`.
    for path in ["/mtls/x", "/scoped/x", "/either/x", "/public/x"] {
        let r = get(with(Some(&acme)), path)
            .await
            .unwrap_or_else(|e| panic!("acme {path}: {e}; output:\n{}", gw.gw.output()));
        assert_eq!(r.status(), 200, "acme {path}");
        if path != "/public/x" {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["headers"]["x-consumer-id"], "acme", "{path}: {body}");
        }
    }
    // beta (extra subject attributes are fine) has no orders:read: 403 on `scoped`.
    let r = get(with(Some(&beta)), "/mtls/x").await.expect("beta");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-consumer-id"], "beta", "{body}");
    let r = get(with(Some(&beta)), "/scoped/x")
        .await
        .expect("beta scoped");
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");

    // Trusted certificates that match no consumer: 401 (every attribute must match).
    for (name, leaf) in [
        ("CN=acme, O=Other Corp", &acme_wrong_org),
        ("CN=acme without O", &acme_no_org),
        ("CN=nobody", &nobody),
    ] {
        let r = get(with(Some(leaf)), "/mtls/x")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status(), 401, "{name}");
        let r = get(with(Some(leaf)), "/public/x")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status(), 200, "{name} on a public route");
    }

    // `either`: the API key works without a certificate; neither: 401.
    let r = with(None)
        .get(gw.url("a.example.test", "/either/x"))
        .header("x-api-key", KEYED_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-consumer-id"], "keyed", "{body}");
    let r = get(with(None), "/either/x").await.unwrap();
    assert_eq!(r.status(), 401);

    // A certificate from a CA the gateway does not trust: the handshake is refused (it is
    // not treated as "no certificate": even the public route fails).
    let r = get(with(Some(&forged)), "/public/x").await;
    assert!(
        r.is_err(),
        "a certificate from an untrusted CA must be refused, got {:?}",
        r.map(|r| r.status())
    );
    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        let got = try_get(
            gw.tls_addr(),
            &Dial {
                versions,
                identity: Some(&forged),
                ..Dial::default()
            },
            "/public/x",
        )
        .await;
        assert!(got.is_err(), "untrusted client certificate: {got:?}");
        // And the same versions with a trusted certificate are fine.
        let got = try_get(
            gw.tls_addr(),
            &Dial {
                versions,
                identity: Some(&acme),
                ..Dial::default()
            },
            "/mtls/x",
        )
        .await;
        assert_eq!(got, Ok(200), "acme over {versions:?}");
    }

    // HTTP/2 with a client certificate.
    let r = get(with(Some(&acme)), "/mtls/h2").await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_refuse_handshakes_without_one() {
    let echo = Upstream::start("echo").await;
    let ca = Ca::root("Server CA");
    let clients = Ca::root("Partners CA");
    let a = ca.server(&["a.example.test"]);
    let acme = clients.client(&[
        (DnType::CommonName, "acme"),
        (DnType::OrganizationName, "Acme Corp"),
    ]);
    let gw = start_tls(
        &policy(&echo.target()),
        &tls_block(&["a"], Some(("partners-ca", "required"))),
        |d| {
            put_pair(d, "a", &a);
            put(d, "certs/partners-ca.pem", &clients.cert_pem);
        },
    )
    .await;

    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        let got = try_get(
            gw.tls_addr(),
            &Dial {
                versions,
                ..Dial::default()
            },
            "/public/x",
        )
        .await;
        assert!(got.is_err(), "no client certificate, {versions:?}: {got:?}");
        let got = try_get(
            gw.tls_addr(),
            &Dial {
                versions,
                identity: Some(&acme),
                ..Dial::default()
            },
            "/mtls/x",
        )
        .await;
        assert_eq!(got, Ok(200), "acme, {versions:?}");
    }
    let r = https(&ca.cert_pem)
        .build()
        .unwrap()
        .get(gw.url("a.example.test", "/public/x"))
        .send()
        .await;
    assert!(
        r.is_err(),
        "no client certificate: {:?}",
        r.map(|r| r.status())
    );
    let r = https(&ca.cert_pem)
        .identity(acme.identity())
        .build()
        .unwrap()
        .get(gw.url("a.example.test", "/mtls/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-consumer-id"], "acme", "{body}");

    // The plain listener is not affected.
    let r = client()
        .get(gw.gw.url("/public/plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The client CA file is re-read on reload (SIGHUP): certificates of the new CA are
    // accepted, those of the old one refused.
    let clients2 = Ca::root("Partners CA 2");
    let acme2 = clients2.client(&[
        (DnType::CommonName, "acme"),
        (DnType::OrganizationName, "Acme Corp"),
    ]);
    put(gw.dir(), "certs/partners-ca.pem", &clients2.cert_pem);
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.gw.pid().to_string()])
        .status()
        .expect("kill -HUP")
        .success();
    assert!(ok, "kill -HUP failed");
    let with_acme2 = Dial {
        identity: Some(&acme2),
        ..Dial::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = try_get(gw.tls_addr(), &with_acme2, "/mtls/x").await;
        if got == Ok(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a certificate of the new client CA is still refused after SIGHUP: {got:?}; output:\n{}",
            gw.gw.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = try_get(
        gw.tls_addr(),
        &Dial {
            identity: Some(&acme),
            ..Dial::default()
        },
        "/mtls/x",
    )
    .await;
    assert!(
        got.is_err(),
        "the old CA's certificate after the CA change: {got:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Upstream TLS
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_against_the_configured_ca() {
    let up_ca = Ca::root("Upstream CA");
    let other_ca = Ca::root("Other CA");
    let up = TlsUpstream::start(&up_ca.server(&["up.internal"])).await;
    // A second server with a certificate from the same CA, for the upstreams that must
    // refuse it (so that no connection `good` opened can be reused for them).
    let up_b = TlsUpstream::start(&up_ca.server(&["up.internal"])).await;
    let selfsigned = TlsUpstream::start(&Leaf::self_signed(&["up.internal"])).await;
    let u = up.addr;
    let ub = up_b.addr;
    let s = selfsigned.addr;
    let mut routes = String::new();
    for name in [
        "good",
        "wrong",
        "wrong-default",
        "self-signed",
        "noverify",
        "wrong-name",
        "wrong-shared",
    ] {
        routes.push_str(&format!(
            "  - name: {name}\n    match: {{ path: /{name}/* }}\n    auth: none\n    upstream: {name}\n    rewrite: {{ strip_prefix: /{name} }}\n"
        ));
    }
    let policy = format!(
        r#"upstreams:
  good:
    targets: ["{u}"]
    scheme: https
    tls: {{ sni: up.internal, verify: true, ca: certs/up-ca.pem }}
  wrong:
    targets: ["{ub}"]
    scheme: https
    tls: {{ sni: up.internal, verify: true, ca: certs/other-ca.pem }}
  wrong-default:
    targets: ["{ub}"]
    scheme: https
    tls: {{ sni: up.internal, ca: certs/other-ca.pem }}
  self-signed:
    targets: ["{s}"]
    scheme: https
    tls: {{ sni: up.internal, ca: certs/up-ca.pem }}
  noverify:
    targets: ["{s}"]
    scheme: https
    tls: {{ sni: up.internal, verify: false }}
  wrong-name:
    targets: ["{u}"]
    scheme: https
    tls: {{ sni: other.internal, ca: certs/up-ca.pem }}
  wrong-shared:
    targets: ["{u}"]
    scheme: https
    tls: {{ sni: up.internal, verify: true, ca: certs/other-ca.pem }}
routes:
{routes}  - name: agg
    match: {{ path: /agg }}
    auth: none
    aggregate:
      timeout: 5s
      calls:
        - {{ name: good, upstream: good, path: /from-agg, required: true }}
        - {{ name: bad, upstream: wrong, path: /from-agg }}
      merge: nest
"#
    );
    let c = ConfigDir::new("", &[("upstreams.yaml", &policy)]);
    // CA paths are relative to the policy file.
    put(c.path(), "policies/certs/up-ca.pem", &up_ca.cert_pem);
    put(c.path(), "policies/certs/other-ca.pem", &other_ca.cert_pem);
    let gw = Gateway::start_in(c, &[]).await;
    let http = client();

    // The right CA: proxied, SNI up.internal, the upstream sees TLS.
    let r = http.get(gw.url("/good/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200, "output:\n{}", gw.output());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tls"], true, "{body}");
    assert_eq!(body["path"], "/hello", "{body}");
    assert!(
        up.sni
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.as_deref() == Some("up.internal")),
        "SNI sent upstream: {:?}",
        up.sni.lock().unwrap()
    );
    // Again, on a kept or new connection.
    let r = http.get(gw.url("/good/again")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Wrong CA (explicit verify: true, and verify left to its default), a self-signed
    // upstream certificate, a name the certificate does not have: 502 bad_gateway.
    let mut wrong = Vec::new();
    for route in ["wrong", "wrong-default", "self-signed", "wrong-name"] {
        let r = http
            .get(gw.url(&format!("/{route}/hello")))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status != 502 || body["error"]["code"] != "bad_gateway" {
            wrong.push(format!("{route}: {status} {body}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected 502 bad_gateway:\n{}",
        wrong.join("\n")
    );
    assert!(
        up_b.failed_handshakes
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "the refused upstream handshakes should have reached the upstream"
    );

    // verify: false accepts the self-signed certificate.
    let r = http.get(gw.url("/noverify/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tls"], true, "{body}");

    // Aggregate calls use the same upstream TLS settings.
    let r = http.get(gw.url("/agg")).send().await.unwrap();
    assert_eq!(r.status(), 200, "aggregate");
    assert_eq!(
        r.headers()
            .get("x-gateway-partial")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["good"]["path"], "/from-agg", "{body}");
    assert_eq!(body["good"]["tls"], true, "{body}");
    assert!(body["bad"].is_null(), "{body}");
    assert!(body["_errors"]["bad"].is_string(), "{body}");

    // Pooled upstream connections must not outlive the trust they were verified with:
    // (a) an upstream trusting another CA on the same target and SNI as `good` must not
    // be handed a connection `good` verified and pooled;
    let mut pooled = Vec::new();
    let handshakes = || {
        (
            up.sni.lock().unwrap().len(),
            up.failed_handshakes
                .load(std::sync::atomic::Ordering::SeqCst),
        )
    };
    let r = http.get(gw.url("/good/warm")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let before = handshakes();
    let r = http
        .get(gw.url("/wrong-shared/hello"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != 502 || body["error"]["code"] != "bad_gateway" {
        pooled.push(format!(
            "upstream `wrong-shared` (ca: other-ca.pem, same target and SNI as `good`, \
             requested right after `good`): {status} {body}; upstream handshakes \
             (completed, failed) before {before:?}, after {:?}",
            handshakes()
        ));
    }
    // (b) after a reload that replaced `good`'s CA file with another CA, `good` must
    // refuse its upstream's certificate, pooled connection or not.
    let r = http.get(gw.url("/good/warm-again")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    put(
        gw.config.path(),
        "policies/certs/up-ca.pem",
        &other_ca.cert_pem,
    );
    let r = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "reload after the CA change");
    let before = handshakes();
    let r = http
        .get(gw.url("/good/after-ca-change"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != 502 || body["error"]["code"] != "bad_gateway" {
        pooled.push(format!(
            "upstream `good` after its ca file was replaced by another CA and POST /reload \
             answered 200: {status} {body}; upstream handshakes (completed, failed) \
             before {before:?}, after {:?}",
            handshakes()
        ));
    }
    assert!(
        pooled.is_empty(),
        "expected 502 bad_gateway:\n{}",
        pooled.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// 7. gateway check
// ---------------------------------------------------------------------------------------

/// A configuration directory for `gateway check` with the TLS listener given by `tls`
/// after `prepare` wrote the files.
fn check_config(tls: &str, prepare: impl FnOnce(&Path)) -> (ConfigDir, String) {
    let policy = "upstreams:\n  up:\n    targets: [\"127.0.0.1:9\"]\nroutes:\n  - name: r\n    match: { path: /r }\n    auth: none\n    upstream: up\n";
    let c = ConfigDir::new("", &[("routes.yaml", policy)]);
    prepare(c.path());
    let text = gateway_yaml(&c, free_port(), tls);
    std::fs::write(c.gateway_yaml(), &text).expect("gateway.yaml");
    (c, text)
}

/// The message of the problem printed as `GATEWAY_YAML:line: message`.
fn problem_at(out: &str, c: &ConfigDir, line: usize) -> String {
    let prefix = format!("{}:{line}: ", c.gateway_yaml().display());
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no problem reported as {prefix:?}; output:\n{out}"))
}

#[test]
fn check_reports_bad_keys_and_certificates_and_warns_of_expiry() {
    let ca = Ca::root("Test Root CA");
    let a = ca.server(&["a.example.test"]);
    let b = ca.server(&["b.example.test"]);

    // Valid: exit 0, no expiry warning.
    let (c, _) = check_config(&tls_block(&["a"], None), |d| put_pair(d, "a", &a));
    let (ok, out) = c.check();
    assert!(ok, "valid TLS configuration: {out}");
    assert!(
        !out.contains("expires"),
        "no expiry warning expected: {out}"
    );

    // a's certificate with b's key: exit 1 on the line of the pair.
    let (c, text) = check_config(&tls_block(&["a"], None), |d| {
        put(d, "certs/a.pem", &a.chain_pem);
        put(d, "certs/a.key", &b.key_pem);
    });
    let (ok, out) = c.check();
    assert!(!ok, "a key that does not match its certificate: {out}");
    let msg = problem_at(&out, &c, line_of(&text, "cert: certs/a.pem"));
    assert!(msg.to_lowercase().contains("key"), "{msg}");

    // The same for the second pair of two.
    let (c, text) = check_config(&tls_block(&["a", "b"], None), |d| {
        put_pair(d, "a", &a);
        put(d, "certs/b.pem", &b.chain_pem);
        put(d, "certs/b.key", &a.key_pem);
    });
    let (ok, out) = c.check();
    assert!(!ok, "{out}");
    problem_at(&out, &c, line_of(&text, "cert: certs/b.pem"));

    // Garbage certificate, missing key file, garbage client CA: errors.
    let (c, text) = check_config(&tls_block(&["a"], None), |d| {
        put(d, "certs/a.pem", "not a certificate\n");
        put(d, "certs/a.key", &a.key_pem);
    });
    let (ok, out) = c.check();
    assert!(!ok, "garbage certificate: {out}");
    problem_at(&out, &c, line_of(&text, "cert: certs/a.pem"));
    let (c, text) = check_config(&tls_block(&["a"], None), |d| {
        put(d, "certs/a.pem", &a.chain_pem);
    });
    let (ok, out) = c.check();
    assert!(!ok, "missing key file: {out}");
    problem_at(&out, &c, line_of(&text, "cert: certs/a.pem"));
    let (c, text) = check_config(&tls_block(&["a"], Some(("ca", "optional"))), |d| {
        put_pair(d, "a", &a);
        put(d, "certs/ca.pem", "garbage\n");
    });
    let (ok, out) = c.check();
    assert!(!ok, "garbage client CA: {out}");
    problem_at(&out, &c, line_of(&text, "client_auth:"));

    // Expiring in 10 days: a warning containing "expires", exit 0.
    let soon = ca.issue(
        &["a.example.test"],
        &[(DnType::CommonName, "a.example.test")],
        false,
        Some(date_in(10)),
    );
    let (c, _) = check_config(&tls_block(&["a"], None), |d| put_pair(d, "a", &soon));
    let (ok, out) = c.check();
    assert!(ok, "an expiring certificate is only a warning: {out}");
    assert!(
        out.lines().any(|l| l.contains("expires")),
        "warning with \"expires\" expected: {out}"
    );
}
