"""Which event store a view file was built from, so that one built from another is rebuilt.

Views live under ``<root>/projections`` while the store is chosen per command
(``--store``): a view caught up from one store and then read against another would mix
two histories (a lag of -12 in ``projections status``). So each file keeps the store's
location (as the store names itself, without a password) and a fingerprint of that
store's first event: a different location, or a store recreated at the same one (whose
first event differs), is another history, and the view is rebuilt from the current one.
"""

from __future__ import annotations

from typing import Any, Protocol

import aiosqlite


class IdentifiedSource(Protocol):
    """The part of an event source that says which store it is."""

    def location(self) -> str: ...
    async def read(self, after: int, limit: int) -> list[tuple[int, Any]]: ...


def fingerprint(event: Any) -> str:
    """An event told apart from any other store's: aggregate ids are derived from task
    names, so two stores that began with the same ``run`` share the id, not the time."""
    return f"{event.originator_id}/{event.originator_version}@{event.timestamp.isoformat()}"


async def record(db: aiosqlite.Connection, location: str, first_event: Any) -> None:
    """Remember the store (inside the caller's transaction, with the first page)."""
    await db.execute(
        "INSERT OR REPLACE INTO store (id, location, first_event) VALUES (1, ?, ?)",
        (location, fingerprint(first_event)),
    )


async def other_store(db: aiosqlite.Connection, source: IdentifiedSource) -> str | None:
    """The store the file was built from, when it is not ``source``; None if it is (or
    when the file holds nothing yet, which any store may fill)."""
    async with db.execute("SELECT location, first_event FROM store WHERE id = 1") as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    location, first = str(row[0]), str(row[1])
    if location != source.location():
        return location
    page = await source.read(0, 1)
    if not page or fingerprint(page[0][1]) != first:
        return f"{location} (an earlier store at that place)"
    return None
