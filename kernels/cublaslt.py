"""cuBLASLt GEMMs whose algorithm is chosen, recorded by value and replayed: the ``cublaslt`` tactic source.

``cublasGemmEx`` picks its kernel inside, by heuristics that may change with the library's version, the workspace
or the problem: a manifest that says "cuBLAS" does not say what ran. cuBLASLt lets the caller choose. For one
problem, ``cublasLtMatmulAlgoGetHeuristic`` lists candidate algorithms, each an algorithm id with a configuration
(tile, stages, split-K, reduction scheme, CTA swizzle, custom option, inner shape, cluster shape) and the workspace
it needs. The builder times each as a tactic variant of its own (``Tactic.variants``); the manifest and the engine
record the winner's configuration by value (:data:`FIELDS`); a replay and every execution context rebuild exactly
that algorithm with ``cublasLtMatmulAlgoInit`` and the recorded attributes, and ``cublasLtMatmulAlgoCheck`` it
against the problem first: a library or GPU that cannot run it fails closed, naming it, instead of running another.

The library is reached through NVIDIA's maintained bindings, ``nvmath.bindings.cublasLt`` (nvmath-python, in the
``cuda12``/``cuda13`` extras), not through new ctypes code. A machine without them has no ``cublaslt`` tactics: a
build leaves the source out (the manifest says why per layer) and an engine or manifest that records one is
refused there, naming the source and the package. A cuBLASLt call takes its stream and workspace per call, so one
handle per device serves every context; the workspace is the layer's own scratch memory, sized by the recorded
algorithm, so nothing is allocated while running or capturing a CUDA graph.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from reprobuild.core.errors import BackendUnavailableError, BuildError

#: cudaDataType of the element types cuBLASLt multiplies here, and the scale type (float32 alpha and beta).
_DATA_TYPES = {"float32": 0, "float16": 2, "bfloat16": 14}
_SCALE_FP32 = 0
#: cublasComputeType_t: strict float32 (tensor cores for half inputs, float32 accumulation), and TF32.
_COMPUTE_TYPES = {"fp32": 68, "tf32": 77}
#: Epilogues (cublasLtEpilogue_t names): none, + bias (a vector over the output's columns, row-major), relu(+ bias).
EPILOGUES = ("DEFAULT", "BIAS", "RELU_BIAS")

#: The recorded configuration of an algorithm: parameter name -> cublasLtMatmulAlgoConfigAttributes_t member, and
#: the enum (of ``nvmath.bindings.cublasLt``) whose member names are recorded instead of numbers, for a readable
#: diff; "" for a plain integer.
CONFIG = {
    "tile": ("TILE_ID", "MatmulTile"),
    "stages": ("STAGES_ID", "MatmulStages"),
    "split_k": ("SPLITK_NUM", ""),
    "reduction": ("REDUCTION_SCHEME", "ReductionScheme"),
    "swizzle": ("CTA_SWIZZLING", ""),
    "custom": ("CUSTOM_OPTION", ""),
    "inner_shape": ("INNER_SHAPE_ID", "MatmulInnerShape"),
    "cluster_shape": ("CLUSTER_SHAPE_ID", "ClusterShape"),
}
#: Every value a cuBLASLt variant records, by name: the algorithm id, its configuration, the workspace it was
#: timed with and the epilogue fused into it.
FIELDS = ("algo_id", *CONFIG, "workspace", "epilogue")
#: Candidates asked of the heuristic per GEMM: each is timed, so more lengthens builds; the library's first few
#: hold its fast ones.
CANDIDATES = 8


class CublasLtError(BuildError):
    """A cuBLASLt call failed, or a recorded algorithm cannot run the problem here."""


@functools.cache
def unavailable_reason() -> str | None:
    """None when cuBLASLt's bindings import here, else why not (what to install)."""
    try:
        from nvmath.bindings import cublasLt  # noqa: F401  (lazy: optional, the cuda extras)
    except Exception as exc:  # ImportError, or a binding that cannot find its library
        return (f"the cublaslt tactic source needs nvmath-python (pip install nvmath-python, or the cublaslt "
                f"extra), which does not load here: {type(exc).__name__}: {exc}")
    return None


