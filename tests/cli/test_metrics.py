"""`serve --metrics-address` as Prometheus scrapes it: a real serve, real containers run
through the CLI, /metrics over HTTP, and the numbers set against `audit --json`."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.bootstrap import Settings
from tests.conftest import cli_runner, processes_in, serve_env
from tests.waiting import wait_until

pytestmark = pytest.mark.alone("each test runs the serve it is about")

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Exporter:
    """One `serve --metrics-address 127.0.0.1:0`; its URL is the line it says before ready."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [SHIMLEDGER, "serve", "--checkpoint-interval", "0",
                 "--metrics-address", "127.0.0.1:0"], env=serve_env(settings),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(lambda: b"commands on" in log.read_bytes(), f"serve to be ready ({log})",
                   process=self.process)  # fmt: skip
        found = re.search(r"metrics on (http://\S+)", log.read_text())
        assert found, log.read_text()
        self.url = found.group(1)

    def scrape(self) -> Samples:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples}  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(timeout=30) == 0, self.log.read_text()
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture
def exporters(settings: Settings, tmp_path: Path) -> Iterator[Callable[[], Exporter]]:
    started: list[Exporter] = []

    def start() -> Exporter:
        exporter = Exporter(settings, tmp_path / f"serve-{len(started)}.log")
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(value for (sample, have), value in samples.items()
               if sample == name and labels.items() <= dict(have).items())  # fmt: skip


def by_label(samples: Samples, name: str, label: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (sample, have), value in samples.items():
        if sample == name and value:
            counts[dict(have)[label]] += int(value)
    return counts


def task_series(samples: Samples) -> Samples:
    """The history's numbers: what a fresh serve over the same store must tell again."""
    lag = "shimledger_view_lag_events"
    return {key: value for key, value in samples.items()
            if key[0].startswith("shimledger_") and key[0] != lag}  # fmt: skip


def test_the_scrape_tells_what_audit_tells_and_a_fresh_serve_the_whole_history(
    settings: Settings, bundle, exporters
) -> None:
    exporter = exporters()
    cli = cli_runner(settings)
    ns = settings.namespace
    # A failure, then the same ID again (a restart), then one SIGKILLed and left stopped.
    assert cli("run", "--bundle", str(bundle("sh", "-c", "exit 3")), "again").returncode == 3
    assert cli("run", "--bundle", str(bundle("true")), "again").returncode == 0
    assert cli("run", "-d", "--bundle", str(bundle("sleep", "300")), "victim").returncode == 0
    wait_until(lambda: total(exporter.scrape(), "shimledger_live_tasks", status="running") == 1,
               "the running task in the gauge")  # fmt: skip
    assert cli("kill", "victim", "KILL").returncode == 0
    assert cli("wait", "victim").returncode == 137

    recorded = [e for task_id in ("again", "victim")
                for e in json.loads(cli("history", "--json", task_id).stdout)]  # fmt: skip

    def caught_up() -> bool:
        samples = exporter.scrape()
        return (total(samples, "shimledger_task_events_total") == len(recorded)
                and total(samples, "shimledger_view_lag_events") == 0)  # fmt: skip

    wait_until(caught_up, "the scrape to reach every recorded event")
    samples = exporter.scrape()
    report = json.loads(cli("audit", "--json").stdout)

    # Against what was run, and what the history recorded.
    assert by_label(samples, "shimledger_task_events_total", "type") == Counter(
        e["type"] for e in recorded
    )
    killed_labels = (("exit_status", "137"), ("namespace", ns), ("signal", "SIGKILL"))
    assert samples[("shimledger_task_exits_total", killed_labels)] == 1
    assert total(samples, "shimledger_task_restarts_total", namespace=ns) == 1
    assert total(samples, "shimledger_live_tasks", namespace=ns, status="stopped") == 1
    assert total(samples, "shimledger_store_head_position") >= len(recorded)
    assert total(samples, "process_cpu_seconds_total") > 0

    # Against audit --json of the same store.
    lives = report["lifetimes"]
    assert (
        by_label(samples, "shimledger_task_exits_total", "exit_status")
        == Counter(report["exit_statuses"])
        == Counter({"3": 1, "0": 1, "137": 1})
    )
    anomalies = Counter(a["kind"] for a in report["anomalies"])
    killed = {k: v for k, v in by_label(samples, "shimledger_task_exits_total", "signal").items()
              if k}  # fmt: skip
    assert sum(killed.values()) == anomalies["killed-by-signal"] == 1
    assert total(samples, "shimledger_task_ooms_total") == anomalies["oom"] == 0
    assert total(samples, "shimledger_shims_lost_total") == anomalies["shim-lost"] == 0
    assert total(samples, "shimledger_task_restarts_total") == sum(
        1 for life in lives if life["incarnation"] > 1
    )
    assert total(samples, "shimledger_live_tasks") == report["summary"]["live"] == 1
    assert total(samples, "shimledger_task_events_total", type="Created") == len(lives) == 3
    lived = [(datetime.fromisoformat(life["exited"]) - datetime.fromisoformat(life["created"]))
             .total_seconds() for life in lives if life["exited"]]  # fmt: skip
    assert total(samples, "shimledger_task_lifetime_seconds_count") == len(lived) == 3
    assert total(samples, "shimledger_task_lifetime_seconds_sum") == pytest.approx(sum(lived))
    assert total(samples, "shimledger_task_lifetime_seconds_bucket", le="+Inf") == 3

    # A fresh serve over the same store: the totals of the whole history, from its first
    # scrape (its first fold is done before it says it is ready).
    exporter.stop()
    fresh = exporters()
    assert task_series(fresh.scrape()) == task_series(samples)


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Settings]:
    """A root and state dir of their own, for a serve that must not start: no runtime."""
    state = Path(tempfile.mkdtemp(prefix="sl-", dir="/tmp"))
    yield Settings(root=tmp_path / "root", state=state, namespace="test")
    assert processes_in(state) == []
    for path in sorted(state.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    state.rmdir()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--metrics-address", "10.1.2.3:9100"], "give --metrics-public"),
        (["--metrics-address", "localhost"], "is not HOST:PORT"),
        (["--metrics-public"], "--metrics-public needs --metrics-address"),
        (["--metrics-address", "127.0.0.1:{taken}"], "cannot listen there: Address already in use"),
    ],
)
def test_a_bad_address_is_one_line_and_nothing_starts(bare: Settings, args, says) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        result = subprocess.run(
            [SHIMLEDGER, "serve", *(a.replace("{taken}", port) for a in args)],
            env=serve_env(bare), capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert result.stderr.startswith("shimledger: --metrics-")
    assert not (bare.state / "events.sock").exists()
    assert not (bare.state / "control.sock").exists()
    assert not (bare.root / "events.db").exists()
