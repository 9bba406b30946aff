"""eliminate_identities removes exactly the layers that give back a tensor that already exists: a Cast to the same
dtype only where that Cast changes no bit (checked on every bit pattern), a same-shape Expand, and views that come
back to a shape they had; what reads them reads the original, and a network output is written directly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.core.dtypes import DTYPES, np_dtype
from reprobuild.core.logger import Logger, Severity
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ir import Network
from reprobuild.layers.op_cast import ROUND_MODES, cast
from reprobuild.passes import run_passes
from reprobuild.passes.simplify import IDENTITY_CASTS
from tests.helpers import make_model
from tests.ops.util import build_and_run

_NIBBLES = {"float4_e2m1fn": 16, "int4": 16, "uint4": 16, "int2": 4, "uint2": 4}


def _every_value(dtype: str) -> np.ndarray:
    """Every bit pattern of a type of 16 bits or fewer (the valid ones of the 4- and 2-bit types, stored a byte
    each); a seeded sample of the wider types' patterns, NaN payloads included."""
    nd = np.dtype(np_dtype(dtype))
    if dtype == "bool":
        return np.array([False, True])
    if dtype in _NIBBLES:
        return np.arange(_NIBBLES[dtype], dtype=np.uint8).view(nd)
    if nd.itemsize <= 2:
        return np.arange(1 << (8 * nd.itemsize), dtype=np.uint8 if nd.itemsize == 1 else np.uint16).view(nd)
    raw = np.random.default_rng(0).integers(0, 256, size=4096 * nd.itemsize, dtype=np.uint8)
    return raw.view(nd)


def _same_type_cast_changes_a_bit(dtype: str) -> bool:
    x = _every_value(dtype)
    with np.errstate(all="ignore"):
        return any(cast(np, x, dtype, saturate, mode).tobytes() != x.tobytes()
                   for saturate in (False, True) for mode in ROUND_MODES)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_same_type_cast_is_removed_exactly_where_it_changes_no_bit(dtype: str) -> None:
    assert _same_type_cast_changes_a_bit(dtype) == (dtype not in IDENTITY_CASTS)


def _parsed(model: onnx.ModelProto) -> Network:
    network, _ = network_from_onnx_bytes(model.SerializeToString(), Logger(Severity.ERROR))
    return network


def _unsqueeze_expand_reshape(src: str, out: str, shape: tuple[int, ...], name: str) -> list[onnx.NodeProto]:
    """ONNX's expanded Attention repeating heads, once per head: [B, H, S, D] -> [B, H, 1, S, D] -> same -> back."""
    return [helper.make_node("Unsqueeze", [src, "axis2"], [f"{name}_u"], name=f"{name}_unsqueeze"),
            helper.make_node("Expand", [f"{name}_u", "expanded"], [f"{name}_e"], name=f"{name}_expand"),
            helper.make_node("Reshape", [f"{name}_e", "back"], [out], name=f"{name}_reshape")]


SHAPE = (2, 3, 4, 5)
INITS = {"axis2": np.array([2], np.int64), "expanded": np.array([2, 3, 1, 4, 5], np.int64),
         "back": np.array(SHAPE, np.int64)}


def test_same_type_casts_and_a_view_chain_back_to_its_shape_are_removed(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=onnx.TensorProto.FLOAT, name="same_cast"),
             *_unsqueeze_expand_reshape("c", "r", SHAPE, "heads"),
             helper.make_node("CastLike", ["r", "x"], ["cl"], name="same_castlike"),
             helper.make_node("Relu", ["cl"], ["relu"], name="relu"),
             helper.make_node("Cast", ["relu"], ["h"], to=onnx.TensorProto.FLOAT16, name="narrowing"),
             helper.make_node("Cast", ["h"], ["y"], to=onnx.TensorProto.FLOAT, name="widening")]
    model = make_model(nodes, {"x": SHAPE}, ["y"], INITS, opset=21)
    network = run_passes(_parsed(model), ["eliminate_identities", "eliminate_dead_code"])
    assert [(layer.op, layer.inputs) for layer in network.layers] == [("Relu", ("x",)), ("Cast", ("relu",)),
                                                                      ("Cast", ("h",))]
    x = rng.standard_normal(SHAPE).astype(np.float32)
    assert build_and_run(model, {"x": x})["y"].tobytes() == np.maximum(x, 0).astype(np.float16).astype(
        np.float32).tobytes()


