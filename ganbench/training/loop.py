"""The training loop of one run, top down: build, resume, then per step D steps, G step, and the schedule's work.

:func:`train_run` builds the run and resumes it; :func:`train_to_end` is the loop;
:func:`at_boundary` is what the schedule asks for after a step (log, samples, evaluation,
checkpoint); :func:`gan_step` is one step's arithmetic (D steps, penalty, G step), for a run
alone (:func:`train_step`) as for a pack. What a run keeps between steps is a
:class:`~ganbench.training.state.RunState`. :mod:`ganbench.training.packing` trains several
runs as one stacked model with the same step and the same pieces, in the same order. The
device is decided by whoever launches the run.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Protocol, Sequence

import torch

from ganbench.ledger.runs import RunDirectory
from ganbench.planning.spec import RunSpec
from ganbench.registry import Registry
from ganbench.training.state import Outcome, RunState


def train_run(spec: RunSpec, directory: RunDirectory, *, registry: Registry, device: torch.device,
              data_dir: str | None, cache_dir: Path,
              should_stop: Callable[[], bool] = lambda: False,
              on_progress: Callable[[int, int, float], None] = lambda step, total, rate: None,
              interruptible: Callable[[], ContextManager[None]] = contextlib.nullcontext) -> Outcome:
    """Train (or resume) one run in ``directory``; return how it ended.

    ``should_stop`` is polled before every step: when true, the run is checkpointed and
    :class:`~ganbench.errors.Interrupted` raised. Sampling and evaluation run inside
    ``interruptible()``, which may raise it at any moment; the run then resumes from its last
    checkpoint. ``on_progress(step, total, steps_per_second)`` hears of every boundary.
    """
    run = RunState(spec, directory, registry=registry, device=device, data_dir=data_dir, cache_dir=cache_dir,
                   should_stop=should_stop, on_progress=on_progress, interruptible=interruptible)
    run.resume()  # from the run's newest checkpoint, if it has one
    return train_to_end(run)


def train_to_end(run: RunState) -> Outcome:
    """Train a built (and resumed) run alone until it ends; return how it ended."""
    spec = run.spec
    while run.step < spec.steps:
        if run.should_stop():
            raise run.stop()  # checkpointed here: the same command resumes the run
        run.set_learning_rates(learning_rate_factor(spec, run.step))
        run.start_timing()  # after the warm-up steps
        d_loss, g_loss, penalty = train_step(run)  # n_critic D steps (loss + penalty), then g_steps G steps
        run.record(d_loss, g_loss, penalty)
        due = Due.after(spec, run.step)
        if due:
            run.pause_timing()
            outcome = at_boundary(run, due)
            if outcome is not None:
                return outcome  # diverged
    return run.finish()  # the final evaluation


def at_boundary(run: RunState, due: Due) -> Outcome | None:
    """The schedule's work after a step: check and log the losses, then samples, evaluation, checkpoint as due.

    Returns the run's outcome when a loss since the last boundary was not finite, else None.
    """
    diverged = run.log_losses()
    if diverged is not None:
        return diverged
    run.report_progress()
    if due.samples:
        with run.interruptible():
            run.save_sample_picture()
    if due.eval:
        with run.interruptible():
            run.evaluate()
    if due.checkpoint:
        run.checkpoint()
    return None


@dataclass(frozen=True)
class Due:
    """What the run's schedule (its ``*_every`` settings) asks for once a step is done; false when nothing.

    Every boundary logs the losses since the previous one, so ``log`` only makes a boundary.
    """

    log: bool
    samples: bool
    eval: bool
    checkpoint: bool

    @classmethod
    def after(cls, spec: RunSpec, step: int) -> Due:
        """What is due once ``step`` steps are done: a picture and a checkpoint at the last step too.

        The last step's evaluation is the final one (:meth:`RunState.finish`), not a periodic one.
        """
        return cls(log=step % spec.log_every == 0,
                   samples=step % spec.sample_every == 0 or step == spec.steps,
                   eval=bool(spec.eval_every) and step % spec.eval_every == 0 and step < spec.steps,
                   checkpoint=step % spec.checkpoint_every == 0 or step == spec.steps)

    def __bool__(self) -> bool:
        return self.log or self.samples or self.eval or self.checkpoint


def learning_rate_factor(spec: RunSpec, step: int) -> float:
    """The learning rates' factor for the step after ``step``: 1, or falling linearly to 0 (``lr_schedule``)."""
    if spec.params.get("lr_schedule", "constant") == "linear":
        return 1.0 - step / spec.steps
    return 1.0


Losses = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]
"""A step's ``(d_loss, g_loss, penalty)`` for one run: those of its last D step and of its G step."""


