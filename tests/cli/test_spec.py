"""spec as runc's (issue 13): runc's default config.json, refused over an existing one, and
a bundle that runs alike under runc and shimledger; bind sources read as runc reads them."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from busybox_bundle import make_rootfs

from cli.bootstrap import Settings
from tests.cli.piped import Cli, piped_cli, plain


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return piped_cli(settings)


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key of a JSON document as a path (lists merged): its shape, without values."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            paths.add(f"{prefix}/{key}")
            paths |= key_paths(inner, f"{prefix}/{key}")
    elif isinstance(value, list):
        for inner in value:
            paths |= key_paths(inner, f"{prefix}[]")
    return paths


@pytest.mark.parametrize("rootless", [False, True])
def test_spec_writes_runcs_default(real, tmp_path, rootless) -> None:
    flags = ["--rootless"] if rootless else []
    (tmp_path / "ours").mkdir()
    (tmp_path / "runcs").mkdir()
    result = plain("spec", "--bundle", str(tmp_path / "ours"), *flags)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    subprocess.run(["runc", "spec", *flags], cwd=tmp_path / "runcs", check=True)
    ours = json.loads((tmp_path / "ours" / "config.json").read_text())
    runcs = json.loads((tmp_path / "runcs" / "config.json").read_text())

    assert key_paths(ours) == key_paths(runcs)
    assert ours["process"]["terminal"] is runcs["process"]["terminal"] is True
    types = [n["type"] for n in ours["linux"]["namespaces"]]
    assert types == [n["type"] for n in runcs["linux"]["namespaces"]]
    assert ("user" in types, "network" in types) == (rootless, not rootless)
    assert [m["destination"] for m in ours["mounts"]] == [m["destination"] for m in runcs["mounts"]]


def test_spec_refuses_to_overwrite_like_runc(real, tmp_path) -> None:
    assert plain("spec", cwd=tmp_path).returncode == 0  # --bundle defaults to the cwd
    (tmp_path / "config.json").write_text("mine")
    again = plain("spec", "-b", str(tmp_path))
    assert again.returncode == 1
    assert again.stderr == "shimledger: File config.json exists. Remove it first\n"
    assert (tmp_path / "config.json").read_text() == "mine"
    runc = subprocess.run(["runc", "spec"], cwd=tmp_path, capture_output=True, text=True)
    assert runc.returncode == 1 and "File config.json exists. Remove it first" in runc.stderr

    missing = plain("spec", "--bundle", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "is not a directory" in missing.stderr


@pytest.mark.parametrize("rootless", [False, True])
def test_a_spec_bundle_runs_under_runc_and_under_shimledger(cli, tmp_path, rootless) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    make_rootfs(bundle / "rootfs")
    assert plain("spec", "-b", str(bundle), *(["--rootless"] if rootless else [])).returncode == 0
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False  # stdin is a pipe here, for runc and for us
    (bundle / "config.json").write_text(json.dumps(config))

    runc = subprocess.run(
        ["runc", "--root", str(tmp_path / "runc"), "run", "--bundle", str(bundle), "specced"],
        input="echo under-runc; exit 4", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (runc.returncode, runc.stdout) == (4, "under-runc\n"), runc.stderr

    # The default args are `sh`: with stdin attached, it runs what we type.
    ours = cli("run", "-i", "--rm", "specced", input="echo under-shimledger; exit 5", cwd=bundle)
    assert (ours.returncode, ours.stdout, ours.stderr) == (5, "under-shimledger\n", "")


def test_a_relative_bind_source_is_the_bundles_as_runc_reads_it(cli, bundle) -> None:
    path = bundle("cat", "/mnt/shared/hello")
    (path / "data").mkdir()
    (path / "data" / "hello").write_text("from the bundle\n")
    config = json.loads((path / "config.json").read_text())
    config["mounts"].append({"destination": "/mnt/shared", "type": "bind", "source": "data",
                             "options": ["rbind", "ro"]})  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    ran = cli("run", "-b", str(path), "bound")
    assert (ran.returncode, ran.stdout) == (0, "from the bundle\n"), ran.stderr
