"""Fuzz tests: hostile engines, manifests and ONNX models give typed errors (ReprobuildError), never another
exception, and memory stays bounded.

CI runs a fixed, derandomized campaign (the counts in ``CASES``, over 10,000 cases in all, about a minute). For
a longer campaign with fresh randomness (see RELIABILITY.md)::

    REPROBUILD_FUZZ_SCALE=20 REPROBUILD_FUZZ_RANDOM=1 python -m pytest tests/fuzz -q -p no:cacheprovider

Every case that loads must also run: an engine the loader accepts executes on random inputs, a manifest the
loader accepts is replayed. Either may raise a ReprobuildError; nothing may raise anything else.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.builder.replay import ReplaySelector
from reprobuild.engine.runtime import Runtime
from reprobuild.errors import ReprobuildError
from reprobuild.frontend import network_from_onnx_bytes, network_from_onnx_path
from reprobuild.logger import Logger, Severity
from reprobuild.manifest import manifest_from_json, manifest_to_json
from tests.fuzz.mutate import mutated_bytes, mutated_document, resign_engine, split_engine
from tests.helpers import EXAMPLES

SCALE = float(os.environ.get("REPROBUILD_FUZZ_SCALE", "1"))
#: Cases per target in CI (times REPROBUILD_FUZZ_SCALE): 10,500 in all.
CASES = {"engine_bytes": 4000, "engine_header": 3000, "manifest": 2500, "onnx": 1000}
QUIET = Logger(Severity.INTERNAL_ERROR)
#: Peak resident memory may grow by at most this much over a whole campaign.
MEMORY_BOUND_BYTES = 2 * 1024**3

#: Cases run and typed errors seen per target, printed by the summary test (read by RELIABILITY.md's author).
TALLY: dict[str, dict[str, int]] = {}


def _settings(target: str) -> Callable[[Any], Any]:
    return settings(max_examples=max(1, int(CASES[target] * SCALE)), deadline=None, database=None,
                    derandomize=os.environ.get("REPROBUILD_FUZZ_RANDOM") != "1",
                    suppress_health_check=list(HealthCheck))


def _count(target: str, outcome: str) -> None:
    tally = TALLY.setdefault(target, {})
    tally[outcome] = tally.get(outcome, 0) + 1


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


@pytest.fixture(scope="module")
def mlp() -> Iterator[tuple[bytes, bytes, bytes]]:
    """The bundled MLP example: its ONNX bytes, a CPU engine and that engine's manifest JSON."""
    path = os.path.join(EXAMPLES, "mlp.onnx")
    network, _ = network_from_onnx_path(path, QUIET)
    result = Builder(QUIET).build(network, BuilderConfig(backend="cpu", warmup=0, iterations=1, runs_per_sample=1))
    with open(path, "rb") as f:
        model = f.read()
    start = _peak_rss()
    yield model, result.engine, manifest_to_json(result.manifest)
    grown = _peak_rss() - start
    assert grown < MEMORY_BOUND_BYTES, f"peak memory grew by {grown} bytes during the fuzz campaign"


def _load_and_run(data: bytes, target: str) -> None:
    """Deserialize and, if that succeeds, run the engine on random inputs of its bindings' shapes."""
    try:
        engine = Runtime(QUIET).deserialize_engine(data)
        context = engine.create_execution_context()
        rng = np.random.default_rng(0)
        inputs = {b.name: rng.standard_normal(b.shape).astype(b.dtype) for b in engine.inputs if b.value is None}
        context.execute(inputs)
    except ReprobuildError:
        _count(target, "typed error")
        return
    _count(target, "accepted")


def test_engine_bytes(mlp: tuple[bytes, bytes, bytes]) -> None:
    """Bit flips, truncations and splices anywhere in the file: the trailer or the structure refuses them."""
    engine = mlp[1]

    @_settings("engine_bytes")
    @given(data=mutated_bytes(engine))
    def case(data: bytes) -> None:
        _load_and_run(data, "engine_bytes")

    case()


