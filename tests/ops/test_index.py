"""Indexing ops (op_index: _index_slice, _index_gather, _index_scatter) against onnxruntime, and against onnx's
reference evaluator (which applies updates in index order) where indices repeat."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from reprobuild.core.errors import ReprobuildError, UnsupportedOpError
from reprobuild.ops import StaticInputError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model

I64 = np.iinfo(np.int64)


def _data(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-100, 100, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _reference(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnx's reference evaluator: loops over the updates in index order."""
    return dict(zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, feeds)))


# --- Slice ----------------------------------------------------------------------------------------------------------

SLICES = [  # starts, ends, axes, steps
    ((1, 0), (4, -1), (0, 2), (1, 2)),
    ((-1,), (-100,), (1,), (-2,)),  # backwards to the beginning
    ((10,), (-10,), (2,), (-1,)),  # start clamped to dim - 1
    ((0,), (int(I64.max),), (-1,), (3,)),
    ((int(I64.min),), (3,), (0,), (1,)),
    ((2,), (2,), (0,), (1,)),  # empty
    ((4, 5), (1, 1), (0, 1), (-1, -3)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, np.bool_])
def test_slice_static_inputs(backend: str, rng: np.random.Generator, dtype: Any) -> None:
    x = _data(rng, (5, 6, 7), dtype)
    for starts, ends, axes, steps in SLICES:
        consts = {"starts": _i64(*starts), "ends": _i64(*ends), "axes": _i64(*axes), "steps": _i64(*steps)}
        check_op("Slice", {"x": x}, backend=backend, initializers=consts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_slice_random_forms_pinned(backend: str, rng: np.random.Generator) -> None:
    x = _data(rng, (4, 5, 6))
    for _ in range(12):
        axes = rng.permutation(3)[: rng.integers(1, 4)]
        n = len(axes)
        dims = np.array(x.shape)[axes]
        starts = rng.integers(-dims - 3, dims + 3).astype(np.int32)
        ends = rng.integers(-dims - 3, dims + 3).astype(np.int32)
        steps = (rng.integers(1, 4, n) * rng.choice([-1, 1], n)).astype(np.int32)
        axes = np.where(rng.random(n) < 0.5, axes - 3, axes).astype(np.int32)  # some negative axes
        inputs = {"x": x, "starts": starts, "ends": ends, "axes": axes, "steps": steps}
        check_op("Slice", inputs, backend=backend, pinned=["starts", "ends", "axes", "steps"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_slice_omitted_axes_and_attribute_form(backend: str, rng: np.random.Generator) -> None:
    x = _data(rng, (5, 6))
    consts = {"starts": _i64(4, -1), "ends": _i64(0, -7), "steps": _i64(-2, -1)}
    check_op("Slice", {"x": x}, backend=backend, initializers=consts, input_names=["x", "starts", "ends", "", "steps"])
    check_op("Slice", {"x": x}, backend=backend, opset=9, starts=[1, -4], ends=[100, -1], axes=[-1, 0])
    check_op("Slice", {"x": x}, backend=backend, opset=9, starts=[1], ends=[3])


# --- Split ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_split_forms(backend: str, rng: np.random.Generator) -> None:
    x = _data(rng, (4, 6, 7))
    check_op("Split", {"x": x}, backend=backend, n_outputs=3, opset=11, axis=1, split=[2, 3, 1])
    check_op("Split", {"x": x}, backend=backend, n_outputs=2, opset=11)  # equal parts along axis 0
    check_op("Split", {"x": x}, backend=backend, n_outputs=3, opset=13, initializers={"s": _i64(3, 0, 4)}, axis=-1)
    check_op("Split", {"x": x}, backend=backend, n_outputs=3, opset=13, axis=1)
    check_op("Split", {"x": x}, backend=backend, n_outputs=3, opset=18, axis=2, num_outputs=3)  # 3, 3, 1
    # chunks of 2, 2, 2, 0 (onnx's reference and onnxruntime 1.32; onnxruntime 1.30 refuses the empty last chunk)
    want = {f"y{i}": x[:, 2 * i:2 * i + 2] for i in range(4)}
    check_op("Split", {"x": x}, backend=backend, n_outputs=4, opset=18, axis=1, num_outputs=4, expected=want)
    check_op("Split", {"x": x}, backend=backend, n_outputs=2, initializers={"s": _i64(1, 5)}, axis=1)
    check_op("Split", {"x": _data(rng, (6, 2), np.int64)}, backend=backend, n_outputs=2, num_outputs=2)


# --- Gather, GatherElements, GatherND -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64])
def test_gather(backend: str, rng: np.random.Generator, dtype: Any) -> None:
    x = _data(rng, (4, 5, 6), dtype)
    for axis in (0, 1, -1):
        n = x.shape[axis]
        idx = rng.integers(-n, n, (2, 3)).astype(np.int64)
        check_op("Gather", {"x": x, "i": idx}, backend=backend, axis=axis)
    check_op("Gather", {"x": x, "i": rng.integers(-4, 4, (5,)).astype(np.int32)}, backend=backend, opset=7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_of_a_scalar_index_drops_the_axis(backend: str, rng: np.random.Generator) -> None:
    x = _data(rng, (4, 5, 6))
    check_op("Gather", {"x": x, "i": np.array(-2, dtype=np.int32)}, backend=backend, axis=1)
    check_op("Gather", {"x": x}, backend=backend, initializers={"i": np.array(3, dtype=np.int64)}, axis=-1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_elements(backend: str, rng: np.random.Generator) -> None:
    x = _data(rng, (4, 5, 6))
    for axis, shape in ((0, (7, 5, 6)), (1, (3, 2, 4)), (-1, (4, 5, 1))):
        n = x.shape[axis]
        idx = rng.integers(-n, n, shape).astype(np.int64)
        check_op("GatherElements", {"x": x, "i": idx}, backend=backend, axis=axis)
    idx = rng.integers(0, 4, (4, 5, 2)).astype(np.int32)
    check_op("GatherElements", {"x": _data(rng, (4, 5, 4), np.int8), "i": idx}, backend=backend, axis=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_nd(backend: str, rng: np.random.Generator) -> None:
    x = _data(rng, (3, 4, 5, 2))
    for batch_dims, idx_shape in ((0, (2, 3, 2)), (0, (6, 4)), (1, (3, 2, 1)), (2, (3, 4, 2, 2)), (1, (3, 3))):
        k = idx_shape[-1]
        dims = np.array(x.shape[batch_dims:batch_dims + k])
        idx = rng.integers(-dims, dims, idx_shape).astype(np.int64)
        check_op("GatherND", {"x": x, "i": idx}, backend=backend, batch_dims=batch_dims)
    idx = rng.integers(0, 3, (2, 2)).astype(np.int64)
    check_op("GatherND", {"x": _data(rng, (3, 3), np.float16), "i": idx}, backend=backend, opset=11)


# --- Scatter, ScatterElements, ScatterND ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float16])
def test_scatter_elements_unique_indices(backend: str, rng: np.random.Generator, dtype: Any) -> None:
    x = _data(rng, (4, 5, 6), dtype)
    for axis in (0, 1, -1):
        shape = list(x.shape)
        shape[axis] = 3
        idx = np.moveaxis(np.argsort(rng.random(np.moveaxis(x, axis, 0).shape), axis=0)[:3], 0, axis)
        idx = np.where(rng.random(idx.shape) < 0.5, idx - x.shape[axis], idx).astype(np.int64)
        updates = _data(rng, tuple(shape), dtype)
        check_op("ScatterElements", {"x": x, "i": idx, "u": updates}, backend=backend, axis=axis)
    check_op("Scatter", {"x": x, "i": idx, "u": updates}, backend=backend, opset=10, axis=-1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_repeated_indices_apply_in_index_order(backend: str, rng: np.random.Generator,
                                                                reduction: str) -> None:
    for dtype in (np.float32, np.int32):
        x = _data(rng, (3, 4), dtype)
        idx = rng.integers(-3, 3, (5, 4)).astype(np.int64)  # 5 updates per column into 3 rows: repeats
        updates = _data(rng, (5, 4), dtype)
        feeds = {"x": x, "i": idx, "u": updates}
        model = node_model("ScatterElements", feeds, axis=0, reduction=reduction)
        check_op("ScatterElements", feeds, backend=backend, axis=0, reduction=reduction,
                 expected=_reference(model, feeds))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scatter_float16_reduction_rounds_once(backend: str, rng: np.random.Generator) -> None:
    x = _data(rng, (6,), np.float16)
    idx = rng.integers(0, 6, (20,)).astype(np.int64)
    updates = _data(rng, (20,), np.float16)
    want = x.astype(np.float32)
    for i, u in zip(idx, updates.astype(np.float32)):
        want[i] += u
    check_op("ScatterElements", {"x": x, "i": idx, "u": updates}, backend=backend, reduction="add",
             expected={"y": want.astype(np.float16)}, rtol=0, atol=0)
    check_op("ScatterND", {"x": x, "i": idx.reshape(20, 1), "u": updates}, backend=backend, reduction="add",
             expected={"y": want.astype(np.float16)}, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scatter_nd_unique_indices(backend: str, rng: np.random.Generator) -> None:
    x = _data(rng, (4, 5, 3))
    flat = rng.permutation(20)[:6]
    idx = np.stack([flat // 5 - 4 * (flat % 2), flat % 5], axis=-1).reshape(2, 3, 2).astype(np.int64)
    check_op("ScatterND", {"x": x, "i": idx, "u": _data(rng, (2, 3, 3))}, backend=backend)
    rows = rng.permutation(4)[:2].reshape(2, 1).astype(np.int64)
    check_op("ScatterND", {"x": x, "i": rows, "u": _data(rng, (2, 5, 3))}, backend=backend, opset=11)
    xi = _data(rng, (4, 5, 3), np.int64)
    check_op("ScatterND", {"x": xi, "i": idx, "u": _data(rng, (2, 3, 3), np.int64)}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_repeated_indices_apply_in_index_order(backend: str, rng: np.random.Generator,
                                                          reduction: str) -> None:
    x = _data(rng, (3, 2, 4))
    idx = rng.integers(-3, 3, (7, 2)).astype(np.int64) % np.array([3, 2])  # 7 rows into 6 slots: repeats
    feeds = {"x": x, "i": idx, "u": _data(rng, (7, 4))}
    model = node_model("ScatterND", feeds, reduction=reduction)
    check_op("ScatterND", feeds, backend=backend, reduction=reduction, expected=_reference(model, feeds))


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_repeated_indices_give_the_index_order_result(backend: str, rng: np.random.Generator) -> None:
    """Thousands of writes to a few targets: a race between them would show as a different winner."""
    x = _data(rng, (5, 3))
    idx = rng.integers(0, 5, (3000, 1)).astype(np.int64)
    feeds = {"x": x, "i": idx, "u": _data(rng, (3000, 3))}
    model = node_model("ScatterND", feeds)
    check_op("ScatterND", feeds, backend=backend, expected=_reference(model, feeds))
    idx = rng.integers(-5, 5, (2000, 3)).astype(np.int64)
    feeds = {"x": x, "i": idx, "u": _data(rng, (2000, 3))}
    for reduction in ("none", "add"):
        model = node_model("ScatterElements", feeds, reduction=reduction)
        check_op("ScatterElements", feeds, backend=backend, reduction=reduction, expected=_reference(model, feeds))


# --- TensorScatter, Compress, NonZero -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_scatter(backend: str, rng: np.random.Generator) -> None:
    cache = _data(rng, (3, 2, 6, 4))
    update = _data(rng, (3, 2, 3, 4))
    where = np.array([0, 3, 2], dtype=np.int64)
    check_op("TensorScatter", {"c": cache, "u": update, "w": where}, backend=backend)
    where = np.array([5, 3, 4], dtype=np.int64)  # wraps around
    check_op("TensorScatter", {"c": cache, "u": update, "w": where}, backend=backend, mode="circular")
    check_op("TensorScatter", {"c": cache[:, 0], "u": update[:, 0]}, backend=backend, axis=1)
    check_op("TensorScatter", {"c": cache.astype(np.float16), "u": update.astype(np.float16)}, backend=backend,
             axis=-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compress(backend: str, rng: np.random.Generator) -> None:
    x = _data(rng, (4, 5))
    cond = rng.random(5) < 0.5
    check_op("Compress", {"x": x}, backend=backend, initializers={"c": cond}, axis=1)
    check_op("Compress", {"x": x, "c": cond[:3]}, backend=backend, pinned=["c"], axis=-2)  # shorter
    flat = rng.random(17) < 0.5
    check_op("Compress", {"x": x}, backend=backend, initializers={"c": flat})  # flattened
    none = np.zeros(4, bool)
    check_op("Compress", {"x": x.astype(np.int8)}, backend=backend, initializers={"c": none}, axis=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonzero_of_a_constant_is_folded(backend: str, rng: np.random.Generator) -> None:
    c = (rng.random((3, 4)) < 0.5) * rng.standard_normal((3, 4)).astype(np.float32)
    c[0, 0] = 1.0  # not all zeros
    got = check_op("NonZero", {}, backend=backend, initializers={"c": c})
    np.testing.assert_array_equal(got["y"], np.stack(np.nonzero(c)))


# --- refusals -------------------------------------------------------------------------------------------------------


def _refusal(model: Any, feeds: dict[str, np.ndarray]) -> ReprobuildError:
    for out in model.graph.output:  # outputs onnx cannot infer: declare a rank, so the checker accepts the model
        if not out.type.tensor_type.HasField("shape"):
            out.type.tensor_type.shape.dim.add().dim_param = "n"
    with pytest.raises(ReprobuildError) as info:
        build_and_run(model, feeds)
    return info.value


def test_unsupported_forms_are_typed_errors_naming_the_node(rng: np.random.Generator) -> None:
    x = _data(rng, (4, 6))
    err = _refusal(node_model("NonZero", {"x": x}), {"x": x})
    assert isinstance(err, UnsupportedOpError) and "(op NonZero)" in str(err) and "run time" in str(err)
    starts, ends = _i64(1), _i64(3)
    err = _refusal(node_model("Slice", {"x": x, "s": starts, "e": ends}), {"x": x, "s": starts, "e": ends})
    assert isinstance(err, StaticInputError) and "(op Slice)" in str(err) and "--input-value s=" in str(err)
    err = _refusal(node_model("Split", {"x": x}, n_outputs=4, opset=13, axis=1), {"x": x})
    assert "(op Split)" in str(err) and "equal parts" in str(err)
    x5 = x[:, :5].copy()
    model = node_model("Split", {"x": x5}, n_outputs=4, axis=1, num_outputs=4)  # 2, 2, 2, -1
    err = _refusal(model, {"x": x5})
    assert "(op Split)" in str(err) and "negative last chunk" in str(err)
    idx, upd = _i64(0, 1).reshape(2, 1), _data(rng, (2, 6))
    feeds = {"x": x, "i": idx, "u": upd}
    err = _refusal(node_model("ScatterND", feeds, opset=16, reduction="max"), feeds)
    assert "(op ScatterND)" in str(err) and "version 18" in str(err)
    feeds = {"x": x > 0, "i": idx, "u": upd > 0}
    err = _refusal(node_model("ScatterND", feeds, reduction="add"), feeds)
    assert "(op ScatterND)" in str(err) and "bool" in str(err)
    consts = {"s": _i64(-1), "e": _i64(int(I64.max)), "a": _i64(1), "t": _i64(-1)}
    err = _refusal(node_model("Slice", {"x": x}, initializers=consts), {"x": x})
    assert "(op Slice)" in str(err) and "INT64_MIN" in str(err)
    err = _refusal(node_model("Slice", {"x": x}, opset=9, starts=[0], ends=[2], axes=[5]), {"x": x})
    assert "(op Slice)" in str(err) and "out of range" in str(err)
