"""Refitting: new weights, the same decisions, nothing timed; only what weight values decide changes, and anything
that is not a weight change is refused with a typed error."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from reprobuild.builder import Builder, BuilderConfig, ForcingSelector, Refitter, ReplaySelector
from reprobuild.builder.refit import RefitResult
from reprobuild.core.digest import array_digest
from reprobuild.core.errors import RefitError, UsageError
from reprobuild.diffing import diff
from reprobuild.engine.golden import golden_inputs
from reprobuild.engine.runtime import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic, positional
from reprobuild.manifest import Manifest, manifest_to_json, read_manifest
from tests.helpers import EXAMPLES, run_cli

MODELS = ("mlp.onnx", "small_cnn.onnx")
#: Few timing samples: the tests are about decisions and digests, not about which tactic is fastest.
CONFIG = {"backend": "cpu", "iterations": 2}


def reweighted(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """The same graph with fresh random initializers of the same shapes and dtypes (BatchNorm variances and
    scales kept positive)."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        old = numpy_helper.to_array(init)
        new = rng.standard_normal(old.shape) * max(float(old.std()), 0.1)
        if "var" in init.name or "scale" in init.name:
            new = np.abs(new) + 0.5
        out.graph.initializer[i].CopyFrom(numpy_helper.from_array(new.astype(old.dtype), init.name))
    return out


@dataclass(frozen=True)
class Case:
    model: bytes
    new_model: bytes
    engine: bytes
    manifest: Manifest


def _build(model: bytes, selector: Any = None) -> Any:
    config = BuilderConfig(**CONFIG)  # type: ignore[arg-type]
    config.algorithm_selector = selector
    return Builder().build(network_from_onnx_bytes(model)[0], config)


@pytest.fixture(scope="module", params=MODELS)
def case(request: pytest.FixtureRequest) -> Case:
    model = onnx.load(os.path.join(EXAMPLES, request.param))
    built = _build(model.SerializeToString())
    return Case(model.SerializeToString(), reweighted(model, 11).SerializeToString(), built.engine, built.manifest)


@pytest.fixture(scope="module")
def refitted(case: Case) -> RefitResult:
    return Refitter(case.engine, manifest=case.manifest).refit_from_model(case.new_model)


def _run(engine: bytes, seed: int) -> dict[str, np.ndarray]:
    loaded = Runtime().deserialize_engine(engine)
    rng = np.random.default_rng(seed)
    feeds = {b.name: rng.standard_normal(b.shape).astype(b.dtype) for b in loaded.inputs}
    return loaded.create_execution_context().execute(feeds)


def test_a_refit_is_the_engine_a_build_of_the_new_model_with_the_same_tactics_makes(case: Case,
                                                                                   refitted: RefitResult) -> None:
    # `build --replay` of the *original* manifest refuses the new model by design: a layer's structural key covers
    # its weights' digests, so a replay finds none of the weighted layers. The same decisions on the new model are
    # a build forced to each layer's recorded tactic; its engine must be the refit's, byte for byte (so are its
    # outputs), and replaying the refit's own manifest on the new model must make that engine again.
    forced = _build(case.new_model, ForcingSelector({r.name: r.tactic.name for r in case.manifest.pinned.layers}))
    assert refitted.engine == forced.engine
    assert refitted.manifest.pinned == forced.manifest.pinned
    config = BuilderConfig.from_record(refitted.manifest.pinned.config)
    config.algorithm_selector = ReplaySelector(refitted.manifest)
    assert Builder().build(network_from_onnx_bytes(case.new_model)[0], config).engine == refitted.engine
    ours, theirs = _run(refitted.engine, 5), _run(forced.engine, 5)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].tobytes() == theirs[name].tobytes(), name
    old = _run(case.engine, 5)
    assert any(old[name].tobytes() != ours[name].tobytes() for name in ours), "the new weights change nothing"


def test_refit_with_the_same_weights_gives_the_same_engine(case: Case) -> None:
    again = Refitter(case.engine, manifest=case.manifest).refit_from_model(case.model)
    assert again.engine == case.engine
    assert again.manifest.pinned == case.manifest.pinned


