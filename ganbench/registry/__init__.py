"""One table per plugin kind: every registered object, who registered it, and lookups.

Each plugin's ``register_*`` implementation is called on its own, so every object knows
its owner and a plugin that raises is reported (and its objects withdrawn) without
touching the others. Two plugins claiming one name make that name ambiguous: looking it
up is an error naming both, never last-wins.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass, field
from typing import Any

from ganbench.api import PLUGIN_KINDS, validate
from ganbench.errors import UserError
from ganbench.registry.loader import PluginInfo, build_plugin_manager


@dataclass(frozen=True)
class Entry:
    """A registered object and the plugin it came from."""

    kind: str
    obj: Any
    plugin: PluginInfo

    @property
    def name(self) -> str:
        return self.obj.name


@dataclass
class Registry:
    """Everything the installed plugins provide."""

    plugins: list[PluginInfo]
    manager: Any = None
    entries: dict[str, dict[str, list[Entry]]] = field(default_factory=lambda: {kind: {} for kind in PLUGIN_KINDS})
    withdrawn: dict[tuple[str, str], PluginInfo] = field(default_factory=dict)
    """``(kind, name) -> plugin`` for objects a plugin registered before it failed (it was skipped)."""

    def names(self, kind: str) -> list[str]:
        """Sorted names of every registered object of ``kind``."""
        return sorted(self.entries[kind])

    def all(self, kind: str) -> list[Entry]:
        """Every entry of ``kind`` (ambiguous names included), sorted by name."""
        return [entry for name in self.names(kind) for entry in self.entries[kind][name]]

    def conflicts(self) -> list[tuple[str, str, list[Entry]]]:
        """``(kind, name, entries)`` for every name claimed by more than one plugin."""
        return [(kind, name, entries) for kind in PLUGIN_KINDS
                for name, entries in sorted(self.entries[kind].items()) if len(entries) > 1]

    def entry(self, kind: str, name: str) -> Entry:
        """Return the entry registered as ``name``, or raise a UserError that lists the choices."""
        entries = self.entries[kind].get(name)
        if not entries:
            skipped = self.withdrawn.get((kind, name))
            if skipped is not None:
                raise UserError(f"{kind} '{name}' is in plugin {skipped.name} ({skipped.distribution}), which was "
                                f"skipped: {skipped.error}. Fix or reinstall that plugin (ganbench plugins shows "
                                f"every plugin's state).")
            available = self.names(kind)
            guess = difflib.get_close_matches(name, available, n=1)
            hint = f" Did you mean '{guess[0]}'?" if guess else ""
            broken = [info for info in self.plugins if info.error]
            note = ""
            if broken:
                listed = "; ".join(f"{info.name}: {info.error}" for info in broken)
                note = f" Skipped plugins, which may hold it: {listed}."
            raise UserError(f"unknown {kind} '{name}'.{hint} Available {PLUGIN_KINDS[kind].plural}: "
                            f"{', '.join(available) or '(none installed)'}.{note}")
        if len(entries) > 1:
            owners = " and ".join(f"{e.plugin.distribution} ({e.plugin.name})" for e in entries)
            raise UserError(f"{kind} '{name}' is registered by both {owners}; uninstall one, or "
                            f"disable one with --disable-plugin or GANBENCH_LOAD_PLUGINS.")
        return entries[0]

    def get(self, kind: str, name: str) -> Any:
        """Return the object registered as ``name`` (see :meth:`entry`)."""
        return self.entry(kind, name).obj

    def version_of(self, kind: str, name: str) -> str:
        """``distribution==version`` of the plugin that registered ``name``."""
        plugin = self.entry(kind, name).plugin
        return f"{plugin.distribution}=={plugin.version}"


def _call_hook(impl: Any, kind: str, plugin: PluginInfo, collected: list[Entry]) -> None:
    def register(obj: Any) -> None:
        try:
            validate(kind, obj)
        except ValueError as error:
            raise ValueError(f"invalid {kind}: {error}") from None
        collected.append(Entry(kind, obj, plugin))

    arguments = {"register": register}
    impl.function(*(arguments[name] for name in impl.argnames))


def build_registry(disabled: tuple[str, ...] = ()) -> Registry:
    """Discover plugins and collect everything they register."""
    manager, plugins = build_plugin_manager(disabled)
    registry = Registry(plugins=plugins, manager=manager)
    # Only loaded plugins: a rejected duplicate entry point must not shadow the one that loaded.
    by_name = {info.name: info for info in plugins if info.error is None}
    collected: dict[str, list[Entry]] = {}
    for kind in PLUGIN_KINDS.values():
        hook_name = kind.hook
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            info = by_name[impl.plugin_name]
            if info.error:
                continue
            try:
                _call_hook(impl, kind.name, info, collected.setdefault(info.name, []))
            except Exception as error:  # reported per plugin, never fatal
                info.error = f"{hook_name} raised {type(error).__name__}: {error}"
    for info in plugins:
        for entry in collected.get(info.name, []):
            if info.error:
                registry.withdrawn[(entry.kind, entry.name)] = info
            else:
                registry.entries[entry.kind].setdefault(entry.name, []).append(entry)
    return registry


@functools.lru_cache(maxsize=8)
def _cached_registry(disabled: tuple[str, ...], allowlist: str | None) -> Registry:
    return build_registry(disabled)


def get_registry(disabled: tuple[str, ...] = ()) -> Registry:
    """The registry for this process (built once per set of disabled plugins and allowlist)."""
    return _cached_registry(tuple(sorted(disabled)), os.environ.get("GANBENCH_LOAD_PLUGINS"))
