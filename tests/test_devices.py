"""Slot assignment: which worker trains where, for faked lists of 1, 2 and 8 GPUs or the CPU."""

from __future__ import annotations

from collections import Counter

import pytest

from ganbench.errors import UserError
from ganbench.execution.devices import plan_ray_tasks, plan_slots


def gpus(count: int) -> list[str]:
    return [str(index) for index in range(count)]


@pytest.mark.parametrize("count", [1, 2, 8])
@pytest.mark.parametrize("runs_per_gpu", [1, 3])
def test_every_gpu_gets_runs_per_gpu_slots_and_an_even_share_of_the_cores(count, runs_per_gpu):
    slots = plan_slots(available_gpus=gpus(count), runs_per_gpu=runs_per_gpu, cores=48)
    assert len(slots) == count * runs_per_gpu
    assert Counter(slot.gpu for slot in slots) == {str(index): runs_per_gpu for index in range(count)}
    assert {slot.device for slot in slots} == {"cuda:0"}  # each worker sees only its own GPU
    assert {slot.threads for slot in slots} == {max(1, 48 // (count * runs_per_gpu))}
    assert len({slot.name for slot in slots}) == len(slots)
    # The first slots use distinct GPUs, so a grid smaller than the slots never doubles up.
    assert [slot.gpu for slot in slots[:count]] == gpus(count)


def test_gpus_selects_devices_by_torch_index_and_keeps_their_visible_names():
    slots = plan_slots(available_gpus=["3", "5", "GPU-abc"], gpus=[0, 2], cores=8)
    assert [slot.gpu for slot in slots] == ["3", "GPU-abc"]
    assert [slot.name for slot in slots] == ["gpu0", "gpu2"]
    assert [slot.threads for slot in slots] == [4, 4]


def test_device_cuda_n_is_one_gpu():
    assert [slot.gpu for slot in plan_slots(device="cuda:1", available_gpus=gpus(2), cores=4)] == ["1"]


def test_packing_names_each_share():
    slots = plan_slots(available_gpus=gpus(1), runs_per_gpu=2, cores=2)
    assert [slot.name for slot in slots] == ["gpu0/1", "gpu0/2"]
    assert [slot.threads for slot in slots] == [1, 1]


@pytest.mark.parametrize("workers, cores, threads", [(None, 2, 2), (1, 2, 2), (2, 2, 1), (3, 2, 1), (4, 16, 4)])
def test_cpu_workers_divide_the_cores(workers, cores, threads):
    slots = plan_slots(available_gpus=[], workers=workers, cores=cores)
    assert len(slots) == (workers or 1)
    assert {slot.device for slot in slots} == {"cpu"} and {slot.gpu for slot in slots} == {None}
    assert {slot.threads for slot in slots} == {threads}


def test_device_cpu_ignores_visible_gpus():
    slots = plan_slots(device="cpu", available_gpus=gpus(8), workers=2, cores=8)
    assert [(slot.device, slot.threads) for slot in slots] == [("cpu", 4), ("cpu", 4)]


@pytest.mark.parametrize("arguments, message", [
    (dict(available_gpus=[], gpus=[0]), "no CUDA GPU is visible"),
    (dict(available_gpus=[], device="cuda"), "no CUDA GPU is visible"),
    (dict(available_gpus=[], runs_per_gpu=2), "needs GPUs"),
    (dict(available_gpus=gpus(2), gpus=[2]), "GPU 2 is not visible here; 2 GPU(s) are (0 to 1)"),
    (dict(available_gpus=gpus(2), gpus=[1, 1]), "names a GPU twice"),
    (dict(available_gpus=gpus(2), workers=2), "use --runs-per-gpu"),
    (dict(available_gpus=gpus(2), device="cpu", gpus=[0]), "contradict"),
    (dict(available_gpus=gpus(2), device="cuda:0", gpus=[1]), "disagree"),
    (dict(available_gpus=gpus(2), device="tpu"), "not a device"),
    (dict(available_gpus=gpus(2), runs_per_gpu=0), "1 or more"),
    (dict(available_gpus=[], workers=0), "1 or more"),
])
def test_impossible_placements_are_explained(arguments, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_slots(cores=4, **arguments)


@pytest.mark.parametrize("runs_per_gpu", [1, 2, 4])
def test_ray_tasks_ask_for_a_fraction_of_a_gpu_when_packing(runs_per_gpu):
    task = plan_ray_tasks(runs_per_gpu=runs_per_gpu, cluster_cpus=16, cluster_gpus=8, largest_node_cpus=8)
    assert task.num_gpus == pytest.approx(1 / runs_per_gpu)
    assert (task.num_cpus, task.threads) == (1, 1)


def test_ray_cpu_tasks_take_one_cpu_or_a_share_of_the_cluster_capped_at_one_node():
    assert plan_ray_tasks(cluster_cpus=64, cluster_gpus=0, largest_node_cpus=16).num_cpus == 1
    assert plan_ray_tasks(workers=2, cluster_cpus=2, cluster_gpus=0, largest_node_cpus=2).threads == 1
    share = plan_ray_tasks(workers=2, cluster_cpus=64, cluster_gpus=0, largest_node_cpus=16)
    assert (share.num_cpus, share.num_gpus, share.threads) == (16, 0, 16)
    on_cpu = plan_ray_tasks(device="cpu", workers=4, cluster_cpus=8, cluster_gpus=8, largest_node_cpus=8)
    assert (on_cpu.num_cpus, on_cpu.num_gpus) == (2, 0)


@pytest.mark.parametrize("arguments, message", [
    (dict(gpus=[0]), "Ray assigns GPUs"),
    (dict(device="cuda:1"), "Ray assigns GPUs"),
    (dict(device="cuda", cluster_gpus=0), "has no GPUs"),
    (dict(runs_per_gpu=2, cluster_gpus=0), "has none"),
    (dict(workers=2), "use --runs-per-gpu"),
])
def test_impossible_ray_placements_are_explained(arguments, message):
    settings = dict(cluster_cpus=4, cluster_gpus=2, largest_node_cpus=4) | arguments
    with pytest.raises(UserError, match=message):
        plan_ray_tasks(**settings)


# --- the default number of CPU workers ------------------------------------------------------

from ganbench.execution.devices import RunSize, default_cpu_workers, measure_run_size  # noqa: E402

SMALL_RUN = RunSize(parameters=10_000, step_flops=1e6, memory_bytes=1e9)
LARGE_RUN = RunSize(parameters=4_000_000, step_flops=4e10, memory_bytes=3e9)


@pytest.mark.parametrize("cores, runs, largest, memory, workers, threads", [
    (2, 12, SMALL_RUN, 64e9, 2, 1),     # the quickstart on 2 cores: a worker per core
    (16, 12, SMALL_RUN, 64e9, 12, 1),   # no more workers than runs; tiny steps get no spare threads
    (16, 4, LARGE_RUN, 64e9, 4, 4),     # large steps get the spare cores as threads
    (16, 12, LARGE_RUN, 8e9, 2, 8),     # memory for two workers of 3 GB (80% of 8 GB)
    (2, 1, None, None, 1, 1),           # size unknown: assumed small
])
def test_default_cpu_workers_are_one_per_core_within_runs_and_memory(cores, runs, largest, memory, workers,
                                                                     threads):
    plan = default_cpu_workers(cores=cores, runs=runs, largest=largest, memory_bytes=memory)
    assert (plan.workers, plan.threads) == (workers, threads)
    assert plan.reason.startswith(f"{workers} CPU worker(s) x {threads} torch thread(s)")
    assert f"{cores} core(s)" in plan.reason and "--workers N" in plan.reason


@pytest.mark.parametrize("architecture, dataset", [("mlp", "ring8"), ("dcgan", "mnist"), ("dcgan", "cifar10")])
def test_run_size_counts_the_flops_torch_counts(architecture, dataset):
    """The step's FLOPs are built from torch's own flop counter's count of one forward pass of G and D."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ganbench.planning.grid import GridSpec, expand
    from ganbench.registry import get_registry

    registry = get_registry()
    spec, = expand(GridSpec(archs=[architecture], losses=["wgan"], datasets=[dataset], batch_size=8,
                            metrics=["none"]), registry)
    shape = tuple(registry.get("dataset", dataset).data_shape(spec.params))
    built = registry.get("architecture", architecture)
    size = measure_run_size(built, shape, spec.params, spec.batch_size)
    generator, discriminator = built.build(shape, spec.params)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        discriminator(generator(torch.randn(8, int(spec.params["latent_dim"]))))
        discriminator(torch.randn(8, *shape))
    forward = counter.get_total_flops()
    assert size is not None and spec.params["n_critic"] == 5
    assert size.step_flops == pytest.approx(3 * forward * (5 + 1), rel=1e-6)
    assert size.parameters == sum(p.numel() for model in (generator, discriminator) for p in model.parameters())
