//! Issue 25: DNSSEC verdicts behind the resolvers the exporter meets, each started by mta.sh
//! on loopback in front of knot: knot itself (authoritative; it signs the zones), unbound
//! validating from our root's key, unbound with validation off (it passes DNSSEC records
//! on), and dnsmasq serving its own copy of the names without any DNSSEC record. For each of
//! them and each `dns.dnssec` mode: the metrics, and `check`'s words, for a signed domain
//! with matching TLSA records and a stale one (dane.test; its mx4), a domain whose DS
//! matches none of its keys (bogus.test) and an unsigned one (unsigned.mail.test), with the
//! TLSA queries each resolver got (none at all with `off`). Then MX sets as senders read
//! them (an IP literal, 500 records, a set that fits TCP only), and, last of the suite, no
//! library struct dump in any log of the run or in any `check` output made here.

use super::*;

/// What one domain shows in a cell of the matrix, in the order of [`Outcome::line`]:
/// - `dnssec`: the status of `smtp_domain_dnssec_status_info` ("-": no series);
/// - `dane`: per MX (its first label), `mxN:STATUS` from `smtp_domain_dane_status_info`,
///   then `=V` from `smtp_domain_dane_match` and `!REASON` from
///   `smtp_domain_dane_failure_info` when present ("-": no TLSA series at all);
/// - `deliverable`: `smtp_domain_deliverable`;
/// - `dns_failure`: the reason of `smtp_domain_dns_failure_info` ("-": none);
/// - `probed`: how many of its addresses were probed (`smtp_probe_success` series).
#[derive(Clone, Copy)]
struct Outcome {
    dnssec: &'static str,
    dane: &'static str,
    deliverable: u8,
    dns_failure: &'static str,
    probed: usize,
}

const fn outcome(
    dnssec: &'static str,
    dane: &'static str,
    deliverable: u8,
    dns_failure: &'static str,
    probed: usize,
) -> Outcome {
    Outcome { dnssec, dane, deliverable, dns_failure, probed }
}

impl Outcome {
    fn line(&self) -> String {
        line(self.dnssec, self.dane, &self.deliverable.to_string(), self.dns_failure, self.probed)
    }
}

fn line(dnssec: &str, dane: &str, deliverable: &str, dns_failure: &str, probed: usize) -> String {
    format!(
        "dnssec={dnssec} dane=[{dane}] deliverable={deliverable} dns_failure={dns_failure} probed={probed}"
    )
}

/// One resolver set-up (its port in the env file), one `dns.dnssec` mode: what
/// `smtp_exporter_dns_dnssec_capable{server}` says ("-": no series), whether the resolver
/// gets TLSA queries at all (never with `off`), and the outcome for each of [`DOMAINS`].
struct Cell {
    resolver: &'static str,
    mode: &'static str,
    capable: &'static str,
    tlsa_queried: bool,
    outcomes: [Outcome; 3],
}

const fn cell(
    resolver: &'static str,
    mode: &'static str,
    capable: &'static str,
    outcomes: [Outcome; 3],
) -> Cell {
    let off = matches!(mode.as_bytes(), b"off");
    Cell { resolver, mode, capable, tlsa_queried: !off, outcomes }
}

/// The domains of every cell, in the order of [`Cell::outcomes`].
const DOMAINS: [&str; 3] = ["dane.test", "bogus.test", "unsigned.mail.test"];

// dane.test: four MX, each with a TLSA record; mx4's is stale (matches no certificate).
const DANE_JUDGED: &str = "mx1:secure=1 mx2:secure=1 mx3:secure=1 mx4:secure=0!no_match";
const DANE_UNJUDGED: &str = "mx1:indeterminate mx2:indeterminate mx3:indeterminate mx4:indeterminate";
const SECURE: Outcome = outcome("secure", DANE_JUDGED, 1, "-", 4);
const SECURE_UNJUDGED: Outcome = outcome("indeterminate", DANE_UNJUDGED, 1, "-", 4);
const SECURE_OFF: Outcome = outcome("not_checked", "-", 1, "-", 4);
// bogus.test: not deliverable for validating senders, its MX host probed all the same;
// behind the validating unbound too, where the README says the exporter finds the MX hosts
// by asking again with CD.
const BOGUS: Outcome = outcome("bogus", "mx:bogus!bogus", 0, "-", 1);
const BOGUS_UNJUDGED: Outcome = outcome("indeterminate", "mx:indeterminate", 1, "-", 1);
const BOGUS_OFF: Outcome = outcome("not_checked", "-", 1, "-", 1);
// Behind a validating resolver with `off`: its MX is a SERVFAIL, for the exporter as for
// every validating sender, and nothing asks with CD; the status is not_checked all the same
// (README: "any | off | not_checked").
const BOGUS_OFF_SERVFAIL: Outcome = outcome("not_checked", "-", 0, "servfail", 0);
// unsigned.mail.test: delegated without a DS; mx1.mail.test has a TLSA record all the same.
const INSECURE: Outcome = outcome("insecure", "mx1:insecure", 1, "-", 1);
const INSECURE_UNJUDGED: Outcome = outcome("indeterminate", "mx1:indeterminate", 1, "-", 1);
const INSECURE_OFF: Outcome = outcome("not_checked", "-", 1, "-", 1);

