//! The domain series: what each domain walk found (its MX set, addresses and DNS timings)
//! and whether, from here, mail to the domain is delivered; the same for a host probed on
//! every address (`smtp_target_*`).
//!
//! Part of `metrics`, written after the probe families on every scrape from
//! `domains::Resolutions` and the probe rows already copied out of the store: a domain is
//! deliverable when a spec of its first port, on one of its MX addresses, succeeded in its
//! last scheduled probe.

use std::io::Write as _;
use std::time::UNIX_EPOCH;

use super::families::{push_escaped, push_labels_and_value};
use crate::config::ExpansionKind;
use crate::dns::Family;
use crate::domains::{Accepted, DaneFailure, Resolution};
use crate::store::Row;

/// One family: name, HELP, and the labels after the domain (or target) label.
struct DomainFamily {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const fn family(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> DomainFamily {
    DomainFamily { name, help, labels }
}

const DNS_SUCCESS: DomainFamily = family(
    "smtp_domain_dns_success",
    "1 if the last walk of the domain's DNS (from the cached, scheduled walk) found where its mail goes, or a null MX; else 0.",
    &[],
);
const DNS_FAILURE: DomainFamily = family(
    "smtp_domain_dns_failure_info",
    "1 with why the domain's last DNS walk failed (nxdomain, servfail, refused, timeout, no_records, truncated, bogus, mx_ip_literal, address_refused, other); present only while it fails.",
    &["reason"],
);
const DNS_LOOKUP: DomainFamily = family(
    "smtp_domain_dns_lookup_seconds",
    "Duration of each query of the domain's last DNS walk (near 0 when answered from the exporter's cache).",
    &["name", "type"],
);
const MX_HOSTS: DomainFamily = family(
    "smtp_domain_mx_hosts",
    "Number of MX hosts the domain lists (its last DNS walk); 0 for a null MX or no MX.",
    &[],
);
const MX_INFO: DomainFamily = family(
    "smtp_domain_mx_info",
    "1 for each MX host of the domain, with its preference.",
    &["mx", "preference"],
);
const MX_ADDRESSES: DomainFamily = family(
    "smtp_domain_mx_addresses",
    "Number of addresses of each family an MX host of the domain has (at most 8 are probed).",
    &["mx", "family"],
);
const NULL_MX: DomainFamily =
    family("smtp_domain_null_mx", "1 if the domain publishes a null MX (RFC 7505): it accepts no mail.", &[]);
const IMPLICIT_MX: DomainFamily = family(
    "smtp_domain_implicit_mx",
    "1 if the domain has no MX record, so that its own addresses receive its mail (RFC 5321 5.1).",
    &[],
);
const DELIVERABLE: DomainFamily = family(
    "smtp_domain_deliverable",
    "1 if at least one address of one MX accepted a session on the domain's first port (25 by default) in its last scheduled probe, as a sender would find; else 0.",
    &[],
);
const PRIMARY_DELIVERABLE: DomainFamily = family(
    "smtp_domain_primary_deliverable",
    "1 if an MX of the lowest preference accepted a session in its last scheduled probe; 0 when only a backup MX (or none) does.",
    &[],
);
const MX_DELIVERABLE: DomainFamily = family(
    "smtp_domain_mx_deliverable",
    "1 if at least one address of this MX accepted a session on the domain's first port in its last scheduled probe.",
    &["mx"],
);
const LAST_WALK: DomainFamily = family(
    "smtp_domain_last_walk_timestamp_seconds",
    "Unix time at which the domain's last DNS walk ended.",
    &[],
);
const DNSSEC_STATUS: DomainFamily = family(
    "smtp_domain_dnssec_status_info",
    "1 with what DNSSEC says of the domain's own MX records (its addresses with an implicit MX) at the last walk: secure, insecure, bogus (validating resolvers answer SERVFAIL, so most senders cannot deliver), indeterminate (the exporter's name servers cannot tell), not_checked (dns.dnssec: off).",
    &["status"],
);
const STS_SUCCESS: DomainFamily = family(
    "smtp_domain_mta_sts_success",
    "1 if the domain's MTA-STS TXT record and policy were found, fetched and valid at the last policy check, else 0 (no policy is 0 with reason no_txt).",
    &[],
);
const STS_FAILURE: DomainFamily = family(
    "smtp_domain_mta_sts_failure_info",
    "1 with why the last MTA-STS check failed (no_txt, txt_malformed, dns, https_connect, https_tls, https_cert_invalid, https_timeout, https_redirect, https_status, https_content_type, https_too_large, https_protocol, policy_malformed); present only while it fails.",
    &["reason"],
);
const STS_MODE: DomainFamily = family(
    "smtp_domain_mta_sts_mode_info",
    "1 with the mode of the domain's MTA-STS policy (enforce, testing, none), from the last successful fetch.",
    &["mode"],
);
const STS_MAX_AGE: DomainFamily = family(
    "smtp_domain_mta_sts_max_age_seconds",
    "The max_age of the domain's MTA-STS policy: how long senders keep it.",
    &[],
);
const STS_ID: DomainFamily =
    family("smtp_domain_mta_sts_id_info", "1 with the id of the domain's _mta-sts TXT record.", &["id"]);
const STS_LAST_SUCCESS: DomainFamily = family(
    "smtp_domain_mta_sts_last_success_timestamp_seconds",
    "Unix time of the last successful fetch of the domain's MTA-STS policy (senders keep a policy for max_age).",
    &[],
);
const STS_ID_ONLY: DomainFamily = family(
    "smtp_domain_mta_sts_id_changed_without_policy_change",
    "1 if the TXT id changed at the last check while the policy text did not.",
    &[],
);
const STS_POLICY_ONLY: DomainFamily = family(
    "smtp_domain_mta_sts_policy_changed_without_id_change",
    "1 if the policy text changed at the last check while the TXT id did not: senders with a cached policy will not fetch it.",
    &[],
);
const STS_MX_COVERED: DomainFamily = family(
    "smtp_domain_mta_sts_mx_covered",
    "1 if an mx pattern of the domain's MTA-STS policy covers this MX host, else 0.",
    &["mx"],
);
const STS_MX_COMPLIANT: DomainFamily = family(
    "smtp_domain_mta_sts_mx_compliant",
    "1 if the MX is covered by the policy and an address of it presented a certificate valid for its name on the domain's first port in the last scheduled probe; under mode enforce, senders do not deliver to an MX at 0.",
    &["mx"],
);
const RPT_VALID: DomainFamily = family(
    "smtp_domain_tlsrpt_valid",
    "1 if the domain publishes a well-formed TLS-RPT record (_smtp._tls, v=TLSRPTv1 with a mailto: or https: rua), else 0.",
    &[],
);
const RPT_FAILURE: DomainFamily = family(
    "smtp_domain_tlsrpt_failure_info",
    "1 with why the TLS-RPT record is missing or wrong (no_txt, malformed, dns); present only while it is.",
    &["reason"],
);
const DANE_STATUS: DomainFamily = family(
    "smtp_domain_dane_status_info",
    "1 with what the last DNS walk's DNSSEC-validated TLSA lookup at _PORT._tcp.MX said (secure, insecure, indeterminate, bogus, none, failed); DANE applies only when secure.",
    &["mx", "status"],
);
const DANE_RECORDS: DomainFamily = family(
    "smtp_domain_dane_usable_records",
    "Number of secure TLSA records of the MX that SMTP can use (DANE-TA(2), DANE-EE(3)); 0 when the lookup was not secure.",
    &["mx"],
);
const DANE_MATCH: DomainFamily = family(
    "smtp_domain_dane_match",
    "1 if, where DANE applies, every address of the MX that completed a TLS handshake on the domain's first port in its last scheduled probe presented a chain matching a usable TLSA record, and one did; else 0. Absent where DANE does not apply.",
    &["mx"],
);
const DANE_FAILURE: DomainFamily = family(
    "smtp_domain_dane_failure_info",
    "1 with why DANE does not hold for the MX (bogus, lookup_failed, no_usable_records, no_match, no_tls); present only while it is so. DANE-validating senders defer or refuse mail to it under every reason but no_usable_records, where they only insist on TLS.",
    &["mx", "reason"],
);
const TARGET_DNS_SUCCESS: DomainFamily = family(
    "smtp_target_dns_success",
    "1 if the last lookup of a target probed on every address (ip_protocol: both) found an address; else 0.",
    &[],
);
const TARGET_DNS_FAILURE: DomainFamily = family(
    "smtp_target_dns_failure_info",
    "1 with why the last lookup of a target probed on every address failed; present only while it fails.",
    &["reason"],
);
const TARGET_ADDRESSES: DomainFamily = family(
    "smtp_target_addresses",
    "Number of addresses of each family of a target probed on every address (at most 8 are probed).",
    &["family"],
);

/// Writes every domain and target family.
pub(super) fn write(out: &mut Vec<u8>, walks: &[std::sync::Arc<Resolution>], rows: &[Row]) {
    if walks.is_empty() {
        return;
    }
    let accepted = Accepted::new(walks, rows.iter().map(|r| (&r.key, Some(&*r.report))));
    let domains: Vec<&Resolution> =
        walks.iter().map(|w| &**w).filter(|w| w.kind == ExpansionKind::Domain).collect();
    let hosts: Vec<&Resolution> =
        walks.iter().map(|w| &**w).filter(|w| w.kind != ExpansionKind::Domain).collect();

    let mut f = Writer { out, label: "domain" };
    f.each(&DNS_SUCCESS, &domains, |w, s| s(&[], if w.failure.is_none() { 1.0 } else { 0.0 }));
    f.each(&DNS_FAILURE, &domains, |w, s| {
        if let Some((failure, _)) = &w.failure {
            s(&[failure.as_str()], 1.0);
        }
    });
    f.each(&DNS_LOOKUP, &domains, |w, s| {
        for lookup in &w.lookups {
            s(&[&lookup.name, lookup.kind], lookup.elapsed.as_secs_f64());
        }
    });
    f.each(&MX_HOSTS, &domains, |w, s| {
        s(&[], if w.implicit_mx { 0.0 } else { w.mx.len() as f64 });
    });
    f.each(&MX_INFO, &domains, |w, s| {
        for mx in w.mx.iter().filter(|_| !w.implicit_mx) {
            s(&[&mx.host, &mx.preference.to_string()], 1.0);
        }
    });
    f.each(&MX_ADDRESSES, &domains, |w, s| {
        for mx in &w.mx {
            for family in [Family::Ip4, Family::Ip6] {
                let n = mx.addresses.iter().filter(|a| Family::of(**a) == family).count();
                s(&[&mx.host, family.as_str()], n as f64);
            }
        }
    });
    f.each(&NULL_MX, &domains, |w, s| s(&[], if w.null_mx { 1.0 } else { 0.0 }));
    f.each(&IMPLICIT_MX, &domains, |w, s| s(&[], if w.implicit_mx { 1.0 } else { 0.0 }));
    f.each(&DELIVERABLE, &domains, |w, s| s(&[], if accepted.deliverable(w) { 1.0 } else { 0.0 }));
    f.each(&PRIMARY_DELIVERABLE, &domains, |w, s| s(&[], if accepted.primary(w) { 1.0 } else { 0.0 }));
    f.each(&MX_DELIVERABLE, &domains, |w, s| {
        for mx in &w.mx {
            s(&[&mx.host], if accepted.mx(w, &mx.host) { 1.0 } else { 0.0 });
        }
    });
    f.each(&LAST_WALK, &domains, |w, s| {
        s(&[], w.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as f64).unwrap_or(0.0));
    });
    f.each(&DNSSEC_STATUS, &domains, |w, s| {
        if let Some(dnssec) = &w.dnssec {
            s(&[dnssec.status.as_str()], 1.0);
        }
    });

    write_policy(&mut f, &domains, &accepted);

    f.label = "target";
    f.each(&TARGET_DNS_SUCCESS, &hosts, |w, s| s(&[], if w.failure.is_none() { 1.0 } else { 0.0 }));
    f.each(&TARGET_DNS_FAILURE, &hosts, |w, s| {
        if let Some((failure, _)) = &w.failure {
            s(&[failure.as_str()], 1.0);
        }
    });
    f.each(&TARGET_ADDRESSES, &hosts, |w, s| {
        for family in [Family::Ip4, Family::Ip6] {
            let n = w.mx.iter().flat_map(|m| &m.addresses).filter(|a| Family::of(**a) == family).count();
            s(&[family.as_str()], n as f64);
        }
    });
}

/// `smtp_exporter_dns_dnssec_capable`: whether each name server gives what DNSSEC
/// verdicts need, when domains are walked and DNSSEC is judged.
pub(super) fn write_resolver(out: &mut Vec<u8>, capability: Option<&crate::dns::Capability>) {
    let Some(capability) = capability.filter(|c| !c.servers.is_empty()) else { return };
    let name = "smtp_exporter_dns_dnssec_capable";
    let _ = write!(
        out,
        "# HELP {name} 1 if the name server gives what DNSSEC verdicts need (signatures with dns.dnssec: validate, the AD bit with trust_ad), checked at start, at every reload and every 5 minutes; at 0, DANE and the domains' DNSSEC are indeterminate, never bogus.\n# TYPE {name} gauge\n"
    );
    for server in &capability.servers {
        let _ = writeln!(out, "{name}{{server=\"{}\"}} {}", server.server, u8::from(server.capable));
    }
}

/// The MTA-STS and TLS-RPT families of the domains that have a policy check.
fn write_policy(f: &mut Writer<'_>, domains: &[&Resolution], accepted: &Accepted<'_>) {
    let checked: Vec<&Resolution> = domains.iter().copied().filter(|w| w.policy.is_some()).collect();
    let policy = |w: &Resolution| w.policy.clone().expect("only domains with a policy check");
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    f.each(&STS_SUCCESS, &checked, |w, s| s(&[], flag(policy(w).sts.failure.is_none())));
    f.each(&STS_FAILURE, &checked, |w, s| {
        if let Some((failure, _)) = &policy(w).sts.failure {
            s(&[failure.as_str()], 1.0);
        }
    });
    f.each(&STS_MODE, &checked, |w, s| {
        if let Some(p) = &policy(w).sts.policy {
            s(&[p.mode.as_str()], 1.0);
        }
    });
    f.each(&STS_MAX_AGE, &checked, |w, s| {
        if let Some(p) = &policy(w).sts.policy {
            s(&[], p.max_age as f64);
        }
    });
    f.each(&STS_ID, &checked, |w, s| {
        if let Some(id) = &policy(w).sts.id {
            s(&[id], 1.0);
        }
    });
    f.each(&STS_LAST_SUCCESS, &checked, |w, s| {
        if let Some(at) = policy(w).sts.last_success {
            s(&[], at.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as f64).unwrap_or(0.0));
        }
    });
    f.each(&STS_ID_ONLY, &checked, |w, s| s(&[], flag(policy(w).sts.id_changed_without_policy_change)));
    f.each(&STS_POLICY_ONLY, &checked, |w, s| s(&[], flag(policy(w).sts.policy_changed_without_id_change)));
    let covered = |w: &Resolution, mx: &str| {
        policy(w)
            .sts
            .policy
            .as_ref()
            .is_some_and(|p| p.mx.iter().any(|pattern| crate::policy::mx_matches(pattern, mx)))
    };
    f.each(&STS_MX_COVERED, &checked, |w, s| {
        if policy(w).sts.policy.is_some() {
            for mx in &w.mx {
                s(&[&mx.host], flag(covered(w, &mx.host)));
            }
        }
    });
    f.each(&STS_MX_COMPLIANT, &checked, |w, s| {
        if policy(w).sts.policy.is_some() {
            for mx in &w.mx {
                s(&[&mx.host], flag(covered(w, &mx.host) && accepted.cert_valid(w, &mx.host)));
            }
        }
    });
    f.each(&DANE_STATUS, domains, |w, s| {
        for mx in &w.mx {
            if let Some(lookup) = &mx.tlsa {
                s(&[&mx.host, crate::domains::TlsaStatus::of(lookup).as_str()], 1.0);
            }
        }
    });
    f.each(&DANE_RECORDS, domains, |w, s| {
        for mx in &w.mx {
            if mx.tlsa.is_some() {
                s(&[&mx.host], mx.usable_tlsa() as f64);
            }
        }
    });
    f.each(&DANE_MATCH, domains, |w, s| {
        for mx in &w.mx {
            match accepted.dane(w, mx) {
                Some(Ok(())) => s(&[&mx.host], 1.0),
                Some(Err(DaneFailure::NoMatch | DaneFailure::NoTls)) => s(&[&mx.host], 0.0),
                _ => {}
            }
        }
    });
    f.each(&DANE_FAILURE, domains, |w, s| {
        for mx in &w.mx {
            if let Some(Err(failure)) = accepted.dane(w, mx) {
                s(&[&mx.host, failure.as_str()], 1.0);
            }
        }
    });
    f.each(&RPT_VALID, &checked, |w, s| s(&[], flag(policy(w).rpt.failure.is_none())));
    f.each(&RPT_FAILURE, &checked, |w, s| {
        if let Some((failure, _)) = &policy(w).rpt.failure {
            s(&[failure.as_str()], 1.0);
        }
    });
}

