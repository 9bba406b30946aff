"""The Python part of a tactic's identity: its code and every value that code reaches, in normalized form.

A tactic's code is its class, the classes it derives from, and, transitively, every function and class that code
names (a global, an attribute of an imported module, a name imported inside a function) within reprobuild (and, for
a plugin's tactic, within the plugin's own top-level package). The values it names are part of it: module constants
of any type, NumPy arrays by dtype, shape and bytes. So are the layer definitions it looks up by name: a call of the
registries' ``find_layer``/``get_op``/``find_op`` with a literal string follows that op's layer class; code that
looks ops up by a name computed at run time is refused unless the tactic declares the ops it may reach
(``ops_by_name``), whose classes are then followed. Everything is in ``python_form``'s normalized form: docstrings,
comments and layout change nothing; a change to anything that runs changes the digest.

A table that code reaches entry by entry (the formula table, through ``evaluate``/``apply_formula``: ``KEYED``) is
part of an identity by the entries reached with literal keys; a key computed at run time takes the whole table.

The framework (``Tactic``, ``LayerDef``, ``OpDef``, the registries, errors, logging, backends) is not part of any
tactic's code: it decides eligibility and bookkeeping, not what a kernel computes, and the environment fingerprint
records the backend's libraries."""

from __future__ import annotations

import ast
import functools
import importlib
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reprobuild.core.digest import digest_of
from reprobuild.core.errors import BuildError
from reprobuild.kernels.python_form import (
    NORMALIZER_VERSION,
    annotation_nodes,
    normalized_sha256,
    portable,
    portable_name,
    qualified,
    source,
    tree,
    value_form,
)
from reprobuild.layers.registry import find_layer

#: Modules whose objects are never part of a tactic's code.
FRAMEWORK_MODULES = frozenset({
    "reprobuild.core.errors", "reprobuild.core.logger", "reprobuild.core.digest", "reprobuild.kernels.backend",
    "reprobuild.kernels.code_digest", "reprobuild.kernels.python_form", "reprobuild.kernels.nvrtc",
    "reprobuild.kernels.identity", "reprobuild.layers.registry", "reprobuild.ops.registry",
    "reprobuild.registry.plugins", "reprobuild.kernels.capture",
})
#: Framework classes, by qualified name (module.class).
FRAMEWORK_CLASSES = frozenset({
    "reprobuild.kernels.tactic.Tactic", "reprobuild.kernels.tactic.LayerSpec", "reprobuild.kernels.tactic.TensorSig",
    "reprobuild.layers.base.LayerDef", "reprobuild.ops.base.OpDef", "reprobuild.ops.base.BuildTimeOp",
})
#: Tables that code reaches entry by entry: an accessor (qualified name) -> (the table's qualified name, the position
#: of the key among its arguments). A call of an accessor with a literal key makes that entry (and what it names)
#: part of the identity, not the whole table, so that a new entry changes no existing identity; a call with a key
#: computed at run time (the fused kernels' generator) takes the whole table. The accessors' own code (which indexes
#: the table with the key it is given) does not count as reaching the whole table.
KEYED: dict[str, tuple[str, int]] = {
    "reprobuild.layers.formulas.apply_formula": ("reprobuild.layers.formulas.FORMULAS", 1),
    "reprobuild.layers.formulas.evaluate": ("reprobuild.layers.formulas.FORMULAS", 1),
}
_KEYED_TABLES = frozenset(table for table, _ in KEYED.values())
#: The registries' lookups by name: a call of one of these follows the layer definition of the op it names.
LOOKUPS = frozenset({"reprobuild.layers.registry.find_layer", "reprobuild.ops.registry.get_op",
                     "reprobuild.ops.registry.find_op"})


class IdentityError(BuildError):
    """A tactic's code cannot be identified: no source to read, or ops looked up by a name it does not declare."""


def _within(module: str, packages: frozenset[str]) -> bool:
    """Whether ``module`` is reprobuild's, or of one of ``packages`` (the top-level packages of plugin code)."""
    return module.startswith("reprobuild.") or module.split(".")[0] in packages


def _in_scope(obj: Any, packages: frozenset[str]) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return _within(module, packages) and module not in FRAMEWORK_MODULES and qualified(obj) not in FRAMEWORK_CLASSES


def _module_of(name: str, level: int, package: str) -> types.ModuleType | None:
    try:
        return importlib.import_module("." * level + name if level else name, package if level else None)
    except ImportError:
        return None


def _local_imports(nodes: list[ast.AST], module: types.ModuleType) -> dict[str, Any]:
    """Names bound by ``import`` statements among ``nodes`` (a function's deferred imports)."""
    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    bound: dict[str, Any] = {}
    for n in nodes:
        if isinstance(n, ast.ImportFrom):
            source_module = _module_of(n.module or "", n.level, package)
            for alias in n.names:
                if source_module is not None and hasattr(source_module, alias.name):
                    bound[alias.asname or alias.name] = getattr(source_module, alias.name)
        elif isinstance(n, ast.Import):
            for alias in n.names:
                target = _module_of(alias.name, 0, package)
                if target is not None:  # "import a.b" binds a; "import a.b as c" binds a.b
                    top = sys.modules[alias.name.split(".")[0]]
                    bound[alias.asname or alias.name.split(".")[0]] = target if alias.asname else top
    return bound


