"""Verifying the store against itself: every chain, every recorded head, in one pass.

What each check can name, and why it is enough:

- A **chain** (an aggregate's events, version by version) holds each event's digest in its
  successor. An edited event whose successor is untouched is named exactly; a missing
  version is a deletion; a version met before its predecessor is a reordering.
- A **head** signs the Merkle root over every event up to its position, and the *tips*:
  the digest of each aggregate's last event in the range it was the first to cover. So an
  edit of an aggregate's last event, its deletion, or an event that no head's range
  accounts for (inserted) is named too; the root catches what nothing else does (two
  events of different aggregates swapped).
- Events after the last head are checked by their chains only: a head signed later covers
  them, and `verify` says how many there are.

The scan is fed rows in position order and keeps O(aggregates) state: one digest per
aggregate, the tips of the heads whose range it is in, and a Merkle frontier.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from domain.ledger.chain import GENESIS, event_digest, link_of
from domain.ledger.head import Ledger, TreeHead, tips_digest
from domain.ledger.merkle import Frontier

Row = tuple[int, str, int, str, bytes]
"""(position, aggregate id as 32 hex digits, version, topic, stored state)."""

SignatureCheck = Callable[[str, bytes, str], bool]
"""(public key hex, message, signature hex) -> whether the signature is the key's."""


