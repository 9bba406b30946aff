"""The README's commands run as written, its tables match the code, and generated files are current."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reprobuild.core.errors import EXIT_CODES
from reprobuild.diffing.schema import schema_json, schemas
from tests.helpers import CUDA_SKIP, EXAMPLES, REPO, cli_env

README = Path(REPO, "README.md").read_text()


def section_blocks(heading: str, language: str) -> list[str]:
    """The fenced code blocks of one '## heading' section of the README."""
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def _workdir(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("*.py"))
    return tmp_path


def run_commands(cwd: Path, *blocks: str) -> list[str]:
    """Run every line of the README's bash ``blocks`` in ``cwd`` as a shell command, each of which must succeed;
    their outputs, in order."""
    outputs = []
    for command in (line for block in blocks for line in block.strip().splitlines()):
        result = subprocess.run(command, shell=True, cwd=cwd, env=cli_env(), capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    return outputs


def test_readme_main_job_runs_as_written(tmp_path: Path) -> None:
    (block,) = section_blocks("Build an engine", "bash")
    cwd = _workdir(tmp_path)
    run_commands(cwd, block)
    assert (cwd / "small_cnn.engine").exists() and (cwd / "small_cnn.manifest.json").exists()
    assert (cwd / "outputs" / "probs.npy").exists()


def test_readme_python_example_runs(tmp_path: Path) -> None:
    """Builder -> engine -> context with a logger, an error recorder and an allocator, as the README shows it."""
    block, _ = section_blocks("In Python", "python")
    cwd = _workdir(tmp_path)
    result = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=cli_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "(8, 10) 0 errors" in result.stdout
    assert re.search(r"^allocate \d+ bytes \(context scratch memory\)$", result.stdout, re.M), result.stdout


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_readme_torch_example_runs_on_a_gpu(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    _, block = section_blocks("In Python", "python")
    cwd = _workdir(tmp_path)
    build = ["reprobuild", "build", "examples/mlp.onnx", "-o", "mlp.engine", "--backend", "cuda", "-q"]
    assert subprocess.run(build, cwd=cwd, env=cli_env(), capture_output=True).returncode == 0
    result = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=cli_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_readme_refit_example_runs(tmp_path: Path) -> None:
    (block,) = section_blocks("Refitting", "python")
    cwd = _workdir(tmp_path)
    result = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=cli_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["RefitSelector", "0"]
    assert (cwd / "mlp_refit.engine").exists() and (cwd / "mlp_refit.manifest.json").exists()


def test_readme_plugin_example_runs(tmp_path: Path) -> None:
    (block,) = section_blocks("Plugins", "python")
    cwd = _workdir(tmp_path)
    shutil.copytree(Path(EXAMPLES, "plugins"), cwd / "examples" / "plugins", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=cli_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "com.example" in result.stdout or "scaled_tanh" in result.stdout.lower(), result.stdout
    assert result.stdout.rstrip().endswith("(4, 16)")


def test_readme_bench_command_runs_as_written(tmp_path: Path) -> None:
    cwd = _workdir(tmp_path)
    (build,) = section_blocks("Build an engine", "bash")
    (bench,) = section_blocks("Measuring latency", "bash")
    run_commands(cwd, build, bench)
    assert json.loads((cwd / "bench.json").read_text())["iterations"] == 50


def test_readme_setup_commands_are_what_ci_runs() -> None:
    (block,) = section_blocks("Set up", "bash")
    install, test = block.strip().splitlines()
    ci = Path(REPO, ".ci", "run").read_text()
    assert install in ci and test in ci


def test_readme_exit_code_table_matches_the_code() -> None:
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", README, re.M))
    for code, meaning in EXIT_CODES:
        assert table.get(str(code)) == meaning, f"README exit code {code} is out of date"


def test_committed_examples_are_what_the_script_makes() -> None:
    sys.path.insert(0, EXAMPLES)
    try:
        import make_examples
    finally:
        sys.path.remove(EXAMPLES)
    for name, make in make_examples.EXAMPLES.items():
        assert Path(EXAMPLES, name).read_bytes() == make().SerializeToString(), f"regenerate examples/{name}"


def test_json_schemas_are_current() -> None:
    for name, model in schemas().items():
        committed = Path(REPO, "manifests", name).read_bytes()
        assert committed == schema_json(model), f"{name} is stale; run: python -m reprobuild.diffing.schema manifests/"


def test_only_the_reprobuild_namespace_is_installed(tmp_path: Path) -> None:
    """engine/ and kernels/ install as reprobuild.engine and reprobuild.kernels, never as top-level modules."""
    code = ("import importlib.util as u; "
            "print(u.find_spec('engine'), u.find_spec('kernels'), u.find_spec('reprobuild.engine') is not None, "
            "u.find_spec('reprobuild.kernels') is not None)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.split() == ["None", "None", "True", "True"], result.stdout + result.stderr


def test_readme_pinning_walkthrough_runs_as_written(tmp_path: Path) -> None:
    (block,) = section_blocks("Pinning a build", "bash")
    cwd = _workdir(tmp_path)
    outputs = run_commands(cwd, block)
    assert "0 tactic timings" in outputs[2] and "identical to the engine digest the manifest records" in outputs[2]
    digests = {line.split()[0] for line in outputs[3].splitlines()}
    assert len(digests) == 1


def test_readme_selector_example_runs(tmp_path: Path) -> None:
    (block,) = section_blocks("Choosing tactics yourself", "python")
    result = subprocess.run([sys.executable, "-c", block], cwd=_workdir(tmp_path), env=cli_env(), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "stem" in result.stdout and re.search(r"conv\.cpu_im2col_gemm v\d+", result.stdout)


def test_readme_verify_commands_run_as_written(tmp_path: Path) -> None:
    cwd = _workdir(tmp_path)
    (build,) = section_blocks("Build an engine", "bash")
    (verify,) = section_blocks("Verifying determinism", "bash")
    run_commands(cwd, build, verify)
    assert (cwd / "verify.json").exists()


def test_readme_dynamic_shapes_commands_run_as_written(tmp_path: Path) -> None:
    cwd = _workdir(tmp_path)
    (block,) = section_blocks("Dynamic shapes", "bash")
    outputs = run_commands(cwd, block)
    assert "profile   1: image 33x3x32x32:48x3x32x32:64x3x32x32" in outputs[0]
    assert "batch x 3 x 32 x 32" in outputs[1] and "pass" in outputs[3]
    assert "shapes batch=8" in outputs[4] and "DIFFERENT" not in outputs[4]
    assert "identical to the engine digest the manifest records" in outputs[5]
    assert (cwd / "replayed.engine").read_bytes() == (cwd / "small_cnn_dynamic.engine").read_bytes()


def test_readme_pytest_plugin_example_pins_then_replays(tmp_path: Path) -> None:
    (example,) = section_blocks("Determinism tests in your own suite", "python")
    cwd = _workdir(tmp_path)
    (cwd / "test_small_cnn_determinism.py").write_text(example)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_small_cnn_determinism.py"]
    first = subprocess.run(command, cwd=cwd, env=cli_env(), capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pinned a new manifest" in first.stdout and (cwd / "small_cnn.pinned.json").exists()
    pin = (cwd / "small_cnn.pinned.json").read_bytes()
    second = subprocess.run(command, cwd=cwd, env=cli_env(), capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "pinned a new manifest" not in second.stdout and (cwd / "small_cnn.pinned.json").read_bytes() == pin


def test_readme_diff_commands_run_as_written(tmp_path: Path) -> None:
    cwd = _workdir(tmp_path)
    (build,) = section_blocks("Build an engine", "bash")
    (diffing,) = section_blocks("Diffing builds", "bash")
    outputs = run_commands(cwd, build, diffing)
    assert "Tactic changes" in outputs[-2] and "cpu_tap_accumulate" in outputs[-2]
    assert "exit 1: they differ" in outputs[-2]
    assert outputs[-1].startswith("reprobuild diff: identical")


def test_readme_adding_an_op_example_is_a_working_definition() -> None:
    """The README's unary-op example, run as a definition, computes what the registered Exp computes."""
    import numpy as np

    from reprobuild.core.dtypes import FLOATS
    from reprobuild.layers import find_layer
    from reprobuild.layers.families import Unary
    from reprobuild.ops import OpDef, get_op

    section = README.split("### Adding an op\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    scope: dict[str, object] = {"Unary": Unary, "FLOATS": FLOATS, "OpDef": OpDef}
    exec(block, scope)
    layer, op = scope["Exp"](), scope["ExpOp"]()  # type: ignore[operator]
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    (mine,) = layer.compute(np, {}, x)
    (registered,) = find_layer("Exp").compute(np, {}, x)  # type: ignore[union-attr]
    np.testing.assert_array_equal(mine, registered)
    np.testing.assert_array_equal(op.compute(np, {}, x)[0], get_op("Exp").compute(np, {}, x)[0])
    assert set(op.versions) <= set(get_op("Exp").versions) and op.attributes == get_op("Exp").attributes
