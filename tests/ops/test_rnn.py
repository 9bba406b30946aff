"""RNN, GRU and LSTM (op_rnn, _rnn_common, _rnn_act) against onnxruntime, on fresh random inputs.

onnxruntime has no batch-major (layout=1) kernels and no float16 ones: those forms are compared with its
time-major float32 results, transposed or rounded. Models use opset 22 (the ops' newest version), which older
onnxruntimes (the GPU host's) load too."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, node_model, ort_outputs

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
OPSET = 22


def _feeds(rng: np.random.Generator, op: str, dirs: int, seq: int = 4, batch: int = 3, size: int = 5,
           hidden: int = 4, lengths: list[int] | None = None, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    g = GATES[op]

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.6).astype(dtype)

    feeds = {"X": normal(seq, batch, size), "W": normal(dirs, g * hidden, size), "R": normal(dirs, g * hidden, hidden),
             "B": normal(dirs, 2 * g * hidden)}
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, dtype=np.int32)
    feeds["initial_h"] = normal(dirs, batch, hidden)
    if op == "LSTM":
        feeds["initial_c"] = normal(dirs, batch, hidden)
        feeds["P"] = normal(dirs, 3 * hidden)
    return feeds


def _outputs(op: str) -> list[str]:
    return ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]


def _positions(op: str, feeds: dict[str, np.ndarray]) -> list[str]:
    """Input names in the op's positions, "" for an omitted one before a given one."""
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h"] + (["initial_c", "P"] if op == "LSTM" else [])
    names = [n if n in feeds else "" for n in order]
    while not names[-1]:
        names.pop()
    return names


def _check(op: str, feeds: dict[str, np.ndarray], backend: str, outputs: list[str] | None = None,
           initializers: dict[str, np.ndarray] | None = None, input_names: list[str] | None = None,
           opset: int = OPSET, **attrs: Any) -> None:
    """check_op with named outputs (some left unnamed): the engine against onnxruntime, float32 tolerances."""
    model = node_model(op, feeds, initializers=initializers, opset=opset,
                       input_names=input_names or _positions(op, feeds), output_names=outputs or _outputs(op), **attrs)
    named = [o for o in model.graph.output if o.name]  # an unnamed output is no graph output
    del model.graph.output[:]
    model.graph.output.extend(named)
    want = ort_outputs(model, feeds)
    got = build_and_run(model, feeds, backend)
    assert sorted(want) == sorted(name for name in outputs or _outputs(op) if name)
    for name, ref in want.items():
        assert got[name].shape == ref.shape and got[name].dtype == ref.dtype, name
        np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-5, err_msg=f"{op} {name} on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_every_direction_with_run_time_sequence_lens(backend: str, rng: np.random.Generator, op: str,
                                                      direction: str) -> None:
    dirs = 2 if direction == "bidirectional" else 1
    feeds = _feeds(rng, op, dirs, lengths=[4, 0, 2])  # a full, an empty and a short sequence
    _check(op, feeds, backend, hidden_size=4, direction=direction)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("op", "attrs"), [
    ("RNN", {"direction": "bidirectional", "activations": ["LeakyRelu", "Elu"], "activation_alpha": [0.2, 0.7],
             "clip": 0.8}),
    ("RNN", {"activations": ["Affine"], "activation_alpha": [0.5], "activation_beta": [0.1]}),
    ("GRU", {"linear_before_reset": 1, "clip": 0.5, "activations": ["HardSigmoid", "Softsign"],
             "activation_alpha": [0.3], "activation_beta": [0.6]}),
    ("GRU", {"direction": "reverse", "activations": ["Sigmoid", "ScaledTanh"], "activation_alpha": [0.9],
             "activation_beta": [1.2]}),
    ("LSTM", {"input_forget": 1, "clip": 0.4, "activations": ["Sigmoid", "Softplus", "Relu"]}),
    ("LSTM", {"direction": "bidirectional", "activations": ["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Elu",
                                                            "ThresholdedRelu"], "activation_alpha": [0.25, 0.9, 0.1]}),
])
def test_activations_clip_and_gate_options(backend: str, rng: np.random.Generator, op: str,
                                           attrs: dict[str, Any]) -> None:
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    feeds = _feeds(rng, op, dirs)
    _check(op, feeds, backend, hidden_size=4, **attrs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("op", "outputs"), [("RNN", ["", "Y_h"]), ("GRU", ["", "Y_h"]), ("LSTM", ["", "", "Y_c"]),
                                             ("LSTM", ["Y"])])
