"""The `shimledger` entry point hands its command to serve, and falls back to running it
itself: real serve, real shims, real runc, through the real entry point."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from cli import handoff
from cli.bootstrap import Settings
from tests.cli.conftest import SHIMLEDGER, serving
from tests.conftest import cli_env
from tests.waiting import wait_until

pytestmark = pytest.mark.alone("each test runs the serve it needs")
HANDED = "handed over by pid"  # the debug line of a command serve runs (cli/main.py)


def shimledger(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SHIMLEDGER, *args], env=cli_env(settings) | env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip


def history(settings: Settings, task_id: str) -> list[dict[str, object]]:
    result = shimledger(settings, "history", "--json", task_id)
    assert result.returncode == 0, result.stderr
    events: list[dict[str, object]] = json.loads(result.stdout)
    return events


def test_a_handed_command_runs_in_serve_and_history_names_the_client(
    settings: Settings, bundle, tmp_path: Path
) -> None:
    path = bundle("sh", "-c", "read line; echo got $line; exit 3")
    with serving(settings, tmp_path / "serve.log"):
        process = subprocess.Popen(
            [SHIMLEDGER, "--debug", "run", "--rm", "-i", "--bundle", str(path), "h1"],
            env=cli_env(settings), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        out, err = process.communicate("hello\n", timeout=60)
        assert process.returncode == 3, err
        assert out == "got hello\n"
        assert HANDED in err
        events = history(settings, "h1")
    by_client = [e for e in events if e["cause"]["kind"] == "cli"]
    assert [e["type"] for e in by_client] == ["Created", "Started", "Deleted"]
    for event in by_client:
        assert event["cause"]["pid"] == process.pid
        assert event["cause"]["uid"] == os.getuid()
        assert event["cause"]["command"] == f"shimledger --debug run --rm -i --bundle {path} h1"


def test_without_serve_or_with_no_serve_set_the_command_runs_in_its_own_process(
    settings: Settings, tmp_path: Path
) -> None:
    alone = shimledger(settings, "--debug", "list")
    assert alone.returncode == 0, alone.stderr
    assert HANDED not in alone.stderr
    with serving(settings, tmp_path / "serve.log"):
        handed = shimledger(settings, "--debug", "list")
        forced = shimledger(settings, "--debug", "list", SHIMLEDGER_NO_SERVE="1")
    assert HANDED in handed.stderr
    assert forced.returncode == 0, forced.stderr
    assert HANDED not in forced.stderr
    assert alone.stdout == handed.stdout == forced.stdout


def test_a_stale_control_socket_is_passed_over(settings: Settings) -> None:
    settings.state.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(handoff.control_socket(str(settings.state)))
    stale.close()  # the file stays; nobody listens: a serve killed by SIGKILL
    result = shimledger(settings, "--debug", "list")
    assert result.returncode == 0, result.stderr
    assert HANDED not in result.stderr


def test_a_serve_that_refuses_the_client_leaves_the_command_to_it(settings: Settings) -> None:
    """A serve of another version says so; the client runs the command itself."""
    settings.state.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(handoff.control_socket(str(settings.state)))
    listener.listen(1)
    seen: list[handoff.Request] = []

    def other_version() -> None:
        client, _ = listener.accept()
        request, fds = handoff.receive_request(client)
        for fd in fds:
            os.close(fd)
        seen.append(request)
        handoff.send(client, {"refused": "serve runs version 0"})
        client.close()

    server = threading.Thread(target=other_version)
    server.start()
    try:
        result = shimledger(settings, "--debug", "list", "--all-nodes")
    finally:
        server.join(timeout=60)
        listener.close()
    assert result.returncode == 0, result.stderr
    assert HANDED not in result.stderr
    assert seen[0].argv == ["--debug", "list", "--all-nodes"]
    assert seen[0].version == handoff.version()
    assert seen[0].env["SHIMLEDGER_STATE"] == str(settings.state)
    assert seen[0].stdio == [0, 1, 2]


def test_serve_refuses_a_client_of_another_version(settings: Settings, tmp_path: Path) -> None:
    with serving(settings, tmp_path / "serve.log"):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        client.connect(handoff.control_socket(str(settings.state)))
        request = handoff.Request("0 elsewhere", [], os.getcwd(), {}, [])
        handoff.send_request(client, request)
        reply = handoff.receive(client)
        client.close()
    assert reply is not None and "version" in str(reply.get("refused"))


def test_serve_refuses_a_request_whose_command_line_is_not_the_clients(
    settings: Settings, tmp_path: Path
) -> None:
    """History names who did it: a client cannot claim another command line."""
    with serving(settings, tmp_path / "serve.log"):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        client.connect(handoff.control_socket(str(settings.state)))
        forged = handoff.Request(handoff.version(), ["delete", "-f", "web"], os.getcwd(), {}, [])
        handoff.send_request(client, forged)
        reply = handoff.receive(client)
        client.close()
    assert reply == {"refused": "the request's command line is not the client's"}


def foreground(
    settings: Settings, path: Path, task_id: str, *, interactive: bool = False
) -> subprocess.Popen[str]:
    """A foreground `run --rm` of ``path`` (stdin attached with ``interactive``)."""
    return subprocess.Popen(
        [SHIMLEDGER, "--debug", "run", "--rm", *(["-i"] if interactive else []), "--bundle",
         str(path), task_id],
        env=cli_env(settings), stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def started(settings: Settings, task_id: str) -> bool:
    result = shimledger(settings, "state", task_id, SHIMLEDGER_NO_SERVE="1")
    return result.returncode == 0 and json.loads(result.stdout)["status"] == "running"


def served_command_pid(settings: Settings, task_id: str) -> int:
    """The pid of the process serve runs a foreground command in: its io dir says it."""
    (io_dir,) = (settings.state / "io" / settings.namespace).glob(f"{task_id}-*")
    return int(io_dir.name.rpartition("-")[2])


def test_serve_killed_in_the_middle_of_a_command_leaves_it_to_finish(
    settings: Settings, bundle, tmp_path: Path
) -> None:
    path = bundle("cat")
    with serving(settings, tmp_path / "serve.log") as serve:
        process = foreground(settings, path, "mid", interactive=True)
        wait_until(lambda: started(settings, "mid"), "the task to run", process=process)
        serve.kill()
        serve.wait()
        out, err = process.communicate("still here\n", timeout=60)
    assert process.returncode == 0, err
    assert out == "still here\n"
    assert [e["type"] for e in history(settings, "mid")] == [
        "Created", "Started", "Exited", "Deleted"
    ]  # fmt: skip
    assert not Path(handoff.control_socket(str(settings.state))).exists()


def test_a_client_killed_in_the_middle_of_a_command_cancels_it_as_sigkill_would(
    settings: Settings, bundle, tmp_path: Path
) -> None:
    """The command dies with its client; what it left is found and tracked, as after a
    SIGKILL of the in-process CLI: the task is running and recorded, its io dir removed."""
    path = bundle("sleep", "300")  # not reading stdin: the dead command's FIFOs end nothing
    with serving(settings, tmp_path / "serve.log"):
        process = foreground(settings, path, "orphan")
        wait_until(lambda: started(settings, "orphan"), "the task to run", process=process)
        command = served_command_pid(settings, "orphan")
        assert command != process.pid
        process.kill()
        process.communicate(timeout=60)
        wait_until(lambda: not _alive(command), "the handed command to die with its client")
        listing = shimledger(settings, "list", "--json")
        assert listing.returncode == 0, listing.stderr
        (task,) = json.loads(listing.stdout)
        assert (task["id"], task["status"]) == ("orphan", "running")
        swept = shimledger(settings, "reconcile")
        assert f"cleaned\t-\tstdio FIFOs of a foreground command that died (pid {command})" in (
            swept.stdout
        ), swept.stderr
        assert not list((settings.state / "io" / settings.namespace).glob("orphan-*"))


def test_signals_to_the_client_reach_the_handed_command(
    settings: Settings, bundle, tmp_path: Path
) -> None:
    """SIGTERM to a foreground `run` cancels it as it does in-process: the container is
    signalled, and the command ends with the container's status."""
    script = "trap 'echo term; exit 7' TERM; echo ready; sleep 300 & wait"  # a trap ends wait
    path = bundle("sh", "-c", script)
    with serving(settings, tmp_path / "serve.log"):
        process = foreground(settings, path, "sig")
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert "term" in out, err
    assert process.returncode == 7, err


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, T, Z, ...), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z")


