//! A TCP stream that acknowledges what it reads at once, so that phase timings measure the
//! server rather than this machine's delayed-ACK timer.
//!
//! Part of the probe walk (`probe::mod`), between `connect` and the session. After a TLS 1.3
//! handshake, a server such as Postfix writes its session tickets in a segment of their
//! own and, with Nagle's algorithm on, holds its next reply (the answer to EHLO) until that
//! segment is acknowledged. A client that has nothing to send delays its ACK by up to
//! 40 ms on Linux, so `ehlo_tls` would show 40 ms that are not the server's. Setting
//! `TCP_QUICKACK` before each read leaves the kernel's delayed-ACK ("pingpong") mode, so a
//! segment is acknowledged as soon as it is read. The flag does not stick (the kernel
//! re-enters the mode on its own), hence once per read: one `setsockopt` per read, a
//! fraction of a microsecond. On other systems the stream is passed through unchanged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A `TcpStream` that asks for immediate ACKs before every read (Linux), or a plain one.
pub struct QuickAck(TcpStream);

impl QuickAck {
    pub fn new(stream: TcpStream) -> QuickAck {
        QuickAck(stream)
    }

    fn ack_at_once(&self) {
        crate::sys::quick_ack(&self.0);
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.ack_at_once();
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
