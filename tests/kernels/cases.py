"""Single-node ONNX models covering each op's attributes; every tactic is checked against onnxruntime on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from reprobuild.ir import Network
from tests.helpers import make_model, with_float_dtype


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[np.random.Generator], tuple[onnx.ModelProto, dict[str, np.ndarray]]]
    #: Graph passes that turn the model into the single layer under test (a fused layer); none by default.
    passes: tuple[str, ...] = ()
    #: A model with dynamic dimensions: (symbol, size) pairs. It is parsed with each symbol in [1, 2 * size] (a
    #: layer only such a network has, such as a Range of a dynamic length) and specialized at the sizes.
    dynamic: tuple[tuple[str, int], ...] = ()

    def network(self, model: onnx.ModelProto) -> Network:
        from reprobuild.frontend import network_from_onnx_bytes
        from reprobuild.passes import run_passes

        ranges = {name: (1, 2 * size) for name, size in self.dynamic}
        network, _ = network_from_onnx_bytes(model.SerializeToString(), dynamic=ranges or None)
        return run_passes(network, self.passes).specialize(dict(self.dynamic))


def half(make: Callable, dtype: str = "float16") -> Callable:
    """A case's model and inputs in float16 (what ``--precision fp16`` gives the layer), or in ``dtype``."""
    def make_half(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        return with_float_dtype(*make(rng), dtype)
    return make_half


def bf16(make: Callable) -> Callable:
    """A case's model and inputs in bfloat16 (what ``--precision bf16`` gives the layer)."""
    return half(make, "bfloat16")


#: What makes a Conv and the layers after it one FusedConv.
FUSE = ("fold_batchnorm", "fuse_conv_epilogue")


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def conv(x: tuple[int, ...], w: tuple[int, ...], bias: bool = True, opset: int = 17, **attrs: object) -> Callable:
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        inits = {"w": _normal(rng, *w) * np.float32(0.3)}
        if bias:
            inits["b"] = _normal(rng, w[0])
        node = helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["y"], **attrs)
        return make_model([node], {"x": x}, ["y"], inits, opset), {"x": _normal(rng, *x)}
    return make


def _epilogue(nodes: list, tail: str, out_dims: tuple[int, ...], activation: str, residual: bool, inits: dict,
              shapes: dict, feeds: dict, rng: np.random.Generator) -> None:
    """Append [+ r] [+ activation] after ``tail`` (the nodes a fused epilogue absorbs); the last output is "y"."""
    if residual:
        shapes["r"], feeds["r"] = out_dims, _normal(rng, *out_dims)
        nodes.append(helper.make_node("Add", [tail, "r"], ["a"] if activation else ["y"]))
        tail = "a"
    if activation == "Clip":
        inits["lo"], inits["hi"] = np.float32(0.0), np.float32(6.0)
        nodes.append(helper.make_node("Clip", [tail, "lo", "hi"], ["y"]))
    elif activation == "SiLU":
        nodes += [helper.make_node("Sigmoid", [tail], ["s"]), helper.make_node("Mul", [tail, "s"], ["y"])]
    elif activation:
        nodes.append(helper.make_node(activation, [tail], ["y"]))


def fused_conv(x: tuple[int, ...], w: tuple[int, ...], activation: str, residual: bool = False,
               **attrs: object) -> Callable:
    """Conv(x, w, b) [+ r] [+ activation]: a FusedConv once the FUSE passes ran."""
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        inits = {"w": _normal(rng, *w) * np.float32(0.3), "b": _normal(rng, w[0])}
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
        shapes, feeds = {"x": x}, {"x": _normal(rng, *x)}
        out_shape = onnx.shape_inference.infer_shapes(make_model(nodes, {"x": x}, ["c"], inits))
        dims = tuple(d.dim_value for d in out_shape.graph.output[0].type.tensor_type.shape.dim)
        _epilogue(nodes, "c", dims, activation, residual, inits, shapes, feeds, rng)
        return make_model(nodes, shapes, ["y"], inits), feeds
    return make


#: What makes a MatMul (Gemm) and the layers after it one FusedGemm.
FUSE_GEMM = ("fuse_gemm_epilogue",)


