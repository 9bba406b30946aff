"""Tactics: named, versioned kernel implementations of an op on a backend, and the registry that holds them.

A tactic is recorded by value: (family, name, version, parameters) and ``code_sha256``, the digest of exactly what
it runs (``identity.py``: its normalized Python code with every value and op it reaches, and the normalized source
closure of each CUDA kernel it launches, with the compile options). Its behaviour never changes under the same name
and version; a changed kernel is a new version. Adding a tactic, a kernel or a comment changes no other tactic's
identity. The built-in tactics' identities are committed in ``tactics.lock.json``, where a Runtime reads them.
"""

from __future__ import annotations

import copy
import enum
import functools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

import numpy as np

from reprobuild.core.dtypes import FLOATS, INTEGERS, np_dtype
from reprobuild.core.errors import BackendUnavailableError, BuildError, PluginNotRegisteredError, TacticMismatchError
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.identity import installed_code_sha256
from reprobuild.layers.registry import plugin_not_registered

#: The dtypes CuPy computes in (not bfloat16, whose CuPy support is minimal, nor the float8/float4/int4 formats).
CUDA_DTYPES: tuple[str, ...] = ("bool", *INTEGERS, *(f for f in FLOATS if f != "bfloat16"))
#: The dtypes CuPy arrays hold: bfloat16 too (CuPy 14 holds ml_dtypes' bfloat16), for the kernels that only move
#: bytes (reshape, transpose, slice, concat, gather) and those written for it on ``dtype.cuh``.
CUDA_STORAGE_DTYPES: tuple[str, ...] = (*CUDA_DTYPES, "bfloat16")


class Determinism(str, enum.Enum):
    """What a tactic promises about repeated runs on the same inputs."""

    RUN_TO_RUN = "run_to_run"  # bitwise identical outputs from run to run, context to context, stream to stream
    NONE = "none"  # outputs may differ between runs (atomics, split-K reductions)


@dataclass(frozen=True)
class TensorSig:
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class LayerSpec:
    """What a tactic sees of a layer: op, attributes, tensor signatures, and the values of constant inputs."""

    name: str
    op: str
    attrs: Mapping[str, Any]
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    constants: Mapping[int, np.ndarray] = field(default_factory=dict)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    @property
    def activation_inputs(self) -> tuple[int, ...]:
        """Positions of the inputs that arrive at run time (the others are constants)."""
        return tuple(i for i in range(len(self.inputs)) if i not in self.constants)


