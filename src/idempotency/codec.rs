//! The bytes kept in the store under an idempotency key. A small length-prefixed binary
//! form (bodies are arbitrary bytes); anything that does not decode is treated as absent
//! by the caller, never trusted.
//!
//! ```text
//! lock:   'L' fingerprint(32) token(16)
//! answer: 'A' fingerprint(32) status(u16) count(u16) { name_len(u16) name value_len(u32) value }* body
//! ```

use bytes::{BufMut, Bytes};

/// A stored answer: what the client got the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Lock {
        fingerprint: [u8; 32],
        token: [u8; 16],
    },
    Answer {
        fingerprint: [u8; 32],
        answer: Answer,
    },
}

impl Entry {
    pub fn fingerprint(&self) -> &[u8; 32] {
        match self {
            Entry::Lock { fingerprint, .. } | Entry::Answer { fingerprint, .. } => fingerprint,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Entry::Lock { fingerprint, token } => {
                let mut out = Vec::with_capacity(49);
                out.push(b'L');
                out.extend_from_slice(fingerprint);
                out.extend_from_slice(token);
                out
            }
            Entry::Answer {
                fingerprint,
                answer,
            } => {
                let heads: usize = answer
                    .headers
                    .iter()
                    .map(|(k, v)| 6 + k.len() + v.len())
                    .sum();
                let mut out = Vec::with_capacity(37 + heads + answer.body.len());
                out.push(b'A');
                out.extend_from_slice(fingerprint);
                out.put_u16(answer.status);
                // Header names and values come from a parsed response: names are short and
                // a response has far fewer than 65,536 fields; longer ones are dropped.
                let fit: Vec<_> = answer
                    .headers
                    .iter()
                    .filter(|(k, v)| {
                        k.len() <= usize::from(u16::MAX) && v.len() <= u32::MAX as usize
                    })
                    .take(usize::from(u16::MAX))
                    .collect();
                out.put_u16(fit.len() as u16);
                for (k, v) in fit {
                    out.put_u16(k.len() as u16);
                    out.extend_from_slice(k.as_bytes());
                    out.put_u32(v.len() as u32);
                    out.extend_from_slice(v);
                }
                out.extend_from_slice(&answer.body);
                out
            }
        }
    }

    pub fn decode(raw: &Bytes) -> Option<Entry> {
        let mut r = Reader { raw, at: 0 };
        let tag = r.take(1)?;
        let fingerprint: [u8; 32] = r.take(32)?.as_ref().try_into().ok()?;
        match tag.as_ref() {
            b"L" => {
                let token: [u8; 16] = r.take(16)?.as_ref().try_into().ok()?;
                (r.at == raw.len()).then_some(Entry::Lock { fingerprint, token })
            }
            b"A" => {
                let status = r.u16()?;
                let count = r.u16()?;
                let mut headers = Vec::with_capacity(usize::from(count).min(64));
                for _ in 0..count {
                    let n = usize::from(r.u16()?);
                    let name = String::from_utf8(r.take(n)?.to_vec()).ok()?;
                    let len = usize::try_from(r.u32()?).ok()?;
                    headers.push((name, r.take(len)?));
                }
                let body = raw.slice(r.at..);
                Some(Entry::Answer {
                    fingerprint,
                    answer: Answer {
                        status,
                        headers,
                        body,
                    },
                })
            }
            _ => None,
        }
    }
}

struct Reader<'a> {
    raw: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        let end = self.at.checked_add(n)?;
        if end > self.raw.len() {
            return None;
        }
        let out = self.raw.slice(self.at..end);
        self.at = end;
        Some(out)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes(b.as_ref().try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let lock = Entry::Lock {
            fingerprint: [7; 32],
            token: [9; 16],
        };
        assert_eq!(Entry::decode(&Bytes::from(lock.encode())), Some(lock));
        let answer = Entry::Answer {
            fingerprint: [1; 32],
            answer: Answer {
                status: 201,
                headers: vec![
                    (
                        "content-type".into(),
                        Bytes::from_static(b"application/json"),
                    ),
                    ("x-empty".into(), Bytes::new()),
                ],
                body: Bytes::from_static(b"{\"id\":1}\x00\xff"),
            },
        };
        assert_eq!(Entry::decode(&Bytes::from(answer.encode())), Some(answer));
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        let good = Entry::Answer {
            fingerprint: [1; 32],
            answer: Answer {
                status: 200,
                headers: vec![("a".into(), Bytes::from_static(b"b"))],
                body: Bytes::new(),
            },
        }
        .encode();
        // Every truncation inside the header block fails to decode; none panics.
        for n in 0..good.len() {
            let cut = Bytes::copy_from_slice(&good[..n]);
            assert_eq!(Entry::decode(&cut), None, "cut at {n}");
        }
        assert_eq!(Entry::decode(&Bytes::from_static(b"X")), None);
        let mut long_lock = Entry::Lock {
            fingerprint: [0; 32],
            token: [0; 16],
        }
        .encode();
        long_lock.push(0);
        assert_eq!(Entry::decode(&Bytes::from(long_lock)), None);
    }
}
