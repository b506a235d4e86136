"""Figures that do not mean what their name says: which, for which seeds, and why.

A metric declares it with :meth:`ganbench.Metric.not_meaningful` (the ``modes`` metric: mode
coverage counted from samples that mostly lie off the modes). The report asks every
installed metric about every finished run's figures; a config's column is marked when at
least one of its seeds is. Every format shows the mark where the figure is shown (the
terminal in its ``flags`` column), and a config ranked first on a marked figure is shown
``best`` only together with the mark. Nothing here knows a column name: the metrics do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

MARK = "not meaningful"
"""The words every format puts beside a marked figure."""
SHORT_MARK = "n/m"
"""The terminal's flag for a marked ranking figure (its legend spells it out)."""


@dataclass(frozen=True)
class NotMeaningful:
    """A config's column whose figure says nothing for some of its finished seeds."""

    column: str
    reasons: dict[int, str]
    """Seed -> the metric's reason, for the marked seeds."""
    finished: int
    """Finished seeds of the config (the marked ones are among them)."""

    @property
    def seeds(self) -> list[int]:
        return sorted(self.reasons)

    def describe(self) -> str:
        """``modes_covered is not meaningful for 2 of 3 seeds: seed 0: only 2.1% ...; seed 2: ...``."""
        parts = "; ".join(f"seed {seed}: {reason}" for seed, reason in sorted(self.reasons.items()))
        return f"{self.column} is {MARK} for {len(self.reasons)} of {self.finished} seeds: {parts}"

    def brief(self) -> str:
        """One line: the column, how many seeds, and the first seed's reason."""
        seed = self.seeds[0]
        more = f" (seed {seed}; seeds {', '.join(map(str, self.seeds))} of {self.finished} marked)" \
            if len(self.seeds) > 1 else f" (seed {seed} of {self.finished})"
        return f"{self.column}: {self.reasons[seed]}{more}"


def judges_of(registry: Any) -> tuple[list[Any], list[str]]:
    """The installed metrics (each may declare figures not meaningful), and a note when there are none."""
    if registry is None:
        return [], ["the plugins could not be loaded, so no figure was checked for meaning "
                    "(marks of 'not meaningful' may be missing)"]
    return [entry.obj for entry in registry.all("metric")], []


def as_figures(values: Mapping[str, Any]) -> dict[str, float]:
    """Each value as a float; NaN where it is not a number (a missing or failed figure)."""
    figures = {}
    for column, value in values.items():
        try:
            figures[column] = float(value)
        except (TypeError, ValueError):
            figures[column] = math.nan
    return figures


def marks_of(figures: Mapping[str, float], judges: Sequence[Any], notes: list[str]) -> dict[str, str]:
    """Column -> why one run's figure is not meaningful, as the ``judges`` (metrics) say.

    Only columns among ``figures`` are marked. A metric whose ``not_meaningful`` raises is named
    in ``notes`` and otherwise ignored.
    """
    marks: dict[str, str] = {}
    for judge in judges:
        try:
            marked = dict(judge.not_meaningful(figures) or {})
        except Exception as error:  # a plugin's bug must not take the report down
            note = f"metric {judge.name!r} failed to say which figures are meaningful ({error})"
            if note not in notes:
                notes.append(note)
            continue
        marks.update({column: str(reason) for column, reason in marked.items() if column in figures})
    return marks


def not_meaningful_in(runs: Sequence[tuple[int, Mapping[str, Any]]], judges: Sequence[Any],
                      notes: list[str]) -> dict[str, NotMeaningful]:
    """Column -> its mark, over ``runs`` (``(seed, status.json)`` of a config's finished seeds).

    A metric whose ``not_meaningful`` raises is named in ``notes`` and otherwise ignored.
    """
    reasons: dict[str, dict[int, str]] = {}
    for seed, status in runs:
        for column, reason in marks_of(as_figures(status.get("metrics") or {}), judges, notes).items():
            reasons.setdefault(column, {})[seed] = reason
    return {column: NotMeaningful(column, by_seed, len(runs)) for column, by_seed in reasons.items()}
