"""Recognise scaled-dot-product attention written out in primitive ops and make it one FusedAttention layer.

The forms the exporters write (each found from its Softmax, walking back to the first product):

- HF BERT (eager): MatMul(Q, Transpose(K)) -> Div by sqrt(d) (or Mul by 1/sqrt(d)) -> Add(extended mask) ->
  Softmax -> MatMul(., V);
- GPT-2 (eager): MatMul(Q, K^T) -> Div -> Where(causal mask, scores, finfo.min) [-> Add(mask)] -> Softmax -> MatMul;
- torch's SDPA as the ONNX exporters decompose it: MatMul(Mul(Q, sqrt(s)), Mul(K^T, sqrt(s))) [-> Add(mask)] ->
  Softmax -> MatMul, or the scale on the scores;
- swin: MatMul(Mul(Q, scale), K^T) -> Add(relative position bias) [-> Reshape -> Add(window mask) -> Reshape back]
  -> Softmax -> MatMul (torchvision adds the shifted windows' mask to the scores viewed as [B/nW, nW, H, N, N]).

- ONNX's own Attention function, as ``onnx`` expands it (its ``*_expanded`` node tests): MatMul(Mul(Q, sqrt(s)),
  Mul(Transpose(K), sqrt(s))) -> Add(bias) -> Softmax -> Where(row fully masked, 0, .) -> MatMul(., V), once
  ``eliminate_identities`` has removed its float->same-float Casts and the Unsqueeze -> Expand -> Reshape that
  repeats K's and V's heads when there is nothing to repeat; with ``softcap``, Div(scores, c) -> Tanh -> Mul(., c)
  between the scaled product and the bias. A head repetition that repeats (grouped-query attention) and a
  past/present Concat stay layers of their own before the fused layer; a qk_matmul_output (an intermediate that is
  a network output) stays unfused.

A softcap, c * tanh(scores / c) written Div(scores, c) -> Tanh -> Mul(., c) (or Mul by 1/c before the Tanh; the
Mul either way round), directly after the scaled product and before every mask step (as ONNX's Attention function
and Gemma-2 place it), is the layer's softcap step; one after a mask step leaves the chain unfused.

A Where on the probabilities, between the Softmax and the second product, whose other operand is a single-value
constant, is the layer's guard (its condition, computed before, is an input). Where(IsNaN(probabilities), c,
probabilities), the probabilities read by just those two layers, is the ``"nan"`` guard: torch's SDPA as the dynamo
exporter decomposes it (HF BERT's default attention) zeroes the NaN probabilities of a fully masked row so.

A constant mask added between a Reshape and the Reshape back to the scores' shape is the same elementwise sum as
that mask, broadcast and reshaped to the scores' shape, added to the scores: the pass makes that constant (keeping
size 1 along each axis where it does not vary) and the step an ordinary additive mask.

Any number of additive masks and Where steps (with a single-value constant fill) may follow the scaled product, in
any order; the scale is a single-value constant (Mul either way round, or Div), or absent. K's Transpose is absorbed
when it swaps the last two axes (K is then given [..., Sk, D]); any other producer of K stays a layer of its own and
the product's operand is K as given. A chain is left unfused when one of its intermediate tensors (the product, the
scaled scores, the softcap's three results, a masked step, the probabilities, the scaled Q or K, the transposed K)
is read by another layer or is a network output, when the Softmax is not along the last axis, or when the shapes do
not fit FusedAttention's type inference (a mask that broadcasts the scores larger, ...). ONNX's own ``Attention``
(opset 23) is already one layer and is left as it is.

The FusedAttention's attributes pin the matched form exactly, and its reference computes each step with the layer
definition of the layer it replaced, so on the CPU the fused layer gives the unfused bits. Its origin lists the ONNX
nodes of every layer it replaces, in network order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reprobuild.core.symbolic import SymbolicShapeError
from reprobuild.ir import Layer, Network, make_attrs
from reprobuild.layers.base import OpError, TensorType
from reprobuild.layers.op_fused_attention import FusedAttention, swap_last
from reprobuild.ops import symbolic_infer
from reprobuild.passes.pattern import GraphIndex, fresh_name, fuse_rounds

VERSION = 2  # 2: the "nan" guard (torch's SDPA decomposition: Where(IsNaN(p), 0, p))

_FLOATS = ("bfloat16", "float16", "float32", "float64")
#: The most mask steps looked for between the scaled product and the Softmax.
MAX_MASK_STEPS = 8


@dataclass
class _Form:
    """What a match found, built up from the Softmax back to the product."""

    layers: list[Layer] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # mask steps, in the order they run
    step_inputs: list[str] = field(default_factory=list)
    fills: list[float] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    q: str = ""
    k: str = ""
    k_transposed: int = 1
    scale_on: str = "none"
    scale_op: str = ""
    scale: float = 1.0
    softcap: float = 0.0
    softcap_in: float = 0.0
    softcap_op: str = ""


def _scalar(index: GraphIndex, tensor: str, dtype: str) -> float | None:
    """The value of ``tensor`` when it is a single-value constant of ``dtype``."""
    value = index.const(tensor)
    if value is None or value.size != 1 or str(value.dtype) != dtype:
        return None
    return float(value.reshape(-1)[0])


def _scaled(index: GraphIndex, tensor: str, dtype: str) -> tuple[Layer, str, str, float] | None:
    """(the layer, x, "Mul" or "Div", c) when ``tensor`` is read once and is Mul(x, c) (either way round) or
    Div(x, c) with c a single-value constant that keeps x's shape."""
    layer = index.producer(tensor)
    if layer is None or layer.op not in ("Mul", "Div") or len(layer.inputs) != 2 or not index.single_use(tensor):
        return None
    for x, c in ((0, 1), (1, 0)) if layer.op == "Mul" else ((0, 1),):
        value = _scalar(index, layer.inputs[c], dtype)
        if value is not None and index.tensor(layer.inputs[x]).shape == index.tensor(tensor).shape:
            return layer, layer.inputs[x], layer.op, value
    return None


