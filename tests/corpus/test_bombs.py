"""Resource bombs: small files that once made reprobuild take gigabytes or fail with an untyped MemoryError. Each
runs the command line in a fresh process that first handles a valid file of the same kind (so that imports and
caches are warm), then the bomb, and reports the exit code, what was printed on stderr and how much the peak
resident memory grew (``getrusage``'s ``ru_maxrss``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import make_engine
from tests.helpers import CUDA_SKIP, REPO, cli_env

GOLDEN = Path(REPO, "manifests", "golden", "mlp.cpu.manifest.json")
#: The most a bomb may add to the peak resident memory of the process that refuses it.
MAX_GROWTH_MB = 200
#: The longest error message a bomb may print.
MAX_MESSAGE = 4096

_MEASURE = """
import contextlib, io, json, resource, sys
from reprobuild.cli.main import main
warm, bomb = json.loads(sys.argv[1]), json.loads(sys.argv[2])
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    main(warm)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
err = io.StringIO()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
    code = main(bomb)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "stderr": err.getvalue(), "growth_mb": (after - before) / 1024}))
"""


def measure(warm: list[str], bomb: list[str], prelude: str = "") -> dict[str, Any]:
    """Exit code, stderr and peak-memory growth (MB) of ``reprobuild BOMB`` after ``reprobuild WARM``, in a fresh
    process; ``prelude`` runs first there (to set a resource limit)."""
    result = subprocess.run([sys.executable, "-c", prelude + _MEASURE, json.dumps(warm), json.dumps(bomb)],
                            capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Traceback" not in report["stderr"] and "internal error" not in report["stderr"], report["stderr"]
    return report


def _manifest_with_empty_layers(size: int) -> bytes:
    """The golden mlp manifest whose ``pinned.layers`` is a list of empty objects, ``size`` bytes in all."""
    doc = json.loads(GOLDEN.read_text())
    doc["pinned"]["layers"] = "@@"
    text = json.dumps(doc)
    count = (size - len(text)) // 3
    return text.replace('"@@"', "[" + ",".join(["{}"] * count) + "]").encode()


@pytest.mark.parametrize("size", [300_000, 3_000_000])
def test_a_manifest_of_empty_layers_is_refused_in_bounded_memory(tmp_path: Path, size: int) -> None:
    """300 KB once took 850 MB and printed 170 MB of errors; 3 MB took 7.9 GB (pydantic listed every error)."""
    bomb = tmp_path / "bomb.manifest.json"
    bomb.write_bytes(_manifest_with_empty_layers(size))
    report = measure(["diff", str(GOLDEN), str(GOLDEN)], ["diff", str(GOLDEN), str(bomb)])
    assert report["code"] == 2  # diff(1)'s "trouble"
    assert "does not match the manifest schema (each list and map is checked up to its first bad entry)" \
        in report["stderr"]
    assert "pinned.layers.0.name: Field required" in report["stderr"]
    assert len(report["stderr"]) < MAX_MESSAGE, report["stderr"][:2000]
    assert report["growth_mb"] < MAX_GROWTH_MB, report


@pytest.mark.parametrize("field", ["activations", "layers", "weights"])
def test_an_engine_header_of_a_million_empty_entries_is_refused_in_bounded_memory(tmp_path: Path,
                                                                                   field: str) -> None:
    """``inspect`` once took 1 to 7 GB and printed a 213 MB message for such a header (re-signed: valid trailer)."""
    engine = make_engine.Engine(make_engine.build("mlp.onnx"))
    good = tmp_path / "good.engine"
    good.write_bytes(engine.pack())
    engine.header[field] = [{}] * 1_000_000
    bomb = tmp_path / "bomb.engine"
    bomb.write_bytes(engine.pack())
    for command in ("inspect", "run"):
        report = measure(["inspect", str(good)], [command, str(bomb)])
        assert report["code"] == 4, report
        assert f"{field}.0." in report["stderr"] and "Field required" in report["stderr"]
        assert len(report["stderr"]) < MAX_MESSAGE, report["stderr"][:2000]
        assert report["growth_mb"] < MAX_GROWTH_MB, report


def test_an_engine_header_of_too_many_items_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """Eight lists of 900,000 empty maps each (unknown keys): over the header's item budget, refused while it is
    unpacked, before the header's schema is looked at."""
    engine = make_engine.Engine(make_engine.build("mlp.onnx"))
    good = tmp_path / "good.engine"
    good.write_bytes(engine.pack())
    engine.header.update({f"extra{i}": [{}] * 900_000 for i in range(8)})
    bomb = tmp_path / "bomb.engine"
    bomb.write_bytes(engine.pack())
    report = measure(["inspect", str(good)], ["inspect", str(bomb)])
    assert report["code"] == 4, report
    assert "engine header holds more than 4000000 list and map entries" in report["stderr"]
    assert report["growth_mb"] < 300, report  # the budget: about 64 bytes per empty map


# --- memory the machine does not really have ---------------------------------------------------------------------

GiB = 1 << 30
#: Run the measured command under an address-space limit of 4 GiB (``ulimit -v``).
_ULIMIT_4G = "import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))\n"


def _scratch_engine(path: Path, workspace: int) -> None:
    """mlp with layer fc1 reserving ``workspace`` bytes of workspace: a consistent engine (memory plan and embedded
    manifest rewritten) whose contexts need that much scratch memory."""
    engine = make_engine.Engine(make_engine.build("mlp.onnx"))
    header, manifest = engine.layer("fc1")
    header["workspace_bytes"] = manifest["workspace_bytes"] = workspace
    memory = engine.header["memory"]
    memory["workspace_bytes"] = engine.manifest["memory"]["workspace_bytes"] = workspace
    engine.manifest["memory"]["context_bytes"] = memory["workspace_offset"] + workspace + memory["library_bytes"]
    path.write_bytes(engine.pack())


