"""The plugin object types: what a plugin registers, and what ganbench asks of it.

A plugin registers instances of the four base classes below from its ``register_*``
hooks (see :mod:`ganbench.hookspecs`). Subclass one, set the class attributes, override
the methods, and pass an instance to ``register``. ganbench validates every object when
it is registered (:func:`validate`) and says in a sentence what is wrong.

Conventions every plugin shares:

* **Names** are kebab-case (``wgan-gp``, ``fashion-mnist``), unique within their kind.
* **Data** are float32 tensors of shape ``[batch, *data_shape]``. Images are
  ``(channels, height, width)`` with pixels in ``[-1, 1]``; points are ``(dim,)``.
* **Hyperparameters** are one flat namespace of plain values (numbers, strings, bools).
  Each plugin declares the ones it reads, with their defaults, in ``defaults``; a user
  overrides any of them with ``--set key=value``. The loop hands every plugin the fully
  resolved mapping as ``params``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:  # torch is imported lazily so `ganbench plugins` stays quick
    import torch
    from torch import nn

NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

DataShape = tuple[int, ...]
"""``(channels, height, width)`` for images, ``(dim,)`` for points."""


class Architecture:
    """A generator/discriminator pair that adapts to a dataset's shape.

    Subclass, set ``name``, ``description`` and ``defaults`` (which must contain
    ``latent_dim``), and implement :meth:`build`. Override :meth:`unsupported_reason`
    when some data shapes cannot be handled, so a bad grid cell is rejected before
    anything trains.
    """

    name: ClassVar[str] = ""
    """Kebab-case id used on the command line (``--archs NAME``)."""
    description: ClassVar[str] = ""
    """One line shown by ``ganbench plugins``."""
    defaults: ClassVar[Mapping[str, Any]] = {}
    """Hyperparameters this architecture reads, with defaults. Must include
    ``latent_dim`` (size of the noise vector the generator takes)."""

    def unsupported_reason(self, data_shape: DataShape, params: Mapping[str, Any]) -> str | None:
        """Return why ``data_shape`` cannot be modelled, or ``None`` when it can."""
        return None

    def build(self, data_shape: DataShape, params: Mapping[str, Any]) -> tuple["nn.Module", "nn.Module"]:
        """Return ``(generator, discriminator)`` for ``data_shape``.

        The generator maps noise ``[batch, params["latent_dim"]]`` to samples
        ``[batch, *data_shape]`` (images in ``[-1, 1]``). The discriminator maps samples
        to one raw logit per sample, shape ``[batch]`` or ``[batch, 1]``: losses apply
        their own link functions, so no sigmoid at the end. Initialise weights here;
        ganbench seeds torch's RNG before calling, so the same seed builds the same models.
        """
        raise NotImplementedError


class Loss:
    """An adversarial objective, from discriminator logits.

    Logits are raw discriminator outputs, flattened by the loop to shape ``[batch]``. Return scalar tensors that
    are *minimised* (a discriminator that maximises ``log D(x)`` returns its negation).
    Compute in a numerically stable way (softplus, BCE with logits), never
    ``log(sigmoid(x))``.

    The training loop, per generator step, runs ``params["n_critic"]`` discriminator
    steps, each: ``discriminator_loss`` + ``penalty``, optimiser step,
    ``after_discriminator_step``; then one generator step on ``generator_loss``.
    """

    name: ClassVar[str] = ""
    """Kebab-case id used on the command line (``--losses NAME``)."""
    description: ClassVar[str] = ""
    """One line shown by ``ganbench plugins``."""
    defaults: ClassVar[Mapping[str, Any]] = {}
    """Recommended training hyperparameters and this loss's own. The training loop reads
    ``optimizer`` (``"adam"`` or ``"rmsprop"``), ``lr_g``, ``lr_d``, ``beta1``,
    ``beta2`` and ``n_critic``; a loss sets the ones its paper recommends and adds its
    own (``gp_weight``, ``clip_value``...)."""
    generator_needs_real_logits: ClassVar[bool] = False
    """Set to True when :meth:`generator_loss` uses ``D(real)`` (relativistic losses);
    otherwise the loop saves that forward pass and passes ``None``."""

    def discriminator_loss(self, real_logits: "torch.Tensor", fake_logits: "torch.Tensor",
                           params: Mapping[str, Any]) -> "torch.Tensor":
        """Return the discriminator's loss (to minimise) from ``D(real)`` and ``D(G(z))``."""
        raise NotImplementedError

    def generator_loss(self, fake_logits: "torch.Tensor", real_logits: "torch.Tensor | None",
                       params: Mapping[str, Any]) -> "torch.Tensor":
        """Return the generator's loss (to minimise) from ``D(G(z))``.

        ``real_logits`` is ``D(real)`` (no gradient to D) when
        ``generator_needs_real_logits`` is True, else ``None``.
        """
        raise NotImplementedError

    def penalty(self, discriminator: "nn.Module", real: "torch.Tensor", fake: "torch.Tensor",
                params: Mapping[str, Any]) -> "torch.Tensor | None":
        """Return a term added to the discriminator's loss (e.g. a gradient penalty), or None.

        ``real`` and ``fake`` are the data batches (not logits) of this discriminator step;
        ``fake`` carries no gradient to the generator. ``discriminator(x)`` may return
        ``[batch]`` or ``[batch, 1]``. The loop may run under autocast (mixed precision):
        compute anything sensitive (gradient norms) in float32 yourself.
        """
        return None

    def after_discriminator_step(self, discriminator: "nn.Module", params: Mapping[str, Any]) -> None:
        """Act on the discriminator after each of its optimiser steps (e.g. clip weights)."""


