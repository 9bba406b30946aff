"""Dynamic shapes, first part: symbolic sizes (``reprobuild.core.symbolic``), a model with dynamic axes parsed once
into a network valid over a range of sizes, and ``Network.specialize`` at one size, built and run against
onnxruntime at several shapes (a BERT export with dynamic batch and sequence, and a CNN with a dynamic batch)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core import symbolic
from reprobuild.core.errors import DynamicShapeError, ModelError, UsageError
from reprobuild.core.logger import Logger, Severity
from reprobuild.core.symbolic import SymbolicShapeError, SymInt, symbol, symbol_ranges
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from tests.helpers import REPO, assert_close, ort_run

QUIET = Logger(Severity.ERROR)
BERT = os.path.join(REPO, "tests", "data", "dynamic", "bert_dynamic.onnx")
BERT_RANGES = {"batch": (1, 32), "sequence": (2, 64)}

B, S = symbol("batch"), symbol("sequence")


# --- symbolic sizes ----------------------------------------------------------------------------------------------


def test_arithmetic_normalizes_and_cancels_to_int():
    assert B * S * 64 // (S * 4) == 16 * B
    assert (B + 1) - B == 1 and isinstance((B + 1) - B, int)
    assert B * S - S * B == 0
    assert str(3 * B * S + 2 * B - 1) == "3*batch*sequence + 2*batch - 1"
    assert symbolic.prod([B, S, 64]) == 64 * B * S
    assert symbolic.prod([2, 3]) == 6 and isinstance(symbolic.prod([2, 3]), int)
    assert hash(B * S) == hash(S * B)


def test_inexact_division_and_numbers_are_refused():
    with pytest.raises(SymbolicShapeError, match="divide exactly"):
        _ = (B * 3 + 1) // 2
    with pytest.raises(SymbolicShapeError, match="divide exactly"):
        _ = 64 // S
    with pytest.raises(SymbolicShapeError, match="needed here as one number"):
        int(B)
    with pytest.raises(SymbolicShapeError, match="as a number"):
        float(S)


def test_comparisons_are_decided_over_the_ranges_or_refused():
    with symbol_ranges({"sequence": (2, 64)}):
        assert S <= 64 and not S > 64 and min(S, 64) is S
        assert S != 0 and S != 1 and S != -1
        assert (S == 2 ** 31 - 1) is False
        with pytest.raises(SymbolicShapeError, match="cannot decide"):
            _ = S == 8
        with pytest.raises(SymbolicShapeError, match="cannot decide"):
            _ = S < 10
    with symbol_ranges({"batch": (1, 8)}), pytest.raises(SymbolicShapeError, match="cannot decide"):
        _ = B == 1  # batch 1 broadcasts differently from batch 8: never assumed


def test_broadcast_with_dynamic_sizes():
    assert symbolic.broadcast((B, 1, S), (1, 4, 1)) == (B, 4, S)
    assert symbolic.broadcast((B, S), (S,)) == (B, S)
    with symbol_ranges({"batch": (1, 8)}):
        with pytest.raises(SymbolicShapeError, match="do not broadcast"):
            symbolic.broadcast((B,), (3,))
        with pytest.raises(SymbolicShapeError, match="do not broadcast"):
            symbolic.broadcast((B,), (S,))


def test_text_form_is_canonical_and_checked():
    """What an engine file holds a symbolic size as: its canonical text, which alone parses back."""
    expr = 3 * B * S + 2 * B - 1
    assert isinstance(expr, SymInt) and expr.degree == 2
    text = str(expr)
    assert symbolic.parse(text) == expr
    assert str(symbolic.parse(text)) == text
    with pytest.raises(SymbolicShapeError, match="canonical"):
        symbolic.parse("-1 + 2*batch + 3*batch*sequence")  # the same size, spelled otherwise
    for bad in ("", "batch^0", "1.5*batch", "1x", "batch*batch", "5", "batch - -1"):
        with pytest.raises(SymbolicShapeError):
            symbolic.parse(bad)


def test_substitute():
    arr = symbolic.int_array([B, S, 4])
    assert arr.dtype == object
    assert symbolic.substitute(arr, {"batch": 2, "sequence": 5}).tolist() == [2, 5, 4]
    assert symbolic.substitute({"shape": (B * S, 3)}, {"batch": 2, "sequence": 5}) == {"shape": (10, 3)}
    assert symbolic.int_array([1, 2]).dtype == np.int64
    with pytest.raises(SymbolicShapeError, match="no size given"):
        (B * S).evaluate({"batch": 2})


# --- a dynamic BERT export ---------------------------------------------------------------------------------------


def _bert_bytes() -> bytes:
    with open(BERT, "rb") as f:
        return f.read()


def _text_feeds(rng: np.random.Generator, batch: int, seq: int) -> dict[str, np.ndarray]:
    mask = np.ones((batch, seq), np.int64)
    for row, pad in enumerate(rng.integers(0, seq // 2 + 1, batch)):
        mask[row, seq - pad:] = 0
    return {"input_ids": rng.integers(0, 1000, (batch, seq), dtype=np.int64), "attention_mask": mask}


def _run(network, feeds):
    result = Builder(QUIET).build(network, BuilderConfig(backend="cpu"))
    context = Runtime(QUIET).deserialize_engine(result.engine).create_execution_context()
    return list(context.execute(feeds).values())


def test_bert_with_dynamic_batch_and_sequence_parses_once_and_matches_onnxruntime_at_four_shapes():
    data = _bert_bytes()
    network, _ = network_from_onnx_bytes(data, QUIET, dynamic=BERT_RANGES)
    assert network.symbols == ("batch", "sequence")
    assert network.inputs[0].shape == (B, S)
    assert network.outputs[0].shape == (B, S, 64)
    ranges = [layer for layer in network.layers if layer.op == "Range"]
    assert ranges and all(isinstance(layer.attr("limit"), SymInt) for layer in ranges)  # arange(sequence) at run time
    model = onnx.load_from_string(data)
    rng = np.random.default_rng(23)
    for batch, seq in ((1, 16), (3, 7), (2, 64), (5, 33)):
        concrete = network.specialize({"batch": batch, "sequence": seq})
        assert concrete.symbols == () and concrete.outputs[0].shape == (batch, seq, 64)
        feeds = _text_feeds(rng, batch, seq)
        (out,) = _run(concrete, feeds)
        (ref,) = ort_run(model, feeds)
        assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_specializing_outside_what_the_model_allows_fails_at_the_layer():
    network, _ = network_from_onnx_bytes(_bert_bytes(), QUIET, dynamic=BERT_RANGES)
    with pytest.raises(ModelError, match="node_slice_1"):  # 65 positions from a 64-row position table
        network.specialize({"batch": 1, "sequence": 65})
    with pytest.raises(SymbolicShapeError, match=r"no size given for the dynamic dimension.*sequence"):
        network.specialize({"batch": 1})


def test_dynamic_axes_need_a_range_and_ranges_need_an_axis():
    data = _bert_bytes()
    with pytest.raises(DynamicShapeError, match="dynamic"):
        network_from_onnx_bytes(data, QUIET)
    with pytest.raises(DynamicShapeError, match="dynamic"):
        network_from_onnx_bytes(data, QUIET, dynamic={"batch": (1, 8)})  # sequence has none
    with pytest.raises(UsageError, match=r"'tokens'.*no network input has them"):
        network_from_onnx_bytes(data, QUIET, dynamic={**BERT_RANGES, "tokens": (1, 4)})
    with pytest.raises(UsageError, match="1 <= lowest <= highest"):
        network_from_onnx_bytes(data, QUIET, dynamic={"batch": (4, 2), "sequence": (2, 64)})
    # An axis fixed with input_shapes is not symbolic.
    network, _ = network_from_onnx_bytes(data, QUIET, input_shapes={"input_ids": (2, 16), "attention_mask": (2, 16)})
    assert network.symbols == ()


# --- a CNN with a dynamic batch ----------------------------------------------------------------------------------


def _dynamic_cnn(seed: int = 5) -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> a torch-style view(n, -1) (Shape, Gather, Unsqueeze, Concat, Reshape) -> Gemm,
    with the batch axis named "N"."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
             numpy_helper.from_array(rng.standard_normal((10, 8 * 4 * 4)).astype(np.float32) * 0.1, "fc_w"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "fc_b"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Shape", ["p"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["p", "target"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "dynamic_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_cnn_with_a_dynamic_batch_matches_onnxruntime_at_four_batch_sizes():
    model = _dynamic_cnn()
    network, _ = network_from_onnx_bytes(model.SerializeToString(), QUIET, dynamic={"N": (1, 64)})
    assert network.symbols == ("N",)
    reshape = next(layer for layer in network.layers if layer.op == "Reshape")
    assert reshape.attr("shape") == (symbol("N"), 128)  # -1 resolved symbolically
    rng = np.random.default_rng(29)
    for batch in (1, 3, 17, 64):
        feeds = {"x": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)}
        (out,) = _run(network.specialize({"N": batch}), feeds)
        (ref,) = ort_run(model, feeds)
        assert out.shape == (batch, 10)
        assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_a_size_computed_from_a_dynamic_axis_by_other_arithmetic_is_refused_at_its_node():
    """A strided convolution over a dynamic spatial axis: (H + 2 - 3) // 2 + 1 is not a polynomial of H."""
    w = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])],
                              "strided", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "H", "H"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "Ho", "Ho"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match=r"(?s)Conv.*cannot follow symbolically"):
        network_from_onnx_bytes(model.SerializeToString(), QUIET, dynamic={"H": (8, 64)})