def test_engine_header(mlp: tuple[bytes, bytes, bytes]) -> None:
    """Crafted msgpack headers re-signed with a valid trailer (and mostly a valid embedded-manifest digest), so
    every mutation reaches the loader's validation, and whatever loads is executed."""
    engine = mlp[1]
    header, buffer = split_engine(engine)

    @_settings("engine_header")
    @given(doc=mutated_document(header), fix=st.booleans(), pack=st.booleans())
    def case(doc: Any, fix: bool, pack: bool) -> None:
        try:
            data = resign_engine(engine, doc, buffer, fix_manifest_digest=fix)
        except (TypeError, ValueError, OverflowError, msgpack.PackException):
            _count("engine_header", "not packable")  # hypothesis made a value msgpack cannot write (2**64)
            return
        _load_and_run(data, "engine_header")

    case()


def test_manifests(mlp: tuple[bytes, bytes, bytes]) -> None:
    """Crafted manifests (structural mutations, and bytes damage) load with a typed error or replay: a
    manifest that loads is replayed against the model, which must honour it or refuse it with a typed error."""
    model, _, manifest = mlp
    document = json.loads(manifest)

    @_settings("manifest")
    @given(doc=mutated_document(document), raw=mutated_bytes(manifest), use_raw=st.integers(0, 4))
    def case(doc: Any, raw: bytes, use_raw: int) -> None:
        if use_raw == 0:
            data = raw
        else:
            try:
                data = json.dumps(doc, sort_keys=True).encode()
            except (TypeError, ValueError):  # bytes values: not JSON
                data = json.dumps(doc, sort_keys=True, default=lambda b: b.hex()).encode()
        try:
            loaded = manifest_from_json(data, "fuzzed manifest")
            network, _ = network_from_onnx_bytes(model, QUIET)
            config = BuilderConfig.from_record(loaded.pinned.config)
            config.algorithm_selector = ReplaySelector(loaded, "ignore", QUIET)
            Builder(QUIET).build(network, config)
        except ReprobuildError:
            _count("manifest", "typed error")
            return
        _count("manifest", "accepted")

    case()


def test_onnx_models(mlp: tuple[bytes, bytes, bytes]) -> None:
    """Damaged ONNX bytes and crafted ModelProto fields (dims, attributes, opsets, types): the parser refuses
    them with a typed error or parses a network."""
    model = mlp[0]
    proto = onnx.load_model_from_string(model)

    @_settings("onnx")
    @given(raw=mutated_bytes(model), field=st.integers(0, 5), value=st.integers(-(2**63), 2**63 - 1),
           pick=st.integers(0, 2**16))
    def case(raw: bytes, field: int, value: int, pick: int) -> None:
        data = raw
        if field:
            crafted = onnx.ModelProto()
            crafted.CopyFrom(proto)
            graph = crafted.graph
            if field == 1 and graph.input:
                dims = graph.input[pick % len(graph.input)].type.tensor_type.shape.dim
                if dims:
                    dims[pick % len(dims)].dim_value = value
            elif field == 2 and graph.initializer:
                tensor = graph.initializer[pick % len(graph.initializer)]
                if tensor.dims:
                    tensor.dims[pick % len(tensor.dims)] = value
            elif field == 3:
                crafted.opset_import[0].version = value
            elif field == 4 and graph.node:
                node = graph.node[pick % len(graph.node)]
                node.attribute.append(onnx.helper.make_attribute(f"attr{pick % 3}", value))
            elif field == 5 and graph.initializer:
                graph.initializer[pick % len(graph.initializer)].data_type = value % 32
            data = crafted.SerializeToString()
        try:
            network_from_onnx_bytes(data, QUIET)
        except ReprobuildError:
            _count("onnx", "typed error")
            return
        _count("onnx", "accepted")

    case()


def test_tally(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints what the campaign ran (pytest -s shows it); every target ran all its cases."""
    with capsys.disabled():
        total = sum(sum(t.values()) for t in TALLY.values())
        print(f"\nfuzz: {total} cases, 0 untyped exceptions; " + "; ".join(
            f"{name}: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(t.items()))
            for name, t in sorted(TALLY.items())))
    for target, n in CASES.items():
        if target in TALLY:
            assert sum(TALLY[target].values()) >= int(n * SCALE), target
