"""Issue 22's transformer exports (``tests/data/transformers``: BERT, GPT-2, Llama, Swin, ViT) against the
capturable tactics, on the CPU:

- every layer of every export, at fp32, fp16 and bf16, has an eligible capturable CUDA tactic (FusedAttention,
  whose kernel is its own, aside), so each engine can run as one CUDA graph;
- every layer the new tactics (index, logic, reduce, RMSNormalization) take at fp32 runs on the host
  (``host_cuda``) on the model's real intermediate tensors (computed layer by layer by the CPU tactics) and gives
  the reference's output: bit for bit for data movement and logic, within float32 tolerance for
  RMSNormalization (``slow``: a g++ build per generated kernel).

The exports come from another part of issue 22; without them this file skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reprobuild.builder.selection import layer_spec
from reprobuild.core.dtypes import np_dtype
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ir import Network
from reprobuild.kernels.backend import get_backend
from reprobuild.passes import DEFAULT_PASSES, run_passes
from reprobuild.passes.precision import reduce_precision
from reprobuild.registry import default_registry
from tests.helpers import REPO
from tests.kernels.host_cuda import HostBackend, host_kernels
from tests.kernels.pin_tactics import run_tactic
from tests.kernels.test_capture_host import run_host

DATA = os.path.join(REPO, "tests", "data", "transformers")
MODELS = sorted(p.stem for p in Path(DATA).glob("*.onnx")) if os.path.isdir(DATA) else []
NEW_FAMILIES = ("index", "logic", "reduce")
#: The ops whose capturable CUDA kernel is another tactic family's work (issue 22's attention kernel).
ELSEWHERE = ("FusedAttention",)
TOLERANCE = {"float32": (1e-5, 1e-6)}

pytestmark = pytest.mark.skipif(not MODELS, reason=f"no transformer exports in {DATA}")


def network(model: str, precision: str) -> Network:
    net, _ = network_from_onnx_bytes(Path(DATA, f"{model}.onnx").read_bytes())
    net = run_passes(net, DEFAULT_PASSES)
    return net if precision == "fp32" else reduce_precision(net, {"fp16": "float16", "bf16": "bfloat16"}[precision])


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("model", MODELS)
def test_every_layer_has_a_capturable_cuda_tactic(model: str, precision: str) -> None:
    net, registry = network(model, precision), default_registry()
    eager = []
    for i, layer in enumerate(net.layers):
        spec = layer_spec(net, i)
        if spec.op in ELSEWHERE:
            continue
        reasons = {t.name: t.ineligibility(spec) for t in registry.candidates(spec.op, "cuda") if t.capturable}
        if not any(r is None for r in reasons.values()):
            eager.append(f"{layer.name} ({spec.op} {[s.dtype for s in spec.inputs]}): {reasons}")
    assert not eager, "\n".join(eager)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostBackend]:
    with host_kernels(tmp_path, monkeypatch) as backend:
        yield backend


def _feeds(net: Network, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for t in net.inputs:
        if t.name in net.constants:
            continue
        if t.name == "attention_mask":  # right-padded rows, none fully masked
            feeds[t.name] = np.ones(t.shape, np_dtype(t.dtype))
            feeds[t.name][..., -3:] = 0
        elif np.dtype(np_dtype(t.dtype)).kind in "iu":
            feeds[t.name] = rng.integers(0, 1000, t.shape).astype(np_dtype(t.dtype))
        else:
            feeds[t.name] = rng.standard_normal(t.shape).astype(np.float32).astype(np_dtype(t.dtype))
    return feeds


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_the_new_kernels_compute_the_exports_layers(model: str, host: HostBackend) -> None:
    net, registry, cpu = network(model, "fp32"), default_registry(), get_backend("cpu")
    values: dict[str, np.ndarray] = {**net.constants, **_feeds(net, np.random.default_rng(0))}
    for i, layer in enumerate(net.layers):
        spec = layer_spec(net, i)
        activations = [values[n] for n in layer.inputs if n not in net.constants]
        reference = next(t for t in registry.candidates(spec.op, "cpu") if t.ineligibility(spec) is None)
        want = run_tactic(reference, spec, activations, cpu)
        values.update(zip(layer.outputs, want))
        for tactic in registry.candidates(spec.op, "cuda"):
            if tactic.ineligibility(spec) is not None or not (
                    tactic.family in NEW_FAMILIES or tactic.name == "cuda_rms_rowwise"):
                continue
            for got, expected in zip(run_host(tactic, spec, activations, host), want):
                what = f"{tactic.label} on {layer.name} ({spec.op})"
                if got.dtype.kind in "biu" or tactic.family in ("index", "logic"):
                    np.testing.assert_array_equal(got, expected, err_msg=what)
                else:
                    rtol, atol = TOLERANCE[str(got.dtype)]
                    np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=rtol,
                                               atol=atol, err_msg=what)
