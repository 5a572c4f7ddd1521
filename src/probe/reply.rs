//! SMTP reply parsing: bytes in, `Reply` out.
//!
//! Sits at the bottom of the probe: `session` reads bytes from the socket into a bounded
//! buffer and asks [`parse_reply`] whether a whole reply is there yet. The parser is pure
//! (no I/O), incremental (it answers "incomplete" instead of blocking) and bounded: a line
//! longer than [`MAX_LINE_BYTES`] or a reply larger than [`MAX_REPLY_BYTES`] is an error, so
//! a hostile server cannot make the exporter buffer without limit.

use std::fmt;

/// Longest reply line accepted, CRLF included. RFC 5321 §4.5.3.1.5 sets 512 octets; real
/// servers exceed it now and then (long EHLO keywords), so allow twice that.
pub const MAX_LINE_BYTES: usize = 1024;

/// Largest whole (multi-line) reply accepted. A Postfix EHLO reply is about 200 bytes and a
/// long postscreen greeting under 1 KiB; 16 KiB leaves room without inviting abuse.
pub const MAX_REPLY_BYTES: usize = 16 * 1024;

/// One complete SMTP reply: a three-digit code and the text of each line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, 200..=599.
    pub code: u16,
    /// Text of each line, without the code, separator and line ending.
    pub lines: Vec<String>,
    /// How many lines ended with a bare LF instead of CRLF (tolerated, but worth knowing).
    pub bare_lf_lines: u32,
}

impl Reply {
    /// The class digit: 2 (success), 3 (intermediate), 4 (transient) or 5 (permanent).
    pub fn class(&self) -> u16 {
        self.code / 100
    }
}

/// Why some bytes are not a valid SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// A line grew past [`MAX_LINE_BYTES`] without a line ending.
    LineTooLong,
    /// The reply grew past [`MAX_REPLY_BYTES`] before its last line.
    ReplyTooLong,
    /// A line does not start with a valid three-digit code followed by ' ', '-' or the end.
    Malformed,
    /// A continuation line carries a different code than the first line.
    CodeMismatch { first: u16, found: u16 },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::LineTooLong => write!(f, "reply line longer than {MAX_LINE_BYTES} bytes"),
            ReplyError::ReplyTooLong => write!(f, "reply longer than {MAX_REPLY_BYTES} bytes"),
            ReplyError::Malformed => f.write_str("malformed reply line"),
            ReplyError::CodeMismatch { first, found } => {
                write!(f, "reply code {found} in a continuation of a {first} reply")
            }
        }
    }
}

impl std::error::Error for ReplyError {}

/// Parses one reply from the front of `buf`.
///
/// Returns `Ok(None)` when the bytes so far are a valid but incomplete reply (read more),
/// `Ok(Some((reply, consumed)))` when a whole reply is there, and `Err` as soon as the bytes
/// cannot become a valid reply, including when a bound is exceeded.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code: Option<u16> = None;
    let mut lines = Vec::new();
    let mut bare_lf_lines = 0;
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            // No complete line yet: check the bounds on what is pending, then wait for more.
            if rest.len() >= MAX_LINE_BYTES {
                return Err(ReplyError::LineTooLong);
            }
            if buf.len() > MAX_REPLY_BYTES {
                return Err(ReplyError::ReplyTooLong);
            }
            // Reject garbage early, without waiting for a line ending that may never come.
            check_prefix(rest)?;
            return Ok(None);
        };
        if nl + 1 > MAX_LINE_BYTES {
            return Err(ReplyError::LineTooLong);
        }
        let (line, bare_lf) = match rest[..nl].strip_suffix(b"\r") {
            Some(line) => (line, false),
            None => (&rest[..nl], true),
        };
        pos += nl + 1;
        if pos > MAX_REPLY_BYTES {
            return Err(ReplyError::ReplyTooLong);
        }
        let (line_code, last, text) = split_line(line)?;
        match code {
            None => code = Some(line_code),
            Some(first) if first != line_code => {
                return Err(ReplyError::CodeMismatch { first, found: line_code })
            }
            Some(_) => {}
        }
        bare_lf_lines += u32::from(bare_lf);
        lines.push(String::from_utf8_lossy(text).into_owned());
        if last {
            let reply = Reply { code: line_code, lines, bare_lf_lines };
            return Ok(Some((reply, pos)));
        }
    }
}

/// Splits a complete line (without its ending) into code, "is last line" and text.
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    if line.len() < 3 {
        return Err(ReplyError::Malformed);
    }
    let code = parse_code(&line[..3])?;
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(ReplyError::Malformed),
    }
}