class Kernel(Protocol):
    """A tactic prepared for one layer: call it with the activation inputs, output buffers and workspace."""

    def __call__(self, inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None: ...


class Tactic(ABC):
    """Base class of all tactics. Subclasses set the class attributes and implement :meth:`prepare`."""

    family: str
    ops: tuple[str, ...]
    name: str
    version: int = 1
    backend: ClassVar[str]
    dtypes: tuple[str, ...] = ("float32",)
    determinism: Determinism = Determinism.RUN_TO_RUN
    #: Stable preference among equally fast tactics: lower wins. Never derived from import or dict order.
    priority: ClassVar[int] = 100
    #: Which library does the work, as TensorRT's tactic sources: ``numpy``, ``nvrtc``, ``cublas`` or ``cupy``.
    #: A build config may disable sources; the manifest records each tactic's source.
    source: ClassVar[str] = "numpy"
    #: The CUDA kernels this tactic launches: each ``.cu`` file (beside the family module) it compiles, with the
    #: kernel symbols of that file it launches. Its identity covers exactly the source those symbols reach.
    cuda_kernels: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({})
    #: For a tactic that generates its kernels' source: the CUDA text every generated kernel starts with (its
    #: helpers, and the package headers it includes). Its identity covers it and the header code it reaches; the
    #: generator itself is Python, covered with the rest of the tactic's code.
    generated_cuda: ClassVar[str] = ""
    #: The ops whose definitions the tactic's code looks up by a name computed at run time (an op registry lookup
    #: with a literal name is followed without this): their code is part of the tactic's identity.
    ops_by_name: tuple[str, ...] = ()
    #: Whether input 0 must arrive at run time (most hand-written kernels read it as an activation); a layer
    #: whose input 0 is a constant (a network output computed from constants) then needs another tactic.
    needs_activation: ClassVar[bool] = True
    #: Whether ``prepare`` returns a :class:`~reprobuild.kernels.launch.LaunchPlan` (launches as data, which an
    #: execution context replays and captures into a CUDA graph) rather than an opaque callable.
    capturable: ClassVar[bool] = False
    #: Reduced-precision arithmetic the tactic uses on float32 tensors (``tf32``), or None when it computes in the
    #: tensors' own dtype. A build allows it only at a matching ``--precision``; the manifest records it per layer.
    math: ClassVar[str | None] = None
    #: Whether the tactic's ``.cu`` files are written on ``dtype.cuh``'s ``elem_t`` and built for the layer's dtype
    #: (float32 or float16) rather than always for float32; see :meth:`kernel_dtype`.
    per_dtype_build: ClassVar[bool] = False
    #: The values a parameterized tactic is instantiated with (tile sizes, ...), recorded with it.
    parameters: ClassVar[Mapping[str, int | str]] = MappingProxyType({})
    #: The oldest GPU architecture the tactic's kernels run on (80: Ampere's mma.sync and bfloat16 conversions);
    #: 0 for any.
    min_compute_capability: ClassVar[int] = 0
    #: Whether the parameters are chosen per layer at build time rather than fixed by the class: a vendor library's
    #: algorithm (cuBLASLt's algo id, tile, stages, ...), recorded by value. :meth:`variants` lists a layer's
    #: candidates, each timed as a tactic of its own; an engine or a replay binds the recorded values with
    #: :meth:`with_parameters`, so exactly that algorithm runs again.
    per_layer_parameters: ClassVar[bool] = False

    @property
    def source_files(self) -> tuple[str, ...]:
        """The CUDA source files this tactic compiles (its Python code is covered by ``code_objects``)."""
        return tuple(sorted(self.cuda_kernels))

    def kernel_dtype(self, layer: LayerSpec) -> str:
        """The element type this tactic builds its ``.cu`` files for on ``layer``: the layer's (input 0's) dtype
        for a tactic whose files are written on ``dtype.cuh``'s ``elem_t`` (``per_dtype_build``), else float32."""
        return layer.inputs[0].dtype if self.per_dtype_build else "float32"

    def code_objects(self) -> list[Any]:
        """The roots of the Python code this tactic runs: its class (and, through it, whatever it names)."""
        return [type(self)]

    @functools.cached_property
    def code_sha256(self) -> str:
        """The digest of exactly what this tactic runs, as this installation records it: from
        ``tactics.lock.json`` for a built-in tactic (no source is read), computed from the code for a plugin's
        (``identity.py``)."""
        return installed_code_sha256(self)

    @property
    def ref(self) -> dict[str, Any]:
        """The tactic by value, as the manifest and the engine record it."""
        return {
            "family": self.family,
            "name": self.name,
            "version": self.version,
            "code_sha256": self.code_sha256,
            "parameters": dict(self.parameters),
        }

    @property
    def label(self) -> str:
        return f"{self.family}.{self.name} v{self.version}"

    def ineligibility(self, layer: LayerSpec) -> str | None:
        """None when this tactic can run the layer, else a sentence saying why not (recorded in the manifest)."""
        for kind, sigs in (("input", layer.inputs), ("output", layer.outputs)):
            for i, sig in enumerate(sigs):
                if sig.dtype not in self.dtypes:
                    return f"{kind} {i} has dtype {sig.dtype}; this tactic supports {', '.join(self.dtypes)}"
        if self.needs_activation and 0 in layer.constants:
            return "input 0 is a constant; this tactic reads it as a run-time activation"
        return self.unsupported(layer)

    def unsupported(self, layer: LayerSpec) -> str | None:
        """Op-specific reasons this tactic cannot run the layer; None when it can."""
        return None

    def device_ineligibility(self, compute_capability: str | None) -> str | None:
        """None when this tactic's kernels run on a GPU of ``compute_capability`` (``"90"``; None: not a GPU)."""
        if compute_capability is None or int(compute_capability) >= self.min_compute_capability:
            return None
        need = self.min_compute_capability
        return (f"needs a GPU of compute capability {need // 10}.{need % 10} or newer; this one is "
                f"{int(compute_capability) // 10}.{int(compute_capability) % 10}")

    def workspace_bytes(self, layer: LayerSpec) -> int:
        """Scratch memory one run needs, beyond the inputs and outputs."""
        return 0

    def variants(self, layer: LayerSpec, backend: Backend) -> list[Tactic]:
        """The candidates this tactic offers for ``layer`` on ``backend``, each with its parameters bound
        (:meth:`with_parameters`), in a stable order; just itself when its parameters are fixed. The builder asks
        only for an eligible layer, on the device it times on."""
        return [self]

    def parameter_problem(self, parameters: Mapping[str, Any]) -> str | None:
        """None when ``parameters`` (recorded in an engine or a manifest) are values this tactic runs with, else a
        sentence saying why not. A tactic whose parameters are fixed accepts exactly its own; one that chooses
        them per layer checks their names and types (:meth:`layer_parameter_problem`)."""
        if not self.per_layer_parameters:
            if dict(parameters) != dict(self.parameters):
                return f"recorded with parameters {dict(parameters)}; the tactic has {dict(self.parameters)}"
            return None
        return self.layer_parameter_problem(parameters)

    def layer_parameter_problem(self, parameters: Mapping[str, Any]) -> str | None:
        """For a tactic with :attr:`per_layer_parameters`: None when ``parameters`` name exactly the values it
        records, with their types, else why not (that they suit a given layer and device is checked by
        :meth:`prepare`)."""
        return "this tactic does not choose its parameters per layer"

    def with_parameters(self, parameters: Mapping[str, Any]) -> Tactic:
        """This tactic bound to recorded ``parameters``: a copy for one that chooses them per layer (same name,
        version and code identity), itself for one whose parameters are fixed; refused with a
        :class:`TacticMismatchError` saying why when they are not values it runs with."""
        problem = self.parameter_problem(parameters)
        if problem is not None:
            raise TacticMismatchError(f"tactic {self.label}: {problem}")
        return self.carrying(parameters) if self.per_layer_parameters else self

    def carrying(self, parameters: Mapping[str, Any]) -> Tactic:
        """A copy of this tactic holding ``parameters``, unchecked (same name, version and code identity): what
        :meth:`with_parameters` returns once they pass, and what names recorded values that do not (a replay's
        excluded candidate, never prepared)."""
        named = copy.copy(self)
        named.parameters = MappingProxyType(dict(sorted(parameters.items())))  # type: ignore[misc]
        return named

    @abstractmethod
    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        """Compile, upload and transform weights once; return the callable that runs the layer."""

    def __repr__(self) -> str:
        return f"<{self.family}.{self.name} v{self.version} ({self.backend})>"


class TacticRegistry:
    """All known tactics, indexed by (op, name, version); every listing is in a sorted, stable order."""

    def __init__(self, tactics: Iterable[Tactic]) -> None:
        index: dict[tuple[str, str, int], Tactic] = {}
        for tactic in tactics:
            for op in tactic.ops:
                key = (op, tactic.name, tactic.version)
                if key in index:
                    raise ValueError(f"tactic {key} is registered twice")
                index[key] = tactic
        self._index = dict(sorted(index.items()))

    def with_tactics(self, tactics: Iterable[Tactic]) -> TacticRegistry:
        """A new registry of this one's tactics and ``tactics`` (a plugin's); a key both have is refused."""
        extra = TacticRegistry(tactics)
        clash = sorted(set(self._index) & set(extra._index))
        if clash:
            raise ValueError(f"tactic {clash[0]} is registered twice")
        combined = TacticRegistry(())
        combined._index = dict(sorted({**self._index, **extra._index}.items()))
        return combined

    def load(self, uses: Iterable[tuple[str, str]]) -> None:
        """Make ready the tactics of each (op, family) an engine's layers record, before ``get``/``resolve``: a
        registry that holds every tactic already has nothing to do (``reprobuild.registry.lazy`` imports them)."""

    def ops(self) -> list[str]:
        return sorted({op for op, _, _ in self._index})

    def candidates(self, op: str, backend: str) -> list[Tactic]:
        found = [t for (o, _, _), t in self._index.items() if o == op and t.backend == backend]
        return sorted(found, key=lambda t: (t.priority, t.name, t.version))

    def all(self) -> list[Tactic]:
        seen: dict[tuple[str, str, int], Tactic] = {}
        for tactic in self._index.values():
            seen.setdefault((tactic.family, tactic.name, tactic.version), tactic)
        return [seen[k] for k in sorted(seen)]

    def get(self, op: str, name: str, version: int) -> Tactic:
        tactic = self._index.get((op, name, version))
        if tactic is None:
            known = [f"{n} v{v}" for (o, n, v) in self._index if o == op]
            if not known and "::" in op:  # a plugin op (domain::op) that this registry has no tactic of
                error = plugin_not_registered(op)
                raise PluginNotRegisteredError(f"{error} (tactic {name!r} version {version} is recorded for it)")
            raise TacticMismatchError(
                f"no tactic {name!r} version {version} for op {op}; this installation has: "
                f"{', '.join(known) or 'none'}. The engine or manifest was made by another reprobuild version; "
                "rebuild it with this one"
            )
        return tactic

    def resolve(self, op: str, ref: Mapping[str, Any]) -> Tactic:
        """The tactic a recorded reference names, refusing one whose code changed since it was recorded."""
        tactic = self.get(op, str(ref["name"]), int(ref["version"]))
        if "code_sha256" not in ref:
            raise TacticMismatchError(
                f"tactic {tactic.label} is recorded by its source_sha256, the digest of source text that reprobuild "
                "recorded before tactic identity covered exactly what runs; it cannot be compared with this "
                "installation's identities (code_sha256). Rebuild the engine or manifest with this installation")
        if tactic.code_sha256 != ref["code_sha256"]:
            raise TacticMismatchError(
                f"tactic {tactic.label} was recorded with code digest {str(ref['code_sha256'])[:16]}..., but this "
                f"installation's is {tactic.code_sha256[:16]}...: the code it runs changed without a version bump, "
                "or the engine comes from another reprobuild version. Rebuild the engine with this installation"
            )
        return tactic.with_parameters(ref.get("parameters") or {})


#: The precision name of a float dtype (how builders and manifests speak of it).
PRECISION_OF_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


def precision_of(tactic: Tactic, layer: LayerSpec) -> str:
    """The arithmetic a tactic runs a layer in: its reduced-precision math (``tf32``) if it has one and the layer
    is float32, else the layer's output dtype by its precision name (``fp32``, ``fp16``, ...; ints as dtypes)."""
    dtype = layer.outputs[0].dtype if layer.outputs else "float32"
    if tactic.math is not None and dtype == "float32":
        return tactic.math
    return PRECISION_OF_DTYPE.get(dtype, dtype)


def require_recorded(tactic: Tactic, layer: LayerSpec, what: str, unavailable: str | None, detail: str) -> None:
    """Before a per-layer tactic (a vendor library's algorithm) prepares ``layer``: refuse when it is not bound to
    recorded values (``what`` it runs: "cuBLASLt algorithm", ...) or when its library does not load here
    (``unavailable``, why not; ``detail``, the recorded values in a few words), naming the layer and the source."""
    if not tactic.parameters:
        raise BuildError(f"tactic {tactic.label} runs one recorded {what}; prepare one of its variants "
                         "(Tactic.variants) or bind recorded parameters (Tactic.with_parameters)")
    if unavailable is not None:  # an engine or manifest recorded this source; this machine cannot run it
        raise BackendUnavailableError(f"layer {layer.name!r} records tactic {tactic.label} (tactic source "
                                      f"{tactic.source}, {detail}), and {unavailable}")


def positional(layer: LayerSpec, constants: Mapping[int, Any], activations: Sequence[Any]) -> list[Any]:
    """Merge prepared constants and run-time activations back into the layer's input order."""
    it = iter(activations)
    return [constants[i] if i in constants else next(it) for i in range(len(layer.inputs))]


def workspace_view(workspace: Any, shape: tuple[int, ...], offset: int = 0, dtype: str = "float32") -> Any:
    """A typed array carved out of a tactic's uint8 workspace."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np_dtype(dtype).itemsize
    return workspace[offset:offset + nbytes].view(dtype).reshape(shape)


def aligned(nbytes: int, alignment: int = 256) -> int:
    return -(-nbytes // alignment) * alignment
