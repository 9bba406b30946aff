"""reprobuild verify: dimensions, tiers, the locator, golden vectors (--against), and the determinism policy,
with a genuinely nondeterministic tactic on the CPU (a test-only ReLU that nudges one element by one ulp)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reprobuild.builder import Builder, BuilderConfig, ForcingSelector
from reprobuild.cli.main import main
from reprobuild.engine import Engine, Runtime
from reprobuild.engine.golden import golden_inputs
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.elementwise import CpuElementwise
from reprobuild.kernels.tactic import Determinism, Kernel, LayerSpec, TacticRegistry
from reprobuild.passes import DEFAULT_PASSES
from reprobuild.registry import default_registry
from reprobuild.registry import tactics as registry_tactics
from reprobuild.verify.locate import locate, ulp_distance
from reprobuild.verify.run import Dimension, VerifyPlan, tier_reached, verify
from tests.helpers import EXAMPLES, cli_env

CNN = f"{EXAMPLES}/small_cnn.onnx"


class NoisyRelu(CpuElementwise):
    """ReLU that adds 1e-3 to one element picked from os.urandom: not the same bits twice in a row."""

    name, priority, determinism = "cpu_noisy_relu", 99, Determinism.NONE
    ops = ("Relu",)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            np.maximum(inputs[0], np.float32(0), out=outputs[0])
            flat = outputs[0].reshape(-1)
            flat[int.from_bytes(os.urandom(4), "little") % flat.size] += np.float32(1e-3)

        return run


class BatchMixingRelu(CpuElementwise):
    """Deterministic, but each sample's result depends on its batch-mates (adds a thousandth of the batch mean)."""

    name, priority = "cpu_batch_mixing_relu", 99
    ops = ("Relu",)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            np.maximum(inputs[0], np.float32(0), out=outputs[0])
            outputs[0] += np.float32(1e-3) * inputs[0].mean(axis=0, keepdims=True)

        return run


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> TacticRegistry:
    """The default registry plus the two test tactics, installed as the default for this test."""
    extended = TacticRegistry([*default_registry().all(), NoisyRelu(), BatchMixingRelu()])
    monkeypatch.setattr(registry_tactics, "_BUILTIN", extended)
    return extended


#: The Relu layers stay layers of their own (no fusion), so that a test tactic can be forced on one.
UNFUSED = tuple(p for p in DEFAULT_PASSES if p not in ("fuse_conv_epilogue", "fuse_elementwise"))


def _build(forced: dict[str, str] | None = None, determinism: str = "run_to_run") -> Any:
    config = BuilderConfig(backend="cpu", iterations=1, determinism=determinism,  # type: ignore[arg-type]
                           passes=UNFUSED)
    if forced:  # the other Relu layers get the plain kernel: timing must not hand them a test tactic as well
        config.algorithm_selector = ForcingSelector({"Relu": "cpu_numpy", **forced})
    return Builder().build(network_from_onnx_path(CNN)[0], config)


def _engine(result: Any) -> Engine:
    return Runtime().deserialize_engine(result.engine)


def test_a_deterministic_engine_reaches_cross_process(tmp_path: Path) -> None:
    engine = _engine(_build())
    plan = VerifyPlan(runs=4, contexts=2, threads=2, streams=2, processes=2)
    report = verify(engine, golden_inputs(engine.inputs, 0), plan)
    by = {d.name: d for d in report.dimensions}
    assert report.deterministic and report.tier == "cross_process"
    assert all(by[n].tested and by[n].identical for n in ("run_to_run", "layer_outputs", "cross_context",
                                                           "cross_thread", "cross_process"))
    assert not by["cross_stream"].tested and "no streams" in by["cross_stream"].detail
    assert report.total_runs == plan.total_runs == 2 * (2 * 2 * 4 + 2)
    assert report.distinct_results == 1 and report.runs_per_second > 0
    assert report.batch_invariant is True


def test_the_default_policy_excludes_nondeterministic_tactics_and_records_it(registry: TacticRegistry) -> None:
    result = _build()
    assert result.manifest.evidence is not None
    noisy = [c for e in result.manifest.evidence.layers for c in e.candidates if c.tactic.name == "cpu_noisy_relu"]
    assert noisy and all(c.status == "excluded" and "not run-to-run deterministic" in c.reason for c in noisy)
    assert all(layer.tactic.name != "cpu_noisy_relu" for layer in result.manifest.pinned.layers)


