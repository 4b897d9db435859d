//! Runtime state: the compiled [`Snapshot`], how it is compiled, and the store that swaps
//! whole generations atomically.

pub mod compile;
pub mod conditions;
pub mod reload;
pub mod route;
pub mod router;
pub mod snapshot;
pub mod store;
pub mod transforms;
pub mod unsupported;
pub mod validation;

pub use snapshot::{Route, Settings, Snapshot, Stage};
pub use store::{Reloaded, Store};