/// The expected outcomes: every resolver set-up under every mode (README, "DNSSEC behind
/// your resolver"). knot and the plain unbound set no AD bit, so `trust_ad` cannot judge
/// behind them; dnsmasq gives neither signatures nor the AD bit.
const MATRIX: [Cell; 12] = [
    cell("knot", "validate", "1", [SECURE, BOGUS, INSECURE]),
    cell("knot", "trust_ad", "0", [SECURE_UNJUDGED, BOGUS_UNJUDGED, INSECURE_UNJUDGED]),
    cell("knot", "off", "-", [SECURE_OFF, BOGUS_OFF, INSECURE_OFF]),
    cell("unbound", "validate", "1", [SECURE, BOGUS, INSECURE]),
    cell("unbound", "trust_ad", "1", [SECURE, BOGUS, INSECURE]),
    cell("unbound", "off", "-", [SECURE_OFF, BOGUS_OFF_SERVFAIL, INSECURE_OFF]),
    cell("unbound-plain", "validate", "1", [SECURE, BOGUS, INSECURE]),
    cell("unbound-plain", "trust_ad", "0", [SECURE_UNJUDGED, BOGUS_UNJUDGED, INSECURE_UNJUDGED]),
    cell("unbound-plain", "off", "-", [SECURE_OFF, BOGUS_OFF, INSECURE_OFF]),
    cell("dnsmasq", "validate", "0", [SECURE_UNJUDGED, BOGUS_UNJUDGED, INSECURE_UNJUDGED]),
    cell("dnsmasq", "trust_ad", "0", [SECURE_UNJUDGED, BOGUS_UNJUDGED, INSECURE_UNJUDGED]),
    cell("dnsmasq", "off", "-", [SECURE_OFF, BOGUS_OFF, INSECURE_OFF]),
];

/// How long one cell may take to show what it should (well under a second when right).
const CELL_WITHIN: Duration = Duration::from_secs(15);

/// The resolver's address, from the env file.
fn server_of(mta: &Mta, resolver: &str) -> String {
    let key = match resolver {
        "knot" => "DNS_PORT",
        "unbound" => "UNBOUND_PORT",
        "unbound-plain" => "UNBOUND_PLAIN_PORT",
        "dnsmasq" => "DNSMASQ_PORT",
        other => panic!("no resolver {other}"),
    };
    format!("127.0.0.1:{}", mta.get(key))
}

/// How many TLSA queries `resolver` has answered since it started: knot's counters
/// (mod-stats), or the lines of the query log unbound and dnsmasq write.
fn tlsa_queries(mta: &Mta, resolver: &str) -> Result<usize, String> {
    // unbound logs a query as "... NAME. TLSA IN" and its reply with the code after it.
    let count_in = |log: &str, query: fn(&str) -> bool| {
        std::fs::read_to_string(log)
            .map(|text| text.lines().filter(|l| query(l)).count())
            .map_err(|e| format!("{log}: {e}"))
    };
    let unbound: fn(&str) -> bool = |l| l.trim_end().ends_with(" TLSA IN");
    match resolver {
        "knot" => {
            let stats = run("knotc", &["-c", mta.get("KNOT_CONF"), "stats", "mod-stats.query-type"])?;
            match stats.lines().find(|l| l.contains("[TLSA]")) {
                None => Ok(0),
                Some(l) => l.rsplit(' ').next().unwrap_or("").trim().parse().map_err(|e| format!("{l}: {e}")),
            }
        }
        "unbound" => count_in(mta.get("UNBOUND_LOG"), unbound),
        "unbound-plain" => count_in(mta.get("UNBOUND_PLAIN_LOG"), unbound),
        "dnsmasq" => count_in(mta.get("DNSMASQ_LOG"), |l| l.contains("query[TLSA]")),
        other => Err(format!("no resolver {other}")),
    }
}