def test_omitted_inputs_and_outputs(backend: str, rng: np.random.Generator, op: str, outputs: list[str]) -> None:
    """B and initial_h left out (empty names) before a later input; Y left unnamed while Y_h or Y_c is read."""
    feeds = _feeds(rng, op, 1)
    inputs = {"X": feeds["X"], "W": feeds["W"], "R": feeds["R"], "lens": np.array([4, 3, 1], dtype=np.int32)}
    names = ["X", "W", "R", "", "lens"] + (["", "", "P"] if op == "LSTM" else [])
    initializers = {"P": feeds["P"]} if op == "LSTM" else {}
    _check(op, inputs, backend, outputs, initializers=initializers, input_names=names, hidden_size=4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_batch_major_layout_matches_time_major(backend: str, rng: np.random.Generator, op: str) -> None:
    feeds = _feeds(rng, op, 2, lengths=[1, 4, 3])
    want = ort_outputs(node_model(op, feeds, input_names=_positions(op, feeds), output_names=_outputs(op),
                                  opset=OPSET, direction="bidirectional", hidden_size=4), feeds)
    batch_major = {k: np.swapaxes(v, 0, 1) if k in ("X", "initial_h", "initial_c") else v for k, v in feeds.items()}
    model = node_model(op, batch_major, input_names=_positions(op, feeds), output_names=_outputs(op),
                       opset=OPSET, direction="bidirectional", layout=1, hidden_size=4)
    got = build_and_run(model, batch_major, backend)
    np.testing.assert_allclose(got["Y"], np.transpose(want["Y"], (2, 0, 1, 3)), rtol=1e-4, atol=1e-5)
    for name in _outputs(op)[1:]:
        np.testing.assert_allclose(got[name], np.swapaxes(want[name], 0, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("op", "dtype", "tol"), [("LSTM", np.float16, 1e-2), ("GRU", np.float64, 1e-5)])
def test_float16_and_float64(backend: str, rng: np.random.Generator, op: str, dtype: Any, tol: float) -> None:
    """Compared with onnxruntime's float32 on the same values (it has no float16 kernels)."""
    feeds = _feeds(rng, op, 1, lengths=[2, 4, 3], dtype=dtype)
    model = node_model(op, feeds, input_names=_positions(op, feeds), output_names=_outputs(op), opset=OPSET,
                       hidden_size=4)
    got = build_and_run(model, feeds, backend)
    as32 = {k: v.astype(np.float32) if v.dtype == dtype else v for k, v in feeds.items()}
    want = ort_outputs(node_model(op, as32, input_names=_positions(op, feeds), output_names=_outputs(op),
                                  opset=OPSET, hidden_size=4), as32)
    for name in _outputs(op):
        assert got[name].dtype == dtype
        np.testing.assert_allclose(got[name].astype(np.float64), want[name], rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opset_7(backend: str, rng: np.random.Generator) -> None:
    _check("LSTM", _feeds(rng, "LSTM", 1), backend, opset=7, hidden_size=4)


@pytest.mark.parametrize(("attrs", "message"), [
    ({"direction": "sideways"}, "direction"),
    ({"activations": ["Tanh", "Gelu"]}, "Gelu"),
    ({"activations": ["Sigmoid", "ThresholdedRelu"]}, "give it explicitly"),
    ({"activations": ["Sigmoid", "Tanh"], "activation_alpha": [0.5]}, "activation_alpha"),
    ({"hidden_size": 7}, "hidden_size"),
])
def test_unsupported_forms_are_typed_errors_naming_the_node(rng: np.random.Generator, attrs: dict[str, Any],
                                                            message: str) -> None:
    feeds = _feeds(rng, "GRU", 1)
    model = node_model("GRU", feeds, input_names=_positions("GRU", feeds), output_names=["Y", "Y_h"],
                       **{"hidden_size": 4, **attrs})
    with pytest.raises(ReprobuildError, match=message) as info:
        build_and_run(model, feeds)
    assert "GRU" in str(info.value)


def test_wrong_weight_shape_is_a_typed_error(rng: np.random.Generator) -> None:
    feeds = _feeds(rng, "GRU", 1)
    feeds["W"] = feeds["W"][:, :8]  # two gates' rows where GRU has three
    with pytest.raises(ReprobuildError, match=r"GRU.*W has shape \[1, 8, 5\]"):
        build_and_run(node_model("GRU", feeds, input_names=_positions("GRU", feeds), output_names=["Y"]), feeds)
