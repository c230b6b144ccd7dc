"""`audit --html`: the page's structure and escaping, and the page as Chromium draws it.

The builder is tested on reports made here; the whole path (real containers, the real CLI,
headless Chromium) is tested end to end, checking both Chromium's DOM and its screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.bootstrap import Settings
from cli.main import app
from cli.render.page import audit_page
from cli.render.page_script import SCRIPT
from cli.render.palette import ENDINGS
from cli.render.words import duration
from projections.audit import MARK_KINDS, Anomaly, AuditReport, Lifetime, Mark
from tests.cli.audit_workload import NASTY, build_workload
from tests.cli.test_history_cli import build_history
from tests.conftest import cli_env

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
COLOUR = {e.key: e.colour for e in ENDINGS}
THOUSANDS = 3000  # incarnations the browser test draws from, made through the store


class Elements(HTMLParser):
    """Every start tag with its attributes, and the page's text (entities decoded)."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def bars(self) -> dict[str, str]:
        """data-task -> the bar's class attribute."""
        return {a["data-task"]: a["class"] for tag, a in self.tags if "data-task" in a}

    def all(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.tags
                if t == tag and (cls is None or cls in a.get("class", "").split())]  # fmt: skip


def life(task_id: str, seconds: float | None, **fields: object) -> Lifetime:
    """A lifetime created at T0 + ``seconds`` offset 0, deleted ``seconds`` later (or live)."""
    deleted = T0 + timedelta(seconds=seconds) if seconds is not None else None
    values: dict[str, object] = {"id": task_id, "namespace": "ns", "incarnation": 1,
                                 "created": T0, "started": T0, "deleted": deleted}  # fmt: skip
    values.update(fields)
    return Lifetime.model_validate(values)


def report(*lives: Lifetime, anomalies: list[Anomaly] | None = None) -> AuditReport:
    statuses = Counter(str(x.exit_status) for x in lives if x.exit_status is not None)
    return AuditReport(since=None, until=T0 + timedelta(seconds=100), lifetimes=list(lives),
                       exit_statuses=dict(statuses), anomalies=anomalies or [],
                       summary={"incarnations": len(lives)})  # fmt: skip


def exited(seconds: float, status: int, signal: int | None = None) -> dict[str, object]:
    return {"exited": T0 + timedelta(seconds=seconds), "exit_status": status, "signal": signal}


EVERY_ENDING = [
    life("good", 10, **exited(5, 0)),
    life("bad", 20, **exited(15, 3)),
    life("shot", 30, **exited(25, 137, 9)),
    life("oomed", 40, **exited(35, 137, 9), ooms=1),
    life("orphan", 50, **exited(45, 255), shim_lost=True),
    life("never", 0, started=None),
    life("busy", None),
    life("waiting", None, started=None),
]


def data_of(html: str) -> dict[str, Any]:
    """The report as the page carries it for its script (the JSON block)."""
    found = re.search(r'<script type="application/json" id="audit-data">(.*?)</script>', html,
                      re.S)  # fmt: skip
    assert found is not None
    return json.loads(found.group(1))


def endings(data: dict[str, Any]) -> dict[str, str]:
    """``ns/id#n`` -> ending key, in the order the timeline draws them."""
    return {f"{data['namespaces'][x[0]]}/{x[1]}#{x[2]}": x[7] for x in data["lives"]}


def test_every_incarnation_is_carried_with_its_ending_and_colour() -> None:
    html = audit_page(report(*EVERY_ENDING))
    assert endings(data_of(html)) == {
        "ns/good#1": "ok", "ns/bad#1": "failed", "ns/shot#1": "signal", "ns/oomed#1": "oom",
        "ns/orphan#1": "lost", "ns/never#1": "deleted", "ns/busy#1": "running",
        "ns/waiting#1": "created",
    }  # fmt: skip
    for ending in ENDINGS:  # each ending's bars are filled with its colour, and only those
        assert f"svg .ended-{ending.key} .run, svg .hist.ended-{ending.key} {{ fill: " \
               f"{ending.colour}; }}" in html  # fmt: skip
    page = Elements(html)
    legend = [a["class"] for a in page.all("li")]
    assert legend == [f"ended-{e.key}" for e in ENDINGS]
    assert [a["value"] for a in page.all("input") if a.get("name") == "ending"] == [
        e.key for e in ENDINGS]  # the legend is the ending filter  # fmt: skip
    assert "killed by signal 1" in "".join(page.text)  # the legend counts its bars


