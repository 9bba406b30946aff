"""``reprobuild bench`` and ``reprobuild.bench``: trtexec's report (percentiles, enqueue and compute times,
throughput), as text and as JSON. Figures are measured, never asserted against a speed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reprobuild.bench import Stats, benchmark
from reprobuild.cli.main import main
from reprobuild.core.errors import UsageError
from reprobuild.engine import Runtime
from tests.helpers import BACKENDS, EXAMPLES

MLP = f"{EXAMPLES}/mlp.onnx"


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "mlp.engine"
    assert main(["build", MLP, "-o", str(path), "-q", "--backend", "cpu"]) == 0
    return path


def test_stats_are_nearest_rank_percentiles_in_milliseconds() -> None:
    stats = Stats.of([i * 1_000_000 for i in range(1, 101)])  # 1 ms .. 100 ms
    assert (stats.min, stats.median, stats.p90, stats.p95, stats.p99, stats.max) == (1, 50, 90, 95, 99, 100)
    assert stats.mean == pytest.approx(50.5)
    assert Stats.of([3_000_000]).p99 == 3.0


def test_bench_json_reports_every_figure(engine_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(engine_path), "--iterations", "30", "--warmup", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["iterations"] == 30 and report["warmup_runs"] == 2 and report["backend"] == "cpu"
    assert report["cuda_graph"] is False and report["h2d"] is None and report["d2h"] is None
    assert "seed 0" in report["inputs"]
    for key in ("latency", "host_latency", "enqueue", "gpu_compute"):
        s = report[key]
        assert 0 < s["min"] <= s["median"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"], key
    assert report["throughput_qps"] == pytest.approx(30 / report["seconds"])
    assert report["engine_sha256"] == Runtime().deserialize_engine(engine_path.read_bytes()).sha256


def test_bench_text_report_and_inputs_from_a_file(engine_path: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32))
    assert main(["bench", str(engine_path), "--iterations", "5", "--input", f"input={x}"]) == 0
    out = capsys.readouterr().out
    for label in ("throughput", "latency", "host latency", "enqueue (host)", "CPU compute", "p99"):
        assert label in out
    for label in ("GPU", "H2D", "D2H"):  # a cpu engine has neither, and "GPU compute" mislabelled its compute row
        assert label not in out
    assert "5 timed iterations" in out and str(x) in out


def test_bench_duration_keeps_running_past_the_iterations(engine_path: Path) -> None:
    engine = Runtime().deserialize_engine(engine_path.read_bytes())
    x = {"input": np.random.default_rng(2).standard_normal((8, 64)).astype(np.float32)}
    report = benchmark(engine, x, iterations=1, duration=0.2, warmup=0)
    assert report.seconds >= 0.2 and report.iterations > 1 and report.warmup_runs == 0


def test_bench_runs_exactly_the_counts_asked(engine_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--warmup 0 ran one warm-up run anyway (its help said "at least 1"), and --iterations 0 ran one timed
    iteration; now --warmup 0 runs none and --iterations 0 is an argparse error naming the least."""
    from reprobuild.engine.runtime import ExecutionContext

    calls = []
    real = ExecutionContext.enqueue
    monkeypatch.setattr(ExecutionContext, "enqueue", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    assert main(["bench", str(engine_path), "--iterations", "3", "--warmup", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["warmup_runs"], report["iterations"], len(calls)) == (0, 3, 3)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", str(engine_path), "--iterations", "0"])
    assert exit_.value.code == 2
    assert "--iterations: 0 is not a count from 1 to" in capsys.readouterr().err


def test_bench_graph_on_a_cpu_engine_is_refused(engine_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(engine_path), "--iterations", "1", "--graph"]) == 2
    assert "cannot run as a CUDA graph" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, message", [({"iterations": 0}, "iterations"), ({"warmup": -1}, "warm-up"),
                                             ({"duration": float("nan")}, "duration")])
def test_bench_arguments_are_checked(engine_path: Path, kwargs: dict[str, float], message: str) -> None:
    engine = Runtime().deserialize_engine(engine_path.read_bytes())
    with pytest.raises(UsageError, match=message):
        benchmark(engine, {}, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("graph", [None, False])
def test_bench_on_each_backend(backend: str, graph: bool | None, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mlp.engine"
    assert main(["build", MLP, "-o", str(path), "-q", "--backend", backend]) == 0
    capsys.readouterr()
    flag = [] if graph is None else ["--no-graph"]
    assert main(["bench", str(path), "--iterations", "20", "--json", *flag]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == backend and report["iterations"] == 20
    assert main(["bench", str(path), "--iterations", "2", *flag]) == 0
    assert ("GPU compute" in capsys.readouterr().out) is (backend == "cuda")
    if backend == "cuda":
        assert report["cuda_graph"] is (graph is None)
        assert report["h2d"]["median"] > 0 and report["d2h"]["median"] > 0
        assert report["device_memory"]["total_bytes"] > report["device_memory"]["free_bytes"] > 0
        # the events split one iteration: H2D + compute + D2H is the event latency
        assert report["latency"]["min"] >= report["gpu_compute"]["min"]
