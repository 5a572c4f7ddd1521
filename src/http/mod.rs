//! The HTTP server: `/metrics`, `/probe`, `/`, `/config`, `/-/healthy`, `/-/ready` and
//! `/-/reload`, under `--web.route-prefix` (see `paths`).
//!
//! Last stop of the data flow. hyper 1, HTTP/1.1 only, with a header read timeout so a
//! client that never finishes its request cannot hold a connection forever, and a cap on
//! open connections. Handlers read what they share ([`Shared`]); the only one that changes
//! anything is `/-/reload`, which asks the application loop (`app`) to reload and waits
//! for its answer.
//!
//! The folder, in the order a request meets it: `server` accepts a connection and gives it
//! a slot in `conn` (the connection limits, eviction, stalled writes); `web` applies the
//! web config (TLS, basic auth, headers) and `hosts` the rebinding guard; `routes` picks the
//! page: `/metrics` streamed by `render` and `body` (gzipped when the client accepts it),
//! `/probe` in `on_demand`, the spec pages in `spec_pages`, the status page in `status`;
//! `paths` knows where each page is.

mod body;
mod conn;
mod hosts;
mod on_demand;
pub mod paths;
mod render;
mod routes;
mod server;
mod spec_pages;
pub mod status;
pub mod web;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigError};
use crate::metrics::Exporter;
pub use conn::MAX_CONNECTIONS;

/// A reload request: the answer comes back on the oneshot.
pub type ReloadRequest = oneshot::Sender<Result<(), ConfigError>>;

/// What every handler shares: the exporter, the configuration in force, the way to ask
/// for a reload, and the web configuration.
pub struct Shared {
    pub exporter: Arc<Exporter>,
    pub reload: mpsc::Sender<ReloadRequest>,
    /// The configuration in force; `app` swaps it on reload.
    pub config: std::sync::RwLock<Arc<Config>>,
    /// TLS, basic authentication and headers (`--web.config.file`).
    pub web: Arc<web::WebSettings>,
    /// `POST /-/reload` is served (`--web.enable-lifecycle`); SIGHUP always is.
    pub enable_lifecycle: bool,
    /// The `/metrics` renders under way.
    pub renders: Arc<render::Renders>,
    /// Where the pages are, and how links to them are written.
    pub paths: paths::Paths,
    /// The probes running at once, on-demand and scheduled: the scheduler's
    /// `max_concurrency` permits.
    pub probe_limit: Arc<tokio::sync::Semaphore>,
}

pub use server::serve;

#[cfg(test)]
mod tests {
    use super::on_demand::{query_params, split_target};

    #[test]
    fn targets() {
        assert_eq!(split_target("mx.example.com:25").unwrap(), ("mx.example.com".into(), 25));
        assert_eq!(split_target("[2001:db8::1]:465").unwrap(), ("2001:db8::1".into(), 465));
        assert_eq!(split_target("192.0.2.1:587").unwrap(), ("192.0.2.1".into(), 587));
        assert!(split_target("mx.example.com").unwrap_err().contains("port is missing"));
        assert!(split_target("mx:0").is_err());
        assert!(split_target("mx:99999").is_err());
        assert!(split_target(":25").is_err());
        assert!(split_target("user@mx:25").is_err());
        assert!(split_target("mx example.com:25").is_err(), "whitespace");
        assert!(split_target("mx\t:25").is_err(), "whitespace");
        assert!(split_target("mx/x:25").is_err(), "a path");
        assert!(split_target("2001:db8::1:25").is_err(), "bare IPv6 needs brackets");
    }

    #[test]
    fn query_decoding() {
        let p = query_params("target=mx.example.com%3A25&module=relay+x&flag&bad=%zz%4");
        assert_eq!(p[0], ("target".into(), "mx.example.com:25".into()));
        assert_eq!(p[1], ("module".into(), "relay x".into()));
        assert_eq!(p[2], ("flag".into(), "".into()));
        assert_eq!(p[3], ("bad".into(), "%zz%4".into()));
    }

    /// Issue 11 item 6: the hand-written decoder turned `%+1` into byte 0x01 (a sign is not
    /// a hex digit); it stays as it is.
    #[test]
    fn a_percent_before_a_sign_is_not_a_hex_escape() {
        let p = query_params("module=%+1x&target=%-1");
        assert_eq!(p[0], ("module".into(), "% 1x".into()));
        assert_eq!(p[1], ("target".into(), "%-1".into()));
    }
}
