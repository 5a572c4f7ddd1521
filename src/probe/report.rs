//! What one probe learned: the [`ProbeReport`], plain data that the walk (`walk`) fills in
//! and the store, the metrics, the status page and `check` read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{
    delivery, expect, transcript, Capabilities, EnvelopeOutcome, Failure, Phase, PortState, TlsInfo,
};

/// Everything one probe learned. Plain data: easy to test, render and record.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    /// Wall-clock start, for `smtp_probe_last_run_timestamp_seconds`.
    pub started_at: SystemTime,
    /// The whole probe, from before resolving to the end of the last phase that ran.
    pub duration: Duration,
    /// Each phase that ran, in order, with its duration; a failed phase is included.
    pub phases: Vec<(Phase, Duration)>,
    /// `None` when every phase of the module succeeded.
    pub failure: Option<Failure>,
    /// The address connected to (for logs; never a label).
    pub peer: Option<SocketAddr>,
    /// The greeting's reply code.
    pub banner_code: Option<u16>,
    /// The first word after the greeting's code: the name the server gives itself.
    pub banner_hostname: Option<String>,
    /// EHLO capabilities before TLS (absent with implicit TLS).
    pub ehlo: Option<Capabilities>,
    /// EHLO capabilities inside TLS.
    pub ehlo_tls: Option<Capabilities>,
    /// True when EHLO was refused and HELO used instead.
    pub helo_fallback: bool,
    /// What the TLS handshake negotiated, when one completed.
    pub tls: Option<TlsInfo>,
    /// Whether AUTH succeeded; `None` when the module has no credentials or AUTH never ran.
    pub auth_success: Option<bool>,
    /// The code of the last reply in the AUTH exchange (235, 535, 454, ...).
    pub auth_reply_code: Option<u16>,
    /// Reply lines that ended in a bare LF instead of CRLF.
    pub bare_lf_lines: u32,
    /// The target's expectations that could be evaluated: (check, passed).
    pub expectations: Vec<(expect::Check, bool)>,
    /// What the envelope check's commands were answered, when the module has one and it ran.
    /// Boxed, like `delivery`: most specs have neither, and every report is kept.
    pub envelope: Option<Box<EnvelopeOutcome>>,
    /// What a delivery probe learned, once it submitted.
    pub delivery: Option<Box<delivery::DeliveryOutcome>>,
    /// Every line sent and received, when the probe was recorded ([`run_recorded`]).
    pub transcript: Option<Arc<transcript::Transcript>>,
}

impl Default for ProbeReport {
    fn default() -> ProbeReport {
        ProbeReport::new()
    }
}

impl ProbeReport {
    /// An empty report, started now: what a probe fills in.
    pub fn new() -> ProbeReport {
        ProbeReport {
            started_at: SystemTime::now(),
            duration: Duration::ZERO,
            phases: Vec::new(),
            failure: None,
            peer: None,
            banner_code: None,
            banner_hostname: None,
            ehlo: None,
            ehlo_tls: None,
            helo_fallback: false,
            tls: None,
            auth_success: None,
            auth_reply_code: None,
            bare_lf_lines: 0,
            expectations: Vec::new(),
            envelope: None,
            delivery: None,
            transcript: None,
        }
    }

    /// True when every phase of the module succeeded.
    pub fn success(&self) -> bool {
        self.failure.is_none()
    }

    /// What the outcome says about the port.
    pub fn port_state(&self) -> PortState {
        PortState::of(self)
    }

    /// Whether EHLO before TLS listed STARTTLS; `None` when that EHLO did not complete.
    pub fn starttls_advertised(&self) -> Option<bool> {
        self.ehlo.as_ref().map(Capabilities::starttls)
    }

    /// The duration of `phase` in this probe, if it ran.
    pub fn phase(&self, phase: Phase) -> Option<Duration> {
        self.phases.iter().find(|(p, _)| *p == phase).map(|(_, d)| *d)
    }
}
