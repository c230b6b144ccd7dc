"""The shim binary: resolving a runtime name, and running its ``start`` and ``delete`` actions.

containerd's calling conventions (shim-protocol.md section 2): flags before the action,
cwd = the bundle, stdin closed, and TTRPC_ADDRESS naming where the shim sends events.

A shim's ``start`` and ``delete`` have deadlines, as each of containerd's calls to a shim
has: a runtime whose action never returns must not hang ``create`` or ``delete`` for ever.
Each is 10 s (``START_TIMEOUT``, ``DELETE_TIMEOUT``), or ``SHIMLEDGER_SHIM_START_TIMEOUT``
and ``SHIMLEDGER_SHIM_DELETE_TIMEOUT`` when set; past it the action is killed and the call
fails with DeadlineExceededError. What ``start`` prints is read as bytes: a runtime that
prints something other than UTF-8 is a runtime's fault, said so.
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
# The real shim's delete runs `runc delete --force` and unmounts: about 2 s at worst (a
# container whose init still waits to start). containerd's cleanup timeout is 5 s; the
# same 10 s as start leaves a loaded host the margin.
DELETE_TIMEOUT = 10.0
DELETE_TIMEOUT_ENV = "SHIMLEDGER_SHIM_DELETE_TIMEOUT"


def _seconds(variable: str, default: float) -> float:
    """Seconds from the environment variable ``variable``, or ``default`` when unset."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400:  # NaN fails this too
        raise InvalidArgumentError(
            f"{variable}={text!r}: give seconds, more than 0 and less than a day"
        )
    return seconds


def start_timeout() -> float:
    """Seconds a shim's ``start`` may take: SHIMLEDGER_SHIM_START_TIMEOUT, or 10."""
    return _seconds(START_TIMEOUT_ENV, START_TIMEOUT)


def delete_timeout() -> float:
    """Seconds a shim's ``delete`` may take: SHIMLEDGER_SHIM_DELETE_TIMEOUT, or 10."""
    return _seconds(DELETE_TIMEOUT_ENV, DELETE_TIMEOUT)


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
        timeout: tuple[float, str] | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run a shim action; past ``timeout`` (seconds, and the variable that sets them)
        its process group is killed.

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
        seconds, variable = timeout if timeout is not None else (None, "")
        try:
            async with asyncio.timeout(seconds):
                stdout, stderr = await process.communicate()
        except BaseException as exc:  # the deadline, or we are cancelled: leave no process
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.shield(process.wait())
            if isinstance(exc, TimeoutError):
                raise DeadlineExceededError(
                    f"{argv[0]} {argv[-1]} did not finish within {seconds:g}s "
                    f"({variable} sets the limit): killed"
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
                argv, bundle, ttrpc_address, timeout=(start_timeout(), START_TIMEOUT_ENV)
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
        A socket the dead shim left in /run/containerd/s is removed as well. Past its
        deadline (``delete_timeout``) the action is killed: DeadlineExceededError, and
        the container may still be there.
        """
        await _remove_dead_shim_socket(Path(bundle.path) / "address")
        if not (Path(bundle.path) / "runtime").exists():
            return None
        argv = self._argv(bundle, runtime, "-bundle", bundle.path, "delete")
        try:
            code, stdout, stderr = await self._run(
                argv, bundle, timeout=(delete_timeout(), DELETE_TIMEOUT_ENV)
            )
        except DeadlineExceededError as exc:
            raise DeadlineExceededError(f"shim delete of task {bundle.id}: {exc}") from None
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
