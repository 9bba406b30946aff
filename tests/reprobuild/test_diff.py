"""reprobuild diff: a semantic, reviewable diff of two builds, with diff(1)'s exit codes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reprobuild.builder import Builder, BuilderConfig, ForcingSelector
from reprobuild.cli.main import main
from reprobuild.diffing import ManifestDiff, diff
from reprobuild.diffing.render import to_markdown
from reprobuild.frontend import network_from_onnx_path
from reprobuild.ir import NetworkDefinition, TensorInfo
from reprobuild.kernels.conv import CpuIm2colGemm, CpuTapAccumulate
from reprobuild.manifest import manifest_to_json, write_manifest
from tests.corpus.make_engine import FirstEligible
from tests.helpers import EXAMPLES, REPO, run_cli

CNN = f"{EXAMPLES}/small_cnn.onnx"


#: One tactic per op of the example, so that two builds differ only where a test says (timing noise on a busy
#: machine can exceed even a 100% tie band).
PINNED_OPS = {"Conv": "cpu_im2col_gemm", "FusedConv": "cpu_im2col_gemm", "MaxPool": "cpu_window",
              "AveragePool": "cpu_window", "GlobalAveragePool": "cpu_global_mean", "Concat": "cpu_slices",
              "Mul": "cpu_numpy", "Flatten": "cpu_alias", "Gemm": "cpu_blas", "Softmax": "cpu_numpy"}


def _build(forced: dict[str, str] | None = None, **config: Any) -> Any:
    """One tactic per op (PINNED_OPS), so that two builds differ only where told to."""
    selector = ForcingSelector({**PINNED_OPS, **(forced or {})})
    settings = {"backend": "cpu", "iterations": 2, "tie_band": 1.0, **config}
    return Builder().build(network_from_onnx_path(CNN)[0], BuilderConfig(algorithm_selector=selector, **settings))


@pytest.fixture(scope="module")
def base() -> Any:
    return _build()




def _write(tmp_path: Path, name: str, result: Any) -> Path:
    path = tmp_path / name
    write_manifest(path, result.manifest)
    return path


def test_identical_builds_exit_0(base: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _write(tmp_path, "a.json", base), _write(tmp_path, "b.json", _build())
    code, out, _ = run_cli(capsys, "diff", str(a), str(b))
    assert code == 0 and out.startswith("reprobuild diff: identical")
    engine = tmp_path / "b.engine"
    engine.write_bytes(_build().engine)
    assert run_cli(capsys, "diff", str(a), str(engine))[0] == 0  # an engine's embedded manifest, and its digest


def test_one_forced_tactic_names_exactly_that_layer(base: Any) -> None:
    result = diff(base.manifest, _build({"res1": "cpu_tap_accumulate"}).manifest)
    assert [(t.layer, t.a.tactic.label, t.b.tactic.label) for t in result.tactic_changes] == [
        ("res1", f"conv.cpu_im2col_gemm v{CpuIm2colGemm.version}",
         f"conv.cpu_tap_accumulate v{CpuTapAccumulate.version}")]
    assert result.tactic_changes[0].a.median_ns is not None  # the timing evidence of both sides
    assert result.summary.startswith("1 layer changed tactic")
    assert not (result.config or result.environment or result.layers_added or result.layers_removed
                or result.kernel_sources or result.model)
    assert {c.path for c in result.layer_changes} <= {"layers.res1.workspace_bytes"}


def test_build_config_differences_are_listed(base: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = _build(iterations=3, determinism="any")
    doc = json.loads(manifest_to_json(other.manifest))
    doc["pinned"]["config"]["tie_band"] = 0.05  # as if built with another tie band
    edited = tmp_path / "b.json"
    edited.write_text(json.dumps(doc))
    result = diff(base.manifest, edited)
    assert {c.path: (c.a, c.b) for c in result.config} == {
        "config.timing.iterations": (2, 3), "config.determinism": ("run_to_run", "any"),
        "config.tie_band": (1.0, 0.05)}
    code, out, _ = run_cli(capsys, "diff", str(_write(tmp_path, "a.json", base)), str(edited))
    assert code == 1 and "Build config" in out and "timing.iterations  2" in out


def test_another_fingerprint_gives_the_environment_table(base: Any, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(manifest_to_json(base.manifest))
    doc["pinned"]["environment"].update({"numpy": "9.9.9", "gpu.name": "Imaginary GPU"})
    (tmp_path / "b.json").write_text(json.dumps(doc))
    code, out, _ = run_cli(capsys, "diff", str(_write(tmp_path, "a.json", base)), str(tmp_path / "b.json"))
    assert code == 1 and "Environment" in out
    numpy_row = next(line for line in out.splitlines() if line.strip().startswith("numpy"))
    assert base.manifest.pinned.environment["numpy"] in numpy_row and "9.9.9" in numpy_row
    assert re.search(r"gpu\.name +\(absent\) +Imaginary GPU", out)
    assert "environment: gpu.name (absent) → Imaginary GPU, numpy" in out.splitlines()[0]


@pytest.mark.parametrize("content", [b"{not json", b"RPBENGN\x00garbage", b'{"schema_version": 1}'])
def test_corrupted_or_invalid_input_exits_2(base: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            content: bytes) -> None:
    (tmp_path / "bad").write_bytes(content)
    code, out, err = run_cli(capsys, "diff", str(_write(tmp_path, "a.json", base)), str(tmp_path / "bad"))
    assert code == 2 and "error:" in err and "Traceback" not in err and out == ""


def test_missing_file_exits_2(base: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "diff", str(_write(tmp_path, "a.json", base)), str(tmp_path / "nope.json"))
    assert code == 2 and "cannot read" in err


def _tiny(names: tuple[str, str]) -> Any:
    net = NetworkDefinition()
    net.add_input("x", (2, 4))
    net.add_constant("w", np.arange(8, dtype=np.float32).reshape(4, 2))
    net.add_layer(names[0], "MatMul", ["x", "w"], [TensorInfo("h", (2, 2), "float32")])
    net.add_layer(names[1], "Relu", ["h"], [TensorInfo("y", (2, 2), "float32")])
    net.mark_output("y")
    # No timing: the two builds must choose alike, which timing noise on a busy machine did not guarantee
    return Builder().build(net, BuilderConfig(backend="cpu", algorithm_selector=FirstEligible()))


def test_a_renamed_layer_is_a_rename_not_a_removal_and_an_addition() -> None:
    result = diff(_tiny(("mm", "relu")).manifest, _tiny(("mm", "activation")).manifest)
    assert [(r.a, r.b, r.op) for r in result.layers_renamed] == [("relu", "activation", "Relu")]
    assert not result.layers_added and not result.layers_removed and not result.tactic_changes


def test_evidence_only_with_include_evidence_and_ignore(base: Any) -> None:
    other = _build()
    assert diff(base.manifest, other.manifest).identical
    with_evidence = diff(base.manifest, other.manifest, include_evidence=True)
    assert not with_evidence.identical and any(c.path.startswith("evidence.") for c in with_evidence.evidence)
    changed = _build({"res1": "cpu_tap_accumulate"})
    ignored = diff(base.manifest, changed.manifest, ignore=["layers", "golden", "engine"])
    assert ignored.identical and ignored.ignored[0] == "layers (2 differences)"


def test_json_format_is_the_documented_schema(base: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, "a.json", base)
    b = _write(tmp_path, "b.json", _build({"res1": "cpu_tap_accumulate"}))
    code, out, _ = run_cli(capsys, "diff", str(a), str(b), "--format", "json")
    parsed = ManifestDiff.model_validate_json(out)
    assert code == 1 and parsed.tactic_changes[0].layer == "res1" and not parsed.identical


def test_colour_only_when_asked_or_on_a_terminal(base: Any, tmp_path: Path, capsys: Any) -> None:
    a = _write(tmp_path, "a.json", base)
    b = _write(tmp_path, "b.json", _build({"res1": "cpu_tap_accumulate"}))
    assert "\033[" not in run_cli(capsys, "diff", str(a), str(b))[1]  # captured output is not a terminal
    assert "\033[31m" in run_cli(capsys, "diff", str(a), str(b), "--color", "always")[1]


def test_help_documents_diff_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["diff", "--help"])
    out = capsys.readouterr().out
    assert "0  identical pinned content" in out and "1  different" in out and "2  trouble" in out


def test_plugin_assert_no_diff(base: Any) -> None:
    from reprobuild.testing import assert_no_diff

    assert_no_diff(base.manifest, _build().manifest)
    with pytest.raises(AssertionError, match="1 layer changed tactic"):
        assert_no_diff(base.manifest, _build({"res1": "cpu_tap_accumulate"}).manifest)


# --- the committed example ----------------------------------------------------------------------------------

EXAMPLE = Path(REPO, "docs", "diff-example.md")
INTRO = """# Example: `reprobuild diff --format markdown`

