//! testkit: what the tests and the bench share, so that each exists once.
//!
//! - [`process`]: a child process run to its end with its own peak memory (from /proc);
//! - [`pki`]: a private CA and server certificates made at test time (rcgen), and TLS
//!   acceptors for certificates made elsewhere;
//! - [`smtp`]: the scriptable fake SMTP server, on 127.0.0.1:0, on listeners the caller
//!   bound (the bench's responder), or over any stream; it can hand each message it
//!   accepts to a hook;
//! - [`imap`]: a fake IMAP server on 127.0.0.1:0 with a mailbox the test shares (where the
//!   SMTP hook delivers), for the delivery probe;
//! - [`exposition`]: the Prometheus text format parsed into samples, with lookups;
//! - [`http`]: the one HTTP/1.1 client;
//! - [`https`]: an HTTPS server with one canned answer per Host (MTA-STS policies);
//! - [`dns`]: a fake name server on 127.0.0.1:0 (UDP and TCP), with a zone the test can
//!   change and answers it can break (SERVFAIL, silence, oversized without TC); signed
//!   at test time on request (secure, insecure, bogus and expired zones under a root of
//!   its own), and standing in for the resolvers in front of it (one that strips DNSSEC
//!   records, one that validates and sets AD).
//!
//! It does not depend on the exporter, so that the exporter's tests can depend on it (and
//! its parsers, such as the IMAP fake's header reader, stay independent of the code they
//! test).

pub mod dns;
pub mod exposition;
pub mod http;
pub mod https;
pub mod imap;
pub mod pki;
pub mod process;
pub mod smtp;

/// Waits (bounded: 2 s) until `sessions` holds `n` finished connections of a fake server
/// named `server`, then returns them all.
pub(crate) async fn wait_for_sessions<T: Clone>(
    sessions: &std::sync::Mutex<Vec<T>>,
    n: usize,
    server: &str,
) -> Vec<T> {
    for _ in 0..200 {
        let seen = sessions.lock().unwrap().clone();
        if seen.len() >= n {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{server} saw {} connections, wanted {n}", sessions.lock().unwrap().len());
}
