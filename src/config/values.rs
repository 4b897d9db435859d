//! Small value types shared by both configuration files: durations, sizes, methods, keys.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Deserializes a string with `parse`, failing inside the deserializer: serde_yaml then
/// reports the error at the value's own line. (An error raised after `String::deserialize`
/// has returned is reported at the start of the enclosing mapping, line 1 at top level.)
pub(crate) fn parse_str<'de, D, T, F>(
    d: D,
    expecting: &'static str,
    parse: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct V<F>(F, &'static str);
    impl<T, F: FnOnce(&str) -> Result<T, String>> de::Visitor<'_> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V(parse, expecting))
}

/// A duration written as `250ms`, `2s`, `5m`, `1h`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a duration such as 250ms, 2s, 5m or 1h", |s| {
            parse_duration(s).map(Dur)
        })
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); write it like 250ms, 2s, 5m, 1h"))?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(d)
}

/// A size in bytes, written as a number or as `64KiB`, `1MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 65536, 64KiB or 1MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| Size(b.as_u64()))
                    .map_err(|e| E::custom(format!("invalid size {v:?}: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An HTTP method name, validated and upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MethodName(pub http::Method);

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an HTTP method such as GET", |s| {
            let up = s.to_ascii_uppercase();
            http::Method::from_bytes(up.as_bytes())
                .map(MethodName)
                .map_err(|_| format!("invalid HTTP method {s:?}"))
        })
    }
}

/// Where a per-client key comes from: `client_ip`, `consumer` or `header:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    ClientIp,
    Consumer,
    Header(http::HeaderName),
}

impl<'de> Deserialize<'de> for ClientKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "client_ip, consumer or header:NAME", |s| match s {
            "client_ip" => Ok(ClientKey::ClientIp),
            "consumer" => Ok(ClientKey::Consumer),
            other => match other.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.trim().as_bytes())
                    .map(ClientKey::Header)
                    .map_err(|_| format!("invalid header name in {s:?}")),
                None => Err(format!(
                    "invalid key {s:?}: expected client_ip, consumer or header:NAME"
                )),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn sizes() {
        let s: Size = serde_yaml::from_str("64KiB").unwrap();
        assert_eq!(s.0, 65536);
        let s: Size = serde_yaml::from_str("1MiB").unwrap();
        assert_eq!(s.0, 1 << 20);
        let s: Size = serde_yaml::from_str("1000").unwrap();
        assert_eq!(s.0, 1000);
        assert!(serde_yaml::from_str::<Size>("lots").is_err());
        assert!(serde_yaml::from_str::<Size>("-1").is_err());
    }

    #[test]
    fn client_keys() {
        let k: ClientKey = serde_yaml::from_str("header:X-Tenant").unwrap();
        assert_eq!(
            k,
            ClientKey::Header(http::HeaderName::from_static("x-tenant"))
        );
        assert!(serde_yaml::from_str::<ClientKey>("cookie").is_err());
    }
}
