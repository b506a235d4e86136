"""One run: the training loop, checkpoints, sample pictures and the evaluation schedule.

Read :func:`train_run` top to bottom: build, resume, then per generator step
``n_critic`` discriminator steps (loss + penalty, optimiser step, post-step hook), one
generator step, and at the schedule's boundaries: divergence check, log, samples,
evaluation, checkpoint. The device is decided by whoever launches the run.
"""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

import torch

from ganbench import fastpath
from ganbench.api import DataRequest, LoadedData, Loss
from ganbench.config import RunSpec
from ganbench.devices import device_description
from ganbench.evaluation import EvaluationContext, run_metrics, save_samples
from ganbench.ledger import RunDirectory
from ganbench.registry import Registry
from ganbench.sample_grids import save_sample_picture
from ganbench.storage import append_jsonl, atomic_write, read_jsonl, rewrite_jsonl

SAMPLE_PICTURE_COUNT = {"images": 64, "points": 1000}
"""Generated samples per sample picture: an 8x8 image grid, or a scatter of 2D points."""
WARMUP_STEPS = 10
"""Steps left out of the throughput figures (allocator warm-up, lazy initialisation)."""


class Interrupted(Exception):
    """Raised inside the loop when the launcher asked the run to stop; it was checkpointed."""


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


_data_cache: dict[tuple, LoadedData] = {}


def load_real_data(dataset: Any, spec: RunSpec, data_dir: str | None, cache_dir: Path) -> LoadedData:
    """Load a run's dataset once per process (grids reuse it across runs)."""
    keys = tuple(sorted((k, spec.params[k]) for k in dataset.defaults))
    cache_key = (spec.dataset, spec.split, data_dir, str(cache_dir), spec.seed, keys)
    if cache_key not in _data_cache:
        request = DataRequest(data_dir=data_dir, cache_dir=str(cache_dir / "data"), split=spec.split,
                              seed=spec.seed, params=spec.params)
        _data_cache.clear()
        _data_cache[cache_key] = dataset.load(request)
    return _data_cache[cache_key]


def _optimizer(name: str, parameters: Any, lr: float, params: Mapping[str, Any],
               options: Mapping[str, bool]) -> torch.optim.Optimizer:
    if name == "rmsprop":
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


def load_checkpoint(directory: RunDirectory) -> dict | None:
    """The newest readable checkpoint, or None; a damaged file is reported, never used.

    A damaged file is renamed to ``*.damaged``, so the next checkpoint never rotates it
    over the good previous one.
    """
    for path in (directory.checkpoint, directory.previous_checkpoint):
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated or corrupted: fall back to the previous one
            path.replace(path.with_name(path.name + ".damaged"))
            directory.warn(f"checkpoint {path.name} is damaged ({type(error).__name__}); kept it as "
                           f"{path.name}.damaged and tried an older one")
    return None


