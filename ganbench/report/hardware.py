"""What the reported runs trained on: each distinct hardware the runs recorded, with how many runs.

A run records its hardware in ``status.json`` (``hardware``, see
:mod:`ganbench.training.hardware`); runs older than that record have none, and for them
the report can only name the machine that wrote it, and says so. When the runs differ,
each hardware gets a short key (``H1``, ``H2``...; ``?`` for runs that recorded none) that
the tables show beside their throughput, since images/s compare only on the same hardware.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ganbench.ledger.statuses import RunStatus
from ganbench.report.runs import recorded_hardware

UNRECORDED = "?"
"""The key of runs that recorded no hardware."""


def _runs(count: int) -> str:
    return f"{count} run{'s' if count != 1 else ''}"


@dataclass(frozen=True)
class HardwareUse:
    """The hardware of every run that trained, as the runs recorded it."""

    runs: dict[str, int]
    """Hardware -> how many runs recorded it, most runs first."""
    unrecorded: int
    """Runs that trained but recorded no hardware (written before runs recorded it)."""
    here: str
    """The machine that wrote the report ("" when every run recorded its hardware)."""

    @property
    def keyed(self) -> bool:
        """True when the runs trained on more than one hardware (counting "not recorded" as one)."""
        return len(self.runs) + (1 if self.unrecorded else 0) > 1

    def key(self, hardware: str | None) -> str:
        """``H1``, ``H2``... in :attr:`runs` order; ``?`` for None (not recorded)."""
        return f"H{list(self.runs).index(hardware) + 1}" if hardware else UNRECORDED

    def keys(self, hardware: Iterable[str], unrecorded: int) -> str:
        """The keys of one config's runs (``H1``, ``H1, ?``), in key order."""
        keys = sorted(self.key(h) for h in set(hardware))
        return ", ".join(keys + ([UNRECORDED] if unrecorded else []))

    def description(self) -> tuple[str, str]:
        """``(hardware, source)``: the line a report prints, and where it comes from."""
        if not self.runs:
            return self.here, "the machine that wrote this report; the runs recorded none"
        parts = [(f"{self.key(h)} = " if self.keyed else "") + f"{h} ({_runs(n)})" for h, n in self.runs.items()]
        if not self.unrecorded:
            return "; ".join(parts), "recorded by the runs"
        older = "1 older run" if self.unrecorded == 1 else f"{self.unrecorded} older runs"
        parts.append(f"{UNRECORDED} = {older} that recorded none (this report was written on {self.here})")
        recorded = sum(self.runs.values())
        return "; ".join(parts), f"recorded by {recorded} of {recorded + self.unrecorded} runs"

    def legend(self) -> str:
        """What the keys of a table's ``hardware`` column mean ("" when the runs share one hardware)."""
        if not self.keyed:
            return ""
        return ("hardware: the key of what each config's runs trained on (images/s compare only within one "
                "key): " + self.description()[0])


def trained_hardware(statuses: Iterable[dict[str, Any]]) -> tuple[list[str], int]:
    """``(hardware of each run that trained and recorded it, how many trained without recording it)``.

    A pending run never trained, so it has no hardware to record and counts in neither.
    """
    recorded, unrecorded = [], 0
    for status in statuses:
        if status.get("status") == RunStatus.PENDING:
            continue
        hardware = recorded_hardware(status)
        if hardware:
            recorded.append(hardware)
        else:
            unrecorded += 1
    return recorded, unrecorded


def hardware_use(statuses: Iterable[dict[str, Any]], here: Callable[[], str]) -> HardwareUse:
    """Count the hardware of the runs that trained (``here`` names this machine, asked only when needed)."""
    recorded, unrecorded = trained_hardware(statuses)
    ordered = dict(sorted(Counter(recorded).items(), key=lambda item: (-item[1], item[0])))
    return HardwareUse(ordered, unrecorded, here() if unrecorded or not recorded else "")
