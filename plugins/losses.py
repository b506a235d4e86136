"""The built-in adversarial losses: minimax, ns, lsgan, wgan, wgan-gp and hinge.

Every loss reads raw discriminator logits (``[batch]`` or ``[batch, 1]``) and returns a
scalar to minimise. Each declares the optimiser settings its paper recommends, so a run
that names only the loss trains the way its authors did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganbench import Loss, hookimpl

# Radford et al. 2016 (DCGAN), the usual settings for the logistic losses.
_DCGAN_SETTINGS = {"optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
                   "n_critic": 1}


def _per_sample(logits: torch.Tensor) -> torch.Tensor:
    """Return ``logits`` as shape ``[batch]``, accepting the ``[batch, 1]`` some discriminators emit."""
    if logits.dim() == 2 and logits.shape[1] == 1:
        return logits.squeeze(1)
    if logits.dim() != 1:
        raise ValueError("a discriminator must return one logit per sample, shape [batch] or "
                         f"[batch, 1]; got shape {tuple(logits.shape)}")
    return logits


def _logistic_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``-[log D(x) + log(1 - D(G(z)))]``, using ``-log sigmoid(l) = softplus(-l)``."""
    return F.softplus(-_per_sample(real_logits)).mean() + F.softplus(_per_sample(fake_logits)).mean()


class MinimaxLoss(Loss):
    """The original saturating minimax game (Goodfellow et al. 2014, "Generative Adversarial Nets").

    D maximises ``log D(x) + log(1 - D(G(z)))`` and G minimises ``log(1 - D(G(z)))``. This
    is the game as written, not the "-log D trick": its generator gradient vanishes where
    D confidently rejects the fakes, which is what the paper warns about. StudioGAN's
    "vanilla" and Mimicry's "gan" losses are the non-saturating game; here that is ``ns``.
    """

    name = "minimax"
    description = "Saturating minimax GAN of Goodfellow et al. 2014 (G minimises log(1 - D(G(z))))"
    defaults = dict(_DCGAN_SETTINGS)

    def discriminator_loss(self, real_logits, fake_logits, params):
        return _logistic_discriminator_loss(real_logits, fake_logits)

    def generator_loss(self, fake_logits, real_logits, params):
        # log(1 - sigmoid(l)) = -softplus(l)
        return (-F.softplus(_per_sample(fake_logits))).mean()


class NonSaturatingLoss(Loss):
    """The non-saturating GAN (Goodfellow et al. 2014, section 3).

    D is trained as in the minimax game; G maximises ``log D(G(z))`` instead, which has
    the same fixed point but strong gradients early in training.
    """

    name = "ns"
    description = "Non-saturating GAN of Goodfellow et al. 2014 (G maximises log D(G(z)))"
    defaults = dict(_DCGAN_SETTINGS)

    def discriminator_loss(self, real_logits, fake_logits, params):
        return _logistic_discriminator_loss(real_logits, fake_logits)

    def generator_loss(self, fake_logits, real_logits, params):
        return F.softplus(-_per_sample(fake_logits)).mean()


class LeastSquaresLoss(Loss):
    """Least squares GAN (Mao et al. 2017, "Least Squares Generative Adversarial Networks").

    Uses the 0-1 coding ``a=0, b=c=1`` on the raw discriminator output: D pushes real
    outputs to 1 and fakes to 0, G pushes fakes to 1.
    """

    name = "lsgan"
    description = "Least squares GAN of Mao et al. 2017 (0-1 coding on the raw D output)"
    defaults = {"optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
                "n_critic": 1}

    def discriminator_loss(self, real_logits, fake_logits, params):
        real, fake = _per_sample(real_logits), _per_sample(fake_logits)
        return 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()

    def generator_loss(self, fake_logits, real_logits, params):
        return 0.5 * (_per_sample(fake_logits) - 1).square().mean()


