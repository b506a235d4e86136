"""Plugin discovery: load every ``ganbench`` entry point on its own, report the broken ones.

pluggy's ``load_setuptools_entrypoints`` stops at the first plugin that fails to import,
skips a second entry point with the same name and ignores misspelled hooks. This loader
registers each entry point as ``<distribution>:<name>`` inside its own ``try``, checks
that every hook it implements exists, and records what went wrong instead of raising, so
one broken install never takes the others (or the CLI) down.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from ganbench import hookspecs

ENTRY_POINT_GROUP = "ganbench"
BUILTIN_DISTRIBUTION = "ganbench"
ALLOWLIST_VARIABLE = "GANBENCH_LOAD_PLUGINS"


@dataclass
class PluginInfo:
    """One loaded (or failed) entry point."""

    name: str
    """``<distribution>:<entry point name>``, the id pluggy knows it by."""
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    """Why the plugin was skipped, or None when it works."""

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION


def _allowed_distributions() -> set[str] | None:
    """Third-party distributions the user allows, or None when all are allowed."""
    value = os.environ.get(ALLOWLIST_VARIABLE)
    if value is None:
        return None
    return {canonical_name(name) for name in value.split(",") if name.strip()}


def canonical_name(name: str) -> str:
    """``name`` as distribution names compare (PEP 503): lowercase, runs of ``-``, ``_`` and ``.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _incompatibility(dist: metadata.Distribution) -> str | None:
    """Say why ``dist`` does not support this ganbench version, or None if it does."""
    from packaging.requirements import InvalidRequirement, Requirement

    from ganbench import __version__

    for line in dist.requires or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonical_name(requirement.name) != BUILTIN_DISTRIBUTION or requirement.marker is not None:
            continue
        if requirement.specifier and not requirement.specifier.contains(__version__, prereleases=True):
            return (f"requires ganbench{requirement.specifier} but ganbench {__version__} is installed; "
                    f"upgrade the plugin or ganbench")
    return None


def _unknown_hooks(manager: pluggy.PluginManager, plugin: object) -> list[str]:
    known = {name for name in dir(hookspecs) if name.startswith("register_")}
    problems = []
    for caller in manager.get_hookcallers(plugin) or []:
        if not caller.has_spec():
            guess = difflib.get_close_matches(caller.name, sorted(known), n=1)
            hint = f" (did you mean {guess[0]}?)" if guess else ""
            problems.append(f"implements unknown hook {caller.name}{hint}")
    return problems


def build_plugin_manager(disabled: tuple[str, ...] = ()) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """Load every allowed ``ganbench`` entry point; return the manager and what was found.

    ``disabled`` holds plugin names (``dist:name``), entry point names or distribution
    names to leave out. ganbench's own built-ins are always loaded unless disabled by name.
    """
    manager = pluggy.PluginManager("ganbench")
    manager.add_hookspecs(hookspecs)
    allowed = _allowed_distributions()
    blocked = {canonical_name(item) for item in disabled}
    infos: list[PluginInfo] = []
    for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP),
                              key=lambda ep: (ep.dist.name if ep.dist else "", ep.name)):
        dist = entry_point.dist
        dist_name = canonical_name(dist.name) if dist else "unknown"
        info = PluginInfo(name=f"{dist_name}:{entry_point.name}", distribution=dist_name,
                          version=dist.version if dist else "?", module=entry_point.value)
        if {canonical_name(info.name), canonical_name(entry_point.name), dist_name} & blocked:
            continue
        if not info.builtin and allowed is not None and dist_name not in allowed:
            continue
        if any(existing.name == info.name for existing in infos):
            info.error = "a second entry point with this name in the same distribution; rename one"
            infos.append(info)
            continue
        infos.append(info)
        if dist is not None and not info.builtin:
            info.error = _incompatibility(dist)
            if info.error:
                continue
        try:
            plugin = entry_point.load()
            manager.register(plugin, name=info.name)
        except Exception as error:  # a broken plugin is reported, never fatal
            info.error = f"failed to load: {type(error).__name__}: {error}"
            continue
        problems = _unknown_hooks(manager, plugin)
        if problems:
            manager.unregister(plugin)
            info.error = "; ".join(problems)
            continue
        info.hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])
    return manager, infos