def linear(a: tuple[int, ...], n: int, activation: str = "", residual: bool = False,
           bias_shape: tuple[int, ...] | None = None, gemm_trans_b: bool | None = None) -> Callable:
    """MatMul(a, W) + bias [+ r] [+ activation] (PyTorch's Linear), or with ``gemm_trans_b`` set a Gemm with C
    (W given transposed when True): a FusedGemm once FUSE_GEMM ran."""
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        k = a[-1]
        w = _normal(rng, k, n) * np.float32(k ** -0.5)
        inits = {"w": w if not gemm_trans_b else np.ascontiguousarray(w.T),
                 "b": _normal(rng, *(bias_shape or (n,)))}
        shapes, feeds = {"x": a}, {"x": _normal(rng, *a)}
        if gemm_trans_b is None:
            nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["b", "m"], ["c"])]
        else:
            nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["c"], transB=int(gemm_trans_b))]
        _epilogue(nodes, "c", (*a[:-1], n), activation, residual, inits, shapes, feeds, rng)
        if nodes[-1].output[0] != "y":
            nodes[-1].output[0] = "y"
        return make_model(nodes, shapes, ["y"], inits), feeds
    return make


def fused_chain(shape: tuple[int, ...]) -> Callable:
    """Sub(x, c) -> Sigmoid -> Mul with x (a broadcast constant c): one FusedElementwise after fuse_elementwise."""
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        inits = {"c": _normal(rng, shape[-1])}
        nodes = [helper.make_node("Sub", ["x", "c"], ["d"]), helper.make_node("Sigmoid", ["d"], ["s"]),
                 helper.make_node("Mul", ["d", "s"], ["y"])]
        return make_model(nodes, {"x": shape}, ["y"], inits), {"x": _normal(rng, *shape)}
    return make


#: What makes MatMul -> scale -> mask -> Softmax -> MatMul one FusedAttention.
FUSE_ATTENTION = ("fuse_attention",)


def attention(b: int, h: int, s: int, d: int) -> Callable:
    """BERT's eager attention: MatMul(Q, Transpose(K)) / sqrt(d) + mask -> Softmax -> MatMul(V), one FusedAttention
    once FUSE_ATTENTION ran (the mask a constant [B, 1, 1, S] of 0 and -10000, as BERT's extended mask)."""
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        mask = np.where(rng.random((b, 1, 1, s)) < 0.25, np.float32(-10000.0), np.float32(0.0)).astype(np.float32)
        inits = {"scale": np.array(np.sqrt(d), dtype=np.float32), "mask": mask}
        nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
                 helper.make_node("MatMul", ["q", "kt"], ["scores"]),
                 helper.make_node("Div", ["scores", "scale"], ["scaled"]),
                 helper.make_node("Add", ["scaled", "mask"], ["masked"]),
                 helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
                 helper.make_node("MatMul", ["p", "v"], ["y"])]
        shape = (b, h, s, d)
        feeds = {name: _normal(rng, *shape) for name in ("q", "k", "v")}
        return make_model(nodes, {name: shape for name in feeds}, ["y"], inits), feeds
    return make


def gemm(a: tuple[int, int], b: tuple[int, int], c: tuple[int, ...] | None, b_const: bool = True,
         **attrs: object) -> Callable:
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        inits, feeds, shapes = {}, {"a": _normal(rng, *a)}, {"a": a}
        if b_const:
            inits["b"] = _normal(rng, *b)
        else:
            feeds["b"], shapes["b"] = _normal(rng, *b), b
        if c is not None:
            inits["c"] = _normal(rng, *c)
        node = helper.make_node("Gemm", ["a", "b", *(["c"] if c is not None else [])], ["y"], **attrs)
        return make_model([node], shapes, ["y"], inits), feeds
    return make


def matmul(a: tuple[int, ...], b: tuple[int, ...], b_const: bool) -> Callable:
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        feeds, shapes = {"a": _normal(rng, *a)}, {"a": a}
        inits = {}
        if b_const:
            inits["b"] = _normal(rng, *b)
        else:
            feeds["b"], shapes["b"] = _normal(rng, *b), b
        return make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], shapes, ["y"], inits), feeds
    return make


def elementwise(op: str, shapes: list[tuple[int, ...]], const: tuple[int, ...] = ()) -> Callable:
    """Inputs in0, in1, ...; those whose index is in ``const`` are initializers."""
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        names = [f"in{i}" for i in range(len(shapes))]
        values = {n: _normal(rng, *s) for n, s in zip(names, shapes)}
        inits = {n: values[n] for i, n in enumerate(names) if i in const}
        feeds = {n: values[n] for i, n in enumerate(names) if i not in const}
        graph_inputs = {n: s for i, (n, s) in enumerate(zip(names, shapes)) if i not in const}
        return make_model([helper.make_node(op, names, ["y"])], graph_inputs, ["y"], inits), feeds
    return make


def unary(op: str, shape: tuple[int, ...], opset: int = 17, inits: dict | None = None, extra_inputs: tuple = (),
          **attrs: object) -> Callable:
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        node = helper.make_node(op, ["x", *extra_inputs], ["y"], **attrs)
        return make_model([node], {"x": shape}, ["y"], inits or {}, opset), {"x": _normal(rng, *shape)}
    return make


