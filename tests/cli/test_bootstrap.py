"""The composition root's own decisions."""

from __future__ import annotations

from pathlib import Path

from cli.bootstrap import cgroup_parent
from cli.settings import DEFAULT_STATE, Settings


def test_each_state_dir_has_a_cgroup_parent_of_its_own() -> None:
    assert cgroup_parent(Settings(state=DEFAULT_STATE)) == "/shimledger"
    one = cgroup_parent(Settings(state=Path("/tmp/a")))
    other = cgroup_parent(Settings(state=Path("/tmp/b")))
    assert one.startswith("/shimledger-") and other.startswith("/shimledger-")
    assert one != other
    assert one == cgroup_parent(Settings(state=Path("/tmp/a")))  # stable across commands