def _conv1d_model(seed: int = 11) -> onnx.ModelProto:
    """GPT-2's Conv1D as the dynamo exporter writes it with dynamic batch and sequence: x [B, S, 8] viewed as
    [B*S, 8] (Shape, Gather, Mul, Concat), Gemm with a bias, viewed back as [B, S, 12], plus a residual-free Relu."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 12)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.standard_normal(12).astype(np.float32) * 0.1, "b"),
             numpy_helper.from_array(np.array([0], np.int64), "i0"),
             numpy_helper.from_array(np.array([1], np.int64), "i1"),
             numpy_helper.from_array(np.array([8], np.int64), "d8"),
             numpy_helper.from_array(np.array([12], np.int64), "d12")]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "i0"], ["bsz"], axis=0),
             helper.make_node("Gather", ["shape", "i1"], ["seq"], axis=0),
             helper.make_node("Mul", ["bsz", "seq"], ["rows"]),
             helper.make_node("Concat", ["rows", "d8"], ["flat_shape"], axis=0),
             helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["mm"]),
             helper.make_node("Concat", ["bsz", "seq", "d12"], ["out_shape"], axis=0),
             helper.make_node("Reshape", ["mm", "out_shape"], ["view"]),
             helper.make_node("Relu", ["view"], ["y"])]
    graph = helper.make_graph(nodes, "conv1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_gpt2_conv1d_views_fuse_with_dynamic_batch_and_sequence():
    """The Reshape -> Gemm -> Reshape the GPT-2 exports write around each Conv1D fuses into one FusedGemm over
    symbolic views (fuse_gemm_epilogue compares batch*sequence with the rows symbolically)."""
    from reprobuild.passes import DEFAULT_PASSES, run_passes

    model = _conv1d_model()
    ranges = {"B": (1, 8), "S": (2, 32)}
    network, _ = network_from_onnx_bytes(model.SerializeToString(), QUIET, dynamic=ranges)
    with symbol_ranges(ranges):
        fused = run_passes(network, DEFAULT_PASSES)
    assert [layer.op for layer in fused.layers].count("FusedGemm") == 1
    rng = np.random.default_rng(13)
    for batch, seq in ((1, 2), (3, 7), (8, 32)):
        feeds = {"x": rng.standard_normal((batch, seq, 8)).astype(np.float32)}
        (out,) = _run(fused.specialize({"B": batch, "S": seq}), feeds)
        assert_close(out, ort_run(model, feeds)[0], rtol=1e-4, atol=1e-5)