Two CPU builds of `examples/small_cnn.onnx`; the second forces one layer (`res1`) onto another tactic:

```bash
reprobuild build examples/small_cnn.onnx -o a.engine --backend cpu --tie-band 1 --force-tactic Conv=cpu_im2col_gemm
reprobuild build examples/small_cnn.onnx -o b.engine --backend cpu --tie-band 1 --force-tactic Conv=cpu_im2col_gemm \\
    --force-tactic res1=cpu_tap_accumulate
reprobuild diff a.manifest.json b.manifest.json --format markdown
```

What follows is that command's output, regenerated by `tests/reprobuild/test_diff.py` (set
`REPROBUILD_REGENERATE_DOCS=1` to rewrite it; digests and timings differ from machine to machine).

"""


def _normalized(text: str) -> str:
    text = re.sub(r"\b[0-9a-f]{12,64}\b", "<sha256>", text)
    return re.sub(r"\d+\.\d{4} ms", "<time>", text)


def test_committed_markdown_example_is_current(base: Any) -> None:
    result = diff(base.manifest, _build({"res1": "cpu_tap_accumulate"}).manifest)
    result = result.model_copy(update={"a": "a.manifest.json", "b": "b.manifest.json"})
    fresh = INTRO + to_markdown(result)
    if os.environ.get("REPROBUILD_REGENERATE_DOCS"):
        EXAMPLE.write_text(fresh)
    assert EXAMPLE.exists(), "run the tests with REPROBUILD_REGENERATE_DOCS=1 to write docs/diff-example.md"
    assert _normalized(EXAMPLE.read_text()) == _normalized(fresh), (
        "docs/diff-example.md is stale: rerun with REPROBUILD_REGENERATE_DOCS=1")