def test_refit_times_nothing_and_says_so(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_timing(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("a refit timed a tactic")

    monkeypatch.setattr("reprobuild.builder.builder.time_candidates", no_timing)
    result = Refitter(case.engine, manifest=case.manifest).refit_from_model(case.new_model)
    evidence = result.manifest.evidence
    assert evidence is not None and evidence.selector == "RefitSelector" and evidence.tactics_timed == 0
    assert result.manifest.engine is not None and result.manifest.engine.sha256 == result.engine_sha256


def test_the_manifest_differs_only_in_what_weights_decide(case: Case, refitted: RefitResult) -> None:
    result = diff(case.manifest, refitted.manifest)
    assert not (result.tactic_changes or result.layers_added or result.layers_removed or result.layers_renamed)
    assert not (result.config or result.environment or result.bindings or result.memory or result.kernel_sources)
    assert {c.path for c in result.model} <= {"model.sha256", "model.size_bytes", "model.structural_hash"}
    new_keys = {r.name: r.key for r in refitted.manifest.pinned.layers}
    weighted = {r.name for r in case.manifest.pinned.layers if r.key != new_keys[r.name]}
    assert weighted and {c.path for c in result.layer_changes} == {f"layers.{n}.key" for n in weighted}
    assert any(c.path.startswith("golden.outputs") for c in result.golden)
    assert [c.path for c in result.engine] == ["engine.sha256"]
    assert "layers with new weights" in result.summary
    # The new golden digests are what the refitted engine computes on the golden inputs.
    loaded = Runtime().deserialize_engine(refitted.engine)
    outputs = loaded.create_execution_context().execute(golden_inputs(loaded.inputs,
                                                                      refitted.manifest.pinned.golden.seed))
    assert {d.name: d.sha256 for d in refitted.manifest.pinned.golden.outputs} == {
        k: array_digest(v) for k, v in outputs.items()}


def test_the_timing_evidence_is_carried_over(case: Case, refitted: RefitResult) -> None:
    before, after = case.manifest.evidence, refitted.manifest.evidence
    assert before is not None and after is not None
    assert [e.key for e in after.layers] == [r.key for r in refitted.manifest.pinned.layers]
    for old, new in zip(before.layers, after.layers):
        assert [(c.tactic, c.status, c.samples_ns, c.median_ns) for c in old.candidates] == [
            (c.tactic, c.status, c.samples_ns, c.median_ns) for c in new.candidates]
        (chosen,) = [c for c in new.candidates if c.status == "chosen"]
        assert case.manifest.engine is not None and case.manifest.engine.sha256[:16] in chosen.reason
    alone = Refitter(case.engine).refit_from_model(case.new_model).manifest
    assert alone.pinned == refitted.manifest.pinned and alone.evidence is not None
    assert all(not c.samples_ns for e in alone.evidence.layers for c in e.candidates)


def test_setting_every_weight_by_name_is_the_same_refit(case: Case, refitted: RefitResult) -> None:
    refitter = Refitter(case.engine)
    names = refitter.get_all_weights()
    assert names == sorted(names) and set(names) <= set(refitted.network.constants)
    assert refitter.get_missing_weights() == names
    for name in names:
        refitter.set_named_weights(name, np.array(refitted.network.constants[name]))
    assert refitter.get_missing_weights() == []
    result = refitter.refit()
    declared = [Runtime().deserialize_engine(r.engine).header.declared_inputs for r in (result, refitted)]
    assert declared[0] == declared[1] != {}  # the model's declared input shapes are the engine's, kept
    for name, value in _run(result.engine, 9).items():
        assert value.tobytes() == _run(refitted.engine, 9)[name].tobytes()
    # No model file is behind weights set one by one: the model record says so, and nothing else differs.
    assert result.manifest.pinned.model.sha256 is None and result.manifest.pinned.model.size_bytes is None
    assert result.manifest.pinned.model_copy(update={"model": refitted.manifest.pinned.model}) == \
        refitted.manifest.pinned


def test_weights_of_another_shape_dtype_or_name_are_refused(case: Case) -> None:
    refitter = Refitter(case.engine)
    name = refitter.get_all_weights()[0]
    value = refitter.get_named_weights(name)
    expected = re.escape(f"weight '{name}': expected shape {list(value.shape)} float32, found shape "
                         f"[{value.size + 1}] float32")
    with pytest.raises(RefitError, match=expected) as shape:
        refitter.set_named_weights(name, np.zeros(value.size + 1, np.float32))
    assert "rebuild" in str(shape.value)
    with pytest.raises(RefitError, match=r"float32, found shape .* float64; cast it with .astype\('float32'\)"):
        refitter.set_named_weights(name, value.astype(np.float64))
    with pytest.raises(RefitError, match=r"the engine has no weight 'no_such_weight'; its weights .* are: '"):
        refitter.set_named_weights("no_such_weight", value)
    with pytest.raises(RefitError, match=r"no weight 'gone'"):
        refitter.get_named_weights("gone")
    assert refitter.get_missing_weights() == refitter.get_all_weights()  # nothing was taken


def test_a_refit_with_weights_missing_is_refused(case: Case) -> None:
    refitter = Refitter(case.engine)
    first, *rest = refitter.get_all_weights()
    refitter.set_named_weights(first, refitter.get_named_weights(first))
    with pytest.raises(RefitError, match=rf"{len(rest)} of the engine's {len(rest) + 1} weights are not set: "
                                         rf"'{rest[0]}'.*set each with set_named_weights"):
        refitter.refit()
    with pytest.raises(UsageError, match="refit_from_model takes every weight from the model"):
        refitter.refit_from_model(case.new_model)


def _edited(model: bytes, edit: Any) -> bytes:
    proto = onnx.load_from_string(model)
    edit(proto)
    return proto.SerializeToString()


def _set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    del node.attribute[:]
    node.attribute.extend([onnx.helper.make_attribute(name, value)])


def test_a_model_whose_graph_differs_is_refused_naming_the_first_layer(case: Case) -> None:
    refitter = Refitter(case.engine)
    first = case.manifest.pinned.layers[-1]  # the Softmax: its axis is the one attribute it has
    node = next(n for n in onnx.load_from_string(case.new_model).graph.node if n.name == first.name)
    assert node.op_type == "Softmax"
    other = _edited(case.new_model, lambda m: _set_attr(
        next(n for n in m.graph.node if n.name == first.name), "axis", 0))
    with pytest.raises(RefitError, match=rf"layer \d+ '{first.name}' \(Softmax\) of the engine differs in the new "
                                         r"network: attribute axis recorded .*; a refit changes weight values only; "
                                         r"rebuild the engine"):
        refitter.refit_from_model(other)


def test_a_model_with_other_weight_shapes_is_refused(tmp_path: Path) -> None:
    model = onnx.load(os.path.join(EXAMPLES, "mlp.onnx"))
    built = _build(model.SerializeToString())

    def wider(m: onnx.ModelProto) -> None:  # fc3 gives 12 logits instead of 10
        for i, init in enumerate(m.graph.initializer):
            if init.name in ("fc3.weight", "fc3.bias"):
                arr = numpy_helper.to_array(init)
                arr = np.concatenate([arr, arr[..., :2]], axis=-1)
                m.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, init.name))
        m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 12

    with pytest.raises(RefitError, match=r"network output 0 \('probs'\) shape recorded \[8, 10\], this build "
                                         r"\[8, 12\].*rebuild the engine"):
        Refitter(built.engine).refit_from_model(_edited(model.SerializeToString(), wider))


