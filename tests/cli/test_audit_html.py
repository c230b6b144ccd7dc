"""`audit --html`: the page's structure and escaping, and the page as Chromium draws it.

The builder is tested on reports made here; the whole path (real containers, the real CLI,
headless Chromium) is tested end to end, checking both Chromium's DOM and its screenshot.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.bootstrap import Settings
from cli.main import app
from cli.render.page import MIN_BAR, audit_page
from cli.render.palette import ENDINGS
from cli.render.words import duration
from projections.audit import Anomaly, AuditReport, Lifetime
from tests.cli.test_history_cli import build_history
from tests.conftest import cli_env

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
COLOUR = {e.key: e.colour for e in ENDINGS}


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


def test_one_bar_per_incarnation_coloured_by_how_it_ended() -> None:
    page = Elements(audit_page(report(*EVERY_ENDING)))
    assert page.bars() == {
        "ns/good#1": "bar ended-ok", "ns/bad#1": "bar ended-failed",
        "ns/shot#1": "bar ended-signal", "ns/oomed#1": "bar ended-oom",
        "ns/orphan#1": "bar ended-lost", "ns/never#1": "bar ended-deleted",
        "ns/busy#1": "bar ended-running", "ns/waiting#1": "bar ended-created",
    }  # fmt: skip
    runs = page.all("rect", "run")
    fills = {task: a["fill"] for (task, cls), a in zip(page.bars().items(), runs, strict=True)
             if a["fill"] == COLOUR[cls.removeprefix("bar ended-")]}  # fmt: skip
    assert len(fills) == len(EVERY_ENDING) == len(set(fills.values())) == len(ENDINGS)
    legend = [a["class"] for a in page.all("li")]
    assert legend == [f"ended-{e.key}" for e in ENDINGS]
    assert "killed by signal 1" in "".join(page.text)  # the legend counts its bars


def test_bars_sit_on_one_time_axis() -> None:
    page = Elements(audit_page(report(*EVERY_ENDING)))
    lives = page.all("rect", "life")
    widths = {bar: float(a["width"]) for bar, a in zip(page.bars(), lives, strict=True)}
    assert widths["ns/bad#1"] == pytest.approx(2 * widths["ns/good#1"], abs=0.2)
    assert widths["ns/never#1"] >= MIN_BAR
    # Live ones reach the report's end: the longest bars on the page.
    assert widths["ns/busy#1"] == max(widths.values()) == widths["ns/waiting#1"]
    starts = {float(a["x"]) for a in lives}
    assert len(starts) == 1  # every one was created at T0
    rows = [float(a["y"]) for a in lives]
    assert rows == sorted(rows) and len(set(rows)) == len(rows)


def test_every_text_is_escaped() -> None:
    nasty = '<script>alert("x")</script>&'
    killer = {"signal": 9, "kind": "cli", "command": "<img src=x onerror=alert(1)>"}
    lives = [life(nasty, None, namespace='n"s', killed_by=[killer])]
    odd = Anomaly(kind="<b>kind</b>", id=nasty, namespace="n", incarnation=1, at=T0,
                  detail="exit </td></tr></table>")  # fmt: skip
    html = audit_page(report(*lives, anomalies=[odd]), title="<i>title</i>")
    page = Elements(html)
    assert {t for t, _ in page.tags} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "div", "span", "b",
        "ul", "li", "svg", "line", "text", "g", "rect", "table", "tr", "th", "td",
    }  # fmt: skip
    assert page.bars() == {f'n"s/{nasty}#1': "bar ended-running"}
    text = "".join(page.text)
    for shown in (nasty, "<img src=x onerror=alert(1)>", "<b>kind</b>", "</td></tr></table>",
                  "<i>title</i>"):  # fmt: skip
        assert shown in text
    assert "<script" not in html and "<img" not in html


def test_exit_statuses_are_counted_in_numeric_order() -> None:
    page = Elements(audit_page(report(*EVERY_ENDING)))
    assert len(page.all("table", "statuses")) == 1
    text = "|".join(t.strip() for t in page.text if t.strip())
    assert "|0|success|1|3|failure|1|137|signal 9 (SIGKILL)|2|255|shim lost" in text


def test_the_page_fetches_nothing() -> None:
    html = audit_page(report(*EVERY_ENDING))
    assert "default-src 'none'" in html  # the browser itself would refuse any fetch
    for reference in ("http:", "https:", "src=", "href=", "url(", "@import", "<script", "<link"):
        assert reference not in html


def test_an_empty_report_says_so() -> None:
    page = Elements(audit_page(report()))
    assert page.bars() == {} and "No task incarnations in this period." in page.text


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
    assert Elements(out.read_text()).bars() == {
        "default/ok#1": "bar ended-ok", "default/ok#2": "bar ended-signal",
        "other/lost#1": "bar ended-lost", "default/never#1": "bar ended-deleted",
        "default/stuck#1": "bar ended-running",
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

    dom = browse(chromium, tmp_path / "profile", "--dump-dom", page.as_uri()).stdout.decode()
    drawn = Elements(dom)
    assert drawn.bars() == {task: f"bar ended-{ending}" for task, ending in expected.items()}
    assert [a["data-ended"] for a in drawn.all("g", "bar")] == list(expected.values())

    shot = tmp_path / "audit.png"
    browse(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1100,560",
           page.as_uri())  # fmt: skip
    rows = read_png(shot.read_bytes())
    assert (len(rows), len(rows[0])) == (560, 1100)
    pixels = Counter(pixel for row in rows for pixel in row)
    assert sum(n for pixel, n in pixels.items() if pixel != (255, 255, 255)) > 20_000
    assert len(pixels) > 50  # text, bars, tints: not a blank or one-colour page
    # Each colour shows once in the legend (above the timeline), then once per bar.
    tops = {ending: bands(rows, rgb(COLOUR[ending])) for ending in expected.values()}
    assert {ending: len(found) for ending, found in tops.items()} == {
        ending: 2 for ending in expected.values()}  # fmt: skip
    legend_row = {found[0] for found in tops.values()}
    assert len(legend_row) == 1, tops  # the swatches share one line
    order = sorted(expected.values(), key=lambda ending: tops[ending][1])
    assert order == list(expected.values())
