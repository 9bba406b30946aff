"""No CUDA tactic writes outside its outputs and workspace, or into its inputs.

A kernel that writes past its buffer corrupts whatever the allocator put next to it: another layer's tensor, or the
memory of a framework sharing the GPU (a PyTorch model's buffers, whose next gather then fails far from the cause).
Each tactic runs on every case the pins use, with each input, output and the workspace carved out of a larger
buffer whose margins hold a known byte pattern; afterwards the margins must hold it still, and the inputs their
values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from reprobuild.core.dtypes import FLOATS, np_dtype
from reprobuild.kernels.identity import shown_label
from reprobuild.registry import default_registry
from tests.helpers import CUDA_SKIP
from tests.kernels.pin_tactics import hand_written_cases, op_cases, tactic_variants

#: Bytes of guard on each side of every buffer (a 16-byte-aligned size, so buffers keep their alignment), and the
#: pattern they hold.
GUARD = 4096
PATTERN = 0xA5


class Guarded:
    """A device array of ``shape`` and ``dtype`` with GUARD pattern bytes on each side."""

    def __init__(self, xp: Any, shape: tuple[int, ...], dtype: Any, fill: Any = None) -> None:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self.raw = xp.full(GUARD + nbytes + GUARD, PATTERN, dtype=xp.uint8)
        self.array = self.raw[GUARD:GUARD + nbytes].view(dtype).reshape(shape)
        if fill is not None:
            self.array[...] = fill

    def intact(self) -> bool:
        host = self.raw.get()
        return bool((host[:GUARD] == PATTERN).all() and (host[-GUARD:] == PATTERN).all())


def _cases() -> list[Any]:
    return [*hand_written_cases(), *op_cases()]


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_on_cuda_no_tactic_writes_outside_its_buffers() -> None:
    from reprobuild.kernels.backend import get_backend

    backend = get_backend("cuda")
    xp = backend.xp
    registry = default_registry()
    problems: list[str] = []
    runs = 0
    for case_id, spec, activations in _cases():
        for tactic in registry.candidates(spec.op, "cuda"):
            if tactic.ineligibility(spec) is not None:
                continue
            for variant in tactic_variants(tactic, spec, backend):
                with backend.activate():
                    inputs = [Guarded(xp, x.shape, x.dtype, xp.asarray(x)) for x in activations]
                    outputs = [Guarded(xp, o.shape, np_dtype(o.dtype), np.nan if o.dtype in FLOATS else 0)
                               for o in spec.outputs]
                    aliases = bool(getattr(variant, "aliases_input", False))
                    if aliases:  # what the memory planner arranges: the output is the input's memory
                        outputs = [inputs[0]]
                    workspace = Guarded(xp, (max(variant.workspace_bytes(spec), 1),), np.uint8, 0xFF)
                    out_arrays = [g.array.reshape(o.shape) for g, o in zip(outputs, spec.outputs)]
                    variant.prepare(spec, backend)([g.array for g in inputs], out_arrays, workspace.array)
                    backend.synchronize()
                runs += 1
                where = f"{shown_label(variant)} on {case_id}"
                for role, buffers in (("input", inputs), ("output", outputs), ("workspace", [workspace])):
                    problems += [f"{where}: wrote outside {role} {i}" for i, g in enumerate(buffers) if not g.intact()]
                if not aliases:
                    problems += [f"{where}: changed input {i}" for i, (g, x) in enumerate(zip(inputs, activations))
                                 if g.array.get().tobytes() != np.ascontiguousarray(x).tobytes()]
    assert runs > 200, f"only {runs} tactic runs: the cases or the registry shrank"
    assert not problems, "\n".join(problems[:40])
