"""Fixtures of the benchmark suite, and the table of ratios printed after the benchmarks.

``pytest --benchmark-only`` measures; ``pytest --benchmark-disable`` (the test command) runs
every benchmark once at a small scale (:data:`bench_support.FAST`), so the suite cannot rot.
Timings are compared as ratios between benchmarks of the same session, from each one's
fastest round (the least disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import bench_support as support
from ganbench.api import LoadedData
from ganbench.planning.defaults import DEFAULT_STEPS


@dataclass
class Results:
    """Seconds measured in this session, for the ratio table and the benchmarks' ``extra_info``."""

    step_seconds: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    """``(dataset, architecture, loss, loop)`` -> seconds per generator step (fastest round)."""
    images_per_step: dict[tuple[str, str, str], int] = field(default_factory=dict)
    packed_step_seconds: dict[tuple[str, str, str, int], float] = field(default_factory=dict)
    """``(dataset, architecture, loss, runs)`` -> seconds per step of a pack of that many runs."""
    evaluation_seconds: dict[str, float] = field(default_factory=dict)
    """Evaluation benchmark name -> seconds (fastest round)."""
    notes: dict[str, float] = field(default_factory=dict)
    """Other figures (``images_per_second`` of the extractor, classifier training seconds)."""

    def add_training(self, benchmark: Any, cell: tuple[str, str, str], loop: str, images_per_step: int,
                     steps_per_round: int) -> None:
        """Record a training benchmark; give ganbench's its ratios to the loops measured before it."""
        seconds = _step_seconds(benchmark, images_per_step, steps_per_round)
        if seconds is None:
            return
        self.step_seconds[(*cell, loop)] = seconds
        self.images_per_step[cell] = images_per_step
        benchmark.extra_info.update(self.training_ratios(cell))

    def training_ratios(self, cell: tuple[str, str, str]) -> dict[str, float]:
        ganbench = self.step_seconds.get((*cell, "ganbench"))
        ratios = {}
        if ganbench is not None and (*cell, "dataloader") in self.step_seconds:
            ratios["speedup_over_dataloader_loop"] = self.step_seconds[(*cell, "dataloader")] / ganbench
        if ganbench is not None and (*cell, "minimal") in self.step_seconds:
            ratios["overhead_over_minimal_loop"] = ganbench / self.step_seconds[(*cell, "minimal")] - 1
        return ratios

    def add_packed(self, benchmark: Any, cell: tuple[str, str, str], runs: int, images_per_step: int,
                   steps_per_round: int) -> None:
        """Record a packed-training benchmark; give it its ratio to ``runs`` separate runs of ganbench's loop."""
        seconds = _step_seconds(benchmark, runs * images_per_step, steps_per_round)
        if seconds is None:
            return
        self.packed_step_seconds[(*cell, runs)] = seconds
        ratio = self.packed_ratio(cell, runs)
        if not math.isnan(ratio):
            benchmark.extra_info["speedup_over_separate_runs"] = ratio

    def packed_ratio(self, cell: tuple[str, str, str], runs: int) -> float:
        """Throughput of a pack of ``runs`` runs over the same runs trained one at a time by ganbench's loop."""
        alone, packed = self.step_seconds.get((*cell, "ganbench")), self.packed_step_seconds.get((*cell, runs))
        return runs * alone / packed if alone and packed else math.nan

    def add_evaluation(self, benchmark: Any, name: str) -> float | None:
        seconds = fastest_round(benchmark)
        if seconds is not None:
            self.evaluation_seconds[name] = seconds
        return seconds


def _step_seconds(benchmark: Any, images_per_step: int, steps_per_round: int) -> float | None:
    """Seconds per step of the fastest round (None when disabled); records its images per second."""
    seconds = fastest_round(benchmark)
    if seconds is None:
        return None
    benchmark.extra_info["images_per_second"] = images_per_step * steps_per_round / seconds
    return seconds / steps_per_round


def fastest_round(benchmark: Any) -> float | None:
    """Seconds of the benchmark's fastest round, or None when benchmarks are disabled."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else float(stats.stats.min)


RESULTS = pytest.StashKey[Results]()


@pytest.fixture(scope="session")
def results(pytestconfig) -> Results:
    return pytestconfig.stash.setdefault(RESULTS, Results())


@pytest.fixture(scope="session")
def scale(pytestconfig) -> support.Scale:
    """Fast mode under ``--benchmark-disable``, full measurements otherwise."""
    return support.FAST if pytestconfig.getoption("benchmark_disable") else support.FULL


@pytest.fixture(scope="session")
def registry():
    return support.benchmark_registry()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert (support.SHARED_DATA / "mnist").is_dir(), f"the real MNIST files belong in {support.SHARED_DATA / 'mnist'}"
    return support.SHARED_DATA


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """One ganbench cache for the session (datasets, the classifier, real statistics)."""
    return tmp_path_factory.mktemp("ganbench-cache")


@pytest.fixture(scope="session")
def real_data(registry, data_dir, bench_cache, scale) -> Callable[[str], LoadedData]:
    """``real_data(dataset)``: the dataset's samples, loaded once per session."""
    loaded: dict[str, LoadedData] = {}

    def load(dataset: str) -> LoadedData:
        if dataset not in loaded:
            spec = support.run_spec(registry, "mlp", "ns", dataset, scale)
            loaded[dataset] = support.load_data(registry, spec, data_dir, bench_cache)
        return loaded[dataset]

    return load