/// Validates the start of a line that has not ended yet.
fn check_prefix(partial: &[u8]) -> Result<(), ReplyError> {
    let digits = partial.len().min(3);
    for (i, &b) in partial[..digits].iter().enumerate() {
        let ok = match i {
            0 => (b'2'..=b'5').contains(&b),
            1 => (b'0'..=b'5').contains(&b),
            _ => b.is_ascii_digit(),
        };
        if !ok {
            return Err(ReplyError::Malformed);
        }
    }
    match partial.get(3) {
        None | Some(b' ') | Some(b'-') | Some(b'\r') => Ok(()),
        Some(_) => Err(ReplyError::Malformed),
    }
}

/// Parses the three code digits: first 2-5, second 0-5, third 0-9 (RFC 5321 §4.2).
fn parse_code(d: &[u8]) -> Result<u16, ReplyError> {
    check_prefix(d)?;
    if d.len() != 3 {
        return Err(ReplyError::Malformed);
    }
    Ok(d.iter().fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0')))
}

impl Reply {
    /// The step error for this reply where another was expected: 4xx and 5xx map to their
    /// class, anything else is a protocol error. `what` names the command, and the reply
    /// text is kept for logs.
    pub fn unexpected(&self, what: &str) -> crate::outcome::StepError {
        use crate::outcome::{truncate, Reason, StepError};
        let reason = match self.class() {
            4 => Reason::Reply4xx,
            5 => Reason::Reply5xx,
            _ => Reason::Protocol,
        };
        let text = self.lines.first().map(String::as_str).unwrap_or("");
        StepError::new(reason, format!("{what}: unexpected reply {} {}", self.code, truncate(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: a long multi-line reply (a big EHLO) is accepted up to 16 KiB, not beyond.
    #[test]
    fn replies_are_bounded_at_sixteen_kib() {
        let lines = |n: usize| {
            let mut s: String = (0..n).map(|i| format!("250-{i:04} {}\r\n", "k".repeat(90))).collect();
            s.push_str("250 end\r\n");
            s
        };
        let ten_kib = lines(100);
        assert!(ten_kib.len() > 10_000 && ten_kib.len() < MAX_REPLY_BYTES);
        assert_eq!(parse_all(&ten_kib).lines.len(), 101);
        let too_long = lines(200);
        assert!(too_long.len() > MAX_REPLY_BYTES);
        assert!(parse_reply(too_long.as_bytes()).is_err());
    }

    /// Issue 17: both bounds hold at their edge: a line of exactly `MAX_LINE_BYTES`, CRLF
    /// included, is read and one more byte is refused; an unfinished reply of exactly
    /// `MAX_REPLY_BYTES` waits for more and one more byte is refused.
    #[test]
    fn the_line_and_reply_bounds_are_inclusive() {
        let line = |len: usize| {
            let mut line = b"220 ".to_vec();
            line.resize(len - 2, b'x');
            line.extend_from_slice(b"\r\n");
            line
        };
        let (reply, used) = parse_reply(&line(MAX_LINE_BYTES)).unwrap().unwrap();
        assert_eq!((reply.code, used), (220, MAX_LINE_BYTES));
        assert_eq!(parse_reply(&line(MAX_LINE_BYTES + 1)), Err(ReplyError::LineTooLong));

        // Whole continuation lines, then a last line cut short, to exactly the bound.
        let mut pending = Vec::new();
        while pending.len() + 100 < MAX_REPLY_BYTES {
            pending.extend_from_slice(
                &line(100).iter().map(|&b| if b == b' ' { b'-' } else { b }).collect::<Vec<_>>(),
            );
        }
        pending.extend_from_slice(b"220-");
        pending.resize(MAX_REPLY_BYTES, b'y');
        assert_eq!(parse_reply(&pending), Ok(None));
        pending.push(b'y');
        assert_eq!(parse_reply(&pending), Err(ReplyError::ReplyTooLong));
    }

    /// Issue 17: each reply error reads as what went wrong, with the bound it met.
    #[test]
    fn reply_errors_say_what_went_wrong() {
        let said = |e: ReplyError| e.to_string();
        assert_eq!(said(ReplyError::LineTooLong), "reply line longer than 1024 bytes");
        assert_eq!(said(ReplyError::ReplyTooLong), "reply longer than 16384 bytes");
        assert_eq!(said(ReplyError::Malformed), "malformed reply line");
        assert_eq!(
            said(ReplyError::CodeMismatch { first: 250, found: 550 }),
            "reply code 550 in a continuation of a 250 reply"
        );
    }

    fn parse_all(s: &str) -> Reply {
        let (reply, used) = parse_reply(s.as_bytes()).unwrap().expect("complete reply");
        assert_eq!(used, s.len());
        reply
    }

    #[test]
    fn single_line() {
        let r = parse_all("220 mx.example.test ESMTP Postfix\r\n");
        assert_eq!(r.code, 220);
        assert_eq!(r.lines, vec!["mx.example.test ESMTP Postfix"]);
        assert_eq!(r.bare_lf_lines, 0);
    }

    #[test]
    fn multi_line_ehlo_from_rfc5321_example() {
        let r =
            parse_all("250-foo.com greets bar.com\r\n250-8BITMIME\r\n250-SIZE\r\n250-DSN\r\n250 HELP\r\n");
        assert_eq!(r.code, 250);
        assert_eq!(r.lines.len(), 5);
        assert_eq!(r.lines[4], "HELP");
    }

    #[test]
    fn bare_code_is_a_final_line() {
        let r = parse_all("250\r\n");
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec![""]);
    }

    #[test]
    fn mismatched_continuation_code() {
        let err = parse_reply(b"250-first\r\n251 second\r\n").unwrap_err();
        assert_eq!(err, ReplyError::CodeMismatch { first: 250, found: 251 });
    }

    #[test]
    fn partial_reads_wait_for_more() {
        let full = b"220-postscreen\r\n220 mx ESMTP\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_reply(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_reply(full).unwrap().is_some());
    }

    #[test]
    fn leaves_following_bytes_unconsumed() {
        let (r, used) = parse_reply(b"220 ready\r\n250 extra").unwrap().unwrap();
        assert_eq!(r.code, 220);
        assert_eq!(used, 11);
    }

    #[test]
    fn over_long_line_without_ending() {
        let line = vec![b'2'; 1].into_iter().chain(b"20 ".iter().copied());
        let mut buf: Vec<u8> = line.collect();
        buf.resize(MAX_LINE_BYTES, b'x');
        assert_eq!(parse_reply(&buf), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn over_long_line_with_ending() {
        let mut buf = b"220 ".to_vec();
        buf.resize(MAX_LINE_BYTES + 10, b'x');
        buf.extend_from_slice(b"\r\n");
        assert_eq!(parse_reply(&buf), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn over_long_reply() {
        let mut buf = Vec::new();
        while buf.len() <= MAX_REPLY_BYTES {
            buf.extend_from_slice(b"250-a line that keeps the reply going on and on\r\n");
        }
        assert_eq!(parse_reply(&buf), Err(ReplyError::ReplyTooLong));
    }

    #[test]
    fn garbage_is_rejected_before_a_line_ends() {
        assert_eq!(parse_reply(b"HTTP/1.1 400"), Err(ReplyError::Malformed));
        assert_eq!(parse_reply(b"SSH-2.0-OpenSSH"), Err(ReplyError::Malformed));
        assert_eq!(parse_reply(b"\x16\x03\x01"), Err(ReplyError::Malformed));
        assert_eq!(parse_reply(b"2200 x\r\n"), Err(ReplyError::Malformed));
        assert_eq!(parse_reply(b"22\r\n"), Err(ReplyError::Malformed));
        assert_eq!(parse_reply(b"620 x\r\n"), Err(ReplyError::Malformed));
    }

    #[test]
    fn bare_lf_is_tolerated_and_counted() {
        let r = parse_all("250-a\n250-b\r\n250 c\n");
        assert_eq!(r.lines, vec!["a", "b", "c"]);
        assert_eq!(r.bare_lf_lines, 2);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the bytes, the parser answers without panicking, and never claims to
            /// have used more bytes than it was given or more than the reply bound.
            #[test]
            fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
                if let Ok(Some((_, used))) = parse_reply(&bytes) {
                    prop_assert!(used <= bytes.len());
                    prop_assert!(used <= MAX_REPLY_BYTES);
                }
            }

            /// A well-formed reply built from arbitrary text lines parses back to the same
            /// code and lines, whichever prefix of it is offered first.
            #[test]
            fn round_trip(code in 200u16..=559, texts in proptest::collection::vec("[ -~]{0,60}", 1..8), cut in 0usize..600) {
                prop_assume!(code % 100 <= 59 && (code / 10) % 10 <= 5);
                let mut wire = String::new();
                for (i, t) in texts.iter().enumerate() {
                    let sep = if i + 1 == texts.len() { ' ' } else { '-' };
                    wire.push_str(&format!("{code}{sep}{t}\r\n"));
                }
                let cut = cut.min(wire.len());
                if cut < wire.len() {
                    prop_assert_eq!(parse_reply(&wire.as_bytes()[..cut]), Ok(None));
                }
                let (reply, used) = parse_reply(wire.as_bytes()).unwrap().unwrap();
                prop_assert_eq!(used, wire.len());
                prop_assert_eq!(reply.code, code);
                prop_assert_eq!(reply.lines, texts);
            }
        }
    }
}
