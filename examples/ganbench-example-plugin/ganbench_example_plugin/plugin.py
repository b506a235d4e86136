"""The hook implementations: the module that the ``ganbench`` entry point names.

Keep this module cheap to import (``ganbench plugins`` imports every plugin): torch is
imported inside the methods that compute, not here.
"""

from __future__ import annotations

import click

from ganbench import hookimpl

from ganbench_example_plugin.ragan import RelativisticAverageLoss, ragan_losses
from ganbench_example_plugin.resmlp import ResidualMLP


@hookimpl
def register_losses(register):
    register(RelativisticAverageLoss())


@hookimpl
def register_architectures(register):
    register(ResidualMLP())


@hookimpl
def register_commands(cli):
    # Prefix commands with the plugin's name so they cannot clash with ganbench's own.
    @cli.command(name="example-formula")
    @click.option("--real", help="D's logits on real samples, comma-separated (e.g. 1.5,0.2).")
    @click.option("--fake", help="D's logits on generated samples, comma-separated (e.g. -0.3,0.4).")
    def example_formula(real: str | None, fake: str | None) -> None:
        """Print the RaGAN losses; with --real and --fake, also their values."""
        click.echo(RelativisticAverageLoss.FORMULA)
        if real is None and fake is None:
            return
        if not real or not fake:
            raise click.UsageError("give both --real and --fake, or neither.")
        try:
            real_logits = [float(value) for value in real.split(",")]
            fake_logits = [float(value) for value in fake.split(",")]
        except ValueError:
            raise click.UsageError("--real and --fake take numbers separated by commas, like 1.5,0.2.") from None
        discriminator_loss, generator_loss = ragan_losses(real_logits, fake_logits)
        click.echo(f"discriminator_loss = {discriminator_loss:.6f}")
        click.echo(f"generator_loss = {generator_loss:.6f}")
