"""Fuse a matrix product's bias, residual and activation into one FusedGemm layer.

PyTorch exports ``nn.Linear`` on a 3-D input as MatMul(x, W^T) then Add(bias), and a transformer's feed-forward
block as that, a Relu, a second Linear and a residual Add: run as separate layers each re-reads and re-writes
the whole activation, and at small batches each is one more launch. Fused:

- MatMul(A, B) + bias [+ residual] [+ activation], with B a constant matrix (K, N), the bias a constant with N
  values along the last axis (shape (N,), (1, N), (1, 1, N), ...) whose Add keeps the product's shape;
- Gemm(A, B, C) with transA 0, alpha 1, beta 1, B and C constant, C of shape (N,) or (1, N), in float32 or
  float64 (where Gemm's single rounding equals MatMul then Add), when a residual Add or an activation follows
  (B is transposed on the host if transB is set);
- the same Gemm between two views, as GPT-2's ``Conv1D`` exports it (version 2): A a Reshape of X (..., K) to
  (rows, K) and the Gemm's one reader a Reshape of its (rows, N) back to (..., N): the FusedGemm reads X itself
  (it takes A as (..., M, K) rows) and writes the (..., N) tensor, so the residual Add after the second view fuses
  too, and the views go (the first stays where something else reads it).

The residual must have exactly the product's shape and dtype and not be a constant; every intermediate tensor
must be read by the fused layers alone and not be a network output. Activations are FusedConv's (Relu, Clip
with constant bounds, Sigmoid, SiLU). The FusedGemm keeps the ONNX nodes of every layer it replaces.
"""

from __future__ import annotations

import numpy as np

from reprobuild.core import symbolic
from reprobuild.ir import Layer, Network
from reprobuild.passes.fuse_conv_epilogue import epilogue_after, only_reader
from reprobuild.passes.pattern import GraphIndex, fresh_name, fuse_rounds

VERSION = 2  # 2: a Gemm between a row-merging Reshape and its inverse fuses, reading and writing around them

_FLOATS = ("bfloat16", "float16", "float32", "float64")


def _bias(index: GraphIndex, add: Layer, product_out: str, n: int) -> tuple[str, np.ndarray] | None:
    """The bias operand of ``add`` (its name and its N values), when ``add`` adds a constant that varies along
    the last axis only and keeps the product's shape."""
    if add.op != "Add" or len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
        return None
    other = add.inputs[1] if add.inputs[0] == product_out else add.inputs[0]
    value = index.const(other)
    out = index.tensor(product_out)
    if value is None or str(value.dtype) != out.dtype:
        return None
    if value.ndim == 0 or value.ndim > len(out.shape) or value.shape[-1] != n or value.size != n:
        return None
    if index.tensor(add.outputs[0]).shape != out.shape:
        return None
    return other, value


def _layer(name: str, fused: list[Layer], a: str, b: str, bias: str, residual: str | None, extra: dict,
           tail: str) -> Layer:
    attrs = {"activation": "", "activation_min": 0.0, "activation_max": 0.0, **extra}
    inputs = (a, b, bias, *((residual,) if residual is not None else ()))
    return Layer(name, "FusedGemm", inputs, (tail,), tuple(sorted(attrs.items())),
                 tuple(dict.fromkeys(n for f in fused for n in f.origin)))


def _bias_constant(index: GraphIndex, name: str, owner: str, value: np.ndarray,
                   constants: dict[str, np.ndarray]) -> str:
    """``name`` when the bias already has shape (N,), else a new (N,) constant with its values."""
    if value.ndim == 1:
        return name
    new = fresh_name(index, owner + ":bias")
    constants[new] = np.ascontiguousarray(value.reshape(-1))
    return new


