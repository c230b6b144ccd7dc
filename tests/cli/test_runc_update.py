"""`update`, `pause` and `resume` as a runc user types them (issue 13): runc's flags and
value forms reach the kernel's cgroup files, and refusals are one line that records nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from cli.resources import ResourceError, size
from shim.lifecycle.cgroup_dirs import hierarchies
from tests.conftest import cli_env, cli_runner

Cli = Callable[..., subprocess.CompletedProcess[str]]
MiB = 1024**2
SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return cli_runner(settings)


def cgroup_file(pid: int, controller: str, name: str) -> str:
    """A cgroup file of the process's cgroup in ``controller``'s hierarchy (v1), or in the
    unified one (v2, where ``controller`` is ignored)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or controllers == "" and len(hierarchies()) == 1:
            for mount in hierarchies():
                if mount.name == controller or controllers == "" and len(hierarchies()) == 1:
                    return (mount / path.lstrip("/") / name).read_text().strip()
    raise AssertionError(f"no {controller} cgroup for pid {pid}")


def types(cli: Cli, task_id: str) -> list[str]:
    return [e["type"] for e in json.loads(cli("history", "--json", task_id).stdout)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512m", 512 * MiB), ("1.5g", 3 * 512 * MiB), ("100MiB", 100 * MiB), ("4096", 4096),
     ("64 MB", 64 * MiB), ("2k", 2048), ("-1", -1)],
)  # fmt: skip
def test_sizes_are_read_as_runcs_update_reads_them(text: str, expected: int) -> None:
    assert size("memory", text) == expected


@pytest.mark.parametrize("text", ["", "12q", "-5", "1e3", "m", "0x10"])
def test_a_size_runc_refuses_is_refused(text: str) -> None:
    with pytest.raises(ResourceError, match="invalid value for memory"):
        size("memory", text)


def test_runcs_update_flags_reach_the_cgroup_and_are_recorded(
    cli: Cli, bundle, settings: Settings
) -> None:
    assert cli("run", "-d", "-b", str(bundle("sleep", "300")), "limited").returncode == 0
    pid = json.loads(cli("state", "limited").stdout)["pid"]
    done = cli("update", "--memory", "64m", "--memory-reservation", "32m", "--pids-limit", "40",
               "--cpu-share", "512", "--cpu-period", "100000", "--cpu-quota", "50000",
               "--cpuset-cpus", "0", "limited")  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(cli("stats", "--json", "limited").stdout)
    assert (stats["memory_limit_bytes"], stats["pids_limit"]) == (64 * MiB, 40)
    assert cgroup_file(pid, "cpuset", "cpuset.cpus") == "0"
    if len(hierarchies()) > 1:  # v1: the values as runc writes them
        assert cgroup_file(pid, "cpu", "cpu.shares") == "512"
        assert cgroup_file(pid, "cpu", "cpu.cfs_quota_us") == "50000"
        assert cgroup_file(pid, "memory", "memory.soft_limit_in_bytes") == str(32 * MiB)
    else:  # v2: runc converts shares to a weight, and quota/period to cpu.max
        assert cgroup_file(pid, "", "cpu.max") == "50000 100000"
        assert cgroup_file(pid, "", "memory.low") == str(32 * MiB)
    updated = json.loads(cli("history", "--json", "limited").stdout)[-1]
    assert updated["type"] == "Updated" and updated["resources"] == {
        "memory": {"limit": 64 * MiB, "reservation": 32 * MiB}, "pids": {"limit": 40},
        "cpu": {"shares": 512, "period": 100000, "quota": 50000, "cpus": "0"}}  # fmt: skip

    # -r - reads LinuxResources from stdin; a flag given beside it wins over the file's.
    piped = subprocess.run(
        [SHIMLEDGER, "update", "-r", "-", "--pids-limit", "30", "limited"],
        input=json.dumps({"pids": {"limit": 99}, "memory": {"limit": 128 * MiB}}),
        env=cli_env(settings), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    stats = json.loads(cli("stats", "--json", "limited").stdout)
    assert (stats["memory_limit_bytes"], stats["pids_limit"]) == (128 * MiB, 30)
    assert cli("delete", "-f", "limited").returncode == 0


REFUSED = [(["--memory", "12q"], "invalid value for memory: invalid size"),
           (["--cpu-share", "-3"], "invalid value for cpu-share: -3 is negative"),
           (["--pids-limit", "many"], "invalid value for pids-limit"),
           (["--l3-cache-schema", "L3:0=f"], "Intel RDT"),
           ([], "needs -r FILE or at least one limit"),
           (["-r", "/no/such/file"], "cannot read resources from /no/such/file")]  # fmt: skip


@pytest.mark.alone("refusals only: served, the same code refuses them in serve")
def test_a_bad_update_is_one_line_and_records_nothing(cli: Cli, bundle) -> None:
    assert cli("run", "-d", "-b", str(bundle("sleep", "300")), "steady").returncode == 0
    for args, said in REFUSED:
        refused = cli("update", *args, "steady")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert said in refused.stderr, args
    assert types(cli, "steady") == ["Created", "Started"]
    assert cli("delete", "-f", "steady").returncode == 0


@pytest.mark.alone("refusals only: served, the same code refuses them in serve")
def test_pause_resume_and_update_refuse_a_task_not_in_their_state(cli: Cli, bundle) -> None:
    assert cli("run", "-d", "-b", str(bundle("sleep", "300")), "awake").returncode == 0
    not_paused = cli("resume", "awake")  # runc: "container not paused", exit 1
    assert not_paused.returncode == 1 and "only a paused task can be resumed" in not_paused.stderr
    assert cli("pause", "awake").returncode == 0
    again = cli("pause", "awake")  # runc: "container not running"
    assert again.returncode == 1 and "is paused: only a running task" in again.stderr
    assert cli("update", "--pids-limit", "20", "awake").returncode == 0  # paused: as runc's
    assert cli("resume", "awake").returncode == 0
    assert cli("kill", "awake", "KILL").returncode == 0
    assert cli("wait", "awake").returncode == 137
    for command in (["pause"], ["resume"], ["update", "--pids-limit", "9"]):
        refused = cli(*command, "awake")
        assert refused.returncode == 1 and "awake is stopped" in refused.stderr, command
        assert refused.stderr.count("\n") == 1
    assert types(cli, "awake") == ["Created", "Started", "Paused", "Updated", "Resumed",
                                   "Killed", "Exited"]  # fmt: skip
    assert cli("delete", "awake").returncode == 0
