//! `smtp_exporter check DOMAIN`: walk a mail domain's MX set like a sender and say, in
//! plain words, whether and how mail to it is delivered from here.
//!
//! Part of `check`, reusing the scheduled flow's parts: the command line becomes one
//! domain `Expansion`, `domains::walk` resolves its MX set and every address with the
//! exporter's resolver (`--dns-server`), every (MX, address, port) is probed once at the
//! same time, and the result is a table in preference order with a verdict, or JSON.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{known_mode, push_table, CheckArgs, CheckError, CheckOutput, Plan};
use crate::config::{ExpandedPort, Expansion, ExpansionKind, Expectations, PolicyCheck, TlsMode};
use crate::dns::{DnsFailure, DnsSettings, DnssecStatus, Family, MxSet, Resolver};
use crate::domains::{self, DaneFailure, Resolution, TlsaStatus};
use crate::policy::{self, Mode, PolicyReport, PolicySettings, RptFailure, StsFailure};
use crate::probe::{self, PortState, ProbeReport};

/// Whether the argument is walked as a mail domain: with `--mx`, or when it has MX
/// records (or a null MX).
pub(super) async fn mx_walk_wanted(args: &CheckArgs, resolver: &Resolver) -> bool {
    if args.mx {
        return true;
    }
    // An address, or a single label (`localhost`, a lab host): not a mail domain.
    if args.host.parse::<std::net::IpAddr>().is_ok() || args.host.starts_with('[') || !args.host.contains('.')
    {
        return false;
    }
    // A name with MX records, or whose MX lookup fails for another reason than its
    // absence (SERVFAIL, a timeout, a bogus domain): walked, so that the verdict says why.
    match resolver.mx(&args.host).await {
        Ok(answer) => matches!(answer.value, MxSet::Hosts(_) | MxSet::Null),
        Err(e) => !matches!(e.failure, DnsFailure::Nxdomain | DnsFailure::NoRecords),
    }
}

/// One probed (MX, address, port).
struct Probed {
    preference: u16,
    mx: String,
    address: std::net::IpAddr,
    port: u16,
    mode: TlsMode,
    report: ProbeReport,
    key: crate::config::SpecKey,
}

/// Walks the domain, probes every address at once, and renders the result.
pub(super) async fn run(args: &CheckArgs, plan: &Plan) -> Result<CheckOutput, CheckError> {
    let domain = args.host.trim_end_matches('.').to_ascii_lowercase();
    let ports: Vec<(u16, TlsMode)> = if args.ports.is_empty() {
        vec![(25, TlsMode::Starttls)]
    } else {
        args.ports
            .iter()
            .map(|p| (p.port, p.mode.or(known_mode(p.port)).unwrap_or(TlsMode::Starttls)))
            .collect()
    };
    let expansion = Expansion {
        name: domain.clone(),
        kind: ExpansionKind::Domain,
        families: &[Family::Ip4, Family::Ip6],
        ports: ports
            .iter()
            .map(|&(port, mode)| ExpandedPort {
                port,
                module_name: format!("port_{port}"),
                module: plan.module(args, port, mode),
            })
            .collect(),
        interval: Duration::from_secs(3600),
        expect: Arc::new(Expectations::default()),
        // The walk looks each MX's TLSA records up; the MTA-STS check runs below.
        policy: Some(PolicyCheck {
            interval: Duration::from_secs(3600),
            settings: PolicySettings { tls: plan.strict.clone(), port: 443, timeout: args.timeout },
            dane: true,
        }),
    };
    let walked = domains::walk(&expansion, &plan.resolver, &DnsSettings::default(), &[]).await;
    let preference_of =
        |mx: &str| walked.resolution.mx.iter().find(|m| m.host == mx).map(|m| m.preference).unwrap_or(0);
    let mut tasks = Vec::new();
    for scheduled in walked.specs {
        let spec = scheduled.spec.clone();
        tasks.push(tokio::spawn(async move {
            let report = probe::run(&spec).await;
            (spec, report)
        }));
    }
    let mut probed = Vec::new();
    for task in tasks {
        let (spec, report) = task.await.map_err(|e| CheckError::Task(e.to_string()))?;
        let via = spec.via.clone().expect("a domain's specs have an address");
        probed.push(Probed {
            key: spec.key(),
            preference: preference_of(&via.mx),
            mx: via.mx.clone(),
            address: via.address,
            port: spec.port,
            mode: spec.module.tls_mode(),
            report,
        });
    }
    probed.sort_by(|a, b| {
        (a.preference, &a.mx, Family::of(a.address), a.address, a.port).cmp(&(
            b.preference,
            &b.mx,
            Family::of(b.address),
            b.address,
            b.port,
        ))
    });
    let delivery_port = ports[0].0;
    let verdict = verdict(&walked.resolution, &probed, delivery_port);
    // A bogus domain is not delivered to by validating senders, whatever its MX say here.
    let any_success =
        !walked.resolution.bogus() && probed.iter().any(|p| p.port == delivery_port && p.report.success());
    let settings = PolicySettings { tls: plan.strict.clone(), port: 443, timeout: args.timeout };
    let checked = policy::check(&domain, &plan.resolver, &settings, None).await;
    let mut policy = Policy::of(&checked, &walked.resolution, &probed, delivery_port);
    policy.dnssec(&walked.resolution);
    let resolution = Arc::new(walked.resolution);
    policy.dane(&resolution, &probed);
    let walked_resolution = &*resolution;
    let text = if args.json {
        render_json(walked_resolution, &probed, &verdict, &policy)
    } else {
        render_table(walked_resolution, &probed, &verdict, &policy)
    };
    Ok(CheckOutput { text, any_success })
}

/// What a failing address's state says, as a verb phrase.
fn failing(report: &ProbeReport) -> String {
    match report.port_state() {
        PortState::Refused => "refuses".into(),
        PortState::Filtered => "is filtered".into(),
        PortState::Unreachable => "is unreachable".into(),
        PortState::NoRoute => "has no route from here".into(),
        PortState::Silent => "does not greet".into(),
        PortState::ClosedEarly => "closes before greeting".into(),
        PortState::Unresolved => "does not resolve".into(),
        PortState::Open => match &report.failure {
            Some(f) => format!("fails in {} ({})", f.phase, f.reason),
            None => "works".into(),
        },
    }
}

