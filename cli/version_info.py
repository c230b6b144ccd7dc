"""What `shimledger -v` prints: runc's shape (name and version, then the OCI spec version),
so a runc user's habit and a script's `runc -v`-style check both work."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version

_SPEC = re.compile(r"^spec: (\S+)$", re.MULTILINE)
_RUNC = re.compile(r"^runc version (\S+)$", re.MULTILINE)


def version_text() -> str:
    """Our version, and the OCI runtime spec that the runc on PATH (what the shim runs)
    implements: the spec is runc's, so it is asked rather than claimed."""
    try:
        ours = version("shimledger")
    except PackageNotFoundError:  # run from a checkout that was never installed
        ours = "unknown (not installed)"
    return "\n".join(
        [f"shimledger version {ours}", _runc_spec(), f"python: {platform.python_version()}"]
    )


def _runc_spec() -> str:
    runc = shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/usr/local/sbin")
    if runc is None:
        return "spec: unknown (runc not found on PATH)"
    try:
        said = subprocess.run(
            [runc, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"spec: unknown ({runc} --version failed: {exc})"
    spec, runc_version = _SPEC.search(said), _RUNC.search(said)
    if spec is None:
        return f"spec: unknown ({runc} --version did not say)"
    which = f"runc {runc_version.group(1)}" if runc_version else "runc"
    return f"spec: {spec.group(1)} ({which}, {runc})"
