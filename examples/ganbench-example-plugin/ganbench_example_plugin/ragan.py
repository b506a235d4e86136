"""The relativistic average GAN loss (Jolicoeur-Martineau 2018, "The relativistic
discriminator: a key element missing from standard GAN", ICLR 2019), standard-GAN form (RaSGAN)."""

from __future__ import annotations

from typing import Sequence

from ganbench import Loss


class RelativisticAverageLoss(Loss):
    """RaSGAN: D estimates how much more realistic a real sample is than the average fake.

    With ``C`` the raw discriminator output and ``softplus(x) = -log sigmoid(-x)``::

        L_D = E_real[softplus(-(C(x_r) - E_fake C(x_f)))] + E_fake[softplus(C(x_f) - E_real C(x_r))]
        L_G = E_fake[softplus(-(C(x_f) - E_real C(x_r)))] + E_real[softplus(C(x_r) - E_fake C(x_f))]

    The generator's loss contains ``C(x_r)``, so the loss sets
    ``generator_needs_real_logits`` and ganbench passes ``D(real)`` to it. The defaults are
    the paper's setup for its standard CNN experiments (Adam, lr 2e-4, betas (0.5, 0.999),
    one D step per G step).
    """

    name = "ragan"
    description = "Relativistic average GAN (RaSGAN) of Jolicoeur-Martineau 2018"
    defaults = {"optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
                "n_critic": 1}
    generator_needs_real_logits = True

    FORMULA = (
        "RaGAN (Jolicoeur-Martineau 2018), with C = D's raw output:\n"
        "  L_D = E_real[softplus(-(C(x_r) - E_fake C(x_f)))] + E_fake[softplus(C(x_f) - E_real C(x_r))]\n"
        "  L_G = E_fake[softplus(-(C(x_f) - E_real C(x_r)))] + E_real[softplus(C(x_r) - E_fake C(x_f))]"
    )

    def discriminator_loss(self, real_logits, fake_logits, params):
        return _relativistic(real_logits, fake_logits)

    def generator_loss(self, fake_logits, real_logits, params):
        # The same game with the roles swapped: fakes should look more real than the reals.
        return _relativistic(fake_logits, real_logits)


def _relativistic(favoured, other):
    """``E[softplus(-(favoured - mean(other)))] + E[softplus(other - mean(favoured))]``."""
    import torch.nn.functional as F

    favoured, other = favoured.flatten(), other.flatten()
    return (F.softplus(-(favoured - other.mean())).mean()
            + F.softplus(other - favoured.mean()).mean())


def ragan_losses(real_logits: Sequence[float], fake_logits: Sequence[float]) -> tuple[float, float]:
    """``(discriminator loss, generator loss)`` for lists of logits, as plain floats."""
    import torch

    real = torch.tensor(real_logits, dtype=torch.float64)
    fake = torch.tensor(fake_logits, dtype=torch.float64)
    loss = RelativisticAverageLoss()
    return (loss.discriminator_loss(real, fake, loss.defaults).item(),
            loss.generator_loss(fake, real, loss.defaults).item())
