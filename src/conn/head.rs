//! A request head checked as its bytes arrive, before Pingora parses it: size, field count,
//! method syntax and message framing (RFC 9112 §2.2, §3.1, §5, §6.3). Only what must be
//! refused with the contract's JSON answer is checked here; Pingora's parser does the rest.

use memchr::memchr;

/// The limits a head must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Request line and header fields, line ends included.
    pub max_bytes: usize,
    pub max_headers: usize,
}

impl HeadLimits {
    pub fn from_config(l: &crate::config::gateway::Limits) -> HeadLimits {
        HeadLimits {
            max_bytes: usize::try_from(l.max_header_bytes.0).unwrap_or(usize::MAX),
            max_headers: l.max_headers,
        }
    }
}

/// Why a head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `max_bytes` or `max_headers`: 431.
    TooLarge,
    /// The method is not a token, or the request line has no space: 400.
    BadMethod,
    /// A header line that is not `token ":" value`, or an obsolete folded line: 400.
    BadHeader,
    /// Content-Length with Transfer-Encoding, differing or unparsable Content-Lengths: a
    /// request that two parsers could frame differently (request smuggling), 400.
    Framing,
}

impl Refusal {
    /// The reason label of `gateway_downstream_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::TooLarge => "header_too_large",
            _ => "bad_request",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::TooLarge => "request line and headers over the limit",
            Refusal::BadMethod => "the request method is not a valid token",
            Refusal::BadHeader => "a header line is malformed",
            Refusal::Framing => {
                "ambiguous message framing: Content-Length with Transfer-Encoding, or differing Content-Length values"
            }
        }
    }
}

/// Where a head stands after the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// More bytes are needed.
    Partial,
    /// The head ends at this offset; what follows is body or the next request.
    Complete(usize),
    Refuse(Refusal),
}

/// The scanner's state between reads. `scan` is given the whole head so far each time (the
/// same bytes, longer), and looks only at what it has not seen yet.
#[derive(Debug, Default, Clone)]
pub struct HeadScan {
    /// Next byte to look at.
    pos: usize,
    /// Start of the line not yet complete.
    line_start: usize,
    request_line: bool,
    headers: usize,
    content_length: Option<u64>,
    transfer_encoding: bool,
}

impl HeadScan {
    pub fn new() -> HeadScan {
        HeadScan::default()
    }

    pub fn scan(&mut self, head: &[u8], limits: &HeadLimits) -> Scan {
        while let Some(i) = memchr(b'\n', head.get(self.pos..).unwrap_or_default()) {
            let lf = self.pos + i;
            let mut line = &head[self.line_start..lf];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            self.pos = lf + 1;
            self.line_start = self.pos;
            if self.pos > limits.max_bytes {
                return Scan::Refuse(Refusal::TooLarge);
            }
            let verdict = if !self.request_line {
                // Empty lines before the request line are ignored (RFC 9112 §2.2).
                if line.is_empty() {
                    continue;
                }
                self.request_line = true;
                self.request_line(line)
            } else if line.is_empty() {
                if self.transfer_encoding && self.content_length.is_some() {
                    return Scan::Refuse(Refusal::Framing);
                }
                return Scan::Complete(self.pos);
            } else {
                self.headers += 1;
                if self.headers > limits.max_headers {
                    return Scan::Refuse(Refusal::TooLarge);
                }
                self.field(line)
            };
            if let Err(r) = verdict {
                return Scan::Refuse(r);
            }
        }
        self.pos = head.len();
        if head.len() > limits.max_bytes {
            return Scan::Refuse(Refusal::TooLarge);
        }
        Scan::Partial
    }

    fn request_line(&mut self, line: &[u8]) -> Result<(), Refusal> {
        // The method is a token followed by a space.
        match token_end(line) {
            n if n > 0 && line.get(n) == Some(&b' ') => Ok(()),
            _ => Err(Refusal::BadMethod),
        }
    }

    fn field(&mut self, line: &[u8]) -> Result<(), Refusal> {
        // A name, then a colon. Refused here: no colon, an empty name, obsolete line folding
        // (a line starting with white space) and white space before the colon (RFC 9112
        // §5.1, §5.2), the shapes that could hide a Content-Length or Transfer-Encoding from
        // one parser and not another. Other bytes that are not token characters are left to
        // Pingora's parser (a bare 400): checking every byte of every name here would cost
        // more than the rest of the scan.
        let colon = memchr(b':', line).ok_or(Refusal::BadHeader)?;
        let name = &line[..colon];
        match (name.first(), name.last()) {
            (Some(first), Some(last)) if !is_space(*first) && !is_space(*last) => {}
            _ => return Err(Refusal::BadHeader),
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in line[colon + 1..].split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii()).ok_or(Refusal::Framing)?;
                if self.content_length.is_some_and(|prev| prev != n) {
                    return Err(Refusal::Framing);
                }
                self.content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
        }
        Ok(())
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A Content-Length value: 1 to 19 digits (anything longer is no real length).
fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// The method of a head's request line (for the metric label of a refusal): the bytes
/// before the first space of its first non-empty line.
pub fn method(head: &[u8]) -> &[u8] {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let rest = &head[start..];
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// RFC 9110 §5.6.2 token characters, as a table (for the method).
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// The length of the token at the start of `s` (one pass that both finds its end and
/// validates it).
fn token_end(s: &[u8]) -> usize {
    s.iter()
        .position(|&b| !TCHAR[usize::from(b)])
        .unwrap_or(s.len())
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
