"""The attention fusion: MatMul -> scale -> softcap -> masks -> Softmax -> MatMul, in the forms HF BERT, GPT-2,
torch's SDPA decomposition, swin and Gemma-2 (softcap) export, becomes one FusedAttention layer that computes what
the unfused graph computes, bit for bit on the CPU and within float32 tolerance against onnxruntime, keeps every ONNX
node it computes, and is left alone where an intermediate is needed elsewhere or the shapes do not fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig, BuildResult
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ir import Network
from reprobuild.layers.base import OpError, TensorType
from reprobuild.layers.op_fused_attention import FusedAttention
from reprobuild.passes import DEFAULT_PASSES, run_passes
from tests.helpers import BACKENDS, make_model
from tests.ops.util import build_and_run, ort_outputs

B, S, H, D = 2, 6, 2, 8
E = H * D
MIN32 = float(np.finfo(np.float32).min)
UNFUSED = [p for p in DEFAULT_PASSES if p != "fuse_attention"]


@dataclasses.dataclass(frozen=True)
class Form:
    """How an exporter writes one attention: where the scale goes, how K reaches the product, the mask steps."""

    scale: str  # div_scores, mul_scores, q, qk, none
    key: str  # swap: Transpose(0,1,3,2) of the heads; merged: one Transpose(0,2,3,1); reshape: SDPA's 3-D route
    masks: tuple[str, ...]  # bert (additive, from an input), where, where_not (causal), bias, window (constants)
    softcap: str = ""  # div: c * tanh(scores / c), as Gemma-2 writes it; mul: c * tanh(scores * (1 / c))
    guard: str = ""  # nan: Where(IsNaN(p), 0, p) after the Softmax, as torch's SDPA decomposition (dynamo) writes it


FORMS = {
    "bert": Form("div_scores", "swap", ("bert",)),
    "bert_mul": Form("mul_scores", "merged", ("bert",)),
    "gpt2": Form("div_scores", "swap", ("where", "bert")),
    "gpt2_no_add": Form("div_scores", "swap", ("where",)),
    "gpt2_where_not": Form("div_scores", "merged", ("where_not",)),
    "sdpa": Form("qk", "reshape", ("bert",)),
    "sdpa_scores": Form("mul_scores", "reshape", ()),
    "sdpa_nan_guard": Form("qk", "reshape", ("bert",), guard="nan"),
    "swin": Form("q", "swap", ("bias",)),
    "swin_shifted": Form("q", "swap", ("bias", "window")),
    "swin_windows_viewed": Form("q", "swap", ("bias", "window_view")),
    "unscaled": Form("none", "swap", ("bias",)),
    "gemma2_softcap": Form("mul_scores", "swap", ("bert",), softcap="div"),
    "softcap_mul_where": Form("div_scores", "merged", ("where",), softcap="mul"),
}
#: The softcap's c, small enough that the Tanh saturates some scores.
SOFTCAP = 0.75

#: What each form becomes: (scale_on, scale_op, k_transposed, masks).
EXPECTED = {
    "bert": ("scores", "Div", 0, ("add",)),
    "bert_mul": ("scores", "Mul", 1, ("add",)),
    "gpt2": ("scores", "Div", 0, ("where", "add")),
    "gpt2_no_add": ("scores", "Div", 0, ("where",)),
    "gpt2_where_not": ("scores", "Div", 1, ("where_not",)),
    "sdpa": ("qk", "Mul", 1, ("add",)),
    "sdpa_scores": ("scores", "Mul", 1, ()),
    "sdpa_nan_guard": ("qk", "Mul", 1, ("add",)),
    "swin": ("q", "Mul", 0, ("add",)),
    "swin_shifted": ("q", "Mul", 0, ("add", "add")),
    "swin_windows_viewed": ("q", "Mul", 0, ("add", "add")),
    "unscaled": ("none", "", 0, ("add",)),
    "gemma2_softcap": ("scores", "Mul", 0, ("add",)),
    "softcap_mul_where": ("scores", "Div", 1, ("where",)),
}


def _const(name: str, value: np.ndarray | float, dtype: type = np.float32) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name, value=onnx.numpy_helper.from_array(
        np.asarray(value, dtype=dtype), name))


def attention_model(rng: np.random.Generator, form: Form, softmax_axis: int = -1,
                    extra_outputs: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A self-attention block as the exporters write it: Q, K, V projected from x [B, S, E] and split into heads,
    the attention chain (its nodes named ``att_*``), the heads merged back. Inputs: x, and ``attention_mask``
    [B, S] (1 keep, 0 masked) when a mask is HF's extended mask."""
    inits = {f"w{n}": (rng.standard_normal((E, E)) * E ** -0.5).astype(np.float32) for n in "qkv"}
    inits["heads"] = np.array([B, S, H, D], np.int64)
    inits["merged"] = np.array([B, S, E], np.int64)
    nodes = [helper.make_node("MatMul", ["x", f"w{n}"], [f"{n}_flat"], name=f"proj_{n}") for n in "qkv"]
    nodes += [helper.make_node("Reshape", [f"{n}_flat", "heads"], [f"{n}_bshd"], name=f"split_{n}") for n in "qkv"]
    nodes += [helper.make_node("Transpose", [f"{n}_bshd"], [n], perm=[0, 2, 1, 3], name=f"heads_{n}") for n in "qv"]
    scale = D ** -0.5
    # K as the product reads it: [B, H, D, S]
    if form.key == "swap":
        nodes += [helper.make_node("Transpose", ["k_bshd"], ["k"], perm=[0, 2, 1, 3], name="heads_k"),
                  helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2], name="att_kt")]
    elif form.key == "merged":
        nodes.append(helper.make_node("Transpose", ["k_bshd"], ["kt"], perm=[0, 2, 3, 1], name="heads_kt"))
    else:  # torch's SDPA decomposition: K to 3-D, Transpose(0, 2, 1), back to 4-D
        inits["k3"], inits["kt4"] = np.array([B * H, S, D], np.int64), np.array([B, H, D, S], np.int64)
        nodes += [helper.make_node("Transpose", ["k_bshd"], ["k"], perm=[0, 2, 1, 3], name="heads_k"),
                  helper.make_node("Reshape", ["k", "k3"], ["k_3d"], name="sdpa_k3"),
                  helper.make_node("Transpose", ["k_3d"], ["kt_3d"], perm=[0, 2, 1], name="sdpa_kt"),
                  helper.make_node("Reshape", ["kt_3d", "kt4"], ["kt"], name="sdpa_kt4")]
    q, kt = "q", "kt"
    if form.scale in ("q", "qk"):
        factor = scale if form.scale == "q" else scale ** 0.5
        inits["qscale"] = np.array(factor, np.float32)
        nodes.append(helper.make_node("Mul", ["q", "qscale"], ["q_scaled"], name="att_q_scale"))
        q = "q_scaled"
        if form.scale == "qk":
            nodes.append(helper.make_node("Mul", ["qscale", "kt"], ["kt_scaled"], name="att_k_scale"))
            kt = "kt_scaled"
    nodes.append(helper.make_node("MatMul", [q, kt], ["scores"], name="att_qk"))
    tail = "scores"
    if form.scale == "div_scores":
        inits["divisor"] = np.array(D ** 0.5, np.float32)
        nodes.append(helper.make_node("Div", [tail, "divisor"], ["scaled"], name="att_scale"))
        tail = "scaled"
    elif form.scale == "mul_scores":
        inits["factor"] = np.array(scale, np.float32)
        nodes.append(helper.make_node("Mul", ["factor", tail], ["scaled"], name="att_scale"))
        tail = "scaled"
    if form.softcap:
        inits["softcap"] = np.array(SOFTCAP, np.float32)
        inits["softcap_in"] = np.array(SOFTCAP if form.softcap == "div" else 1 / SOFTCAP, np.float32)
        nodes += [helper.make_node(form.softcap.capitalize(), [tail, "softcap_in"], ["squashed"], name="att_cap_in"),
                  helper.make_node("Tanh", ["squashed"], ["tanh"], name="att_cap_tanh"),
                  helper.make_node("Mul", ["softcap", "tanh"], ["capped"], name="att_cap_out")]
        tail = "capped"
    inputs: dict[str, tuple[int, ...]] = {"x": (B, S, E)}
    for i, mask in enumerate(form.masks):
        out = f"masked{i}"
        if mask == "bert":  # (1 - attention_mask[:, None, None, :]) * finfo.min
            inputs["attention_mask"] = (B, S)
            inits["axes12"] = np.array([1, 2], np.int64)
            inits["one"], inits["min32"] = np.array(1.0, np.float32), np.array(MIN32, np.float32)
            nodes += [helper.make_node("Unsqueeze", ["attention_mask", "axes12"], ["am4"], name="ext_unsqueeze"),
                      helper.make_node("Sub", ["one", "am4"], ["inverted"], name="ext_sub"),
                      helper.make_node("Mul", ["inverted", "min32"], ["extended"], name="ext_mul"),
                      helper.make_node("Add", [tail, "extended"], [out], name=f"att_mask{i}")]
        elif mask in ("where", "where_not"):
            causal = np.tril(np.ones((S, S), bool))[None, None]
            inits["causal"] = causal if mask == "where" else ~causal
            inits["fill"] = np.array(MIN32, np.float32)
            operands = [tail, "fill"] if mask == "where" else ["fill", tail]
            nodes.append(helper.make_node("Where", ["causal", *operands], [out], name=f"att_mask{i}"))
        elif mask == "bias":  # swin's relative position bias, one [S, S] table per head
            inits["bias"] = rng.standard_normal((H, S, S)).astype(np.float32)
            nodes.append(helper.make_node("Add", ["bias", tail], [out], name=f"att_mask{i}"))
        elif mask == "window_view":  # torchvision: scores viewed [B/nW, nW, H, N, N] + mask [1, nW, 1, N, N]
            inits["windows"], inits["heads4"] = np.array([1, B, H, S, S], np.int64), np.array([B, H, S, S], np.int64)
            inits["window"] = np.where(rng.random((1, B, 1, S, S)) < 0.3, -100.0, 0.0).astype(np.float32)
            nodes += [helper.make_node("Reshape", [tail, "windows"], ["viewed"], name=f"att_view{i}"),
                      helper.make_node("Add", ["viewed", "window"], ["viewed_masked"], name=f"att_mask{i}"),
                      helper.make_node("Reshape", ["viewed_masked", "heads4"], [out], name=f"att_unview{i}")]
        else:  # swin's shifted-window mask: 0 or -100 per window pair
            inits["window"] = np.where(rng.random((B, 1, S, S)) < 0.3, -100.0, 0.0).astype(np.float32)
            nodes.append(helper.make_node("Add", [tail, "window"], [out], name=f"att_mask{i}"))
        tail = out
    nodes.append(helper.make_node("Softmax", [tail], ["probs"], axis=softmax_axis, name="att_softmax"))
    weights = "probs"
    if form.guard == "nan":
        inits["zero"] = np.array(0.0, np.float32)
        nodes += [helper.make_node("IsNaN", ["probs"], ["nan"], name="att_isnan"),
                  helper.make_node("Where", ["nan", "zero", "probs"], ["guarded"], name="att_guard")]
        weights = "guarded"
    nodes += [helper.make_node("MatMul", [weights, "v"], ["context"], name="att_pv"),
              helper.make_node("Transpose", ["context"], ["context_bshd"], perm=[0, 2, 1, 3], name="merge_t"),
              helper.make_node("Reshape", ["context_bshd", "merged"], ["y"], name="merge")]
    return make_model(nodes, inputs, ["y", *extra_outputs], inits, 17)


