"""cuDNN's fused attention (SDPA) with its engine configuration chosen, recorded by value and replayed: the
``cudnn`` tactic source.

cuDNN runs one attention graph with many engines, each tuned by knobs, and picks among them by heuristics that
change with the library, the GPU and the problem: a manifest that says "cuDNN" does not say what ran. The cuDNN
frontend (``nvidia-cudnn-frontend``, module ``cudnn``) lets the caller list the heuristic's plans for a graph and
rebuild one from its engine id and knobs (``create_execution_plan``). For one attention problem, :func:`plans`
builds the graph, asks heuristics A and FALLBACK, leaves out the engine configurations cuDNN flags as
nondeterministic (``deselect_numeric_notes``: the frontend does not report a backend plan's numerical notes one by
one, so they cannot be kept and marked; they are dropped), and builds each remaining backend plan; the builder times
each as a tactic variant of its own. The manifest and the engine record the winner by value (:data:`FIELDS`): the
engine id, its knobs, the plan's name as cuDNN gives it (``eng<id>_k<knob>=<value>...``), the workspace it needs and
the cuDNN and frontend versions. A replay and every engine load rebuild exactly that plan (:class:`Executable`) and
refuse, naming it, a library of another version, a plan whose name comes back different, or one that needs more
workspace: nothing else is run in its place.

The frontend also ranks plans of its own Python engines (ids from 20000); only cuDNN backend engine configurations
are offered here. The library is optional (the ``cuda12``/``cuda13`` extras): a machine without it has no ``cudnn``
tactics, a build leaves the source out (the manifest says why per layer) and an engine that records one is refused
there, naming the source and the package. One handle per device serves every context: a call sets the handle's
stream and runs under the handle's lock (a cuDNN handle must not be used by two threads at once); the workspace is
the layer's own, so nothing is allocated while running or capturing a CUDA graph.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reprobuild.core.errors import BackendUnavailableError, BuildError
from reprobuild.kernels.capture import CAPTURE_LOCK, outside_capture

#: cudnn.data_type members of the element types cuDNN's SDPA runs here.
DATA_TYPES = {"float16": "HALF", "bfloat16": "BFLOAT16"}
#: Every value a cuDNN variant records, by name: the engine id and its knobs (``NAME=value`` pairs sorted by
#: name, ``;``-separated), the plan's name as cuDNN gives it, the workspace bytes it needs, and the versions of the
#: cuDNN library (``cudnn.backend_version()``) and of the frontend that built it.
FIELDS = ("engine_id", "knobs", "plan", "workspace", "cudnn_version", "frontend_version")
#: Backend plans built and offered per layer: each is timed, so more lengthens builds; the heuristic's first few
#: hold its fast ones.
CANDIDATES = 6
#: cuDNN backend engine ids are below this (the frontend numbers its own C++ and Python engines from here on).
BACKEND_ENGINE_IDS = 10_000
#: The operands' uids in the graph and the variant pack.
UID_Q, UID_K, UID_V, UID_O, UID_BIAS = 1, 2, 3, 4, 5
_KNOB = re.compile(r"^[A-Za-z0-9_]+=-?[0-9]+$")


class CudnnError(BuildError):
    """A cuDNN graph or plan cannot be built, or a recorded plan cannot be rebuilt exactly here."""


class CudnnNotSupportedError(CudnnError):
    """cuDNN's own answer that it has no engine for a problem (``cudnnGraphNotSupportedError``)."""


@functools.cache
def unavailable_reason() -> str | None:
    """None when the cuDNN frontend imports and finds its library here, else why not (what to install)."""
    try:
        import cudnn  # lazy: optional, the cuda extras

        cudnn.backend_version()
    except Exception as exc:  # ImportError, or a frontend that cannot load libcudnn
        return (f"the cudnn tactic source needs the cuDNN frontend (pip install nvidia-cudnn-frontend, or the "
                f"cudnn extra) and cuDNN 9, which do not load here: {type(exc).__name__}: {exc}")
    return None


def frontend() -> Any:
    """The ``cudnn`` module (the cuDNN frontend), or a typed error saying what to install."""
    reason = unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(reason)
    import cudnn

    return cudnn


