"""The training loop of one run, top down: build, resume, then per step D steps, G step, and the schedule's work.

:func:`train_run` builds the run and resumes it; :func:`train_to_end` is the loop;
:func:`at_boundary` is what the schedule asks for after a step (log, samples, evaluation,
checkpoint); :func:`train_step` is one step's arithmetic. What a run keeps between steps is a
:class:`~ganbench.training.state.RunState`. :mod:`ganbench.training.packing` trains several
runs with one stacked step and calls the same pieces in the same order. The device is decided
by whoever launches the run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

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
        d_loss, g_loss, penalty = train_step(run)  # n_critic D steps (loss + penalty), then one G step
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


def train_step(run: RunState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One generator step of ``run``, after its ``n_critic`` discriminator steps; the losses of the last ones."""
    generator, discriminator, loss, params, fast = (run.generator, run.discriminator, run.loss, run.params,
                                                    run.fast)
    for _ in range(run.n_critic):
        real_x = run.real_batch()
        with fast.autocast():  # forward passes only: losses get float32 logits
            with torch.no_grad():
                fake_x = run.pack(generator(run.noise()))
            real_logits, fake_logits = discriminator(real_x).flatten().float(), discriminator(fake_x).flatten().float()
            penalty = loss.penalty(discriminator, real_x, fake_x, params)
        d_loss = loss.discriminator_loss(real_logits, fake_logits, params)
        run.optimizer_d.zero_grad(set_to_none=True)
        (d_loss if penalty is None else d_loss + penalty).backward()
        run.optimizer_d.step()
        loss.after_discriminator_step(discriminator, params)

    discriminator.requires_grad_(False)  # the generator step needs no gradients for D's weights
    with fast.autocast():
        real_logits = None
        if loss.generator_needs_real_logits:
            with torch.no_grad():
                real_logits = discriminator(real_x).flatten().float()
        fake_logits = discriminator(run.pack(generator(run.noise()))).flatten().float()
    g_loss = loss.generator_loss(fake_logits, real_logits, params)
    run.optimizer_g.zero_grad(set_to_none=True)
    g_loss.backward()
    run.optimizer_g.step()
    discriminator.requires_grad_(True)
    return d_loss, g_loss, penalty
