"""Runtime, Engine and ExecutionContext, after TensorRT's object model.

``Runtime(logger).deserialize_engine(bytes)`` checks the whole file (``reprobuild.engine.format``: structure,
names, wiring, attributes and shapes through the op definitions, the embedded manifest), checks the memory cap,
resolves every tactic by value (refusing one whose source changed), re-derives the memory plan and prepares each
layer once: weights are the engine's persistent memory. ``Engine.create_execution_context()`` allocates one arena
per context for activations, workspace and the cuBLAS workspace of the context's own handle (scratch memory),
after checking the cap again; contexts share the engine read-only, and each runs on its own stream. A context is
for one thread at a time, and ``enqueue``'s outputs are its own memory, so the thread that enqueues holds the
context until it consumes them (``reprobuild.engine.hold``); a call from another thread meanwhile is refused
(``UsageError``), never raced; use one context per thread. A CUDA input is read on the context's stream only after
the work that produces it (``reprobuild.engine.interop``).

The memory cap (``Runtime(max_memory=...)``, the CLI's ``--max-memory``) defaults to the device's total memory
(cuda) or, on cpu, the least of the host's physical memory, this process's cgroup limit and its address-space
limit (``engine.host_memory``): weights plus the scratch memory of every live context may not exceed it, so an
engine whose declared shapes need terabytes is refused with a ``ResourceError`` before anything is allocated. An
allocation that fails all the same (MemoryError) is a ``ResourceError`` naming what was being allocated.

A CUDA layer is prepared as a launch plan (``reprobuild.kernels.launch``): the context binds every plan to its
arena once, so a run replays a flat list of launches, and by default (when the engine allows it) captures
that list into a CUDA graph on first use and replays the graph. Graph and eager runs launch the same kernels
with the same arguments, so they give the same bits.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprobuild.core.digest import array_digest
from reprobuild.core.dtypes import dtype_name, itemsize, np_dtype
from reprobuild.core.errors import FormatError, InputError, ReprobuildError, ResourceError, UsageError
from reprobuild.core.logger import ErrorRecorder, Logger
from reprobuild.engine import dynamic
from reprobuild.engine.advice import shape_advice
from reprobuild.engine.allocator import GpuAllocator, allocate_scratch, check_allocator
from reprobuild.engine.format import check_header, deserialize_engine, engine_sha256
from reprobuild.engine.hold import Hold
from reprobuild.engine.host_memory import host_memory_cap
from reprobuild.engine.interop import as_torch, check_output_form, share
from reprobuild.engine.memory import LayerUse, check_memory_cap, device_memory_info, plan_memory
from reprobuild.engine.plan import EngineHeader, EngineLayer, EngineMemory, EngineTensor
from reprobuild.kernels.backend import Backend, get_backend
from reprobuild.kernels.cublas import WORKSPACE_BYTES, BlasHandle
from reprobuild.kernels.identity import shown_label
from reprobuild.kernels.launch import LaunchPlan, capture, uses_library
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic, TacticRegistry, TensorSig
from reprobuild.layers import LayerDef, find_layer
from reprobuild.registry.lazy import runtime_registry


@dataclass(frozen=True)
class Binding:
    """A network input or output: name, shape, dtype; for an input pinned at build time, its ``value``."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    value: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: The input's shape as the model declared it (ints static, symbols dynamic); None when not known.
    declared: tuple[int | str, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PreparedLayer:
    name: str
    op: str
    tactic: Tactic
    kernel: Kernel
    inputs: tuple[str, ...]  # activation inputs only, in order
    outputs: tuple[str, ...]


def _eager_step(layer: PreparedLayer, ins: list[Any], outs: list[Any], workspace: Any) -> Callable[[Any], None]:
    """A layer whose tactic returns an opaque callable, as a step of the run (it runs on the current stream).

    The temporary arrays such a kernel allocates are the run's only allocations: a MemoryError there is a
    ResourceError naming the layer. Any other exception is typed too, the last line behind the loader's checks
    (every attribute the run reads, constant indices): an IndexError of an op that indexes with an input is that
    input's values out of range (an InputError); anything else means the file was crafted past the loader's checks
    or a bug in reprobuild (a FormatError naming the layer, chained to the original for --debug)."""
    kernel = layer.kernel
    label = f"engine layer {layer.name!r} (op {layer.op}, tactic {shown_label(layer.tactic)})"

    def step(stream: Any) -> None:
        try:
            kernel(ins, outs, workspace)
        except ReprobuildError:
            raise
        except MemoryError:
            raise ResourceError(f"{label} ran out of memory for its temporary arrays while it ran (MemoryError); "
                                "free memory, or rebuild the engine for smaller inputs (reprobuild build "
                                "--input-shape)") from None
        except Exception as exc:
            raise _run_failure(layer, label, exc) from exc

    return step


def _run_failure(layer: PreparedLayer, label: str, exc: Exception) -> ReprobuildError:
    definition = find_layer(layer.op)
    indexes = definition is not None and type(definition).check_constants is not LayerDef.check_constants
    if indexes and isinstance(exc, IndexError):
        return InputError(f"{label} was given indices out of range at run time ({exc}); ONNX leaves such an index "
                          "undefined and reprobuild refuses it: give indices within [-n, n) of the dimension they "
                          "index")
    return FormatError(f"{label} failed while it ran: {type(exc).__name__}: {exc}. The loader checked every "
                       "attribute and constant input the run reads, so the engine file was crafted past those checks "
                       "or this is a bug in reprobuild (report it with the engine and the traceback of --debug)")


def library_workspace_bytes(tactics: Sequence[Tactic]) -> int:
    """The cuBLAS workspace a context needs: one handle's worth when a tactic calls cuBLAS, else none."""
    return WORKSPACE_BYTES if any(t.source == "cublas" for t in tactics) else 0


def default_max_memory(backend: Backend) -> tuple[int | None, str]:
    """The memory cap when none is given, and where it comes from: the device's total memory on cuda
    (``cudaMemGetInfo``); on cpu the least of the host's physical memory, this process's cgroup memory limit and
    its address-space limit (``engine.host_memory``; None where the OS tells none of them: no cap)."""
    device = device_memory_info(backend)
    if device is not None:
        return device[1], f"the total memory of GPU {getattr(backend, 'gpu_name', '')}".rstrip()
    return host_memory_cap()


def check_max_memory(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"max_memory (--max-memory) must be a positive number of bytes, or None for the device's "
                         f"(cuda) or host's (cpu) memory; got {value!r}")
    return value


class Runtime:
    """Deserializes engines. The logger and error recorder are inherited by engines and contexts.

    ``max_memory``: the most bytes an engine's weights and the scratch memory of its live execution contexts may
    take together (None: the device's total memory on cuda; on cpu the host's physical memory or, when lower, this
    process's cgroup memory limit or address-space limit).
    ``gpu_allocator``: supplies every execution context's scratch memory (None: a default ``GpuAllocator``).
    ``device``: the GPU a cuda engine runs on (None: 0); an engine is the same file on every device. A cpu engine
    has one device, 0: loading one with any other is a UsageError, as building on it is (never silently ignored)."""

    def __init__(self, logger: Logger | None = None, error_recorder: ErrorRecorder | None = None,
                 registry: TacticRegistry | None = None, max_memory: int | None = None,
                 gpu_allocator: GpuAllocator | None = None, device: int | None = None) -> None:
        self.logger = logger or Logger()
        self.error_recorder = error_recorder
        # Without a registry: the built-in tactics and registered plugins, imported as the engines need them.
        self.registry = registry or runtime_registry()
        self.max_memory = check_max_memory(max_memory)
        self.gpu_allocator = check_allocator(gpu_allocator)
        if device is not None and (isinstance(device, bool) or not isinstance(device, int) or device < 0):
            raise UsageError(f"device must be a GPU index, 0 or more, or None; got {device!r}")
        self.device = device

    def deserialize_engine(self, data: bytes | bytearray | memoryview) -> Engine:
        try:
            blob = bytes(data)
            header, weights = deserialize_engine(blob, self.registry)
            return Engine(header, weights, engine_sha256(blob), self, blob)
        except ReprobuildError as exc:
            if self.error_recorder is not None:
                self.error_recorder.report(exc)
            raise


def engine_for_inputs(engine: Engine, inputs: Mapping[str, Any], profile: int = 0) -> Engine:
    """``engine`` itself, or a dynamic engine at the shapes of ``inputs`` with ``profile``'s tactics."""
    if not engine.is_dynamic:
        return engine
    return engine.at_input_shapes(profile, {name: np.shape(value) for name, value in inputs.items()})


def _layer_spec(layer: EngineLayer, tensor: Callable[[str], EngineTensor], weights: Mapping[str, np.ndarray]
                ) -> LayerSpec:
    """What a tactic sees of a layer: its attributes, its tensors' shapes and dtypes, its constant inputs."""
    def sig(name: str) -> TensorSig:
        if name in weights:
            return TensorSig(tuple(weights[name].shape), str(weights[name].dtype))
        t = tensor(name)
        return TensorSig(tuple(t.shape), t.dtype)

    attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in layer.attrs.items()}
    return LayerSpec(
        name=layer.name, op=layer.op, attrs=attrs,
        inputs=tuple(sig(t) for t in layer.inputs), outputs=tuple(sig(t) for t in layer.outputs),
        constants={i: weights[t] for i, t in enumerate(layer.inputs) if t in weights},
    )