def test_an_engine_over_the_address_space_limit_is_refused_naming_the_limit(tmp_path: Path) -> None:
    """8 GiB of scratch was accepted under the default cap (the host's physical memory) and then failed with an
    untyped MemoryError under ulimit -v 4 GiB (exit 1)."""
    good, bomb = tmp_path / "good.engine", tmp_path / "bomb.engine"
    _scratch_engine(good, 256)
    _scratch_engine(bomb, 8 * GiB)
    for command in ("run", "bench", "verify"):
        report = measure(["run", str(good), "--seed", "0"], [command, str(bomb), "--seed", "0"], _ULIMIT_4G)
        assert report["code"] == 13, report
        assert "the cap is 4294967296 bytes (4.0 GiB), this process's address-space limit (ulimit -v, RLIMIT_AS)" \
            in report["stderr"], report["stderr"]


def test_memory_the_cap_allows_but_the_machine_lacks_is_a_resource_error(tmp_path: Path) -> None:
    """--max-memory 16G lets the 8 GiB context through the cap; its allocation fails under ulimit -v 4 GiB and is
    a ResourceError naming what was allocated, not an internal error."""
    good, bomb = tmp_path / "good.engine", tmp_path / "bomb.engine"
    _scratch_engine(good, 256)
    _scratch_engine(bomb, 8 * GiB)
    report = measure(["run", str(good), "--seed", "0"], ["run", str(bomb), "--seed", "0", "--max-memory", "16G"],
                     _ULIMIT_4G)
    assert report["code"] == 13, report
    assert "could not allocate 8589941760 bytes (8.0 GiB) of context scratch memory on cpu" in report["stderr"]


def _raise_memory_error(*args: Any, **kwargs: Any) -> Any:
    raise MemoryError


def test_a_memory_error_while_timing_is_a_resource_error_naming_the_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    import reprobuild.builder.builder as builder_module
    from reprobuild.builder import Builder, BuilderConfig
    from reprobuild.core.errors import ResourceError
    from reprobuild.core.logger import Logger, Severity
    from reprobuild.frontend import network_from_onnx_path

    network, _ = network_from_onnx_path(str(Path(REPO, "examples", "mlp.onnx")), Logger(Severity.ERROR))
    monkeypatch.setattr(builder_module, "time_candidates", _raise_memory_error)
    with pytest.raises(ResourceError, match=r"the build ran out of memory while timing the tactics of layer 'fc1' "
                                            r"\(FusedGemm\) .*although it fits the cap"):
        Builder(Logger(Severity.ERROR)).build(network, BuilderConfig(backend="cpu", warmup=0, iterations=1))


def test_a_memory_error_in_a_running_layer_is_a_resource_error_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    """A CPU kernel's temporary arrays are a run's only allocations; its MemoryError names the layer (and on the
    command line is exit 13, like any MemoryError no site names)."""
    import numpy as np

    from reprobuild.cli.main import main
    from reprobuild.core.errors import ResourceError
    from reprobuild.engine import Runtime

    data = make_engine.Engine(make_engine.build("mlp.onnx")).pack()
    engine = Runtime().deserialize_engine(data)
    context = engine.create_execution_context()
    monkeypatch.setattr(np, "exp", _raise_memory_error)  # the softmax's temporary
    with pytest.raises(ResourceError, match=r"engine layer 'softmax' \(op Softmax, tactic softmax\.\S+ v\d+\) ran out "
                                            r"of memory"):
        context.execute({"input": np.zeros((8, 64), np.float32)})
    path = tmp_path / "mlp.engine"
    path.write_bytes(data)
    monkeypatch.setattr("reprobuild.cli.run.run", _raise_memory_error)
    assert main(["run", str(path), "--seed", "0"]) == 13


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_device_memory_the_cap_allows_but_the_gpu_lacks_is_a_resource_error(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A cuda engine whose contexts need 1 TiB of scratch, loaded with --max-memory 2T: CuPy's OutOfMemoryError
    (a MemoryError) is a ResourceError naming the scratch memory, exit 13."""
    from reprobuild.builder import Builder, BuilderConfig
    from reprobuild.core.logger import Logger, Severity
    from reprobuild.frontend import network_from_onnx_path

    quiet = Logger(Severity.ERROR)
    network, _ = network_from_onnx_path(str(Path(REPO, "examples", "mlp.onnx")), quiet)
    config = BuilderConfig(backend="cuda", warmup=0, iterations=1, runs_per_sample=1,
                           algorithm_selector=make_engine.FirstEligible())
    engine = make_engine.Engine(Builder(quiet).build(network, config).engine)
    header, manifest = engine.layer("fc1")
    header["workspace_bytes"] = manifest["workspace_bytes"] = 1 << 40
    memory = engine.header["memory"]
    memory["workspace_bytes"] = engine.manifest["memory"]["workspace_bytes"] = 1 << 40
    engine.manifest["memory"]["context_bytes"] = memory["workspace_offset"] + (1 << 40) + memory["library_bytes"]
    path = tmp_path / "huge.engine"
    path.write_bytes(engine.pack())
    from tests.helpers import run_cli

    code, _, err = run_cli(capsys, "run", str(path), "--seed", "0", "--max-memory", "2T")
    assert code == 13, err
    assert "of context scratch memory on cuda" in err and "could not allocate" in err, err
