//! An API gateway on Cloudflare's Pingora.
//!
//! A request flows through: [`proxy`] (phase dispatch) → [`proxy::admit`] (identity, route,
//! size limits) → [`proxy::guard`] ([`auth`]) → [`proxy::throttle`] ([`ratelimit`]) →
//! [`proxy::inspect`] ([`validate`]) → [`upstream`] (target selection) → [`proxy::forward`]
//! (headers, rewrite) → [`proxy::log`] (metrics, access log). Policy comes from [`config`], compiled once into a
//! [`runtime::Snapshot`] held by [`runtime::Store`].

pub mod admin;
pub mod aggregate;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod upstream;
pub mod validate;
