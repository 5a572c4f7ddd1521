//! smtp_exporter: a Prometheus exporter that probes SMTP servers on each port and times
//! every phase of the session.
//!
//! The data flow, one module per stop:
//!
//! ```text
//! config     YAML → validated, immutable Config (Arc; a reload swaps it whole)
//!   → scheduler   each probe spec on its own stable, spread-out interval; bounded concurrency
//!     → probe     one SMTP session, phase by phase → ProbeReport (plain data)
//!       → metrics the latest report per spec; series are built on scrape
//!         → http  /metrics, /probe, / (status page), /-/healthy, /-/ready, /-/reload
//! ```
//!
//! `app` wires these together and handles reloads; `logging` sets up tracing; `check` is
//! the one-shot `smtp_exporter check HOST` command; `main` is the thin command line on top.

pub mod app;
pub mod check;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod scheduler;
mod store;
mod sys;
pub mod tls;
