"""The PacGAN toy step: ganbench's loop against the path it replaced, a bare hand loop and its FLOPs.

The runs of ``pacgan-table1`` on ring8 (the ``pacgan`` networks: a 4x400 BatchNorm
generator and a 3x200x5 maxout discriminator, non-saturating loss, batch 100 packs, Adam),
at ``pac`` 1 and 2, in three loops, each timed in the same session (fastest round):

* **old**: ganbench's loop as it trained before the toy step was made faster: the maxout's
  ``amax`` and Adam's foreach kernels (both put back for this benchmark only);
* **hand**: the least code that trains the same networks the same way (resident points,
  the same maxout and fused Adam, the loss written out): what a hand-written loop reaches;
* **ganbench**: ganbench's loop as it trains today (the body of ``train_to_end`` on a built
  ``RunState``, fast path at its defaults).

The three are built side by side and their rounds alternate (the old and hand rounds run in
the set-up between ganbench's timed rounds), so a change in the machine's load hits all three.

Each step's floating-point operations are counted by
:class:`torch.utils.flop_counter.FlopCounterMode` over one whole training step (forward and
backward of G and D: the matrix products, which is where the arithmetic is) and divided by
ganbench's step time. The reference rate is what one large float32 matrix product
(1024x1024 by 1024x1024) reaches on the same torch threads in the same session, so the
fraction says how much of a step is not spent multiplying.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench_support import load_data
from ganbench.ledger.runs import run_directory
from ganbench.planning.grid import expand, load_preset
from ganbench.training import fastpath
from ganbench.training.loop import Due, at_boundary, learning_rate_factor, train_step
from ganbench.training.state import RunState
from ganbench_plugins.pacgan_networks import Maxout

PACKING = (1, 2)
STEPS_PER_ROUND = 10
ROUNDS = 15
"""Many short rounds: the fastest of them is the one least disturbed on a shared machine."""
MATMUL_SIDE = 1024


def toy_spec(registry, pac: int, fast: bool):
    """The ring8 run of ``pacgan-table1`` with packing degree ``pac`` (narrower networks in fast mode).

    Its schedule is the preset's (losses logged every 500 steps, so no timed round logs):
    the step as the reproduction trains it. The other training benchmarks log every
    2 steps, which at this step's few milliseconds would time the log's fsync instead.
    The update is pinned to the alternating one with one generator call, which the hand
    and old loops implement and the issue's baseline measured; the preset itself now
    updates simultaneously (one generator pass per step, PacGAN's code), a cheaper step.
    """
    sets = {"pacgan_width_g": [32], "pacgan_width_d": [16]} if fast else {}
    sets.update(updates=["alternating"], pac_generator_calls=["one"])
    grid = load_preset("pacgan-table1")
    grid = grid.replace(datasets=["ring8"], seeds=[0], steps=1_000_000, metrics=["none"],
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


def amax_maxout(layer: Maxout, x: torch.Tensor) -> torch.Tensor:
    """The maxout as ganbench wrote it before: ``amax``, whose backward rebuilds a mask over all pieces."""
    return layer.linear(x).unflatten(-1, (layer.outputs, layer.pieces)).amax(dim=-1)


class HandLoop:
    """A bare hand-written loop for the toy run: resident points, one D step and one G step per step.

    The same networks (built by the architecture with the run's seed), the same ``pac``
    packing, non-saturating loss and fused Adam as ganbench trains; no harness around it.
    """

    def __init__(self, spec, registry, data_dir: Path, cache_dir: Path) -> None:
        params = spec.params
        self.real = load_data(registry, spec, data_dir, cache_dir).samples
        self.pac, self.batch, self.latent_dim = int(params["pac"]), spec.batch_size, int(params["latent_dim"])
        architecture = registry.get("architecture", spec.architecture)
        torch.manual_seed(spec.seed)
        self.generator, _ = architecture.build(tuple(self.real.shape[1:]), params)
        _, self.discriminator = architecture.build((self.real.shape[1] * self.pac,), params)
        adam = dict(betas=(params["beta1"], params["beta2"]), fused=True)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=params["lr_g"], **adam)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=params["lr_d"], **adam)

    def steps(self, count: int) -> None:
        samples, width = self.batch * self.pac, self.real.shape[1] * self.pac
        for _ in range(count):
            real = self.real[torch.randint(len(self.real), (samples,))].reshape(self.batch, width)
            with torch.no_grad():
                fake = self.generator(torch.randn(samples, self.latent_dim)).reshape(self.batch, width)
            d_loss = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake)).mean()
            self.optimizer_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.optimizer_d.step()
            self.discriminator.requires_grad_(False)
            fake = self.generator(torch.randn(samples, self.latent_dim)).reshape(self.batch, width)
            g_loss = F.softplus(-self.discriminator(fake)).mean()
            self.optimizer_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.optimizer_g.step()
            self.discriminator.requires_grad_(True)


class LoopSteps:
    """ganbench's loop body for a built run: what :func:`ganbench.training.loop.train_to_end` does per step."""

    def __init__(self, run: RunState) -> None:
        self.run = run

    def steps(self, count: int) -> None:
        run = self.run
        for _ in range(count):
            if run.should_stop():
                raise run.stop()
            run.set_learning_rates(learning_rate_factor(run.spec, run.step))
            run.start_timing()
            run.record(*train_step(run))
            due = Due.after(run.spec, run.step)
            if due:
                run.pause_timing()
                at_boundary(run, due)


def toy_run(spec, registry, data_dir: Path, cache_dir: Path, out: Path) -> RunState:
    return RunState(spec, run_directory(out, spec), registry=registry, device=torch.device("cpu"),
                    data_dir=str(data_dir), cache_dir=cache_dir)


def old_toy_run(spec, registry, data_dir: Path, cache_dir: Path, out: Path, monkeypatch) -> RunState:
    """The run as ganbench trained it before: Adam's foreach kernels, the maxout's ``amax``."""
    with monkeypatch.context() as patch:
        patch.setattr(fastpath.FastPath, "optimizer_options", lambda self, optimizer: {"foreach": True})
        run = toy_run(spec, registry, data_dir, cache_dir, out)
    assert run.optimizer_d.defaults["foreach"] and not run.optimizer_d.defaults["fused"]
    for layer in run.discriminator.modules():
        if isinstance(layer, Maxout):
            layer.forward = functools.partial(amax_maxout, layer)
    return run


@pytest.mark.parametrize("pac", PACKING, ids=[f"pac{pac}" for pac in PACKING])
def test_toy_step(benchmark, scale, results, registry, data_dir, bench_cache, tmp_path, monkeypatch, pac):
    """ganbench's step, timed by pytest-benchmark; the old path's and the hand loop's rounds run
    between its rounds (in its untimed set-up), so all three see the same load."""
    spec = toy_spec(registry, pac, scale.fast)
    steps = 1 if scale.fast else STEPS_PER_ROUND
    loops = {"ganbench": LoopSteps(toy_run(spec, registry, data_dir, bench_cache, tmp_path / "new")),
             "old": LoopSteps(old_toy_run(spec, registry, data_dir, bench_cache, tmp_path / "old", monkeypatch)),
             "hand": HandLoop(spec, registry, data_dir, bench_cache)}
    fastest = {name: float("inf") for name in loops}
    """Wall seconds of each loop's fastest round (ganbench's from pytest-benchmark's statistics)."""
    least_cpu = {name: float("inf") for name in loops}
    """The same rounds in this thread's CPU seconds: a round's time less what the scheduler gave
    other processes, the steadier figure on a shared machine."""

    def timed_round(name: str) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        loops[name].steps(steps)
        least_cpu[name] = min(least_cpu[name], time.thread_time() - cpu)
        fastest[name] = min(fastest[name], time.perf_counter() - started)

    def other_rounds() -> None:
        for name in ("old", "hand"):
            timed_round(name)

    for loop in loops.values():  # warm-up
        loop.steps(steps)
    benchmark.group = "toy step pacgan/ns/ring8"
    benchmark.pedantic(timed_round, args=("ganbench",), setup=other_rounds,
                       rounds=1 if scale.fast else ROUNDS, warmup_rounds=scale.warmup_rounds)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # the test command's single pass: nothing to report
        return
    seconds = float(stats.stats.min) / steps
    flops = step_flops(spec, registry, data_dir, bench_cache, tmp_path / "count")
    assert flops > 0
    reference = results.notes.setdefault("matmul_flops_per_second", matmul_flops_per_second())
    figures = {"steps_per_second": 1 / seconds, "gflop_per_step": flops / 1e9,
               "gflop_per_second": flops / seconds / 1e9, "fraction_of_matmul_rate": flops / seconds / reference,
               "speedup_over_old": fastest["old"] / steps / seconds, "speedup_over_hand": fastest["hand"] / steps / seconds,
               "old_steps_per_second": steps / fastest["old"], "hand_steps_per_second": steps / fastest["hand"],
               "cpu_speedup_over_old": least_cpu["old"] / least_cpu["ganbench"],
               "cpu_speedup_over_hand": least_cpu["hand"] / least_cpu["ganbench"],
               "cpu_steps_per_second": steps / least_cpu["ganbench"]}
    benchmark.extra_info.update(pac=pac, batch_size=spec.batch_size, threads=torch.get_num_threads(), **figures)
    for key, value in figures.items():
        results.notes[f"toy_pac{pac}_{key}"] = value
