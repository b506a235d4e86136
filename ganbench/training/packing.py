"""Packing: several runs of a grid trained together, as one stacked model, in one worker.

A small GAN leaves most of a GPU idle: a DCGAN step at batch 64 is a few hundred small
kernels. Runs that differ only in their seed or learning rates (same architecture, loss,
dataset, shapes, steps and schedule) can instead train as one model: their parameters are
stacked along a new leading dimension and each forward pass runs once for all of them
through ``torch.func.vmap`` over ``torch.func.functional_call``, which turns N
convolutions into one grouped convolution and N matrix products into one batched product
(the idea of HFTA, Wang et al., MLSys 2021). ``ganbench run --pack N`` trains groups of up
to N such runs per worker (:func:`plan_packs`).

Each packed run stays its own run: its own modules (built after seeding torch with its own
seed), optimisers and learning rates, data and noise streams, losses, checkpoints,
metrics and files: the same run id and the same files as when it trains alone. Two things
differ. Floating-point rounding: a batched kernel may add up in another order, so weights
agree with a lone run's to rounding, not bit for bit. And timing: a packed run's
``images_per_second`` is its own images over the pack's time (the pack's aggregate is
the sum); its protocol says it was packed, and with how many runs.

The step is a run alone's, :func:`ganbench.training.loop.gan_step`, over a :class:`Stacked`
group: only the modules' forward and backward passes are stacked. Each run's losses and
penalty are computed on its own slice of the logits, with its own ``params`` (a penalty gets
the run's own discriminator module), and its optimiser steps and ``after_discriminator_step``
run per run, so every loss plugin packs unchanged. Sampling, evaluation and checkpoints
happen per run at the shared schedule's boundaries.

Some modules cannot be batched by vmap: spectral normalisation updates its power-iteration
vectors in place with ``out=`` operations, for one, and compiled modules are not stacked.
:func:`train_packed` probes the models before training and, when they cannot be stacked,
trains the runs one after another in the same worker, saying why in each run's log and
protocol.
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
from torch import nn

from ganbench.errors import Interrupted
from ganbench.ledger.runs import RunDirectory
from ganbench.planning.spec import RunSpec
from ganbench.registry import Registry
from ganbench.training.loop import Due, at_boundary, gan_step, learning_rate_factor, train_to_end
from ganbench.training.state import Outcome, RunState

PACK_FREE_PARAMS = ("lr_g", "lr_d")
"""Hyperparameters that may differ between the runs of one pack (besides the seed)."""


def pack_key(spec: RunSpec) -> str:
    """What runs must share to be packed: everything but the seed and :data:`PACK_FREE_PARAMS`."""
    data = spec.to_json()
    for name in ("seed", "run_id"):
        data.pop(name)
    data["params"] = {key: value for key, value in spec.params.items() if key not in PACK_FREE_PARAMS}
    return json.dumps(data, sort_keys=True, default=str)


def plan_packs(specs: Sequence[RunSpec], size: int) -> list[tuple[RunSpec, ...]]:
    """Split ``specs`` into groups of at most ``size`` runs that can be packed, in grid order.

    A group starts where its first run appears in ``specs``; with ``size`` 1 every run is
    a group of its own.
    """
    if size <= 1:
        return [(spec,) for spec in specs]
    open_groups: dict[str, list[RunSpec]] = {}
    groups: list[list[RunSpec]] = []
    for spec in specs:
        key = pack_key(spec)
        group = open_groups.get(key)
        if group is None or len(group) >= size:
            group = open_groups[key] = []
            groups.append(group)
        group.append(spec)
    return [tuple(group) for group in groups]


class StackedModules:
    """N modules of one architecture called as one: ``[N, batch, ...]`` in, ``[N, batch, ...]`` out.

    The modules keep their own parameters, which the stacked call reads (``torch.stack``
    per call, so gradients flow back to each module's own parameters and its optimiser
    steps them as usual) and their own buffers (BatchNorm statistics), which are copied
    back after every call.
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self.template = copy.deepcopy(self.modules[0]).to("meta")
        self.parameter_names = [name for name, _ in self.modules[0].named_parameters()]
        self.buffer_names = [name for name, _ in self.modules[0].named_buffers()]
        parameters = [dict(module.named_parameters()) for module in self.modules]
        buffers = [dict(module.named_buffers()) for module in self.modules]
        self.parameters = [[each[name] for each in parameters] for name in self.parameter_names]
        self.buffers = [[each[name] for each in buffers] for name in self.buffer_names]

    def _one(self, parameters: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
             inputs: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.template, (parameters, buffers), (inputs,))

    def __call__(self, inputs: torch.Tensor, *, write_back: bool = True) -> torch.Tensor:
        parameters = {name: torch.stack(tensors) for name, tensors in zip(self.parameter_names, self.parameters)}
        buffers = {name: torch.stack(tensors) for name, tensors in zip(self.buffer_names, self.buffers)}
        outputs = torch.func.vmap(self._one, randomness="different")(parameters, buffers, inputs)
        if write_back:
            with torch.no_grad():
                for name, tensors in zip(self.buffer_names, self.buffers):
                    torch._foreach_copy_(tensors, list(buffers[name].unbind(0)))
        return outputs


