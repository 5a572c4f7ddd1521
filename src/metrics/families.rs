//! The probe metric families and how each is written from a report: typed handles, one
//! pass of the rows per family, straight into the text exposition.
//!
//! Part of `metrics`, the fourth stop of the data flow. A [`Family`] carries its name, HELP,
//! type and the names of its labels beyond (target, port, module); the number of label
//! values a sample gives is checked at compile time (`[&str; N]`), and a family is a
//! constant, so no name is looked up as a string. Families are written one after the
//! other into one buffer, which is handed on (to the HTTP response) whenever it holds a
//! chunk's worth, so a scrape of any size holds a few chunks at a time, never the whole
//! exposition.

use std::io::Write as _;
use std::time::UNIX_EPOCH;

use strum::VariantArray;

use crate::probe::{Capabilities, PortState};
use crate::store::Row;

/// Where the reports being written come from; it decides the HELP wording and whether the
/// counters are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The scheduler's latest report per spec (`/metrics`).
    Scheduled,
    /// One probe made for this request (`/probe`); no counters.
    OnDemand,
}

/// A metric family's type, as the exposition names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
}

/// A probe metric family with `N` labels beyond target, port and module. `{src}` in the
/// HELP says where the value comes from.
struct Family<const N: usize> {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: [&'static str; N],
}

const fn gauge<const N: usize>(
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
) -> Family<N> {
    Family { name, help, kind: Kind::Gauge, labels }
}

const fn counter<const N: usize>(
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
) -> Family<N> {
    Family { name, help, kind: Kind::Counter, labels }
}

const SUCCESS: Family<0> =
    gauge("smtp_probe_success", "1 if every phase of the module succeeded, else 0 {src}.", []);
const DURATION: Family<0> = gauge("smtp_probe_duration_seconds", "Duration of the whole probe {src}.", []);
const PHASE_DURATION: Family<1> = gauge(
    "smtp_probe_phase_duration_seconds",
    "Duration of each phase that ran {src}; a failed phase is included.",
    ["phase"],
);
const FAILURE_INFO: Family<2> = gauge(
    "smtp_probe_failure_info",
    "1 with the phase and reason of the failure, present only while the last scheduled probe failed.",
    ["phase", "reason"],
);
const LAST_RUN: Family<0> = gauge(
    "smtp_probe_last_run_timestamp_seconds",
    "Unix time at which the last scheduled probe started.",
    [],
);
const BANNER_CODE: Family<0> =
    gauge("smtp_probe_banner_code", "Reply code of the server greeting {src}.", []);
const BANNER_INFO: Family<1> = gauge(
    "smtp_probe_banner_info",
    "1 with the hostname the greeting announced (first word after 220) {src}.",
    ["hostname"],
);
const BARE_LF: Family<0> =
    gauge("smtp_probe_bare_lf_lines", "Reply lines that ended in a bare LF instead of CRLF {src}.", []);
const PORT_STATE: Family<1> = gauge(
    "smtp_port_state",
    "1 for the port's current state, 0 for the others {src}: open, refused, filtered, unreachable, no_route, silent, closed_early, unresolved.",
    ["state"],
);
const STARTTLS_ADVERTISED: Family<0> =
    gauge("smtp_starttls_advertised", "1 if EHLO before TLS listed STARTTLS, else 0 {src}.", []);
const EXPECTATION_FAILED: Family<1> = gauge(
    "smtp_probe_expectation_failed",
    "1 if the target's expectation did not hold, 0 if it did {src}.",
    ["check"],
);
const TLS_VERSION: Family<1> =
    gauge("smtp_tls_version_info", "1 with the negotiated TLS version {src}.", ["version"]);
const TLS_CIPHER: Family<1> =
    gauge("smtp_tls_cipher_info", "1 with the negotiated cipher suite {src}.", ["cipher"]);
const TLS_KX_GROUP: Family<1> =
    gauge("smtp_tls_kx_group_info", "1 with the key-exchange group of the handshake {src}.", ["group"]);
const CERT_VERIFIED: Family<0> = gauge(
    "smtp_tls_cert_verified",
    "1 if the server certificate verified against the module's roots and name, else 0 {src}.",
    [],
);
const CERT_ERROR: Family<1> = gauge(
    "smtp_tls_cert_error_info",
    "1 with why the certificate did not verify, present only while it does not {src}.",
    ["error"],
);
const CERT_EXPIRY: Family<0> = gauge(
    "smtp_tls_cert_expiry_timestamp_seconds",
    "Unix time at which the leaf certificate expires (notAfter) {src}.",
    [],
);
const CHAIN_EXPIRY: Family<0> = gauge(
    "smtp_tls_chain_earliest_expiry_timestamp_seconds",
    "Earliest notAfter among the certificates the server presented {src}.",
    [],
);
const CERT_INFO: Family<4> = gauge(
    "smtp_tls_cert_info",
    "1 with the leaf certificate's subject and issuer common names, serial and SHA-256 fingerprint {src}.",
    ["subject_cn", "issuer_cn", "serial", "fingerprint_sha256"],
);
const AUTH_SUCCESS: Family<0> = gauge(
    "smtp_auth_success",
    "1 if AUTH succeeded, 0 if it failed or could not run {src}; absent for modules without credentials.",
    [],
);
const AUTH_REPLY_CODE: Family<0> =
    gauge("smtp_auth_reply_code", "Code of the last reply in the AUTH exchange {src}.", []);
const ENVELOPE_MAIL_FROM: Family<0> =
    gauge("smtp_envelope_mail_from_reply_code", "Reply code to MAIL FROM in the envelope check {src}.", []);
const ENVELOPE_RCPT: Family<2> = gauge(
    "smtp_envelope_rcpt_reply_code",
    "Reply code to RCPT TO for each recipient of the envelope check, with what it should be (accept: 2xx; reject: 4xx or 5xx) {src}.",
    ["recipient", "expect"],
);
const DELIVERY_FOLDER: Family<1> = gauge(
    "smtp_delivery_folder_info",
    "1 with the folder the delivery probe's message was found in: inbox, junk or other {src}.",
    ["folder"],
);
const DELIVERY_AUTH_PASS: Family<1> = gauge(
    "smtp_delivery_authentication_pass",
    "1 if the delivered message's newest Authentication-Results header says pass for the method (dkim, spf, dmarc), else 0 {src}.",
    ["method"],
);
const DELIVERY_HOPS: Family<0> = gauge(
    "smtp_delivery_received_hops",
    "Received header fields of the delivered message: the MTAs that handled it {src}.",
    [],
);
const DELIVERY_SWEPT: Family<0> = gauge(
    "smtp_delivery_swept_messages",
    "Leftover probe messages of earlier probes that the last delivery probe deleted {src}.",
    [],
);
const DELIVERY_SKIPPED: Family<0> = gauge(
    "smtp_delivery_skipped_folders",
    "Folders the IMAP server listed that the last delivery probe could not search (refused, or a name it cannot send back) {src}.",
    [],
);
const EHLO_EXTENSION: Family<2> = gauge(
    "smtp_ehlo_extension",
    "1 if EHLO advertised the extension in the plain or TLS session {src}; 0 (rather than absent) only under ehlo_metrics: all.",
    ["extension", "session"],
);
const EHLO_AUTH_MECHANISM: Family<2> = gauge(
    "smtp_ehlo_auth_mechanism",
    "1 if EHLO advertised the SASL mechanism in the plain or TLS session {src}; 0 (rather than absent) only under ehlo_metrics: all.",
    ["mechanism", "session"],
);
const EHLO_SIZE_LIMIT: Family<1> = gauge(
    "smtp_ehlo_size_limit_bytes",
    "Message size limit from the SIZE extension (0: no fixed limit), in the plain or TLS session {src}.",
    ["session"],
);
const PROBES_TOTAL: Family<0> =
    counter("smtp_probes_total", "Scheduled probes completed since the exporter started.", []);
const FAILURES_TOTAL: Family<1> = counter(
    "smtp_probe_failures_total",
    "Scheduled probes that failed since the exporter started, by reason.",
    ["reason"],
);

/// The fixed EHLO keywords exported by `smtp_ehlo_extension`.
pub const EHLO_EXTENSIONS: [&str; 9] = [
    "STARTTLS",
    "PIPELINING",
    "SIZE",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "DSN",
    "REQUIRETLS",
];

/// The SASL mechanisms exported by `smtp_ehlo_auth_mechanism` (a fixed list keeps the
/// label bounded whatever a server advertises).
pub const AUTH_MECHANISMS: [&str; 10] = [
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "XOAUTH2",
    "OAUTHBEARER",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "DIGEST-MD5",
    "GSSAPI",
    "NTLM",
];

/// Where a full buffer goes: it takes the bytes (leaving `out` empty) and says whether
/// to go on (false: nobody is reading any more).
pub type Flush<'a> = &'a mut dyn FnMut(&mut Vec<u8>) -> bool;

/// Writes every probe family of `rows` into `out`, headers included, in a fixed order,
/// calling `flush` at a row's end whenever `out` holds `chunk` bytes or more. Returns
/// false when `flush` said to stop.
pub fn write(out: &mut Vec<u8>, rows: &[Row], source: Source, chunk: usize, flush: Flush<'_>) -> bool {
    let bases = BaseLabels::of(rows);
    let mut x = Exposition { out, rows, bases: &bases, source, chunk, flush, stopped: false };
    write_outcome(&mut x);
    write_port(&mut x);
    write_tls(&mut x);
    write_auth(&mut x);
    write_envelope(&mut x);
    write_delivery(&mut x);
    write_ehlo(&mut x);
    if source == Source::Scheduled {
        x.family(&PROBES_TOTAL, |f, row| f.sample([], row.probes_total as f64));
        x.family(&FAILURES_TOTAL, |f, row| {
            for (reason, count) in &row.failures_total {
                f.sample([reason.as_str()], *count as f64);
            }
        });
    }
    !x.stopped
}

/// Success, durations, failure, timestamps and what the greeting said.
fn write_outcome(x: &mut Exposition<'_>) {
    x.family(&SUCCESS, |f, row| f.sample([], bool_value(row.report.success())));
    x.family(&DURATION, |f, row| f.sample([], row.report.duration.as_secs_f64()));
    x.family(&PHASE_DURATION, |f, row| {
        for (phase, took) in &row.report.phases {
            f.sample([phase.as_str()], took.as_secs_f64());
        }
    });
    x.family(&FAILURE_INFO, |f, row| {
        if let Some(failure) = &row.report.failure {
            f.sample([failure.phase.as_str(), failure.reason.as_str()], 1.0);
        }
    });
    x.family(&LAST_RUN, |f, row| {
        let started =
            row.report.started_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        f.sample([], started);
    });
    x.family(&BANNER_CODE, |f, row| {
        if let Some(code) = row.report.banner_code {
            f.sample([], f64::from(code));
        }
    });
    x.family(&BANNER_INFO, |f, row| {
        if let Some(hostname) = &row.report.banner_hostname {
            f.sample([&label_safe(hostname)], 1.0);
        }
    });
    x.family(&BARE_LF, |f, row| f.sample([], f64::from(row.report.bare_lf_lines)));
}

/// The port's state, STARTTLS and the expectations.
fn write_port(x: &mut Exposition<'_>) {
    x.family(&PORT_STATE, |f, row| {
        let current = row.report.port_state();
        for &state in PortState::VARIANTS {
            f.sample([state.as_str()], bool_value(state == current));
        }
    });
    x.family(&STARTTLS_ADVERTISED, |f, row| {
        if let Some(advertised) = row.report.starttls_advertised() {
            f.sample([], bool_value(advertised));
        }
    });
    x.family(&EXPECTATION_FAILED, |f, row| {
        for (check, passed) in &row.report.expectations {
            f.sample([check.as_str()], bool_value(!passed));
        }
    });
}

/// What the TLS handshake negotiated and what the certificate says.
fn write_tls(x: &mut Exposition<'_>) {
    x.family(&TLS_VERSION, |f, row| {
        if let Some(tls) = &row.report.tls {
            f.sample([&tls.version], 1.0);
        }
    });
    x.family(&TLS_CIPHER, |f, row| {
        if let Some(tls) = &row.report.tls {
            f.sample([&tls.cipher], 1.0);
        }
    });
    x.family(&TLS_KX_GROUP, |f, row| {
        if let Some(group) = row.report.tls.as_ref().and_then(|t| t.kx_group.as_deref()) {
            f.sample([group], 1.0);
        }
    });
    x.family(&CERT_VERIFIED, |f, row| {
        if let Some(tls) = &row.report.tls {
            f.sample([], bool_value(tls.cert_error.is_none()));
        }
    });
    x.family(&CERT_ERROR, |f, row| {
        if let Some(error) = row.report.tls.as_ref().and_then(|t| t.cert_error) {
            f.sample([error.as_str()], 1.0);
        }
    });
    x.family(&CERT_EXPIRY, |f, row| {
        if let Some(not_after) = row.report.tls.as_ref().and_then(|t| t.leaf_not_after) {
            f.sample([], not_after as f64);
        }
    });
    x.family(&CHAIN_EXPIRY, |f, row| {
        if let Some(earliest) = row.report.tls.as_ref().and_then(|t| t.chain_earliest_not_after) {
            f.sample([], earliest as f64);
        }
    });
    x.family(&CERT_INFO, |f, row| {
        let Some(tls) = row.report.tls.as_ref().filter(|t| t.leaf_not_after.is_some()) else { return };
        let (subject, issuer, serial) =
            (label_safe(&tls.subject_cn), label_safe(&tls.issuer_cn), label_safe(&tls.serial));
        f.sample([&subject, &issuer, &serial, &tls.fingerprint_sha256], 1.0);
    });
}

/// Whether AUTH worked, and its last reply code.
fn write_auth(x: &mut Exposition<'_>) {
    x.family(&AUTH_SUCCESS, |f, row| {
        if let Some(ok) = row.report.auth_success {
            f.sample([], bool_value(ok));
        }
    });
    x.family(&AUTH_REPLY_CODE, |f, row| {
        if let Some(code) = row.report.auth_reply_code {
            f.sample([], f64::from(code));
        }
    });
}

/// What the envelope check's commands were answered.
fn write_envelope(x: &mut Exposition<'_>) {
    x.family(&ENVELOPE_MAIL_FROM, |f, row| {
        if let Some(code) = row.report.envelope.as_ref().and_then(|e| e.mail_from) {
            f.sample([], f64::from(code));
        }
    });
    x.family(&ENVELOPE_RCPT, |f, row| {
        for rcpt in row.report.envelope.iter().flat_map(|e| &e.recipients) {
            if let Some(code) = rcpt.code {
                f.sample([&rcpt.address, rcpt.expect.as_str()], f64::from(code));
            }
        }
    });
}

/// What a delivery probe found: the folder, the message's path, the sweep.
fn write_delivery(x: &mut Exposition<'_>) {
    x.family(&DELIVERY_FOLDER, |f, row| {
        if let Some(folder) = row.report.delivery.as_ref().and_then(|d| d.folder) {
            f.sample([folder.as_str()], 1.0);
        }
    });
    x.family(&DELIVERY_AUTH_PASS, |f, row| {
        if let Some(path) = row.report.delivery.as_ref().and_then(|d| d.path) {
            for (method, pass) in path.verdicts() {
                f.sample([method], bool_value(pass));
            }
        }
    });
    x.family(&DELIVERY_HOPS, |f, row| {
        if let Some(path) = row.report.delivery.as_ref().and_then(|d| d.path) {
            f.sample([], f64::from(path.received_hops));
        }
    });
    x.family(&DELIVERY_SWEPT, |f, row| {
        if let Some(swept) = row.report.delivery.as_ref().and_then(|d| d.swept) {
            f.sample([], f64::from(swept));
        }
    });
    x.family(&DELIVERY_SKIPPED, |f, row| {
        if let Some(skipped) = row.report.delivery.as_ref().and_then(|d| d.skipped_folders.as_ref()) {
            f.sample([], skipped.len() as f64);
        }
    });
}

/// The EHLO capabilities of a row's plain and TLS sessions, those that ran.
fn sessions(row: &Row) -> impl Iterator<Item = (&'static str, &Capabilities)> {
    [("plain", row.report.ehlo.as_ref()), ("tls", row.report.ehlo_tls.as_ref())]
        .into_iter()
        .filter_map(|(session, caps)| caps.map(|caps| (session, caps)))
}

/// What EHLO advertised, before and inside TLS. The per-keyword gauges as the module's
/// `ehlo_metrics` says: every known keyword at 1 or 0 (`all`), those offered at 1
/// (`offered`), or none.
fn write_ehlo(x: &mut Exposition<'_>) {
    use crate::config::EhloMetrics;
    let shown = |row: &Row, offered: bool| match row.ehlo_metrics {
        EhloMetrics::All => true,
        EhloMetrics::Offered => offered,
        EhloMetrics::None => false,
    };
    x.family(&EHLO_EXTENSION, |f, row| {
        for (session, caps) in sessions(row) {
            for extension in EHLO_EXTENSIONS {
                let offered = caps.has(extension);
                if shown(row, offered) {
                    f.sample([extension, session], bool_value(offered));
                }
            }
        }
    });
    x.family(&EHLO_AUTH_MECHANISM, |f, row| {
        for (session, caps) in sessions(row) {
            for mechanism in AUTH_MECHANISMS {
                let offered = caps.auth_mechanisms.iter().any(|m| m == mechanism);
                if shown(row, offered) {
                    f.sample([mechanism, session], bool_value(offered));
                }
            }
        }
    });
    x.family(&EHLO_SIZE_LIMIT, |f, row| {
        for (session, caps) in sessions(row) {
            if let Some(size) = caps.size_limit {
                f.sample([session], size as f64);
            }
        }
    });
}

/// Each row's `target="…",port="…",module="…"` (and `mx`, `family`, `address` for a spec
/// made from DNS), escaped once per scrape, in one buffer.
struct BaseLabels {
    bytes: Vec<u8>,
    /// Where each row's labels end in `bytes`.
    ends: Vec<usize>,
}

impl BaseLabels {
    fn of(rows: &[Row]) -> BaseLabels {
        let mut bytes = Vec::with_capacity(rows.len() * 64);
        let mut ends = Vec::with_capacity(rows.len());
        for row in rows {
            bytes.extend_from_slice(b"target=\"");
            push_escaped(&mut bytes, &row.key.target);
            let _ = write!(bytes, "\",port=\"{}\",module=\"", row.key.port);
            push_escaped(&mut bytes, &row.key.module);
            bytes.push(b'"');
            // A spec made from DNS: which MX (an empty label is no label) and address.
            if let Some(via) = &row.key.via {
                if !via.mx.is_empty() {
                    bytes.extend_from_slice(b",mx=\"");
                    push_escaped(&mut bytes, &via.mx);
                    bytes.push(b'"');
                }
                let family = crate::dns::Family::of(via.address).as_str();
                let _ = write!(bytes, ",family=\"{family}\",address=\"{}\"", via.address);
            }
            ends.push(bytes.len());
        }
        BaseLabels { bytes, ends }
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// The exposition being written: the output, the rows and their base labels, and where
/// full chunks go.
struct Exposition<'a> {
    out: &'a mut Vec<u8>,
    rows: &'a [Row],
    bases: &'a BaseLabels,
    source: Source,
    chunk: usize,
    flush: Flush<'a>,
    /// `flush` said to stop: nothing more is written.
    stopped: bool,
}

impl Exposition<'_> {
    /// Writes `family`'s header and the samples `each_row` gives for every row; no header
    /// when no row has a sample.
    fn family<const N: usize>(
        &mut self,
        family: &Family<N>,
        mut each_row: impl FnMut(&mut Samples<'_, N>, &Row),
    ) {
        if self.stopped {
            return;
        }
        let header_at = self.out.len();
        let kind = match family.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let help = match self.source {
            Source::Scheduled => family.help.replace("{src}", "(from the last scheduled probe)"),
            Source::OnDemand => family
                .help
                .replace("{src}", "(from this probe)")
                .replace("the last scheduled probe", "this probe"),
        };
        let _ = write!(self.out, "# HELP {} {help}\n# TYPE {} {kind}\n", family.name, family.name);
        let mut wrote_any = false;
        for (i, row) in self.rows.iter().enumerate() {
            let before = self.out.len();
            let mut samples = Samples { out: self.out, family, base: self.bases.get(i) };
            each_row(&mut samples, row);
            if self.out.len() == before {
                continue;
            }
            wrote_any = true;
            // Only after a row that wrote samples: the header is then needed anyway.
            if self.out.len() >= self.chunk && !(self.flush)(self.out) {
                self.stopped = true;
                return;
            }
        }
        if !wrote_any {
            self.out.truncate(header_at);
        }
    }
}

/// The samples of one family for one row.
struct Samples<'a, const N: usize> {
    out: &'a mut Vec<u8>,
    family: &'a Family<N>,
    base: &'a [u8],
}

impl<const N: usize> Samples<'_, N> {
    /// Writes `name{base,label="value"…} value`, one value per label of the family.
    fn sample(&mut self, values: [&str; N], value: f64) {
        let out = &mut *self.out;
        out.extend_from_slice(self.family.name.as_bytes());
        out.push(b'{');
        out.extend_from_slice(self.base);
        push_labels_and_value(out, self.family.labels.iter().copied().zip(values), value);
    }
}

