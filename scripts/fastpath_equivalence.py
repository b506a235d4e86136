#!/usr/bin/env python3
"""Does the fast path change what ganbench measures? Train the same grids with it off and on, compare.

Every grid runs through the real CLI (``ganbench run`` in a subprocess, one per benchmark
and configuration, all seeds in it), so the runs are what a user's would be. The
configurations (``--set`` overrides on top of the grid):

* ``off``: every fast-path setting off (``ganbench.planning.defaults.FAST_PATH_OFF``): the plain float32 loop.
* ``on``: the fast path at its defaults (nothing set). On a CPU without native bfloat16,
  ``precision=auto`` resolves to float32, so "on" is channels_last + foreach optimisers;
  on a GPU it also means bfloat16 autocast for images.
* ``bf16``: the defaults with ``precision=bf16`` forced: what a GPU's ``auto`` does on
  images (and what ``auto`` deliberately does not do on 2D points). Emulated, and many
  times slower, on CPUs without bfloat16 arithmetic, so it is run only where asked.

The benchmarks:

* ``dcgan-mnist``: dcgan / ns on MNIST, final FID of 10k samples in the feature space of
  ganbench's MNIST classifier (``--set extractor=classifier``).
* ``mlp-2d``: mlp / ns on ring8 and grid25 (batch 256 as the quickstart preset, lr 1e-3: at
  the default 2e-4, 2000 steps leave ring8 at 0-1 of 8 modes covered), final mode
  coverage (``modes`` metric: modes covered, % high-quality samples, reverse KL). The mlp has
  no convolutions, so here "on" differs from "off" only in the optimiser kernels.
* ``mlp-mnist`` (only with ``--bf16-mnist-mlp``): mlp / ns on MNIST, FID as above, off vs bf16:
  the cheapest image model, so bfloat16 on images is affordable on a CPU that emulates it.
* ``mlp-2d-small`` (only with ``--bf16-2d``): mlp-2d with a narrower mlp and batch 64, off vs
  bf16, small enough for emulated bfloat16 to be affordable on a CPU.

For each benchmark, dataset and metric, each configuration is compared with ``off`` over the
per-seed final values: mean ± sd, difference of means with a 95% Welch confidence interval,
Welch's two-sided p-value, how many seeds gave the very same value, and a verdict at alpha
0.05 (uncorrected, so the verdict errs towards "different"). Not significant is not proof of
no effect: the interval says how large an effect the seeds can rule out.

Output under ``--out``: one ``ganbench run`` output directory per benchmark and configuration
(``OUT/<benchmark>/<config>/``, so a second invocation resumes and skips finished runs),
``comparison.csv``, ``tables.md`` (also printed) and ``commands.txt`` (each command and its
wall time).

    # as in docs/performance.md: ~45 minutes on 2 cores
    python scripts/fastpath_equivalence.py --out /tmp/fpeq --bf16-2d --bf16-mnist-mlp
    # a smoke test: tiny models, 2 seeds, off vs on only (about 30 s)
    python scripts/fastpath_equivalence.py --quick --out /tmp/fpeq-q
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ganbench.planning.defaults import FAST_PATH_OFF as OFF

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.05
CONFIGS: dict[str, dict[str, object]] = {
    "off": dict(OFF),
    "on": {},
    "bf16": {"precision": "bf16"},
}
"""``--set`` overrides of each configuration on top of the benchmark's own settings."""
BASELINE = "off"
METRIC_ORDER = ("fid", "modes_covered", "modes_high_quality_percent", "modes_reverse_kl")


@dataclass
class Benchmark:
    """One grid, trained once per configuration."""

    name: str
    arch: str
    loss: str
    datasets: list[str]
    metrics: str
    steps: int
    batch_size: int
    seeds: list[int]
    configs: list[str]
    sets: dict[str, object] = field(default_factory=dict)
    needs_data: bool = False

    def command(self, config: str, out: Path, options: argparse.Namespace) -> list[str]:
        args = ["run", "--archs", self.arch, "--losses", self.loss, "--datasets", ",".join(self.datasets),
                "--seeds", ",".join(map(str, self.seeds)), "--steps", str(self.steps),
                "--batch-size", str(self.batch_size), "--metrics", self.metrics,
                "--workers", str(options.workers), "--out", str(out), "--quiet"]
        for key, value in {**self.sets, **CONFIGS[config]}.items():
            args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
        if self.needs_data and options.data_dir:
            args += ["--data-dir", str(options.data_dir)]
        if options.cache_dir:
            args += ["--cache-dir", str(options.cache_dir)]
        return args


