"""A tactic's identity, as data: (family, name, version, parameters) and ``code_sha256``, the digest of exactly
what it runs.

``code_sha256`` covers the tactic's Python code and every value and op it reaches (``code_digest``), and for each
CUDA kernel it launches (declared in ``cuda_kernels``: file -> kernel symbols) the normalized source closure of
that symbol (``csource``), with the NVRTC options and defines it is compiled with (``nvrtc.BASE_OPTIONS``,
``DTYPE_DEFINES``). A tactic that generates its kernels (``generated_cuda``) is identified by its generator's
code and by the package header code its generated text reaches. All of it is computable without a GPU.

The identities of the built-in tactics are committed in ``tactics.lock.json`` (``python -m reprobuild.registry.lock``
writes it, and refuses to change the identity of an existing (family, name, version)): a Runtime takes a tactic's
installed identity from there rather than reading source, and a build checks the identities it computes from the
code against it (:func:`check_installed`), failing closed with the fix.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from reprobuild.core.digest import digest_of
from reprobuild.core.errors import TacticMismatchError
from reprobuild.kernels.code_digest import python_sha256
from reprobuild.kernels.csource import closure as source_closure
from reprobuild.kernels.csource import translation_unit
from reprobuild.kernels.nvrtc import BASE_OPTIONS, DTYPE_DEFINES, HEADERS, read_source
from reprobuild.kernels.python_form import NORMALIZER_VERSION

LOCK_FILE = "tactics.lock.json"
LOCK_COMMAND = "python -m reprobuild.registry.lock"
GENERATED = "<generated>"

Reader = Callable[[str], str]


class Tactic(Protocol):
    """What identity reads of a tactic (``reprobuild.kernels.tactic.Tactic``, which imports this module to check
    itself against the lock): its name, parameters and the code and kernels it runs."""

    family: str
    name: str
    version: int
    dtypes: tuple[str, ...]
    ops_by_name: tuple[str, ...]

    @property
    def cuda_kernels(self) -> Mapping[str, tuple[str, ...]]: ...

    @property
    def generated_cuda(self) -> str: ...

    @property
    def per_dtype_build(self) -> bool: ...

    @property
    def parameters(self) -> Mapping[str, int | str]: ...

    @property
    def label(self) -> str: ...

    def code_objects(self) -> list[Any]: ...


def identity_parameters(tactic: Tactic) -> Mapping[str, int | str]:
    """The parameters a tactic's identity (and its lock entry) records: its own, or for one that chooses them per
    layer (``per_layer_parameters``: a vendor library's algorithm, bound by ``with_parameters``) its class's, so
    that every variant of it has the one identity of its code, whichever values a layer binds."""
    if getattr(tactic, "per_layer_parameters", False):
        own: Mapping[str, int | str] = getattr(type(tactic), "parameters", {})  # the class's, not a copy's
        return dict(own)
    return dict(tactic.parameters)


def _cache_key(tactic: Tactic) -> Any:
    """What a computed identity is cached under: the tactic object, or for a per-layer tactic its class and label
    (its variants are copies that differ only in their bound values, which its code digest does not cover)."""
    if getattr(tactic, "per_layer_parameters", False):
        return (type(tactic), tactic.label)
    return id(tactic)


def variant_label(label: str, parameters: Mapping[str, Any]) -> str:
    """A tactic's label with the values a variant is bound to (``gemm.cublaslt v1 [algo=6 tile=128x128]``), so
    that logs and reasons tell the variants of one tactic apart; just the label when it has none."""
    if not parameters:
        return label
    return f"{label} [{' '.join(f'{k}={v}' for k, v in sorted(parameters.items()))}]"


def shown_label(tactic: Tactic) -> str:
    """How logs and reports name a tactic: its label, with its bound values for one that chooses them per layer
    (a fixed-parameter tactic's label is unchanged: manifests, timing caches and golden files name it so)."""
    if getattr(tactic, "per_layer_parameters", False):
        return variant_label(tactic.label, tactic.parameters)
    return tactic.label


class LockMismatchError(TacticMismatchError):
    """A built-in tactic's code differs from its identity in ``tactics.lock.json``, or the lock lacks it."""


def package_text(name: str) -> str:
    """A file of the ``reprobuild.kernels`` package as text (a ``.cu`` source or a header)."""
    return read_source(name).decode("utf-8")


@functools.cache
def _unit(name: str, text: str) -> tuple[Any, ...]:
    return tuple(translation_unit(name, text, package_text, HEADERS))


def kernel_source_sha256(filename: str, symbol: str, read: Reader | None = None) -> str:
    """The digest of the normalized source closure of kernel ``symbol`` of ``filename`` (``csource``)."""
    if read is None:
        items = _unit(filename, package_text(filename))
    else:
        items = tuple(translation_unit(filename, read(filename), read, HEADERS))
    return digest_of(source_closure(items, [symbol], filename))


def _generated_sha256(prelude: str, read: Reader) -> str:
    """The digest of a generator's prelude and of the package header code it reaches."""
    own = translation_unit(GENERATED, prelude, lambda name: "", HEADERS)  # the prelude's own items
    roots = set().union(*(item.defines for item in own))
    return digest_of(source_closure(translation_unit(GENERATED, prelude, read, HEADERS), roots, GENERATED))


def kernel_dtypes(tactic: Tactic) -> list[str]:
    """The element types the tactic's ``.cu`` files are built for."""
    return [d for d in DTYPE_DEFINES if d in tactic.dtypes] if tactic.per_dtype_build else ["float32"]


@dataclass(frozen=True)
class Identity:
    """A tactic's identity, with the parts ``code_sha256`` is made of (recorded in the lock for review)."""

    family: str
    name: str
    version: int
    parameters: Mapping[str, int | str]
    code_sha256: str
    python_sha256: str
    kernels: Mapping[str, str]

    @property
    def label(self) -> str:
        return f"{self.family}.{self.name} v{self.version}"

    def entry(self) -> dict[str, Any]:
        return {"family": self.family, "name": self.name, "version": self.version,
                "parameters": dict(self.parameters), "code_sha256": self.code_sha256,
                "python_sha256": self.python_sha256, "kernels": dict(sorted(self.kernels.items()))}


def compute_identity(tactic: Tactic, read: Reader | None = None) -> Identity:
    """The identity computed from the code (``read``: how CUDA sources are read; default the installed ones)."""
    python = python_sha256(tactic.code_objects(), tactic.ops_by_name)
    kernels = {f"{f}:{s}": kernel_source_sha256(f, s, read) for f, symbols in sorted(tactic.cuda_kernels.items())
               for s in sorted(symbols)}
    if tactic.generated_cuda:
        kernels[GENERATED] = _generated_sha256(tactic.generated_cuda, read or package_text)
    cuda: dict[str, Any] = {}
    if kernels:
        cuda = {"kernels": kernels, "options": list(BASE_OPTIONS),
                "defines": {d: list(DTYPE_DEFINES[d]) for d in kernel_dtypes(tactic)} if tactic.cuda_kernels else {}}
    code = digest_of({"normalizer": NORMALIZER_VERSION, "python": python, "cuda": cuda})
    return Identity(tactic.family, tactic.name, tactic.version, identity_parameters(tactic), code, python, kernels)


_COMPUTED: dict[Any, tuple[Tactic, Identity]] = {}
_LOCK = threading.Lock()


def computed_identity(tactic: Tactic) -> Identity:
    """:func:`compute_identity` of the installed code, once per tactic and process."""
    key = _cache_key(tactic)
    with _LOCK:
        hit = _COMPUTED.get(key)
    if hit is not None and (hit[0] is tactic or not isinstance(key, int)):
        return hit[1]
    identity = compute_identity(tactic)
    with _LOCK:
        _COMPUTED[key] = (tactic, identity)
    return identity


def parse_lock(text: str) -> dict[str, dict[str, Any]]:
    """The lock's entries by label (``family.name vVERSION``)."""
    document = json.loads(text)
    return dict(document["tactics"])


@functools.cache
def locked() -> Mapping[str, Mapping[str, Any]]:
    """The committed identities of the built-in tactics, by label (read once per process)."""
    try:
        text = resources.files("reprobuild.kernels").joinpath(LOCK_FILE).read_text(encoding="utf-8")
        return parse_lock(text)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LockMismatchError(f"this installation's {LOCK_FILE} cannot be read ({type(exc).__name__}: {exc}); "
                                "it is part of the package: reinstall reprobuild, or in a checkout run "
                                f"`{LOCK_COMMAND}`") from None


def _is_builtin(tactic: Tactic) -> bool:
    return type(tactic).__module__.startswith("reprobuild.")


def installed_code_sha256(tactic: Tactic) -> str:
    """The identity digest this installation has for ``tactic``: the lock's for a built-in tactic it lists (no
    source is read), else computed from the code (a plugin's tactic; one the lock does not list yet)."""
    entry = locked().get(tactic.label) if _is_builtin(tactic) else None
    if entry is not None and entry["parameters"] == identity_parameters(tactic):
        return str(entry["code_sha256"])
    return computed_identity(tactic).code_sha256


def lock_problem(identity: Identity, entry: Mapping[str, Any] | None) -> str | None:
    """Why the lock entry does not equal the identity computed from the code; None when it does."""
    if entry is None:
        return f"{identity.label} is not in {LOCK_FILE}"
    changed = [k for k in ("parameters", "code_sha256") if entry.get(k) != identity.entry()[k]]
    if not changed:
        return None
    parts = [f"kernel {k}" for k in sorted(set(entry.get("kernels", {})) | set(identity.kernels))
             if entry.get("kernels", {}).get(k) != identity.kernels.get(k)]
    if entry.get("python_sha256") != identity.python_sha256:
        parts.insert(0, "its Python code or a value or op it reaches")
    return (f"{identity.label}: {', '.join(changed)} differ(s) from {LOCK_FILE} "
            f"({'; '.join(parts) or 'the normalizer'} changed)")


def check_installed(tactics: Iterable[Tactic]) -> None:
    """Fail closed when a built-in tactic's code no longer matches its identity in the lock: a build would record
    an identity the installed code does not have. Computed once per tactic and process."""
    problems = []
    for tactic in sorted({_cache_key(t): t for t in tactics if _is_builtin(t)}.values(), key=lambda t: t.label):
        problem = lock_problem(computed_identity(tactic), locked().get(tactic.label))
        if problem is not None:
            problems.append(problem)
    if problems:
        raise LockMismatchError(
            "the installed tactics' code does not match their recorded identities:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + f"\nA tactic's behaviour never changes under the same (family, name, version): if the change alters "
              f"what the tactic computes, bump its `version` (a new identity), then run `{LOCK_COMMAND}` to record "
              f"it; a new tactic only needs `{LOCK_COMMAND}`. (The lock command refuses to change the identity of "
              "an existing version.)")
