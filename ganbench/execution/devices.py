"""Which device a run trains on: decided once, by whoever launches the run.

The local executor runs one worker process per *slot*. A slot is a GPU (or one of
``runs_per_gpu`` shares of it) or, without GPUs, a share of the CPU cores; each worker
sees only its GPU (``CUDA_VISIBLE_DEVICES``) and uses its share of the cores as torch
threads, so a run's results depend on its slot's thread count, never on its neighbours.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ganbench.errors import UserError


@dataclass(frozen=True)
class Slot:
    """Where one worker process trains: a GPU (or a share of one), or a share of the CPU."""

    name: str
    """Shown in progress and logs: ``gpu0``, ``gpu0/2`` (second run packed on GPU 0), ``cpu1``."""
    device: str
    """The torch device as the worker sees it: ``cpu``, or ``cuda:0`` (its only visible GPU)."""
    gpu: str | None
    """The ``CUDA_VISIBLE_DEVICES`` entry of the worker's GPU, None on the CPU."""
    threads: int
    """torch threads of the worker (its share of the cores)."""


def cpu_cores() -> int:
    """Cores this process may use (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` entries of the GPUs torch sees, in torch's order."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:count]


def plan_slots(*, device: str = "auto", gpus: list[int] | None = None, runs_per_gpu: int = 1,
               workers: int | None = None, threads: int | None = None, available_gpus: list[str],
               cores: int) -> list[Slot]:
    """The worker slots of a grid.

    ``available_gpus`` are the ``CUDA_VISIBLE_DEVICES`` entries of the visible GPUs (see
    :func:`visible_gpus`); ``gpus`` selects some of them by torch index. On GPUs every
    selected GPU gets ``runs_per_gpu`` slots, spread so that the first slots use distinct
    GPUs; on the CPU there are ``workers`` slots (default 1). Cores are divided evenly
    between the slots, at least one thread each, unless ``threads`` (CPU only) says how many.
    """
    if runs_per_gpu < 1:
        raise UserError(f"--runs-per-gpu {runs_per_gpu}: give 1 or more.")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: give 1 or more.")
    use_gpus = _gpu_indices(device, gpus, available_gpus)
    if use_gpus:
        if workers is not None:
            raise UserError("--workers sets parallel runs on the CPU; on GPUs use --runs-per-gpu K "
                            "(or --device cpu to train on the CPU).")
        count = len(use_gpus) * runs_per_gpu
        threads = max(1, cores // count)
        return [Slot(name=f"gpu{index}" + (f"/{share + 1}" if runs_per_gpu > 1 else ""), device="cuda:0",
                     gpu=available_gpus[index], threads=threads)
                for share in range(runs_per_gpu) for index in use_gpus]
    if runs_per_gpu != 1:
        raise UserError("--runs-per-gpu needs GPUs; on the CPU use --workers N.")
    count = workers or 1
    threads = threads or max(1, cores // count)
    return [Slot(name=f"cpu{index}", device="cpu", gpu=None, threads=threads) for index in range(count)]


def _gpu_indices(device: str, gpus: list[int] | None, available: list[str]) -> list[int]:
    """Torch indices of the GPUs to use; empty for the CPU."""
    if device == "cpu":
        if gpus:
            raise UserError("--gpus and --device cpu contradict each other; give one of them.")
        return []
    if device not in ("auto", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N.")
    if device.startswith("cuda:"):
        try:
            chosen = [int(device.split(":", 1)[1])]
        except ValueError:
            raise UserError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
        if gpus and gpus != chosen:
            raise UserError(f"--device {device} and --gpus {','.join(map(str, gpus))} disagree; give one of them.")
        gpus = chosen
    if not available:
        if gpus or device != "auto":
            raise UserError("no CUDA GPU is visible here; train on the CPU (--device cpu, --workers N).")
        return []
    chosen = gpus if gpus else list(range(len(available)))
    if len(set(chosen)) != len(chosen):
        raise UserError(f"--gpus {','.join(map(str, chosen))} names a GPU twice; use --runs-per-gpu to pack runs.")
    for index in chosen:
        if not 0 <= index < len(available):
            raise UserError(f"GPU {index} is not visible here; {len(available)} GPU(s) are "
                            f"(0 to {len(available) - 1}).")
    return chosen


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU if there is one, else the CPU; check explicit choices."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is visible here; use --device cpu.")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise UserError(f"--device {name}: ganbench trains on cpu or cuda devices.")
    return device


@dataclass(frozen=True)
class TaskResources:
    """What each Ray task of a grid asks Ray for, and the torch threads it then uses."""

    num_cpus: float
    num_gpus: float
    threads: int


def plan_ray_tasks(*, device: str = "auto", gpus: list[int] | None = None, runs_per_gpu: int = 1,
                   workers: int | None = None, cluster_cpus: float, cluster_gpus: float,
                   largest_node_cpus: float) -> TaskResources:
    """Resources of each run's Ray task; Ray itself picks the node and the GPU.

    On GPUs a task asks for ``1 / runs_per_gpu`` of a GPU (Ray packs fractional tasks on
    one GPU) and one CPU. On the CPU a task asks for one CPU, or with ``workers`` for an
    even share of the cluster's CPUs (at most one node's worth), and uses as many threads.
    """
    if gpus:
        raise UserError("--gpus picks GPUs of this machine; on Ray, Ray assigns GPUs "
                        "(use --runs-per-gpu K to pack runs, or CUDA_VISIBLE_DEVICES when starting Ray).")
    if runs_per_gpu < 1:
        raise UserError(f"--runs-per-gpu {runs_per_gpu}: give 1 or more.")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: give 1 or more.")
    if device.startswith("cuda:"):
        raise UserError(f"--device {device}: Ray assigns GPUs; use --device cuda (or auto).")
    if device not in ("auto", "cuda", "cpu"):
        raise UserError(f"--device {device!r} is not a device; use auto, cpu or cuda.")
    if device == "cuda" and cluster_gpus <= 0:
        raise UserError("--device cuda: the Ray cluster has no GPUs; use --device cpu.")
    if device != "cpu" and cluster_gpus > 0:
        if workers is not None:
            raise UserError("--workers sets parallel runs on the CPU; on GPUs use --runs-per-gpu K "
                            "(or --device cpu to train on the CPU).")
        return TaskResources(num_cpus=1, num_gpus=1 / runs_per_gpu, threads=1)
    if runs_per_gpu != 1:
        raise UserError("--runs-per-gpu needs GPUs, and the Ray cluster has none; use --workers N.")
    if workers is None:
        return TaskResources(num_cpus=1, num_gpus=0, threads=1)
    threads = int(max(1, min(cluster_cpus // workers, largest_node_cpus)))
    return TaskResources(num_cpus=threads, num_gpus=0, threads=threads)


# --- how many CPU workers pay -------------------------------------------------------------

WORKER_BASE_BYTES = 600 * 2**20
"""Resident memory of a worker before its run (Python, torch, the plugins, matplotlib)."""
THREADS_PAY_FLOPS = 1e8
"""Below this many floating-point operations per training step, a run gets one torch
thread: its kernels are too small for a second thread to pay for its synchronisation."""
RESIDENT_SAMPLES = 70_000
"""Samples assumed resident per run for an image dataset when sizing memory (MNIST's 70k)."""


@dataclass(frozen=True)
class RunSize:
    """What one run costs, estimated from its models without training them."""

    parameters: int
    """Weights of the generator and the discriminator together."""
    step_flops: float
    """Floating-point operations of one generator step with its discriminator steps (forward and backward)."""
    memory_bytes: float
    """Memory of a worker training the run: the worker, weights with gradients and Adam's
    moments, and the resident data."""


def measure_run_size(architecture: Any, data_shape: tuple[int, ...], params: Mapping[str, Any],
                     batch_size: int) -> RunSize | None:
    """Size a run from its models, built on the CPU and run on two samples; None if that fails.

    The step's FLOPs count the multiply-adds of every linear and convolution layer in one
    forward pass of G and D (what dominates a GAN step; other layers are left out),
    scaled to ``batch_size``: a step is about three times the forward work (forward and
    backward) of G and of D on a real and a fake batch, for each of the ``n_critic``
    discriminator steps and the generator step. (The meta device would allocate nothing,
    but its first use imports torch's decompositions, seconds on a small machine.)
    """
    probe = 2
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            generator, discriminator = architecture.build(tuple(data_shape), params)
            generator.eval()
            discriminator.eval()
            noise = torch.randn(probe, int(params["latent_dim"]))
            generator_flops = _forward_flops(generator, noise) * batch_size / probe
            discriminator_flops = _forward_flops(discriminator, generator(noise)) * batch_size / probe
    except Exception:  # noqa: BLE001 - an architecture that cannot be probed: size unknown
        return None
    pac = int(params.get("pac", 1) or 1)
    forward = generator_flops + 2 * discriminator_flops
    step_flops = 3.0 * forward * (int(params.get("n_critic", 1)) + 1) * pac
    parameters = sum(p.numel() for module in (generator, discriminator) for p in module.parameters())
    sample_bytes = 4 * math.prod(data_shape)
    data_bytes = sample_bytes * (RESIDENT_SAMPLES if len(data_shape) == 3 else 100_000)
    return RunSize(parameters=parameters, step_flops=step_flops,
                   memory_bytes=WORKER_BASE_BYTES + 16 * parameters + data_bytes)


def _forward_flops(model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Floating-point operations (2 per multiply-add) of the linear and convolution layers of ``model(inputs)``."""
    total = [0.0]

    def count(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        weight = module.weight
        if isinstance(module, torch.nn.Linear):
            total[0] += 2.0 * weight.numel() * output.numel() / max(1, output.shape[-1])
        elif isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            total[0] += 2.0 * weight.numel() * output.numel() / max(1, output.shape[1])
        else:  # transposed convolutions: every input position meets the whole kernel
            total[0] += 2.0 * weight.numel() * args[0].numel() / max(1, args[0].shape[1])

    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d,
              torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    hooks = [module.register_forward_hook(count) for module in model.modules() if isinstance(module, layers)]
    try:
        model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]


def available_memory_bytes() -> float | None:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux); None elsewhere."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class CpuPlan:
    """How many CPU workers a grid gets by default, with how many threads, and why."""

    workers: int
    threads: int
    reason: str


def default_cpu_workers(*, cores: int, runs: int, largest: RunSize | None,
                        memory_bytes: float | None) -> CpuPlan:
    """As many one-thread workers as pay: one per core, no more than the grid has runs or memory holds.

    Separate runs on separate cores need no synchronisation, so for a grid's throughput a
    worker per core beats threads inside one run (measured in docs/execution.md). Cores
    left over when the grid has fewer runs than cores become threads of its runs, if
    their steps are large enough for threads to pay (:data:`THREADS_PAY_FLOPS`).
    ``largest`` is the size of the grid's largest run (None: unknown, assumed small).
    """
    workers = max(1, min(cores, runs))
    why = [f"{cores} core(s)", f"{runs} run(s)"]
    if largest is not None and memory_bytes:
        fits = max(1, int(0.8 * memory_bytes // largest.memory_bytes))
        if fits < workers:
            workers = fits
            why.append(f"memory for {fits} (about {largest.memory_bytes / 2**30:.1f} GiB each)")
    threads = 1
    spare = cores // workers
    if spare > 1:
        if largest is not None and largest.step_flops >= THREADS_PAY_FLOPS:
            threads = spare
        else:
            why.append("steps too small for more threads")
    if largest is not None:
        why.append(f"largest step {largest.step_flops / 1e9:.2g} GFLOP")
    return CpuPlan(workers=workers, threads=threads,
                   reason=f"{workers} CPU worker(s) x {threads} torch thread(s) ({', '.join(why)}; "
                          f"--workers N to choose)")
