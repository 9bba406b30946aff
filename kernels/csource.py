"""The source closure of a CUDA kernel symbol: exactly the top-level code of a translation unit that the symbol
reaches, so a kernel's identity changes when what it compiles from changes, and only then.

A translation unit (a ``.cu`` file with the package headers it includes, each once) is cut into top-level items:
a function or template definition, a declaration, a struct, a typedef, a ``#define``, a top-level invocation of a
function-like macro (``CONV_MMA(128, 128, 2, 4)``, which defines the kernel its expansion declares). Each item
knows the names it defines, the identifiers it uses and the ``#if`` branches it sits in. The closure of a symbol is
the items that define it, then, transitively, every item defining a name one of them uses (an overloaded name
reaches every overload; a macro defined in two branches reaches both), plus the unit's top-level items that define
nothing (a ``#pragma``, a ``static_assert``), in the unit's order, as normalized token text (``ctokens.py``: no
comments, one space between tokens). Adding a kernel, a block shape or a comment to a file therefore changes no
other kernel's closure; editing anything a kernel reaches changes its closure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from reprobuild.core.errors import BuildError
from reprobuild.kernels.ctokens import Directive, identifiers, is_identifier, tokenize

#: Identifiers followed by a parenthesized argument that are attributes, not the declared name.
_ATTRIBUTES = frozenset({"__launch_bounds__", "__align__", "__attribute__", "__declspec", "alignas", "decltype",
                         "__cluster_dims__", "__maxnreg__", "static_assert"})
_AGGREGATES = frozenset({"struct", "class", "union", "enum"})
#: Words that qualify a declaration and never name what it declares.
_KEYWORDS = frozenset({"extern", "static", "const", "constexpr", "inline", "volatile", "unsigned", "signed", "long",
                       "short", "int", "char", "float", "double", "void", "bool", "auto", "__device__", "__global__",
                       "__host__", "__forceinline__", "__noinline__", "__constant__", "__shared__", "__managed__",
                       "__restrict__", "namespace"})


@dataclass(frozen=True)
class Item:
    """One top-level item: its normalized text (after the ``#if`` branches it sits in), the names it defines and
    the identifiers it uses."""

    text: str
    defines: frozenset[str]
    uses: frozenset[str]


@dataclass(frozen=True)
class _Macro:
    params: tuple[str, ...] | None  # None: an object-like macro
    body: tuple[str, ...]


@dataclass
class _Unit:
    read: Callable[[str], str]
    headers: frozenset[str]
    items: list[Item] = field(default_factory=list)
    macros: dict[str, _Macro] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    branches: list[list[str]] = field(default_factory=list)  # per open #if: its conditions so far

    @property
    def context(self) -> str:
        return "".join(f"[{' | '.join(conditions)}] " for conditions in self.branches)


def _matching(tokens: Sequence[str], start: int, open_: str = "(", close: str = ")") -> int:
    """The index of the token closing the bracket at ``start`` (the last index if it is never closed)."""
    depth = 0
    for i in range(start, len(tokens)):
        depth += (tokens[i] == open_) - (tokens[i] == close)
        if depth == 0:
            return i
    return len(tokens) - 1


def _without_template_header(tokens: Sequence[str]) -> list[str]:
    out, i = [], 0
    while i < len(tokens):
        if tokens[i] == "template" and i + 1 < len(tokens) and tokens[i + 1] == "<":
            depth, i = 0, i + 1
            while i < len(tokens):
                depth += {"<": 1, ">": -1, ">>": -2}.get(tokens[i], 0)
                i += 1
                if depth <= 0:
                    break
            continue
        out.append(tokens[i])
        i += 1
    return out


def _function_name(head: Sequence[str]) -> str | None:
    """The name of the function ``head`` (a declaration up to its body) declares: the identifier before its first
    parenthesis that is not an attribute's; None for a declaration that is no function."""
    i = 0
    while i < len(head):
        if head[i] in ("=", "[", ";"):
            return None
        if head[i] == "(":
            if i > 0 and is_identifier(head[i - 1]) and head[i - 1] not in _ATTRIBUTES:
                return head[i - 1]
            if i > 0 and head[i - 1] == "static_assert":
                return None
            i = _matching(head, i)
        i += 1
    return None


def _body_start(tokens: Sequence[str]) -> int:
    return tokens.index("{") if "{" in tokens else len(tokens)


def _declared_names(tokens: Sequence[str]) -> set[str]:
    """The names a top-level declaration or definition (its tokens) introduces."""
    head = _without_template_header(tokens)
    if not head or head[0] == "static_assert":
        return set()
    if head[0] == "typedef":
        return set([t for t in head if is_identifier(t)][-1:])
    if head[0] == "using" and len(head) > 1:
        return {head[1]}
    pre = head[:_body_start(head)]
    function = _function_name(pre)
    if function is not None:
        return {function}
    if any(t in _AGGREGATES for t in pre):
        k = next(i for i, t in enumerate(pre) if t in _AGGREGATES)
        tag = [t for t in pre[k + 1:] if is_identifier(t) and t not in _AGGREGATES and t not in _ATTRIBUTES]
        declared = set(tag[:1])
        if "{" in head:  # declarators after the body: struct S {...} s;
            declared.update(t for t in head[_matching(head, head.index("{"), "{", "}") + 1:] if is_identifier(t))
        return declared
    names: set[str] = set()
    part: list[str] = []  # variables: the last identifier of each declarator before its initializer or bounds
    depth, skipping = 0, False
    for token in [*head, ";"]:
        depth += (token in ("(", "[", "{")) - (token in (")", "]", "}"))
        if depth > 0 or (depth == 0 and token in (")", "]", "}")):
            skipping = skipping or token in ("[", "{")
            continue
        if token in (",", ";", "="):
            if not skipping or part:
                names.update([t for t in part if is_identifier(t) and t not in _ATTRIBUTES and t not in _KEYWORDS
                              ][-1:])
            part, skipping = [], token == "="
            if token == ";":
                break
        elif not skipping:
            part.append(token)
    return names


def _ends_at_brace(tokens: Sequence[str]) -> bool:
    """Whether a top-level item ends with the brace that just closed it (a function body) rather than going on to
    a ``;`` (an aggregate, an initializer)."""
    pre = _without_template_header(tokens[:_body_start(tokens)])
    return _function_name(pre) is not None or not any(t in _AGGREGATES or t == "=" for t in pre)


def _arguments(tokens: Sequence[str]) -> list[list[str]]:
    """The comma-separated arguments between the parentheses that ``tokens`` starts and ends with."""
    args: list[list[str]] = [[]]
    depth = 0
    for token in tokens[1:-1]:
        if token == "," and depth == 0:
            args.append([])
            continue
        depth += (token in ("(", "[", "{")) - (token in (")", "]", "}"))
        args[-1].append(token)
    return args


def _expand(macro: _Macro, args: list[list[str]]) -> list[str]:
    """A function-like macro's body with its arguments substituted, ``##`` pasted and ``#param`` stringified."""
    params = dict(zip(macro.params or (), args))
    out: list[str] = []
    body = list(macro.body)
    i = 0
    while i < len(body):
        token = body[i]
        if token == "#" and i + 1 < len(body) and body[i + 1] in params:
            out.append('"' + " ".join(params[body[i + 1]]) + '"')
            i += 2
        elif token == "##" and out and i + 1 < len(body):
            following = params.get(body[i + 1], [body[i + 1]])
            out[-1] += following[0] if following else ""
            out.extend(following[1:])
            i += 2
        else:
            out.extend(params.get(token, [token]))
            i += 1
    return out


def _split_items(tokens: Sequence[str], macros: dict[str, _Macro]) -> list[list[str]]:
    """Top-level code (directives inside definitions kept as single tokens) cut into items."""
    items: list[list[str]] = []
    current: list[str] = []
    depth = paren = 0
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not current and tokens[i:i + 3] == ["extern", '"C"', "{"]:  # a linkage block: its items, each extern "C"
            end = _matching(tokens, i + 2, "{", "}")
            items.extend(["extern", '"C"', *item] for item in _split_items(tokens[i + 3:end], macros))
            i = end + 1
            continue
        macro = macros.get(token)
        if not current and macro is not None and macro.params is not None and tokens[i + 1:i + 2] == ["("]:
            end = _matching(tokens, i + 1)
            end += tokens[end + 1:end + 2] == [";"]
            items.append(list(tokens[i:end + 1]))
            i = end + 1
            continue
        current.append(token)
        depth += (token == "{") - (token == "}")
        paren += (token == "(") - (token == ")")
        if depth == 0 and paren == 0 and (token == ";" or (token == "}" and _ends_at_brace(current))):
            items.append(current)
            current = []
        i += 1
    if current:
        items.append(current)
    return items


def _code_item(tokens: list[str], unit: _Unit) -> Item:
    macro = unit.macros.get(tokens[0])
    used = [u for t in tokens for u in identifiers(t)]
    if macro is not None and macro.params is not None and tokens[1:2] == ["("]:
        expansion = _expand(macro, _arguments(tokens[1:_matching(tokens, 1) + 1]))
        defined = set().union(set(), *(_declared_names(t) for t in _split_items(expansion, unit.macros)))
        used += [u for t in expansion for u in identifiers(t)]
    else:
        defined = _declared_names(tokens)
    return Item(unit.context + " ".join(tokens), frozenset(defined), frozenset(set(used) - defined))


def _directive(d: Directive, unit: _Unit) -> None:
    if d.name == "include":
        name = d.tokens[0].strip('"<>') if d.tokens else ""
        if name not in unit.headers:
            raise BuildError(f"a CUDA source includes {name!r}; the package kernels may include only "
                             f"{', '.join(sorted(unit.headers))}")
        _read_into(name, unit.read(name), unit)
    elif d.name in ("if", "ifdef", "ifndef"):
        unit.branches.append([d.text])
    elif d.name in ("elif", "else") and unit.branches:
        unit.branches[-1].append(d.text)
    elif d.name == "endif" and unit.branches:
        unit.branches.pop()
    elif d.name in ("define", "undef") and d.tokens:
        name, rest = d.tokens[0], list(d.tokens[1:])
        params: tuple[str, ...] | None = None
        if d.function_like:
            end = _matching(rest, 0)
            params = tuple(t for t in rest[1:end] if t != ",")
            rest = rest[end + 1:]
        if d.name == "define":
            unit.macros[name] = _Macro(params, tuple(rest))
        else:
            unit.macros.pop(name, None)
        uses = {t for t in rest if is_identifier(t)} - set(params or ()) - {name}
        unit.items.append(Item(unit.context + d.text, frozenset({name}), frozenset(uses)))
    elif not (d.name == "pragma" and d.tokens[:1] == ("once",)) and (d.name or d.tokens):
        unit.items.append(Item(unit.context + d.text, frozenset(), frozenset(
            t for t in d.tokens if is_identifier(t))))


def _read_into(name: str, text: str, unit: _Unit) -> None:
    if name in unit.seen:  # every package header is #pragma once
        return
    unit.seen.add(name)
    pending: list[str] = []
    depth = 0  # of braces and parentheses in pending
    for token in [*tokenize(text), None]:
        if isinstance(token, Directive) and depth:  # inside a definition (#pragma unroll): part of its text
            pending.append(token.text)
        elif isinstance(token, str):
            pending.append(token)
            depth += (token in ("{", "(")) - (token in ("}", ")"))
        else:
            unit.items.extend(_code_item(item, unit) for item in _split_items(pending, unit.macros))
            pending = []
            if token is not None:
                _directive(token, unit)


def translation_unit(name: str, text: str, read: Callable[[str], str], headers: Iterable[str]) -> list[Item]:
    """The top-level items of ``text`` (called ``name``) with the ``headers`` it includes (read by ``read``)."""
    unit = _Unit(read, frozenset(headers))
    _read_into(name, text, unit)
    return unit.items


def closure(items: Sequence[Item], roots: Iterable[str], where: str) -> list[str]:
    """The normalized text of every item the ``roots`` reach (see the module docstring), in the unit's order."""
    wanted = sorted(set(roots))
    by_name: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        for name in item.defines:
            by_name.setdefault(name, []).append(i)
    missing = [r for r in wanted if r not in by_name]
    if missing:
        raise BuildError(f"{where} defines no {', '.join(missing)}; a tactic's cuda_kernels name the kernels it "
                         "launches, each with the file that defines it")
    reached = {i for i, item in enumerate(items) if not item.defines}
    pending = [i for r in wanted for i in by_name[r]]
    while pending:
        i = pending.pop()
        if i not in reached:
            reached.add(i)
            pending.extend(j for name in items[i].uses for j in by_name.get(name, ()))
    return [items[i].text for i in sorted(reached)]
