"""What one run keeps between steps: models, optimisers, data and noise streams, clocks and files.

A :class:`RunState` is built from a run's spec (models seeded with the run's seed), resumed
from the run's newest checkpoint, and then driven step by step by a loop:
:func:`ganbench.training.loop.train_run` for a run alone,
:func:`ganbench.training.packing.train_packed` for several runs trained as one stacked model.
Its methods are the loop's named pieces (record a step's losses, log them, save a picture,
evaluate, checkpoint, stop, finish); the order they are called in is the loop's, and is
written there, not here.
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
from ganbench.planning.latent import draw_latent
from ganbench.planning.pac import pack_samples, packed_shape
from ganbench.planning.spec import RunSpec
from ganbench.registry import Registry
from ganbench.testing import model_shape_problem
from ganbench.training import fastpath
from ganbench.training.checkpoint import load_checkpoint, save_checkpoint
from ganbench.training.data import load_real_data
from ganbench.training.hardware import device_description, resumed_hardware
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
    """One run's models, optimisers, data and noise streams, step, clocks and files: all but a step's arithmetic.

    Built at step 0 (:meth:`__init__`), then :meth:`resume` continues from the run's newest
    checkpoint. ``should_stop`` is what the run's evaluation polls (the loop polls it too);
    ``on_progress(step, total, steps_per_second)`` hears of every boundary; sampling and
    evaluation run inside ``interruptible()``, which may raise :class:`Interrupted` at any
    moment.
    """

    def __init__(self, spec: RunSpec, directory: RunDirectory, *, registry: Registry, device: torch.device,
                 data_dir: str | None, cache_dir: Path,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[int, int, float], None] = lambda step, total, rate: None,
                 interruptible: Callable[[], ContextManager[None]] = contextlib.nullcontext) -> None:
        """Build the run at step 0: its plugins, real data, models, optimisers and random streams.

        Nothing is read from the run's directory: :meth:`resume` does that.
        """
        self.spec, self.directory, self.device = spec, directory, device
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self.should_stop, self.on_progress, self.interruptible = should_stop, on_progress, interruptible
        self.params = spec.params
        self.architecture = registry.get("architecture", spec.architecture)
        self.loss = registry.get("loss", spec.loss)
        self.dataset = registry.get("dataset", spec.dataset)
        self.metrics = {name: registry.get("metric", name) for name in spec.metrics}
        self.log = directory.log_line
        self.packing: dict[str, str] = {}
        """Protocol lines set by whoever trains this run together with others."""
        self.hardware = device_description(device)
        """What the run trains on (:mod:`ganbench.training.hardware`), with where it trained before a resume."""
        self._load_data()
        self._build_models()
        self._open_streams()

        self.step, self.wall_before, self.started = 0, 0.0, time.perf_counter()
        self.stopwatch, self.segment_start, self.evaluation_seconds = Stopwatch(), 0, 0.0
        self.pending: list[torch.Tensor] = []
        """The ``[d_loss, g_loss, penalty]`` of every step since the last boundary (checked there,
        to avoid a sync per step); a stop between two boundaries carries them in the checkpoint."""
        self.zero = torch.zeros((), device=self.device)
        self.global_rng = _global_rng_state(self.device)
        """This run's state of torch's global RNG while another run's is in use (packing)."""

    def _load_data(self) -> None:
        """The real data (kept in memory, and on the device), and the fast path it decides."""
        self.real_data = load_real_data(self.dataset, self.spec, self.data_dir, self.cache_dir)
        if self.real_data.note:
            self.log(self.real_data.note)
        self.fast = fastpath.resolve(self.params, self.device, images=self.real_data.samples.dim() == 4,
                                     double_backward=type(self.loss).penalty is not Loss.penalty)
        self.fast.configure_backends()
        self.real = self.real_data.samples.to(self.device)
        self.data_shape = tuple(self.real.shape[1:])
        self.latent_dim, self.latent = int(self.params["latent_dim"]), str(self.params["latent"])
        self.batch_size, self.n_critic = self.spec.batch_size, int(self.params["n_critic"])
        self.g_steps = int(self.params["g_steps"])
        self.simultaneous = self.params["updates"] == "simultaneous"
        self.pac = int(self.params.get("pac", 1))
        """PacGAN's packing degree: the discriminator judges packs of this many samples."""
        self.generator_calls_per_pack = self.params["pac_generator_calls"] == "per_position" and self.pac > 1
        """Generate each place of the packs in its own generator call (``pac_generator_calls``)."""

    def _build_models(self) -> None:
        """G and D, built by the architecture after seeding torch with the run's seed, checked, and their optimisers."""
        spec, params, fast = self.spec, self.params, self.fast
        torch.manual_seed(spec.seed)
        generator, discriminator = self.architecture.build(self.data_shape, params)
        if self.pac > 1:  # the same architecture, built for packs (see ganbench.planning.pac)
            _, discriminator = self.architecture.build(packed_shape(self.data_shape, self.pac), params)
        problem = model_shape_problem(generator, discriminator, self.data_shape, dict(params),
                                      packed_shape(self.data_shape, self.pac))
        if problem:
            raise UserError(f"architecture '{spec.architecture}' does not fit dataset '{spec.dataset}' "
                            f"{self.data_shape}: {problem} (ganbench.testing's conformance kit checks this)")
        self.generator, self.discriminator = fast.prepare_modules(generator.to(self.device),
                                                                  discriminator.to(self.device))
        self.real = fast.prepare_data(self.real, self.discriminator)
        options = fast.optimizer_options(params["optimizer"])
        self.optimizer_g = make_optimizer(self.generator.parameters(), params["lr_g"], params, **options)
        self.optimizer_d = make_optimizer(self.discriminator.parameters(), params["lr_d"], params, **options)

    def _open_streams(self) -> None:
        """The run's own random streams: real batches (seed + 1), noise (seed + 2), pictures' noise (seed + 3)."""
        seed, device = self.spec.seed, self.device
        self.data_rng = torch.Generator(device=device).manual_seed(seed + 1)
        self.noise_rng = torch.Generator(device=device).manual_seed(seed + 2)
        picture_count = SAMPLE_PICTURE_COUNT["images" if len(self.data_shape) == 3 else "points"]
        self.fixed_noise = draw_latent(picture_count, self.latent_dim, self.latent,
                                       torch.Generator().manual_seed(seed + 3)).to(device)

    def resume(self) -> None:
        """Continue from the run's newest checkpoint, if it has one, and mark the run running.

        The checkpoint restores what :meth:`_restore` lists; :meth:`trim_history` then drops
        the records of the steps that will be redone.
        """
        checkpoint = load_checkpoint(self.directory)
        if checkpoint is not None:
            self._restore(checkpoint)
            self.log(f"resumed from step {self.step}")
            self.hardware = resumed_hardware(self.directory.status().get("hardware"), self.hardware, self.step)
        self.trim_history()
        self.started = time.perf_counter()
        self.directory.write_status(RunStatus.RUNNING, step=self.step, hardware=self.hardware)

    def _restore(self, checkpoint: dict) -> None:
        """Models, optimisers, random streams (torch's global RNG too), step, clocks and unlogged losses."""
        self.generator.load_state_dict(checkpoint["generator"])
        self.discriminator.load_state_dict(checkpoint["discriminator"])
        self.optimizer_g.load_state_dict(checkpoint["optimizer_g"])
        self.optimizer_d.load_state_dict(checkpoint["optimizer_d"])
        torch.set_rng_state(checkpoint["rng"]["cpu"])
        self.data_rng.set_state(checkpoint["rng"]["data"])
        self.noise_rng.set_state(checkpoint["rng"]["noise"])
        if "cuda" in checkpoint["rng"]:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], self.device)
        self.global_rng = _global_rng_state(self.device)
        self.step, self.wall_before = int(checkpoint["step"]), float(checkpoint["wall_seconds"])
        self.stopwatch = Stopwatch(checkpoint["train_seconds"], checkpoint["timed_steps"])
        self.pending = list(checkpoint.get("pending_losses", torch.empty(0, 3)).to(self.device).unbind(0))

    def trim_history(self) -> None:
        """Drop metrics.jsonl's records of the steps after :attr:`step` (they are redone), and its damaged lines.

        A final evaluation whose status never got written is redone too: it follows the last
        checkpoint, which is at the run's last step.
        """
        history, damaged = read_jsonl(self.directory.metrics)
        step = self.step
        kept = [record for record in history if record.get("step", 0) < step or (
            record.get("step", 0) == step and not (step >= self.spec.steps and record.get("kind") == "eval"))]
        if damaged or len(kept) != len(history):
            if damaged:
                self.directory.warn(f"skipped {damaged} damaged line(s) of metrics.jsonl")
            rewrite_jsonl(self.directory.metrics, kept)

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

    # The data a step trains on.

    def real_batch(self) -> torch.Tensor:
        """The next batch of real samples (this run's data stream), packed for the discriminator."""
        return self.pack(self.real[torch.randint(len(self.real), (self.batch_size * self.pac,),
                                                 generator=self.data_rng, device=self.device)])

    def noise(self) -> torch.Tensor:
        """The next batch of generator inputs (this run's noise stream): one per sample of every pack."""
        return draw_latent(self.batch_size * self.pac, self.latent_dim, self.latent, self.noise_rng, self.device)

    def pack(self, samples: torch.Tensor) -> torch.Tensor:
        """``samples`` (``[..., batch * pac, *data_shape]``) as the discriminator's packs; unchanged when pac is 1."""
        if self.pac == 1:
            return samples
        return self.fast.prepare_data(pack_samples(samples, self.pac, len(self.data_shape)), self.discriminator)

    def training_figures(self) -> dict[str, float]:
        """Steady-state throughput, training seconds and peak memory so far."""
        seconds = max(self.stopwatch.seconds, 1e-9)
        steps = self.stopwatch.steps
        return {"images_per_second": steps * self.batch_size * self.pac * self.n_critic / seconds,
                "steps_per_second": steps / seconds, "train_seconds": self.stopwatch.seconds,
                "peak_memory_mb": _peak_memory_mb(self.device)}

    # The loop's pieces, in the order ganbench.training.loop.train_to_end calls them.

    def stop(self) -> Interrupted:
        """Checkpoint where the run is, for a stop request; the :class:`Interrupted` to raise."""
        self.pause_timing()
        self.checkpoint()
        return Interrupted(f"stopped at step {self.step}")

    def set_learning_rates(self, factor: float) -> None:
        """Both optimisers at ``factor`` times the run's ``lr_g`` and ``lr_d`` (the learning-rate schedule)."""
        for optimizer, key in ((self.optimizer_g, "lr_g"), (self.optimizer_d, "lr_d")):
            for group in optimizer.param_groups:
                group["lr"] = self.params[key] * factor

    def start_timing(self) -> None:
        """Start the stopwatch, unless it runs already or the run is still in its first :data:`WARMUP_STEPS`."""
        if self.stopwatch.started is None and self.step >= WARMUP_STEPS:
            self.stopwatch.start()
            self.segment_start = self.step

    def record(self, d_loss: torch.Tensor, g_loss: torch.Tensor, penalty: torch.Tensor | None) -> None:
        """Count a finished step and keep its losses (on the device, unchecked) for the next boundary."""
        self.step += 1
        self.pending.append(torch.stack([d_loss.detach().float(), g_loss.detach().float(),
                                         (self.zero if penalty is None else penalty.detach()).float()]))

    def pause_timing(self) -> None:
        """Stop the stopwatch (waiting for the device), counting the steps since it started."""
        if self.stopwatch.started is not None:
            self.stopwatch.stop(self.step - self.segment_start, self.device)

    def log_losses(self) -> Outcome | None:
        """Write the mean losses since the last boundary to metrics.jsonl; the run's outcome if one was not finite.

        A non-finite loss ends the run as diverged at the first step that had one; nothing of
        its window is logged.
        """
        if not self.pending:
            return None
        losses = torch.stack(self.pending).double().cpu()
        first_step = self.step - len(self.pending) + 1
        self.pending.clear()
        bad = (~torch.isfinite(losses)).any(dim=1).nonzero()
        if len(bad):
            at = first_step + int(bad[0])
            error = (f"non-finite loss at step {at} (d_loss={losses[bad[0], 0].item()}, "
                     f"g_loss={losses[bad[0], 1].item()})")
            self.log(error)
            return Outcome(RunStatus.DIVERGED, at, self.wall_seconds(), error=error)
        mean = losses.mean(dim=0)
        append_jsonl(self.directory.metrics, [{"step": self.step, "kind": "train", "d_loss": mean[0].item(),
                                               "g_loss": mean[1].item(), "penalty": mean[2].item(),
                                               "wall_seconds": self.wall_seconds()}])
        return None

    def report_progress(self) -> None:
        """Tell ``on_progress`` the step and the steady-state steps per second."""
        self.on_progress(self.step, self.spec.steps, self.training_figures()["steps_per_second"])

    def save_sample_picture(self) -> None:
        """``samples/step_NNNNNNN.png``: the generator on the run's fixed noise, beside real samples."""
        with torch.no_grad():
            self.generator.eval()
            fake = self.generator(self.fixed_noise)
            self.generator.train()
            save_sample_picture(self.directory.samples / f"step_{self.step:07d}.png", fake,
                                self.real_data.samples[:2000], title=f"{self.spec.label} step {self.step}")

    def evaluate(self, final: bool = False) -> tuple[dict[str, float], dict[str, str]]:
        """Run the run's metrics now and append their ``eval`` record; ``(values, protocol columns)``.

        ``final``: the evaluation at the last step, which also keeps its samples when the
        run's ``save_samples`` asks for them.
        """
        spec = self.spec
        context = EvaluationContext(
            generator=self.generator, latent_dim=self.latent_dim, data_shape=self.data_shape,
            dataset_name=spec.dataset, dataset=self.dataset, real=self.real_data, settings=spec.evaluation,
            device=self.device, cache_dir=self.cache_dir, seed=spec.seed, step=self.step,
            run_dir=self.directory.path, params=self.params,
            training={**self.training_figures(), "evaluation_seconds": self.evaluation_seconds,
                      "device_name": self.hardware},
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

    def checkpoint(self) -> None:
        """Save everything a resume needs (``checkpoint.pt``, the previous one kept) and the status at this step."""
        save_checkpoint(self.directory, {
            "step": self.step, "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
            "rng": _rng_state(self.device, self.data_rng, self.noise_rng), "wall_seconds": self.wall_seconds(),
            "train_seconds": self.stopwatch.seconds, "timed_steps": self.stopwatch.steps,
            "pending_losses": torch.stack(self.pending).float().cpu() if self.pending else torch.empty(0, 3)})
        self.directory.write_status(RunStatus.RUNNING, step=self.step, wall_seconds=self.wall_seconds())

    def finish(self) -> Outcome:
        """The final evaluation; the run's outcome, with its figures and protocol."""
        with self.interruptible():
            values, protocol = self.evaluate(final=True) if self.metrics else ({}, {})
        values = {**self.training_figures(), **values}
        protocol = {**protocol, **self.fast.protocol(self.params["optimizer"]), **self.packing,
                    "training_hardware": self.hardware, "training_torch": torch.__version__}
        if self.pac > 1:
            protocol["training_pac"] = (f"the discriminator judged packs of {self.pac} samples (PacGAN); "
                                        f"batch_size counts packs, images_per_second counts samples")
        return Outcome(RunStatus.DONE, self.step, self.wall_seconds(), metrics=values, protocol=protocol)
