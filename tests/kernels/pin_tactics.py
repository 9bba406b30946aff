"""Output pins: what every tactic computes on fixed inputs, recorded per tactic (family.name vVERSION).

A tactic's behaviour must never change under the same name and version. ``test_tactic_pins.py`` runs every
tactic on fixed cases and compares its outputs with the pins in ``tactic_pins.json``: a kernel whose results
change without a version bump fails there. Cases: the hand-written tactics run ``tests/kernels/cases.py`` (inputs
from a fixed seed); each op's reference tactics run the op's single-node cases of ONNX's node suite.

Regenerate (review the diff; only new tactic versions should appear):

    python -m tests.kernels.pin_tactics            # the cpu pins
    python -m tests.kernels.pin_tactics --backend cuda   # on a GPU host: the pins of this device
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from reprobuild.core.digest import array_digest
from reprobuild.kernels.backend import Backend, get_backend
from reprobuild.kernels.identity import shown_label
from reprobuild.kernels.tactic import LayerSpec, Tactic
from reprobuild.registry import default_registry

PINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tactic_pins.json")
SEED = 20261125
#: Reference tactics are pinned on at most this many single-node cases per op.
CASES_PER_OP = 2


#: The CUDA fingerprint's fields that decide a tactic's bits (the driver and the library versions are compared by
#: the builds themselves).
CUDA_KEEP = ("backend", "gpu.name", "gpu.compute_capability", "cuda.runtime", "cupy")


def environment(backend: Backend) -> dict[str, str]:
    """What decides the exact bits on this machine: on another one, the pins are compared approximately. On the
    CPU that is the backend's whole fingerprint: the CPU, NumPy's SIMD targets, the BLAS and the kernel it picked
    (``blas.core``), thread counts and the variables that change them."""
    fp = backend.fingerprint()
    keep = fp if backend.name == "cpu" else {k: fp[k] for k in CUDA_KEEP if k in fp}
    return {"numpy": np.__version__, "machine": platform.machine(), **keep}


def section(backend: Backend) -> str:
    return backend.name if backend.name == "cpu" else f"cuda:sm_{getattr(backend, 'compute_capability', '?')}"


def summary(outputs: list[np.ndarray]) -> dict[str, Any]:
    """An output digest, and float64 sums that survive last-bit differences (another CPU's exp, another BLAS)."""
    values = [np.asarray(o).astype(np.float64) for o in outputs]
    finite = [v[np.isfinite(v)] for v in values]
    return {"sha256": [array_digest(np.asarray(o)) for o in outputs],
            "shapes": [list(np.shape(o)) for o in outputs],
            "sum": [float(f.sum()) for f in finite], "abs_sum": [float(np.abs(f).sum()) for f in finite],
            "nonfinite": [int(v.size - f.size) for v, f in zip(values, finite)]}


def run_tactic(tactic: Tactic, spec: LayerSpec, activations: list[np.ndarray], backend: Backend) -> list[np.ndarray]:
    """One run of a prepared tactic. Float outputs start as NaN and the workspace as 0xFF bytes, so an element a
    kernel forgets to write, or a workspace byte it reads before writing, shows in the outputs."""
    from reprobuild.core.dtypes import FLOATS, np_dtype

    with backend.activate():
        inputs = [backend.asarray(x) for x in activations]
        outputs: list[Any] = [backend.xp.full(o.shape, np.nan if o.dtype in FLOATS else 0, dtype=np_dtype(o.dtype))
                              for o in spec.outputs]
        if getattr(tactic, "aliases_input", False):
            outputs = [inputs[0].reshape(spec.outputs[0].shape)]  # what the memory planner arranges
        workspace = backend.empty_bytes(max(tactic.workspace_bytes(spec), 1))
        workspace.fill(0xFF)
        tactic.prepare(spec, backend)(inputs, outputs, workspace)
        return [backend.to_host(o) for o in outputs]


def tactic_variants(tactic: Tactic, spec: LayerSpec, backend: Backend) -> list[Tactic]:
    """What to run of a tactic on a layer it can run: the tactic, or for one that chooses its parameters per layer
    (a vendor library's algorithms) every variant it offers for the layer, bound to its values, as a build times
    them (an unbound one has no values to run with)."""
    if not tactic.per_layer_parameters:
        return [tactic]
    with backend.activate():
        return list(tactic.variants(spec, backend))


def hand_written_cases() -> Iterator[tuple[str, LayerSpec, list[np.ndarray]]]:
    from reprobuild.builder.selection import layer_spec
    from tests.kernels.cases import CASES

    for case in CASES:
        model, feeds = case.make(np.random.default_rng([SEED, len(case.id)]))
        network = case.network(model)
        layer = network.layers[0]
        yield case.id, layer_spec(network, 0), [feeds[t] for t in layer.inputs if t not in network.constants]


def op_cases() -> Iterator[tuple[str, LayerSpec, list[np.ndarray]]]:
    """The single-node cases of ONNX's node suite, per op (at most CASES_PER_OP), that reprobuild parses."""
    from reprobuild.builder.selection import layer_spec
    from reprobuild.conformance.cases import node_cases
    from reprobuild.conformance.runner import parse_case
    from reprobuild.core.errors import ReprobuildError

    taken: dict[str, int] = {}
    for case in node_cases():
        model = case.proto
        if len(model.graph.node) != 1:
            continue
        op = model.graph.node[0].op_type
        if taken.get(op, 0) >= CASES_PER_OP:
            continue
        try:
            network, _ = parse_case(case)
        except ReprobuildError:
            continue
        if len(network.layers) != 1 or network.layers[0].op != op:
            continue
        layer = network.layers[0]
        values = {**case.inputs, **network.constants}
        taken[op] = taken.get(op, 0) + 1
        yield case.name, layer_spec(network, 0), [values[t] for t in layer.inputs if t not in network.constants]


def compute_pins(backend: Backend) -> dict[str, dict[str, Any]]:
    registry = default_registry()
    pins: dict[str, dict[str, Any]] = {}
    for source in (hand_written_cases(), op_cases()):
        for case_id, spec, activations in source:
            for tactic in registry.candidates(spec.op, backend.name):
                if tactic.ineligibility(spec) is not None:
                    continue
                for variant in tactic_variants(tactic, spec, backend):  # (a variant's key names its values)
                    outputs = run_tactic(variant, spec, activations, backend)
                    pins.setdefault(f"{shown_label(variant)} [{spec.op}]", {})[case_id] = summary(outputs)
    return dict(sorted(pins.items()))


def load() -> dict[str, Any]:
    if not os.path.exists(PINS):
        return {}
    with open(PINS, encoding="utf-8") as f:
        return dict(json.load(f))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--output", default=PINS, help="where to write (default: tests/kernels/tactic_pins.json)")
    args = parser.parse_args(argv)
    backend = get_backend(args.backend)
    document = load()
    document[section(backend)] = {"environment": environment(backend), "pins": compute_pins(backend)}
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{args.output}: {len(document[section(backend)]['pins'])} tactic pins for {section(backend)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
