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


_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
             "h": 3600.0}  # fmt: skip


def parse_go_duration(text: str) -> timedelta:
    """A duration as Go's time.ParseDuration reads it (``5s``, ``300ms``, ``1h30m``), the
    form runc's and docker's flags take; ``0`` alone is zero, as in Go."""
    stripped = text.strip()
    if stripped == "0":
        return timedelta(0)
    parts = _GO_PART.findall(stripped)
    if not parts or "".join(n + u for n, u in parts) != stripped:
        raise InvalidArgumentError(f"{text!r} is not a duration like 5s, 300ms or 1h30m")
    try:
        return timedelta(seconds=sum(float(n) * _GO_UNITS[u] for n, u in parts))
    except OverflowError:
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
