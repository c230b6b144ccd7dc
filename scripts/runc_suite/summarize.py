#!/usr/bin/env python3
"""Compare runc's integration-test results against the real runc and against shimledger.

    summarize.py RESULTS_DIR

Reads RESULTS_DIR/runc/*.tap and RESULTS_DIR/shimledger/*.tap (bats --tap output) and
writes RESULTS_DIR/summary.md and RESULTS_DIR/summary.json.

Only tests that pass with the real runc count. For each of those that does not pass under a
shimledger target it keeps the failing assertion, the first runtime command the test ran that
exited non-zero and the last runtime command it ran (helpers.bash's `runc` echoes each as
"NAME ARGS (status=N):" followed by its output), and puts the test in a cause group: the
first rule of CAUSES whose pattern matches "FILE::TEST" plus the test's whole diagnostic
output. The rules were written after reading every failure by hand; a failure no rule
matches is listed as "unclassified", with its details, so a new difference shows up.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

Row = dict[str, Any]

RESULT_RE = re.compile(r"^(ok|not ok) (\d+) (.*?)(?: # (skip|SKIP|timeout)\b ?(.*))?$")
ECHO_RE = re.compile(r"^(runc|runc-as-shimledger) (.*) \(status=(-?\d+)\):$")
PRIMARY = "shimledger"

# (label, regex). The regex is searched in "FILE::TEST\n" + the diagnostic lines; a label may
# use {1}, {2}... for the regex's groups. First match wins: specific rules first.
CAUSES: list[tuple[str, str]] = [
    # spec / terminal: what shimledger before e45c51f failed on (its spec wrote terminal false)
    (
        '`spec` writes "terminal": false (runc\'s writes true), and `--console-socket` with a '
        'config that has no terminal is refused ("sets no process.terminal, so there is no pty '
        'to send")',
        r"sets no process\.terminal, so there is no pty to send",
    ),
    (
        '`spec` writes "terminal": false (runc\'s writes true): a foreground `run` of the '
        "default config gives the process no pty",
        r"^tty\.bats::runc run \[(stdin not a tty|tty ptsname|tty owner).*\n(.|\n)*pipe:\[",
    ),
    # global options
    (
        "--debug does not show runc's own debug log: the suite looks for runc init's messages "
        '("nsexec container setup", "child process in init()", "init: closing the pipe to '
        'signal completion" / "setns_init: about to exec"); shimledger\'s --debug has its own '
        "and the shim's records only",
        r"check_(exec_)?debug",
    ),
    (
        "-h/--help is click's help, not runc's (no \"NAME:\" line; the usage line says "
        '"shimledger delete", not "runc delete")',
        r"=~ NAME:|=~ runc\\ [a-z]+\+",
    ),
    (
        "unknown command: shimledger says \"No such command 'foo'\", runc says "
        "\"No help topic for 'foo'\"",
        r"No help topic for",
    ),
    ('-v first line is "shimledger version 0.1.0", not "runc version X.Y.Z"', r"runc\\ version\\ "),
    # runc options not taken, or taken otherwise
    (
        "exec --preserve-fds N refused (a documented difference: the shim starts the process, "
        "so our descriptors cannot reach it)",
        r"--preserve-fds: the shim starts the process",
    ),
    ("option not taken: `{2} {1}`", r"No such option: (\S+) \(see 'shimledger (\w+) --help'\)"),
    ("option not taken: `{1}`", r"No such option: (\S+)"),
    (
        "exec -p takes only a regular file: `-p <(...)` (/dev/fd/63, a pipe) is refused "
        '("/dev/fd/63 is not a regular file"); runc reads any file',
        r"-p /dev/fd/\d+ .*\n(.|\n)*is not a regular file",
    ),
    (
        "exec without -i gives the process /dev/null as stdin; runc's exec (which has no -i) "
        "always passes its stdin, so a script piped into `runc exec ID sh` is never read",
        r"test failed to create \w+ sub-cgroup",
    ),
    # messages and exit codes
    (
        "exec in a paused task: exit 255 as runc's, but the message is \"task ct1 is paused: "
        'only a created or running task can run an exec", not runc\'s "cannot exec in a '
        'paused container"',
        r"cannot exec in a paused container",
    ),
    (
        "runc's warnings are not passed on: `run -d`/`create` in a cgroup that already has "
        "processes does not say runc's \"container's cgroup is not empty\"",
        r"container's cgroup is not empty",
    ),
    (
        '`ps` of a stopped task exits 1 ("task ... is stopped: no processes"); runc\'s prints '
        "ps's header and exits 0",
        r"is stopped: no processes",
    ),
    (
        "`list` piped prints tab-separated columns (and an EXIT column); runc's pads with spaces "
        "(Go tabwriter), so the suite's `ID +PID +STATUS +BUNDLE +CREATED` does not match",
        r"=~ ID\\ \+PID",
    ),
    # mounts
    (
        'a relative mount source ("source-accessible/dir") is taken relative to shimledger\'s '
        "working bundle under the state dir, not the user's bundle, so runc's init dies at the "
        "bind mount (\"can't get final child's PID from pipe: EOF\"); with the absolute path "
        "the same config runs",
        r"^userns\.bats::.*\n(.|\n)*can't get final child's PID from pipe: EOF",
    ),
]


def parse_tap(path: Path) -> tuple[int | None, dict[str, Row]]:
    tests: dict[str, Row] = {}
    current: Row | None = None
    plan = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("1..") and plan is None:
            plan = int(line[3:] or 0)
            continue
        m = RESULT_RE.match(line)
        if m:
            verdict, number, name, mark, reason = m.groups()
            reason = (reason or "").strip()
            if reason.startswith("(") and reason.endswith(")"):
                reason = reason[1:-1]
            if mark == "timeout":
                status, reason = "fail", f"timeout {reason}"
            else:
                status = "skip" if mark else ("pass" if verdict == "ok" else "fail")
            current = {
                "number": int(number),
                "name": name,
                "status": status,
                "reason": reason,
                "diag": [],
            }
            tests[name] = current
            continue
        if current is not None and line.startswith("#"):
            current["diag"].append(line[2:] if line.startswith("# ") else line[1:])
    return plan, tests


def commands(diag: list[str]) -> list[Row]:
    """Every runtime command the test echoed, with its status and output."""
    found = []
    for i, line in enumerate(diag):
        m = ECHO_RE.match(line)
        if not m:
            continue
        out = []
        for more in diag[i + 1 :]:
            if ECHO_RE.match(more):
                break
            if not more.startswith("rmdir: failed to remove '/sys/fs/cgroup/"):  # teardown
                out.append(more)
        found.append(
            {
                "command": "runc " + m.group(2),
                "status": int(m.group(3)),
                "output": "\n".join(out).strip(),
            }
        )
    return found


def failure_detail(test: Row) -> Row:
    diag = test["diag"]
    where = next((d.strip() for d in diag if d.strip().startswith("(")), "")
    assertion = next((d.strip() for d in diag if d.strip().startswith("`") and "failed" in d), "")
    if test["reason"].startswith("timeout"):
        assertion = f"{test['reason']} {assertion}".strip()
    cmds = commands(diag)
    first_bad = next((c for c in cmds if c["status"] != 0), None)
    return {
        "where": where,
        "assertion": assertion,
        "first_failed": first_bad,
        "last": cmds[-1] if cmds else None,
    }


def classify(file: str, test: Row) -> str:
    text = f"{file}::{test['name']}\n" + "\n".join(test["diag"])
    for label, pattern in CAUSES:
        m = re.search(pattern, text, re.M)
        if m:
            return label.format(None, *m.groups())
    return "unclassified"


def one_line(text: str, limit: int = 260) -> str:
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[:limit] + "…"


def compare(runc: dict[str, Any], other: dict[str, Any]) -> Row:
    rows = []
    for file, (plan, tests) in sorted(runc.items()):
        if plan is not None and len(tests) < plan:
            rows.append(
                {
                    "file": file,
                    "test": f"({plan - len(tests)} tests not reported)",
                    "runc": "not-run",
                    "shimledger": "not-run",
                }
            )
        for name, t in tests.items():
            o_plan, o_tests = other.get(file, (None, {}))
            o = o_tests.get(name)
            row = {
                "file": file,
                "test": name,
                "runc": t["status"],
                "runc_reason": t["reason"],
                "shimledger": o["status"] if o else "not-run",
            }
            if t["status"] == "pass" and row["shimledger"] != "pass":
                if o is None:
                    row["cause"] = "not run (file not run, or cut short by its timeout)"
                    row["detail"] = {}
                elif o["status"] == "skip":
                    row["cause"] = f"skipped under shimledger: {o['reason']}"
                    row["detail"] = {}
                else:
                    row["cause"] = classify(file, o)
                    row["detail"] = failure_detail(o)
            rows.append(row)
    runc_pass = [r for r in rows if r["runc"] == "pass"]
    both = [r for r in runc_pass if r["shimledger"] == "pass"]
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in runc_pass:
        if r["shimledger"] != "pass":
            groups[r["cause"]].append(r)
    per_file: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in runc_pass:
        per_file[r["file"]][0] += 1
        per_file[r["file"]][1] += r["shimledger"] == "pass"
    return {
        "rows": rows,
        "runc_pass": runc_pass,
        "both": both,
        "groups": sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])),
        "per_file": dict(sorted(per_file.items())),
        "shim_only": [r for r in rows if r["runc"] != "pass" and r["shimledger"] == "pass"],
    }


def group_md(groups: list[tuple[str, list[Row]]]) -> list[str]:
    md = []
    for cause, items in groups:
        md += [f"### {len(items)} tests: {cause}", ""]
        for r in items:
            d = r["detail"]
            md.append(f"- `{r['file']}` — **{r['test']}**")
            first, last = d.get("first_failed"), d.get("last")
            if first:
                md.append(
                    f"  - first command that failed: `{one_line(first['command'], 200)}` "
                    f"→ exit {first['status']}: {one_line(first['output'])}"
                )
            if last and last is not first and last != first:
                md.append(
                    f"  - last command: `{one_line(last['command'], 200)}` → exit "
                    f"{last['status']}: {one_line(last['output'])}"
                )
            if d.get("assertion"):
                md.append(f"  - failing assertion: {d['assertion']} {d.get('where', '')}")
        md.append("")
    return md


def main() -> None:
    results = Path(sys.argv[1])
    targets = {}
    for tdir in sorted(p for p in results.iterdir() if p.is_dir()):
        taps = sorted(tdir.glob("*.tap"))
        if taps:
            targets[tdir.name] = {t.stem + ".bats": parse_tap(t) for t in taps}
    if "runc" not in targets:
        raise SystemExit(f"{results}/runc/*.tap: no baseline")
    runc = targets["runc"]
    base = [t for _, tests in runc.values() for t in tests.values()]
    counts = {s: sum(t["status"] == s for t in base) for s in ("pass", "fail", "skip")}

    summary: Row = {"tests_reported_by_runc": len(base), "runc": counts, "targets": {}}
    md = ["# runc 1.1.5 integration tests (tests/integration/*.bats): real runc vs shimledger", ""]
    for name in (PRIMARY,):
        if name not in targets:
            continue
        c = compare(runc, targets[name])
        summary["targets"][name] = {
            "runc_passing": len(c["runc_pass"]),
            "passing_of_those": len(c["both"]),
            "causes": {k: len(v) for k, v in c["groups"]},
            "per_file": {f: {"runc_pass": n, "pass": ok} for f, (n, ok) in c["per_file"].items()},
            "pass_here_not_with_runc": [f"{r['file']}: {r['test']}" for r in c["shim_only"]],
            "tests": c["rows"],
        }
        meta = results / name / "meta.txt"
        md += [
            f"Real runc on this machine: {len(base)} tests reported, {counts['pass']} "
            f"pass, {counts['fail']} fail, {counts['skip']} skipped.",
            "",
            f"**shimledger (runc-as-shimledger, global flags translated only): "
            f"{len(c['both'])} of the {len(c['runc_pass'])} runc-passing tests pass "
            f"({100 * len(c['both']) / max(1, len(c['runc_pass'])):.0f}%).**",
            "",
        ]
        if meta.exists():
            md += ["```", meta.read_text().strip(), "```", ""]
        md += ["| cause | tests |", "|---|---|"]
        md += [f"| {k} | {len(v)} |" for k, v in c["groups"]]
        md += ["", "| file | runc pass | shimledger pass |", "|---|---|---|"]
        md += [f"| {f} | {n} | {ok} |" for f, (n, ok) in c["per_file"].items()]
        md += ["", f"### Failures by cause ({name})", ""]
        md += group_md(c["groups"])
        if c["shim_only"]:
            md += ["Passing here but not with the real runc:", ""]
            md += [f"- `{r['file']}` {r['test']} (runc: {r['runc']})" for r in c["shim_only"]]
            md.append("")
        print(f"{name}: {len(c['both'])} of {len(c['runc_pass'])} runc-passing tests pass")
        for k, v in c["groups"]:
            print(f"  {len(v):3d}  {one_line(k, 150)}")
    md += ["", "---", "", "## Not passing with the real runc on this machine (not counted)", ""]
    for file, (_, tests) in sorted(runc.items()):
        for t in tests.values():
            if t["status"] != "pass":
                why = t["reason"]
                if t["status"] == "fail":
                    d = failure_detail(t)
                    why = d["assertion"] + (
                        f" — {one_line(d['last']['output'], 160)}"
                        if d["last"] and d["last"]["output"]
                        else ""
                    )
                md.append(f"- `{file}` {t['name']}: {t['status']} ({why})")
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (results / "summary.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
