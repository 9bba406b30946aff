"""What to do about an input of the wrong shape: the advice depends on whether the model's dimension is dynamic.

A rebuild with ``--input-shape`` changes only the dimensions the model declares dynamic (a symbol such as
``'N'``); a static dimension is part of the model, and no build option changes it. Pure functions, so the runtime
and the CLI give the same advice, and a test covers every case without an engine.
"""

from __future__ import annotations

from collections.abc import Sequence

#: A declared dimension: an int is static; a str (the symbol, '?' when unnamed) or None is dynamic.
DeclaredDim = int | str | None


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def _is_static(dim: DeclaredDim) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool)


def _symbol(dim: DeclaredDim) -> str:
    return "?" if dim is None else str(dim)


def _axes(axes: Sequence[int]) -> str:
    return ("axis " if len(axes) == 1 else "axes ") + ", ".join(map(str, axes))


def shape_advice(binding_name: str, declared_dims: Sequence[DeclaredDim] | None, built_shape: Sequence[int],
                 given_shape: Sequence[int]) -> str:
    """How to run ``binding_name`` with an array of ``given_shape`` when the engine was built for ``built_shape``.

    ``declared_dims`` is the model's declared shape of that input (ints static, symbols or None dynamic), or None
    when it is not known (an engine that does not record it): the advice then names both cases. The text is one
    or two sentences with concrete ``--input-shape NAME=AxBxC`` values, to follow "input X has shape ...; the
    engine was built for ...". A rank that differs can never be fixed by a rebuild; that advice comes first."""
    built, given = tuple(int(d) for d in built_shape), tuple(int(d) for d in given_shape)
    if len(given) != len(built):
        hint = ""
        if len(given) + 1 == len(built) and built[0] == 1 and given == built[1:]:
            hint = " (it lacks the batch dimension: array[None] adds it)"
        return (f"The engine takes a rank-{len(built)} array for {binding_name!r} and this one has rank "
                f"{len(given)}; reshape it to {_dims(built)}{hint}")
    differing = [i for i, (b, g) in enumerate(zip(built, given)) if b != g]
    if not differing:
        return f"The shape {_dims(given)} is the one the engine was built for; nothing needs to change"
    option = f"--input-shape {binding_name}={_dims(given)}"
    if declared_dims is None or len(declared_dims) != len(built):
        return (f"The engine computes only {_dims(built)}. If the model declares {_axes(differing)} dynamic, "
                f"rebuild it with {option}; if the model's dimension is static, export the model with a dynamic "
                f"dimension there first (this engine does not record which dimensions the model declares dynamic)")
    static = [i for i in differing if _is_static(declared_dims[i])]
    if static:
        sizes = ", ".join(f"{declared_dims[i]} at axis {i}" for i in static)
        return (f"The model declares {_axes(static)} of {binding_name!r} static ({sizes}), so the engine computes "
                f"only that size and no rebuild changes it; give an array of shape {_dims(built)}, or export the "
                f"model with a dynamic dimension there and rebuild with {option}")
    symbols = ", ".join(f"{_symbol(declared_dims[i])!r} at axis {i}" for i in differing)
    return (f"The model declares {_axes(differing)} of {binding_name!r} dynamic ({symbols}); rebuild the engine "
            f"with {option} to run this shape")

