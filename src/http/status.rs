//! The status page at `/`: every target × port at a glance, for a person.
//!
//! Part of `http`, the last stop of the data flow: it reads the latest reports from the
//! `Store` and renders plain HTML (no script; the page reloads itself with a meta
//! refresh). Everything that comes from configuration or from a server is escaped.
//! Rows are compact and the header sticks, so the page stays usable with 1,000 specs;
//! failing specs come first, every phase bar is drawn on one logarithmic time scale, a
//! certificate that did not verify is shown as such, and the table fits 800 px. Mail
//! domains come first, one line each: delivered or not, through which MX and family, and
//! their DNS; a spec made from DNS names its MX and address under its target.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use strum::VariantArray;

use super::paths::{Page, Paths};
use crate::config::{ExpansionKind, SpecKey};
use crate::dns::Family;
use crate::domains::{Accepted, Resolution};
use crate::probe::{Phase, PortState, ProbeReport};
use crate::store::{History, Store};

/// Seconds between automatic reloads of the page.
const REFRESH_SECONDS: u32 = 30;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// True when the report has a certificate that did not verify.
fn cert_unverified(report: Option<&ProbeReport>) -> bool {
    report.and_then(|r| r.tls.as_ref()).is_some_and(|t| t.cert_error.is_some())
}

fn phase_colour(phase: Phase) -> &'static str {
    match phase {
        Phase::Resolve => "#9e9e9e",
        Phase::Connect => "#5c6bc0",
        Phase::Banner => "#26a69a",
        Phase::Ehlo => "#66bb6a",
        Phase::Starttls => "#ffa726",
        Phase::TlsHandshake => "#ef5350",
        Phase::EhloTls => "#ab47bc",
        Phase::Auth => "#8d6e63",
        Phase::Envelope => "#d4e157",
        Phase::ImapConnect => "#29b6f6",
        Phase::ImapLogin => "#0288d1",
        Phase::Submit => "#ffca28",
        Phase::Deliver => "#ec407a",
        Phase::Fetch => "#7e57c2",
        Phase::Cleanup => "#bdbdbd",
        Phase::Quit => "#78909c",
    }
}

fn age(report: &ProbeReport, now: SystemTime) -> String {
    match now.duration_since(report.started_at) {
        Ok(d) if d.as_secs() < 120 => format!("{} s", d.as_secs()),
        Ok(d) if d.as_secs() < 7200 => format!("{} min", d.as_secs() / 60),
        Ok(d) => format!("{} h", d.as_secs() / 3600),
        Err(_) => "0 s".to_owned(),
    }
}

fn cert_days(report: &ProbeReport, now: SystemTime) -> Option<i64> {
    let not_after = report.tls.as_ref()?.leaf_not_after?;
    let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs() as i64;
    Some((not_after - now).div_euclid(86_400))
}

/// The time scale shared by every row's bar: 0.1 ms at the left edge, 100 s at the right,
/// one decade per sixth of the width, so that 0.2 ms and 2 s look as far apart as they are.
const SCALE_MIN_SECONDS: f64 = 1e-4;
const SCALE_DECADES: f64 = 6.0;

/// Where `seconds` falls on the shared scale, in percent of the bar's width.
fn scale_percent(seconds: f64) -> f64 {
    if seconds <= SCALE_MIN_SECONDS {
        return 0.0;
    }
    ((seconds / SCALE_MIN_SECONDS).log10() / SCALE_DECADES * 100.0).clamp(0.0, 100.0)
}

/// A stacked bar of the phases: its length is the probe's total time on the shared
/// logarithmic scale, split between the phases in proportion to their share.
fn bar(report: &ProbeReport) -> String {
    let total: f64 = report.phases.iter().map(|(_, d)| d.as_secs_f64()).sum();
    let length = scale_percent(total);
    let mut html = format!("<span class=\"bar\" data-length=\"{length:.2}\">");
    for (phase, d) in &report.phases {
        let share = if total > 0.0 { d.as_secs_f64() / total * length } else { 0.0 };
        let _ = write!(
            html,
            "<span class=\"seg\" data-phase=\"{p}\" style=\"width:{share:.2}%;background:{c}\" title=\"{p}: {ms:.2} ms\"></span>",
            p = phase.as_str(),
            c = phase_colour(*phase),
            ms = d.as_secs_f64() * 1e3
        );
    }
    html.push_str("</span>");
    html
}

/// Where a row goes: failing specs first, then those not probed yet, then those whose
/// certificate did not verify, then the rest; by label order within each group.
fn row_rank(report: &Option<Arc<ProbeReport>>) -> u8 {
    match report {
        Some(r) if !r.success() => 0,
        None => 1,
        Some(r) if r.tls.as_ref().is_some_and(|t| t.cert_error.is_some()) => 2,
        Some(_) => 3,
    }
}

