//! Authentication (JWT, API keys) and authorization (scopes): steps 3 and 4 of a request.

pub mod apikey;
pub mod cache;
pub mod compile;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod mint;
pub mod refresh;
pub mod webhooks;

use crate::tls::client::ClientCert;
use apikey::ApiKeys;
use jwt::{Claims, Provider};
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::sync::Arc;

/// Why authentication failed: the `reason` label of `gateway_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    UnknownKey,
    Algorithm,
    Scope,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Issuer => "issuer",
            Reason::Audience => "audience",
            Reason::UnknownKey => "unknown_key",
            Reason::Algorithm => "algorithm",
            Reason::Scope => "scope",
        }
    }

    /// What the client is told; never the credential itself.
    pub fn message(self) -> &'static str {
        match self {
            Reason::Missing => "credentials are required",
            Reason::Malformed => "the credentials are malformed",
            Reason::BadSignature => "the token signature is invalid",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not valid yet",
            Reason::Issuer => "the token issuer is not accepted",
            Reason::Audience => "the token audience is not accepted",
            Reason::UnknownKey => "the key is not known",
            Reason::Algorithm => "the token algorithm is not accepted",
            Reason::Scope => "a required scope is missing",
        }
    }
}

/// A route's authentication and authorization policy: the JWT providers and whether API
/// keys are accepted (any one suffices; none at all: a public route), and the scopes
/// every request needs.
#[derive(Debug, Clone, Default)]
pub struct RouteAuth {
    pub providers: Vec<Arc<Provider>>,
    pub api_key: bool,
    pub client_cert: bool,
    pub scopes: Vec<String>,
    /// `auth: [webhook:NAME]`: the request is a signed event (checked by its own stage,
    /// `proxy::stage::webhook`, which reads the body).
    pub webhook: Option<Arc<crate::webhook::Verifier>>,
}

impl RouteAuth {
    pub fn is_public(&self) -> bool {
        self.providers.is_empty() && !self.api_key && !self.client_cert && self.webhook.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct Consumer {
    pub id: Arc<str>,
    pub scopes: Vec<String>,
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone)]
pub struct Identity {
    pub consumer: Option<Arc<str>>,
    pub scopes: Vec<String>,
    pub claims: Option<Arc<Claims>>,
    pub provider: Option<Arc<Provider>>,
    /// True when an API key authenticated the request (it is not forwarded upstream).
    pub by_api_key: bool,
}

/// A failed authentication: the reason, and whether a token was presented (for RFC 6750's
/// `error="invalid_token"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub token: bool,
}

/// Identity configuration shared by every route of a snapshot.
#[derive(Debug, Default)]
pub struct Identities {
    pub providers: HashMap<String, Arc<Provider>>,
    pub api_keys: Option<ApiKeys>,
    pub consumers: HashMap<String, Consumer>,
    /// Client-certificate subjects (attributes that must all match) and their consumer.
    pub client_certs: Vec<(crate::tls::client::Subject, Arc<str>)>,
    /// Every header the gateway sets from an identity: removed from what clients send.
    pub identity_headers: Vec<http::HeaderName>,
    /// `webhook_verifiers`, by name.
    pub webhooks: HashMap<String, Arc<crate::webhook::Verifier>>,
}

