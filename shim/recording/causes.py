"""The causes this node's own machinery gives the facts it records, each naming the node.

A history shared by many nodes must say which node's process heard a shim's event, asked
a shim's State or waited for an exit; the CLI's own cause (cli/bootstrap.py) names it too.
One small factory, built from the node's name where the recorder is made, hands the name
to every component that records, so none of them needs a global or a setting of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.values import Cause


@dataclass(frozen=True)
class Causes:
    """Causes of one node: ``node`` is its name ("" only where no node is known)."""

    node: str

    def _node(self) -> str | None:
        return self.node or None

    def shim_event(self, topic: str) -> Cause:
        """A shim published ``topic`` (/tasks/exit, ...) to this node's event sink."""
        return Cause(kind="shim-event", detail=topic, node=self._node())

    def reconciliation(self, detail: str) -> Cause:
        """What this node's reconciliation found asking a shim, or its absence."""
        return Cause(kind="reconciliation", detail=detail, node=self._node())

    def waited(self) -> Cause:
        """The shim's Wait reply, which a command of this node waited for."""
        return Cause(kind="shim", detail="Wait", node=self._node())
