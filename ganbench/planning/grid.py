"""Grid specs (flags, TOML files, presets) and their expansion into validated runs.

A grid is the product architectures x losses x datasets x ``--set`` axes x seeds. Every
cell is checked (plugins exist, values parse, the architecture supports the data shape)
before anything trains, so a typo costs seconds, not a half-finished grid.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ganbench import __version__
from ganbench.errors import UserError
from ganbench.planning import defaults
from ganbench.planning.defaults import DEFAULT_STEPS, LOOP_DEFAULTS, check_loop_params
from ganbench.planning.pac import packed_shape
from ganbench.planning.spec import RunSpec
from ganbench.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHORTCUTS = {"lr": ("lr_g", "lr_d")}
"""``--set lr=X`` sets both learning rates."""
PLUGIN_TABLES = {"arch": "architecture", "loss": "loss", "dataset": "dataset"}
"""Grid-file tables of settings for one plugin's runs only: ``[loss.wgan-gp]`` and so on."""


@dataclass
class GridSpec:
    """The axes and settings of a grid, before expansion."""

    archs: list[str] = field(default_factory=lambda: ["mlp"])
    losses: list[str] = field(default_factory=lambda: ["ns"])
    datasets: list[str] = field(default_factory=lambda: ["ring8"])
    seeds: list[int] = field(default_factory=lambda: [0])
    sets: dict[str, list[Any]] = field(default_factory=dict)
    """Hyperparameter axes: ``{"lr": [1e-4, 2e-4]}``."""
    per_plugin: dict[str, dict[str, dict[str, list[Any]]]] = field(default_factory=dict)
    """Settings for one plugin's runs only, from a grid file's ``[loss.NAME]``, ``[arch.NAME]`` or
    ``[dataset.NAME]`` tables: ``{"loss": {"wgan-gp": {"lr": [1e-4]}}}``. In those runs they
    replace the same keys of ``sets`` (a loss's own table wins over its architecture's and its
    dataset's). Tables of plugins that are not in the grid are ignored."""
    steps: int | None = None
    """Generator steps of every run; None (not given): each dataset's ``recommended_steps``,
    else :data:`DEFAULT_STEPS`."""
    batch_size: int = defaults.BATCH_SIZE
    split: str = "train"
    metrics: list[str] = field(default_factory=lambda: ["auto"])
    eval_every: int = defaults.EVAL_EVERY
    checkpoint_every: int = defaults.CHECKPOINT_EVERY
    sample_every: int = defaults.SAMPLE_EVERY
    log_every: int = defaults.LOG_EVERY
    save_samples: bool = False
    budget: int = 0
    """Random search: settings drawn per (architecture, loss, dataset) from the ``--set``
    distributions (0: a plain grid). See :mod:`ganbench.planning.search`."""
    search_seed: int = 0
    """Seeds the draws; the same seed and distributions give the same settings."""
    winner_seeds: int = 0
    """After the search, re-run each cell's best setting with this many new seeds."""

    def replace(self, **changes: Any) -> "GridSpec":
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _grid_from_mapping(data: Mapping[str, Any], origin: str) -> GridSpec:
    known = ({f.name for f in dataclasses.fields(GridSpec)} - {"sets", "per_plugin"}) | {"set", *PLUGIN_TABLES}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{origin}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}.")
    values = dict(data)
    sets = values.pop("set", {})
    if not isinstance(sets, Mapping):
        raise UserError(f"{origin}: [set] must be a table of hyperparameter = [values].")
    per_plugin = {}
    for table in PLUGIN_TABLES:
        plugins = values.pop(table, {})
        if not isinstance(plugins, Mapping) or not all(isinstance(v, Mapping) for v in plugins.values()):
            raise UserError(f"{origin}: [{table}.NAME] tables hold settings for one {PLUGIN_TABLES[table]}'s "
                            f"runs, like [{table}.NAME] lr = 1e-4; '{table}' is not such a table.")
        if plugins:
            per_plugin[table] = {name: {key: list(v) if isinstance(v, list) else [v] for key, v in settings.items()}
                                 for name, settings in plugins.items()}
    defaults = GridSpec()
    for key, value in values.items():
        default = getattr(defaults, key)
        if isinstance(default, list):  # an axis: one value or a list of them
            values[key] = value = value if isinstance(value, list) else [value]
            item_type = type(default[0])
            if not all(type(item) is item_type for item in value):
                raise UserError(f"{origin}: {key} = {value!r} is not a list of {item_type.__name__} values; "
                                f"write it like {key} = {json.dumps(default)}.")
        elif type(value) is not type(example := DEFAULT_STEPS if key == "steps" else default):
            raise UserError(f"{origin}: {key} = {value!r} is not of type {type(example).__name__}; "
                            f"write it like {key} = {json.dumps(example)}.")
    grid = GridSpec(**values)
    grid.sets = {key: list(v) if isinstance(v, list) else [v] for key, v in sets.items()}
    grid.per_plugin = per_plugin
    return grid


