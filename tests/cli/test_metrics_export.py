"""serve's /metrics without a serve: the address check, the exposition of a fold, and
that prometheus_client stays out of every other command (no runtime, no containers)."""

from __future__ import annotations

import ast
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cli.metrics_address import MetricsAddress, parse_metrics_address
from cli.metrics_export import MetricsFeed, registry_for, serve_metrics
from domain.errors import InvalidArgumentError
from domain.task import Task
from domain.values import Cause, Whose

ROOT = Path(__file__).resolve().parents[2]
CAUSE = Cause(kind="cli", uid=0)


@pytest.mark.parametrize(
    ("text", "public", "expected"),
    [
        ("127.0.0.1:9100", False, MetricsAddress("127.0.0.1", 9100)),
        ("[::1]:0", False, MetricsAddress("::1", 0)),
        ("localhost:9100", False, MetricsAddress("localhost", 9100)),
        ("0.0.0.0:9100", True, MetricsAddress("0.0.0.0", 9100)),
        ("[::]:9100", True, MetricsAddress("::", 9100)),
    ],
)
def test_takes_a_loopback_address_or_any_when_public(
    text: str, public: bool, expected: MetricsAddress
) -> None:
    assert parse_metrics_address(text, public=public) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("9100", "is not HOST:PORT"),
        (":9100", "is not HOST:PORT"),
        ("127.0.0.1:http", "is not a port"),
        ("127.0.0.1:65536", "is not a port"),
        ("::1:9100", "in brackets"),
        ("0.0.0.0:9100", "not a loopback address"),
        ("10.1.2.3:9100", "--metrics-public"),
        ("no-such-host.invalid:9100", "cannot resolve"),
    ],
)
def test_refuses_a_bad_or_public_address_naming_the_option(text: str, says: str) -> None:
    with pytest.raises(InvalidArgumentError, match=says) as raised:
        parse_metrics_address(text, public=False)
    assert str(raised.value).startswith("--metrics-address: ")
    assert "\n" not in str(raised.value)


def test_the_url_puts_an_ipv6_host_in_brackets() -> None:
    assert MetricsAddress("::1", 0).url(9100) == "http://[::1]:9100/metrics"
    assert MetricsAddress("127.0.0.1", 9100).url() == "http://127.0.0.1:9100/metrics"


class Source:
    """A store's notification log, in memory: what the feed reads as serve's store."""

    def __init__(self, tasks: list[Task]) -> None:
        self.events = [(n, e) for n, e in enumerate(
            (e for t in tasks for e in t.collect_events()), start=1)]  # fmt: skip

    def location(self) -> str:
        return "memory"

    async def read(self, after: int, limit: int) -> list[tuple[int, object]]:
        return [(n, e) for n, e in self.events if n > after][:limit]

    async def head(self) -> int:
        return len(self.events) + 2  # two ledger heads past the tasks': views are behind


class Behind:
    async def position(self) -> int:
        return 3


def killed_task() -> Task:
    task = Task(namespace="ns", task_id="t", incarnation=2, bundle="/b", pid=9, runtime="r",
                node="a", state_dir="/s", cause=CAUSE)  # fmt: skip
    task.start(9, CAUSE)
    task.record_exit(137, datetime.now(UTC), CAUSE)
    return task


async def test_the_exposition_names_every_metric_with_its_labels() -> None:
    feed = MetricsFeed(Whose())
    assert generate_latest(registry_for(feed)).decode().count("shimledger_") == 0  # no fold yet
    await feed.refresh(Source([killed_task()]), {"event_index": Behind()})  # type: ignore[dict-item]
    text = generate_latest(registry_for(feed)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text)
               for s in family.samples}  # fmt: skip
    assert samples[("shimledger_task_events_total", (("namespace", "ns"), ("type", "Exited")))] == 1
    exit_labels = (("exit_status", "137"), ("namespace", "ns"), ("signal", "SIGKILL"))
    assert samples[("shimledger_task_exits_total", exit_labels)] == 1
    assert samples[("shimledger_task_restarts_total", (("namespace", "ns"),))] == 1
    assert samples[("shimledger_task_ooms_total", (("namespace", "ns"),))] == 0
    assert samples[("shimledger_shims_lost_total", (("namespace", "ns"),))] == 0
    assert samples[("shimledger_live_tasks", (("namespace", "ns"), ("status", "stopped")))] == 1
    assert samples[("shimledger_task_lifetime_seconds_count", (("namespace", "ns"),))] == 1
    inf = (("le", "+Inf"), ("namespace", "ns"))
    assert samples[("shimledger_task_lifetime_seconds_bucket", inf)] == 1
    assert samples[("shimledger_view_lag_events", (("view", "event_index"),))] == 2
    assert samples[("shimledger_store_head_position", ())] == 5
    assert ("process_cpu_seconds_total", ()) in samples


async def test_serves_on_a_free_port_and_releases_it_on_close() -> None:
    feed = MetricsFeed(Whose())
    await feed.refresh(Source([killed_task()]), {})
    server = serve_metrics(MetricsAddress("127.0.0.1", 0), feed)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            body = response.read().decode()
    finally:
        server.close()
    assert 'shimledger_task_exits_total{exit_status="137"' in body
    assert not server.thread.is_alive()


def test_no_other_command_loads_prometheus_client() -> None:
    """Only serve, given --metrics-address, imports it (cli/serve_cmd.py)."""
    code = ("import sys, cli.main, cli.serve_cmd, cli.metrics_address; "
            "print([m for m in sys.modules if m.startswith('prometheus_client')])")  # fmt: skip
    listing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=ROOT)  # fmt: skip
    assert listing.stdout.strip() == "[]"
    importers = [path.relative_to(ROOT).as_posix()
                 for folder in ("cli", "shim", "domain", "adapters", "projections")
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 if "prometheus_client" in imported(path)]  # fmt: skip
    assert importers == ["cli/metrics_export.py"]


def imported(path: Path) -> set[str]:
    """The top-level packages ``path`` imports anywhere (in functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names
