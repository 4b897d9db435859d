//! Reading PEM certificates, keys and CA bundles, with errors that say which file and why.

use super::Pair;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Every certificate in a PEM file (a chain or a CA bundle); at least one.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown} holds no certificate"));
    }
    for c in &certs {
        X509Certificate::from_der(c).map_err(|e| format!("{shown}: invalid certificate: {e}"))?;
    }
    Ok(certs)
}

/// DNS names a certificate is for: its SANs, or its CN when it has none.
fn names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

/// A certificate chain and its private key, checked to belong together.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Pair, String> {
    let chain = certs(cert_path)?;
    let shown = key_path.display();
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("cannot read the private key {shown}: {e}"))?;
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider is installed".to_string())?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{shown}: unusable private key: {e}"))?;
    let (_, leaf) = X509Certificate::from_der(&chain[0])
        .map_err(|e| format!("{}: invalid certificate: {e}", cert_path.display()))?;
    let names = names(&leaf);
    let not_after = leaf.validity().not_after.timestamp();
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        format!(
            "the private key {shown} does not match the certificate {}",
            cert_path.display()
        )
    })?;
    Ok(Pair {
        key: Arc::new(certified),
        names,
        not_after,
    })
}