/// The verdict in plain words: where mail goes, as a sender would find, and what is broken.
/// A bogus domain says so first: most senders validate, and for them nothing else counts.
fn verdict(resolution: &Resolution, probed: &[Probed], port: u16) -> String {
    let domain = &resolution.name;
    let from_here = without_dnssec(resolution, probed, port);
    match &resolution.dnssec {
        Some(dnssec) if dnssec.status == DnssecStatus::Bogus => format!(
            "validating resolvers cannot resolve the MX of {domain}: most senders cannot deliver ({}). Without DNSSEC, {from_here}",
            dnssec.detail
        ),
        _ => from_here,
    }
}

/// The verdict as a sender that does not validate DNSSEC would reach it.
fn without_dnssec(resolution: &Resolution, probed: &[Probed], port: u16) -> String {
    let domain = &resolution.name;
    if resolution.null_mx {
        return format!("{domain} accepts no mail: it publishes a null MX (RFC 7505).");
    }
    if let Some((failure, detail)) = &resolution.failure {
        return format!(
            "mail to {domain} cannot be delivered: its DNS fails ({}: {detail}).",
            failure.as_str()
        );
    }
    deliverable_from_here(resolution, probed, port)
}

/// Where mail goes from here, as a sender that does not validate DNSSEC finds it.
fn deliverable_from_here(resolution: &Resolution, probed: &[Probed], port: u16) -> String {
    let domain = &resolution.name;
    let on_port: Vec<&Probed> = probed.iter().filter(|p| p.port == port).collect();
    let mut problems = Vec::new();
    let mut delivering: Option<(String, Vec<Family>)> = None;
    for mx in &resolution.mx {
        if mx.skipped.is_some() {
            problems.push(format!("{} names an address, not a host, and is skipped by senders", mx.host));
            continue;
        }
        let mine: Vec<&&Probed> =
            on_port.iter().filter(|p| p.mx == mx.host || resolution.implicit_mx).collect();
        if mine.is_empty() {
            problems.push(format!("{} has no address", mx.host));
            continue;
        }
        let working: Vec<Family> = [Family::Ip4, Family::Ip6]
            .into_iter()
            .filter(|f| mine.iter().any(|p| Family::of(p.address) == *f && p.report.success()))
            .collect();
        if working.is_empty() {
            problems.push(format!("{} {}", mx.host, failing(&mine[0].report)));
        } else {
            for family in [Family::Ip4, Family::Ip6] {
                if let Some(p) = mine.iter().find(|p| Family::of(p.address) == family && !p.report.success())
                {
                    let name = if family == Family::Ip4 { "IPv4" } else { "IPv6" };
                    problems.push(format!("{name} of {} {}", mx.host, failing(&p.report)));
                }
            }
            if delivering.is_none() {
                delivering = Some((mx.host.clone(), working));
            }
        }
    }
    let problems = problems.join(", ");
    match delivering {
        Some((mx, families)) => {
            let how = match families.as_slice() {
                [Family::Ip4] => " (IPv4 only)",
                [Family::Ip6] => " (IPv6 only)",
                _ => "",
            };
            let implicit = if resolution.implicit_mx { ", its implicit MX (no MX record)" } else { "" };
            if problems.is_empty() {
                format!("mail to {domain} is delivered via {mx}{how}{implicit}.")
            } else {
                format!("mail to {domain} is delivered via {mx}{how}{implicit}: {problems}.")
            }
        }
        None => format!("mail to {domain} is NOT delivered from here: {problems}."),
    }
}

/// The domain's MTA-STS and TLS-RPT, judged against what the probes saw of each MX.
#[derive(Serialize)]
struct Policy {
    #[serde(skip_serializing_if = "Option::is_none")]
    dnssec: Option<JsonDnssec>,
    mta_sts: JsonSts,
    tls_rpt: JsonRpt,
    dane: Vec<JsonDane>,
    /// In words, one line each.
    lines: Vec<String>,
}

#[derive(Serialize)]
struct JsonDnssec {
    /// secure, insecure, bogus, indeterminate, not_checked.
    status: &'static str,
    detail: String,
}

#[derive(Serialize)]
struct JsonSts {
    mode: Option<&'static str>,
    id: Option<String>,
    max_age: Option<u64>,
    failure: Option<&'static str>,
    mx: Vec<JsonStsMx>,
}

#[derive(Serialize)]
struct JsonStsMx {
    host: String,
    covered: bool,
    compliant: bool,
}

#[derive(Serialize)]
struct JsonDane {
    mx: String,
    /// secure, insecure, indeterminate, bogus, none, failed.
    status: &'static str,
    usable_records: usize,
    /// The record that matched (`3 1 1`), where DANE applies and every handshake matched.
    matched: Option<String>,
    /// Why DANE does not hold, where it applies.
    failure: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonRpt {
    rua: Vec<String>,
    failure: Option<&'static str>,
}

impl Policy {
    fn of(report: &PolicyReport, resolution: &Resolution, probed: &[Probed], port: u16) -> Policy {
        let sts = &report.sts;
        let mut lines = Vec::new();
        let mut mx = Vec::new();
        match (&sts.policy, &sts.failure) {
            (Some(policy), _) => {
                let mut parts = Vec::new();
                for m in &resolution.mx {
                    let covered = policy.mx.iter().any(|p| policy::mx_matches(p, &m.host));
                    let cert_valid = probed.iter().any(|p| {
                        p.mx == m.host
                            && p.port == port
                            && p.report.tls.as_ref().is_some_and(|t| t.cert_error.is_none())
                    });
                    let compliant = covered && cert_valid;
                    mx.push(JsonStsMx { host: m.host.clone(), covered, compliant });
                    let consequence = match policy.mode {
                        Mode::Enforce => " — MTA-STS senders will not deliver to it",
                        _ => "",
                    };
                    parts.push(match (covered, cert_valid) {
                        (true, true) => format!("{} complies", m.host),
                        (false, _) => format!("{} is NOT covered by the policy{consequence}", m.host),
                        (true, false) => {
                            format!("{} has no certificate valid for its name{consequence}", m.host)
                        }
                    });
                }
                let mode = match policy.mode {
                    Mode::Enforce => "enforce",
                    Mode::Testing => "testing (senders report failures but deliver)",
                    Mode::None => "none (the policy is withdrawn)",
                };
                lines.push(format!(
                    "MTA-STS: {mode}, id {}, max_age {} s; {}",
                    sts.id.as_deref().unwrap_or("?"),
                    policy.max_age,
                    parts.join("; ")
                ));
            }
            (None, Some((StsFailure::NoTxt, _))) => lines.push("MTA-STS: none (no _mta-sts record)".into()),
            (None, Some((failure, detail))) => lines.push(format!(
                "MTA-STS: the policy cannot be had ({}: {detail}); senders that hold it keep it for its max_age",
                failure.as_str()
            )),
            (None, None) => {}
        }
        let rpt = &report.rpt;
        lines.push(match &rpt.failure {
            None => format!("TLS-RPT: reports go to {}", rpt.rua.join(", ")),
            Some((RptFailure::NoTxt, _)) => {
                "TLS-RPT: none (no _smtp._tls record): nobody hears of failed TLS".into()
            }
            Some((failure, detail)) => format!("TLS-RPT: {} ({detail})", failure.as_str()),
        });
        Policy {
            dnssec: None,
            mta_sts: JsonSts {
                mode: sts.policy.as_ref().map(|p| p.mode.as_str()),
                id: sts.id.clone(),
                max_age: sts.policy.as_ref().map(|p| p.max_age),
                failure: sts.failure.as_ref().map(|(f, _)| f.as_str()),
                mx,
            },
            tls_rpt: JsonRpt { rua: rpt.rua.clone(), failure: rpt.failure.as_ref().map(|(f, _)| f.as_str()) },
            dane: Vec::new(),
            lines,
        }
    }

