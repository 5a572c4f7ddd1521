//! `check`'s output: the table a person reads, or the JSON (`--json`) a script reads.

use std::fmt::Write as _;

use serde::Serialize;
use strum::VariantArray;

use super::{Checked, Detected};
use crate::logging::format_date;
use crate::probe::{Phase, ProbeReport};

pub(super) fn ms(d: std::time::Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

pub(super) fn auth_mechanisms(report: &ProbeReport) -> Vec<String> {
    report.ehlo_tls.as_ref().or(report.ehlo.as_ref()).map(|c| c.auth_mechanisms.clone()).unwrap_or_default()
}

pub(super) fn cert_expiry(report: &ProbeReport) -> Option<(String, i64)> {
    let not_after = report.tls.as_ref()?.leaf_not_after?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Some((format_date(not_after), (not_after - now).div_euclid(86_400)))
}

pub(super) fn render_table(host: &str, results: &[Checked], advice: &[String]) -> String {
    let mut rows =
        vec![["PORT", "MODE", "STATE", "RESULT", "TLS", "CERT EXPIRES", "AUTH"].map(String::from).to_vec()];
    for Checked { spec, report: r, .. } in results {
        let result = match &r.failure {
            None => "ok".to_owned(),
            Some(f) => format!("{}: {}", f.phase, f.reason),
        };
        let tls = r.tls.as_ref().map(|t| t.version.clone()).unwrap_or_else(|| "-".into());
        let cert = cert_expiry(r).map(|(d, days)| format!("{d} ({days} d)")).unwrap_or_else(|| "-".into());
        let auth = auth_mechanisms(r);
        let auth = if auth.is_empty() { "-".to_owned() } else { auth.join(" ") };
        rows.push(vec![
            spec.port.to_string(),
            spec.module.tls_mode().as_str().to_owned(),
            r.port_state().as_str().to_owned(),
            result,
            tls,
            cert,
            auth,
        ]);
    }
    let mut out = format!("smtp_exporter check {host}\n\n");
    push_table(&mut out, &rows);

    out.push_str("\nPhase times (ms):\n");
    let mut phase_rows = vec![std::iter::once("PORT".to_owned())
        .chain(Phase::VARIANTS.iter().map(|p| p.as_str().to_owned()))
        .collect::<Vec<_>>()];
    for Checked { spec, report: r, .. } in results {
        let mut row = vec![spec.port.to_string()];
        row.extend(Phase::VARIANTS.iter().map(|p| r.phase(*p).map(ms).unwrap_or_else(|| "-".into())));
        phase_rows.push(row);
    }
    push_table(&mut out, &phase_rows);

    out.push_str("\nRecommendation:\n");
    for line in advice {
        let _ = writeln!(out, "  {line}");
    }
    out
}

pub(super) fn push_table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[derive(Serialize)]
pub(super) struct JsonCheck<'a> {
    pub(super) host: &'a str,
    pub(super) ports: Vec<JsonPort>,
    pub(super) working_ports: Vec<u16>,
    pub(super) recommendation: &'a [String],
}

#[derive(Serialize)]
pub(super) struct JsonPort {
    pub(super) port: u16,
    pub(super) mode: &'static str,
    /// For a port of unknown role given without a mode: what sniffing found.
    pub(super) mode_detected_by: Option<&'static str>,
    pub(super) state: &'static str,
    pub(super) success: bool,
    pub(super) failure: Option<JsonFailure>,
    /// The phases that ran, in order.
    pub(super) phases: Vec<JsonPhase>,
    pub(super) banner_code: Option<u16>,
    pub(super) banner_hostname: Option<String>,
    pub(super) starttls_advertised: Option<bool>,
    pub(super) tls_version: Option<String>,
    pub(super) tls_cipher: Option<String>,
    pub(super) cert_expiry: Option<String>,
    pub(super) cert_expiry_timestamp_seconds: Option<i64>,
    pub(super) auth_mechanisms: Vec<String>,
    pub(super) auth_success: Option<bool>,
}

#[derive(Serialize)]
pub(super) struct JsonPhase {
    pub(super) phase: &'static str,
    pub(super) seconds: f64,
}

#[derive(Serialize)]
pub(super) struct JsonFailure {
    pub(super) phase: &'static str,
    pub(super) reason: &'static str,
    pub(super) detail: String,
}

pub(super) fn render_json(host: &str, results: &[Checked], advice: &[String]) -> String {
    let ports = results
        .iter()
        .map(|Checked { spec, report: r, detected, .. }| JsonPort {
            port: spec.port,
            mode: spec.module.tls_mode().as_str(),
            mode_detected_by: detected.map(|d| match d {
                Detected::Greeting => "greeting",
                Detected::Tls => "tls",
                Detected::Nothing => "nothing",
            }),
            state: r.port_state().as_str(),
            success: r.success(),
            failure: r.failure.as_ref().map(|f| JsonFailure {
                phase: f.phase.as_str(),
                reason: f.reason.as_str(),
                detail: f.detail.clone(),
            }),
            phases: r
                .phases
                .iter()
                .map(|(p, d)| JsonPhase { phase: p.as_str(), seconds: d.as_secs_f64() })
                .collect(),
            banner_code: r.banner_code,
            banner_hostname: r.banner_hostname.clone(),
            starttls_advertised: r.starttls_advertised(),
            tls_version: r.tls.as_ref().map(|t| t.version.clone()),
            tls_cipher: r.tls.as_ref().map(|t| t.cipher.clone()),
            cert_expiry: cert_expiry(r).map(|(d, _)| d),
            cert_expiry_timestamp_seconds: r.tls.as_ref().and_then(|t| t.leaf_not_after),
            auth_mechanisms: auth_mechanisms(r),
            auth_success: r.auth_success,
        })
        .collect();
    let working_ports = results.iter().filter(|c| c.report.success()).map(|c| c.spec.port).collect();
    let out = JsonCheck { host, ports, working_ports, recommendation: advice };
    serde_json::to_string_pretty(&out).expect("check output serializes") + "\n"
}
