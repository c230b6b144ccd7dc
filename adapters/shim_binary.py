"""The shim binary: resolving a runtime name, and running its ``start`` and ``delete`` actions.

containerd's calling conventions (shim-protocol.md section 2): flags before the action,
cwd = the bundle, stdin closed, and TTRPC_ADDRESS naming where the shim sends events.

A shim's ``start`` has a deadline, as each of containerd's calls to a shim has: a runtime
whose start never returns must not hang ``create`` for ever. It is ``START_TIMEOUT``
seconds, or ``SHIMLEDGER_SHIM_START_TIMEOUT`` when set. What ``start`` prints is read as
bytes: a runtime that prints something other than UTF-8 is a runtime's fault, said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from adapters.proto import task_pb2
from adapters.shim_log import ShimLog
from adapters.task_client import ShimTaskClient, exited_at
from adapters.ttrpc.address import socket_path
from adapters.ttrpc.client import TtrpcClient
from adapters.ttrpc.listener import remove_stale_socket
from domain.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    UnknownError,
)
from domain.values import Bundle, Exit
from shim.ports import ShimClient

# runc lives in /usr/sbin on Debian; the shim finds it on its PATH (shim-protocol.md 0.9).
_SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

# The real shim's start forks the shim, waits for its socket and prints the address: well
# under a second. containerd gives a shim's calls 5 to 10 s; a loaded host gets the longer.
START_TIMEOUT = 10.0
START_TIMEOUT_ENV = "SHIMLEDGER_SHIM_START_TIMEOUT"


def start_timeout() -> float:
    """Seconds a shim's ``start`` may take: SHIMLEDGER_SHIM_START_TIMEOUT, or 10."""
    text = os.environ.get(START_TIMEOUT_ENV, "").strip()
    if not text:
        return START_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400:  # NaN fails this too
        raise InvalidArgumentError(
            f"{START_TIMEOUT_ENV}={text!r}: give seconds, more than 0 and less than a day"
        )
    return seconds


def _one_line(output: bytes) -> str:
    """A program's output as one line of text, whatever its bytes and line breaks."""
    return " ".join(output.decode(errors="replace").split())


def shim_binary_name(runtime: str) -> str:
    """``io.containerd.runc.v2`` -> ``containerd-shim-runc-v2``, as containerd names shims."""
    parts = runtime.split(".")
    if len(parts) < 2 or not all(parts):
        raise InvalidArgumentError(
            f"runtime {runtime!r} is neither an absolute path nor a name like "
            "io.containerd.runc.v2"
        )
    return f"containerd-shim-{parts[-2]}-{parts[-1]}"


def search_path() -> str:
    entries = [e for e in os.environ.get("PATH", "").split(os.pathsep) if e]
    entries += [e for e in _SYSTEM_PATH if e not in entries]
    return os.pathsep.join(entries)


def resolve_runtime(runtime: str) -> str:
    """The shim executable for a runtime name or absolute path, or a clear NotFoundError."""
    if os.path.isabs(runtime):
        if not (os.path.isfile(runtime) and os.access(runtime, os.X_OK)):
            raise NotFoundError(f"runtime {runtime} is not an executable file")
        return runtime
    name = shim_binary_name(runtime)
    found = shutil.which(name, path=search_path())
    if found is None:
        raise NotFoundError(
            f"runtime {runtime}: shim binary {name} not found on PATH "
            "(install containerd, which ships containerd-shim-runc-v2)"
        )
    return found


async def _remove_dead_shim_socket(address_file: Path) -> None:
    """Unlink the socket named in a bundle's ``address`` file if nothing listens on it."""
    try:
        address = address_file.read_text().strip()
    except OSError:
        return
    if not address.startswith("unix://"):
        return
    with contextlib.suppress(AlreadyExistsError):  # alive, or not a socket: not ours
        await remove_stale_socket(socket_path(address))


