"""Run one conformance case through the whole pipeline: parse, build, serialize, deserialize, execute, compare.

A case ends in one of four results:

- ``pass``: every output has the expected shape and dtype, and values within the case's tolerance;
- ``fail``: a **wrong result**: a different shape, dtype or value (never acceptable);
- ``refused``: reprobuild declined with a typed error (an unsupported op, attribute, dtype or form), which is
  how an unsupported case must end;
- ``error``: any other exception, a bug.

An input that must be known at build time (Reshape's shape, Slice's starts, ...) is pinned to the case's value
(``--input-value``, TensorRT's shape-input values) and the build retried; the result notes what was pinned.
"""

from __future__ import annotations

import math
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.conformance.cases import Case
from reprobuild.core.dtypes import dtype_name
from reprobuild.core.errors import ReprobuildError
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ops import StaticInputError
from reprobuild.verify.tolerance import onnxruntime_session

RESULTS = ("pass", "fail", "refused", "error")


@dataclass
class Result:
    suite: str
    case: str
    ops: list[str]
    dtypes: list[str]
    result: str
    max_abs: float | None = None
    max_rel: float | None = None
    detail: str = ""
    pinned: list[str] = field(default_factory=list)
    error_type: str | None = None
    notes: list[str] = field(default_factory=list)


def _describe(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    ops = sorted({(f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node})
    dtypes = set()
    for vi in (*model.graph.input, *model.graph.output):
        if vi.type.HasField("tensor_type"):
            elem = vi.type.tensor_type.elem_type
            try:
                dtypes.add(onnx.helper.tensor_dtype_to_string(elem).replace("TensorProto.", "").lower())
            except Exception:
                dtypes.add(str(elem))
        else:
            dtypes.add(vi.type.WhichOneof("value") or "?")
    return ops, sorted(dtypes)


def _as_float(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def compare(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> tuple[str | None, float, float]:
    """None when ``got`` matches ``want`` (shape, dtype, values), else why not; and the max abs/rel errors."""
    want = np.asarray(want)
    if got.shape != want.shape:
        return f"output {name!r} has shape {list(got.shape)}, expected {list(want.shape)}", math.inf, math.inf
    if dtype_name(got.dtype) != dtype_name(want.dtype):
        return f"output {name!r} has dtype {got.dtype}, expected {want.dtype}", math.inf, math.inf
    if got.dtype.kind in "biuSUO" or got.dtype == np.bool_:
        diff = int(np.count_nonzero(got != want))
        return (f"output {name!r}: {diff} of {got.size} elements differ" if diff else None), float(diff > 0), 0.0
    with np.errstate(all="ignore"):
        return _compare_floats(name, _as_float(got), _as_float(want), rtol, atol)


def _compare_floats(name: str, g: np.ndarray, w: np.ndarray, rtol: float, atol: float) -> tuple[str | None, float,
                                                                                               float]:
    nan_mismatch = np.isnan(g) != np.isnan(w)
    finite = np.isfinite(g) & np.isfinite(w)
    inf_mismatch = (~np.isnan(g) & ~np.isnan(w) & ~finite) & (g != w)
    err = np.abs(g - w)[finite]
    max_abs = float(err.max()) if err.size else 0.0
    denom = np.abs(w[finite])
    rel = err / np.maximum(denom, 1e-30)
    max_rel = float(rel.max()) if rel.size else 0.0
    bad = finite & ~(np.abs(g - w) <= atol + rtol * np.abs(w))
    count = int(np.count_nonzero(bad) + np.count_nonzero(nan_mismatch) + np.count_nonzero(inf_mismatch))
    if count:
        return (f"output {name!r}: {count} of {g.size} elements outside rtol {rtol:g} / atol {atol:g} (max abs "
                f"{max_abs:.3g}, max rel {max_rel:.3g})"), max_abs, max_rel
    return None, max_abs, max_rel


def reference_outputs(case: Case, model: onnx.ModelProto, verbose: bool = False) -> dict[str, np.ndarray]:
    """onnxruntime on the CPU with graph optimizations off, the independent reference (its warnings only when
    ``verbose``)."""
    session = onnxruntime_session(model.SerializeToString(), verbose)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, case.inputs)))


def _input_shapes(model: onnx.ModelProto, feeds: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Shapes for inputs the model declares with dynamic dimensions, taken from the case's data."""
    shapes = {}
    for vi in model.graph.input:
        if vi.name in feeds and vi.type.HasField("tensor_type"):
            dims = vi.type.tensor_type.shape.dim
            if not vi.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
                value = feeds[vi.name]
                if isinstance(value, np.ndarray):
                    shapes[vi.name] = tuple(value.shape)
    return shapes


def parse_case(case: Case, pinned: dict[str, np.ndarray] | None = None) -> tuple[Any, dict[str, np.ndarray]]:
    """The case's network, pinning (in ``pinned``, updated in place) every input that must be known at build
    time, one StaticInputError at a time."""
    quiet = Logger(Severity.ERROR)
    pinned = {} if pinned is None else pinned
    shapes = _input_shapes(case.proto, case.inputs)
    for _ in range(16):
        try:
            network, _ = network_from_onnx_bytes(case.model, quiet, shapes, pinned)
            return network, pinned
        except StaticInputError as exc:
            more = [n for n in exc.inputs if n not in pinned and isinstance(case.inputs.get(n), np.ndarray)]
            if not more:
                raise
            pinned.update({n: case.inputs[n] for n in more})
    raise RuntimeError("pinning inputs did not converge")


def build_and_run(case: Case, backend: str, pinned: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    quiet = Logger(Severity.ERROR)
    network, _ = parse_case(case, pinned)
    config = BuilderConfig(backend=backend, warmup=0, iterations=1, runs_per_sample=1)
    result = Builder(quiet).build(network, config)
    engine = Runtime(quiet).deserialize_engine(result.engine)
    return engine.create_execution_context().execute(case.inputs)


def run_case(case: Case, backend: str = "cpu", verbose: bool = False) -> Result:
    """Build and run one case and judge it; ``verbose`` lets onnxruntime, the reference, log its warnings too."""
    model = case.proto
    ops, dtypes = _describe(model)
    res = Result(case.suite, case.name, ops, dtypes, "error", notes=list(case.notes))
    pinned: dict[str, np.ndarray] = {}
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            outputs = build_and_run(case, backend, pinned)
        res.pinned = sorted(pinned)
        expected = case.expected if case.expected is not None else reference_outputs(case, model, verbose)
        max_abs = max_rel = 0.0
        problems = []
        for name, want in expected.items():
            if name not in outputs:
                problems.append(f"output {name!r} is missing")
                continue
            problem, a, r = compare(name, outputs[name], want, case.rtol, case.atol)
            max_abs, max_rel = max(max_abs, a), max(max_rel, r)
            if problem:
                problems.append(problem)
        res.max_abs, res.max_rel = max_abs, max_rel
        res.result = "fail" if problems else "pass"
        res.detail = "; ".join(problems)
    except ReprobuildError as exc:
        res.result, res.error_type = "refused", type(exc).__name__
        res.detail = str(exc).strip()
        res.pinned = sorted(pinned)
    except Exception as exc:  # a bug: reported, never hidden
        res.result, res.error_type = "error", type(exc).__name__
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
        res.detail = f"{type(exc).__name__}: {exc}{where}"
    return res
