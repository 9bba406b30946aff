"""The registry a Runtime uses: it resolves an engine's recorded tactics importing only what they need.

``builtin_registry()`` imports every tactic family and every op module to make a reference tactic of each op. A
Runtime resolves the (family, name, version) each layer records, so it imports only those families' modules
(``family_tactics``, through the generated ``index_table``) and, for ``reference`` tactics, only the modules of
those layers' ops (``reprobuild.layers.find_layer``). Any other question (candidates, every tactic, a tactic the
loaded part lacks) is answered by the full registry, built on first need, so that answers and error messages are
exactly the full registry's: a lookup that misses the loaded part (a damaged engine, another version's tactic) costs
the full registry's import, never a different result.

The plugins registered when the registry is made are part of it, as they are of ``default_registry()``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable

from reprobuild.kernels.reference import CpuReference, CudaReference
from reprobuild.kernels.tactic import Tactic, TacticRegistry
from reprobuild.layers import find_layer
from reprobuild.registry import index_table
from reprobuild.registry.plugins import plugin_registry
from reprobuild.registry.tactics import builtin_registry


def family_tactics(family: str) -> tuple[Tactic, ...] | None:
    """Every tactic of a built-in hand-written family, importing only its module; None for a family the table
    lacks (``reference``, a plugin's, or an unknown one)."""
    module = index_table.FAMILY_MODULES.get(family)
    if module is None:
        return None
    return tuple(t for t in importlib.import_module(module).TACTICS if t.family == family)


class LazyRegistry(TacticRegistry):
    """The built-in tactics and ``plugin_tactics``, of which only the parts named by ``load`` are imported."""

    def __init__(self, plugin_tactics: Iterable[Tactic] = ()) -> None:
        self._plugins = tuple(plugin_tactics)
        super().__init__(self._plugins)
        self._loaded: set[tuple[str, str]] = set()
        self._full: TacticRegistry | None = None
        self._lock = threading.Lock()

    def full(self) -> TacticRegistry:
        """The registry this one stands for: every built-in tactic and the plugins' (built once)."""
        with self._lock:
            if self._full is None:
                builtin = builtin_registry()
                self._full = builtin.with_tactics(self._plugins) if self._plugins else builtin
            return self._full

    def load(self, uses: Iterable[tuple[str, str]]) -> None:
        """Import the tactics of each (op, family) an engine's layers record: the family's module, or for
        ``reference`` the reference tactics of that op. A family or op it cannot place is left to ``full``."""
        found: list[Tactic] = []
        with self._lock:
            for op, family in sorted(set(uses) - self._loaded):
                self._loaded.add((op, family))
                if family == "reference":
                    layer = find_layer(op)
                    if layer is not None and layer.domain == "":
                        found += [CpuReference(layer), CudaReference(layer)]
                else:
                    found += family_tactics(family) or ()
            known = {(t.family, t.name, t.version) for t in self._index.values()}
            fresh = {(t.family, t.name, t.version): t for t in found if (t.family, t.name, t.version) not in known}
            if fresh:
                index = dict(self._index)
                for tactic in fresh.values():
                    for op in tactic.ops:
                        index[(op, tactic.name, tactic.version)] = tactic
                self._index = dict(sorted(index.items()))

    def get(self, op: str, name: str, version: int) -> Tactic:
        tactic = self._index.get((op, name, version))
        return tactic if tactic is not None else self.full().get(op, name, version)

    def with_tactics(self, tactics: Iterable[Tactic]) -> TacticRegistry:
        return self.full().with_tactics(tactics)

    def ops(self) -> list[str]:
        return self.full().ops()

    def candidates(self, op: str, backend: str) -> list[Tactic]:
        return self.full().candidates(op, backend)

    def all(self) -> list[Tactic]:
        return self.full().all()


def runtime_registry() -> LazyRegistry:
    """What a Runtime made without a registry resolves with: the built-in tactics, imported as its engines need
    them, and the tactics of the plugins registered now."""
    return LazyRegistry(t for plugin in plugin_registry().plugins for t in plugin.tactics)