/// The exporter's configuration for one cell: the three domains on the relay port, with
/// short intervals and timeouts.
fn cell_config(mta: &Mta, server: &str, mode: &str) -> String {
    let relay = mta.get("RELAY_PORT");
    let domains: String = DOMAINS
        .iter()
        .map(|d| {
            format!("  - name: {d}\n    ip_protocol: ip4\n    ports: [{{ port: {relay}, module: relay }}]\n    policy: {{ https_port: 9 }}\n")
        })
        .collect();
    format!(
        "interval: 2s\ndns:\n  nameservers: [\"{server}\"]\n  timeout: 500ms\n  attempts: 1\n  min_ttl: 1s\n  trust_anchors: \"{}\"\n  dnssec: {mode}\nmodules:\n  relay: {{ tls: starttls, timeout: 2s, tls_config: {{ ca_file: \"{}\" }} }}\ndomains:\n{domains}",
        mta.get("DNS_TRUST_ANCHORS"),
        mta.get("CA_FILE")
    )
}

/// What a scrape shows of `domain`, as [`Outcome::line`] writes it.
fn observe(samples: &[Sample], domain: &str) -> String {
    let of = |family: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("domain", domain)];
        labels.extend_from_slice(extra);
        find(samples, family, &labels)
    };
    let labelled = |family: &str, label: &str| {
        let values: Vec<String> = of(family, &[]).iter().map(|s| s.labels[label].clone()).collect();
        if values.is_empty() {
            "-".to_owned()
        } else {
            values.join(",")
        }
    };
    let mut statuses = of("smtp_domain_dane_status_info", &[]);
    statuses.sort_by(|a, b| a.labels["mx"].cmp(&b.labels["mx"]));
    let dane: Vec<String> = statuses
        .iter()
        .map(|s| {
            let mx = s.labels["mx"].as_str();
            let mut part = format!("{}:{}", mx.split('.').next().unwrap_or(mx), s.labels["status"]);
            for m in of("smtp_domain_dane_match", &[("mx", mx)]) {
                part += &format!("={}", m.value);
            }
            for f in of("smtp_domain_dane_failure_info", &[("mx", mx)]) {
                part += &format!("!{}", f.labels["reason"]);
            }
            part
        })
        .collect();
    let dane = if dane.is_empty() { "-".to_owned() } else { dane.join(" ") };
    let deliverable = match of("smtp_domain_deliverable", &[]).as_slice() {
        [s] => s.value.to_string(),
        _ => "?".to_owned(),
    };
    let probed = find(samples, "smtp_probe_success", &[("target", domain)]).len();
    line(
        &labelled("smtp_domain_dnssec_status_info", "status"),
        &dane,
        &deliverable,
        &labelled("smtp_domain_dns_failure_info", "reason"),
        probed,
    )
}

/// `smtp_exporter_dns_dnssec_capable` for `server`: "1", "0", "-" (absent), or every series
/// when there is another server.
fn capable_of(samples: &[Sample], server: &str) -> String {
    let all = find(samples, "smtp_exporter_dns_dnssec_capable", &[]);
    match all.as_slice() {
        [] => "-".to_owned(),
        [s] if s.labels.get("server").map(String::as_str) == Some(server) => s.value.to_string(),
        other => format!("{other:?}"),
    }
}

/// What one cell showed: the capability, the domains' lines, the TLSA queries the resolver
/// got while the exporter ran, and what else is wrong.
struct Seen {
    capable: String,
    lines: Vec<String>,
    tlsa: usize,
    problems: Vec<String>,
}

