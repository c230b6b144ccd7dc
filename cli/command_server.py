"""serve's control socket: commands handed over by cli/launcher.py, each run in a fork.

`serve` forks this server before its event loop starts (a fork of a process with a running
loop or threads inherits their state half-made). The server imports every module a command
may need, once, then waits until serve owns the state dir's event sink, binds
``<state>/control.sock`` (0600) and, for each client whose peer credentials are ours (root
or our uid) and whose version is ours, forks a process that runs the command as the
in-process CLI would (cli/served_command.py), on the client's own stdin, stdout and stderr.

This process stays the command's supervisor: it relays the client's signals to the
command, kills the command by SIGKILL when the client goes away (exactly what SIGKILL of an
in-process CLI does, and reconciliation finds what it left), and reports a command that
died of a signal. Each command is a process of its own: one that crashes takes nobody
else's with it, and a serve that dies leaves its commands running to their end.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import pkgutil
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from cli import handoff
from cli.caller import Caller
from cli.common import ClickCommand
from domain.errors import ShimledgerError

logger = logging.getLogger(__name__)

STOP_WAIT = 2.0  # seconds serve waits for the command server to close as it stops
HANDSHAKE_TIMEOUT = 2.0  # a client sends its request as it connects; a silent one is cut off
_PACKAGES = ("domain", "adapters", "shim", "projections", "cli")
_NOT_WARMED = frozenset({"cli.launcher", "adapters.ledger_key"})
"""The entry point itself, and OpenSSL's binding (60 ms of every serve's start, for the
rare `ledger` command: that one loads it when it runs)."""
# What a client relays: the signals the in-process CLI handles, and job control's stop
# and continue (Ctrl-Z stops the command with its client).
HANDLED = frozenset(int(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                     signal.SIGWINCH))  # fmt: skip
RELAYED = HANDLED | {int(signal.SIGSTOP), int(signal.SIGCONT)}


@dataclass
class CommandServer:
    """serve's handle on its command server: a pipe to it, and its pid."""

    pid: int
    _line: socket.socket  # to the server: "g" opens the socket ("r": open), EOF stops it
    _serving: bool = False

    @classmethod
    def fork(cls, state: Path, cli: ClickCommand) -> CommandServer:
        """Fork the server, which runs commands on ``cli`` (the app serve itself runs on);
        it takes no command before ``serve_commands``."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the server
            code = 1
            try:
                ours.close()
                code = _serve(state, theirs, cli)
            except BaseException:  # noqa: BLE001 - nothing may return into serve's code
                logger.exception("the command server failed")
            finally:
                os._exit(code)
        theirs.close()
        return cls(pid, ours)

    def serve_commands(self) -> bool:
        """Open the control socket (serve owns the event sink now); True once it is open.

        False: the server is gone, and commands run in their own processes, as without serve.
        """
        try:
            self._line.sendall(b"g")
            self._serving = self._line.recv(1) == b"r"
        except OSError:
            self._serving = False
        return self._serving

    def stop(self) -> None:
        """Close the control socket. Commands it runs go on to their end under it (their
        clients' signals relayed); serve waits a moment for it, not for them."""
        self._line.close()
        if not self._serving:
            _kill(self.pid, signal.SIGKILL)  # still importing: nothing of it to clean up
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0] != 0:
                    return
            except ChildProcessError:
                return
            time.sleep(0.02)
        logger.debug("the command server still supervises commands; serve leaves it to them")


def _serve(state: Path, line: socket.socket, cli: ClickCommand) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # serve's to handle: it closes our pipe
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _warm()
    if line.recv(1) != b"g":
        return 0  # serve stopped before it owned the event sink
    path = handoff.control_socket(str(state))
    try:
        listener = _listen(path)
    except (ShimledgerError, OSError) as exc:  # serve says it hands nothing over
        logger.warning("shimledger serve: cannot open %s: %s", path, exc)
        return 1
    gc.freeze()  # what is here now is shared by every fork: keep the collector off it
    line.sendall(b"r")
    server = _Server(listener, line, cli)
    try:
        server.run()
    finally:
        listener.close()
        _unlink(path)
    return 0


