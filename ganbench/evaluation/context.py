"""What a metric plugin is given (:class:`EvaluationContext`), and running the chosen metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch

from ganbench.api import Dataset, DataShape, LoadedData, Metric, MetricResult
from ganbench.planning.latent import draw_latent

Shared = TypeVar("Shared")

EVALUATION_NOISE_SEED_OFFSET = 1_000_003
"""Evaluation noise is seeded from the run's seed plus this, so every evaluation of a run
draws the same latent vectors and is independent of the training noise stream."""


@dataclass
class EvaluationContext:
    """Everything a :class:`ganbench.Metric` may use. Passed to ``Metric.evaluate``."""

    generator: torch.nn.Module
    """The trained generator (in eval mode while metrics run)."""
    latent_dim: int
    data_shape: DataShape
    dataset_name: str
    dataset: Dataset
    real: LoadedData
    """The real data of the run's split, on the CPU, pixels in [-1, 1]."""
    settings: Mapping[str, Any]
    """Resolved evaluation settings: every selected metric's ``defaults`` with the user's
    overrides (e.g. ``fid_samples``)."""
    device: torch.device
    cache_dir: Path
    """ganbench's cache root; metrics keep real-data statistics and extractors below it."""
    seed: int
    step: int
    run_dir: Path | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    """The run's resolved hyperparameters (architecture, loss, dataset and loop); may be
    empty outside a run, in which case a dataset's own ``defaults`` apply."""
    training: Mapping[str, Any] = field(default_factory=dict)
    """Figures measured by the training loop, for the ``throughput`` metric: floats
    ``images_per_second`` and ``steps_per_second`` (steady state, warm-up and evaluation
    excluded), ``peak_memory_mb``, ``train_seconds``, ``evaluation_seconds`` (total of the
    earlier evaluations of this run), and the string ``device_name``."""
    load_split: Callable[[str], LoadedData] | None = None
    """Loads another split of the run's dataset (FID/KID's ``reference_split``); None when
    only ``real`` is available, which is then used whatever split it is."""
    should_stop: Callable[[], bool] = lambda: False
    """True once the user asked the run to stop (Ctrl-C, SIGTERM). A long metric checks it
    between batches and returns early or raises :class:`ganbench.errors.Interrupted`."""
    memo: dict[Any, Any] = field(default_factory=dict)
    """What metrics share within one evaluation (the chosen extractor, generated features,
    loaded splits), filled through :meth:`shared`. :func:`run_metrics` empties it before and after."""
    evaluation_started: float | None = None
    """``time.perf_counter()`` when :func:`run_metrics` began, or None outside it."""

    def reference_data(self, split: str) -> LoadedData:
        """The real data of ``split``: ``real`` when it is that split, else loaded once per evaluation.

        The returned ``split`` field says which split it really is (a dataset may fall back).
        """
        if split in ("", self.real.split) or self.load_split is None:
            return self.real
        load_split = self.load_split
        return self.shared(("split", split), lambda: load_split(split))

    def shared(self, key: tuple[Any, ...], compute: Callable[[], Shared]) -> Shared:
        """Return ``compute()``, computed once per evaluation under ``key`` and then shared.

        Metrics of one evaluation that need the same thing (an extractor, the features of
        the same generated samples) call this with the same key and compute it once. Start
        the key with a word naming what it holds (``("generated-features", ...)``).
        """
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    @torch.no_grad()
    def generate(self, count: int, batch_size: int = 500) -> torch.Tensor:
        """Return ``count`` generated samples on the CPU (float32, ``[count, *data_shape]``).

        The latent vectors depend only on the run's seed, so two evaluations of one
        generator give identical samples; they come from the distribution the run trained
        on (the hyperparameter ``latent``).
        """
        rng = torch.Generator(device="cpu").manual_seed(self.seed + EVALUATION_NOISE_SEED_OFFSET)
        was_training = self.generator.training
        self.generator.eval()
        chunks = []
        try:
            for start in range(0, count, batch_size):
                size = min(batch_size, count - start)
                noise = draw_latent(size, self.latent_dim, self.params.get("latent", "normal"), rng).to(self.device)
                chunks.append(self.generator(noise).float().cpu())
        finally:
            self.generator.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, *self.data_shape)


@dataclass(frozen=True)
class Evaluation:
    """What :func:`run_metrics` returns: one row of figures and how each was measured."""

    values: dict[str, float]
    """Every metric's columns, plus ``evaluation_seconds`` (wall seconds of this evaluation)."""
    protocols: dict[str, dict[str, str]]
    """Column -> its metric's protocol, with ``metric`` (the metric's name) added; one entry
    per metric column (``evaluation_seconds`` has none)."""


    def protocol_columns(self) -> dict[str, str]:
        """Each column's protocol as one ``key=value; ...`` string (for results.csv)."""
        return {column: "; ".join(f"{key}={value}" for key, value in sorted(described.items()))
                for column, described in self.protocols.items()}


def run_metrics(metrics: Mapping[str, Metric], context: EvaluationContext) -> Evaluation:
    """Evaluate every metric in order; return their columns, protocols and ``evaluation_seconds``."""
    started = time.perf_counter()
    values: dict[str, float] = {}
    protocols: dict[str, dict[str, str]] = {}
    context.memo.clear()
    context.evaluation_started = started
    try:
        for metric in metrics.values():
            result = metric.evaluate(context)
            if not isinstance(result, MetricResult):
                raise TypeError(f"metric {metric.name!r} returned {type(result).__name__}; "
                                "evaluate() must return a ganbench.api.MetricResult")
            protocol = {"metric": metric.name, **{key: str(value) for key, value in result.protocol.items()}}
            for column, value in result.values.items():
                if column in values:
                    raise ValueError(f"metrics {protocols[column]['metric']!r} and {metric.name!r} both "
                                     f"produce the column {column!r}")
                values[column] = float(value)
                protocols[column] = protocol
    finally:
        context.memo.clear()
        context.evaluation_started = None
    values["evaluation_seconds"] = time.perf_counter() - started
    return Evaluation(values, protocols)
