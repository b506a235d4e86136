"""Conformance kit: check that a distribution's plugins keep the contracts of :mod:`ganbench.api`.

For plugin authors, with the plugin installed (``pip install -e .``)::

    from ganbench.testing import check_distribution
    check_distribution("ganbench-my-loss")   # raises ConformanceError listing every failure

or one pytest test per registered object, in the plugin's test suite::

    from ganbench.testing import conformance_tests
    test_conformance = conformance_tests("ganbench-my-loss")

The distribution is found the way ``ganbench`` finds it, through its entry points. Every
check has a name, and a failure names the plugin (``distribution:entry point``), the
object and the check. The checks are quick: each architecture is built at every standard
data shape it supports and run on a batch of four; losses see small hand-made logits;
datasets are loaded (the test split) with the network blocked and an empty cache, so
nothing is downloaded and a dataset whose files are absent is skipped with its own message.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ganbench.api import PLUGIN_KINDS, Architecture, DataRequest, Dataset, LoadedData, Loss, Metric, validate
from ganbench.errors import UserError
from ganbench.registry.loader import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, PluginInfo, canonical_name

if TYPE_CHECKING:
    import torch

    from ganbench.registry import Entry, Registry

STANDARD_SHAPES: tuple[tuple[int, ...], ...] = ((2,), (1, 28, 28), (3, 32, 32), (3, 64, 64))
"""Data shapes every architecture is tried at: 2D points, MNIST, CIFAR-10 and 64x64 RGB."""
BATCH = 4
"""Samples per forward pass in the architecture checks."""
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check of one object."""

    plugin: str
    """``distribution:entry point`` of the plugin that registered the object."""
    subject: str
    """What was checked: ``loss 'ragan'``, or ``distribution`` for the package-level checks."""
    check: str
    """The check's name, with the data shape where it matters: ``generator-output (3, 32, 32)``."""
    outcome: str
    """``passed``, ``failed`` or ``skipped``."""
    detail: str = ""
    """Why it failed or was skipped, in a sentence."""

    def __str__(self) -> str:
        text = f"{self.plugin} {self.subject}: check {self.check} {self.outcome}"
        return f"{text}: {self.detail}" if self.detail else text


class ConformanceError(AssertionError):
    """Raised when a plugin breaks its contract; the message lists every failed check."""


@dataclass
class ConformanceReport:
    """Every check run on a distribution (or one object)."""

    distribution: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if result.outcome == FAILED]

    @property
    def skipped(self) -> list[CheckResult]:
        return [result for result in self.results if result.outcome == SKIPPED]

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.failures

    def summary(self) -> str:
        """One line of counts, then one line per failed or skipped check."""
        counts = {outcome: sum(r.outcome == outcome for r in self.results) for outcome in (PASSED, FAILED, SKIPPED)}
        lines = [f"{self.distribution}: {counts[FAILED]} failed, {counts[PASSED]} passed, "
                 f"{counts[SKIPPED]} skipped"]
        lines += [f"  {result}" for result in self.failures + self.skipped]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`ConformanceError` naming every failed check, if any failed."""
        if self.failures:
            lines = [f"{self.distribution}: {len(self.failures)} of {len(self.results)} conformance checks failed:"]
            lines += [f"  {result}" for result in self.failures]
            raise ConformanceError("\n".join(lines))


def check_distribution(distribution: str, *, shapes: Sequence[tuple[int, ...]] = STANDARD_SHAPES,
                       data_dir: str | None = None, load_datasets: bool = True,
                       raise_on_failure: bool = True) -> ConformanceReport:
    """Check every architecture, loss, dataset and metric that ``distribution`` registers.

    :param distribution: the installed distribution's name (``ganbench-my-loss``;
        ``ganbench`` checks the built-ins).
    :param shapes: data shapes to try each architecture at; unsupported ones are skipped.
    :param data_dir: where datasets look for files; default ``GANBENCH_DATA_DIR``.
    :param load_datasets: also load each dataset (never downloading); False checks
        only ``data_shape`` and metadata.
    :param raise_on_failure: raise :class:`ConformanceError` when a check fails, instead
        of only returning the report.
    """
    kit = _Kit(distribution, shapes=shapes, data_dir=data_dir, load_datasets=load_datasets)
    report = ConformanceReport(kit.distribution)
    for subject in kit.subjects():
        report.results += kit.check(subject)
    if raise_on_failure:
        report.raise_for_failures()
    return report


def check_object(obj: Any, *, shapes: Sequence[tuple[int, ...]] = STANDARD_SHAPES,
                 data_dir: str | None = None, load_datasets: bool = True,
                 raise_on_failure: bool = True) -> ConformanceReport:
    """Check one plugin object that is not installed yet (``check_object(MyLoss())``).

    Runs the same per-object checks as :func:`check_distribution`, except uniqueness of the
    name, which needs the installed plugins.
    """
    kind = next((kind.name for kind in PLUGIN_KINDS.values() if isinstance(obj, kind.base)), None)
    if kind is None:
        raise TypeError(f"{obj!r} is not an instance of an Architecture, Loss, Dataset or Metric subclass")
    info = PluginInfo(name="(unregistered)", distribution="(unregistered)", version="",
                      module=type(obj).__module__)
    kit = _Kit(None, shapes=shapes, data_dir=data_dir, load_datasets=load_datasets)
    report = ConformanceReport(info.name, kit.check_entry(kind, obj, info))
    if raise_on_failure:
        report.raise_for_failures()
    return report


def conformance_tests(distribution: str, **options: Any) -> Callable[[str], None]:
    """Return a pytest test function, parametrised with one case per object of ``distribution``.

    Assign it to a ``test_``-prefixed name in a test module::

        test_conformance = conformance_tests("ganbench-my-loss")

    The cases are ``distribution`` (packaging and loading) and ``KIND:NAME`` for each
    registered object. ``options`` are those of :func:`check_distribution`.
    """
    import pytest

    kit = _Kit(distribution, **options)

    @pytest.mark.parametrize("subject", kit.subjects())
    def test_conformance(subject: str) -> None:
        report = ConformanceReport(kit.distribution, kit.check(subject))
        report.raise_for_failures()

    test_conformance.__doc__ = f"The plugins of {distribution} keep ganbench's contracts."
    return test_conformance


# --- the checks ------------------------------------------------------------------------


class _Failed(Exception):
    """A check found a broken contract; the message says what and how to fix it."""


class _Skipped(Exception):
    """A check does not apply; the message says why."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _Failed(message)


