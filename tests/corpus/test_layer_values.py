"""Attribute values only a layer's run read: a campaign that re-signed engines of ONNX's node test cases with one
attribute changed (to -1, 0, 2**40, a string, an empty list, ...) found these loading and then failing while they
ran (ValueError, IndexError, ZeroDivisionError, OverflowError: exit 1), or running for days (RoiAlign with a
sampling ratio of 2**40). Each is now refused when the engine is loaded, by the op's type inference, naming the
layer and what is wrong (FormatError, exit 4)."""

from __future__ import annotations

import functools
import re
import warnings
from typing import Any

import numpy as np
import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import FormatError
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine import Runtime
from tests.corpus.make_engine import Engine, FirstEligible

QUIET = Logger(Severity.ERROR)

#: (ONNX node test case, op of the layer to edit, attribute, new value, what the message says)
CASES: list[tuple[str, str, str, Any, str]] = [
    ("test_hardmax_axis_0", "Hardmax", "axis", -1, r"axis -1 is not an axis of the rank-3 input"),
    ("test_logsoftmax_axis_0", "LogSoftmax", "axis", 2**40, r"axis 1099511627776 is not an axis"),
    ("test_lppool_1d_default", "LpPool", "p", 0, r"p=0; the p-norm needs p >= 1"),
    ("test_onehot_negative_indices", "OneHot", "axis", 2**40, r"axis 1099511627776 is not in \[0, 1\]"),
    ("test_quantizelinear", "QuantizeLinear", "precision", "x", r"precision 'x' is not a float type"),
    ("test_resize_downsample_scales_cubic", "Resize", "axes", [],
     r"axis 2 is not resized \(axes \[\]\), so its output size is the input's 4, not 3"),
    ("test_reversesequence_batch", "ReverseSequence", "time_axis", 2**40, r"batch_axis and time_axis are"),
    ("test_roialign_aligned_false", "RoiAlign", "sampling_ratio", -1, r"sampling_ratio \(-1\) non-negative"),
    ("test_attention_3d", "Attention", "qk_matmul_output_mode", 2**40, r"qk_matmul_output_mode 1099511627776"),
    ("test_gru_batchwise", "GRU", "activation_alpha", [], r"hold one entry each for the 2 activations"),
    ("test_lstm_batchwise", "LSTM", "activations", [], r"hold one entry each for the 3 activations"),
    ("test_rnn_seq_length", "RNN", "activation_beta", [], r"hold one entry each for the 1 activations"),
    ("test_gru_batchwise", "GRU", "layout", -1, r"layout -1 is not one of"),
    ("test_attention_3d", "Attention", "scale", -1.0, r"scale -1.0 is negative"),
    ("test_top_k", "TopK", "axis", -1, r"axis -1 is not an axis of the rank-2 input"),
    ("test_roialign_mode_max", "RoiAlign", "sampling_ratio", 2**40, r"sampling_ratio 1099511627776 takes \d+ "
                                                                    r"samples per channel"),
    ("test_resize_downsample_scales_cubic", "Resize", "coordinate_transformation_mode", "x",
     r"coordinate_transformation_mode 'x' is not one reprobuild knows"),
    ("test_resize_downsample_scales_cubic", "Resize", "scales", [],
     r"scales \[\] and roi \[.*\] need 4 and 8 values for the rank-4 input"),
]


@functools.cache
def _cases() -> dict[str, Any]:
    from reprobuild.conformance.cases import node_cases

    wanted = {c[0] for c in CASES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c.name: c for c in node_cases() if c.name in wanted}


@functools.cache
def _case_engine(name: str) -> bytes:
    from reprobuild.conformance.runner import parse_case

    network, _ = parse_case(_cases()[name])
    config = BuilderConfig(backend="cpu", warmup=0, iterations=1, runs_per_sample=1,
                           algorithm_selector=FirstEligible())
    return Builder(QUIET).build(network, config).engine


@pytest.mark.parametrize("case, op, key, value, message", CASES, ids=[f"{c[1]}.{c[2]}" for c in CASES])
def test_a_value_only_the_run_read_is_refused_at_load(case: str, op: str, key: str, value: Any,
                                                      message: str) -> None:
    engine = Engine(_case_engine(case))
    Runtime(QUIET).deserialize_engine(engine.pack())  # the case's engine itself loads
    index = next(i for i, layer in enumerate(engine.header["layers"]) if layer["op"] == op)
    name = engine.header["layers"][index]["name"]
    for layer in engine.layer(name):
        layer["attrs"][key] = value
    with pytest.raises(FormatError) as info:
        Runtime(QUIET).deserialize_engine(engine.pack())
    assert f"engine layer {name!r} (op {op})" in str(info.value), str(info.value)
    assert re.search(message, str(info.value)), str(info.value)


def test_the_cases_engines_run() -> None:
    """The unedited engines compute (so that each refusal above is the edit's alone)."""
    for case in sorted({c[0] for c in CASES})[:3]:
        engine = Runtime(QUIET).deserialize_engine(_case_engine(case))
        feeds = {b.name: np.zeros(b.shape, b.dtype) for b in engine.inputs if b.value is None}
        assert engine.create_execution_context().execute(feeds)
