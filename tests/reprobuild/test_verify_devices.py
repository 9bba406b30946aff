"""verify --devices: the cross_device dimension from one worker process per device. The comparison is a pure
function of the workers' results, so synthetic results test it here (identical devices, one that differs, GPUs of
different models); the worker processes run for real on the cpu backend's one device; several GPUs need the
gpu-marked test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reprobuild.cli.main import main
from reprobuild.core.errors import UsageError
from reprobuild.engine import Runtime
from reprobuild.engine.golden import golden_inputs
from reprobuild.kernels import backend as backend_module
from reprobuild.kernels.backend import MULTI_DEVICE_ENV, resolve_devices
from reprobuild.verify.devices import collect_device_results, compare_devices, spawn_device_workers
from reprobuild.verify.records import DeviceResult, Dimension, VerifyPlan
from reprobuild.verify.run import tier_reached, verify
from tests.helpers import CUDA_SKIP, EXAMPLES, several_gpus

H100 = {"backend": "cuda", "gpu.name": "NVIDIA H100 80GB HBM3", "gpu.compute_capability": "90",
        "cuda.driver": "12080"}
A100 = {**H100, "gpu.name": "NVIDIA A100-SXM4-80GB", "gpu.compute_capability": "80"}
LAYERS = [("conv1", "Conv", "conv.cuda_direct v1"), ("relu1", "Relu", "elementwise.cuda_relu v1"),
          ("fc", "Gemm", "gemm.cuda_tiled v2")]


def result(device: int, *, fingerprint: dict[str, str] = H100, layers: tuple[str, ...] = ("l0", "l1", "l2"),
           runs: tuple[str, ...] = ("out",), **update: Any) -> DeviceResult:
    """A device worker's result: digests are short stand-ins, equal where the bits are meant to be equal."""
    fields: dict[str, Any] = dict(label=f"GPU {device}", device=device, where=f"gpu{device}",
                                  fingerprint=fingerprint, runs=list(runs), fresh=[runs[0]],
                                  outputs={"y": runs[0]}, layers=list(layers), traced_runs=1,
                                  env=dict(MULTI_DEVICE_ENV))
    return DeviceResult(**{**fields, **update})


def lower_tiers_held() -> list[Dimension]:
    return [Dimension(name=n, tested=True, identical=True, detail="")
            for n in ("run_to_run", "cross_context", "cross_process")]


def test_identical_devices_reach_cross_device() -> None:
    dim, verdicts = compare_devices([result(0), result(1), result(2)], LAYERS)
    assert (dim.name, dim.tested, dim.identical) == ("cross_device", True, True)
    assert "3 devices of NVIDIA H100 80GB HBM3 (compute capability 90): identical bits" in dim.detail
    assert [v.identical for v in verdicts] == [True, True, True]
    assert [v.reference for v in verdicts] == [True, False, False]
    assert verdicts[1].detail == "identical to GPU 0" and verdicts[1].first_layer is None
    assert tier_reached([*lower_tiers_held(), dim]) == "cross_device"


def test_a_device_that_differs_is_named_with_its_first_differing_layer() -> None:
    odd = result(1, layers=("l0", "L1", "L2"), runs=("other",))
    dim, verdicts = compare_devices([result(0), odd, result(2)], LAYERS)
    assert dim.tested and dim.identical is False
    assert "1 of 3 differ; first GPU 1: differs from GPU 0: first at layer 1 'relu1'" in dim.detail
    bad = verdicts[1]
    assert bad.identical is False and bad.first_layer is not None
    assert (bad.first_layer.index, bad.first_layer.name, bad.first_layer.op, bad.first_layer.tactic) == (
        1, "relu1", "Relu", "elementwise.cuda_relu v1")
    assert verdicts[0].identical and verdicts[2].identical
    assert tier_reached([*lower_tiers_held(), dim]) == "cross_process"


def test_the_reference_is_what_most_devices_share_so_the_odd_one_is_named() -> None:
    """GPU 0 is the odd one out: it is named, not the two devices that agree with each other."""
    dim, verdicts = compare_devices([result(0, layers=("x0", "l1", "l2"), runs=("x",)), result(1), result(2)],
                                    LAYERS)
    assert dim.identical is False and "first GPU 0: differs from GPU 1: first at layer 0 'conv1'" in dim.detail
    assert [v.reference for v in verdicts] == [False, True, False]


def test_a_layer_that_differs_behind_identical_outputs_still_fails() -> None:
    dim, verdicts = compare_devices([result(0), result(1, layers=("l0", "l1", "changed"))], LAYERS)
    assert dim.identical is False
    assert verdicts[1].first_layer is not None and verdicts[1].first_layer.name == "fc"


def test_a_device_whose_own_runs_differ_fails() -> None:
    dim, verdicts = compare_devices([result(0), result(1, runs=("out", "out", "drift"))], LAYERS)
    assert dim.identical is False and not verdicts[1].repeatable
    assert "its 3 runs on one context gave 2 distinct results" in verdicts[1].detail


def test_devices_of_different_models_are_not_comparable() -> None:
    dim, verdicts = compare_devices([result(0), result(1, fingerprint=A100, runs=("other",))], LAYERS)
    assert not dim.tested and dim.identical is None
    assert dim.detail.startswith("not comparable: the devices are of 2 models (NVIDIA H100 80GB HBM3 (compute "
                                 "capability 90): GPU 0; NVIDIA A100-SXM4-80GB (compute capability 80): GPU 1)")
    assert [v.identical for v in verdicts] == [None, None]
    assert tier_reached([*lower_tiers_held(), dim]) == "cross_process"


