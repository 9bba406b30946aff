"""The precision flag (TensorRT's builder flags): recorded in the manifest with each layer's precision, TF32
tactics allowed only at tf32, half precision refused with a clear message, compare's tolerances by precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.errors import UsageError
from reprobuild.frontend import network_from_onnx_path
from tests.helpers import EXAMPLES, run_cli


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_the_manifest_records_the_flag_and_each_layers_precision(precision: str) -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")
    pinned = Builder().build(network, BuilderConfig(backend="cpu", iterations=1, precision=precision)).manifest.pinned
    assert pinned.config.precision == precision
    # the CPU has no TF32 arithmetic: every float layer computes in fp32 whatever the flag allows
    assert {layer.precision for layer in pinned.layers} == {"fp32"}


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_precisions_without_kernels_are_refused_with_the_reason(precision: str) -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/mlp.onnx")
    with pytest.raises(UsageError, match="precision must be one of fp32, tf32") as err:
        Builder().build(network, BuilderConfig(backend="cpu", precision=precision))  # type: ignore[arg-type]
    assert ("half-precision kernels" in str(err.value)) == (precision != "int8")


def test_compare_takes_its_default_tolerance_from_the_engines_precision(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "mlp.engine"
    code, _, err = run_cli(capsys, "build", f"{EXAMPLES}/mlp.onnx", "-o", str(engine), "--backend", "cpu",
                           "--precision", "tf32", "-q")
    assert code == 0, err
    manifest = json.loads((tmp_path / "mlp.manifest.json").read_text())
    assert manifest["pinned"]["config"]["precision"] == "tf32"
    code, out, _ = run_cli(capsys, "compare", str(engine), f"{EXAMPLES}/mlp.onnx")
    assert code == 0 and "atol 0.01, rtol 0.01 (a tf32 engine)" in out, out
    code, out, _ = run_cli(capsys, "compare", str(engine), f"{EXAMPLES}/mlp.onnx", "--atol", "1e-6")
    assert "atol 1e-06, rtol 0.01 (a tf32 engine)" in out, out
