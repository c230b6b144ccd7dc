"""The mapper that chains every event it writes to the one before it in its aggregate.

Chaining happens where domain events become stored bytes, so neither the domain nor the
services know of it, and every writer (CLI, serve, the benchmark's bulk builder) chains
the same way. The link is the digest of the predecessor's *stored* bytes: the mapper
remembers the last event it read or wrote of each recent aggregate (hashing it only when
an event is linked to it, not on every load), so a save after a load (every command's
pattern) costs no extra read; otherwise it reads the predecessor from the recorder. A
conflicting save (another writer took the version) fails in the store's unique key before
any link matters; the retry reloads, and so relinks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent

from domain.ledger.chain import GENESIS, LINK_FIELD, event_digest, with_link

RECENT = 4096
"""Aggregates whose last digest is kept: more than one process ever has live at once."""

Predecessor = Callable[[UUID, int], Sequence[StoredEvent]]
"""Reads one stored version of an aggregate (the recorder's select_events, narrowed)."""


def digest_of(stored: StoredEvent) -> str:
    originator = stored.originator_id
    hex_id = originator.hex if isinstance(originator, UUID) else str(originator)
    return event_digest(hex_id, stored.originator_version, stored.topic, stored.state).hex()


class ChainedMapper(Mapper[UUID]):
    """eventsourcing's Mapper, with ``"_prev"`` spliced into every state it writes."""

    def __init__(self, *args: Any, predecessor: Predecessor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._predecessor = predecessor
        # the last event read or written of each recent aggregate; hashed only when linked to
        self._last: OrderedDict[UUID, tuple[int, StoredEvent]] = OrderedDict()

    def _remember(self, originator: UUID, stored: StoredEvent) -> None:
        self._last[originator] = (stored.originator_version, stored)
        self._last.move_to_end(originator)
        if len(self._last) > RECENT:
            self._last.popitem(last=False)

    def forget(self, originator: UUID) -> None:
        """Drop what a failed save left: its versions were never stored."""
        self._last.pop(originator, None)

    def _link(self, originator: UUID, version: int) -> str:
        if version == 1:
            return GENESIS
        known = self._last.get(originator)
        if known is not None and known[0] == version - 1:
            return digest_of(known[1])
        found = self._predecessor(originator, version - 1)
        if not found:  # the aggregate's version - 1 is not stored: its save will fail too
            return GENESIS
        return digest_of(found[0])

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        if self.compressor or self.cipher:
            raise ValueError("a chained store hashes plain JSON: no compressor or cipher")
        plain = super().to_stored_event(domain_event)
        originator = domain_event.originator_id
        link = self._link(originator, plain.originator_version)
        stored = StoredEvent(
            originator_id=plain.originator_id,
            originator_version=plain.originator_version,
            topic=plain.topic,
            state=with_link(plain.state, link),
        )
        self._remember(originator, stored)
        return stored

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        domain_event = super().to_domain_event(stored_event)
        vars(domain_event).pop(LINK_FIELD, None)
        originator = stored_event.originator_id
        if isinstance(originator, UUID):
            known = self._last.get(originator)
            if known is None or known[0] <= stored_event.originator_version:
                self._remember(originator, stored_event)
        return domain_event
