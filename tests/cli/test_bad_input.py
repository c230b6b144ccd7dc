"""Bad input through the real CLI: exit 1, one clear line, nothing made and nothing recorded.

Every case runs the installed ``shimledger`` in a process of its own, against real runc and
the real shim, with a state dir of its own (the ``settings`` fixture, which also fails the
test if a runc container or a shim process is left). On top of that each case checks that
no working bundle is left under ``<state>/<namespace>/`` and that the history did not grow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from busybox_bundle import make_bundle

from adapters.shim_binary import search_path
from cli.bootstrap import Settings
from tests.conftest import cli_env

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    """Run the shimledger command as a user would, on the test's own root and state dirs."""
    env = cli_env(settings)

    def run(*args: str, path: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
        extra = {} if path is None else {"PATH": path}
        return subprocess.run([SHIMLEDGER, *args], env=env | extra, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip

    return run


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good bundle (``sleep 300``) for the cases where only something else is wrong.

    Module-scoped to keep the file fast: shimledger never writes to a user's bundle.
    """
    return make_bundle(tmp_path_factory.mktemp("sleeper"), ["sleep", "300"])


def refused(result: subprocess.CompletedProcess[str], *says: str) -> str:
    """Assert runc's way of failing: exit 1, one ``shimledger: `` line, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("shimledger: "), result.stderr
    assert "Traceback" not in result.stderr
    for words in says:
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
    return lines[0]


def nothing_left(cli: Cli, settings: Settings, events_before: str = "") -> None:
    """No working bundle, no runc container state, and the history is as it was."""
    working = settings.state / settings.namespace
    made = sorted(p.name for p in working.iterdir()) if working.is_dir() else []
    assert made == [], f"working bundles left: {made}"
    runc_root = settings.state / "runc" / settings.namespace
    containers = sorted(p.name for p in runc_root.iterdir()) if runc_root.is_dir() else []
    assert containers == [], f"runc containers left: {containers}"
    assert cli("events", "--json").stdout == events_before


def edited(bundle: Callable[..., Path], change: Callable[[dict[str, Any], Path], None]) -> Path:
    """A fresh busybox bundle whose config.json went through ``change(spec, bundle)``."""
    path = bundle("true")
    spec = json.loads((path / "config.json").read_text())
    change(spec, path)
    (path / "config.json").write_text(json.dumps(spec))
    return path


# --- task IDs: containerd's identifier rules --------------------------------------------------


# containerd's identifiers: letters and digits in runs separated by single '.', '_' or '-',
# at most 76 characters (domain/identifiers.py, containerd's pkg/identifiers).
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["", ], "must not be empty"),
        (["a" * 77], "77 characters; the limit is 76"),
        (["../x"], "'../x' is invalid"),
        (["a b"], "'a b' is invalid"),
        (["héllo"], "'héllo' is invalid"),
        (["a..b"], "'a..b' is invalid"),
        (["trailing."], "'trailing.' is invalid"),
        (["--", "-leading-dash"], "'-leading-dash' is invalid"),
        # Without "--" it reads as an option: a usage error, which is exit 1 too (as runc).
        (["-leading-dash"], "No such option"),
    ],
    ids=["empty", "77-chars", "dot-dot-slash", "space", "unicode", "double-dot",
         "trailing-dot", "leading-dash", "leading-dash-as-option"],
)  # fmt: skip
def test_an_id_that_breaks_the_identifier_rules_is_refused(cli, settings, sleeper, args, says):
    refused(cli("create", "--bundle", str(sleeper), *args), says)
    nothing_left(cli, settings)


def test_an_id_of_76_characters_is_the_longest_accepted(cli, settings, sleeper) -> None:
    longest = "a" * 76
    assert cli("create", "--bundle", str(sleeper), longest).returncode == 0
    assert cli("list", "-q").stdout.split() == [longest]
    assert cli("delete", longest).returncode == 0
    assert (settings.state / settings.namespace / longest).exists() is False


def test_an_invalid_namespace_is_refused(cli, settings, sleeper) -> None:
    refused(cli("--namespace", "../x", "create", "--bundle", str(sleeper), "x"), "invalid")
    nothing_left(cli, settings)


# --- the bundle and its config.json ------------------------------------------------------------


