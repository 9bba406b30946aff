"""verify --ray: fleet verification as Ray tasks, the comparison done here. CI runs a real local Ray instance
(``--ray local``; Ray 2.60 has no local_mode) on the cpu backend: the same task code a cluster runs. Ray starts in
a few seconds; each test that starts it shuts it down, even when it fails."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprobuild.cli.main import main
from reprobuild.core.errors import UsageError
from reprobuild.engine.golden import golden_inputs
from reprobuild.verify.fleet import (
    FleetPlan,
    engine_outline,
    fleet_report,
    import_ray,
    ray_session,
    run_tasks,
    task_options,
    verify_on_ray,
)
from reprobuild.verify.records import DeviceResult
from tests.helpers import CUDA_SKIP, EXAMPLES, several_gpus


@pytest.fixture(scope="module")
def mlp_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fleet") / "mlp.engine"
    assert main(["build", f"{EXAMPLES}/mlp.onnx", "-o", str(path), "--backend", "cpu", "-q"]) == 0
    return path


@pytest.fixture
def ray_module() -> Iterator[Any]:
    """Ray, shut down after the test whatever happens (the code under test shuts down what it started)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (CI installs it)")
    assert not ray.is_initialized(), "a Ray instance leaked from an earlier test"
    try:
        yield ray
    finally:
        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture
def fleet_results(mlp_engine: Path, ray_module: Any) -> list[DeviceResult]:
    """Two real Ray tasks on the mlp engine, for the tests that judge their results."""
    data = mlp_engine.read_bytes()
    outline = engine_outline(data)
    plan = FleetPlan(address="local", tasks=2, runs=3, contexts=1, traced_runs=2)
    with ray_session(ray_module, "local", "cpu", 2):
        return run_tasks(ray_module, data, golden_inputs(outline.inputs, 0), "cpu", plan, 2)