def test_restarts_of_an_id_are_adjacent_and_times_are_offsets() -> None:
    later = {"created": T0 + timedelta(seconds=5), "started": T0 + timedelta(seconds=6)}
    paused = Mark(kind="pause", at=T0 + timedelta(seconds=7), until=T0 + timedelta(seconds=9),
                  detail="paused by x")  # fmt: skip
    lives = [life("a", 4, **exited(3, 0)), life("b", None, incarnation=1,
             created=T0 + timedelta(seconds=1)), life("a", None, incarnation=2, **later,
             marks=[paused])]  # fmt: skip
    data = data_of(audit_page(report(*lives)))
    assert list(endings(data)) == ["ns/a#1", "ns/a#2", "ns/b#1"]  # by ID, then creation
    a2 = data["lives"][1]
    assert a2[3:7] == [5000, 6000, None, None]  # created, started, exited, deleted (ms)
    assert a2[12] == [[MARK_KINDS.index("pause"), 7000, 9000, "paused by x"]]
    assert data["t0"] == T0.timestamp() * 1000 and data["until"] == 100_000


def test_every_text_is_escaped_and_only_the_hashed_script_runs() -> None:
    nasty = '<script>alert("x")</script>&'
    killer = {"signal": 9, "kind": "cli", "command": "<img src=x onerror=alert(1)>"}
    lives = [life(nasty, None, namespace='n"s', killed_by=[killer])]
    odd = Anomaly(kind="<b>kind</b>", id=nasty, namespace="n", incarnation=1, at=T0,
                  detail="exit </td></tr></table>")  # fmt: skip
    html = audit_page(report(*lives, anomalies=[odd]), title="<i>title</i>")
    page = Elements(html)
    assert {t for t, _ in page.tags} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "div", "span", "b",
        "ul", "li", "svg", "line", "text", "g", "rect", "table", "tr", "th", "td", "thead",
        "tbody", "form", "label", "select", "option", "input", "button", "noscript",
        "polygon", "circle", "path", "script",
    }  # fmt: skip
    data = data_of(html)
    assert data["namespaces"] == ['n"s'] and data["lives"][0][1] == nasty
    assert "<img src=x onerror=alert(1)>" in data["lives"][0][10]  # the tooltip, as text
    assert data["anomalies"][0][1:6] == ["<b>kind</b>", "n", nasty, 1, "exit </td></tr></table>"]
    assert '<option value="n&quot;s">n&quot;s (1)</option>' in html
    assert "<i>title</i>" in page.text
    block = html.split('id="audit-data">')[1].split("</script>")[0]
    assert "<" not in block and ">" not in block and "&" not in block
    assert "<img" not in html and html.count("<script") == 2
    # The script the CSP allows is the page's own, byte for byte; it never parses markup.
    policy = next(a["content"] for a in page.all("meta") if "http-equiv" in a)
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy and f"<script>{SCRIPT}</script>" in html
    assert "innerHTML" not in SCRIPT and "insertAdjacentHTML" not in SCRIPT


def test_exit_statuses_are_counted_in_numeric_order() -> None:
    page = Elements(audit_page(report(*EVERY_ENDING)))
    assert len(page.all("table", "statuses")) == 1
    text = "|".join(t.strip() for t in page.text if t.strip())
    assert "|0|success|1|3|failure|1|137|signal 9 (SIGKILL)|2|255|shim lost" in text


def test_the_page_fetches_nothing() -> None:
    html = audit_page(report(*EVERY_ENDING))
    assert "default-src 'none'" in html  # the browser itself would refuse any fetch
    for reference in ("http:", "https:", "src=", "href=", "url(", "@import", "<link",
                      "fetch(", "XMLHttpRequest", "import("):  # fmt: skip
        assert reference not in html