class HalfOnlyMul(Tactic):
    """A Mul that only runs a multiplier of exactly 0.5 (a tactic specialized on weight values)."""

    family, ops, name, backend, priority = "test_refit", ("Mul",), "cpu_half_only", "cpu", 0

    def unsupported(self, layer: LayerSpec) -> str | None:
        if 1 not in layer.constants or not np.all(layer.constants[1] == 0.5):
            return "input 1 is not a constant 0.5"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        consts = dict(layer.constants)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            a, b = positional(layer, consts, inputs)
            np.multiply(a, b, out=outputs[0])

        return run


def test_a_tactic_the_new_weights_make_ineligible_is_refused() -> None:
    from reprobuild.registry import default_registry

    registry = default_registry().with_tactics([HalfOnlyMul()])
    model = onnx.load(os.path.join(EXAMPLES, "small_cnn.onnx"))
    config = BuilderConfig(**CONFIG)  # type: ignore[arg-type]
    config.algorithm_selector = ForcingSelector({"scale": "cpu_half_only"})
    built = Builder(registry=registry).build(network_from_onnx_bytes(model.SerializeToString())[0], config)
    assert {r.name: r.tactic.name for r in built.manifest.pinned.layers}["scale"] == "cpu_half_only"
    with pytest.raises(RefitError, match=r"layer \d+ 'scale' \(Mul\) .*: recorded tactic test_refit.cpu_half_only "
                                         r"v1 cannot be used here: input 1 is not a constant 0.5 \(with the new "
                                         r"weights\)"):
        Refitter(built.engine, registry=registry).refit_from_model(reweighted(model, 3).SerializeToString())


