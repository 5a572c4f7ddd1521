//! testkit: what the tests and the bench share, so that each exists once.
//!
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
//! - [`dns`]: a fake authoritative name server on 127.0.0.1:0, with a zone the test can
//!   change and answers it can break (SERVFAIL, silence).
//!
//! It does not depend on the exporter, so that the exporter's tests can depend on it.

pub mod dns;
pub mod exposition;
pub mod http;
pub mod https;
pub mod imap;
pub mod pki;
pub mod smtp;
