"""fuse_attention on externally authored graphs: ONNX's own Attention function as ``onnx`` expands it (the node
suite's ``test_attention_*_expanded`` cases). Every case that is plain scaled-dot-product attention becomes one
FusedAttention (scale on Q and K, the softcap when the case has one, the bias as an additive mask, the fully-masked-row
Where as its guard); the
others stay unfused for the reason listed; and every case, fused or not, still matches ONNX's expected outputs
through the whole pipeline on the CPU."""

from __future__ import annotations

import functools

import pytest

from reprobuild.conformance.cases import Case, node_cases
from reprobuild.conformance.runner import parse_case, run_case
from reprobuild.ir import Network
from reprobuild.passes import DEFAULT_PASSES, run_passes

#: The cases that stay unfused, and why (the ONNX Attention layer, unexpanded, covers them).
UNFUSED = {
    **{name: "qk_matmul_output: an intermediate (scores or probabilities) is a network output" for name in (
        "test_attention_23_fullymasked_qk_matmul_output_mode3_zero_expanded",
        "test_attention_24_fullymasked_qk_matmul_output_mode3_zero_expanded",
        "test_attention_24_qk_matmul_output_mode3_softmax_precision_expanded",
        "test_attention_3d_with_past_and_present_qk_matmul_bias_expanded",
        "test_attention_3d_with_past_and_present_qk_matmul_expanded",
        "test_attention_3d_with_past_and_present_qk_matmul_softcap_expanded",
        "test_attention_3d_with_past_and_present_qk_matmul_softmax_expanded",
        "test_attention_4d_with_past_and_present_qk_matmul_bias_3d_mask_causal_expanded",
        "test_attention_4d_with_past_and_present_qk_matmul_bias_3d_mask_expanded",
        "test_attention_4d_with_past_and_present_qk_matmul_bias_4d_mask_causal_expanded",
        "test_attention_4d_with_past_and_present_qk_matmul_bias_4d_mask_expanded",
        "test_attention_4d_with_past_and_present_qk_matmul_bias_expanded",
        "test_attention_4d_with_past_and_present_qk_matmul_expanded",
        "test_attention_4d_with_qk_matmul_bias_expanded", "test_attention_4d_with_qk_matmul_expanded",
        "test_attention_4d_with_qk_matmul_softcap_expanded", "test_attention_4d_with_qk_matmul_softmax_expanded",
        "test_attention_local_window_gqa_rank4_mask_expanded")},
    **{name: "bfloat16: a same-type bfloat16 Cast quiets signalling NaNs, so it is not an identity" for name in (
        "test_attention_3d_causal_bf16_expanded", "test_attention_4d_attn_mask_causal_bf16_expanded",
        "test_attention_4d_causal_bf16_expanded", "test_attention_4d_causal_padded_kv_bf16_expanded",
        "test_attention_4d_padded_kv_bf16_expanded")},
}
#: Layers the fused cases keep beside the FusedAttention: the 3-D cases' head split and merge, K/V head repetition
#: that repeats (grouped-query attention), the past/present Concat, and the mask's construction from the inputs
#: (the bias the fused layer adds, and the guard's condition: ReduceMax of the bias == -inf).
LAYOUT = {"Concat", "Expand", "Reshape", "Transpose", "Unsqueeze"}
MASK = {"Add", "Cast", "Equal", "FusedElementwise", "Less", "LessOrEqual", "Pad", "ReduceMax", "Sub", "Where"}
#: Cases that become the FusedAttention and nothing else.
ALONE = ("test_attention_4d_expanded", "test_attention_4d_causal_expanded", "test_attention_4d_scaled_expanded",
         "test_attention_4d_fp16_expanded", "test_attention_4d_diff_heads_sizes_expanded",
         "test_attention_local_window_expanded", "test_attention_bidirectional_window_expanded")


@functools.cache
def _cases() -> dict[str, Case]:
    return {c.name: c for c in node_cases() if c.name.startswith("test_attention_") and c.name.endswith("_expanded")}


NAMES = sorted(_cases())


def _passed(case: Case) -> Network:
    network, _ = parse_case(case)
    return run_passes(network, DEFAULT_PASSES)


def test_the_suite_has_the_cases_this_test_knows() -> None:
    assert set(UNFUSED) < set(NAMES) and set(ALONE) < set(NAMES)
    assert len(NAMES) - len(UNFUSED) >= 70


@pytest.mark.parametrize("name", NAMES)
def test_each_plain_attention_becomes_one_fused_attention(name: str) -> None:
    network = _passed(_cases()[name])
    ops = [layer.op for layer in network.layers]
    if name in UNFUSED:
        assert "FusedAttention" not in ops and "Softmax" in ops, UNFUSED[name]
        return
    (fused,) = [layer for layer in network.layers if layer.op == "FusedAttention"]
    assert {"MatMul", "Softmax"}.isdisjoint(ops) and set(ops) - {"FusedAttention"} <= LAYOUT | MASK
    attrs = dict(fused.attrs)
    assert (attrs["scale_on"], attrs["scale_op"], attrs["k_transposed"], attrs["masks"]) == ("qk", "Mul", 0, ("add",))
    assert (attrs["guard"], attrs["guard_fill"]) == ("where_not", 0.0)
    capped = "softcap" in name
    assert (attrs["softcap_op"], attrs["softcap"] == attrs["softcap_in"] != 0.0) == (("Div", True) if capped
                                                                                     else ("", False))
    # the function's nodes are named after their op: the fused layer records both products, the scales, the
    # softcap's Div, Tanh and Mul, the Softmax, the guard and the same-type Casts the simplify pass folded into them
    recorded = {op: sum(node.split("_")[0] == op for node in fused.origin)
                for op in ("MatMul", "Mul", "Div", "Tanh", "Softmax", "Where", "Cast")}
    assert recorded == {"MatMul": 2, "Mul": 2 + capped, "Div": int(capped), "Tanh": int(capped), "Softmax": 1,
                        "Where": 1, "Cast": 3}, fused.origin
    if name in ALONE:
        assert ops == ["FusedAttention"]


@pytest.mark.parametrize("name", NAMES)
def test_each_case_still_matches_onnx_expected_outputs_on_the_cpu(name: str) -> None:
    result = run_case(_cases()[name], "cpu")
    assert result.result == "pass", result.detail
