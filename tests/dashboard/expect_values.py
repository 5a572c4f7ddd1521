#!/usr/bin/env python3
"""Spot checks of what some panels SHOW, for the setup of tests/dashboard/run.sh.

check.py proves that every query parses and returns data; it cannot tell a wrong encoding
from a right one. This script evaluates a few panel queries, taken from the dashboard and
substituted the same way as check.py (All for target and port), and compares the values with
what run.sh's exporter configuration must produce:

  target           status code (grid)  failure (phase/reason)          AUTH reply  cert error
  mx               0 (open, OK)        -                               235         -
  mx-wrong-ca      0 (open, OK)        -                               -           unknown_issuer
  mx-bad-password  1 (open, failing)   auth/auth_failed                535         -
  mx-notls         1 (open, failing)   starttls/starttls_unavailable   -           -
  closed           2 (refused)         connect/refused                 -           -

Usage: expect_values.py --prometheus URL [--dashboard dashboards/smtp-exporter.json]
Prints one line per check and `N passed, M failed`; exits 1 when M > 0.
"""

import argparse
import json
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402  (same directory)


def find_target(dash, title, ref):
    for p, _ in check.walk_panels(dash.get("panels")):
        if p.get("title") == title:
            for t in p.get("targets") or []:
                if t.get("refId") == ref:
                    return p, t
    raise SystemExit("panel %r query %s not found in the dashboard" % (title, ref))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", default="dashboards/smtp-exporter.json")
    args = ap.parse_args()

    with open(args.dashboard, encoding="utf-8") as f:
        dash = json.load(f)
    prom = check.Prometheus(args.prometheus, 15)
    now = time.time()
    variables, _ = check.resolve_variables(dash, prom, now, 300, args.prometheus)

    def series(title, ref):
        p, t = find_target(dash, title, ref)
        macros, _ = check.query_macros(p, t, 300, 60, 60)
        expr = check.interpolate(t["expr"], variables, macros)
        return prom.instant(expr, now)["data"]["result"]

    results = []

    def expect(label, got, want):
        results.append((label, got == want, got, want))

    grid = {}
    for s in series("Status: target × port", "A"):
        grid.setdefault(s["metric"]["target"], set()).add(s["value"][1])
    expect("status grid codes per target", grid,
           {"mx": {"0"}, "mx-wrong-ca": {"0"}, "mx-bad-password": {"1"}, "mx-notls": {"1"},
            "closed": {"2"}, "two.mail.test": {"2"}, "dane.test": {"0"}})

    failures = {(s["metric"]["target"], s["metric"]["phase"], s["metric"]["reason"])
                for s in series("Current failures", "A")}
    expect("current failures (target, phase, reason)", failures,
           {("mx-bad-password", "auth", "auth_failed"),
            ("mx-notls", "starttls", "starttls_unavailable"),
            ("closed", "connect", "refused"),
            ("two.mail.test", "connect", "refused")})

    codes = {}
    for s in series("AUTH (last probe)", "B"):
        codes.setdefault(s["metric"]["target"], set()).add(s["value"][1])
    expect("AUTH reply codes per target", codes, {"mx": {"235"}, "mx-bad-password": {"535"}})

    # The delivery probe through Postfix into Dovecot: INBOX, two Received hops (Postfix,
    # LMTP), and the verdicts mta.sh's header_checks prepend.
    delivered = {(s["metric"]["target"], s["metric"]["folder"], s["value"][1])
                 for s in series("Delivery: folder and hops", "A")}
    expect("delivery folder and hops", delivered, {("mx", "inbox", "2")})
    verdicts = {s["metric"]["method"]: s["value"][1] for s in series("Delivery: authentication results", "A")}
    expect("delivery authentication results", verdicts, {"dkim": "1", "spf": "1", "dmarc": "0"})
    hops = {s["metric"]["phase"] for s in series("Delivery time by hop", "A")}
    expect("delivery phases", hops, {"submit", "deliver", "fetch", "cleanup"})

    errors = {(s["metric"]["target"], s["metric"]["error"]) for s in series("Certificate errors", "A")}
    expect("certificate errors", errors, {("mx-wrong-ca", "unknown_issuer")})

    verified = {}
    for s in series("Certificate verified", "A"):
        verified.setdefault(s["metric"]["target"], set()).add(s["value"][1])
    expect("certificate verified per target", verified,
           {"mx": {"1"}, "mx-bad-password": {"1"}, "mx-wrong-ca": {"0"}, "two.mail.test": {"1"},
            # mx3.dane.test's self-signed certificate too: a DANE-EE record pins it.
            "dane.test": {"1"}})

    # The test zone's domain: mx1 answers on both families, mx2 (a CNAME to 127.0.0.2)
    # has nothing listening; mail is delivered through the primary.
    deliverable = {s["metric"]["domain"]: s["value"][1]
                   for s in series("Domain deliverable", "A")}
    primary = {s["metric"]["domain"]: s["value"][1] for s in series("Domain deliverable", "B")}
    expect("domain deliverable, and through the primary MX", (deliverable, primary),
           ({"two.mail.test": "1", "dane.test": "1"}, {"two.mail.test": "1", "dane.test": "1"}))
    addresses = {(s["metric"]["mx"], s["metric"]["family"], s["metric"]["address"], s["value"][1])
                 for s in series("MX addresses (last probe)", "A")}
    expect("MX addresses and their results", addresses,
           {("mx1.mail.test", "ip4", "127.0.0.1", "1"), ("mx1.mail.test", "ip6", "::1", "1"),
            ("mx2.mail.test", "ip4", "127.0.0.2", "0"), ("mx1.dane.test", "ip4", "127.0.0.1", "1"),
            ("mx2.dane.test", "ip4", "127.0.0.3", "1"), ("mx3.dane.test", "ip4", "127.0.0.4", "1"),
            ("mx4.dane.test", "ip4", "127.0.0.1", "1")})
    compliance = {(s["metric"]["mx"], s["metric"]["mode"], s["value"][1])
                  for s in series("MTA-STS: MX compliance", "A")}
    expect("MTA-STS compliance per MX (enforce; mx2 has nothing listening)", compliance,
           {("mx1.mail.test", "enforce", "1"), ("mx2.mail.test", "enforce", "0")})
    lookups = {(s["metric"]["type"], s["metric"]["name"]) for s in series("DNS lookups of the domain walks", "A")
               if s["metric"]["domain"] == "two.mail.test"}
    tlsa = "_%s._tcp.mx%%d.mail.test" % os.environ["RELAY_PORT"]
    expect("DNS lookups of the walk", lookups,
           {("mx", "two.mail.test"), ("tlsa", tlsa % 1), ("a", "mx1.mail.test"), ("aaaa", "mx1.mail.test"),
            ("tlsa", tlsa % 2), ("a", "mx2.mail.test"), ("aaaa", "mx2.mail.test")})

    # DANE: dane.test's records are secure and match on mx1-mx3 (3 1 1, 2 0 1, a
    # self-signed 3 1 1), not on mx4 (a stale record); two.mail.test is unsigned.
    dane = {(s["metric"]["domain"], s["metric"]["mx"], s["metric"]["status"]) for s in series("DANE per MX", "A")}
    expect("DANE status per MX", dane,
           {("dane.test", "mx%d.dane.test" % i, "secure") for i in range(1, 5)}
           | {("two.mail.test", "mx1.mail.test", "insecure"), ("two.mail.test", "mx2.mail.test", "none")})
    matches = {(s["metric"]["mx"], s["value"][1]) for s in series("DANE per MX", "C")}
    expect("DANE match per MX", matches,
           {("mx1.dane.test", "1"), ("mx2.dane.test", "1"), ("mx3.dane.test", "1"), ("mx4.dane.test", "0")})
    failures = {(s["metric"]["mx"], s["metric"]["reason"]) for s in series("DANE per MX", "D")}
    expect("DANE failures", failures, {("mx4.dane.test", "no_match")})

    before = {s["metric"]["mechanism"] for s in series("AUTH mechanisms advertised before TLS", "A")
              if s["value"][1] == "1"}
    expect("AUTH mechanisms offered before TLS (Postfix: only after TLS)", before, set())
    after = {s["metric"]["mechanism"] for s in series("AUTH mechanisms advertised after TLS", "A")
             if s["value"][1] == "1"}
    expect("AUTH mechanisms offered after TLS", after, {"PLAIN", "LOGIN", "CRAM-MD5"})

    failed_checks = {(s["metric"]["target"], s["metric"]["check"])
                     for s in series("Expectations", "A") if s["value"][1] == "1"}
    expect("failed expectations", failed_checks,
           {("mx-wrong-ca", "banner_hostname"), ("mx-notls", "starttls")})

    days = [float(s["value"][1]) for s in series("Earliest certificate expiry", "A")]
    expect("earliest expiry is in the future (days > 0)", all(d > 0 for d in days) and bool(days), True)

    ratio = {s["metric"]["target"]: float(s["value"][1])
             for s in series("Success ratio over the dashboard range", "A")}
    expect("success ratio: 1 for mx, 0 for closed",
           (ratio.get("mx"), ratio.get("closed")), (1.0, 0.0))

    passed = failed = 0
    for label, ok, got, want in results:
        if ok:
            passed += 1
            print("%s: ok" % label)
        else:
            failed += 1
            print("%s: FAILED: got %r, want %r" % (label, got, want))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
