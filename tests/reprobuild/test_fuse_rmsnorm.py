"""The RMSNorm fusion: root-mean-square normalization as Llama's, T5's and Mistral's exporters write it (an upcast,
Pow or Mul for the square, ReduceMean, Add eps, Sqrt, Reciprocal or Div or Pow(-0.5), a downcast, the weight) becomes
one RMSNormalization layer that keeps every ONNX node it computes and matches onnxruntime and the unfused build; it
is left alone where an intermediate is needed elsewhere or the axes, keepdims, weight or eps do not fit. A Llama-style
block (RMSNorm, attention, SwiGLU MLP) fuses to RMSNormalization and FusedAttention and matches onnxruntime."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ir import Network
from reprobuild.passes import DEFAULT_PASSES, run_passes
from tests.helpers import BACKENDS, make_model
from tests.ops.util import build_and_run, ort_outputs

SHAPE = (2, 5, 16)
EPS = 1e-6
UNFUSED = [p for p in DEFAULT_PASSES if p != "fuse_rms_normalization"]


def rms_nodes(x: str = "x", out: str = "y", weight: str | None = "w", norm: str = "reciprocal", square: str = "pow",
              cast: bool = False, weight_first: bool = True, axes_input: bool = False, axes: tuple[int, ...] = (-1,),
              keepdims: int = 1, p: str = "") -> list[onnx.NodeProto]:
    """The nodes of one RMSNorm (names prefixed ``p``) reading ``x`` and writing ``out``; constants as Constant
    nodes, so that a model can hold several."""
    def const(name: str, value: object, dtype: type = np.float32) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [p + name], name=p + name,
                                value=onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), p + name))

    nodes = [const("two", 2.0), const("eps", EPS)]
    h = x
    if cast:
        nodes.append(helper.make_node("Cast", [x], [p + "h"], name=p + "upcast", to=TensorProto.FLOAT))
        h = p + "h"
    if square == "pow":
        nodes.append(helper.make_node("Pow", [h, p + "two"], [p + "sq"], name=p + "square"))
    else:
        nodes.append(helper.make_node("Mul", [h, h], [p + "sq"], name=p + "square"))
    if axes_input:
        nodes += [const("axes", list(axes), np.int64),
                  helper.make_node("ReduceMean", [p + "sq", p + "axes"], [p + "var"], name=p + "mean",
                                   keepdims=keepdims)]
    else:
        nodes.append(helper.make_node("ReduceMean", [p + "sq"], [p + "var"], name=p + "mean", axes=list(axes),
                                      keepdims=keepdims))
    nodes.append(helper.make_node("Add", [p + "var", p + "eps"], [p + "ve"], name=p + "add_eps"))
    y = p + "n" if cast or weight else out
    if norm == "reciprocal":
        nodes += [helper.make_node("Sqrt", [p + "ve"], [p + "std"], name=p + "sqrt"),
                  helper.make_node("Reciprocal", [p + "std"], [p + "inv"], name=p + "reciprocal"),
                  helper.make_node("Mul", [h, p + "inv"], [y], name=p + "normalize")]
    elif norm == "div":
        nodes += [helper.make_node("Sqrt", [p + "ve"], [p + "std"], name=p + "sqrt"),
                  helper.make_node("Div", [h, p + "std"], [y], name=p + "normalize")]
    else:
        nodes += [const("minus_half", -0.5), helper.make_node("Pow", [p + "ve", p + "minus_half"], [p + "inv"],
                                                             name=p + "rsqrt"),
                  helper.make_node("Mul", [h, p + "inv"], [y], name=p + "normalize")]
    if cast:
        back = p + "nc" if weight else out
        nodes.append(helper.make_node("Cast", [y], [back], name=p + "downcast", to=TensorProto.FLOAT))
        y = back
    if weight:
        operands = [weight, y] if weight_first else [y, weight]
        nodes.append(helper.make_node("Mul", operands, [out], name=p + "weight"))
    return nodes


def _model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], outputs: tuple[str, ...] = ("y",),
           opset: int = 17, dtype: str = "float32") -> onnx.ModelProto:
    return make_model(nodes, {"x": SHAPE}, list(outputs), inits, opset, dtype)


def _fused(model: onnx.ModelProto, passes: list[str] | tuple[str, ...] = DEFAULT_PASSES) -> Network:
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    return run_passes(network, passes)


def _weight(rng: np.random.Generator, dtype: str = "float32") -> np.ndarray:
    return rng.uniform(0.5, 1.5, SHAPE[-1]).astype(dtype)


FORMS = list(itertools.product(("reciprocal", "div", "pow"), ("pow", "mul"), (False, True), (True, False)))


@pytest.mark.parametrize(("norm", "square", "cast", "weight_first"), FORMS)
def test_each_form_becomes_one_layer_matching_onnxruntime_and_the_unfused_build(
        norm: str, square: str, cast: bool, weight_first: bool, rng: np.random.Generator) -> None:
    nodes = rms_nodes(norm=norm, square=square, cast=cast, weight_first=weight_first)
    model = _model(nodes, {"w": _weight(rng)})
    fused = _fused(model)
    assert [layer.op for layer in fused.layers] == ["RMSNormalization"]
    layer = fused.layers[0]
    assert dict(layer.attrs) == {"axis": 2, "epsilon": pytest.approx(EPS), "stash_type": 1}
    assert layer.inputs == ("x", "w")
    computed = {n.name for n in nodes if n.op_type not in ("Constant", "Cast")}
    assert computed <= set(layer.origin)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    got = build_and_run(model, {"x": x})["y"]
    np.testing.assert_allclose(got, ort_outputs(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)
    unfused = build_and_run(model, {"x": x}, passes=UNFUSED)["y"]
    if norm == "div":  # the op's own steps: square, mean, + eps, sqrt, divide, times the weight
        np.testing.assert_array_equal(got, unfused)
    else:
        np.testing.assert_allclose(got, unfused, rtol=1e-6, atol=1e-7)


def test_reduce_mean_with_axes_as_an_input_and_trailing_axes_fuse(rng: np.random.Generator) -> None:
    w = rng.uniform(0.5, 1.5, SHAPE[1:]).astype(np.float32)
    model = _model(rms_nodes(axes_input=True, axes=(-2, -1)), {"w": w}, opset=18)
    fused = _fused(model)
    assert [layer.op for layer in fused.layers] == ["RMSNormalization"]
    assert dict(fused.layers[0].attrs)["axis"] == 1
    x = rng.standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_allclose(build_and_run(model, {"x": x})["y"], ort_outputs(model, {"x": x})["y"],
                               rtol=1e-5, atol=1e-6)


def test_a_run_time_weight_fuses(rng: np.random.Generator) -> None:
    model = make_model(rms_nodes(), {"x": SHAPE, "w": SHAPE[-1:]}, ["y"])
    assert [layer.op for layer in _fused(model).layers] == ["RMSNormalization"]
    feeds = {"x": rng.standard_normal(SHAPE).astype(np.float32), "w": _weight(rng)}
    np.testing.assert_allclose(build_and_run(model, feeds)["y"], ort_outputs(model, feeds)["y"], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("norm", ["reciprocal", "div"])
def test_the_normalization_alone_takes_a_scale_of_ones_and_is_exact(norm: str, rng: np.random.Generator) -> None:
    model = _model(rms_nodes(weight=None, norm=norm), {})
    fused = _fused(model)
    assert [layer.op for layer in fused.layers] == ["RMSNormalization"]
    scale = fused.constants[fused.layers[0].inputs[1]]
    assert scale.shape == SHAPE[-1:] and scale.dtype == np.float32 and np.all(scale == 1)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    got = build_and_run(model, {"x": x})["y"]
    np.testing.assert_allclose(got, ort_outputs(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)
    if norm == "div":
        np.testing.assert_array_equal(got, build_and_run(model, {"x": x}, passes=UNFUSED)["y"])


def test_half_inputs_with_the_upcast_fuse_within_half_tolerance(rng: np.random.Generator) -> None:
    nodes = rms_nodes(cast=True)
    nodes[2] = helper.make_node("Cast", ["x"], ["h"], name="upcast", to=TensorProto.FLOAT)
    downcast = next(i for i, n in enumerate(nodes) if n.name == "downcast")
    nodes[downcast] = helper.make_node("Cast", ["n"], ["nc"], name="downcast", to=TensorProto.FLOAT16)
    model = _model(nodes, {"w": _weight(rng, "float16")}, dtype="float16")
    fused = _fused(model)
    assert [layer.op for layer in fused.layers] == ["RMSNormalization"]
    assert {n for n in ("upcast", "downcast")} <= set(fused.layers[0].origin)
    x = rng.standard_normal(SHAPE).astype(np.float16)
    got = build_and_run(model, {"x": x})["y"]
    assert got.dtype == np.float16
    ref = ort_outputs(model, {"x": x})["y"]
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=5e-2, atol=5e-2)
    unfused = build_and_run(model, {"x": x}, passes=UNFUSED)["y"]
    np.testing.assert_allclose(got.astype(np.float32), unfused.astype(np.float32), rtol=5e-2, atol=5e-2)


def test_at_fp16_precision_the_fused_layer_matches_onnxruntime_fp32(rng: np.random.Generator) -> None:
    from reprobuild.builder import Builder, BuilderConfig
    from reprobuild.core.logger import Logger, Severity
    from reprobuild.engine import Runtime

    model = _model(rms_nodes(cast=True), {"w": _weight(rng)})
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    quiet = Logger(Severity.ERROR)
    result = Builder(quiet).build(network, BuilderConfig(backend="cpu", iterations=1, precision="fp16"))
    assert "RMSNormalization" in {layer.op for layer in result.manifest.pinned.layers}
    x = rng.standard_normal(SHAPE).astype(np.float32)
    got = Runtime(quiet).deserialize_engine(result.engine).create_execution_context().execute({"x": x})["y"]
    np.testing.assert_allclose(got, ort_outputs(model, {"x": x})["y"], rtol=5e-2, atol=5e-2)


def _negative(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], outputs: tuple[str, ...] = ("y",)) -> None:
    fused = _fused(_model(nodes, inits, outputs))
    assert "RMSNormalization" not in {layer.op for layer in fused.layers}


def test_an_intermediate_read_elsewhere_is_left_alone(rng: np.random.Generator) -> None:
    _negative(rms_nodes(), {"w": _weight(rng)}, outputs=("y", "var"))


def test_a_leading_axis_is_left_alone(rng: np.random.Generator) -> None:
    _negative(rms_nodes(axes=(1,)), {"w": rng.uniform(0.5, 1.5, (1, SHAPE[1], 1)).astype(np.float32)})


def test_a_reduce_mean_without_keepdims_is_left_alone(rng: np.random.Generator) -> None:
    nodes = rms_nodes(keepdims=0, weight=None)
    nodes.insert(3, helper.make_node("Constant", [], ["one_axis"], value=onnx.numpy_helper.from_array(
        np.asarray([-1], np.int64), "one_axis")))
    add = next(i for i, n in enumerate(nodes) if n.name == "add_eps")
    nodes.insert(add, helper.make_node("Unsqueeze", ["var", "one_axis"], ["var_u"]))
    nodes[add + 1] = helper.make_node("Add", ["var_u", "eps"], ["ve"], name="add_eps")
    _negative(nodes, {})


def test_a_weight_not_of_the_normalized_shape_stays_outside(rng: np.random.Generator) -> None:
    fused = _fused(_model(rms_nodes(), {"w": rng.uniform(0.5, 1.5, SHAPE).astype(np.float32)}))
    assert [layer.op for layer in fused.layers if layer.op != "Cast"] == ["RMSNormalization", "Mul"]


def test_an_eps_that_is_not_a_scalar_is_left_alone(rng: np.random.Generator) -> None:
    nodes = [n for n in rms_nodes() if n.name != "eps"]
    _negative(nodes, {"w": _weight(rng), "eps": np.full(SHAPE[-1:], EPS, np.float32)})


def test_a_square_by_another_exponent_is_left_alone(rng: np.random.Generator) -> None:
    nodes = [n for n in rms_nodes() if n.name != "two"]
    _negative(nodes, {"w": _weight(rng), "two": np.float32(2.0002)})


def llama_block(rng: np.random.Generator) -> onnx.ModelProto:
    """One Llama decoder block as the exporters write it (float32, so the upcasts are same-type Casts):
    x + Attention(RMSNorm(x)), then + down(SiLU(gate(.)) * up(.)) of RMSNorm of that; a causal mask."""
    b, s, heads, d = SHAPE[0], SHAPE[1], 2, SHAPE[2] // 2
    e, f = SHAPE[2], 32
    inits = {f"w{n}": (rng.standard_normal((e, e)) * e ** -0.5).astype(np.float32) for n in "qkvo"}
    inits.update({"wg": (rng.standard_normal((e, f)) * e ** -0.5).astype(np.float32),
                  "wu": (rng.standard_normal((e, f)) * e ** -0.5).astype(np.float32),
                  "wd": (rng.standard_normal((f, e)) * f ** -0.5).astype(np.float32),
                  "ln1": _weight(rng), "ln2": _weight(rng), "heads": np.array([b, s, heads, d], np.int64),
                  "merged": np.array([b, s, e], np.int64), "divisor": np.array(d ** 0.5, np.float32),
                  "causal": np.tril(np.ones((s, s), bool))[None, None],
                  "fill": np.array(np.finfo(np.float32).min, np.float32)})
    nodes = rms_nodes("x", "xn", "ln1", cast=True, p="ln1_")
    nodes += [helper.make_node("MatMul", ["xn", f"w{n}"], [f"{n}_flat"], name=f"proj_{n}") for n in "qkv"]
    nodes += [helper.make_node("Reshape", [f"{n}_flat", "heads"], [f"{n}_bshd"], name=f"split_{n}") for n in "qkv"]
    nodes += [helper.make_node("Transpose", [f"{n}_bshd"], [n], perm=[0, 2, 1, 3], name=f"heads_{n}") for n in "qkv"]
    nodes += [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2], name="att_kt"),
              helper.make_node("MatMul", ["q", "kt"], ["scores"], name="att_qk"),
              helper.make_node("Div", ["scores", "divisor"], ["scaled"], name="att_scale"),
              helper.make_node("Where", ["causal", "scaled", "fill"], ["masked"], name="att_mask"),
              helper.make_node("Softmax", ["masked"], ["probs"], axis=-1, name="att_softmax"),
              helper.make_node("MatMul", ["probs", "v"], ["context"], name="att_pv"),
              helper.make_node("Transpose", ["context"], ["context_bshd"], perm=[0, 2, 1, 3], name="merge_t"),
              helper.make_node("Reshape", ["context_bshd", "merged"], ["attn"], name="merge"),
              helper.make_node("MatMul", ["attn", "wo"], ["o"], name="proj_o"),
              helper.make_node("Add", ["x", "o"], ["h1"], name="residual1")]
    nodes += rms_nodes("h1", "hn", "ln2", cast=True, weight_first=False, p="ln2_")
    nodes += [helper.make_node("MatMul", ["hn", "wg"], ["gate"], name="mlp_gate"),
              helper.make_node("MatMul", ["hn", "wu"], ["up"], name="mlp_up"),
              helper.make_node("Sigmoid", ["gate"], ["sig"], name="silu_sigmoid"),
              helper.make_node("Mul", ["gate", "sig"], ["silu"], name="silu"),
              helper.make_node("Mul", ["silu", "up"], ["swiglu"], name="swiglu"),
              helper.make_node("MatMul", ["swiglu", "wd"], ["down"], name="mlp_down"),
              helper.make_node("Add", ["h1", "down"], ["y"], name="residual2")]
    return _model(nodes, inits)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_llama_block_fuses_its_norms_and_attention_and_matches_onnxruntime(
        backend: str, rng: np.random.Generator) -> None:
    model = llama_block(rng)
    ops = [layer.op for layer in _fused(model).layers]
    assert ops.count("RMSNormalization") == 2 and ops.count("FusedAttention") == 1
    assert not {"ReduceMean", "Sqrt", "Reciprocal", "Softmax", "Pow"} & set(ops)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    got = build_and_run(model, {"x": x}, backend)["y"]
    np.testing.assert_allclose(got, ort_outputs(model, {"x": x})["y"], rtol=1e-4, atol=1e-5)
    unfused = build_and_run(model, {"x": x}, backend, passes=UNFUSED)["y"]
    np.testing.assert_allclose(got, unfused, rtol=1e-5, atol=1e-6)
