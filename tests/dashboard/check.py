#!/usr/bin/env python3
"""Check a Grafana dashboard against a live Prometheus: every query must parse and return data.

Usage:
    tests/dashboard/check.py --prometheus http://127.0.0.1:9090 \
        [--dashboard dashboards/smtp-exporter.json] [--range 5m] [--interval 1m] \
        [--rate-interval 1m] [--wait SECONDS] [--timeout SECONDS]

What it does, with the Python 3 standard library only:

1. Loads the dashboard JSON and checks its structure: unique integer panel ids, a gridPos
   (h, w, x, y; inside the 24-column grid; no two panels overlapping) on every panel, a
   datasource that references the dashboard's datasource variable on every panel and every
   query, the variables the dashboard is meant to have, and a non-empty expr on every query.
2. Resolves the template variables in dashboard order, the way Grafana would with the
   defaults: `datasource` (type datasource) is not needed for the queries and resolves to the
   Prometheus given on the command line; a query variable runs its `label_values(...)` through
   /api/v1/label/<name>/values with match[] over the check range; a multi-value or
   include-All variable takes "All" (its allValue, e.g. `.*`, or else a regex of every value),
   any other variable its first value (after the variable's sort).
3. Substitutes the variables ($var, ${var}, ${var:format}, [[var]]) and Grafana's macros with
   fixed values: $__range = --range (5m), $__interval = max(--interval (1m), the panel's or the
   query's minimum interval), $__rate_interval = max(--rate-interval (1m), that interval), and
   their _s / _ms forms.
4. Evaluates every query of every panel, rows and panels nested in collapsed rows included,
   with an instant query (/api/v1/query) at the current time; a query that Grafana runs as a
   range query is also run through /api/v1/query_range over the last $__range with a step
   of $__interval. A query fails when Prometheus rejects it (parse or execution error) or
   when it returns no data (an empty vector or matrix, or only NaN).

It prints one line per structural check and per query (panel title, refId, ok or FAILED and
why), then a last line exactly `N passed, M failed`, and exits 1 when M > 0 (2 on a usage
error or when the dashboard cannot be read). With --wait, the query checks are repeated until
they all pass or the time is up, and only the last round is printed: handy right after
Prometheus starts, while range functions do not have enough samples yet.
"""

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_RANGE = "5m"
DEFAULT_INTERVAL = "1m"
DEFAULT_RATE_INTERVAL = "1m"

# Variables this dashboard is expected to define: name -> (type, must be multi-value with All).
EXPECTED_VARIABLES = {
    "datasource": ("datasource", False),
    "job": ("query", False),
    "target": ("query", True),
    "port": ("query", True),
}
DATASOURCE_VARIABLE = "datasource"

RANGE_PANEL_TYPES = {"timeseries", "state-timeline", "status-history", "graph", "heatmap"}


class CheckError(Exception):
    """A query or variable could not be evaluated."""


# ----------------------------------------------------------------------------- durations

