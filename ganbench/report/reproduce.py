"""The exact ``ganbench run`` command that reproduces a config's runs (same run ids).

``config.json`` holds every resolved hyperparameter; the command spells out those that
differ from the plugins' defaults (all of them when a plugin is not installed here), the
metrics and their non-default settings, and always the steps, batch size and split, since
``ganbench run`` starts from the quickstart preset's values for anything not given.
"""

from __future__ import annotations

import shlex
from typing import Any, Mapping, Sequence

from ganbench.planning.defaults import LOOP_DEFAULTS


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def plugin_defaults(config: Mapping[str, Any], registry: Any) -> tuple[dict | None, dict | None]:
    """``(hyperparameter defaults, evaluation defaults)`` of a config's plugins; None where unknown."""
    if registry is None:
        return None, None
    try:
        params = {**LOOP_DEFAULTS}
        for kind, name in (("loss", config["loss"]), ("architecture", config["architecture"]),
                           ("dataset", config["dataset"])):
            params.update(registry.get(kind, name).defaults)
    except Exception:  # a plugin missing here: spell out every value
        params = None
    try:
        evaluation = {}
        for name in config.get("metrics", ()):
            evaluation.update(registry.get("metric", name).defaults)
    except Exception:
        evaluation = None
    return params, evaluation


def reproduce_command(config: Mapping[str, Any], seeds: Sequence[int], registry: Any = None) -> str:
    """The ``ganbench run`` command for ``config`` (one run's config.json) with ``seeds``.

    With ``registry``, hyperparameters equal to the installed plugins' defaults are left out.
    """
    param_defaults, evaluation_defaults = plugin_defaults(config, registry)
    metrics = list(config.get("metrics") or [])
    words = ["ganbench", "run", "--archs", config["architecture"], "--losses", config["loss"],
             "--datasets", config["dataset"], "--seeds", ",".join(str(s) for s in sorted(seeds)),
             "--steps", str(config["steps"]), "--batch-size", str(config["batch_size"]),
             "--split", str(config["split"]), "--metrics", ",".join(metrics) if metrics else "none"]
    if config.get("eval_every"):
        words += ["--eval-every", str(config["eval_every"])]
    settings = [(key, value, param_defaults) for key, value in sorted((config.get("params") or {}).items())]
    if metrics:
        settings += [(key, value, evaluation_defaults)
                     for key, value in sorted((config.get("evaluation") or {}).items())]
    for key, value, defaults in settings:
        if defaults is not None and key in defaults and defaults[key] == value and type(defaults[key]) is type(value):
            continue
        if value == "":  # --set cannot express an empty value; an empty setting is a plugin's default
            continue
        words += ["--set", f"{key}={_value(value)}"]
    return " ".join(shlex.quote(word) for word in words)


def version_differences(config: Mapping[str, Any], registry: Any) -> list[str]:
    """What the config's runs used that differs from what is installed here (run ids include versions)."""
    if registry is None:
        return []
    from ganbench import __version__

    installed = {"ganbench": __version__}
    for kind in ("architecture", "loss", "dataset"):
        try:
            installed[f"{kind}:{config[kind]}"] = registry.version_of(kind, config[kind])
        except Exception:
            installed[f"{kind}:{config[kind]}"] = "not installed"
    recorded = config.get("versions") or {}
    return [f"{key} ran {recorded.get(key, '?')}, here {value}" for key, value in installed.items()
            if recorded.get(key) != value]
