"""Reference tactics: every layer definition (``reprobuild.layers``) run as a tactic.

``CpuReference`` runs a layer's NumPy ``compute``; ``CudaReference`` runs the same code with CuPy on the GPU, so
every op has at least one tactic on each backend. Each is one tactic per op (family ``reference``, named for the
op), whose version is the op definition's ``version`` and whose digest covers that definition's code: changing
one op's reference changes no other op's pins.

The results are computed into new arrays and copied into the layer's output buffers; a result whose shape or
dtype differs from what the op's type inference promised is a bug in the definition, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import ALL
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.tactic import CUDA_DTYPES, Determinism, Kernel, LayerSpec, Tactic, positional
from reprobuild.layers import LayerDef, all_layers


class _Reference(Tactic):
    family = "reference"
    needs_activation = False

    def __init__(self, opdef: LayerDef) -> None:
        self.opdef = opdef
        self.ops = (opdef.op,)
        self.name = f"{self.backend}_{opdef.op}"
        self.version = opdef.version
        self.ops_by_name = opdef.ops_by_name

    def code_objects(self) -> list[Any]:
        return [type(self), type(self.opdef)]

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        xp, opdef = backend.xp, self.opdef
        consts = {i: backend.asarray(v) for i, v in layer.constants.items()}
        attrs = dict(layer.attrs)
        expected = [(tuple(o.shape), o.dtype) for o in layer.outputs]
        label, name = self.label, layer.name

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            with np.errstate(all="ignore"):  # ONNX semantics: overflow gives inf, 0/0 gives nan, quietly
                results = opdef.compute(xp, attrs, *positional(layer, consts, inputs))
            for i, (out, result) in enumerate(zip(outputs, results)):
                if tuple(result.shape) != expected[i][0] or str(result.dtype) != expected[i][1]:
                    raise AssertionError(
                        f"{label} on layer {name!r}: output {i} came out {list(result.shape)} {result.dtype}, but "
                        f"the op's type inference says {list(expected[i][0])} {expected[i][1]}: a bug in "
                        "reprobuild.ops")
                xp.copyto(out, result)

        return run


class CpuReference(_Reference):
    """The op's NumPy reference, on the CPU."""

    backend, source, priority = "cpu", "numpy", 200
    dtypes = ALL


class CudaReference(_Reference):
    """The op's reference run with CuPy on the GPU: CuPy's elementwise kernels, reductions (fixed-order trees,
    CUB where CuPy's accelerators say so) and cuBLAS, all run-to-run deterministic on one device."""

    backend, source, priority = "cuda", "cupy", 200
    dtypes = CUDA_DTYPES

    def __init__(self, opdef: LayerDef) -> None:
        super().__init__(opdef)
        if not opdef.cuda_deterministic:
            self.determinism = Determinism.NONE


def reference_tactics() -> list[Tactic]:
    """A CPU and a CUDA reference tactic for every built-in layer (ops computed at parse time, or lowered to
    another op, are no layers and have none)."""
    out: list[Tactic] = []
    for layer in all_layers():
        out += [CpuReference(layer), CudaReference(layer)]
    return out
