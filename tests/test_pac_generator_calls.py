"""``pac_generator_calls=per_position``: each place in a pack from its own generator call (PacGAN's code).

The step's generated packs are compared with packs assembled here by hand from copies of the
generator taken before the step, called once per place on the noise the step drew; BatchNorm
in training mode makes the one-call default give other samples, so the comparison can fail.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from ganbench.errors import UserError
from ganbench.ledger.runs import run_directory
from ganbench.planning.grid import GridSpec, expand
from ganbench.registry import build_registry
from ganbench.training.loop import Alone, generate_packs, train_step
from ganbench.training.packing import Stacked
from ganbench.training.state import RunState

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def spec(registry, seed=0, **sets):
    grid = GridSpec(archs=["pacgan"], losses=["ns"], datasets=["ring8"], seeds=[seed], steps=4, batch_size=8,
                    metrics=["none"], sample_every=1000, checkpoint_every=1000, log_every=2,
                    sets={"pacgan_width_g": [24], "pacgan_width_d": [16], "pacgan_maxout_pieces": [3],
                          "num_points": [300], **{key: [value] for key, value in sets.items()}})
    run, = expand(grid, registry)
    return run


def run_state(registry, tmp_path, cache_dir, seed=0, **sets) -> RunState:
    run = spec(registry, seed, **sets)
    return RunState(run, run_directory(tmp_path, run), registry=registry, device=CPU, data_dir=None,
                    cache_dir=cache_dir)


def by_hand(generator, noise, pac):
    """Sample k of the batch: place k % pac of pack k // pac, from the call on that place's noise."""
    places = [generator(noise[place::pac]) for place in range(pac)]  # one BatchNorm batch per place
    samples = torch.empty(noise.shape[0], places[0].shape[1])
    for place, output in enumerate(places):
        samples[place::pac] = output
    return samples


@pytest.mark.parametrize("pac", [2, 3])
def test_each_place_of_the_packs_comes_from_its_own_generator_call(tmp_path, cache_dir, registry, pac):
    run = run_state(registry, tmp_path, cache_dir, pac=pac, pac_generator_calls="per_position")
    train_step(run)
    before = copy.deepcopy(run.generator)
    calls: list[torch.Tensor] = []
    hook = run.generator.register_forward_pre_hook(lambda _, args: calls.append(args[0]))
    noise = run.noise()
    with torch.no_grad():
        samples = generate_packs(Alone(run), noise)
        expected = by_hand(before, noise, pac)
    hook.remove()
    assert [call.shape[0] for call in calls] == [8] * pac
    torch.testing.assert_close(samples, expected)
    with torch.no_grad():
        one_call = before(noise)  # the default: one BatchNorm batch of 8 * pac
    assert not torch.allclose(one_call, expected, atol=1e-4)


def test_one_call_is_the_default_and_keeps_run_ids(tmp_path, cache_dir, registry):
    run = run_state(registry, tmp_path, cache_dir, pac=2)
    calls = []
    run.generator.register_forward_pre_hook(lambda _, args: calls.append(args[0].shape[0]))
    train_step(run)
    assert calls == [16, 16]  # the D step's fake batch, then the G step's
    plain = spec(registry, pac=2)
    without = dataclasses.replace(plain, params={k: v for k, v in plain.params.items() if k != "pac_generator_calls"})
    assert without.run_id == plain.run_id != spec(registry, pac=2, pac_generator_calls="per_position").run_id
    with pytest.raises(UserError, match="pac_generator_calls='each': choose one of one, per_position"):
        spec(registry, pac=2, pac_generator_calls="each")


def test_stacked_runs_generate_their_packs_as_each_does_alone(tmp_path, cache_dir, registry):
    runs = [run_state(registry, tmp_path / "stacked", cache_dir, seed=seed, pac=2, pac_generator_calls="per_position")
            for seed in (0, 1)]
    group = Stacked(runs)
    noise = group.noise()
    with torch.no_grad():
        stacked = generate_packs(group, noise)
        alone = [by_hand(run.generator, noise[i], 2) for i, run in enumerate(runs)]
    for i in range(2):
        torch.testing.assert_close(stacked[i], alone[i], rtol=1e-5, atol=1e-6)