def load_grid_file(path: str | Path) -> GridSpec:
    """Read a grid from a TOML file (top-level keys as in :class:`GridSpec`, plus ``[set]`` and
    ``[loss.NAME]``, ``[arch.NAME]``, ``[dataset.NAME]`` tables of settings for one plugin's runs)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"grid file {path} does not exist; check the path.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"grid file {path} is not valid TOML ({error}); fix the file.") from None
    return _grid_from_mapping(data, str(path))


def preset_names() -> list[str]:
    """Names of the presets that ship with ganbench."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files("ganbench.planning.presets").iterdir()
                  if p.name.endswith(".toml"))


def load_preset(name: str) -> GridSpec:
    """The grid of a named preset (``ganbench/planning/presets/NAME.toml``)."""
    if name not in preset_names():
        raise UserError(f"unknown preset '{name}'. Available presets: {', '.join(preset_names())}.")
    text = resources.files("ganbench.planning.presets").joinpath(f"{name}.toml").read_text()
    return _grid_from_mapping(tomllib.loads(text), f"preset {name}")


def parse_value(text: str) -> Any:
    """Turn one command-line value into a bool, int, float or string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip()


def coerce(key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default``, or raise a UserError naming the key."""
    expected = type(default)
    if isinstance(value, str) and expected is not str:
        value = parse_value(value)
    if expected is bool:
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is str:
        return str(value)
    raise UserError(f"--set {key}={value!r}: expected {expected.__name__} (like {default!r}).")


def steps_for(grid: GridSpec, dataset: Any) -> int:
    """The steps of a run on ``dataset``: the grid's, else the dataset's recommended, else the default."""
    if grid.steps is not None:
        return grid.steps
    return int(getattr(dataset, "recommended_steps", None) or DEFAULT_STEPS)


def without_keys(per_plugin: dict[str, dict[str, dict[str, list[Any]]]],
                 keys: Mapping[str, Any]) -> dict[str, dict[str, dict[str, list[Any]]]]:
    """``per_plugin`` without the settings ``keys`` names (a shortcut counts as its targets), so a
    ``--set`` given on the command line applies to every run of the grid."""
    named = {target for key in keys for target in SHORTCUTS.get(key, (key,))}

    def kept(settings: dict[str, list[Any]]) -> dict[str, list[Any]]:
        result = {}
        for key, values in settings.items():
            targets = SHORTCUTS.get(key, (key,))
            remaining = [target for target in targets if target not in named]
            result.update({key: values} if len(remaining) == len(targets) else dict.fromkeys(remaining, values))
        return result

    return {table: {name: kept(settings) for name, settings in plugins.items()}
            for table, plugins in per_plugin.items()}


def _cell_axes(grid: GridSpec, axes: dict[tuple[str, ...], list[Any]], plugin_keys: set[str],
               **names: str) -> dict[tuple[str, ...], list[Any]]:
    """The grid's axes with the ``[arch.NAME]``, ``[dataset.NAME]``, ``[loss.NAME]`` settings of
    one cell's plugins put over them, in that order (a later table wins)."""
    cell = dict(axes)
    for table in ("arch", "dataset", "loss"):
        for key, values in grid.per_plugin.get(table, {}).get(names[table], {}).items():
            targets = tuple(t for t in SHORTCUTS.get(key, (key,)) if t in plugin_keys)
            cell = {kept: v for kept, v in ((tuple(t for t in ts if t not in targets), v) for ts, v in cell.items())
                    if kept}
            cell[targets] = values
    return cell


