"""Training throughput of every built-in architecture with every built-in loss, at batch 64, on
MNIST's shape (real MNIST) and CIFAR-10's (random images): ganbench's loop, the minimal loop
with the same settings and the plain DataLoader loop, side by side (see ``bench_support``);
then packs of runs trained as one stacked model against the same runs trained one at a time."""

from __future__ import annotations

import pytest
import torch

from bench_support import ARCHITECTURES, DATASETS, LOOPS, LOSSES, PACK_SIZES

CELLS = [pytest.param(dataset, architecture, loss, loop, id=f"{architecture}-{loss}-{dataset}-{loop}")
         for dataset in DATASETS for architecture in ARCHITECTURES for loss in LOSSES for loop in LOOPS]


@pytest.mark.parametrize("dataset,architecture,loss,loop", CELLS)
def test_training_throughput(benchmark, training_loop, scale, results, dataset, architecture, loss, loop):
    trainer, spec = training_loop(loop, architecture, loss, dataset)
    benchmark.group = f"train {architecture}/{loss}/{dataset}"
    images_per_step, steps = spec.batch_size * spec.params["n_critic"], scale.steps_for(architecture)
    benchmark.extra_info.update(loop=loop, batch_size=spec.batch_size, n_critic=spec.params["n_critic"],
                                steps_per_round=steps, threads=torch.get_num_threads())
    trainer.drive(lambda run: benchmark.pedantic(run, args=(steps,), rounds=scale.rounds,
                                                 warmup_rounds=scale.warmup_rounds))
    results.add_training(benchmark, (dataset, architecture, loss), loop, images_per_step, steps)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_training_throughput_dataloader_with_two_workers(benchmark, training_loop, scale, results, architecture):
    """The DataLoader loop with two worker processes converting samples (the PyTorch DCGAN example's setting)."""
    trainer, spec = training_loop("dataloader", architecture, "ns", "mnist", num_workers=2)
    benchmark.group = f"train {architecture}/ns/mnist"
    steps = scale.steps_for(architecture)
    benchmark.extra_info.update(loop="dataloader-2-workers", batch_size=spec.batch_size, num_workers=2)
    trainer.drive(lambda run: benchmark.pedantic(run, args=(steps,), rounds=scale.rounds,
                                                 warmup_rounds=scale.warmup_rounds))
    results.add_training(benchmark, ("mnist", architecture, "ns"), "dataloader-2-workers", spec.batch_size, steps)


PACKED_CELLS = [pytest.param(dataset, architecture, runs, id=f"{runs}x{architecture}-ns-{dataset}")
                for dataset, architecture in (("mnist", "mlp"), ("mnist", "dcgan"), ("cifar10-shape", "dcgan"))
                for runs in PACK_SIZES]


@pytest.mark.parametrize("dataset,architecture,runs", PACKED_CELLS)
def test_packed_training_throughput(benchmark, training_loop, scale, results, dataset, architecture, runs):
    """Runs of one config with different seeds trained as one stacked model, against the same
    runs trained one at a time by ganbench's loop (measured above, in the same session)."""
    trainer, spec = training_loop(f"packed-{runs}", architecture, "ns", dataset)
    benchmark.group = f"train {architecture}/ns/{dataset}"
    steps = scale.steps_for(architecture)
    benchmark.extra_info.update(loop=f"packed-{runs}", runs=runs, batch_size=spec.batch_size)
    trainer.drive(lambda run: benchmark.pedantic(run, args=(steps,), rounds=scale.rounds,
                                                 warmup_rounds=scale.warmup_rounds))
    results.add_packed(benchmark, (dataset, architecture, "ns"), runs, spec.batch_size, steps)


def test_minimal_loop_trains_exactly_what_ganbench_trains(training_loop):
    """The overhead ratio compares equal work: both loops end with bitwise identical weights."""
    ganbench, _ = training_loop("ganbench", "dcgan", "wgan-gp", "mnist", dcgan_width=8)
    ganbench.drive(lambda steps: steps(3))  # then a stop request: the run checkpoints where it is
    state = ganbench.checkpoint()
    # Built after ganbench's run, as its penalty draws from the global RNG both loops seed.
    minimal, _ = training_loop("minimal", "dcgan", "wgan-gp", "mnist", dcgan_width=8)
    minimal.drive(lambda steps: steps(3))
    assert state["step"] == 3
    for name, model in (("generator", minimal.generator), ("discriminator", minimal.discriminator)):
        expected = model.state_dict()
        assert state[name].keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(state[name][key], value), f"{name}.{key} differs"
