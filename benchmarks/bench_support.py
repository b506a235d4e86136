"""What the benchmarks share: their data, the three training loops they compare, fast mode.

The three loops train the same modules with the same losses, one ``steps(count)`` call at
a time, so a benchmark round times ``count`` generator steps (each after ``n_critic``
discriminator steps) and nothing else:

* :class:`GanbenchLoop`: ganbench's own loop, ``execute_run`` as every executor's worker
  calls it, fast path at its defaults. :class:`PackedLoop` is the same for a pack of runs
  trained as one stacked model (``--pack``).
* :class:`MinimalLoop`: the least code that trains the same way: resident data drawn by
  indexing, the same fast-path settings, no logging or checkpoints. Its gap to ganbench's
  loop is the harness's overhead.
* :class:`DataLoaderLoop`: how most GAN examples are written: a ``DataLoader`` over uint8
  images that converts each sample on its own (PIL image, ``ToTensor``, ``Normalize``),
  float32, contiguous layout, torch's default optimiser kernels.

Each has ``drive(measure)``, which calls ``measure(steps)`` while the loop is ready to train.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ganbench.api import DataRequest, Dataset, LoadedData, Loss, validate
from ganbench.errors import Interrupted
from ganbench.execution.recording import execute_pack, execute_run
from ganbench.planning.grid import GridSpec, expand
from ganbench.planning.spec import RunSpec
from ganbench.registry import Entry, Registry, build_registry
from ganbench.training import fastpath
from ganbench.training.state import make_optimizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``../shared/data`` from the checkout: ``mnist/`` holds the real MNIST test split."""
BATCH_SIZE = 64
DATASETS = ("mnist", "cifar10-shape")
"""Real MNIST (1x28x28) and random images of CIFAR-10's shape (3x32x32)."""
ARCHITECTURES = ("mlp", "dcgan")
LOSSES = ("minimax", "ns", "lsgan", "wgan", "wgan-gp", "hinge")
PACK_SIZES = (4,)
"""Runs per pack in the packed-training benchmarks."""
LOOPS = ("dataloader", "minimal", "ganbench")
"""In the order they run for each cell, so ganbench's benchmark can store both ratios."""
SYNTHETIC_IMAGES = 10_000
LOG_EVERY = 2
"""ganbench's loop logs the losses every 2 steps (by default every 50), so every timed
round includes that work: a conservative measure of the harness's overhead."""


@dataclass(frozen=True)
class Scale:
    """How much each benchmark does: full measurements, or one quick pass (``--benchmark-disable``)."""

    fast: bool
    steps_per_round: int
    """Generator steps timed per round (see :meth:`steps_for`)."""
    rounds: int
    warmup_rounds: int
    batch_size: int
    sets: Mapping[str, Any]
    """Hyperparameters changed in fast mode (smaller models); none in full mode."""
    samples: int
    """Generated and real samples of the FID/KID/IS benchmarks (10k in full mode)."""
    reference_images: int
    """MNIST test images the evaluation benchmarks use (the classifier trains on 85% of them)."""

    def steps_for(self, architecture: str) -> int:
        """Steps per round for ``architecture``: more for the cheap mlp, so a round is long enough to time."""
        if self.fast or architecture != "mlp":
            return self.steps_per_round
        return CHEAP_ARCHITECTURE_STEPS


CHEAP_ARCHITECTURE_STEPS = 20
"""Steps per round of the architectures whose steps take milliseconds (mlp): with 2 steps a
round lasts ~40 ms and one scheduler hiccup on a shared machine swings the ratios by 30%."""

FULL = Scale(fast=False, steps_per_round=2, rounds=5, warmup_rounds=1, batch_size=BATCH_SIZE, sets={},
             samples=10_000, reference_images=10_000)
FAST = Scale(fast=True, steps_per_round=1, rounds=1, warmup_rounds=0, batch_size=16,
             sets={"dcgan_width": 16, "mlp_width": 64}, samples=500, reference_images=600)


