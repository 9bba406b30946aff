"""Write the bad-ONNX corpus: ``tests/corpus/onnx/NAME.onnx``, one model file per defect the frontend (or, for
the sizes only a build can judge, the builder) must refuse with a typed error (``tests/corpus/test_onnx.py``
says which error, message and exit code).

    python -m tests.corpus.make_onnx [--out DIR]

Every file is small (a few hundred bytes; the largest is a few KB) and is a function of this script and the
installed onnx alone: the same checkout writes the same bytes. Files whose defect protobuf's writers refuse to
produce (a name that is not UTF-8) are made by patching the bytes of a valid model.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "onnx")
OPSET = 17


def _vi(name: str, shape: Sequence[int | str] | None, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
           outputs: Sequence[onnx.ValueInfoProto], initializers: Sequence[onnx.TensorProto] = (),
           opset: int = OPSET, name: str = "corpus", doc: str = "",
           extra_opsets: Sequence[tuple[str, int]] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    *(helper.make_opsetid(d, v) for d, v in extra_opsets)],
                              producer_name="reprobuild-corpus", producer_version="1")
    model.ir_version = 8
    model.doc_string = doc
    return model


def _tensor(name: str, elem: int, dims: Sequence[int], raw: bytes | None = None) -> onnx.TensorProto:
    """A TensorProto written field by field (helper.make_tensor refuses the inconsistent ones the corpus needs)."""
    t = TensorProto()
    t.name, t.data_type = name, elem
    t.dims.extend(dims)
    if raw is not None:
        t.raw_data = raw
    return t


def _int64(name: str, values: Sequence[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _relu_model(doc: str, name: str = "corpus", x: str = "x", node: str = "relu") -> onnx.ModelProto:
    return _model([helper.make_node("Relu", [x], ["y"], name=node)], [_vi(x, [2, 3])], [_vi("y", [2, 3])],
                  name=name, doc=doc)


def _patched(model: onnx.ModelProto, old: bytes, new: bytes) -> bytes:
    data = model.SerializeToString()
    assert data.count(old) >= 1 and len(old) == len(new), (old, new)
    return data.replace(old, new)


def _bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


# --- the cases ------------------------------------------------------------------------------------------------

def string_initializer() -> bytes:
    labels = helper.make_tensor("labels", TensorProto.STRING, [2], [b"cat", b"dog"])
    return _bytes(_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [2])], [_vi("y", [2])],
                         [labels], doc="a STRING initializer (labels)"))


def node_name_not_utf8() -> bytes:
    return _patched(_relu_model("node 0's name is not UTF-8", node="NODE_NAME"), b"NODE_NAME", b"NODE\xff\xfeAME")


def tensor_name_not_utf8() -> bytes:
    return _patched(_relu_model("the input's name is not UTF-8", x="XNAME"), b"XNAME", b"X\xffAME")


def graph_name_not_utf8() -> bytes:
    return _patched(_relu_model("the graph's name is not UTF-8", name="GRAPHNAME"), b"GRAPHNAME", b"GRAPH\xc3(ME")


def constant_of_shape_100000x100000() -> bytes:
    """40 GB of float32 zeros asked for by a 16-byte initializer."""
    return _bytes(_model([helper.make_node("ConstantOfShape", ["shape"], ["y"], name="make_zeros")], [],
                         [_vi("y", [100000, 100000])], [_int64("shape", [100000, 100000])],
                         doc="ConstantOfShape of shape [100000, 100000] (40 GB)"))


def constant_of_shape_rank_64() -> bytes:
    return _bytes(_model([helper.make_node("ConstantOfShape", ["shape"], ["y"], name="make_ones")], [],
                         [_vi("y", ["n"])], [_int64("shape", [1] * 64)],
                         doc="ConstantOfShape of 64 dimensions (numpy itself refuses more than 64)"))


def range_1e12_elements() -> bytes:
    return _bytes(_model([helper.make_node("Range", ["start", "limit", "delta"], ["y"], name="count_up")], [],
                         [_vi("y", ["n"], TensorProto.INT64)],
                         [_int64("start", 0), _int64("limit", 10**12), _int64("delta", 1)],
                         doc="Range from 0 to 10**12 (8 TB of int64)"))


def hann_window_1e10() -> bytes:
    return _bytes(_model([helper.make_node("HannWindow", ["size"], ["y"], name="window")], [],
                         [_vi("y", ["n"])], [_int64("size", 10**10)], doc="HannWindow of 10**10 samples"))


def tile_overflows_int64() -> bytes:
    nodes = [helper.make_node("Tile", ["x", "repeats"], ["y"], name="tile_huge")]
    return _bytes(_model(nodes, [_vi("x", [2, 2, 2])], [_vi("y", ["a", "b", "c"])],
                         [_int64("repeats", [2**31, 2**31, 2**31])],
                         doc="Tile whose output would have 2**96 elements"))


def expand_100000x100000() -> bytes:
    """A 40 GB tensor computed at run time (too large to fold): only a build can refuse it, by its memory cap."""
    nodes = [helper.make_node("Expand", ["one", "shape"], ["big"], name="expand_big"),
             helper.make_node("ReduceSum", ["big"], ["y"], name="total", keepdims=0)]
    return _bytes(_model(nodes, [], [_vi("y", [])],
                         [numpy_helper.from_array(np.ones(1, dtype=np.float32), "one"),
                          _int64("shape", [100000, 100000])],
                         doc="Expand to [100000, 100000] (40 GB at run time)"))


def input_65536x65536() -> bytes:
    """16 GiB of float32 input: representable, so the frontend accepts it; the builder's memory cap refuses it."""
    return _bytes(_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [65536, 65536])],
                         [_vi("y", [65536, 65536])], doc="an input of 16 GiB"))


