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

import hashlib
from binascii import hexlify
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from domain.ledger.chain import GENESIS, LINK_END, LINK_KEY, LINK_START
from domain.ledger.head import RecordedHead, Row
from domain.ledger.merkle import Frontier

NEVER = 1 << 62  # a position no store reaches

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
        self._bound = 0  # the first row opens the heads whose range it is in
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
        numbers: dict[str, int] = {}
        for recorded in sorted(self.report.heads, key=lambda h: (h.head.node, h.head.number)):
            head = recorded.head
            expected = numbers.get(head.node, 0) + 1
            if head.number != expected:
                self._find(
                    recorded.at,
                    "deleted",
                    f"node {head.node}'s {_heads(expected, head.number - 1)} missing before "
                    f"its head {head.number} at position {recorded.at}: deleted",
                )
            numbers[head.node] = head.number
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
        """The hot loop (a million rows in seconds): what is the same for every row is
        hoisted into locals, digests go to the frontier in batches, and the open heads
        are reconsidered only when the position crosses one of their bounds."""
        report = self.report
        last = self._last
        pending: list[bytes] = []
        keep = self._leaves.append if self._leaves is not None else None
        sha256 = hashlib.sha256
        genesis = GENESIS.encode()
        bound = self._bound
        covered = self._covered
        count = self._frontier.size
        for row in rows:
            position, aggregate, version, topic, state = row
            if position > bound:
                self._frontier.extend(pending)
                pending.clear()
                bound = self._advance(position)
            digest = sha256(f"\0{aggregate}\0{version}\0{topic}\0".encode() + state).digest()
            link = state[LINK_START:LINK_END] if state.startswith(LINK_KEY) else None
            if link is None:
                self._unlinked(row)
            elif report.chained_from is None:
                report.chained_from = position
            before = last.get(aggregate)
            if before is None:
                if version != 1:
                    self._early[aggregate] = (version, position)
                elif link is not None and link != genesis:
                    self._find(
                        position,
                        "edited",
                        f"position {position} ({describe(row)}) is a first version "
                        "with a predecessor's link: it was edited",
                        (aggregate, version),
                    )
                last[aggregate] = (version, digest, position)
            elif version == before[0] + 1:
                if link is not None and link != hexlify(before[1]):
                    self._broken_link(row, before)
                last[aggregate] = (version, digest, position)
            else:
                self._out_of_order(row, before)
                if version > before[0]:
                    last[aggregate] = (version, digest, position)
            for recorded in self._open:
                tip = recorded.tips.get(aggregate)
                if tip is None or version >= tip[0]:
                    self._check_tip(recorded, row, digest, tip)
            pending.append(digest)
            if keep is not None:
                keep(digest)
            count += 1
            if position > covered:
                report.uncovered += 1
            if count == self._next_size:
                self._frontier.extend(pending)
                pending.clear()
                self._snapshot()
        self._frontier.extend(pending)
        report.events = count

    def _unlinked(self, row: Row) -> None:
        report = self.report
        if report.chained_from is None:
            report.legacy += 1
            return
        position, aggregate, version, _, _ = row
        self._find(
            position,
            "unlinked",
            f"position {position} ({describe(row)}) carries no link, though every event "
            f"since position {report.chained_from} does: it was rewritten",
            (aggregate, version),
        )

    def _broken_link(self, row: Row, before: tuple[int, bytes, int]) -> None:
        position, aggregate, version, _, _ = row
        if (aggregate, before[0]) in self._signed:  # the predecessor is proven
            self._find(
                position,
                "edited",
                f"position {position} ({describe(row)}) links to another event than its "
                f"predecessor at position {before[2]}, which a head signed: it was forged "
                "or edited",
                (aggregate, version),
            )
        else:
            self._find(
                before[2],
                "edited",
                f"position {before[2]} (version {before[0]} of aggregate {aggregate}) is not "
                f"what position {position} recorded of it: it was edited (or that link was)",
                (aggregate, before[0]),
            )

    def _out_of_order(self, row: Row, before: tuple[int, bytes, int]) -> None:
        position, aggregate, version, _, _ = row
        if version < before[0]:
            self._early.pop(aggregate, None)  # not deleted after all: moved
            self._find(
                position,
                "reordered",
                f"position {position} ({describe(row)}) comes after version {before[0]} at "
                f"position {before[2]}: events were reordered",
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

    @property
    def _next_size(self) -> int:
        return self._sizes[0] if self._sizes else -1

    def _snapshot(self) -> None:
        self.report.roots[self._sizes.pop(0)] = self._frontier.root()

    def _advance(self, position: int) -> int:
        """The scan reached ``position``: close the heads it passed, open those whose range
        it entered; the next position at which that changes again."""
        while self._next_due < len(self._due) and self._due_positions[self._next_due] < position:
            self._close(self._due[self._next_due])
            self._next_due += 1
        self._open = [h for h in self._open if h.head.position >= position]
        while self._next_open < len(self._by_since):
            recorded = self._by_since[self._next_open]
            if recorded.head.since >= position:
                break
            self._next_open += 1
            if recorded.head.position >= position:
                self._open.append(recorded)
        bounds = [h.head.position for h in self._open]
        if self._next_due < len(self._due):
            bounds.append(self._due_positions[self._next_due])
        if self._next_open < len(self._by_since):
            bounds.append(self._by_since[self._next_open].head.since)
        self._bound = min(bounds, default=NEVER)
        return self._bound

    def _check_tip(
        self, recorded: RecordedHead, row: Row, digest: bytes, tip: tuple[int, str, int] | None
    ) -> None:
        position, aggregate, version, _, _ = row
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


def _heads(first: int, last: int) -> str:
    return f"head {first} is" if first == last else f"heads {first}..{last} are"


def _versions(first: int, last: int) -> str:
    return f"version {first}" if first == last else f"versions {first}..{last}"


def describe(row: Row) -> str:
    """How a finding names an event before the CLI resolves its task's name."""
    _, aggregate, version, topic, _ = row
    name = topic.rpartition(":")[2] or topic
    return f"{name}, version {version} of aggregate {aggregate}"
