"""The tensor transforms against onnxruntime on fresh random inputs (onnx's reference evaluator where
onnxruntime lacks the op version), every attribute form and a few dtypes; and the forms reprobuild refuses."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from reprobuild.core.errors import ReprobuildError
from reprobuild.core.logger import Logger, Severity
from reprobuild.frontend import network_from_onnx_bytes
from tests.ops.util import BACKENDS, check_op, node_model


def reference(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, dict(feeds))))


def refused(op: str, inputs: Mapping[str, np.ndarray], match: str, **kwargs: object) -> None:
    """Parsing a one-node model fails with a typed error that names the node's op and says ``match``."""
    model = node_model(op, inputs, **kwargs)  # type: ignore[arg-type]
    for out in model.graph.output:  # the checker wants a shape; ONNX's inference finds none for bad nodes
        if not out.type.tensor_type.HasField("shape"):
            out.type.tensor_type.shape.dim.add().dim_param = "unknown"
    with pytest.raises(ReprobuildError, match=rf"node '\w+' \(op {op}\).*{match}"):
        network_from_onnx_bytes(model.SerializeToString(), Logger(Severity.ERROR))


@pytest.mark.parametrize("backend", BACKENDS)
def test_transpose(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    check_op("Transpose", {"x": x}, backend=backend)
    check_op("Transpose", {"x": x.astype(np.float16)}, backend=backend, perm=[0, 2, 3, 1])
    check_op("Transpose", {"x": rng.integers(-9, 9, (3, 4)).astype(np.int64)}, backend=backend, opset=11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_squeeze_and_unsqueeze(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 3, 1, 4)).astype(np.float32)
    check_op("Squeeze", {"x": x}, backend=backend)
    check_op("Squeeze", {"x": x}, backend=backend, initializers={"axes": np.array([-2], np.int64)})
    check_op("Squeeze", {"x": x.astype(np.int8)}, backend=backend, opset=11, axes=[0, 2])
    check_op("Unsqueeze", {"x": x}, backend=backend, initializers={"axes": np.array([5, 0, -3], np.int64)})
    check_op("Unsqueeze", {"x": x.astype(bool)}, backend=backend, opset=11, axes=[-1, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_expand_and_tile(backend: str, rng: np.random.Generator) -> None:
    x = rng.integers(-50, 50, (3, 1, 2)).astype(np.int32)
    check_op("Expand", {"x": x}, backend=backend, initializers={"shape": np.array([2, 1, 4, 1], np.int64)})
    check_op("Expand", {"x": x.astype(np.float16)}, backend=backend, initializers={"shape": np.array([5, 2], np.int64)})
    check_op("Tile", {"x": x}, backend=backend, initializers={"repeats": np.array([2, 3, 1], np.int64)})
    flags = rng.integers(0, 2, (2, 3)).astype(bool)
    check_op("Tile", {"x": flags, "r": np.array([3, 0], np.int64)}, backend=backend, pinned=["r"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_scalar_stays_a_scalar(backend: str, rng: np.random.Generator) -> None:
    """Expand of a 0-d tensor to shape [] made `build` fail with an AssertionError: the reference returned shape
    [1] (numpy's ascontiguousarray makes every array at least 1-d). Tile and Transpose of a 0-d tensor too."""
    x = np.asarray(rng.standard_normal(), dtype=np.float32)
    check_op("Expand", {"x": x}, backend=backend, initializers={"shape": np.zeros(0, np.int64)})
    check_op("Tile", {"x": x}, backend=backend, initializers={"repeats": np.zeros(0, np.int64)})
    check_op("Transpose", {"x": x}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes(backend: str, rng: np.random.Generator, mode: str) -> None:
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    pads = np.array([0, 2, 1, 1, 1, 3], np.int64)
    check_op("Pad", {"x": x}, backend=backend, mode=mode, initializers={"pads": pads})
    axes = np.array([-1], np.int64)
    check_op("Pad", {"x": x.astype(np.int64)}, backend=backend, mode=mode, input_names=["x", "pads", "", "axes"],
             initializers={"pads": np.array([3, 2], np.int64), "axes": axes})


@pytest.mark.parametrize("backend", BACKENDS)
def test_pad_constant_value_from_a_run_time_input_or_a_constant(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 4)).astype(np.float32)
    value = np.array(rng.standard_normal(), np.float32)
    pads = np.array([1, -1, 0, 2], np.int64)  # a negative pad removes a column
    check_op("Pad", {"x": x, "value": value}, backend=backend, initializers={"pads": pads},
             input_names=["x", "pads", "value"])
    check_op("Pad", {"x": x.astype(np.int8)}, backend=backend, initializers={"pads": pads, "v": np.array(-7, np.int8)})
    check_op("Pad", {"x": x}, backend=backend, opset=10, pads=[0, 1, 2, 0], value=2.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["reflect", "wrap"])
def test_pad_beyond_the_axis_size_repeats_as_numpy_does(backend: str, rng: np.random.Generator, mode: str) -> None:
    x = rng.standard_normal((3, 1)).astype(np.float32)
    pads = np.array([5, 2, 4, 3], np.int64)
    expected = np.pad(x, [(5, 4), (2, 3)], mode=mode)
    check_op("Pad", {"x": x}, backend=backend, mode=mode, initializers={"pads": pads}, expected={"y": expected})


@pytest.mark.parametrize("backend", BACKENDS)
def test_center_crop_pad(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((5, 4, 3)).astype(np.float32)
    check_op("CenterCropPad", {"x": x}, backend=backend, initializers={"shape": np.array([2, 7, 3], np.int64)})
    check_op("CenterCropPad", {"x": x.astype(np.uint8)}, backend=backend, axes=[-1, 0],
             initializers={"shape": np.array([6, 4], np.int64)})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_and_space_to_depth(backend: str, rng: np.random.Generator, mode: str) -> None:
    x = rng.standard_normal((2, 8, 3, 2)).astype(np.float32)
    check_op("DepthToSpace", {"x": x}, backend=backend, opset=21, blocksize=2, mode=mode)
    y = rng.integers(0, 100, (1, 2, 6, 4)).astype(np.int32)
    model = node_model("SpaceToDepth", {"x": y}, opset=28, blocksize=2, mode=mode)
    check_op("SpaceToDepth", {"x": y}, backend=backend, opset=28, blocksize=2, mode=mode,
             expected=reference(model, {"x": y}))
    check_op("SpaceToDepth", {"x": y.astype(np.float64)}, backend=backend, opset=13, blocksize=2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("upper", [0, 1])
def test_trilu(backend: str, rng: np.random.Generator, upper: int) -> None:
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    check_op("Trilu", {"x": x}, backend=backend, upper=upper)
    k = np.array(-1, np.int64)
    check_op("Trilu", {"x": x.astype(np.int32), "k": k}, backend=backend, upper=upper, pinned=["k"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_eyelike_and_range_are_constants(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 5)).astype(np.float32)
    check_op("EyeLike", {"x": x}, backend=backend, k=2)
    check_op("EyeLike", {"x": x}, backend=backend, k=-1, dtype=onnx.TensorProto.INT32)
    start, limit = (np.array(v, np.float32) for v in sorted(rng.uniform(-10, 10, 2)))
    delta = np.array(rng.uniform(0.3, 1.0), np.float32)
    check_op("Range", {"a": start, "b": limit, "c": delta}, backend=backend, pinned=["a", "b", "c"])
    check_op("Range", {}, backend=backend, initializers={"a": np.array(10, np.int32), "b": np.array(-7, np.int32),
                                                         "c": np.array(-3, np.int32)})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(backend: str, rng: np.random.Generator, axis: int) -> None:
    indices = rng.integers(-7, 7, (3, 4)).astype(np.int64)
    values = rng.standard_normal(2).astype(np.float32)
    check_op("OneHot", {"i": indices, "v": values}, backend=backend, opset=21, axis=axis,
             input_names=["i", "depth", "v"],
             initializers={"depth": np.array(5, np.int64)})
    # whole numbers: onnxruntime before 1.32 (and onnx's reference) match non-integral float indices to no class
    floats = rng.integers(0, 6, (2, 3)).astype(np.float32)
    check_op("OneHot", {"i": floats, "v": np.array([2, 9], np.float32)}, backend=backend, opset=11, axis=axis,
             input_names=["i", "depth", "v"], initializers={"depth": np.array([4.7], np.float32)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hot_truncates_float_indices_toward_zero(backend: str) -> None:
    """ONNX casts float indices to int64 (as onnxruntime 1.32 does): -1.5 is -1 (the last class), -4.2 is -4
    (the first of 4); NaN, inf and indices out of [-depth, depth) give a row of off_value."""
    indices = np.array([-1.5, -4.2, 3.9, -4.9, np.nan, np.inf, 4.0], np.float32)
    hot = np.array([3, 0, 3, 0, -1, -1, -1])
    expected = np.where(np.arange(4)[None, :] == hot[:, None], 9, 2).astype(np.int64)
    check_op("OneHot", {"i": indices, "v": np.array([2, 9], np.int64)}, backend=backend, opset=21,
             input_names=["i", "depth", "v"], initializers={"depth": np.array(4, np.int64)}, expected={"y": expected})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("batch_axis", "time_axis"), [(1, 0), (0, 1)])
def test_reverse_sequence_with_run_time_lengths(backend: str, rng: np.random.Generator, batch_axis: int,
                                                time_axis: int) -> None:
    shape = [5, 5, 2]
    shape[batch_axis] = 4
    x = rng.standard_normal(shape).astype(np.float32)
    lengths = rng.integers(1, 6, 4).astype(np.int64)
    check_op("ReverseSequence", {"x": x, "lens": lengths}, backend=backend, batch_axis=batch_axis,
             time_axis=time_axis)


def test_refused_forms_name_the_node_and_say_why() -> None:
    x = np.ones((2, 3), np.float32)
    refused("Pad", {"x": x}, "negative pads", mode="reflect", initializers={"pads": np.array([0, -1, 0, 0], np.int64)})
    refused("Squeeze", {"x": x}, "size is not 1", initializers={"axes": np.array([1], np.int64)})
    refused("Squeeze", {"x": x}, "empty", initializers={"axes": np.zeros(0, np.int64)})
    refused("Transpose", {"x": x}, "not a permutation", perm=[0, 0])
    refused("DepthToSpace", {"x": np.ones((1, 6, 2, 2), np.float32)}, "multiple of blocksize", blocksize=2)
    refused("Range", {}, "non-zero", initializers={"a": np.array(1, np.int64), "b": np.array(5, np.int64),
                                                   "c": np.array(0, np.int64)})
    refused("OneHot", {"i": np.zeros(3, np.int64), "v": np.zeros(2, np.float32)}, "at least 1",
            input_names=["i", "depth", "v"], initializers={"depth": np.array(0, np.int64)})
    refused("Expand", {"x": x, "s": np.array([2, 3], np.int64)}, "must be known when the engine is built")
