"""reprobuild compare: tolerance checks against onnxruntime with error statistics, and its exit codes."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reprobuild.cli.main import main
from reprobuild.verify.tolerance import compare_output
from tests.helpers import EXAMPLES


@pytest.fixture
def built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["build", f"{EXAMPLES}/mlp.onnx", "-o", str(tmp_path / "mlp.engine"), "--backend", "cpu", "-q"]) == 0
    capsys.readouterr()
    return tmp_path / "mlp.engine"


def test_statistics_and_criteria() -> None:
    ref = np.array([1.0, 2.0, 0.0, -4.0], dtype=np.float32)
    out = np.array([1.0, 2.5, 0.0, -4.0], dtype=np.float32)
    row = compare_output("y", out, ref, atol=0.1, rtol=0.1, stat="elemwise", quantile=0.5)
    assert (row.max_abs, row.mean_abs, row.median_abs, row.max_rel) == (0.5, 0.125, 0.0, 0.25)
    assert row.failing == 1 and not row.passed
    assert compare_output("y", out, ref, 0.1, 0.1, "median", 0.5).passed  # the median error is 0
    assert not compare_output("y", out, ref, 0.1, 0.1, "max", 0.5).passed
    assert compare_output("y", out, ref, 0.1, 0.3, "max", 0.5).passed  # max relative error 0.25 <= 0.3
    nan = compare_output("y", np.array([np.nan], np.float32), np.array([1.0], np.float32), 1.0, 1.0, "elemwise", 0.5)
    assert not nan.passed and nan.max_abs == float("inf")


def test_cli_compare_passes_within_tolerance_and_reports(built: Path, tmp_path: Path, capsys: Any) -> None:
    code = main(["compare", str(built), f"{EXAMPLES}/mlp.onnx", "--report", str(tmp_path / "c.json")])
    out = capsys.readouterr().out
    assert code == 0 and "probs" in out and "pass" in out and "p99 abs" in out
    assert json.loads((tmp_path / "c.json").read_text())["passed"] is True


def test_cli_compare_outside_tolerance_exits_11(built: Path, capsys: Any) -> None:
    code = main(["compare", str(built), f"{EXAMPLES}/mlp.onnx", "--atol", "0", "--rtol", "0"])
    captured = capsys.readouterr()
    assert code == 11 and "FAIL" in captured.out and "outside tolerance" in captured.err


def test_cli_compare_without_onnxruntime_says_how_to_get_it(built: Path, capsys: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_onnxruntime(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    code = main(["compare", str(built), f"{EXAMPLES}/mlp.onnx"])
    assert code == 5 and "pip install onnxruntime" in capsys.readouterr().err