def versions() -> tuple[int, str]:
    """(the cuDNN library's version as ``cudnnGetVersion`` gives it, the frontend's version)."""
    cudnn = frontend()
    return int(cudnn.backend_version()), str(cudnn.__version__)


def version() -> str:
    """The cuDNN and frontend versions, or why there are none: an environment input of every CUDA build, since it
    decides the kernels a recorded engine id and knobs name."""
    if unavailable_reason() is not None:
        return "unavailable (nvidia-cudnn-frontend not installed)"
    library, front = versions()
    return f"{library} (frontend {front})"


def handle() -> tuple[Any, threading.Lock]:
    """The process's cuDNN handle for the current device (made once) and the lock that serializes its use."""
    import cupy  # lazy: optional (the cuda extras)

    return _device_handle(int(cupy.cuda.runtime.getDevice()))


@functools.cache
def _device_handle(device: int) -> tuple[Any, threading.Lock]:
    # A cache, not a module-level dict: a tactic's identity covers the values its code reaches, and a dict filled at
    # run time would change it. (Two threads racing here may each make a handle; each comes with its own lock.)
    return frontend().create_handle(), threading.Lock()


@dataclass(frozen=True)
class SdpaProblem:
    """One attention problem as cuDNN's SDPA takes it: Q [B, H, Sq, D], K [B, Hk, Sk, D], V [B, Hv, Sk, Dv] and
    O [B, H, Sq, Dv], all contiguous; O = softmax(scale * Q K^T (+ bias) (causal)) V, the bias [1|B, 1|H, Sq, Sk]
    contiguous, the causal mask top-left (query i sees keys 0..i)."""

    dtype: str
    batch: int
    heads: int
    k_heads: int
    v_heads: int
    sq: int
    sk: int
    d: int
    dv: int
    scale: float
    bias: tuple[int, int, int, int] | None = None
    causal: bool = False

    def describe(self) -> str:
        return (f"B={self.batch} H={self.heads} (K {self.k_heads}, V {self.v_heads}) Sq={self.sq} Sk={self.sk} "
                f"D={self.d} Dv={self.dv} {self.dtype} scale={self.scale!r}"
                f"{f' bias {list(self.bias)}' if self.bias else ''}{' causal' if self.causal else ''}")


def _contiguous(dims: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for n in reversed(dims):
        strides.append(step)
        step *= int(n)
    return strides[::-1]


def graph(p: SdpaProblem, cudnn_handle: Any) -> Any:
    """The problem as a validated cuDNN graph (a ``cudnn.pygraph``) on ``cudnn_handle``: one SDPA node, inference
    only (no softmax statistics), float32 softmax and accumulation."""
    cudnn = frontend()
    io = getattr(cudnn.data_type, DATA_TYPES[p.dtype])
    g = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                      compute_data_type=cudnn.data_type.FLOAT, handle=cudnn_handle)

    def tensor(name: str, dims: tuple[int, ...], uid: int) -> Any:
        return g.tensor(name=name, dim=list(dims), stride=_contiguous(dims), data_type=io, uid=uid)

    kwargs: dict[str, Any] = {
        "name": "sdpa", "q": tensor("q", (p.batch, p.heads, p.sq, p.d), UID_Q),
        "k": tensor("k", (p.batch, p.k_heads, p.sk, p.d), UID_K),
        "v": tensor("v", (p.batch, p.v_heads, p.sk, p.dv), UID_V), "generate_stats": False, "attn_scale": p.scale}
    if p.bias is not None:
        kwargs["bias"] = tensor("bias", p.bias, UID_BIAS)
    if p.causal:
        kwargs["diagonal_alignment"] = cudnn.diagonal_alignment.TOP_LEFT
        kwargs["diagonal_band_right_bound"] = 0
    out = (p.batch, p.heads, p.sq, p.dv)
    try:
        o, _ = g.sdpa(**kwargs)
        o.set_uid(UID_O).set_output(True).set_dim(list(out)).set_stride(_contiguous(out)).set_data_type(io)
        g.validate()
        g.build_operation_graph()
    except Exception as exc:
        kind = CudnnNotSupportedError if isinstance(exc, cudnn.cudnnGraphNotSupportedError) else CudnnError
        raise kind(f"cuDNN's SDPA does not take {p.describe()}: {type(exc).__name__}: {exc}") from exc
    return g