def bindings() -> Any:
    """``nvmath.bindings.cublasLt``, or a typed error saying what to install."""
    reason = unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(reason)
    from nvmath.bindings import cublasLt

    return cublasLt


def version() -> str:
    """The cuBLASLt version the bindings loaded (``cublasLtGetVersion``), or why there is none: an environment
    input of every CUDA build, since it decides the kernels a recorded algorithm id names."""
    if unavailable_reason() is not None:
        return "unavailable (nvmath-python not installed)"
    return str(bindings().get_version())


def handle() -> int:
    """The process's cuBLASLt handle for the current device (made once; a call takes its stream and workspace
    as arguments, so one handle serves every stream and context)."""
    import cupy  # lazy: optional (the cuda extras)

    return _device_handle(int(cupy.cuda.runtime.getDevice()))


@functools.cache
def _device_handle(device: int) -> int:
    # A cache, not a module-level dict: a tactic's identity covers the values its code reaches, and a dict filled
    # at run time would change it.
    return int(bindings().create())


def _algo_offset(dtype: np.dtype) -> int:
    """The byte offset of the ``algo`` field in cuBLASLt's heuristic-result struct."""
    fields = dtype.fields
    assert fields is not None, "cublasLtMatmulHeuristicResult_t is a struct"
    return int(fields["algo"][1])


def _set(setter: Any, dtype_of: Any, obj: int, attr: Any, value: int) -> None:
    buf = np.array([value], dtype=dtype_of(attr))
    setter(obj, attr, buf.ctypes.data, buf.nbytes)


class Problem:
    """The descriptors of one matmul (a :class:`~reprobuild.kernels.launch.LtMatmulLaunch`, column-major as
    cuBLAS): the operation (compute type, transposes, epilogue, bias pointer) and the layouts of A, B and C=D
    with their batch count and strides. Destroyed with :meth:`close` (or when collected)."""

    def __init__(self, x: Any, bias_ptr: int = 0) -> None:
        lt, g = bindings(), x.gemm
        if g.dtype not in _DATA_TYPES or g.compute not in _COMPUTE_TYPES or x.epilogue not in EPILOGUES:
            raise CublasLtError(f"no cuBLASLt matmul for dtype {g.dtype}, compute {g.compute}, epilogue {x.epilogue}")
        self._lt = lt
        self.layouts: list[int] = []
        self.desc = lt.matmul_desc_create(_COMPUTE_TYPES[g.compute], _SCALE_FP32)
        d = lt.MatmulDescAttribute
        set_desc = functools.partial(_set, lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype,
                                     self.desc)
        set_desc(d.TRANSA, 1 if g.transa else 0)
        set_desc(d.TRANSB, 1 if g.transb else 0)
        if x.epilogue != "DEFAULT":
            set_desc(d.EPILOGUE, int(getattr(lt.Epilogue, x.epilogue)))
            if bias_ptr:
                set_desc(d.BIAS_POINTER, bias_ptr)
        dt = _DATA_TYPES[g.dtype]
        shapes = (((g.k, g.m) if g.transa else (g.m, g.k), g.lda, g.stride_a),
                  ((g.n, g.k) if g.transb else (g.k, g.n), g.ldb, g.stride_b),
                  ((g.m, g.n), g.ldc, g.stride_c))
        la = lt.MatrixLayoutAttribute
        for (rows, cols), ld, stride in shapes:
            layout = lt.matrix_layout_create(dt, rows, cols, ld)
            self.layouts.append(layout)
            if g.batch > 1:
                set_layout = functools.partial(_set, lt.matrix_layout_set_attribute,
                                               lt.get_matrix_layout_attribute_dtype, layout)
                set_layout(la.BATCH_COUNT, g.batch)
                set_layout(la.STRIDED_BATCH_OFFSET, stride)
        self.a, self.b, self.c = self.layouts

    def close(self) -> None:
        lt = self._lt
        layouts, self.layouts = getattr(self, "layouts", []), []
        for layout in layouts:
            lt.matrix_layout_destroy(layout)
        desc, self.desc = getattr(self, "desc", 0), 0
        if desc:
            lt.matmul_desc_destroy(desc)

    def __del__(self) -> None:
        try:  # noqa: SIM105  (at interpreter shutdown the bindings may be gone; a failed __init__ left a part)
            self.close()
        except Exception:
            pass


