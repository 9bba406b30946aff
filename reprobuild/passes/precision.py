"""Reduced precision: ``--precision fp16`` (``bf16``) runs the network's float32 arithmetic in float16 (bfloat16),
as TensorRT's FP16 and BF16 builder flags do, while the engine's inputs and outputs keep their dtypes.

Which layers run narrow is decided here, once, by op, and recorded: each layer's ``precision`` in the manifest
says ``fp16``/``bf16`` or ``fp32``. An op in :data:`HALF_INPUTS` whose type-``T`` inputs are all floating point
runs narrow (unless :data:`KEEP_FLOAT32` keeps it float32 in that type): those inputs are read as the narrow type
and its outputs become that type (the op's own type inference says so, and the network is checked again). Every
other op keeps float32. Where a float32 tensor meets
a narrow layer, or the reverse, one ``Cast`` layer is inserted (one per tensor and direction, however many layers
read it), so a network input is cast once on entry and a network output once on exit; its ONNX nodes are those
of the layer it serves. Float32 constants read by narrow layers become constants of the narrow type, rounded to
nearest even and clamped to its finite range (+-65504 for float16, as onnxconverter-common's converter does;
+-3.39e38 for bfloat16, whose exponent is float32's); NaN and infinity stay what they are.

The CUDA kernels that run narrow layers accumulate in float32 (cuBLAS with ``CUBLAS_COMPUTE_32F``, tensor-core
mma with float32 accumulators, float reductions), and round to the narrow type where the unfused layers would
store.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import ml_dtypes
import numpy as np

from reprobuild.core.dtypes import np_dtype
from reprobuild.ir import Layer, Network, TensorInfo
from reprobuild.layers.op_fused_elementwise import STEP_OPS
from reprobuild.ops import TensorType, infer_types
from reprobuild.passes.simplify import eliminate_dead_code

VERSION = 1

#: The narrow dtype of each precision pass, and the short name its tensors and casts are suffixed with.
SUFFIX: Mapping[str, str] = MappingProxyType({"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"})

_ALL = None
#: Every input but the bool ones (a FusedAttention's Where conditions), however many the layer has.
_NOT_BOOL = "not bool"
#: The ops that run in a narrow type, and the positions of their inputs of the output's type (None: every input).
#: Other inputs (Gather's indices, ...) keep their dtype.
HALF_INPUTS: Mapping[str, tuple[int, ...] | str | None] = MappingProxyType({
    **{op: _ALL for op in STEP_OPS},
    "Concat": _ALL, "Conv": _ALL, "Flatten": (0,), "FusedAttention": _NOT_BOOL, "FusedConv": _ALL,
    "FusedElementwise": _ALL, "FusedGemm": _ALL,
    "Gather": (0,), "Gemm": _ALL, "GlobalAveragePool": (0,), "GlobalMaxPool": (0,), "AveragePool": (0,),
    "LayerNormalization": _ALL, "MatMul": _ALL, "MaxPool": (0,), "Reshape": (0,), "Slice": (0,),
    "Softmax": (0,), "Squeeze": (0,), "Transpose": (0,), "Unsqueeze": (0,),
})


#: Ops that stay float32 (between casts) in one narrow type though they have a half form: no CUDA kernel of this
#: version stores bfloat16 for them (their float16 layers run on CuPy's reference, and CuPy's bfloat16 support is
#: minimal), so a bf16 engine would have no tactic for them on a GPU.
KEEP_FLOAT32: Mapping[str, frozenset[str]] = MappingProxyType({
    "float16": frozenset(), "bfloat16": frozenset({"GlobalMaxPool", "Slice"})})


def narrow_constant(value: np.ndarray, dtype: str) -> np.ndarray:
    """A float32 constant as ``dtype`` (float16 or bfloat16): rounded to nearest even, finite values clamped to the
    type's finite range, NaN and infinity kept."""
    target = np_dtype(dtype)
    limit = float(ml_dtypes.finfo(target).max)
    with np.errstate(invalid="ignore"):
        clamped = np.where(np.isfinite(value), np.clip(value, -limit, limit), value)
    return clamped.astype(target)


