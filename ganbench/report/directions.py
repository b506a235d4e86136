"""Which way is better for each metric column, and which columns measure quality or cost.

The one place that knows it: every report format, the sorting and the significance test
ask :func:`direction_of`. Metric plugins name their columns after what they measure
(``fid10k_inception``, ``modes_covered``, ``images_per_second``), so the name decides.
A column no pattern matches has no direction: it is aggregated and written to CSV/JSON,
but never ranked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOWER = "lower"
HIGHER = "higher"
QUALITY = "quality"
COST = "cost"

RULES: tuple[tuple[str, str, str], ...] = (
    # (regular expression searched in the column name, better direction, kind)
    (r"_std$", "", ""),  # spread within one evaluation (KID subsets, IS splits): reported, never ranked
    (r"^fid", LOWER, QUALITY),
    (r"^kid", LOWER, QUALITY),
    (r"^is(\d|_|$)", HIGHER, QUALITY),
    (r"^modes_covered", HIGHER, QUALITY),
    (r"^stacked_modes\w*_covered$", HIGHER, QUALITY),  # stacked-modes: modes of Stacked MNIST found
    (r"high_quality", HIGHER, QUALITY),
    (r"recognised_percent$", HIGHER, QUALITY),  # stacked-modes: samples whose digits the classifier recognises
    (r"reverse_kl", LOWER, QUALITY),
    (r"per_second$", HIGHER, COST),
    (r"memory", LOWER, COST),
    (r"seconds", LOWER, COST),
)

PRIMARY_PREFERENCE = ("fid", "kid", "is", "modes_covered", "modes_high_quality_percent", "modes_reverse_kl")
"""Prefixes tried, in order, for a dataset's primary metric when ``--sort`` is not given."""

THROUGHPUT = "images_per_second"
"""The training-throughput column every finished run has (measured by the training loop)."""


@dataclass(frozen=True)
class Direction:
    """How to read one metric column."""

    better: str
    """``lower``, ``higher``, or ``""`` when unknown (the column is never ranked)."""
    kind: str
    """``quality`` (fid, modes...), ``cost`` (throughput, memory, time) or ``""``."""

    @property
    def arrow(self) -> str:
        return {LOWER: "↓", HIGHER: "↑"}.get(self.better, "")


def direction_of(column: str) -> Direction:
    """The direction and kind of ``column``, from the first rule whose pattern it matches."""
    for pattern, better, kind in RULES:
        if re.search(pattern, column):
            return Direction(better, kind)
    return Direction("", "")


def quality_columns(columns: list[str]) -> list[str]:
    """The ranked quality metrics among ``columns``, in the preferred order, then by name."""
    quality = [c for c in columns if direction_of(c).kind == QUALITY]

    def rank(column: str) -> tuple[int, str]:
        for index, prefix in enumerate(PRIMARY_PREFERENCE):
            if column.startswith(prefix):
                return index, column
        return len(PRIMARY_PREFERENCE), column

    return sorted(quality, key=rank)