def expand(grid: GridSpec, registry: Registry) -> list[RunSpec]:
    """Every run of ``grid``, validated; raise UserError on the first problem."""
    if (grid.steps is not None and grid.steps < 1) or grid.batch_size < 1:
        raise UserError("--steps and --batch-size must be positive integers.")
    for schedule in ("checkpoint_every", "sample_every", "log_every"):
        if getattr(grid, schedule) < 1:
            raise UserError(f"{schedule} must be a positive number of steps, not {getattr(grid, schedule)}.")
    if grid.eval_every < 0:
        raise UserError(f"--eval-every {grid.eval_every}: give a positive number of steps, or 0 to evaluate "
                        "only at the end.")
    for axis in ("archs", "losses", "datasets", "seeds"):
        if not getattr(grid, axis):
            raise UserError(f"the {axis} axis is empty; give at least one value.")
    archs = {name: registry.get("architecture", name) for name in grid.archs}
    losses = {name: registry.get("loss", name) for name in grid.losses}
    datasets = {name: registry.get("dataset", name) for name in grid.datasets}
    explicit_metrics = [m for m in grid.metrics if m not in ("auto", "none")]
    metrics = {name: registry.get("metric", name) for name in explicit_metrics}
    if "auto" in grid.metrics:
        metrics = {entry.name: entry.obj for entry in registry.all("metric")}

    sets = {}
    for key, values in grid.sets.items():
        for target in SHORTCUTS.get(key, (key,)):
            sets[target] = values
    in_grid = {"arch": set(grid.archs), "loss": set(grid.losses), "dataset": set(grid.datasets)}
    table_keys = set()  # keys of the [loss.NAME]... tables of this grid's plugins (others are ignored)
    for table, plugins in grid.per_plugin.items():
        for name, settings in plugins.items():
            registry.get(PLUGIN_TABLES[table], name)  # a misspelt name lists the available ones
            if name in in_grid[table]:
                table_keys |= {target for key in settings for target in SHORTCUTS.get(key, (key,))}
    plugin_keys = set(LOOP_DEFAULTS)
    for obj in [*archs.values(), *losses.values(), *datasets.values()]:
        plugin_keys |= set(obj.defaults)
    metric_keys = {key for metric in metrics.values() for key in metric.defaults}
    unknown = sorted((set(sets) | table_keys) - plugin_keys - metric_keys)
    if unknown:
        raise UserError(f"unknown hyperparameter(s) {', '.join(unknown)} for this grid; known: "
                        f"{', '.join(sorted(plugin_keys | metric_keys | set(SHORTCUTS)))}.")
    # One axis per --set key: a shortcut's values go to all of its targets together.
    axes = {tuple(t for t in SHORTCUTS.get(key, (key,)) if t in plugin_keys): values
            for key, values in grid.sets.items()}
    axes.pop((), None)
    if table_keys - plugin_keys:
        raise UserError(f"{', '.join(sorted(table_keys - plugin_keys))}: evaluation settings apply to the whole "
                        "grid, not to one plugin's runs; put them in [set].")
    metric_settings_axes = {k: v for k, v in sets.items() if k not in plugin_keys}
    for key, values in metric_settings_axes.items():
        if len(values) != 1:
            raise UserError(f"--set {key}: evaluation settings take one value, not {len(values)}.")

    runs = []
    for arch_name, loss_name, dataset_name in itertools.product(grid.archs, grid.losses, grid.datasets):
        arch, loss, dataset = archs[arch_name], losses[loss_name], datasets[dataset_name]
        defaults = {**LOOP_DEFAULTS, **loss.defaults, **arch.defaults, **dataset.defaults}
        cell_metrics = {}
        for name, metric in metrics.items():
            if metric.unsupported_reason(dataset, dataset.data_shape(defaults)) is None:
                cell_metrics[name] = metric
            elif name in explicit_metrics:
                raise UserError(f"metric '{name}' does not apply to dataset '{dataset_name}': "
                                f"{metric.unsupported_reason(dataset, dataset.data_shape(defaults))}")
        evaluation = {k: v for m in cell_metrics.values() for k, v in m.defaults.items()}
        for key, values in metric_settings_axes.items():
            if key in evaluation:
                evaluation[key] = coerce(key, values[0], evaluation[key])
        cell_axes = _cell_axes(grid, axes, plugin_keys, arch=arch_name, dataset=dataset_name, loss=loss_name)
        relevant = [targets for targets in cell_axes if any(key in defaults for key in targets)]
        for combination in itertools.product(*(cell_axes[targets] for targets in relevant)):
            params = dict(defaults)
            for targets, value in zip(relevant, combination):
                for key in (key for key in targets if key in defaults):
                    params[key] = coerce(key, value, defaults[key])
            check_loop_params(params)
            shape = dataset.data_shape(params)
            reason = arch.unsupported_reason(shape, params)
            if reason:
                raise UserError(f"architecture '{arch_name}' cannot model dataset '{dataset_name}' "
                                f"(shape {tuple(shape)}): {reason}")
            if params["pac"] > 1:
                reason = arch.unsupported_reason(packed_shape(shape, params["pac"]), params)
                if reason:
                    raise UserError(f"architecture '{arch_name}' cannot judge packs of {params['pac']} "
                                    f"'{dataset_name}' samples (shape {packed_shape(shape, params['pac'])}): "
                                    f"{reason}")
            versions = {"ganbench": __version__,
                        f"architecture:{arch_name}": registry.version_of("architecture", arch_name),
                        f"loss:{loss_name}": registry.version_of("loss", loss_name),
                        f"dataset:{dataset_name}": registry.version_of("dataset", dataset_name)}
            for seed in grid.seeds:
                runs.append(RunSpec(
                    architecture=arch_name, loss=loss_name, dataset=dataset_name, seed=int(seed),
                    steps=steps_for(grid, dataset), batch_size=grid.batch_size, split=grid.split,
                    params=params,
                    versions=versions, metrics=tuple(cell_metrics), evaluation=evaluation,
                    eval_every=grid.eval_every, checkpoint_every=grid.checkpoint_every,
                    sample_every=grid.sample_every, log_every=grid.log_every,
                    save_samples=grid.save_samples))
    return runs
