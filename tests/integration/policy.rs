//! MTA-STS and TLS-RPT of mail domains, end to end against the fake name server and a
//! small HTTPS server: each way a policy can be missing, unreachable or wrong gives its
//! reason, and each MX is compliant only when a pattern covers it and its certificate is
//! valid for its name.

use std::time::Duration;

use crate::support::InProcess;

use testkit::dns::{FakeDns, Rr};
use testkit::exposition::{find, value};
use testkit::https::{Answer, HttpsServer};
use testkit::pki::TestPki;
use testkit::smtp::{Behaviour, FakeSmtp};

/// How long a change may take to show.
const WITHIN: Duration = Duration::from_secs(10);

const DOMAINS: [&str; 10] =
    ["good", "missing", "testing", "nf", "redirect", "big", "ctype", "notxt", "badtxt", "dnsfail"];

fn policy(mode: &str, mx: &[&str]) -> String {
    let mut text = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        text.push_str(&format!("mx: {m}\r\n"));
    }
    text.push_str("max_age: 604800\r\n");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_sts_and_tls_rpt_are_checked_like_a_sender_would() {
    let mut names = vec!["mx1.example.test".to_owned()];
    names.extend(DOMAINS.iter().map(|d| format!("mta-sts.{d}.example.test")));
    let pki = TestPki::with_names(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let smtp = FakeSmtp::start(Behaviour::default(), &pki).await;
    let https = HttpsServer::start(pki.acceptor()).await;
    // TTL 1 s: a changed TXT record is seen at the next check.
    let dns = FakeDns::start(1).await;
    let ip = |t: &str| Rr::Addr(t.parse().unwrap());
    dns.add("mx1.example.test", ip("127.0.0.1")).add("mx2.example.test", ip("127.0.0.1"));
    for d in DOMAINS {
        let domain = format!("{d}.example.test");
        dns.add(&domain, Rr::Mx(10, "mx1.example.test".into()))
            .add(&format!("mta-sts.{domain}"), ip("127.0.0.1"));
        if d != "notxt" {
            let id = if d == "badtxt" { "v=STSv1; id=" } else { "v=STSv1; id=1" };
            dns.add(&format!("_mta-sts.{domain}"), Rr::Txt(id.into()));
        }
    }
    // A name server that fails is not a missing record.
    dns.set_behaviour("_mta-sts.dnsfail.example.test", testkit::dns::Behaviour::Servfail);
    dns.set_behaviour("_smtp._tls.dnsfail.example.test", testkit::dns::Behaviour::Servfail);
    dns.add("good.example.test", Rr::Mx(20, "mx2.example.test".into()));
    dns.add("missing.example.test", Rr::Mx(20, "mx2.example.test".into()));
    dns.add("_smtp._tls.good.example.test", Rr::Txt("v=TLSRPTv1; rua=mailto:tls@good.example.test".into()));
    dns.add("_smtp._tls.testing.example.test", Rr::Txt("v=TLSRPTv1; rua=http://report.example.test".into()));
    https.set(
        "mta-sts.good.example.test",
        Answer::policy(&policy("enforce", &["mx1.example.test", "*.example.test"])),
    );
    https.set("mta-sts.missing.example.test", Answer::policy(&policy("enforce", &["mx1.example.test"])));
    https.set("mta-sts.testing.example.test", Answer::policy(&policy("testing", &["mx1.example.test"])));
    https.set(
        "mta-sts.redirect.example.test",
        Answer {
            status: 301,
            location: Some("https://elsewhere.example.test/".into()),
            ..Answer::policy("")
        },
    );
    https.set("mta-sts.big.example.test", Answer::policy(&"mx: mx1.example.test\r\n".repeat(4000)));
    https.set(
        "mta-sts.ctype.example.test",
        Answer {
            content_type: "text/html".into(),
            ..Answer::policy(&policy("enforce", &["mx1.example.test"]))
        },
    );
    https.set("mta-sts.badtxt.example.test", Answer::policy(&policy("enforce", &["mx1.example.test"])));
    https.set("mta-sts.notxt.example.test", Answer::policy(&policy("enforce", &["mx1.example.test"])));

    let domains: String = DOMAINS
        .iter()
        .map(|d| {
            format!(
                "  - name: {d}.example.test\n    ports: [{{ port: {}, module: relay }}]\n    policy: {{ interval: 1s, timeout: 2s, https_port: {} }}\n",
                smtp.port(),
                https.addr.port()
            )
        })
        .collect();
    let yaml = format!(
        "interval: 2s\ndns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s, tls_config: {{ ca_file: \"{}\" }} }}\ndomains:\n{domains}",
        dns.addr,
        pki.ca_file.display()
    );
    let exporter = InProcess::start(yaml, "policy.yml").await;

    let samples = exporter
        .scrape_until(WITHIN, "every domain checked and probed", |s| {
            find(s, "smtp_domain_mta_sts_success", &[]).len() == DOMAINS.len()
                && find(s, "smtp_domain_mta_sts_mx_compliant", &[("domain", "good.example.test")]).len() == 2
                && find(s, "smtp_probe_success", &[("mx", "mx2.example.test")]).len() == 2
                // Compliance needs the MX's probe too: wait for both domains' mx1.
                && ["good", "missing"].iter().all(|d| {
                    let d = format!("{d}.example.test");
                    let labels = [("domain", d.as_str()), ("mx", "mx1.example.test")];
                    find(s, "smtp_domain_mta_sts_mx_compliant", &labels).first().is_some_and(|x| x.value == 1.0)
                })
        })
        .await;
    let domain = |d: &str| format!("{d}.example.test");
    let get = |family: &str, d: &str, extra: &[(&str, &str)]| {
        let d = domain(d);
        let mut labels = vec![("domain", d.as_str())];
        labels.extend_from_slice(extra);
        value(&samples, family, &labels)
    };
    // Enforce and compliant for mx1; mx2 is covered by *.example.test, but its certificate
    // is not valid for its name, so an MTA-STS sender will not deliver to it.
    assert_eq!(get("smtp_domain_mta_sts_success", "good", &[]), 1.0);
    assert_eq!(get("smtp_domain_mta_sts_mode_info", "good", &[("mode", "enforce")]), 1.0);
    assert_eq!(get("smtp_domain_mta_sts_max_age_seconds", "good", &[]), 604800.0);
    assert_eq!(get("smtp_domain_mta_sts_id_info", "good", &[("id", "1")]), 1.0);
    assert_eq!(get("smtp_domain_mta_sts_mx_covered", "good", &[("mx", "mx2.example.test")]), 1.0);
    assert_eq!(get("smtp_domain_mta_sts_mx_compliant", "good", &[("mx", "mx2.example.test")]), 0.0);
    assert_eq!(get("smtp_domain_tlsrpt_valid", "good", &[]), 1.0);
    // Enforce with an MX missing from the policy.
    assert_eq!(get("smtp_domain_mta_sts_mx_covered", "missing", &[("mx", "mx2.example.test")]), 0.0);
    assert_eq!(get("smtp_domain_mta_sts_mx_compliant", "missing", &[("mx", "mx1.example.test")]), 1.0);
    assert_eq!(get("smtp_domain_mta_sts_mode_info", "testing", &[("mode", "testing")]), 1.0);
    assert_eq!(get("smtp_domain_tlsrpt_failure_info", "testing", &[("reason", "malformed")]), 1.0);
    assert_eq!(get("smtp_domain_tlsrpt_failure_info", "missing", &[("reason", "no_txt")]), 1.0);
    for (d, reason) in [
        ("nf", "https_status"),
        ("redirect", "https_redirect"),
        ("big", "https_too_large"),
        ("ctype", "https_content_type"),
        ("notxt", "no_txt"),
        ("badtxt", "txt_malformed"),
        ("dnsfail", "dns"),
    ] {
        assert_eq!(get("smtp_domain_mta_sts_failure_info", d, &[("reason", reason)]), 1.0, "{d}");
        assert_eq!(get("smtp_domain_mta_sts_success", d, &[]), 0.0, "{d}");
    }

    assert_eq!(get("smtp_domain_tlsrpt_failure_info", "dnsfail", &[("reason", "dns")]), 1.0);

    // A check that finds what the last one found says that neither changed.
    let good = [("domain", "good.example.test")];
    let fetched = get("smtp_domain_mta_sts_last_success_timestamp_seconds", "good", &[]);
    let samples = exporter
        .scrape_until(WITHIN, "a second check of the same policy", |s| {
            value(s, "smtp_domain_mta_sts_last_success_timestamp_seconds", &good) > fetched
        })
        .await;
    let changed = |s: &[testkit::exposition::Sample]| {
        (
            value(s, "smtp_domain_mta_sts_id_changed_without_policy_change", &good),
            value(s, "smtp_domain_mta_sts_policy_changed_without_id_change", &good),
        )
    };
    assert_eq!(changed(&samples), (0.0, 0.0));

    // The TXT id changes while the policy does not; then the policy while the id does not.
    dns.retain("_mta-sts.good.example.test", |_| false);
    dns.add("_mta-sts.good.example.test", Rr::Txt("v=STSv1; id=2".into()));
    let samples = exporter
        .scrape_until(WITHIN, "id changed alone", |s| {
            find(s, "smtp_domain_mta_sts_id_changed_without_policy_change", &good)
                .first()
                .is_some_and(|x| x.value == 1.0)
        })
        .await;
    assert_eq!(changed(&samples), (1.0, 0.0));
    https.set(
        "mta-sts.good.example.test",
        Answer::policy(&policy("testing", &["mx1.example.test", "*.example.test"])),
    );
    let samples = exporter
        .scrape_until(WITHIN, "policy changed alone", |s| {
            find(s, "smtp_domain_mta_sts_policy_changed_without_id_change", &good)
                .first()
                .is_some_and(|x| x.value == 1.0)
        })
        .await;
    assert_eq!(changed(&samples), (0.0, 1.0));
    assert_eq!(
        value(
            &samples,
            "smtp_domain_mta_sts_mode_info",
            &[("domain", "good.example.test"), ("mode", "testing")]
        ),
        1.0
    );

    exporter.stop().await;
}

/// Issue 17: a policy is checked once per `policy.interval`, however often the walk
/// runs; and a failed check keeps the time of the last success, which is what tells how
/// long senders can still rely on their cached policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_checked_once_per_interval_and_failures_keep_the_last_success() {
    let pki = TestPki::with_names(&[
        "mx1.example.test",
        "mta-sts.steady.example.test",
        "mta-sts.lapsed.example.test",
    ]);
    let smtp = FakeSmtp::start(Behaviour::default(), &pki).await;
    let https = HttpsServer::start(pki.acceptor()).await;
    // TTL 1 s: the walk runs every second.
    let dns = FakeDns::start(1).await;
    dns.add("mx1.example.test", Rr::Addr("127.0.0.1".parse().unwrap()));
    for d in ["steady", "lapsed"] {
        let domain = format!("{d}.example.test");
        dns.add(&domain, Rr::Mx(10, "mx1.example.test".into()))
            .add(&format!("mta-sts.{domain}"), Rr::Addr("127.0.0.1".parse().unwrap()))
            .add(&format!("_mta-sts.{domain}"), Rr::Txt("v=STSv1; id=1".into()));
        https.set(&format!("mta-sts.{domain}"), Answer::policy(&policy("enforce", &["mx1.example.test"])));
    }
    let domain = |d: &str, interval: &str| {
        format!(
            "  - name: {d}.example.test\n    ports: [{{ port: {}, module: relay }}]\n    policy: {{ interval: {interval}, timeout: 2s, https_port: {}, dane: false }}\n",
            smtp.port(),
            https.addr.port()
        )
    };
    let yaml = format!(
        "dns:\n  nameservers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  min_ttl: 1s\nmodules:\n  relay: {{ tls: starttls, timeout: 1s, tls_config: {{ ca_file: \"{}\" }} }}\ndomains:\n{}{}",
        dns.addr,
        pki.ca_file.display(),
        domain("steady", "1h"),
        domain("lapsed", "1s"),
    );
    let exporter = InProcess::start(yaml, "policy-interval.yml").await;
    let of = |s: &[testkit::exposition::Sample], family: &str, d: &str| {
        let d = format!("{d}.example.test");
        find(s, family, &[("domain", d.as_str())]).first().map(|x| x.value)
    };
    let first = exporter
        .scrape_until(WITHIN, "both policies fetched", |s| {
            of(s, "smtp_domain_mta_sts_success", "steady") == Some(1.0)
                && of(s, "smtp_domain_mta_sts_success", "lapsed") == Some(1.0)
        })
        .await;
    let steady = of(&first, "smtp_domain_mta_sts_last_success_timestamp_seconds", "steady").unwrap();
    let lapsed = of(&first, "smtp_domain_mta_sts_last_success_timestamp_seconds", "lapsed").unwrap();
    let walk = of(&first, "smtp_domain_last_walk_timestamp_seconds", "steady").unwrap();

    https.set("mta-sts.lapsed.example.test", Answer { status: 404, ..Answer::policy("") });
    let later = exporter
        .scrape_until(WITHIN, "two more walks and the failed check", |s| {
            of(s, "smtp_domain_last_walk_timestamp_seconds", "steady").is_some_and(|t| t >= walk + 2.0)
                && of(s, "smtp_domain_mta_sts_success", "lapsed") == Some(0.0)
        })
        .await;
    assert_eq!(
        of(&later, "smtp_domain_mta_sts_last_success_timestamp_seconds", "steady"),
        Some(steady),
        "the steady domain's policy was fetched again within its hour"
    );
    assert_eq!(
        find(
            &later,
            "smtp_domain_mta_sts_failure_info",
            &[("domain", "lapsed.example.test"), ("reason", "https_status")]
        )
        .len(),
        1
    );
    assert_eq!(
        of(&later, "smtp_domain_mta_sts_last_success_timestamp_seconds", "lapsed"),
        Some(lapsed),
        "a failed check keeps the time of the last success"
    );
    exporter.stop().await;
}