def train_step(run: RunState) -> Losses:
    """One step of ``run`` trained alone: :func:`gan_step` for a group of one; its losses."""
    return gan_step(Alone(run))[0]


def gan_step(group: Group) -> list[Losses]:
    """One step of every run in ``group``: ``n_critic`` discriminator steps, then ``g_steps`` generator steps.

    The step's arithmetic, written once (:class:`Group`): ``group`` is a run alone
    (:class:`Alone`, its own modules) or several runs trained as one stacked model
    (:class:`ganbench.training.packing.Stacked`, each forward pass once for all of them).
    The loss plugin's hooks are called per run, with the run's own ``params`` and
    discriminator module, under the run's own state of torch's global RNG, in this order:

    1. per D step: ``penalty(D, real, fake, params)`` (under autocast when the fast path uses
       it), then ``discriminator_loss(real_logits, fake_logits, params)`` on float32 logits;
       ``d_loss + penalty`` is backpropagated, D's optimiser steps, then
       ``after_discriminator_step(D, params)`` (WGAN's weight clipping);
    2. the G step, with D's weights frozen: ``generator_loss(fake_logits, real_logits, params)``,
       ``real_logits`` (the last D step's real batch, without gradient) only when the loss sets
       ``generator_needs_real_logits``; G's optimiser steps. With ``g_steps`` > 1 (default 1) it
       is repeated on the same noise batch, as DCGAN-tensorflow's two generator updates per
       discriminator update are; the last one's loss is returned.

    With ``updates=simultaneous`` the step is :func:`simultaneous_step` instead.

    Each run's losses are returned, in ``group.runs``' order.
    """
    runs = group.runs
    first = runs[0]
    if first.simultaneous:
        return simultaneous_step(group)
    loss, fast = first.loss, first.fast
    for _ in range(first.n_critic):
        real_x = group.real_batch()
        with fast.autocast():  # forward passes only: losses get float32 logits
            with torch.no_grad():
                fake_x = first.pack(generate_packs(group, group.noise()))
            real_logits, fake_logits = group.logits(real_x), group.logits(fake_x)
            penalties = []
            for run, real, fake in zip(runs, group.each(real_x), group.each(fake_x)):
                with group.own_global_rng(run):
                    penalties.append(loss.penalty(run.discriminator, real, fake, run.params))
        d_losses = []
        for run, real, fake in zip(runs, group.each(real_logits), group.each(fake_logits)):
            with group.own_global_rng(run):
                d_losses.append(loss.discriminator_loss(real, fake, run.params))
        for run in runs:
            run.optimizer_d.zero_grad(set_to_none=True)
        # Runs share no parameters, so the sum's gradient for each run is that run's own.
        _total([d if p is None else d + p for d, p in zip(d_losses, penalties)]).backward()
        for run in runs:
            run.optimizer_d.step()
            with group.own_global_rng(run):
                loss.after_discriminator_step(run.discriminator, run.params)

    for run in runs:
        run.discriminator.requires_grad_(False)  # the generator step needs no gradients for D's weights
    real_logits = None
    if loss.generator_needs_real_logits:  # D is frozen: the same for every generator update
        with fast.autocast(), torch.no_grad():
            real_logits = group.logits(real_x)
    noise = group.noise()
    for _ in range(first.g_steps):
        with fast.autocast():
            fake_logits = group.logits(first.pack(generate_packs(group, noise)))
        g_losses = []
        reals = itertools.repeat(None) if real_logits is None else group.each(real_logits)
        for run, fake, real in zip(runs, group.each(fake_logits), reals):
            with group.own_global_rng(run):
                g_losses.append(loss.generator_loss(fake, real, run.params))
        for run in runs:
            run.optimizer_g.zero_grad(set_to_none=True)
        _total(g_losses).backward()
        for run in runs:
            run.optimizer_g.step()
    for run in runs:
        run.discriminator.requires_grad_(True)
    return list(zip(d_losses, g_losses, penalties))