def _swap(index: GraphIndex, tensor: str) -> Layer | None:
    """The Transpose producing ``tensor`` (read once) when it swaps its input's last two axes."""
    layer = index.producer(tensor)
    if layer is None or layer.op != "Transpose" or not index.single_use(tensor):
        return None
    rank = len(index.tensor(layer.inputs[0]).shape)
    return layer if rank >= 2 and tuple(layer.attr("perm")) == swap_last(rank) else None


def _key(index: GraphIndex, b: str, dtype: str) -> list[tuple[Layer, str, tuple[str, float] | None]]:
    """What produces the product's operand ``b``, from it down: each a Transpose swapping the last two axes or a
    scale (at most one of each), with the tensor it reads and, for a scale, (op, c)."""
    peeled: list[tuple[Layer, str, tuple[str, float] | None]] = []
    t = b
    for _ in range(2):
        found = _scaled(index, t, dtype)
        if found is not None and not any(s is not None for _, _, s in peeled):
            peeled.append((found[0], found[1], (found[2], found[3])))
            t = found[1]
            continue
        swap = _swap(index, t)
        if swap is not None and not any(s is None for _, _, s in peeled):
            peeled.append((swap, swap.inputs[0], None))
            t = swap.inputs[0]
            continue
        break
    return peeled


def _product(index: GraphIndex, tensor: str, dtype: str, form: _Form) -> bool:
    """``tensor`` is the (scaled) product Q @ K: fill in the product's part of ``form``."""
    scaled = _scaled(index, tensor, dtype)
    if scaled is not None:
        form.layers.append(scaled[0])
        form.scale_on, form.scale_op, form.scale = "scores", scaled[2], scaled[3]
        tensor = scaled[1]
    mm = index.producer(tensor)
    if mm is None or mm.op != "MatMul" or not index.single_use(tensor):
        return False
    form.layers.append(mm)
    a, b = mm.inputs
    form.q, form.k = a, b
    q_scale = _scaled(index, a, dtype) if scaled is None else None
    peeled = _key(index, b, dtype)
    k_scale = next((s for _, _, s in peeled if s is not None), None)
    if q_scale is not None and k_scale == (q_scale[2], q_scale[3]):
        form.scale_on, form.scale_op, form.scale = "qk", q_scale[2], q_scale[3]
        form.q = q_scale[1]
        form.layers.append(q_scale[0])
        for layer, below, s in peeled:
            form.layers.append(layer)
            form.k = below
            if s is None:
                form.k_transposed = 0
        return True
    if q_scale is not None:
        form.scale_on, form.scale_op, form.scale = "q", q_scale[2], q_scale[3]
        form.q = q_scale[1]
        form.layers.append(q_scale[0])
    if peeled and peeled[0][2] is None:  # K's own Transpose, directly under the product
        form.layers.append(peeled[0][0])
        form.k, form.k_transposed = peeled[0][1], 0
    return True