def test_a_bundle_without_config_json_is_refused(cli, settings, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    refused(cli("create", "--bundle", str(tmp_path / "empty"), "x"), "has no config.json")
    nothing_left(cli, settings)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not valid JSON"),
        ("", "is not valid JSON"),
        ("\udcff\udcfe", "is not valid JSON"),  # not UTF-8 (written as raw bytes below)
        ("[1, 2]", "must hold a JSON object"),
        ('"config"', "must hold a JSON object"),
        ("null", "must hold a JSON object"),
    ],
    ids=["malformed", "empty-file", "not-utf8", "array", "string", "null"],
)
def test_a_config_json_that_is_not_a_json_object_is_refused(cli, settings, bundle, text, says):
    path = bundle("true")
    (path / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    refused(cli("create", "--bundle", str(path), "x"), str(path / "config.json"), says)
    nothing_left(cli, settings)


def test_a_config_json_that_is_a_fifo_is_refused_not_waited_on(cli, settings, tmp_path) -> None:
    """A FIFO never gives EOF: reading it would hang the CLI (deaf even to SIGTERM).

    The timeout only guards against that hang; a correct refusal comes in well under it.
    """
    path = tmp_path / "fifo-bundle"
    path.mkdir()
    os.mkfifo(path / "config.json")
    try:
        result = cli("create", "--bundle", str(path), "x", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("create blocked reading a FIFO config.json instead of refusing it")
    refused(result, "config.json")
    nothing_left(cli, settings)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda spec, path: spec["root"].update(path=str(path / "gone")), "does not exist"),
        (lambda spec, path: spec["root"].update(path="gone"), "does not exist"),
        (lambda spec, path: spec.pop("root"), "no root.path"),
        (lambda spec, path: spec["process"].update(terminal=True), "terminal=true"),
        (lambda spec, path: spec.pop("process"), "no process.args"),
    ],
    ids=["missing-rootfs", "missing-relative-rootfs", "no-root", "terminal-true", "no-process"],
)
def test_a_config_shimledger_cannot_run_is_refused_before_anything_starts(
    cli, settings, bundle, change, says
) -> None:
    refused(cli("create", "--bundle", str(edited(bundle, change)), "x"), says)
    nothing_left(cli, settings)


# --- signals ---------------------------------------------------------------------------------


def test_an_unknown_signal_is_refused_and_the_task_keeps_running(cli, settings, sleeper) -> None:
    assert cli("run", "-d", "--bundle", str(sleeper), "target").returncode == 0
    before = json.loads(cli("state", "target").stdout)
    history = cli("events", "--json").stdout
    for signal in ("NOPE", "99", "SIGNOPE"):
        refused(cli("kill", "target", signal), "unknown signal", repr(signal))
    after = json.loads(cli("state", "target").stdout)
    assert (after["status"], after["pid"]) == ("running", before["pid"])
    assert cli("events", "--json").stdout == history  # no Killed was recorded


def test_a_real_time_signal_number_is_sent_as_runc_sends_it(cli, settings, sleeper) -> None:
    """runc's kill takes any number (`runc kill ID 37` works with runc 1.1.5): SIGRTMIN+3
    is how systemd in a container is told to shut down. 37 is not an unknown signal."""
    assert cli("run", "-d", "--bundle", str(sleeper), "rt").returncode == 0
    result = cli("kill", "rt", "37")
    assert result.returncode == 0, result.stderr
    killed = [json.loads(line) for line in cli("events", "--json").stdout.splitlines()]
    assert (killed[-1]["type"], killed[-1]["signal"]) == ("Killed", 37)


# --- runtimes ---------------------------------------------------------------------------------


def test_an_unknown_runtime_name_is_refused(cli, settings, sleeper) -> None:
    result = cli("create", "--runtime", "io.containerd.nope.v9", "--bundle", str(sleeper), "x")
    refused(result, "io.containerd.nope.v9", "containerd-shim-nope-v9 not found")
    nothing_left(cli, settings)


@pytest.mark.parametrize("kind", ["not-executable", "directory", "missing"])
def test_a_runtime_path_that_is_not_an_executable_file_is_refused(
    cli, settings, sleeper, tmp_path, kind
) -> None:
    runtime = tmp_path / "shim"
    if kind == "not-executable":
        runtime.write_text("#!/bin/sh\nexit 0\n")
        runtime.chmod(0o644)
    elif kind == "directory":
        runtime.mkdir()
    result = cli("create", "--runtime", str(runtime), "--bundle", str(sleeper), "x")
    refused(result, str(runtime), "is not an executable file")
    nothing_left(cli, settings)


