"""The PacGAN toy step against its arithmetic: how close ganbench's loop gets to the FLOPs it does.

The runs of ``pacgan-table1`` on ring8 (the ``pacgan`` networks: a 4x400 BatchNorm
generator and a 3x200x5 maxout discriminator, non-saturating loss, batch 100 packs, Adam),
at ``pac`` 1 and 2. Each step's floating-point operations are counted by
:class:`torch.utils.flop_counter.FlopCounterMode` over one whole training step (forward
and backward of G and D: the matrix products, which is where the arithmetic is) and
divided by the step time of ganbench's loop (fastest round). The reference rate is what
one large float32 matrix product (1024x1024 by 1024x1024) reaches on the same torch
threads in the same session: the rate this CPU can sustain for this arithmetic, so the
fraction says how much of a step is not spent multiplying.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_support import LOG_EVERY, GanbenchLoop
from ganbench.ledger.runs import run_directory
from ganbench.planning.grid import expand, load_preset
from ganbench.training.loop import RunState, train_step

PACKING = (1, 2)
STEPS_PER_ROUND = 20
MATMUL_SIDE = 1024


def toy_spec(registry, pac: int, fast: bool):
    """The ring8 run of ``pacgan-table1`` with packing degree ``pac`` (narrower networks in fast mode)."""
    sets = {"pacgan_width_g": [32], "pacgan_width_d": [16]} if fast else {}
    grid = load_preset("pacgan-table1")
    grid = grid.replace(datasets=["ring8"], seeds=[0], steps=1_000_000, metrics=["none"], log_every=LOG_EVERY,
                        batch_size=16 if fast else None, sets={**grid.sets, **sets, "pac": [pac]})
    spec, = expand(grid, registry)
    return spec


def step_flops(spec, registry, data_dir: Path, cache_dir: Path, out: Path) -> float:
    """Floating-point operations of one training step of ``spec``, as torch's flop counter counts them."""
    run = RunState(spec, run_directory(out, spec), registry=registry, device=torch.device("cpu"),
                   data_dir=str(data_dir), cache_dir=cache_dir)
    train_step(run)  # allocations and lazy initialisation out of the way
    with FlopCounterMode(display=False) as counter:
        train_step(run)
    return float(counter.get_total_flops())


def matmul_flops_per_second(side: int = MATMUL_SIDE, rounds: int = 5) -> float:
    """The float32 rate of a ``side``-cubed matrix product on torch's current threads (fastest of ``rounds``)."""
    a, b = torch.randn(side, side), torch.randn(side, side)
    a @ b
    fastest = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - started)
    return 2.0 * side**3 / fastest


@pytest.mark.parametrize("pac", PACKING, ids=[f"pac{pac}" for pac in PACKING])
def test_toy_step_against_its_arithmetic(benchmark, scale, results, registry, data_dir, bench_cache, tmp_path, pac):
    spec = toy_spec(registry, pac, scale.fast)
    flops = step_flops(spec, registry, data_dir, bench_cache, tmp_path / "count")
    steps = 1 if scale.fast else STEPS_PER_ROUND
    loop = GanbenchLoop(spec, tmp_path / "run", registry, data_dir, bench_cache)
    benchmark.group = "toy step pacgan/ns/ring8"
    loop.drive(lambda run: benchmark.pedantic(run, args=(steps,), rounds=scale.rounds,
                                              warmup_rounds=scale.warmup_rounds))
    assert flops > 0
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # the test command's single pass: nothing to report
        return
    seconds = float(stats.stats.min) / steps
    reference = results.notes.setdefault("matmul_flops_per_second", matmul_flops_per_second())
    figures = {"steps_per_second": 1 / seconds, "gflop_per_step": flops / 1e9,
               "gflop_per_second": flops / seconds / 1e9, "fraction_of_matmul_rate": flops / seconds / reference}
    benchmark.extra_info.update(pac=pac, batch_size=spec.batch_size, threads=torch.get_num_threads(), **figures)
    for key, value in figures.items():
        results.notes[f"toy_pac{pac}_{key}"] = value