/// Writes families whose first label is `label` (the domain, or the target).
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    label: &'static str,
}

impl Writer<'_> {
    /// The header of `family`, then what `each` writes for every walk through its sample
    /// function (label values after the first, and the value).
    fn each(
        &mut self,
        family: &DomainFamily,
        walks: &[&Resolution],
        mut each: impl FnMut(&Resolution, &mut dyn FnMut(&[&str], f64)),
    ) {
        if walks.is_empty() {
            return;
        }
        let header_at = self.out.len();
        let _ = write!(self.out, "# HELP {0} {1}\n# TYPE {0} gauge\n", family.name, family.help);
        let body_at = self.out.len();
        let (out, label) = (&mut *self.out, self.label);
        for walk in walks {
            each(walk, &mut |values, value| {
                out.extend_from_slice(family.name.as_bytes());
                out.push(b'{');
                out.extend_from_slice(label.as_bytes());
                out.extend_from_slice(b"=\"");
                push_escaped(out, &walk.name);
                out.push(b'"');
                push_labels_and_value(out, family.labels.iter().copied().zip(values.iter().copied()), value);
            });
        }
        if self.out.len() == body_at {
            self.out.truncate(header_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{EhloMetrics, SpecKey, Via};
    use crate::dane::{Outcome, Tlsa};
    use crate::dns::{Dnssec, TlsaSet};
    use crate::domains::MxFound;
    use crate::probe::ProbeReport;

    fn walk(name: &str, kind: ExpansionKind, mx: Vec<MxFound>) -> Arc<Resolution> {
        Arc::new(Resolution { kind, ..crate::test_support::walk(name, mx) })
    }

    /// A row of `d.test`'s spec through `mx`, whose chain matched `matched` (or nothing).
    fn row(mx: &str, matched: Option<Tlsa>) -> Row {
        let key = SpecKey {
            target: "d.test".into(),
            port: 25,
            module: "relay".into(),
            via: Some(Arc::new(Via { mx: mx.into(), address: "192.0.2.1".parse().unwrap() })),
        };
        let mut report = ProbeReport::new();
        let anchor = matched.as_ref().map(|_| 0);
        let outcome = Outcome { usable: 1, matched, anchor };
        report.tls = Some(crate::tls::TlsInfo { dane: Some(outcome), ..crate::test_support::tls_info() });
        Row {
            key,
            report: Arc::new(report),
            ehlo_metrics: EhloMetrics::default(),
            probes_total: 1,
            failures_total: vec![],
        }
    }

    /// Issue 17: addresses are counted per family, for an MX of a domain and for a host
    /// probed on every address; DANE holds (1) for an MX whose chain matched its secure
    /// TLSA records and not (0) for one whose chain did not.
    #[test]
    fn families_are_counted_apart_and_dane_matches_are_written() {
        let record = Tlsa { usage: 3, selector: 1, matching: 1, data: vec![7; 32] };
        let secure = || {
            Some(Ok(Arc::new(TlsaSet { dnssec: Dnssec::Secure, records: vec![record.clone()], why: None })))
        };
        let addresses: Vec<std::net::IpAddr> =
            ["192.0.2.1", "192.0.2.2", "2001:db8::1"].iter().map(|a| a.parse().unwrap()).collect();
        let mx = |host: &str, tlsa| MxFound {
            preference: 10,
            host: host.into(),
            addresses: addresses.clone(),
            tlsa,
            skipped: None,
        };
        let domain = walk(
            "d.test",
            ExpansionKind::Domain,
            vec![mx("mx1.d.test", secure()), mx("mx2.d.test", secure())],
        );
        let host = walk("h.test", ExpansionKind::Host("h.test".into()), vec![mx("h.test", None)]);
        let rows = [row("mx1.d.test", Some(record.clone())), row("mx2.d.test", None)];
        let mut out = Vec::new();
        write(&mut out, &[domain, host], &rows);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("smtp_domain_mx_addresses{domain=\"d.test\",mx=\"mx1")
                    || l.starts_with("smtp_target_addresses")
                    || l.starts_with("smtp_domain_dane_match")
            })
            .collect();
        assert_eq!(
            lines,
            [
                "smtp_domain_mx_addresses{domain=\"d.test\",mx=\"mx1.d.test\",family=\"ip4\"} 2",
                "smtp_domain_mx_addresses{domain=\"d.test\",mx=\"mx1.d.test\",family=\"ip6\"} 1",
                "smtp_domain_dane_match{domain=\"d.test\",mx=\"mx1.d.test\"} 1",
                "smtp_domain_dane_match{domain=\"d.test\",mx=\"mx2.d.test\"} 0",
                "smtp_target_addresses{target=\"h.test\",family=\"ip4\"} 2",
                "smtp_target_addresses{target=\"h.test\",family=\"ip6\"} 1",
            ]
        );
    }
}
