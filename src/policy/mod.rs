//! Transport security policy of a mail domain: MTA-STS (RFC 8461) and TLS-RPT (RFC 8460).
//!
//! Beside the domain walk (`domains`), which calls [`check`] for a domain at most once per
//! its `policy_interval`: the `_mta-sts` TXT record is looked up with the exporter's
//! resolver and parsed, the policy is fetched over HTTPS (`fetch`) and parsed, and the
//! `_smtp._tls` TXT record is checked. The result is plain data ([`PolicyReport`]); which MX
//! complies is decided at render time from it and the probes' TLS verdicts on the MX hosts,
//! since a sender needs both: an `mx` pattern that covers the MX, and a certificate valid for
//! the MX's name.

pub mod fetch;
mod parse;

pub use parse::{mx_matches, parse_sts_policy, parse_sts_txt, parse_tlsrpt};

use std::time::{Duration, SystemTime};

use crate::dns::{DnsFailure, Resolver};
use crate::tls::TlsSettings;

/// The longest `max_age` RFC 8461 allows (one year).
const MAX_MAX_AGE: u64 = 31_557_600;

/// What an MTA-STS policy asks senders to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Mode {
    /// Refuse to deliver to an MX that the policy does not cover or whose certificate is
    /// not valid for its name.
    Enforce,
    /// Deliver anyway, and report failures (TLS-RPT).
    Testing,
    /// The domain withdraws its policy.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A parsed policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsPolicy {
    pub mode: Mode,
    /// `mx` patterns, lower case: a name, or `*.` and a name (one label).
    pub mx: Vec<String>,
    pub max_age: u64,
}

/// Why the MTA-STS check failed, from a fixed set: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum StsFailure {
    /// No `v=STSv1` TXT record at `_mta-sts.<domain>`: the domain has no policy.
    NoTxt,
    /// The TXT record is there but malformed (or there is more than one).
    TxtMalformed,
    /// The TXT lookup failed (SERVFAIL, timeout, ...).
    Dns,
    /// No TCP connection to `mta-sts.<domain>:443` (or its name does not resolve).
    HttpsConnect,
    /// The TLS handshake failed.
    HttpsTls,
    /// The certificate is not valid for `mta-sts.<domain>` (issuer, name or dates).
    HttpsCertInvalid,
    /// No complete answer within the timeout.
    HttpsTimeout,
    /// A 3xx answer: RFC 8461 forbids following redirects.
    HttpsRedirect,
    /// Another status than 200.
    HttpsStatus,
    /// A media type other than `text/plain`.
    HttpsContentType,
    /// A body larger than the cap (64 KiB).
    HttpsTooLarge,
    /// Not valid HTTP.
    HttpsProtocol,
    /// The policy text is not a valid STSv1 policy.
    PolicyMalformed,
}