class _WassersteinLoss(Loss):
    """The critic and generator losses shared by ``wgan`` and ``wgan-gp``."""

    def discriminator_loss(self, real_logits, fake_logits, params):
        return _per_sample(fake_logits).mean() - _per_sample(real_logits).mean()

    def generator_loss(self, fake_logits, real_logits, params):
        return -_per_sample(fake_logits).mean()


class WassersteinLoss(_WassersteinLoss):
    """Wasserstein GAN with weight clipping (Arjovsky et al. 2017, "Wasserstein GAN").

    After every critic step each discriminator parameter is clamped to
    ``[-clip_value, clip_value]``, a crude way to keep the critic Lipschitz.
    """

    name = "wgan"
    description = "Wasserstein GAN of Arjovsky et al. 2017 (weight clipping)"
    # The paper's Algorithm 1. Adam's betas are unused with RMSProp; set for a uniform namespace.
    defaults = {"optimizer": "rmsprop", "lr_g": 5e-5, "lr_d": 5e-5, "beta1": 0.5, "beta2": 0.999,
                "n_critic": 5, "clip_value": 0.01}

    def after_discriminator_step(self, discriminator, params):
        clip_value = float(params["clip_value"])
        with torch.no_grad():
            for parameter in discriminator.parameters():
                parameter.clamp_(-clip_value, clip_value)


class WassersteinGradientPenaltyLoss(_WassersteinLoss):
    """Wasserstein GAN with gradient penalty (Gulrajani et al. 2017, "Improved Training of
    Wasserstein GANs").

    The penalty ``gp_weight * mean((||grad D(x_hat)||_2 - 1)^2)`` is taken at
    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U[0, 1]`` per sample. The
    penalty is per sample, so the critic should not use batch normalisation (the paper
    recommends layer normalisation or none); architectures should honour that.
    """

    name = "wgan-gp"
    description = "Wasserstein GAN with gradient penalty of Gulrajani et al. 2017"
    # The paper's Algorithm 1.
    defaults = {"optimizer": "adam", "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9,
                "n_critic": 5, "gp_weight": 10.0}

    def penalty(self, discriminator, real, fake, params):
        # Under mixed precision the squared gradient norm can overflow or lose all
        # precision in half floats, so the whole penalty is computed in float32.
        with torch.autocast(device_type=real.device.type, enabled=False):
            real = real.detach().float()
            fake = fake.detach().float()
            eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
            eps = torch.rand(eps_shape, device=real.device, dtype=torch.float32)
            interpolates = (eps * real + (1 - eps) * fake).requires_grad_(True)
            scores = _per_sample(discriminator(interpolates)).float()
            # create_graph so the penalty itself is differentiated when D steps.
            (gradients,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
            gradient_norms = gradients.flatten(start_dim=1).norm(2, dim=1)
            return float(params["gp_weight"]) * (gradient_norms - 1).square().mean()


class HingeLoss(Loss):
    """Hinge loss (Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018, "Spectral
    Normalization for Generative Adversarial Networks").

    D: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``; G: ``-mean(D(G(z)))``.
    """

    name = "hinge"
    description = "Hinge loss of Lim & Ye 2017, as used by SN-GAN (Miyato et al. 2018)"
    # SN-GAN's setting C (Miyato et al. 2018, Table 1), used for its standard CNN; its
    # ResNet runs used lr 2e-4, betas (0, 0.9) and n_critic 5 instead.
    defaults = {"optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
                "n_critic": 1}

    def discriminator_loss(self, real_logits, fake_logits, params):
        real, fake = _per_sample(real_logits), _per_sample(fake_logits)
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def generator_loss(self, fake_logits, real_logits, params):
        return -_per_sample(fake_logits).mean()


@hookimpl
def register_losses(register):
    for loss in (MinimaxLoss(), NonSaturatingLoss(), LeastSquaresLoss(), WassersteinLoss(),
                 WassersteinGradientPenaltyLoss(), HingeLoss()):
        register(loss)