def benchmarks(options: argparse.Namespace) -> list[Benchmark]:
    """The benchmarks this invocation runs, sized by ``options``."""
    q = options.quick
    mnist_seeds = list(range(options.seeds if options.seeds else (2 if q else 5)))
    points_seeds = list(range(options.seeds_2d if options.seeds_2d else (2 if q else 6)))
    mnist_configs = ["off", "on"] + (["bf16"] if options.bf16_mnist else [])
    fid_sets: dict[str, object] = {"extractor": "classifier", "dcgan_width": options.dcgan_width or (4 if q else 32)}
    if q:  # a smoke test: tiny models, a 500-sample FID against 1000 real images
        fid_sets.update(fid_samples=500, real_samples=1000)
    found = [
        Benchmark("dcgan-mnist", "dcgan", "ns", ["mnist"], "fid", options.steps or (3 if q else 300),
                  16 if q else 64, mnist_seeds, mnist_configs, fid_sets, needs_data=True),
        Benchmark("mlp-2d", "mlp", "ns", ["ring8"] if q else ["ring8", "grid25"], "modes",
                  options.steps_2d or (5 if q else 2000), 32 if q else 256, points_seeds, ["off", "on"],
                  {"mlp_width": 16} if q else {"lr": 1e-3}),
    ]
    if options.bf16_2d and not q:
        found.append(Benchmark("mlp-2d-small", "mlp", "ns", ["ring8", "grid25"], "modes",
                               options.steps_2d_small, 64, list(range(options.seeds_2d_small)), ["off", "bf16"],
                               {"mlp_width": options.mlp_width_small, "lr": 1e-3}))
    if options.bf16_mnist_mlp and not q:
        found.append(Benchmark("mlp-mnist", "mlp", "ns", ["mnist"], "fid", options.steps_mnist_mlp, 64,
                               mnist_seeds, ["off", "bf16"], {"extractor": "classifier"}, needs_data=True))
    if options.only:
        found = [benchmark for benchmark in found if benchmark.name in options.only]
    return found


def run_grids(selected: list[Benchmark], options: argparse.Namespace) -> pd.DataFrame:
    """Run every benchmark in every configuration; return all results.csv rows with ``benchmark``/``config``."""
    jobs = [(benchmark, config) for benchmark in selected for config in benchmark.configs]
    with ThreadPoolExecutor(max_workers=max(1, options.parallel)) as pool:
        frames = list(pool.map(lambda numbered: _run_one(*numbered[1], numbered[0], options), enumerate(jobs)))
    return pd.concat(frames, ignore_index=True)


def _run_one(benchmark: Benchmark, config: str, index: int, options: argparse.Namespace) -> pd.DataFrame:
    """One ``ganbench run`` (all seeds and datasets of one benchmark in one configuration)."""
    out = options.out / benchmark.name / config
    out.parent.mkdir(parents=True, exist_ok=True)
    args = benchmark.command(config, out, options)
    shown = "ganbench " + shlex.join(args)
    print(f"[{time.strftime('%H:%M:%S')}] {shown}", flush=True)
    started = time.monotonic()
    # cwd: the output folder, so a checkout's ganbench/ folder never shadows the installed one
    completed = subprocess.run(
        [sys.executable, "-c", "import sys; from ganbench.cli import main; sys.exit(main(sys.argv[1:]))", *args],
        cwd=options.out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_pin(options.threads, index))
    wall = time.monotonic() - started
    with open(options.out / "commands.txt", "a") as log:
        log.write(f"{shown}\n  # exit {completed.returncode}, {wall:.0f} s wall\n")
    (out.parent / f"{config}.log").write_text(completed.stdout)
    print(f"  {benchmark.name}/{config}: exit {completed.returncode}, {wall:.0f} s wall", flush=True)
    if completed.returncode != 0:
        raise SystemExit(f"ganbench run failed (exit {completed.returncode}); its output:\n"
                         f"{completed.stdout[-4000:]}")
    frame = pd.read_csv(out / "results.csv")
    frame["benchmark"], frame["config"] = benchmark.name, config
    return frame


