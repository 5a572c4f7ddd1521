//! smtp_exporter: a Prometheus exporter that probes SMTP servers on each port and times
//! every phase of the session.
//!
//! The data flow, one module per stop:
//!
//! ```text
//! config        YAML → validated, immutable Config (Arc; a reload swaps it whole)
//!   → scheduler each spec on its own stable, spread-out interval; one concurrency limit
//!     → probe   one SMTP session, phase by phase → ProbeReport (plain data)
//!       → store the latest report and the counters of each spec
//!         → metrics  the exposition, written from the store on scrape
//!           → http   /metrics, /probe, / (status page), /-/healthy, /-/ready, /-/reload
//! ```
//!
//! `app` wires these together and handles reloads; `tls` (trust settings, handshake,
//! certificate verdicts) serves `config` and `probe`; `sys` holds what differs between
//! operating systems; `logging` sets up tracing; `check` is the one-shot
//! `smtp_exporter check HOST` command; `main` is the thin command line on top.
//!
//! What a user of the library needs is public: [`app::run`] (and [`app::prepare`] /
//! [`app::serve`]), [`config::parse`] and [`config::load`], [`probe::run`] and the types
//! of its report, and [`check::run`]. The rest is the exporter's own.

pub mod app;
pub mod check;
pub mod config;
pub mod dane;
pub mod delivery;
pub mod dns;
pub mod dnssec;
pub mod domains;
mod http;
pub mod logging;
mod metrics;
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