def batchnorm(shape: tuple[int, ...], epsilon: float = 1e-5) -> Callable:
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        c = shape[1]
        inits = {"s": rng.uniform(0.5, 1.5, c).astype(np.float32), "b": _normal(rng, c),
                 "m": _normal(rng, c), "v": rng.uniform(0.5, 1.5, c).astype(np.float32)}
        node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=epsilon)
        return make_model([node], {"x": shape}, ["y"], inits), {"x": _normal(rng, *shape)}
    return make


def concat(shapes: list[tuple[int, ...]], axis: int, const: tuple[int, ...] = ()) -> Callable:
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        names = [f"in{i}" for i in range(len(shapes))]
        values = {n: _normal(rng, *s) for n, s in zip(names, shapes)}
        inits = {n: values[n] for i, n in enumerate(names) if i in const}
        feeds = {n: values[n] for i, n in enumerate(names) if i not in const}
        graph_inputs = {n: s for i, (n, s) in enumerate(zip(names, shapes)) if i not in const}
        node = helper.make_node("Concat", names, ["y"], axis=axis)
        return make_model([node], graph_inputs, ["y"], inits), feeds
    return make


def _values(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, high: int) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith("int"):
        return rng.integers(-high, high, shape).astype(dtype)
    return _normal(rng, *shape).astype(dtype)


