"""Aggregation across seeds: one summary per config, sorted, with the significance verdicts.

Runs are grouped by everything but their seed (:func:`ganbench.report.runs.config_id`).
Per config and metric, over the seeds whose run finished with a finite value: n, mean,
standard deviation (n - 1), a 95% confidence interval of the mean from the t distribution
(mean ± t(0.975, n - 1) · std / √n; none for n = 1), median, best, min and max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from scipy import stats

from ganbench import __version__
from ganbench.errors import UserError
from ganbench.ledger.statuses import FAILED, UNFINISHED, RunStatus
from ganbench.report.caveats import NotMeaningful, judges_of, not_meaningful_in
from ganbench.report.directions import (PRIMARY_PREFERENCE, THROUGHPUT, Direction, direction_of,
                                        quality_columns)
from ganbench.report.hardware import HardwareUse, hardware_use, trained_hardware
from ganbench.report.reproduce import reproduce_command, version_differences
from ganbench.report.runs import RunSet, distinguishing, protocols_of
from ganbench.report.significance import ALPHA, Verdict, compare_with_best

CONFIDENCE = 0.95


@dataclass
class Summary:
    """One metric of one config across its seeds. Missing figures are NaN."""

    column: str
    direction: Direction
    values: list[float]
    """Per-seed finite values, in seed order."""
    seeds: list[int]
    n: int = 0
    mean: float = math.nan
    std: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    median: float = math.nan
    best: float = math.nan
    minimum: float = math.nan
    maximum: float = math.nan


@dataclass
class ConfigSummary:
    """Every seed of one config: counts, metric summaries, verdict, protocol and command."""

    config_id: str
    dataset: str
    label: str
    """``arch/loss`` plus whatever tells it apart from configs of the same arch, loss and dataset."""
    config: dict[str, Any]
    """The config.json of its first run."""
    seeds: list[int]
    run_ids: list[str]
    run_dirs: list[Path]
    """Each seed's run directory (for records read from a runs.jsonl, where they were unpacked)."""
    run_locations: list[str]
    """Where each seed's run lives: its run directory, or ``RECORDS#run_id`` for a run record."""
    counts: dict[str, int]
    """``runs``, ``done``, ``diverged``, ``failed`` (failed or out of memory), ``unfinished``."""
    metrics: dict[str, Summary]
    wall_seconds: Summary
    """Wall time per run (training and evaluation), over every run that recorded it."""
    protocol: dict[str, dict[str, str]]
    """Metric column -> its protocol; a key whose value differs between seeds lists them all."""
    hardware: list[str]
    """Every hardware its runs recorded (see :mod:`ganbench.report.hardware`)."""
    command: str
    verdict: Verdict | None = None
    errors: list[str] = field(default_factory=list)
    not_meaningful: dict[str, "NotMeaningful"] = field(default_factory=dict)
    """Metric column -> why its figure says nothing for some of the seeds (see :mod:`ganbench.report.caveats`)."""
    hardware_unrecorded: int = 0
    """Its runs that trained but recorded no hardware (older runs)."""

    def summary(self, column: str | None) -> Summary | None:
        return self.metrics.get(column) if column else None

    def primary_not_meaningful(self, primary: str | None) -> "NotMeaningful | None":
        """The mark of the ranking column, when it has one."""
        return self.not_meaningful.get(primary) if primary else None


@dataclass
class Comparison:
    """The whole report's content, independent of any output format."""

    configs: list[ConfigSummary]
    """Sorted: by dataset, then by the dataset's primary metric (best first)."""
    datasets: list[str]
    primary: dict[str, str | None]
    """dataset -> the metric its configs are sorted and tested on (None: no metric at all)."""
    metric_columns: list[str]
    sources: list[Path]
    hardware_use: HardwareUse
    """The runs' hardware, with a key each when they differ (``H1``...) for the tables."""
    alpha: float
    sort: str | None
    notes: list[str]
    generated: str
    ganbench_version: str

    @property
    def hardware(self) -> str:
        """Each hardware the runs recorded with its number of runs, or the machine that wrote the report."""
        return self.hardware_use.description()[0]

    @property
    def hardware_source(self) -> str:
        """``recorded by the runs``, ``recorded by 12 of 15 runs`` or ``the machine that wrote this report; ...``."""
        return self.hardware_use.description()[1]

    def in_dataset(self, dataset: str) -> list[ConfigSummary]:
        return [c for c in self.configs if c.dataset == dataset]

    def table_columns(self, dataset: str) -> list[str]:
        """The quality metrics a dataset's table shows: the primary first, then the rest."""
        present = {column for c in self.in_dataset(dataset) for column, s in c.metrics.items() if s.n}
        columns = quality_columns(sorted(present))
        primary = self.primary.get(dataset)
        if primary:
            columns = [primary] + [c for c in columns if c != primary]
        return columns

    def best_config(self, dataset: str) -> ConfigSummary | None:
        return next((c for c in self.in_dataset(dataset) if c.verdict and c.verdict.label == "best"), None)


