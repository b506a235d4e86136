"""The report's pictures (matplotlib, no pyplot state): PNG and SVG of each plot, plus sample grids.

* ``history_<dataset>``: the primary metric over training steps per config, mean with a
  ±1 std band across seeds (from the eval lines of ``metrics.jsonl``); when no config has
  two evaluations, the discriminator and generator losses instead.
* ``final_<dataset>``: the final value of each table metric, one box and the seeds' points per config.
* ``throughput``: training images per second per config, mean ± std and the seeds' points.
* ``samples/<dataset>-<config_id>.png``: the last sample picture of the config's first seed
  (an image grid, or generated points over the real ones for the 2D sets).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ganbench.ledger.storage import atomic_write, read_jsonl
from ganbench.report.aggregate import Comparison, ConfigSummary
from ganbench.report.directions import THROUGHPUT, direction_of

MAX_DISTRIBUTION_PANELS = 4


@dataclass(frozen=True)
class Picture:
    """One picture of the report, with the files it was written to."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path | None = None
    dataset: str = ""
    config_id: str = ""


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, directory: Path, name: str, title: str, caption: str, dataset: str = "") -> Picture:
    png, svg = directory / f"{name}.png", directory / f"{name}.svg"
    atomic_write(png, lambda handle: figure.savefig(handle, format="png"))
    atomic_write(svg, lambda handle: figure.savefig(handle, format="svg", metadata={"Date": None}))
    return Picture(name, title, caption, png, svg, dataset)


def _colors(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _history(config: ConfigSummary, kind: str, column: str) -> pd.DataFrame:
    """``seed, step, value`` of ``column`` in the ``kind`` lines of each seed's metrics.jsonl."""
    rows = []
    for seed, run_dir in zip(config.seeds, config.run_dirs):
        records, _ = read_jsonl(run_dir / "metrics.jsonl")
        for record in records:
            value = record.get(column)
            if record.get("kind") == kind and isinstance(value, (int, float)) and np.isfinite(value):
                rows.append({"seed": seed, "step": int(record.get("step", 0)), "value": float(value)})
    return pd.DataFrame(rows, columns=["seed", "step", "value"])


def _band(axes, history: pd.DataFrame, color, label: str) -> None:
    by_step = history.groupby("step")["value"].agg(["mean", "std", "count"]).reset_index()
    axes.plot(by_step["step"], by_step["mean"], color=color, label=label, linewidth=1.5)
    spread = by_step[by_step["count"] >= 2]
    if len(spread):
        axes.fill_between(spread["step"], spread["mean"] - spread["std"], spread["mean"] + spread["std"],
                          color=color, alpha=0.2, linewidth=0)


def history_plot(comparison: Comparison, dataset: str, directory: Path) -> Picture | None:
    configs = comparison.in_dataset(dataset)
    primary = comparison.primary.get(dataset)
    histories = {c.config_id: _history(c, "eval", primary) for c in configs} if primary else {}
    if any(h["step"].nunique() >= 2 for h in histories.values()):
        panels = [(primary, "eval", histories)]
        caption = f"{primary} at each evaluation: mean over seeds, band ±1 std."
    else:
        panels = [(column, "train", {c.config_id: _history(c, "train", column) for c in configs})
                  for column in ("d_loss", "g_loss")]
        caption = ("Discriminator and generator losses (no config has two evaluations of its metric; "
                   "use --eval-every for a metric history): mean over seeds, band ±1 std.")
        if not any(len(h) for _, _, data in panels for h in data.values()):
            return None
    figure = _figure(7.5 * len(panels) if len(panels) > 1 else 8, 4.2)
    colors = _colors(len(configs))
    for index, (column, _, data) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for color, config in zip(colors, configs):
            if len(data[config.config_id]):
                _band(axes, data[config.config_id], color, config.label)
        axes.set_xlabel("generator step")
        axes.set_ylabel(column + (f" ({direction_of(column).better} is better)" if direction_of(column).better else ""))
        axes.set_title(f"{dataset}: {column}", fontsize=10)
        axes.grid(alpha=0.3)
    figure.axes[-1].legend(fontsize=7, loc="best")
    return _save(figure, directory, f"history_{dataset}", f"{dataset}: training history", caption, dataset)


def _strip(axes, values_per_config: list[list[float]], labels: list[str], colors: list) -> None:
    positions = np.arange(1, len(values_per_config) + 1)
    boxed = [(p, v) for p, v in zip(positions, values_per_config) if len(v)]
    if boxed:
        axes.boxplot([v for _, v in boxed], positions=[p for p, _ in boxed], widths=0.5, showfliers=False,
                     medianprops={"color": "black"})
    jitter = np.random.default_rng(0)
    for position, values, color in zip(positions, values_per_config, colors):
        offsets = jitter.uniform(-0.12, 0.12, len(values))
        axes.scatter(position + offsets, values, color=color, s=22, zorder=3, edgecolors="black", linewidths=0.4)
    axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    axes.grid(axis="y", alpha=0.3)


def distribution_plot(comparison: Comparison, dataset: str, directory: Path) -> Picture | None:
    configs = comparison.in_dataset(dataset)
    columns = comparison.table_columns(dataset)[:MAX_DISTRIBUTION_PANELS]
    if not columns:
        return None
    figure = _figure(min(18.0, max(4.5, 0.7 * len(configs) + 1.5) * len(columns)), 4.5)
    colors = _colors(len(configs))
    for index, column in enumerate(columns):
        axes = figure.add_subplot(1, len(columns), index + 1)
        values = [c.metrics[column].values if column in c.metrics else [] for c in configs]
        _strip(axes, values, [c.label for c in configs], colors)
        arrow = direction_of(column).arrow
        axes.set_title(f"{column} {arrow}".strip(), fontsize=10)
    figure.suptitle(f"{dataset}: final value per seed", fontsize=11)
    caption = "Final value of each seed (points) and their spread (box: quartiles, whiskers: range)."
    return _save(figure, directory, f"final_{dataset}", f"{dataset}: final metrics over seeds", caption, dataset)


def throughput_plot(comparison: Comparison, directory: Path) -> Picture | None:
    configs = [c for c in comparison.configs if THROUGHPUT in c.metrics and c.metrics[THROUGHPUT].n]
    if not configs:
        return None
    figure = _figure(8, 1.2 + 0.35 * len(configs))
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(configs))[::-1]
    means = [c.metrics[THROUGHPUT].mean for c in configs]
    errors = [np.nan_to_num(c.metrics[THROUGHPUT].std) for c in configs]
    axes.barh(positions, means, xerr=errors, color="#4c72b0", capsize=3)
    for position, config in zip(positions, configs):
        values = config.metrics[THROUGHPUT].values
        axes.scatter(values, [position] * len(values), color="black", s=10, zorder=3)
    axes.set_yticks(positions, [f"{c.dataset}: {c.label}" for c in configs], fontsize=8)
    axes.set_xlabel("training images per second (steady state)")
    axes.grid(axis="x", alpha=0.3)
    caption = "Training throughput per config: mean ± std over seeds (bars), each seed (points)."
    return _save(figure, directory, "throughput", "Throughput", caption)


