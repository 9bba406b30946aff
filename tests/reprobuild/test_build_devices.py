"""Explicit devices (issue 12): the backend, Runtime and BuilderConfig take a device; ``build --devices`` builds on
each listed device in parallel processes and says whether they chose alike. On the CPU only device 0 exists, so CI
runs the whole ``--devices`` path with one device; several GPUs need the gpu-marked test."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.cli.devices import choice_differences, device_path, parse_devices
from reprobuild.cli.main import main
from reprobuild.core.errors import UsageError
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels.backend import get_backend
from reprobuild.manifest import read_manifest
from tests.helpers import CUDA_SKIP, EXAMPLES, several_gpus

SMALL_CNN = f"{EXAMPLES}/small_cnn.onnx"


def test_the_cpu_backend_has_device_zero_only() -> None:
    assert get_backend("cpu", 0) is get_backend("cpu") is get_backend("cpu", None)
    with pytest.raises(UsageError, match="the cpu backend has one device, 0; got device 1"):
        get_backend("cpu", 1)
    with pytest.raises(UsageError, match="a GPU index, 0 or more"):
        get_backend("cpu", -1)


def test_runtime_and_builder_config_refuse_a_device_that_is_not_an_index() -> None:
    with pytest.raises(UsageError, match="device must be a GPU index"):
        Runtime(device=-2)
    network, _ = network_from_onnx_path(f"{EXAMPLES}/mlp.onnx")
    with pytest.raises(UsageError, match="device must be a GPU index"):
        Builder().build(network, BuilderConfig(backend="cpu", device=True))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="got device 3"):
        Builder().build(network, BuilderConfig(backend="cpu", device=3))


@pytest.mark.parametrize("text, expected", [("all", "all"), ("0", (0,)), ("0,1,3", (0, 1, 3))])
def test_devices_option_parses(text: str, expected: object) -> None:
    assert parse_devices(text) == expected


@pytest.mark.parametrize("text", ["0,0", "-1", "gpu0", "0,,1", ""])
def test_devices_option_refuses_duplicates_and_garbage(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_devices(text)


def test_device_paths() -> None:
    assert device_path("out/m.engine", 1) == "out/m.dev1.engine"
    assert device_path("out/m.manifest.json", 0) == "out/m.dev0.manifest.json"
    assert device_path("m.bin", 2) == "m.bin.dev2"


def test_build_devices_runs_the_parallel_path_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On the CPU the one device 0: a worker process builds it, and the report compares the devices' choices."""
    engine = tmp_path / "cnn.engine"
    assert main(["build", SMALL_CNN, "-o", str(engine), "--backend", "cpu", "--devices", "0", "--iterations", "1",
                 "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    built = tmp_path / "cnn.dev0.engine"
    assert built.exists() and (tmp_path / "cnn.dev0.manifest.json").exists() and not engine.exists()
    assert re.search(rf"device 0  {re.escape(str(built))}  sha256 [0-9a-f]{{16}}", out), out
    assert "1 builds in parallel" in out and "every device chose the same tactic for every layer" in out
    manifest = read_manifest(str(tmp_path / "cnn.dev0.manifest.json"))
    assert manifest.engine is not None and manifest.engine.size_bytes == built.stat().st_size


def test_build_devices_refuses_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = str(tmp_path / "cnn.engine")
    assert main(["build", SMALL_CNN, "-o", engine, "--backend", "cpu", "--devices", "1"]) == 2
    assert "the cpu backend has one device" in capsys.readouterr().err
    assert main(["build", SMALL_CNN, "-o", engine, "--backend", "cpu", "--devices", "0",
                 "--timing-cache", str(tmp_path / "t.json")]) == 2
    assert "--timing-cache cannot be used with --devices" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["build", SMALL_CNN, "-o", engine, "--device", "0", "--devices", "0"])
    assert exit_.value.code == 2


def test_choice_differences_name_each_layer_and_each_device_choice() -> None:
    network, _ = network_from_onnx_path(SMALL_CNN)
    first = Builder().build(network, BuilderConfig(backend="cpu", iterations=1, warmup=0)).manifest
    assert choice_differences([first, first.model_copy(deep=True)]) == []
    layer = first.pinned.layers[0]
    changed = layer.model_copy(update={"tactic": layer.tactic.model_copy(update={"name": "some_other_tactic"})})
    other = first.model_copy(update={"pinned": first.pinned.model_copy(
        update={"layers": [changed, *first.pinned.layers[1:]]})})
    (line,) = choice_differences([first, other])
    assert line.startswith(f"{layer.name}: {layer.tactic.label}, ") and "some_other_tactic" in line


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_build_on_every_gpu_in_parallel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    count = several_gpus()
    engine = tmp_path / "cnn.engine"
    assert main(["build", SMALL_CNN, "-o", str(engine), "--backend", "cuda", "--devices", "all"]) == 0
    out = capsys.readouterr().out
    assert f"{count} builds in parallel" in out
    first = tmp_path / "cnn.dev0.manifest.json"
    for device in range(1, count):  # a replay of device 0's manifest on each other gives its engine
        replayed = tmp_path / f"replay{device}.engine"
        assert main(["build", SMALL_CNN, "--replay", str(first), "--device", str(device), "-o", str(replayed),
                     "-q"]) == 0
        assert replayed.read_bytes() == (tmp_path / "cnn.dev0.engine").read_bytes()
