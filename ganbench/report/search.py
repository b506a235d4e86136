"""Random-search results: best score against the budget, the tuned winners, and how often settings diverged.

Reads ``OUT/search.json`` (written by ``ganbench run --budget N``, see :mod:`ganbench.planning.search`)
next to the runs. Each searched *setting* is one config (its runs differ only in seed); its
*score* is the dataset's ranking metric (the report's primary metric) averaged over its
search runs. Per (architecture, loss, dataset) cell:

* **best so far**: the best score among the first k settings tried, k = 1..n. The order the
  settings happened to be drawn in is one of many equally likely ones, so the curve is the
  mean over :data:`ORDERS` random orders of the n settings, with a band from the 2.5th to
  the 97.5th percentile over those orders (as Lucic et al. 2018 estimate it). A setting
  that diverged or failed counts as tried and reaching nothing.
* **the winner**: the best-scoring setting. Its search runs chose it, so their score is
  biased upwards; the second stage re-runs it with new seeds, and only those seeds go into
  the winners' comparison (mean, 95% CI, Welch/Holm verdicts as in the main table).
* **divergence**: runs, diverged and failed runs of every setting.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganbench.report.aggregate import Comparison, ConfigSummary, Summary, summarize
from ganbench.report.directions import HIGHER, direction_of
from ganbench.report.significance import Verdict, compare_with_best

ORDERS = 5000
"""Random orders of the settings behind each best-so-far curve and its band."""
BAND = 0.95
"""The band covers this central share of the orders (2.5th to 97.5th percentile)."""
RERUN_SEEDS = 5
"""Seeds in the printed second-stage command when the search ran without ``--winner-seeds``."""


@dataclass(frozen=True)
class BestSoFar:
    """Best score among the first k settings, for k = 1..n, over random orders of the n settings."""

    budgets: np.ndarray
    """1..n: settings tried."""
    mean: np.ndarray
    """Mean over the orders; NaN where some order has no finished setting among its first k."""
    low: np.ndarray
    """Lower end of the band; NaN where some order in the band has no finished setting yet."""
    high: np.ndarray
    """Upper end of the band; NaN likewise."""
    orders: int


def best_so_far(scores: list[float] | np.ndarray, better: str, orders: int = ORDERS,
                rng: np.random.Generator | None = None, band: float = BAND) -> BestSoFar:
    """Best-so-far curve of ``scores`` (one per setting, NaN: diverged or failed), ``better`` higher or lower.

    Draws ``orders`` random permutations of the settings; for each, the running best; then,
    per budget k, the mean over permutations and the ``(1 - band) / 2`` and ``(1 + band) / 2``
    quantiles (``inverted_cdf``: always one of the values reached, no interpolation).
    """
    values = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(0) if rng is None else rng
    sign = -1.0 if better == HIGHER else 1.0  # the running minimum of sign * score is the best
    signed = np.where(np.isfinite(values), sign * values, np.inf)
    permutations = rng.permuted(np.tile(np.arange(len(values)), (orders, 1)), axis=1)
    running = np.minimum.accumulate(signed[permutations], axis=1)
    with np.errstate(invalid="ignore"):
        mean = running.mean(axis=0)
    quantiles = np.quantile(running, [(1 - band) / 2, (1 + band) / 2], axis=0, method="inverted_cdf")

    reached = np.isfinite(quantiles).all(axis=0)
    ends = np.sort(sign * quantiles, axis=0)  # back in the metric's units, low end first
    low, high = np.where(reached, ends[0], np.nan), np.where(reached, ends[1], np.nan)
    return BestSoFar(np.arange(1, len(values) + 1), np.where(np.isfinite(mean), sign * mean, np.nan),
                     low, high, orders)


@dataclass
class Trial:
    """One searched setting: a config, the values drawn for it, and its score."""

    config: ConfigSummary
    values: dict[str, Any]
    """``--set`` key -> the value drawn."""
    order: tuple[int, int]
    """``(search seed, draw index)``: the order it was drawn in."""
    search_seeds: list[int]
    score: float
    """The ranking metric averaged over its finished search runs; NaN when none finished with a value."""

    @property
    def pending(self) -> bool:
        """No score yet and runs still unfinished: not tried yet, so left out of the curve."""
        return not math.isfinite(self.score) and self.config.counts["unfinished"] > 0

    @property
    def setting(self) -> str:
        return " ".join(f"{key}={_value(value)}" for key, value in sorted(self.values.items())) or "(defaults)"


@dataclass
class CellSearch:
    """The search of one (architecture, loss, dataset) cell and its second stage."""

    dataset: str
    label: str
    """``arch/loss``."""
    metric: str | None
    trials: list[Trial]
    distributions: dict[str, str]
    curve: BestSoFar | None = None
    winner: Trial | None = None
    rerun: Summary | None = None
    """The winner's ranking metric over its second-stage seeds (not the search's)."""
    rerun_seeds: list[int] = field(default_factory=list)
    verdict: Verdict | None = None
    command: str = ""
    """The second stage's command: the one that trained it, or the one to run."""

    @property
    def diverged_settings(self) -> int:
        return sum(1 for t in self.trials if t.config.counts["diverged"])

    @property
    def scored(self) -> int:
        return sum(1 for t in self.trials if math.isfinite(t.score))

    @property
    def tried(self) -> list[Trial]:
        """The settings whose search ended (scored, or every run diverged or failed)."""
        return [t for t in self.trials if not t.pending]


