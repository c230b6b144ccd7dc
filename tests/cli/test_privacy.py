"""Trust and privacy through the real CLI: what another local user can read, what history
keeps of a secret, files written in shared directories, and one root per state dir."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cli.settings import Settings
from tests.cli.privacy_helpers import as_nobody, cli, nobody_cli
from tests.conftest import teardown, verify


@pytest.fixture
def host(settings: Settings) -> Iterator[Settings]:
    """Root and state as on a host (/var/lib, /run): under directories every user may
    search, so only the modes shimledger gives its own files keep other users out."""
    top = Path(tempfile.mkdtemp(prefix="slp-", dir="/tmp"))
    top.chmod(0o755)
    settings.state.chmod(0o755)
    ours = replace(settings, root=top / "lib")
    try:
        yield ours
        leftovers = teardown(ours)
        assert not leftovers, f"the test left these behind: {leftovers}"
        assert not any(verify(ours).values())
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A /tmp of our own: world-writable and sticky, under a directory all may search."""
    top = Path(tempfile.mkdtemp(prefix="slt-", dir="/tmp"))
    top.chmod(0o755)
    shared = top / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    yield shared
    shutil.rmtree(top, ignore_errors=True)


def _secret_bundle(bundle: Callable[..., Path], *args: str) -> Path:
    path = bundle(*args)
    spec = json.loads((path / "config.json").read_text())
    spec["process"]["env"].append("DB_PASSWORD=in-the-config")
    (path / "config.json").write_text(json.dumps(spec))
    return path


def test_another_user_cannot_read_history_views_or_a_working_bundle(host, bundle) -> None:
    assert cli(host, "run", "-d", "--bundle", str(_secret_bundle(bundle, "sleep", "300")),
               "private").returncode == 0  # fmt: skip
    try:
        assert cli(host, "events").returncode == 0  # every view has its file now
        working = host.state / host.namespace / "private"
        files = [host.root / "events.db", *sorted((host.root / "projections").glob("*.db")),
                 working / "config.json", working / "state.json"]  # fmt: skip
        assert len(files) == 6 and all(f.is_file() for f in files)
        for path in files:
            read = as_nobody("cat", str(path))
            assert read.returncode != 0 and "Permission denied" in read.stderr, path
            assert "in-the-config" not in read.stdout
        for path in [host.root / "events.db", working / "config.json", working / "state.json"]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for top in (host.root, host.state / host.namespace, host.state / "locks"):
            for path in [top, *top.rglob("*")]:
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode):
                    assert stat.S_IMODE(mode) == 0o700, path
        wal = [Path(f"{host.root / 'events.db'}{suffix}") for suffix in ("-wal", "-shm")]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in wal if p.exists())
    finally:
        assert cli(host, "delete", "-f", "private").returncode == 0