def last_sample_picture(config: ConfigSummary) -> tuple[int, Path] | None:
    """``(seed, path)`` of the newest ``samples/step_*.png`` of the config's first seed that has one."""
    for seed, run_dir in sorted(zip(config.seeds, config.run_dirs)):
        pictures = sorted((run_dir / "samples").glob("step_*.png"))
        if pictures:
            return seed, pictures[-1]
    return None


def sample_pictures(comparison: Comparison, directory: Path) -> list[Picture]:
    """Copy each config's last sample picture into ``directory``."""
    pictures = []
    for config in comparison.configs:
        found = last_sample_picture(config)
        if found is None:
            continue
        seed, source = found
        step = int(source.stem.removeprefix("step_"))
        target = directory / f"{config.dataset}-{config.config_id}.png"
        atomic_write(target, lambda handle: handle.write(source.read_bytes()))
        pictures.append(Picture(target.stem, f"{config.dataset}: {config.label}",
                                f"seed {seed}, step {step}", target, None, config.dataset, config.config_id))
    return pictures


def write_plots(comparison: Comparison, report_dir: Path) -> list[Picture]:
    """Write every plot and sample picture under ``report_dir``; return them in display order."""
    plots_dir, samples_dir = report_dir / "plots", report_dir / "samples"
    for stale in (plots_dir, samples_dir):  # pictures of configs no longer in the comparison
        shutil.rmtree(stale, ignore_errors=True)
    plots_dir.mkdir(parents=True, exist_ok=True)
    samples_dir.mkdir(parents=True, exist_ok=True)
    pictures: list[Picture] = []
    for dataset in comparison.datasets:
        for make in (history_plot, distribution_plot):
            picture = make(comparison, dataset, plots_dir)
            if picture:
                pictures.append(picture)
    throughput = throughput_plot(comparison, plots_dir)
    if throughput:
        pictures.append(throughput)
    return pictures + sample_pictures(comparison, samples_dir)