@dataclass
class SearchReport:
    """Every searched cell of a comparison."""

    cells: list[CellSearch]
    notes: list[str] = field(default_factory=list)

    def in_dataset(self, dataset: str) -> list[CellSearch]:
        return [c for c in self.cells if c.dataset == dataset]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def load_all_draws(sources: list[Path]) -> dict[str, dict[str, Any]]:
    """``run_id -> draw record`` of every ``search.json`` among ``sources``."""
    from ganbench.planning.search import load_draws

    draws: dict[str, dict[str, Any]] = {}
    for source in sources:
        draws.update(load_draws(Path(source)))
    return draws


def _registry():
    from ganbench.report.command import _registry as installed

    return installed()


def search_report(comparison: Comparison, draws: dict[str, dict[str, Any]] | None = None,
                  registry: Any = None, rerun_seeds: int = RERUN_SEEDS) -> SearchReport | None:
    """The search results of ``comparison`` (``draws`` default: the sources' search.json); None without a search."""
    from ganbench.report.reproduce import reproduce_command

    draws = load_all_draws(comparison.sources) if draws is None else draws
    cells: dict[tuple[str, str, str], CellSearch] = {}
    notes: list[str] = []
    for config in comparison.configs:
        records = [(seed, draws[run_id]) for run_id, seed in zip(config.run_ids, config.seeds) if run_id in draws]
        if not records:
            continue
        spec = config.config
        key = (config.dataset, spec["architecture"], spec["loss"])
        metric = comparison.primary.get(config.dataset)
        cell = cells.setdefault(key, CellSearch(config.dataset, f"{spec['architecture']}/{spec['loss']}", metric,
                                                [], {}))
        search_seeds = sorted({seed for seed, _ in records})
        summary = config.metrics.get(metric) if metric else None
        scores = [v for v, s in zip(summary.values, summary.seeds) if s in search_seeds] if summary else []
        first = min(records, key=lambda item: (int(item[1].get("search_seed", 0)), int(item[1].get("draw", 0))))[1]
        cell.trials.append(Trial(config, dict(first.get("values") or {}),
                                 (int(first.get("search_seed", 0)), int(first.get("draw", 0))),
                                 search_seeds, float(np.mean(scores)) if scores else math.nan))
        for _, record in records:
            for name, text in (record.get("distributions") or {}).items():
                if cell.distributions.setdefault(name, text) != text:
                    notes.append(f"{config.dataset} {cell.label}: settings drawn from different distributions "
                                 f"of {name} ({cell.distributions[name]} and {text}) are pooled")
    if not cells:
        return None
    registry = _registry() if registry is None else registry
    report = SearchReport(list(cells.values()), list(dict.fromkeys(notes)))
    for cell in report.cells:
        cell.trials.sort(key=lambda t: (t.order, t.config.label))
        if not cell.metric:
            continue
        better = direction_of(cell.metric).better or "lower"
        if cell.tried:
            cell.curve = best_so_far([t.score for t in cell.tried], better)
        scored = [t for t in cell.trials if math.isfinite(t.score)]
        if not scored:
            continue
        sign = -1.0 if better == HIGHER else 1.0
        cell.winner = min(scored, key=lambda t: sign * t.score)  # ties: the first drawn
        config = cell.winner.config
        summary = config.metrics.get(cell.metric)
        pairs = [(s, v) for s, v in zip(summary.seeds, summary.values) if s not in cell.winner.search_seeds]
        cell.rerun = summarize(cell.metric, [s for s, _ in pairs], [v for _, v in pairs])
        cell.rerun_seeds = sorted(s for s in config.seeds if s not in cell.winner.search_seeds)
        seeds = cell.rerun_seeds or list(range(max(cell.winner.search_seeds) + 1,
                                               max(cell.winner.search_seeds) + 1 + rerun_seeds))
        cell.command = reproduce_command(config.config, seeds, registry)
    for dataset in sorted({c.dataset for c in report.cells}):
        members = [c for c in report.in_dataset(dataset) if c.winner]
        if not members:
            continue
        better = direction_of(members[0].metric).better or "lower"
        verdicts = compare_with_best({c.label: c.rerun.values for c in members}, better, comparison.alpha)
        for c in members:
            c.verdict = verdicts[c.label]
    return report