    /// The DNSSEC line: what validating senders find of the domain's own records.
    fn dnssec(&mut self, resolution: &Resolution) {
        let Some(dnssec) = &resolution.dnssec else { return };
        let words = match dnssec.status {
            DnssecStatus::Secure => "secure: the MX answer validates from the root".to_owned(),
            DnssecStatus::Insecure => "insecure: the zone is not signed (or provably unsigned)".to_owned(),
            DnssecStatus::Bogus => format!(
                "BOGUS — validating resolvers answer SERVFAIL, so their senders cannot find where the mail goes ({})",
                dnssec.detail
            ),
            DnssecStatus::Indeterminate => format!("not judged ({})", dnssec.detail),
            DnssecStatus::NotChecked => "not checked (--dnssec off)".to_owned(),
        };
        self.lines.insert(0, format!("DNSSEC: {words}"));
        self.dnssec = Some(JsonDnssec { status: dnssec.status.as_str(), detail: dnssec.detail.clone() });
    }

    /// The DANE line: for each MX, whether the chains its addresses presented on the
    /// delivery port match its TLSA records, judged as the metrics judge it.
    fn dane(&mut self, resolution: &Arc<Resolution>, probed: &[Probed]) {
        let walks = std::slice::from_ref(resolution);
        let accepted = domains::Accepted::new(walks, probed.iter().map(|p| (&p.key, Some(&p.report))));
        let mut parts = Vec::new();
        for mx in &resolution.mx {
            let Some(lookup) = &mx.tlsa else { continue };
            let status = TlsaStatus::of(lookup);
            let usable = mx.usable_tlsa();
            let judged = accepted.dane(resolution, mx);
            let matched = match judged {
                Some(Ok(())) => probed
                    .iter()
                    .filter(|p| p.mx == mx.host)
                    .find_map(|p| p.report.tls.as_ref()?.dane.as_ref()?.matched.as_ref())
                    .map(|r| r.parameters()),
                _ => None,
            };
            let host = &mx.host;
            parts.push(match (judged, &matched) {
                (Some(Ok(())), Some(record)) => format!("{host} matches {record}"),
                (Some(Err(DaneFailure::NoMatch)), _) => {
                    format!("{host} does NOT match — DANE-validating senders will not deliver to {host}")
                }
                // A failed lookup says what the resolver said too.
                (Some(Err(failure)), _) => match lookup {
                    Err((_, detail)) if !detail.is_empty() => {
                        format!("{host}: {} (the resolver said: {detail})", failure.explain())
                    }
                    _ => format!("{host}: {}", failure.explain()),
                },
                _ => match (status, lookup) {
                    (TlsaStatus::Insecure, _) => {
                        format!("{host} has TLSA records in an unsigned zone (DANE does not apply)")
                    }
                    (TlsaStatus::None, _) => format!("{host} has no TLSA record"),
                    (TlsaStatus::Indeterminate, Ok(set)) => format!(
                        "{host}: not judged ({})",
                        set.why.as_deref().unwrap_or("the validator could not decide")
                    ),
                    _ => format!("{host}: {}", status.as_str()),
                },
            });
            self.dane.push(JsonDane {
                mx: host.clone(),
                status: status.as_str(),
                usable_records: usable,
                matched,
                failure: judged.and_then(|j| j.err()).map(DaneFailure::as_str),
            });
        }
        // The same reason for every MX (the exporter's name servers give no DNSSEC) is
        // said once.
        let whys: Vec<Option<&str>> = resolution
            .mx
            .iter()
            .filter_map(|mx| match &mx.tlsa {
                Some(Ok(set)) if set.dnssec == crate::dns::Dnssec::Indeterminate => Some(set.why.as_deref()),
                Some(_) => Some(None),
                None => None,
            })
            .collect();
        if parts.len() > 1 && whys.len() == parts.len() && whys.iter().all(|w| w.is_some() && *w == whys[0]) {
            parts = vec![format!("not judged for any MX ({})", whys[0].unwrap_or_default())];
        }
        if !parts.is_empty() {
            self.lines.push(format!("DANE: {}", parts.join("; ")));
        }
    }
}

fn render_table(resolution: &Resolution, probed: &[Probed], verdict: &str, policy: &Policy) -> String {
    let mut out = format!("smtp_exporter check {} (mail domain)\n\n", resolution.name);
    let mx_line = if resolution.null_mx {
        "null MX (accepts no mail)".to_owned()
    } else if resolution.implicit_mx {
        "none: the domain's own addresses are its implicit MX".to_owned()
    } else {
        resolution.mx.iter().map(|m| format!("{} {}", m.preference, m.host)).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(out, "MX: {mx_line}\n");
    let mut rows = vec![["PREF", "MX", "ADDRESS", "FAMILY", "PORT", "STATE", "RESULT", "TLS"]
        .map(String::from)
        .to_vec()];
    for p in probed {
        let result = match &p.report.failure {
            None => "ok".to_owned(),
            Some(f) => format!("{}: {}", f.phase, f.reason),
        };
        rows.push(vec![
            p.preference.to_string(),
            p.mx.clone(),
            p.address.to_string(),
            Family::of(p.address).as_str().to_owned(),
            format!("{} {}", p.port, p.mode.as_str()),
            p.report.port_state().as_str().to_owned(),
            result,
            p.report.tls.as_ref().map(|t| t.version.clone()).unwrap_or_else(|| "-".into()),
        ]);
    }
    for mx in resolution.mx.iter().filter(|m| m.addresses.is_empty()) {
        let (state, result) = match mx.skipped {
            Some(_) => ("skipped", "an address, not a host"),
            None => ("unresolved", "no address"),
        };
        rows.push(vec![
            mx.preference.to_string(),
            mx.host.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            state.into(),
            result.into(),
            "-".into(),
        ]);
    }
    if rows.len() > 1 {
        push_table(&mut out, &rows);
    }
    out.push_str("\nDNS (ms):\n");
    for lookup in &resolution.lookups {
        let failure = lookup.failure.map(|f| format!("  {}", f.as_str())).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<5} {}  {:.2}{failure}",
            lookup.kind.to_ascii_uppercase(),
            lookup.name,
            lookup.elapsed.as_secs_f64() * 1e3
        );
    }
    out.push_str("\nPolicy:\n");
    for line in &policy.lines {
        let _ = writeln!(out, "  {line}");
    }
    let _ = write!(out, "\nVerdict:\n  {verdict}\n");
    out
}