class SyntheticImages(Dataset):
    """Random uint8 images of CIFAR-10's shape: throughput does not depend on what the pixels show."""

    name = "cifar10-shape"
    description = "Random images of CIFAR-10's shape (3x32x32), for benchmarks"
    source = "synthetic (benchmarks)"
    num_classes = 10

    def data_shape(self, params: Mapping[str, Any]) -> tuple[int, ...]:
        return (3, 32, 32)

    def load(self, request: DataRequest) -> LoadedData:
        images, labels = synthetic_uint8_images()
        return LoadedData(images.float() / 127.5 - 1, labels, request.split)


def synthetic_uint8_images() -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 [n, 3, 32, 32], int64 labels [n])``, the same on every call."""
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (SYNTHETIC_IMAGES, 3, 32, 32), generator=rng, dtype=torch.uint8)
    return images, torch.randint(0, 10, (SYNTHETIC_IMAGES,), generator=rng)


def benchmark_registry() -> Registry:
    """The installed plugins plus :class:`SyntheticImages`, attributed to the built-in datasets' plugin."""
    registry = build_registry()
    dataset = SyntheticImages()
    validate("dataset", dataset)
    owner = registry.entry("dataset", "mnist").plugin
    registry.entries["dataset"][dataset.name] = [Entry("dataset", dataset, owner)]
    return registry


def run_spec(registry: Registry, architecture: str, loss: str, dataset: str, scale: Scale,
             steps: int = 1_000_000, **sets: Any) -> RunSpec:
    """The run a training benchmark trains: batch 64, no metrics, ganbench's default schedule but
    for logging every :data:`LOG_EVERY` steps."""
    smaller = {key: value for key, value in scale.sets.items()
               if key in registry.get("architecture", architecture).defaults}
    grid = GridSpec(archs=[architecture], losses=[loss], datasets=[dataset], seeds=[0], steps=steps,
                    batch_size=scale.batch_size, metrics=["none"], log_every=LOG_EVERY,
                    sets={key: [value] for key, value in {**smaller, **sets}.items()})
    spec, = expand(grid, registry)
    return spec


def pack_specs(registry: Registry, architecture: str, loss: str, dataset: str, scale: Scale, runs: int,
               steps: int = 1_000_000) -> list[RunSpec]:
    """``runs`` copies of :func:`run_spec`'s run with seeds 0, 1, ...: one pack."""
    first = run_spec(registry, architecture, loss, dataset, scale, steps)
    return [dataclasses.replace(first, seed=seed) for seed in range(runs)]


def load_data(registry: Registry, spec: RunSpec, data_dir: Path, cache_dir: Path) -> LoadedData:
    request = DataRequest(data_dir=str(data_dir), cache_dir=str(cache_dir / "data"), split=spec.split,
                          seed=spec.seed, params=spec.params)
    return registry.get("dataset", spec.dataset).load(request)


class GanbenchLoop:
    """ganbench's training loop, let through ``count`` steps at a time.

    :meth:`drive` trains on the calling thread, as a worker process does (on a loaded
    machine torch's thread pool behaves differently on other threads), and runs the
    measurement on a helper thread. The loop polls its ``should_stop`` hook before every
    step; the hook waits until :meth:`steps` allows more, so a benchmark round times exactly
    the steps it asked for, boundaries such as loss logging included, and none of the set-up.
    """

    def __init__(self, spec: RunSpec, out: Path, registry: Registry, data_dir: Path, cache_dir: Path,
                 device: torch.device = torch.device("cpu")):
        self.spec, self.out = spec, out
        self.arguments = dict(registry=registry, device=device, data_dir=str(data_dir), cache_dir=cache_dir)
        self._condition = threading.Condition()
        self._allowed = 0
        self._done = -1  # the first poll comes after set-up, before step 0
        self._target = 0
        self._stopping = self._ended = False
        self._error: BaseException | None = None

    def drive(self, measure: Callable[[Callable[[int], None]], Any]) -> Any:
        """Train here while ``measure(steps)`` runs on a helper thread; stop the run (it checkpoints,
        as on any stop request) when it returns, and return what it returned."""
        returned = []

        def measure_then_stop() -> None:
            try:
                self._wait_for(0)
                returned.append(measure(self.steps))
            except BaseException as error:
                self._error = error
            finally:
                with self._condition:
                    self._stopping = True
                    self._condition.notify_all()

        helper = threading.Thread(target=measure_then_stop, daemon=True)
        helper.start()
        try:
            self._train()
        except Interrupted:
            pass
        finally:
            with self._condition:
                self._ended = True
                self._condition.notify_all()
            helper.join()
        if self._error is not None:
            raise self._error
        return returned[0]

    def _train(self) -> None:
        execute_run(self.spec, self.out, should_stop=self._should_stop, **self.arguments)

    def _should_stop(self) -> bool:
        with self._condition:
            self._done += 1
            if self._done >= self._target:  # wake the measuring thread only when its steps are done
                self._condition.notify_all()
            self._condition.wait_for(lambda: self._allowed > 0 or self._stopping)
            if self._stopping:
                return True
            self._allowed -= 1
            return False

    def _wait_for(self, done: int) -> None:
        with self._condition:
            self._target = done
            self._condition.wait_for(lambda: self._done >= done or self._ended)
            if self._done < done:
                raise RuntimeError(f"the run ended before step {done}; see {self.out / 'runs' / self.spec.run_id}")

    def steps(self, count: int) -> None:
        """Let the loop do ``count`` more steps; return when they are done."""
        with self._condition:
            self._target = self._done + count
            self._allowed += count
            self._condition.notify_all()
        self._wait_for(self._target)

    def checkpoint(self) -> dict:
        path = self.out / "runs" / self.spec.run_id / "checkpoint.pt"
        return torch.load(path, map_location="cpu", weights_only=True)


