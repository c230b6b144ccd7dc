"""Whose tasks a view's query selects, as SQL over its ``node`` and ``state_dir`` columns."""

from __future__ import annotations

from domain.values import Whose


def owners_clause(whose: Whose) -> tuple[str, list[str]]:
    """A WHERE condition for ``whose`` and its arguments; "" when every node's is wanted.

    A row recorded before nodes existed has "" in both columns, and is taken when
    ``whose.unknown`` says so (Whose.matches is the same rule in Python).
    """
    clauses, args = [], []
    for column, wanted in (("node", whose.node), ("state_dir", whose.state_dir)):
        if wanted is None:
            continue
        clauses.append(f"{column} IN (?, '')" if whose.unknown else f"{column} = ?")
        args.append(wanted)
    return " AND ".join(clauses), args
