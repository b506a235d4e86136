"""Every extension point of ganbench. These docstrings are the reference for plugin authors.

A plugin is a module (or object) with functions decorated by ``ganbench.hookimpl`` and
named after the hooks below, published under the ``ganbench`` entry-point group::

    [project.entry-points.ganbench]
    my_loss = "ganbench_my_loss"

Each ``register_*`` hook receives a ``register`` callback. Call it once per object you
provide (zero, one or many); ganbench validates each object and records which plugin
registered it, so two plugins that claim one name are reported, never silently merged.
"""

import pluggy

hookspec = pluggy.HookspecMarker("ganbench")


@hookspec
def register_architectures(register):
    """Register generator/discriminator architectures.

    :param register: call ``register(MyArchitecture())`` with an instance of a
        :class:`ganbench.Architecture` subclass, once for each architecture.

    Called once when the plugin registry is built.
    """


@hookspec
def register_losses(register):
    """Register adversarial losses.

    :param register: call ``register(MyLoss())`` with an instance of a
        :class:`ganbench.Loss` subclass, once for each loss.

    Called once when the plugin registry is built.
    """


@hookspec
def register_datasets(register):
    """Register datasets.

    :param register: call ``register(MyDataset())`` with an instance of a
        :class:`ganbench.Dataset` subclass, once for each dataset.

    Called once when the plugin registry is built.
    """


@hookspec
def register_metrics(register):
    """Register evaluation metrics.

    :param register: call ``register(MyMetric())`` with an instance of a
        :class:`ganbench.Metric` subclass, once for each metric.

    Called once when the plugin registry is built.
    """


@hookspec
def register_commands(cli):
    """Add subcommands to the ``ganbench`` command line.

    :param cli: the root ``click.Group``; decorate new commands with ``@cli.command()``.

    Called once when the ``ganbench`` command starts, after the built-in commands exist.
    """