def summarize(column: str, seeds: list[int], values: list[float]) -> Summary:
    """Mean, std, t-interval, median, best, min and max of ``values`` (NaNs left out)."""
    pairs = [(seed, float(value)) for seed, value in zip(seeds, values) if value is not None and math.isfinite(value)]
    direction = direction_of(column)
    summary = Summary(column, direction, [v for _, v in pairs], [s for s, _ in pairs], n=len(pairs))
    if not pairs:
        return summary
    series = pd.Series(summary.values, dtype="float64")
    summary.mean, summary.median = float(series.mean()), float(series.median())
    summary.minimum, summary.maximum = float(series.min()), float(series.max())
    summary.best = summary.maximum if direction.better == "higher" else summary.minimum
    if summary.n >= 2:
        summary.std = float(series.std(ddof=1))
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, summary.n - 1) * summary.std / math.sqrt(summary.n)
        summary.ci_low, summary.ci_high = summary.mean - half, summary.mean + half
    return summary


def _labels(runs: RunSet) -> dict[str, str]:
    """``arch/loss`` per config, plus the fields and hyperparameters that tell its twins apart."""
    labels = {}
    by_cell: dict[tuple, list[str]] = {}
    for identity, config in runs.configs.items():
        by_cell.setdefault((config["architecture"], config["loss"], config["dataset"]), []).append(identity)
    for (architecture, loss, _), identities in by_cell.items():
        for identity, extra in distinguishing({i: runs.configs[i] for i in identities}).items():
            labels[identity] = f"{architecture}/{loss}" + (f" {extra}" if extra else "")
    return labels


