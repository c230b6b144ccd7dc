"""Checkpoints, verification and proofs: the ledger's application service.

A checkpoint continues the tree from this node's last head (its frontier is recorded with
it), so serve can sign every minute without rereading a million events. Verification
always rereads everything: it trusts no stored shortcut, only signatures.

Exported heads are the auditor's: `verify --against` proves the store still extends one
(an RFC 6962 consistency proof from it to the newest recorded head), and this node keeps
the last head it signed beside its key (the *witness*), so a store cut back behind it,
heads and all, is caught on the host too.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from domain.errors import (
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from domain.ledger.chain import event_digest
from domain.ledger.head import (
    HEAD_TOPIC,
    RecordedHead,
    Row,
    SignedHead,
    Tip,
    TreeHead,
    recorded_head,
    tips_digest,
)
from domain.ledger.merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from domain.ledger.verification import Finding, Report, SignatureCheck, Verifier
from domain.values import Cause
from shim.private_files import write_private

T = TypeVar("T")
PROOF_FORMAT = "shimledger-inclusion-proof/1"
CHECKPOINT_ATTEMPTS = 3
MAX_TIPS = 500  # incarnations a head signs the last event of (~55 KB of tips a head)


class RawRows(Protocol):
    """The stored rows, as adapters/raw_events.py reads them."""

    def rows(self, after: int = 0, upto: int | None = None) -> Any: ...

    def heads(self) -> list[Row]: ...

    def row(self, position: int) -> Row | None: ...

    def opened(self, aggregate: str) -> Row | None: ...

    def last_position(self) -> int: ...


class LedgerStore(Protocol):
    async def latest_head(self, node: str) -> SignedHead | None: ...

    async def save_head(self, head: SignedHead) -> None: ...

    async def scan(self, work: Callable[[RawRows], T]) -> T: ...


class Signer(Protocol):
    public_key: str

    def sign(self, message: bytes) -> str: ...


@dataclass
class Verdict:
    """A verification: the pass over the store, and what the exported heads add."""

    report: Report
    against: list[str] = field(default_factory=list)  # what each exported head proved

    @property
    def findings(self) -> list[Finding]:
        return self.report.findings


class LedgerService:
    """One node's view of the ledger: it signs with its own key, verifies everyone's heads."""

    def __init__(
        self,
        store: LedgerStore,
        node: str,
        signer: Callable[[], Signer],
        signature_valid: SignatureCheck,
        witness: Path,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._node = node
        self._signer = signer
        self._signature_valid = signature_valid
        self._witness = witness
        self._clock = clock

    # --- checkpoints ---------------------------------------------------------------------

    async def checkpoint(self, cause: Cause) -> tuple[TreeHead, str] | None:
        """Sign the tree over every event so far; None if nothing but heads came since.

        A range that touched more than MAX_TIPS incarnations (a first checkpoint over a
        big history) is signed as consecutive heads of at most MAX_TIPS tips each, so no
        head is a huge event (PostgreSQL's pipelined insert of a multi-megabyte row
        stalls); the last one returned covers everything.
        """
        for attempt in range(CHECKPOINT_ATTEMPTS):
            latest = await self._store.latest_head(self._node)
            base, frontier = self._base(latest)
            segments = await self._store.scan(
                functools.partial(_fold, since=base, frontier=frontier)
            )
            if not segments:
                return None
            number = latest.number + 1 if latest else 1
            signer = self._signer()
            signed: tuple[TreeHead, str] | None = None
            try:
                for segment in segments:
                    head = TreeHead(
                        node=self._node, number=number, since=base, tree_size=segment.size,
                        position=segment.upto, root=segment.root, tips=tips_digest(segment.tips),
                        signed_at=self._clock().isoformat(), public_key=signer.public_key,
                    )  # fmt: skip
                    signature = signer.sign(head.message())
                    recorded = SignedHead.sign(head, segment.tips, segment.roots, signature, cause)
                    await self._store.save_head(recorded)
                    signed = head, signature
                    self._keep_witness(head, signature)
                    number, base = number + 1, segment.upto
            except ConflictError:
                if attempt == CHECKPOINT_ATTEMPTS - 1:
                    raise
                continue  # another checkpoint of this node signed first: continue from it
            return signed
        return None  # unreachable: the last attempt returns or raises

    @staticmethod
    def _base(latest: SignedHead | None) -> tuple[int, Frontier]:
        if latest is None:
            return 0, Frontier()
        roots = [bytes.fromhex(r) for r in latest.frontier]
        return latest.position, Frontier.resume(latest.tree_size, roots)

    def _keep_witness(self, head: TreeHead, signature: str) -> None:
        self._witness.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self._witness, json.dumps(head.exported(signature), indent=2) + "\n")

    async def export_head(self) -> dict[str, Any]:
        """The newest head any node recorded in the store, as an auditor keeps it."""
        heads, _ = await self._store.scan(_decoded_heads)
        if not heads:
            raise NotFoundError("no signed head yet: `shimledger ledger checkpoint` signs one")
        newest = max(heads, key=lambda h: (h.head.tree_size, h.at))
        return newest.head.exported(newest.signature)

    # --- verification --------------------------------------------------------------------

    def witness(self) -> dict[str, Any] | None:
        """The last head this node signed, as kept beside its key (None: none kept)."""
        try:
            data: dict[str, Any] = json.loads(self._witness.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FailedPreconditionError(f"ledger witness {self._witness}: {exc}") from None
        return data

    async def verify(self, against: list[tuple[str, dict[str, Any]]]) -> Verdict:
        """Recompute every chain and recorded head; check each exported head (named by
        where it came from) is one the store still extends."""
        exported = [(name, *_exported(name, data)) for name, data in against]
        sizes = [head.tree_size for _, head, _ in exported]

        def work(raw: RawRows) -> tuple[Report, list[bytes]]:
            heads, broken = _decoded_heads(raw)
            verifier = Verifier(heads, self._signature_valid, sizes, keep_leaves=bool(exported))
            verifier.feed(raw.rows())
            report = verifier.finish()
            report.findings[:0] = broken
            report.findings.sort(key=lambda f: f.position)  # stable: first found first
            return report, verifier.leaves if exported else []

        report, leaves = await self._store.scan(work)
        verdict = Verdict(report)
        for name, head, signature in exported:
            self._check_exported(verdict, leaves, name, head, signature)
        report.findings.sort(key=lambda f: f.position)  # stable: first found first
        return verdict

    def _check_exported(
        self, verdict: Verdict, leaves: list[bytes], name: str, head: TreeHead, signature: str
    ) -> None:
        report = verdict.report
        at = head.position

        def find(kind: str, text: str) -> None:
            report.findings.append(Finding(at, kind, f"{name}: {text}"))

        if not self._signature_valid(head.public_key, head.message(), signature):
            find("signature", "its signature is not its key's: it is not a head any node signed")
            return
        keys = {h.head.public_key for h in report.heads if h.head.node == head.node}
        if keys and head.public_key not in keys:
            find(
                "key",
                f"signed by key {head.public_key[:16]}..., which no recorded head of "
                f"node {head.node} uses: the node's signing key was replaced",
            )
        if report.events < head.tree_size:
            find(
                "deleted",
                f"it signed {head.tree_size} events up to position {at}; the store "
                f"holds {report.events}: its tail was truncated",
            )
            return
        if report.roots.get(head.tree_size, b"").hex() != head.root:
            find(
                "root",
                f"the store's first {head.tree_size} events are not those it signed: "
                "history before position "
                f"{at} was rewritten",
            )
            return
        newest = report.last_head
        if newest is None or newest.head.tree_size < head.tree_size:
            find(
                "deleted",
                f"no recorded head covers its {head.tree_size} events: the heads "
                "signed after it were deleted",
            )
            return
        new = newest.head
        proof = consistency_proof(leaves, head.tree_size, new.tree_size)
        if not verify_consistency(
            head.tree_size, new.tree_size, bytes.fromhex(head.root), bytes.fromhex(new.root), proof
        ):
            find("root", f"no consistency proof leads from it to the head at position {newest.at}")
            return
        verdict.against.append(
            f"{name}: the store extends it ({head.tree_size} events signed by {head.node} at "
            f"{head.signed_at} -> {new.tree_size} at {new.signed_at}; consistency proof of "
            f"{len(proof)} hashes)"
        )

    # --- proofs ----------------------------------------------------------------------------

    async def prove(self, position: int) -> dict[str, Any]:
        """An inclusion proof of the event at ``position`` in the newest head covering it."""

        def work(raw: RawRows) -> dict[str, Any]:
            row = raw.row(position)
            if row is None:
                raise NotFoundError(f"no event at position {position}")
            heads, _ = _decoded_heads(raw)
            covering = [h for h in heads if h.head.position >= position]
            if not covering:
                raise FailedPreconditionError(
                    f"position {position} is after the last signed head: "
                    "`shimledger ledger checkpoint` signs it"
                )
            newest = max(covering, key=lambda h: (h.head.tree_size, h.at))
            head = newest.head
            leaves: list[bytes] = []
            index = -1
            for p, aggregate, version, topic, state in raw.rows(upto=head.position):
                if p == position:
                    index = len(leaves)
                leaves.append(event_digest(aggregate, version, topic, state))
            matches = index >= 0 and len(leaves) == head.tree_size
            path = inclusion_proof(leaves, index, head.tree_size) if matches else []
            if not matches or not verify_inclusion(
                leaves[index], index, head.tree_size, path, bytes.fromhex(head.root)
            ):
                raise FailedPreconditionError(
                    f"the store no longer matches the head at position {newest.at}: "
                    "`shimledger ledger verify` says where"
                )
            _, aggregate, version, topic, state = row
            return {
                "format": PROOF_FORMAT,
                "event": {
                    "position": position,
                    "originator_id": aggregate,
                    "version": version,
                    "topic": topic,
                    "state": base64.b64encode(state).decode(),
                },
                "leaf_index": index,
                "audit_path": [h.hex() for h in path],
                "head": head.exported(newest.signature),
            }

        return await self._store.scan(work)


@dataclass
class Segment:
    """What one head signs: the tree up to ``upto``, and the tips since the head before."""

    upto: int
    size: int
    root: str
    roots: list[str]  # the frontier, to continue from
    tips: list[Tip]


def _fold(raw: RawRows, since: int, frontier: Frontier) -> list[Segment]:
    """Extend ``frontier`` with every event after ``since``, cut into segments of at most
    MAX_TIPS tips; none if only heads came since (signing heads alone, nodes would sign
    each other's forever)."""
    segments: list[Segment] = []
    tips: dict[str, tuple[int, str, int]] = {}
    upto = since
    news = False

    def cut() -> None:
        rows = [(a, v, d, p) for a, (v, d, p) in tips.items()]
        roots = [r.hex() for r in frontier.roots]
        segments.append(Segment(upto, frontier.size, frontier.root().hex(), roots, rows))
        tips.clear()

    for position, aggregate, version, topic, state in raw.rows(after=since):
        if len(tips) == MAX_TIPS and aggregate not in tips:
            cut()
        digest = event_digest(aggregate, version, topic, state)
        frontier.append(digest)
        tips[aggregate] = (version, digest.hex(), position)
        upto = position
        news = news or topic != HEAD_TOPIC
    if not news:
        return []
    if tips:
        cut()
    return segments


def _decoded_heads(raw: RawRows) -> tuple[list[RecordedHead], list[Finding]]:
    heads: list[RecordedHead] = []
    broken: list[Finding] = []
    for row in raw.heads():
        try:
            heads.append(recorded_head(row))
        except ValueError as exc:
            broken.append(Finding(row[0], "edited", f"{exc}: it was edited", row[1], row[2]))
    return heads, broken


def _exported(name: str, data: dict[str, Any]) -> tuple[TreeHead, str]:
    try:
        return TreeHead.from_exported(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{name}: not an exported head ({exc})") from None
