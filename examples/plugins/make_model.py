"""A small ONNX model that uses the example plugin op: ``y = ScaledTanh(x @ w + b)``, in the custom domain
``com.example`` (opset 1) beside the default ONNX domain (opset 17).

    python -m examples.plugins.make_model out.onnx
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from examples.plugins.scaled_tanh import DOMAIN


def scaled_tanh_model(batch: int = 4, features: int = 16, alpha: float = 1.7159, beta: float = 2 / 3,
                      seed: int = 0) -> onnx.ModelProto:
    """The model, with weights drawn from ``seed`` (its bytes depend on nothing else)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((features, features)) / np.sqrt(features)).astype(np.float32)
    b = (rng.standard_normal(features) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="fc"),
        helper.make_node("Add", ["xw", "b"], ["h"], name="fc_bias"),
        helper.make_node("ScaledTanh", ["h"], ["y"], name="act", domain=DOMAIN, alpha=alpha, beta=beta),
    ]
    graph = helper.make_graph(
        nodes, "scaled_tanh_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, features])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                              producer_name="examples.plugins")
    model.ir_version = 8
    return model


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m examples.plugins.make_model OUT.onnx")
    onnx.save(scaled_tanh_model(), sys.argv[1])
