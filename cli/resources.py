"""runc update's flags, read as runc reads them, folded into an OCI LinuxResources object.

Sizes take runc's forms (``512m``, ``1.5g``, ``100MiB``, ``-1`` for no limit: binary
multiples, as go-units' RAMInBytes); every other value is a plain integer. A value runc
would refuse is refused here with runc's words, before anything reaches the shim.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_SIZE = re.compile(r"(\d+(?:\.\d+)*) ?([kmgtp])?i?b?", re.IGNORECASE | re.ASCII)
_MULTIPLES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}

# flag -> (section of LinuxResources, key, how the value is read)
SIZES = {"memory": ("memory", "limit"), "memory-reservation": ("memory", "reservation"),
         "memory-swap": ("memory", "swap"), "kernel-memory": ("memory", "kernel"),
         "kernel-memory-tcp": ("memory", "kernelTCP")}  # fmt: skip
UNSIGNED = {"cpu-share": ("cpu", "shares"), "cpu-period": ("cpu", "period"),
            "cpu-rt-period": ("cpu", "realtimePeriod"),
            "blkio-weight": ("blockIO", "weight")}  # fmt: skip
SIGNED = {"cpu-quota": ("cpu", "quota"), "cpu-rt-runtime": ("cpu", "realtimeRuntime"),
          "pids-limit": ("pids", "limit")}  # fmt: skip
TEXTS = {"cpuset-cpus": ("cpu", "cpus"), "cpuset-mems": ("cpu", "mems")}


class ResourceError(ValueError):
    """A flag's value runc would refuse, or a resources file that is not LinuxResources."""


def size(flag: str, value: str) -> int:
    """Bytes of a size as runc's update reads it; ``-1`` is "no limit"."""
    if value == "-1":
        return -1
    match = _SIZE.fullmatch(value.strip())
    if not match:
        raise ResourceError(f"invalid value for {flag}: invalid size: {value!r}")
    number, unit = match.groups()
    return int(float(number) * _MULTIPLES[(unit or "").lower()])


def _integer(flag: str, value: str, *, unsigned: bool) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        raise ResourceError(f"invalid value for {flag}: {value!r} is not an integer") from None
    if unsigned and number < 0:
        raise ResourceError(f"invalid value for {flag}: {value} is negative")
    return number


def read_resources_file(path: Path, stdin_text: str | None) -> dict[str, Any]:
    """``-r FILE`` (``-`` for stdin): an OCI LinuxResources JSON object."""
    try:
        text = stdin_text if stdin_text is not None else path.read_text()
        resources = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ResourceError(f"cannot read resources from {path}: {exc}") from None
    if not isinstance(resources, dict):
        raise ResourceError(f"resources in {path} must be a JSON object (OCI LinuxResources)")
    return resources


def fold(resources: dict[str, Any], flags: dict[str, str | None]) -> dict[str, Any]:
    """``resources`` with each given flag set on it (a flag wins over the file's value).

    ``flags`` maps runc's flag names (without dashes) to their text, None when not given.
    """
    for flag, text in flags.items():
        if text is None:
            continue
        value: int | str
        if flag in SIZES:
            section, key = SIZES[flag]
            value = size(flag, text)
        elif flag in UNSIGNED:
            section, key = UNSIGNED[flag]
            value = _integer(flag, text, unsigned=True)
        elif flag in SIGNED:
            section, key = SIGNED[flag]
            value = _integer(flag, text, unsigned=False)
        else:
            section, key = TEXTS[flag]
            value = text
        part = resources.setdefault(section, {})
        if not isinstance(part, dict):
            raise ResourceError(f"resources' {section} must be a JSON object")
        part[key] = value
    return resources
