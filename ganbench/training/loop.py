"""One run: the training loop, checkpoints, sample pictures and the evaluation schedule.

Read :func:`train_run` and :func:`train_step` top to bottom: per generator step,
``n_critic`` discriminator steps (loss + penalty, optimiser step, post-step hook), one
generator step, and at the schedule's boundaries (:meth:`RunState.at_boundary`):
divergence check, log, samples, evaluation, checkpoint. :class:`RunState` holds what a
run keeps between steps, so :mod:`ganbench.training.packing` can train several runs with one
stacked step. The device is decided by whoever launches the run.
"""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping

import torch

from ganbench.api import DataRequest, Loss
from ganbench.errors import Interrupted, UserError
from ganbench.evaluation.context import EvaluationContext, run_metrics
from ganbench.evaluation.samples import save_samples
from ganbench.ledger.runs import RunDirectory
from ganbench.ledger.statuses import RunStatus
from ganbench.ledger.storage import append_jsonl, read_jsonl, rewrite_jsonl
from ganbench.planning.pac import pack_samples, packed_shape
from ganbench.planning.spec import RunSpec
from ganbench.registry import Registry
from ganbench.testing import model_shape_problem
from ganbench.training import fastpath
from ganbench.training.checkpoint import load_checkpoint, save_checkpoint
from ganbench.training.data import load_real_data
from ganbench.training.hardware import device_description
from ganbench.training.pictures import save_sample_picture

SAMPLE_PICTURE_COUNT = {"images": 64, "points": 1000}
"""Generated samples per sample picture: an 8x8 image grid, or a scatter of 2D points."""
WARMUP_STEPS = 10
"""Steps left out of the throughput figures (allocator warm-up, lazy initialisation)."""


@dataclass
class Outcome:
    """How a run ended."""

    status: str
    step: int
    wall_seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    protocol: dict[str, str] = field(default_factory=dict)
    error: str = ""


@dataclass
class Stopwatch:
    """Steady-state training time: only the steps themselves, after warm-up."""

    seconds: float = 0.0
    steps: int = 0
    started: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self, steps: int, device: torch.device) -> None:
        if self.started is None:
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.seconds += time.perf_counter() - self.started
        self.steps += steps
        self.started = None


