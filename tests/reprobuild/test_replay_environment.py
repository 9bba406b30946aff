"""A replay in another environment is reported as an environment difference, field by field (exit code 9 under
the strict policy), never as "a determinism bug"; and the pins and goldens pass under another OpenBLAS core.

Issue 20's machine: a manifest whose recorded environment equals the machine's in every field it then had, but
OpenBLAS ran other kernels (SkylakeX there, Haswell where the golden was made); the replay built, got other golden
digests, and exited 8 blaming reprobuild.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprobuild.environment.fingerprint import environment_fingerprint
from reprobuild.environment.policy import compare_environments
from reprobuild.kernels.backend import get_backend
from tests.helpers import EXAMPLES, REPO, run_cli
from tests.kernels.blas_cores import fingerprint_with_core, other_core, with_core

GOLDEN_MLP = Path(REPO, "manifests", "golden", "mlp.cpu.manifest.json")


def _golden_recorded_here(tmp_path: Path, **edits: str) -> tuple[Path, dict[str, str]]:
    """The mlp golden as if built on this machine, in this process's environment (then ``edits``)."""
    here = environment_fingerprint(get_backend("cpu"))
    doc = json.loads(GOLDEN_MLP.read_text())
    doc["pinned"]["environment"] = {**here, **edits}
    path = tmp_path / "mlp.manifest.json"
    path.write_text(json.dumps(doc))
    return path, here


@pytest.mark.slow
def test_strict_replay_under_another_blas_core_exits_9_naming_the_field(tmp_path: Path) -> None:
    core = other_core()
    manifest, here = _golden_recorded_here(tmp_path)
    engine = tmp_path / "mlp.engine"
    done = with_core(core, ["-m", "reprobuild", "build", f"{EXAMPLES}/mlp.onnx", "--replay", str(manifest),
                            "-o", str(engine)])
    err = done.stderr
    assert done.returncode == 9, err
    assert f"blas.core {here['blas.core']} -> {core}" in err and "env.OPENBLAS_CORETYPE" in err
    recorded = here["env.OPENBLAS_CORETYPE"]
    assert ("unset OPENBLAS_CORETYPE" if recorded == "<unset>" else f"set OPENBLAS_CORETYPE={recorded}") in err
    assert "determinism bug" not in err and "Traceback" not in err
    assert not engine.exists()


def test_compatible_policy_refuses_another_blas_core_and_says_how_to_force_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    here = environment_fingerprint(get_backend("cpu"))
    recorded = "Prescott" if here["blas.core"] != "Prescott" else "Haswell"
    manifest, _ = _golden_recorded_here(tmp_path, **{"blas.core": recorded})
    code, _, err = run_cli(capsys, "build", f"{EXAMPLES}/mlp.onnx", "--replay", str(manifest),
                           "-o", str(tmp_path / "mlp.engine"), "--env-policy", "compatible")
    assert code == 9, err
    assert f"1 field(s) (blas.core {recorded} -> {here['blas.core']})" in err and "refused" in err
    if here["blas.api"] == "openblas":
        assert f"OPENBLAS_CORETYPE={recorded} forces those" in err
    assert "determinism bug" not in err


@pytest.mark.parametrize("field", ["blas", "blas.api", "blas.version", "blas.core", "blas.threading",
                                   "blas.threads", "cpu.vendor", "cpu.family", "cpu.model_number", "cpu.model",
                                   "cpu.flags", "cpu.simd", "cpu.count", "env.OPENBLAS_CORETYPE", "env.MKL_CBWR"])
def test_compatible_policy_never_calls_a_blas_or_cpu_difference_harmless(field: str) -> None:
    """Not even one that looks like a patch release: another kernel adds in another order."""
    diffs = {d.field: d for d in compare_environments({field: "3.11.7", "python": "3.11.7"},
                                                      {field: "3.11.8", "python": "3.11.8"})}
    assert diffs[field].harmless is None and not diffs[field].allowed("compatible")
    assert diffs["python"].allowed("compatible")  # what compatible is for stays allowed


@pytest.mark.slow
def test_pins_and_goldens_pass_under_another_openblas_core() -> None:
    """CI's second OpenBLAS core: the pins test and the golden replay in a process with OPENBLAS_CORETYPE set
    (exact where the recorded environment is that one, else within tolerance with the difference named)."""
    core = other_core()
    assert fingerprint_with_core(core)["blas.core"].lower() == core.lower()
    done = with_core(core, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "default",
                            "tests/kernels/test_tactic_pins.py::test_every_tactic_matches_its_pins[cpu]",
                            "tests/reprobuild/test_golden.py::test_golden_manifest_replays_to_its_engine_digest"],
                     timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout, done.stdout[-3000:]
