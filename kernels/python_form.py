"""The normalized form of Python code and values, as a tactic's identity digests them.

Code: the syntax tree of a function or class with its docstrings and the annotations of parameters and return
values removed (under ``from __future__ import annotations`` they never run), written without positions, as
nested lists of node type and fields. Empty fields are left out and a few fields that only some Python versions
have are skipped, so the form is the same on every supported Python; comments, blank lines, spacing and
line breaks are not in a syntax tree at all. Values: a canonical JSON-able form of constants, containers, NumPy
arrays (dtype, shape and bytes), enums and the names of functions and classes.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import sys
import textwrap
import types
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np

from reprobuild.core.digest import array_digest, digest_of, sha256_hex

#: Bump when the normalized form changes (every identity changes with it: regenerate the lock with
#: ``python -m reprobuild.registry.lock --renormalize``). 2: names without their module (:func:`portable`). 3: the ops
#: a tactic reaches (a reference tactic's op, an op looked up by name, the epilogue's layers) are their layer
#: definitions (``reprobuild.layers``), the half that computes, without the ONNX conversion that never runs in one;
#: a name a function binds itself (a parameter, an assigned name) no longer follows the module global it shadows; and
#: a table reached entry by entry (the formula table, ``code_digest.KEYED``) counts the entries reached, not all.
NORMALIZER_VERSION = 3
#: Fields that exist in some Python versions only, or that hold no computation.
_SKIPPED_FIELDS = frozenset({"type_comment", "type_params", "type_ignores", "kind", "ctx"})


def qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _ours(module: str) -> bool:
    return module == "reprobuild" or module.startswith("reprobuild.")


def portable(obj: Any) -> str:
    """The name an identity records for a function or class: reprobuild's by its name within its module, so that
    moving code between modules (a change of layout) changes no identity; anything else by module and name."""
    module = getattr(obj, "__module__", None) or ""
    if not _ours(module):
        return qualified(obj)
    return str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?"))


def portable_name(name: str) -> str:
    """``portable`` for a dotted name ``module.attribute`` that the code uses (a value it names)."""
    module, _, attribute = name.rpartition(".")
    return attribute if _ours(module) else name


@functools.cache
def source(obj: Any) -> str:
    """The dedented source of a function or class (OSError or TypeError when there is none to read)."""
    return textwrap.dedent(inspect.getsource(obj))


_MODULES: dict[tuple[str, int], tuple[Any, dict[str, ast.stmt]]] = {}


def _definitions(module: Any) -> dict[str, ast.stmt]:
    """Every class and function definition of a module's source by qualified name (parsed once per module
    object: ``inspect.getsource`` would search the module's whole tree again for each class)."""
    key = (module.__name__, id(module))
    if key not in _MODULES:
        found: dict[str, ast.stmt] = {}
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py"):
            with open(path, encoding="utf-8") as f:
                pending: list[tuple[str, ast.AST]] = [("", ast.parse(f.read()))]
            while pending:
                prefix, node = pending.pop()
                for child in getattr(node, "body", []):
                    if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                        found[prefix + child.name] = child
                        if isinstance(child, ast.ClassDef):
                            pending.append((f"{prefix}{child.name}.", child))
        _MODULES[key] = (module, found)  # the module is kept so that its id is not reused
    return _MODULES[key][1]


@functools.cache
def tree(obj: Any) -> ast.stmt:
    """The syntax tree of a function's or class's definition (shared: never modify it)."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    node = _definitions(module).get(getattr(obj, "__qualname__", "")) if module is not None else None
    if node is None or "<" in obj.__qualname__:
        return ast.parse(source(obj)).body[0]
    return node


def annotation_nodes(nodes: list[ast.AST]) -> set[int]:
    """The ids of the nodes inside annotations (of parameters, return values and class-level names) among
    ``nodes`` (a tree's, walked): they name types, not code that runs."""
    out: set[int] = set()
    for n in nodes:
        for annotation in (getattr(n, "returns", None), getattr(n, "annotation", None)):
            if isinstance(annotation, ast.AST):
                out.update(id(inner) for inner in ast.walk(annotation))
    return out


def _body(body: list[ast.stmt]) -> list[ast.stmt]:
    """A definition's body without its docstring (``pass`` when nothing else is left)."""
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:] or [ast.Pass()]
    return body