/// Ends a sample line after its first labels: `,label="value"` for each pair, then
/// `} value` and the newline.
pub(super) fn push_labels_and_value<'a>(
    out: &mut Vec<u8>,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    value: f64,
) {
    for (name, v) in labels {
        out.push(b',');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        push_escaped(out, v);
        out.push(b'"');
    }
    out.extend_from_slice(b"} ");
    push_value(out, value);
    out.push(b'\n');
}

/// Appends a label value escaped for the text format (backslash, quote, newline).
pub(super) fn push_escaped(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
}

/// Appends a sample value. Most values are 0, 1 or whole numbers (codes, counters,
/// timestamps in seconds); those skip the float formatter.
pub(super) fn push_value(out: &mut Vec<u8>, value: f64) {
    if value == 0.0 {
        out.push(b'0');
    } else if value == 1.0 {
        out.push(b'1');
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Server-supplied text made safe for a label value: printable ASCII and spaces, at most 64
/// characters, so a hostile greeting cannot bloat the exposition.
fn label_safe(text: &str) -> String {
    text.chars().take(64).map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text format's escaping of label values, into a new buffer.
    fn escaped(value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        push_escaped(&mut out, value);
        out
    }

    #[test]
    fn label_values_are_escaped_and_server_text_is_bounded() {
        assert_eq!(escaped("a\"b\\c\nd"), b"a\\\"b\\\\c\\nd");
        let safe = label_safe(&format!("{}\u{7}\"", "x".repeat(100)));
        assert_eq!(safe, "x".repeat(64));
        assert_eq!(label_safe("mx\u{7}\"1"), "mx_\"1");
    }

    #[test]
    fn values_are_written_whole_where_they_can_be() {
        let mut out = Vec::new();
        for v in [0.0, 1.0, 235.0, 1_609_459_200.0, 0.25] {
            push_value(&mut out, v);
            out.push(b' ');
        }
        assert_eq!(out, b"0 1 235 1609459200 0.25 ");
    }
}
