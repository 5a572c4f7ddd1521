//! smtp_exporter: a Prometheus exporter that probes SMTP servers on each port and times
//! every phase of the session.
//!
//! This is the one map of the code: every module of `src/` is named here, in the data flow
//! it serves, from the top (what runs) to the leaves (what everything uses).
//!
//! ```text
//! app              wires the stages together and applies reloads (main.rs: the command line)
//! config           YAML → validated, immutable Config (Arc; a reload swaps it whole)
//!   ├→ domains     mail domains and expanded hosts → specs, kept in step with DNS
//!   │              (MX, addresses, TLSA through dns; MTA-STS and TLS-RPT through policy)
//!   → scheduler    each spec (configured or found by a domain walk) on its own spread-out
//!                  interval; one concurrency limit, shared with /probe
//!     → probe      one SMTP session, phase by phase → ProbeReport (plain data);
//!                  probe::delivery reads the submitted message back over IMAP
//!       → store    the latest report, counters and recent history of each spec
//!         → metrics  the exposition, written from the store on scrape
//!           → http   /metrics, /probe, the status page, /-/reload, the web config (TLS,
//!                    basic auth) and the connection limits
//! check            `smtp_exporter check HOST|DOMAIN`: one probe per port, explained to a
//!                  person; built from the same config, probe and domains parts
//! ```
//!
//! Below the stages, each importing only what is under it:
//! - `policy` (MTA-STS, TLS-RPT) on `tls` (trust settings, handshake, certificate
//!   verdicts) on `dns` (the resolver: addresses, MX, TLSA, DNSSEC verdicts), which asks
//!   `dnssec` what its name servers can prove; `sys` (what differs between operating
//!   systems, such as how a socket error is classified);
//! - the leaves, which import nothing of the crate: `outcome` (phases, reasons, step
//!   errors), `files` (bounded reading of the files a configuration names), `dane` (TLSA
//!   matching, pure functions), `logging` (tracing set-up).
//!
//! `tests/integration/layout.rs` holds the code to this: no module reaches itself through
//! the others, and every module is named above.
//!
//! What a user of the library needs is public: [`app::run`] (and [`app::prepare`] /
//! [`app::serve`]), [`config::parse`] and [`config::load`], [`probe::run`] and the types
//! of its report, and [`check::run`]. The rest is the exporter's own.

pub mod app;
pub mod check;
pub mod config;
pub mod dane;
pub mod dns;
pub mod dnssec;
pub mod domains;
pub mod files;
mod http;
pub mod logging;
mod metrics;
pub mod outcome;
pub mod policy;
pub mod probe;
mod scheduler;
pub mod store;
mod sys;
pub mod tls;

/// What the unit tests of several modules share.
#[cfg(test)]
mod test_support {
    use std::path::PathBuf;

    /// A walk of the mail domain `name` that found `mx`, at the epoch, without failure or
    /// policy; its delivery spec is port 25 with module `relay`.
    pub fn walk(name: &str, mx: Vec<crate::domains::MxFound>) -> crate::domains::Resolution {
        crate::domains::Resolution {
            name: name.into(),
            kind: crate::config::ExpansionKind::Domain,
            at: std::time::SystemTime::UNIX_EPOCH,
            failure: None,
            null_mx: false,
            implicit_mx: false,
            mx,
            lookups: vec![],
            delivery_port: 25,
            delivery_module: "relay".into(),
            policy: None,
            dnssec: None,
        }
    }

    /// A TLS 1.3 handshake's details with every optional part empty and the chain verified.
    pub fn tls_info() -> crate::tls::TlsInfo {
        crate::tls::TlsInfo {
            version: "TLS1.3".into(),
            cipher: String::new(),
            kx_group: None,
            cert_error: None,
            cert_error_detail: None,
            leaf_not_after: None,
            chain_earliest_not_after: None,
            leaf_names: Vec::new(),
            subject_cn: String::new(),
            issuer_cn: String::new(),
            serial: String::new(),
            fingerprint_sha256: String::new(),
            dane: None,
        }
    }

    /// Writes `contents` to a file named `name` in a directory of this test run's own,
    /// and returns its path.
    pub fn temp_file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("smtp-exporter-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("a temporary file");
        path
    }

    /// Owned strings from string literals.
    pub fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// What a tracing subscriber writes, kept in memory: give it `writer` and read `text`.
    #[derive(Clone, Default)]
    pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Captured {
        pub fn writer(&self) -> impl Fn() -> Captured + Send + Sync + 'static {
            let me = self.clone();
            move || me.clone()
        }

        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
