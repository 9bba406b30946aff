"""The attributes of each op's *layer*: what the loader checks an engine's layers against, and what a run reads.

A layer's attributes are its op's canonical form (``OpDef.convert``), not the ONNX node's. For an op whose
``convert`` is the default (every attribute of the node's version, defaults filled in), they are derived from the
op's ONNX attributes (``OpDef.attributes``, derived from ``onnx_attributes.json``, generated from ``onnx.defs``;
``tests/ops/test_layer_attributes.py`` checks them against ``onnx.defs``: names and kinds per version): an attribute
every version has and that has a default, or that ONNX requires, is in every layer; one that only some versions
have, or that has no default, may be absent. An op that rewrites its attributes (``convert`` or ``canonical_attrs``
overridden, or an op only graph passes make) declares its layer's attributes in :data:`CANONICAL`; the same test
converts every case of ONNX's node test suite, the light models and the bundled examples, with and without the graph
passes, and checks that each layer holds exactly what its op declares here.

Nothing here imports onnx: the runtime's loader uses it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from reprobuild.ops.base import ABSENT, REQUIRED, Attr, OpDef


def _layer(may_lack: Mapping[str, str] | None = None, /, **required: str) -> dict[str, Attr]:
    """Attributes every layer of the op has (``name=kind``), then those it may lack (the positional mapping; an
    op may have an attribute named "optional")."""
    return {**{k: Attr(kind, REQUIRED) for k, kind in required.items()},
            **{k: Attr(kind, ABSENT) for k, kind in (may_lack or {}).items()}}


#: Layer attributes of the ops whose layers do not hold their ONNX attributes as they are, by layer op. Kinds as
#: in ``Attr``: a "float" may hold an integer (Clip's bounds and Pad's value are integers for integer tensors).
CANONICAL: dict[str, dict[str, Attr]] = {
    "AffineGrid": _layer(align_corners="int", size="ints"),
    "ArgMax": _layer(axis="int", keepdims="int", select_last_index="int"),
    "ArgMin": _layer(axis="int", keepdims="int", select_last_index="int"),
    "Attention": _layer(is_causal="int", kv_num_heads="int", left_window_size="int", outputs="strings",
                        q_num_heads="int", qk_matmul_output_mode="int", right_window_size="int", roles="strings",
                        scale="float", softcap="float", softmax_dtype="string"),
    "AveragePool": _layer(ceil_mode="int", count_include_pad="int", dilations="ints", kernel_shape="ints", pads="ints",
                          strides="ints"),
    "BatchNormalization": _layer(epsilon="float"),
    "BitCast": _layer(to="string"),
    "BitShift": _layer(direction="string"),
    "Cast": _layer(round_mode="string", saturate="int", to="string"),
    "CausalConvWithState": _layer(activation="string", roles="strings"),
    "Celu": _layer(alpha="float"),
    "Clip": _layer(max="float", max_from="string", min="float", min_from="string"),
    "Col2Im": _layer(block_shape="ints", dilations="ints", image_shape="ints", pads="ints", strides="ints"),
    "Compress": _layer(axis="int", flatten="int", selected="ints"),
    "Concat": _layer(axis="int"),
    "Conv": _layer(dilations="ints", group="int", pads="ints", strides="ints"),
    "ConvInteger": _layer(dilations="ints", group="int", pads="ints", roles="strings", strides="ints"),
    "ConvTranspose": _layer(dilations="ints", group="int", output_padding="ints", pads="ints", strides="ints"),
    "CumProd": _layer(axis="int", exclusive="int", reverse="int"),
    "CumSum": _layer(axis="int", exclusive="int", reverse="int"),
    "DFT": _layer(axis="int", inverse="int", length="int", onesided="int"),
    "DeformConv": _layer(dilations="ints", group="int", has_mask="int", offset_group="int", pads="ints",
                         strides="ints"),
    "DepthToSpace": _layer(blocksize="int", mode="string"),
    "DequantizeLinear": _layer(axis="int", block_size="int", output_dtype="string"),
    "Einsum": _layer(equation="string"),
    "Elu": _layer(alpha="float"),
    "Expand": _layer(shape="ints"),
    "Flatten": _layer(axis="int"),
    "FusedConv": _layer(activation="string", activation_max="float", activation_min="float", dilations="ints",
                        group="int", pads="ints", strides="ints"),
    "FusedAttention": _layer(fill="float", guard="string", guard_fill="float", k_transposed="int", masks="strings",
                             scale="float", scale_on="string", scale_op="string", softcap="float",
                             softcap_in="float", softcap_op="string"),
    "FusedElementwise": _layer(steps="strings"),
    "FusedGemm": _layer(activation="string", activation_max="float", activation_min="float"),
    "GRU": _layer(activation_alpha="floats", activation_beta="floats", activations="strings", clip="float",
                  direction="string", hidden_size="int", layout="int", linear_before_reset="int", optional="strings",
                  outputs="strings"),
    "Gather": _layer(axis="int"),
    "GatherElements": _layer(axis="int"),
    "GatherND": _layer(batch_dims="int"),
    "Gelu": _layer(approximate="string"),
    "Gemm": _layer(alpha="float", beta="float", transA="int", transB="int"),
    "GridSample": _layer(align_corners="int", mode="string", padding_mode="string"),
    "GroupNormalization": _layer(epsilon="float", num_groups="int", per_group="int", stash_type="int"),
    "HardSigmoid": _layer(alpha="float", beta="float"),
    "HardSwish": _layer(),
    "Hardmax": _layer(axis="int", coerce_2d="int"),
    "InstanceNormalization": _layer(epsilon="float"),
    "IsInf": _layer(detect_negative="int", detect_positive="int"),
    "LRN": _layer(alpha="float", beta="float", bias="float", size="int"),
    "LSTM": _layer(activation_alpha="floats", activation_beta="floats", activations="strings", clip="float",
                   direction="string", hidden_size="int", input_forget="int", layout="int", optional="strings",
                   outputs="strings"),
    "LayerNormalization": _layer(axis="int", epsilon="float", stash_type="int"),
    "LeakyRelu": _layer(alpha="float"),
    "LinearAttention": _layer(kv_num_heads="int", q_num_heads="int", roles="strings", scale="float",
                              update_rule="string"),
    "LogSoftmax": _layer(axis="int", coerce_2d="int"),
    "LpNormalization": _layer(axis="int", p="int"),
    "LpPool": _layer(ceil_mode="int", dilations="ints", kernel_shape="ints", p="int", pads="ints", strides="ints"),
    "MatMulInteger": _layer(roles="strings"),
    "MaxPool": _layer({"storage_order": "int"}, ceil_mode="int", dilations="ints", kernel_shape="ints", pads="ints",
                      strides="ints"),
    "MaxUnpool": _layer(kernel_shape="ints", output_shape="ints", pads="ints", strides="ints"),
    "MeanVarianceNormalization": _layer(axes="ints"),
    "Mish": _layer(),
    "Mod": _layer(fmod="int"),
    "OneHot": _layer(axis="int", depth="int"),
    "PRelu": _layer(per_channel="int"),
    "Pad": _layer(mode="string", pads="ints", value="float"),
    "QLinearConv": _layer(dilations="ints", group="int", pads="ints", strides="ints"),
    "QuantizeLinear": _layer(axis="int", block_size="int", output_dtype="string", precision="string", saturate="int"),
    "RMSNormalization": _layer(axis="int", epsilon="float", stash_type="int"),
    "RNN": _layer(activation_alpha="floats", activation_beta="floats", activations="strings", clip="float",
                  direction="string", hidden_size="int", layout="int", optional="strings", outputs="strings"),
    "ReduceL1": _layer(axes="ints", keepdims="int"),
    "ReduceL2": _layer(axes="ints", keepdims="int"),
    "ReduceLogSum": _layer(axes="ints", keepdims="int"),
    "ReduceLogSumExp": _layer(axes="ints", keepdims="int"),
    "ReduceMax": _layer(axes="ints", keepdims="int"),
    "ReduceMean": _layer(axes="ints", keepdims="int"),
    "ReduceMin": _layer(axes="ints", keepdims="int"),
    "ReduceProd": _layer(axes="ints", keepdims="int"),
    "ReduceSum": _layer(axes="ints", keepdims="int"),
    "ReduceSumSquare": _layer(axes="ints", keepdims="int"),
    "Range": _layer(delta="int", dtype="string", limit="int", start="int"),
    "Reshape": _layer(shape="ints"),
    "Resize": _layer(antialias="int", axes="ints", coordinate_transformation_mode="string", cubic_coeff_a="float",
                     exclude_outside="int", extrapolation_value="float", mode="string", nearest_mode="string",
                     roi="floats", roi_dtype="string", scales="floats", sizes="ints"),
    "ReverseSequence": _layer(batch_axis="int", time_axis="int"),
    "RoiAlign": _layer(grid_h="ints", grid_w="ints", half_pixel="int", mode="string", output_height="int",
                       output_width="int", sampling_ratio="int", spatial_scale="float"),
    "RotaryEmbedding": _layer(interleaved="int", num_heads="int", rotary_embedding_dim="int"),
    "STFT": _layer(frame_length="int", frame_step="int", onesided="int", window="int"),
    "ScatterElements": _layer(axis="int", reduction="string"),
    "ScatterND": _layer(reduction="string"),
    "Selu": _layer(alpha="float", gamma="float"),
    "Shrink": _layer(bias="float", lambd="float"),
    "Sigmoid": _layer(),
    "Slice": _layer(ends="ints", starts="ints", steps="ints"),
    "Softmax": _layer(axis="int", coerce_2d="int"),
    "Softplus": _layer(),
    "Softsign": _layer(),
    "SpaceToDepth": _layer(blocksize="int", mode="string"),
    "Split": _layer(axis="int", split="ints"),
    "Squeeze": _layer(axes="ints"),
    "SwiGLU": _layer(alpha="float"),
    "Swish": _layer(alpha="float"),
    "TensorScatter": _layer(axis="int", mode="string"),
    "ThresholdedRelu": _layer(alpha="float"),
    "Tile": _layer(repeats="ints"),
    "TopK": _layer(axis="int", k="int", largest="int"),
    "Transpose": _layer(perm="ints"),
    "Trilu": _layer(k="int", upper="int"),
    "Unsqueeze": _layer(axes="ints"),
    "GlobalLpPool": _layer(p="int"),
}


def canonicalizes(cls: type[OpDef]) -> bool:
    """Whether an op's layers hold other attributes than its ONNX nodes: it overrides ``convert`` or
    ``canonical_attrs``, or it is internal (made by graph passes)."""
    return bool(cls.internal) or cls.convert is not OpDef.convert or cls.canonical_attrs is not OpDef.canonical_attrs


def derived(cls: type[OpDef]) -> dict[str, Attr]:
    """An op with the default ``convert``: each declared ONNX attribute, required where every version the op
    implements has it with a value (a default, or one ONNX requires), optional otherwise."""
    out = {}
    for key, spec in sorted(cls.attributes.items()):
        everywhere = all(spec.exists_in(v) for v in cls.versions)
        out[key] = Attr(spec.kind, REQUIRED if everywhere and spec.default is not ABSENT else ABSENT)
    return out


@functools.cache
def _of(cls: type[OpDef]) -> Mapping[str, Attr] | None:
    layer_op = f"{cls.domain}::{cls.op}" if cls.domain else cls.op
    if layer_op in CANONICAL:
        return CANONICAL[layer_op]
    return None if canonicalizes(cls) else derived(cls)


def layer_attributes(opdef: OpDef) -> Mapping[str, Attr] | None:
    """The attributes a layer of ``opdef`` holds (``Attr.default``: ``REQUIRED`` when every layer has it, ``ABSENT``
    when it may be absent); None when they are not known (a plugin's op that rewrites its attributes and declares
    none: then only the kinds of its declared attributes and what its type inference reads are checked)."""
    op_class: Any = type(opdef)  # a class is hashable; mypy sees OpDef's __hash__ as an instance method
    return _of(op_class)


def attribute_schema(opdef: OpDef) -> dict[str, Any]:
    """What an engine records of ``opdef``'s layer attributes (an entry of the header's ``attribute_schemas``,
    ``reprobuild.engine.plan.EngineOpSchema``), which the loader checks the op's layers against without this
    module: each attribute's kind and whether every layer holds it. ``closed`` when the op declares its layers'
    attributes (:func:`layer_attributes`); otherwise (a plugin's op that rewrites its attributes and declares none)
    the kinds of every attribute its ONNX nodes may have, none required, and ``names_allowed``: its canonical form
    may turn an ONNX enum (an int) into its name. The builder and every tool that writes a header call this one
    function."""
    declared = layer_attributes(opdef)
    if declared is not None:
        return {"attributes": {k: {"kind": declared[k].kind, "required": declared[k].default is REQUIRED}
                               for k in sorted(declared)},
                "closed": True, "names_allowed": False}
    return {"attributes": {k: {"kind": opdef.attributes[k].kind, "required": False} for k in sorted(opdef.attributes)},
            "closed": False, "names_allowed": canonicalizes(type(opdef))}