def why_not_packable(runs: Sequence[RunState]) -> str | None:
    """Why these runs' models cannot be stacked, or None when they can (tried on a tiny batch)."""
    first = runs[0]
    if first.fast.compile:
        return "compiled models (--set compile=true) are not stacked"
    try:
        generators = StackedModules([run.generator for run in runs])
        discriminators = StackedModules([run.discriminator for run in runs])
        noise = torch.zeros(len(runs), 2 * first.pac, first.latent_dim, device=first.device)
        with first.fast.autocast():
            with torch.no_grad():
                fake = first.pack(generators(noise, write_back=False))
            logits = discriminators(fake, write_back=False)
        logits.float().sum().backward()  # every optimiser step starts from zeroed gradients
    except Exception as error:  # noqa: BLE001 - any failure means "train them one by one"
        lines = str(error).strip().splitlines()
        return f"vmap cannot stack {first.spec.architecture}'s modules ({type(error).__name__}: " \
               f"{lines[0] if lines else ''})"
    finally:
        for run in runs:
            run.generator.zero_grad(set_to_none=True)
            run.discriminator.zero_grad(set_to_none=True)
    return None


class Stacked:
    """Runs trained as one stacked model, as :func:`ganbench.training.loop.gan_step` sees them.

    Batches are the runs' own, stacked along a new first dimension (``[N, batch, ...]``);
    each forward pass runs once for all runs (:class:`StackedModules`); a run's part of a
    batch is its slice, and its plugin calls switch to its own state of torch's global RNG.
    """

    def __init__(self, runs: Sequence[RunState]) -> None:
        self.runs = list(runs)
        self.generators = StackedModules([run.generator for run in runs])
        self.discriminators = StackedModules([run.discriminator for run in runs])

    def real_batch(self) -> torch.Tensor:
        return torch.stack([run.real_batch() for run in self.runs])

    def noise(self) -> torch.Tensor:
        return torch.stack([run.noise() for run in self.runs])

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generators(noise)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminators(x).flatten(1).float()

    def each(self, batch: torch.Tensor) -> Iterator[torch.Tensor]:
        return (batch[i] for i in range(len(self.runs)))

    def own_global_rng(self, run: RunState) -> ContextManager[None]:
        return run.own_global_rng()