def dim_overflows_int64() -> bytes:
    return _bytes(_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [2**62, 4])],
                         [_vi("y", [2**62, 4])], doc="an input of 2**64 elements"))


def bytes_overflow_int64() -> bytes:
    return _bytes(_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [2**62])],
                         [_vi("y", [2**62])], doc="an input of 2**62 float32 elements: 2**64 bytes"))


def rank_33() -> bytes:
    return _bytes(_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [1] * 33)],
                         [_vi("y", [1] * 33)], doc="an input of 33 dimensions"))


def initializer_dim_overflows_int64() -> bytes:
    weight = _tensor("w", TensorProto.FLOAT, [2**62, 4], raw=b"\0" * 16)
    return _bytes(_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x", [4])], [_vi("y", [4])],
                         [weight], doc="an initializer declared with 2**64 elements"))


def initializer_data_too_short() -> bytes:
    weight = _tensor("w", TensorProto.FLOAT, [4, 4], raw=b"\0" * 12)
    return _bytes(_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x", [4, 4])],
                         [_vi("y", [4, 4])], [weight], doc="an initializer of 16 floats holding 3"))


def external_data() -> bytes:
    weight = _tensor("w", TensorProto.FLOAT, [4])
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    return _bytes(_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x", [4])], [_vi("y", [4])],
                         [weight], doc="a weight kept in an external data file"))


def empty_graph() -> bytes:
    return _bytes(_model([], [_vi("x", [2])], [_vi("x", [2])], doc="a graph with no nodes"))


def no_outputs() -> bytes:
    return _bytes(_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [2])], [],
                         doc="a graph with no outputs"))


def opset_999() -> bytes:
    return _bytes(_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [2])], [_vi("y", [2])],
                         opset=999, doc="default-domain opset 999"))


