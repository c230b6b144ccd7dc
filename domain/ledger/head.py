"""Signed tree heads: what a checkpoint commits to, and the aggregate that records them.

A head is recorded as an event of the node's own Ledger aggregate, so it is stored, chained
and covered by the next head like any task's event, and `verify` finds every head by its
topic. The signed message is the canonical JSON of the head's body (sorted keys, no
spaces, ASCII): the one encoding the stand-alone checker rebuilds from an exported head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.values import Cause

HEAD_FORMAT: Final = "shimledger-tree-head/1"
LEDGER_TOPIC_PREFIX: Final = "shimledger.ledger:"
HEAD_TOPIC: Final = LEDGER_TOPIC_PREFIX + "HeadSigned"

Tip = tuple[str, int, str, int]
"""(aggregate id hex, version, digest hex, position): an aggregate's last event in a head's
range, and where it stood (so a move of it is named, not only seen in the root)."""


def tips_digest(tips: Iterable[Tip]) -> str:
    """SHA-256 of the canonical JSON of the tips, sorted: what the signature covers of them."""
    canonical = json.dumps(sorted([t[0], t[1], t[2], t[3]] for t in tips), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class TreeHead:
    """What a node signs: the store's first ``tree_size`` events, up to ``position``.

    ``tips`` is the digest of the last event of every aggregate with events after
    ``since`` (the position the head it was computed from covers; 0 for a first head).
    """

    node: str
    since: int
    tree_size: int
    position: int
    root: str
    tips: str
    signed_at: str
    public_key: str
    format: str = HEAD_FORMAT

    def message(self) -> bytes:
        """The bytes the Ed25519 signature is over."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode("ascii")

    def exported(self, signature: str) -> dict[str, Any]:
        """The head as `ledger export-head` prints it, for an auditor to keep off the host."""
        return {**asdict(self), "signature": signature}

    @classmethod
    def from_exported(cls, data: dict[str, Any]) -> tuple[TreeHead, str]:
        """An exported head and its signature; KeyError/TypeError/ValueError if malformed."""
        if data.get("format") != HEAD_FORMAT:
            raise ValueError(f"not a {HEAD_FORMAT} head (format {data.get('format')!r})")
        fields = {k: data[k] for k in cls.__dataclass_fields__}
        head = cls(**fields)
        for name in ("tree_size", "position"):
            if not isinstance(getattr(head, name), int) or getattr(head, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        return head, str(data["signature"])


class HeadSigned(Aggregate.Event):
    """A node signed the tree head over the store up to ``position`` (a checkpoint)."""

    TOPIC = HEAD_TOPIC
    class_version = 1

    node: str
    since: int
    tree_size: int
    position: int
    root: str
    tips: list[list[Any]]
    frontier: list[str]
    signed_at: str
    public_key: str
    signature: str
    cause: Cause


class LedgerOpened(Aggregate.Created):
    """A node's first checkpoint: its ledger aggregate begins."""

    TOPIC = LEDGER_TOPIC_PREFIX + "LedgerOpened"
    class_version = 1

    node: str


class Ledger(Aggregate):
    """One node's signed heads, in the order it signed them."""

    TOPIC = LEDGER_TOPIC_PREFIX + "Ledger"
    Created = LedgerOpened
    HeadSigned = HeadSigned

    @staticmethod
    def create_id(node: str, **_: object) -> UUID:
        """Deterministic, so a node finds its ledger without an index."""
        return uuid5(NAMESPACE_URL, f"shimledger:/ledger/{node}")

    @event(LedgerOpened)
    def __init__(self, node: str) -> None:
        self.node = node
        self.heads: list[tuple[TreeHead, str]] = []  # each with its signature
        self.frontier: list[str] = []  # the last head's, to continue from

    def sign(
        self, head: TreeHead, tips: list[Tip], frontier: list[str], signature: str, cause: Cause
    ) -> None:
        """Record a head this node signed, with what the next checkpoint continues from
        (``frontier``: the tree's perfect subtree roots, unsigned; a wrong one only makes
        the next head wrong, which `verify` finds)."""
        if head.node != self.node:
            raise ValueError(f"head of node {head.node!r} in the ledger of {self.node!r}")
        if self.heads and head.tree_size < self.heads[-1][0].tree_size:
            raise ValueError("a head never covers less than the one before it")
        if head.tips != tips_digest(tips):
            raise ValueError("the head's tips digest is not its tips'")
        self._signed(
            self.node,
            head.since,
            head.tree_size,
            head.position,
            head.root,
            [list(t) for t in tips],
            frontier,
            head.signed_at,
            head.public_key,
            signature,
            cause,
        )

    @event(HeadSigned)
    def _signed(
        self,
        node: str,
        since: int,
        tree_size: int,
        position: int,
        root: str,
        tips: list[list[Any]],
        frontier: list[str],
        signed_at: str,
        public_key: str,
        signature: str,
        cause: Cause,
    ) -> None:
        head = TreeHead(
            node=node,
            since=since,
            tree_size=tree_size,
            position=position,
            root=root,
            tips=tips_digest(tuple(t) for t in tips),
            signed_at=signed_at,
            public_key=public_key,
        )
        self.heads.append((head, signature))
        self.frontier = frontier