def test_an_empty_report_says_so() -> None:
    html = audit_page(report())
    assert data_of(html)["lives"] == [] and "No task incarnations in this period." in html


def test_durations_read_like_people_write_them() -> None:
    cases = [(0.0004, "0.4ms"), (0.035, "35ms"), (4.21, "4.21s"), (185, "3m05s"),
             (7380, "2h03m"), (93600, "1d02h")]  # fmt: skip
    assert [duration(seconds) for seconds, _ in cases] == [text for _, text in cases]


def test_audit_html_writes_the_page_from_the_cli(tmp_path: Path) -> None:
    asyncio.run(build_history(tmp_path))
    out = tmp_path / "page.html"
    base = ["--root", str(tmp_path), "--state", str(tmp_path / "s"), "audit"]
    result = CliRunner().invoke(app, [*base, "--html", str(out)])
    assert (result.exit_code, result.output) == (0, "")
    assert endings(data_of(out.read_text())) == {
        "default/ok#1": "ok", "default/ok#2": "signal", "default/never#1": "deleted",
        "default/stuck#1": "running", "other/lost#1": "lost",
    }  # fmt: skip
    failed = CliRunner().invoke(app, [*base, "--html", str(tmp_path / "nowhere" / "p.html")])
    assert failed.exit_code == 1 and failed.output.startswith("shimledger: cannot write ")
    assert failed.output.count("\n") == 1


# --- the page in a real browser -------------------------------------------------------------


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; a missing browser fails under CI=true, as a missing runc does."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (make test-packages installs it)")
    pytest.skip("needs chromium: apt-get install chromium")


def browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--force-device-scale-factor=1", "--force-color-profile=srgb",
               f"--user-data-dir={profile}", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done