@pytest.mark.parametrize(
    "prefix",
    [["unshare", "--uts"], ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]],
    ids=["other-uts-namespace", "fewer-capabilities"],
)
def test_a_client_unlike_serve_runs_its_command_itself(
    settings: Settings, tmp_path: Path, prefix: list[str]
) -> None:
    """A client in other namespaces (its paths and host name are not serve's) or with fewer
    capabilities (serve would do for it what it may not) keeps its command."""
    with serving(settings, tmp_path / "serve.log"):
        result = subprocess.run([*prefix, SHIMLEDGER, "--debug", "list"], env=cli_env(settings),
                                text=True, capture_output=True, stdin=subprocess.DEVNULL,
                                timeout=60)  # fmt: skip
        handed = shimledger(settings, "--debug", "list")
    assert HANDED in handed.stderr  # the same command, from a client like serve
    assert HANDED not in result.stderr
    assert "refused" not in result.stderr


def test_commands_handed_to_a_serve_on_a_postgresql_store(
    settings: Settings, bundle, tmp_path: Path, postgres_url: str
) -> None:
    """serve's forks open connections of their own: the store is shared, not a socket."""
    on_pg = dataclasses.replace(settings, store=postgres_url)
    path = bundle("sh", "-c", "echo on pg; exit 4")
    with serving(on_pg, tmp_path / "serve.log"):
        ran = shimledger(on_pg, "--debug", "run", "--rm", "--bundle", str(path), "pg1")
        listed = shimledger(on_pg, "--debug", "run", "-d", "--bundle", str(path), "pg2")
        events = history(on_pg, "pg1")
    assert (ran.returncode, ran.stdout) == (4, "on pg\n"), ran.stderr
    assert HANDED in ran.stderr and HANDED in listed.stderr
    assert [e["type"] for e in events] == ["Created", "Started", "Exited", "Deleted"]
    assert shimledger(on_pg, "delete", "-f", "pg2").returncode == 0


