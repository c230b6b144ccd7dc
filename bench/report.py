"""Medians and ratios for the history benchmark: timing helpers and the closing table."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def clocked(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def round_robin(
    contenders: dict[str, Callable[[], Any]], runs: int, *, warm: bool = True
) -> dict[str, float]:
    """Median seconds of each contender, interleaved so that noise hits them all alike."""
    if warm:
        for fn in contenders.values():  # page cache, lazy imports: once, unmeasured
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, fn in contenders.items():
            samples[name].append(clocked(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


@dataclass
class Row:
    """A figure at one size, its reference in the same run, and their ratio."""

    figure: str
    size: str
    value: float
    unit: str  # "ev/s" (higher is better) or "s"
    reference: str
    ref_value: float

    @property
    def ratio(self) -> float:
        return self.value / self.ref_value


def aligned(lines: list[list[str]], right: set[int]) -> str:
    """Columns padded to their widest cell; the ``right`` ones (numbers) flush right."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def fmt(value: float, unit: str) -> str:
    return f"{value:,.0f} ev/s" if unit == "ev/s" else f"{value * 1000:,.1f} ms"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(
            f"  {row.figure} [{row.size}]: {fmt(row.value, row.unit)}, "
            f"{row.reference} {fmt(row.ref_value, row.unit)}: {row.ratio:.3f}",
            flush=True,
        )

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {text}", flush=True)

    def table(self) -> str:
        """Each figure's two sizes on adjacent lines; ``large/small`` is how it grew."""
        figures = list(dict.fromkeys(row.figure for row in self.rows))
        lines = [["figure", "size", "value", "reference", "ref", "ratio", "large/small"]]
        for figure in figures:
            rows = [row for row in self.rows if row.figure == figure]
            for i, row in enumerate(rows):
                growth = f"{row.value / rows[0].value:.2f}" if i else ""
                lines.append(
                    [
                        figure,
                        row.size,
                        fmt(row.value, row.unit),
                        row.reference,
                        fmt(row.ref_value, row.unit),
                        f"{row.ratio:.3f}",
                        growth,
                    ]
                )
        return aligned(lines, right={2, 4, 5, 6})


# --- figures with a target, as reference/figure (bench/ledger.py) ------------------------


@dataclass
class Figure:
    """A median, its reference's median in the same run, and the reference/figure ratio."""

    figure: str
    size: str
    seconds: float
    reference: str
    ref_seconds: float
    events: int | None = None  # for an events-per-second column
    target: float | None = None

    @property
    def ratio(self) -> float:
        return self.ref_seconds / self.seconds


@dataclass
class Table:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        aim = f" (target >= {figure.target})" if figure.target is not None else ""
        print(
            f"  {figure.figure} [{figure.size}]: {seconds(figure.seconds)}, {figure.reference} "
            f"{seconds(figure.ref_seconds)}: {figure.ratio:.3f}{aim}",
            flush=True,
        )

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {text}", flush=True)

    def print_closing(self, runs: int, load_before: str, load_after: str, started: float) -> None:
        """How a benchmark with a Table ends: the conditions it ran in (the ratios mean
        little without the load), the table, its notes and the whole run's time."""
        print(
            f"\nmedians of {runs} interleaved runs, {os.cpu_count()} cores; "
            f"{load_before} at the start, {load_after} at the end; "
            "ratio = reference time / figure time (higher is better, 1.0 = as fast)"
        )
        print(self.render())
        for note in self.notes:
            print(note)
        print(f"whole benchmark: {time.perf_counter() - started:.0f}s")

    def render(self) -> str:
        lines = [["figure", "size", "median", "ev/s", "reference", "ref", "ratio", "target"]]
        for f in self.figures:
            lines.append(
                [
                    f.figure,
                    f.size,
                    seconds(f.seconds),
                    f"{f.events / f.seconds:,.0f}" if f.events else "",
                    f.reference,
                    seconds(f.ref_seconds),
                    f"{f.ratio:.3f}",
                    target(f),
                ]
            )
        return aligned(lines, right={2, 3, 5, 6})


def target(f: Figure) -> str:
    if f.target is None:
        return ""
    return f">= {f.target}" + ("" if f.ratio >= f.target else " MISSED")


def seconds(value: float) -> str:
    return f"{value:,.2f} s" if value >= 1 else f"{value * 1000:,.1f} ms"


# --- append -------------------------------------------------------------------------------
