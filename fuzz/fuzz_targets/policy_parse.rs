//! Any text as a policy file: parsing (serde types with unknown keys refused) and the
//! line locator must answer, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("fuzz.yaml");
        if let Ok(src) = gateway::config::parse_policy(path, text) {
            for (i, _) in src.file.routes.iter().enumerate() {
                let _ = src.locator.line(&format!("routes.{i}.match.path"));
            }
        }
        let _ = gateway::config::Locator::new(text).line("routes.0");
    }
});
