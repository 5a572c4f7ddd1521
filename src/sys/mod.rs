//! What differs between operating systems, in one place.
//!
//! Beside the data flow: the probe (`probe`, `probe::quickack`) and the process metrics
//! (`metrics`) call these functions. Every Linux-only call (`libc`, raw socket options,
//! `getrusage`) is in `linux.rs`, compiled only for Linux; `portable.rs` is what other
//! systems get: the same functions, with a plainer answer. CI checks that `libc::` appears
//! nowhere else in the exporter.

use std::io;
use std::net::SocketAddr;

use crate::outcome::Reason;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;

#[cfg(not(target_os = "linux"))]
mod portable;
#[cfg(not(target_os = "linux"))]
use portable as platform;

/// Asks the kernel to acknowledge what arrives on `socket` at once instead of after its
/// delayed-ACK timer (Linux `TCP_QUICKACK`; elsewhere nothing).
pub fn quick_ack(socket: &tokio::net::TcpStream) {
    platform::quick_ack(socket)
}

/// User plus system CPU time of this process, in seconds; `None` where unknown.
pub fn cpu_seconds() -> Option<f64> {
    platform::cpu_seconds()
}

/// Raises the soft limit of open files to the hard one, as Prometheus does: returns the
/// soft limit before and after; `None` where unknown.
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    platform::raise_open_file_limit()
}

/// Classifies a socket error: by its OS error code on Linux, by the kind the standard
/// library derives from that code elsewhere (never by the error's text).
pub fn reason_of(err: &io::Error) -> Reason {
    if let Some(reason) = err.raw_os_error().and_then(platform::reason_of_code) {
        return reason;
    }
    use io::ErrorKind as K;
    match err.kind() {
        K::ConnectionRefused => Reason::Refused,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => Reason::Unreachable,
        K::AddrNotAvailable => Reason::NoRoute,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Reason::Reset,
        K::UnexpectedEof => Reason::Closed,
        K::TimedOut => Reason::Timeout,
        K::OutOfMemory => Reason::LocalResources,
        _ => Reason::Io,
    }
}

/// True when this machine has no route to `addr`. A UDP `connect` only looks the route up
/// and sends nothing, so it tells a local "no route" from an ICMP unreachable that came
/// back from the network (both surface from TCP as "unreachable").
pub fn no_local_route(addr: SocketAddr) -> bool {
    let local: SocketAddr =
        if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    match std::net::UdpSocket::bind(local) {
        Ok(socket) => socket.connect(addr).is_err_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::AddrNotAvailable
            )
        }),
        // No socket of that family at all (IPv6 disabled): no route either.
        Err(e) => platform::family_unsupported(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: the loopback address always has a route. (An address without one needs a
    /// machine or a network namespace without a default route: the real suite's.)
    #[test]
    fn error_kinds_map_to_reasons() {
        let cases = [
            (io::ErrorKind::ConnectionRefused, Reason::Refused),
            (io::ErrorKind::HostUnreachable, Reason::Unreachable),
            (io::ErrorKind::AddrNotAvailable, Reason::NoRoute),
            (io::ErrorKind::ConnectionReset, Reason::Reset),
            (io::ErrorKind::UnexpectedEof, Reason::Closed),
            (io::ErrorKind::TimedOut, Reason::Timeout),
            (io::ErrorKind::OutOfMemory, Reason::LocalResources),
            (io::ErrorKind::InvalidInput, Reason::Io),
        ];
        for (kind, reason) in cases {
            assert_eq!(reason_of(&kind.into()), reason, "{kind:?}");
        }
    }

    #[test]
    fn loopback_has_a_local_route() {
        assert!(!no_local_route(([127, 0, 0, 1], 25).into()));
    }
}
