"""The PacGAN toy step's faster path: the maxout's index-routed backward and the optimiser kernels.

The maxout takes ``max(dim).values`` instead of ``amax`` (docs/performance.md, "The PacGAN
toy step"): these tests hold it to ``amax``'s outputs and gradients bit for bit, and a short
``pacgan`` run to the weights it trains with ``amax``. The optimiser tests pin which kernels
the loop builds, as ``ganbench.fastpath`` documents: Adam's fused kernel on the CPU,
RMSprop's foreach kernels, torch's choice with the fast path off.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
import torch

from ganbench.ledger.runs import run_directory
from ganbench.planning.grid import GridSpec, expand
from ganbench.registry import build_registry
from ganbench.training import fastpath
from ganbench.training.loop import train_step
from ganbench.training.state import RunState
from ganbench_plugins.pacgan_networks import Maxout

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def amax_maxout(layer: Maxout, x: torch.Tensor) -> torch.Tensor:
    """The maxout as it was written before: ``amax`` over each group of pieces."""
    return layer.linear(x).unflatten(-1, (layer.outputs, layer.pieces)).amax(dim=-1)


@pytest.mark.parametrize("shape", [(100, 2, 200, 5), (7, 200, 200, 5), (3, 4, 3, 2)])
def test_maxout_gives_amaxs_outputs_and_gradients_bit_for_bit(shape):
    batch, inputs, outputs, pieces = shape
    torch.manual_seed(0)
    layer = Maxout(inputs, outputs, pieces)
    x = torch.randn(batch, inputs, requires_grad=True)
    upstream = torch.randn(batch, outputs)
    results = []
    for forward in (layer, lambda x: amax_maxout(layer, x)):
        out = forward(x)
        results.append((out, *torch.autograd.grad(out, (x, layer.linear.weight, layer.linear.bias), upstream)))
    for new, reference in zip(*results):
        assert torch.equal(new, reference)


def test_maxout_gives_a_tied_group_all_of_the_gradient_through_one_piece():
    # Exact ties (which trained float32 weights do not produce) are where max and amax
    # differ: amax splits the gradient, max routes it to one piece. Both are subgradients.
    layer = Maxout(1, 1, 3)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[1.0], [1.0], [-1.0]]))
        layer.linear.bias.zero_()
    x = torch.ones(1, 1)
    layer(x).sum().backward()
    assert layer.linear.bias.grad.tolist() in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    layer.zero_grad()
    amax_maxout(layer, x).sum().backward()
    assert layer.linear.bias.grad.tolist() == [0.5, 0.5, 0.0]


def toy_run(registry, tmp_path: Path, name: str, **sets) -> RunState:
    grid = GridSpec(archs=["pacgan"], losses=["ns"], datasets=["ring8"], seeds=[0], steps=1000, batch_size=16,
                    metrics=["none"], sets={"pacgan_width_g": [32], "pacgan_width_d": [24], "num_points": [2000],
                                            "lr": [1e-3], **{key: [value] for key, value in sets.items()}})
    spec, = expand(grid, registry)
    return RunState(spec, run_directory(tmp_path / name, spec), registry=registry, device=CPU, data_dir=None,
                    cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("pac", [1, 2])
def test_a_pacgan_run_trains_the_same_weights_as_with_the_amax_maxout(registry, tmp_path, pac):
    runs = {name: toy_run(registry, tmp_path, name, pac=pac) for name in ("max", "amax")}
    layers = [module for module in runs["amax"].discriminator.modules() if isinstance(module, Maxout)]
    assert len(layers) == 3
    for layer in layers:  # this run's maxouts as they were written before
        layer.forward = functools.partial(amax_maxout, layer)
    untrained = runs["max"].discriminator[0].linear.weight.detach().clone()
    for run in runs.values():
        for _ in range(30):
            train_step(run)
    assert not torch.equal(runs["max"].discriminator[0].linear.weight, untrained)
    for part in ("generator", "discriminator"):
        new, reference = (getattr(runs[name], part).state_dict() for name in ("max", "amax"))
        assert new.keys() == reference.keys()
        for key in new:
            assert torch.equal(new[key], reference[key]), f"{part} {key} differs"


@pytest.mark.parametrize(("optimizer", "fused_optimizers", "expected"), [
    ("adam", True, {"fused": True}), ("rmsprop", True, {"foreach": True}),
    ("adam", False, {}), ("rmsprop", False, {})])
def test_the_loop_builds_the_optimiser_kernels_the_fast_path_documents(registry, tmp_path, optimizer,
                                                                        fused_optimizers, expected):
    run = toy_run(registry, tmp_path, "run", optimizer=optimizer, fused_optimizers=fused_optimizers)
    assert run.fast.optimizer_options(optimizer) == expected
    for built in (run.optimizer_g, run.optimizer_d):
        assert type(built).__name__ == {"adam": "Adam", "rmsprop": "RMSprop"}[optimizer]
        for key in ("fused", "foreach"):
            assert built.defaults.get(key) == expected.get(key), key


def test_fused_adam_on_the_cpu_is_within_rounding_of_torchs_default_adam(registry, tmp_path):
    runs = [toy_run(registry, tmp_path, name, fused_optimizers=fused) for name, fused in (("fused", True),
                                                                                           ("default", False))]
    assert runs[0].optimizer_d.defaults["fused"] and not runs[1].optimizer_d.defaults["fused"]
    for run in runs:
        for _ in range(10):
            train_step(run)
    for part in ("generator", "discriminator"):
        fused, default = (getattr(run, part).state_dict() for run in runs)
        for key in fused:
            torch.testing.assert_close(fused[key], default[key], rtol=1e-4, atol=1e-6)


def test_the_toy_preset_trains_with_the_fused_adam(registry):
    from ganbench.planning.grid import load_preset

    specs = expand(dataclasses.replace(load_preset("pacgan-table1"), datasets=["ring8"], seeds=[0]), registry)
    assert [spec.params["pac"] for spec in specs] == [1, 2, 3, 4]
    for spec in specs:
        assert spec.params["optimizer"] == "adam"
        assert fastpath.resolve(spec.params, CPU, images=False).optimizer_options("adam") == {"fused": True}


def blocks_adam(parameter: torch.Tensor, gradients: list[torch.Tensor], learning_rate: float, beta1: float,
                beta2: float = 0.001, epsilon: float = 1e-8, decay_factor: float = 1 - 1e-8) -> torch.Tensor:
    """Blocks' ``Adam.compute_step`` (blocks/algorithms/__init__.py), the optimiser of PacGAN's 2D code,
    written out: its ``beta1``/``beta2`` weigh the *new* gradient (the Adam paper's first notation)."""
    parameter, mean, variance = parameter.clone(), torch.zeros_like(parameter), torch.zeros_like(parameter)
    for time, gradient in enumerate(gradients):
        t1 = time + 1
        rate = learning_rate * (1 - (1 - beta2) ** t1) ** 0.5 / (1 - (1 - beta1) ** t1)
        beta_1t = 1 - (1 - beta1) * decay_factor ** (t1 - 1)
        mean = beta_1t * gradient + (1 - beta_1t) * mean
        variance = beta2 * gradient ** 2 + (1 - beta2) * variance
        parameter -= rate * mean / (variance.sqrt() + epsilon)
    return parameter


def test_the_toy_preset_is_their_blocks_optimiser_and_update_in_torchs_terms(registry):
    from ganbench.planning.grid import load_preset

    specs = expand(dataclasses.replace(load_preset("pacgan-table1"), seeds=[0]), registry)
    assert len(specs) == 8
    gradients = [torch.randn(50, generator=torch.Generator().manual_seed(step)) for step in range(30)]
    start = torch.randn(50, generator=torch.Generator().manual_seed(99))
    theirs = blocks_adam(start, gradients, learning_rate=1e-4, beta1=0.8)  # their config.py's values
    for spec in specs:
        params = spec.params
        assert (params["updates"], params["pac_generator_calls"]) == ("simultaneous", "per_position")
        weight = start.clone().requires_grad_(True)
        adam = torch.optim.Adam([weight], lr=params["lr_g"], betas=(params["beta1"], params["beta2"]))
        for gradient in gradients:
            weight.grad = gradient.clone()
            adam.step()
        torch.testing.assert_close(weight.detach(), theirs, rtol=1e-5, atol=1e-8)
    # The literal reading (torch's beta1 = 0.8) is another optimiser: the check can fail.
    literal = blocks_adam(start, gradients, learning_rate=1e-4, beta1=0.2)
    assert not torch.allclose(literal, theirs, rtol=1e-5, atol=1e-8)