_DURATION_RE = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text):
    """'5m' -> 300.0 seconds; also accepts Grafana's '>1m' minimum-interval form."""
    text = str(text).strip().lstrip(">")
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError("not a duration: %r" % text)
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def format_duration(seconds):
    """300 -> '5m': the largest unit that divides the value, as Prometheus accepts it."""
    ms = int(round(seconds * 1000))
    for unit, factor in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms % factor == 0 and ms >= factor:
            return "%d%s" % (ms // factor, unit)
    return "%dms" % ms


# ----------------------------------------------------------------------------- Prometheus


class Prometheus:
    def __init__(self, base_url, timeout):
        self.base = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, path, params, post):
        data = urllib.parse.urlencode(params, doseq=True)
        url = self.base + path
        if post:
            req = urllib.request.Request(
                url, data=data.encode(), method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
        else:
            req = urllib.request.Request(url + ("?" + data if data else ""), method="GET")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                payload = json.loads(body)
            except ValueError:
                raise CheckError("HTTP %d from %s: %s" % (e.code, path, body[:200].decode(errors="replace")))
            raise CheckError("%s: %s" % (payload.get("errorType", "error"), payload.get("error", "?")))
        except (urllib.error.URLError, OSError) as e:
            raise CheckError("cannot reach Prometheus at %s: %s" % (self.base, e))
        try:
            payload = json.loads(body)
        except ValueError:
            raise CheckError("not JSON from %s" % path)
        if payload.get("status") != "success":
            raise CheckError("%s: %s" % (payload.get("errorType", "error"), payload.get("error", "?")))
        return payload

    def instant(self, expr, at):
        return self._call("/api/v1/query", {"query": expr, "time": "%.3f" % at}, post=True)

    def range(self, expr, start, end, step):
        return self._call("/api/v1/query_range",
                          {"query": expr, "start": "%.3f" % start, "end": "%.3f" % end,
                           "step": "%g" % step}, post=True)

    def label_values(self, label, match, start, end):
        params = {"start": "%.3f" % start, "end": "%.3f" % end}
        if match:
            params["match[]"] = [match]
        path = "/api/v1/label/%s/values" % urllib.parse.quote(label, safe="")
        return self._call(path, params, post=False)["data"]

    def buildinfo(self):
        return self._call("/api/v1/status/buildinfo", {}, post=False)["data"]


def describe_result(payload):
    """Returns (has_data, summary) for a query API answer."""
    data = payload.get("data", {})
    rtype = data.get("resultType")
    result = data.get("result")
    if rtype == "scalar":
        value = result[1] if result else "NaN"
        ok = not _is_nan(value)
        return ok, "scalar %s" % value
    if rtype == "string":
        return True, "string"
    if rtype == "vector":
        if not result:
            return False, "no data (empty vector)"
        values = [s.get("value", [0, "NaN"])[1] for s in result]
        if all(_is_nan(v) for v in values):
            return False, "no data (only NaN, %d series)" % len(result)
        return True, "%d series" % len(result)
    if rtype == "matrix":
        if not result:
            return False, "no data (empty matrix)"
        points = sum(len(s.get("values", [])) for s in result)
        if points == 0 or all(_is_nan(v[1]) for s in result for v in s.get("values", [])):
            return False, "no data (no samples in %d series)" % len(result)
        return True, "%d series, %d points" % (len(result), points)
    return False, "unexpected result type %r" % rtype


def _is_nan(value):
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- dashboard walk


def walk_panels(panels, parent=None):
    """Yields (panel, parent_row) for every panel, rows and panels nested in rows included."""
    for p in panels or []:
        yield p, parent
        if p.get("type") == "row":
            yield from walk_panels(p.get("panels"), p)


def references_variable(ds, name):
    """True when a datasource reference (object or legacy string) points at $name."""
    forms = {"$" + name, "${%s}" % name, "[[%s]]" % name}
    if isinstance(ds, str):
        return ds in forms
    if isinstance(ds, dict):
        return ds.get("uid") in forms
    return False


def check_structure(dash):
    """Returns a list of (label, problems) pairs; an empty problems list means ok."""
    checks = []
    panels = dash.get("panels")

    top = []
    if not isinstance(panels, list) or not panels:
        top.append("no panels")
    if not isinstance(dash.get("schemaVersion"), int):
        top.append("schemaVersion missing")
    if not dash.get("title"):
        top.append("title missing")
    if not isinstance(dash.get("templating", {}).get("list"), list):
        top.append("templating.list missing")
    checks.append(("dashboard: panels, title, schemaVersion, templating", top))
    if not isinstance(panels, list):
        return checks

    all_panels = list(walk_panels(panels))

    # Unique ids.
    problems, seen = [], {}
    for p, _ in all_panels:
        pid = p.get("id")
        if not isinstance(pid, int):
            problems.append("panel %r has no integer id" % p.get("title"))
        elif pid in seen:
            problems.append("id %d used by %r and %r" % (pid, seen[pid], p.get("title")))
        else:
            seen[pid] = p.get("title")
    checks.append(("structure: unique panel ids (%d panels)" % len(all_panels), problems))

    # gridPos.
    problems = []
    for p, _ in all_panels:
        g = p.get("gridPos")
        title = p.get("title")
        if not isinstance(g, dict) or not all(isinstance(g.get(k), int) for k in "hwxy"):
            problems.append("%r: gridPos with integer h, w, x, y missing" % title)
            continue
        if g["w"] <= 0 or g["h"] <= 0 or g["x"] < 0 or g["y"] < 0 or g["x"] + g["w"] > 24:
            problems.append("%r: gridPos %s outside the 24-column grid" % (title, g))
    # Overlaps among the top-level panels, and among the panels of each collapsed row.
    groups = [panels] + [p.get("panels") or [] for p, _ in all_panels if p.get("type") == "row"]
    for group in groups:
        boxes = [(p.get("title"), p.get("gridPos")) for p in group
                 if isinstance(p.get("gridPos"), dict)
                 and all(isinstance(p["gridPos"].get(k), int) for k in "hwxy")]
        for i, (ta, a) in enumerate(boxes):
            for tb, b in boxes[i + 1:]:
                if (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                        and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]):
                    problems.append("%r overlaps %r" % (ta, tb))
    checks.append(("structure: gridPos on every panel, in the grid, no overlaps", problems))

    # Datasources.
    problems = []
    for p, _ in all_panels:
        title = p.get("title")
        is_row = p.get("type") == "row"
        if is_row:
            if "datasource" in p and p["datasource"] is not None \
                    and not references_variable(p["datasource"], DATASOURCE_VARIABLE):
                problems.append("row %r: datasource %r is not ${%s}" % (title, p["datasource"], DATASOURCE_VARIABLE))
            continue
        if not references_variable(p.get("datasource"), DATASOURCE_VARIABLE):
            problems.append("%r: panel datasource %r is not ${%s}" % (title, p.get("datasource"), DATASOURCE_VARIABLE))
        for t in p.get("targets") or []:
            if not references_variable(t.get("datasource"), DATASOURCE_VARIABLE):
                problems.append("%r %s: query datasource %r is not ${%s}"
                                % (title, t.get("refId"), t.get("datasource"), DATASOURCE_VARIABLE))
    checks.append(("structure: every panel and query uses ${%s}" % DATASOURCE_VARIABLE, problems))

    # Queries present.
    problems = []
    for p, _ in all_panels:
        if p.get("type") in ("row", "text", "news", "dashlist"):
            continue
        targets = p.get("targets") or []
        if not targets:
            problems.append("%r has no queries" % p.get("title"))
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            problems.append("%r: refIds missing or not unique: %s" % (p.get("title"), refs))
        for t in targets:
            if not str(t.get("expr", "")).strip():
                problems.append("%r %s: empty expr" % (p.get("title"), t.get("refId")))
    checks.append(("structure: every panel has queries with a refId and an expr", problems))

    # Variables.
    problems = []
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", []) or []}
    for name, (vtype, multi) in EXPECTED_VARIABLES.items():
        v = variables.get(name)
        if v is None:
            problems.append("variable %r missing" % name)
            continue
        if v.get("type") != vtype:
            problems.append("variable %r has type %r, not %r" % (name, v.get("type"), vtype))
        if vtype == "datasource" and v.get("query") != "prometheus":
            problems.append("variable %r: query %r, not 'prometheus'" % (name, v.get("query")))
        if vtype == "query" and not references_variable(v.get("datasource"), DATASOURCE_VARIABLE):
            problems.append("variable %r does not query ${%s}" % (name, DATASOURCE_VARIABLE))
        if multi and not (v.get("multi") and v.get("includeAll")):
            problems.append("variable %r should be multi-value with All" % name)
    checks.append(("structure: variables %s" % ", ".join(EXPECTED_VARIABLES), problems))
    return checks


