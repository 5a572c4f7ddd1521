#!/usr/bin/env python3
"""tests/mutants/score.py - the crate-wide mutation score from runs made in parts.

The whole crate is too many mutants for one sitting, so it is run in parts (see
RESULTS.md). This script lists today's mutants (`cargo mutants --list --json`), finds
each one's latest outcome in the given output directories, and prints the score: caught
over caught + missed, with the missed split into accepted (accepted.txt) and open.

A mutant is matched across runs by its file, its function, its description and its
position inside the function, so that a line added above a function does not lose what
was learned about it; a function whose body changed since a run is matched only where
the position still holds. Runs are taken in the order they ended: a later outcome wins.

Usage:
    tests/mutants/score.py [--suspect FILE.json[@UNTIL]]... [--todo FILE] DIR...

DIR is a `--output` directory of a run (holding mutants.out/outcomes.json) or the
mutants.out itself. --suspect names a JSON list of mutants (as in outcomes.json) whose
"caught" is not trusted, because only a flaky test failed, in runs that ended (or, if
stopped, started) before UNTIL (ISO; --suspect-until when the file does not say).
--todo writes the names of mutants with no trusted outcome, one per line, for
`cargo mutants --re`.
"""

import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LOCATION = re.compile(r"^([^:]+):\d+:\d+: ")


def key(mutant):
    """File, description without its location, and position inside the function."""
    description = LOCATION.sub("", mutant["name"])
    function = mutant.get("function") or {}
    start = function.get("span", {}).get("start", {}).get("line", 0)
    span = mutant["span"]["start"]
    return (mutant["file"], description, span["line"] - start, span["column"])


def load_run(path):
    for candidate in (os.path.join(path, "mutants.out", "outcomes.json"),
                      os.path.join(path, "outcomes.json")):
        if os.path.exists(candidate):
            with open(candidate) as f:
                return json.load(f)
    sys.exit(f"score: no outcomes.json under {path}")


def accepted_keys():
    keys = set()
    with open(os.path.join(HERE, "accepted.txt")) as f:
        for line in f:
            line = re.sub(r"\s+#.*$", "", line.rstrip("\n"))
            if line.strip() and not line.startswith("#"):
                keys.add(line.strip())
    return keys


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--suspect", action="append", default=[])
    parser.add_argument("--suspect-until", default="")
    parser.add_argument("--todo")
    parser.add_argument("--by-file", action="store_true")
    args = parser.parse_args()

    listing = subprocess.run(["cargo", "mutants", "--list", "--json"], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
    today = json.loads(listing)

    suspects = {}
    for spec in args.suspect:
        path, _, until = spec.partition("@")
        with open(path) as f:
            for m in json.load(f):
                suspects[key(m)] = until or args.suspect_until

    runs = sorted((load_run(p) for p in args.runs), key=lambda r: r.get("end_time") or r.get("start_time") or "")
    latest = {}
    for run in runs:
        ended = run.get("end_time") or run.get("start_time") or ""
        for outcome in run["outcomes"]:
            mutant = outcome["scenario"]
            if not isinstance(mutant, dict) or "Mutant" not in mutant:
                continue  # the baseline
            mutant = mutant["Mutant"]
            summary = outcome["summary"]
            k = key(mutant)
            if summary == "CaughtMutant" and k in suspects and ended <= suspects[k]:
                continue
            latest[k] = summary

    accepted = accepted_keys()
    counts = {}
    per_file = {}
    todo = []
    open_missed = []
    for mutant in today:
        summary = latest.get(key(mutant), "NotRun")
        if summary == "MissedMutant":
            stripped = LOCATION.sub(r"\1: ", mutant["name"])
            if stripped in accepted:
                summary = "Accepted"
            else:
                open_missed.append(mutant["name"])
        if summary == "Timeout":
            summary = "CaughtMutant"
        if summary == "NotRun":
            todo.append(mutant["name"])
        counts[summary] = counts.get(summary, 0) + 1
        row = per_file.setdefault(mutant["file"], {})
        row[summary] = row.get(summary, 0) + 1

    def line(name, c):
        caught = c.get("CaughtMutant", 0)
        missed = c.get("Accepted", 0) + c.get("MissedMutant", 0)
        score = f"{100 * caught / (caught + missed):.1f}%" if caught + missed else "-"
        return (f"{name:<34} {sum(c.values()):>5} {caught:>6} {c.get('Accepted', 0):>8}"
                f" {c.get('MissedMutant', 0):>5} {c.get('Unviable', 0):>8}"
                f" {c.get('NotRun', 0):>7} {score:>7}")

    print(f"{'file':<34} {'all':>5} {'caught':>6} {'accepted':>8} {'open':>5}"
          f" {'unviable':>8} {'not run':>7} {'score':>7}")
    if args.by_file:
        for name in sorted(per_file):
            print(line(name, per_file[name]))
    print(line("crate", counts))
    caught = counts.get("CaughtMutant", 0)
    judged = caught + counts.get("Accepted", 0) + counts.get("MissedMutant", 0)
    if judged:
        print(f"score counting accepted as survivors: {100 * caught / judged:.1f}%;"
              f" accepted as equivalent (left out): "
              f"{100 * caught / (caught + counts.get('MissedMutant', 0)):.1f}%")
    for name in open_missed:
        print(f"open: {name}")
    if args.todo:
        with open(args.todo, "w") as f:
            f.writelines(n + "\n" for n in todo)


if __name__ == "__main__":
    main()