def read_png(data: bytes) -> list[list[tuple[int, int, int]]]:
    """Rows of RGB pixels from an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour_type in (2, 6), interlace) == (8, True, 0)
    channels = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows: list[list[tuple[int, int, int]]] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) *
                                                          (stride + 1)])  # fmt: skip
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + guess) & 0xFF
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, channels)])  # type: ignore[misc]
        previous = line
    return rows


def bands(rows: list[list[tuple[int, int, int]]], colour: tuple[int, int, int]) -> list[int]:
    """The top y of each run of consecutive pixel rows that hold ``colour``."""
    ys = [y for y, row in enumerate(rows) if colour in row]
    return [y for i, y in enumerate(ys) if i == 0 or ys[i - 1] != y - 1]


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_chromium_draws_a_bar_per_incarnation(
    settings: Settings, bundle, chromium: str, tmp_path: Path
) -> None:
    env = cli_env(settings)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SHIMLEDGER, *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip

    sleeper = str(bundle("sleep", "300"))
    assert cli("run", "-d", "--bundle", sleeper, "shot").returncode == 0
    assert cli("kill", "shot", "KILL").returncode == 0
    assert cli("wait", "shot").returncode == 137
    assert cli("delete", "shot").returncode == 0
    assert cli("run", "--rm", "--bundle", str(bundle("sh", "-c", "exit 3")), "bad").returncode == 3
    assert cli("run", "--rm", "--bundle", str(bundle("true")), "good").returncode == 0
    assert cli("run", "-d", "--bundle", sleeper, "busy").returncode == 0
    # Created in this order, so top to bottom the bars are: signal, failed, ok, running.
    expected = {
        f"{settings.namespace}/{name}#1": ending
        for name, ending in [
            ("shot", "signal"),
            ("bad", "failed"),
            ("good", "ok"),
            ("busy", "running"),
        ]
    }

    page = tmp_path / "audit.html"
    written = cli("audit", "--html", str(page))
    assert (written.returncode, written.stdout) == (0, ""), written.stderr

    # One launch: the DOM the script drew, and a screenshot of it.
    shot = tmp_path / "audit.png"
    dom = browse(chromium, tmp_path / "profile", f"--screenshot={shot}",
                 "--window-size=1400,900", "--dump-dom", page.as_uri()).stdout.decode()  # fmt: skip
    drawn = Elements(dom)
    assert drawn.bars() == {task: f"bar ended-{ending}" for task, ending in expected.items()}
    assert [a["data-ended"] for a in drawn.all("g", "bar")] == list(expected.values())
    [kill] = drawn.all("g", "mark-kill")  # shot's, where `kill` was run
    assert kill["data-mark"] == "kill" and "sent by" in dom

    rows = read_png(shot.read_bytes())
    assert (len(rows), len(rows[0])) == (900, 1400)
    pixels = Counter(pixel for row in rows for pixel in row)
    assert sum(n for pixel, n in pixels.items() if pixel != (255, 255, 255)) > 20_000
    assert len(pixels) > 50  # text, bars, tints: not a blank or one-colour page
    # Each colour shows once in the legend (above the timeline), then once per bar (the
    # overview above the timeline is tinted, so its pixels are not the pure colour).
    tops = {ending: bands(rows, rgb(COLOUR[ending])) for ending in expected.values()}
    assert {ending: len(found) for ending, found in tops.items()} == {
        ending: 2 for ending in expected.values()}, tops  # fmt: skip
    legend_row = {found[0] for found in tops.values()}
    assert len(legend_row) == 1, tops  # the swatches share one line
    order = sorted(expected.values(), key=lambda ending: tops[ending][1])
    assert order == list(expected.values())


def test_chromium_draws_thousands_of_incarnations_marked_and_filtered(
    chromium: str, tmp_path: Path
) -> None:
    work = build_workload(tmp_path, THOUSANDS)
    page = tmp_path / "audit.html"
    written = subprocess.run([SHIMLEDGER, "--root", str(tmp_path), "--state",
                              str(tmp_path / "s"), "audit", "--html", str(page)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (written.returncode, written.stdout) == (0, ""), written.stderr

    # The filters as a link carries them: namespace web, IDs containing task-000, four
    # endings (no failed, no running).
    wanted = {"ok", "signal", "oom", "lost"}
    expected = {key: ending for key, ending in work.endings.items()
                if key.startswith("web/task-000") and ending in wanted}  # fmt: skip
    marks = {kind for key in expected for kind in work.marks[key]}
    assert marks == {"kill", "pause", "exec", "oom", "lost"}  # the workload has every one
    url = page.as_uri() + "#ns=web&id=task-000&ending=" + ",".join(sorted(wanted))
    dom = browse(chromium, tmp_path / "profile", "--dump-dom", url).stdout.decode()
    drawn = Elements(dom)
    assert drawn.bars() == {key: f"bar ended-{ending}" for key, ending in expected.items()}
    [status] = [a for _, a in drawn.tags if a.get("id") == "status"]
    assert status["data-matching"] == str(len(expected)) and len(expected) < 100
    assert f"of {work.incarnations} incarnations match" in "".join(drawn.text)

    # Each bar carries its own marks, in the order they happened.
    carried: dict[str, list[str]] = {}
    current = ""
    for _, attrs in drawn.tags:
        if "data-task" in attrs:
            current = attrs["data-task"]
            carried[current] = []
        elif "data-mark" in attrs:
            carried[current].append(attrs["data-mark"])
    assert carried == {key: work.marks[key] for key in expected}
    # The killer's markup (web/task-00000#1's kill) is drawn as text, not made an element.
    assert NASTY.replace("<", "&lt;").replace(">", "&gt;") in dom
    assert not [t for t, _ in drawn.tags if t == "img"]
    # The overview counts every matching incarnation, and the anomaly list only theirs.
    counted = sum(int(a["data-count"]) for a in drawn.all("g", "bucket"))
    assert counted == len(expected)
    listed = {cells for cells in re.findall(r'<tr class="anomaly kind-[^"]+"><td>[^<]*</td>'
                                            r"<td>[^<]*</td><td>([^<]*)</td>", dom)}  # fmt: skip
    assert listed and listed <= set(expected)