def _config(lt: Any, algo_ptr: int) -> dict[str, int | str]:
    """An algorithm's configuration by value, read from its ``cublasLtMatmulAlgo_t``."""
    attrs = lt.MatmulAlgoConfigAttribute
    out: dict[str, int | str] = {}
    for name, (member, enum) in [("algo_id", ("ID", "")), *CONFIG.items()]:
        attr = getattr(attrs, member)
        buf = np.zeros(1, dtype=lt.get_matmul_algo_config_attribute_dtype(attr))
        written = np.zeros(1, dtype=np.uint64)
        lt.matmul_algo_config_get_attribute(algo_ptr, attr, buf.ctypes.data, buf.nbytes, written.ctypes.data)
        value = int(buf[0])
        out[name] = _enum_name(lt, enum, value)
    return out


def _enum_name(lt: Any, enum: str, value: int) -> int | str:
    if not enum:
        return value
    try:
        return str(getattr(lt, enum)(value).name)
    except ValueError:  # a member this nvmath does not name: the number
        return value


def _enum_value(lt: Any, enum: str, value: int | str) -> int:
    if isinstance(value, str):
        member = getattr(getattr(lt, enum), value, None)
        if member is None:
            raise CublasLtError(f"{enum} has no member {value!r} in this nvmath-python")
        return int(member)
    return int(value)


def parameter_problem(parameters: Mapping[str, Any]) -> str | None:
    """None when ``parameters`` name exactly :data:`FIELDS` with values of their kinds, else why not (no library
    needed: an engine's record is checked before anything runs)."""
    missing = [f for f in FIELDS if f not in parameters]
    extra = sorted(set(parameters) - set(FIELDS))
    if missing or extra:
        return (f"a cuBLASLt algorithm records {', '.join(FIELDS)}; these parameters lack "
                f"{', '.join(missing) or 'nothing'} and have {', '.join(extra) or 'nothing'} besides")
    for name in FIELDS:
        value = parameters[name]
        enum = CONFIG.get(name, ("", ""))[1]
        if name == "epilogue":
            if value not in EPILOGUES:
                return f"epilogue is {value!r}; one of {', '.join(EPILOGUES)}"
        elif isinstance(value, bool) or not (isinstance(value, int) or (enum and isinstance(value, str))):
            kind = "an integer or a member name" if enum else "an integer"
            return f"{name} is {value!r}; it must be {kind}"
        elif isinstance(value, int) and value < 0 and name != "split_k":  # split_k -1: the algorithm does not say
            return f"{name} is {value}; it must not be negative"
    return None


def heuristic(x: Any, max_workspace: int, limit: int = CANDIDATES) -> list[dict[str, int | str]]:
    """The library's candidate algorithms for the matmul ``x`` (an ``LtMatmulLaunch``), in its own order, each as
    the parameters a variant records (:data:`FIELDS`); those whose state is not success are left out."""
    lt = bindings()
    problem = Problem(x)
    pref = lt.matmul_preference_create()
    try:
        _set(lt.matmul_preference_set_attribute, lt.get_matmul_preference_attribute_dtype, pref,
             lt.MatmulPreferenceAttribute.MAX_WORKSPACE_BYTES, max_workspace)
        results = np.zeros(limit, dtype=lt.matmul_heuristic_result_dtype)
        count = np.zeros(1, dtype=np.int32)
        lt.matmul_algo_get_heuristic(handle(), problem.desc, problem.a, problem.b, problem.c, problem.c, pref, limit,
                                     results.ctypes.data, count.ctypes.data)
    except Exception as exc:
        raise CublasLtError(f"cublasLtMatmulAlgoGetHeuristic for {describe(x)} failed: {exc}") from exc
    finally:
        lt.matmul_preference_destroy(pref)
        problem.close()
    offset = _algo_offset(results.dtype)
    found = []
    for i in range(int(count[0])):
        if int(results[i]["state"]) != 0:
            continue
        config = _config(lt, results.ctypes.data + i * results.dtype.itemsize + offset)
        found.append({**config, "workspace": int(results[i]["workspace_size"]), "epilogue": x.epilogue})
    return found