def _fuse_matmul(network: Network, index: GraphIndex, mm: Layer) -> tuple[list[Layer], Layer, dict] | None:
    a, b = mm.inputs
    weight, out = index.const(b), index.tensor(mm.outputs[0])
    if weight is None or weight.ndim != 2 or index.const(a) is not None or len(index.tensor(a).shape) < 2:
        return None
    if out.dtype not in _FLOATS:
        return None
    add = only_reader(network, index, mm.outputs[0])
    found = _bias(index, add, mm.outputs[0], weight.shape[1]) if add is not None else None
    if add is None or found is None:
        return None
    constants: dict[str, np.ndarray] = {}
    bias = _bias_constant(index, found[0], mm.name, found[1], constants)
    rest, residual, extra, tail = epilogue_after(network, index, add.outputs[0])
    fused = [mm, add, *rest]
    return fused, _layer(mm.name, fused, a, b, bias, residual, extra, tail), constants


def _merged_rows(index: GraphIndex, a: str, rows: int) -> Layer | None:
    """The Reshape writing ``a`` (rows, K) from a tensor (..., K) of as many rows, or None."""
    view = index.producer(a)
    if view is None or view.op != "Reshape" or len(view.inputs) != 1 or index.is_output(a):
        return None
    src, dst = index.tensor(view.inputs[0]).shape, index.tensor(a).shape
    if len(src) < 2 or len(dst) != 2 or src[-1] != dst[1] or symbolic.prod(src[:-1]) != rows:
        return None
    return view


def _split_rows(network: Network, index: GraphIndex, out: str, lead: tuple[int, ...]) -> Layer | None:
    """The Reshape that is the one reader of ``out`` (rows, N) and gives it back the leading dims ``lead``."""
    view = only_reader(network, index, out)
    if view is None or view.op != "Reshape" or len(view.inputs) != 1:
        return None
    n = index.tensor(out).shape[1]
    return view if tuple(index.tensor(view.outputs[0]).shape) == (*lead, n) else None


def _fuse_gemm(network: Network, index: GraphIndex, gemm: Layer) -> tuple[list[Layer], Layer, dict] | None:
    if len(gemm.inputs) != 3 or gemm.attr("transA", 0) or gemm.attr("alpha", 1.0) != 1.0:
        return None
    if gemm.attr("beta", 1.0) != 1.0 or index.tensor(gemm.outputs[0]).dtype not in ("float32", "float64"):
        return None
    a, b, c = gemm.inputs
    weight, bias = index.const(b), index.const(c)
    if weight is None or bias is None or index.const(a) is not None:
        return None
    rows, n = index.tensor(gemm.outputs[0]).shape
    if bias.shape not in ((n,), (1, n)):
        return None
    views: list[Layer] = []
    tail = gemm.outputs[0]
    merge = _merged_rows(index, a, rows)
    split = _split_rows(network, index, tail, tuple(index.tensor(merge.inputs[0]).shape[:-1])) if merge else None
    if merge is not None and split is not None:  # X (..., K) -> (rows, K) -> Gemm -> (rows, N) -> (..., N)
        a, tail = merge.inputs[0], split.outputs[0]
        views = [split] + ([merge] if index.single_use(merge.outputs[0]) else [])
    rest, residual, extra, tail = epilogue_after(network, index, tail)
    if not rest and not views:
        return None  # a Gemm with nothing after it already runs its bias in one launch
    constants: dict[str, np.ndarray] = {}
    if gemm.attr("transB", 0):
        b = fresh_name(index, gemm.name + ":B")
        constants[b] = np.ascontiguousarray(weight.T)
    bias_name = _bias_constant(index, c, gemm.name, bias, constants)
    fused = [*views[1:], gemm, views[0], *rest] if views else [gemm, *rest]
    return fused, _layer(gemm.name, fused, a, b, bias_name, residual, extra, tail), constants


def fuse_gemm_epilogue(network: Network) -> Network:
    """Every matrix product's epilogue fused, in layer order; a chain that shares a layer with an earlier one is
    looked at again on the rewritten network."""
    return fuse_rounds(network, {"MatMul": _fuse_matmul, "Gemm": _fuse_gemm})
