"""Rows of the benchmark table, their targets, and the table itself (Markdown)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional


@dataclass(frozen=True)
class Target:
    """A figure to reach: ``text`` for the table, ``met(row)`` to judge it."""

    text: str
    met: Callable[[Row], bool]

    @classmethod
    def ratio_at_most(cls, limit: float) -> Target:
        """The figure must be at most ``limit`` times its baseline."""
        return cls(f"ratio <= {limit:g}", lambda row: row.ratio is not None and row.ratio <= limit)

    @classmethod
    def ratio_at_least(cls, limit: float) -> Target:
        """The figure must be at least ``limit`` times its baseline (rates: higher is better)."""
        return cls(f"ratio >= {limit:g}", lambda row: row.ratio is not None and row.ratio >= limit)

    @classmethod
    def at_least(cls, limit: float, unit: str) -> Target:
        """The figure itself must be ``limit`` or more."""
        return cls(f">= {limit:g} {unit}", lambda row: row.figure >= limit)

    @classmethod
    def below(cls, limit: float, unit: str) -> Target:
        """The figure itself must be under ``limit``."""
        return cls(f"< {limit:g} {unit}", lambda row: row.figure < limit)


@dataclass
class Row:
    """One measurement: its figure, the baseline measured in the same run, and the target."""

    measurement: str
    figure: float
    unit: str
    baseline: Optional[float] = None
    baseline_name: str = ""
    target: Optional[Target] = None

    @property
    def ratio(self) -> Optional[float]:
        """Figure divided by baseline, or None without a (non-zero) baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.figure / self.baseline

    @property
    def result(self) -> str:
        """``pass``, ``short`` or ``-`` (no target: the figure is for information)."""
        if self.target is None:
            return "-"
        return "pass" if self.target.met(self) else "short"


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1000:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01:
        return f"{value:.2f}"
    return f"{value:.1e}"


def _cells(row: Row) -> List[str]:
    baseline = "-"
    if row.baseline is not None:
        baseline = f"{_number(row.baseline)} {row.unit} ({row.baseline_name})"
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
    target = row.target.text if row.target is not None else "-"
    return [row.measurement, f"{_number(row.figure)} {row.unit}", baseline, ratio, target,
            row.result]


HEADER = ["measurement", "figure", "baseline (same run)", "ratio", "target", "result"]


def format_table(rows: List[Row]) -> str:
    """The rows as a Markdown table, columns padded so it also reads well in a terminal."""
    lines = [HEADER] + [_cells(row) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADER))]

    def render(cells: List[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(HEADER), rule] + [render(cells) for cells in lines[1:]])