fn bearer(req: &RequestHeader) -> Option<&str> {
    let v = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The unverified `iss` of a token, only to choose among a route's providers.
fn peek_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

impl Identities {
    async fn by_jwt(&self, providers: &[Arc<Provider>], token: &str) -> Result<Identity, Failure> {
        let fail = |reason| Failure {
            reason,
            token: true,
        };
        // Refused before any parsing, including the issuer peek below.
        if token.len() > jwt::MAX_TOKEN {
            return Err(fail(Reason::Malformed));
        }
        let provider = match providers {
            [only] => only,
            many => {
                let iss = peek_issuer(token);
                many.iter()
                    .find(|p| iss.as_deref() == Some(p.issuer.as_str()))
                    .unwrap_or(&many[0])
            }
        };
        let claims = provider.verify(token).await.map_err(fail)?;
        let consumer_id = provider.consumer(&claims);
        let consumer = consumer_id.as_deref().map(|id| {
            self.consumers
                .get(id)
                .map_or_else(|| Arc::<str>::from(id), |c| c.id.clone())
        });
        Ok(Identity {
            consumer,
            scopes: provider.scopes(&claims),
            claims: Some(claims),
            provider: Some((*provider).clone()),
            by_api_key: false,
        })
    }

    fn by_api_key(&self, key: &str) -> Result<Identity, Failure> {
        let keys = self.api_keys.as_ref().ok_or(Failure {
            reason: Reason::UnknownKey,
            token: false,
        })?;
        let id = keys.consumer(key).ok_or(Failure {
            reason: Reason::UnknownKey,
            token: false,
        })?;
        let scopes = self
            .consumers
            .get(&*id)
            .map(|c| c.scopes.clone())
            .unwrap_or_default();
        Ok(Identity {
            consumer: Some(id),
            scopes,
            claims: None,
            provider: None,
            by_api_key: true,
        })
    }

    /// The consumer a verified client certificate names.
    fn by_client_cert(&self, cert: &ClientCert) -> Result<Identity, Failure> {
        let (_, id) = self
            .client_certs
            .iter()
            .find(|(subject, _)| cert.matches(subject))
            .ok_or(Failure {
                reason: Reason::UnknownKey,
                token: false,
            })?;
        let scopes = self
            .consumers
            .get(&**id)
            .map(|c| c.scopes.clone())
            .unwrap_or_default();
        Ok(Identity {
            consumer: Some(id.clone()),
            scopes,
            claims: None,
            provider: None,
            by_api_key: false,
        })
    }

    /// Step 3: any one of the route's methods suffices. `Ok(None)` on a public route.
    /// `cert` is the connection's verified client certificate, if any.
    pub async fn authenticate(
        &self,
        route: &RouteAuth,
        req: &RequestHeader,
        cert: Option<&ClientCert>,
    ) -> Result<Option<Identity>, Failure> {
        if route.is_public() {
            return Ok(None);
        }
        if let (true, Some(cert)) = (route.client_cert, cert) {
            // A certificate that names no consumer is not a failure yet: another method
            // of the route may still succeed.
            if let Ok(id) = self.by_client_cert(cert) {
                return Ok(Some(id));
            }
        }
        let providers = &route.providers;
        let mut failure = Failure {
            reason: Reason::Missing,
            token: false,
        };
        if let (false, Some(token)) = (providers.is_empty(), bearer(req)) {
            match self.by_jwt(providers, token).await {
                Ok(id) => return Ok(Some(id)),
                Err(f) => failure = f,
            }
        }
        if route.api_key {
            let presented = self
                .api_keys
                .as_ref()
                .and_then(|k| k.presented(req))
                .or_else(|| {
                    // Without an `api_keys` section keys come in the default header.
                    req.headers
                        .get(apikey::DEFAULT_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(std::borrow::Cow::Borrowed)
                });
            if let Some(key) = presented {
                match self.by_api_key(&key) {
                    Ok(id) => return Ok(Some(id)),
                    Err(f) if failure.reason == Reason::Missing => failure = f,
                    Err(_) => {}
                }
            }
        }
        if failure.reason == Reason::Missing && route.client_cert && cert.is_some() {
            failure.reason = Reason::UnknownKey;
        }
        Err(failure)
    }
}

/// Step 4: every scope of the route is required. Returns the first one missing.
pub fn authorize<'a>(route: &'a RouteAuth, id: Option<&Identity>) -> Result<(), &'a str> {
    let granted = id.map(|i| i.scopes.as_slice()).unwrap_or_default();
    match route.scopes.iter().find(|s| !granted.contains(s)) {
        Some(missing) => Err(missing),
        None => Ok(()),
    }
}