def test_forcing_a_nondeterministic_tactic_needs_allowing_it(registry: TacticRegistry) -> None:
    from reprobuild.core.errors import UsageError

    with pytest.raises(UsageError, match=r"'res1_relu' \(Relu\) cannot use cpu_noisy_relu: not run-to-run"):
        _build({"res1_relu": "cpu_noisy_relu"})


def test_nondeterminism_is_detected_and_located(registry: TacticRegistry) -> None:
    engine = _engine(_build({"res1_relu": "cpu_noisy_relu"}, determinism="any"))
    inputs = golden_inputs(engine.inputs, 0)
    report = verify(engine, inputs, VerifyPlan(runs=3, contexts=1))
    assert not report.deterministic and report.tier == "none"
    assert not next(d for d in report.dimensions if d.name == "run_to_run").identical
    found = locate(engine, inputs)
    assert found.reproduced and found.layer is not None
    assert (found.layer.name, found.layer.op, found.layer.tactic) == ("res1_relu", "Relu",
                                                                      "elementwise.cpu_noisy_relu v1")
    assert found.layer.differing is not None and 1 <= found.layer.differing <= 2
    assert found.layer.max_abs is not None and 5e-4 < found.layer.max_abs < 2e-3 and (found.layer.max_ulp or 0) > 0


def test_cli_verify_exits_10_and_names_the_layer(registry: TacticRegistry, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "noisy.engine"
    path.write_bytes(_build({"res1_relu": "cpu_noisy_relu"}, determinism="any").engine)
    code = main(["verify", str(path), "--runs", "3", "--report", str(tmp_path / "r.json"), "-q"])
    out, err = capsys.readouterr()
    assert code == 10 and "NOT DETERMINISTIC" in out and "not deterministic" in err, out + err
    locator = next((line for line in out.splitlines() if line.startswith("locator")), "")
    assert locator.startswith("locator    layer 4 'res1_relu' (Relu) with tactic elementwise.cpu_noisy_relu v1"), out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["deterministic"] is False and report["locator"]["layer"]["name"] == "res1_relu"


def test_batch_invariance_is_reported_separately(registry: TacticRegistry) -> None:
    engine = _engine(_build({"res1_relu": "cpu_batch_mixing_relu"}))
    report = verify(engine, golden_inputs(engine.inputs, 0), VerifyPlan(runs=2, contexts=1))
    assert report.deterministic and report.batch_invariant is False
    assert "batch-mates" in report.batch_detail


def test_tiers_need_every_lower_tier() -> None:
    def dims(**verdicts: bool | None) -> list[Dimension]:
        return [Dimension(name=n, tested=v is not None, identical=v, detail="") for n, v in verdicts.items()]

    assert tier_reached(dims(run_to_run=True, cross_context=True, cross_thread=None, cross_stream=None,
                             cross_process=True, cross_device=None)) == "cross_process"
    assert tier_reached(dims(run_to_run=True, cross_context=True, cross_thread=False, cross_stream=None,
                             cross_process=True, cross_device=None)) == "run_to_run"
    assert tier_reached(dims(run_to_run=None, cross_context=True, cross_thread=None, cross_stream=None,
                             cross_process=None, cross_device=None)) == "none"


def test_ulp_distance() -> None:
    a = np.array([1.0, -1.0, 0.0, 3.0], dtype=np.float32)
    b = np.array([np.nextafter(np.float32(1.0), np.float32(2.0)), -1.0, -0.0, 3.0], dtype=np.float32)
    assert ulp_distance(a, b).tolist() == [1, 0, 0, 0]
    across_zero = ulp_distance(np.array([1e-45], np.float32), np.array([-1e-45], np.float32))
    assert across_zero.tolist() == [2]


# --- golden vectors: --against in another process ---------------------------------------------------------




@pytest.fixture
def built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["build", CNN, "-o", str(tmp_path / "cnn.engine"), "--backend", "cpu", "-q"]) == 0
    capsys.readouterr()
    return tmp_path / "cnn.engine"


def _verify_in_another_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reprobuild", "verify", *args, "-q"], capture_output=True,
                          text=True, env=cli_env())


def test_against_the_manifest_passes_in_another_process(built: Path) -> None:
    manifest = built.with_name("cnn.manifest.json")
    for against in (manifest, built):  # a manifest, or the engine's embedded one
        result = _verify_in_another_process(str(built), "--runs", "2", "--against", str(against))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "against          identical   identical to the build's outputs" in result.stdout
        assert "(against the manifest: cross_process)" in result.stdout


