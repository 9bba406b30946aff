"""Evaluate a layer on constant inputs with the CPU tactics: how constants are folded at build time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reprobuild.errors import ModelError
from reprobuild.ir import Layer, TensorInfo
from reprobuild.kernels.backend import get_backend
from reprobuild.kernels.tactic import LayerSpec, TensorSig, default_registry


def evaluate_layer(layer: Layer, inputs: Sequence[np.ndarray], outputs: Sequence[TensorInfo]) -> list[np.ndarray]:
    """Run ``layer`` on host arrays; the first input goes in as an activation, the rest as constants.

    Uses the highest-priority CPU tactic that computes (alias tactics only relabel memory, so they are skipped).
    """
    spec = LayerSpec(
        name=layer.name,
        op=layer.op,
        attrs=layer.attributes,
        inputs=tuple(TensorSig(tuple(a.shape), np.dtype(a.dtype).name) for a in inputs),
        outputs=tuple(TensorSig(o.shape, o.dtype) for o in outputs),
        constants={i: np.asarray(a) for i, a in enumerate(inputs) if i > 0},
    )
    reasons = []
    for tactic in default_registry().candidates(layer.op, "cpu"):
        if getattr(tactic, "aliases_input", False):
            continue
        reason = tactic.ineligibility(spec)
        if reason is None:
            break
        reasons.append(f"{tactic.name}: {reason}")
    else:
        raise ModelError(
            f"cannot fold layer {layer.name!r} ({layer.op}) whose inputs are all constants: "
            + ("; ".join(reasons) or "no CPU tactic implements this op")
        )
    backend = get_backend("cpu")
    kernel = tactic.prepare(spec, backend)
    results = [np.empty(o.shape, dtype=o.dtype) for o in outputs]
    workspace = np.empty(tactic.workspace_bytes(spec), dtype=np.uint8)
    kernel([np.ascontiguousarray(inputs[0])], results, workspace)
    return results