def save_checkpoint(directory: RunDirectory, state: dict) -> None:
    """Write ``checkpoint.pt`` atomically, keeping the previous one as ``checkpoint.prev.pt``."""
    atomic_write(directory.checkpoint, lambda handle: torch.save(state, handle),
                 keep_previous=directory.previous_checkpoint)


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
    params = spec.params
    architecture = registry.get("architecture", spec.architecture)
    loss = registry.get("loss", spec.loss)
    dataset = registry.get("dataset", spec.dataset)
    metrics = {name: registry.get("metric", name) for name in spec.metrics}
    log = directory.log_line

    real_data = load_real_data(dataset, spec, data_dir, cache_dir)
    if real_data.note:
        log(real_data.note)
    fast = fastpath.resolve(params, device, images=real_data.samples.dim() == 4,
                            double_backward=type(loss).penalty is not Loss.penalty)
    fast.configure_backends()
    real = real_data.samples.to(device)
    data_shape = tuple(real.shape[1:])
    latent_dim = int(params["latent_dim"])
    batch_size, n_critic = spec.batch_size, int(params["n_critic"])

    torch.manual_seed(spec.seed)
    generator, discriminator = architecture.build(data_shape, params)
    generator, discriminator = fast.prepare_modules(generator.to(device), discriminator.to(device))
    real = fast.prepare_data(real, discriminator)
    optimizer_options = fast.optimizer_options(params["optimizer"])
    optimizer_g = _optimizer(params["optimizer"], generator.parameters(), params["lr_g"], params, optimizer_options)
    optimizer_d = _optimizer(params["optimizer"], discriminator.parameters(), params["lr_d"], params, optimizer_options)
    data_rng = torch.Generator(device=device).manual_seed(spec.seed + 1)
    noise_rng = torch.Generator(device=device).manual_seed(spec.seed + 2)
    picture_count = SAMPLE_PICTURE_COUNT["images" if len(data_shape) == 3 else "points"]
    fixed_noise = torch.randn(picture_count, latent_dim,
                              generator=torch.Generator().manual_seed(spec.seed + 3)).to(device)

    step, wall_before, stopwatch, carried_losses = 0, 0.0, Stopwatch(), torch.empty(0, 3)
    checkpoint = load_checkpoint(directory)
    if checkpoint is not None:
        generator.load_state_dict(checkpoint["generator"])
        discriminator.load_state_dict(checkpoint["discriminator"])
        optimizer_g.load_state_dict(checkpoint["optimizer_g"])
        optimizer_d.load_state_dict(checkpoint["optimizer_d"])
        torch.set_rng_state(checkpoint["rng"]["cpu"])
        data_rng.set_state(checkpoint["rng"]["data"])
        noise_rng.set_state(checkpoint["rng"]["noise"])
        if "cuda" in checkpoint["rng"]:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)
        step, wall_before = int(checkpoint["step"]), float(checkpoint["wall_seconds"])
        stopwatch = Stopwatch(checkpoint["train_seconds"], checkpoint["timed_steps"])
        carried_losses = checkpoint.get("pending_losses", carried_losses)
        log(f"resumed from step {step}")
    history, damaged = read_jsonl(directory.metrics)
    # The steps after the checkpoint are redone, and so is a final evaluation that did not
    # get its status written (it follows the last checkpoint).
    kept = [record for record in history if record.get("step", 0) < step or (
        record.get("step", 0) == step and not (step >= spec.steps and record.get("kind") == "eval"))]
    if damaged or len(kept) != len(history):
        if damaged:
            directory.warn(f"skipped {damaged} damaged line(s) of metrics.jsonl")
        rewrite_jsonl(directory.metrics, kept)
    started = time.perf_counter()
    evaluation_seconds = 0.0

    def wall_seconds() -> float:
        return wall_before + time.perf_counter() - started

    def real_batch() -> torch.Tensor:
        return real[torch.randint(len(real), (batch_size,), generator=data_rng, device=device)]

    def noise() -> torch.Tensor:
        return torch.randn(batch_size, latent_dim, generator=noise_rng, device=device)

    def checkpoint_now() -> None:
        save_checkpoint(directory, {
            "step": step, "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
            "optimizer_g": optimizer_g.state_dict(), "optimizer_d": optimizer_d.state_dict(),
            "rng": _rng_state(device, data_rng, noise_rng), "wall_seconds": wall_seconds(),
            "train_seconds": stopwatch.seconds, "timed_steps": stopwatch.steps,
            "pending_losses": torch.stack(pending).float().cpu() if pending else torch.empty(0, 3)})

    def training_figures() -> dict[str, float]:
        seconds = max(stopwatch.seconds, 1e-9)
        return {"images_per_second": stopwatch.steps * batch_size * n_critic / seconds,
                "steps_per_second": stopwatch.steps / seconds, "train_seconds": stopwatch.seconds,
                "peak_memory_mb": _peak_memory_mb(device)}

    def evaluate(final: bool = False) -> tuple[dict[str, float], dict[str, str]]:
        nonlocal evaluation_seconds
        context = EvaluationContext(
            generator=generator, latent_dim=latent_dim, data_shape=data_shape, dataset_name=spec.dataset,
            dataset=dataset, real=real_data, settings=spec.evaluation, device=device, cache_dir=cache_dir,
            seed=spec.seed, step=step, run_dir=directory.path,
            training={**training_figures(), "evaluation_seconds": evaluation_seconds,
                      "device_name": device_description(device)},
            load_split=lambda split: dataset.load(DataRequest(
                data_dir=data_dir, cache_dir=str(cache_dir / "data"), split=split, seed=spec.seed,
                params=params)),
            should_stop=should_stop)
        evaluation = run_metrics(metrics, context)
        values = dict(evaluation.values)
        evaluation_seconds += values.get("evaluation_seconds", 0.0)
        append_jsonl(directory.metrics, [{"step": step, "kind": "eval", **values}])
        if final and spec.save_samples:
            count = max([int(v) for k, v in spec.evaluation.items() if k.endswith("_samples")] or [10_000])
            path = save_samples(context.generate(count), directory.path / "samples.npz")
            log(f"saved {count} generated samples of the final evaluation to {path.name}")
        return values, evaluation.protocol_columns()

    # Per-step losses, checked at boundaries to avoid a sync per step. A stop between two
    # boundaries carries them in the checkpoint, so a resumed run logs what an uninterrupted one does.
    pending: list[torch.Tensor] = list(carried_losses.to(device).unbind(0))

    def flush_losses() -> str | None:
        """Log the losses since the last flush; return an error if one was not finite."""
        if not pending:
            return None
        losses = torch.stack(pending).double().cpu()
        first_step = step - len(pending) + 1
        pending.clear()
        bad = (~torch.isfinite(losses)).any(dim=1).nonzero()
        if len(bad):
            at = first_step + int(bad[0])
            return f"non-finite loss at step {at} (d_loss={losses[bad[0], 0].item()}, g_loss={losses[bad[0], 1].item()})"
        mean = losses.mean(dim=0)
        append_jsonl(directory.metrics, [{"step": step, "kind": "train", "d_loss": mean[0].item(),
                                          "g_loss": mean[1].item(), "penalty": mean[2].item(),
                                          "wall_seconds": wall_seconds()}])
        return None

    directory.write_status("running", step=step)
    zero = torch.zeros((), device=device)
    while step < spec.steps:
        if should_stop():
            if stopwatch.started is not None:
                stopwatch.stop(step - segment_start, device)
            checkpoint_now()
            directory.write_status("running", step=step, wall_seconds=wall_seconds())
            raise Interrupted(f"stopped at step {step}")
        if stopwatch.started is None and step >= WARMUP_STEPS:
            stopwatch.start()
            segment_start = step

        for _ in range(n_critic):
            real_x = real_batch()
            with fast.autocast():  # forward passes only: losses get float32 logits
                with torch.no_grad():
                    fake_x = generator(noise())
                real_logits, fake_logits = discriminator(real_x).flatten().float(), discriminator(fake_x).flatten().float()
                penalty = loss.penalty(discriminator, real_x, fake_x, params)
            d_loss = loss.discriminator_loss(real_logits, fake_logits, params)
            optimizer_d.zero_grad(set_to_none=True)
            (d_loss if penalty is None else d_loss + penalty).backward()
            optimizer_d.step()
            loss.after_discriminator_step(discriminator, params)

        discriminator.requires_grad_(False)  # the generator step needs no gradients for D's weights
        with fast.autocast():
            real_logits = None
            if loss.generator_needs_real_logits:
                with torch.no_grad():
                    real_logits = discriminator(real_x).flatten().float()
            fake_logits = discriminator(generator(noise())).flatten().float()
        g_loss = loss.generator_loss(fake_logits, real_logits, params)
        optimizer_g.zero_grad(set_to_none=True)
        g_loss.backward()
        optimizer_g.step()
        discriminator.requires_grad_(True)
        step += 1
        pending.append(torch.stack([d_loss.detach().float(), g_loss.detach().float(),
                                    (zero if penalty is None else penalty.detach()).float()]))

        boundary = {
            "log": step % spec.log_every == 0,
            "samples": step % spec.sample_every == 0 or step == spec.steps,
            "eval": bool(spec.eval_every) and step % spec.eval_every == 0 and step < spec.steps,
            "checkpoint": step % spec.checkpoint_every == 0 or step == spec.steps,
        }
        if not any(boundary.values()):
            continue
        if stopwatch.started is not None:
            stopwatch.stop(step - segment_start, device)
        error = flush_losses()
        if error:
            log(error)
            return Outcome("diverged", step, wall_seconds(), error=error)
        figures = training_figures()
        on_progress(step, spec.steps, figures["steps_per_second"])
        if boundary["samples"]:
            with torch.no_grad(), interruptible():
                generator.eval()
                fake = generator(fixed_noise)
                generator.train()
                save_sample_picture(directory.samples / f"step_{step:07d}.png", fake,
                                    real_data.samples[:2000], title=f"{spec.label} step {step}")
        if boundary["eval"]:
            with interruptible():
                evaluate()
        if boundary["checkpoint"]:
            checkpoint_now()
            directory.write_status("running", step=step, wall_seconds=wall_seconds())

    with interruptible():
        values, protocol = evaluate(final=True) if metrics else ({}, {})
    values = {**training_figures(), **values}
    protocol = {**protocol, **fast.protocol(params["optimizer"])}
    return Outcome("done", step, wall_seconds(), metrics=values, protocol=protocol)