class ShimBinaryLauncher:
    """Implements shim.ports.ShimBinary for any containerd v2 shim executable."""

    def __init__(
        self,
        address: str,
        publish_binary: str = "shimledger",
        shim_log: Callable[[Bundle], Path | None] | None = None,
    ) -> None:
        # -address is only hashed into the shim's socket name (ManagerConfig.address).
        self._address_flag = address
        self._publish_binary = publish_binary
        self._logs: dict[str, ShimLog] = {}  # opened by start, handed to connect
        self._shim_log = shim_log or (lambda bundle: None)  # where a shim's log is kept

    def _argv(self, bundle: Bundle, runtime: str, *tail: str) -> list[str]:
        return [
            resolve_runtime(runtime),
            "-namespace", bundle.namespace,
            "-address", self._address_flag,
            "-publish-binary", self._publish_binary,
            "-id", bundle.id,
            *tail,
        ]  # fmt: skip

    async def _run(
        self,
        argv: list[str],
        bundle: Bundle,
        ttrpc_address: str = "",
        timeout: float | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run a shim action; past ``timeout`` seconds its process group is killed.

        The action runs in a process group of its own so that the kill reaches whatever it
        started there too (a child holding its stdout open would keep us waiting). The real
        shim puts the shim it forks in another group: a started shim is never killed here.
        """
        env = dict(os.environ, PATH=search_path())
        if ttrpc_address:
            env["TTRPC_ADDRESS"] = ttrpc_address
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=bundle.path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            process_group=0,
        )
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await process.communicate()
        except BaseException as exc:  # the deadline, or we are cancelled: leave no process
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.shield(process.wait())
            if isinstance(exc, TimeoutError):
                raise DeadlineExceededError(
                    f"{argv[0]} {argv[-1]} did not finish within {timeout:g}s "
                    f"({START_TIMEOUT_ENV} sets the limit): killed"
                ) from None
            raise
        assert process.returncode is not None
        return process.returncode, stdout, stderr

    async def start(self, bundle: Bundle, runtime: str, ttrpc_address: str) -> str:
        """Run ``start``; return the address it prints (plain, or containerd 1.7's JSON)."""
        argv = self._argv(bundle, runtime, "start")
        log = ShimLog.open(bundle.path, bundle.id, self._shim_log(bundle))
        try:
            code, stdout, stderr = await self._run(
                argv, bundle, ttrpc_address, timeout=start_timeout()
            )
        except DeadlineExceededError as exc:
            log.close()
            message = f"failed to start shim for task {bundle.id}: {exc}"
            raise DeadlineExceededError(message) from None
        except BaseException:
            log.close()
            raise
        if code != 0:
            log.close()
            message = _one_line(stderr or stdout)
            message = message or f"{argv[0]} exited with status {code} and said nothing"
            raise UnknownError(f"failed to start shim for task {bundle.id}: {message}")
        try:
            text = stdout.decode().strip()
        except UnicodeDecodeError:
            log.close()
            raise UnknownError(
                f"failed to start shim for task {bundle.id}: {argv[0]} start printed "
                f"{_one_line(stdout)[:200]!r}, not UTF-8, where an address belongs"
            ) from None
        self._logs[bundle.path] = log
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return text
        return str(parsed["address"]) if isinstance(parsed, dict) else text

    async def delete(self, bundle: Bundle, runtime: str) -> Exit | None:
        """Run ``delete``: the shim's own cleanup of a container whose shim is gone.

        Returns None when there was nothing to clean (no Create ever ran in the bundle).
        A socket the dead shim left in /run/containerd/s is removed as well.
        """
        await _remove_dead_shim_socket(Path(bundle.path) / "address")
        if not (Path(bundle.path) / "runtime").exists():
            return None
        code, stdout, stderr = await self._run(
            self._argv(bundle, runtime, "-bundle", bundle.path, "delete"), bundle
        )
        if code != 0:
            message = _one_line(stderr)
            raise UnknownError(f"shim delete of task {bundle.id} failed: {message}")
        response = task_pb2.DeleteResponse.FromString(stdout)
        when = exited_at(response.exited_at) or datetime.now(UTC)
        return Exit(status=response.exit_status, exited_at=when)

    async def connect(
        self, bundle: Bundle, address: str, on_close: Callable[[], None] | None = None
    ) -> ShimClient:
        """Connect to a shim's Task service, draining its log while the connection lives."""
        log = self._logs.pop(bundle.path, None)
        try:
            client = await TtrpcClient.connect(address, on_close=on_close)
        except BaseException:
            if log is not None:
                log.close()
            raise
        if log is None and Path(bundle.path).is_dir():
            log = ShimLog.open(bundle.path, bundle.id, self._shim_log(bundle))
        return ShimTaskClient(client, bundle.namespace, log)