def simultaneous_step(group: Group) -> list[Losses]:
    """One step with ``updates=simultaneous``: D and G updated from one forward pass.

    One real batch, one noise batch and one generator call; the discriminator judges both;
    D's gradient (of ``discriminator_loss`` + ``penalty``) and G's (of ``generator_loss`` on
    the same fake logits) are both taken at the step's starting parameters, then both
    optimisers step and ``after_discriminator_step`` runs. This is the update of ALI's Blocks
    code, which PacGAN's 2D experiments and VEEGAN's comparison train with; ganbench's
    default alternates (D first, then G on fresh noise against the updated D). Needs
    ``n_critic=1`` and ``g_steps=1`` (checked with the other loop settings).
    """
    runs = group.runs
    first = runs[0]
    loss, fast = first.loss, first.fast
    real_x = group.real_batch()
    with fast.autocast():
        fake_x = first.pack(generate_packs(group, group.noise()))
        real_logits, fake_logits = group.logits(real_x), group.logits(fake_x)
        penalties = []
        for run, real, fake in zip(runs, group.each(real_x), group.each(fake_x.detach())):
            with group.own_global_rng(run):
                penalties.append(loss.penalty(run.discriminator, real, fake, run.params))
    d_losses, g_losses = [], []
    reals_for_g = group.each(real_logits.detach()) if loss.generator_needs_real_logits else itertools.repeat(None)
    for run, real, fake, real_for_g in zip(runs, group.each(real_logits), group.each(fake_logits), reals_for_g):
        with group.own_global_rng(run):
            d_losses.append(loss.discriminator_loss(real, fake, run.params))
            g_losses.append(loss.generator_loss(fake, real_for_g, run.params))
    for run in runs:
        run.optimizer_d.zero_grad(set_to_none=True)
        run.optimizer_g.zero_grad(set_to_none=True)
    d_parameters = [p for run in runs for p in run.discriminator.parameters()]
    g_parameters = [p for run in runs for p in run.generator.parameters()]
    # Each loss reaches only its own network's parameters; both gradients see the same weights.
    _total([d if p is None else d + p for d, p in zip(d_losses, penalties)]).backward(
        inputs=d_parameters, retain_graph=True)
    _total(g_losses).backward(inputs=g_parameters)
    for run in runs:
        run.optimizer_d.step()
        run.optimizer_g.step()
        with group.own_global_rng(run):
            loss.after_discriminator_step(run.discriminator, run.params)
    return list(zip(d_losses, g_losses, penalties))


def generate_packs(group: Group, noise: torch.Tensor) -> torch.Tensor:
    """The generators on ``noise`` (``[..., batch * pac, latent]``): samples ordered as
    :meth:`RunState.pack` groups them, from one call, or with ``pac_generator_calls=per_position``
    from ``pac`` calls of ``batch`` inputs each, call i giving the i-th sample of every pack
    (each call its own BatchNorm batch, as PacGAN's code generated its packs)."""
    first = group.runs[0]
    if not first.generator_calls_per_pack:
        return group.generate(noise)
    *lead, count, width = noise.shape
    places = noise.reshape(*lead, count // first.pac, first.pac, width).unbind(len(lead) + 1)
    samples = torch.stack([group.generate(place) for place in places], dim=len(lead) + 1)
    return samples.reshape(*lead, count, *samples.shape[len(lead) + 2:])


def _total(losses: list[torch.Tensor]) -> torch.Tensor:
    """The sum of ``losses``; a lone loss itself (no addition, so a run alone backpropagates its own loss)."""
    return functools.reduce(operator.add, losses)


class Group(Protocol):
    """The runs one :func:`gan_step` trains, and how its batches and forward passes reach them.

    A batch is one tensor for the whole group: a run's own for a run alone, the runs' batches
    stacked along a new first dimension for a pack.
    """

    runs: Sequence[RunState]

    def real_batch(self) -> torch.Tensor:
        """The next real batch of every run (each from its own data stream), packed for D."""

    def noise(self) -> torch.Tensor:
        """The next generator inputs of every run (each from its own noise stream)."""

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        """The generators on ``noise``: samples, before PacGAN's packing (``run.pack``)."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminators on ``x``: float32 logits, one per sample (or pack) of each run."""

    def each(self, batch: torch.Tensor) -> Iterable[torch.Tensor]:
        """Each run's part of ``batch``, in the order of :attr:`runs`."""

    def own_global_rng(self, run: RunState) -> ContextManager[None]:
        """The context for ``run``'s plugin calls: ``run``'s own state of torch's global RNG."""


class Alone:
    """A run trained alone, as :func:`gan_step` sees it: a group of one.

    Its batches are its own, the forward passes call its own modules and torch's global RNG
    is its alone: nothing is stacked, sliced or switched.
    """

    _no_switch = contextlib.nullcontext()

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.runs = (run,)

    def real_batch(self) -> torch.Tensor:
        return self.run.real_batch()

    def noise(self) -> torch.Tensor:
        return self.run.noise()

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return self.run.generator(noise)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.run.discriminator(x).flatten().float()

    def each(self, batch: torch.Tensor) -> tuple[torch.Tensor]:
        return (batch,)

    def own_global_rng(self, run: RunState) -> ContextManager[None]:
        return self._no_switch