def test_a_manifest_of_another_engine_is_refused(case: Case, refitted: RefitResult) -> None:
    with pytest.raises(UsageError, match="the manifest given to the Refitter is not the engine's"):
        Refitter(case.engine, manifest=refitted.manifest)


def test_refit_accepts_a_loaded_engine(case: Case, refitted: RefitResult) -> None:
    loaded = Runtime().deserialize_engine(case.engine)
    assert Refitter(loaded, manifest=case.manifest).refit_from_model(case.new_model).engine == refitted.engine


# --- the command line ---------------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path, case: Case) -> Path:
    (tmp_path / "old.engine").write_bytes(case.engine)
    (tmp_path / "old.manifest.json").write_bytes(manifest_to_json(case.manifest))
    (tmp_path / "new.onnx").write_bytes(case.new_model)
    return tmp_path


def test_cli_refit_writes_the_engine_and_manifest(files: Path, refitted: RefitResult,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "refit", str(files / "old.engine"), "--model", str(files / "new.onnx"),
                             "-o", str(files / "new.engine"), "--engine-manifest", str(files / "old.manifest.json"))
    assert code == 0, err
    assert (files / "new.engine").read_bytes() == refitted.engine
    assert read_manifest(files / "new.manifest.json") == refitted.manifest.model_copy(
        update={"evidence": read_manifest(files / "new.manifest.json").evidence})
    assert "0 tactic timings" in out and refitted.engine_sha256 in out
    assert not [p.name for p in files.iterdir() if p.name.startswith(".reprobuild-")]  # no temp files left
    code, out, _ = run_cli(capsys, "diff", str(files / "old.manifest.json"), str(files / "new.manifest.json"))
    assert code == 1 and "layers with new weights" in out and "changed tactic" not in out


def test_cli_refit_exit_codes(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["refit", str(files / "old.engine"), "-o", str(files / "x.engine")]
    mlp = os.path.join(EXAMPLES, "mlp.onnx")
    cnn = os.path.join(EXAMPLES, "small_cnn.onnx")
    other = cnn if "mlp" in read_manifest(files / "old.manifest.json").pinned.model.graph_name.lower() else mlp
    code, _, err = run_cli(capsys, *base, "--model", other)
    assert code == 8 and "a refit changes weight values only" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, *base, "--model", str(files / "missing.onnx"))
    assert code == 2 and "missing.onnx" in err
    (files / "bad.engine").write_bytes(b"not an engine" * 100)
    code, _, err = run_cli(capsys, "refit", str(files / "bad.engine"), "--model", str(files / "new.onnx"),
                           "-o", str(files / "x.engine"))
    assert code == 4 and "not a reprobuild engine" in err
    (files / "other.manifest.json").write_bytes(manifest_to_json(_build(onnx.load(other).SerializeToString())
                                                                 .manifest))
    code, _, err = run_cli(capsys, *base, "--model", str(files / "new.onnx"), "--engine-manifest",
                           str(files / "other.manifest.json"))
    assert code == 2 and "not the engine's" in err
    assert not (files / "x.engine").exists()


def test_cli_refit_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        run_cli(capsys, "refit", "--help")
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "exit codes of refit" in out and "8  the new model does not fit ENGINE" in out and "--engine-manifest" in out