impl StsFailure {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why the TLS-RPT record is missing or wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum RptFailure {
    /// No `v=TLSRPTv1` TXT record at `_smtp._tls.<domain>`.
    NoTxt,
    /// The record is malformed: no `rua`, or a `rua` that is neither `mailto:` nor `https:`.
    Malformed,
    /// The lookup failed.
    Dns,
}

impl RptFailure {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The MTA-STS part of a check.
#[derive(Clone, Debug, Default)]
pub struct StsReport {
    /// The TXT record's `id`, when it parsed.
    pub id: Option<String>,
    /// The policy, when it was fetched and parsed.
    pub policy: Option<StsPolicy>,
    /// Why not, in a word and in words.
    pub failure: Option<(StsFailure, String)>,
    /// When a policy was last fetched and parsed.
    pub last_success: Option<SystemTime>,
    /// The id changed since the last policy while the policy text did not: senders fetch a
    /// policy that is the same, which is harmless but a sign that the id is not managed
    /// with the policy.
    pub id_changed_without_policy_change: bool,
    /// The policy text changed while the id did not: senders with a cached policy do not
    /// fetch the new one until their cache expires (max_age).
    pub policy_changed_without_id_change: bool,
    /// The text of the last policy fetched, to compare with the next.
    pub(crate) last_text: Option<String>,
}

/// The TLS-RPT part of a check.
#[derive(Clone, Debug, Default)]
pub struct RptReport {
    /// The reporting addresses, when the record parsed.
    pub rua: Vec<String>,
    pub failure: Option<(RptFailure, String)>,
}

/// A domain's policy check.
#[derive(Clone, Debug, Default)]
pub struct PolicyReport {
    pub sts: StsReport,
    pub rpt: RptReport,
}

/// How the policy of a domain is fetched.
#[derive(Clone, Debug)]
pub struct PolicySettings {
    /// Trust for the HTTPS fetch: the domain's module's (its `ca_file`), else the bundled roots.
    pub tls: std::sync::Arc<TlsSettings>,
    /// The HTTPS port: 443, as RFC 8461 says; tests set another.
    pub port: u16,
    pub timeout: Duration,
}

/// Checks `domain`'s MTA-STS and TLS-RPT records, and fetches its policy. `previous` is
/// the last report, to tell whether the id or the policy changed alone.
pub async fn check(
    domain: &str,
    resolver: &Resolver,
    settings: &PolicySettings,
    previous: Option<&PolicyReport>,
) -> PolicyReport {
    let (sts, rpt) =
        tokio::join!(check_sts(domain, resolver, settings, previous), check_rpt(domain, resolver));
    PolicyReport { sts, rpt }
}

async fn check_sts(
    domain: &str,
    resolver: &Resolver,
    settings: &PolicySettings,
    previous: Option<&PolicyReport>,
) -> StsReport {
    let previous = previous.map(|p| &p.sts);
    let mut report = StsReport {
        last_success: previous.and_then(|p| p.last_success),
        last_text: previous.and_then(|p| p.last_text.clone()),
        ..StsReport::default()
    };
    let records = match resolver.txt(&format!("_mta-sts.{domain}")).await {
        Ok(answer) => answer.value,
        Err(e) if matches!(e.failure, DnsFailure::Nxdomain | DnsFailure::NoRecords) => Vec::new(),
        Err(e) => {
            report.failure = Some((StsFailure::Dns, e.detail));
            return report;
        }
    };
    let ours: Vec<&String> = records.iter().filter(|r| r.starts_with("v=STSv1")).collect();
    let id = match ours.as_slice() {
        [] => {
            report.failure = Some((StsFailure::NoTxt, format!("no v=STSv1 TXT record at _mta-sts.{domain}")));
            return report;
        }
        [one] => match parse_sts_txt(one) {
            Ok(id) => id,
            Err(e) => {
                report.failure = Some((StsFailure::TxtMalformed, e));
                return report;
            }
        },
        _ => {
            report.failure = Some((
                StsFailure::TxtMalformed,
                format!(
                    "{} v=STSv1 TXT records at _mta-sts.{domain}; RFC 8461 wants exactly one",
                    ours.len()
                ),
            ));
            return report;
        }
    };
    report.id = Some(id.clone());
    let host = format!("mta-sts.{domain}");
    let text = match fetch::policy(&host, resolver, settings).await {
        Ok(text) => text,
        Err((failure, detail)) => {
            report.failure = Some((failure, detail));
            return report;
        }
    };
    match parse_sts_policy(&text) {
        Ok(policy) => {
            if let (Some(old_id), Some(old_text)) = (previous.and_then(|p| p.id.as_ref()), &report.last_text)
            {
                report.id_changed_without_policy_change = *old_id != id && *old_text == text;
                report.policy_changed_without_id_change = *old_id == id && *old_text != text;
            }
            report.policy = Some(policy);
            report.last_text = Some(text);
            report.last_success = Some(SystemTime::now());
        }
        Err(e) => report.failure = Some((StsFailure::PolicyMalformed, e)),
    }
    report
}

async fn check_rpt(domain: &str, resolver: &Resolver) -> RptReport {
    let name = format!("_smtp._tls.{domain}");
    let records = match resolver.txt(&name).await {
        Ok(answer) => answer.value,
        Err(e) if matches!(e.failure, DnsFailure::Nxdomain | DnsFailure::NoRecords) => Vec::new(),
        Err(e) => return RptReport { rua: vec![], failure: Some((RptFailure::Dns, e.detail)) },
    };
    let ours: Vec<&String> = records.iter().filter(|r| r.starts_with("v=TLSRPTv1")).collect();
    match ours.as_slice() {
        [] => RptReport {
            rua: vec![],
            failure: Some((RptFailure::NoTxt, format!("no v=TLSRPTv1 TXT record at {name}"))),
        },
        [one] => match parse_tlsrpt(one) {
            Ok(rua) => RptReport { rua, failure: None },
            Err(e) => RptReport { rua: vec![], failure: Some((RptFailure::Malformed, e)) },
        },
        _ => RptReport {
            rua: vec![],
            failure: Some((RptFailure::Malformed, format!("{} v=TLSRPTv1 records at {name}", ours.len()))),
        },
    }
}
