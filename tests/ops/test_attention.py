"""Attention, RotaryEmbedding, LinearAttention and CausalConvWithState (op_attention) against onnxruntime."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model


def _normal(rng: np.random.Generator, *shape: int, dtype: Any = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


# --- Attention -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_4d_float_mask_causal_scale_softcap(backend: str, rng: np.random.Generator) -> None:
    q, k, v = _normal(rng, 2, 3, 4, 8), _normal(rng, 2, 3, 6, 8), _normal(rng, 2, 3, 6, 5)
    mask = _normal(rng, 2, 1, 4, 6)
    check_op("Attention", {"Q": q, "K": k, "V": v, "mask": mask}, backend=backend, opset=23, is_causal=1,
             scale=0.3, softcap=2.0, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_3d_gqa_with_past_and_every_output(backend: str, rng: np.random.Generator) -> None:
    # a float mask: for a boolean one, onnxruntime's mode-2 scores hold -FLT_MAX where the spec says -inf
    feeds = {"Q": _normal(rng, 2, 3, 4 * 6), "K": _normal(rng, 2, 3, 2 * 6), "V": _normal(rng, 2, 3, 2 * 5),
             "mask": _normal(rng, 3, 7), "past_key": _normal(rng, 2, 2, 4, 6),
             "past_value": _normal(rng, 2, 2, 4, 5)}
    for mode in (0, 1, 2, 3):
        check_op("Attention", feeds, backend=backend, n_outputs=4, opset=23, q_num_heads=4, kv_num_heads=2,
                 softcap=1.5, qk_matmul_output_mode=mode, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_24_external_cache_bool_mask_and_25_windows(backend: str, rng: np.random.Generator) -> None:
    q, k, v = _normal(rng, 2, 2, 3, 8), _normal(rng, 2, 2, 6, 8), _normal(rng, 2, 2, 6, 8)
    nonpad = np.array([4, 6], dtype=np.int64)
    mask = rng.random((2, 1, 3, 6)) > 0.3
    mask[..., 0] = True  # every query keeps a key: onnxruntime gives NaN rows where the spec gives zeros
    check_op("Attention", {"Q": q, "K": k, "V": v, "mask": mask, "nonpad": nonpad}, backend=backend, opset=24,
             is_causal=1, input_names=["Q", "K", "V", "mask", "", "", "nonpad"], rtol=1e-4, atol=1e-5)
    check_op("Attention", {"Q": q, "K": k, "V": v}, backend=backend, opset=25, left_window_size=2,
             right_window_size=1, rtol=1e-4, atol=1e-5)
    check_op("Attention", {"Q": q, "K": k, "V": v}, backend=backend, opset=25, is_causal=1, left_window_size=1,
             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_float16_and_softmax_precision(backend: str, rng: np.random.Generator) -> None:
    q, k, v = (_normal(rng, 1, 2, 4, 8, dtype=np.float16) for _ in range(3))
    check_op("Attention", {"Q": q, "K": k, "V": v}, backend=backend, opset=23, is_causal=1, rtol=1e-2, atol=2e-3)
    check_op("Attention", {"Q": q, "K": k, "V": v}, backend=backend, opset=23, softmax_precision=1, rtol=1e-2,
             atol=2e-3)


def test_attention_fully_masked_rows_give_zeros(rng: np.random.Generator) -> None:
    q, k, v = _normal(rng, 1, 1, 2, 4), _normal(rng, 1, 1, 3, 4), _normal(rng, 1, 1, 3, 4)
    mask = np.array([[True, False, True], [False, False, False]])
    feeds = {"Q": q, "K": k, "V": v, "mask": mask}
    got = build_and_run(node_model("Attention", feeds, opset=23), feeds)["y"]
    assert np.all(got[0, 0, 1] == 0) and np.all(np.isfinite(got))


def _declared(model: onnx.ModelProto, *shapes: list[int]) -> onnx.ModelProto:
    """The model with its float32 outputs declared: shape inference cannot type the malformed nodes tested here,
    and the ONNX checker needs typed outputs."""
    outputs = [helper.make_tensor_value_info(o.name, onnx.TensorProto.FLOAT, s)
               for o, s in zip(model.graph.output, shapes)]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return model


def _qk_only_model() -> onnx.ModelProto:
    """Attention whose qk_matmul_output is used but present_key/present_value are not named."""
    shape = [1, 2, 3, 4]
    node = helper.make_node("Attention", ["Q", "K", "V"], ["y", "", "", "qk"], name="attn")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, shape) for n in "QKV"],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("qk", onnx.TensorProto.FLOAT, [1, 2, 3, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def test_attention_with_qk_output_but_no_present_outputs(rng: np.random.Generator) -> None:
    """The layer computes exactly the outputs the model uses, also when they skip one."""
    feeds = {n: _normal(rng, 1, 2, 3, 4) for n in "QKV"}
    got = build_and_run(_qk_only_model(), feeds)
    assert set(got) == {"y", "qk"} and got["qk"].shape == (1, 2, 3, 3)
    scores = np.matmul(feeds["Q"], feeds["K"].transpose(0, 1, 3, 2)) / np.float32(2.0)
    np.testing.assert_allclose(got["qk"], scores, rtol=1e-5, atol=1e-6)


def test_attention_unsupported_forms_are_typed_errors(rng: np.random.Generator) -> None:
    feeds = {"Q": _normal(rng, 1, 2, 3, 4), "K": _normal(rng, 1, 2, 3, 4), "V": _normal(rng, 1, 2, 3, 4),
             "mask": np.zeros((3, 3), dtype=np.int32)}
    with pytest.raises(ReprobuildError, match=r"\(op Attention\).*attn_mask has dtype int32"):
        build_and_run(node_model("Attention", feeds, opset=23), feeds)
    feeds = {"Q": _normal(rng, 1, 3, 12), "K": _normal(rng, 1, 3, 12), "V": _normal(rng, 1, 3, 12)}
    with pytest.raises(ReprobuildError, match=r"\(op Attention\).*q_num_heads and kv_num_heads"):
        build_and_run(_declared(node_model("Attention", feeds, opset=23), [1, 3, 12]), feeds)


# --- RotaryEmbedding -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("interleaved", "dim"), [(0, 0), (1, 4)])
def test_rotary_embedding_with_position_ids(backend: str, rng: np.random.Generator, interleaved: int,
                                            dim: int) -> None:
    half = (dim or 8) // 2
    feeds = {"x": _normal(rng, 2, 3, 5, 8), "cos": _normal(rng, 16, half), "sin": _normal(rng, 16, half),
             "ids": rng.integers(0, 16, (2, 5)).astype(np.int64)}
    check_op("RotaryEmbedding", feeds, backend=backend, opset=23, interleaved=interleaved, rotary_embedding_dim=dim)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotary_embedding_3d_without_ids_and_float16(backend: str, rng: np.random.Generator) -> None:
    feeds = {"x": _normal(rng, 2, 5, 3 * 6), "cos": _normal(rng, 2, 5, 3), "sin": _normal(rng, 2, 5, 3)}
    check_op("RotaryEmbedding", feeds, backend=backend, opset=23, num_heads=3)
    half = {k: v.astype(np.float16) for k, v in feeds.items()}
    check_op("RotaryEmbedding", half, backend=backend, opset=23, num_heads=3, interleaved=1, rtol=2e-3, atol=2e-3)


def test_rotary_embedding_refuses_an_odd_rotary_dim(rng: np.random.Generator) -> None:
    feeds = {"x": _normal(rng, 1, 2, 3, 8), "cos": _normal(rng, 1, 3, 2), "sin": _normal(rng, 1, 3, 2)}
    with pytest.raises(ReprobuildError, match=r"\(op RotaryEmbedding\).*rotary_embedding_dim=3"):
        build_and_run(node_model("RotaryEmbedding", feeds, opset=23, rotary_embedding_dim=3), feeds)


# --- LinearAttention and CausalConvWithState -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
def test_linear_attention_rules_with_gqa_and_past_state(backend: str, rng: np.random.Generator, rule: str) -> None:
    b, t, hq, hkv, dk, dv = 2, 3, 4, 2, 4, 3
    feeds: dict[str, np.ndarray] = {"q": _normal(rng, b, t, hq * dk), "k": _normal(rng, b, t, hkv * dk) / 2,
                                    "v": _normal(rng, b, t, hkv * dv), "past": _normal(rng, b, hkv, dk, dv)}
    names = ["q", "k", "v", "past"]
    if rule in ("gated", "gated_delta"):
        feeds["decay"] = -rng.random((b, t, hkv * dk if rule == "gated" else hkv)).astype(np.float32)
        names.append("decay")
    if rule in ("delta", "gated_delta"):
        feeds["beta"] = rng.random((b, t, hkv)).astype(np.float32)
        names += ["", "beta"] if rule == "delta" else ["beta"]
    check_op("LinearAttention", feeds, backend=backend, n_outputs=2, opset=27, input_names=names, q_num_heads=hq,
             kv_num_heads=hkv, update_rule=rule, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_conv_with_state(backend: str, rng: np.random.Generator) -> None:
    feeds = {"x": _normal(rng, 2, 3, 6), "w": _normal(rng, 3, 1, 4), "bias": _normal(rng, 3),
             "past": _normal(rng, 2, 3, 3)}
    check_op("CausalConvWithState", feeds, backend=backend, n_outputs=2, opset=27, activation="silu", rtol=1e-5)
    check_op("CausalConvWithState", {"x": feeds["x"], "w": feeds["w"], "past": feeds["past"]}, backend=backend,
             n_outputs=2, opset=27, input_names=["x", "w", "", "past"])
    half = {k: feeds[k].astype(np.float16) for k in ("x", "w")}
    check_op("CausalConvWithState", half, backend=backend, n_outputs=2, opset=27, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_attention_float16_default_rule(backend: str, rng: np.random.Generator) -> None:
    b, t, heads, d = 2, 4, 2, 4
    feeds = {"q": _normal(rng, b, t, heads * d, dtype=np.float16),
             "k": (_normal(rng, b, t, heads * d) / 2).astype(np.float16),
             "v": _normal(rng, b, t, heads * d, dtype=np.float16),
             "decay": (-rng.random((b, t, heads))).astype(np.float16),
             "beta": rng.random((b, t, 1)).astype(np.float16)}
    check_op("LinearAttention", feeds, backend=backend, n_outputs=2, opset=27, q_num_heads=heads,
             kv_num_heads=heads, input_names=["q", "k", "v", "", "decay", "beta"], rtol=1e-2, atol=1e-2)


def test_linear_attention_and_causal_conv_unsupported_forms(rng: np.random.Generator) -> None:
    feeds = {"q": _normal(rng, 1, 2, 8), "k": _normal(rng, 1, 2, 8), "v": _normal(rng, 1, 2, 8)}
    model = _declared(node_model("LinearAttention", feeds, n_outputs=2, opset=27, q_num_heads=2, kv_num_heads=2,
                                 update_rule="gated"), [1, 2, 8], [1, 2, 4, 4])
    with pytest.raises(ReprobuildError, match=r"\(op LinearAttention\).*needs decay"):
        build_and_run(model, feeds)
    feeds = {"x": _normal(rng, 1, 2, 5), "w": _normal(rng, 2, 1, 3)}
    model = _declared(node_model("CausalConvWithState", feeds, n_outputs=2, opset=27, activation="relu"),
                      [1, 2, 5], [1, 2, 2])
    with pytest.raises(ReprobuildError, match=r"\(op CausalConvWithState\).*activation='relu'"):
        build_and_run(model, feeds)