class PackedLoop(GanbenchLoop):
    """ganbench's loop training several runs as one stacked model (``--pack``), ``execute_pack`` as
    a packed worker calls it; one step is a step of every run of the pack."""

    def __init__(self, specs: list[RunSpec], out: Path, registry: Registry, data_dir: Path, cache_dir: Path,
                 device: torch.device = torch.device("cpu")):
        super().__init__(specs[0], out, registry, data_dir, cache_dir, device)
        self.specs = specs

    def _train(self) -> None:
        execute_pack(self.specs, self.out, should_stop=self._should_stop, **self.arguments)

    def checkpoints(self) -> list[dict]:
        return [torch.load(self.out / "runs" / spec.run_id / "checkpoint.pt", map_location="cpu", weights_only=True)
                for spec in self.specs]


class MinimalLoop:
    """The least code that trains like ganbench: same fast path, data and random streams."""

    def __init__(self, spec: RunSpec, registry: Registry, real: LoadedData,
                 device: torch.device = torch.device("cpu")):
        params = spec.params
        self.params, self.batch_size = params, spec.batch_size
        self.loss: Loss = registry.get("loss", spec.loss)
        self.fast = fastpath.resolve(params, device, images=real.samples.dim() == 4,
                                     double_backward=type(self.loss).penalty is not Loss.penalty)
        self.fast.configure_backends()
        torch.manual_seed(spec.seed)
        generator, discriminator = registry.get("architecture", spec.architecture).build(
            tuple(real.samples.shape[1:]), params)
        self.generator, self.discriminator = self.fast.prepare_modules(generator.to(device), discriminator.to(device))
        self.real = self.fast.prepare_data(real.samples.to(device), self.discriminator)
        options = self.fast.optimizer_options(params["optimizer"])
        self.optimizer_g = make_optimizer(self.generator.parameters(), params["lr_g"], params, **options)
        self.optimizer_d = make_optimizer(self.discriminator.parameters(), params["lr_d"], params, **options)
        self.data_rng = torch.Generator(device=device).manual_seed(spec.seed + 1)
        self.noise_rng = torch.Generator(device=device).manual_seed(spec.seed + 2)
        self.device = device

    def drive(self, measure: Callable[[Callable[[int], None]], Any]) -> Any:
        return measure(self.steps)

    def noise(self) -> torch.Tensor:
        return torch.randn(self.batch_size, self.params["latent_dim"], generator=self.noise_rng, device=self.device)

    def steps(self, count: int) -> None:
        params, loss, generator, discriminator = self.params, self.loss, self.generator, self.discriminator
        for _ in range(count):
            for _ in range(params["n_critic"]):
                real_x = self.real[torch.randint(len(self.real), (self.batch_size,), generator=self.data_rng,
                                                 device=self.device)]
                with self.fast.autocast():
                    with torch.no_grad():
                        fake_x = generator(self.noise())
                    real_logits, fake_logits = discriminator(real_x).float(), discriminator(fake_x).float()
                    penalty = loss.penalty(discriminator, real_x, fake_x, params)
                d_loss = loss.discriminator_loss(real_logits.flatten(), fake_logits.flatten(), params)
                self.optimizer_d.zero_grad(set_to_none=True)
                (d_loss if penalty is None else d_loss + penalty).backward()
                self.optimizer_d.step()
                loss.after_discriminator_step(discriminator, params)
            discriminator.requires_grad_(False)
            with self.fast.autocast():
                real_logits = None
                if loss.generator_needs_real_logits:
                    with torch.no_grad():
                        real_logits = discriminator(real_x).flatten().float()
                fake_logits = discriminator(generator(self.noise())).flatten().float()
            g_loss = loss.generator_loss(fake_logits, real_logits, params)
            self.optimizer_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.optimizer_g.step()
            discriminator.requires_grad_(True)