def test_a_view_chain_ending_in_a_network_output_has_its_source_write_that_output() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["relu"], name="relu"),
             *_unsqueeze_expand_reshape("relu", "y", SHAPE, "heads")]
    network = run_passes(_parsed(make_model(nodes, {"x": SHAPE}, ["y"], INITS)),
                         ["eliminate_identities", "eliminate_dead_code"])
    (relu,) = network.layers
    assert relu.outputs == ("y",) and "heads_reshape" in relu.origin


def test_views_that_change_the_shape_and_an_expand_that_repeats_stay() -> None:
    inits = {**INITS, "expanded": np.array([2, 3, 2, 4, 5], np.int64), "back": np.array([2, 6, 4, 5], np.int64)}
    nodes = _unsqueeze_expand_reshape("x", "y", (2, 6, 4, 5), "gqa")
    network = run_passes(_parsed(make_model(nodes, {"x": SHAPE}, ["y"], inits)), ["eliminate_identities"])
    assert [layer.op for layer in network.layers] == ["Unsqueeze", "Expand", "Reshape"]


def test_a_bfloat16_same_type_cast_stays_because_it_quiets_signalling_nans() -> None:
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=onnx.TensorProto.BFLOAT16, name="same_cast"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    network = run_passes(_parsed(make_model(nodes, {"x": (4,)}, ["y"], dtype="bfloat16")), ["eliminate_identities"])
    assert [layer.op for layer in network.layers] == ["Cast", "Relu"]
    signalling = np.array([0x7F81], np.uint16).view(np.dtype(np_dtype("bfloat16")))
    with np.errstate(invalid="ignore"):
        assert cast(np, signalling, "bfloat16").view(np.uint16)[0] != 0x7F81


def test_a_zero_width_pad_and_a_whole_tensor_slice_are_removed_and_real_ones_stay(rng: np.random.Generator) -> None:
    """swin's window padding at sizes already multiples of the window: a Pad of zeros, a copy (version 3)."""
    inits = {"zeros": np.zeros(8, np.int64), "one": np.array([0, 0, 1, 0, 0, 0, 1, 0], np.int64),
             "starts": np.array([0, 0], np.int64), "ends": np.array([2, 3], np.int64),
             "from1": np.array([1], np.int64), "axis1": np.array([1], np.int64), "big": np.array([99], np.int64)}
    nodes = [helper.make_node("Pad", ["x", "zeros"], ["p"], mode="constant", name="pad_zero"),
             helper.make_node("Slice", ["p", "starts", "ends"], ["s"], name="slice_all"),
             helper.make_node("Relu", ["s"], ["r"], name="relu"),
             helper.make_node("Pad", ["r", "one"], ["q"], mode="constant", name="pad_one"),
             helper.make_node("Slice", ["q", "from1", "big", "axis1"], ["y"], name="slice_tail")]
    model = make_model(nodes, {"x": SHAPE}, ["y"], inits, opset=18)
    network = run_passes(_parsed(model), ["fold_constants", "eliminate_identities", "eliminate_dead_code"])
    assert [(layer.op, layer.name) for layer in network.layers] == [("Relu", "relu"), ("Pad", "pad_one"),
                                                                    ("Slice", "slice_tail")]
    assert network.layers[0].inputs == ("x",)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    want = np.pad(np.maximum(x, 0), [(0, 0), (0, 0), (1, 1), (0, 0)])[:, 1:]  # ONNX pads: every begin, then ends
    assert build_and_run(model, {"x": x})["y"].tobytes() == want.tobytes()
