"""An event's digest and its chain link, over the bytes the store holds.

Hashing the stored bytes (not the decoded event) is what makes the digest checkable by a
raw scan with sqlite3 or psql, and by an auditor's script that knows no Python class of ours.
The link is spliced in as the first key of the stored JSON, so a verifier reads it by
slicing, at millions of rows a second, and every other reader still sees plain JSON.
"""

from __future__ import annotations

import hashlib
from typing import Final

GENESIS: Final = "0" * 64
"""The link of an aggregate's first event: it has no predecessor."""

LINK_KEY: Final = b'{"_prev":"'
LINK_START: Final = len(LINK_KEY)
LINK_END: Final = LINK_START + 64
"""``state[LINK_START:LINK_END]`` is a chained event's link, as hex ASCII."""

LINK_FIELD: Final = "_prev"


def event_digest(originator_hex: str, version: int, topic: str, state: bytes) -> bytes:
    """The event's RFC 6962 leaf hash (of the leaf input domain/ledger describes): both its
    Merkle leaf and its successor's link."""
    return hashlib.sha256(f"\0{originator_hex}\0{version}\0{topic}\0".encode() + state).digest()


def link_of(state: bytes) -> bytes | None:
    """The hex link a stored state carries, or None for an event written before chaining."""
    if state.startswith(LINK_KEY) and state[LINK_END : LINK_END + 1] == b'"':
        return state[LINK_START:LINK_END]
    return None


def with_link(state: bytes, link: str) -> bytes:
    """The encoded JSON object ``state`` with ``"_prev": link`` spliced in as its first key."""
    if len(link) != 64:
        raise ValueError(f"a link is 64 hex digits, not {len(link)}")
    if not state.startswith(b"{"):
        raise ValueError("only a JSON object's encoding can carry a link")
    rest = state[1:].lstrip()
    separator = b"" if rest.startswith(b"}") else b","
    return LINK_KEY + link.encode() + b'"' + separator + rest