@dataclass(frozen=True)
class LoadedData:
    """What :meth:`Dataset.load` returns: the whole dataset, in memory."""

    samples: "torch.Tensor"
    """float32 ``[n, *data_shape]``; images in ``[-1, 1]``."""
    labels: "torch.Tensor | None" = None
    """int64 ``[n]`` class labels, when the dataset has them (used by metrics)."""
    split: str = ""
    """The split actually loaded (``train``, ``test``...)."""
    note: str = ""
    """Something the user should know, shown once (e.g. "only the test split is on disk")."""


@dataclass(frozen=True)
class DataRequest:
    """Where and how :meth:`Dataset.load` should find its data."""

    data_dir: str | None
    """A folder the user named (``--data-dir`` or ``GANBENCH_DATA_DIR``), or None."""
    cache_dir: str
    """ganbench's download cache; datasets that download put their files here."""
    split: str
    """The split asked for (``train`` by default)."""
    seed: int
    """Seed for datasets that are sampled rather than read."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The resolved hyperparameters of the run."""


@dataclass(frozen=True)
class GaussianMixture:
    """The exact distribution of a points dataset that is an equal-weight mixture of isotropic Gaussians.

    Returned by :meth:`Dataset.mixture`; the ``modes`` metric (VEEGAN/PacGAN mode coverage)
    scores any dataset that returns one.
    """

    means: tuple[tuple[float, ...], ...]
    """One mean per component (mode), each of the data's dimension. A sample whose label is
    ``i`` was drawn from ``means[i]``."""
    std: float
    """Standard deviation of every component in each coordinate (positive)."""

    def __post_init__(self) -> None:
        if not self.means or len({len(mean) for mean in self.means}) != 1:
            raise ValueError("a GaussianMixture needs at least one mean, all of one dimension")
        if not self.std > 0:
            raise ValueError(f"a GaussianMixture needs a positive std, got {self.std!r}")


class Dataset:
    """A source of real samples that fits in memory.

    ganbench loads it once per run, moves it to the training device and draws batches
    by indexing, so ``load`` may be slow but must be deterministic for a given request.
    """

    name: ClassVar[str] = ""
    """Kebab-case id used on the command line (``--datasets NAME``)."""
    description: ClassVar[str] = ""
    """One line shown by ``ganbench plugins``."""
    source: ClassVar[str] = ""
    """Where the data comes from, for ``ganbench plugins`` (e.g. "torchvision download")."""
    defaults: ClassVar[Mapping[str, Any]] = {}
    """Hyperparameters this dataset reads (e.g. ``resolution``), with defaults."""
    num_classes: ClassVar[int | None] = None
    """Number of classes when samples carry labels, else None."""
    recommended_steps: ClassVar[int | None] = None
    """Generator steps a run on this dataset trains when the user gives none (no ``--steps``,
    no ``steps`` in the grid file or preset): enough for a recognisable result with the
    default settings. None: ganbench's generic default (1,000)."""

    def data_shape(self, params: Mapping[str, Any]) -> DataShape:
        """Return the shape of one sample, without loading the data."""
        raise NotImplementedError

    def load(self, request: DataRequest) -> LoadedData:
        """Return every sample of ``request.split``.

        Raise :class:`ganbench.errors.UserError` with one sentence saying where the files
        are expected when the data is missing and cannot be fetched.
        """
        raise NotImplementedError

    def mixture(self, params: Mapping[str, Any]) -> GaussianMixture | None:
        """Return the mixture of Gaussians the samples are drawn from, or None (the default).

        Points datasets that are such a mixture return it, so the ``modes`` metric can
        count covered modes and high-quality samples on them.
        """
        return None


@dataclass(frozen=True)
class MetricResult:
    """What :meth:`Metric.evaluate` returns: its columns and how they were measured."""

    values: Mapping[str, float]
    """``{column: value}``. Column names are snake_case and say their unit or protocol
    (``fid10k_classifier``, ``images_per_second``); a figure that cannot be computed is
    ``float("nan")``, never a missing column."""
    protocol: Mapping[str, str] = field(default_factory=dict)
    """How every column of ``values`` was measured, as text: the feature extractor, sample
    counts, reference split... (``{"extractor": "classifier", "real_samples": "10000"}``).
    Strings that describe a figure (a device name) belong here, not in ``values``."""


