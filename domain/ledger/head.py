"""Signed tree heads: what a checkpoint commits to, and the aggregate that records them.

A head is recorded as an event of its own (a SignedHead aggregate, numbered per node), so
it is stored and covered by the next head like any task's event, and `verify` finds every
head by its topic. The signed message is the canonical JSON of the head's body (sorted keys, no
spaces, ASCII): the one encoding the stand-alone checker rebuilds from an exported head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.values import Cause

HEAD_FORMAT: Final = "shimledger-tree-head/1"
LEDGER_TOPIC_PREFIX: Final = "shimledger.ledger:"
HEAD_TOPIC: Final = LEDGER_TOPIC_PREFIX + "HeadSigned"

Row = tuple[int, str, int, str, bytes]
"""A stored event as verification reads it: (position, aggregate id as 32 hex digits,
version, topic, stored state)."""

Tip = tuple[str, int, str, int]
"""(aggregate id hex, version, digest hex, position): an aggregate's last event in a head's
range, and where it stood (so a move of it is named, not only seen in the root)."""


def tips_digest(tips: Iterable[Sequence[Any]]) -> str:
    """What the signature covers of the tips: SHA-256 over one line per tip, sorted,
    ``"<aggregate> <version> <digest> <position>\\n"`` (a first head may hold a tip for
    every incarnation in the store: this is cheap at a million)."""
    lines = sorted(f"{a} {v} {d} {p}\n" for a, v, d, p in tips)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class TreeHead:
    """What a node signs: the store's first ``tree_size`` events, up to ``position``.

    ``number`` counts the node's heads from 1. ``tips`` is the digest of the last event of
    every aggregate with events after ``since`` (the position the node's previous head
    covers; 0 for a first head).
    """

    node: str
    number: int
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
        for name in ("number", "since", "tree_size", "position"):
            if not isinstance(getattr(head, name), int) or getattr(head, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        return head, str(data["signature"])


class HeadSigned(Aggregate.Created):
    """A node signed the tree head over the store up to ``position`` (a checkpoint): head
    number ``number`` of that node, and the whole of its aggregate."""

    TOPIC = HEAD_TOPIC
    class_version = 1

    node: str
    number: int
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


class SignedHead(Aggregate):
    """One signed head: an aggregate of its own, numbered per node as incarnations are.

    Its own aggregate (not an event of a long-lived one), so a checkpoint loads only the
    node's latest head, never every head signed before it; a head deleted from the middle
    leaves a gap in the node's numbers, and a later head's range, that `verify` names.
    """

    TOPIC = LEDGER_TOPIC_PREFIX + "SignedHead"
    Created = HeadSigned

    @staticmethod
    def create_id(node: str, number: int, **_: object) -> UUID:
        """Deterministic, so the node's latest head is found without an index."""
        return uuid5(NAMESPACE_URL, f"shimledger:/ledger/{node}/heads/{number}")

    @event(HeadSigned)
    def __init__(
        self, node: str, number: int, since: int, tree_size: int, position: int, root: str,
        tips: list[list[Any]], frontier: list[str], signed_at: str, public_key: str,
        signature: str, cause: Cause,
    ) -> None:  # fmt: skip
        self.node, self.number, self.since = node, number, since
        self.tree_size, self.position, self.root = tree_size, position, root
        self.tips, self.frontier = tips, frontier  # frontier: unsigned, to continue from
        self.signed_at, self.public_key, self.signature = signed_at, public_key, signature

    @classmethod
    def sign(cls, head: TreeHead, tips: list[Tip], frontier: list[str], signature: str,
             cause: Cause) -> SignedHead:  # fmt: skip
        """Record ``head``; ``frontier`` is the tree's perfect subtree roots, unsigned (a
        wrong one only makes the next head wrong, which `verify` finds)."""
        return cls(node=head.node, number=head.number, since=head.since,
                   tree_size=head.tree_size, position=head.position, root=head.root,
                   tips=[list(t) for t in tips], frontier=frontier, signed_at=head.signed_at,
                   public_key=head.public_key, signature=signature, cause=cause)  # fmt: skip


@dataclass
class RecordedHead:
    """A HeadSigned event as stored: the head it signs, and what was signed with it."""

    at: int  # the head event's own position
    head: TreeHead
    signature: str
    tips: dict[str, tuple[int, str, int]]  # aggregate -> (version, digest, position)
    frontier: list[str]


def recorded_head(row: Row) -> RecordedHead:
    """Decode a HeadSigned row; ValueError if it is not one (edited beyond decoding)."""
    position, originator, _, _, state = row
    try:
        data: dict[str, Any] = json.loads(state)
        node = str(data["node"])
        number = int(data["number"])
        tips = [(str(t[0]), int(t[1]), str(t[2]), int(t[3])) for t in data["tips"]]
        head = TreeHead(
            node=node,
            number=number,
            since=int(data["since"]),
            tree_size=int(data["tree_size"]),
            position=int(data["position"]),
            root=str(data["root"]),
            tips=tips_digest(tips),
            signed_at=str(data["signed_at"]),
            public_key=str(data["public_key"]),
        )
        recorded = RecordedHead(
            at=position,
            head=head,
            signature=str(data["signature"]),
            tips={t[0]: (t[1], t[2], t[3]) for t in tips},
            frontier=[str(f) for f in data["frontier"]],
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"the head at position {position} does not decode: {exc}") from None
    if SignedHead.create_id(node, number).hex != originator:
        raise ValueError(f"the head at position {position} is not head {number} of node {node}")
    return recorded
