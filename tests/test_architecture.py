"""ARCHITECTURE.md's recipes run as written: a tactic added to the registry is timed or forced, recorded and run; a
pass written as a pattern and a replacement rewrites a network without changing what it computes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig, ForcingSelector
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.kernels.identity import compute_identity
from reprobuild.kernels.tactic import TacticRegistry
from reprobuild.passes import run_passes
from reprobuild.registry import builtin_registry
from tests.helpers import EXAMPLES, REPO, make_model, ort_run

ARCHITECTURE = Path(REPO, "ARCHITECTURE.md").read_text()


def recipe(heading: str) -> str:
    """The python block of one '### heading' recipe."""
    section = ARCHITECTURE.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    (block,) = [b.split("\n", 1)[1] for b in section.split("```")[1::2] if b.startswith("python")]
    return block


def load(tmp_path: Path, name: str, source: str) -> ModuleType:
    """The recipe as a module file of its own (a tactic's identity is read from its source file)."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_tactic_recipe_is_forced_recorded_and_run(tmp_path: Path) -> None:
    module = load(tmp_path, "recipe_tactic", recipe("Add a tactic"))
    try:
        tactic = module.CpuSoftmaxFloat64()
        assert compute_identity(tactic).code_sha256 == tactic.code_sha256  # its identity comes from its code
        registry = TacticRegistry([*builtin_registry().all(), tactic])
        model = onnx.load(str(Path(EXAMPLES, "mlp.onnx")))
        network, _ = network_from_onnx_bytes(model.SerializeToString())
        config = BuilderConfig(backend="cpu", algorithm_selector=ForcingSelector({"Softmax": "cpu_float64"}))
        result = Builder(registry=registry).build(network, config)
        (softmax,) = [layer for layer in result.manifest.pinned.layers if layer.op == "Softmax"]
        assert (softmax.tactic.family, softmax.tactic.name) == ("softmax", "cpu_float64")
        engine = Runtime(registry=registry).deserialize_engine(result.engine)
        (binding,) = [b for b in engine.inputs if b.value is None]
        x = np.random.default_rng(7).standard_normal(binding.shape).astype(np.float32)
        out = engine.create_execution_context().execute({binding.name: x})
        (name,) = out
        (ref,) = ort_run(model, {binding.name: x})
        np.testing.assert_allclose(out[name], ref, rtol=1e-5, atol=1e-6)
    finally:
        sys.modules.pop("recipe_tactic", None)


def test_the_pass_recipe_rewrites_without_changing_the_outputs(tmp_path: Path) -> None:
    module = load(tmp_path, "recipe_pass", recipe("Add a pass"))
    try:
        model = make_model([helper.make_node("Mul", ["x", "one"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                           {"x": (3, 5)}, ["z"], {"one": np.ones((1, 5), np.float32)})
        network, _ = network_from_onnx_bytes(model.SerializeToString())
        rewritten = run_passes(module.drop_multiply_by_one(network), ["eliminate_identities"])
        assert [layer.op for layer in network.layers] == ["Mul", "Relu"]
        assert [layer.op for layer in rewritten.layers] == ["Relu"]
        x = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)
        outs = []
        for net in (network, rewritten):
            result = Builder().build(net, BuilderConfig(backend="cpu", passes=()))
            outs.append(Runtime().deserialize_engine(result.engine).create_execution_context().execute({"x": x})["z"])
        np.testing.assert_array_equal(outs[0], outs[1])
        np.testing.assert_array_equal(outs[1], np.maximum(x, 0))
    finally:
        sys.modules.pop("recipe_pass", None)