def test_each_model_is_compared_within_itself() -> None:
    results = [result(0), result(1), result(2, fingerprint=A100, runs=("other",), layers=("a", "b", "c"))]
    dim, verdicts = compare_devices(results, LAYERS)
    assert dim.tested and dim.identical is True
    assert "not comparable with them (no other device of their model): GPU 2 (NVIDIA A100" in dim.detail
    assert verdicts[2].identical is None and verdicts[2].hardware.startswith("NVIDIA A100")


def test_environment_differences_are_listed() -> None:
    _, verdicts = compare_devices([result(0), result(1, fingerprint={**H100, "cuda.driver": "12090"})], LAYERS)
    assert verdicts[1].identical and verdicts[1].environment_differences == ["cuda.driver: 12080 -> 12090"]


def test_one_device_leaves_cross_device_untested() -> None:
    dim, verdicts = compare_devices([result(0)], LAYERS)
    assert not dim.tested and "needs two or more devices of one model" in dim.detail
    assert verdicts[0].identical is None


# --- which devices ------------------------------------------------------------------------------------------


def test_a_cpu_engine_has_one_device() -> None:
    assert resolve_devices("all", "cpu") == [0] and resolve_devices((0,), "cpu") == [0]
    with pytest.raises(UsageError, match=r"--devices 1: this is a cpu engine, and the cpu backend has one device, 0"):
        resolve_devices((1,), "cpu")
    with pytest.raises(UsageError, match="distinct GPU indices"):
        resolve_devices((0, 0), "cpu")


def test_gpu_indices_are_checked_against_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_module, "device_count", lambda: 2)
    assert resolve_devices("all", "cuda") == [0, 1]
    assert resolve_devices((1, 0), "cuda") == [1, 0]
    with pytest.raises(UsageError, match=r"--devices 0,2: there is no GPU 2: this process sees 2"):
        resolve_devices((0, 2), "cuda")
    monkeypatch.setattr(backend_module, "device_count", lambda: 0)
    with pytest.raises(UsageError, match="--devices all: this process sees no GPU"):
        resolve_devices("all", "cuda")


@pytest.fixture
def mlp_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["build", f"{EXAMPLES}/mlp.onnx", "-o", str(tmp_path / "mlp.engine"), "--backend", "cpu", "-q"]) == 0
    capsys.readouterr()
    return tmp_path / "mlp.engine"


def test_cli_refuses_a_gpu_index_for_a_cpu_engine(mlp_engine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(mlp_engine), "--devices", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--devices 1: this is a cpu engine, and the cpu backend has one device, 0" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text", ["0,0", "gpu0", "0,,1", "-1"])
def test_cli_refuses_duplicate_or_garbled_devices(mlp_engine: Path, text: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["verify", str(mlp_engine), f"--devices={text}"])
    assert exit_.value.code == 2 and "argument --devices" in capsys.readouterr().err


def test_cli_devices_on_the_cpu_runs_a_worker_and_reports_it(mlp_engine: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "verify.json"
    code = main(["verify", str(mlp_engine), "--devices", "all", "--runs", "3", "--report", str(report_path), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "+ 1 device worker(s) on the cpu" in out
    assert "cross_process    identical   this process and the device worker process on cpu" in out
    assert "cross_device     not tested  1 device(s)" in out
    report = json.loads(report_path.read_text())
    (device,) = report["devices"]
    assert device["label"] == "cpu" and device["device"] is None and device["repeatable"] is True
    assert device["outputs"] == report["reference"] and device["identical"] is None
    assert report["tier"] == "cross_process" and report["fleet"] is None


def test_without_devices_the_report_is_as_before(mlp_engine: Path) -> None:
    engine = Runtime().deserialize_engine(mlp_engine.read_bytes())
    report = verify(engine, golden_inputs(engine.inputs, 0), VerifyPlan(runs=2, contexts=1))
    assert report.devices == [] and report.total_runs == 3
    cross = next(d for d in report.dimensions if d.name == "cross_device")
    assert not cross.tested and "--against a manifest built on another machine" in cross.detail


def test_device_workers_run_with_nvlink_multicast_off(mlp_engine: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The env each worker process is given, and what the worker itself saw."""
    import numpy as np

    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")  # a user's setting does not reach the workers
    engine = Runtime().deserialize_engine(mlp_engine.read_bytes())
    save_npz: Any = np.savez
    save_npz(tmp_path / "inputs.npz", **golden_inputs(engine.inputs, 0))
    workers = spawn_device_workers(str(mlp_engine), str(tmp_path / "inputs.npz"), [0], VerifyPlan(runs=2))
    (result,) = collect_device_results(workers)
    assert result.env == {"NCCL_NVLS_ENABLE": "0"} == MULTI_DEVICE_ENV
    assert len(result.runs) == 2 and len(result.fresh) == 2 and len(result.layers) == engine.num_layers


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_verify_across_every_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    count = several_gpus()
    engine = tmp_path / "cnn.engine"
    assert main(["build", f"{EXAMPLES}/small_cnn.onnx", "-o", str(engine), "--backend", "cuda", "-q"]) == 0
    capsys.readouterr()
    code = main(["verify", str(engine), "--devices", "all", "--runs", "5", "--report", str(tmp_path / "r.json"),
                 "-q"])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    models = {d["hardware"] for d in report["devices"]}
    if len(models) > 1:
        assert "not comparable" in out
        pytest.skip(f"the GPUs are of {len(models)} models, which are not compared bitwise: {sorted(models)}")
    assert code == 0, out
    assert report["tier"] == "cross_device", out
    assert [d["device"] for d in report["devices"]] == list(range(count))
    assert all(d["identical"] and d["repeatable"] for d in report["devices"])
