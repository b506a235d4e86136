"""The fast path: off, it trains exactly like the plain float32 loop; on, it stays finite and close.

Runs are small DCGANs (width 8) on the real MNIST test split, through ``execute_run``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from ganbench.api import DataRequest
from ganbench.errors import UserError
from ganbench.execution.recording import execute_run
from ganbench.ledger.storage import read_json, read_jsonl
from ganbench.planning import defaults
from ganbench.planning.grid import GridSpec, expand
from ganbench.registry import build_registry
from ganbench.training import fastpath

pytestmark = pytest.mark.usefixtures("single_thread")

LOSSES = ("minimax", "ns", "lsgan", "wgan", "wgan-gp", "hinge")


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def small_dcgan(registry, loss: str = "ns", steps: int = 3, **sets):
    grid = GridSpec(archs=["dcgan"], losses=[loss], datasets=["mnist"], seeds=[0], steps=steps, batch_size=16,
                    metrics=["none"], checkpoint_every=1000, sample_every=1000, log_every=1,
                    sets={"dcgan_width": [8], "latent_dim": [16], **{k: [v] for k, v in sets.items()}})
    run, = expand(grid, registry)
    return run


def train(spec, out: Path, registry, data_dir: Path, cache_dir: Path):
    outcome = execute_run(spec, out, registry=registry, device=torch.device("cpu"), data_dir=str(data_dir),
                          cache_dir=cache_dir)
    assert outcome.status == "done", outcome.error
    directory = out / "runs" / spec.run_id
    return torch.load(directory / "checkpoint.pt", map_location="cpu", weights_only=True), directory


def plain_fp32_loop(spec, registry, data_dir: Path, cache_dir: Path) -> tuple[dict, dict]:
    """The loop as it was before the fast path (float32, torch's default optimiser kernels), written
    out independently: ``(generator state, discriminator state)`` after ``spec.steps`` steps."""
    params = spec.params
    architecture, loss = registry.get("architecture", spec.architecture), registry.get("loss", spec.loss)
    request = DataRequest(data_dir=str(data_dir), cache_dir=str(cache_dir / "data"), split=spec.split,
                          seed=spec.seed, params=params)
    real = registry.get("dataset", spec.dataset).load(request).samples
    torch.manual_seed(spec.seed)
    generator, discriminator = architecture.build(tuple(real.shape[1:]), params)
    adam = dict(betas=(params["beta1"], params["beta2"]))
    optimizer_class = torch.optim.RMSprop if params["optimizer"] == "rmsprop" else torch.optim.Adam
    options = {} if params["optimizer"] == "rmsprop" else adam
    optimizer_g = optimizer_class(generator.parameters(), lr=params["lr_g"], **options)
    optimizer_d = optimizer_class(discriminator.parameters(), lr=params["lr_d"], **options)
    data_rng = torch.Generator().manual_seed(spec.seed + 1)
    noise_rng = torch.Generator().manual_seed(spec.seed + 2)
    batch, latent_dim = spec.batch_size, params["latent_dim"]
    for _ in range(spec.steps):
        for _ in range(params["n_critic"]):
            real_x = real[torch.randint(len(real), (batch,), generator=data_rng)]
            with torch.no_grad():
                fake_x = generator(torch.randn(batch, latent_dim, generator=noise_rng))
            d_loss = loss.discriminator_loss(discriminator(real_x).flatten(), discriminator(fake_x).flatten(), params)
            penalty = loss.penalty(discriminator, real_x, fake_x, params)
            optimizer_d.zero_grad()
            (d_loss if penalty is None else d_loss + penalty).backward()
            optimizer_d.step()
            loss.after_discriminator_step(discriminator, params)
        discriminator.requires_grad_(False)
        real_logits = discriminator(real_x).flatten().detach() if loss.generator_needs_real_logits else None
        fake = generator(torch.randn(batch, latent_dim, generator=noise_rng))
        g_loss = loss.generator_loss(discriminator(fake).flatten(), real_logits, params)
        optimizer_g.zero_grad()
        g_loss.backward()
        optimizer_g.step()
        discriminator.requires_grad_(True)
    return generator.state_dict(), discriminator.state_dict()


def assert_states(actual: dict, expected: dict, exact: bool) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        if exact:
            assert torch.equal(actual[key], expected[key]), f"{key} differs"
        else:
            torch.testing.assert_close(actual[key], expected[key], rtol=1e-3, atol=1e-4, msg=f"{key} differs")


@pytest.mark.parametrize("loss", ["ns", "wgan-gp", "wgan"])
def test_fast_path_off_trains_exactly_like_the_plain_fp32_loop(loss, tmp_path, registry, shared_data_dir,
                                                               cache_dir):
    spec = small_dcgan(registry, loss, **defaults.FAST_PATH_OFF)
    state, directory = train(spec, tmp_path, registry, shared_data_dir, cache_dir)
    generator, discriminator = plain_fp32_loop(spec, registry, shared_data_dir, cache_dir)
    assert_states(state["generator"], generator, exact=True)
    assert_states(state["discriminator"], discriminator, exact=True)
    assert read_json(directory / "status.json")["protocol"]["training_precision"] == "fp32"


def test_foreach_optimiser_kernels_give_exactly_the_numbers_of_the_per_parameter_loop_on_cpu(
        tmp_path, registry, shared_data_dir, cache_dir):
    spec = small_dcgan(registry, "wgan", **{**defaults.FAST_PATH_OFF, "fused_optimizers": True})  # RMSprop
    state, directory = train(spec, tmp_path, registry, shared_data_dir, cache_dir)
    generator, discriminator = plain_fp32_loop(spec, registry, shared_data_dir, cache_dir)
    assert_states(state["generator"], generator, exact=True)
    assert_states(state["discriminator"], discriminator, exact=True)
    assert read_json(directory / "status.json")["protocol"]["training_optimizer_kernels"] == "foreach=True"


def test_fused_adam_on_cpu_stays_within_rounding_of_the_per_parameter_loop(tmp_path, registry, shared_data_dir,
                                                                            cache_dir):
    spec = small_dcgan(registry, "wgan-gp", **{**defaults.FAST_PATH_OFF, "fused_optimizers": True})  # Adam
    state, directory = train(spec, tmp_path, registry, shared_data_dir, cache_dir)
    generator, discriminator = plain_fp32_loop(spec, registry, shared_data_dir, cache_dir)
    assert_states(state["generator"], generator, exact=False)
    assert_states(state["discriminator"], discriminator, exact=False)
    assert read_json(directory / "status.json")["protocol"]["training_optimizer_kernels"] == "fused=True"


def test_default_fast_path_on_this_cpu_stays_within_rounding_of_the_plain_loop(tmp_path, registry, shared_data_dir,
                                                                                cache_dir, monkeypatch):
    # Pin "auto" to float32, as on a CPU without native bfloat16, so only the layout and the
    # optimiser kernels differ from the plain loop.
    monkeypatch.setattr(fastpath, "native_bfloat16", lambda device: False)
    spec = small_dcgan(registry, "ns")
    assert spec.params["precision"] == "auto" and spec.params["channels_last"] is True
    state, directory = train(spec, tmp_path, registry, shared_data_dir, cache_dir)
    generator, discriminator = plain_fp32_loop(spec, registry, shared_data_dir, cache_dir)
    assert_states(state["generator"], generator, exact=False)
    assert_states(state["discriminator"], discriminator, exact=False)
    protocol = read_json(directory / "status.json")["protocol"]
    assert (protocol["training_precision"], protocol["training_channels_last"]) == ("fp32", "on")


@pytest.mark.parametrize("loss", LOSSES)
def test_bf16_autocast_training_stays_finite_for_every_loss(loss, tmp_path, registry, shared_data_dir, cache_dir):
    bf16 = small_dcgan(registry, loss, steps=4, precision="bf16")
    fp32 = small_dcgan(registry, loss, steps=4, precision="fp32")
    state, directory = train(bf16, tmp_path, registry, shared_data_dir, cache_dir)
    reference, _ = train(fp32, tmp_path, registry, shared_data_dir, cache_dir)

    records, _ = read_jsonl(directory / "metrics.jsonl")
    losses = [[r["d_loss"], r["g_loss"], r["penalty"]] for r in records if r["kind"] == "train"]
    assert len(losses) == 4 and torch.isfinite(torch.tensor(losses)).all()
    assert all(torch.isfinite(value).all() for value in state["generator"].values() if value.is_floating_point())
    assert all(value.dtype in (torch.float32, torch.int64) for value in state["generator"].values()), \
        "weights stay float32 under autocast"
    assert any(not torch.equal(state["generator"][key], reference["generator"][key]) for key in reference["generator"])
    assert read_json(directory / "status.json")["protocol"]["training_precision"].startswith("bf16 autocast")


def test_wgan_gp_penalty_under_autocast_is_computed_in_float32(registry):
    loss = registry.get("loss", "wgan-gp")
    torch.manual_seed(0)
    discriminator = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.LeakyReLU(0.2), torch.nn.Flatten(),
                                        torch.nn.Linear(4 * 26 * 26, 1))
    real, fake = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28).bfloat16()
    with torch.random.fork_rng():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = loss.penalty(discriminator, real, fake, loss.defaults)
    plain = loss.penalty(discriminator, real, fake.float(), loss.defaults)
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, plain)


@pytest.mark.parametrize("data_shape,spectral_norm", [((1, 28, 28), False), ((3, 32, 32), False),
                                                      ((3, 32, 32), True)])
def test_channels_last_gives_the_same_outputs_and_gradients_within_tolerance(data_shape, spectral_norm, registry):
    params = {**registry.get("architecture", "dcgan").defaults, "dcgan_width": 16,
              "dcgan_spectral_norm": spectral_norm}
    torch.manual_seed(0)
    generator, discriminator = registry.get("architecture", "dcgan").build(data_shape, params)
    plain = (copy.deepcopy(generator), copy.deepcopy(discriminator))
    fast = fastpath.resolve({**defaults.FAST_PATH_OFF, "channels_last": True}, torch.device("cpu"))
    generator, discriminator = fast.prepare_modules(generator, discriminator)
    assert next(p for p in generator.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)

    noise = torch.randn(16, params["latent_dim"])
    real = fast.prepare_data(torch.rand(16, *data_shape) * 2 - 1, discriminator)
    assert real.is_contiguous(memory_format=torch.channels_last)
    outputs = []
    for g, d in (plain, (generator, discriminator)):
        images = g(noise)
        logits = d(images) + d(real)
        logits.sum().backward()
        outputs.append((images.detach(), logits.detach(), [p.grad for p in (*g.parameters(), *d.parameters())]))
    (images, logits, grads), (images_cl, logits_cl, grads_cl) = outputs
    torch.testing.assert_close(images_cl, images, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits_cl, logits, rtol=1e-4, atol=1e-4)
    for grad_cl, grad in zip(grads_cl, grads):
        torch.testing.assert_close(grad_cl, grad, rtol=1e-3, atol=1e-4)


def test_models_without_convolutions_keep_their_layout(registry):
    params = registry.get("architecture", "mlp").defaults
    generator, discriminator = registry.get("architecture", "mlp").build((1, 28, 28), params)
    fast = fastpath.resolve(defaults.FAST_PATH_DEFAULTS, torch.device("cpu"))
    assert fast.prepare_modules(generator, discriminator) == (generator, discriminator)
    assert fast.prepare_data(torch.zeros(4, 1, 28, 28), discriminator).is_contiguous()


def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(fastpath, "native_bfloat16", lambda device: True)
    assert fastpath.resolve({"precision": "auto"}, cpu).autocast_dtype == torch.bfloat16
    monkeypatch.setattr(fastpath, "native_bfloat16", lambda device: False)
    assert fastpath.resolve({"precision": "auto"}, cpu).autocast_dtype is None
    assert fastpath.resolve({"precision": "bf16"}, cpu).autocast_dtype == torch.bfloat16
    assert fastpath.resolve({"precision": "fp32"}, cpu).autocast_dtype is None


def test_auto_precision_keeps_points_in_float32_even_where_bf16_is_native(monkeypatch):
    monkeypatch.setattr(fastpath, "native_bfloat16", lambda device: True)
    assert fastpath.resolve({"precision": "auto"}, torch.device("cpu"), images=False).autocast_dtype is None
    assert fastpath.resolve({"precision": "bf16"}, torch.device("cpu"), images=False).autocast_dtype == torch.bfloat16


@pytest.mark.parametrize("dataset", ["ring8", "grid25"])
def test_default_fast_path_on_2d_points_trains_bit_for_bit_like_the_fast_path_off(dataset, tmp_path, registry,
                                                                                   cache_dir, monkeypatch):
    # Even on a device with native bfloat16: points stay float32 and the mlp has no
    # convolutions, so only the optimiser kernels differ from the fast path off. Adam's fused
    # kernel is equal within rounding, and its mode coverage was checked unchanged
    # (docs/performance.md); with torch's per-parameter Adam the default is bit for bit the same.
    monkeypatch.setattr(fastpath, "native_bfloat16", lambda device: True)
    monkeypatch.setattr(fastpath.FastPath, "optimizer_options", lambda self, optimizer: {})
    grid = GridSpec(archs=["mlp"], losses=["ns"], datasets=[dataset], seeds=[0], steps=5, batch_size=32,
                    metrics=["none"], checkpoint_every=1000, sample_every=1000,
                    sets={"mlp_width": [32], "num_points": [2000]})
    default, = expand(grid, registry)
    off, = expand(dataclasses.replace(grid, sets={**grid.sets, **{k: [v] for k, v in defaults.FAST_PATH_OFF.items()}}),
                  registry)
    states = [train(spec, tmp_path, registry, tmp_path, cache_dir)[0] for spec in (default, off)]
    assert_states(states[0]["generator"], states[1]["generator"], exact=True)
    assert_states(states[0]["discriminator"], states[1]["discriminator"], exact=True)


def test_settings_a_run_lacks_are_off_so_old_runs_resume_unchanged():
    fast = fastpath.resolve({"optimizer": "adam"}, torch.device("cpu"))
    assert fast == fastpath.resolve(defaults.FAST_PATH_OFF, torch.device("cpu"))
    assert fast.autocast_dtype is None and not fast.channels_last and fast.optimizer_options("adam") == {}


def test_compile_leaves_the_discriminator_alone_when_the_loss_differentiates_it_twice():
    settings = {**defaults.FAST_PATH_DEFAULTS, "compile": True}
    assert fastpath.resolve(settings, torch.device("cpu")).compile_discriminator
    with_penalty = fastpath.resolve(settings, torch.device("cpu"), double_backward=True)
    assert with_penalty.compile and not with_penalty.compile_discriminator
    assert with_penalty.protocol("adam")["training_compile"].startswith("generator only")


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(UserError, match="choose one of auto, fp32, bf16"):
        fastpath.resolve({"precision": "fp16"}, torch.device("cpu"))


def test_precision_is_part_of_the_run_id(registry):
    assert small_dcgan(registry, precision="fp32").run_id != small_dcgan(registry, precision="bf16").run_id