def typed(op: str, inputs: dict[str, tuple[tuple[int, ...], str]], inits: dict | None = None, opset: int = 18,
          order: tuple[str, ...] = (), outputs: int = 1, high: int = 20, **attrs: object) -> Callable:
    """One node on graph inputs of their own dtypes (bool and integer ones too) and initializers, taken in the
    ``order`` given, else as ``inputs`` then ``inits`` list them; ``outputs`` outputs (y, or y0, y1, ...);
    integers drawn from [-high, high)."""
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        feeds = {n: _values(rng, shape, dtype, high) for n, (shape, dtype) in inputs.items()}
        names = ["y"] if outputs == 1 else [f"y{k}" for k in range(outputs)]
        node = helper.make_node(op, list(order or (*inputs, *(inits or {}))), names, **attrs)
        graph = helper.make_graph(
            [node], "test",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(d)), list(shape))
             for n, (shape, d) in inputs.items()],
            [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in names],
            [onnx.numpy_helper.from_array(np.asarray(v), n) for n, v in (inits or {}).items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 10
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        del model.graph.output[:]
        model.graph.output.extend(o for o in inferred.graph.output)
        return model, feeds
    return make


def dynamic_range(length: int, start: int, delta: int, dtype: str = "int64") -> Callable:
    """Range(start, N * delta + start, delta) over a length N read from a dynamic input's shape: the Range layer
    (a Range of a static length is folded into a constant). Build the case with ``dynamic=(("N", length),)``."""
    def make(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        code = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        inits = {"zero": np.array([0], np.int64), "start": np.array(start, dtype),
                 "delta": np.array(delta, dtype)}
        nodes = [helper.make_node("Shape", ["x"], ["shape"]),
                 helper.make_node("Gather", ["shape", "zero"], ["n1"], axis=0),
                 helper.make_node("Squeeze", ["n1", "zero"], ["n"]),
                 helper.make_node("Cast", ["n"], ["n_t"], to=code),
                 helper.make_node("Mul", ["n_t", "delta"], ["span"]),
                 helper.make_node("Add", ["span", "start"], ["limit"]),
                 helper.make_node("Range", ["start", "limit", "delta"], ["y"])]
        graph = helper.make_graph(nodes, "test", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N"])],
                                  [helper.make_tensor_value_info("y", code, ["N"])],
                                  [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 10  # what the GPU host's onnxruntime reads too
        return model, {"x": rng.standard_normal(length).astype(np.float32)}
    return make


_I64 = np.int64
CASES = [
    Case("range_dynamic_length", dynamic_range(7, 3, 2), dynamic=(("N", 7),)),
    Case("range_dynamic_descending_int32", dynamic_range(5, 4, -3, "int32"), dynamic=(("N", 5),)),
    Case("conv_3x3_pad1", conv((2, 3, 9, 9), (4, 3, 3, 3), pads=[1, 1, 1, 1])),
    Case("conv_stride2_nobias", conv((1, 5, 11, 10), (6, 5, 3, 3), bias=False, strides=[2, 2])),
    Case("conv_dilated_asym_pads", conv((1, 4, 10, 12), (3, 4, 3, 2), dilations=[2, 3], pads=[2, 1, 0, 3])),
    Case("conv_grouped", conv((2, 8, 7, 7), (6, 4, 3, 3), group=2, pads=[1, 1, 1, 1])),
    Case("conv_depthwise", conv((1, 6, 8, 8), (6, 1, 3, 3), group=6, pads=[1, 1, 1, 1], strides=[2, 2])),
    Case("conv_pointwise", conv((2, 16, 7, 5), (24, 16, 1, 1))),
    Case("conv_pointwise_strided", conv((1, 8, 9, 9), (5, 8, 1, 1), strides=[2, 2])),
    Case("conv_7x7_s2", conv((1, 3, 23, 23), (8, 3, 7, 7), strides=[2, 2], pads=[3, 3, 3, 3])),
    Case("conv_same_lower", conv((1, 3, 10, 9), (4, 3, 4, 3), auto_pad="SAME_LOWER", strides=[2, 2])),
    Case("conv_wide", conv((1, 32, 14, 14), (40, 32, 3, 3), pads=[1, 1, 1, 1])),
    Case("fused_conv_relu", fused_conv((2, 3, 9, 9), (4, 3, 3, 3), "Relu", pads=[1, 1, 1, 1]), FUSE),
    Case("fused_conv_residual_relu", fused_conv((2, 8, 7, 7), (8, 8, 3, 3), "Relu", residual=True,
                                                pads=[1, 1, 1, 1]), FUSE),
    Case("fused_conv_pointwise_residual", fused_conv((2, 16, 5, 5), (16, 16, 1, 1), "Relu", residual=True), FUSE),
    Case("fused_conv_depthwise_clip", fused_conv((1, 6, 8, 8), (6, 1, 3, 3), "Clip", group=6, pads=[1, 1, 1, 1]),
         FUSE),
    Case("fused_conv_silu", fused_conv((1, 4, 10, 10), (8, 4, 3, 3), "SiLU", strides=[2, 2]), FUSE),
    Case("fused_conv_sigmoid", fused_conv((1, 8, 6, 6), (4, 8, 1, 1), "Sigmoid"), FUSE),
    Case("fused_linear_bias", linear((2, 7, 37), 70), FUSE_GEMM),
    Case("fused_linear_relu", linear((3, 5, 64), 130, "Relu", bias_shape=(1, 1, 130)), FUSE_GEMM),
    Case("fused_linear_residual", linear((33, 47), 19, residual=True), FUSE_GEMM),
    Case("fused_linear_residual_clip", linear((4, 65, 16), 72, "Clip", residual=True), FUSE_GEMM),
    Case("fused_linear_silu", linear((70, 24), 66, "SiLU"), FUSE_GEMM),
    Case("fused_gemm_transB_residual_sigmoid", linear((8, 64), 10, "Sigmoid", residual=True, gemm_trans_b=True),
         FUSE_GEMM),
    Case("fused_gemm_relu", linear((9, 33), 40, "Relu", bias_shape=(1, 40), gemm_trans_b=False), FUSE_GEMM),
    Case("fused_attention_bert", attention(2, 3, 7, 8), FUSE_ATTENTION),
    Case("gemm_plain", gemm((33, 65), (65, 17), None)),
    Case("gemm_transB_bias", gemm((8, 64), (10, 64), (10,), transB=1)),
    Case("gemm_transA_alpha_beta", gemm((20, 9), (20, 13), (9, 13), transA=1, alpha=0.5, beta=2.0)),
    Case("gemm_bias_column", gemm((7, 5), (5, 6), (7, 1), b_const=False)),
    Case("gemm_both_trans_rowbias", gemm((70, 3), (4, 70), (1, 4), transA=1, transB=1)),
    Case("matmul_2d_const", matmul((31, 47), (47, 19), True)),
    Case("matmul_2d_act", matmul((16, 64), (64, 70), False)),
    Case("matmul_batched_const", matmul((3, 5, 9), (9, 4), True)),
    Case("matmul_broadcast_act", matmul((2, 1, 5, 6), (3, 6, 4), False)),
    Case("add_same", elementwise("Add", [(2, 3, 4, 5), (2, 3, 4, 5)])),
    Case("add_broadcast", elementwise("Add", [(2, 3, 4, 5), (3, 1, 5)])),
    Case("add_const_first", elementwise("Add", [(1, 3, 1, 1), (2, 3, 4, 4)], const=(0,))),
    Case("mul_const_scalar", elementwise("Mul", [(4, 7), ()], const=(1,))),
    Case("mul_broadcast_both", elementwise("Mul", [(4, 1, 6), (1, 5, 1)])),
    Case("sum_three", elementwise("Sum", [(2, 3, 4), (3, 4), (2, 1, 4)])),
    Case("sum_two", elementwise("Sum", [(6, 10), (6, 10)])),
    Case("relu", unary("Relu", (2, 3, 5, 7))),
    Case("batchnorm_4d", batchnorm((2, 5, 7, 7))),
    Case("batchnorm_2d", batchnorm((6, 9), epsilon=1e-3)),
    Case("maxpool_3x3_s2_p1", unary("MaxPool", (1, 4, 12, 12), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    Case("maxpool_ceil", unary("MaxPool", (2, 3, 11, 10), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    Case("maxpool_dilated", unary("MaxPool", (1, 2, 9, 9), kernel_shape=[2, 2], dilations=[2, 2])),
    Case("maxpool_asym_pads", unary("MaxPool", (1, 2, 8, 7), kernel_shape=[2, 3], pads=[0, 1, 1, 2])),
    Case("avgpool_exclude_pad", unary("AveragePool", (1, 3, 9, 9), kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    Case("avgpool_include_pad", unary("AveragePool", (1, 3, 9, 9), kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                      count_include_pad=1)),
    Case("avgpool_ceil", unary("AveragePool", (2, 2, 10, 10), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    Case("avgpool_ceil_pad_include", unary("AveragePool", (1, 2, 8, 8), kernel_shape=[3, 3], strides=[2, 2],
                                           pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)),
    Case("avgpool_7x7", unary("AveragePool", (1, 16, 7, 7), kernel_shape=[7, 7])),
    Case("global_avgpool_4d", unary("GlobalAveragePool", (2, 8, 7, 7))),
    Case("global_avgpool_3d", unary("GlobalAveragePool", (2, 3, 50))),
    Case("global_lppool", unary("GlobalLpPool", (2, 3, 5, 5), p=3)),
    Case("softmax_last", unary("Softmax", (3, 4, 25))),
    Case("softmax_axis1_4d", unary("Softmax", (2, 5, 3, 3), axis=1)),
    Case("softmax_legacy_coerce", unary("Softmax", (2, 5, 2, 3), opset=11, axis=1)),
    Case("softmax_wide_row", unary("Softmax", (2, 1000))),
    Case("concat_axis1", concat([(2, 3, 4, 4), (2, 5, 4, 4), (2, 1, 4, 4)], axis=1)),
    Case("concat_last_const", concat([(3, 4), (3, 2)], axis=-1, const=(1,))),
    Case("reshape_zero_minus1", unary("Reshape", (2, 3, 4, 5), inits={"s": np.array([0, -1, 5], dtype=np.int64)},
                                      extra_inputs=("s",))),
    Case("flatten_axis2", unary("Flatten", (2, 3, 4, 5), axis=2)),
    Case("flatten_axis0", unary("Flatten", (2, 3, 4), axis=0)),
    Case("identity", unary("Identity", (3, 7))),
    Case("transpose_attention", unary("Transpose", (2, 7, 4, 5), perm=[0, 2, 1, 3])),
    Case("transpose_reverse", unary("Transpose", (3, 1, 5, 2))),
    Case("transpose_unit_dims", unary("Transpose", (1, 6, 1, 4), perm=[2, 0, 1, 3])),
    Case("squeeze_axis", unary("Squeeze", (3, 1, 5), inits={"axes": np.array([1], np.int64)},
                               extra_inputs=("axes",))),
    Case("unsqueeze_axes", unary("Unsqueeze", (3, 5), inits={"axes": np.array([0, 2], np.int64)},
                                 extra_inputs=("axes",))),
    Case("gather_const_axis0", unary("Gather", (3, 4, 6), inits={"i": np.array([2, 0, -1], np.int64)},
                                     extra_inputs=("i",), axis=0)),
    Case("gather_const_scalar_axis1", unary("Gather", (2, 5, 3), inits={"i": np.array(1, np.int64)},
                                            extra_inputs=("i",), axis=1)),
    Case("layernorm_last", unary("LayerNormalization", (2, 7, 32), inits={
        "s": np.linspace(0.5, 1.5, 32, dtype=np.float32), "b": np.linspace(-1, 1, 32, dtype=np.float32)},
        extra_inputs=("s", "b"), axis=-1, epsilon=1e-5)),
    Case("layernorm_two_axes_no_bias", unary("LayerNormalization", (3, 4, 10), inits={
        "s": np.linspace(0.5, 1.5, 40, dtype=np.float32).reshape(4, 10)}, extra_inputs=("s",), axis=1)),
    Case("fused_elementwise_silu_chain", fused_chain((2, 3, 8)), ("fuse_elementwise",)),
    # float16 layers (--precision fp16): the same ops with half tensors and float32 accumulation
    Case("fp16_conv_3x3_pad1", half(conv((2, 3, 9, 9), (4, 3, 3, 3), pads=[1, 1, 1, 1]))),
    Case("fp16_conv_pointwise", half(conv((2, 16, 7, 5), (24, 16, 1, 1)))),
    Case("fp16_conv_grouped", half(conv((2, 8, 7, 7), (6, 4, 3, 3), group=2, pads=[1, 1, 1, 1]))),
    Case("fp16_fused_conv_residual_relu", half(fused_conv((2, 8, 7, 7), (8, 8, 3, 3), "Relu", residual=True,
                                                          pads=[1, 1, 1, 1])), FUSE),
    Case("fp16_fused_conv_depthwise_clip", half(fused_conv((1, 6, 8, 8), (6, 1, 3, 3), "Clip", group=6,
                                                           pads=[1, 1, 1, 1])), FUSE),
    Case("fp16_fused_conv_silu", half(fused_conv((1, 4, 10, 10), (8, 4, 3, 3), "SiLU", strides=[2, 2])), FUSE),
    Case("fp16_fused_linear_relu", half(linear((3, 5, 64), 130, "Relu", bias_shape=(1, 1, 130))), FUSE_GEMM),
    Case("fp16_fused_linear_residual_clip", half(linear((4, 65, 16), 72, "Clip", residual=True)), FUSE_GEMM),
    Case("fp16_gemm_transB_bias", half(gemm((8, 64), (10, 64), (10,), transB=1))),
    Case("fp16_gemm_transA_alpha_beta", half(gemm((20, 9), (20, 13), (9, 13), transA=1, alpha=0.5, beta=2.0))),
    Case("fp16_matmul_batched_const", half(matmul((3, 5, 9), (9, 4), True))),
    Case("fp16_matmul_2d_act", half(matmul((16, 64), (64, 70), False))),
    Case("fp16_maxpool_3x3_s2_p1", half(unary("MaxPool", (1, 4, 12, 12), kernel_shape=[3, 3], strides=[2, 2],
                                              pads=[1, 1, 1, 1]))),
    Case("fp16_avgpool_exclude_pad", half(unary("AveragePool", (1, 3, 9, 9), kernel_shape=[3, 3],
                                                pads=[1, 1, 1, 1]))),
    Case("fp16_global_avgpool_4d", half(unary("GlobalAveragePool", (2, 8, 7, 7)))),
    Case("fp16_softmax_last", half(unary("Softmax", (3, 4, 25)))),
    Case("fp16_layernorm_last", half(unary("LayerNormalization", (2, 7, 32), inits={
        "s": np.linspace(0.5, 1.5, 32, dtype=np.float32), "b": np.linspace(-1, 1, 32, dtype=np.float32)},
        extra_inputs=("s", "b"), axis=-1, epsilon=1e-5))),
    Case("fp16_transpose_attention", half(unary("Transpose", (2, 7, 4, 5), perm=[0, 2, 1, 3]))),
    Case("cast_float_to_half", unary("Cast", (3, 5, 7), to=onnx.TensorProto.FLOAT16)),
    Case("cast_half_to_float", half(unary("Cast", (3, 5, 7), to=onnx.TensorProto.FLOAT))),
    # implicit-GEMM tensor-core convolutions (fp16 and bf16): K and M not multiples of the tiles, strides,
    # dilations, asymmetric padding, no bias, and every epilogue
    Case("fp16_conv_7x7_s2_stem", half(conv((2, 3, 23, 21), (70, 3, 7, 7), strides=[2, 2], pads=[3, 3, 3, 3]))),
    Case("fp16_conv_dilated_no_bias", half(conv((1, 20, 13, 11), (33, 20, 3, 3), bias=False, dilations=[2, 2],
                                                pads=[2, 1, 2, 0]))),
    Case("fp16_conv_wide_k", half(conv((2, 96, 6, 6), (130, 96, 3, 3), pads=[1, 1, 1, 1]))),
    Case("fp16_fused_attention_bert_d64", half(attention(2, 3, 77, 64)), FUSE_ATTENTION),
    Case("fp16_fused_attention_bert_d32", half(attention(1, 2, 130, 32)), FUSE_ATTENTION),
    Case("fp16_fused_attention_bert_d128", half(attention(1, 2, 45, 128)), FUSE_ATTENTION),
    Case("fp16_fused_conv_residual_sigmoid", half(fused_conv((2, 40, 9, 9), (72, 40, 1, 1), "Sigmoid",
                                                             residual=True)), FUSE),
    # bfloat16 layers (--precision bf16): the same ops, float32 accumulation
    Case("bf16_conv_3x3_pad1", bf16(conv((2, 3, 9, 9), (4, 3, 3, 3), pads=[1, 1, 1, 1]))),
    Case("bf16_conv_pointwise", bf16(conv((2, 16, 7, 5), (24, 16, 1, 1)))),
    Case("bf16_conv_grouped", bf16(conv((2, 8, 7, 7), (6, 4, 3, 3), group=2, pads=[1, 1, 1, 1]))),
    Case("bf16_conv_7x7_s2_stem", bf16(conv((2, 3, 23, 21), (70, 3, 7, 7), strides=[2, 2], pads=[3, 3, 3, 3]))),
    Case("bf16_fused_conv_residual_relu", bf16(fused_conv((2, 8, 7, 7), (8, 8, 3, 3), "Relu", residual=True,
                                                          pads=[1, 1, 1, 1])), FUSE),
    Case("bf16_fused_conv_silu", bf16(fused_conv((1, 4, 10, 10), (8, 4, 3, 3), "SiLU", strides=[2, 2])), FUSE),
    Case("bf16_fused_conv_clip_wide", bf16(fused_conv((2, 64, 8, 8), (136, 64, 3, 3), "Clip",
                                                      pads=[1, 1, 1, 1])), FUSE),
    Case("bf16_fused_linear_relu", bf16(linear((3, 5, 64), 130, "Relu", bias_shape=(1, 1, 130))), FUSE_GEMM),
    Case("bf16_fused_linear_residual_silu", bf16(linear((2, 33, 48), 40, "SiLU", residual=True)), FUSE_GEMM),
    Case("bf16_fused_attention_bert_d64", bf16(attention(2, 2, 70, 64)), FUSE_ATTENTION),
    Case("bf16_gemm_transB_bias", bf16(gemm((8, 64), (10, 64), (10,), transB=1))),
    Case("bf16_matmul_batched_const", bf16(matmul((3, 5, 9), (9, 4), True))),
    Case("bf16_matmul_2d_act", bf16(matmul((16, 64), (64, 70), False))),
    Case("bf16_maxpool_3x3_s2_p1", bf16(unary("MaxPool", (1, 4, 12, 12), kernel_shape=[3, 3], strides=[2, 2],
                                              pads=[1, 1, 1, 1]))),
    Case("bf16_avgpool_exclude_pad", bf16(unary("AveragePool", (1, 3, 9, 9), kernel_shape=[3, 3],
                                                pads=[1, 1, 1, 1]))),
    Case("bf16_global_avgpool_4d", bf16(unary("GlobalAveragePool", (2, 8, 7, 7)))),
    Case("bf16_softmax_last", bf16(unary("Softmax", (3, 4, 25)))),
    Case("bf16_layernorm_last", bf16(unary("LayerNormalization", (2, 7, 32), inits={
        "s": np.linspace(0.5, 1.5, 32, dtype=np.float32), "b": np.linspace(-1, 1, 32, dtype=np.float32)},
        extra_inputs=("s", "b"), axis=-1, epsilon=1e-5))),
    Case("bf16_transpose_attention", bf16(unary("Transpose", (2, 7, 4, 5), perm=[0, 2, 1, 3]))),
    Case("bf16_concat_axis1", bf16(concat([(2, 3, 4, 4), (2, 5, 4, 4)], axis=1))),
    Case("bf16_fused_elementwise_silu_chain", bf16(fused_chain((2, 3, 8))), ("fuse_elementwise",)),
    Case("bf16_add_broadcast", bf16(elementwise("Add", [(2, 3, 4), (4,)]))),
    Case("cast_float_to_bf16", unary("Cast", (3, 5, 7), to=onnx.TensorProto.BFLOAT16)),
    Case("cast_bf16_to_float", bf16(unary("Cast", (3, 5, 7), to=onnx.TensorProto.FLOAT))),
    # transformer data movement, logic and reductions (issue 22: capturable NVRTC tactics)
    Case("slice_negative_steps", typed("Slice", {"x": ((2, 6, 5), "float32")}, {
        "st": np.array([5, 4], _I64), "en": np.array([-100, 0], _I64), "ax": np.array([1, 2], _I64),
        "sp": np.array([-2, -3], _I64)})),
    Case("slice_last_axis_half", half(unary("Slice", (2, 7, 16), opset=18, inits={
        "st": np.array([8], _I64), "en": np.array([16], _I64), "ax": np.array([-1], _I64)},
        extra_inputs=("st", "en", "ax")))),
    Case("split_three", typed("Split", {"x": ((2, 10, 3), "float32")}, {"sp": np.array([3, 2, 5], _I64)}, outputs=3,
                                    axis=1)),
    Case("expand_bool_mask", typed("Expand", {"x": ((2, 1, 1, 5), "bool")}, {"s": np.array([2, 3, 5, 5], _I64)})),
    Case("tile_int64", typed("Tile", {"x": ((2, 3, 1), "int64")}, {"r": np.array([2, 1, 5], _I64)})),
    Case("pad_constant", typed("Pad", {"x": ((2, 3, 4), "float32")}, {
        "p": np.array([0, 1, 0, 0, 1, 2], _I64), "v": np.array(0.5, np.float32)}, mode="constant")),
    Case("gather_embedding", typed("Gather", {"ids": ((2, 5), "int64")}, {
        "table": np.linspace(-1, 1, 400, dtype=np.float32).reshape(50, 8)}, order=("table", "ids"), axis=0)),
    Case("gather_runtime_axis1", typed("Gather", {"x": ((3, 6, 4), "float32"), "i": ((2,), "int32")}, high=6,
                                           axis=1)),
    Case("gather_elements_runtime_axis1", typed("GatherElements", {"x": ((3, 6, 4), "float32"),
                                                                   "i": ((3, 5, 4), "int64")}, high=6, axis=1)),
    Case("gather_elements_window_int32_half", typed("GatherElements", {"x": ((4, 5), "float16"),
                                                                       "i": ((6, 3), "int32")}, high=4, axis=0)),
    Case("gather_elements_constant_table", typed("GatherElements", {"i": ((1, 7), "int64")}, {
        "table": np.arange(12, dtype=np.int64).reshape(1, 12)}, order=("table", "i"), high=12, axis=1)),
    Case("gather_nd_runtime", typed("GatherND", {"x": ((2, 3, 4), "float32"), "i": ((2, 5, 2), "int64")}, high=2)),
    Case("gather_nd_runtime_batch_dims", typed("GatherND", {"x": ((2, 3, 4), "int64"), "i": ((2, 4, 1), "int64")},
                                               high=3, batch_dims=1)),
    Case("gather_nd_const_mask_rows", typed("GatherND", {"x": ((2, 16), "float32")}, {"i": np.stack(np.meshgrid(
        np.arange(2), np.arange(16), indexing="ij"), -1).reshape(2, 1, 1, 16, 2)})),
    Case("where_attention_mask", typed("Where", {"m": ((2, 1, 1, 5), "bool"), "x": ((2, 3, 5, 5), "float32")},
                                       {"other": np.array(-1e4, np.float32)})),
    Case("less_int64_broadcast", typed("Less", {"a": ((3, 4), "int64"), "b": ((4,), "int64")})),
    Case("greater_or_equal_half", typed("GreaterOrEqual", {"a": ((3, 4), "float16"), "b": ((3, 1), "float16")})),
    Case("equal_bool", typed("Equal", {"a": ((3, 4), "bool"), "b": ((4,), "bool")})),
    Case("and_bool", typed("And", {"a": ((3, 4), "bool"), "b": ((3, 1), "bool")})),
    Case("not_bool", typed("Not", {"a": ((3, 4), "bool")})),
    Case("isinf_positive", typed("IsInf", {"a": ((3, 4), "float32")}, detect_negative=0)),
    Case("isnan", typed("IsNaN", {"a": ((3, 4), "float32")})),
    Case("cast_bool_to_float", typed("Cast", {"a": ((3, 4), "bool")}, to=onnx.TensorProto.FLOAT)),
    Case("cast_int64_to_float", typed("Cast", {"a": ((3, 4), "int64")}, to=onnx.TensorProto.FLOAT)),
    Case("reduce_mean_last_half", half(typed("ReduceMean", {"x": ((2, 7, 32), "float32")},
                                             {"ax": np.array([-1], _I64)}))),
    Case("reduce_sum_middle", typed("ReduceSum", {"x": ((2, 9, 5), "float32")}, {"ax": np.array([1], _I64)},
                                    keepdims=0)),
    Case("reduce_sum_int64_last", typed("ReduceSum", {"x": ((3, 4, 9), "int64")}, {"ax": np.array([2], _I64)})),
    Case("reduce_max_spatial", typed("ReduceMax", {"x": ((2, 3, 4, 5), "float32")}, {"ax": np.array([2, 3], _I64)})),
    Case("sub_int64_broadcast", typed("Sub", {"a": ((2, 9), "int64"), "b": ((1,), "int64")})),
    Case("cumsum_int64_exclusive", typed("CumSum", {"x": ((2, 9), "int64")}, {"ax": np.array(1, _I64)},
                                         exclusive=1)),
    Case("cumsum_reverse_axis0", typed("CumSum", {"x": ((6, 3, 4), "float32")}, {"ax": np.array(0, _I64)},
                                       reverse=1)),
    Case("trilu_upper_k1", typed("Trilu", {"x": ((2, 5, 7), "float32")}, {"k": np.array(1, _I64)})),
    Case("rms_normalization", typed("RMSNormalization", {"x": ((2, 7, 32), "float32")}, {
        "s": np.linspace(0.5, 1.5, 32, dtype=np.float32)}, opset=23, axis=-1, epsilon=1e-5)),
]
