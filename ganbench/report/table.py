"""The comparison table of one dataset, as text cells: what every human-readable format shows.

The terminal, Markdown, HTML and LaTeX writers render the same :class:`DatasetTable`, so
the formats cannot drift apart; they differ only in markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from ganbench.report.aggregate import Comparison, ConfigSummary, Summary
from ganbench.report.caveats import MARK
from ganbench.report.directions import THROUGHPUT, direction_of
from ganbench.report.significance import BEST, METHOD, TIED

MISSING = "–"


def decimals_for(value: float) -> int:
    """Decimals that show about four significant digits of ``value`` (none from 1000 up)."""
    if not math.isfinite(value) or value == 0:
        return 3
    return int(min(7, max(0, 3 - math.floor(math.log10(abs(value))))))


def number(value: float | None, decimals: int | None = None) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    decimals = decimals_for(value) if decimals is None else decimals
    return f"{value:,.{decimals}f}" if abs(value) >= 1000 else f"{value:.{decimals}f}"


def mean_std(summary: Summary | None, pm: str = " ± ", finished: int | None = None) -> str:
    """``23.46 ± 1.23`` (std with the mean's decimals); the mean alone for one seed.

    With ``finished`` (the config's finished seeds), ``(n=2)`` is added when fewer of them
    have a value (e.g. a reverse KL that is undefined for a collapsed seed).
    """
    return _mean_and_spread(summary, pm, lambda summary: summary.std, finished)


def mean_ci(summary: Summary | None, finished: int | None = None) -> str:
    """``7.33 ± 0.52``: the mean ± half the width of its 95% CI; the mean alone for one seed."""
    return _mean_and_spread(summary, " ± ", lambda summary: (summary.ci_high - summary.ci_low) / 2, finished)


def _mean_and_spread(summary: Summary | None, pm: str, spread: Callable[[Summary], float],
                     finished: int | None) -> str:
    """The mean, ``pm`` and ``spread(summary)`` with the mean's decimals (two seeds or more), and ``(n=...)``."""
    if summary is None or not summary.n:
        return MISSING
    decimals = decimals_for(summary.mean)
    text = number(summary.mean, decimals)
    if summary.n >= 2:
        text += f"{pm}{number(spread(summary), decimals)}"
    if finished is not None and summary.n < finished:
        text += f" (n={summary.n})"
    return text


def interval(summary: Summary | None) -> str:
    if summary is None or summary.n < 2:
        return MISSING
    decimals = decimals_for(summary.mean)
    return f"[{number(summary.ci_low, decimals)}, {number(summary.ci_high, decimals)}]"


def header_of(column: str) -> str:
    """``fid10k_inception ↓``: the column name with the arrow of its better direction."""
    arrow = direction_of(column).arrow
    return f"{column} {arrow}" if arrow else column


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class DatasetTable:
    """One dataset's rows, best first, ready to render."""

    dataset: str
    primary: str | None
    title: str
    headers: list[str]
    rows: list[list[Cell]]
    configs: list[ConfigSummary]
    """The config of each row, in row order."""
    verdicts: list[str] = field(default_factory=list)
    """Each row's verdict label (``best``, ``tied``...), for row styling."""
    marks: list[str] = field(default_factory=list)
    """``label: why`` for every figure of the table marked not meaningful (shown under it)."""


def best_means(configs: list[ConfigSummary], column: str) -> float | None:
    """The best mean of ``column`` among ``configs`` (None when no direction or no values)."""
    direction = direction_of(column)
    means = [c.metrics[column].mean for c in configs if column in c.metrics and c.metrics[column].n]
    if not means or not direction.better:
        return None
    return max(means) if direction.better == "higher" else min(means)


def legend(comparison: Comparison) -> str:
    hardware = comparison.hardware_use.legend()
    return (f"mean ± std over seeds (n−1); 95% CI of the mean from the t distribution. "
            f"vs best: {METHOD}, alpha = {comparison.alpha:g}. "
            f"'best' has the best mean; 'tied' = not significantly worse than the best; "
            f"'worse' = significantly worse; 'can't tell' = fewer than 2 finished seeds on one side. "
            f"Best value per column in bold. '{MARK}': the metric says the figure describes nothing for at "
            f"least one seed (why: under the table); a 'best' so marked is no finding."
            + (f" {hardware}." if hardware else ""))


def hardware_keys(comparison: Comparison, config: ConfigSummary) -> str | None:
    """The keys of the hardware ``config``'s runs trained on (``H1``, ``H1, ?``); None when all runs share one."""
    use = comparison.hardware_use
    return use.keys(config.hardware, config.hardware_unrecorded) if use.keyed else None


def marked(text: str, config: ConfigSummary, column: str | None) -> str:
    """``text`` with `` (not meaningful)`` when ``column``'s figure is marked for ``config``."""
    return f"{text} ({MARK})" if column and column in config.not_meaningful and text != MISSING else text


def verdict_text(config: ConfigSummary, primary: str | None) -> str:
    """``best``, ``≈ tied (p=0.41)``, ``worse (p<0.001)``..., with the mark when the ranking figure has one."""
    if not config.verdict:
        return MISSING
    text = ("≈ " if config.verdict.label == TIED else "") + config.verdict.describe()
    return f"{text} ({MARK})" if config.primary_not_meaningful(primary) else text


def mark_lines(configs: list[ConfigSummary], columns: list[str], brief: bool = False) -> list[str]:
    """``label: why`` for every marked figure among ``columns``, in row order (one short line each when ``brief``)."""
    return [f"{config.label}: " + (config.not_meaningful[column].brief() if brief
                                   else config.not_meaningful[column].describe())
            for config in configs for column in columns if column in config.not_meaningful]


def dataset_table(comparison: Comparison, dataset: str, pm: str = " ± ") -> DatasetTable:
    """The rows of ``dataset``'s table, in the comparison's order."""
    configs = comparison.in_dataset(dataset)
    primary = comparison.primary.get(dataset)
    others = [c for c in comparison.table_columns(dataset) if c != primary]
    headers = ["config", "seeds done", "diverged", "failed"]
    if primary:
        headers += [f"{header_of(primary)} mean ± std", "95% CI", "median", "best seed", "vs best"]
    trailing = [*others] + ([THROUGHPUT] if primary != THROUGHPUT else [])
    headers += [header_of(c) if c != THROUGHPUT else "images/s ↑" for c in trailing] + ["wall s / run"]
    keyed = comparison.hardware_use.keyed
    headers += ["hardware"] if keyed else []  # the runs differ: say where each throughput came from
    best = {column: best_means(configs, column) for column in trailing}
    rows, verdicts = [], []
    for config in configs:
        counts = config.counts
        done = f"{counts['done']}/{counts['runs']}" + (f" ({counts['unfinished']} unfinished)" if counts["unfinished"] else "")
        row = [Cell(config.label), Cell(done), Cell(str(counts["diverged"])),
               Cell(str(counts["failed"]))]
        verdict = config.verdict.label if config.verdict else ""
        if primary:
            summary = config.summary(primary)
            row += [Cell(marked(mean_std(summary, pm, counts["done"]), config, primary), bold=verdict == BEST),
                    Cell(interval(summary)),
                    Cell(number(summary.median) if summary else MISSING),
                    Cell(number(summary.best) if summary else MISSING),
                    Cell(verdict_text(config, primary))]
        for column in trailing:
            summary = config.summary(column)
            is_best = summary is not None and summary.n > 0 and best[column] is not None and summary.mean == best[column]
            row.append(Cell(marked(mean_std(summary, pm, counts["done"]), config, column),
                            bold=is_best and len(configs) > 1))
        row.append(Cell(mean_std(config.wall_seconds, pm)))
        if keyed:
            row.append(Cell(hardware_keys(comparison, config) or MISSING))
        rows.append(row)
        verdicts.append(verdict)
    if primary:
        title = f"{dataset}: sorted by {primary} ({direction_of(primary).better or 'lower'} is better)"
    else:
        title = f"{dataset}: no finished run has metrics"
    return DatasetTable(dataset, primary, title, headers, rows, configs, verdicts,
                        mark_lines(configs, ([primary] if primary else []) + trailing))


def protocol_rows(comparison: Comparison) -> list[tuple[str, str, str]]:
    """``(metric columns, datasets, protocol text)``: one row per distinct protocol.

    Columns of one metric share its protocol, so they share a row; a column measured
    under two protocols (different configs or seeds) appears in two rows.
    """
    seen: dict[str, tuple[list[str], list[str]]] = {}
    for config in comparison.configs:
        for column, protocol in sorted(config.protocol.items()):
            text = "; ".join(f"{k}={v}" for k, v in sorted(protocol.items()))
            columns, datasets = seen.setdefault(text, ([], []))
            if column not in columns:
                columns.append(column)
            if config.dataset not in datasets:
                datasets.append(config.dataset)
    return sorted((", ".join(columns), ", ".join(datasets), text) for text, (columns, datasets) in seen.items())


def settings_rows(comparison: Comparison) -> list[tuple[str, str, str, str]]:
    """``(dataset, config, training settings and hyperparameters, evaluation settings)`` per config."""
    rows = []
    for config in comparison.configs:
        spec = config.config
        params = ", ".join(f"{k}={v}" for k, v in sorted((spec.get("params") or {}).items()))
        evaluation = ", ".join(f"{k}={v}" for k, v in sorted((spec.get("evaluation") or {}).items()))
        metrics = ", ".join(spec.get("metrics") or []) or "none"
        settings = f"steps={spec['steps']}, batch_size={spec['batch_size']}, split={spec['split']}; {params}"
        rows.append((config.dataset, config.label, settings, f"metrics: {metrics}" + (f"; {evaluation}" if evaluation else "")))
    return rows


def versions_rows(comparison: Comparison) -> list[tuple[str, str]]:
    """``(version, what has it)``: ganbench and every plugin the runs used, grouped by version."""
    users: dict[str, set[str]] = {}
    for config in comparison.configs:
        for component, version in (config.config.get("versions") or {}).items():
            users.setdefault(str(version), set()).add(component)
    return [(version, ", ".join(sorted(components))) for version, components in sorted(users.items())]