class _Kit:
    """The registry of installed plugins and the options, shared by every check."""

    def __init__(self, distribution: str | None, *, shapes: Sequence[tuple[int, ...]] = STANDARD_SHAPES,
                 data_dir: str | None = None, load_datasets: bool = True):
        self.distribution = canonical_name(distribution) if distribution else "(unregistered)"
        self.shapes = [tuple(shape) for shape in shapes]
        self.data_dir = data_dir or os.environ.get("GANBENCH_DATA_DIR") or None
        self.load_datasets = load_datasets
        self._registry: Registry | None = None
        self._loaded: dict[str, LoadedData | Exception] = {}

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from ganbench.registry import build_registry

            self._registry = build_registry()
        return self._registry

    def entries(self) -> list[Entry]:
        return [entry for kind in PLUGIN_KINDS for entry in self.registry.all(kind)
                if entry.plugin.distribution == self.distribution]

    def subjects(self) -> list[str]:
        return ["distribution"] + [f"{entry.kind}:{entry.name}" for entry in self.entries()]

    def check(self, subject: str) -> list[CheckResult]:
        if subject == "distribution":
            return self.check_packaging()
        kind, _, name = subject.partition(":")
        return [result for entry in self.entries() if (entry.kind, entry.name) == (kind, name)
                for result in self.check_entry(kind, entry.obj, entry.plugin)]

    def check_entry(self, kind: str, obj: Any, plugin: PluginInfo) -> list[CheckResult]:
        results = _Results(plugin.name, f"{kind} '{getattr(obj, 'name', '?')}'")
        results.run("metadata", _check_metadata, kind, obj)
        if plugin.distribution != "(unregistered)":
            results.run("name", self._check_unique, kind, obj)
        self._checks_of_kind()[kind](obj, results)
        return results.results

    def _checks_of_kind(self) -> dict[str, Callable[[Any, _Results], None]]:
        """The checks of each kind in :data:`ganbench.api.PLUGIN_KINDS`."""
        return {"architecture": self._check_architecture, "loss": _check_loss, "dataset": self._check_dataset,
                "metric": self._check_metric}

    # -- the distribution ----------------------------------------------------------------

    def check_packaging(self) -> list[CheckResult]:
        plugins = [info for info in self.registry.plugins if info.distribution == self.distribution]
        results = _Results(self.distribution, "distribution")
        results.run("installed", self._check_installed, plugins)
        for info in plugins:
            results.plugin = info.name
            results.run("loads", _check_loaded, info)
            if info.distribution != BUILTIN_DISTRIBUTION:
                results.run("entry-point-name", _check_entry_point_name, info)
        if plugins:
            results.plugin = self.distribution
            if all(info.error is None for info in plugins):
                results.run("provides-something", self._check_provides, plugins)
            results.run("declares-ganbench-versions", self._check_requirement)
        return results.results

    def _check_installed(self, plugins: list[PluginInfo]) -> None:
        if plugins:
            return
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            raise _Failed(f"distribution {self.distribution} is not installed in this environment; "
                          f"install it with `pip install -e .` in its folder") from None
        if not [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]:
            raise _Failed(f"distribution {self.distribution} has no entry point in the '{ENTRY_POINT_GROUP}' "
                          f"group; add a [project.entry-points.{ENTRY_POINT_GROUP}] table to pyproject.toml "
                          f"and reinstall")
        raise _Failed(f"distribution {self.distribution} is installed but ganbench did not load it; "
                      f"GANBENCH_LOAD_PLUGINS={os.environ.get('GANBENCH_LOAD_PLUGINS')!r} leaves it out")

    def _check_provides(self, plugins: list[PluginInfo]) -> None:
        adds_commands = any("register_commands" in info.hooks for info in plugins)
        _require(bool(self.entries()) or adds_commands,
                 "registers no architecture, loss, dataset or metric and adds no command; "
                 "check that its register_* functions are decorated with @ganbench.hookimpl")

    def _check_requirement(self) -> None:
        if self.distribution == BUILTIN_DISTRIBUTION:
            raise _Skipped("this is ganbench itself")
        from packaging.requirements import Requirement

        requirements = [Requirement(line) for line in metadata.distribution(self.distribution).requires or []]
        ganbench = [r for r in requirements if canonical_name(r.name) == BUILTIN_DISTRIBUTION and r.marker is None]
        _require(bool(ganbench), "does not depend on ganbench; add the versions it supports to "
                                 "[project] dependencies, e.g. \"ganbench>=0.1,<0.2\"")
        _require(bool(ganbench[0].specifier), f"depends on ganbench without saying which versions "
                                              f"({ganbench[0]}); write e.g. \"ganbench>=0.1,<0.2\"")

    def _check_unique(self, kind: str, obj: Any) -> None:
        entries = self.registry.entries[kind].get(obj.name, [])
        if len(entries) > 1:
            owners = " and ".join(entry.plugin.name for entry in entries)
            raise _Failed(f"{kind} name '{obj.name}' is registered by {owners}; names must be unique "
                          f"within a kind, so rename one")

    # -- architectures -------------------------------------------------------------------

    def _check_architecture(self, architecture: Architecture, results: _Results) -> None:
        params = {**_loop_defaults(), **architecture.defaults}
        supported = 0
        for shape in self.shapes:
            reason = results.run(f"unsupported-reason {shape}", _unsupported_reason, architecture, shape, params)
            if reason is _ERROR:
                continue
            if reason:
                results.skip(f"shape {shape}", f"unsupported: {reason}")
                continue
            supported += 1
            models = results.run(f"build {shape}", _build, architecture, shape, params, 0)
            if models is _ERROR:
                continue
            generator, discriminator = models
            outputs = [results.run(f"generator-output {shape}", _check_generator, generator, shape, params),
                       results.run(f"discriminator-output {shape}", _check_discriminator, discriminator, shape)]
            if _ERROR in outputs:
                results.skip(f"gradients {shape}", "needs the generator and discriminator outputs to pass")
            else:
                results.run(f"gradients {shape}", _check_architecture_gradients, generator, discriminator, params)
            results.run(f"determinism {shape}", _check_build_determinism, architecture, shape, params, models)
        if self.shapes:
            results.run("supports-a-shape", _require, supported > 0,
                        f"supports none of the shapes tried ({', '.join(map(str, self.shapes))}); "
                        f"check unsupported_reason, or pass the shapes it supports: "
                        f"check_distribution(..., shapes=[...])")

    # -- datasets ------------------------------------------------------------------------

    def _check_dataset(self, dataset: Dataset, results: _Results) -> None:
        params = {**_loop_defaults(), **dataset.defaults}
        shape = results.run("data-shape", _check_data_shape, dataset, params)
        if shape is _ERROR or not self.load_datasets:
            return
        loaded = results.run("load", self._load, dataset, params)
        if loaded is _ERROR:
            return
        results.run("loaded-data", _check_loaded_data, dataset, loaded, shape)
        results.run("load-determinism", _check_load_determinism, dataset, loaded, self._request(params))

    def _request(self, params: dict[str, Any]) -> DataRequest:
        """The test split (smaller), seed 0, a fresh empty cache (so nothing cached is found)."""
        return DataRequest(data_dir=self.data_dir, cache_dir=_empty_cache(), split="test", seed=0, params=params)

    def _load(self, dataset: Dataset, params: dict[str, Any]) -> LoadedData:
        """Load the test split with the network blocked; skip when the data is not on disk."""
        if dataset.name not in self._loaded:
            try:
                self._loaded[dataset.name] = _load_offline(dataset, self._request(params))
            except Exception as error:
                self._loaded[dataset.name] = error
        outcome = self._loaded[dataset.name]
        if isinstance(outcome, (UserError, _Skipped)):
            raise _Skipped(f"data not available offline: {outcome}")
        if isinstance(outcome, Exception):
            raise _Failed(f"load() raised {type(outcome).__name__}: {outcome} (when data is missing, raise "
                          f"ganbench.UserError saying where the files are expected)")
        return outcome

    # -- metrics -------------------------------------------------------------------------

    def _check_metric(self, metric: Metric, results: _Results) -> None:
        points = results.run("unsupported-reason", self._metric_datasets, metric)
        if points is _ERROR:
            return
        for dataset in points:
            try:
                loaded = self._load(dataset, {**_loop_defaults(), **dataset.defaults})
            except (_Skipped, _Failed):
                continue
            results.run(f"evaluate ({dataset.name})", _check_evaluate, metric, dataset, loaded)
            return
        results.skip("evaluate", "evaluated only on 2D point datasets, and none it supports loads offline")

    def _metric_datasets(self, metric: Metric) -> list[Dataset]:
        """Check ``unsupported_reason`` against every installed dataset; return the point ones it supports."""
        supported = []
        for entry in self.registry.all("dataset"):
            try:
                shape = tuple(entry.obj.data_shape({**_loop_defaults(), **entry.obj.defaults}))
            except Exception:  # that dataset's own checks report it
                continue
            reason = metric.unsupported_reason(entry.obj, shape)
            _require(reason is None or (isinstance(reason, str) and reason.strip() != ""),
                     f"unsupported_reason({entry.name}, {shape}) returned {reason!r}; return None "
                     f"or a sentence saying why")
            if reason is None and len(shape) == 1:
                supported.append(entry.obj)
        return supported