def test_a_handed_command_has_the_clients_cwd_and_umask_and_its_log_is_complete(
    settings: Settings, tmp_path: Path
) -> None:
    """`spec` writes config.json where the client is, with the client's umask; the log file
    is flushed before the client exits. (The client's PATH finding the runtime is
    test_bad_input's wrapped runc, run served.)"""
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "from-env.log"
    with serving(settings, tmp_path / "serve.log"):
        result = subprocess.run(
            ["sh", "-c", f"umask 077; exec {SHIMLEDGER} --debug --log {log} spec"],
            env=cli_env(settings), cwd=work, text=True,
            capture_output=True, stdin=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (work / "config.json").stat().st_mode & 0o777 == 0o600
    assert HANDED in log.read_text()  # the log is complete when the client has exited


def test_ctrl_z_stops_the_handed_command_with_its_client_and_fg_resumes_both(
    settings: Settings, bundle, tmp_path: Path
) -> None:
    path = bundle("sh", "-c", "trap 'exit 7' TERM; sleep 300 & wait")
    with serving(settings, tmp_path / "serve.log"):
        process = foreground(settings, path, "job")
        wait_until(lambda: started(settings, "job"), "the task to run", process=process)
        command = served_command_pid(settings, "job")
        process.send_signal(signal.SIGTSTP)
        wait_until(lambda: _state(command) == "T" and _state(process.pid) == "T",
                   "the command and its client to stop")  # fmt: skip
        process.send_signal(signal.SIGCONT)
        wait_until(lambda: _state(command) != "T" and _state(process.pid) != "T",
                   "the command and its client to go on")  # fmt: skip
        process.send_signal(signal.SIGTERM)  # reaches the container, still relayed
        process.communicate(timeout=60)
    assert process.returncode == 7
