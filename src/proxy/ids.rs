//! Request identity headers: `X-Request-Id` and W3C `traceparent`.

use http::HeaderValue;

/// The client's request id when it is 1–128 visible ASCII characters, otherwise a new one.
pub fn request_id(client: Option<&HeaderValue>) -> String {
    match client {
        Some(v)
            if (1..=128).contains(&v.len())
                && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)) =>
        {
            // Checked above: visible ASCII is valid UTF-8.
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        }
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// The client's `traceparent` when well-formed (version 00), otherwise a new trace.
pub fn traceparent(client: Option<&HeaderValue>) -> String {
    if let Some(v) = client.and_then(|v| v.to_str().ok()) {
        if valid_traceparent(v) {
            return v.to_ascii_lowercase();
        }
    }
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

fn valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let ok = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&ok)), "abc-123");
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(request_id(Some(&long)).len(), 32);
        let space = HeaderValue::from_static("a b");
        assert_ne!(request_id(Some(&space)), "a b");
        assert_eq!(request_id(None).len(), 32);
    }

    #[test]
    fn traceparents() {
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(traceparent(Some(&HeaderValue::from_static(ok))), ok);
        let zero = "00-00000000000000000000000000000000-b7ad6b7169203331-01";
        let new = traceparent(Some(&HeaderValue::from_static(zero)));
        assert!(valid_traceparent(&new) && new != zero);
        assert!(valid_traceparent(&traceparent(None)));
    }
}
