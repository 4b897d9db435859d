//! OpenAPI: import (documents -> routes and schema files) and export (routes -> a document).

pub mod import;

// Export: the live routes as an OpenAPI 3.1 document.
mod describe;
pub mod export;
pub mod export_cli;
pub mod facts;
mod merge;
mod params;
mod responses;
mod schemas;