_ERROR = object()
"""What :meth:`_Results.run` returns when the check failed or was skipped."""


class _Results:
    """Runs checks of one subject and records their outcomes."""

    def __init__(self, plugin: str, subject: str):
        self.plugin, self.subject = plugin, subject
        self.results: list[CheckResult] = []

    def skip(self, check: str, detail: str) -> None:
        self.results.append(CheckResult(self.plugin, self.subject, check, SKIPPED, detail))

    def run(self, check: str, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` with torch's RNG state restored afterwards; record the outcome."""
        import torch

        try:
            with torch.random.fork_rng(devices=[]):
                value = function(*args)
        except _Skipped as skipped:
            self.skip(check, str(skipped))
            return _ERROR
        except _Failed as failed:
            outcome, detail = FAILED, str(failed)
        except Exception as error:  # the plugin's own bug: report it as this check's failure
            outcome, detail = FAILED, f"raised {type(error).__name__}: {error}"
        else:
            self.results.append(CheckResult(self.plugin, self.subject, check, PASSED))
            return value
        self.results.append(CheckResult(self.plugin, self.subject, check, outcome, detail))
        return _ERROR


def _loop_defaults() -> dict[str, Any]:
    from ganbench.planning.defaults import LOOP_DEFAULTS

    return dict(LOOP_DEFAULTS)


def _check_metadata(kind: str, obj: Any) -> None:
    try:
        validate(kind, obj)
    except ValueError as error:
        raise _Failed(str(error)) from None
    _require("\n" not in obj.description, "description must be one line (it is a row of `ganbench plugins`)")
    if kind == "dataset":
        classes = obj.num_classes
        _require(classes is None or (isinstance(classes, int) and not isinstance(classes, bool) and classes > 0),
                 f"num_classes must be None or a positive int, got {classes!r}")


def _check_loaded(info: PluginInfo) -> None:
    _require(info.error is None, f"ganbench skipped this plugin: {info.error}")


def _check_entry_point_name(info: PluginInfo) -> None:
    entry_point = info.name.partition(":")[2]
    _require(not entry_point.startswith("ganbench."),
             f"entry point name '{entry_point}' starts with 'ganbench.', which is reserved for the built-ins")


# --- architecture checks ----------------------------------------------------------------


def _unsupported_reason(architecture: Architecture, shape: tuple[int, ...], params: dict[str, Any]) -> str | None:
    reason = architecture.unsupported_reason(shape, params)
    _require(reason is None or (isinstance(reason, str) and reason.strip() != ""),
             f"unsupported_reason returned {reason!r}; return None or a sentence saying why")
    return reason


def _build(architecture: Architecture, shape: tuple[int, ...], params: dict[str, Any], seed: int) -> tuple:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    models = architecture.build(shape, params)
    _require(isinstance(models, tuple) and len(models) == 2 and all(isinstance(m, nn.Module) for m in models),
             f"build() must return a tuple (generator, discriminator) of torch.nn.Module, got {type(models).__name__}")
    return models


def _noise(params: dict[str, Any]) -> torch.Tensor:
    import torch

    return torch.randn(BATCH, int(params["latent_dim"]), generator=torch.Generator().manual_seed(0))


def _real_like(shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    return torch.rand(BATCH, *shape, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _check_generator(generator: Any, shape: tuple[int, ...], params: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        samples = generator(_noise(params))
    _require(isinstance(samples, torch.Tensor), f"the generator returned {type(samples).__name__}, not a tensor")
    _require(tuple(samples.shape) == (BATCH, *shape),
             f"the generator maps noise [{BATCH}, {params['latent_dim']}] to shape {tuple(samples.shape)}; "
             f"expected [batch, *data_shape] = {(BATCH, *shape)}")
    _require(samples.dtype == torch.float32, f"the generator returned {samples.dtype}; expected torch.float32")
    _require(bool(torch.isfinite(samples).all()), "the generator returned non-finite values")
    if len(shape) == 3:
        low, high = samples.min().item(), samples.max().item()
        _require(low >= -1 - 1e-5 and high <= 1 + 1e-5,
                 f"generated images span [{low:.3f}, {high:.3f}]; pixels must be in [-1, 1] (end with tanh)")


def _check_discriminator(discriminator: Any, shape: tuple[int, ...]) -> None:
    import torch

    with torch.no_grad():
        logits = discriminator(_real_like(shape))
    _require(isinstance(logits, torch.Tensor), f"the discriminator returned {type(logits).__name__}, not a tensor")
    _require(tuple(logits.shape) in ((BATCH,), (BATCH, 1)),
             f"the discriminator maps a batch of {BATCH} samples to shape {tuple(logits.shape)}; expected "
             f"one raw logit per sample, [{BATCH}] or [{BATCH}, 1]")
    _require(logits.is_floating_point() and bool(torch.isfinite(logits).all()),
             "the discriminator returned non-finite or non-float logits")


def model_shape_problem(generator: Any, discriminator: Any, data_shape: tuple[int, ...],
                        params: dict[str, Any], discriminator_shape: tuple[int, ...] | None = None) -> str | None:
    """Why these freshly built models cannot train on ``data_shape``, in the kit's words, or None.

    The training loop asks this before its first step, so a generator of the wrong shape is
    one sentence instead of a matrix-size error from deep inside torch. The models run in
    eval mode without gradients, so nothing they hold (BatchNorm statistics, spectral norm
    vectors) changes. ``discriminator_shape`` is what the discriminator reads when it differs
    from ``data_shape`` (PacGAN's packs).
    """
    was_training = generator.training, discriminator.training
    generator.eval()
    discriminator.eval()
    try:
        _check_generator(generator, data_shape, params)
        _check_discriminator(discriminator, discriminator_shape or data_shape)
    except _Failed as failure:
        return str(failure)
    except Exception as error:  # noqa: BLE001 - torch's own complaint, named as the kit would
        lines = str(error).strip().splitlines()
        return f"a forward pass raised {type(error).__name__}: {lines[0] if lines else ''}"
    finally:
        generator.train(was_training[0])
        discriminator.train(was_training[1])
    return None


def _check_architecture_gradients(generator: Any, discriminator: Any, params: dict[str, Any]) -> None:
    import torch

    logits = discriminator(generator(_noise(params)))
    logits.float().sum().backward()
    for role, model in (("generator", generator), ("discriminator", discriminator)):
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        _require(bool(trainable), f"the {role} has no trainable parameters")
        missing = [name for name, p in trainable if p.grad is None]
        _require(not missing, f"no gradient reaches the {role}'s parameter(s) {', '.join(missing[:3])} "
                              f"from D(G(z)); is a tensor detached, or a layer unused?")
        _require(all(bool(torch.isfinite(p.grad).all()) for _, p in trainable),
                 f"the {role}'s gradients are not finite")
        _require(any(bool(p.grad.abs().sum() > 0) for _, p in trainable),
                 f"every gradient of the {role} is zero")


def _check_build_determinism(architecture: Architecture, shape: tuple[int, ...], params: dict[str, Any],
                             first: tuple) -> None:
    again = _build(architecture, shape, params, 0)
    _require(all(_same_parameters(a, b) for a, b in zip(first, again)),
             "two builds after torch.manual_seed(0) differ; initialise weights from torch's global RNG only")
    other = _build(architecture, shape, params, 1)
    _require(not all(_same_parameters(a, b) for a, b in zip(first, other)),
             "builds after torch.manual_seed(0) and torch.manual_seed(1) are identical; initialise weights "
             "from torch's global RNG so each seed of a grid starts from different weights")


def _same_parameters(first: Any, second: Any) -> bool:
    import torch

    a, b = list(first.parameters()), list(second.parameters())
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


# --- loss checks ------------------------------------------------------------------------

TYPICAL_REAL = (-0.8, -0.2, 0.3, 0.9, 0.5, -0.5, 0.1, 0.7)
TYPICAL_FAKE = (-0.6, 0.1, 0.4, 0.7, -0.9, 0.2, -0.3, 0.6)
EXTREME = (-60.0, 60.0, -30.0, 30.0, 0.0, -60.0, 60.0, 5.0)
"""Logits a confident discriminator produces; losses must stay finite (softplus, not log(sigmoid))."""


def _check_loss(loss: Loss, results: _Results) -> None:
    params = {**_loop_defaults(), **loss.defaults}
    results.run("defaults", _check_loss_defaults, params)
    passed = []  # a check that depends on a failed one is skipped, so each problem is reported once
    for what, check in (("discriminator", _check_discriminator_loss), ("generator", _check_generator_loss)):
        passed.append(results.run(f"{what}-loss", check, loss, params) is not _ERROR)
        direction = _check_discriminator_direction if what == "discriminator" else _check_generator_direction
        if passed[-1]:
            results.run(f"{what}-loss-direction", direction, loss, params)
        else:
            results.skip(f"{what}-loss-direction", f"needs the {what}-loss check to pass")
    for shape in ((2,), (3, 8, 8)):
        passed.append(results.run(f"penalty {shape}", _check_penalty, loss, params, shape) is not _ERROR)
    results.run("after-discriminator-step", _check_after_step, loss, params)
    if all(passed):
        results.run("determinism", _check_loss_determinism, loss, params)
    else:
        results.skip("determinism", "needs the loss and penalty checks to pass")


def _logits(values: Sequence[float], grad: bool = False) -> torch.Tensor:
    import torch

    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def _scalar(value: Any, what: str) -> float:
    import torch

    _require(isinstance(value, torch.Tensor), f"{what} returned {type(value).__name__}, not a tensor")
    _require(value.dim() == 0 and value.is_floating_point(),
             f"{what} returned shape {tuple(value.shape)} ({value.dtype}); return a 0-dim float tensor (use .mean())")
    _require(math.isfinite(value.item()), f"{what} is {value.item()}")
    return value.item()


def _generator_loss(loss: Loss, fake: torch.Tensor, real_values: Sequence[float], params: dict[str, Any]) -> Any:
    real = _logits(real_values) if loss.generator_needs_real_logits else None
    try:
        return loss.generator_loss(fake, real, params)
    except Exception as error:
        if real is None:
            raise _Failed(f"generator_loss(fake_logits, None, params) raised {type(error).__name__}: {error}; "
                          f"real_logits is None unless the loss sets generator_needs_real_logits = True") from None
        raise


def _check_loss_defaults(params: dict[str, Any]) -> None:
    from ganbench.planning.defaults import OPTIMIZERS

    _require(params["optimizer"] in OPTIMIZERS, f"optimizer {params['optimizer']!r} is not one of {OPTIMIZERS}")
    for key in ("lr_g", "lr_d"):
        value = params[key]
        _require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                 f"{key} must be a positive number, got {value!r}")
    for key in ("beta1", "beta2"):
        value = params[key]
        _require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1,
                 f"{key} must be in [0, 1), got {value!r}")
    n_critic = params["n_critic"]
    _require(isinstance(n_critic, int) and not isinstance(n_critic, bool) and n_critic >= 1,
             f"n_critic must be a whole number of at least 1, got {n_critic!r}")


def _check_discriminator_loss(loss: Loss, params: dict[str, Any]) -> None:
    import torch

    real, fake = _logits(TYPICAL_REAL, grad=True), _logits(TYPICAL_FAKE, grad=True)
    value = loss.discriminator_loss(real, fake, params)
    _scalar(value, "discriminator_loss")
    real_grad, fake_grad = torch.autograd.grad(value, (real, fake), allow_unused=True)
    for what, grad in (("real", real_grad), ("fake", fake_grad)):
        _require(grad is not None and bool(grad.abs().sum() > 0),
                 f"discriminator_loss does not depend on the {what} logits")
        _require(bool(torch.isfinite(grad).all()), f"the gradient of discriminator_loss to the {what} logits is not finite")
    _scalar(loss.discriminator_loss(_logits(EXTREME), _logits(EXTREME[::-1]), params),
            f"discriminator_loss at logits of magnitude up to {max(EXTREME)} "
            f"(compute with softplus or BCE-with-logits, not log(sigmoid))")


def _check_discriminator_direction(loss: Loss, params: dict[str, Any]) -> None:
    high, low = _logits([2.0] * 8), _logits([-2.0] * 8)
    right = _scalar(loss.discriminator_loss(high, low, params), "discriminator_loss")
    wrong = _scalar(loss.discriminator_loss(low, high, params), "discriminator_loss")
    _require(right < wrong, f"discriminator_loss is {right:.4g} when real logits are +2 and fake logits -2, "
                            f"but {wrong:.4g} the other way round; D's loss must be lower when D is right "
                            f"(return the quantity to minimise)")


def _check_generator_loss(loss: Loss, params: dict[str, Any]) -> None:
    import torch

    fake = _logits(TYPICAL_FAKE, grad=True)
    value = _generator_loss(loss, fake, TYPICAL_REAL, params)
    _scalar(value, "generator_loss")
    (grad,) = torch.autograd.grad(value, (fake,), allow_unused=True)
    _require(grad is not None and bool(grad.abs().sum() > 0), "generator_loss does not depend on the fake logits")
    _require(bool(torch.isfinite(grad).all()), "the gradient of generator_loss to the fake logits is not finite")
    _scalar(_generator_loss(loss, _logits(EXTREME), EXTREME[::-1], params),
            f"generator_loss at logits of magnitude up to {max(EXTREME)} "
            f"(compute with softplus or BCE-with-logits, not log(sigmoid))")


def _check_generator_direction(loss: Loss, params: dict[str, Any]) -> None:
    levels = (-2.0, -1.0, 0.0)
    values = [_scalar(_generator_loss(loss, _logits([level] * 8), [0.0] * 8, params), "generator_loss")
              for level in levels]
    _require(values[0] > values[1] > values[2],
             f"generator_loss is {', '.join(f'{v:.4g}' for v in values)} at fake logits "
             f"{', '.join(map(str, levels))}; it must fall as D rates the fakes as more real "
             f"(return the quantity to minimise)")


def _tiny_discriminator(shape: tuple[int, ...]) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 16), nn.LeakyReLU(0.2), nn.Linear(16, 1),
                         nn.Flatten(0))


def _penalty(loss: Loss, params: dict[str, Any], shape: tuple[int, ...]) -> tuple[Any, Any]:
    import torch

    discriminator = _tiny_discriminator(shape)
    rng = torch.Generator().manual_seed(2)
    real = torch.rand(8, *shape, generator=rng) * 2 - 1
    fake = torch.rand(8, *shape, generator=rng) * 2 - 1
    torch.manual_seed(3)
    return discriminator, loss.penalty(discriminator, real, fake, params)


def _check_penalty(loss: Loss, params: dict[str, Any], shape: tuple[int, ...]) -> None:
    import torch

    discriminator, penalty = _penalty(loss, params, shape)
    if penalty is None:
        return
    _scalar(penalty, "penalty")
    _require(penalty.requires_grad, "the penalty carries no gradient to the discriminator's parameters")
    penalty.backward()
    grads = [p.grad for p in discriminator.parameters()]
    _require(any(g is not None for g in grads), "the penalty carries no gradient to the discriminator's parameters")
    _require(all(g is None or bool(torch.isfinite(g).all()) for g in grads),
             "the penalty's gradients to the discriminator are not finite")


def _check_after_step(loss: Loss, params: dict[str, Any]) -> None:
    import torch

    discriminator = _tiny_discriminator((2,))
    returned = loss.after_discriminator_step(discriminator, params)
    _require(returned is None, f"after_discriminator_step returned {returned!r}; change D in place and return None")
    _require(all(bool(torch.isfinite(p).all()) for p in discriminator.parameters()),
             "after_discriminator_step left non-finite discriminator weights")


def _check_loss_determinism(loss: Loss, params: dict[str, Any]) -> None:
    def values() -> list[float]:
        import torch

        torch.manual_seed(0)
        penalty = _penalty(loss, params, (2,))[1]
        return [loss.discriminator_loss(_logits(TYPICAL_REAL), _logits(TYPICAL_FAKE), params).item(),
                _generator_loss(loss, _logits(TYPICAL_FAKE), TYPICAL_REAL, params).item(),
                None if penalty is None else penalty.item()]

    first, second = values(), values()
    _require(first == second, f"the same inputs after the same torch.manual_seed gave (d, g, penalty) = "
                              f"{first}, then {second}; draw randomness from torch's global RNG only")


# --- dataset checks ---------------------------------------------------------------------


def _check_data_shape(dataset: Dataset, params: dict[str, Any]) -> tuple[int, ...]:
    shape = dataset.data_shape(params)
    _require(isinstance(shape, (tuple, list)) and len(shape) in (1, 3)
             and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape),
             f"data_shape returned {shape!r}; expected (dim,) for points or (channels, height, width) for images")
    return tuple(shape)


class NetworkBlocked(OSError):
    """Raised by every network access while the kit loads datasets."""


@contextlib.contextmanager
def _network_blocked() -> Iterator[None]:
    """Make every socket connection and name lookup fail, so nothing is downloaded."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NetworkBlocked("ganbench.testing blocks network access while checking datasets")

    patched = [(socket, "create_connection"), (socket, "getaddrinfo"), (socket.socket, "connect"),
               (socket.socket, "connect_ex")]
    saved = [(owner, name, getattr(owner, name)) for owner, name in patched]
    try:
        for owner, name in patched:
            setattr(owner, name, refuse)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _empty_cache() -> str:
    return tempfile.mkdtemp(prefix="ganbench-conformance-cache-")


def _load_offline(dataset: Dataset, request: DataRequest) -> LoadedData:
    """``dataset.load(request)`` with the network blocked and a fresh, empty cache (removed after)."""
    import shutil

    try:
        with _network_blocked():
            return dataset.load(request)
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, NetworkBlocked):
                raise _Skipped(f"it tried to download (blocked): {error}") from None
            cause = cause.__cause__ or cause.__context__
        raise
    finally:
        shutil.rmtree(request.cache_dir, ignore_errors=True)


def _check_loaded_data(dataset: Dataset, loaded: Any, shape: tuple[int, ...]) -> None:
    import torch

    _require(isinstance(loaded, LoadedData), f"load() returned {type(loaded).__name__}; return ganbench.LoadedData")
    samples = loaded.samples
    _require(isinstance(samples, torch.Tensor) and samples.dtype == torch.float32,
             "LoadedData.samples must be a float32 tensor")
    _require(len(samples) > 0 and tuple(samples.shape[1:]) == shape,
             f"samples have shape {tuple(samples.shape)}; expected [n, *data_shape] with data_shape {shape}")
    _require(bool(torch.isfinite(samples).all()), "samples contain non-finite values")
    if len(shape) == 3:
        _require(samples.min().item() >= -1 and samples.max().item() <= 1, "image pixels must be in [-1, 1]")
    if loaded.labels is not None:
        labels = loaded.labels
        _require(isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.shape == (len(samples),),
                 "LoadedData.labels must be None or an int64 tensor [n]")
        if dataset.num_classes:
            _require(bool(((labels >= 0) & (labels < dataset.num_classes)).all()),
                     f"labels must be in [0, num_classes) = [0, {dataset.num_classes})")
    _require(isinstance(loaded.split, str) and loaded.split != "", "LoadedData.split must name the split loaded")


def _check_load_determinism(dataset: Dataset, first: LoadedData, request: DataRequest) -> None:
    import torch

    torch.manual_seed(torch.initial_seed() + 1)  # so data drawn from torch's global RNG shows up as a difference
    second = _load_offline(dataset, request)
    same = torch.equal(first.samples, second.samples) and (
        (first.labels is None and second.labels is None)
        or (first.labels is not None and second.labels is not None and torch.equal(first.labels, second.labels)))
    _require(same, "two loads of the same request (same seed) returned different data; seed any sampling "
                   "from request.seed")


# --- metric checks ----------------------------------------------------------------------


def _check_evaluate(metric: Metric, dataset: Dataset, loaded: LoadedData) -> None:
    import torch
    from torch import nn

    from ganbench.evaluation.context import EvaluationContext, run_metrics

    shape = tuple(loaded.samples.shape[1:])
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(8, math.prod(shape)), nn.Unflatten(1, shape))

    def evaluate() -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="ganbench-conformance-") as folder, _network_blocked():
            context = EvaluationContext(
                generator=generator, latent_dim=8, data_shape=shape, dataset_name=dataset.name, dataset=dataset,
                real=loaded, settings=dict(metric.defaults), device=torch.device("cpu"), cache_dir=Path(folder),
                seed=0, step=0, run_dir=Path(folder))
            evaluation = run_metrics({metric.name: metric}, context)
        columns = {key: value for key, value in evaluation.values.items() if key != "evaluation_seconds"}
        _require(bool(columns), "evaluate() returned no columns")
        for key in columns:
            _require(re.match(r"^[a-z][a-z0-9_]*$", key) is not None, f"column name {key!r} must be snake_case")
        return columns

    first, second = evaluate(), evaluate()
    timing = re.compile(r"seconds|per_second")
    differing = [key for key in first if not timing.search(key) and not _same_number(first[key], second.get(key))]
    _require(not differing, f"two evaluations of the same generator differ in {', '.join(differing)}; "
                            f"draw samples with context.generate(), which is seeded")


def _same_number(a: float, b: float | None) -> bool:
    return b is not None and (a == b or (math.isnan(a) and math.isnan(b)))