/// Runs the exporter of one cell until it shows what the cell expects (or [`CELL_WITHIN`]
/// passes), then checks its exposition with promtool and its log.
fn run_cell(mta: &Mta, cell: &Cell) -> Result<Seen, String> {
    let server = server_of(mta, cell.resolver);
    let path = mta.state_dir.join(format!("resolvers-{}-{}.yml", cell.resolver, cell.mode));
    std::fs::write(&path, cell_config(mta, &server, cell.mode)).map_err(|e| e.to_string())?;
    let want: Vec<String> = cell.outcomes.iter().map(Outcome::line).collect();
    let tlsa_before = tlsa_queries(mta, cell.resolver)?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    let deadline = Instant::now() + CELL_WITHIN;
    let (capable, lines, text) = loop {
        let seen = exporter.exposition().map(|text| {
            let samples = parse_exposition(&text);
            let lines: Vec<String> = DOMAINS.iter().map(|d| observe(&samples, d)).collect();
            (capable_of(&samples, &server), lines, text)
        });
        match seen {
            Ok((capable, lines, text)) => {
                if (capable == cell.capable && lines == want) || Instant::now() > deadline {
                    break (capable, lines, text);
                }
            }
            Err(e) if Instant::now() > deadline => {
                return Err(format!("{} {}: {e}", cell.resolver, cell.mode))
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(exporter);
    // unbound and dnsmasq write their query logs as they go; a moment for the last lines.
    std::thread::sleep(Duration::from_millis(300));
    let tlsa = tlsa_queries(mta, cell.resolver)?.saturating_sub(tlsa_before);
    let mut problems = Vec::new();
    if let Err(e) = promtool_check_metrics(&text) {
        problems.push(e);
    }
    // Behind a resolver without DNSSEC, nothing is ever bogus.
    if cell.resolver == "dnsmasq" && text.contains("=\"bogus\"") {
        let bogus: Vec<&str> = text.lines().filter(|l| l.contains("=\"bogus\"")).collect();
        problems.push(format!("bogus behind dnsmasq: {bogus:?}"));
    }
    // What the name server can give is said once, in words that name it.
    let log = std::fs::read_to_string(path.with_extension("log")).map_err(|e| e.to_string())?;
    let said = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let cannot = format!("DNSSEC cannot be judged from here: the name server {server} ");
    let can = "the name servers give DNSSEC answers";
    let want_said = match cell.capable {
        "0" => (1, 0),
        "1" => (0, 1),
        _ => (0, 0),
    };
    if (said(&cannot), said(can)) != want_said {
        problems.push(format!(
            "the log has {} lines with {cannot:?} and {} with {can:?}, want {want_said:?}: {}",
            said(&cannot),
            said(can),
            path.with_extension("log").display()
        ));
    }
    Ok(Seen { capable, lines, tlsa, problems })
}

/// The resolver matrix through the exporter: every resolver set-up under every
/// `dns.dnssec` mode, against [`MATRIX`]; with `off`, the resolver (knot's counters,
/// unbound's and dnsmasq's query logs) got no TLSA query at all, and with the other modes
/// it did (so the count proves something). promtool lints every exposition.
pub(super) fn dnssec_matrix_through_the_exporter(mta: &Mta) -> Check {
    let started = Instant::now();
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for cell in &MATRIX {
        let seen = run_cell(mta, cell)?;
        let want: Vec<String> = cell.outcomes.iter().map(Outcome::line).collect();
        let tlsa_ok = (seen.tlsa > 0) == cell.tlsa_queried;
        let head = format!("{:<13} {:<8} capable={:<2}", cell.resolver, cell.mode, seen.capable);
        table.push(format!("{head} TLSA queries at the resolver: {}", seen.tlsa));
        for (domain, line) in DOMAINS.iter().zip(&seen.lines) {
            table.push(format!("    {domain:<19} {line}"));
        }
        let mut wrong = seen.problems.clone();
        if seen.capable != cell.capable {
            wrong.push(format!("capable {}, want {}", seen.capable, cell.capable));
        }
        for ((domain, got), want) in DOMAINS.iter().zip(&seen.lines).zip(&want) {
            if got != want {
                wrong.push(format!("{domain}:\n        got  {got}\n        want {want}"));
            }
        }
        if !tlsa_ok {
            wrong.push(format!(
                "{} TLSA queries reached the resolver, want {}",
                seen.tlsa,
                if cell.tlsa_queried { "some" } else { "none" }
            ));
        }
        if !wrong.is_empty() {
            failures.push(format!("  {} {}: {}", cell.resolver, cell.mode, wrong.join("\n      ")));
        }
    }
    let table = table.join("\n");
    if !failures.is_empty() {
        return Err(format!(
            "{} of {} cells differ (after {:.1} s):\n{}\nobserved:\n{table}",
            failures.len(),
            MATRIX.len(),
            started.elapsed().as_secs_f64(),
            failures.join("\n")
        ));
    }
    println!(
        "    {} cells (4 resolvers x validate, trust_ad, off) as expected in {:.1} s; no TLSA query with off:\n{table}",
        MATRIX.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `check` with `args`, keeps its output (both streams) in the state directory for
/// [`no_library_dumps_in_any_log`], and gives the exit code and the output.
fn check_output(mta: &Mta, name: &str, args: &[&str]) -> Result<(i32, String), String> {
    let bin = env!("CARGO_BIN_EXE_smtp_exporter");
    let out = Command::new(bin).arg("check").args(args).output().map_err(|e| format!("{bin}: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let file = mta.state_dir.join(format!("resolvers-check-{name}.out"));
    std::fs::write(&file, &text).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((out.status.code().unwrap_or(-1), text))
}

/// `check DOMAIN --dns-server ... --dnssec MODE` behind the resolvers: (resolver, mode,
/// domain, exit status, what the output must hold, what it must not). `{server}` is the
/// resolver's address; a verdict is matched with the "Verdict:" line above it.
type CheckCase =
    (&'static str, &'static str, &'static str, i32, &'static [&'static str], &'static [&'static str]);

const CHECK_CASES: [CheckCase; 8] = [
    (
        "dnsmasq",
        "validate",
        "dane.test",
        0,
        &[
            "DNSSEC: not judged (DNSSEC cannot be judged from here: the name server {server} gives no DNSSEC signatures",
            "DANE: not judged for any MX (",
            "Verdict:\n  mail to dane.test is delivered via mx1.dane.test",
        ],
        &["BOGUS", "bogus", "fails DNSSEC validation", "defer"],
    ),
    (
        "dnsmasq",
        "trust_ad",
        "bogus.test",
        0,
        &[
            "DNSSEC: not judged (DNSSEC cannot be judged from here: the name server {server} does not set the AD bit",
            "Verdict:\n  mail to bogus.test is delivered via mx.bogus.test",
        ],
        &["BOGUS", "fails DNSSEC validation", "defer", "cannot resolve"],
    ),
    (
        "unbound",
        "trust_ad",
        "dane.test",
        0,
        &[
            "DNSSEC: secure",
            "DANE: mx1.dane.test matches 3 1 1; mx2.dane.test matches 2 0 1; mx3.dane.test matches 3 1 1; mx4.dane.test does NOT match",
            "Verdict:\n  mail to dane.test is delivered via mx1.dane.test",
        ],
        &["not judged"],
    ),
    (
        "unbound",
        "trust_ad",
        "unsigned.mail.test",
        0,
        &["DNSSEC: insecure", "DANE: mx1.mail.test has TLSA records in an unsigned zone (DANE does not apply)"],
        &["not judged"],
    ),
    (
        "unbound",
        "trust_ad",
        "bogus.test",
        1,
        &["DNSSEC: BOGUS", "Verdict:\n  validating resolvers cannot resolve the MX of bogus.test: most senders cannot deliver"],
        &[],
    ),
    (
        "unbound",
        "validate",
        "bogus.test",
        1,
        &["DNSSEC: BOGUS", "Verdict:\n  validating resolvers cannot resolve the MX of bogus.test: most senders cannot deliver"],
        &[],
    ),
    (
        "unbound-plain",
        "validate",
        "bogus.test",
        1,
        &[
            "DNSSEC: BOGUS",
            "Verdict:\n  validating resolvers cannot resolve the MX of bogus.test: most senders cannot deliver",
            "Without DNSSEC, mail to bogus.test is delivered via mx.bogus.test",
        ],
        &[],
    ),
    (
        "knot",
        "off",
        "dane.test",
        0,
        &["DNSSEC: not checked (--dnssec off)", "Verdict:\n  mail to dane.test is delivered via mx1.dane.test"],
        &["DANE:", "TLSA"],
    ),
];

/// `check` behind the resolvers, in words: behind dnsmasq nothing is bogus and the reason
/// names the server; `trust_ad` against the validating unbound finds dane.test secure by
/// the AD bit and bogus.test bogus (SERVFAIL, answered with CD); a bogus domain's verdict
/// says so first; `--dnssec off` asks knot no TLSA question.
pub(super) fn check_behind_each_resolver(mta: &Mta) -> Check {
    let relay = format!("{}:starttls", mta.get("RELAY_PORT"));
    let mut failures = Vec::new();
    for (i, (resolver, mode, domain, exit, holds, lacks)) in CHECK_CASES.iter().enumerate() {
        let server = server_of(mta, resolver);
        let tlsa_before = tlsa_queries(mta, resolver)?;
        let args = [
            *domain,
            "--dns-server",
            &server,
            "--dnssec",
            mode,
            "--dns-trust-anchors",
            mta.get("DNS_TRUST_ANCHORS"),
            "--port",
            &relay,
            "--ca-file",
            mta.get("CA_FILE"),
        ];
        let replies = |code: &str| {
            let log = std::fs::read_to_string(mta.get("UNBOUND_LOG")).unwrap_or_default();
            log.lines().filter(|l| l.contains(&format!(" {domain}. MX IN {code} "))).count()
        };
        let (servfail_before, answered_before) = (replies("SERVFAIL"), replies("NOERROR"));
        let (code, text) = check_output(mta, &format!("{i}-{resolver}-{mode}-{domain}"), &args)?;
        std::thread::sleep(Duration::from_millis(300));
        let tlsa = tlsa_queries(mta, resolver)?.saturating_sub(tlsa_before);
        let mut wrong = Vec::new();
        // Behind the validating unbound, bogus.test's MX is a SERVFAIL, then answered to
        // the question with CD set: its log of replies shows both.
        if *resolver == "unbound" && *domain == "bogus.test" {
            let (servfail, answered) = (
                replies("SERVFAIL").saturating_sub(servfail_before),
                replies("NOERROR").saturating_sub(answered_before),
            );
            if servfail == 0 || answered == 0 {
                wrong.push(format!(
                    "unbound's replies for bogus.test MX: {servfail} SERVFAIL, {answered} NOERROR (with CD); want both"
                ));
            }
        }
        if code != *exit {
            wrong.push(format!("exit status {code}, want {exit}"));
        }
        for want in holds.iter().map(|h| h.replace("{server}", &server)) {
            if !text.contains(&want) {
                wrong.push(format!("lacks {want:?}"));
            }
        }
        for bad in *lacks {
            if text.contains(bad) {
                wrong.push(format!("holds {bad:?}"));
            }
        }
        if *mode == "off" && tlsa != 0 {
            wrong.push(format!("{tlsa} TLSA queries reached {resolver} with --dnssec off"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "check {domain} behind {resolver} --dnssec {mode}: {}\n{text}",
                wrong.join("; ")
            ));
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("\n\n"));
    }
    println!("    {} checks: dnsmasq not judged (never bogus), trust_ad on unbound secure/insecure/bogus, bogus verdicts first, --dnssec off asks no TLSA", CHECK_CASES.len());
    Ok(())
}

/// MX sets as senders read them, from knot (edge.test): an IP-literal MX is not used (alone,
/// the walk fails with `mx_ip_literal`; beside a host name, the host takes the mail and is
/// the primary), 500 MX records come over TCP and the first 16 are kept, and a set that
/// only fits TCP arrives whole; through the exporter and through `check`.
pub(super) fn mx_sets_as_senders_read_them(mta: &Mta) -> Check {
    let (relay, dns) = (mta.get("RELAY_PORT"), mta.get("DNS_PORT"));
    // What the cases stand on: knot sets TC on the big answers over UDP, and gives them
    // whole over TCP.
    for (name, records) in [("big.edge.test", 500), ("tcp.edge.test", 8)] {
        let port = format!("-p{dns}");
        let udp = run("kdig", &["@127.0.0.1", &port, "+notcp", "+bufsize=1232", "+ignore", name, "MX"])?;
        if !udp.lines().any(|l| l.starts_with(";; Flags:") && l.contains(" tc ")) {
            return Err(format!("knot's UDP answer for {name} MX is not truncated:\n{udp}"));
        }
        let tcp = run("kdig", &["@127.0.0.1", &port, "+tcp", "+short", name, "MX"])?;
        if tcp.lines().count() != records {
            return Err(format!("knot gives {} MX for {name} over TCP, want {records}", tcp.lines().count()));
        }
    }
    let names = ["literal", "mixed", "big", "tcp"];
    let domains: String = names
        .iter()
        .map(|d| format!("  - name: {d}.edge.test\n    ip_protocol: ip4\n    ports: [{{ port: {relay}, module: plain }}]\n    policy: {{ enabled: false }}\n"))
        .collect();
    let yaml = format!(
        "interval: 5s\ndns:\n  nameservers: [\"127.0.0.1:{dns}\"]\n  timeout: 1s\n  attempts: 1\n  min_ttl: 1s\n  trust_anchors: \"{}\"\nmodules:\n  plain: {{ tls: none, timeout: 2s }}\ndomains:\n{domains}",
        mta.get("DNS_TRUST_ANCHORS")
    );
    let path = mta.state_dir.join("resolvers-mx-sets.yml");
    std::fs::write(&path, yaml).map_err(|e| e.to_string())?;
    let exporter = Exporter::spawn(&path, &[], None)?;
    let probes = |s: &[Sample], d: &str| find(s, "smtp_probe_success", &[("target", d)]).len();
    let samples = domains::scrape_until(
        &exporter,
        Duration::from_secs(20),
        "every edge.test domain walked and probed",
        |s| {
            find(s, "smtp_domain_deliverable", &[]).len() == names.len()
                && probes(s, "mixed.edge.test") == 1
                && probes(s, "big.edge.test") == 16
                && probes(s, "tcp.edge.test") == 8
                && find(s, "smtp_domain_deliverable", &[("domain", "big.edge.test")])
                    .first()
                    .is_some_and(|x| x.value == 1.0)
        },
    )?;
    let value = |family: &str, domain: &str| one(&samples, family, &[("domain", domain)]).map(|s| s.value);
    let mut wrong = Vec::new();
    let expect = [
        ("smtp_domain_deliverable", "literal.edge.test", 0.0),
        ("smtp_domain_deliverable", "mixed.edge.test", 1.0),
        ("smtp_domain_primary_deliverable", "mixed.edge.test", 1.0),
        ("smtp_domain_deliverable", "big.edge.test", 1.0),
        ("smtp_domain_mx_hosts", "big.edge.test", 16.0),
        ("smtp_domain_deliverable", "tcp.edge.test", 1.0),
        ("smtp_domain_mx_hosts", "tcp.edge.test", 8.0),
        ("smtp_domain_primary_deliverable", "tcp.edge.test", 1.0),
    ];
    for (family, domain, want) in expect {
        match value(family, domain) {
            Ok(got) if got == want => {}
            Ok(got) => wrong.push(format!("{family}{{domain={domain}}} is {got}, want {want}")),
            Err(e) => wrong.push(e),
        }
    }
    let failures = |domain: &str| -> Vec<String> {
        find(&samples, "smtp_domain_dns_failure_info", &[("domain", domain)])
            .iter()
            .map(|s| s.labels["reason"].clone())
            .collect()
    };
    let want_failures: [(&str, &[&str]); 4] = [
        ("literal.edge.test", &["mx_ip_literal"]),
        ("mixed.edge.test", &[]),
        ("big.edge.test", &[]),
        ("tcp.edge.test", &[]),
    ];
    for (domain, want) in want_failures {
        if failures(domain) != want {
            wrong.push(format!(
                "smtp_domain_dns_failure_info of {domain}: {:?}, want {want:?}",
                failures(domain)
            ));
        }
    }
    // The literal is never probed as an address; the host beside it is.
    if probes(&samples, "literal.edge.test") != 0
        || !find(&samples, "smtp_probe_success", &[("mx", "127.0.0.1")]).is_empty()
        || find(&samples, "smtp_probe_success", &[("target", "mixed.edge.test"), ("mx", "mx1.edge.test")])
            .len()
            != 1
    {
        wrong.push(format!(
            "probes of the literal MX: {:?}",
            find(&samples, "smtp_probe_success", &[])
                .iter()
                .filter(
                    |s| s.labels["target"].starts_with("literal") || s.labels["target"].starts_with("mixed")
                )
                .collect::<Vec<_>>()
        ));
    }
    // The 16 of the lowest preference, in order.
    let mut kept: Vec<String> = find(&samples, "smtp_probe_success", &[("target", "big.edge.test")])
        .iter()
        .map(|s| s.labels["mx"].clone())
        .collect();
    kept.sort();
    let first: Vec<String> = (1..=16).map(|i| format!("mx{i:03}.big.edge.test")).collect();
    if kept != first {
        wrong.push(format!("big.edge.test's probed MX: {kept:?}"));
    }
    if let Err(e) = promtool_check_metrics(&exporter.exposition()?) {
        wrong.push(e);
    }
    drop(exporter);

    // check DOMAIN says the same, with a verdict in every case.
    let server = format!("127.0.0.1:{dns}");
    let port = format!("{relay}:starttls");
    let cases: [(&str, i32, &[&str], &[&str]); 4] = [
        (
            "literal.edge.test",
            1,
            &[
                "skipped  an address, not a host",
                "Verdict:\n  mail to literal.edge.test cannot be delivered: its DNS fails (mx_ip_literal: MX 10 127.0.0.1 names an address, not a host",
            ],
            &["127.0.0.1  ip4"],
        ),
        (
            "mixed.edge.test",
            0,
            &[
                "skipped  an address, not a host",
                "Verdict:\n  mail to mixed.edge.test is delivered via mx1.edge.test (IPv4 only): 127.0.0.1 names an address, not a host, and is skipped by senders.",
            ],
            &[],
        ),
        (
            "big.edge.test",
            0,
            &["mx016.big.edge.test  127.0.0.1", "Verdict:\n  mail to big.edge.test is delivered via mx001.big.edge.test"],
            &["mx017"],
        ),
        ("tcp.edge.test", 0, &["mx.a8x", "Verdict:\n  mail to tcp.edge.test is delivered via mx.a1x"], &[]),
    ];
    for (domain, exit, holds, lacks) in cases {
        let args = [
            domain,
            "--dns-server",
            &server,
            "--dns-trust-anchors",
            mta.get("DNS_TRUST_ANCHORS"),
            "--port",
            &port,
            "--ca-file",
            mta.get("CA_FILE"),
        ];
        let (code, text) = check_output(mta, &format!("edge-{domain}"), &args)?;
        let lacking: Vec<&&str> = holds.iter().filter(|h| !text.contains(**h)).collect();
        let holding: Vec<&&str> = lacks.iter().filter(|h| text.contains(**h)).collect();
        if code != exit || !lacking.is_empty() || !holding.is_empty() {
            wrong.push(format!(
                "check {domain}: exit {code} (want {exit}), lacks {lacking:?}, holds {holding:?}:\n{text}"
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(wrong.join("\n"));
    }
    println!("    knot: an IP-literal MX skipped (alone: mx_ip_literal), 500 MX over TCP (16 kept), 8 MX that fit TCP only; exporter and check agree");
    Ok(())
}

/// What in `line` looks like a library's `Debug` dump: a `Name { ` struct opening, or a
/// library's type or crate name.
fn dump_in(line: &str) -> Option<String> {
    let bytes = line.as_bytes();
    for (i, _) in line.match_indices(" { ") {
        if i > 0 && bytes[i - 1].is_ascii_alphabetic() {
            let start =
                line[..i].rfind(|c: char| !c.is_ascii_alphanumeric() && c != '_').map_or(0, |s| s + 1);
            return Some(format!("a struct dump `{} {{ `", &line[start..i]));
        }
    }
    ["hickory", "rustls::", "DnsResponse", "ProtoError", "NetError", "ResolveError", "hyper::", "tokio::"]
        .iter()
        .find(|name| line.contains(**name))
        .map(|name| format!("the library name {name:?}"))
}

/// Last of the suite: no log line of any exporter the suite started (their logs beside
/// their configs in the state directory, written since `mta.sh start` made the test CA),
/// and no `check` output kept by this module, holds a library's struct dump (hickory's
/// `Query { name: ...` once filled the log) or a library's type name.
pub(super) fn no_library_dumps_in_any_log(mta: &Mta) -> Check {
    // The scanner itself, on the line issue 25 saw, and on one of ours.
    let seen = "level=warn msg=\"response does not contain NSEC or NSEC3 records. Query: Query { name: Name(\\\"x.test.\\\") }\"";
    let ours = "level=info msg=\"walked\" domain=dane.test config=\"ports: [{ port: 25 }]\"";
    if dump_in(seen).is_none() || dump_in(ours).is_some() {
        return Err(format!("the dump scanner is wrong: {:?}, {:?}", dump_in(seen), dump_in(ours)));
    }
    // mta.sh start makes the test CA anew (and stop removes the env file): what is older
    // than the CA is from an earlier run.
    let since = std::fs::metadata(mta.get("CA_FILE"))
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", mta.get("CA_FILE")))?;
    let entries = std::fs::read_dir(&mta.state_dir).map_err(|e| e.to_string())?;
    let (mut files, mut lines, mut hits) = (0, 0, Vec::new());
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
        let kept_check = name.starts_with("resolvers-check-") && name.ends_with(".out");
        if !(name.ends_with(".log") || kept_check) {
            continue;
        }
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).map_err(|e| e.to_string())?;
        if modified < since {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).map_err(|e| e.to_string())?).into_owned();
        files += 1;
        for (n, line) in text.lines().enumerate() {
            lines += 1;
            if let Some(what) = dump_in(line) {
                let shown: String = line.chars().take(300).collect();
                hits.push(format!("{name}:{}: {what}: {shown}", n + 1));
            }
        }
    }
    if files == 0 {
        return Err(format!(
            "no exporter log in {} since mta.sh start: nothing was scanned",
            mta.state_dir.display()
        ));
    }
    if !hits.is_empty() {
        let total = hits.len();
        hits.truncate(20);
        return Err(format!("{total} lines with a library's dump or name:\n{}", hits.join("\n")));
    }
    println!(
        "    {files} exporter logs and check outputs, {lines} lines: no library struct dump or type name"
    );
    Ok(())
}