def train_packed(specs: Sequence[RunSpec], directories: Sequence[RunDirectory], *, registry: Registry,
                 device: torch.device, data_dir: str | None, cache_dir: Any,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[RunSpec, int, int, float], None] = lambda spec, step, total, rate: None,
                 interruptible: Callable[[], ContextManager[None]] = contextlib.nullcontext) -> dict[str, Outcome]:
    """Train (or resume) ``specs`` together, each in its directory; return ``run_id -> outcome``.

    Each run is built and resumed as :func:`ganbench.training.loop.train_run` does; runs whose
    models vmap cannot stack then train one after another, the others together
    (:func:`train_together`). Stopping works as for a run alone: every unfinished run is
    checkpointed and :class:`~ganbench.errors.Interrupted` raised.
    """
    runs = []
    for spec, directory in zip(specs, directories):  # each built and resumed as if it trained alone
        run = RunState(spec, directory, registry=registry, device=device, data_dir=data_dir, cache_dir=cache_dir,
                       should_stop=should_stop, interruptible=interruptible,
                       on_progress=lambda step, total, rate, spec=spec: on_progress(spec, step, total, rate))
        run.resume()
        runs.append(run)
    reason = why_not_packable(runs) if len(runs) > 1 else "a pack of one"
    if reason is not None:
        for run in runs:
            run.log(f"trained alone: {reason}")
            run.packing = {"training_packing": f"asked to pack, trained alone: {reason}"}
        outcomes: dict[str, Outcome] = {}
        for run in runs:
            with run.own_global_rng():
                outcomes[run.spec.run_id] = train_to_end(run)
        return outcomes

    for run in runs:
        others = ", ".join(other.spec.label for other in runs if other is not run)
        run.log(f"packed with {others}: one stacked model (torch.func.vmap)")
        run.packing = {"training_packing": f"{len(runs)} runs as one stacked model (torch.func.vmap); "
                                           "time and throughput figures are per run over the pack's time"}
    return train_together(runs, should_stop)


def train_together(runs: Sequence[RunState], should_stop: Callable[[], bool]) -> dict[str, Outcome]:
    """Train built (and resumed) runs as one stacked model until each ends; ``run_id -> outcome``.

    The loop of :func:`ganbench.training.loop.train_to_end`, its pieces in the same order, for
    the runs furthest behind at each step (runs resumed at different steps catch up); each
    run's plugin calls and boundary work see its own state of torch's global RNG.
    """
    outcomes: dict[str, Outcome] = {}
    stacks: dict[tuple[int, ...], Stacked] = {}
    unfinished = [run for run in runs if not run.finished]
    while unfinished:
        behind = min(run.step for run in unfinished)
        group = [run for run in unfinished if run.step == behind]
        key = tuple(id(run) for run in group)
        if key not in stacks:
            stacks[key] = Stacked(group)
        if should_stop():  # polled once per step, as for a run alone
            raise _stop(unfinished)
        for run in group:
            run.set_learning_rates(learning_rate_factor(run.spec, run.step))
            run.start_timing()
        for run, losses in zip(group, gan_step(stacks[key])):
            run.record(*losses)
        boundaries = [(run, due) for run in group if (due := Due.after(run.spec, run.step))]
        for run, _ in boundaries:  # every clock stops before any run samples or evaluates
            run.pause_timing()
        for run, due in boundaries:
            with run.own_global_rng():
                outcome = at_boundary(run, due)
            if outcome is not None:
                outcomes[run.spec.run_id] = outcome
        unfinished = [run for run in unfinished if not run.finished and run.spec.run_id not in outcomes]
    for run in runs:
        if run.spec.run_id not in outcomes:
            with run.own_global_rng():
                outcomes[run.spec.run_id] = run.finish()
    return outcomes


def _stop(runs: Sequence[RunState]) -> Interrupted:
    """Checkpoint every run of ``runs`` where it is, for a stop request; the :class:`Interrupted` to raise."""
    stopped = Interrupted("stopped")
    for run in runs:
        with run.own_global_rng():  # the checkpoint keeps the run's own global RNG
            stopped = run.stop()
    return stopped
