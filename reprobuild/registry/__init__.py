"""reprobuild.registry: what is registered — the built-in tactics (``tactics``), plugins (``plugins``) and the tactic
lock (``lock``: ``python -m reprobuild.registry.lock``). It sits above the ops and kernels it registers, so neither
of them imports it."""

from __future__ import annotations

from reprobuild.kernels.tactic import TacticRegistry
from reprobuild.registry.plugins import Plugin, PluginRegistry, plugin_registry, register_plugin, registered
from reprobuild.registry.tactics import builtin_registry

__all__ = ["Plugin", "PluginRegistry", "builtin_registry", "default_registry", "plugin_registry", "register_plugin",
           "registered"]


def default_registry() -> TacticRegistry:
    """Every built-in tactic (:func:`builtin_registry`) and the tactics of the plugins registered in this process
    (:func:`register_plugin`): what a Builder or Runtime made without a registry uses."""
    return plugin_registry().tactic_registry()