@dataclass(frozen=True)
class Finding:
    """One thing the store's bytes contradict; ``position`` is where it is first seen."""

    position: int
    kind: str  # edited, deleted, inserted, reordered, unlinked, signature, key, root
    text: str
    aggregate: str | None = None  # the aggregate id (hex) of the event named, if one is
    version: int | None = None


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
        tips = [(str(t[0]), int(t[1]), str(t[2]), int(t[3])) for t in data["tips"]]
        head = TreeHead(
            node=node,
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
    if Ledger.create_id(node).hex != originator:
        raise ValueError(f"the head at position {position} is not in node {node}'s ledger")
    return recorded


@dataclass
class Report:
    """What one pass found."""

    events: int = 0
    legacy: int = 0  # events written before chaining began (no link), all before any link
    chained_from: int | None = None  # the first linked event's position
    heads: list[RecordedHead] = field(default_factory=list)
    uncovered: int = 0  # events after the last head's position
    roots: dict[int, bytes] = field(default_factory=dict)  # tree size -> root, as asked
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def last_head(self) -> RecordedHead | None:
        return max(self.heads, key=lambda h: h.head.tree_size, default=None)


class Verifier:
    """Feed it every row in position order, then ``finish``."""

    def __init__(
        self,
        heads: Iterable[RecordedHead],
        signature_valid: SignatureCheck,
        sizes: Iterable[int] = (),
        keep_leaves: bool = False,
    ) -> None:
        self.report = Report(heads=sorted(heads, key=lambda h: (h.head.position, h.at)))
        self._signature_valid = signature_valid
        self._frontier = Frontier()
        self._leaves: list[bytes] | None = [] if keep_leaves else None
        self._last: dict[str, tuple[int, bytes, int]] = {}  # aggregate -> (version, digest, at)
        self._early: dict[str, tuple[int, int]] = {}  # aggregate -> (version, at) met first
        # heads by the position they cover, checked once the scan passes it
        self._due = sorted(self.report.heads, key=lambda h: h.head.position)
        self._due_positions = [h.head.position for h in self._due]
        self._next_due = 0
        self._by_since = sorted(self.report.heads, key=lambda h: h.head.since)
        self._next_open = 0
        self._open: list[RecordedHead] = []  # heads whose range (since, position] holds the scan
        self._tips_seen: set[tuple[int, str]] = set()  # (head event position, aggregate)
        self._signed: set[tuple[str, int]] = set()  # events a head's tips proved, as found
        self._sizes = sorted(set(sizes))
        self._covered = max((h.head.position for h in self.report.heads), default=0)
        self._check_signatures()

    @property
    def leaves(self) -> list[bytes]:
        assert self._leaves is not None, "made without keep_leaves"
        return self._leaves

    def _find(
        self, position: int, kind: str, text: str, event: tuple[str, int] | None = None
    ) -> None:
        aggregate, version = event if event else (None, None)
        self.report.findings.append(Finding(position, kind, text, aggregate, version))

    def _check_signatures(self) -> None:
        first_key: dict[str, tuple[str, int]] = {}
        for recorded in sorted(self.report.heads, key=lambda h: h.at):
            head = recorded.head
            if not self._signature_valid(head.public_key, head.message(), recorded.signature):
                self._find(
                    recorded.at,
                    "signature",
                    f"the head at position {recorded.at} (node {head.node}, "
                    f"{head.tree_size} events) does not carry its key's signature: "
                    "it was edited or forged",
                )
            key, since = first_key.setdefault(head.node, (head.public_key, recorded.at))
            if key != head.public_key:
                self._find(
                    recorded.at,
                    "key",
                    f"the head at position {recorded.at} is signed by key "
                    f"{head.public_key[:16]}..., node {head.node}'s heads before it "
                    f"(from position {since}) by {key[:16]}...: its signing key "
                    "was replaced",
                )

    def feed(self, rows: Iterable[Row]) -> None:
        report = self.report
        last = self._last
        frontier = self._frontier
        leaves = self._leaves
        for row in rows:
            position, aggregate, version, topic, state = row
            while (
                self._next_due < len(self._due) and self._due_positions[self._next_due] < position
            ):
                self._close(self._due[self._next_due])
                self._next_due += 1
            if self._next_open < len(self._by_since) or self._open:
                self._track_open(position)
            digest = event_digest(aggregate, version, topic, state)
            link = link_of(state)
            if link is None:
                if report.chained_from is not None:
                    self._find(
                        position,
                        "unlinked",
                        f"position {position} ({describe(row)}) carries no link, "
                        f"though every event since position {report.chained_from} "
                        "does: it was rewritten",
                        (aggregate, version),
                    )
                else:
                    report.legacy += 1
            elif report.chained_from is None:
                report.chained_from = position
            before = last.get(aggregate)
            if before is None:
                if version != 1:
                    self._early[aggregate] = (version, position)
                elif link is not None and link != GENESIS.encode():
                    self._find(
                        position,
                        "edited",
                        f"position {position} ({describe(row)}) is a first version "
                        "with a predecessor's link: it was edited",
                        (aggregate, version),
                    )
            elif version != before[0] + 1:
                if version < before[0]:
                    self._early.pop(aggregate, None)  # not deleted after all: moved
                    self._find(
                        position,
                        "reordered",
                        f"position {position} ({describe(row)}) comes after version "
                        f"{before[0]} at position {before[2]}: events were "
                        "reordered",
                        (aggregate, version),
                    )
                else:
                    self._find(
                        before[2],
                        "deleted",
                        f"{_versions(before[0] + 1, version - 1)} of aggregate {aggregate} "
                        f"(between positions {before[2]} and {position}) missing: deleted",
                        (aggregate, version),
                    )
            elif link is not None and link != before[1].hex().encode():
                if (aggregate, before[0]) in self._signed:  # the predecessor is proven
                    self._find(
                        position,
                        "edited",
                        f"position {position} ({describe(row)}) links to another event than "
                        f"its predecessor at position {before[2]}, which a head signed: it "
                        "was forged or edited",
                        (aggregate, version),
                    )
                else:
                    self._find(
                        before[2],
                        "edited",
                        f"position {before[2]} (version {before[0]} of aggregate "
                        f"{aggregate}) is not what position {position} recorded of it: "
                        "it was edited (or that link was)",
                        (aggregate, before[0]),
                    )
            for recorded in self._open:
                self._check_tip(recorded, row, digest)
            if before is None or version > before[0]:
                last[aggregate] = (version, digest, position)
            frontier.append(digest)
            if leaves is not None:
                leaves.append(digest)
            report.events += 1
            if position > self._covered:
                report.uncovered += 1
            if self._sizes and frontier.size == self._sizes[0]:
                report.roots[self._sizes.pop(0)] = frontier.root()

    def _track_open(self, position: int) -> None:
        self._open = [h for h in self._open if h.head.position >= position]
        while self._next_open < len(self._by_since):
            recorded = self._by_since[self._next_open]
            if recorded.head.since >= position:
                break
            self._next_open += 1
            if recorded.head.position >= position:
                self._open.append(recorded)

    def _check_tip(self, recorded: RecordedHead, row: Row, digest: bytes) -> None:
        position, aggregate, version, _, _ = row
        tip = recorded.tips.get(aggregate)
        if tip is None or version > tip[0]:
            self._find(
                position,
                "inserted",
                f"position {position} ({describe(row)}) is in the range the head at "
                f"position {recorded.at} signed, which has no such event: it was "
                "inserted",
                (aggregate, version),
            )
        elif version == tip[0]:
            self._tips_seen.add((recorded.at, aggregate))
            if tip[1] != digest.hex():
                self._find(
                    position,
                    "edited",
                    f"position {position} ({describe(row)}) is not the event the "
                    f"head at position {recorded.at} signed: it was edited",
                    (aggregate, version),
                )
            elif tip[2] != position:
                self._find(
                    position,
                    "reordered",
                    f"position {position} ({describe(row)}) was signed by the head at "
                    f"position {recorded.at} at position {tip[2]}: it was moved",
                    (aggregate, version),
                )
            else:
                self._signed.add((aggregate, version))

    def _close(self, recorded: RecordedHead) -> None:
        """The scan passed the head's position: its size, root and tips are all known."""
        head = recorded.head
        for aggregate, (version, _, where) in recorded.tips.items():
            if (recorded.at, aggregate) not in self._tips_seen:
                self._find(
                    where,
                    "deleted",
                    f"version {version} of aggregate {aggregate}, signed by the head at "
                    f"position {recorded.at} at position {where}, is not in positions "
                    f"{head.since + 1}..{head.position}: deleted or moved",
                    (aggregate, version),
                )
        if self._frontier.size != head.tree_size:
            self._find(
                head.position,
                "root",
                f"the head at position {recorded.at} signed {head.tree_size} events up "
                f"to position {head.position}; the store holds {self._frontier.size}: "
                "events were deleted or inserted",
            )
        elif self._frontier.root().hex() != head.root:
            self._find(
                head.position,
                "root",
                f"the events up to position {head.position} are not those the head at "
                f"position {recorded.at} signed: some were changed or moved",
            )

    def finish(self) -> Report:
        for recorded in self._due[self._next_due :]:
            self._close(recorded)
        self._next_due = len(self._due)
        for aggregate, (version, position) in self._early.items():
            self._find(
                position,
                "deleted",
                f"{_versions(1, version - 1)} of aggregate {aggregate} (before position "
                f"{position}) missing: deleted",
                (aggregate, version - 1),
            )
        self.report.findings.sort(key=lambda f: f.position)  # stable: first found first
        return self.report


def _versions(first: int, last: int) -> str:
    return f"version {first}" if first == last else f"versions {first}..{last}"


def describe(row: Row) -> str:
    """How a finding names an event before the CLI resolves its task's name."""
    _, aggregate, version, topic, _ = row
    name = topic.rpartition(":")[2] or topic
    return f"{name}, version {version} of aggregate {aggregate}"


def find_head_position(heads: list[RecordedHead], position: int) -> RecordedHead | None:
    """The first head (smallest tree) that covers ``position``."""
    ordered = sorted(heads, key=lambda h: h.head.position)
    index = bisect_right([h.head.position for h in ordered], position - 1)
    return ordered[index] if index < len(ordered) else None