def _take(hold: Hold, recorder: ErrorRecorder | None, keep: bool | None) -> contextlib.AbstractContextManager[None]:
    """A context's hold for the calling thread (``Hold.take``): another thread's call is refused with a UsageError,
    reported to ``recorder``."""
    def refuse(why: str) -> ReprobuildError:
        error = UsageError(f"this execution context is not free: {why}. A context is for one thread at a time; "
                           "create one context per thread (Engine.create_execution_context)")
        if recorder is not None:
            recorder.report(error)
        return error

    return hold.take(refuse, keep)


def _binding(t: EngineTensor) -> Binding:
    return Binding(t.name, tuple(t.shape), t.dtype)


class Engine:
    """A deserialized engine: bindings, prepared kernels and weights. Immutable and shareable across threads."""

    def __init__(self, header: EngineHeader, weights: Mapping[str, np.ndarray], sha256: str, runtime: Runtime,
                 serialized: bytes | None = None):
        self.header = header
        self._serialized = serialized  # the weights are views into these bytes: keeping them costs nothing
        self.sha256 = sha256
        self.logger = runtime.logger
        self.error_recorder = runtime.error_recorder
        self.gpu_allocator = runtime.gpu_allocator
        self.backend: Backend = get_backend(header.backend, runtime.device)
        self._tensors = {t.name: t for t in header.activations}
        self._check_references(weights)
        pinned = tuple(Binding(t.name, tuple(t.shape), t.dtype, weights[t.name]) for t in header.pinned_inputs)
        #: Every input of the network: the run-time ones, then those whose values were pinned at build time.
        self.inputs = tuple(Binding(t.name, tuple(t.shape), t.dtype, None,
                                    tuple(header.declared_inputs[t.name]) if t.name in header.declared_inputs
                                    else None) for t in header.inputs) + pinned
        self.outputs = tuple(_binding(t) for t in header.outputs)
        self.weights_bytes = sum(int(w.nbytes) for w in weights.values())
        #: The memory cap in bytes (None: none), and where it comes from.
        self.max_memory, self._cap_source = ((runtime.max_memory, "set by max_memory (--max-memory)")
                                             if runtime.max_memory is not None else default_max_memory(self.backend))
        self._contexts: weakref.WeakSet[ExecutionContext] = weakref.WeakSet()
        self._contexts_lock = threading.Lock()
        self._check_memory_cap(1)  # before any tactic is resolved or any layer prepared (which may allocate)
        tactics = [runtime.registry.resolve(layer.op, layer.tactic.model_dump()) for layer in header.layers]
        self._check_memory_plan(tactics)
        with self.backend.activate():
            self.layers = tuple(self._prepare(layer, tactic, weights) for layer, tactic in zip(header.layers, tactics))
        self.backend.synchronize()
        self.logger.info(f"engine {sha256[:12]}: {len(self.layers)} layers on {self.backend.name}, "
                         f"{self.weights_bytes} weight bytes, {self.device_memory_size} bytes per context")
        # What ``at_shape`` makes a shape's engine with (not the Runtime: an engine outlives the runtime it was
        # deserialized with, as TensorRT's does).
        self._registry, self._weights = runtime.registry, weights
        self._settings = (runtime.logger, runtime.error_recorder, runtime.max_memory, runtime.gpu_allocator,
                          runtime.device)
        #: For an engine that is a dynamic engine at one shape (``at_shape``): (profile, sizes); else None.
        self.profile_sizes: tuple[int, dict[str, int]] | None = None
        #: A dynamic engine's section, parsed once.
        self.dynamic_view = dynamic.DynamicView(header) if header.dynamic else None
        #: Engines of this dynamic engine at other shapes, (profile, sizes) -> Engine, made on first use.
        self._shaped: dict[tuple[int, tuple[tuple[str, int], ...]], Engine] = {}
        self._shaped_lock = threading.Lock()

    # --- dynamic shapes (optimization profiles) --------------------------------------------------------------

    @property
    def is_dynamic(self) -> bool:
        """Whether the engine was built with optimization profiles (a range of input shapes)."""
        return bool(self.header.dynamic)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.header.dynamic[0].profiles) if self.header.dynamic else 0

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) shape of a dynamic input in an optimization profile, as TensorRT's
        ``ICudaEngine.get_tensor_profile_shape``."""
        if not self.header.dynamic:
            raise UsageError("this engine has fixed shapes and no optimization profiles")
        profiles = self.header.dynamic[0].profiles
        if not 0 <= profile < len(profiles):
            raise UsageError(f"optimization profile {profile} does not exist; the engine has {len(profiles)}")
        if name not in profiles[profile].inputs:
            raise UsageError(f"{name!r} is not an input with dynamic dimensions; those are "
                             f"{sorted(profiles[profile].inputs)}")
        low, opt, high = profiles[profile].inputs[name]
        return tuple(low), tuple(opt), tuple(high)

    def symbolic_shape(self, name: str) -> tuple[Any, ...]:
        """A tensor's shape with each dynamic dimension as its expression (a SymInt): the declared form."""
        if self.dynamic_view is not None and name in self.dynamic_view.shapes:
            return tuple(self.dynamic_view.shapes[name])
        return tuple(self.activation(name).shape)

    #: How many shapes' engines a dynamic engine keeps prepared (least recently made dropped first; which one is
    #: dropped changes no result, only whether a shape is prepared again).
    max_shapes = 16

    def at_shape(self, profile: int, sizes: Mapping[str, int]) -> Engine:
        """This dynamic engine at one size of each dynamic dimension, with profile ``profile``'s tactics: its
        shapes and attributes evaluated, checked as a file's are (``format.check_header``), tactics resolved and
        prepared, a memory plan of its own. Made once per (profile, sizes) and kept (``max_shapes``)."""
        key = (profile, tuple(sorted((k, int(v)) for k, v in sizes.items())))
        with self._shaped_lock:
            found = self._shaped.get(key)
            if found is not None:
                return found
        header = dynamic.specialize_header(self.header, profile, sizes, self._workspace_of, self._plan_of,
                                           self.dynamic_view)
        registry = self._registry
        registry.load((layer.op, layer.tactic.family) for layer in header.layers)
        check_header(header, registry)
        logger, recorder, max_memory, allocator, device = self._settings
        runtime = Runtime(logger, recorder, registry, max_memory, allocator, device)
        made = Engine(header, self._weights, self.sha256, runtime, self._serialized)
        made.profile_sizes = (profile, dict(sizes))
        with self._shaped_lock:
            found = self._shaped.setdefault(key, made)
            while len(self._shaped) > self.max_shapes:
                self._shaped.pop(next(iter(self._shaped)))
        return found

    def at_input_shapes(self, profile: int, shapes: Mapping[str, Sequence[int]]) -> Engine:
        """``at_shape`` at the sizes these input shapes give (a dynamic input not given: profile ``profile``'s opt
        shape; other inputs' names are not looked at); a ProfileShapeError for a shape outside the profile."""
        given = dynamic.profile_input_shapes(self.header, profile, shapes)
        return self.at_shape(profile, dynamic.resolve_sizes(self.header, profile, given, self.dynamic_view))

    def _workspace_of(self, layer: EngineLayer, tensors: Mapping[str, EngineTensor]) -> tuple[int, bool]:
        tactic = self._registry.resolve(layer.op, layer.tactic.model_dump())
        spec = _layer_spec(layer, lambda name: tensors[name], self._weights)
        return tactic.workspace_bytes(spec), bool(getattr(tactic, "aliases_input", False))

    def _plan_of(self, sizes: Mapping[str, int], layers: Sequence[EngineLayer], aliases: Sequence[bool]) -> Any:
        tactics = [self._registry.resolve(layer.op, layer.tactic.model_dump()) for layer in layers]
        uses = [LayerUse(tuple(layer.inputs), tuple(layer.outputs), alias, layer.workspace_bytes)
                for layer, alias in zip(layers, aliases)]
        plan = plan_memory(dict(sizes), uses, [t.name for t in self.header.inputs], [b.name for b in self.outputs],
                           self.header.memory.alignment, library_workspace_bytes(tactics))
        return EngineMemory(alignment=self.header.memory.alignment, activation_bytes=plan.activation_bytes,
                            workspace_offset=plan.workspace_offset, workspace_bytes=plan.workspace_bytes,
                            library_bytes=plan.library_bytes, offsets=dict(plan.offsets))

    @property
    def name(self) -> str:
        return self.header.name

    def activation(self, name: str) -> EngineTensor:
        """The shape and dtype of an activation tensor (a binding or a layer output)."""
        return self._tensors[name]

    def serialize(self) -> bytes:
        """The engine file this engine was loaded from."""
        if self._serialized is None:
            raise UsageError("this engine was built in memory and has no serialized form")
        return self._serialized

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def device_memory_size(self) -> int:
        """Bytes of scratch memory (activations, workspace, cuBLAS workspace) each execution context needs."""
        memory = self.header.memory
        return memory.workspace_offset + memory.workspace_bytes + memory.library_bytes

    @property
    def graph_capturable(self) -> bool:
        """Whether every layer is a launch plan, so that a context can capture its run into a CUDA graph."""
        return self.backend.name == "cuda" and all(isinstance(layer.kernel, LaunchPlan) for layer in self.layers)

    @property
    def manifest_json(self) -> bytes:
        """The pinned manifest the builder embedded (canonical JSON)."""
        return self.header.manifest

    def _check_references(self, weights: Mapping[str, np.ndarray]) -> None:
        known = set(self._tensors) | set(weights)
        for layer in self.header.layers:
            for t in (*layer.inputs, *layer.outputs):
                if t not in known:
                    raise FormatError(f"engine layer {layer.name!r} names tensor {t!r}, which the engine does not "
                                      "define; the file is inconsistent")
        for binding in (*self.header.inputs, *self.header.outputs):
            if binding.name not in self._tensors:
                raise FormatError(f"engine binding {binding.name!r} is not among its activation tensors")
        for pin in self.header.pinned_inputs:
            w = weights.get(pin.name)
            if (w is None or list(w.shape) != pin.shape or dtype_name(w.dtype) != pin.dtype
                    or array_digest(w) != pin.sha256):
                raise FormatError(f"engine pinned input {pin.name!r} has no matching value among its weights")

    def _check_memory_plan(self, tactics: list[Tactic]) -> None:
        sizes = {t.name: int(np.prod(t.shape, dtype=np.int64)) * itemsize(t.dtype)
                 for t in self.header.activations}
        uses = [LayerUse(tuple(layer.inputs), tuple(layer.outputs), bool(getattr(tactic, "aliases_input", False)),
                         layer.workspace_bytes) for layer, tactic in zip(self.header.layers, tactics)]
        plan = plan_memory(sizes, uses, [t.name for t in self.header.inputs], [b.name for b in self.outputs],
                           self.header.memory.alignment, library_workspace_bytes(tactics))
        recorded = self.header.memory
        if (dict(plan.offsets) != recorded.offsets or plan.activation_bytes != recorded.activation_bytes
                or plan.workspace_bytes != recorded.workspace_bytes
                or plan.workspace_offset != recorded.workspace_offset or plan.library_bytes != recorded.library_bytes):
            raise FormatError("engine memory plan does not match the one this runtime derives from its layers; "
                              "the file is inconsistent or was made by another reprobuild version")

    def _check_memory_cap(self, contexts: int) -> None:
        check_memory_cap(self.backend.name, self.weights_bytes, self.device_memory_size, contexts, self.max_memory,
                         self._cap_source)

    def _prepare(self, layer: EngineLayer, tactic: Tactic, weights: Mapping[str, np.ndarray]) -> PreparedLayer:
        """The layer's tactic prepared. The file was validated whole before this; an exception other than a
        ReprobuildError while preparing still means the file does not fit the tactic, and becomes a FormatError
        that names the layer (chained to the original, which ``--debug`` shows)."""
        try:
            return self._prepare_layer(layer, tactic, weights)
        except ReprobuildError:
            raise
        except MemoryError:
            raise ResourceError(f"engine layer {layer.name!r} (op {layer.op}, tactic {shown_label(tactic)}) ran out of "
                                f"{self.backend.name} memory while it was prepared (its weights made ready for the "
                                "tactic); free memory, or load the engine where more is available") from None
        except Exception as exc:
            raise FormatError(f"engine layer {layer.name!r} (op {layer.op}, tactic {shown_label(tactic)}) cannot be "
                              f"prepared: {type(exc).__name__}: {exc}; the engine file is inconsistent with its "
                              "tactic (damaged, edited, or made by another reprobuild); rebuild it with "
                              "`reprobuild build`") from exc

    def _prepare_layer(self, layer: EngineLayer, tactic: Tactic, weights: Mapping[str, np.ndarray]) -> PreparedLayer:
        spec = _layer_spec(layer, self._tensors.__getitem__, weights)
        reason = tactic.ineligibility(spec) or tactic.device_ineligibility(
            getattr(self.backend, "compute_capability", None))
        if reason is not None:
            raise FormatError(f"engine layer {layer.name!r}: tactic {shown_label(tactic)} cannot run it ({reason})")
        if tactic.workspace_bytes(spec) > layer.workspace_bytes:
            raise FormatError(f"engine layer {layer.name!r} reserves {layer.workspace_bytes} workspace bytes but "
                              f"{shown_label(tactic)} needs {tactic.workspace_bytes(spec)}")
        return PreparedLayer(layer.name, layer.op, tactic, tactic.prepare(spec, self.backend),
                             tuple(t for t in layer.inputs if t not in weights), tuple(layer.outputs))

    def _graph_choice(self, cuda_graph: bool | None) -> bool:
        if cuda_graph is None:
            return bool(self.header.cuda_graph) and self.graph_capturable
        if cuda_graph and not self.graph_capturable:
            eager = [layer.name for layer in self.layers if not isinstance(layer.kernel, LaunchPlan)]
            raise UsageError(f"this engine cannot run as a CUDA graph: it is on {self.backend.name}"
                             + (f", and layers {eager[:5]} use tactics that are not launch plans" if eager else "")
                             + "; create the context with cuda_graph=None or False")
        return bool(cuda_graph)

    def create_execution_context(self, cuda_graph: bool | None = None) -> ExecutionContext:
        """A context with its own scratch memory and stream. ``cuda_graph``: None follows the engine (graphs when
        it was built with them and can), False runs eagerly, True requires a graph.

        The weights and the scratch memory of every live context, this one included, must fit the memory cap
        (``Runtime(max_memory=...)``); otherwise a ResourceError, before anything is allocated."""
        if self.header.dynamic:
            return DynamicExecutionContext(self, cuda_graph)  # type: ignore[return-value]
        graph = self._graph_choice(cuda_graph)
        with self._contexts_lock:
            self._check_memory_cap(len(self._contexts) + 1)
            context = ExecutionContext(self, None, graph)
            context.device_memory = allocate_scratch(self.gpu_allocator, max(self.device_memory_size, 1),
                                                     "context scratch memory", self.backend, context)
            self._contexts.add(context)
        return context

    def create_execution_context_without_device_memory(self, cuda_graph: bool | None = None) -> ExecutionContext:
        """A context whose scratch memory the caller supplies later through ``context.device_memory``."""
        return ExecutionContext(self, None, self._graph_choice(cuda_graph))


