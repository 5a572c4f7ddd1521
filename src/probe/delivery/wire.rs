//! The byte stream under the delivery probe's IMAP client: every byte an IMAP server sends
//! passes through [`Wire`], which bounds it before the client sees it.
//!
//! Part of the IMAP side of a delivery probe (`delivery::imap`, which hands a `Wire` to
//! async-imap). The client grows its buffer to whatever size a literal announces (`{N}` at
//! the end of a line) before a byte of it has come, so a few bytes from a hostile server
//! could cost hundreds of MiB. The wire follows IMAP's framing (lines, and literals of
//! announced length) as the bytes pass, and fails the read that brings an announcement
//! larger than what the server may still send, or a line longer than [`MAX_LINE`], before
//! the client parses it. A whole probe reads at most [`MAX_READ_BYTES`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::probe::Stream;

/// The most bytes an IMAP server may send in one probe: a header, a folder list and a few
/// searches take some kilobytes. It also bounds the client's buffer, and the CPU a hostile
/// server can cost (the client parses a response again as each piece of it arrives).
pub const MAX_READ_BYTES: usize = 1 << 20;
/// The longest line outside a literal: a `* SEARCH` of thousands of UIDs fits.
pub const MAX_LINE: usize = 64 << 10;
/// The bytes of a line's end kept to find a literal's announcement: `{`, 20 digits, `+}`.
const TAIL: usize = 24;

/// Where the server's byte stream is, in IMAP's framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// In a line, `len` bytes into it; the last of them are in the tail.
    Line { len: usize },
    /// Inside a literal, with `left` bytes of it still to come.
    Literal { left: u64 },
}

/// Follows IMAP's framing over the bytes a server sends (RFC 3501 §4.3: a literal is
/// announced as `{N}` or `{N+}` at the end of a line, and its N bytes follow the CRLF).
#[derive(Clone, Debug)]
struct Framing {
    frame: Frame,
    tail: [u8; TAIL],
}

/// Why the framing refused the server's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    /// A literal announced larger than what may still be read.
    Literal { announced: u64, allowed: usize },
    /// A line longer than [`MAX_LINE`].
    Line,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Literal { announced, allowed } => write!(
                f,
                "the IMAP server announced a literal of {announced} bytes; at most {allowed} more may be read in this probe ({} MiB in all)",
                MAX_READ_BYTES >> 20
            ),
            Refusal::Line => write!(f, "the IMAP server sent a line longer than {} KiB", MAX_LINE >> 10),
        }
    }
}

impl Framing {
    fn new() -> Framing {
        Framing { frame: Frame::Line { len: 0 }, tail: [0; TAIL] }
    }

    /// Follows `bytes`; `allowed` is how many bytes may still be read after them.
    fn feed(&mut self, mut bytes: &[u8], allowed: usize) -> Result<(), Refusal> {
        while !bytes.is_empty() {
            match &mut self.frame {
                Frame::Literal { left } => {
                    let skip = usize::try_from(*left).unwrap_or(usize::MAX).min(bytes.len());
                    *left -= skip as u64;
                    bytes = &bytes[skip..];
                    if *left == 0 {
                        self.frame = Frame::Line { len: 0 };
                    }
                }
                Frame::Line { len } => {
                    let byte = bytes[0];
                    bytes = &bytes[1..];
                    if byte != b'\n' {
                        *len += 1;
                        if *len > MAX_LINE {
                            return Err(Refusal::Line);
                        }
                        self.tail.copy_within(1.., 0);
                        self.tail[TAIL - 1] = byte;
                        continue;
                    }
                    let kept = (*len).min(TAIL);
                    let end = &self.tail[TAIL - kept..];
                    self.frame = match announced(end) {
                        Some(announced) => {
                            let allowed = allowed + bytes.len();
                            if announced > allowed as u64 {
                                return Err(Refusal::Literal { announced, allowed });
                            }
                            if announced == 0 {
                                Frame::Line { len: 0 }
                            } else {
                                Frame::Literal { left: announced }
                            }
                        }
                        None => Frame::Line { len: 0 },
                    };
                    self.tail = [0; TAIL];
                }
            }
        }
        Ok(())
    }
}

/// The size a line's end announces (`… {123}` or `… {123+}`, a CR before the LF or not).
fn announced(end: &[u8]) -> Option<u64> {
    let end = end.strip_suffix(b"\r").unwrap_or(end);
    let inside = end.strip_suffix(b"}")?;
    let open = inside.iter().rposition(|&b| b == b'{')?;
    let digits = &inside[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Too many digits for a u64 is too large by any bound.
    Some(
        digits
            .iter()
            .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .unwrap_or(u64::MAX),
    )
}

/// The stream under the IMAP client: TCP or TLS, failing a read that passes one of the
/// bounds above, with `InvalidData` and the reason in words.
pub struct Wire {
    inner: Box<dyn Stream>,
    left: usize,
    framing: Framing,
}

impl Wire {
    pub fn new(inner: Box<dyn Stream>) -> Wire {
        Wire::bounded(inner, MAX_READ_BYTES)
    }

    fn bounded(inner: Box<dyn Stream>, limit: usize) -> Wire {
        Wire { inner, left: limit, framing: Framing::new() }
    }
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire").field("left", &self.left).finish()
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the IMAP server sent more than {} MiB in one probe", MAX_READ_BYTES >> 20),
            )));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.left = self.left.saturating_sub(read);
        let allowed = self.left;
        if let Err(refusal) = self.framing.feed(&buf.filled()[before..], allowed) {
            // The client never sees the bytes that were refused.
            buf.set_filled(before);
            self.left = 0;
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, refusal.to_string())));
        }
        poll
    }
}