def _scores(index: GraphIndex, tensor: str, dtype: str, depth: int = 0) -> _Form | None:
    """The form whose masked scores are ``tensor`` (read once): mask steps (Add, Where) walked back to the
    product; an Add whose two operands are both computed tries each as the scores' side."""
    layer = index.producer(tensor)
    if layer is None:
        return None
    if depth < MAX_MASK_STEPS and layer.op == "Add" and len(layer.inputs) == 2:
        for side in (0, 1):
            below, mask = layer.inputs[side], layer.inputs[1 - side]
            form = _scores(index, below, dtype, depth + 1) if index.single_use(below) else None
            if form is not None:
                form.layers.append(layer)
                form.steps.append("add")
                form.step_inputs.append(mask)
                return form
    if depth < MAX_MASK_STEPS and layer.op == "Where" and index.tensor(layer.inputs[0]).dtype == "bool":
        cond, x, y = layer.inputs
        for below, other, step in ((x, y, "where"), (y, x, "where_not")):
            fill = _scalar(index, other, dtype)
            form = _scores(index, below, dtype, depth + 1) if fill is not None and index.single_use(below) else None
            if form is not None and fill is not None:
                form.layers.append(layer)
                form.steps.append(step)
                form.step_inputs.append(cond)
                form.fills.append(fill)
                return form
    if depth < MAX_MASK_STEPS and layer.op == "Reshape":
        return _reshaped_mask(index, layer, tensor, dtype, depth)
    form = _Form()
    capped = _softcap(index, tensor, dtype)
    if capped is not None and _product(index, capped[0], dtype, form):
        form.layers += capped[1]
        form.softcap_op, form.softcap_in, form.softcap = capped[2], capped[3], capped[4]
        return form
    form = _Form()
    return form if _product(index, tensor, dtype, form) else None


def _softcap(index: GraphIndex, tensor: str, dtype: str) -> tuple[str, list[Layer], str, float, float] | None:
    """(the scores below, the three layers, "Div" or "Mul", the constant before the Tanh, c) when ``tensor`` (read
    once) is Mul(Tanh(Div(scores, c_in) or Mul(scores, c_in)), c) with single-value constants, c not 0 (0.0 is the
    attribute's "no softcap") and each intermediate read once."""
    outer = _scaled(index, tensor, dtype)
    if outer is None or outer[2] != "Mul" or outer[3] == 0.0:
        return None
    tanh = index.producer(outer[1])
    if tanh is None or tanh.op != "Tanh" or not index.single_use(outer[1]):
        return None
    inner = _scaled(index, tanh.inputs[0], dtype)
    if inner is None:
        return None
    return inner[1], [inner[0], tanh, outer[0]], inner[2], inner[3], outer[3]


def _reshaped_mask(index: GraphIndex, back: Layer, tensor: str, dtype: str, depth: int) -> _Form | None:
    """``tensor`` is Reshape(Add(Reshape(scores), constant)) with the scores' shape: the form below, with the
    constant broadcast to the viewed shape and reshaped to the scores' as one more additive mask."""
    viewed = back.inputs[0]
    add = index.producer(viewed)
    if add is None or add.op != "Add" or len(add.inputs) != 2 or not index.single_use(viewed):
        return None
    for side in (0, 1):
        view, mask = add.inputs[side], add.inputs[1 - side]
        value, there = index.const(mask), index.producer(view)
        if value is None or str(value.dtype) != dtype or there is None or there.op != "Reshape":
            continue
        below, shape = there.inputs[0], tuple(index.tensor(tensor).shape)
        if not index.single_use(view) or not index.single_use(below) or index.tensor(below).shape != shape:
            continue
        if tuple(index.tensor(viewed).shape) != tuple(index.tensor(view).shape):
            continue  # the mask broadcasts the view larger
        form = _scores(index, below, dtype, depth + 1)
        if form is None:
            continue
        name = fresh_name(index, f"{add.name}:mask")
        form.constants[name] = _narrowest(np.broadcast_to(value, index.tensor(view).shape).reshape(shape))
        form.layers += [there, add, back]
        form.steps.append("add")
        form.step_inputs.append(name)
        return form
    return None


def _narrowest(value: np.ndarray) -> np.ndarray:
    """``value`` with size 1 along each axis where it does not vary (it broadcasts back to the same values)."""
    for axis in range(value.ndim):
        first = value.take([0], axis=axis)
        if value.shape[axis] > 1 and np.array_equal(value, np.broadcast_to(first, value.shape), equal_nan=True):
            value = first
    return np.ascontiguousarray(value)


def _guard(index: GraphIndex, layer: Layer, probabilities: str, dtype: str) -> tuple[str, str, float] | None:
    """(step, condition, fill) when ``layer`` is a Where that keeps ``probabilities`` or puts a single-value
    constant in their place: Where(cond, fill, p) is "where_not" (ONNX's Attention zeroes the fully masked rows so),
    Where(cond, p, fill) is "where"."""
    if layer.op != "Where" or len(layer.inputs) != 3 or index.tensor(layer.inputs[0]).dtype != "bool":
        return None
    cond, x, y = layer.inputs
    for kept, other, step in ((x, y, "where"), (y, x, "where_not")):
        fill = _scalar(index, other, dtype)
        if kept == probabilities and fill is not None:
            return step, cond, fill
    return None