/// The page's style sheet: compact rows, a sticky header, coloured states, bars on one
/// scale, and a narrower layout at 800 px.
const STYLE: &str = r#"body { font: 13px/1.35 system-ui, sans-serif; margin: 0 1rem 2rem; color: #222; }
h1 { font-size: 1.3rem; margin: .8rem 0 .3rem; }
nav a { margin-right: 1rem; }
.summary span { margin-right: 1.2rem; }
table { border-collapse: collapse; width: 100%; margin-top: .6rem; }
th, td { padding: 2px 6px; border-bottom: 1px solid #e4e4e4; text-align: left; white-space: nowrap; }
th { position: sticky; top: 0; background: #f4f4f4; z-index: 1; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.reason { white-space: normal; max-width: 32rem; }
.state { display: inline-block; min-width: 6.5rem; padding: 0 4px; border-radius: 3px; color: #fff; }
.state-open { background: #2e7d32; } .state-open.failing { background: #ef6c00; }
.state-refused, .state-closed_early, .state-silent { background: #c62828; }
.state-filtered, .state-unreachable, .state-no_route { background: #6a1b9a; }
.state-unresolved { background: #455a64; } .state-pending { background: #9e9e9e; }
.bar { display: inline-flex; width: 12rem; height: .8rem; background: repeating-linear-gradient(90deg, #eee 0 calc(100% / 6 - 1px), #d6d6d6 calc(100% / 6 - 1px) calc(100% / 6)); vertical-align: middle; }
.seg { display: block; height: 100%; }
.legend span { display: inline-block; margin-right: .8rem; }
.legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .2rem; vertical-align: middle; }
.warn { color: #c62828; font-weight: 600; }
.scale { color: #666; font-weight: normal; font-size: .85em; }
.strip { display: inline-flex; gap: 1px; vertical-align: middle; }
.strip i { display: block; width: 3px; height: .8rem; background: #2e7d32; }
.strip i.h-fail { background: #c62828; }
.uptime { display: inline-block; min-width: 3rem; text-align: right; font-variant-numeric: tabular-nums; }
/* 800 px and less: narrower bars and badges, and the age of the last probe left out. */
@media (max-width: 900px) {
  body { margin: 0 .4rem 1rem; font-size: 12px; }
  th, td { padding: 2px 3px; }
  .bar { width: 7rem; }
  .state { min-width: 0; }
  td.reason { max-width: 11rem; }
  .hide-narrow { display: none; }
}
"#;

/// Renders the whole page: the mail domains (`walks`), then every spec.
/// Its links follow `paths` (`--web.route-prefix`, `--web.external-url`).
pub fn render(store: &Store, walks: &[Arc<Resolution>], paths: &Paths) -> String {
    let now = SystemTime::now();
    let mut specs = store.snapshot();
    let histories: std::collections::HashMap<SpecKey, History> = store.histories().into_iter().collect();
    let window = store.history_bounds().results;
    let mut html = String::with_capacity(4096 + specs.len() * 600 + walks.len() * 300);
    head(&mut html, paths);
    summary(&mut html, &specs);
    domains(&mut html, walks, &specs);
    specs.sort_by_key(|(_, report)| row_rank(report));
    legend(&mut html);
    html.push_str(
        "<table id=\"specs\">\n<thead><tr><th>Target</th><th>Port</th><th>Module</th><th>State</th><th class=\"hide-narrow\">Last probe</th><th class=\"hide-narrow\" title=\"the last probes, oldest first (green: success, red: failure), and the share of successes among the last ones kept\">Recent</th>\
         <th>Duration</th><th title=\"one logarithmic scale for every row: each mark is ten times the last, from 1 ms to 10 s\">Phases <span class=\"scale hide-narrow\">(log scale, 1 ms to 10 s)</span></th><th>Last failure</th><th>Certificate</th></tr></thead>\n<tbody>\n",
    );
    for (key, report) in &specs {
        row(&mut html, key, report.as_deref(), now, paths, (histories.get(key), window));
    }
    html.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    html
}

/// The document head (refresh, style) and the page title with its links.
fn head(html: &mut String, paths: &Paths) {
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>SMTP Exporter</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <h1>SMTP Exporter</h1>\n<nav><a href=\"{metrics}\">Metrics</a><a href=\"{config}\">Configuration</a><a href=\"{healthy}\">Health</a><a href=\"{ready}\">Readiness</a>\
         <a href=\"{probe}\">{probe}?target=HOST:PORT&amp;module=NAME</a></nav>\n",
        metrics = escape(&paths.link(Page::Metrics)),
        config = escape(&paths.link(Page::Config)),
        healthy = escape(&paths.link(Page::Healthy)),
        ready = escape(&paths.link(Page::Ready)),
        probe = escape(&paths.link(Page::Probe)),
    );
}

/// How many specs succeed, fail, have a certificate that did not verify, or wait.
fn summary(html: &mut String, specs: &[(SpecKey, Option<Arc<ProbeReport>>)]) {
    let ok = specs.iter().filter(|(_, r)| r.as_ref().is_some_and(|r| r.success())).count();
    let failing = specs.iter().filter(|(_, r)| r.as_ref().is_some_and(|r| !r.success())).count();
    let unverified = specs.iter().filter(|(_, r)| cert_unverified(r.as_deref())).count();
    let _ = writeln!(
        html,
        "<p class=\"summary\"><span id=\"count-total\">{total} specs</span><span id=\"count-ok\">{ok} succeeding</span>\
         <span id=\"count-failing\">{failing} failing</span><span id=\"count-unverified\">{unverified} with a certificate that did not verify</span>\
         <span id=\"count-pending\">{pending} not yet probed</span><span>reloads every {REFRESH_SECONDS} s</span></p>",
        total = specs.len(),
        pending = specs.len() - ok - failing,
    );
}

/// One line per mail domain, undeliverable first: where its mail goes, as a sender would
/// find, and what its DNS said.
fn domains(html: &mut String, walks: &[Arc<Resolution>], specs: &[(SpecKey, Option<Arc<ProbeReport>>)]) {
    let domains: Vec<&Resolution> =
        walks.iter().map(|w| &**w).filter(|w| w.kind == ExpansionKind::Domain).collect();
    if domains.is_empty() {
        return;
    }
    let accepted = Accepted::new(walks, specs.iter().map(|(k, r)| (k, r.as_deref())));
    let mut rows: Vec<(&Resolution, bool)> = domains.iter().map(|w| (*w, accepted.deliverable(w))).collect();
    rows.sort_by_key(|(w, ok)| (*ok || w.null_mx, w.name.clone()));
    html.push_str("<h2>Mail domains</h2>\n<table id=\"domains\">\n<thead><tr><th>Domain</th><th>Mail</th><th>MX (preference: host, families that accept)</th><th>DNS</th></tr></thead>\n<tbody>\n");
    for (walk, ok) in rows {
        let (class, mail) = if walk.null_mx {
            ("state-unresolved", "accepts no mail (null MX)")
        } else if ok && accepted.primary(walk) {
            ("state-open", "delivered")
        } else if ok {
            ("state-open failing", "delivered via a backup MX only")
        } else {
            ("state-refused", "NOT delivered")
        };
        let _ = write!(
            html,
            "<tr class=\"domain\" data-domain=\"{d}\" data-deliverable=\"{ok}\"><td>{d}</td><td><span class=\"state {class}\">{mail}</span></td><td>",
            d = escape(&walk.name),
            ok = u8::from(ok),
        );
        if walk.implicit_mx {
            html.push_str("implicit MX (no MX record): ");
        }
        for (i, mx) in walk.mx.iter().enumerate() {
            let families: Vec<&str> =
                accepted.families(walk, &mx.host).into_iter().map(Family::as_str).collect();
            let verdict = match (mx.addresses.is_empty(), families.is_empty()) {
                (true, _) => "no address".to_owned(),
                (false, true) => "fails".to_owned(),
                (false, false) => families.join(" "),
            };
            let _ = write!(
                html,
                "{sep}<span data-mx=\"{h}\">{p}: {h} ({verdict})</span>",
                sep = if i == 0 { "" } else { "; " },
                p = mx.preference,
                h = escape(&mx.host),
            );
        }
        let dns = match &walk.failure {
            Some((failure, detail)) => {
                format!("<span class=\"warn\" title=\"{}\">{}</span>", escape(detail), failure.as_str())
            }
            None => {
                // Durations added, then made milliseconds: an empty sum of floats is -0.0.
                let ms =
                    walk.lookups.iter().map(|l| l.elapsed).sum::<std::time::Duration>().as_secs_f64() * 1e3;
                format!("{} queries, {ms:.1} ms", walk.lookups.len())
            }
        };
        let _ = writeln!(html, "</td><td>{dns}</td></tr>");
    }
    html.push_str("</tbody>\n</table>\n");
}

/// The colour of each phase in the bars.
fn legend(html: &mut String) {
    html.push_str("<p class=\"legend\">");
    for &phase in Phase::VARIANTS {
        let _ = write!(
            html,
            "<span><i style=\"background:{}\"></i>{}</span>",
            phase_colour(phase),
            phase.as_str()
        );
    }
    html.push_str("</p>\n");
}

/// One spec's row: its labels, then its last report, or "pending" before the first.
fn row(
    html: &mut String,
    key: &SpecKey,
    report: Option<&ProbeReport>,
    now: SystemTime,
    paths: &Paths,
    history: (Option<&History>, usize),
) {
    let _ = write!(
        html,
        "<tr class=\"spec\" data-target=\"{t}\" data-port=\"{p}\" data-module=\"{m}\"><td>{t}{via}</td><td class=\"num\">{p}</td><td>{m}</td>",
        t = escape(&key.target),
        p = key.port,
        m = escape(&key.module),
        via = key
            .via
            .as_ref()
            .map(|v| {
                let mx = if v.mx.is_empty() { String::new() } else { format!("{} ", escape(&v.mx)) };
                format!("<br><small class=\"via\" data-address=\"{a}\">{mx}{a}</small>", a = v.address)
            })
            .unwrap_or_default()
    );
    let Some(report) = report else {
        html.push_str("<td><span class=\"state state-pending\" data-state=\"pending\">pending</span></td><td class=\"hide-narrow\"></td><td class=\"hide-narrow\"></td><td></td><td></td><td></td><td></td></tr>\n");
        return;
    };
    let state = report.port_state();
    let failing = if report.success() { "" } else { " failing" };
    let _ = write!(
        html,
        "<td><span class=\"state state-{s}{failing}\" data-state=\"{s}\" data-success=\"{ok}\">{s}{mark}</span></td>",
        s = state.as_str(),
        ok = u8::from(report.success()),
        mark = if state == PortState::Open && !report.success() { " ✗" } else { "" }
    );
    let _ = write!(html, "<td class=\"num hide-narrow\">{}</td>", age(report, now));
    strip(html, history.0, history.1);
    let _ = write!(
        html,
        "<td class=\"num\">{:.1} ms</td><td>{}</td>",
        report.duration.as_secs_f64() * 1e3,
        bar(report)
    );
    match &report.failure {
        Some(f) => {
            let _ = write!(
                html,
                "<td class=\"reason\" data-reason=\"{r}\" title=\"{d}\">{ph}: {r} <a class=\"transcript\" href=\"{link}\">transcript</a></td>",
                r = f.reason.as_str(),
                ph = f.phase.as_str(),
                d = escape(&f.detail),
                link = escape(&transcript_link(paths, key)),
            );
        }
        None => match report.delivery.as_ref().and_then(|d| d.folder) {
            // A delivery probe says where the message went and how long it took.
            Some(folder) => {
                let deliver = report.phase(Phase::Deliver).unwrap_or_default();
                let _ = write!(
                    html,
                    "<td class=\"reason delivered\" data-folder=\"{f}\">delivered to {f} in {ms:.1} ms</td>",
                    f = folder.as_str(),
                    ms = deliver.as_secs_f64() * 1e3
                );
            }
            None => html.push_str("<td class=\"reason\"></td>"),
        },
    }
    certificate_cell(html, report, now);
    html.push_str("</tr>\n");
}

/// How many of a spec's latest results the strip shows.
const STRIP: usize = 30;

/// The recent results as a strip of marks (oldest first), and the uptime over the window.
fn strip(html: &mut String, history: Option<&History>, window: usize) {
    html.push_str("<td class=\"hide-narrow\"><span class=\"strip\">");
    if let Some(history) = history {
        let skip = history.entries().len().saturating_sub(STRIP);
        for e in history.entries().skip(skip) {
            let what = match (e.phase, e.reason) {
                (Some(phase), Some(reason)) => format!("{phase}: {reason}"),
                _ => "success".to_owned(),
            };
            let _ = write!(
                html,
                "<i class=\"{}\" title=\"{} {what}, {:.1} ms\"></i>",
                if e.success() { "h-ok" } else { "h-fail" },
                crate::logging::format_time(e.started()),
                e.duration().as_secs_f64() * 1e3
            );
        }
    }
    html.push_str("</span>");
    if let Some(uptime) = history.and_then(|h| h.uptime(window)) {
        let _ =
            write!(html, " <span class=\"uptime\" data-uptime=\"{uptime:.4}\">{:.0}%</span>", uptime * 100.0);
    }
    html.push_str("</td>");
}

/// The link to the transcript of `key`'s last failing probe.
pub fn transcript_link(paths: &Paths, key: &SpecKey) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("target", &key.target).append_pair("port", &key.port.to_string());
    query.append_pair("module", &key.module);
    if let Some(via) = &key.via {
        query.append_pair("address", &via.address.to_string());
    }
    format!("{}?{}", paths.link(Page::Transcript), query.finish())
}

/// The certificate's state: "unverified" with why (in red), or the days left (red under
/// 14), or a dash without TLS.
fn certificate_cell(html: &mut String, report: &ProbeReport, now: SystemTime) {
    let cert_error =
        report.tls.as_ref().and_then(|t| t.cert_error.map(|e| (e, t.cert_error_detail.as_deref())));
    match (cert_days(report, now), cert_error) {
        (days, Some((error, detail))) => {
            let days = days.map(|d| format!(", {d} d")).unwrap_or_default();
            let _ = write!(
                html,
                "<td class=\"warn\" data-cert-error=\"{e}\" title=\"{t}\">unverified: {e}{days}</td>",
                e = error.as_str(),
                t = escape(detail.unwrap_or(""))
            );
        }
        (Some(days), None) if days < 14 => {
            let _ = write!(html, "<td class=\"num warn\" data-cert-days=\"{days}\">{days} d left</td>");
        }
        (Some(days), None) => {
            let _ = write!(html, "<td class=\"num\" data-cert-days=\"{days}\">{days} d left</td>");
        }
        (None, None) => html.push_str("<td class=\"num\">–</td>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: a result's age reads in seconds under two minutes, minutes under two
    /// hours, hours beyond; a start in the future (a clock step) is "0 s".
    #[test]
    fn ages_read_in_the_unit_that_fits() {
        let now = SystemTime::now();
        let mut report = ProbeReport::new();
        use std::time::Duration;
        for (secs_ago, want) in
            [(0, "0 s"), (119, "119 s"), (120, "2 min"), (7199, "119 min"), (7200, "2 h"), (90_000, "25 h")]
        {
            report.started_at = now - Duration::from_secs(secs_ago);
            assert_eq!(age(&report, now), want, "{secs_ago} s ago");
        }
        report.started_at = now + Duration::from_secs(5);
        assert_eq!(age(&report, now), "0 s");
    }

    /// Issue 17: the summary counts the specs whose certificate did not verify, among
    /// those that succeed, fail or wait, and only those.
    #[test]
    fn the_summary_counts_unverified_certificates() {
        let key =
            |n: u16| SpecKey { target: "mx.example.test".into(), port: n, module: "m".into(), via: None };
        let with_tls = |cert_error| {
            let mut r = ProbeReport::new();
            r.tls = Some(crate::tls::TlsInfo { cert_error, ..crate::test_support::tls_info() });
            Some(Arc::new(r))
        };
        let specs = [
            (key(1), with_tls(Some(crate::tls::CertError::Expired))),
            (key(2), with_tls(Some(crate::tls::CertError::NameMismatch))),
            (key(3), with_tls(None)),
            (key(4), Some(Arc::new(ProbeReport::new()))),
            (key(5), None),
        ];
        let mut html = String::new();
        summary(&mut html, &specs);
        for want in [
            "<span id=\"count-total\">5 specs</span>",
            "<span id=\"count-ok\">4 succeeding</span>",
            "<span id=\"count-failing\">0 failing</span>",
            "<span id=\"count-unverified\">2 with a certificate that did not verify</span>",
            "<span id=\"count-pending\">1 not yet probed</span>",
        ] {
            assert!(html.contains(want), "{want} in {html}");
        }
    }

    /// Issue 17: the days a certificate has left are whole days, rounded down, negative
    /// once it has expired; none without TLS or a readable date.
    #[test]
    fn certificate_days_are_whole_days_rounded_down() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let days_at = |not_after: Option<i64>| {
            let mut report = ProbeReport::new();
            report.tls =
                Some(crate::tls::TlsInfo { leaf_not_after: not_after, ..crate::test_support::tls_info() });
            cert_days(&report, now)
        };
        let day = 86_400;
        assert_eq!(days_at(Some(1_800_000_000 + 10 * day + 3600)), Some(10));
        assert_eq!(days_at(Some(1_800_000_000 + day - 1)), Some(0));
        assert_eq!(days_at(Some(1_800_000_000 - 1)), Some(-1));
        assert_eq!(days_at(Some(1_800_000_000 - 2 * day)), Some(-2));
        assert_eq!(days_at(None), None);
        assert_eq!(cert_days(&ProbeReport::new(), now), None);
    }

    /// Issue 17: every phase has a colour of its own on the timing bars.
    #[test]
    fn every_phase_has_its_own_colour() {
        let colours: Vec<&str> = Phase::VARIANTS.iter().copied().map(phase_colour).collect();
        let mut distinct = colours.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), colours.len(), "{colours:?}");
        assert!(colours.iter().all(|c| c.len() == 7 && c.starts_with('#')), "{colours:?}");
    }

    #[test]
    fn the_bar_scale_is_logarithmic_and_shared() {
        assert_eq!(scale_percent(0.0), 0.0);
        assert_eq!(scale_percent(1e-4), 0.0);
        assert!((scale_percent(1e-3) - 100.0 / 6.0).abs() < 1e-9);
        assert!((scale_percent(1.0) - 400.0 / 6.0).abs() < 1e-9);
        assert_eq!(scale_percent(1000.0), 100.0);
        // 0.2 ms and 2 s are four decades apart: two thirds of the width.
        assert!(scale_percent(2.0) - scale_percent(2e-4) > 66.0);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(escape("a\u{7}b\nc\u{7f}"), "a b c ", "control characters become spaces");
    }

    /// A report whose phases took `phases`, in that order.
    fn timed(phases: &[(Phase, u64)]) -> ProbeReport {
        let mut report = ProbeReport::new();
        report.phases = phases.iter().map(|&(p, us)| (p, std::time::Duration::from_micros(us))).collect();
        report
    }

    /// Issue 17: a probe's bar is as long as its total time on the shared logarithmic
    /// scale (10 ms: two decades of six, 33.33 %), and each phase takes its share of that
    /// length, in the order the phases ran.
    #[test]
    fn the_bar_is_split_between_the_phases_in_proportion_to_their_time() {
        assert_eq!(
            bar(&timed(&[(Phase::Connect, 1_000), (Phase::Banner, 9_000)])),
            "<span class=\"bar\" data-length=\"33.33\">\
             <span class=\"seg\" data-phase=\"connect\" style=\"width:3.33%;background:#5c6bc0\" title=\"connect: 1.00 ms\"></span>\
             <span class=\"seg\" data-phase=\"banner\" style=\"width:30.00%;background:#26a69a\" title=\"banner: 9.00 ms\"></span>\
             </span>"
        );
    }

    /// Issue 17: a probe whose phases took no measurable time draws empty segments, not
    /// "NaN %" widths; one with no phase draws an empty bar.
    #[test]
    fn a_bar_of_no_time_has_zero_widths() {
        assert_eq!(
            bar(&timed(&[(Phase::Resolve, 0)])),
            "<span class=\"bar\" data-length=\"0.00\">\
             <span class=\"seg\" data-phase=\"resolve\" style=\"width:0.00%;background:#9e9e9e\" title=\"resolve: 0.00 ms\"></span>\
             </span>"
        );
        assert_eq!(bar(&ProbeReport::new()), "<span class=\"bar\" data-length=\"0.00\"></span>");
    }

    /// Issue 17: failing specs come first (whatever their certificate), then those not
    /// probed yet, then those whose certificate did not verify, then the rest; the sort
    /// keeps the label order within each group.
    #[test]
    fn failing_rows_come_first_then_pending_then_unverified_certificates_then_the_rest() {
        let key =
            |n: u16| SpecKey { target: "mx.example.test".into(), port: n, module: "m".into(), via: None };
        let report = |failing: bool, cert_error| {
            let mut r = ProbeReport::new();
            if failing {
                r.failure = Some(crate::probe::Failure {
                    phase: Phase::Connect,
                    reason: crate::probe::Reason::Refused,
                    detail: String::new(),
                });
            }
            r.tls = Some(crate::tls::TlsInfo { cert_error, ..crate::test_support::tls_info() });
            Some(Arc::new(r))
        };
        let mut specs = [
            (key(1), report(false, None)),
            (key(2), report(false, Some(crate::tls::CertError::SelfSigned))),
            (key(3), None),
            (key(4), report(true, Some(crate::tls::CertError::Expired))),
            (key(5), report(true, None)),
            (key(6), report(false, None)),
        ];
        let ranks: Vec<u8> = specs.iter().map(|(_, r)| row_rank(r)).collect();
        assert_eq!(ranks, [3, 2, 1, 0, 0, 3]);
        specs.sort_by_key(|(_, report)| row_rank(report));
        let ports: Vec<u16> = specs.iter().map(|(k, _)| k.port).collect();
        assert_eq!(ports, [4, 5, 3, 2, 1, 6]);
    }

    /// Issue 17: the mail domains table lists the undeliverable domains first, then the
    /// others, by name within each; it says whether mail reaches the primary MX, a backup
    /// only, nothing, or is refused by a null MX; which families each MX accepted in; and
    /// how many DNS queries the walk made and how long they took, or why it failed. Host
    /// expansions are not mail domains and are left out.
    #[test]
    fn the_domains_table_ranks_undeliverable_domains_first_and_says_where_mail_goes() {
        use crate::config::Via;
        use crate::dns::DnsFailure;
        use crate::domains::{Lookup, MxFound};
        use std::time::Duration;
        let mx = |preference, host: &str, addresses: &[&str]| MxFound {
            preference,
            host: host.into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            tlsa: None,
            skipped: None,
        };
        let lookup = |name: &str, kind, us| Lookup {
            name: name.into(),
            kind,
            elapsed: Duration::from_micros(us),
            failure: None,
        };
        // A walk of a domain always asks for its MX first.
        let walk = |name: &str, mx: Vec<MxFound>| Resolution {
            name: name.into(),
            kind: ExpansionKind::Domain,
            at: SystemTime::UNIX_EPOCH,
            failure: None,
            null_mx: false,
            implicit_mx: false,
            mx,
            lookups: vec![lookup(name, "mx", 400)],
            delivery_port: 25,
            delivery_module: "relay".into(),
            policy: None,
            dnssec: None,
        };
        let walks: Vec<Arc<Resolution>> = [
            walk("a.test", vec![mx(10, "mx.a.test", &["192.0.2.1"])]),
            walk(
                "b.test",
                vec![mx(10, "mx1.b.test", &["192.0.2.2"]), mx(20, "mx2.b.test", &["2001:db8::2"])],
            ),
            Resolution { null_mx: true, ..walk("c.test", vec![]) },
            Resolution {
                implicit_mx: true,
                lookups: vec![lookup("d.test", "mx", 1_500), lookup("d.test", "a", 2_000)],
                ..walk("d.test", vec![mx(0, "d.test", &[])])
            },
            Resolution {
                failure: Some((DnsFailure::Servfail, "ns1.e.test said <servfail>".into())),
                ..walk("e.test", vec![])
            },
            Resolution {
                kind: ExpansionKind::Host("h.test".into()),
                ..walk("h.test", vec![mx(0, "h.test", &["192.0.2.9"])])
            },
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let key = |target: &str, mx: &str, address: &str| SpecKey {
            target: target.into(),
            port: 25,
            module: "relay".into(),
            via: Some(Arc::new(Via { mx: mx.into(), address: address.parse().unwrap() })),
        };
        let failed = {
            let mut r = ProbeReport::new();
            r.failure = Some(crate::probe::Failure {
                phase: Phase::Connect,
                reason: crate::probe::Reason::Refused,
                detail: String::new(),
            });
            r
        };
        let specs = [
            (key("a.test", "mx.a.test", "192.0.2.1"), Some(Arc::new(ProbeReport::new()))),
            (key("b.test", "mx1.b.test", "192.0.2.2"), Some(Arc::new(failed))),
            (key("b.test", "mx2.b.test", "2001:db8::2"), Some(Arc::new(ProbeReport::new()))),
            (key("h.test", "", "192.0.2.9"), Some(Arc::new(ProbeReport::new()))),
        ];
        let mut html = String::new();
        domains(&mut html, &walks, &specs);
        assert_eq!(
            html,
            "<h2>Mail domains</h2>\n<table id=\"domains\">\n<thead><tr><th>Domain</th><th>Mail</th><th>MX (preference: host, families that accept)</th><th>DNS</th></tr></thead>\n<tbody>\n\
             <tr class=\"domain\" data-domain=\"d.test\" data-deliverable=\"0\"><td>d.test</td><td><span class=\"state state-refused\">NOT delivered</span></td>\
             <td>implicit MX (no MX record): <span data-mx=\"d.test\">0: d.test (no address)</span></td><td>2 queries, 3.5 ms</td></tr>\n\
             <tr class=\"domain\" data-domain=\"e.test\" data-deliverable=\"0\"><td>e.test</td><td><span class=\"state state-refused\">NOT delivered</span></td>\
             <td></td><td><span class=\"warn\" title=\"ns1.e.test said &lt;servfail&gt;\">servfail</span></td></tr>\n\
             <tr class=\"domain\" data-domain=\"a.test\" data-deliverable=\"1\"><td>a.test</td><td><span class=\"state state-open\">delivered</span></td>\
             <td><span data-mx=\"mx.a.test\">10: mx.a.test (ip4)</span></td><td>1 queries, 0.4 ms</td></tr>\n\
             <tr class=\"domain\" data-domain=\"b.test\" data-deliverable=\"1\"><td>b.test</td><td><span class=\"state state-open failing\">delivered via a backup MX only</span></td>\
             <td><span data-mx=\"mx1.b.test\">10: mx1.b.test (fails)</span>; <span data-mx=\"mx2.b.test\">20: mx2.b.test (ip6)</span></td><td>1 queries, 0.4 ms</td></tr>\n\
             <tr class=\"domain\" data-domain=\"c.test\" data-deliverable=\"0\"><td>c.test</td><td><span class=\"state state-unresolved\">accepts no mail (null MX)</span></td>\
             <td></td><td>1 queries, 0.4 ms</td></tr>\n\
             </tbody>\n</table>\n"
        );
    }

    /// Issue 17: without a mail domain (only host expansions, or none) there is no
    /// domains table at all.
    #[test]
    fn no_mail_domain_means_no_domains_table() {
        let host = Resolution {
            name: "h.test".into(),
            kind: ExpansionKind::Host("h.test".into()),
            at: SystemTime::UNIX_EPOCH,
            failure: None,
            null_mx: false,
            implicit_mx: false,
            mx: vec![],
            lookups: vec![],
            delivery_port: 25,
            delivery_module: "relay".into(),
            policy: None,
            dnssec: None,
        };
        let mut html = String::new();
        domains(&mut html, &[Arc::new(host)], &[]);
        domains(&mut html, &[], &[]);
        assert_eq!(html, "");
    }

    /// Issue 17: the legend shows every phase's colour, in the order the phases run.
    #[test]
    fn the_legend_names_every_phase_with_its_colour() {
        let mut html = String::new();
        legend(&mut html);
        assert_eq!(
            html,
            "<p class=\"legend\">\
             <span><i style=\"background:#9e9e9e\"></i>resolve</span>\
             <span><i style=\"background:#5c6bc0\"></i>connect</span>\
             <span><i style=\"background:#26a69a\"></i>banner</span>\
             <span><i style=\"background:#66bb6a\"></i>ehlo</span>\
             <span><i style=\"background:#ffa726\"></i>starttls</span>\
             <span><i style=\"background:#ef5350\"></i>tls_handshake</span>\
             <span><i style=\"background:#ab47bc\"></i>ehlo_tls</span>\
             <span><i style=\"background:#8d6e63\"></i>auth</span>\
             <span><i style=\"background:#d4e157\"></i>envelope</span>\
             <span><i style=\"background:#29b6f6\"></i>imap_connect</span>\
             <span><i style=\"background:#0288d1\"></i>imap_login</span>\
             <span><i style=\"background:#ffca28\"></i>submit</span>\
             <span><i style=\"background:#78909c\"></i>quit</span>\
             <span><i style=\"background:#ec407a\"></i>deliver</span>\
             <span><i style=\"background:#7e57c2\"></i>fetch</span>\
             <span><i style=\"background:#bdbdbd\"></i>cleanup</span>\
             </p>\n"
        );
    }

    /// Issue 17: the recent-results strip has one mark per result, oldest first, each
    /// titled with its start, what failed where (or "success") and its duration, then
    /// the share of successes; a spec without history has an empty strip.
    #[test]
    fn the_strip_marks_each_recent_result_and_says_what_failed_where() {
        use crate::config::HistoryBounds;
        use crate::store::history::Entry;
        let mut history = History::default();
        let entry = |at, duration_us, failure: Option<(Phase, crate::probe::Reason)>| Entry {
            at,
            duration_us,
            state: if failure.is_some() { PortState::Refused } else { PortState::Open },
            phase: failure.map(|(p, _)| p),
            reason: failure.map(|(_, r)| r),
        };
        history.push(entry(1_800_000_000, 12_300, None), HistoryBounds::default());
        history.push(
            entry(1_800_000_060, 1_000, Some((Phase::Connect, crate::probe::Reason::Refused))),
            HistoryBounds::default(),
        );
        let mut html = String::new();
        strip(&mut html, Some(&history), 30);
        assert_eq!(
            html,
            "<td class=\"hide-narrow\"><span class=\"strip\">\
             <i class=\"h-ok\" title=\"2027-01-15T08:00:00.000Z success, 12.3 ms\"></i>\
             <i class=\"h-fail\" title=\"2027-01-15T08:01:00.000Z connect: refused, 1.0 ms\"></i>\
             </span> <span class=\"uptime\" data-uptime=\"0.5000\">50%</span></td>"
        );
        let mut html = String::new();
        strip(&mut html, None, 30);
        assert_eq!(html, "<td class=\"hide-narrow\"><span class=\"strip\"></span></td>");
    }

    /// Issue 17: the certificate cell says "unverified" with why and the days left (when
    /// known), the days left of a verified certificate (in red under 14), or a dash when
    /// there is no certificate date.
    #[test]
    fn the_certificate_cell_warns_when_unverified_or_under_fourteen_days() {
        use crate::tls::CertError;
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let day = 86_400;
        let cell = |tls: Option<(Option<i64>, Option<CertError>, Option<&str>)>| {
            let mut report = ProbeReport::new();
            report.tls = tls.map(|(leaf_not_after, cert_error, detail)| crate::tls::TlsInfo {
                leaf_not_after,
                cert_error,
                cert_error_detail: detail.map(str::to_owned),
                ..crate::test_support::tls_info()
            });
            let mut html = String::new();
            certificate_cell(&mut html, &report, now);
            html
        };
        assert_eq!(
            cell(Some((Some(1_800_000_000 + 13 * day + 1), None, None))),
            "<td class=\"num warn\" data-cert-days=\"13\">13 d left</td>"
        );
        assert_eq!(
            cell(Some((Some(1_800_000_000 + 14 * day), None, None))),
            "<td class=\"num\" data-cert-days=\"14\">14 d left</td>"
        );
        assert_eq!(
            cell(Some((Some(1_800_000_000 - 1), Some(CertError::Expired), Some("expired <yesterday>")))),
            "<td class=\"warn\" data-cert-error=\"expired\" title=\"expired &lt;yesterday&gt;\">unverified: expired, -1 d</td>"
        );
        assert_eq!(
            cell(Some((None, Some(CertError::NameMismatch), None))),
            "<td class=\"warn\" data-cert-error=\"name_mismatch\" title=\"\">unverified: name_mismatch</td>"
        );
        assert_eq!(cell(Some((None, None, None))), "<td class=\"num\">–</td>");
        assert_eq!(cell(None), "<td class=\"num\">–</td>");
    }
}