@dataclass(frozen=True)
class References:
    """What one function's or class's code names: objects by qualified name (with how they are found), the
    literal op names it looks up, and where it looks ops up by a computed name."""

    names: tuple[tuple[str, Any], ...]
    literal_ops: tuple[str, ...]
    dynamic_lookups: int
    #: (table, key) of each call of a KEYED accessor with a literal key; the tables it calls one with a computed key
    keyed: tuple[tuple[str, str], ...] = ()
    whole_tables: tuple[str, ...] = ()


def _resolve(expr: ast.AST, scope: dict[str, Any], module: types.ModuleType) -> tuple[str, Any] | None:
    """The object a name or a dotted name through modules refers to, with its qualified name."""
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.insert(0, expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    if expr.id in scope:
        obj, name = scope[expr.id], f"{module.__name__}.{expr.id}"
    elif expr.id in module.__dict__:
        obj, name = module.__dict__[expr.id], f"{module.__name__}.{expr.id}"
    else:
        return None
    for part in parts:
        if not isinstance(obj, types.ModuleType) or not hasattr(obj, part):
            break
        obj, name = getattr(obj, part), f"{obj.__name__}.{part}"
    return name, obj


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
           ast.GeneratorExp)


def _bound_in(scope: ast.AST) -> set[str]:
    """The names a function (or lambda, or comprehension) binds itself: its parameters and every name it assigns,
    imports, or defines, minus those it declares ``global``; nested scopes' bindings are theirs, not its."""
    bound: set[str] = set()
    declared_global: set[str] = set()
    if not isinstance(scope, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        args = scope.args  # type: ignore[attr-defined]
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                bound.add(a.arg)
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            stack.extend(node.decorator_list)  # evaluated here; the body is the nested scope's
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.Global):
            declared_global.update(node.names)
        elif isinstance(node, _SCOPES):
            continue  # a nested scope: its own bindings (a comprehension's targets stay inside it)
        stack.extend(ast.iter_child_nodes(node))
    return bound - declared_global


def _local_loads(root: ast.AST) -> set[int]:
    """The ids of the ``Name`` loads under ``root`` that read a local variable of an enclosing function (a
    parameter, an assigned name, a closure's variable), not the module global of that name: they name no code."""
    out: set[int] = set()

    def visit(node: ast.AST, enclosing: tuple[frozenset[str], ...]) -> None:
        if isinstance(node, _SCOPES):  # a class body is no scope its methods see: it adds nothing here
            enclosing = (*enclosing, frozenset(_bound_in(node)))
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and any(node.id in s for s in enclosing):
            out.add(id(node))
        for child in ast.iter_child_nodes(node):
            visit(child, enclosing)

    visit(root, ())
    return out


@functools.cache
def references(obj: Any) -> References:
    """What ``obj``'s code names (cached: code does not change while a process runs)."""
    module = sys.modules[obj.__module__]
    nodes = list(ast.walk(tree(obj)))
    scope = _local_imports(nodes, module)
    # Class-level annotations stay in the normalized code (a dataclass's fields), but name no code that runs.
    skip = annotation_nodes(nodes) | _local_loads(nodes[0])
    names: dict[str, Any] = {}
    literal: set[str] = set()
    dynamic = 0
    keyed: set[tuple[str, str]] = set()
    whole: set[str] = set()
    accessor = qualified(obj) in KEYED  # passes on the key it is given: its callers' keys count
    for n in nodes:
        if id(n) in skip:
            continue
        if isinstance(n, ast.Call):
            target = _resolve(n.func, scope, module)
            if target is not None and qualified(target[1]) in LOOKUPS:
                first = n.args[0] if n.args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    literal.add(first.value)
                else:
                    dynamic += 1
            if target is not None and qualified(target[1]) in KEYED and not accessor:
                table, position = KEYED[qualified(target[1])]
                key = n.args[position] if len(n.args) > position else None
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    keyed.add((table, key.value))
                else:
                    whole.add(table)
        if isinstance(n, (ast.Attribute, ast.Name)) and isinstance(getattr(n, "ctx", None), ast.Load):
            found = _resolve(n, scope, module)
            if found is not None:
                names.setdefault(*found)
                skip.update(id(inner) for inner in ast.walk(n) if inner is not n)
    if accessor:  # the table its code indexes is reached entry by entry, through the keys its callers give
        names = {k: v for k, v in names.items() if k not in _KEYED_TABLES}
    bases = obj.__mro__[1:] if isinstance(obj, type) else ()
    return References(tuple(sorted(names.items(), key=lambda kv: kv[0])) + tuple((qualified(b), b) for b in bases),
                      tuple(sorted(literal)), dynamic, tuple(sorted(keyed)), tuple(sorted(whole)))


