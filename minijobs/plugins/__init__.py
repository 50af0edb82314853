"""Built-in plugins, and :func:`from_config` to build them from a plain mapping (e.g. ``minijobs.toml``).

On by default (``App(plugins=None)``): :class:`Leadership`, :class:`Recovery`
and :class:`Pruner`.  Opt in: :class:`Cron`.  ``App(plugins=[])`` runs none.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..plugin import Plugin
from .leadership import Leader, Leadership
from .pruner import Pruner, PruneReport, prune
from .recovery import Recovery, RecoveryReport

if TYPE_CHECKING:
    from .cron import Cron, CronSchedule

__all__ = (
    "BUILTINS",
    "Cron",
    "CronSchedule",
    "Leader",
    "Leadership",
    "PruneReport",
    "Pruner",
    "Recovery",
    "RecoveryReport",
    "builtin",
    "default_plugins",
    "disabled_in",
    "from_config",
    "prune",
)

#: Table names accepted by :func:`from_config`, and the module of the plugin each builds.
BUILTINS: dict[str, str] = {
    "leadership": ".leadership:Leadership",
    "recovery": ".recovery:Recovery",
    "pruner": ".pruner:Pruner",
    "cron": ".cron:Cron",
}

#: Loaded on first access: Cron brings time zones and the calendar, which an App without it never needs.
_LAZY = {"Cron": ".cron", "CronSchedule": ".cron"}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def builtin(table: str) -> type[Plugin] | None:
    """The built-in plugin class a ``[plugins.<table>]`` table configures (None for an unknown name)."""
    target = BUILTINS.get(table)
    if target is None:
        return None
    module_name, _, class_name = target.partition(":")
    cls: type[Plugin] = getattr(importlib.import_module(module_name, __name__), class_name)
    return cls


def default_plugins() -> list[Plugin]:
    """What ``App(plugins=None)`` runs: fresh Leadership, Recovery and Pruner instances."""
    return [Leadership(), Recovery(), Pruner()]


def from_config(mapping: Mapping[str, Any]) -> list[Plugin]:
    """Build built-in plugins from ``{"pruner": {...}, "cron": {...}, ...}`` (the ``[plugins]`` TOML table).

    One plugin per table, configured through :meth:`Plugin.configure` (unknown
    options and wrong types raise :class:`~minijobs.ConfigurationError` naming
    them).  A table with ``enabled = false`` builds nothing, so a
    configuration can switch a plugin off.  Plugins not named here are left
    to the caller (``App(plugins=None)`` adds the defaults).
    """
    if not isinstance(mapping, Mapping):
        raise ConfigurationError(f"plugin configuration must be a table of tables, got {type(mapping).__name__}")
    plugins: list[Plugin] = []
    for name, options in mapping.items():
        cls = builtin(name)
        if cls is None:
            raise ConfigurationError(f"unknown plugin [plugins.{name}] (built-in plugins: {', '.join(BUILTINS)})")
        if not isinstance(options, Mapping):
            raise ConfigurationError(f"[plugins.{name}] must be a table of options, got {options!r}")
        options = dict(options)
        enabled = options.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigurationError(f"{cls.get_identifier()}: option 'enabled' must be a boolean, got {enabled!r}")
        if not enabled:
            continue
        plugin = cls()
        plugin.configure(options)
        plugins.append(plugin)
    return plugins


def disabled_in(mapping: Mapping[str, Any]) -> set[str]:
    """Identifiers of plugins a configuration switches off with ``enabled = false``."""
    return {
        cls.get_identifier()
        for name, options in mapping.items()
        if isinstance(options, Mapping) and options.get("enabled", True) is False and (cls := builtin(name)) is not None
    }