#[derive(Serialize)]
struct JsonDomain<'a> {
    domain: &'a str,
    null_mx: bool,
    implicit_mx: bool,
    dns_failure: Option<&'static str>,
    mx: Vec<JsonMx>,
    policy: &'a Policy,
    verdict: &'a str,
}

#[derive(Serialize)]
struct JsonMx {
    preference: u16,
    host: String,
    addresses: Vec<JsonAddress>,
}

#[derive(Serialize)]
struct JsonAddress {
    address: String,
    family: &'static str,
    port: u16,
    mode: &'static str,
    state: &'static str,
    success: bool,
    phase: Option<&'static str>,
    reason: Option<&'static str>,
    duration_seconds: f64,
}

fn render_json(resolution: &Resolution, probed: &[Probed], verdict: &str, policy: &Policy) -> String {
    let mx = resolution
        .mx
        .iter()
        .map(|m| JsonMx {
            preference: m.preference,
            host: m.host.clone(),
            addresses: probed
                .iter()
                .filter(|p| p.mx == m.host)
                .map(|p| JsonAddress {
                    address: p.address.to_string(),
                    family: Family::of(p.address).as_str(),
                    port: p.port,
                    mode: p.mode.as_str(),
                    state: p.report.port_state().as_str(),
                    success: p.report.success(),
                    phase: p.report.failure.as_ref().map(|f| f.phase.as_str()),
                    reason: p.report.failure.as_ref().map(|f| f.reason.as_str()),
                    duration_seconds: p.report.duration.as_secs_f64(),
                })
                .collect(),
        })
        .collect();
    let json = JsonDomain {
        domain: &resolution.name,
        null_mx: resolution.null_mx,
        implicit_mx: resolution.implicit_mx,
        dns_failure: resolution.failure.as_ref().map(|(f, _)| f.as_str()),
        mx,
        policy,
        verdict,
    };
    let mut text = serde_json::to_string_pretty(&json).expect("JSON of plain data");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SpecKey, Via};
    use crate::dane::{Outcome, Tlsa};
    use crate::dns::{DnsFailure, Dnssec, TlsaSet};
    use crate::domains::{Lookup, MxFound};
    use crate::policy::{RptReport, StsPolicy, StsReport};
    use crate::probe::{Failure, Phase, Reason};
    use crate::tls::CertError;
    use serde_json::json;

    const DOMAIN: &str = "d.example.test";

    /// An MX of `d.example.test` with its addresses and no TLSA lookup.
    fn mx(preference: u16, host: &str, addresses: &[&str]) -> MxFound {
        MxFound {
            preference,
            host: host.into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            tlsa: None,
            skipped: None,
        }
    }

    /// A walk of `d.example.test` whose delivery port is 25 (module `port_25`, as `run`
    /// names it).
    fn walk(mx: Vec<MxFound>) -> Resolution {
        Resolution { delivery_module: "port_25".into(), ..crate::test_support::walk(DOMAIN, mx) }
    }

    /// A session that greeted and completed.
    fn ok() -> ProbeReport {
        ProbeReport { banner_code: Some(220), ..ProbeReport::new() }
    }

    /// A session that failed in `phase`, after a greeting when `greeted`.
    fn failed(phase: Phase, reason: Reason, greeted: bool) -> ProbeReport {
        ProbeReport {
            failure: Some(Failure { phase, reason, detail: "x".into() }),
            banner_code: greeted.then_some(220),
            ..ProbeReport::new()
        }
    }

    /// `report` with a TLS 1.3 handshake, its certificate judged `cert_error`, and what
    /// the TLSA records said of its chain.
    fn tls(report: ProbeReport, cert_error: Option<CertError>, dane: Option<Outcome>) -> ProbeReport {
        let tls = crate::tls::TlsInfo { cert_error, dane, ..crate::test_support::tls_info() };
        ProbeReport { tls: Some(tls), ..report }
    }

    /// One probed (MX, address, port) of `d.example.test`, keyed as `run` keys it.
    fn probed(preference: u16, mx: &str, address: &str, port: u16, report: ProbeReport) -> Probed {
        let address: std::net::IpAddr = address.parse().unwrap();
        Probed {
            preference,
            mx: mx.into(),
            address,
            port,
            mode: TlsMode::Starttls,
            report,
            key: SpecKey {
                target: DOMAIN.into(),
                port,
                module: format!("port_{port}"),
                via: Some(Arc::new(Via { mx: mx.into(), address })),
            },
        }
    }

    fn policy_report(sts: StsReport, rpt: RptReport) -> PolicyReport {
        PolicyReport { sts, rpt }
    }

    fn no_policy() -> PolicyReport {
        policy_report(
            StsReport { failure: Some((StsFailure::NoTxt, String::new())), ..StsReport::default() },
            RptReport { rua: vec![], failure: Some((RptFailure::NoTxt, String::new())) },
        )
    }

    /// An MTA-STS policy of `mode` with id `20240101` and these `mx` patterns, and a
    /// TLS-RPT record with two addresses.
    fn sts(mode: Mode, patterns: &[&str]) -> PolicyReport {
        policy_report(
            StsReport {
                id: Some("20240101".into()),
                policy: Some(StsPolicy {
                    mode,
                    mx: patterns.iter().map(|p| p.to_string()).collect(),
                    max_age: 604_800,
                }),
                ..StsReport::default()
            },
            RptReport {
                rua: vec!["mailto:tls@example.test".into(), "https://report.example.test/v1".into()],
                failure: None,
            },
        )
    }

    /// Issue 17: a failing address is described by what its port did, in words; a session
    /// that got past the greeting names the phase and reason it failed in.
    #[test]
    fn a_failing_address_is_described_by_its_port_state() {
        let said = [
            (failed(Phase::Connect, Reason::Refused, false), "refuses"),
            (failed(Phase::Connect, Reason::Timeout, false), "is filtered"),
            (failed(Phase::Connect, Reason::Unreachable, false), "is unreachable"),
            (failed(Phase::Connect, Reason::NoRoute, false), "has no route from here"),
            (failed(Phase::Banner, Reason::Timeout, false), "does not greet"),
            (failed(Phase::Banner, Reason::Closed, false), "closes before greeting"),
            (failed(Phase::Resolve, Reason::DnsNxdomain, false), "does not resolve"),
            (
                failed(Phase::Starttls, Reason::StarttlsUnavailable, true),
                "fails in starttls (starttls_unavailable)",
            ),
            (ok(), "works"),
        ];
        for (report, words) in said {
            assert_eq!(failing(&report), words, "{:?}", report.failure);
        }
    }

    /// Issue 17: the verdict names the first MX (in preference order) with an address that
    /// accepted on the delivery port, says when only one family works, and lists every
    /// problem met on the way; other ports do not count.
    #[test]
    fn the_verdict_names_the_first_working_mx_and_every_problem() {
        let resolution = walk(vec![
            mx(10, "mx1.example.test", &["127.0.0.1", "::1"]),
            mx(20, "mx2.example.test", &["127.0.0.2", "::1"]),
            mx(30, "mx3.example.test", &[]),
            mx(40, "mx4.example.test", &["127.0.0.1"]),
        ]);
        let probes = [
            probed(10, "mx1.example.test", "127.0.0.1", 25, failed(Phase::Connect, Reason::Refused, false)),
            probed(10, "mx1.example.test", "::1", 25, failed(Phase::Connect, Reason::Timeout, false)),
            probed(10, "mx1.example.test", "127.0.0.1", 587, ok()),
            probed(20, "mx2.example.test", "127.0.0.2", 25, ok()),
            probed(20, "mx2.example.test", "::1", 25, failed(Phase::Banner, Reason::Timeout, false)),
            probed(40, "mx4.example.test", "127.0.0.1", 25, ok()),
        ];
        assert_eq!(
            verdict(&resolution, &probes, 25),
            "mail to d.example.test is delivered via mx2.example.test (IPv4 only): mx1.example.test refuses, IPv6 of mx2.example.test does not greet, mx3.example.test has no address."
        );
        // On 587 only mx1 answered, and the others have no address there.
        assert_eq!(
            verdict(&resolution, &probes, 587),
            "mail to d.example.test is delivered via mx1.example.test (IPv4 only): mx2.example.test has no address, mx3.example.test has no address, mx4.example.test has no address."
        );
    }

    /// Issue 17: an MX that accepts only over IPv6 is named with "(IPv6 only)", and its
    /// failing IPv4 address is a problem; one that accepts over both says neither.
    #[test]
    fn the_verdict_says_which_family_alone_works() {
        let resolution = walk(vec![mx(10, "mx1.example.test", &["127.0.0.1", "::1"])]);
        let six_only = [
            probed(10, "mx1.example.test", "127.0.0.1", 25, failed(Phase::Connect, Reason::Timeout, false)),
            probed(10, "mx1.example.test", "::1", 25, ok()),
        ];
        assert_eq!(
            verdict(&resolution, &six_only, 25),
            "mail to d.example.test is delivered via mx1.example.test (IPv6 only): IPv4 of mx1.example.test is filtered."
        );
        let both = [
            probed(10, "mx1.example.test", "127.0.0.1", 25, ok()),
            probed(10, "mx1.example.test", "::1", 25, ok()),
        ];
        assert_eq!(
            verdict(&resolution, &both, 25),
            "mail to d.example.test is delivered via mx1.example.test."
        );
    }

    /// Issue 17: a null MX, a failed MX lookup, an implicit MX and an MX set where nothing
    /// accepts each get their own verdict.
    #[test]
    fn the_verdict_speaks_of_null_failed_implicit_and_undeliverable_domains() {
        let null = Resolution { null_mx: true, ..walk(vec![]) };
        assert_eq!(
            verdict(&null, &[], 25),
            "d.example.test accepts no mail: it publishes a null MX (RFC 7505)."
        );
        let broken = Resolution {
            failure: Some((DnsFailure::Servfail, "MX d.example.test: server failure".into())),
            ..walk(vec![])
        };
        assert_eq!(
            verdict(&broken, &[], 25),
            "mail to d.example.test cannot be delivered: its DNS fails (servfail: MX d.example.test: server failure)."
        );
        let implicit = Resolution { implicit_mx: true, ..walk(vec![mx(0, DOMAIN, &["127.0.0.1"])]) };
        let probes = [probed(0, DOMAIN, "127.0.0.1", 25, ok())];
        assert_eq!(
            verdict(&implicit, &probes, 25),
            "mail to d.example.test is delivered via d.example.test (IPv4 only), its implicit MX (no MX record)."
        );
        let down =
            walk(vec![mx(10, "mx1.example.test", &["::1", "127.0.0.1"]), mx(20, "mx2.example.test", &[])]);
        let probes = [
            probed(
                10,
                "mx1.example.test",
                "::1",
                25,
                failed(Phase::TlsHandshake, Reason::TlsHandshake, true),
            ),
            probed(10, "mx1.example.test", "127.0.0.1", 25, failed(Phase::Connect, Reason::Refused, false)),
        ];
        assert_eq!(
            verdict(&down, &probes, 25),
            "mail to d.example.test is NOT delivered from here: mx1.example.test fails in tls_handshake (tls_handshake), mx2.example.test has no address."
        );
    }

    /// Issue 17: under an enforced policy, an MX complies only when a pattern covers it and
    /// an address presented a certificate valid for its name on the delivery port (another
    /// MX's certificate, or another port's, does not count); each MX that does not comply
    /// is said to be refused by MTA-STS senders.
    #[test]
    fn an_enforced_policy_judges_each_mx_by_its_cover_and_its_own_certificate() {
        let resolution = walk(vec![
            mx(10, "mx1.example.test", &["127.0.0.1"]),
            mx(20, "mx2.example.test", &["127.0.0.2", "::1"]),
            mx(30, "backup.other.test", &["127.0.0.1"]),
        ]);
        let probes = [
            probed(10, "mx1.example.test", "127.0.0.1", 25, tls(ok(), None, None)),
            probed(20, "mx2.example.test", "127.0.0.2", 25, tls(ok(), Some(CertError::NameMismatch), None)),
            probed(20, "mx2.example.test", "::1", 25, ok()),
            probed(20, "mx2.example.test", "127.0.0.2", 587, tls(ok(), None, None)),
            probed(30, "backup.other.test", "127.0.0.1", 25, tls(ok(), None, None)),
        ];
        let report = sts(Mode::Enforce, &["mx1.example.test", "*.example.test"]);
        let policy = Policy::of(&report, &resolution, &probes, 25);
        assert_eq!(
            policy.lines,
            [
                "MTA-STS: enforce, id 20240101, max_age 604800 s; mx1.example.test complies; mx2.example.test has no certificate valid for its name — MTA-STS senders will not deliver to it; backup.other.test is NOT covered by the policy — MTA-STS senders will not deliver to it",
                "TLS-RPT: reports go to mailto:tls@example.test, https://report.example.test/v1",
            ]
        );
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            json!({
                "mta_sts": {
                    "mode": "enforce",
                    "id": "20240101",
                    "max_age": 604800,
                    "failure": null,
                    "mx": [
                        { "host": "mx1.example.test", "covered": true, "compliant": true },
                        { "host": "mx2.example.test", "covered": true, "compliant": false },
                        { "host": "backup.other.test", "covered": false, "compliant": false },
                    ],
                },
                "tls_rpt": {
                    "rua": ["mailto:tls@example.test", "https://report.example.test/v1"],
                    "failure": null,
                },
                "dane": [],
                "lines": policy.lines,
            })
        );
    }

    /// Issue 17: under a testing or withdrawn policy the same MX findings carry no
    /// consequence for senders, and a missing id is shown as `?`.
    #[test]
    fn a_policy_that_is_not_enforced_names_its_mode_without_consequences() {
        let resolution = walk(vec![
            mx(10, "mx1.example.test", &["127.0.0.1"]),
            mx(20, "mx2.example.test", &["127.0.0.1"]),
        ]);
        let probes = [
            probed(10, "mx1.example.test", "127.0.0.1", 25, tls(ok(), Some(CertError::UnknownIssuer), None)),
            probed(20, "mx2.example.test", "127.0.0.1", 25, tls(ok(), None, None)),
        ];
        let report = sts(Mode::Testing, &["mx1.example.test"]);
        assert_eq!(
            Policy::of(&report, &resolution, &probes, 25).lines[0],
            "MTA-STS: testing (senders report failures but deliver), id 20240101, max_age 604800 s; mx1.example.test has no certificate valid for its name; mx2.example.test is NOT covered by the policy"
        );
        let mut report = sts(Mode::None, &["*.example.test"]);
        report.sts.id = None;
        assert_eq!(
            Policy::of(&report, &resolution, &probes, 25).lines[0],
            "MTA-STS: none (the policy is withdrawn), id ?, max_age 604800 s; mx1.example.test has no certificate valid for its name; mx2.example.test complies"
        );
    }

    /// Issue 17: a domain without MTA-STS or TLS-RPT records is told so; a policy that
    /// cannot be fetched and a malformed TLS-RPT record give their reason and detail; a
    /// check that found nothing either way says nothing of MTA-STS.
    #[test]
    fn missing_and_broken_policies_are_explained() {
        let resolution = walk(vec![mx(10, "mx1.example.test", &["127.0.0.1"])]);
        let probes = [probed(10, "mx1.example.test", "127.0.0.1", 25, tls(ok(), None, None))];
        let policy = Policy::of(&no_policy(), &resolution, &probes, 25);
        assert_eq!(
            policy.lines,
            [
                "MTA-STS: none (no _mta-sts record)",
                "TLS-RPT: none (no _smtp._tls record): nobody hears of failed TLS",
            ]
        );
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            json!({
                "mta_sts": { "mode": null, "id": null, "max_age": null, "failure": "no_txt", "mx": [] },
                "tls_rpt": { "rua": [], "failure": "no_txt" },
                "dane": [],
                "lines": policy.lines,
            })
        );
        let broken = policy_report(
            StsReport {
                id: Some("7".into()),
                failure: Some((StsFailure::HttpsStatus, "HTTP 404".into())),
                ..StsReport::default()
            },
            RptReport { rua: vec![], failure: Some((RptFailure::Malformed, "no rua".into())) },
        );
        assert_eq!(
            Policy::of(&broken, &resolution, &probes, 25).lines,
            [
                "MTA-STS: the policy cannot be had (https_status: HTTP 404); senders that hold it keep it for its max_age",
                "TLS-RPT: malformed (no rua)",
            ]
        );
        let quiet = policy_report(
            StsReport::default(),
            RptReport { rua: vec!["mailto:a@example.test".into()], failure: None },
        );
        assert_eq!(
            Policy::of(&quiet, &resolution, &probes, 25).lines,
            ["TLS-RPT: reports go to mailto:a@example.test"]
        );
    }

    /// Issue 14: the DANE line says, per MX with a TLSA lookup, which record its own
    /// addresses' chains matched, that a chain matched none, why DANE fails, or why it does
    /// not apply; an MX without a lookup is left out, and so is the line when none has one.
    /// Issue 25: behind name servers that give no DNSSEC, every MX is not judged for the
    /// same reason: said once; MX not judged for different reasons each say theirs.
    #[test]
    fn one_reason_for_every_mx_is_said_once() {
        let ee = Tlsa { usage: 3, selector: 1, matching: 1, data: vec![1; 32] };
        let why = |w: &str| {
            Some(Ok(Arc::new(TlsaSet {
                dnssec: Dnssec::Indeterminate,
                records: vec![ee.clone()],
                why: Some(w.to_owned()),
            })))
        };
        let with = |host: &str, tlsa| MxFound { tlsa, ..mx(10, host, &["127.0.0.1"]) };
        let line = |mx: Vec<MxFound>| {
            let mut policy = Policy::of(&PolicyReport::default(), &walk(vec![]), &[], 25);
            policy.lines.clear();
            policy.dane(&Arc::new(walk(mx)), &[]);
            policy.lines.join("\n")
        };
        assert_eq!(
            line(vec![
                with("mx1.example.test", why("no DNSSEC here")),
                with("mx2.example.test", why("no DNSSEC here"))
            ]),
            "DANE: not judged for any MX (no DNSSEC here)"
        );
        assert_eq!(
            line(vec![with("mx1.example.test", why("one")), with("mx2.example.test", why("two"))]),
            "DANE: mx1.example.test: not judged (one); mx2.example.test: not judged (two)"
        );
    }

    #[test]
    fn the_dane_line_judges_each_mx_from_its_tlsa_records_and_its_own_probes() {
        let ee = Tlsa { usage: 3, selector: 1, matching: 1, data: vec![1; 32] };
        let ta = Tlsa { usage: 2, selector: 0, matching: 1, data: vec![2; 32] };
        let pkix = Tlsa { usage: 1, ..ee.clone() };
        let set = |dnssec, records: Vec<Tlsa>| Some(Ok(Arc::new(TlsaSet { dnssec, records, why: None })));
        let lookup_failed = |failure, detail: &str| Some(Err((failure, detail.to_owned())));
        let with = |host: &str, tlsa| MxFound { tlsa, ..mx(10, host, &["127.0.0.1"]) };
        let resolution = Arc::new(walk(vec![
            with("ee.example.test", set(Dnssec::Secure, vec![ee.clone(), ta.clone()])),
            with("ta.example.test", set(Dnssec::Secure, vec![ta.clone()])),
            with("stale.example.test", set(Dnssec::Secure, vec![ee.clone()])),
            with("notls.example.test", set(Dnssec::Secure, vec![ee.clone()])),
            with("pkix.example.test", set(Dnssec::Secure, vec![pkix])),
            with("unsigned.example.test", set(Dnssec::Insecure, vec![ee.clone()])),
            with("undecided.example.test", set(Dnssec::Indeterminate, vec![ee.clone()])),
            with("none.example.test", lookup_failed(DnsFailure::NoRecords, "TLSA none: no records")),
            with("bogus.example.test", lookup_failed(DnsFailure::Bogus, "TLSA bogus: bad signature")),
            // A failure without the resolver's words says none.
            with("failed.example.test", lookup_failed(DnsFailure::Servfail, "")),
            with("off.example.test", None),
        ]));
        let matched = |record: Option<&Tlsa>| {
            Some(Outcome { usable: 1, matched: record.cloned(), anchor: record.map(|_| 0) })
        };
        let at = |host: &str, report| probed(10, host, "127.0.0.1", 25, report);
        let probes = [
            at("ee.example.test", tls(ok(), None, matched(Some(&ee)))),
            at("ta.example.test", tls(ok(), None, matched(Some(&ta)))),
            at("stale.example.test", tls(ok(), None, matched(None))),
            at("notls.example.test", failed(Phase::Starttls, Reason::StarttlsUnavailable, true)),
            at("off.example.test", tls(ok(), None, None)),
        ];
        let mut policy = Policy::of(&no_policy(), &resolution, &probes, 25);
        policy.dane(&resolution, &probes);
        assert_eq!(
            policy.lines[2],
            "DANE: ee.example.test matches 3 1 1; ta.example.test matches 2 0 1; stale.example.test does NOT match — DANE-validating senders will not deliver to stale.example.test; notls.example.test: no address completed a TLS handshake; DANE-validating senders will not deliver to it; pkix.example.test: its TLSA records are all unusable for SMTP (only DANE-TA(2) and DANE-EE(3) count); DANE-validating senders only insist on TLS; unsigned.example.test has TLSA records in an unsigned zone (DANE does not apply); undecided.example.test: not judged (the validator could not decide); none.example.test has no TLSA record; bogus.example.test: the TLSA answer fails DNSSEC validation; DANE-validating senders defer all mail to it (the resolver said: TLSA bogus: bad signature); failed.example.test: its TLSA records cannot be looked up; DANE-validating senders defer mail to it"
        );
        assert_eq!(policy.lines.len(), 3);
        let dane = |mx: &str, status: &str, usable: usize, matched: Option<&str>, failure: Option<&str>| json!({ "mx": mx, "status": status, "usable_records": usable, "matched": matched, "failure": failure });
        assert_eq!(
            serde_json::to_value(&policy.dane).unwrap(),
            json!([
                dane("ee.example.test", "secure", 2, Some("3 1 1"), None),
                dane("ta.example.test", "secure", 1, Some("2 0 1"), None),
                dane("stale.example.test", "secure", 1, None, Some("no_match")),
                dane("notls.example.test", "secure", 1, None, Some("no_tls")),
                dane("pkix.example.test", "secure", 0, None, Some("no_usable_records")),
                dane("unsigned.example.test", "insecure", 0, None, None),
                dane("undecided.example.test", "indeterminate", 0, None, None),
                dane("none.example.test", "none", 0, None, None),
                dane("bogus.example.test", "bogus", 0, None, Some("bogus")),
                dane("failed.example.test", "failed", 0, None, Some("lookup_failed")),
            ])
        );

        let without = Arc::new(walk(vec![mx(10, "mx1.example.test", &["127.0.0.1"])]));
        let mut policy = Policy::of(&no_policy(), &without, &[], 25);
        policy.dane(&without, &[]);
        assert_eq!(policy.lines.len(), 2, "no MX had a TLSA lookup: {:?}", policy.lines);
        assert_eq!(serde_json::to_value(&policy.dane).unwrap(), json!([]));
    }

    /// Issue 17: the table lists every probed address in the order given, then each MX
    /// that has no address, then the DNS lookups (with a failure's reason), the policy
    /// lines and the verdict.
    #[test]
    fn the_table_lists_addresses_then_unresolved_mx_then_dns_policy_and_verdict() {
        let mut resolution =
            walk(vec![mx(10, "mx1.example.test", &["127.0.0.1", "::1"]), mx(20, "mx2.example.test", &[])]);
        resolution.lookups = vec![
            Lookup { name: DOMAIN.into(), kind: "mx", elapsed: Duration::from_micros(1500), failure: None },
            Lookup {
                name: "mx2.example.test".into(),
                kind: "aaaa",
                elapsed: Duration::from_micros(250),
                failure: Some(DnsFailure::NoRecords),
            },
        ];
        let probes = [
            probed(10, "mx1.example.test", "127.0.0.1", 25, tls(ok(), None, None)),
            Probed {
                mode: TlsMode::StarttlsRequired,
                ..probed(10, "mx1.example.test", "::1", 587, failed(Phase::Connect, Reason::Refused, false))
            },
        ];
        let policy = Policy::of(&no_policy(), &resolution, &probes, 25);
        let text = render_table(&resolution, &probes, "the verdict.", &policy);
        assert_eq!(
            text,
            "smtp_exporter check d.example.test (mail domain)

MX: 10 mx1.example.test, 20 mx2.example.test

PREF  MX                ADDRESS    FAMILY  PORT                   STATE       RESULT            TLS
10    mx1.example.test  127.0.0.1  ip4     25 starttls            open        ok                TLS1.3
10    mx1.example.test  ::1        ip6     587 starttls_required  refused     connect: refused  -
20    mx2.example.test  -          -       -                      unresolved  no address        -

DNS (ms):
  MX    d.example.test  1.50
  AAAA  mx2.example.test  0.25  no_records

Policy:
  MTA-STS: none (no _mta-sts record)
  TLS-RPT: none (no _smtp._tls record): nobody hears of failed TLS

Verdict:
  the verdict.
"
        );
    }

    /// Issue 17: a domain with nothing to probe (a null MX, a failed MX lookup) gets no
    /// table, not a header alone; an implicit MX is named as such.
    #[test]
    fn a_domain_with_nothing_probed_gets_no_table() {
        let null = Resolution { null_mx: true, ..walk(vec![]) };
        let policy = Policy::of(&no_policy(), &null, &[], 25);
        assert_eq!(
            render_table(&null, &[], "none.", &policy),
            "smtp_exporter check d.example.test (mail domain)\n\nMX: null MX (accepts no mail)\n\n\nDNS (ms):\n\nPolicy:\n  MTA-STS: none (no _mta-sts record)\n  TLS-RPT: none (no _smtp._tls record): nobody hears of failed TLS\n\nVerdict:\n  none.\n"
        );
        let implicit = Resolution { implicit_mx: true, ..walk(vec![mx(0, DOMAIN, &["127.0.0.1"])]) };
        let probes = [probed(0, DOMAIN, "127.0.0.1", 25, ok())];
        let text = render_table(&implicit, &probes, "v.", &policy);
        assert_eq!(
            text.lines().take(5).collect::<Vec<_>>(),
            [
                "smtp_exporter check d.example.test (mail domain)",
                "",
                "MX: none: the domain's own addresses are its implicit MX",
                "",
                "PREF  MX              ADDRESS    FAMILY  PORT         STATE  RESULT  TLS",
            ]
        );
        assert_eq!(
            text.lines().nth(5),
            Some("0     d.example.test  127.0.0.1  ip4     25 starttls  open   ok      -")
        );
    }

    /// Issue 17: the JSON gives each MX with its own probed addresses (none for one
    /// without), the walk's flags and DNS failure, the policy and the verdict.
    #[test]
    fn the_json_puts_each_address_under_its_own_mx() {
        let resolution = walk(vec![
            mx(10, "mx1.example.test", &["127.0.0.1"]),
            mx(20, "mx2.example.test", &["::1"]),
            mx(30, "mx3.example.test", &[]),
        ]);
        let probes = [
            probed(
                10,
                "mx1.example.test",
                "127.0.0.1",
                25,
                ProbeReport { duration: Duration::from_millis(250), ..ok() },
            ),
            Probed {
                mode: TlsMode::Implicit,
                ..probed(
                    20,
                    "mx2.example.test",
                    "::1",
                    465,
                    ProbeReport {
                        duration: Duration::from_millis(1500),
                        ..failed(Phase::TlsHandshake, Reason::TlsCertInvalid, false)
                    },
                )
            },
        ];
        let policy = Policy::of(&no_policy(), &resolution, &probes, 25);
        let text = render_json(&resolution, &probes, "the verdict.", &policy);
        assert!(text.ends_with("}\n"), "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({
                "domain": "d.example.test",
                "null_mx": false,
                "implicit_mx": false,
                "dns_failure": null,
                "mx": [
                    {
                        "preference": 10,
                        "host": "mx1.example.test",
                        "addresses": [{
                            "address": "127.0.0.1", "family": "ip4", "port": 25, "mode": "starttls",
                            "state": "open", "success": true, "phase": null, "reason": null,
                            "duration_seconds": 0.25,
                        }],
                    },
                    {
                        "preference": 20,
                        "host": "mx2.example.test",
                        "addresses": [{
                            "address": "::1", "family": "ip6", "port": 465, "mode": "implicit",
                            "state": "open", "success": false, "phase": "tls_handshake",
                            "reason": "tls_cert_invalid", "duration_seconds": 1.5,
                        }],
                    },
                    { "preference": 30, "host": "mx3.example.test", "addresses": [] },
                ],
                "policy": serde_json::to_value(&policy).unwrap(),
                "verdict": "the verdict.",
            })
        );
        let failed = Resolution {
            failure: Some((DnsFailure::Timeout, "MX d.example.test: timed out".into())),
            ..walk(vec![])
        };
        let value: serde_json::Value =
            serde_json::from_str(&render_json(&failed, &[], "v.", &policy)).unwrap();
        assert_eq!((&value["dns_failure"], &value["mx"]), (&json!("timeout"), &json!([])));
    }
}
