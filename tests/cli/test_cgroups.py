"""No cgroup left behind (issue 13): the parents shimledger puts tasks under go with the
last task that used them, in every hierarchy, and never while another task is in them.
(Every test's teardown also counts any directory of its parent as a leftover.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.bootstrap import Settings, cgroup_parent
from shim.lifecycle.cgroup_dirs import hierarchies
from tests.conftest import cli_runner

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return cli_runner(settings)


def ours(settings: Settings) -> list[Path]:
    """Every directory under the state dir's cgroup parent, in every hierarchy."""
    found = []
    for mount in hierarchies():
        top = mount / cgroup_parent(settings).strip("/")
        if top.is_dir():
            found += [top, *(p for p in top.rglob("*") if p.is_dir())]
    return sorted(found)


def test_a_burst_leaves_no_cgroup_and_a_running_task_keeps_its_own(
    cli: Cli, bundle, settings: Settings
) -> None:
    quick, sleeper = bundle("true"), bundle("sleep", "300")
    for n in range(3):
        assert cli("run", "--rm", "--bundle", str(quick), f"q{n}").returncode == 0
    assert ours(settings) == []

    for name in ("kept", "gone"):
        assert cli("run", "-d", "--bundle", str(sleeper), name).returncode == 0
    assert len(hierarchies()) > 0
    assert {p.name for p in ours(settings)} >= {"kept", "gone", settings.namespace}

    assert cli("delete", "-f", "gone").returncode == 0
    left = {p.name for p in ours(settings)}
    assert "gone" not in left and {"kept", settings.namespace} <= left  # in use: kept
    assert json.loads(cli("state", "kept").stdout)["status"] == "running"

    assert cli("delete", "-f", "kept").returncode == 0
    assert ours(settings) == []
