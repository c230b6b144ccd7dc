"""containerd's identifier rules, applied to task IDs and namespaces before anything is made.

The same rules keep an ID safe as a path component, a runc container name and a shim flag.
"""

from __future__ import annotations

import re

from domain.errors import InvalidArgumentError

MAX_IDENTIFIER_LENGTH = 76
_IDENTIFIER = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$", re.ASCII)


def validate_identifier(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid containerd identifier, else raise InvalidArgumentError."""
    if not value:
        raise InvalidArgumentError(f"{kind} must not be empty")
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise InvalidArgumentError(
            f"{kind} {value[:20]!r}... is {len(value)} characters; "
            f"the limit is {MAX_IDENTIFIER_LENGTH}"
        )
    if not _IDENTIFIER.match(value):
        raise InvalidArgumentError(
            f"{kind} {value!r} is invalid: use letters and digits, "
            "separated by single '.', '_' or '-'"
        )
    return value