# ----------------------------------------------------------------------------- variables


def variable_query_text(v):
    q = v.get("query")
    if isinstance(q, dict):
        q = q.get("query", "")
    return (q or v.get("definition") or "").strip()


_LABEL_VALUES_RE = re.compile(r"^label_values\s*\((.*)\)\s*$", re.S)


def parse_label_values(query):
    """'label_values(sel, label)' -> (sel, label); 'label_values(label)' -> ('', label)."""
    m = _LABEL_VALUES_RE.match(query)
    if not m:
        raise CheckError("unsupported variable query %r (only label_values(...) is)" % query)
    inner = m.group(1).strip()
    # The label is after the last top-level comma (selectors may contain commas in braces).
    depth, in_str, split = 0, None, -1
    for i, ch in enumerate(inner):
        if in_str:
            if ch == "\\":
                continue
            if ch == in_str:
                in_str = None
        elif ch in "\"'`":
            in_str = ch
        elif ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch == "," and depth == 0:
            split = i
    if split < 0:
        return "", inner
    return inner[:split].strip(), inner[split + 1:].strip()


def sort_values(values, mode):
    """Grafana's variable sort: 1/2 alphabetical, 3/4 numerical, 5/6 case-insensitive."""
    def num(s):
        m = re.search(r"-?\d+(\.\d+)?", s)
        return float(m.group(0)) if m else float("-inf")
    if mode in (1, 2):
        values = sorted(values)
    elif mode in (3, 4):
        values = sorted(values, key=num)
    elif mode in (5, 6):
        values = sorted(values, key=str.lower)
    if mode in (2, 4, 6):
        values = list(reversed(values))
    return values