def test_a_runtime_that_is_not_a_shim_is_refused(cli, settings, sleeper) -> None:
    """An executable that fails its `start` action: no shim, no bundle, no history."""
    false = shutil.which("false", path=search_path())
    assert false is not None
    refused(cli("create", "--runtime", false, "--bundle", str(sleeper), "x"),
            "failed to start shim")  # fmt: skip
    nothing_left(cli, settings)


# --- a Create that fails half-way inside runc -----------------------------------------------


@pytest.mark.parametrize(
    ("change", "says"),
    [
        # runc 1.1.5 looks the program up in `runc create` (before the exec FIFO wait).
        (lambda spec, path: spec["process"].update(args=["/no/such/program"]),
         'exec: "/no/such/program": stat /no/such/program: no such file or directory'),
        (lambda spec, path: spec["process"].update(args=["no-such-program"]),
         'exec: "no-such-program": executable file not found in $PATH'),
        # runc's init makes the mounts in `runc create`, after the container was started.
        (lambda spec, path: spec["mounts"].append(
            {"destination": "/mnt/x", "type": "bind", "source": str(path / "absent"),
             "options": ["rbind"]}),
         "absent: no such file or directory"),
        # Valid JSON, but not what runc's Go types accept.
        (lambda spec, path: spec["process"].update(args=["true", 1]),
         "cannot unmarshal number"),
    ],
    ids=["absolute-args0-missing", "args0-not-on-path", "bind-source-missing", "args-not-strings"],
)  # fmt: skip
def test_a_create_runc_refuses_names_the_cause_and_leaves_nothing(
    cli, settings, bundle, change, says
) -> None:
    refused(cli("create", "--bundle", str(edited(bundle, change)), "x"),
            "OCI runtime create failed", says)  # fmt: skip
    nothing_left(cli, settings)


def test_a_runc_container_left_by_a_failed_create_is_removed(
    cli, settings, sleeper, tmp_path
) -> None:
    """runc removes what it made when its own create fails; a runc that dies between making
    the container and reporting success does not. Put the real runc behind a wrapper that
    makes the container and then fails, as such a runc would: shimledger must remove it."""
    real_runc = shutil.which("runc", path=search_path())
    assert real_runc is not None
    made = tmp_path / "made"
    wrapper = tmp_path / "bin" / "runc"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/sh\n"
        'case " $* " in\n'
        f'  *" create "*) {real_runc} "$@" || exit $?\n'
        f"    echo made > {made}\n"
        "    echo 'runc died after making the container' >&2; exit 1 ;;\n"
        "esac\n"
        f'exec {real_runc} "$@"\n'
    )
    wrapper.chmod(0o755)
    result = cli("create", "--bundle", str(sleeper), "halfway",
                 path=f"{wrapper.parent}{os.pathsep}{search_path()}")  # fmt: skip
    refused(result, "OCI runtime create failed")
    assert made.read_text() == "made\n", "the wrapper never got a container made"
    nothing_left(cli, settings)
    listing = subprocess.run([real_runc, "--root", str(settings.state / "runc" / "test"), "list",
                              "-q"], capture_output=True, text=True)  # fmt: skip
    assert listing.stdout.split() == []


# --- the same ID twice -------------------------------------------------------------------------


def test_the_same_id_twice_leaves_the_first_untouched(cli, settings, sleeper, bundle) -> None:
    assert cli("run", "-d", "--bundle", str(sleeper), "twice").returncode == 0
    before = json.loads(cli("state", "twice").stdout)
    history = cli("events", "--json").stdout
    refused(cli("create", "--bundle", str(bundle("true")), "twice"), "already exists")
    refused(cli("run", "-d", "--bundle", str(sleeper), "twice"), "already exists")
    after = json.loads(cli("state", "twice").stdout)
    assert (after["status"], after["pid"], after["bundle"]) == (
        "running", before["pid"], str(sleeper))  # fmt: skip
    assert cli("events", "--json").stdout == history
    assert sorted(p.name for p in (settings.state / settings.namespace).iterdir()) == ["twice"]


@pytest.mark.parametrize("namespace", ["io", "runc", "locks"])
def test_a_namespace_named_like_a_state_dir_entry_is_refused(
    cli: Cli, sleeper: Path, settings: Settings, namespace: str
) -> None:
    """<state>/io, runc and locks are shimledger's own: a namespace there would collide."""
    refused(cli("-n", namespace, "run", "-d", "--bundle", str(sleeper), "x"), "reserved")
    assert not (settings.state / namespace / "x").exists()
