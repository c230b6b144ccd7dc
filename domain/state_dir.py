"""The state dir's layout: the one place that knows where each ephemeral thing lives.

Working bundles, runc's root, the per-task locks, the foreground commands' FIFOs and the
sockets all live under one directory (``--state``, default /run/shimledger), like
containerd's state dir. Every component that touches one of them is handed this value by
the composition root instead of joining path segments of its own, so the layout can be
read (and changed) here alone. Pure path arithmetic: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Directories of the state dir that are not namespaces of working bundles: a namespace
# with one of these names would collide with them, so it is refused.
RUNC = "runc"
IO = "io"
LOCKS = "locks"
RESERVED = frozenset({RUNC, IO, LOCKS})
STATE_FILE = "state.json"  # runs' current state of a task, for other tools to read


@dataclass(frozen=True)
class StateDir:
    """``<state>/{<ns>/<id>[/state.json], runc, locks/<ns>/<id>.lock, io/<ns>/<id>-<pid>,
    *.sock, .binding.json}``."""

    path: Path

    def namespace_dir(self, namespace: str) -> Path:
        """Where the namespace's working bundles are."""
        return self.path / namespace

    def bundle(self, namespace: str, task_id: str) -> Path:
        """A task's working bundle; its base name is the task ID, as the shim requires."""
        return self.path / namespace / task_id

    def state_file(self, namespace: str, task_id: str) -> Path:
        """The runs-compatible ``state.json`` of a live task, in its working bundle."""
        return self.bundle(namespace, task_id) / STATE_FILE

    @property
    def runc_root(self) -> Path:
        """runc's --root: under our state dir, so a real containerd never sees our containers."""
        return self.path / RUNC

    @property
    def locks(self) -> Path:
        return self.path / LOCKS

    def lock_file(self, namespace: str, task_id: str) -> Path:
        return self.path / LOCKS / namespace / f"{task_id}.lock"

    @property
    def cgroup_lock(self) -> Path:
        """Shared by creates, exclusive to remove cgroup parents (shim/lifecycle/cgroup_dirs)."""
        return self.path / LOCKS / "cgroups.lock"

    @property
    def io(self) -> Path:
        return self.path / IO

    def io_dir(self, namespace: str, task_id: str, pid: int) -> Path:
        """The stdio FIFOs of the foreground command ``pid`` attached to a task; named with
        the pid so that reconciliation can remove those whose command died."""
        return self.path / IO / namespace / f"{task_id}-{pid}"

    @staticmethod
    def io_dir_owner(name: str) -> tuple[str, int] | None:
        """(task ID, pid) of an io dir's base name, or None if it is not one of ours."""
        task_id, _, pid = name.rpartition("-")
        if not task_id or not pid.isdigit():
            return None
        return task_id, int(pid)

    @property
    def events_socket(self) -> Path:
        """The event sink every shim publishes to (its TTRPC_ADDRESS)."""
        return self.path / "events.sock"

    @property
    def shim_address(self) -> Path:
        """containerd's -address as the shims see it: they only hash it into their socket's
        name, so one in our state dir keeps two state dirs from sharing a shim."""
        return self.path / "shimledger.sock"

    @property
    def binding(self) -> Path:
        """Which root and store this state dir belongs to (not an identifier, so never
        taken for a namespace)."""
        return self.path / ".binding.json"

    def is_reserved(self, name: str) -> bool:
        """True for a directory of the state dir that is not a namespace."""
        return name in RESERVED
