//! An API gateway on Cloudflare's Pingora.
//!
//! A connection passes [`conn`] (the request-head guard); a request flows through
//! [`proxy`] (phase dispatch) → [`proxy::admit`] (identity, route, size limits) → the
//! route's compiled stages in [`proxy::stage`] (authentication with [`auth`], rate limits
//! with [`ratelimit`], validation with [`validate`], aggregation with [`aggregate`]) →
//! the upstream tries ([`proxy::peer`], [`proxy::attempt`], [`upstream`]) →
//! [`proxy::forward`] (headers, rewrite) → [`proxy::log`] (metrics, access log). Policy
//! comes from [`config`], compiled once into a [`runtime::Snapshot`] held by
//! [`runtime::Store`].

pub mod admin;
pub mod aggregate;
pub mod auth;
pub mod cache;
pub mod compress;
pub mod config;
pub mod conn;
pub mod console;
pub mod cors;
pub mod deliver;
pub mod demo;
pub mod error;
pub mod idempotency;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod ratelimit;
pub mod runtime;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod traffic;
pub mod transform;
pub mod upstream;
pub mod validate;
pub mod webhook;
