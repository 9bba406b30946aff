"""Plugins: an op of a custom ONNX domain and the tactics that run it, after TensorRT's plugin registry.

A plugin is an op definition (a :class:`~reprobuild.ops.OpDef` whose ``domain`` is not the default ONNX one) and
one or more tactics of it. Nothing registers itself on import: :func:`register_plugin` adds a plugin to this
process's registry (:func:`plugin_registry`, TensorRT's ``get_plugin_registry()``), and :func:`registered` does so
for the duration of a ``with`` block. Register plugins before parsing a model that uses them and before making
the Builder or Runtime that builds or loads its engines (those take their tactic registry when they are made).

Once registered, a plugin op is one more op: the ONNX frontend converts nodes of its domain through the op
definition, layers name it ``domain::op`` (:attr:`OpDef.layer_op`), and its tactics are candidates the builder
times, the manifest records by value (family, name, version, parameters, and a ``code_sha256`` computed from the
plugin's own code: the lock lists built-in tactics only) and a replay or a Runtime resolves by value, refusing one
whose code changed. An engine that uses a plugin op gives a
:class:`~reprobuild.core.errors.PluginNotRegisteredError` where that plugin is not registered.

A plugin may not take over anything of reprobuild's: its tactics need a family of their own (not a built-in
family's), and an op name, tactic or family already registered by another plugin is refused. Every listing is
sorted, never in registration order.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reprobuild.core.errors import PluginError, PluginNotRegisteredError
from reprobuild.kernels.backend import BACKENDS
from reprobuild.kernels.code_digest import IdentityError, closure
from reprobuild.kernels.tactic import Tactic, TacticRegistry
from reprobuild.layers.registry import add_plugin_layer, plugin_layer, plugin_not_registered, remove_plugin_layer
from reprobuild.registry.tactics import builtin_registry

if TYPE_CHECKING:  # for the annotations only: the Runtime imports this module and never reprobuild.ops
    from reprobuild.ops.base import OpDef

__all__ = ["Plugin", "PluginRegistry", "plugin_registry", "register_plugin", "registered"]

@dataclass(frozen=True)
class Plugin:
    """An op of a custom domain and its tactics (their ``ops`` name the op as layers do: ``domain::op``)."""

    op: OpDef
    tactics: tuple[Tactic, ...]

    @property
    def name(self) -> str:
        """The op as layers, engines and manifests name it: ``domain::op``."""
        return self.op.layer_op

    def __repr__(self) -> str:
        return f"<plugin {self.name}: {', '.join(t.label for t in self.tactics)}>"


class PluginRegistry:
    """The plugins registered in a process, by op name (``domain::op``); thread-safe, listings sorted."""

    def __init__(self) -> None:
        self._plugins: dict[str, Plugin] = {}
        self._lock = threading.Lock()
        self._cached: tuple[TacticRegistry, TacticRegistry] | None = None  # (built-ins it extends, combined)

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        with self._lock:
            return tuple(self._plugins[k] for k in sorted(self._plugins))

    def register(self, plugin: Plugin) -> Plugin:
        """Add ``plugin``; a :class:`PluginError` saying what clashes, when anything does."""
        builtin = builtin_registry()
        with self._lock:
            _check(plugin, builtin, [p for k, p in sorted(self._plugins.items())])
            self._plugins[plugin.name] = plugin
            add_plugin_layer(plugin.op)
            self._cached = None
        return plugin

    def deregister(self, name: str) -> Plugin:
        """Remove the plugin of op ``name`` (``domain::op``) and return it."""
        with self._lock:
            plugin = self._plugins.pop(name, None)
            remove_plugin_layer(name)
            self._cached = None
        if plugin is None:
            raise PluginError(f"no plugin of op {name!r} is registered; registered: {self._listing()}")
        return plugin

    def find_op(self, op: str, domain: str = "") -> OpDef | None:
        """The op definition of a registered plugin: by ``op`` in ``domain``, or by its layer name ``domain::op``."""
        found = plugin_layer(f"{domain}::{op}" if domain else op)
        return found if _is_op_definition(found) else None  # type: ignore[return-value]

    def tactic_registry(self) -> TacticRegistry:
        """The built-in tactics and those of every registered plugin (the built-ins alone when there are none)."""
        builtin = builtin_registry()
        with self._lock:
            if not self._plugins:
                return builtin
            if self._cached is None or self._cached[0] is not builtin:
                tactics = [t for k in sorted(self._plugins) for t in self._plugins[k].tactics]
                self._cached = (builtin, builtin.with_tactics(tactics))
            return self._cached[1]

    def not_registered(self, op: str, domain: str = "") -> PluginNotRegisteredError:
        """The error for a plugin op that no registered plugin defines: it names the op and says how to fix it."""
        return plugin_not_registered(op, domain)

    def _listing(self) -> str:
        return ", ".join(p.name for p in self.plugins) or "none"


def _is_op_definition(op: object, computes: bool = False) -> bool:
    """Whether ``op`` is an op definition (an ``OpDef``; with ``computes``, one that becomes a layer: not a
    build-time, internal or lowered op). Checked without importing ``reprobuild.ops``, which a Runtime never loads:
    an ``OpDef`` instance exists only once that module is loaded, so a process without it has none."""
    base = sys.modules.get("reprobuild.ops.base")
    if base is None or not isinstance(op, base.OpDef):
        return False
    return not computes or not (isinstance(op, base.BuildTimeOp) or op.internal or op.lowered_to is not None)


def _check(plugin: Plugin, builtin: TacticRegistry, others: Sequence[Plugin]) -> None:
    """Everything that would make ``plugin`` ambiguous or unpinnable, as a PluginError (see the module docstring)."""
    op = plugin.op
    if not _is_op_definition(op, computes=True):
        raise PluginError(f"a plugin's op must be an instance of an OpDef subclass that computes (not a build-time, "
                          f"internal or lowered op); got {op!r}")
    if not op.domain or op.domain == "ai.onnx" or "::" in op.op or not op.op:
        raise PluginError(f"plugin op {op.op!r} has domain {op.domain!r}; a plugin defines an op of a custom ONNX "
                          "domain (such as 'com.example'), never of the default one, whose ops are reprobuild's")
    if not op.versions or any(not isinstance(v, int) or v < 1 for v in op.versions):
        raise PluginError(f"plugin op {plugin.name}: versions must list the op versions it implements (positive "
                          f"integers, such as (1,)); got {op.versions!r}")
    taken = next((p for p in others if p.name == plugin.name), None)
    if taken is not None:
        raise PluginError(f"a plugin of op {plugin.name} is already registered ({taken!r}); deregister it first "
                          "(plugin_registry().deregister(name)), or give the new op another name or version of "
                          "its tactics")
    if not plugin.tactics:
        raise PluginError(f"plugin op {plugin.name} has no tactics; give at least one, so that layers of it can run")
    builtin_families = {t.family for t in builtin.all()}
    builtin_labels = {(t.family, t.name, t.version) for t in builtin.all()}
    claimed = {(t.family, t.name, t.version): p.name for p in others for t in p.tactics}
    families = {t.family: p.name for p in others for t in p.tactics}
    seen: set[tuple[str, str, int]] = set()
    for tactic in plugin.tactics:
        if not isinstance(tactic, Tactic):
            raise PluginError(f"plugin op {plugin.name}: {tactic!r} is not a Tactic instance")
        key = (tactic.family, tactic.name, tactic.version)
        what = f"plugin op {plugin.name}: tactic {tactic.family}.{tactic.name} v{tactic.version}"
        if key in builtin_labels or tactic.family in builtin_families:
            raise PluginError(f"{what} uses family {tactic.family!r}, which is one of reprobuild's built-in tactic "
                              "families; a plugin may not re-register or extend built-in tactics. Give its tactics "
                              "a family of their own (the plugin's domain, say)")
        if key in claimed or families.get(tactic.family, plugin.name) != plugin.name:
            owner = claimed.get(key) or families[tactic.family]
            raise PluginError(f"{what}: family {tactic.family!r} belongs to the plugin of op {owner}; give this "
                              "plugin's tactics a family of their own")
        if key in seen:
            raise PluginError(f"{what} is listed twice")
        seen.add(key)
        if tuple(tactic.ops) != (plugin.name,):
            raise PluginError(f"{what} implements ops {list(tactic.ops)}; a plugin's tactics implement exactly its "
                              f"op, named as layers name it: ops = ({plugin.name!r},)")
        if getattr(tactic, "backend", None) not in BACKENDS:
            raise PluginError(f"{what} has backend {getattr(tactic, 'backend', None)!r}; one of "
                              f"{', '.join(BACKENDS)}")
        _check_readable(tactic, what)


def _check_readable(tactic: Tactic, what: str) -> None:
    """The tactic's identity can be computed from its code, its own class included (read now, so that it fails
    here, not mid-build)."""
    cls = type(tactic)
    try:
        found = f"{cls.__module__}.{cls.__qualname__}" in closure(tactic.code_objects(), tactic.ops_by_name).code
        why = f"module {cls.__module__!r} has no source file"
    except IdentityError as exc:
        found, why = False, str(exc)
    if not found:
        raise PluginError(f"{what}: its source code cannot be read ({why}), so it cannot be pinned by its "
                          "identity; define plugin tactics in a module file, not in an interactive session or exec()")


_REGISTRY = PluginRegistry()


def plugin_registry() -> PluginRegistry:
    """This process's plugin registry (TensorRT's ``get_plugin_registry()``); empty until a plugin is registered."""
    return _REGISTRY


def register_plugin(op: OpDef, tactics: Iterable[Tactic]) -> Plugin:
    """Register the op definition ``op`` (of a custom domain) and its ``tactics`` in this process; returns the
    :class:`Plugin` (give its ``name`` to ``plugin_registry().deregister`` to remove it)."""
    return _REGISTRY.register(Plugin(op, tuple(tactics)))


@contextlib.contextmanager
def registered(*plugins: Plugin) -> Iterator[tuple[Plugin, ...]]:
    """Register ``plugins`` for the duration of a ``with`` block, then deregister them (in reverse order)."""
    done: list[Plugin] = []
    try:
        for plugin in plugins:
            done.append(_REGISTRY.register(plugin))
        yield tuple(done)
    finally:
        for plugin in reversed(done):
            _REGISTRY.deregister(plugin.name)