def _nan_guard(index: GraphIndex, probabilities: str, dtype: str) -> tuple[list[Layer], float] | None:
    """([the IsNaN, the Where], fill) when ``probabilities`` are read by exactly Where(IsNaN(probabilities), fill,
    probabilities), fill a single-value constant, the IsNaN's result read by that Where only."""
    readers = index.reader_layers(probabilities)
    if len(readers) != 2 or index.is_output(probabilities) or index.readers(probabilities) != 2:
        return None
    isnan, where = readers
    if isnan.op != "IsNaN" or where.op != "Where" or len(where.inputs) != 3:
        return None
    cond, fill, kept = where.inputs
    value = _scalar(index, fill, dtype)
    if cond != isnan.outputs[0] or kept != probabilities or value is None or not index.single_use(cond):
        return None
    return [isnan, where], value


def _attention(network: Network, index: GraphIndex,
               softmax: Layer) -> tuple[list[Layer], Layer, dict[str, np.ndarray]] | None:
    """The layers of the attention whose Softmax is ``softmax``, the FusedAttention replacing them, and the
    constants it adds."""
    scores, (probabilities,) = softmax.inputs[0], softmax.outputs
    info = index.tensor(scores)
    if info.dtype not in _FLOATS or len(info.shape) < 2 or softmax.attr("axis") != len(info.shape) - 1:
        return None
    if not index.single_use(scores):
        return None
    nan_guard = _nan_guard(index, probabilities, info.dtype)
    guard: tuple[str, str, float] | None
    if nan_guard is not None:
        guards, guard = nan_guard[0], ("nan", "", nan_guard[1])
    elif index.single_use(probabilities):
        (reader,) = index.reader_layers(probabilities)
        guard = _guard(index, reader, probabilities, info.dtype)
        guards = [reader] if guard else []
    else:
        return None
    weights = guards[-1].outputs[0] if guards else probabilities
    readers = index.reader_layers(weights)
    if not index.single_use(weights) or len(readers) != 1:
        return None
    (out_mm,) = readers
    if out_mm.op != "MatMul" or out_mm.inputs[0] != weights or out_mm.inputs[1] == weights:
        return None
    form = _scores(index, scores, info.dtype)
    if form is None or len(set(form.fills)) > 1:
        return None
    adds = [t for s, t in zip(form.steps, form.step_inputs) if s == "add"]
    conditions = [t for s, t in zip(form.steps, form.step_inputs) if s != "add"]
    inputs = (form.q, form.k, out_mm.inputs[1], *adds, *conditions, *([guard[1]] if guard and guard[1] else []))
    attrs = {"fill": form.fills[0] if form.fills else 0.0, "guard": guard[0] if guard else "none",
             "guard_fill": guard[2] if guard else 0.0, "k_transposed": form.k_transposed,
             "masks": tuple(form.steps), "scale": form.scale, "scale_on": form.scale_on, "scale_op": form.scale_op,
             "softcap": form.softcap, "softcap_in": form.softcap_in, "softcap_op": form.softcap_op}
    types = [TensorType(tuple(form.constants[t].shape), str(form.constants[t].dtype)) if t in form.constants
             else TensorType(tuple(index.tensor(t).shape), index.tensor(t).dtype) for t in inputs]
    try:
        (out,) = symbolic_infer.infer(FusedAttention(), attrs, types)
    except (OpError, SymbolicShapeError):
        return None  # shapes or dtypes that do not fit (for every size of a dynamic axis): the layers stay
    result = index.tensor(out_mm.outputs[0])
    if (out.shape, out.dtype) != (tuple(result.shape), result.dtype):
        return None
    position = {id(layer): i for i, layer in enumerate(network.layers)}
    old = sorted({id(layer): layer for layer in [*form.layers, softmax, *guards, out_mm]}.values(),
                 key=lambda layer: position[id(layer)])
    origin = tuple(dict.fromkeys(n for layer in old for n in layer.origin))
    fused = Layer(out_mm.name, "FusedAttention", inputs, out_mm.outputs, make_attrs(attrs), origin)
    return old, fused, form.constants


def fuse_attention(network: Network) -> Network:
    """Every attention chain fused, in layer order; a chain that shares a layer with an earlier one is looked at
    again on the rewritten network."""
    return fuse_rounds(network, {"Softmax": _attention})