def regex_escape(value):
    """Grafana's Prometheus datasource escaping for multi-value variables: a regex escape
    written inside a PromQL string, so each escaping backslash is doubled."""
    value = value.replace("\\", "\\" * 4)
    return re.sub(r"([$^*+?.()|{}\[\]'])", lambda m: "\\\\" + m.group(1), value)


class Variable:
    def __init__(self, name, values, is_all, all_value, multi):
        self.name = name
        self.values = values          # chosen values (all of them for "All")
        self.is_all = is_all
        self.all_value = all_value    # the custom allValue, or None
        self.multi = multi

    def render(self, fmt=None):
        if self.is_all and self.all_value is not None:
            return self.all_value      # Grafana inserts a custom allValue as is
        vals = self.values
        if fmt in (None, "regex"):
            if self.multi or fmt == "regex":
                escaped = [regex_escape(v) for v in vals]
                return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
            return vals[0].replace("\\", "\\\\").replace("'", "\\\\'") if vals else ""
        if fmt == "pipe":
            return "|".join(vals)
        if fmt == "csv":
            return ",".join(vals)
        if fmt == "raw":
            return ",".join(vals) if len(vals) != 1 else vals[0]
        if fmt == "text":
            return " + ".join(vals)
        if fmt == "json":
            return json.dumps(vals)
        if fmt == "doublequote":
            return ",".join('"%s"' % v for v in vals)
        if fmt == "singlequote":
            return ",".join("'%s'" % v for v in vals)
        raise CheckError("unsupported variable format ${%s:%s}" % (self.name, fmt))


_VAR_RE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")


def interpolate(text, variables, macros):
    """Replaces macros and variables the way Grafana's template service does."""
    def repl(m):
        name = m.group(1) or m.group(3) or m.group(5)
        fmt = m.group(2) or m.group(4)
        if name in macros:
            return macros[name]
        if name in variables:
            return variables[name].render(fmt)
        return m.group(0)  # unknown: left alone, as Grafana does
    return _VAR_RE.sub(repl, text)


