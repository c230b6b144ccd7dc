"""Shared fixtures: real runc and the real shim, a state dir per test, cleanup by the manager.

A test that needs root, runc, containerd-shim-runc-v2 or busybox fails under CI=true when
one is missing; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from adapters.shim_binary import search_path
from cli.bootstrap import Settings, Wiring, bootstrap, wire
from cli.ledger import open_ledger
from shim.lifecycle.task_manager import TaskManager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from busybox_bundle import make_bundle  # noqa: E402

pytest_plugins = ["tests.postgres_cluster"]  # postgres_cluster, postgres_url


def missing_for_real_tests() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    for name in ("runc", "containerd-shim-runc-v2"):
        if shutil.which(name, path=search_path()) is None:
            return f"{name} is not installed"
    if not Path("/bin/busybox").exists():
        return "busybox-static is not installed"
    return None


@pytest.fixture
def real() -> None:
    """Marks a test as needing the real runtime."""
    missing = missing_for_real_tests()
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"real-runtime test cannot run in CI: {missing}")
    pytest.skip(f"needs the real runtime: {missing}")


@pytest.fixture
def settings(real: None, tmp_path: Path) -> Iterator[Settings]:
    """Own root and state dirs; afterwards every task is deleted and nothing may be left."""
    # The state dir holds sockets, whose paths must stay under 108 bytes: keep it short.
    state = Path(tempfile.mkdtemp(prefix="sl-", dir="/tmp"))
    settings = Settings(root=tmp_path / "root", state=state, namespace="test")
    yield settings
    leftovers = teardown(settings)
    shutil.rmtree(state, ignore_errors=True)
    assert not leftovers, f"the test left these behind: {leftovers}"
    differences = verify(settings)
    assert not any(differences.values()), f"a view disagrees with the history: {differences}"


def verify(settings: Settings) -> dict[str, list[str]]:
    """`projections verify` on what the test's workload recorded."""
    import asyncio

    from projections.verify import verify_views

    async def run() -> dict[str, list[str]]:
        async with open_ledger(settings) as ledger:
            return await verify_views(
                ledger.store, ledger.task_states, ledger.event_index, ledger.state_files
            )

    return asyncio.run(run()) if has_history(settings) else {}


def has_history(settings: Settings) -> bool:
    """Whether the test's store was ever written (a database server's always may have been)."""
    return settings.store is not None or (settings.root / "events.db").exists()


def teardown(settings: Settings) -> list[str]:
    """Delete every live task through the manager, then report (and remove) any leftover."""
    import asyncio

    async def delete_all() -> None:
        async with bootstrap(settings) as manager:
            for state in await manager.tasks(all_namespaces=True):
                await manager.in_namespace(state.namespace).delete(state.id, force=True)

    if has_history(settings):
        asyncio.run(delete_all())
    leftovers: list[str] = []
    runc_root = settings.state / "runc"
    for namespace_dir in runc_root.glob("*") if runc_root.is_dir() else []:
        listing = subprocess.run(
            ["runc", "--root", str(namespace_dir), "list", "-q"],
            capture_output=True, text=True, env={"PATH": search_path()},
        )  # fmt: skip
        for container in listing.stdout.split():
            leftovers.append(f"runc container {namespace_dir.name}/{container}")
            subprocess.run(["runc", "--root", str(namespace_dir), "delete", "-f", container],
                           env={"PATH": search_path()})  # fmt: skip
    leftovers += remove_cgroups(settings)
    # A shim exits within milliseconds of Shutdown; give it a moment before calling it leaked.
    deadline = time.monotonic() + 2
    while (stray := processes_in(settings.state)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, cwd in stray:
        leftovers.append(f"process {pid} in {cwd}")
        os.kill(pid, signal.SIGKILL)
    return leftovers


def remove_cgroups(settings: Settings) -> list[str]:
    """Every cgroup directory of the test's parent is a leftover once its tasks are deleted
    (shimledger removes the parents it made: shim/lifecycle/cgroup_dirs.py); removed here."""
    from cli.bootstrap import cgroup_parent

    name = cgroup_parent(settings).lstrip("/")
    leftovers = []
    for top in [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").glob("*")]:
        parent = top / name
        if not parent.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(parent), key=lambda w: -len(w[0])):
            try:
                os.rmdir(directory)
            except OSError as exc:
                leftovers.append(f"cgroup {directory}: {exc.strerror}")
            else:
                leftovers.append(f"cgroup {directory} (empty, but left behind)")
    return leftovers


def processes_in(directory: Path) -> list[tuple[int, str]]:
    """Processes whose working directory is inside ``directory`` (shims run in bundles)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(directory) + "/"):
            found.append((int(proc.name), cwd))
    return found


@pytest.fixture
async def wiring(settings: Settings) -> AsyncIterator[Wiring]:
    """The composition a command has, for tests that need a part besides the manager."""
    async with wire(settings) as wiring:
        yield wiring


@pytest.fixture
async def manager(wiring: Wiring) -> TaskManager:
    return wiring.manager


@pytest.fixture
def bundle(tmp_path: Path) -> Callable[..., Path]:
    """Build a bundle with its own busybox rootfs running ``args``."""
    counter = iter(range(1000))

    def build(*args: str) -> Path:
        return make_bundle(tmp_path / f"bundle{next(counter)}", list(args))

    return build


# Set by tests/cli/conftest.py for a test run "served": makes sure a serve runs for the
# state dir of settings that commands are about to be run with.
SERVE_FOR: Callable[[Settings], None] | None = None


def at_a_shell() -> None:
    """Popen's preexec_fn for a command a test ends with Ctrl-C's SIGINT: the signals as a
    foreground job at a shell has them. The test runner's own may differ (an ignored SIGINT
    survives exec, and a blocked one stays blocked), and the command would never hear it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that points a shimledger process at the test's root and state (and,
    for a test run "served", a serve of that state dir that the command is handed to)."""
    if SERVE_FOR is not None:
        SERVE_FOR(settings)
    return serve_env(settings)


def serve_env(settings: Settings) -> dict[str, str]:
    return dict(
        os.environ,
        SHIMLEDGER_ROOT=str(settings.root),
        SHIMLEDGER_STATE=str(settings.state),
        SHIMLEDGER_NAMESPACE=settings.namespace,
        SHIMLEDGER_NODE=settings.node,
    ) | ({"SHIMLEDGER_STORE": settings.store} if settings.store else {})


def cli_runner(settings: Settings) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `shimledger` with ``settings``, as a pipe sees it (stdin /dev/null)."""
    env = cli_env(settings)
    executable = str(Path(sys.executable).with_name("shimledger"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([executable, *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip

    return run


def event_types(events: list[object]) -> list[str]:
    """A history as its event types, oldest first: what most assertions compare."""
    return [type(e).__name__ for e in events]
