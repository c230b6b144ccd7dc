"""The time shimledger records for a fact whose own time nobody reported."""

from __future__ import annotations

from datetime import datetime


def now() -> datetime:
    """Local time with its offset, as eventsourcing stamps events."""
    return datetime.now().astimezone()
