"""Times as users type them: ISO 8601, or relative to now like ``10m``, ``2h``, ``1d``.

A value that is no time, or one outside what a datetime holds (``99999999999d``,
``0001-01-01T00:00+05:00``, which is in year 0 in UTC), is an InvalidArgumentError naming
the value: the user typed it, so it is never an OverflowError from deep in a query.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from domain.errors import InvalidArgumentError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _out_of_range(text: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{text!r} is out of range: times run from year 1 to 9999")


def parse_duration(text: str) -> timedelta:
    match = _RELATIVE.match(text.strip())
    if not match:
        raise InvalidArgumentError(f"{text!r} is not a duration like 30s, 10m, 2h, 1d or 1w")
    try:
        return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    except OverflowError:  # more days than a timedelta holds (or an infinite float)
        raise InvalidArgumentError(f"{text!r} is too long a duration") from None


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An absolute time; a bare duration means that long ago. Naive times are local.

    The time must also exist in UTC, where the views compare times: that is checked here.
    """
    now = now or datetime.now().astimezone()
    try:
        if _RELATIVE.match(text.strip()):
            moment = now - parse_duration(text)
        else:
            moment = _iso(text)
            moment = moment if moment.tzinfo else moment.astimezone()
        moment.astimezone(UTC)
    except (OverflowError, ValueError):  # past year 1 or 9999 once moved to UTC
        raise _out_of_range(text) from None
    return moment


def _iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"{text!r} is not a time: use ISO 8601 (2026-11-29T14:00) or a duration ago (10m)"
        ) from None


def time_option(option: str, text: str | None) -> datetime | None:
    """``--since``/``--until``/``--at``: None if not given; an error names the option too."""
    if text is None:
        return None
    try:
        return parse_time(text)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{option}: {exc}") from None


def duration_option(option: str, text: str) -> timedelta:
    """A duration option such as ``--stuck-after``; an error names the option."""
    try:
        return parse_duration(text)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{option}: {exc}") from None
