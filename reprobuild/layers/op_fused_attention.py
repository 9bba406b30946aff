"""FusedAttention: scaled-dot-product attention as one layer, made by the ``fuse_attention`` pass, never by ONNX.

y = Softmax(masks(softcap(scale(Q @ K))), last axis) @ V, in exactly the form the exporter wrote it, which the canonical
attributes pin:

- inputs ``Q`` [..., Sq, D], ``K``, ``V`` [..., Sk, Dv], then one input per mask step: the additive masks in the
  order their steps run, then the Where conditions (bool) in theirs; then the guard's condition (bool), if any;
- ``k_transposed``: 1 when ``K`` is [..., D, Sk], as the product takes it; 0 when it is [..., Sk, D] and the layer
  swaps its last two axes (the Transpose the pass absorbed);
- ``scale_on``: ``"scores"`` (the product is scaled), ``"q"`` (Q is, before the product), ``"qk"`` (Q and K each,
  by the same constant: torch's SDPA decomposition multiplies each by sqrt(scale)) or ``"none"``;
- ``scale_op``: ``"Mul"`` or ``"Div"`` (``""`` with ``scale_on="none"``), and ``scale``, the constant;
- ``softcap``: c in c * tanh(scores / c), between the scaled product and the masks, as ONNX's Attention function
  (its ``softcap`` attribute) and Gemma-2 write it; 0.0 when there is none. ``softcap_op`` is how the scores reach
  the Tanh: ``"Div"`` (scores / softcap_in) or ``"Mul"`` (scores * softcap_in, softcap_in being 1/c as the exporter
  rounded it); ``""`` with no softcap. The Tanh's result is then multiplied by ``softcap``. Both constants are kept
  as written, so the reference multiplies and divides by exactly the exporter's values. A softcap anywhere else
  (after a mask) is not this layer's form;
- ``masks``: the steps between the (soft-capped) scaled product and the Softmax, in order: ``"add"`` (scores + mask),
  ``"where"`` (Where(cond, scores, fill)) or ``"where_not"`` (Where(cond, fill, scores)); ``fill`` is the Where's
  constant (0.0 when there is no Where);
- ``guard``: a Where on the probabilities, between the Softmax and the second product: ``"none"``, ``"where_not"``
  (Where(cond, guard_fill, probabilities): ONNX's own Attention function zeroes the rows whose mask is -inf
  everywhere, whose Softmax is NaN), ``"where"`` (Where(cond, probabilities, guard_fill)) or ``"nan"``
  (Where(IsNaN(probabilities), guard_fill, probabilities): torch's SDPA as the dynamo exporter decomposes it zeroes
  the NaN probabilities so; the condition is computed from the probabilities, so it is no input); ``guard_fill`` is
  its constant (0.0 when there is no guard).

The reference computes each step with the layer definition of the layer it replaced (Transpose, Mul or Div, MatMul,
Div or Mul, Tanh, Mul, Add, Where, Softmax, IsNaN, Where, MatMul), each result materialized as the unfused engine stores
it, so on the CPU the fused layer gives the bits of the unfused graph. Multiplication and addition are commutative
in IEEE arithmetic, so the operand order the exporter chose needs no attribute; a Transpose and an elementwise scale
commute bit for bit too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.op_arith import Add, Div, Mul
from reprobuild.layers.op_gemm import MatMul
from reprobuild.layers.op_logic import Where
from reprobuild.layers.op_math import IsNaN, Tanh
from reprobuild.layers.op_softmax import Softmax
from reprobuild.layers.op_transform import Transpose

SCALE_ON = ("none", "q", "qk", "scores")
SCALE_OPS = ("Div", "Mul")
MASK_STEPS = ("add", "where", "where_not")
GUARDS = ("nan", "none", "where", "where_not")
#: The guards whose condition is an input (the last one); "nan" computes its own from the probabilities.
INPUT_GUARDS = ("where", "where_not")

#: The layer definitions of the layers the fused layer replaces.
_ADD, _DIV, _MATMUL, _MUL, _SOFTMAX, _TRANSPOSE, _WHERE = Add(), Div(), MatMul(), Mul(), Softmax(), Transpose(), Where()
_ISNAN, _TANH = IsNaN(), Tanh()


def check_form(attrs: Attrs, num_inputs: int) -> None:
    """The attributes name a form the reference computes, and there is one input per mask step."""
    if attrs["scale_on"] not in SCALE_ON:
        raise OpError(f"scale_on {attrs['scale_on']!r} is not one of {', '.join(map(repr, SCALE_ON))}")
    want_op = ("",) if attrs["scale_on"] == "none" else SCALE_OPS
    if attrs["scale_op"] not in want_op:
        raise OpError(f"scale_op {attrs['scale_op']!r} with scale_on {attrs['scale_on']!r}: it must be one of "
                      f"{', '.join(map(repr, want_op))}")
    want_op = ("",) if attrs["softcap"] == 0.0 else SCALE_OPS
    if attrs["softcap_op"] not in want_op:
        raise OpError(f"softcap_op {attrs['softcap_op']!r} with softcap {attrs['softcap']!r}: it must be one of "
                      f"{', '.join(map(repr, want_op))} (softcap 0.0 means no softcap step)")
    if attrs["k_transposed"] not in (0, 1):
        raise OpError(f"k_transposed is {attrs['k_transposed']!r}; it is 0 or 1")
    unknown = [m for m in attrs["masks"] if m not in MASK_STEPS]
    if unknown:
        raise OpError(f"mask steps {unknown} are not among {', '.join(map(repr, MASK_STEPS))}")
    if attrs["guard"] not in GUARDS:
        raise OpError(f"guard {attrs['guard']!r} is not one of {', '.join(map(repr, GUARDS))}")
    guarded = attrs["guard"] in INPUT_GUARDS
    if num_inputs != 3 + len(attrs["masks"]) + guarded:
        raise OpError(f"{num_inputs} inputs for {len(attrs['masks'])} mask steps {list(attrs['masks'])}"
                      f"{' and a ' + repr(attrs['guard']) + ' guard' if guarded else ''}: FusedAttention takes Q, K, "
                      "V and one input per mask step, then the guard's condition when its guard is "
                      f"{' or '.join(map(repr, INPUT_GUARDS))}")


def mask_steps(attrs: Attrs, masks: Sequence[Any]) -> Iterator[tuple[str, Any]]:
    """(step, its input) in the order the steps run: the additive masks come first among the inputs, then the
    Where conditions, each group in step order (``masks`` are the inputs after Q, K and V; a guard's condition,
    the last of them, is not a mask step)."""
    steps = list(attrs["masks"])
    adds = iter(masks[:steps.count("add")])
    conditions = iter(masks[steps.count("add"):])
    for step in steps:
        yield step, next(adds) if step == "add" else next(conditions)


def swap_last(rank: int) -> tuple[int, ...]:
    """The permutation that swaps the last two of ``rank`` axes."""
    return (*range(rank - 2), rank - 1, rank - 2)


def _step(what: str, layer: LayerDef, attrs: Attrs, inputs: Sequence[TensorType]) -> TensorType:
    """One step's type inference, its error located at the step."""
    try:
        (out,) = layer.infer(attrs, inputs)
    except OpError as exc:
        raise OpError(f"{what}: {exc}") from None
    return out


