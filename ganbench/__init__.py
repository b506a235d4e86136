"""ganbench: a plugin-based benchmarking harness for GANs.

The public API for plugin authors: ``hookimpl`` to mark hook implementations, and the
plugin object types to subclass. See ``docs/plugins.md``.
"""

import pluggy

from ganbench.api import (Architecture, DataRequest, Dataset, GaussianMixture, LoadedData, Loss, Metric,
                          MetricResult)
from ganbench.errors import UserError

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("ganbench")
"""Decorator marking a function as the implementation of a ganbench hook."""

__all__ = ["Architecture", "DataRequest", "Dataset", "GaussianMixture", "LoadedData", "Loss", "Metric", "MetricResult",
           "UserError", "hookimpl", "__version__"]