def three_unsupported_nodes() -> bytes:
    """Three ops reprobuild does not implement, in a model the ONNX checker accepts."""
    nodes = [helper.make_node("RandomUniformLike", ["x"], ["noise"], name="noise"),
             helper.make_node("Add", ["x", "noise"], ["a"], name="add"),
             helper.make_node("Unique", ["a"], ["u"], name="unique"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("FusedMatMul", ["r", "r"], ["y"], name="contrib", domain="com.microsoft")]
    return _bytes(_model(nodes, [_vi("x", [2, 2])], [_vi("u", ["n"]), _vi("y", [2, 2])],
                         extra_opsets=[("com.microsoft", 1)], doc="RandomUniformLike, Unique and a contrib op"))


def three_invalid_nodes() -> bytes:
    """Three nodes the ONNX checker rejects, each for its own reason (it stops at the first)."""
    nodes = [helper.make_node("NoSuchOp", ["x"], ["a"], name="unknown_op"),
             helper.make_node("Relu", ["x", "x"], ["b"], name="relu_two_inputs"),
             helper.make_node("Gemm", ["x", "x"], ["c"], name="gemm_bad_attr", transA=1.5),
             helper.make_node("Sigmoid", ["x"], ["y"], name="fine")]
    return _bytes(_model(nodes, [_vi("x", [2, 2])], [_vi("y", [2, 2])],
                         doc="an unknown op, Relu with two inputs, Gemm with a float transA"))


def two_nodes_fail_conversion() -> bytes:
    """Two valid nodes reprobuild refuses when converting them (inference engines do not train)."""
    nodes = [helper.make_node("Dropout", ["x", "ratio", "train"], ["a"], name="dropout_training"),
             helper.make_node("Relu", ["a"], ["b"], name="after_dropout"),
             helper.make_node("Sigmoid", ["x"], ["c"], name="fine"),
             helper.make_node("Dropout", ["c", "ratio", "train"], ["y"], name="dropout_training_2")]
    inits = [numpy_helper.from_array(np.asarray(0.5, dtype=np.float32), "ratio"),
             numpy_helper.from_array(np.asarray(True), "train")]
    return _bytes(_model(nodes, [_vi("x", [2])], [_vi("b", [2]), _vi("y", [2])], inits,
                         doc="two Dropout nodes with training_mode=true"))


def ir_version_2_pow_40() -> bytes:
    """An ir_version no ONNX has: the checker's C++ side takes a 32-bit int (a TypeError, in build and refit)."""
    model = _relu_model("ir_version 2**40")
    model.ir_version = 2**40
    return _bytes(model)


def conv_same_upper_stride_0() -> bytes:
    """auto_pad=SAME_UPPER divides the input size by the strides: 0 was a ZeroDivisionError."""
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv_stride_0", auto_pad="SAME_UPPER", strides=[0, 0])
    return _bytes(_model([node], [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])], [w], doc="Conv, strides 0"))


def tile_to_zero_size_dim_2_pow_43() -> bytes:
    """A Tile to shape [2**43, 0]: no element at all, but a dimension no engine can hold (the builder wrote an
    invalid header: an AssertionError)."""
    node = helper.make_node("Tile", ["x", "repeats"], ["y"], name="tile_wide")
    return _bytes(_model([node], [_vi("x", [1, 0])], [_vi("y", [2**43, 0])], [_int64("repeats", [2**43, 1])],
                         doc="Tile to [2**43, 0]"))


def input_rank_20() -> bytes:
    """Rank 20: within the frontend's 32, over the engine format's 16 (an AssertionError when serialized)."""
    return _bytes(_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [1] * 20)],
                         [_vi("y", [1] * 20)], doc="a rank-20 input"))


def not_onnx_random_bytes() -> bytes:
    return np.random.default_rng(10).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def not_onnx_text() -> bytes:
    return b"this is not an ONNX model, just some text someone saved with the wrong name\n" * 4


def protobuf_without_graph() -> bytes:
    model = onnx.ModelProto()
    model.ir_version = 8
    model.producer_name = "no graph"
    return model.SerializeToString()


def empty_file() -> bytes:
    return b""


def truncated() -> bytes:
    data = _bytes(_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x", [64])],
                         [_vi("y", [64])], [numpy_helper.from_array(np.arange(64, dtype=np.float32), "w")]))
    return data[: len(data) * 2 // 3]


#: file stem -> function returning the file's bytes.
CASES: dict[str, Callable[[], bytes]] = {f.__name__: f for f in (
    string_initializer, node_name_not_utf8, tensor_name_not_utf8, graph_name_not_utf8,
    constant_of_shape_100000x100000, constant_of_shape_rank_64, range_1e12_elements, hann_window_1e10,
    tile_overflows_int64, expand_100000x100000, input_65536x65536, dim_overflows_int64, bytes_overflow_int64,
    rank_33, initializer_dim_overflows_int64, initializer_data_too_short, external_data, empty_graph, no_outputs,
    opset_999, three_unsupported_nodes, three_invalid_nodes, two_nodes_fail_conversion, not_onnx_random_bytes,
    not_onnx_text, protobuf_without_graph, empty_file, truncated, ir_version_2_pow_40, conv_same_upper_stride_0,
    tile_to_zero_size_dim_2_pow_43, input_rank_20,
)}


def write(out: str = OUT) -> list[str]:
    """Write every case into ``out``; the paths written, sorted."""
    os.makedirs(out, exist_ok=True)
    paths = []
    for stem, make in sorted(CASES.items()):
        path = os.path.join(out, f"{stem}.onnx")
        with open(path, "wb") as f:
            f.write(make())
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=OUT, help=f"directory to write into (default {OUT})")
    args = parser.parse_args()
    for path in write(args.out):
        print(f"{os.path.getsize(path):>6}  {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