def _merged_protocol(statuses: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    merged: dict[str, dict[str, list[str]]] = {}
    for status in statuses:
        for column, protocol in protocols_of(status).items():
            for key, value in protocol.items():
                values = merged.setdefault(column, {}).setdefault(key, [])
                if value not in values:
                    values.append(value)
    return {column: {key: values[0] if len(values) == 1 else "differs between seeds: " + " | ".join(values)
                     for key, values in protocol.items()} for column, protocol in merged.items()}


def resolve_primary(sort: str | None, dataset: str, available: list[str], notes: list[str]) -> str | None:
    """The column a dataset is sorted on: ``sort`` (a column or a column prefix), else the default."""
    if sort:
        matches = [c for c in available if c == sort] or sorted(c for c in available if c.startswith(sort))
        if matches:
            if len(matches) > 1:
                notes.append(f"--sort {sort} matches {', '.join(matches)} on {dataset}; sorted by {matches[0]}")
            if not direction_of(matches[0]).better:
                notes.append(f"ganbench does not know whether {matches[0]} is better high or low; "
                             "assumed lower is better")
            return matches[0]
        notes.append(f"{dataset} has no metric {sort!r}; sorted by its default metric instead")
    for prefix in PRIMARY_PREFERENCE:
        matches = sorted(c for c in available if c.startswith(prefix) and direction_of(c).better)
        if matches:
            return matches[0]
    ranked = quality_columns(available)
    if ranked:
        return ranked[0]
    return THROUGHPUT if THROUGHPUT in available else None


def aggregate(runs: RunSet, sort: str | None = None, alpha: float = ALPHA, registry: Any = None,
              generated: str = "", hardware_fallback: Callable[[], str] = lambda: "unknown") -> Comparison:
    """Summarize ``runs`` per config, pick each dataset's primary metric, test, sort."""
    frame = runs.frame
    if sort and not any(c == sort or c.startswith(sort) for c in runs.metric_columns):
        raise UserError(f"--sort {sort}: no finished run has that metric. Available: "
                        f"{', '.join(runs.metric_columns) or 'none (no run finished with metrics)'}.")
    labels = _labels(runs)
    done = frame[frame["status"] == RunStatus.DONE]
    # pandas does the counting and the grouping; summarize() adds the t-interval per group.
    counts = frame.groupby("config_id")["status"].agg(
        runs="size", done=lambda s: int((s == RunStatus.DONE).sum()), diverged=lambda s: int((s == RunStatus.DIVERGED).sum()),
        failed=lambda s: int(s.isin(FAILED).sum()), unfinished=lambda s: int(s.isin(UNFINISHED).sum()))
    judges, judge_notes = judges_of(registry)
    configs = []
    for identity, group in frame.groupby("config_id", sort=False):
        config = runs.configs[identity]
        finished = done[done["config_id"] == identity]
        metrics = {column: summarize(column, finished["seed"].tolist(), finished[column].tolist())
                   for column in runs.metric_columns if finished[column].notna().any()}
        run_statuses = [runs.statuses[r] for r in group["run_id"]]
        seeds = [int(s) for s in group["seed"]]
        hardware, hardware_unrecorded = trained_hardware(run_statuses)
        configs.append(ConfigSummary(
            config_id=identity, dataset=config["dataset"], label=labels[identity], config=config,
            seeds=seeds, run_ids=group["run_id"].tolist(), run_dirs=[Path(p) for p in group["run_dir"]],
            run_locations=group["location"].tolist(),
            counts={key: int(value) for key, value in counts.loc[identity].items()}, metrics=metrics,
            wall_seconds=summarize("wall_seconds", seeds, group["wall_seconds"].tolist()),
            protocol=_merged_protocol(run_statuses),
            hardware=sorted(set(hardware)), hardware_unrecorded=hardware_unrecorded,
            command=reproduce_command(config, seeds, registry),
            errors=[f"seed {s}: {e}" for s, e in zip(group["seed"], group["error"]) if e],
            not_meaningful=not_meaningful_in(
                [(int(seed), runs.statuses[run_id]) for seed, run_id in zip(finished["seed"], finished["run_id"])],
                judges, judge_notes)))

    notes = list(runs.notes) + judge_notes
    for c in configs:
        differences = version_differences(c.config, registry)
        if differences:
            notes.append(f"{c.dataset} {c.label} ran with other versions than installed here "
                         f"({'; '.join(differences)}): its command would train new runs")
    datasets = sorted({c.dataset for c in configs})
    primary = {}
    for dataset in datasets:
        available = sorted({column for c in configs if c.dataset == dataset for column, s in c.metrics.items() if s.n})
        primary[dataset] = column = resolve_primary(sort, dataset, available, notes)
        if column and direction_of(column).kind != "quality" and not any(direction_of(c).kind == "quality"
                                                                          for c in available):
            notes.append(f"no run on {dataset} has a quality metric (fid, kid, modes...), so it is sorted by "
                         f"{column}; run with --metrics auto to measure them")

    def order(c: ConfigSummary) -> tuple:
        column = primary.get(c.dataset)
        summary = c.metrics.get(column) if column else None
        if summary is None or not summary.n:
            return (datasets.index(c.dataset), 1, 0.0, c.label)
        sign = -1.0 if direction_of(column).better == "higher" else 1.0
        return (datasets.index(c.dataset), 0, sign * summary.mean, c.label)

    configs.sort(key=order)
    for dataset, column in primary.items():
        if column is None:
            continue
        members = [c for c in configs if c.dataset == dataset]  # sorted: a tie for best goes to the first row
        samples = {c.config_id: c.metrics[column].values if column in c.metrics else [] for c in members}
        verdicts = compare_with_best(samples, direction_of(column).better or "lower", alpha)
        for c in members:
            c.verdict = verdicts[c.config_id]
    use = hardware_use((runs.statuses[r] for r in frame["run_id"]), hardware_fallback)
    return Comparison(configs=configs, datasets=datasets, primary=primary, metric_columns=runs.metric_columns,
                      sources=runs.sources, hardware_use=use, alpha=alpha, sort=sort, notes=notes,
                      generated=generated, ganbench_version=__version__)
