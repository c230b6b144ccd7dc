"""A real container's history, signed and proven: by the command, and by serve on its own.

Real runc and shim; the proof is checked by scripts/check_ledger_proof.py copied away from
the project, as an auditor would run it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.bootstrap import Settings
from tests.cli.test_cli import SHIMLEDGER
from tests.conftest import cli_env, serve_env
from tests.waiting import wait_until

CHECKER = Path(__file__).resolve().parents[2] / "scripts" / "check_ledger_proof.py"
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    env = cli_env(settings)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SHIMLEDGER, *args], env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip

    return run


def positions(cli: Cli, task_id: str) -> dict[str, int]:
    listed = cli("events", "--json", "--id", task_id).stdout
    events = [json.loads(line) for line in listed.splitlines()]
    return {e["type"]: e["position"] for e in events}


def test_a_real_containers_exit_is_proven_off_the_host(
    cli: Cli, bundle: Callable[..., Path], tmp_path: Path
) -> None:
    run = cli("run", "--rm", "--bundle", str(bundle("sh", "-c", "exit 3")), "proved")
    assert run.returncode == 3, run.stderr
    signed = cli("ledger", "checkpoint")
    assert signed.returncode == 0 and signed.stdout.startswith("signed head: "), signed.stderr
    verified = cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    exited = positions(cli, "proved")["Exited"]
    proof = cli("ledger", "prove", str(exited))
    assert proof.returncode == 0, proof.stderr
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    (auditor / "proof.json").write_text(proof.stdout)
    shutil.copy(CHECKER, auditor)
    key = cli("ledger", "key").stdout.strip()
    checked = subprocess.run(
        [sys.executable, CHECKER.name, "proof.json", "--key", key],
        cwd=auditor, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"OK: event {exited} (shimledger.task:Exited v3 of ")
    assert '"exit_status": 3' in checked.stdout


@pytest.mark.alone("starts a serve of its own, with its own checkpoint interval")
def test_serve_signs_heads_as_history_grows_and_on_stop(
    settings: Settings, cli: Cli, bundle: Callable[..., Path], tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen([SHIMLEDGER, "--debug", "serve", "--checkpoint-interval", "1s"],
                                 env=serve_env(settings), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: b"commands on" in log.read_bytes(), "serve to start", process=serve)
        assert cli("run", "--rm", "--bundle", str(bundle("true")), "first").returncode == 0
        deleted = positions(cli, "first")["Deleted"]

        def signed_past(position: int) -> bool:
            head = cli("ledger", "export-head")
            return head.returncode == 0 and json.loads(head.stdout)["position"] >= position

        wait_until(lambda: signed_past(deleted), "serve to sign the first run", process=serve)
        (settings.root / "ledger" / "signing-key.pem").chmod(0o644)  # a fault: said, survived
        assert cli("run", "--rm", "--bundle", str(bundle("true")), "second").returncode == 0
        last = positions(cli, "second")["Deleted"]
        wait_until(lambda: b"checkpoint not signed" in log.read_bytes(), "serve to say why",
                   process=serve)  # fmt: skip
        assert not signed_past(last)
        (settings.root / "ledger" / "signing-key.pem").chmod(0o600)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    said = log.read_text()
    assert serve.returncode == 0, said
    [fault] = {line for line in said.splitlines() if "checkpoint not signed" in line}
    assert fault.endswith("is readable by others: chmod 600 it, or replace it"), fault
    assert signed_past(last), said  # the head signed on stop covers the second run
    verified = cli("ledger", "verify")
    assert verified.returncode == 0, verified.stdout
