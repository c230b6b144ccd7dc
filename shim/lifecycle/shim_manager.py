"""ShimManager launches shims, reconnects to them from their bundles, and shuts them down.

Like containerd's ShimManager it is unaware of the services a shim provides beyond the
Task client it hands out. Cleanup is bounded in time and shielded from cancellation: an
unresponsive shim must not block the caller, and a cancelled caller must not stop a
cleanup half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from domain.errors import (
    DeadlineExceededError,
    NotFoundError,
    ShimledgerError,
    UnavailableError,
)
from domain.state_dir import StateDir
from domain.values import Bundle, Exit, Owner
from shim import DEFAULT_RUNTIME
from shim.lifecycle.bundle import Bundles, bundle_runtime, save_runtime
from shim.lifecycle.task_logs import make_private_file, remove_logs
from shim.ports import RuncOptions, ShimBinary, ShimClient, Stdio

logger = logging.getLogger(__name__)

CLEANUP_TIMEOUT = 5.0  # containerd's io.containerd.timeout.shim.cleanup
SHUTDOWN_TIMEOUT = 3.0  # containerd's io.containerd.timeout.shim.shutdown
LOAD_TIMEOUT = 2.0  # a live shim answers Connect in milliseconds

T = TypeVar("T")


@dataclass(frozen=True)
class ManagerConfig:
    """Where shimledger keeps its ephemeral state, and where shims send their events."""

    state: StateDir
    ttrpc_address: str  # the event sink every shim publishes to (its TTRPC_ADDRESS)
    # containerd's own -address, which the shim only hashes into its socket's name: one in
    # our state dir keeps two state dirs (and a real containerd) from sharing a shim.
    address: str = ""
    runc_binary: str = ""
    # Detached tasks' stdout and stderr go to <log_dir>/<ns>/<id>/<incarnation>.log, which
    # outlives the state dir (it is under the root dir, with the history).
    log_dir: Path | None = None
    # This node's name: with the state dir, the Owner of every task this manager creates.
    node: str = ""

    @property
    def owner(self) -> Owner:
        """The owner of the tasks created here (see domain.values.Owner)."""
        return Owner(self.node, str(self.state.path))

    def log_file(self, namespace: str, task_id: str, incarnation: int) -> Path | None:
        if self.log_dir is None:
            return None
        return self.log_dir / namespace / task_id / f"{incarnation}.log"

    def move_log(self, namespace: str, task_id: str, planned: int | None, actual: int) -> None:
        """A create's log, opened for the incarnation number it planned, moved to the one it
        got if another node saved the planned one first; the shim writes on to the file.
        ``planned`` None: the create made no log (its stdio went elsewhere)."""
        if planned is None or planned == actual:
            return
        old, new = (self.log_file(namespace, task_id, n) for n in (planned, actual))
        if old is not None and new is not None and old.exists():
            old.rename(new)

    def log_stdio(
        self, namespace: str, task_id: str, incarnation: int, previous: int | None = None
    ) -> Stdio:
        """stdout and stderr into the task's log file (the shim creates it), or /dev/null.

        A deleted task's log is kept (``logs`` shows it, as docker's does until ``rm``)
        until its ID is created again: ``logs`` shows only the latest incarnation, so the
        earlier one's log (``previous``, this owner's last incarnation) and a failed
        create's leftover (numbered ``incarnation`` or later: no Created names it) go now,
        rotated files and all. Other logs stay: on a root several state dirs share, they
        are other owners' incarnations (numbers are fleet-wide). The file is made here,
        0600: the shim would create it with the umask's 0644, and keeps the mode of one
        that exists.
        """
        path = self.log_file(namespace, task_id, incarnation)
        if path is None:
            return Stdio()
        path.parent.parent.mkdir(mode=0o700, exist_ok=True)  # the log dir exists: bootstrap
        path.parent.mkdir(mode=0o700, exist_ok=True)
        remove_logs(path.parent, only=lambda n: n == previous or n >= incarnation)
        make_private_file(path)
        return Stdio(stdout=f"file://{path}", stderr=f"file://{path}")

    @property
    def runc_options(self) -> RuncOptions:
        """runc's root under our state dir, so a real containerd never sees our containers."""
        return RuncOptions(root=str(self.state.runc_root), binary_name=self.runc_binary)


@dataclass
class ShimProcess:
    """A running shim serving one task: its bundle, its pid and its Task client."""

    bundle: Bundle
    runtime: str
    shim_pid: int
    client: ShimClient

    @property
    def id(self) -> str:
        return self.bundle.id

    @property
    def namespace(self) -> str:
        return self.bundle.namespace