def make_optimizer(parameters: Any, lr: float, params: Mapping[str, Any], **options: bool) -> torch.optim.Optimizer:
    """The optimiser ``params["optimizer"]`` names, over ``parameters`` at learning rate ``lr``.

    ``torch.optim.RMSprop(lr)``, or ``torch.optim.Adam(lr, betas=(beta1, beta2))``; ``options``
    select the kernels (:meth:`ganbench.training.fastpath.FastPath.optimizer_options`).
    """
    if params["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, **options)
    return torch.optim.Adam(parameters, lr=lr, betas=(params["beta1"], params["beta2"]), **options)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rng_state(device: torch.device, data_rng: torch.Generator, noise_rng: torch.Generator) -> dict:
    state = {"cpu": torch.get_rng_state(), "data": data_rng.get_state(), "noise": noise_rng.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _global_rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_global_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class RunState:
    """One run's models, optimisers, data streams, schedule and files: everything but a step's arithmetic.

    :func:`train_run` drives one of these with :func:`train_step`;
    :func:`ganbench.training.packing.train_packed` drives several with one stacked step. Building it
    builds the models (torch seeded with the run's seed) and resumes from the run's newest
    checkpoint. Each training step is then ``before_step``, the step's arithmetic,
    ``record`` its losses and, when ``record`` says a boundary was reached,
    ``pause_timing`` and ``at_boundary``; the end is ``finish``.
    """

    def __init__(self, spec: RunSpec, directory: RunDirectory, *, registry: Registry, device: torch.device,
                 data_dir: str | None, cache_dir: Path,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[int, int, float], None] = lambda step, total, rate: None,
                 interruptible: Callable[[], ContextManager[None]] = contextlib.nullcontext) -> None:
        self.spec, self.directory, self.device = spec, directory, device
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self.should_stop, self.on_progress, self.interruptible = should_stop, on_progress, interruptible
        self.params = params = spec.params
        self.architecture = registry.get("architecture", spec.architecture)
        self.loss = loss = registry.get("loss", spec.loss)
        self.dataset = registry.get("dataset", spec.dataset)
        self.metrics = {name: registry.get("metric", name) for name in spec.metrics}
        self.log = directory.log_line
        self.packing: dict[str, str] = {}
        """Protocol lines set by whoever trains this run together with others."""

        self.real_data = load_real_data(self.dataset, spec, data_dir, cache_dir)
        if self.real_data.note:
            self.log(self.real_data.note)
        self.fast = fast = fastpath.resolve(params, device, images=self.real_data.samples.dim() == 4,
                                            double_backward=type(loss).penalty is not Loss.penalty)
        fast.configure_backends()
        real = self.real_data.samples.to(device)
        self.data_shape = tuple(real.shape[1:])
        self.latent_dim = int(params["latent_dim"])
        self.batch_size, self.n_critic = spec.batch_size, int(params["n_critic"])
        self.pac = int(params.get("pac", 1))
        """PacGAN's packing degree: the discriminator judges packs of this many samples."""

        torch.manual_seed(spec.seed)
        generator, discriminator = self.architecture.build(self.data_shape, params)
        if self.pac > 1:  # the same architecture, built for packs (see ganbench.planning.pac)
            _, discriminator = self.architecture.build(packed_shape(self.data_shape, self.pac), params)
        problem = model_shape_problem(generator, discriminator, self.data_shape, dict(params),
                                      packed_shape(self.data_shape, self.pac))
        if problem:
            raise UserError(f"architecture '{spec.architecture}' does not fit dataset '{spec.dataset}' "
                            f"{self.data_shape}: {problem} (ganbench.testing's conformance kit checks this)")
        self.generator, self.discriminator = fast.prepare_modules(generator.to(device), discriminator.to(device))
        self.real = fast.prepare_data(real, self.discriminator)
        options = fast.optimizer_options(params["optimizer"])
        self.optimizer_g = make_optimizer(self.generator.parameters(), params["lr_g"], params, **options)
        self.optimizer_d = make_optimizer(self.discriminator.parameters(), params["lr_d"], params, **options)
        self.data_rng = torch.Generator(device=device).manual_seed(spec.seed + 1)
        self.noise_rng = torch.Generator(device=device).manual_seed(spec.seed + 2)
        picture_count = SAMPLE_PICTURE_COUNT["images" if len(self.data_shape) == 3 else "points"]
        self.fixed_noise = torch.randn(picture_count, self.latent_dim,
                                       generator=torch.Generator().manual_seed(spec.seed + 3)).to(device)

        self.step, self.wall_before, self.stopwatch = 0, 0.0, Stopwatch()
        carried_losses = torch.empty(0, 3)
        checkpoint = load_checkpoint(directory)
        if checkpoint is not None:
            self.generator.load_state_dict(checkpoint["generator"])
            self.discriminator.load_state_dict(checkpoint["discriminator"])
            self.optimizer_g.load_state_dict(checkpoint["optimizer_g"])
            self.optimizer_d.load_state_dict(checkpoint["optimizer_d"])
            torch.set_rng_state(checkpoint["rng"]["cpu"])
            self.data_rng.set_state(checkpoint["rng"]["data"])
            self.noise_rng.set_state(checkpoint["rng"]["noise"])
            if "cuda" in checkpoint["rng"]:
                torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)
            self.step, self.wall_before = int(checkpoint["step"]), float(checkpoint["wall_seconds"])
            self.stopwatch = Stopwatch(checkpoint["train_seconds"], checkpoint["timed_steps"])
            carried_losses = checkpoint.get("pending_losses", carried_losses)
            self.log(f"resumed from step {self.step}")
        self.global_rng = _global_rng_state(device)
        """This run's state of torch's global RNG while another run's is in use (packing)."""
        history, damaged = read_jsonl(directory.metrics)
        # The steps after the checkpoint are redone, and so is a final evaluation that did not
        # get its status written (it follows the last checkpoint).
        step = self.step
        kept = [record for record in history if record.get("step", 0) < step or (
            record.get("step", 0) == step and not (step >= spec.steps and record.get("kind") == "eval"))]
        if damaged or len(kept) != len(history):
            if damaged:
                directory.warn(f"skipped {damaged} damaged line(s) of metrics.jsonl")
            rewrite_jsonl(directory.metrics, kept)
        self.started = time.perf_counter()
        self.evaluation_seconds = 0.0
        self.segment_start = 0
        # Per-step losses, checked at boundaries to avoid a sync per step. A stop between two
        # boundaries carries them in the checkpoint, so a resumed run logs what an uninterrupted one does.
        self.pending: list[torch.Tensor] = list(carried_losses.to(device).unbind(0))
        self.boundary: dict[str, bool] = {}
        self.zero = torch.zeros((), device=device)
        directory.write_status(RunStatus.RUNNING, step=self.step)

    @contextlib.contextmanager
    def own_global_rng(self) -> Iterator[None]:
        """Run the block with this run's own state of torch's global RNG, as if it trained alone.

        Plugins draw from the global RNG (WGAN-GP's interpolation weights), and a run
        training alone is the only user of it; runs trained together in one process each
        keep theirs with this.
        """
        elsewhere = _global_rng_state(self.device)
        _set_global_rng_state(self.global_rng, self.device)
        try:
            yield
        finally:
            self.global_rng = _global_rng_state(self.device)
            _set_global_rng_state(elsewhere, self.device)

    @property
    def finished(self) -> bool:
        return self.step >= self.spec.steps

    def wall_seconds(self) -> float:
        return self.wall_before + time.perf_counter() - self.started

    def real_batch(self) -> torch.Tensor:
        """The next batch of real samples (this run's data stream), packed for the discriminator."""
        return self.pack(self.real[torch.randint(len(self.real), (self.batch_size * self.pac,),
                                                 generator=self.data_rng, device=self.device)])

    def noise(self) -> torch.Tensor:
        """The next batch of generator inputs (this run's noise stream): one per sample of every pack."""
        return torch.randn(self.batch_size * self.pac, self.latent_dim, generator=self.noise_rng,
                           device=self.device)

    def pack(self, samples: torch.Tensor) -> torch.Tensor:
        """``samples`` (``[..., batch * pac, *data_shape]``) as the discriminator's packs; unchanged when pac is 1."""
        if self.pac == 1:
            return samples
        return self.fast.prepare_data(pack_samples(samples, self.pac, len(self.data_shape)), self.discriminator)

    def checkpoint_now(self) -> None:
        save_checkpoint(self.directory, {
            "step": self.step, "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
            "rng": _rng_state(self.device, self.data_rng, self.noise_rng), "wall_seconds": self.wall_seconds(),
            "train_seconds": self.stopwatch.seconds, "timed_steps": self.stopwatch.steps,
            "pending_losses": torch.stack(self.pending).float().cpu() if self.pending else torch.empty(0, 3)})

    def training_figures(self) -> dict[str, float]:
        seconds = max(self.stopwatch.seconds, 1e-9)
        steps = self.stopwatch.steps
        return {"images_per_second": steps * self.batch_size * self.pac * self.n_critic / seconds,
                "steps_per_second": steps / seconds, "train_seconds": self.stopwatch.seconds,
                "peak_memory_mb": _peak_memory_mb(self.device)}

    def evaluate(self, final: bool = False) -> tuple[dict[str, float], dict[str, str]]:
        spec = self.spec
        context = EvaluationContext(
            generator=self.generator, latent_dim=self.latent_dim, data_shape=self.data_shape,
            dataset_name=spec.dataset, dataset=self.dataset, real=self.real_data, settings=spec.evaluation,
            device=self.device, cache_dir=self.cache_dir, seed=spec.seed, step=self.step,
            run_dir=self.directory.path, params=self.params,
            training={**self.training_figures(), "evaluation_seconds": self.evaluation_seconds,
                      "device_name": device_description(self.device)},
            load_split=lambda split: self.dataset.load(DataRequest(
                data_dir=self.data_dir, cache_dir=str(self.cache_dir / "data"), split=split, seed=spec.seed,
                params=self.params)),
            should_stop=self.should_stop)
        evaluation = run_metrics(self.metrics, context)
        values = dict(evaluation.values)
        self.evaluation_seconds += values.get("evaluation_seconds", 0.0)
        append_jsonl(self.directory.metrics, [{"step": self.step, "kind": "eval", **values}])
        if final and spec.save_samples:
            count = max([int(v) for k, v in spec.evaluation.items() if k.endswith("_samples")] or [10_000])
            path = save_samples(context.generate(count), self.directory.path / "samples.npz")
            self.log(f"saved {count} generated samples of the final evaluation to {path.name}")
        return values, evaluation.protocol_columns()

    def flush_losses(self) -> tuple[int, str] | None:
        """Log the losses since the last flush; return ``(step, error)`` of the first that was not finite."""
        if not self.pending:
            return None
        losses = torch.stack(self.pending).double().cpu()
        first_step = self.step - len(self.pending) + 1
        self.pending.clear()
        bad = (~torch.isfinite(losses)).any(dim=1).nonzero()
        if len(bad):
            at = first_step + int(bad[0])
            return at, (f"non-finite loss at step {at} (d_loss={losses[bad[0], 0].item()}, "
                        f"g_loss={losses[bad[0], 1].item()})")
        mean = losses.mean(dim=0)
        append_jsonl(self.directory.metrics, [{"step": self.step, "kind": "train", "d_loss": mean[0].item(),
                                               "g_loss": mean[1].item(), "penalty": mean[2].item(),
                                               "wall_seconds": self.wall_seconds()}])
        return None

    def before_step(self, stop: bool | None = None) -> None:
        """Checkpoint and raise :class:`Interrupted` when asked to stop; start timing after warm-up.

        ``stop``: whether a stop was asked, when the caller has polled ``should_stop`` already.
        """
        if self.should_stop() if stop is None else stop:
            self.pause_timing()
            self.checkpoint_now()
            self.directory.write_status(RunStatus.RUNNING, step=self.step, wall_seconds=self.wall_seconds())
            raise Interrupted(f"stopped at step {self.step}")
        if self.params.get("lr_schedule", "constant") == "linear":
            self.set_learning_rates(1.0 - self.step / self.spec.steps)
        if self.stopwatch.started is None and self.step >= WARMUP_STEPS:
            self.stopwatch.start()
            self.segment_start = self.step

    def set_learning_rates(self, factor: float) -> None:
        """Both optimisers at ``factor`` times the run's ``lr_g`` and ``lr_d`` (the ``linear`` schedule)."""
        for optimizer, key in ((self.optimizer_g, "lr_g"), (self.optimizer_d, "lr_d")):
            for group in optimizer.param_groups:
                group["lr"] = self.params[key] * factor

    def record(self, d_loss: torch.Tensor, g_loss: torch.Tensor, penalty: torch.Tensor | None) -> bool:
        """Count a finished step and keep its losses; return True when it ends at a boundary."""
        self.step += 1
        self.pending.append(torch.stack([d_loss.detach().float(), g_loss.detach().float(),
                                         (self.zero if penalty is None else penalty.detach()).float()]))
        spec, step = self.spec, self.step
        self.boundary = {
            "log": step % spec.log_every == 0,
            "samples": step % spec.sample_every == 0 or step == spec.steps,
            "eval": bool(spec.eval_every) and step % spec.eval_every == 0 and step < spec.steps,
            "checkpoint": step % spec.checkpoint_every == 0 or step == spec.steps,
        }
        return any(self.boundary.values())

    def pause_timing(self) -> None:
        if self.stopwatch.started is not None:
            self.stopwatch.stop(self.step - self.segment_start, self.device)

    def at_boundary(self) -> Outcome | None:
        """Check and log the losses, then sample, evaluate and checkpoint as the schedule says.

        Returns the run's outcome when its losses diverged, else None.
        """
        self.pause_timing()
        diverged = self.flush_losses()
        if diverged:
            at, error = diverged
            self.log(error)
            return Outcome(RunStatus.DIVERGED, at, self.wall_seconds(), error=error)
        figures = self.training_figures()
        self.on_progress(self.step, self.spec.steps, figures["steps_per_second"])
        if self.boundary["samples"]:
            with torch.no_grad(), self.interruptible():
                self.generator.eval()
                fake = self.generator(self.fixed_noise)
                self.generator.train()
                save_sample_picture(self.directory.samples / f"step_{self.step:07d}.png", fake,
                                    self.real_data.samples[:2000], title=f"{self.spec.label} step {self.step}")
        if self.boundary["eval"]:
            with self.interruptible():
                self.evaluate()
        if self.boundary["checkpoint"]:
            self.checkpoint_now()
            self.directory.write_status(RunStatus.RUNNING, step=self.step, wall_seconds=self.wall_seconds())
        return None

    def finish(self) -> Outcome:
        """The final evaluation; the run's outcome."""
        with self.interruptible():
            values, protocol = self.evaluate(final=True) if self.metrics else ({}, {})
        values = {**self.training_figures(), **values}
        protocol = {**protocol, **self.fast.protocol(self.params["optimizer"]), **self.packing}
        if self.pac > 1:
            protocol["training_pac"] = (f"the discriminator judged packs of {self.pac} samples (PacGAN); "
                                        f"batch_size counts packs, images_per_second counts samples")
        return Outcome(RunStatus.DONE, self.step, self.wall_seconds(), metrics=values, protocol=protocol)


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


def train_run(spec: RunSpec, directory: RunDirectory, *, registry: Registry, device: torch.device,
              data_dir: str | None, cache_dir: Path,
              should_stop: Callable[[], bool] = lambda: False,
              on_progress: Callable[[int, int, float], None] = lambda step, total, rate: None,
              interruptible: Callable[[], ContextManager[None]] = contextlib.nullcontext) -> Outcome:
    """Train (or resume) one run in ``directory``; return how it ended.

    ``should_stop`` is polled before every step: when true, the run is checkpointed and
    :class:`Interrupted` raised. Sampling and evaluation run inside ``interruptible()``,
    which may raise :class:`Interrupted` at any moment; the run then resumes from its last
    checkpoint.
    """
    run = RunState(spec, directory, registry=registry, device=device, data_dir=data_dir, cache_dir=cache_dir,
                   should_stop=should_stop, on_progress=on_progress, interruptible=interruptible)
    return train_to_end(run)


def train_to_end(run: RunState) -> Outcome:
    """Train a built (or resumed) run alone until it ends; return how it ended."""
    while not run.finished:
        run.before_step()
        if run.record(*train_step(run)):
            outcome = run.at_boundary()
            if outcome is not None:
                return outcome
    return run.finish()
