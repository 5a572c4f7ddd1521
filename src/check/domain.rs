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
use crate::dns::{DnsSettings, Family, MxSet, Resolver};
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
    matches!(resolver.mx(&args.host).await, Ok(answer) if matches!(answer.value, MxSet::Hosts(_) | MxSet::Null))
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
    let any_success = probed.iter().any(|p| p.port == delivery_port && p.report.success());
    let settings = PolicySettings { tls: plan.strict.clone(), port: 443, timeout: args.timeout };
    let checked = policy::check(&domain, &plan.resolver, &settings, None).await;
    let mut policy = Policy::of(&checked, &walked.resolution, &probed, delivery_port);
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
fn verdict(resolution: &Resolution, probed: &[Probed], port: u16) -> String {
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
    let on_port: Vec<&Probed> = probed.iter().filter(|p| p.port == port).collect();
    let mut problems = Vec::new();
    let mut delivering: Option<(String, Vec<Family>)> = None;
    for mx in &resolution.mx {
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
    mta_sts: JsonSts,
    tls_rpt: JsonRpt,
    dane: Vec<JsonDane>,
    /// In words, one line each.
    lines: Vec<String>,
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
                (Some(Err(failure)), _) => format!("{host}: {}", failure.explain()),
                _ => match (status, lookup) {
                    (TlsaStatus::Insecure, _) => {
                        format!("{host} has TLSA records in an unsigned zone (DANE does not apply)")
                    }
                    (TlsaStatus::None, _) => format!("{host} has no TLSA record"),
                    (_, Err((_, detail))) => format!("{host}: {detail}"),
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
        rows.push(vec![
            mx.preference.to_string(),
            mx.host.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "unresolved".into(),
            "no address".into(),
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