def _warm() -> None:
    """Import what any command imports (on first use, in-process), once for every fork."""
    for package in _PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if info.name in _NOT_WARMED:
                continue
            try:
                importlib.import_module(info.name)
            except ImportError:  # an extra not installed (psycopg): loaded when needed
                continue


def _listen(path: str) -> socket.socket:
    from adapters.ttrpc.listener import remove_stale_socket

    asyncio.run(remove_stale_socket(path))  # one a killed serve left; refused if live
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    umask = os.umask(0o177)  # 0600 from the start: no moment when others may connect
    try:
        listener.bind(path)
    finally:
        os.umask(umask)
    listener.listen(64)
    return listener


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass
class _Command:
    pid: int
    client: socket.socket
    pidfd: int
    ended: bool = False


class _Server:
    def __init__(self, listener: socket.socket, line: socket.socket, cli: ClickCommand) -> None:
        self.listener: socket.socket | None = listener
        self.line = line
        self.cli = cli
        self.running: dict[int, _Command] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, self._accept)
        self.selector.register(line, selectors.EVENT_READ, None)  # EOF: serve stops

    def run(self) -> None:
        """Serve until serve stops, then supervise the commands still running to their end
        (their clients' signals relayed, their ends reported): no new command is taken."""
        while self.listener is not None or self.running:
            for key, _ in self.selector.select():
                if key.data is None:
                    if self.line.recv(1) == b"":
                        self._stop_taking()
                    continue
                try:
                    key.data()
                except Exception:  # one command's trouble must not end the server
                    logger.exception("the command server: a command's event failed")

    def _stop_taking(self) -> None:
        self.selector.unregister(self.line)
        if self.listener is not None:
            self.selector.unregister(self.listener)
            _unlink(self.listener.getsockname())
            self.listener.close()
            self.listener = None

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        try:
            command = self._start(client)
        except Exception as exc:  # a client that misbehaves or vanishes: its own end alone
            logger.warning("control socket: a client's handshake failed: %s", exc)
            command = None
        if command is None:
            client.close()
            return
        self.running[command.pid] = command
        self.selector.register(command.pidfd, selectors.EVENT_READ, lambda: self._ended(command))
        self.selector.register(client, selectors.EVENT_READ, lambda: self._heard(command))

    def _start(self, client: socket.socket) -> _Command | None:
        """The client's command forked off, or None (client told why, if it can hear).

        The client says "go" after "accepted": a client that gave up waiting (and runs the
        command itself) never has it run here too.
        """
        client.settimeout(HANDSHAKE_TIMEOUT)
        pid, uid, _ = handoff.peer_credentials(client)
        if uid not in (0, os.geteuid()):
            logger.warning("control socket: refused uid %d (pid %d)", uid, pid)
            return None
        try:
            request, fds = handoff.receive_request(client)
        except (ValueError, EOFError, TimeoutError) as exc:
            logger.warning("control socket: a request from pid %d refused: %s", pid, exc)
            return None
        try:
            why = _refusal(request, pid)
            if why is not None:
                handoff.send(client, {"refused": why})
                return None
            handoff.send(client, {"accepted": True})
            if handoff.receive(client) != {"go": True}:
                return None
            client.settimeout(None)
            return self._fork(request, fds, Caller(uid=uid, pid=pid, argv=tuple(request.argv)),
                              client)  # fmt: skip
        finally:
            for fd in fds:
                os.close(fd)

    def _fork(
        self, request: handoff.Request, fds: list[int], caller: Caller, client: socket.socket
    ) -> _Command | None:
        # Relayed signals wait in the child until it has its own handlers (run_served).
        old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            child = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            _tell(fds, request, f"serve cannot start the command: {exc.strerror}")
            handoff.send(client, {"exit": 1})
            return None
        if child == 0:
            self._become_command(request, fds, caller, client)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        try:
            pidfd = os.pidfd_open(child)
        except OSError as exc:  # no descriptor left to watch it with: it does not run
            _kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            _tell(fds, request, f"serve cannot watch the command: {exc.strerror}")
            handoff.send(client, {"exit": 1})
            return None
        return _Command(child, client, pidfd)

    def _become_command(
        self, request: handoff.Request, fds: list[int], caller: Caller,
        client: socket.socket,
    ) -> None:  # fmt: skip
        code = 1
        try:
            self.selector.close()
            if self.listener is not None:
                self.listener.close()
            self.line.close()
            for other in self.running.values():  # other commands' ends are not ours
                other.client.close()
                os.close(other.pidfd)
            from cli.served_command import run_served

            run_served(request, fds, caller, client, self.cli)
        finally:
            os._exit(code)

    def _heard(self, command: _Command) -> None:
        """A signal to relay, or the client's end: the command's too."""
        if command.client.fileno() == -1:
            return  # the command ended in this same round of events, and its client is closed
        try:
            message = handoff.receive(command.client)
        except (OSError, ValueError):
            message = None
        if message is None:
            self.selector.unregister(command.client)
            if not command.ended:
                _kill(command.pid, signal.SIGKILL)
            return
        signum = message.get("signal")
        if isinstance(signum, int) and signum in RELAYED and not command.ended:
            _kill(command.pid, signum)

    def _ended(self, command: _Command) -> None:
        _, status = os.waitpid(command.pid, 0)
        command.ended = True
        self.running.pop(command.pid, None)
        self.selector.unregister(command.pidfd)
        os.close(command.pidfd)
        # The command says its exit status itself; one that died of a signal cannot.
        message = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {
            "exit": os.waitstatus_to_exitcode(status)}  # fmt: skip
        try:
            handoff.send(command.client, message)
        except OSError:
            pass  # the client is gone already
        try:
            self.selector.unregister(command.client)
        except KeyError:
            pass
        command.client.close()