def feeds(rng: np.random.Generator, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {}
    for i in model.graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        if i.name == "attention_mask":  # right padding: the last positions of the second sequence masked
            mask = np.ones(shape, np.float32)
            mask[1, -2:] = 0.0
            out[i.name] = mask
        else:
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def fused_network(model: onnx.ModelProto,
                  passes: tuple[str, ...] | list[str] = DEFAULT_PASSES) -> tuple[Network, Network]:
    network, _ = network_from_onnx_bytes(model.SerializeToString(), Logger(Severity.ERROR))
    return network, run_passes(network, passes)


@pytest.mark.parametrize("name", sorted(FORMS))
def test_each_form_becomes_one_fused_attention_with_every_onnx_node(rng: np.random.Generator, name: str) -> None:
    model = attention_model(rng, FORMS[name])
    network, fused = fused_network(model)
    ops = [layer.op for layer in fused.layers]
    assert ops.count("FusedAttention") == 1 and "Softmax" not in ops
    (layer,) = [layer for layer in fused.layers if layer.op == "FusedAttention"]
    chain = [n.name for n in model.graph.node if n.name.startswith("att_")]
    assert list(layer.origin) == chain  # every node of the chain, in graph order, and no other
    alone = run_passes(network, ["fuse_attention"])
    assert len(alone.layers) == len(network.layers) - len(chain) + 1
    attrs = dict(layer.attrs)
    assert (attrs["scale_on"], attrs["scale_op"], attrs["k_transposed"], attrs["masks"]) == EXPECTED[name]
    if FORMS[name].scale != "none":
        want = D ** 0.5 if attrs["scale_op"] == "Div" else D ** -0.5 if attrs["scale_on"] != "qk" else D ** -0.25
        assert attrs["scale"] == float(np.float32(want))
    cap = FORMS[name].softcap
    cap_in = float(np.float32(SOFTCAP if cap == "div" else 1 / SOFTCAP))
    want_cap = (cap.capitalize(), cap_in, float(np.float32(SOFTCAP)))
    assert (attrs["softcap_op"], attrs["softcap_in"], attrs["softcap"]) == (want_cap if cap else ("", 0.0, 0.0))
    assert (attrs["guard"], attrs["guard_fill"]) == ("nan" if FORMS[name].guard else "none", 0.0)
    assert attrs["fill"] == (MIN32 if "where" in FORMS[name].masks or "where_not" in FORMS[name].masks else 0.0)
    assert run_passes(network, DEFAULT_PASSES).layers == fused.layers  # deterministic


@pytest.mark.parametrize("name", sorted(FORMS))
def test_on_the_cpu_the_fused_layer_gives_the_unfused_bits(rng: np.random.Generator, name: str) -> None:
    model = attention_model(rng, FORMS[name])
    for _ in range(2):  # fresh inputs each time
        inputs = feeds(rng, model)
        fused = build_and_run(model, inputs, "cpu")["y"]
        plain = build_and_run(model, inputs, "cpu", passes=UNFUSED)["y"]
        assert fused.tobytes() == plain.tobytes()
        np.testing.assert_allclose(fused, ort_outputs(model, inputs)["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(FORMS))
def test_the_fused_layer_matches_onnxruntime_and_the_unfused_graph_on_each_backend(
        rng: np.random.Generator, backend: str, name: str) -> None:
    """On CUDA the reference runs the same steps with CuPy: within float32 tolerance of the unfused graph and of
    onnxruntime (bitwise equality is the CPU's promise)."""
    model = attention_model(rng, FORMS[name])
    inputs = feeds(rng, model)
    fused = build_and_run(model, inputs, backend)["y"]
    np.testing.assert_allclose(fused, build_and_run(model, inputs, backend, passes=UNFUSED)["y"], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(fused, ort_outputs(model, inputs)["y"], rtol=1e-4, atol=1e-5)


def _build(model: onnx.ModelProto, config: BuilderConfig) -> BuildResult:
    network, _ = network_from_onnx_bytes(model.SerializeToString(), Logger(Severity.ERROR))
    return Builder(Logger(Severity.ERROR)).build(network, config)


def test_the_reference_tactic_runs_it_through_the_engine_and_the_manifest_names_its_nodes(
        rng: np.random.Generator) -> None:
    model = attention_model(rng, FORMS["gpt2"])
    result = _build(model, BuilderConfig(backend="cpu", warmup=0, iterations=1))
    (layer,) = [layer for layer in result.manifest.pinned.layers if layer.op == "FusedAttention"]
    assert layer.tactic.name == "cpu_FusedAttention"
    assert layer.onnx_nodes == [n.name for n in model.graph.node if n.name.startswith("att_")]
    assert ("fuse_attention", 2) in [(p.name, p.version) for p in result.manifest.pinned.config.passes]
    inputs = feeds(rng, model)
    got = Runtime(Logger(Severity.ERROR)).deserialize_engine(result.engine).create_execution_context().execute(inputs)
    np.testing.assert_allclose(got["y"], ort_outputs(model, inputs)["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("precision", "dtype", "tolerance"), [("fp16", "float16", 2e-2), ("bf16", "bfloat16", 1e-1)])
@pytest.mark.parametrize("name", ["bert", "gpt2", "sdpa", "swin_windows_viewed"])
def test_narrow_precision_runs_the_fused_layer_narrow(rng: np.random.Generator, name: str, precision: str,
                                                     dtype: str, tolerance: float) -> None:
    model = attention_model(rng, FORMS[name])
    result = _build(model, BuilderConfig(backend="cpu", warmup=0, iterations=1, precision=precision))
    (layer,) = [layer for layer in result.manifest.pinned.layers if layer.op == "FusedAttention"]
    assert layer.precision == precision
    inputs = feeds(rng, model)
    got = Runtime(Logger(Severity.ERROR)).deserialize_engine(result.engine).create_execution_context().execute(inputs)
    assert got["y"].dtype == np.float32
    np.testing.assert_allclose(got["y"], ort_outputs(model, inputs)["y"], rtol=tolerance, atol=tolerance)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [layer.op for layer in fused_network(model)[1].layers]


@pytest.mark.parametrize("extra", ["scores", "scaled", "masked0", "probs", "kt", "q_scaled", "squashed", "tanh",
                                   "capped"])
def test_an_intermediate_read_elsewhere_keeps_the_chain_unfused(rng: np.random.Generator, extra: str) -> None:
    form = (Form("q", "swap", ("bias",)) if extra == "q_scaled" else FORMS["gemma2_softcap"]
            if extra in ("squashed", "tanh", "capped") else FORMS["bert"])
    ops = _ops(attention_model(rng, form, extra_outputs=(extra,)))
    if extra in ("kt", "q_scaled"):  # only the operand's producer stays outside: the rest still fuses
        assert "FusedAttention" in ops and ops.count("Transpose" if extra == "kt" else "Mul") >= 1
        network = fused_network(attention_model(rng, form, extra_outputs=(extra,)))[1]
        (layer,) = [layer for layer in network.layers if layer.op == "FusedAttention"]
        assert extra in layer.inputs
    else:
        assert "FusedAttention" not in ops and "Softmax" in ops


def test_a_mask_added_to_a_view_of_the_scores_becomes_one_mask_of_their_shape(rng: np.random.Generator) -> None:
    model = attention_model(rng, FORMS["swin_windows_viewed"])
    network = fused_network(model)[1]
    (layer,) = [layer for layer in network.layers if layer.op == "FusedAttention"]
    mask = network.constants[layer.inputs[4]]
    window = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "window"))
    assert mask.shape == (B, 1, S, S)  # constant along the heads: kept at size 1
    assert np.array_equal(mask, window.reshape(B, 1, S, S))


def test_a_softmax_not_along_the_last_axis_is_not_attention(rng: np.random.Generator) -> None:
    assert "FusedAttention" not in _ops(attention_model(rng, FORMS["bert"], softmax_axis=2))


def test_a_mask_that_broadcasts_the_scores_larger_is_not_fused() -> None:
    q, kt, v = (B, H, S, D), (B, H, D, S), (B, H, S, D)
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Add", ["s", "m"], ["sm"]),
             helper.make_node("Softmax", ["sm"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    model = make_model(nodes, {"q": q, "kt": kt, "v": v, "m": (3, B, H, S, S)}, ["y"])
    assert "FusedAttention" not in _ops(model)
    # the same mask shaped like the scores fuses
    model = make_model(nodes, {"q": q, "kt": kt, "v": v, "m": (B, H, S, S)}, ["y"])
    assert "FusedAttention" in _ops(model)


def test_onnx_attention_stays_one_attention_layer(rng: np.random.Generator) -> None:
    shapes = {"Q": (B, H, S, D), "K": (B, H, S, D), "V": (B, H, S, D)}
    model = make_model([helper.make_node("Attention", ["Q", "K", "V"], ["Y"], name="attention")], shapes, ["Y"],
                       opset=23)
    assert _ops(model) == ["Attention"]
    inputs = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    got = build_and_run(model, inputs)["Y"]
    np.testing.assert_allclose(got, ort_outputs(model, inputs)["Y"], rtol=1e-5, atol=1e-5)


ATTRS = {"fill": 0.0, "guard": "none", "guard_fill": 0.0, "k_transposed": 1, "masks": ("add",), "scale": 0.5,
         "scale_on": "scores", "scale_op": "Mul", "softcap": 0.0, "softcap_in": 0.0, "softcap_op": ""}


@pytest.mark.parametrize(("change", "shapes", "message"), [
    ({}, [(2, 4, 8), (2, 7, 4), (2, 4, 8), (2, 4, 4)], "Q @ K (the scores): inner dimensions differ"),
    ({}, [(2, 4, 8), (2, 8, 4), (2, 4, 8), (3, 2, 4, 4)], "a mask must keep the scores' shape"),
    ({"masks": ()}, [(2, 4, 8), (2, 8, 4), (2, 4, 8), (2, 4, 4)], "FusedAttention takes Q, K, V and one input per"),
    ({"scale_on": "keys"}, [(2, 4, 8), (2, 8, 4), (2, 4, 8), (2, 4, 4)], "scale_on 'keys' is not one of"),
    ({"scale_on": "none"}, [(2, 4, 8), (2, 8, 4), (2, 4, 8), (2, 4, 4)], "scale_op 'Mul' with scale_on 'none'"),
    ({"k_transposed": 0}, [(2, 4, 8), (2, 8, 4), (2, 4, 8), (2, 4, 4)], "Q @ K (the scores): inner dimensions"),
    ({}, [(2, 4, 8), (2, 8, 5), (2, 4, 8), (2, 4, 5)], "probabilities @ V: inner dimensions differ"),
    ({"softcap_op": "Div"}, [(2, 4, 8), (2, 8, 4), (2, 4, 8), (2, 4, 4)], "softcap_op 'Div' with softcap 0.0"),
    ({"softcap": 2.0}, [(2, 4, 8), (2, 8, 4), (2, 4, 8), (2, 4, 4)], "softcap_op '' with softcap 2.0"),
    ({"guard": "nan"}, [(2, 4, 8), (2, 8, 4), (2, 4, 8), (2, 4, 4), (2, 4, 4)], "FusedAttention takes Q, K, V and"),
    ({"guard": "where"}, [(2, 4, 8), (2, 8, 4), (2, 4, 8), (2, 4, 4)], "and a 'where' guard: FusedAttention takes"),
])
def test_type_inference_says_which_step_does_not_fit(change: dict, shapes: list[tuple[int, ...]],
                                                     message: str) -> None:
    with pytest.raises(OpError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FusedAttention().infer({**ATTRS, **change}, [TensorType(s, "float32") for s in shapes])


def test_the_reference_computes_the_unfused_steps_bit_for_bit(rng: np.random.Generator) -> None:
    """Straight NumPy, step by step as the unfused layers store them (K transposed, Q scaled, causal Where)."""
    q, k, v = (rng.standard_normal((2, 5, 4)).astype(np.float32) for _ in range(3))
    cond = np.tril(np.ones((5, 5), bool))[None]
    attrs = {**ATTRS, "k_transposed": 0, "scale_on": "q", "masks": ("where",), "fill": MIN32}
    (got,) = FusedAttention().compute(np, attrs, q, k, v, cond)
    s = np.matmul(q * np.float32(0.5), np.ascontiguousarray(k.transpose(0, 2, 1)))
    s = np.where(cond, s, np.float32(MIN32))
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    want = np.matmul(e / e.sum(axis=-1, keepdims=True), v)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()


def test_the_reference_computes_the_softcap_bit_for_bit(rng: np.random.Generator) -> None:
    """Scale, then c * tanh(scores * c_in), then the mask, each step rounded as the unfused layers store it."""
    q, k, v, mask = (rng.standard_normal(shape).astype(np.float32) for shape in ((2, 5, 4), (2, 4, 5), (2, 5, 4),
                                                                                 (2, 5, 5)))
    attrs = {**ATTRS, "softcap": 1.5, "softcap_in": float(np.float32(1 / 1.5)), "softcap_op": "Mul"}
    (got,) = FusedAttention().compute(np, attrs, q, k, v, mask)
    s = np.matmul(q, k) * np.float32(0.5)
    s = np.tanh(s * np.float32(1 / 1.5)) * np.float32(1.5) + mask
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    want = np.matmul(e / e.sum(axis=-1, keepdims=True), v)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()


def test_the_nan_guard_zeroes_the_rows_a_full_mask_makes_nan_bit_for_bit(rng: np.random.Generator) -> None:
    """torch's SDPA decomposition: Where(IsNaN(p), 0, p). A row masked with -inf everywhere has NaN probabilities,
    which the guard makes 0; every other value is the unguarded result, bit for bit."""
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for shape in ((2, 5, 4), (2, 4, 5), (2, 5, 4)))
    mask = np.where(rng.random((2, 5, 5)) < 0.3, -np.inf, 0.0).astype(np.float32)
    mask[1, 2, :] = -np.inf
    attrs = {**ATTRS, "guard": "nan"}
    (got,) = FusedAttention().compute(np, attrs, q, k, v, mask)
    s = np.matmul(q, k) * np.float32(0.5) + mask
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    want = np.matmul(np.where(np.isnan(p), np.float32(0.0), p), v)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    assert np.all(got[1, 2] == 0.0) and np.all(np.isfinite(got))


@pytest.mark.parametrize("extra", ["probs", "nan", "guarded"])
def test_a_nan_guard_whose_operands_are_read_elsewhere_stays_unfused(rng: np.random.Generator, extra: str) -> None:
    ops = _ops(attention_model(rng, FORMS["sdpa_nan_guard"], extra_outputs=(extra,)))
    assert "FusedAttention" not in ops and "Softmax" in ops and "IsNaN" in ops
