"""Times as users type them: ISO 8601, a Unix timestamp (``1764770400``, ``1764770400.5``),
or a duration ago: ours (``10m``, ``2h``, ``1d``, ``1w``) or Go's (``1h30m``, ``300ms``), the
forms `docker events --since` and `podman events --since` take.

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


_UNIX = re.compile(r"^\d+(?:\.\d{1,9})?$")


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An absolute time; a bare duration means that long ago. Naive times are local.

    Read in docker's order: a duration first (except ``0``), then digits as seconds since
    the epoch, then ISO 8601. The time must also exist in UTC, where the views compare
    times: that is checked here.
    """
    now = now or datetime.now().astimezone()
    stripped = text.strip()
    try:
        if _RELATIVE.match(stripped):
            moment = now - parse_duration(text)
        elif stripped != "0" and _GO_PART.match(stripped) and not _UNIX.match(stripped):
            moment = now - _go_duration_of_time(text)
        elif _UNIX.match(stripped):
            moment = datetime.fromtimestamp(float(stripped), UTC).astimezone()
        else:
            moment = _iso(text)
            moment = moment if moment.tzinfo else moment.astimezone()
        moment.astimezone(UTC)
    except (OverflowError, ValueError, OSError):  # past year 1 or 9999 (or the C library's)
        raise _out_of_range(text) from None
    return moment


def _go_duration_of_time(text: str) -> timedelta:
    """A Go duration where a time was asked for: its error says every form a time takes."""
    try:
        return parse_go_duration(text)
    except InvalidArgumentError:
        raise _not_a_time(text) from None


def _not_a_time(text: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{text!r} is not a time: use ISO 8601 (2026-11-29T14:00), a Unix timestamp "
        "(1764770400) or a duration ago (10m, 1h30m)"
    )


def _iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _not_a_time(text) from None


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