def encode_knobs(knobs: Mapping[Any, Any]) -> str:
    """A plan's knobs (``{cudnn.knob_type: int}``) as ``NAME=value`` pairs sorted by name, ``;``-separated."""
    items = sorted((getattr(k, "name", None) or str(int(k)), int(v)) for k, v in knobs.items())
    return ";".join(f"{name}={value}" for name, value in items)


def decode_knobs(text: str) -> dict[Any, int]:
    """:func:`encode_knobs`' text back to ``{cudnn.knob_type: int}``; a knob this frontend does not name is a
    :class:`CudnnError`."""
    knob_type = frontend().knob_type
    knobs: dict[Any, int] = {}
    for item in filter(None, text.split(";")):
        name, value = item.split("=")
        member = knob_type(int(name)) if name.isdigit() else getattr(knob_type, name, None)
        if member is None:
            raise CudnnError(f"the recorded knob {name} is not a cudnn.knob_type of this frontend")
        knobs[member] = int(value)
    return knobs


def parameter_problem(parameters: Mapping[str, Any]) -> str | None:
    """None when ``parameters`` name exactly :data:`FIELDS` with values of their kinds, else why not (no library
    needed: an engine's record is checked before anything runs)."""
    missing = [f for f in FIELDS if f not in parameters]
    extra = sorted(set(parameters) - set(FIELDS))
    if missing or extra:
        return (f"a cuDNN plan records {', '.join(FIELDS)}; these parameters lack {', '.join(missing) or 'nothing'} "
                f"and have {', '.join(extra) or 'nothing'} besides")
    for name in ("engine_id", "workspace", "cudnn_version"):
        value = parameters[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{name} is {value!r}; it must be a non-negative integer"
    if parameters["engine_id"] >= BACKEND_ENGINE_IDS:
        return (f"engine_id is {parameters['engine_id']}; a cuDNN backend engine's id is below {BACKEND_ENGINE_IDS} "
                "(the frontend's own engines are not recorded)")
    for name in ("plan", "frontend_version"):
        if not isinstance(parameters[name], str) or not parameters[name]:
            return f"{name} is {parameters[name]!r}; it must be a non-empty string"
    knobs = parameters["knobs"]
    if not isinstance(knobs, str) or not all(_KNOB.match(item) for item in filter(None, knobs.split(";"))):
        return f"knobs is {knobs!r}; it must be NAME=integer pairs separated by ';' (or empty)"
    return None


def label(params: Mapping[str, Any]) -> str:
    """A plan in a few words, for messages and logs."""
    return f"plan {params.get('plan')} (engine {params.get('engine_id')}, cuDNN {params.get('cudnn_version')})"


def plans(p: SdpaProblem, limit: int = CANDIDATES) -> list[dict[str, int | str]]:
    """The backend plans cuDNN's heuristics (modes A, then FALLBACK) offer for ``p``, in their order, without those
    flagged nondeterministic, each built once and described by the parameters a variant records (:data:`FIELDS`);
    at most ``limit``. A plan that does not build here is left out; a problem cuDNN has no engine for has none."""
    cudnn = frontend()
    cudnn_handle, lock = handle()
    with CAPTURE_LOCK, lock:  # building may synchronize or load modules: never while another thread captures
        try:
            g = graph(p, cudnn_handle)
            g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
            g.deselect_numeric_notes([cudnn.numerical_note.NONDETERMINISTIC])
        except (CudnnNotSupportedError, cudnn.cudnnGraphNotSupportedError):
            return []  # cuDNN has no engine for this problem here: no variants; the other tactics remain
        except CudnnError:
            raise
        except Exception as exc:
            raise CudnnError(f"cuDNN's heuristics for {p.describe()} failed: {type(exc).__name__}: {exc}") from exc
        found = _built(g, limit)
        del g  # its plans are released here, under the locks, not wherever the collector gets to them
    return found


def _built(g: Any, limit: int) -> list[dict[str, int | str]]:
    """The first ``limit`` backend plans of the planned graph ``g`` that build, by value."""
    library, front = versions()
    found: list[dict[str, int | str]] = []
    for index, config in enumerate(g.plans):
        if len(found) >= limit:
            break
        if not 0 <= int(config.engine_id) < BACKEND_ENGINE_IDS:
            continue  # the frontend's own engines, and its delegating entry: not a cuDNN engine configuration
        try:
            g.build_plan_at_index(index)
        except Exception:  # deselected (nondeterministic), or not buildable for this problem on this device
            continue
        engine_id, knobs = g.get_engine_and_knobs_at_index(index)
        found.append({"engine_id": int(engine_id), "knobs": encode_knobs(knobs),
                      "plan": str(g.get_plan_name_at_index(index)),
                      "workspace": int(g.get_workspace_size_plan_at_index(index)), "cudnn_version": library,
                      "frontend_version": front})
    return found


class Executable:
    """A recorded plan rebuilt for one problem on the current device: the graph, the plan's index in it, and the
    handle it runs on. Refused with a :class:`CudnnError` naming the plan when this library cannot rebuild exactly
    it: another cuDNN or frontend version, a plan whose name comes back different, one deselected as
    nondeterministic, or one that needs more workspace than was recorded."""

    def __init__(self, p: SdpaProblem, params: Mapping[str, Any]) -> None:
        self.problem, self.params = p, dict(params)
        library, front = versions()
        if (library, front) != (params["cudnn_version"], params["frontend_version"]):
            raise CudnnError(f"the recorded cuDNN {label(params)} was chosen with cuDNN {params['cudnn_version']} "
                             f"(frontend {params['frontend_version']}); this machine has cuDNN {library} (frontend "
                             f"{front}), whose engine {params['engine_id']} may run other kernels. Run it where the "
                             "recorded versions are installed, or rebuild without --replay to choose among this "
                             "library's plans")
        self.handle, self.lock = handle()
        with CAPTURE_LOCK, self.lock:  # building may synchronize or load modules: never while another captures
            try:
                self.graph, needed = self._rebuild()
            except CudnnError:
                raise
            except Exception as exc:
                raise CudnnError(f"the recorded cuDNN {label(params)} cannot be rebuilt for {p.describe()} here: "
                                 f"{type(exc).__name__}: {exc}. Rebuild without --replay to choose among this "
                                 "library's plans") from exc
        if needed > int(params["workspace"]):
            raise CudnnError(f"the recorded cuDNN {label(params)} needs {needed} workspace bytes here, more than the "
                             f"{params['workspace']} it was recorded with")

    def __del__(self) -> None:
        # Releasing the graph destroys its plans, which may synchronize: outside any capture (see capture.py).
        holder = [self.__dict__.pop("graph", None)]
        try:  # noqa: SIM105  (at interpreter shutdown the capture module may be gone)
            outside_capture(holder.clear)
        except Exception:
            pass

    def _rebuild(self) -> tuple[Any, int]:
        """The graph with the recorded plan appended (``create_execution_plan``), checked by name and built, and
        the workspace it needs."""
        cudnn, params = frontend(), self.params
        g = graph(self.problem, self.handle)
        g.deselect_numeric_notes([cudnn.numerical_note.NONDETERMINISTIC])
        g.create_execution_plan(int(params["engine_id"]), decode_knobs(str(params["knobs"])))
        index = g.get_execution_plan_count() - 1
        name = str(g.get_plan_name_at_index(index))
        if name != params["plan"]:
            raise CudnnError(f"the recorded cuDNN {label(params)} cannot be rebuilt exactly here: engine "
                             f"{params['engine_id']} with knobs {params['knobs'] or 'none'} is plan {name} with this "
                             f"library, not the recorded {params['plan']}. Rebuild without --replay to choose among "
                             "this library's plans")
        g.build_plan_at_index(index)  # selects it: ``execute`` runs it
        return g, int(g.get_workspace_size_plan_at_index(index))

    def bind(self, q: int, k: int, v: int, o: int, bias: int, workspace: int) -> Callable[[Any], None]:
        """A call that enqueues the plan on the stream it is given with these device addresses."""
        pack = {UID_Q: q, UID_K: k, UID_V: v, UID_O: o}
        if self.problem.bias is not None:
            pack[UID_BIAS] = bias
        set_stream, h, lock = frontend().set_stream, self.handle, self.lock

        def call(stream: Any, executable: Executable = self) -> None:  # the graph lives as long as its Executable
            with lock:
                set_stream(h, int(stream.ptr))
                executable.graph.execute(pack, workspace, handle=h)

        return call