# --- the figure ---------------------------------------------------------------------------

def best_so_far_plot(search: SearchReport, dataset: str, directory: Path):
    """``plots/best_so_far_<dataset>``: each cell's curve and band; None when no cell has a metric."""
    from matplotlib.ticker import MaxNLocator

    from ganbench.report.plots import _colors, _figure, _save

    cells = [c for c in search.in_dataset(dataset) if c.curve is not None]
    if not cells:
        return None
    metric = cells[0].metric
    figure = _figure(8, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    for color, cell in zip(_colors(len(cells)), cells):
        curve = cell.curve
        axes.plot(curve.budgets, curve.mean, color=color, label=f"{cell.label} ({len(cell.tried)} settings)",
                  linewidth=1.5, marker="o" if len(curve.budgets) <= 20 else None, markersize=3)
        axes.fill_between(curve.budgets, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
    direction = direction_of(metric).better
    axes.set_xlabel("hyperparameter settings tried")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(f"best {metric} so far" + (f" ({direction} is better)" if direction else ""))
    axes.set_title(f"{dataset}: best {metric} against the tuning budget", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    orders = cells[0].curve.orders
    caption = (f"Best {metric} among the first k settings tried, per config: mean over {orders} random orders "
               f"of the settings (line) and the 2.5th to 97.5th percentile over those orders (band), after "
               f"Lucic et al. 2018. Each setting's score is its mean over its search runs; a diverged or "
               f"failed setting counts as tried and reaching nothing (the curve starts where every order "
               f"has reached a score).")
    return _save(figure, directory, f"best_so_far_{dataset}", f"{dataset}: best {metric} against the budget",
                 caption, dataset)


# --- the tables, in every format ---------------------------------------------------------

_PREPARED: dict[tuple[int, str], tuple[weakref.ref, SearchReport | None, dict]] = {}
"""(comparison, report dir) -> its search report and figures: the Markdown, HTML and JSON writers share one."""


def prepared(comparison: Comparison, report_dir: Path) -> tuple[SearchReport | None, dict]:
    """The search report of ``comparison`` and its figures (written once under ``report_dir/plots``)."""
    key = (id(comparison), str(Path(report_dir).resolve()))
    cached = _PREPARED.get(key)
    if cached is not None and cached[0]() is comparison:
        return cached[1], cached[2]
    search = search_report(comparison)
    pictures = {}
    if search is not None:
        plots = Path(report_dir) / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        for dataset in sorted({c.dataset for c in search.cells}):
            picture = best_so_far_plot(search, dataset, plots)
            if picture is not None:
                pictures[dataset] = picture
    _PREPARED[key] = (weakref.ref(comparison, lambda _: _PREPARED.pop(key, None)), search, pictures)
    return search, pictures


WINNER_HEADERS = ("config", "settings scored/tried", "settings diverged", "best setting", "search score",
                  "new seeds", "mean ± std", "95% CI", "vs best")


def winners_rows(search: SearchReport, dataset: str) -> tuple[list[str], list[list[str]], str]:
    """``(headers, rows, legend)`` of the tuned-winners table of ``dataset``."""
    from ganbench.report.table import header_of, interval, mean_std, number

    cells = search.in_dataset(dataset)
    metric = cells[0].metric or "no metric"
    headers = list(WINNER_HEADERS)
    headers[4], headers[6] = f"search {header_of(metric)}", f"{header_of(metric)} mean ± std"
    rows = []
    order = sorted(cells, key=lambda c: (c.rerun is None or not c.rerun.n,
                                         _sort_value(c.rerun.mean if c.rerun and c.rerun.n else math.nan, metric),
                                         c.label))
    for cell in order:
        winner = cell.winner
        pending = len(cell.trials) - len(cell.tried)
        rows.append([cell.label, f"{cell.scored}/{len(cell.tried)}" + (f" ({pending} unfinished)" if pending else ""),
                     f"{cell.diverged_settings}/{len(cell.trials)}",
                     winner.setting if winner else "none scored",
                     number(winner.score) if winner else "–",
                     ",".join(str(s) for s in cell.rerun_seeds) or "none yet",
                     mean_std(cell.rerun), interval(cell.rerun),
                     cell.verdict.describe() if cell.verdict and cell.rerun.n else "–"])
    legend = (f"Each config's best setting of its random search on {metric}. 'search score': that setting's "
              f"mean over its search runs, biased upwards (it was chosen for it). The last three columns use "
              f"only the new seeds of the second stage (--winner-seeds K, or the command below), with the main "
              f"table's statistics: mean ± std, 95% t-interval, Welch's t-test against the best winner, "
              f"Holm-corrected.")
    return headers, rows, legend


def _sort_value(value: float, metric: str) -> float:
    if not math.isfinite(value):
        return math.inf
    return -value if direction_of(metric).better == HIGHER else value


DIVERGENCE_HEADERS = ("config", "setting", "runs", "diverged", "failed", "diverged %")


def divergence_rows(search: SearchReport, dataset: str) -> list[list[str]]:
    """One row per searched setting of ``dataset``: its runs and how many diverged or failed; worst first."""
    rows = []
    for cell in search.in_dataset(dataset):
        for trial in cell.trials:
            counts = trial.config.counts
            share = 100.0 * counts["diverged"] / counts["runs"] if counts["runs"] else 0.0
            rows.append((-share, cell.label, trial.order,
                         [cell.label, trial.setting, str(counts["runs"]), str(counts["diverged"]),
                          str(counts["failed"]), f"{share:.0f}"]))
    return [row for *_, row in sorted(rows, key=lambda item: item[:3])]


def _second_stage_lines(cell: CellSearch) -> str:
    if cell.rerun_seeds:
        return f"{cell.label} (best setting, second stage seeds {','.join(map(str, cell.rerun_seeds))}):"
    return f"{cell.label} (best setting; to re-run it with {RERUN_SEEDS} new seeds):"


def markdown_section(comparison: Comparison, dataset: str, report_dir: Path) -> list[str]:
    """The Markdown lines of ``dataset``'s search: figure, winners, commands, divergence (none without a search)."""
    from ganbench.report.files import markdown_table

    search, pictures = prepared(comparison, report_dir)
    if search is None or not search.in_dataset(dataset):
        return []
    out = [f"### {dataset}: tuning budget (random search)", ""]
    picture = pictures.get(dataset)
    if picture is not None:
        out += [f"![{picture.title}]({os.path.relpath(picture.png, report_dir)})", "", f"_{picture.caption}_", ""]
    headers, rows, legend = winners_rows(search, dataset)
    out += [f"#### {dataset}: tuned winners", "", markdown_table(headers, rows), "", f"_{legend}_", ""]
    for cell in search.in_dataset(dataset):
        if cell.command:
            out += [_second_stage_lines(cell), "", "```sh", cell.command, "```", ""]
    out += [f"#### {dataset}: divergence per setting", "",
            markdown_table(list(DIVERGENCE_HEADERS), divergence_rows(search, dataset)), ""]
    out += [f"_{note}_" for note in search.notes if note.startswith(f"{dataset} ")]
    return out


def html_section(comparison: Comparison, dataset: str, report_dir: Path) -> list[str]:
    """The HTML of ``dataset``'s search, as :func:`markdown_section` (empty without a search)."""
    from html import escape

    from ganbench.report.html import _plot, _table

    search, pictures = prepared(comparison, report_dir)
    if search is None or not search.in_dataset(dataset):
        return []
    parts = [f'<section class="search" id="search-{escape(dataset)}">',
             f"<h3>{escape(dataset)}: tuning budget (random search)</h3>"]
    if dataset in pictures:
        parts.append(_plot(pictures[dataset]))
    headers, rows, legend = winners_rows(search, dataset)
    parts += [f"<h4>{escape(dataset)}: tuned winners</h4>",
              _table(headers, [[escape(cell) for cell in row] for row in rows], "text winners"),
              f'<p class="legend">{escape(legend)}</p>']
    parts += [f"<p>{escape(_second_stage_lines(cell))}</p><pre><code>{escape(cell.command)}</code></pre>"
              for cell in search.in_dataset(dataset) if cell.command]
    parts += [f"<h4>{escape(dataset)}: divergence per setting</h4>",
              _table(list(DIVERGENCE_HEADERS), [[escape(c) for c in row] for row in divergence_rows(search, dataset)],
                     "divergence")]
    parts += [f'<p class="legend">{escape(note)}</p>' for note in search.notes if note.startswith(f"{dataset} ")]
    parts.append("</section>")
    return parts


# --- the second stage, for ``ganbench run --winner-seeds K`` -------------------------------

def second_stage_runs(out: Path, cells: set[tuple[str, str, str]], count: int, registry: Any) -> list:
    """The runs of the second stage: each ``(architecture, loss, dataset)`` cell's best setting in ``out``
    (ranked as the report ranks), with ``count`` seeds after its search seeds."""
    from ganbench.planning.search import winner_runs
    from ganbench.planning.spec import RunSpec
    from ganbench.report.aggregate import aggregate
    from ganbench.report.runs import load_runs

    comparison = aggregate(load_runs([Path(out)]), registry=registry)
    search = search_report(comparison, registry=registry)
    runs = []
    for cell in search.cells if search else []:
        spec = cell.winner.config.config if cell.winner else None
        if spec is None or (spec["architecture"], spec["loss"], cell.dataset) not in cells:
            continue
        runs += winner_runs(RunSpec.from_json(spec), cell.winner.search_seeds, count)
    return runs


def search_json(comparison: Comparison, report_dir: Path) -> list[dict[str, Any]] | None:
    """``report.json``'s ``search``: per searched cell, its settings, curve, winner and second stage.

    None when the runs hold no search.
    """
    search, _ = prepared(comparison, report_dir)
    if search is None:
        return None

    def numbers(array: np.ndarray) -> list[float | None]:
        return [float(v) if math.isfinite(v) else None for v in array]

    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None

    cells = []
    for cell in search.cells:
        rerun = cell.rerun
        cells.append({
            "dataset": cell.dataset, "label": cell.label, "metric": cell.metric,
            "distributions": cell.distributions,
            "settings": [{"config_id": t.config.config_id, "values": t.values, "search_seed": t.order[0],
                          "draw": t.order[1], "search_seeds": t.search_seeds, "score": finite(t.score),
                          "counts": t.config.counts} for t in cell.trials],
            "best_so_far": None if cell.curve is None else {
                "orders": cell.curve.orders, "band": BAND, "mean": numbers(cell.curve.mean),
                "low": numbers(cell.curve.low), "high": numbers(cell.curve.high)},
            "winner": None if cell.winner is None else {
                "config_id": cell.winner.config.config_id, "values": cell.winner.values,
                "search_score": finite(cell.winner.score), "second_stage_seeds": cell.rerun_seeds,
                "second_stage": None if rerun is None else {
                    "n": rerun.n, "mean": finite(rerun.mean), "std": finite(rerun.std),
                    "ci95_low": finite(rerun.ci_low), "ci95_high": finite(rerun.ci_high), "values": rerun.values},
                "verdict": cell.verdict.label if cell.verdict else None,
                "p_holm": finite(cell.verdict.p_adjusted) if cell.verdict else None,
                "command": cell.command}})
    return cells
