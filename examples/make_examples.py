"""Regenerate the bundled example models (committed beside this script) with onnx.helper.

    python examples/make_examples.py

The weights come from a fixed seed, so the files are the same every time; a test checks that the committed
files match what this script makes.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 17


def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float | None = None) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    std = scale if scale is not None else float(np.sqrt(2.0 / fan_in))
    return numpy_helper.from_array((rng.standard_normal(shape) * std).astype(np.float32), name)


def make_mlp() -> onnx.ModelProto:
    """A 3-layer perceptron on a batch of 8: Gemm/Relu/MatMul/Add/Gemm/Softmax."""
    rng = np.random.default_rng(2026)
    inits = [
        _init(rng, "fc1.weight", (128, 64)), _init(rng, "fc1.bias", (128,), 0.1),
        _init(rng, "fc2.weight", (128, 96)), _init(rng, "fc2.bias", (96,), 0.1),
        _init(rng, "fc3.weight", (96, 10)), _init(rng, "fc3.bias", (10,), 0.1),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["h1"], name="fc1", transB=1),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("MatMul", ["a1", "fc2.weight"], ["h2"], name="fc2"),
        helper.make_node("Add", ["h2", "fc2.bias"], ["h2b"], name="fc2_bias"),
        helper.make_node("Relu", ["h2b"], ["a2"], name="relu2"),
        helper.make_node("Gemm", ["a2", "fc3.weight", "fc3.bias"], ["logits"], name="fc3"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [8, 10])], inits,
    )
    return _finish(graph)


def make_small_cnn(batch: int | str = 2) -> onnx.ModelProto:
    """A small image classifier: Conv/BatchNorm/Relu/MaxPool, a residual block with Add, a grouped conv,
    a branch Concat, Mul by a constant, AveragePool, GlobalAveragePool, Flatten, Dropout, Gemm, Softmax.
    ``batch``: the batch size, or the name of a dynamic batch dimension."""
    rng = np.random.default_rng(7)
    inits = [
        _init(rng, "stem.w", (16, 3, 3, 3)), _init(rng, "stem.b", (16,), 0.1),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 16).astype(np.float32), "bn.scale"),
        numpy_helper.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "bn.bias"),
        numpy_helper.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "bn.mean"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 16).astype(np.float32), "bn.var"),
        _init(rng, "res1.w", (16, 16, 3, 3)), _init(rng, "res2.w", (16, 4, 3, 3)),
        _init(rng, "branch_a.w", (8, 16, 1, 1)), _init(rng, "branch_b.w", (8, 16, 3, 3)),
        numpy_helper.from_array(np.full((1, 16, 1, 1), 0.5, dtype=np.float32), "half"),
        _init(rng, "head.w", (10, 16)), _init(rng, "head.b", (10,), 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "stem.w", "stem.b"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b1"],
                         name="stem_bn", epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"], name="stem_relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p1", "res1.w"], ["c2"], name="res1", auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["c2"], ["r2"], name="res1_relu"),
        helper.make_node("Conv", ["r2", "res2.w"], ["c3"], name="res2_grouped", pads=[1, 1, 1, 1], group=4),
        helper.make_node("Add", ["c3", "p1"], ["s1"], name="residual"),
        helper.make_node("Relu", ["s1"], ["r3"], name="res_relu"),
        helper.make_node("Conv", ["r3", "branch_a.w"], ["ba"], name="branch_a"),
        helper.make_node("Conv", ["r3", "branch_b.w"], ["bb"], name="branch_b", pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("Concat", ["ba", "bb"], ["cat"], name="concat", axis=1),
        helper.make_node("Mul", ["cat", "half"], ["scaled"], name="scale"),
        helper.make_node("AveragePool", ["scaled"], ["ap"], name="avgpool", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=0, ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["ap"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Dropout", ["flat"], ["drop"], name="dropout"),
        helper.make_node("Gemm", ["drop", "head.w", "head.b"], ["logits"], name="head", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 10])], inits,
    )
    return _finish(graph)


def make_small_cnn_dynamic() -> onnx.ModelProto:
    """small_cnn with a dynamic batch dimension, "batch": the dynamic-shapes example (``--profile``)."""
    return make_small_cnn("batch")


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="reprobuild-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


EXAMPLES = {"mlp.onnx": make_mlp, "small_cnn.onnx": make_small_cnn, "small_cnn_dynamic.onnx": make_small_cnn_dynamic}


def main() -> None:
    for name, make in EXAMPLES.items():
        path = os.path.join(HERE, name)
        with open(path, "wb") as f:
            f.write(make().SerializeToString())
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
