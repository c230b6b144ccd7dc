"""The shim binary: resolving a runtime name, and running its ``start`` and ``delete`` actions.

containerd's calling conventions (shim-protocol.md section 2): flags before the action,
cwd = the bundle, stdin closed, and TTRPC_ADDRESS naming where the shim sends events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from adapters.proto import task_pb2
from adapters.shim_log import ShimLog
from adapters.task_client import ShimTaskClient, exited_at
from adapters.ttrpc.address import socket_path
from adapters.ttrpc.client import TtrpcClient
from adapters.ttrpc.listener import remove_stale_socket
from domain.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnknownError
from domain.values import Bundle, Exit
from shim.ports import ShimClient

# runc lives in /usr/sbin on Debian; the shim finds it on its PATH (shim-protocol.md 0.9).
_SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


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
        self, argv: list[str], bundle: Bundle, ttrpc_address: str = ""
    ) -> tuple[int, bytes, bytes]:
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
        )
        stdout, stderr = await process.communicate()
        assert process.returncode is not None
        return process.returncode, stdout, stderr

    async def start(self, bundle: Bundle, runtime: str, ttrpc_address: str) -> str:
        """Run ``start``; return the address it prints (plain, or containerd 1.7's JSON)."""
        argv = self._argv(bundle, runtime, "start")
        log = ShimLog.open(bundle.path, bundle.id, self._shim_log(bundle))
        try:
            code, stdout, stderr = await self._run(argv, bundle, ttrpc_address)
        except BaseException:
            log.close()
            raise
        if code != 0:
            log.close()
            message = (stderr or stdout).decode(errors="replace").strip()
            message = message or f"{argv[0]} exited with status {code} and said nothing"
            raise UnknownError(f"failed to start shim for task {bundle.id}: {message}")
        self._logs[bundle.path] = log
        text = stdout.decode().strip()
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
            message = stderr.decode(errors="replace").strip()
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