def _other_build(built: Path, edit: Any) -> Path:
    """The engine with its embedded golden record edited (digests and trailer recomputed): another build's engine,
    of the same layers, that recorded other digests. A manifest file edited so is refused as edited
    (tests/reprobuild/test_tamper.py); an engine file given to --against is its own record."""
    from tests.corpus.make_engine import Engine as EngineFile

    other = EngineFile(built.read_bytes())
    edit(other.manifest["golden"])
    path = built.with_name("other.engine")
    path.write_bytes(other.pack())
    return path


def test_against_a_different_golden_fails_and_names_the_first_layer(built: Path) -> None:
    def edit(golden: dict[str, Any]) -> None:
        golden["outputs"][0]["sha256"] = "0" * 64
        golden["layers"][3]["sha256"] = "0" * 64

    other = _other_build(built, edit)
    layer = json.loads(built.with_name("cnn.manifest.json").read_text())["pinned"]["layers"][3]
    result = _verify_in_another_process(str(built), "--runs", "2", "--against", str(other))
    assert result.returncode == 10, result.stdout + result.stderr
    assert f"locator    layer 3 '{layer['name']}' ({layer['op']})" in result.stdout
    assert "differ from the digests the build" in result.stdout


def test_against_refuses_inputs_drawn_differently_or_another_engine(built: Path, capsys: Any) -> None:
    other = _other_build(built, lambda golden: golden["inputs"][0].update(sha256="1" * 64))
    assert main(["verify", str(built), "--runs", "2", "--against", str(other), "-q"]) == 2
    assert "draws other numbers" in capsys.readouterr().err
    other = built.with_name("mlp.engine")
    assert main(["build", f"{EXAMPLES}/mlp.onnx", "-o", str(other), "--backend", "cpu", "-q"]) == 0
    assert main(["verify", str(built), "--runs", "2", "--against", str(other), "-q"]) == 2
    assert "describes another engine" in capsys.readouterr().err


def test_inputs_from_a_directory(built: Path, tmp_path: Path, capsys: Any) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "image.npy", np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32))
    assert main(["verify", str(built), "--runs", "2", "--inputs", str(inputs), "-q"]) == 0
    assert f"from {inputs}" in capsys.readouterr().out
    (inputs / "image.npy").unlink()
    assert main(["verify", str(built), "--inputs", str(inputs), "-q"]) == 7
    assert f"--inputs {inputs} holds none of image.npy" in capsys.readouterr().err


def test_plugin_assertions_fail_with_the_layer_named(registry: TacticRegistry) -> None:
    from reprobuild.testing import assert_deterministic, assert_matches_golden

    good = _build()
    report = assert_deterministic(good.engine, runs=3, threads=2)
    assert report.tier == "cross_context"
    assert assert_matches_golden(good.engine, good.manifest).matched
    noisy = _build({"res1_relu": "cpu_noisy_relu"}, determinism="any")
    with pytest.raises(AssertionError, match=r"not deterministic .*'res1_relu' \(Relu\) with tactic "
                                             r"elementwise.cpu_noisy_relu v1"):
        assert_deterministic(noisy.engine, runs=3)


def test_a_layer_whose_difference_later_layers_hide_still_fails(registry: TacticRegistry) -> None:
    """Noise in a ReLU multiplied by zero never reaches the output; the traced runs still catch that layer."""
    from onnx import helper

    from reprobuild.frontend import network_from_onnx_bytes
    from tests.helpers import make_model

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="noisy"), helper.make_node("Mul", ["r", "zero"], ["y"])]
    model = make_model(nodes, {"x": (4, 64)}, ["y"], {"zero": np.zeros((1, 64), np.float32)})
    config = BuilderConfig(backend="cpu", iterations=1, determinism="any", passes=UNFUSED,
                           algorithm_selector=ForcingSelector({"noisy": "cpu_noisy_relu"}))
    engine = _engine(Builder().build(network_from_onnx_bytes(model.SerializeToString())[0], config))
    report = verify(engine, golden_inputs(engine.inputs, 0), VerifyPlan(runs=5, contexts=1))
    by = {d.name: d for d in report.dimensions}
    assert by["run_to_run"].identical and report.distinct_results == 1  # the outputs never differ
    assert by["layer_outputs"].identical is False and "first 'noisy' (Relu" in by["layer_outputs"].detail
    assert not report.deterministic and report.tier == "none"
    found = locate(engine, golden_inputs(engine.inputs, 0))
    assert found.layer is not None and found.layer.name == "noisy"
