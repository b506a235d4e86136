"""The built-in losses, found through the real plugin registry and checked against
independent float64 formulas."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ganbench.registry import get_registry

BUILTIN_LOSSES = ["minimax", "ns", "lsgan", "wgan", "wgan-gp", "hinge"]
LOOP_KEYS = ("optimizer", "lr_g", "lr_d", "beta1", "beta2", "n_critic")

REAL = [-2.5, -0.3, 0.0, 0.7, 3.1]
FAKE = [-4.0, -1.2, 0.4, 1.5, 2.2]


def get_loss(name):
    return get_registry().get("loss", name)


def params_of(name):
    return dict(get_loss(name).defaults)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# Written with sigmoid and log in float64 numpy, independently of the softplus forms.
REFERENCE = {
    "minimax": (lambda r, f: -np.mean(np.log(sigmoid(r))) - np.mean(np.log(1 - sigmoid(f))),
                lambda f: np.mean(np.log(1 - sigmoid(f)))),
    "ns": (lambda r, f: -np.mean(np.log(sigmoid(r))) - np.mean(np.log(1 - sigmoid(f))),
           lambda f: -np.mean(np.log(sigmoid(f)))),
    "lsgan": (lambda r, f: np.mean((r - 1) ** 2) / 2 + np.mean(f ** 2) / 2,
              lambda f: np.mean((f - 1) ** 2) / 2),
    "wgan": (lambda r, f: np.mean(f) - np.mean(r), lambda f: -np.mean(f)),
    "wgan-gp": (lambda r, f: np.mean(f) - np.mean(r), lambda f: -np.mean(f)),
    "hinge": (lambda r, f: np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f)),
              lambda f: -np.mean(f)),
}


def test_every_builtin_loss_is_registered_by_the_ganbench_distribution():
    registry = get_registry()
    for name in BUILTIN_LOSSES:
        entry = registry.entry("loss", name)
        assert entry.plugin.distribution == "ganbench"
        assert entry.plugin.error is None
        assert entry.obj.__doc__ and entry.obj.description


@pytest.mark.parametrize("name", BUILTIN_LOSSES)
def test_loss_declares_every_key_the_training_loop_reads(name):
    defaults = get_loss(name).defaults
    assert set(LOOP_KEYS) <= set(defaults)
    assert defaults["optimizer"] in ("adam", "rmsprop")
    assert type(defaults["n_critic"]) is int and defaults["n_critic"] >= 1
    for key in ("lr_g", "lr_d"):
        assert isinstance(defaults[key], float) and 0 < defaults[key] < 1
    for key in ("beta1", "beta2"):
        assert isinstance(defaults[key], float) and 0 <= defaults[key] < 1


def test_loss_defaults_are_the_papers_recommendations():
    assert params_of("wgan") == {"optimizer": "rmsprop", "lr_g": 5e-5, "lr_d": 5e-5,
                                 "beta1": 0.5, "beta2": 0.999, "n_critic": 5, "clip_value": 0.01}
    gp = params_of("wgan-gp")
    assert (gp["optimizer"], gp["lr_d"], gp["beta1"], gp["beta2"], gp["n_critic"], gp["gp_weight"]) == \
        ("adam", 1e-4, 0.0, 0.9, 5, 10.0)
    for name in ("minimax", "ns", "lsgan", "hinge"):
        d = params_of(name)
        assert (d["optimizer"], d["lr_g"], d["lr_d"], d["beta1"], d["beta2"], d["n_critic"]) == \
            ("adam", 2e-4, 2e-4, 0.5, 0.999, 1)


@pytest.mark.parametrize("name", BUILTIN_LOSSES)
def test_losses_match_independent_float64_formula(name):
    loss = get_loss(name)
    real, fake = torch.tensor(REAL, dtype=torch.float64), torch.tensor(FAKE, dtype=torch.float64)
    reference_d, reference_g = REFERENCE[name]
    expected_d = reference_d(np.array(REAL), np.array(FAKE))
    expected_g = reference_g(np.array(FAKE))
    d_loss = loss.discriminator_loss(real, fake, params_of(name))
    g_loss = loss.generator_loss(fake, None, params_of(name))
    assert d_loss.shape == () and g_loss.shape == ()
    assert d_loss.item() == pytest.approx(expected_d, rel=1e-12, abs=1e-12)
    assert g_loss.item() == pytest.approx(expected_g, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", BUILTIN_LOSSES)
def test_batch_by_one_logits_give_the_same_loss_as_flat_logits(name):
    loss = get_loss(name)
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    params = params_of(name)
    assert torch.equal(loss.discriminator_loss(real[:, None], fake[:, None], params),
                       loss.discriminator_loss(real, fake, params))
    assert torch.equal(loss.generator_loss(fake[:, None], None, params),
                       loss.generator_loss(fake, None, params))


def test_logits_with_several_values_per_sample_are_rejected():
    with pytest.raises(ValueError, match="one logit per sample"):
        get_loss("ns").generator_loss(torch.zeros(4, 2), None, params_of("ns"))


@pytest.mark.parametrize("name", BUILTIN_LOSSES)
def test_losses_and_gradients_stay_finite_on_extreme_logits(name):
    loss = get_loss(name)
    params = params_of(name)
    real = torch.tensor([-100.0, 100.0, -100.0], requires_grad=True)
    fake = torch.tensor([100.0, -100.0, 100.0], requires_grad=True)
    d_loss = loss.discriminator_loss(real, fake, params)
    g_loss = loss.generator_loss(fake, None, params)
    d_grads = torch.autograd.grad(d_loss, (real, fake))
    g_grad, = torch.autograd.grad(g_loss, fake)
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert all(torch.isfinite(g).all() for g in (*d_grads, g_grad))


def test_logistic_losses_are_exact_where_naive_log_sigmoid_underflows():
    # softplus(-(-100)) = 100 + log1p(e^-100); log(sigmoid(-100)) in float32 is -inf.
    real = torch.tensor([-100.0])
    fake = torch.tensor([100.0])
    d_loss = get_loss("ns").discriminator_loss(real, fake, params_of("ns"))
    assert d_loss.item() == pytest.approx(200.0, rel=1e-6)
    assert get_loss("minimax").generator_loss(fake, None, params_of("minimax")).item() == \
        pytest.approx(-100.0, rel=1e-6)


def test_minimax_generator_saturates_where_ns_does_not():
    rejected = -20.0  # D is sure this fake is fake
    minimax_fake = torch.tensor([rejected], requires_grad=True)
    ns_fake = torch.tensor([rejected], requires_grad=True)
    get_loss("minimax").generator_loss(minimax_fake, None, params_of("minimax")).backward()
    get_loss("ns").generator_loss(ns_fake, None, params_of("ns")).backward()
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l); d/dl -log sigmoid(l) = -sigmoid(-l)
    assert minimax_fake.grad.item() == pytest.approx(-sigmoid(rejected), rel=1e-4)
    assert abs(minimax_fake.grad.item()) < 1e-8
    assert ns_fake.grad.item() == pytest.approx(-1.0, abs=1e-8)


@pytest.mark.parametrize("name", ["minimax", "ns", "lsgan", "wgan", "hinge"])
def test_losses_without_penalty_return_none(name):
    real, fake = torch.randn(4, 3), torch.randn(4, 3)
    assert get_loss(name).penalty(nn.Linear(3, 1), real, fake, params_of(name)) is None


class LinearCritic(nn.Module):
    """D(x) = w . flatten(x) + b, whose input gradient is w everywhere."""

    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return x.flatten(1) @ self.weight.flatten() + self.bias


def test_gradient_penalty_of_linear_critic_is_gp_weight_times_squared_norm_gap():
    torch.manual_seed(0)
    weight = torch.randn(2, 3, 3)
    critic = LinearCritic(weight)
    real, fake = torch.randn(8, 2, 3, 3), torch.randn(8, 2, 3, 3)
    params = params_of("wgan-gp") | {"gp_weight": 7.0}
    penalty = get_loss("wgan-gp").penalty(critic, real, fake, params)
    norm = math.sqrt(float((weight.double() ** 2).sum()))  # over every non-batch dimension
    assert penalty.shape == ()
    assert penalty.item() == pytest.approx(7.0 * (norm - 1) ** 2, rel=1e-5)
    # create_graph: the penalty trains D. d/dw 7 (||w|| - 1)^2 = 14 (||w|| - 1) w / ||w||
    penalty.backward()
    expected_grad = 14.0 * (norm - 1) * weight.double() / norm
    assert torch.allclose(critic.weight.grad.double(), expected_grad, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_interpolates_with_one_eps_per_sample():
    seen = []

    class QuadraticCritic(nn.Module):
        """D(x) = ||x||^2 / 2, whose input gradient is x itself."""

        def forward(self, x):
            seen.append(x.detach().clone())
            return 0.5 * x.flatten(1).square().sum(dim=1, keepdim=True)

    real, fake = torch.ones(64, 1, 4, 4), torch.zeros(64, 1, 4, 4)
    penalty = get_loss("wgan-gp").penalty(QuadraticCritic(), real, fake, params_of("wgan-gp"))
    interpolates, = seen
    eps = interpolates.flatten(1)[:, 0]
    # With real = 1 and fake = 0 every entry of a sample equals its eps.
    assert torch.equal(interpolates, eps.view(64, 1, 1, 1).expand(64, 1, 4, 4))
    assert ((eps >= 0) & (eps <= 1)).all()
    assert eps.unique().numel() > 32
    norms = eps.double() * 4  # ||x_hat|| over 16 entries equal to eps
    assert penalty.item() == pytest.approx(10.0 * float(((norms - 1) ** 2).mean()), rel=1e-5)


def test_gradient_penalty_sends_no_gradient_to_the_generator():
    generator_output = torch.randn(4, 3, requires_grad=True)
    fake = generator_output * 2
    penalty = get_loss("wgan-gp").penalty(nn.Linear(3, 1), torch.randn(4, 3), fake, params_of("wgan-gp"))
    penalty.backward()
    assert generator_output.grad is None


def test_gradient_penalty_is_float32_under_bfloat16_autocast():
    torch.manual_seed(1)
    weight = torch.randn(1, 6)
    critic = LinearCritic(weight)
    real = torch.randn(5, 6).bfloat16()
    fake = torch.randn(5, 6).bfloat16()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        penalty = get_loss("wgan-gp").penalty(critic, real, fake, params_of("wgan-gp"))
    norm = float(weight.double().norm())
    assert penalty.dtype == torch.float32
    assert penalty.item() == pytest.approx(10.0 * (norm - 1) ** 2, rel=1e-5)


def test_wgan_clips_every_discriminator_parameter_after_its_step():
    discriminator = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    with torch.no_grad():
        for parameter in discriminator.parameters():
            parameter.copy_(torch.linspace(-1, 1, parameter.numel()).view_as(parameter))
    before = [p.detach().clone() for p in discriminator.parameters()]
    get_loss("wgan").after_discriminator_step(discriminator, params_of("wgan") | {"clip_value": 0.05})
    for old, new in zip(before, discriminator.parameters()):
        assert torch.equal(new, old.clamp(-0.05, 0.05))
        assert new.abs().max() <= 0.05


@pytest.mark.parametrize("name", ["minimax", "ns", "lsgan", "wgan-gp", "hinge"])
def test_losses_other_than_wgan_leave_the_discriminator_untouched(name):
    discriminator = nn.Linear(4, 1)
    with torch.no_grad():
        discriminator.weight.fill_(3.0)
    get_loss(name).after_discriminator_step(discriminator, params_of(name))
    assert torch.equal(discriminator.weight, torch.full((1, 4), 3.0))