def _constant(value: Any) -> Any:
    if isinstance(value, float):
        return ["float", value.hex()]
    if isinstance(value, complex):
        return ["complex", value.real.hex(), value.imag.hex()]
    if isinstance(value, bytes):
        return ["bytes", value.hex()]
    if value is Ellipsis:
        return ["ellipsis"]
    return value  # None, bool, int, str


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)


def dump(node: Any) -> Any:
    """A syntax tree as nested lists: [node type, [field, value]...], positions and empty fields left out, and
    docstrings and the annotations of parameters and return values too."""
    if isinstance(node, ast.AST):
        out: list[Any] = [type(node).__name__]
        for name in node._fields:
            value = getattr(node, name, None)
            if name == "body" and isinstance(node, _DEFINITIONS) and isinstance(value, list):
                value = _body(value)
            if (name == "returns" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))) or \
                    (name == "annotation" and isinstance(node, ast.arg)):
                continue
            if name in _SKIPPED_FIELDS or value is None or value == []:
                continue
            out.append([name, _constant(value) if isinstance(node, ast.Constant) else dump(value)])
        return out
    if isinstance(node, list):
        return [dump(v) for v in node]
    return _constant(node)


@functools.cache
def normalized(obj: Any) -> Any:
    """The normalized form of a function's or class's code."""
    return dump(ast.Module(body=[tree(obj)], type_ignores=[]))


@functools.cache
def normalized_sha256(obj: Any) -> str:
    """The digest of :func:`normalized` (what an identity holds of each function and class)."""
    return digest_of(normalized(obj))


def value_form(value: Any, code: Callable[[Any], str | None], _seen: frozenset[int] = frozenset()) -> Any:
    """A canonical, JSON-able form of a value. ``code(obj)`` is called for each function or class met (it
    returns the name to record, and may follow the object's code), and for each other object of a class it
    returns a name for (an object of reprobuild's, whose attributes are then written too)."""
    if id(value) in _seen:
        return ["cycle"]
    seen = _seen | {id(value)}

    def form(v: Any) -> Any:
        return value_form(v, code, seen)

    if value is None or isinstance(value, (bool, int, str, float, complex, bytes)) or value is Ellipsis:
        return _constant(value)
    if isinstance(value, np.ndarray):
        return ["ndarray", array_digest(value)]
    if isinstance(value, np.generic):
        return ["scalar", np.dtype(value.dtype).str, sha256_hex(value.tobytes())]
    if isinstance(value, np.dtype):
        return ["dtype", value.name, value.str]
    if isinstance(value, enum.Enum):
        return ["enum", portable(type(value)), value.name, form(value.value)]
    if isinstance(value, (tuple, list)):
        return [type(value).__name__, [form(v) for v in value]]
    if isinstance(value, (set, frozenset)):
        return ["set", sorted((form(v) for v in value), key=repr)]
    if isinstance(value, (dict, types.MappingProxyType)):
        return ["dict", sorted(([form(k), form(v)] for k, v in value.items()), key=repr)]
    if isinstance(value, types.ModuleType):
        return ["module", value.__name__]
    if isinstance(value, functools.partial):
        return ["partial", form(value.func), form(value.args), form(value.keywords)]
    if isinstance(value, (staticmethod, classmethod)):
        return form(value.__func__)
    if hasattr(value, "__wrapped__") and callable(value):
        return ["wrapped", form(value.__wrapped__)]
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return ["code", code(value) or portable(value)]
    name = code(type(value))
    if name is None:
        return ["object", portable(type(value))]
    state = {f.name: getattr(value, f.name) for f in fields(value)} if is_dataclass(value) else \
        dict(getattr(value, "__dict__", {}))
    return ["object", name, form(state)]
