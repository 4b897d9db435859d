//! Verified webhooks: checks the signature a webhook sender (Standard Webhooks, Stripe,
//! GitHub, or a configurable HMAC) puts on a request, its timestamp window, and derives the
//! id under which the caller remembers the delivery to refuse replays.
//!
//! Pure and synchronous: no I/O, no clock (the caller passes `now`), no replay store.

mod schemes;
pub mod verify;

pub use verify::*;