class Metric:
    """A number (or a few) computed from a trained generator and the real data.

    The evaluation code calls :meth:`evaluate` with an ``EvaluationContext`` (see
    :mod:`ganbench.evaluation`) that can draw generated samples and gives the real data.
    All metrics of a run share one namespace of settings, so a setting two metrics read
    (``real_samples``) must have the same default in both.
    """

    name: ClassVar[str] = ""
    """Kebab-case id used on the command line (``--metrics NAME``)."""
    description: ClassVar[str] = ""
    """One line shown by ``ganbench plugins``."""
    defaults: ClassVar[Mapping[str, Any]] = {}
    """Settings this metric reads (sample counts...), with defaults."""

    def unsupported_reason(self, dataset: Dataset, data_shape: DataShape) -> str | None:
        """Return why this metric does not apply to ``dataset``, or None when it does."""
        return None

    def evaluate(self, context: Any) -> MetricResult:
        """Return this metric's columns and the protocol that produced them.

        Read settings from ``context.settings`` (your ``defaults`` plus the user's
        overrides). Column names must be unique across metrics: put whatever changes the
        value's meaning (extractor, sample count) in the name, and the rest in the protocol.
        """
        raise NotImplementedError

    def not_meaningful(self, values: Mapping[str, float]) -> Mapping[str, str]:
        """Return ``{column: reason}`` for this metric's columns whose figure says nothing for this run.

        ``values`` holds one finished run's final figures: every metric's columns (so one
        column can qualify another), NaN where a figure is missing. Reports call this for
        every run and mark each figure named here "not meaningful" in every format, with the
        reason; a config ranked first on such a figure is never called best without the
        mark. Say why in one sentence with the numbers (``"only 2% of samples lie near a
        mode"``). Default: every figure means what its name says.
        """
        return {}


@dataclass(frozen=True)
class PluginKind:
    """One kind of plugin object: its base class, the hook that registers it, what it must implement."""

    name: str
    """Singular, as in messages and ``Registry.get(kind, name)``: ``loss``."""
    plural: str
    """As in the hook's name, the command-line axis and ``ganbench plugins``: ``losses``."""
    base: type
    """The class every registered object is an instance of."""
    required: tuple[str, ...]
    """Methods a subclass must override."""

    @property
    def hook(self) -> str:
        """The hook that registers objects of this kind: ``register_losses``."""
        return f"register_{self.plural}"


PLUGIN_KINDS: Mapping[str, PluginKind] = {kind.name: kind for kind in (
    PluginKind("architecture", "architectures", Architecture, ("build",)),
    PluginKind("loss", "losses", Loss, ("discriminator_loss", "generator_loss")),
    PluginKind("dataset", "datasets", Dataset, ("data_shape", "load")),
    PluginKind("metric", "metrics", Metric, ("evaluate",)),
)}
"""Every kind of plugin object, by name: the one table the registry, :func:`validate`, the
hooks (:mod:`ganbench.hookspecs`) and the conformance kit follow. One namespace of names per kind."""


def validate(kind: str, obj: Any) -> None:
    """Raise ``ValueError`` with a sentence naming the problem when ``obj`` is not a valid ``kind``."""
    base = PLUGIN_KINDS[kind].base
    if isinstance(obj, type):
        raise ValueError(f"register an instance, not the class {obj.__name__} (write {obj.__name__}())")
    if not isinstance(obj, base):
        raise ValueError(f"a {kind} must be an instance of ganbench.{base.__name__}, got {type(obj).__name__}")
    name = getattr(obj, "name", "")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"{kind} name {name!r} of {type(obj).__name__} is not kebab-case "
                         "(lowercase letters, digits and single hyphens, like 'wgan-gp')")
    if not isinstance(obj.description, str) or not obj.description.strip():
        raise ValueError(f"{kind} {name!r} has no description (set the class attribute `description`)")
    if not isinstance(obj.defaults, Mapping):
        raise ValueError(f"{kind} {name!r}: `defaults` must be a mapping of hyperparameter names to values")
    for key, value in obj.defaults.items():
        if not isinstance(key, str) or not re.match(r"^[a-z][a-z0-9_]*$", key):
            raise ValueError(f"{kind} {name!r}: hyperparameter name {key!r} must be snake_case")
        if not isinstance(value, (bool, int, float, str)):
            raise ValueError(f"{kind} {name!r}: default of {key!r} must be a number, string or bool, "
                             f"got {type(value).__name__}")
    if kind == "architecture" and "latent_dim" not in obj.defaults:
        raise ValueError(f"architecture {name!r}: `defaults` must contain 'latent_dim'")
    if kind == "dataset" and not obj.source:
        raise ValueError(f"dataset {name!r} has no `source` (say where its data comes from)")
    for method in PLUGIN_KINDS[kind].required:
        if getattr(type(obj), method) is getattr(base, method):
            raise ValueError(f"{kind} {name!r} does not implement {method}()")

