//! The Linux side of `sys`: raw socket options, `getrusage`, errno codes.

use std::io;
use std::os::fd::AsRawFd;

use crate::outcome::Reason;

pub(super) fn quick_ack(socket: &tokio::net::TcpStream) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor borrowed from `socket`, and a c_int option value of
    // the size given. A failure only means the ACK may be delayed: ignored.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub(super) fn cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return None;
        }
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// Raises the soft open-file limit to the hard one; (before, after).
pub(super) fn raise_open_file_limit() -> Option<(u64, u64)> {
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Some((before, before));
            }
        }
        Some((before, limit.rlim_cur))
    }
}

/// The reason for an errno that the standard library's error kinds do not tell apart.
pub(super) fn reason_of_code(code: i32) -> Option<Reason> {
    Some(match code {
        libc::ECONNREFUSED => Reason::Refused,
        // ICMP host/net unreachable and admin-prohibited all surface as these; `connect`
        // tells a missing local route apart (see `sys::no_local_route`).
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ENETDOWN | libc::EHOSTDOWN => Reason::Unreachable,
        libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT => Reason::NoRoute,
        libc::ECONNRESET | libc::ECONNABORTED | libc::EPIPE => Reason::Reset,
        libc::ETIMEDOUT => Reason::Timeout,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => Reason::LocalResources,
        _ => return None,
    })
}

pub(super) fn family_unsupported(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_codes_map_to_reasons() {
        let cases = [
            (libc::ECONNREFUSED, Reason::Refused),
            (libc::EHOSTUNREACH, Reason::Unreachable),
            (libc::ENETUNREACH, Reason::Unreachable),
            (libc::EHOSTDOWN, Reason::Unreachable),
            (libc::EADDRNOTAVAIL, Reason::NoRoute),
            (libc::EAFNOSUPPORT, Reason::NoRoute),
            (libc::ECONNRESET, Reason::Reset),
            (libc::EPIPE, Reason::Reset),
            (libc::ETIMEDOUT, Reason::Timeout),
        ];
        for (code, reason) in cases {
            assert_eq!(reason_of_code(code), Some(reason), "errno {code}");
            assert_eq!(crate::sys::reason_of(&io::Error::from_raw_os_error(code)), reason, "errno {code}");
        }
        assert_eq!(reason_of_code(libc::EMFILE), Some(Reason::LocalResources));
        assert_eq!(reason_of_code(libc::ENFILE), Some(Reason::LocalResources));
        assert_eq!(reason_of_code(libc::EINVAL), None);
        assert_eq!(crate::sys::reason_of(&io::Error::from_raw_os_error(libc::EINVAL)), Reason::Io);
    }

    /// Issue 17: only EAFNOSUPPORT says the machine has no socket of that family.
    #[test]
    fn only_eafnosupport_means_the_family_is_missing() {
        assert!(family_unsupported(&io::Error::from_raw_os_error(libc::EAFNOSUPPORT)));
        assert!(!family_unsupported(&io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        assert!(!family_unsupported(&io::Error::other("no errno")));
    }
}