@pytest.fixture
def training_loop(registry, real_data, data_dir, bench_cache, scale, tmp_path):
    """``training_loop(kind, architecture, loss, dataset, **sets)``: ``(loop, spec)``, the loop ready to drive."""

    def make(kind: str, architecture: str, loss: str, dataset: str, num_workers: int = 0, **sets: Any):
        spec = support.run_spec(registry, architecture, loss, dataset, scale, **sets)
        if kind == "ganbench":
            return support.GanbenchLoop(spec, tmp_path / kind, registry, data_dir, bench_cache), spec
        if kind.startswith("packed-"):
            specs = support.pack_specs(registry, architecture, loss, dataset, scale, int(kind.split("-")[1]))
            return support.PackedLoop(specs, tmp_path / kind, registry, data_dir, bench_cache), spec
        if kind == "minimal":
            return support.MinimalLoop(spec, registry, real_data(dataset)), spec
        return support.DataLoaderLoop(spec, registry, real_data(dataset), num_workers=num_workers), spec

    return make


THREADS_VARIABLE = "GANBENCH_BENCH_THREADS"


@pytest.fixture(scope="session", autouse=True)
def torch_threads(scale, results) -> int:
    """Torch's intra-op threads for the session: ``GANBENCH_BENCH_THREADS`` if set, else one in fast
    mode (on shared cores a larger pool oversubscribes and runs many times slower) and torch's
    default when measuring."""
    before = torch.get_num_threads()
    wanted = os.environ.get(THREADS_VARIABLE, "")
    threads = int(wanted) if wanted else (1 if scale.fast else before)
    torch.set_num_threads(threads)
    results.notes["threads"] = threads
    yield threads
    torch.set_num_threads(before)


# --- the ratio table -------------------------------------------------------------------

TARGETS = {
    "speedup": 1.5,            # ganbench DCGAN on MNIST over the plain DataLoader loop
    "overhead": 0.05,          # ganbench over the minimal loop with the same settings
    "cached_fid_seconds": 10.0,
    "cold_over_cached": 5.0,
    "evaluation_share": 0.20,  # of a run's wall time at the default schedule
    "grid_overhead_seconds": 0.5,  # a run's launcher time beyond its training and evaluation
}


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), for the table's header."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _met(value: float, target: float, at_least: bool) -> str:
    if math.isnan(value):
        return "not measured"
    return "met" if (value >= target if at_least else value <= target) else "NOT met"