impl AsyncWrite for Wire {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(wire: &mut Wire, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let waker = std::task::Waker::noop();
        Pin::new(wire).poll_read(&mut Context::from_waker(waker), buf)
    }

    /// The read bound counts the bytes each read adds, not what the buffer held before,
    /// and fails the read after the last allowed byte.
    #[tokio::test]
    async fn the_read_bound_counts_new_bytes_only() {
        use tokio::io::AsyncWriteExt as _;
        let (client, mut server) = tokio::io::duplex(64);
        let mut wire = Wire::bounded(Box::new(client), 20);
        // Six bytes were in the buffer already; only the four read now count.
        server.write_all(b"0123").await.unwrap();
        let mut storage = [0u8; 16];
        let mut buf = ReadBuf::new(&mut storage);
        buf.advance(6);
        assert!(matches!(poll(&mut wire, &mut buf), Poll::Ready(Ok(()))));
        assert_eq!((buf.filled().len(), wire.left), (10, 16));
        // The sixteen left are allowed; the byte after them is not.
        server.write_all(&[b'x'; 17]).await.unwrap();
        let mut storage = [0u8; 16];
        let mut buf = ReadBuf::new(&mut storage);
        assert!(matches!(poll(&mut wire, &mut buf), Poll::Ready(Ok(()))));
        assert_eq!((buf.filled().len(), wire.left), (16, 0));
        let mut more = [0u8; 4];
        let mut next = ReadBuf::new(&mut more);
        match poll(&mut wire, &mut next) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            other => panic!("read past the bound: {other:?}"),
        }
    }

    /// Issue 24: a literal announced beyond the bound fails the very read that brings its
    /// announcement, and the client's buffer never holds those bytes.
    #[tokio::test]
    async fn a_huge_literal_is_refused_from_its_announcement() {
        use tokio::io::AsyncWriteExt as _;
        let (client, mut server) = tokio::io::duplex(256);
        let mut wire = Wire::new(Box::new(client));
        server.write_all(b"* OK {536870000}\r\n").await.unwrap();
        let mut storage = [0u8; 64];
        let mut buf = ReadBuf::new(&mut storage);
        match poll(&mut wire, &mut buf) {
            Poll::Ready(Err(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                assert!(e.to_string().contains("a literal of 536870000 bytes"), "{e}");
            }
            other => panic!("the announcement passed: {other:?}"),
        }
        assert_eq!(buf.filled().len(), 0);
        // Nothing more is read from such a server.
        assert!(matches!(poll(&mut wire, &mut buf), Poll::Ready(Err(_))));
    }

    #[test]
    fn literals_are_followed_across_pieces() {
        let mut framing = Framing::new();
        // A literal of 5 bytes whose content looks like an announcement is skipped whole.
        framing.feed(b"* 1 FETCH (BODY[HEADER] {5}\r", 1000).unwrap();
        framing.feed(b"\n{99}", 1000).unwrap();
        assert_eq!(framing.frame, Frame::Literal { left: 1 });
        framing.feed(b"\r", 1000).unwrap();
        assert_eq!(framing.frame, Frame::Line { len: 0 });
        let refused = framing.feed(b")\r\nA1 OK done {9999}\r\n", 100).unwrap_err();
        assert_eq!(refused, Refusal::Literal { announced: 9999, allowed: 100 });
    }

    #[test]
    fn what_counts_as_an_announcement() {
        assert_eq!(announced(b"* OK {12}\r"), Some(12));
        assert_eq!(announced(b"{12+}"), Some(12));
        assert_eq!(announced(b"{99999999999999999999999}"), Some(u64::MAX));
        for not in [&b"{}"[..], b"{+}", b"{1 2}", b"12}", b"{12} x", b"{-1}", b"\"{12}\" x"] {
            assert_eq!(announced(not), None, "{:?}", String::from_utf8_lossy(not));
        }
    }

    /// A literal that fits what may still be read passes; one byte more does not; a line
    /// of [`MAX_LINE`] bytes passes, one byte more does not.
    #[test]
    fn the_bounds_hold_at_their_edges() {
        let mut framing = Framing::new();
        framing.feed(b"* 1 FETCH (BODY[] {10}\r\n", 10).unwrap();
        assert_eq!(framing.frame, Frame::Literal { left: 10 });
        framing.feed(b"0123456789", 0).unwrap();
        assert_eq!(framing.frame, Frame::Line { len: 0 });
        let refused = Framing::new().feed(b"* 1 FETCH (BODY[] {11}\r\n", 10).unwrap_err();
        assert_eq!(refused, Refusal::Literal { announced: 11, allowed: 10 });
        // The bytes after the announcement in the same read count as allowed.
        Framing::new().feed(b"{4}\r\nabcd", 0).unwrap();

        let mut framing = Framing::new();
        framing.feed(&vec![b'a'; MAX_LINE], usize::MAX).unwrap();
        framing.feed(b"\r", usize::MAX).unwrap_err();
        let mut framing = Framing::new();
        framing.feed(&vec![b'a'; MAX_LINE - 1], usize::MAX).unwrap();
        framing.feed(b"\r\n", usize::MAX).unwrap();
        assert_eq!(framing.frame, Frame::Line { len: 0 });
    }
}