def resolve_variables(dash, prom, now, range_s, prom_url):
    """Returns ({name: Variable}, [log lines])."""
    resolved, log = {}, []
    base_macros = {"__range": format_duration(range_s), "__range_s": str(int(range_s)),
                   "__range_ms": str(int(range_s * 1000))}
    for v in dash.get("templating", {}).get("list", []) or []:
        name, vtype = v.get("name"), v.get("type")
        multi = bool(v.get("multi"))
        include_all = bool(v.get("includeAll"))
        all_value = v.get("allValue") or None
        if vtype == "datasource":
            resolved[name] = Variable(name, [prom_url], False, None, False)
            log.append("variable $%s = %s (datasource: the --prometheus URL)" % (name, prom_url))
            continue
        if vtype == "query":
            query = interpolate(variable_query_text(v), resolved, base_macros)
            match, label = parse_label_values(query)
            values = prom.label_values(label, match, now - range_s, now)
            regex = v.get("regex")
            if regex:
                pattern = re.compile(regex.strip("/"))
                values = [x for x in values if pattern.search(x)]
            values = sort_values(values, v.get("sort", 0))
            if not values:
                raise CheckError("variable $%s: %s returned no values" % (name, query))
        elif vtype == "custom":
            values = [x.strip() for x in re.split(r"(?<!\\),", v.get("query", "")) if x.strip()]
        elif vtype in ("constant", "textbox"):
            values = [v.get("query", "")]
        elif vtype == "interval":
            values = [x.strip() for x in v.get("query", "").split(",") if x.strip()]
        else:
            raise CheckError("variable $%s: unsupported type %r" % (name, vtype))
        if include_all or multi:
            var = Variable(name, values, True, all_value, True)
            shown = all_value if all_value is not None else var.render()
            log.append("variable $%s = All -> %s (%d values: %s)"
                       % (name, shown, len(values), ", ".join(values[:10]) + (" ..." if len(values) > 10 else "")))
        else:
            var = Variable(name, values[:1], False, None, False)
            log.append("variable $%s = %s (first of %d)" % (name, values[0], len(values)))
        resolved[name] = var
    return resolved, log


# ----------------------------------------------------------------------------- queries


def query_macros(panel, target, range_s, interval_s, rate_interval_s):
    """Grafana macros with the panel's/query's minimum interval honoured."""
    interval = interval_s
    for source in (panel.get("interval"), target.get("interval")):
        if source:
            try:
                interval = max(interval, parse_duration(source))
            except ValueError:
                pass
    rate = max(rate_interval_s, interval)
    return {
        "__range": format_duration(range_s), "__range_s": str(int(range_s)),
        "__range_ms": str(int(range_s * 1000)),
        "__interval": format_duration(interval), "__interval_ms": str(int(interval * 1000)),
        "__rate_interval": format_duration(rate), "__rate_interval_ms": str(int(rate * 1000)),
    }, interval


def runs_as_range(panel, target):
    """Whether Grafana runs this query as a range query."""
    if target.get("instant") and not target.get("range"):
        return False
    if "range" in target:
        return bool(target["range"])
    return panel.get("type") in RANGE_PANEL_TYPES


_LEFTOVER_RE = re.compile(r"\$\{?__\w+|\$\{\w+(:\w+)?\}|\[\[\w+\]\]")


