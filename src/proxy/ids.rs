//! Request identity headers: `X-Request-Id` and W3C `traceparent`.

use http::{HeaderName, HeaderValue};
use pingora_http::KnownHeader;

/// Looked up by name on every request: a `&str` key is parsed again at each lookup.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Inserted on every request and answer: a name given as text would be parsed (and, not
/// being a standard name, allocated) at each insert.
pub static REQUEST_ID_HEADER: KnownHeader =
    KnownHeader::from_static("x-request-id", "X-Request-Id");
pub static TRACEPARENT_HEADER: KnownHeader = KnownHeader::from_static("traceparent", "Traceparent");

/// A generated id as a header value; the text is ASCII hex, so the conversion cannot fail.
fn value(text: String) -> HeaderValue {
    super::forward::owned(text).unwrap_or(HeaderValue::from_static(""))
}

/// The client's request id when it is 1–128 visible ASCII characters (kept as sent, no
/// copy), otherwise a new one.
pub fn request_id(client: Option<&HeaderValue>) -> HeaderValue {
    match client {
        Some(v)
            if (1..=128).contains(&v.len())
                && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)) =>
        {
            v.clone()
        }
        _ => value(uuid::Uuid::new_v4().simple().to_string()),
    }
}

/// The client's `traceparent` when well-formed (version 00), otherwise a new trace.
pub fn traceparent(client: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = client.filter(|v| v.to_str().is_ok_and(valid_traceparent)) {
        if v.as_bytes().iter().any(u8::is_ascii_uppercase) {
            return value(v.to_str().unwrap_or_default().to_ascii_lowercase());
        }
        return v.clone();
    }
    // "00-" 32 hex "-" 16 hex "-01", neither id all zeros.
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex(&mut text[3..35], rand::random::<u128>().max(1));
    hex(&mut text[36..52], u128::from(rand::random::<u64>().max(1)));
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(""))
}

/// Writes the low `out.len()` hex digits of `n` into `out`, most significant first.
fn hex(out: &mut [u8], mut n: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
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
        let upper =
            HeaderValue::from_static("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01");
        assert_eq!(
            traceparent(Some(&upper)),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
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
        assert!(valid_traceparent(new.to_str().unwrap()) && new != zero);
        assert!(valid_traceparent(traceparent(None).to_str().unwrap()));
    }
}