class PerSampleImages(torch.utils.data.Dataset):
    """uint8 images served the way torchvision's MNIST and CIFAR10 serve them: one PIL image at a
    time, through ``transform``, with its label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


@functools.lru_cache(maxsize=len(DATASETS))
def uint8_images(real: LoadedData) -> np.ndarray:
    """The images as a torchvision dataset holds them: uint8 ``[n, h, w]`` (grayscale) or ``[n, h, w, 3]``."""
    images = ((real.samples + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return (images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)).contiguous().numpy()


class DataLoaderLoop:
    """A plain float32 loop fed by a ``DataLoader`` with per-sample transforms, as in most GAN examples."""

    def __init__(self, spec: RunSpec, registry: Registry, real: LoadedData, num_workers: int = 0):
        from torchvision import transforms

        params = spec.params
        self.params, self.batch_size = params, spec.batch_size
        self.loss: Loss = registry.get("loss", spec.loss)
        channels = real.samples.shape[1]
        transform = transforms.Compose([transforms.ToTensor(),
                                        transforms.Normalize((0.5,) * channels, (0.5,) * channels)])
        labels = real.labels.numpy() if real.labels is not None else np.zeros(len(real.samples), np.int64)
        self.loader = torch.utils.data.DataLoader(PerSampleImages(uint8_images(real), labels, transform),
                                                  batch_size=spec.batch_size, shuffle=True, drop_last=True,
                                                  num_workers=num_workers, persistent_workers=num_workers > 0)
        self.batches = iter(self.loader)
        torch.manual_seed(spec.seed)
        self.generator, self.discriminator = registry.get("architecture", spec.architecture).build(
            tuple(real.samples.shape[1:]), params)
        self.optimizer_g = make_optimizer(self.generator.parameters(), params["lr_g"], params)
        self.optimizer_d = make_optimizer(self.discriminator.parameters(), params["lr_d"], params)

    def drive(self, measure: Callable[[Callable[[int], None]], Any]) -> Any:
        return measure(self.steps)

    def next_batch(self) -> torch.Tensor:
        try:
            return next(self.batches)[0]
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)[0]

    def steps(self, count: int) -> None:
        params, loss, generator, discriminator = self.params, self.loss, self.generator, self.discriminator
        latent_dim = params["latent_dim"]
        for _ in range(count):
            for _ in range(params["n_critic"]):
                real_x = self.next_batch()
                with torch.no_grad():
                    fake_x = generator(torch.randn(self.batch_size, latent_dim))
                d_loss = loss.discriminator_loss(discriminator(real_x).flatten(), discriminator(fake_x).flatten(),
                                                 params)
                penalty = loss.penalty(discriminator, real_x, fake_x, params)
                self.optimizer_d.zero_grad()
                (d_loss if penalty is None else d_loss + penalty).backward()
                self.optimizer_d.step()
                loss.after_discriminator_step(discriminator, params)
            discriminator.requires_grad_(False)
            real_logits = None
            if loss.generator_needs_real_logits:
                with torch.no_grad():
                    real_logits = discriminator(real_x).flatten()
            g_loss = loss.generator_loss(discriminator(generator(torch.randn(self.batch_size, latent_dim))).flatten(),
                                         real_logits, params)
            self.optimizer_g.zero_grad()
            g_loss.backward()
            self.optimizer_g.step()
            discriminator.requires_grad_(True)
