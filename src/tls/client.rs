//! Client certificates: a verifier whose CA can be reloaded, and the verified certificate's
//! subject, attached to the connection for authentication (`auth: [client_cert]`).

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_rustls::{
    ClientCertVerified, ClientCertVerifier, DigitallySignedStruct, RootCertStore, SignatureScheme,
    WebPkiClientVerifier,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

type Dyn = Arc<dyn ClientCertVerifier>;

/// A WebPKI verifier for certificates issued by the CAs in `ca`.
pub fn webpki_verifier(ca: &Path, required: bool) -> Result<Dyn, String> {
    let mut roots = RootCertStore::empty();
    for cert in super::pem::certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.display()))?;
    }
    let builder = WebPkiClientVerifier::builder(Arc::new(roots));
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| format!("{}: {e}", ca.display()))
}

/// Delegates to the current verifier, which a reload replaces.
#[derive(Debug)]
pub struct Verifier {
    current: ArcSwap<Dyn>,
}

impl Verifier {
    pub fn new(v: Dyn) -> Self {
        Verifier {
            current: ArcSwap::from_pointee(v),
        }
    }

    pub fn replace(&self, v: Dyn) {
        self.current.store(Arc::new(v));
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        self.current.load().offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.current.load().client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // Hints are optional; the current CA set cannot be borrowed across a swap.
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, pingora_rustls::RusTlsError> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<pingora_rustls::HandshakeSignatureValid, pingora_rustls::RusTlsError> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<pingora_rustls::HandshakeSignatureValid, pingora_rustls::RusTlsError> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

/// The subject of a verified client certificate: `(attribute, value)` pairs such as
/// `("CN", "acme")`, in the certificate's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub subject: Vec<(String, String)>,
}

impl ClientCert {
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert
            .subject()
            .iter_attributes()
            .filter_map(|a| {
                let key = x509_parser::objects::oid2abbrev(
                    a.attr_type(),
                    x509_parser::objects::oid_registry(),
                )
                .ok()?;
                Some((key.to_string(), a.as_str().ok()?.to_string()))
            })
            .collect();
        Some(ClientCert { subject })
    }

    /// Whether every `(attribute, value)` of `wanted` is in this subject.
    pub fn matches(&self, wanted: &[(String, String)]) -> bool {
        wanted.iter().all(|w| self.subject.contains(w))
    }
}

/// Subject attributes, `("CN", "acme")`, as configured or as in a certificate.
pub type Subject = Vec<(String, String)>;

/// Parses a configured subject such as `"CN=acme, O=Acme Corp"`.
pub fn parse_subject(s: &str) -> Result<Subject, String> {
    let attrs: Result<Vec<_>, String> = s
        .split(',')
        .map(|part| {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("invalid subject {s:?}: expected KEY=VALUE, ..."))?;
            let (k, v) = (k.trim().to_ascii_uppercase(), v.trim().to_string());
            if k.is_empty() || v.is_empty() {
                return Err(format!("invalid subject {s:?}: empty attribute or value"));
            }
            Ok((k, v))
        })
        .collect();
    attrs.and_then(|a| match a.is_empty() {
        true => Err("the subject is empty".into()),
        false => Ok(a),
    })
}

/// After each handshake: the verified client certificate's subject, for the HTTP layer.
pub struct Callbacks;

#[async_trait]
impl TlsAccept for Callbacks {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        // Stored as an `Arc` so that each request shares it instead of copying it.
        let cert = Arc::new(ClientCert::from_der(tls.peer_certificate_der()?)?);
        Some(Arc::new(cert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let want = parse_subject("cn=acme, O=Acme Corp").unwrap();
        let have = ClientCert {
            subject: vec![
                ("CN".into(), "acme".into()),
                ("O".into(), "Acme Corp".into()),
                ("C".into(), "DE".into()),
            ],
        };
        assert!(have.matches(&want));
        assert!(!have.matches(&parse_subject("CN=other").unwrap()));
        assert!(parse_subject("acme").is_err());
        assert!(parse_subject("CN=").is_err());
    }
}
