"""Tolerance comparison of an engine's outputs with a reference (onnxruntime), with error statistics in the
manner of Polygraphy's ``--check-error-stat``.

``elemwise`` (the default) passes when every element satisfies ``|out - ref| <= atol + rtol * |ref|`` (NumPy's
``allclose``). ``max``, ``mean``, ``median`` and ``quantile`` pass when that statistic of the absolute error is
within ``atol`` or that statistic of the relative error is within ``rtol``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from reprobuild.core.errors import BackendUnavailableError, InputError, ModelError, UsageError

ERROR_STATS = ("elemwise", "max", "mean", "median", "quantile")


class OutputComparison(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    shape: list[int]
    max_abs: float
    mean_abs: float
    median_abs: float
    quantile_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    quantile_rel: float
    failing: int  #: elements outside atol + rtol * |ref|
    passed: bool


class CompareReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    reference: str
    check_error_stat: str
    atol: float
    rtol: float
    quantile: float
    outputs: list[OutputComparison]
    passed: bool


def _stat(values: np.ndarray, stat: str, quantile: float) -> float:
    if stat == "max":
        return float(values.max())
    if stat == "mean":
        return float(values.mean())
    if stat == "median":
        return float(np.median(values))
    return float(np.quantile(values, quantile, method="higher"))  # no interpolation: inf stays inf


def compare_output(name: str, out: np.ndarray, ref: np.ndarray, atol: float, rtol: float, stat: str,
                   quantile: float) -> OutputComparison:
    if out.shape != ref.shape:
        raise InputError(f"output {name!r} has shape {list(out.shape)}, the reference {list(ref.shape)}")
    a, b = out.astype(np.float64).reshape(-1), ref.astype(np.float64).reshape(-1)
    if a.size == 0:
        a, b = np.zeros(1), np.zeros(1)
    absolute = np.abs(a - b)
    absolute[np.isnan(absolute)] = np.inf  # a NaN on either side is as wrong as it gets
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(absolute == 0, 0.0, absolute / np.abs(b))
    failing = int(np.count_nonzero(~(absolute <= atol + rtol * np.abs(b))))
    if stat == "elemwise":
        passed = failing == 0
    else:
        passed = _stat(absolute, stat, quantile) <= atol or _stat(relative, stat, quantile) <= rtol
    return OutputComparison(
        name=name, shape=list(out.shape),
        max_abs=_stat(absolute, "max", quantile), mean_abs=_stat(absolute, "mean", quantile),
        median_abs=_stat(absolute, "median", quantile), quantile_abs=_stat(absolute, "quantile", quantile),
        max_rel=_stat(relative, "max", quantile), mean_rel=_stat(relative, "mean", quantile),
        median_rel=_stat(relative, "median", quantile), quantile_rel=_stat(relative, "quantile", quantile),
        failing=failing, passed=bool(passed),
    )


def compare_outputs(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], atol: float,
                    rtol: float, stat: str = "elemwise", quantile: float = 0.99,
                    reference_name: str = "onnxruntime") -> CompareReport:
    missing = sorted(set(outputs) - set(reference))
    if missing:
        raise InputError(f"the reference computes no output named {missing}; it has {sorted(reference)}")
    rows = [compare_output(name, outputs[name], reference[name], atol, rtol, stat, quantile) for name in outputs]
    return CompareReport(reference=reference_name, check_error_stat=stat, atol=atol, rtol=rtol, quantile=quantile,
                         outputs=rows, passed=all(r.passed for r in rows))


def load_reference_model(data: bytes, source: str = "model") -> Any:
    """The ONNX model ``compare`` runs as its reference, parsed and checked: anything that is not a readable,
    valid ONNX model (a text file, a truncated download) is a :class:`ModelError`, never an error from deep
    inside onnxruntime."""
    # Lazy: onnx and the frontend take ~0.8 s to import, and every verify worker process imports this package
    # (through its public face) without ever loading a model.
    import onnx

    from reprobuild.frontend.onnx_external import check_no_external_data

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise ModelError(f"{source} is not a readable ONNX model (protobuf decode failed: {exc})") from None
    if not model.HasField("graph") or not model.graph.output:
        raise ModelError(f"{source} is not an ONNX model: it decodes, but has no graph with outputs (is it an ONNX "
                         "file at all?)")
    check_no_external_data(model)  # onnxruntime would read them relative to the current directory
    try:
        onnx.checker.check_model(data)
    except Exception as exc:
        raise ModelError(f"the ONNX checker rejects {source}: {exc}") from None
    return model


def model_bindings(model: Any) -> tuple[list[str], list[str]]:
    """The names of a model's run-time inputs (graph inputs that are not initializers) and outputs."""
    initializers = {t.name for t in model.graph.initializer}
    return ([vi.name for vi in model.graph.input if vi.name not in initializers],
            [vi.name for vi in model.graph.output])


def check_model_bindings(model: Any, inputs: Sequence[str], outputs: Sequence[str], source: str = "the model",
                         engine: str = "the engine") -> None:
    """Refuse, before running anything, a reference model whose inputs are not the engine's (every one of them
    must be fed) or that lacks one of the engine's outputs: it is another model."""
    model_inputs, model_outputs = model_bindings(model)
    if set(model_inputs) != set(inputs):
        raise UsageError(f"{source} has the inputs {sorted(model_inputs)}, but {engine} has {sorted(inputs)}: "
                         "compare needs the ONNX model the engine was built from")
    missing = sorted(set(outputs) - set(model_outputs))
    if missing:
        raise UsageError(f"{source} has the outputs {sorted(model_outputs)}, but {engine} has {sorted(outputs)} "
                         f"({missing} missing): compare needs the ONNX model the engine was built from")


#: onnxruntime's log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
ORT_VERBOSE, ORT_ERROR = 0, 3


def onnxruntime_session(model: bytes, verbose: bool = False) -> Any:
    """An onnxruntime session on the CPU with graph optimizations off: the independent reference (compare, the
    conformance suites). It logs only errors unless ``verbose``: its warnings (a line per unused initializer, in
    colour: some 1,800 in one conformance run of the light suite) say nothing about reprobuild's results."""
    import onnxruntime as ort  # lazy: optional (the dev extra) and heavy; only reference runs need it

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = ORT_VERBOSE if verbose else ORT_ERROR
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnxruntime_outputs(model: bytes, inputs: Mapping[str, np.ndarray], verbose: bool = False) -> dict[str,
                                                                                                     np.ndarray]:
    """The model run by ``onnxruntime_session``: an independent reference. A model that onnxruntime cannot load is a
    :class:`ModelError`; inputs it refuses, an :class:`InputError`."""
    try:
        import onnxruntime  # noqa: F401  # lazy: optional (the dev extra); probed to name the extra
    except ImportError:
        raise BackendUnavailableError("compare needs onnxruntime as its reference: pip install onnxruntime "
                                      "(it is in the dev extra)") from None
    try:
        session = onnxruntime_session(model, verbose)
    except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...), not ReprobuildErrors
        raise ModelError(f"onnxruntime cannot load the model as a reference: {exc}") from None
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(None, {k: np.asarray(v) for k, v in inputs.items()})
    except Exception as exc:
        raise InputError(f"onnxruntime refuses the inputs: {exc}") from None
    return {name: np.asarray(value) for name, value in zip(names, values)}
