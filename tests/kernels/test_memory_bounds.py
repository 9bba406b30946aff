"""No CUDA tactic writes outside its outputs and workspace, or into its inputs.

A kernel that writes past its buffer corrupts whatever the allocator put next to it: another layer's tensor, or the
memory of a framework sharing the GPU (a PyTorch model's buffers, whose next gather then fails far from the cause).
Each tactic runs on every case the pins use, with each input, output and the workspace carved out of a larger
buffer whose margins hold a known byte pattern; afterwards the margins must hold it still, and the inputs their
values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reprobuild.core.dtypes import FLOATS, np_dtype
from reprobuild.kernels.identity import shown_label
from reprobuild.registry import default_registry
from tests.helpers import CUDA_SKIP, REPO
from tests.kernels.pin_tactics import hand_written_cases, op_cases, tactic_variants

#: Bytes of guard on each side of every buffer (a 16-byte-aligned size, so buffers keep their alignment), and the
#: pattern they hold.
GUARD = 4096
PATTERN = 0xA5
TRANSFORMERS = Path(REPO) / "tests" / "data" / "transformers"


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


def _guarded_run(backend: Any, variant: Any, spec: Any, activations: list[np.ndarray], where: str) -> list[str]:
    """Run one tactic (variant) on guarded buffers; what it wrote where it must not."""
    xp = backend.xp
    with backend.activate():
        inputs = [Guarded(xp, x.shape, x.dtype, xp.asarray(x)) for x in activations]
        outputs = [Guarded(xp, o.shape, np_dtype(o.dtype), np.nan if o.dtype in FLOATS else 0) for o in spec.outputs]
        aliases = bool(getattr(variant, "aliases_input", False))
        if aliases:  # what the memory planner arranges: the output is the input's memory
            outputs = [inputs[0]]
        workspace = Guarded(xp, (max(variant.workspace_bytes(spec), 1),), np.uint8, 0xFF)
        out_arrays = [g.array.reshape(o.shape) for g, o in zip(outputs, spec.outputs)]
        variant.prepare(spec, backend)([g.array for g in inputs], out_arrays, workspace.array)
        backend.synchronize()
    problems = []
    for role, buffers in (("input", inputs), ("output", outputs), ("workspace", [workspace])):
        problems += [f"{where}: wrote outside {role} {i}" for i, g in enumerate(buffers) if not g.intact()]
    if not aliases:
        problems += [f"{where}: changed input {i}" for i, (g, x) in enumerate(zip(inputs, activations))
                     if g.array.get().tobytes() != np.ascontiguousarray(x).tobytes()]
    return problems


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_on_cuda_no_tactic_writes_outside_its_buffers() -> None:
    from reprobuild.kernels.backend import get_backend

    backend = get_backend("cuda")
    registry = default_registry()
    problems: list[str] = []
    runs = 0
    for case_id, spec, activations in _cases():
        for tactic in registry.candidates(spec.op, "cuda"):
            if tactic.ineligibility(spec) is not None:
                continue
            for variant in tactic_variants(tactic, spec, backend):
                runs += 1
                problems += _guarded_run(backend, variant, spec, activations, f"{shown_label(variant)} on {case_id}")
    assert runs > 200, f"only {runs} tactic runs: the cases or the registry shrank"
    assert not problems, "\n".join(problems[:40])


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("model", sorted(p.stem for p in TRANSFORMERS.glob("*.onnx")))
def test_on_cuda_no_candidate_writes_outside_its_buffers_on_the_transformer_exports(model: str,
                                                                                  precision: str) -> None:
    """Every candidate a build would time, on every layer of each transformer export, with the inputs a build
    times it on (``selection.random_inputs``): the shapes where PyTorch's memory was found corrupted beside a
    BERT build (issue 22's benchmark)."""
    from reprobuild.builder.config import BuilderConfig
    from reprobuild.builder.selection import layer_spec, random_inputs
    from reprobuild.frontend import network_from_onnx_path
    from reprobuild.kernels.backend import get_backend
    from reprobuild.passes import run_passes

    backend = get_backend("cuda")
    network, _ = network_from_onnx_path(str(TRANSFORMERS / f"{model}.onnx"))
    network = run_passes(network, BuilderConfig(backend="cuda", precision=precision).effective_passes)  # type: ignore[arg-type]
    registry = default_registry()
    problems: list[str] = []
    for i, layer in enumerate(network.layers):
        spec = layer_spec(network, i)
        activations = random_inputs(spec, i)
        for tactic in registry.candidates(spec.op, "cuda"):
            if tactic.ineligibility(spec) is not None or tactic.device_ineligibility(backend.compute_capability):
                continue
            for variant in tactic_variants(tactic, spec, backend):
                problems += _guarded_run(backend, variant, spec, activations,
                                         f"{shown_label(variant)} on {layer.name} ({layer.op})")
    assert not problems, "\n".join(problems[:40])