def algorithm(x: Any, problem: Problem) -> np.ndarray:
    """The recorded algorithm of ``x`` rebuilt by value (``cublasLtMatmulAlgoInit`` with its id, then each
    configuration attribute) and checked against the problem: a ``cublasLtMatmulAlgo_t`` in a NumPy buffer. A
    library that cannot run it, or needs more workspace than was recorded, is a :class:`CublasLtError` naming it."""
    lt = bindings()
    params, g = dict(x.algo), x.gemm
    buffer = np.zeros(1, dtype=lt.matmul_heuristic_result_dtype)
    ptr = buffer.ctypes.data + _algo_offset(buffer.dtype)
    dt = _DATA_TYPES[g.dtype]
    try:
        lt.matmul_algo_init(handle(), _COMPUTE_TYPES[g.compute], _SCALE_FP32, dt, dt, dt, dt,
                            int(params["algo_id"]), ptr)
        attrs, initial = lt.MatmulAlgoConfigAttribute, _config(lt, ptr)
        for name, (member, enum) in CONFIG.items():
            if _enum_value(lt, enum, params[name]) != _enum_value(lt, enum, initial[name]):  # what init left alone
                _set(lt.matmul_algo_config_set_attribute, lt.get_matmul_algo_config_attribute_dtype, ptr,
                     getattr(attrs, member), _enum_value(lt, enum, params[name]))
        rebuilt = _config(lt, ptr)
        differs = [n for n in ("algo_id", *CONFIG) if _enum_value(lt, CONFIG.get(n, ("", ""))[1], rebuilt[n])
                   != _enum_value(lt, CONFIG.get(n, ("", ""))[1], params[n])]
        if differs:
            raise CublasLtError(f"the recorded cuBLASLt algorithm {label(params)} reads back with other "
                                f"{', '.join(differs)} ({', '.join(f'{n}={rebuilt[n]}' for n in differs)}) in this "
                                f"library (cuBLASLt {version()}): it is not the algorithm that was recorded")
        check = np.zeros(1, dtype=lt.matmul_heuristic_result_dtype)
        lt.matmul_algo_check(handle(), problem.desc, problem.a, problem.b, problem.c, problem.c, ptr,
                             check.ctypes.data)
    except CublasLtError:
        raise
    except Exception as exc:
        raise CublasLtError(f"the recorded cuBLASLt algorithm {label(params)} cannot run {describe(x)} with this "
                            f"library (cuBLASLt {version()}): {exc}. Rebuild without --replay to choose "
                            "among this library's algorithms") from exc
    needed = int(check[0]["workspace_size"])
    if needed > int(params["workspace"]):
        raise CublasLtError(f"the recorded cuBLASLt algorithm {label(params)} needs {needed} workspace bytes here, "
                            f"more than the {params['workspace']} it was recorded with")
    return buffer


def label(params: Mapping[str, Any]) -> str:
    """An algorithm in a few words, for messages and logs."""
    return (f"algo {params.get('algo_id')} tile {params.get('tile')} stages {params.get('stages')} "
            f"split_k {params.get('split_k')}")


def describe(x: Any) -> str:
    g = x.gemm
    return (f"m={g.m} n={g.n} k={g.k} batch={g.batch} {g.dtype} compute {g.compute} "
            f"trans {'T' if g.transa else 'N'}{'T' if g.transb else 'N'} epilogue {x.epilogue}")


def bind_matmul(x: Any, a: int, b: int, c: int, workspace: int, bias: int) -> Any:
    """A call that enqueues the matmul ``x`` (a :class:`~reprobuild.kernels.launch.LtMatmulLaunch`) with these
    device addresses on the stream it is given; the descriptors and the rebuilt algorithm live with it."""
    lt = bindings()
    problem = Problem(x, bias)
    algo = algorithm(x, problem)
    algo_ptr = algo.ctypes.data + _algo_offset(algo.dtype)
    scalars = np.array([x.gemm.alpha, x.gemm.beta], dtype=np.float32)
    alpha, beta = scalars.ctypes.data, scalars.ctypes.data + 4
    h, size = handle(), int(dict(x.algo)["workspace"])
    matmul = lt.matmul

    def call(stream: Any, _keep: Any = (problem, algo, scalars)) -> None:
        matmul(h, problem.desc, alpha, a, problem.a, b, problem.b, beta, c, problem.c, c, problem.c, algo_ptr,
               workspace, size, int(stream.ptr))

    return call
