"""Per-tactic identity: a digest over exactly the Python code a tactic runs.

A tactic's code is its class, the classes it derives from, and every function, class and constant of
reprobuild that those reference by name, transitively (found by reading their syntax trees); for a tactic
defined outside reprobuild (a plugin's), of its own top-level package too. For the reference
tactics that is also the op definition whose ``compute`` they run. Adding a tactic or an op to a module
therefore leaves every other tactic's digest, and every pin that uses it, unchanged, while editing any code a
tactic runs changes its digest.

The framework classes (``Tactic``, ``OpDef``) and modules (errors, logging, backends) are not part of any
tactic's code: they decide eligibility and bookkeeping, not what a kernel computes, and the environment
fingerprint already records the backend's libraries.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
import textwrap
import types
from collections.abc import Iterable
from typing import Any

from reprobuild.digest import digest_of

#: Modules whose objects are never part of a tactic's code.
FRAMEWORK_MODULES = frozenset({
    "reprobuild.errors", "reprobuild.logger", "reprobuild.digest", "reprobuild.kernels.backend",
    "reprobuild.kernels.code_digest", "reprobuild.kernels.nvrtc",
})
#: Framework classes, by qualified name (module.class).
FRAMEWORK_CLASSES = frozenset({
    "reprobuild.kernels.tactic.Tactic", "reprobuild.kernels.tactic.LayerSpec", "reprobuild.kernels.tactic.TensorSig",
    "reprobuild.ops.base.OpDef", "reprobuild.ops.base.BuildTimeOp",
})


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _within(module: str, packages: frozenset[str]) -> bool:
    """Whether ``module`` is reprobuild's, or of one of ``packages`` (the top-level packages of plugin code)."""
    return module.startswith("reprobuild.") or module.split(".")[0] in packages


def _in_scope(obj: Any, packages: frozenset[str] = frozenset()) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return (_within(module, packages) and module not in FRAMEWORK_MODULES
            and _qualified(obj) not in FRAMEWORK_CLASSES)


@functools.cache
def _source(obj: Any) -> str:
    return textwrap.dedent(inspect.getsource(obj))


_CONSTANT_TYPES = (int, float, str, bytes, tuple, frozenset, types.MappingProxyType)


def _referenced(obj: Any, packages: frozenset[str]) -> tuple[list[Any], dict[str, str]]:
    """What ``obj``'s source names, resolved in its module: objects (globals, attributes of imported modules,
    base classes), and module-level constants as ``repr``."""
    module = sys.modules[obj.__module__]
    found: list[Any] = []
    constants: dict[str, str] = {}
    for node in _code_nodes(ast.parse(_source(obj))):
        target: Any = None
        name = ""
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            target, name = module.__dict__.get(node.id), f"{module.__name__}.{node.id}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            base = module.__dict__.get(node.value.id)
            if isinstance(base, types.ModuleType) and _within(base.__name__, packages):
                target, name = getattr(base, node.attr, None), f"{base.__name__}.{node.attr}"
        if isinstance(target, _CONSTANT_TYPES) and _within(name, packages):
            value = dict(target) if isinstance(target, types.MappingProxyType) else target
            constants[name] = repr(value)
        elif target is not None:
            found.append(target)
    if isinstance(obj, type):
        found.extend(obj.__mro__[1:])
    return found, constants


def _code_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree except those inside type annotations (which run nothing)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        annotations: list[ast.AST | None] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations.append(node.returns)
        elif isinstance(node, (ast.arg, ast.AnnAssign)):
            annotations.append(node.annotation)
        for annotation in annotations:
            if annotation is not None:
                skip.update(id(n) for n in ast.walk(annotation))
    return [n for n in ast.walk(tree) if id(n) not in skip]


def code_closure(roots: Iterable[Any]) -> dict[str, str]:
    """Qualified name -> source of every function and class of reprobuild the roots run, and -> ``repr`` of
    every module constant that code names."""
    out: dict[str, str] = {}
    constants: dict[str, str] = {}
    stack = [r if isinstance(r, (type, types.FunctionType)) else type(r) for r in roots]
    # Code outside reprobuild is in scope when a root comes from it (a plugin's tactic): its top-level package.
    packages = frozenset(m.split(".")[0] for m in (getattr(r, "__module__", None) or "" for r in stack)
                         if m and not m.startswith("reprobuild") and m != "builtins")
    while stack:
        obj = stack.pop()
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if not isinstance(obj, (type, types.FunctionType)) or not _in_scope(obj, packages) or _qualified(obj) in out:
            continue
        out[_qualified(obj)] = _source(obj)
        found, named = _referenced(obj, packages)
        constants.update(named)
        stack.extend(found)
    return dict(sorted({**out, **{f"{k} (constant)": v for k, v in constants.items()}}.items()))


def code_sha256(roots: Iterable[Any]) -> str:
    """One digest over the code (and the module constants it names) that the roots run."""
    return digest_of(code_closure(list(roots)))
