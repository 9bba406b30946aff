"""Plugins: a user's op of a custom domain and its tactics go through the same registry as built-in ones, timed,
pinned by value and replayed; an engine needs its plugin registered, and a plugin may not take over built-ins."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import examples.plugins.scaled_tanh as scaled_tanh
from examples.plugins.make_model import scaled_tanh_model
from reprobuild.builder import Builder, BuilderConfig, ForcingSelector, Refitter, ReplaySelector
from reprobuild.core.errors import PluginError, PluginNotRegisteredError, ReplayMismatchError, TacticMismatchError
from reprobuild.engine.runtime import Runtime
from reprobuild.frontend import UnsupportedNodesError, network_from_onnx_bytes
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.code_digest import code_closure
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic
from reprobuild.ops import Attrs, OpDef, TensorType
from reprobuild.registry import builtin_registry, default_registry
from reprobuild.registry.plugins import Plugin, plugin_registry, register_plugin, registered

OP = "com.example::ScaledTanh"
ALPHA, BETA = 1.7159, 2 / 3
#: What the model holds: ONNX float attributes are float32.
ALPHA32, BETA32 = float(np.float32(ALPHA)), float(np.float32(BETA))
MODEL = scaled_tanh_model(alpha=ALPHA, beta=BETA).SerializeToString()
CONFIG = {"backend": "cpu", "iterations": 3}


@pytest.fixture
def plugin() -> Iterator[Plugin]:
    assert plugin_registry().plugins == (), "a test left a plugin registered"
    with registered(scaled_tanh.PLUGIN) as (done,):
        yield done
    assert plugin_registry().plugins == ()


def _build_model(model: bytes, selector: Any = None) -> Any:
    config = BuilderConfig(**CONFIG)  # type: ignore[arg-type]
    config.algorithm_selector = selector
    return Builder().build(network_from_onnx_bytes(model)[0], config)


def _build(selector: Any = None) -> Any:
    return _build_model(MODEL, selector)


def test_importing_a_plugin_registers_nothing() -> None:
    assert plugin_registry().plugins == ()
    assert default_registry() is builtin_registry()
    with pytest.raises(UnsupportedNodesError, match=r"op ScaledTanh of domain 'com.example' .* no registered plugin "
                                                    r"defines this op .*register_plugin"):
        network_from_onnx_bytes(MODEL)


def test_a_build_times_both_plugin_tactics_and_records_them_by_value(plugin: Plugin) -> None:
    result = _build()
    (layer,) = [r for r in result.manifest.pinned.layers if r.op == OP]
    assert layer.onnx_nodes == ["act"] and layer.attrs == {"alpha": repr(ALPHA32), "beta": repr(BETA32)}
    tactics = {t.name: t for t in plugin.tactics}
    chosen = tactics[layer.tactic.name]
    assert layer.tactic.model_dump() == chosen.ref
    assert layer.tactic.family == "com.example.scaled_tanh" and len(layer.tactic.code_sha256) == 64
    assert result.manifest.evidence is not None
    (evidence,) = [e for e in result.manifest.evidence.layers if e.key == layer.key]
    assert sorted(c.tactic.name for c in evidence.candidates) == ["cpu_exp", "cpu_tanh"]
    assert all(len(c.samples_ns) == CONFIG["iterations"] and c.median_ns for c in evidence.candidates)
    assert sorted(c.status for c in evidence.candidates) == ["chosen", "lost"]
    assert {c.tactic.code_sha256 for c in evidence.candidates} == {t.code_sha256 for t in plugin.tactics}


def test_a_replay_pins_plugin_tactics_and_gives_the_same_bytes(plugin: Plugin) -> None:
    for forced in ("cpu_exp", "cpu_tanh"):  # each tactic in turn, so that the replay never just re-wins a race
        timed = _build(ForcingSelector({"act": forced}))
        config = BuilderConfig.from_record(timed.manifest.pinned.config)
        config.algorithm_selector = ReplaySelector(timed.manifest)
        replayed = Builder().build(network_from_onnx_bytes(MODEL)[0], config)
        assert replayed.engine == timed.engine and replayed.tactics_timed == 0
        assert {r.name: r.tactic.name for r in replayed.manifest.pinned.layers}["act"] == forced


def test_runtime_outputs_match_a_float64_reference(plugin: Plugin, rng: np.random.Generator) -> None:
    import onnx
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t).astype(np.float64)
               for t in onnx.load_from_string(MODEL).graph.initializer}
    x = rng.standard_normal((4, 16)).astype(np.float32) * 3  # into tanh's flat tails too
    reference = ALPHA32 * np.tanh(BETA32 * (x.astype(np.float64) @ weights["w"] + weights["b"]))
    for forced in ("cpu_exp", "cpu_tanh"):
        engine = Runtime().deserialize_engine(_build(ForcingSelector({"act": forced})).engine)
        (y,) = engine.create_execution_context().execute({"x": x}).values()
        assert y.dtype == np.float32 and y.shape == reference.shape
        np.testing.assert_allclose(y, reference, rtol=2e-5, atol=2e-6, err_msg=forced)


def test_an_engine_loaded_without_its_plugin_names_the_op_and_says_to_register_it(plugin: Plugin) -> None:
    engine = _build().engine
    plugin_registry().deregister(plugin.name)
    try:
        with pytest.raises(PluginNotRegisteredError, match=rf"op {OP} belongs to the custom domain 'com.example', "
                                                           r"which is a plugin's, and no registered plugin defines "
                                                           r"it .*register_plugin"):
            Runtime().deserialize_engine(engine)
    finally:
        plugin_registry().register(plugin)
    runtime = Runtime()  # made while the plugin is registered: it keeps its tactics
    assert runtime.deserialize_engine(engine).num_layers == 2


def test_an_engine_with_a_plugin_op_can_be_refitted(plugin: Plugin, rng: np.random.Generator) -> None:
    built = _build()
    new_model = scaled_tanh_model(alpha=ALPHA, beta=BETA, seed=1).SerializeToString()
    refitted = Refitter(built.engine, manifest=built.manifest).refit_from_model(new_model)
    assert [r.tactic for r in refitted.manifest.pinned.layers] == [r.tactic for r in built.manifest.pinned.layers]
    assert refitted.manifest.evidence is not None and refitted.manifest.evidence.tactics_timed == 0
    x = rng.standard_normal((4, 16)).astype(np.float32)
    forced = _build_model(new_model, ForcingSelector({r.name: r.tactic.name for r in built.manifest.pinned.layers}))
    assert refitted.engine == forced.engine
    ours = Runtime().deserialize_engine(refitted.engine).create_execution_context().execute({"x": x})["y"]
    before = Runtime().deserialize_engine(built.engine).create_execution_context().execute({"x": x})["y"]
    assert not np.array_equal(ours, before)


def _load_edited(tmp_path: Path, old: str, new: str) -> Any:
    """The example plugin's module with one edit, loaded under its own name (as after editing the file)."""
    source = Path(scaled_tanh.__file__).read_text()
    assert source.count(old) == 1
    path = tmp_path / "scaled_tanh.py"
    path.write_text(source.replace(old, new))
    spec = importlib.util.spec_from_file_location(scaled_tanh.__name__, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules[scaled_tanh.__name__]
    sys.modules[scaled_tanh.__name__] = module
    try:
        spec.loader.exec_module(module)
        for tactic in module.PLUGIN.tactics:
            tactic.code_sha256  # noqa: B018 - digested while the edited module is the one of that name
    finally:
        sys.modules[scaled_tanh.__name__] = saved
    return module


def test_a_plugin_whose_code_changed_is_refused(plugin: Plugin, tmp_path: Path) -> None:
    built = _build(ForcingSelector({"act": "cpu_tanh"}))
    edited = _load_edited(tmp_path, "            outputs[0] *= alpha\n",
                          "            np.multiply(outputs[0], alpha, out=outputs[0])\n")
    before = {t.name: t.code_sha256 for t in plugin.tactics}
    after = {t.name: t.code_sha256 for t in edited.PLUGIN.tactics}
    assert after["cpu_tanh"] != before["cpu_tanh"] and after["cpu_exp"] == before["cpu_exp"]
    assert f"{scaled_tanh.__name__}.CpuTanh" in code_closure([type(plugin.tactics[1])])
    plugin_registry().deregister(plugin.name)
    try:
        plugin_registry().register(edited.PLUGIN)
        with pytest.raises(TacticMismatchError, match=r"tactic com.example.scaled_tanh.cpu_tanh v1 was recorded "
                                                      r"with code digest .* the code it runs changed without a "
                                                      r"version"):
            Runtime().deserialize_engine(built.engine)
        config = BuilderConfig.from_record(built.manifest.pinned.config)
        config.algorithm_selector = ReplaySelector(built.manifest)
        with pytest.raises(ReplayMismatchError, match=r"recorded tactic com.example.scaled_tanh.cpu_tanh v1 has "
                                                      r"code digest .* the code it runs changed"):
            Builder().build(network_from_onnx_bytes(MODEL)[0], config)
    finally:
        plugin_registry().deregister(edited.PLUGIN.name)
        plugin_registry().register(plugin)


class _Tanh(Tactic):
    family, backend, ops, name = "com.example.scaled_tanh", "cpu", (OP,), "cpu_again"

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            np.tanh(inputs[0], out=outputs[0])

        return run


class Negate(OpDef):
    op, domain, versions, dtypes = "Negate", "org.test", (1,), ("float32",)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        return [inputs[0]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [-inputs[0]]


class CpuNegate(Tactic):
    family, backend, ops, name = "org.test.negate", "cpu", ("org.test::Negate",), "cpu_negative"

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            np.negative(inputs[0], out=outputs[0])

        return run


def test_a_plugin_may_not_take_over_builtin_tactics_or_another_plugins(plugin: Plugin) -> None:
    builtin = builtin_registry().all()[0]

    class Impostor(_Tanh):
        family, name, version = builtin.family, builtin.name, builtin.version

    with pytest.raises(PluginError, match=rf"tactic {builtin.family}.{builtin.name} v{builtin.version} uses family "
                                          rf"'{builtin.family}', which is one of reprobuild's built-in tactic "
                                          r"families; a plugin may not re-register or extend built-in tactics"):
        register_plugin(Negate(), [Impostor()])
    with pytest.raises(PluginError, match=rf"a plugin of op {OP} is already registered"):
        register_plugin(scaled_tanh.ScaledTanh(), [_Tanh()])
    with pytest.raises(PluginError, match=r"family 'com.example.scaled_tanh' belongs to the plugin of op "
                                          rf"{OP}"):
        register_plugin(Negate(), [CpuNegate(), type("Other", (CpuNegate,), {"family": _Tanh.family})()])
    with pytest.raises(PluginError, match=r"implements ops \['com.example::ScaledTanh'\]; .* ops = "
                                          r"\('org.test::Negate',\)"):
        register_plugin(Negate(), [type("WrongOps", (CpuNegate,), {"ops": (OP,)})()])

    class Relu(Negate):
        op, domain = "Relu", ""

    with pytest.raises(PluginError, match=r"has domain ''; a plugin defines an op of a custom ONNX domain"):
        register_plugin(Relu(), [CpuNegate()])
    assert [p.name for p in plugin_registry().plugins] == [OP]  # nothing half-registered


def test_plugin_code_must_be_readable_to_be_pinned(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"Tactic": Tactic, "np": np}
    exec("class Typed(Tactic):\n    family, backend, ops, name = 'org.test.negate', 'cpu', ('org.test::Negate',), "
         "'typed'\n    def prepare(self, layer, backend):\n        return None\n", namespace)
    with pytest.raises(PluginError, match=r"its source code cannot be read .* define plugin tactics in a module file"):
        register_plugin(Negate(), [namespace["Typed"]()])
    assert plugin_registry().plugins == ()


def test_the_registry_is_sorted_whatever_the_registration_order(plugin: Plugin) -> None:
    one = [t.label for t in default_registry().all()]
    with registered(Plugin(Negate(), (CpuNegate(),))):
        both = default_registry()
        forward = [t.label for t in both.all()]
        assert [p.name for p in plugin_registry().plugins] == [OP, "org.test::Negate"]
    plugin_registry().deregister(plugin.name)
    with registered(Plugin(Negate(), (CpuNegate(),))):
        plugin_registry().register(plugin)
        try:
            backward = [t.label for t in default_registry().all()]
            assert [p.name for p in plugin_registry().plugins] == [OP, "org.test::Negate"]
        finally:
            plugin_registry().deregister(plugin.name)
    plugin_registry().register(plugin)
    assert forward == backward == sorted(forward, key=lambda label: tuple(
        next((t.family, t.name, t.version) for t in both.all() if t.label == label)))
    assert set(forward) - set(one) == {"org.test.negate.cpu_negative v1"}
    assert [t.name for t in both.candidates(OP, "cpu")] == ["cpu_exp", "cpu_tanh"]
