"""The ONNX half of :mod:`reprobuild.layers._rnn_act` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from reprobuild.layers._rnn_act import ACTIVATIONS
from reprobuild.layers.base import OpError

_BY_LOWER = {name.lower(): name for name in ACTIVATIONS}


def canonical_activations(given: Sequence[str] | None, alphas: Sequence[float] | None,
                          betas: Sequence[float] | None, defaults: Sequence[str],
                          directions: int) -> tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]:
    """(names, alphas, betas), one entry per activation of every direction (forward first); 0.0 where an
    activation has no alpha or beta."""
    per_dir = len(defaults)
    names = list(given) if given else list(defaults) * directions
    if len(names) != per_dir * directions:
        raise OpError(f"activations lists {len(names)} functions ({', '.join(names)}); this op takes {per_dir} per "
                      f"direction, {per_dir * directions} for {directions} direction(s)")
    resolved = []
    for name in names:
        canonical = _BY_LOWER.get(str(name).lower())
        if canonical is None:
            raise OpError(f"activation {name!r} is not one ONNX defines for recurrent ops; use one of "
                          f"{', '.join(ACTIVATIONS)}")
        resolved.append(canonical)
    alpha_out = _consume(resolved, list(alphas or ()), 0, "activation_alpha")
    beta_out = _consume(resolved, list(betas or ()), 1, "activation_beta")
    return tuple(resolved), alpha_out, beta_out


def _consume(names: Sequence[str], values: list[float], which: int, attr: str) -> tuple[float, ...]:
    takers = [i for i, n in enumerate(names) if ACTIVATIONS[n][which]]
    if len(values) > len(takers):
        # one value per activation, by position, is the other reading: accepted where both readings agree
        if len(values) != len(names) or any(values[i] != values[k] for k, i in enumerate(takers)):
            raise OpError(f"{attr} has {len(values)} value(s) but only {len(takers)} of the activations "
                          f"({', '.join(names)}) take one; onnxruntime gives them to those activations in order, "
                          "a one-per-activation reading by position gives other values. Keep only the values of "
                          "the activations that use them")
        values = [values[i] for i in takers]
    out, it = [], iter(values)
    for name in names:
        if not ACTIVATIONS[name][which]:
            out.append(0.0)
            continue
        value = next(it, None)
        if value is None:
            value = ACTIVATIONS[name][2 + which]
        if value is None:
            raise OpError(f"activation {name} needs an {attr} value: give it explicitly (its default is not the "
                          "same in ONNX and onnxruntime)")
        out.append(float(value))
    return tuple(out)