class ExecutionContext:
    """Runs an engine. One thread at a time: the thread that enqueues holds the context until it consumes the
    outputs (``to_host``, ``release``, or its next run); a call from another thread meanwhile is refused with a
    ``UsageError``, never raced (``reprobuild.engine.hold``)."""

    def __init__(self, engine: Engine, memory: Any, cuda_graph: bool = False) -> None:
        self.engine = engine
        self.backend = engine.backend
        self.error_recorder = engine.error_recorder
        self.stream = self.backend.new_stream()
        #: Whether runs replay a CUDA graph captured on first use (else each run launches the bound list).
        self.cuda_graph = cuda_graph
        self._graph: Any = None
        self._blas: Any = None
        #: Which thread holds the context: a call, from the conversion of its inputs to the copy of its outputs,
        #: and ``enqueue``'s caller until it consumes the outputs; another thread is refused, never raced.
        self._hold = Hold()
        self._memory: Any = None
        self._views: dict[str, Any] = {}
        self._steps: list[list[Callable[[Any], None]]] = []
        self._outs: list[list[Any]] = []
        if memory is not None:
            self.device_memory = memory

    @property
    def device_memory(self) -> Any:
        return self._memory

    @device_memory.setter
    def device_memory(self, memory: Any) -> None:
        """Scratch memory the caller supplies: the context's runs write it on the context's stream after the work
        already enqueued on it (on the caller's current CuPy stream for a CuPy array, on the interface's stream
        for a CUDA-array-interface object, through DLPack for a torch tensor), and the memory it replaces is no
        longer used once the setter returns (the context's pending work on it is waited for)."""
        caller = self.backend.caller_stream()  # before activate() makes the context's stream current
        with self._exclusive(), self.backend.activate(self.stream):  # the cuBLAS handle is made on this GPU
            self._set_device_memory(memory, caller)

    def _set_device_memory(self, memory: Any, caller: int | None) -> None:
        need = self.engine.device_memory_size
        producer = caller if isinstance(memory, self.backend.xp.ndarray) and self.backend.name == "cuda" else None
        if memory is not None and not isinstance(memory, (np.ndarray, self.backend.xp.ndarray)):
            # a torch tensor, ...: its memory, shared
            memory, producer = share(memory, self.backend, "device_memory", caller)
        if memory is None or getattr(memory, "dtype", None) != np.uint8 or memory.ndim != 1 or memory.size < need:
            raise UsageError(f"device memory must be a 1-D uint8 {self.backend.name} array of at least {need} "
                             "bytes (Engine.device_memory_size)")
        if not isinstance(memory, self.backend.xp.ndarray):
            raise UsageError(f"device memory must be a {self.backend.xp.__name__} array for this "
                             f"{self.backend.name} engine")
        if isinstance(memory, np.ndarray) and not memory.flags.writeable:
            raise UsageError("device memory must be writable; this array is read-only (NumPy marks arrays it "
                             "imports through DLPack read-only: pass the NumPy array itself)")
        memory_plan = self.engine.header.memory
        if self._memory is not None:
            self.backend.synchronize()  # the runs still in flight on the old memory are done with it
        if producer is not None:
            self.backend.wait_for(int(self.stream.ptr), producer)
        self._memory = memory
        self._views = {
            t.name: self.backend.view(memory, memory_plan.offsets[t.name], tuple(t.shape), t.dtype)
            for t in self.engine.header.activations
        }
        workspace = memory[memory_plan.workspace_offset:memory_plan.workspace_offset + memory_plan.workspace_bytes]
        self._blas = None
        if any(uses_library(layer.kernel) for layer in self.engine.layers):
            start = memory_plan.workspace_offset + memory_plan.workspace_bytes
            self._blas = BlasHandle(int(self.stream.ptr), int(memory[start:].data.ptr), memory_plan.library_bytes)
        # Bind every layer to its views once: a run is then a flat replay with no lookups.
        self._steps, self._outs = [], []
        for layer in self.engine.layers:
            ins, outs = [self._views[t] for t in layer.inputs], [self._views[t] for t in layer.outputs]
            if isinstance(layer.kernel, LaunchPlan):
                self._steps.append(layer.kernel.bind(ins, outs, workspace, self._blas))
            else:
                self._steps.append([_eager_step(layer, ins, outs, workspace)])
            self._outs.append(outs)
        self._graph = None  # a graph captured over the previous memory is stale

    def _fail(self, error: ReprobuildError) -> ReprobuildError:
        if self.error_recorder is not None:
            self.error_recorder.report(error)
        return error

    def _exclusive(self, keep: bool | None = False) -> contextlib.AbstractContextManager[None]:
        """This context for the calling thread for the block (``Hold.take``); a UsageError if another thread has
        it. ``keep``: the thread goes on holding it after the block (``enqueue``); None: as before the block."""
        return _take(self._hold, self.error_recorder, keep)

    def release(self) -> None:
        """End this thread's hold on the context without copying the outputs (``to_host`` ends it with a copy):
        the buffers ``enqueue`` returned may then be overwritten by any thread's run. A thread that holds nothing
        may call it too; while another thread holds the context it is refused (``UsageError``)."""
        with self._exclusive():
            pass

    def _check_inputs(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """The inputs as arrays of the engine's backend (``interop.share``: shared, not copied, where the backend
        can read them in place), checked against the engine's bindings, and the streams they were produced on,
        which the context's stream now waits for (and which must wait for the run's copy of the inputs).
        Called with the context held, before any stream is made current."""
        expected = {b.name: b for b in self.engine.inputs}
        listing = ", ".join(f"{b.name} {list(b.shape)} {b.dtype}" for b in expected.values())
        if not isinstance(inputs, Mapping):
            first = next(iter(expected), "input")
            raise self._fail(InputError(
                f"inputs are a mapping from input name to array, such as {{{first!r}: array}}; got a "
                f"{type(inputs).__name__}. This engine's inputs: {listing}"))
        missing = [n for n, b in expected.items() if n not in inputs and b.value is None]
        unknown = sorted((n for n in inputs if n not in expected), key=str)
        if missing or unknown:
            raise self._fail(InputError(
                f"inputs do not match the engine's: missing {missing}, unexpected {unknown}; expected: {listing}"))
        arrays, producers = {}, []
        caller, stream = self.backend.caller_stream(), self.stream
        for name, b in expected.items():
            if name not in inputs:
                continue
            value = inputs[name]
            # Another framework's array is exported with this context's stream current, so that its producer's
            # pending work comes first (DLPack); a CuPy array's producer is the caller's current stream, and an
            # interface object's its 'stream': the context's stream waits for them on the device.
            foreign = not isinstance(value, (np.ndarray, self.backend.xp.ndarray))
            try:
                with self.backend.activate(stream) if foreign else contextlib.nullcontext():
                    value, producer = share(value, self.backend, name, caller)
            except InputError as exc:
                raise self._fail(exc) from None
            arrays[name] = value
            if producer is not None and producer != int(stream.ptr) and producer not in producers:
                self.backend.wait_for(int(stream.ptr), producer)
                producers.append(producer)
            shape, dtype = tuple(getattr(value, "shape", ())), str(getattr(value, "dtype", type(value).__name__))
            if shape != b.shape:
                raise self._fail(InputError(f"input {name!r} has shape {list(shape)}; the engine was built for "
                                            f"{list(b.shape)}. {shape_advice(name, b.declared, b.shape, shape)}"))
            if dtype != b.dtype:
                raise self._fail(InputError(f"input {name!r} has dtype {dtype}; the engine expects {b.dtype} "
                                            f"(convert with array.astype(numpy.{b.dtype}))"))
            if b.value is not None:
                with self.backend.activate(stream):  # read after the producer, as the run reads it
                    host = self.backend.to_host(value, copy=False) if not isinstance(value, np.ndarray) else value
                if not np.array_equal(host, b.value):
                    raise self._fail(InputError(
                        f"input {name!r} was pinned to {np.array2string(b.value, threshold=16)} when the engine "
                        f"was built (--input-value), and this engine computes only that case; it was given "
                        f"{np.array2string(np.asarray(host), threshold=16)}. Rebuild with --input-value "
                        f"{name}=... for other values"))
        return arrays, producers

    def enqueue(self, inputs: Mapping[str, Any],
                after_layer: Callable[[int, Sequence[Any]], None] | None = None) -> dict[str, Any]:
        """Run asynchronously on this context's stream; returns the output buffers, the context's own memory:
        ``torch.from_dlpack`` (or any framework's) shares it without a copy, at ``get_tensor_address(name)``.

        The calling thread holds the context from here until it consumes the outputs: ``to_host(outputs)`` (a
        copy) or ``release()`` ends the hold, and so does this thread's next run (``enqueue`` again, ``execute``),
        which replaces the outputs; ``synchronize()`` keeps it. Until then a call from another thread is refused
        (``UsageError``), so the buffers hold this run's outputs for as long as this thread may read them.

        Inputs may be NumPy or CuPy arrays, torch tensors, or any DLPack / CUDA-array-interface object; a CUDA
        tensor is read in place on the device, on this context's stream, after the work that produces it: the
        stream a DLPack export names, the caller's current CuPy stream for a CuPy array, the interface's
        ``stream`` for a CUDA-array-interface object. The last two streams then wait for the run's copy of the
        inputs, so the caller may overwrite or free such an input at once; a DLPack tensor must be left unchanged
        until the run has read it (``synchronize``).

        ``after_layer(index, outputs)``, when given, is called after each layer is enqueued with that layer's
        output buffers (how ``execute_traced`` looks inside a run); it may not call the context."""
        with self._exclusive(keep=True):
            arrays, producers = self._check_ready(inputs)
            return self._run(arrays, after_layer, producers)

    def _check_ready(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], list[int]]:
        if self._memory is None:
            raise self._fail(UsageError("this context has no device memory yet; set context.device_memory first"))
        return self._check_inputs(inputs)

    def get_tensor_address(self, name: str) -> int:
        """The address of a binding (an input or output) in this context's memory, as TensorRT's
        ``IExecutionContext.get_tensor_address``: a device pointer on cuda, a host one on cpu."""
        bindings = [t.name for t in self.engine.header.inputs] + [b.name for b in self.engine.outputs]
        view = self._views.get(name)
        if view is None or name not in bindings:
            raise self._fail(UsageError(f"{name!r} is not an input or output of this engine"
                                        + ("" if self._memory is not None else " (or the context has no memory yet)")
                                        + f"; its bindings: {bindings}"))
        return int(view.data.ptr) if self.backend.name == "cuda" else int(view.ctypes.data)

    def _run(self, inputs: Mapping[str, Any], after_layer: Callable[[int, Sequence[Any]], None] | None = None,
             producers: Sequence[int] = ()) -> dict[str, Any]:
        """Upload the inputs and enqueue every layer; the caller holds this context (``_exclusive``). The
        ``producers`` streams of the inputs (``_check_inputs``) wait for the uploads, outside any graph capture."""
        views, stream = self._views, self.stream
        with self.backend.activate(stream):
            for b in self.engine.header.inputs:
                try:
                    self.backend.upload(views[b.name], inputs[b.name])
                except (TypeError, ValueError) as exc:
                    raise self._fail(InputError(f"input {b.name!r} cannot be copied to the "
                                                f"{self.backend.name} backend: {exc}")) from None
            for producer in producers:  # the caller's next work on an input comes after this run has read it
                self.backend.wait_for(producer, int(stream.ptr))
            if after_layer is None and self.cuda_graph:
                if self._graph is None:
                    self._graph = capture(stream, [step for steps in self._steps for step in steps])
                self._graph.launch(stream)
            elif after_layer is None:
                for steps in self._steps:
                    for step in steps:
                        step(stream)
            else:
                for index, steps in enumerate(self._steps):
                    for step in steps:
                        step(stream)
                    after_layer(index, self._outs[index])
        return {b.name: views[b.name] for b in self.engine.outputs}

    def execute(self, inputs: Mapping[str, Any], outputs: str = "numpy") -> dict[str, Any]:
        """Run synchronously and return new arrays the caller owns. ``inputs`` as ``enqueue`` takes them;
        ``outputs``: 'numpy' (host arrays), 'device' (arrays of the engine's backend: CuPy on cuda, copied on the
        device, never through the host; every framework imports them with ``from_dlpack``), or 'torch' (torch
        tensors over those device arrays' memory, no copy).

        The context is held from the conversion of the inputs to the copy of the outputs, so a concurrent call
        from another thread is refused (UsageError) rather than overwriting the outputs before they are copied;
        the call ends with the context free, including a hold this thread had from an earlier ``enqueue``."""
        check_output_form(outputs)
        with self._exclusive():
            arrays, producers = self._check_ready(inputs)
            result = self._run(arrays, None, producers)
            if outputs == "numpy":
                return self._copy_to_host(result)
            owned = self.backend.owned_copies(result, self.stream)  # the caller's, on its current stream
        return {name: as_torch(value) for name, value in owned.items()} if outputs == "torch" else owned

    def to_host(self, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Wait for this context's stream and copy ``enqueue``'s outputs to new host arrays; this consumes them,
        ending the calling thread's hold on the context (refused, ``UsageError``, while another thread holds it)."""
        with self._exclusive():
            return self._copy_to_host(outputs)

    def _copy_to_host(self, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        with self.backend.activate(self.stream):
            return {name: self.backend.to_host(value) for name, value in outputs.items()}

    def execute_traced(self, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[list[np.ndarray]]]:
        """Run synchronously, keeping a copy of every layer's outputs as soon as the layer has run (later layers
        reuse its memory): the outputs, and per layer the list of its output arrays (host arrays). For golden
        vectors and for locating where two runs diverge. The copies go, in order on the stream, into one trace
        buffer that comes to the host in a single transfer."""
        slots: list[list[tuple[int, tuple[int, ...], str]]] = []
        total = 0
        for layer in self.engine.layers:
            slots.append([])
            for name in layer.outputs:
                t = self.engine.activation(name)
                slots[-1].append((total, tuple(t.shape), t.dtype))
                total += -(-int(np.prod(t.shape, dtype=np.int64)) * itemsize(t.dtype) // 64) * 64

        def keep(index: int, outs: Sequence[Any]) -> None:
            for (offset, _, _), out in zip(slots[index], outs):
                self.backend.copy_bytes(trace, offset, out)

        with self._exclusive():
            arrays, producers = self._check_ready(inputs)
            with self.backend.activate(self.stream):  # allocated for, and first used on, the context's stream
                try:
                    trace = self.backend.empty_bytes(max(total, 1))
                except MemoryError:
                    raise self._fail(ResourceError(f"cannot allocate {total} bytes for the copies of every layer's "
                                                   "outputs (the trace of execute_traced); free memory")) from None
            outputs = self._copy_to_host(self._run(arrays, keep, producers))
            with self.backend.activate(self.stream):
                host = self.backend.to_host(trace, copy=False)  # the trace buffer is this call's own
        layers = [[host[o:o + int(np.prod(s, dtype=np.int64)) * itemsize(d)].view(np_dtype(d)).reshape(s)
                   for o, s, d in layer] for layer in slots]
        return outputs, layers

    def synchronize(self) -> None:
        """Wait for the work enqueued on this context's stream. A hold the calling thread has (``enqueue``) goes
        on, since the outputs it waited for are still to be read; refused (``UsageError``) while another thread
        holds the context."""
        with self._exclusive(keep=None), self.backend.activate(self.stream):
            self.backend.synchronize()


class DynamicExecutionContext:
    """Runs a dynamic engine (one built with optimization profiles), as TensorRT's ``IExecutionContext`` does:
    select a profile (``set_optimization_profile``), set each dynamic input's shape (``set_input_shape``; or let a
    run take the shapes of the inputs it is given), run. Each shape runs on the engine at that shape
    (``Engine.at_shape``: its shapes, attributes, the profile's tactics and a memory plan), through an execution
    context of its own, made on the shape's first run and kept (``max_shapes`` of them; which one is dropped first
    changes no result). Every shape's outputs are computed exactly as a fixed-shape engine of that shape, with the
    profile's tactics, computes them. One thread at a time, as every context."""

    def __init__(self, engine: Engine, cuda_graph: bool | None = None, max_shapes: int = 8) -> None:
        if isinstance(max_shapes, bool) or not isinstance(max_shapes, int) or max_shapes < 1:
            raise UsageError(f"max_shapes must be a positive int; got {max_shapes!r}")
        self.engine = engine
        self.backend = engine.backend
        self.cuda_graph = cuda_graph
        self.max_shapes = max_shapes
        self.profile = 0
        #: One stream and one scratch buffer for every shape: a shape's run uses the buffer's first bytes (its
        #: own memory plan), so runs of different shapes are ordered on the stream and never overlap.
        self.stream = engine.backend.new_stream()
        self._memory: Any = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._contexts: dict[tuple[int, tuple[tuple[str, int], ...]], ExecutionContext] = {}
        self._current: ExecutionContext | None = None
        self._hold = Hold()

    @property
    def device_memory_size(self) -> int:
        """Bytes of the scratch buffer the context holds now (0 before its first run): the most any shape run so
        far needs, and at least what the profile's max shapes need."""
        return 0 if self._memory is None else int(self._memory.size)

    def _scratch(self, need: int) -> Any:
        """The context's scratch buffer, at least ``need`` bytes: made on the first run with the size the
        profile's max shapes need (a shape's memory plan can need more than a larger one's: then it grows)."""
        if self._memory is not None and self._memory.size >= need:
            return self._memory
        engine = self.engine
        top = dynamic.resolve_sizes(engine.header, self.profile,
                                    dynamic.profile_input_shapes(engine.header, self.profile, {}, default=2),
                                    engine.dynamic_view)
        at_max = dynamic.specialize_header(engine.header, self.profile, top, engine._workspace_of, engine._plan_of,
                                           engine.dynamic_view)
        size = max(need, at_max.memory.workspace_offset + at_max.memory.workspace_bytes + at_max.memory.library_bytes,
                   1)
        check_memory_cap(self.backend.name, engine.weights_bytes, size, 1, engine.max_memory, engine._cap_source)
        if self._memory is not None:
            with self.backend.activate(self.stream):
                self.backend.synchronize()  # the runs in flight are done with the old buffer
        self._memory = allocate_scratch(engine.gpu_allocator, size, "dynamic context scratch memory", self.backend,
                                        self)
        for context in self._contexts.values():  # rebind every kept shape (its CUDA graph is captured again)
            context.device_memory = self._memory[:max(context.engine.device_memory_size, 1)]
        return self._memory

    def _exclusive(self, keep: bool | None = False) -> contextlib.AbstractContextManager[None]:
        return _take(self._hold, self.engine.error_recorder, keep)

    def set_optimization_profile(self, index: int) -> None:
        """Run with profile ``index``'s ranges and tactics (TensorRT's ``set_optimization_profile_async``); the
        input shapes set before are kept and checked against it at the next run."""
        with self._exclusive():
            count = self.engine.num_optimization_profiles
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                raise UsageError(f"optimization profile {index!r} does not exist; the engine has {count} "
                                 f"(0 to {count - 1})")
            self.profile = index

    def set_input_shape(self, name: str, shape: Sequence[int]) -> None:
        """The shape of a dynamic input for the runs that follow; a ProfileShapeError (an InputError, exit code 7)
        for one outside the current profile, naming the input, the axis and the range."""
        with self._exclusive():
            dims = self.engine.header.dynamic[0].profiles[self.profile].inputs
            if name not in dims:
                raise InputError(f"{name!r} is not an input with dynamic dimensions; those are {sorted(dims)}")
            shape = tuple(int(d) for d in shape)
            dynamic.resolve_sizes(self.engine.header, self.profile, {name: shape},  # the inputs agree at the run
                                  self.engine.dynamic_view)
            self._shapes[name] = shape

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape at the input shapes set so far (an output's is inferred from them): -1 for a
        dimension that depends on an input shape not set yet."""
        expr = self.engine.symbolic_shape(name)
        sizes = self._sizes_set()
        return tuple(d if isinstance(d, int) else (d.evaluate(sizes) if set(d.symbols) <= set(sizes) else -1)
                     for d in expr)

    def _sizes_set(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for name, shape in self._shapes.items():
            for dim, size in zip(self.engine.symbolic_shape(name), shape):
                if not isinstance(dim, int):
                    sizes[dim.symbols[0]] = size
        return sizes

    def _context_for(self, inputs: Mapping[str, Any]) -> ExecutionContext:
        dims = self.engine.header.dynamic[0].profiles[self.profile].inputs
        shapes = {}
        for name in dims:
            if name in inputs and hasattr(inputs[name], "shape"):
                given = tuple(int(d) for d in inputs[name].shape)
                if name in self._shapes and given != self._shapes[name]:
                    raise InputError(f"input {name!r} has shape {list(given)}, but set_input_shape set "
                                     f"{list(self._shapes[name])}; set the shape of the run's inputs")
                shapes[name] = given
            elif name in self._shapes:
                shapes[name] = self._shapes[name]
            else:
                raise InputError(f"input {name!r} is missing, and no shape was set for it (set_input_shape)")
        sizes = dynamic.resolve_sizes(self.engine.header, self.profile, shapes, self.engine.dynamic_view)
        key = (self.profile, tuple(sorted(sizes.items())))
        context = self._contexts.get(key)
        if context is None:
            shaped = self.engine.at_shape(self.profile, sizes)
            memory = self._scratch(shaped.device_memory_size)
            context = shaped.create_execution_context_without_device_memory(self.cuda_graph)
            context.stream = self.stream  # one stream for every shape: their runs never overlap on the buffer
            context.device_memory = memory[:max(shaped.device_memory_size, 1)]
            self._contexts[key] = context
            while len(self._contexts) > self.max_shapes:
                self._contexts.pop(next(iter(self._contexts)))
        self._current = context
        return context

    # Every shape's context binds the one scratch buffer, so the whole call holds this context (another thread is
    # refused, never raced), with the same hold rules as ExecutionContext: enqueue keeps it until to_host, release
    # or the thread's next run.

    def execute(self, inputs: Mapping[str, Any], outputs: str = "numpy") -> dict[str, Any]:
        """``ExecutionContext.execute`` at the shapes of ``inputs`` (or those set)."""
        with self._exclusive():
            return self._context_for(inputs).execute(inputs, outputs)

    def execute_traced(self, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[list[np.ndarray]]]:
        with self._exclusive():
            return self._context_for(inputs).execute_traced(inputs)

    def enqueue(self, inputs: Mapping[str, Any],
                after_layer: Callable[[int, Sequence[Any]], None] | None = None) -> dict[str, Any]:
        with self._exclusive(keep=True):
            return self._context_for(inputs).enqueue(inputs, after_layer)

    def to_host(self, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        with self._exclusive():
            if self._current is None:
                raise UsageError("nothing was enqueued on this context")
            return self._current.to_host(outputs)

    def synchronize(self) -> None:
        with self._exclusive(keep=None):
            if self._current is not None:
                self._current.synchronize()

    def release(self) -> None:
        with self._exclusive():
            if self._current is not None:
                self._current.release()