class _Converter:
    def __init__(self, network: Network, narrow: str) -> None:
        self.network = network
        self.narrow = narrow
        self.outputs = {t.name for t in network.outputs}
        self.tensors: dict[str, TensorInfo] = dict(network.tensors)
        self.constants: dict[str, np.ndarray] = dict(network.constants)
        self.layers: list[Layer] = []
        self.casts: dict[tuple[str, str], str] = {}  # (tensor, dtype) -> the tensor of that dtype
        self.taken = set(self.tensors) | {layer.name for layer in network.layers}

    def fresh(self, base: str) -> str:
        name = base
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    def dtype(self, tensor: str) -> str:
        return self.tensors[tensor].dtype

    def as_dtype(self, tensor: str, dtype: str, origin: tuple[str, ...]) -> str:
        """``tensor`` as ``dtype``: itself, a converted constant, or the output of a Cast layer (made once)."""
        if self.dtype(tensor) == dtype:
            return tensor
        key = (tensor, dtype)
        if key in self.casts:
            return self.casts[key]
        suffix = SUFFIX[dtype]
        name = self.fresh(f"{tensor}:{suffix}")
        info = self.tensors[tensor]
        if tensor in self.constants:
            value = self.constants[tensor]
            self.constants[name] = (narrow_constant(value, dtype) if dtype == self.narrow
                                    else value.astype(np_dtype(dtype)))
        else:
            cast = Layer(self.fresh(f"{tensor}:cast_{suffix}"), "Cast", (tensor,), (name,),
                         (("round_mode", "up"), ("saturate", 1), ("to", dtype)), origin)
            self.layers.append(cast)
        self.tensors[name] = TensorInfo(name, info.shape, dtype)
        self.casts[key] = name
        return name

    def runs_narrow(self, layer: Layer) -> bool:
        if layer.op not in HALF_INPUTS or layer.op in KEEP_FLOAT32[self.narrow]:
            return False
        typed = self.typed_positions(layer)
        return (all(self.network.tensors[layer.inputs[i]].dtype in ("float32", self.narrow) for i in typed)
                and any(self.network.tensors[t].dtype == "float32" for t in layer.outputs))

    def typed_positions(self, layer: Layer) -> tuple[int, ...]:
        positions = HALF_INPUTS[layer.op]
        count = len(layer.inputs)
        if isinstance(positions, str):  # _NOT_BOOL
            return tuple(i for i, t in enumerate(layer.inputs) if self.network.tensors[t].dtype != "bool")
        return tuple(range(count)) if positions is None else tuple(i for i in positions if i < count)

    def convert(self, layer: Layer) -> None:
        origin = layer.origin or (layer.name,)
        if not self.runs_narrow(layer):
            # A float32 layer reads float32: a tensor an earlier narrow layer now computes is cast back.
            inputs = tuple(self.as_dtype(t, "float32", origin) if self.network.tensors[t].dtype == "float32"
                           else t for t in layer.inputs)
            self.layers.append(Layer(layer.name, layer.op, inputs, layer.outputs, layer.attrs, layer.origin))
            return
        typed = set(self.typed_positions(layer))
        inputs = tuple(
            self.as_dtype(t, self.narrow, origin) if i in typed
            else self.as_dtype(t, "float32", origin) if self.network.tensors[t].dtype == "float32" else t
            for i, t in enumerate(layer.inputs))
        types = [TensorType(self.tensors[t].shape, self.tensors[t].dtype) for t in inputs]
        inferred = infer_types(layer.op, dict(layer.attrs), types,
                               f"layer {layer.name!r} ({layer.op}) in {self.narrow}")
        outputs, exits = [], []
        for t, out in zip(layer.outputs, inferred):
            if t in self.outputs and out.dtype != self.network.tensors[t].dtype:
                # a network output keeps its dtype: the layer writes a narrow tensor, a Cast writes the output
                half = self.fresh(f"{t}:{SUFFIX[self.narrow]}")
                self.tensors[half] = TensorInfo(half, out.shape, out.dtype)
                self.casts[(t, out.dtype)] = half
                outputs.append(half)
                exits.append((half, t))
            else:
                self.tensors[t] = TensorInfo(t, out.shape, out.dtype)
                outputs.append(t)
        self.layers.append(Layer(layer.name, layer.op, inputs, tuple(outputs), layer.attrs, layer.origin))
        for half, t in exits:
            self.layers.append(Layer(self.fresh(f"{t}:cast_fp32"), "Cast", (half,), (t,),
                                     (("round_mode", "up"), ("saturate", 1), ("to", self.dtype(t))), origin))


def reduce_precision(network: Network, narrow: str) -> Network:
    """The network with every layer that can run in ``narrow`` (float16 or bfloat16) doing so (see the module
    docstring)."""
    converter = _Converter(network, narrow)
    for layer in network.layers:
        converter.convert(layer)
    converted = network.derive(converter.layers, converter.constants, converter.tensors)
    return eliminate_dead_code(converted)


def reduce_precision_fp16(network: Network) -> Network:
    """``--precision fp16``: every layer that can run in float16 does."""
    return reduce_precision(network, "float16")


def reduce_precision_bf16(network: Network) -> Network:
    """``--precision bf16``: every layer that can run in bfloat16 does."""
    return reduce_precision(network, "bfloat16")