def _pin(threads: int, index: int):
    """Restrict the ``index``-th ganbench process (and so its workers) to ``threads`` cores: ganbench
    gives each worker as many torch threads as it has cores, and on a shared machine 1 thread is
    steadiest. Commands running at once (``--parallel``) get different cores where there are enough."""
    if not threads or not hasattr(os, "sched_setaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    cores = {available[(index * threads + k) % len(available)] for k in range(threads)}
    return lambda: os.sched_setaffinity(0, cores)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The metric columns to compare, in a stable order (fid columns by prefix, never *_std)."""
    columns = []
    for wanted in METRIC_ORDER:
        columns += [c for c in frame.columns if (c == wanted or (wanted == "fid" and c.startswith("fid")))
                    and not c.endswith("_std") and c not in columns and frame[c].notna().any()]
    return columns


def welch(baseline: np.ndarray, candidate: np.ndarray) -> tuple[float, float, float, float]:
    """``(difference of means candidate - baseline, CI low, CI high, two-sided p)`` by Welch's t-test."""
    difference = float(candidate.mean() - baseline.mean())
    if len(baseline) < 2 or len(candidate) < 2:
        return difference, math.nan, math.nan, math.nan
    var_b, var_c = baseline.var(ddof=1) / len(baseline), candidate.var(ddof=1) / len(candidate)
    standard_error = math.sqrt(var_b + var_c)
    if standard_error == 0:  # no spread on either side: equal means tie, different ones differ
        return difference, difference, difference, 1.0 if difference == 0 else 0.0
    dof = (var_b + var_c) ** 2 / (var_b ** 2 / (len(baseline) - 1) + var_c ** 2 / (len(candidate) - 1))
    half_width = float(stats.t.ppf(0.975, dof)) * standard_error
    p_value = float(stats.ttest_ind(candidate, baseline, equal_var=False).pvalue)
    return difference, difference - half_width, difference + half_width, p_value


def compare(results: pd.DataFrame) -> pd.DataFrame:
    """One row per benchmark, dataset, metric and configuration other than ``off``, compared with ``off``."""
    rows = []
    for (benchmark, dataset), group in results.groupby(["benchmark", "dataset"], sort=False):
        done = group[group["status"] == "done"]
        for metric in metric_columns(group):
            values = {config: done[done["config"] == config].set_index("seed")[metric].astype(float)
                      for config in done["config"].unique()}
            base = values.get(BASELINE)
            if base is None:
                continue
            for config, series in values.items():
                if config == BASELINE:
                    continue
                a, b = base.dropna(), series.dropna()
                difference, low, high, p = welch(a.to_numpy(), b.to_numpy())
                common = a.index.intersection(b.index)
                rows.append({
                    "benchmark": benchmark, "dataset": dataset, "metric": metric, "config": config,
                    "baseline": BASELINE, "n_baseline": len(a), "n_config": len(b),
                    "runs_not_done": int((group["status"] != "done").sum()),
                    "mean_baseline": a.mean(), "sd_baseline": a.std(ddof=1),
                    "mean_config": b.mean(), "sd_config": b.std(ddof=1),
                    "difference": difference, "ci95_low": low, "ci95_high": high, "p_welch": p,
                    "same_per_seed": int((a[common] == b[common]).sum()), "paired_seeds": len(common),
                    "verdict": ("can't tell (n<2)" if math.isnan(p) else
                                "different" if p < ALPHA else f"indistinguishable at alpha {ALPHA}"),
                })
    return pd.DataFrame(rows)


def _number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _p(value: float) -> str:
    return "–" if math.isnan(value) else "<0.001" if value < 0.001 else f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def markdown(comparison: pd.DataFrame, results: pd.DataFrame) -> str:
    """A markdown table per benchmark, dataset and metric: one row per configuration compared with off."""
    parts = []
    for (benchmark, dataset, metric), group in comparison.groupby(["benchmark", "dataset", "metric"], sort=False):
        sample = results[(results["benchmark"] == benchmark) & (results["dataset"] == dataset)].iloc[0]
        parts.append(f"**{benchmark} — {dataset} — `{metric}`** ({sample['architecture']}/{sample['loss']}, "
                     f"{int(sample['steps'])} steps, batch {int(sample['batch_size'])})\n")
        parts.append("| vs off | n (off, cfg) | off: mean ± sd | cfg: mean ± sd | difference (95% Welch CI) "
                     "| Welch p | same value, per seed | verdict |")
        parts.append("|---|---|---:|---:|---:|---:|---:|---|")
        for row in group.itertuples():
            parts.append(
                f"| {row.config} | {row.n_baseline}, {row.n_config} "
                f"| {_number(row.mean_baseline)} ± {_number(row.sd_baseline)} "
                f"| {_number(row.mean_config)} ± {_number(row.sd_config)} "
                f"| {_number(row.difference)} [{_number(row.ci95_low)}, {_number(row.ci95_high)}] "
                f"| {_p(row.p_welch)} | {row.same_per_seed}/{row.paired_seeds} | {row.verdict} |")
        parts.append("")
    return "\n".join(parts)


def machine() -> str:
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, python {platform.python_version()}"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("fastpath-equivalence"), help="output folder")
    parser.add_argument("--seeds", type=int, help="seeds per configuration on MNIST (default 5; --quick 2)")
    parser.add_argument("--seeds-2d", type=int, help="seeds per configuration on ring8/grid25 (default 6; --quick 2)")
    parser.add_argument("--steps", type=int, help="generator steps of the dcgan MNIST runs (default 300)")
    parser.add_argument("--steps-2d", type=int, help="generator steps of the 2D runs (default 2000)")
    parser.add_argument("--dcgan-width", type=int, help="dcgan_width of the MNIST runs (default 32; --quick 4)")
    parser.add_argument("--bf16-mnist", action="store_true",
                        help="also train the MNIST benchmark with precision=bf16 (slow without native bf16)")
    parser.add_argument("--bf16-mnist-mlp", action="store_true",
                        help="add mlp-mnist: mlp/ns on MNIST (FID, classifier), off vs precision=bf16")
    parser.add_argument("--steps-mnist-mlp", type=int, default=300, help="steps of mlp-mnist (default 300)")
    parser.add_argument("--bf16-2d", action="store_true",
                        help="add mlp-2d-small: a narrower mlp at batch 64, off vs precision=bf16")
    parser.add_argument("--steps-2d-small", type=int, default=2000, help="steps of mlp-2d-small (default 2000)")
    parser.add_argument("--seeds-2d-small", type=int, default=5, help="seeds of mlp-2d-small (default 5)")
    parser.add_argument("--mlp-width-small", type=int, default=64, help="mlp_width of mlp-2d-small (default 64)")
    parser.add_argument("--only", type=lambda text: text.split(","), help="benchmarks to run, comma-separated")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding mnist/ (default: ../shared/data from the checkout when present)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="ganbench cache (default: ganbench's own)")
    parser.add_argument("--workers", type=int, default=1, help="ganbench run --workers (default 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="cores the ganbench processes may use, and so torch threads per worker "
                             "(default 1: steadiest on a shared machine; 0 = leave the affinity alone)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="ganbench run commands at once (default 1: one training process at a time)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: 2 seeds, a few steps, tiny models, off vs on, 2D on ring8 only")
    options = parser.parse_args(argv)
    if options.data_dir is None and (ROOT.parent / "shared" / "data" / "mnist").is_dir():
        options.data_dir = ROOT.parent / "shared" / "data"
    options.out = options.out.resolve()
    if options.data_dir:
        options.data_dir = options.data_dir.resolve()
    if options.cache_dir:
        options.cache_dir = options.cache_dir.resolve()
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    selected = benchmarks(options)
    results = run_grids(selected, options)
    comparison = compare(results)
    comparison.to_csv(options.out / "comparison.csv", index=False)
    command = "python scripts/fastpath_equivalence.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = (f"Machine: {machine()}; {options.threads or 'all'} core(s) per ganbench process, "
            f"--workers {options.workers}.\nCommand: `{command}` ({time.monotonic() - started:.0f} s wall)\n\n"
            + markdown(comparison, results))
    (options.out / "tables.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
