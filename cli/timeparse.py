"""Times as users type them: ISO 8601, or relative to now like ``10m``, ``2h``, ``1d``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from domain.errors import InvalidArgumentError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    match = _RELATIVE.match(text.strip())
    if not match:
        raise InvalidArgumentError(f"{text!r} is not a duration like 30s, 10m, 2h, 1d or 1w")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An absolute time; a bare duration means that long ago. Naive times are local."""
    now = now or datetime.now().astimezone()
    if _RELATIVE.match(text.strip()):
        return now - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"{text!r} is not a time: use ISO 8601 (2026-11-29T14:00) or a duration ago (10m)"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()