def ratio_table(results: Results) -> list[str]:
    """The lines printed after the benchmarks: throughput ratios, evaluation figures, targets."""
    lines = [f"machine: {cpu_name()}, torch {torch.__version__}, "
             f"{results.notes.get('threads', torch.get_num_threads()):.0f} torch thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}",
             "", f"{'training cell':32} {'ganbench img/s':>14} {'x DataLoader loop':>18} {'overhead vs minimal':>20}"]
    cells = sorted({key[:3] for key in results.step_seconds}, key=lambda c: (c[0], c[1], c[2]))
    for cell in cells:
        seconds = results.step_seconds.get((*cell, "ganbench"))
        rate = results.images_per_step[cell] / seconds if seconds else math.nan
        ratios = results.training_ratios(cell)
        speedup = ratios.get("speedup_over_dataloader_loop", math.nan)
        overhead = ratios.get("overhead_over_minimal_loop", math.nan)
        lines.append(f"{'/'.join((cell[1], cell[2], cell[0])):32} {rate:14.0f} {speedup:17.2f}x {overhead:+19.1%}")
    for key, seconds in sorted(results.step_seconds.items()):
        if key[3].startswith("dataloader-"):
            plain = results.step_seconds.get((*key[:3], "ganbench"))
            if plain:
                lines.append(f"  ganbench x {key[3]} ({'/'.join((key[1], key[2], key[0]))}): {seconds / plain:.2f}x")

    if results.packed_step_seconds:
        lines += ["", f"{'packed runs (--pack, one stacked model)':40} {'aggregate img/s':>15} {'x separate runs':>16}"]
    for (dataset, architecture, loss, runs), seconds in sorted(results.packed_step_seconds.items()):
        cell = (dataset, architecture, loss)
        rate = runs * results.images_per_step[cell] / seconds
        label = f"{runs} x {architecture}/{loss}/{dataset}"
        lines.append(f"{label:40} {rate:15.0f} {results.packed_ratio(cell, runs):15.2f}x")

    toys = sorted(key.split("_")[1] for key in results.notes if key.startswith("toy_") and key.endswith("_gflop_per_step"))
    if toys:
        rate = results.notes.get("matmul_flops_per_second", math.nan) / 1e9
        lines += ["", f"toy step (pacgan-table1 on ring8, batch 100; a {1024}^3 float32 matmul runs at {rate:.0f} GFLOP/s here)"]
    for pac in toys:
        figure = lambda name: results.notes[f"toy_{pac}_{name}"]  # noqa: E731
        lines.append(f"  {pac}: {figure('steps_per_second'):.1f} steps/s, {figure('gflop_per_step'):.2f} GFLOP per step, "
                     f"{figure('gflop_per_second'):.1f} GFLOP/s = {figure('fraction_of_matmul_rate'):.0%} of the matmul's rate; "
                     f"{results.notes.get(f'toy_{pac}_speedup_over_old', math.nan):.2f}x the old path (amax, foreach Adam), "
                     f"{results.notes.get(f'toy_{pac}_speedup_over_hand', math.nan):.2f}x a bare hand loop")
        lines.append(f"        in CPU time: {figure('cpu_steps_per_second'):.1f} steps/s, "
                     f"{figure('cpu_speedup_over_old'):.2f}x the old path, {figure('cpu_speedup_over_hand'):.2f}x the hand loop")

    grid_first = results.notes.get("grid_overhead_first_run_seconds", math.nan)
    grid_later = results.notes.get("grid_overhead_per_run_seconds", math.nan)
    if not math.isnan(grid_later):
        lines += ["", "grid (local executor, one resident worker, mlp/ns/ring8 runs)",
                  f"  overhead per run: {grid_later:.2f} s; first run of the worker, which starts it: "
                  f"{grid_first:.2f} s ({grid_first / max(grid_later, 1e-3):.1f}x)"]

    evaluation = results.evaluation_seconds
    cold, cached = evaluation.get("fid_cold_statistics", math.nan), evaluation.get("fid_cached_statistics", math.nan)
    classifier = results.notes.get("classifier_train_seconds", math.nan)
    if evaluation:
        lines += ["", "evaluation (classifier extractor, MNIST)"]
    if "extractor_images_per_second" in results.notes:
        lines.append(f"  extractor throughput: {results.notes['extractor_images_per_second']:,.0f} images/s")
    if "fid_cold_statistics" in evaluation or "fid_cached_statistics" in evaluation:
        lines += [f"  FID, real statistics cached: {cached:.2f} s; computed: {cold:.2f} s ({cold / cached:.2f}x); "
                  f"empty cache, classifier trained first: {cold + classifier:.1f} s ({(cold + classifier) / cached:.1f}x)"]
    steps = DEFAULT_STEPS
    default_evaluation = evaluation.get("evaluation_default_settings", math.nan)
    shares = {}
    for cell in cells:
        seconds = results.step_seconds.get((*cell, "ganbench"))
        if cell[0] == "mnist" and seconds and not math.isnan(default_evaluation):
            shares[cell] = default_evaluation / (default_evaluation + steps * seconds)
    if shares:
        lines.append(f"  evaluation at the default settings ({default_evaluation:.1f} s) as a share of a "
                     f"{steps}-step run evaluated once at the end:")
        lines += [f"    {cell[1]}/{cell[2]}: {share:.0%}" for cell, share in shares.items()]

    dcgan = results.training_ratios(("mnist", "dcgan", "ns"))
    overheads = [results.training_ratios(cell).get("overhead_over_minimal_loop", math.nan) for cell in cells]
    overheads = [value for value in overheads if not math.isnan(value)]
    share = shares.get(("mnist", "dcgan", "ns"), math.nan)
    lines += ["", "targets"]
    checks = [
        ("ganbench DCGAN/ns/MNIST >= 1.5x the DataLoader loop", dcgan.get("speedup_over_dataloader_loop", math.nan),
         TARGETS["speedup"], True, "{:.2f}x"),
        ("harness overhead <= 5% (median over cells)", _median(overheads), TARGETS["overhead"], False, "{:+.1%}"),
        ("10k FID with cached real statistics <= 10 s", cached, TARGETS["cached_fid_seconds"], False, "{:.2f} s"),
        ("cached evaluation >= 5x faster than cold (statistics only)", cold / cached, TARGETS["cold_over_cached"],
         True, "{:.2f}x"),
        ("cached evaluation >= 5x faster than cold (empty cache)", (cold + classifier) / cached,
         TARGETS["cold_over_cached"], True, "{:.1f}x"),
        ("evaluation <= 20% of a default DCGAN/ns/MNIST run", share, TARGETS["evaluation_share"], False, "{:.0%}"),
        ("grid overhead per run <= 0.5 s", grid_later, TARGETS["grid_overhead_seconds"], False, "{:.2f} s"),
    ]
    for label, value, target, at_least, style in checks:
        shown = "-" if math.isnan(value) else style.format(value)
        lines.append(f"  {label}: {shown} ({_met(value, target, at_least)})")
    return lines


def _median(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(RESULTS, None)
    if results is None or not (results.step_seconds or results.evaluation_seconds
                               or "grid_overhead_per_run_seconds" in results.notes
                               or "matmul_flops_per_second" in results.notes):
        return
    terminalreporter.section("ganbench ratios (fastest round of each benchmark)")
    for line in ratio_table(results):
        terminalreporter.write_line(line)
