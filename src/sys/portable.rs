//! The side of `sys` for systems other than Linux: no socket tuning, no process CPU, and
//! socket errors classified by the standard library's error kinds alone.

use std::io;

use crate::outcome::Reason;

pub(super) fn quick_ack(_socket: &tokio::net::TcpStream) {}

pub(super) fn cpu_seconds() -> Option<f64> {
    None
}

pub(super) fn reason_of_code(_code: i32) -> Option<Reason> {
    None
}

pub(super) fn family_unsupported(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Unsupported
}

pub(super) fn raise_open_file_limit() -> Option<(u64, u64)> {
    None
}
