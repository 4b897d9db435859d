//! TLS toward upstreams: SNI, verification and a custom CA.

use crate::config::policy::{Scheme, UpstreamDef, UpstreamTlsDef};
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use std::path::Path;
use std::sync::Arc;

/// How targets of an `https` upstream are reached.
pub(super) struct Tls {
    pub sni: String,
    pub verify: bool,
    /// A custom CA (DER certificates, as read), instead of the system's roots.
    pub ca: Option<(Vec<Vec<u8>>, Arc<pingora_core::protocols::tls::CaType>)>,
    /// Separates pooled connections verified against different CAs: Pingora's pool key
    /// covers address, SNI and verification flags, not the CA.
    pub group: u64,
}

/// The upstream's TLS settings; `dir` resolves a relative `ca`.
pub(super) fn tls(def: &UpstreamDef, dir: &Path) -> Result<Option<Tls>, String> {
    let t = def.tls.clone().unwrap_or(UpstreamTlsDef {
        sni: None,
        verify: true,
        ca: None,
    });
    if matches!(def.scheme, Scheme::Http | Scheme::H2c) {
        return match def.tls {
            Some(_) => Err("`tls` needs `scheme: https`".into()),
            None => Ok(None),
        };
    }
    let ca = match &t.ca {
        None => None,
        Some(path) => {
            let der: Vec<Vec<u8>> = crate::tls::pem::certs(&dir.join(path))?
                .into_iter()
                .map(|c| c.to_vec())
                .collect();
            let wrapped: Vec<WrappedX509> = der
                .iter()
                .map(|d| WrappedX509::new(d.clone(), parse_x509))
                .collect();
            Some((der, Arc::from(wrapped)))
        }
    };
    // Without `sni`, a target given by name is asked for that name.
    let sni = t.sni.clone().unwrap_or_else(|| {
        let host = def.targets[0].rsplit_once(':').map_or("", |(h, _)| h);
        match host.parse::<std::net::IpAddr>() {
            Ok(_) => String::new(),
            Err(_) => host.to_string(),
        }
    });
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&ca.as_ref().map(|c| &c.0), &mut h);
    Ok(Some(Tls {
        sni,
        verify: t.verify,
        ca,
        group: std::hash::Hasher::finish(&h),
    }))
}
