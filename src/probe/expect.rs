//! Expectations: checks that tell "my server answered" from "something answered".
//!
//! A target's `expect` block (see `config::Expectations`) is evaluated against a finished
//! `ProbeReport` by the probe walk. A mismatch does not fail the probe (its phases did
//! succeed); `metrics` exports it as `smtp_probe_expectation_failed{check=...}`, so "STARTTLS
//! stripped" and "someone else answers on port 25" become alertable on their own.

use crate::config::{Expectations, TlsMode};

use super::ProbeReport;

/// One kind of expectation; the label value is the snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Check {
    BannerHostname,
    Starttls,
    CertNames,
}

impl Check {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Evaluates the configured expectations that the report has the data for. Returns
/// `(check, passed)` pairs; a check whose evidence never came (e.g. the banner check when
/// the connection was refused) is left out rather than counted as failed, so a down server
/// does not also look intercepted.
pub fn evaluate(expect: &Expectations, mode: TlsMode, report: &ProbeReport) -> Vec<(Check, bool)> {
    let mut out = Vec::new();
    if let (Some(want), Some(got)) = (&expect.banner_hostname, &report.banner_hostname) {
        out.push((Check::BannerHostname, want.eq_ignore_ascii_case(got)));
    }
    if let (Some(want), Some(ehlo)) = (expect.starttls, &report.ehlo) {
        if mode != TlsMode::Implicit {
            out.push((Check::Starttls, ehlo.starttls() == want));
        }
    }
    if !expect.cert_names.is_empty() && mode != TlsMode::None {
        match &report.tls {
            Some(tls) => {
                let ok = expect
                    .cert_names
                    .iter()
                    .all(|name| tls.leaf_names.iter().any(|san| name_matches(san, name)));
                out.push((Check::CertNames, ok));
            }
            // EHLO in plain text went through but no TLS followed: no certificate was
            // presented at all, which is what a STARTTLS-stripping middlebox causes.
            None if report.ehlo.as_ref().is_some_and(|e| !e.starttls()) => {
                out.push((Check::CertNames, false))
            }
            None => {}
        }
    }
    out
}

/// Matches a certificate name (possibly `*.example.com`) against a wanted host name, as
/// RFC 6125 does: case-insensitive, a wildcard covering exactly one left-most label.
pub fn name_matches(cert_name: &str, wanted: &str) -> bool {
    let (cert_name, wanted) = (cert_name.to_ascii_lowercase(), wanted.to_ascii_lowercase());
    match cert_name.strip_prefix("*.") {
        Some(suffix) => {
            wanted.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
        }
        None => cert_name == wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("mx.example.com", "MX.example.com"));
        assert!(name_matches("*.example.com", "mx.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("mx.example.com", "mx.example.org"));
    }

    /// Issue 17: a check is made only when it is asked for and can be made: no cert_names,
    /// no certificate check; STARTTLS never judged on implicit TLS.
    #[test]
    fn only_the_checks_asked_for_are_made() {
        let mut report = ProbeReport::new();
        report.ehlo =
            Some(crate::probe::Capabilities::parse(&crate::test_support::strings(&["mx", "STARTTLS"])));
        report.tls = Some(crate::test_support::tls_info());
        let none = Expectations::default();
        assert_eq!(evaluate(&none, TlsMode::Starttls, &report), vec![]);
        assert_eq!(evaluate(&none, TlsMode::Implicit, &report), vec![]);
        let starttls = Expectations { starttls: Some(true), ..Expectations::default() };
        assert_eq!(evaluate(&starttls, TlsMode::Starttls, &report), vec![(Check::Starttls, true)]);
        assert_eq!(evaluate(&starttls, TlsMode::Implicit, &report), vec![]);
    }
}