class FusedAttention(LayerDef):
    op = "FusedAttention"
    version = 4  # 2: the guard step after the Softmax; 3: the softcap step before the masks; 4: the "nan" guard
    num_inputs = (3, None)
    dtypes = FLOATS
    same_type = (1, 2)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        check_form(attrs, len(inputs))
        self.check_types(inputs[:3])
        q, k, v = inputs[:3]
        for name, t in (("Q", q), ("K", k), ("V", v)):
            if t.rank < 2:
                raise OpError(f"{name} has shape {list(t.shape)}; attention needs rank >= 2 ([..., S, D])")
        if not attrs["k_transposed"]:
            k = _step("K transposed to [..., D, Sk]", _TRANSPOSE, {"perm": swap_last(k.rank)}, [k])
        scores = _step("Q @ K (the scores)", _MATMUL, {}, [q, k])
        for i, (step, mask) in enumerate(mask_steps(attrs, inputs[3:3 + len(attrs["masks"])])):
            if step == "add":
                if mask.dtype != scores.dtype:
                    raise OpError(f"mask step {i} (add) has dtype {mask.dtype}; the scores are {scores.dtype}")
                out = _step(f"mask step {i} (add)", _ADD, {}, [scores, mask])
            else:
                out = _step(f"mask step {i} ({step})", _WHERE, {}, [mask, scores, scores])
            if out.shape != scores.shape:
                raise OpError(f"mask step {i} ({step}) has shape {list(mask.shape)}, which broadcasts the scores "
                              f"{list(scores.shape)} to {list(out.shape)}; a mask must keep the scores' shape")
        probabilities = _step("the Softmax", _SOFTMAX, {"axis": scores.rank - 1, "coerce_2d": 0}, [scores])
        if attrs["guard"] in INPUT_GUARDS:
            guarded = _step(f"the guard ({attrs['guard']})", _WHERE, {}, [inputs[-1], probabilities, probabilities])
            if guarded.shape != probabilities.shape:
                raise OpError(f"the guard's condition has shape {list(inputs[-1].shape)}, which broadcasts the "
                              f"probabilities {list(probabilities.shape)} to {list(guarded.shape)}; it must keep "
                              "their shape")
        return [_step("probabilities @ V", _MATMUL, {}, [probabilities, v])]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        q, k, v = inputs[:3]
        if not attrs["k_transposed"]:
            (k,) = _TRANSPOSE.compute(xp, {"perm": swap_last(k.ndim)}, k)
        scale_on = attrs["scale_on"]
        scale = _DIV if attrs["scale_op"] == "Div" else _MUL
        factor = constant(xp, attrs["scale"], q.dtype)
        if scale_on in ("q", "qk"):
            (q,) = scale.compute(xp, {}, q, factor)
        if scale_on == "qk":
            (k,) = scale.compute(xp, {}, k, factor)
        (scores,) = _MATMUL.compute(xp, {}, q, k)
        if scale_on == "scores":
            (scores,) = scale.compute(xp, {}, scores, factor)
        if attrs["softcap_op"]:
            squash = _DIV if attrs["softcap_op"] == "Div" else _MUL
            (scores,) = squash.compute(xp, {}, scores, constant(xp, attrs["softcap_in"], scores.dtype))
            (scores,) = _TANH.compute(xp, {}, scores)
            (scores,) = _MUL.compute(xp, {}, scores, constant(xp, attrs["softcap"], scores.dtype))
        fill = constant(xp, attrs["fill"], scores.dtype)
        for step, mask in mask_steps(attrs, inputs[3:3 + len(attrs["masks"])]):
            if step == "add":
                (scores,) = _ADD.compute(xp, {}, scores, mask)
            elif step == "where":
                (scores,) = _WHERE.compute(xp, {}, mask, scores, fill)
            else:
                (scores,) = _WHERE.compute(xp, {}, mask, fill, scores)
        (probabilities,) = _SOFTMAX.compute(xp, {"axis": scores.ndim - 1, "coerce_2d": 0}, scores)
        if attrs["guard"] != "none":
            guard_fill = constant(xp, attrs["guard_fill"], probabilities.dtype)
            operands = (probabilities, guard_fill) if attrs["guard"] == "where" else (guard_fill, probabilities)
            if attrs["guard"] == "nan":
                (condition,) = _ISNAN.compute(xp, {}, probabilities)
            else:
                condition = inputs[-1]
            (probabilities,) = _WHERE.compute(xp, {}, condition, *operands)
        return _MATMUL.compute(xp, {}, probabilities, v)


def constant(xp: Any, value: float, dtype: Any) -> Any:
    """An attribute's value as a 0-d array of ``dtype``, rounded once from the float32 constant it was (a float32
    value is exact in float64): what the unfused graph's constant holds, or its Cast gives in a narrow type (a
    float32 fill beyond float16's range becomes infinite)."""
    with np.errstate(over="ignore"):
        return xp.asarray(np.asarray(value, dtype=np.float64).astype(dtype))


LAYERS = (FusedAttention(),)
