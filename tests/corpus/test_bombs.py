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
from tests.helpers import REPO, cli_env

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