@dataclass
class Closure:
    """A tactic's code: normalized code by qualified name, values by the name the code uses, and the op
    definition class of each op looked up by name."""

    code: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    ops: dict[str, str] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    dynamic: list[str] = field(default_factory=list)
    #: Qualified name -> the name identity records (python_form.portable), of each object followed.
    names: dict[str, str] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        # Names without their module (python_form.portable): a list of pairs, since two modules may each hold a
        # function of the same name.
        return {"normalizer": NORMALIZER_VERSION,
                "code": sorted([portable(self.objects[name]), digest] for name, digest in self.code.items()),
                "values": sorted(([portable_name(name), form] for name, form in self.values.items()), key=repr),
                "ops": {op: self.names.get(name, name) for op, name in sorted(self.ops.items())}}


def _table(name: str) -> Any:
    """A KEYED table by its qualified name."""
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _op_class(op: str) -> Any:
    """The class of the layer definition of ``op``: what a lookup by name computes with (an op definition adds
    only its ONNX half, which never runs in a tactic)."""
    layer = find_layer(op)
    if layer is None:
        raise IdentityError(f"tactic code looks up op {op!r} by name, and no layer of that op is registered")
    return type(layer)


def closure(roots: Iterable[Any], ops_by_name: Sequence[str] = (), declared: bool = True) -> Closure:
    """The code ``roots`` (classes or functions) run, with the values and ops it reaches (module docstring).
    ``declared=False`` allows lookups by computed names without a declaration (for reading code only)."""
    out = Closure()
    stack = [r if isinstance(r, (type, types.FunctionType)) else type(r) for r in roots]
    # Code outside reprobuild is in scope when a root comes from it (a plugin's tactic): its top-level package.
    packages = frozenset(m.split(".")[0] for m in (getattr(r, "__module__", None) or "" for r in stack)
                         if m and not m.startswith("reprobuild") and m != "builtins")

    def follow(obj: Any) -> str | None:
        while hasattr(obj, "__wrapped__") and not isinstance(obj, type):
            obj = obj.__wrapped__
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if not _in_scope(obj, packages):
            return None
        if isinstance(obj, (type, types.FunctionType)):
            stack.append(obj)
        out.names[qualified(obj)] = portable(obj)
        return qualified(obj)

    def follow_portable(obj: Any) -> str | None:
        name = follow(obj)
        return None if name is None else out.names[name]

    for op in ops_by_name:
        out.ops[op] = follow(_op_class(op)) or qualified(_op_class(op))
    while stack:
        obj = stack.pop()
        name = qualified(obj)
        if name in out.code or not _in_scope(obj, packages):
            continue
        try:
            out.code[name] = normalized_sha256(obj)
        except (OSError, TypeError) as exc:
            raise IdentityError(f"the source of {name} cannot be read ({exc}), so its identity cannot be "
                                "computed; define tactics in a module file, not in an interactive session or exec()"
                                ) from None
        out.objects[name] = obj
        refs = references(obj)
        if refs.dynamic_lookups:
            out.dynamic.append(name)
        for op in refs.literal_ops:
            out.ops[op] = follow(_op_class(op)) or qualified(_op_class(op))
        for table, key in refs.keyed:
            entries = _table(table)
            if key not in entries:
                raise IdentityError(f"{name} reaches entry {key!r} of {table}, which has no such entry")
            out.values[f"{table}[{key!r}]"] = value_form(entries[key], follow_portable)
        for table in refs.whole_tables:
            out.values[table] = value_form(_table(table), follow_portable)
        for ref_name, value in refs.names:
            if isinstance(value, (type, types.FunctionType, staticmethod, classmethod)) or \
                    hasattr(value, "__wrapped__"):
                follow(value)
            elif not isinstance(value, types.ModuleType) and _within(ref_name.rpartition(".")[0], packages) \
                    and ref_name.rpartition(".")[0] not in FRAMEWORK_MODULES:
                out.values[ref_name] = value_form(value, follow_portable)
    if out.dynamic and not ops_by_name and declared:
        raise IdentityError(f"{', '.join(sorted(out.dynamic))} look(s) ops up by a name computed at run time; "
                            "declare the ops that code may reach (ops_by_name) so that their definitions are part of "
                            "the identity")
    return out


def python_sha256(roots: Iterable[Any], ops_by_name: Sequence[str] = ()) -> str:
    """One digest over the normalized code, values and ops that the roots reach."""
    return digest_of(closure(list(roots), ops_by_name).payload())


def code_closure(roots: Iterable[Any]) -> dict[str, str]:
    """Qualified name -> source text of every function and class the roots run (``closure``), and
    ``"<name> (constant)"`` -> ``repr`` of each value that code names: for reading the code, not for identity."""
    found = closure(list(roots), (), declared=False)
    texts = {name: source(obj) for name, obj in found.objects.items()}
    for obj in found.objects.values():
        for ref_name, value in references(obj).names:
            if ref_name in found.values:
                texts[f"{ref_name} (constant)"] = repr(value)
    return dict(sorted(texts.items()))
