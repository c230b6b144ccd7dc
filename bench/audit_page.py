#!/usr/bin/env python3
"""`audit --html` in headless Chromium: page load time at 10,000 incarnations against 100.

Two stores are built through the event store (tests/cli/audit_workload.py, the workload
the Chromium test draws from: five namespaces, restarts, kills, pauses, execs, OOMs, lost
shims), each page is written once by the real CLI, then one Chromium (driven over its
DevTools pipe, so that browser start-up is not in the figure) loads the two pages in turn,
R times interleaved. Per load it reads the page's own navigation timing:

  load    navigation start to the end of the load event: the HTML and the data parsed,
          the script run (it draws the overview, the first 100 IDs and the anomaly list
          before the load event can fire)
  frame   navigation start to the first animation frame after load: style, layout and
          paint of what was drawn included

The figure is the median at 10,000 over the median at 100 (1.0 would be "does not grow";
the page draws at most 100 rows, so what grows is the data it parses and filters).
The machine is shared: the load average is printed at the start and the end.

    .venv/bin/python bench/audit_page.py [--large N] [--small N] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cli.audit_workload import build_workload  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import aligned  # noqa: E402

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
# Resolved once the page's load event has fired and one frame was drawn after it.
TIMING = """new Promise(done => requestAnimationFrame(() => setTimeout(() => {
  const nav = performance.getEntriesByType("navigation")[0];
  done({load: nav.loadEventEnd, frame: performance.now(),
        shown: document.getElementById("status").dataset.matching});
})))"""


class Browser:
    """One headless Chromium on --remote-debugging-pipe: JSON messages, NUL-terminated,
    written to its fd 3 and read from its fd 4 (stdlib alone, no websocket client)."""

    def __init__(self, profile: Path) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            sys.exit("needs chromium (make test-packages installs it)")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        os.set_inheritable(to_browser, True)
        os.set_inheritable(from_browser, True)
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu",
                   "--remote-debugging-pipe", "--force-device-scale-factor=1",
                   "--window-size=1400,1000", f"--user-data-dir={profile}", "about:blank"]
        # The browser wants the pipe as fds 3 and 4; the shell puts it there, as the
        # subprocess module would close any fd it did not pass by its own number.
        self._process = subprocess.Popen(
            ["sh", "-c", f'exec "$@" 3<&{to_browser} 4>&{from_browser}', "sh", *command],
            pass_fds=(to_browser, from_browser), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        self._next, self._buffer = 0, b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=True)

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)  # type: ignore[no-any-return]

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]

    def load(self, url: str) -> dict[str, Any]:
        """Navigate, wait for the load event, then read the page's timing."""
        self.call("Page.navigate", session=True, url=url)
        while self._message().get("method") != "Page.loadEventFired":
            pass
        result = self.call("Runtime.evaluate", session=True, expression=TIMING,
                           awaitPromise=True, returnByValue=True)  # fmt: skip
        return result["result"]["value"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self._process.kill()
        self._process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="shimledger-bench-audit-"))
    try:
        pages = {size: write_page(work / f"store-{size}", size)
                 for size in (args.small, args.large)}  # fmt: skip
        browser = Browser(work / "profile")
        samples: dict[int, list[dict[str, Any]]] = {size: [] for size in pages}
        try:
            for size, page in pages.items():  # warm: caches, the first layout, unmeasured
                assert int(browser.load(page.as_uri())["shown"]) == size
            for _ in range(args.runs):
                for size, page in pages.items():
                    samples[size].append(browser.load(page.as_uri()))
        finally:
            browser.close()
        report(samples, args.small, args.large, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def write_page(root: Path, size: int) -> Path:
    """A store of ``size`` incarnations and its page, written by the real CLI."""
    started = time.perf_counter()
    build_workload(root, size)
    built = time.perf_counter() - started
    page = root / "audit.html"
    started = time.perf_counter()
    subprocess.run([SHIMLEDGER, "--root", str(root), "--state", str(root / "s"), "audit",
                    "--html", str(page)], check=True)  # fmt: skip
    written = time.perf_counter() - started
    print(f"  {size:,} incarnations: built in {built:.1f} s, `audit --html` {written:.2f} s, "
          f"page {page.stat().st_size / 1e6:.2f} MB", flush=True)  # fmt: skip
    return page


def report(samples: dict[int, list[dict[str, Any]]], small: int, large: int, runs: int) -> None:
    lines = [["figure", f"{large:,} incarnations", f"{small:,} incarnations", "large/small"]]
    for name in ("load", "frame"):
        big = statistics.median(s[name] for s in samples[large])
        little = statistics.median(s[name] for s in samples[small])
        lines.append([name, f"{big:,.1f} ms", f"{little:,.1f} ms", f"{big / little:.2f}"])
    print(f"\nmedians of {runs} interleaved loads in one headless Chromium:")
    print(aligned(lines, right={1, 2, 3}))


if __name__ == "__main__":
    main()
