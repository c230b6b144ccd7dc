"""The `shimledger` entry point: hand the command to a running `serve`, or run it here.

Starting Python and importing typer, pydantic, eventsourcing and our modules costs several
hundred milliseconds per command; a serve already holds all of that. So this module, which
imports the standard library alone (tests/test_architecture.py holds it to that), looks for
serve's control socket in the command's state dir, hands over argv, cwd, the environment
that matters and its own stdin, stdout and stderr, forwards the signals it gets, and exits
with the command's status: the way Mercurial's chg and emacsclient work. No socket, a
refused connection, a serve of another version, or SHIMLEDGER_NO_SERVE=1: the full CLI runs
in this process, as it always did, and nothing differs but speed; first, though, a plain
`list` whose answer the task_states view file alone provably gives is answered from it
(cli/quick_reads.py, stdlib too).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import termios
from collections.abc import Mapping
from typing import Any

from cli import handoff

HANDSHAKE_TIMEOUT = 5.0  # seconds for serve to take the command, or the command runs here
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH)
# The global options that take a value (cli/main.py's callback), so that the command's
# name can be told from an option's value.
_VALUED = frozenset({"--root", "--state", "--namespace", "-n", "--store", "--node", "--log",
                     "--log-format"})  # fmt: skip


def main() -> None:
    """The console script."""
    argv = sys.argv[1:]
    state, command = _state_and_command(argv, os.environ)
    if command != "serve" and os.environ.get(handoff.NO_SERVE) != "1":
        # Signals wait until the command is serve's (then relayed) or ours (then as ever).
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        sock = _connect(state)
        if sock is not None:
            _handed(sock, argv)  # exits unless serve refused
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    from cli import quick_reads  # here: a command handed to serve does not pay for it

    code = quick_reads.answer(argv, os.environ)  # `list` from the view file, when provably
    if code is not None:  # the same bytes the full CLI would print (cli/quick_reads.py)
        os._exit(code)
    _in_process()


def _state_and_command(argv: list[str], env: Mapping[str, str]) -> tuple[str, str | None]:
    """The state dir the command acts in, and its name (None for none: `--help`, say)."""
    state = env.get("SHIMLEDGER_STATE") or handoff.DEFAULT_STATE
    words = iter(argv)
    for word in words:
        if word == "--":
            return os.path.abspath(state), next(words, None)
        if not word.startswith("-"):
            return os.path.abspath(state), word
        name, equals, value = word.partition("=")
        if name in _VALUED and not equals:
            value = next(words, "")
        if name == "--state":
            state = value
    return os.path.abspath(state), None


def _connect(state: str) -> socket.socket | None:
    """A connection to the state dir's serve, or None if there is none to be had (or the
    one listening is not root nor us: it is not given our terminal)."""
    path = handoff.control_socket(state)
    if len(path.encode()) > handoff.MAX_SOCKET_PATH:
        return None  # no serve can listen there either: the command says why itself
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(HANDSHAKE_TIMEOUT)  # a serve that hangs: the command runs here instead
    try:
        sock.connect(path)
        _, uid, _ = handoff.peer_credentials(sock)
    except OSError:  # no socket (no serve), refused (a serve that died), not allowed
        sock.close()
        return None
    if uid not in (0, os.geteuid()):
        sock.close()
        return None
    return sock


def _handed(sock: socket.socket, argv: list[str]) -> None:
    """Run the command through serve; return only if serve refused it."""
    try:
        cwd = os.getcwd()
    except OSError:  # a removed working directory: only this process can still be in it
        sock.close()
        return
    umask = os.umask(0o022)
    os.umask(umask)
    request = handoff.Request(
        version=handoff.version(),
        argv=argv,
        cwd=cwd,
        env=dict(os.environ),
        stdio=[fd for fd in handoff.STDIO if _is_open(fd)],
        umask=umask,
    )
    try:
        handoff.send_request(sock, request)
        reply = handoff.receive(sock)
    except (OSError, ValueError):
        reply = None  # serve went away (or hangs) before it took the command: nothing done
    if reply is None or reply.get("accepted") is not True:
        sock.close()
        return
    terminal = _terminal_modes()
    try:
        handoff.send(sock, {"go": True})  # from here on the command is serve's to run
    except OSError:
        sock.close()
        return
    sock.settimeout(None)

    def forward(signum: int, _frame: object) -> None:
        try:
            handoff.send(sock, {"signal": signum})
        except OSError:
            pass  # serve is gone; the command's own end says the rest

    def suspend(_signum: int, _frame: object) -> None:
        """Ctrl-Z: the command stops with us, and goes on when we do (job control)."""
        forward(signal.SIGSTOP, None)
        os.kill(os.getpid(), signal.SIGSTOP)
        forward(signal.SIGCONT, None)  # here once the shell's `fg` or `bg` resumed us

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    signal.signal(signal.SIGTSTP, suspend)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)  # those that came: relayed
    while True:
        try:
            message = handoff.receive(sock)
        except (OSError, ValueError):
            message = None
        if message is None or "exit" in message or "signal" in message:
            # A command that put our terminal in raw mode (run -t) and was killed before
            # it could put it back: the terminal is ours, so we do.
            _restore_terminal(terminal)
        if message is None:
            _say("serve went away before the command ended; `shimledger list` shows "
                 "what it did")  # fmt: skip
            os._exit(1)
        if "exit" in message:
            os._exit(_int(message["exit"]))
        if "signal" in message:
            _die_of(_int(message["signal"]))


def _die_of(signum: int) -> None:
    """End as the command did: killed by ``signum`` (a shell then prints what it prints)."""
    sys.stdout.flush()
    try:
        signal.signal(signum, signal.SIG_DFL)
    except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
        pass
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # a signal that does not kill (SIGWINCH): a shell's status


def _in_process() -> None:
    # pydantic looks for plugins in every installed distribution's entry points when it
    # builds its first model (tens of milliseconds); shimledger uses none.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from cli.main import main as full_cli

    full_cli()


def _terminal_modes() -> list[Any] | None:
    """Our stdin terminal's modes as the command finds them (None: no terminal)."""
    try:
        return termios.tcgetattr(0)
    except (termios.error, OSError):
        return None


def _restore_terminal(modes: list[Any] | None) -> None:
    if modes is None:
        return
    try:
        if termios.tcgetattr(0) != modes:
            termios.tcsetattr(0, termios.TCSADRAIN, modes)
    except (termios.error, OSError):
        pass  # the terminal is gone (hung up): nothing to restore


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _int(value: object) -> int:
    return value if isinstance(value, int) else 1


def _say(line: str) -> None:
    try:
        os.write(2, f"shimledger: {line}\n".encode())
    except OSError:
        pass