def evaluate_queries(dash, prom, variables, range_s, interval_s, rate_interval_s):
    """Returns a list of (title, refId, ok, detail, expr)."""
    results = []
    now = time.time()
    for p, parent in walk_panels(dash.get("panels")):
        if p.get("type") == "row":
            continue
        title = p.get("title", "(untitled)")
        if parent is not None:
            title = "%s / %s" % (parent.get("title", "(row)"), title)
        for t in p.get("targets") or []:
            ref = t.get("refId", "?")
            raw = str(t.get("expr", ""))
            macros, interval = query_macros(p, t, range_s, interval_s, rate_interval_s)
            expr = interpolate(raw, variables, macros)
            leftover = _LEFTOVER_RE.search(expr)
            if leftover:
                results.append((title, ref, False, "unresolved %s" % leftover.group(0), expr))
                continue
            if not expr.strip():
                results.append((title, ref, False, "empty expr", expr))
                continue
            try:
                ok, detail = describe_result(prom.instant(expr, now))
                if ok and runs_as_range(p, t):
                    rok, rdetail = describe_result(prom.range(expr, now - range_s, now, interval))
                    detail = "instant: %s; range: %s" % (detail, rdetail)
                    ok = rok
                elif ok:
                    detail = "instant: %s" % detail
            except CheckError as e:
                ok, detail = False, str(e)
            results.append((title, ref, ok, detail, expr))
    return results


# ----------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Evaluate every query of a Grafana dashboard against Prometheus.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", default="dashboards/smtp-exporter.json", help="dashboard JSON file")
    ap.add_argument("--range", default=DEFAULT_RANGE, help="value of $__range and the look-back of "
                    "range queries and variable queries (default %(default)s)")
    ap.add_argument("--interval", default=DEFAULT_INTERVAL,
                    help="value of $__interval and the range query step (default %(default)s)")
    ap.add_argument("--rate-interval", default=DEFAULT_RATE_INTERVAL,
                    help="value of $__rate_interval (default %(default)s)")
    ap.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                    help="repeat the query checks until all pass or SECONDS have passed")
    ap.add_argument("--timeout", type=float, default=15, help="HTTP timeout per request (s)")
    ap.add_argument("--show-expr", action="store_true", help="print the substituted expr of failures")
    args = ap.parse_args(argv)

    try:
        range_s = parse_duration(args.range)
        interval_s = parse_duration(args.interval)
        rate_interval_s = parse_duration(args.rate_interval)
    except ValueError as e:
        ap.error(str(e))

    try:
        with open(args.dashboard, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print("cannot load %s: %s" % (args.dashboard, e))
        print("0 passed, 1 failed")
        return 2
    if isinstance(dash.get("dashboard"), dict):  # an API export wraps the model
        dash = dash["dashboard"]

    prom = Prometheus(args.prometheus, args.timeout)
    deadline = time.monotonic() + args.wait
    rounds, started = 0, time.monotonic()
    while True:
        rounds += 1
        lines, passed, failed = [], 0, 0
        for label, problems in check_structure(dash):
            if problems:
                failed += 1
                lines.append("%s: FAILED" % label)
                lines.extend("    - %s" % pr for pr in problems)
            else:
                passed += 1
                lines.append("%s: ok" % label)
        try:
            variables, var_log = resolve_variables(dash, prom, time.time(), range_s, args.prometheus)
            lines.extend(var_log)
            results = evaluate_queries(dash, prom, variables, range_s, interval_s, rate_interval_s)
        except CheckError as e:
            lines.append("variables: FAILED: %s" % e)
            failed += 1
            results = []
        for title, ref, ok, detail, expr in results:
            if ok:
                passed += 1
                lines.append("%s [%s]: ok (%s)" % (title, ref, detail))
            else:
                failed += 1
                lines.append("%s [%s]: FAILED: %s" % (title, ref, detail))
                if args.show_expr:
                    lines.append("    expr: %s" % " ".join(expr.split()))
        if failed == 0 or time.monotonic() >= deadline:
            break
        failing = [line for line in lines if "FAILED" in line]
        print("round %d after %.0f s: %d failing: %s" % (
            rounds, time.monotonic() - started, failed, "; ".join(failing)), file=sys.stderr)
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    for line in lines:
        print(line)
    if args.wait:
        print("(round %d, after %.0f s of waiting)" % (rounds, time.monotonic() - started))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
