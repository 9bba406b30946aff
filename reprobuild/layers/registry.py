"""The layer registry: every layer definition of the modules listed in ``_layer_list.py``, looked up by op (one op
imports only its own module, through the generated ``_family_index.py``), and the layers of the plugins registered in
this process (``reprobuild.registry.plugins`` adds and removes them here, so that this layer never imports the ones
above it). A plugin's op definition is its layer definition too: one object, found here by its layer name
``domain::op``, and by ``reprobuild.ops.find_op`` as an op."""

from __future__ import annotations

import functools
import threading

from reprobuild.core.errors import PluginNotRegisteredError
from reprobuild.layers._family_index import FAMILY_INDEX
from reprobuild.layers._layer_list import layer_module, layer_modules
from reprobuild.layers.base import LayerDef


@functools.cache
def _table() -> dict[str, LayerDef]:
    table: dict[str, LayerDef] = {}
    for module in layer_modules():
        for layer in module.LAYERS:
            if layer.layer_op in table:
                first = type(table[layer.layer_op]).__name__
                raise RuntimeError(f"layer op {layer.layer_op} is defined twice ({first} and {type(layer).__name__})")
            table[layer.layer_op] = layer
    return dict(sorted(table.items()))


def all_layers() -> list[LayerDef]:
    """Every built-in layer definition, sorted by op."""
    return list(_table().values())


@functools.cache
def _indexed(op: str) -> LayerDef | None:
    """The layer definition of ``op``, importing only the module ``FAMILY_INDEX`` names for it (a runtime loads the
    definitions of its engine's layers, not all of them); None where the index has no entry."""
    name = FAMILY_INDEX.get(op)
    if name is None:
        return None
    return next((d for d in layer_module(name).LAYERS if d.layer_op == op), None)


_PLUGIN_LAYERS: dict[str, LayerDef] = {}  # by layer name, domain::op
_PLUGIN_LOCK = threading.Lock()
_HOW = ("register it first: reprobuild.registry.register_plugin(op_definition, tactics), or "
        "`with reprobuild.registry.registered(plugin):`")


def add_plugin_layer(layer: LayerDef) -> None:
    """Make a registered plugin's definition findable (called by ``reprobuild.registry.plugins`` only)."""
    with _PLUGIN_LOCK:
        _PLUGIN_LAYERS[layer.layer_op] = layer


def remove_plugin_layer(name: str) -> None:
    """Forget the plugin layer of name ``name`` (``domain::op``), as its plugin is deregistered."""
    with _PLUGIN_LOCK:
        _PLUGIN_LAYERS.pop(name, None)


def plugin_layer(name: str) -> LayerDef | None:
    """The registered plugin definition of layer name ``name`` (``domain::op``), or None."""
    with _PLUGIN_LOCK:
        return _PLUGIN_LAYERS.get(name)


def plugin_layer_names() -> list[str]:
    """The layer names (``domain::op``) of the registered plugins, sorted."""
    with _PLUGIN_LOCK:
        return sorted(_PLUGIN_LAYERS)


def plugin_not_registered(op: str, domain: str = "") -> PluginNotRegisteredError:
    """The error for a plugin op that no registered plugin defines: it names the op and says how to fix it."""
    name = f"{domain}::{op}" if domain else op
    where = name.split("::", 1)[0]
    return PluginNotRegisteredError(
        f"op {name} belongs to the custom domain {where!r}, which is a plugin's, and no registered plugin "
        f"defines it (registered: {', '.join(plugin_layer_names()) or 'none'}); {_HOW}, before parsing the model, "
        "building, or making the Runtime that loads the engine")


def find_layer(op: str) -> LayerDef | None:
    """The definition of layer op ``op``: a built-in one, else a registered plugin's (``domain::op``)."""
    if "::" in op:
        return plugin_layer(op)
    layer = _indexed(op)
    return layer if layer is not None else _table().get(op)  # an op the index lacks: every module
