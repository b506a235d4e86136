"""``updates=simultaneous``: D and G updated from one forward pass (ALI's algorithm, PacGAN's 2D code).

The gradients a step leaves on each network are compared with gradients computed here by hand
with torch.autograd.grad on copies of the networks taken before the step, on the batches the
step drew; the default (alternating) is checked to give other gradients, so the comparison can fail.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ganbench.errors import UserError
from ganbench.ledger.runs import run_directory
from ganbench.planning.grid import GridSpec, expand
from ganbench.planning.pac import pack_samples
from ganbench.planning.spec import RunSpec
from ganbench.registry import build_registry
from ganbench.training.loop import gan_step, train_step
from ganbench.training.packing import Stacked
from ganbench.training.state import RunState

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def spec(registry, loss="ns", seed=0, **sets) -> RunSpec:
    grid = GridSpec(archs=["pacgan"], losses=[loss], datasets=["ring8"], seeds=[seed], steps=4, batch_size=16,
                    metrics=["none"], sample_every=1000, checkpoint_every=1000, log_every=2,
                    sets={"pacgan_width_g": [24], "pacgan_width_d": [16], "pacgan_maxout_pieces": [3],
                          "num_points": [300], **{key: [value] for key, value in sets.items()}})
    run, = expand(grid, registry)
    return run


def run_state(registry, tmp_path, cache_dir, loss="ns", seed=0, **sets) -> RunState:
    run = spec(registry, loss, seed, **sets)
    return RunState(run, run_directory(tmp_path, run), registry=registry, device=CPU, data_dir=None,
                    cache_dir=cache_dir)


def inputs_seen(module: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    return seen


def gradients(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def by_hand(generator, discriminator, real, noise, pac):
    """The non-saturating GAN's D and G gradients, both at the given weights, from one generator call."""
    fake = pack_samples(generator(noise), pac, 1)
    real_logits, fake_logits = discriminator(real).flatten(), discriminator(fake).flatten()
    d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    g_loss = F.softplus(-fake_logits).mean()
    d_grads = torch.autograd.grad(d_loss, list(discriminator.parameters()), retain_graph=True)
    g_grads = torch.autograd.grad(g_loss, list(generator.parameters()))
    return list(d_grads), list(g_grads)


@pytest.mark.parametrize("pac", [1, 2])
def test_both_networks_get_their_gradients_at_the_same_weights_from_one_generator_call(tmp_path, cache_dir, registry,
                                                                                      pac):
    run = run_state(registry, tmp_path, cache_dir, updates="simultaneous", pac=pac)
    train_step(run)  # BatchNorm statistics and Adam moments away from their first-step values
    generator_before, discriminator_before = copy.deepcopy(run.generator), copy.deepcopy(run.discriminator)
    noise_seen, d_inputs = inputs_seen(run.generator), inputs_seen(run.discriminator)
    d_weights = [p.detach().clone() for p in run.discriminator.parameters()]
    train_step(run)
    noise, = noise_seen  # one generator call per step
    assert noise.shape == (16 * pac, 2)
    real = d_inputs[0]
    assert real.shape == (16, 2 * pac) and len(d_inputs) == 2
    d_grads, g_grads = by_hand(generator_before, discriminator_before, real, noise, pac)
    for step_grad, hand in zip(gradients(run.discriminator) + gradients(run.generator), d_grads + g_grads):
        torch.testing.assert_close(step_grad, hand, rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(w, p) for w, p in zip(d_weights, run.discriminator.parameters())), "D stepped"
    for state in (run.optimizer_d.state, run.optimizer_g.state):
        assert {s["step"].item() for s in state.values()} == {2.0}


def test_alternating_updates_give_the_generator_other_gradients(tmp_path, cache_dir, registry):
    run = run_state(registry, tmp_path, cache_dir)
    train_step(run)
    generator_before, discriminator_before = copy.deepcopy(run.generator), copy.deepcopy(run.discriminator)
    noise_seen, d_inputs = inputs_seen(run.generator), inputs_seen(run.discriminator)
    train_step(run)
    assert len(noise_seen) == 2  # D's fake batch, then G's fresh noise
    _, g_grads = by_hand(generator_before, discriminator_before, d_inputs[0], noise_seen[1], 1)
    assert any(not torch.allclose(step, hand, rtol=1e-3, atol=1e-6)
               for step, hand in zip(gradients(run.generator), g_grads))


@pytest.mark.parametrize("loss", ["wgan-gp", "wgan", "hinge", "lsgan"])
def test_every_built_in_loss_trains_with_simultaneous_updates(tmp_path, cache_dir, registry, loss):
    run = run_state(registry, tmp_path, cache_dir, loss, updates="simultaneous", pac=2, n_critic=1)
    for _ in range(3):
        d_loss, g_loss, penalty = train_step(run)
        assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
        assert (penalty is not None) == (loss == "wgan-gp")
    if loss == "wgan":  # weight clipping after D's update
        clip = run.params["clip_value"]
        assert all(p.abs().max() <= clip for p in run.discriminator.parameters())


def test_runs_stacked_into_one_model_train_as_they_do_alone(tmp_path, cache_dir, registry):
    alone = [run_state(registry, tmp_path / "alone", cache_dir, seed=seed, updates="simultaneous") for seed in (0, 1)]
    stacked = [run_state(registry, tmp_path / "stacked", cache_dir, seed=seed, updates="simultaneous")
               for seed in (0, 1)]
    group = Stacked(stacked)
    for _ in range(3):
        for run in alone:
            train_step(run)
        gan_step(group)
    for one, other in zip(alone, stacked):
        for a, b in zip(list(one.generator.parameters()) + list(one.discriminator.parameters()),
                        list(other.generator.parameters()) + list(other.discriminator.parameters())):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_default_keeps_run_ids_and_a_bad_setting_is_one_line(registry):
    run = spec(registry)
    assert run.params["updates"] == "alternating"
    without = dataclasses.replace(run, params={k: v for k, v in run.params.items() if k != "updates"})
    assert without.run_id == run.run_id
    assert spec(registry, updates="simultaneous").run_id != run.run_id
    with pytest.raises(UserError, match="updates='together': choose one of alternating, simultaneous"):
        spec(registry, updates="together")
    with pytest.raises(UserError, match="needs n_critic=1 and g_steps=1"):
        spec(registry, updates="simultaneous", n_critic=5)