async def bounded_cleanup(step: Awaitable[T], timeout: float = CLEANUP_TIMEOUT) -> T | None:
    """Run a cleanup step to completion even if the caller is cancelled, within ``timeout``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await step

    try:
        return await asyncio.shield(asyncio.ensure_future(bounded()))
    except (NotFoundError, UnavailableError) as exc:
        logger.debug("cleanup step found nothing to do: %s", exc)  # already gone: fine
    except (ShimledgerError, TimeoutError, OSError) as exc:
        logger.warning("cleanup step failed: %s", exc)
    return None


class ShimManager:
    """Starts, finds and removes shim processes; one per task."""

    def __init__(self, config: ManagerConfig, binary: ShimBinary, bundles: Bundles) -> None:
        self.config = config
        self._binary = binary
        self._bundles = bundles

    async def start(self, bundle: Bundle, runtime: str) -> ShimProcess:
        """Run the shim's ``start`` action in the bundle and connect to the address it prints."""
        # Shielded: a caller cancelled half-way (Ctrl-C, SIGTERM) must not leave a shim that
        # started but was never told about; the cleanup below needs the start to finish.
        save_runtime(bundle, runtime)
        launch = asyncio.ensure_future(
            self._binary.start(bundle, runtime, self.config.ttrpc_address)
        )
        try:
            address = await asyncio.shield(launch)
            return await self._connect(bundle, runtime, address)
        except BaseException:
            await bounded_cleanup(self._abandon(bundle, runtime, launch))
            raise

    async def _abandon(self, bundle: Bundle, runtime: str, launch: asyncio.Future[str]) -> None:
        """Stop a shim that never got its task: wait for its start, then shut it down."""
        with contextlib.suppress(Exception):
            await launch
        try:
            shim = await self.get(bundle, runtime)
        except (ShimledgerError, OSError):
            shim = None  # it never started, or is gone already
        if shim is not None:
            await self.delete(shim)
        await self._binary.delete(bundle, runtime)

    async def get(self, bundle: Bundle, runtime: str) -> ShimProcess:
        """The shim serving the bundle's task (there is no daemon keeping a map: load it)."""
        return await self.load_shim(bundle, runtime)

    async def load_shim(
        self, bundle: Bundle, runtime: str, on_close: Callable[[], None] | None = None
    ) -> ShimProcess:
        """Reconnect from the ``address`` file the shim's start wrote in the bundle.

        ``on_close`` is called if the shim goes away while connected: a long-running
        watcher (``serve``) reconciles the task then.
        """
        try:
            address = (Path(bundle.path) / "address").read_text().strip()
        except FileNotFoundError:
            raise UnavailableError(
                f"task {bundle.id} has no shim address in {bundle.path}"
            ) from None
        return await self._connect(bundle, runtime, address, on_close)

    async def load_existing_shims(
        self,
        on_close: Callable[[ShimProcess], None] | None = None,
        *,
        skip: Container[tuple[str, str]] = (),
        timeout: float = LOAD_TIMEOUT,
    ) -> tuple[list[ShimProcess], list[Bundle]]:
        """Connect to every shim whose working bundle is in the state dir (but ``skip``).

        Returns the shims that answered and the bundles whose shim did not within
        ``timeout`` (dead, hung, or not started yet): reconciliation decides what those
        mean. Like containerd's loadShims, nothing is removed here.
        """
        alive: list[ShimProcess] = []
        silent: list[Bundle] = []
        for bundle in self._bundles.existing():
            if (bundle.namespace, bundle.id) in skip:
                continue
            runtime = bundle_runtime(bundle, DEFAULT_RUNTIME)
            holder: list[ShimProcess] = []

            def closed(holder: list[ShimProcess] = holder) -> None:
                if on_close is not None and holder:
                    on_close(holder[0])

            try:
                async with asyncio.timeout(timeout):  # one hung shim must not stall the rest
                    shim = await self.load_shim(bundle, runtime, closed)
            except (ShimledgerError, OSError, TimeoutError) as exc:
                logger.info("shim of %s/%s does not answer: %s", bundle.namespace, bundle.id, exc)
                silent.append(bundle)
                continue
            holder.append(shim)
            alive.append(shim)
        return alive, silent

    async def _connect(
        self,
        bundle: Bundle,
        runtime: str,
        address: str,
        on_close: Callable[[], None] | None = None,
    ) -> ShimProcess:
        client = await self._binary.connect(bundle, address, on_close)
        try:
            shim_pid = await client.connect(bundle.id)
        except BaseException:
            await client.aclose()
            raise
        return ShimProcess(bundle=bundle, runtime=runtime, shim_pid=shim_pid, client=client)

    async def delete(self, shim: ShimProcess) -> None:
        """Shut the shim down (it exits once it holds no container) and drop the connection."""

        async def shutdown() -> None:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                await shim.client.shutdown(shim.id)

        await bounded_cleanup(shutdown())
        await shim.client.aclose()

    async def cleanup_after_dead_shim(self, bundle: Bundle, runtime: str) -> Exit | None:
        """The shim's ``delete`` action: removes the runc container and mounts a dead shim left.

        Shielded from cancellation; bounded by the action's own deadline. A failure is
        logged (the container is most likely gone anyway), but a deadline passed is
        raised: the action hung, the container may still run, and nothing that takes it
        for gone (a recorded exit, the bundle's removal) may follow. A later try repeats it.
        """
        step = asyncio.ensure_future(self._binary.delete(bundle, runtime))
        try:
            return await asyncio.shield(step)
        except DeadlineExceededError:
            raise
        except (NotFoundError, UnavailableError) as exc:
            logger.debug("cleanup step found nothing to do: %s", exc)
        except (ShimledgerError, OSError) as exc:
            logger.warning("cleanup step failed: %s", exc)
        return None