def test_history_as_another_user_says_in_one_line_that_it_needs_root(host, bundle) -> None:
    assert cli(host, "run", "--rm", "--bundle", str(bundle("true")), "done").returncode == 0
    for args in (["history", "done"], ["events"], ["audit"], ["projections", "status"]):
        result = nobody_cli(host, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
        assert "needs root" in result.stderr and str(host.root) in result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_secrets_on_the_command_line_never_reach_history(settings, bundle) -> None:
    assert cli(settings, "run", "-d", "--bundle", str(bundle("sleep", "300")),
               "execs").returncode == 0  # fmt: skip
    try:
        done = cli(settings, "exec", "--env", "DB_PASSWORD=hunter2", "-e", "PLAIN=visible-1",
                   "--env=API_TOKEN=t0ken-2", "execs", "--", "sh", "-c",
                   "MYSQL_PWD=s3cret-3 true")  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        assert cli(settings, "delete", "-f", "execs").returncode == 0
    history = json.loads(cli(settings, "history", "--json", "execs").stdout)
    [command] = {e["cause"]["command"] for e in history if e["type"] == "ExecAdded"}
    assert command == (
        "shimledger exec --env DB_PASSWORD=<redacted> -e PLAIN=<redacted> "
        "--env=API_TOKEN=<redacted> execs -- sh -c MYSQL_PWD=<redacted> true"
    )
    stored = b"".join(p.read_bytes() for p in settings.root.glob("events.db*"))
    for secret in (b"hunter2", b"visible-1", b"t0ken-2", b"s3cret-3"):
        assert secret not in stored


def test_audit_html_in_a_shared_directory_follows_no_planted_link(settings, shared_dir) -> None:
    victim = shared_dir.parent / "victim"
    victim.write_text("precious\n")
    planted = as_nobody("ln", "-s", str(victim), str(shared_dir / ".audit.html.partial"))
    assert planted.returncode == 0, planted.stderr
    page = shared_dir / "audit.html"
    result = cli(settings, "audit", "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious\n"
    mode = page.lstat().st_mode
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600 and page.stat().st_uid == 0
    assert "<html" in page.read_text()
    assert sorted(p.name for p in shared_dir.iterdir()) == [".audit.html.partial", "audit.html"]


def test_a_pid_file_in_a_shared_directory_follows_no_planted_link(settings, bundle,
                                                                   shared_dir) -> None:  # fmt: skip
    victim = shared_dir.parent / "victim"
    victim.write_text("precious\n")
    assert as_nobody("ln", "-s", str(victim), str(shared_dir / ".pid.partial")).returncode == 0
    pid_file = shared_dir / "pid"
    result = cli(settings, "create", "--pid-file", str(pid_file), "--bundle",
                 str(bundle("true")), "pidded")  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr
        assert victim.read_text() == "precious\n"
        assert stat.S_ISREG(pid_file.lstat().st_mode)
        assert stat.S_IMODE(pid_file.stat().st_mode) == 0o644  # as runc leaves it
        state = json.loads(cli(settings, "state", "pidded").stdout)
        assert int(pid_file.read_text()) == state["pid"]
    finally:
        assert cli(settings, "delete", "-f", "pidded").returncode == 0


def test_a_state_dir_belongs_to_one_root(settings, bundle, tmp_path) -> None:
    assert cli(settings, "run", "-d", "--bundle", str(bundle("sleep", "300")),
               "mine").returncode == 0  # fmt: skip
    other = replace(settings, root=tmp_path / "other-root")
    try:
        for args in (["list"], ["reconcile"], ["delete", "-f", "mine"], ["serve"]):
            refused = cli(other, *args)
            assert refused.returncode == 1, (args, refused.stderr)
            [line] = refused.stderr.strip().splitlines()
            assert str(settings.root) in line and str(other.root) in line, line
        other_store = cli(settings, "--store", f"sqlite:///{tmp_path}/else.db", "list")
        assert other_store.returncode == 1 and "else.db" in other_store.stderr
        assert json.loads(cli(settings, "state", "mine").stdout)["status"] == "running"
    finally:
        assert cli(settings, "delete", "-f", "mine").returncode == 0
    assert not (other.root / "events.db").exists()


def test_containers_still_run_as_their_own_user_with_their_own_umask(host, bundle) -> None:
    """Nothing of ours reaches a container: a non-root user in it still runs, and the
    umask of its init and of an exec is what it was (runc's 0022)."""
    path = bundle("sh", "-c", "id -u; umask; sleep 300")
    spec = json.loads((path / "config.json").read_text())
    spec["process"]["user"] = {"uid": 65534, "gid": 65534}
    (path / "config.json").write_text(json.dumps(spec))
    assert cli(host, "run", "-d", "--bundle", str(path), "nobody-inside").returncode == 0
    try:
        ran = cli(host, "exec", "nobody-inside", "--", "sh", "-c", "id -u; umask")
        assert (ran.returncode, ran.stdout) == (0, "65534\n0022\n"), ran.stderr
    finally:
        assert cli(host, "delete", "-f", "nobody-inside").returncode == 0
    log = cli(host, "logs", "nobody-inside")
    assert log.stdout == "65534\n0022\n", log.stderr
