use super::*;

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 256,
    max_headers: 4,
};

fn whole(head: &[u8]) -> Scan {
    HeadScan::new().scan(head, &LIMITS)
}

/// Feeds `head` one byte at a time, as a trickling client would.
fn bytewise(head: &[u8]) -> Scan {
    let mut s = HeadScan::new();
    for n in 1..=head.len() {
        match s.scan(&head[..n], &LIMITS) {
            Scan::Partial => {}
            done => return done,
        }
    }
    Scan::Partial
}

#[test]
fn complete_heads_end_after_the_empty_line() {
    let h = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
    assert_eq!(whole(h), Scan::Complete(h.len() - 4));
    assert_eq!(bytewise(&h[..h.len() - 4]), Scan::Complete(h.len() - 4));
    // Bare LF line ends, and empty lines before the request line.
    let h = b"\r\n\nPOST /x HTTP/1.1\nA: 1\n\n";
    assert_eq!(whole(h), Scan::Complete(h.len()));
    assert_eq!(bytewise(h), Scan::Complete(h.len()));
}

#[test]
fn partial_heads_wait() {
    assert_eq!(whole(b"GET / HTTP/1.1\r\nHost: a\r\n"), Scan::Partial);
    assert_eq!(whole(b"GE"), Scan::Partial);
    assert_eq!(whole(b""), Scan::Partial);
}

#[test]
fn size_and_count_limits() {
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 300));
    // Refused before the line ends: a client cannot make the gateway hold more.
    assert_eq!(whole(&big), Scan::Refuse(Refusal::TooLarge));
    assert_eq!(bytewise(&big), Scan::Refuse(Refusal::TooLarge));
    let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n";
    assert_eq!(whole(many), Scan::Refuse(Refusal::TooLarge));
    let four = b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
    assert_eq!(whole(four), Scan::Complete(four.len()));
    // Empty lines before the request line count toward the size too.
    assert_eq!(whole(&[b'\n'; 300]), Scan::Refuse(Refusal::TooLarge));
}

#[test]
fn methods_must_be_tokens() {
    assert_eq!(
        whole(b"GE(T / HTTP/1.1\r\n\r\n"),
        Scan::Refuse(Refusal::BadMethod)
    );
    assert_eq!(
        whole(b" / HTTP/1.1\r\n\r\n"),
        Scan::Refuse(Refusal::BadMethod)
    );
    assert_eq!(whole(b"GET\r\n\r\n"), Scan::Refuse(Refusal::BadMethod));
    let mut s = HeadScan::new();
    assert!(matches!(
        s.scan(b"PURGE-IT /x HTTP/1.1\r\n\r\n", &LIMITS),
        Scan::Complete(_)
    ));
    assert_eq!(method(b"\r\nPURGE-IT /x HTTP/1.1\r\n"), b"PURGE-IT");
    assert_eq!(method(b"GE(T"), b"GE(T");
}

#[test]
fn malformed_fields() {
    for h in [
        &b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: 1\r\n folded: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\tContent-Length: 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length\t: 5\r\n\r\n",
    ] {
        assert_eq!(whole(h), Scan::Refuse(Refusal::BadHeader), "{h:?}");
    }
}

#[test]
fn ambiguous_framing_is_refused() {
    for h in [
        &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        assert_eq!(whole(h), Scan::Refuse(Refusal::Framing), "{h:?}");
    }
    // Identical repeats are one length (RFC 9110 §8.6).
    let same = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n";
    assert_eq!(whole(same), Scan::Complete(same.len()));
}
