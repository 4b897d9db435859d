//! Any bytes as a request body: strict JSON parsing and schema validation must answer
//! (Ok or an error), never panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema = serde_json::json!({
        "type": "object",
        "required": ["sku", "quantity"],
        "properties": {
            "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            "quantity": {"type": "integer", "minimum": 1},
            "email": {"type": "string", "format": "email"},
            "when": {"type": "string", "format": "date-time"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "maxItems": 50}
        },
        "$defs": {"item": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}}}
    });
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the fuzz schema compiles")
});

fuzz_target!(|data: &[u8]| {
    let _ = gateway::validate::check_body(&VALIDATOR, data);
    let _ = gateway::validate::is_json_media_type(std::str::from_utf8(data).ok());
});