def _tell(fds: list[int], request: handoff.Request, line: str) -> None:
    """One line on the client's stderr, from this process (nothing of the command ran)."""
    if 2 in request.stdio:
        try:
            os.write(fds[request.stdio.index(2)], f"shimledger: {line}\n".encode())
        except OSError:
            pass


def _refusal(request: handoff.Request, pid: int) -> str | None:
    """Why serve does not take the request (the client then runs it itself), or None."""
    if request.version != handoff.version():
        return f"serve runs version {handoff.version()}, the client {request.version}"
    if (differs := _not_like_us(pid)) is not None:
        return differs
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            words = [w.decode(errors="surrogateescape") for w in cmdline.read().split(b"\0")]
    except OSError:
        return "the client's command line cannot be read"
    if words and words[-1] == "":
        words.pop()
    if request.argv and words[-len(request.argv) :] != request.argv:
        return "the request's command line is not the client's"
    return None


# Namespaces in which the same path, host name or pid would mean something else.
_NAMESPACES = ("mnt", "uts", "pid", "user")


def _not_like_us(pid: int) -> str | None:
    """Why the client may not have its command run here, or None if it may: a client with
    fewer capabilities than serve (setpriv, a container's root) would do with serve's what
    it may not do itself, and one in other namespaces means other paths and hosts."""
    try:
        theirs, ours = _capabilities(f"/proc/{pid}/status"), _capabilities("/proc/self/status")
        if theirs != ours:
            return "the client's capabilities are not serve's"
        for kind in _NAMESPACES:
            if os.stat(f"/proc/{pid}/ns/{kind}").st_ino != os.stat(f"/proc/self/ns/{kind}").st_ino:
                return f"the client is in another {kind} namespace"
    except OSError as exc:
        return f"the client cannot be checked: {exc.strerror}"
    return None


def _capabilities(status: str) -> str:
    with open(status) as lines:
        return next((line for line in lines if line.startswith("CapEff:")), "")


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
