"""Built-in plugins, and :func:`from_config` to build them from a plain mapping (e.g. ``minijobs.toml``).

On by default (``App(plugins=None)``): :class:`Leadership`, :class:`Recovery`
and :class:`Pruner`.  Opt in: :class:`Cron`.  ``App(plugins=[])`` runs none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from ..plugin import Plugin
from .cron import Cron, CronSchedule
from .leadership import Leader, Leadership
from .pruner import Pruner, PruneReport, prune
from .recovery import Recovery, RecoveryReport

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
    "default_plugins",
    "disabled_in",
    "from_config",
    "prune",
)

#: Table names accepted by :func:`from_config`, and the plugin each builds.
BUILTINS: dict[str, type[Plugin]] = {
    "leadership": Leadership,
    "recovery": Recovery,
    "pruner": Pruner,
    "cron": Cron,
}


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
        cls = BUILTINS.get(name)
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
        BUILTINS[name].get_identifier()
        for name, options in mapping.items()
        if name in BUILTINS and isinstance(options, Mapping) and options.get("enabled", True) is False
    }