def test_cli_ray_local_runs_two_tasks_and_reports_both(mlp_engine: Path, tmp_path: Path, ray_module: Any,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "fleet.json"
    started = time.perf_counter()
    code = main(["verify", str(mlp_engine), "--ray", "local", "--ray-tasks", "2", "--runs", "3",
                 "--report", str(report_path), "-q"])
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert code == 0, out
    assert seconds < 60, f"--ray local took {seconds:.1f} s"
    assert not ray_module.is_initialized()  # the Ray instance it started is shut down
    assert "plan       Ray at local" in out and "2 task(s)" in out
    assert "cross_process    identical   2 tasks sharing a device, each its own process: identical" in out
    assert "tier       cross_process" in out and "verdict    deterministic" in out
    report = json.loads(report_path.read_text())
    assert report["tier"] == "cross_process" and report["deterministic"] is True
    assert report["fleet"]["address"] == "local" and report["fleet"]["tasks"] == 2
    assert [d["task"] for d in report["devices"]] == [0, 1]
    assert all(d["label"].startswith(f"task {d['task']} (node ") for d in report["devices"])
    assert all(d["outputs"] == report["reference"] and d["identical"] for d in report["devices"])


def test_ray_tasks_agree_and_carry_their_environment(fleet_results: list[DeviceResult], mlp_engine: Path) -> None:
    outline = engine_outline(mlp_engine.read_bytes())
    assert [r.task for r in fleet_results] == [0, 1]
    assert all(r.env == {"NCCL_NVLS_ENABLE": "0"} for r in fleet_results)  # seen inside each task
    assert all(r.fingerprint["backend"] == "cpu" and "reprobuild" in r.fingerprint for r in fleet_results)
    assert all(len(r.layers) == len(outline.layers) and len(r.runs) == 3 for r in fleet_results)
    report = fleet_report(outline, fleet_results, FleetPlan("local", 2, runs=3, contexts=1, traced_runs=2), "seed 0",
                          1.0, "test")
    by = {d.name: d for d in report.dimensions}
    assert report.deterministic and report.tier == "cross_process"
    assert all(by[n].tested and by[n].identical for n in ("run_to_run", "layer_outputs", "cross_context",
                                                           "cross_process"))
    assert not by["cross_device"].tested  # both tasks ran on this machine's cpu: one device


def test_a_tampered_task_result_is_named_with_its_first_differing_layer(fleet_results: list[DeviceResult],
                                                                         mlp_engine: Path) -> None:
    outline = engine_outline(mlp_engine.read_bytes())
    good, other = fleet_results
    layers = list(other.layers)
    layers[2] = "0" * 64
    # as if task 1 ran on another node: cross_device is then tested, and fails
    tampered = other.model_copy(update={"runs": ["f" * 64] * 3, "fresh": ["f" * 64], "layers": layers,
                                        "where": "another-node/cpu", "label": "task 1 (node far, cpu)"})
    report = fleet_report(outline, [good, tampered], FleetPlan("local", 2, runs=3, contexts=1), "seed 0", 1.0, "t")
    by = {d.name: d for d in report.dimensions}
    assert not report.deterministic and report.tier == "cross_context"
    assert by["cross_process"].identical is False and by["cross_device"].identical is False
    name, op, tactic = outline.layers[2]
    assert (f"first task 1 (node far, cpu): differs from {good.label}: first at layer 2 {name!r} ({op}, {tactic})"
            in by["cross_device"].detail)
    verdict = report.devices[1]
    assert verdict.identical is False and verdict.first_layer is not None
    assert (verdict.first_layer.index, verdict.first_layer.name, verdict.first_layer.tactic) == (2, name, tactic)


def test_a_failing_task_is_a_typed_error_naming_the_task(mlp_engine: Path, ray_module: Any) -> None:
    from reprobuild.core.errors import FormatError

    data = mlp_engine.read_bytes()
    outline = engine_outline(data)
    damaged = bytearray(data)
    damaged[-40] ^= 1  # the trailer no longer matches: every task's Runtime refuses the engine
    failing = pytest.raises(FormatError, match=r"^Ray task 0 failed: engine is corrupted or truncated")
    with failing, ray_session(ray_module, "local", "cpu", 2):
        run_tasks(ray_module, bytes(damaged), golden_inputs(outline.inputs, 0), "cpu", FleetPlan("local", 2), 2)
    assert not ray_module.is_initialized()


def test_task_options_ask_for_one_device_and_keep_nvlink_multicast_off() -> None:
    cuda, cpu = task_options("cuda"), task_options("cpu")
    assert cuda["num_gpus"] == 1 and "num_cpus" not in cuda
    assert cpu["num_cpus"] == 1 and "num_gpus" not in cpu
    for options in (cuda, cpu):
        assert options["runtime_env"] == {"env_vars": {"NCCL_NVLS_ENABLE": "0"}}
        assert options["max_retries"] == 0 and options["scheduling_strategy"] == "SPREAD"


def test_without_ray_installed_the_error_names_the_extra(mlp_engine: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UsageError, match=r"install the extra: pip install -e '\.\[ray\]'"):
        import_ray()
    assert main(["verify", str(mlp_engine), "--ray", "local", "-q"]) == 2
    assert "--ray needs Ray, which is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--ray-tasks", "2"], "--ray-tasks needs --ray ADDRESS"),
    (["--ray", "local", "--devices", "0"], "cannot be combined with --devices"),
    (["--ray", "local", "--threads", "2", "--processes", "2"], "cannot be combined with --threads, --processes"),
    (["--ray", "local", "--ray-tasks", "0"], "--ray-tasks must be at least 1; got 0"),
])
def test_cli_refuses_options_that_do_not_fit_a_fleet(mlp_engine: Path, args: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(mlp_engine), *args, "-q"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_ray_local_across_every_gpu(tmp_path: Path, ray_module: Any, capsys: pytest.CaptureFixture[str]) -> None:
    count = several_gpus()
    engine = tmp_path / "cnn.engine"
    assert main(["build", f"{EXAMPLES}/small_cnn.onnx", "-o", str(engine), "--backend", "cuda", "-q"]) == 0
    capsys.readouterr()
    data = engine.read_bytes()
    outline = engine_outline(data)
    report = verify_on_ray(data, golden_inputs(outline.inputs, 0), FleetPlan("local", runs=3), "seed 0", outline)
    assert len(report.devices) == count and sorted(d.device for d in report.devices) == list(range(count))
    if len({d.hardware for d in report.devices}) > 1:
        pytest.skip("the GPUs are of several models, which are not compared bitwise")
    assert report.deterministic and report.tier == "cross_device", report.model_dump_json(indent=1)


def test_an_address_where_nothing_listens_is_refused_at_once(mlp_engine: Path, ray_module: Any,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Ray alone retries an unreachable address for minutes; reprobuild says so within its connect timeout."""
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    assert main(["verify", str(mlp_engine), "--ray", f"127.0.0.1:{port}", "-q"]) == 2
    assert time.perf_counter() - started < 30
    assert f"nothing answers at 127.0.0.1:{port}" in capsys.readouterr().err
