"""benchmarks/bench_peers.py without torch: the output check (``judge``) and the report written from the JSON of
earlier runs (``--from-json``), which is how the lead assembles BENCHMARKS.md from several GPU calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks import bench_peers


def test_judge_same_precision_and_narrow() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((2, 8, 16))
    assert bench_peers.judge(reference.astype(np.float32), reference, None, "fp32")["match"]
    off = bench_peers.judge((reference + 1e-2).astype(np.float32), reference, None, "fp32")
    assert not off["match"] and off["max_abs"] > 9e-3
    # a narrow engine far from PyTorch's narrow output but no further from fp32 than twice PyTorch's own error
    reference32 = reference + 0.2
    narrow = bench_peers.judge(reference + 0.5, reference, reference32, "fp16", "padded_")
    assert narrow["padded_match"] and np.isclose(narrow["padded_peer_fp16_error"], 0.2)
    assert not bench_peers.judge(reference + 0.5, reference, reference + 0.1, "fp16")["match"]
    assert not bench_peers.judge(np.zeros(4), np.zeros(4), None, "fp32")["match"]  # a constant output checks nothing


def test_every_model_of_a_set_has_default_batches() -> None:
    assert set(bench_peers.SETS["all"]) == set(bench_peers.DEFAULT_BATCHES)
    assert {bench_peers.DEFAULT_BATCHES[m] for m in bench_peers.TRANSFORMER_SET} == {(1, 8)}
    assert {"bert_base", "gpt2", "llama_block", "swin_t", "vit_b_16"} == set(bench_peers.TRANSFORMER_SET)


def test_report_from_json(tmp_path: Path) -> None:
    bert = {"model": "bert_base", "batch": 1, "precision": "fp16", "description": "BertModel, BertConfig()",
            "opset": 18, "attention": "sdpa", "exporter": "dynamo", "build_s": 10.0, "replay_s": 0.5,
            "identical": True, "layers": 300, "graph": True, "max_abs": 1e-3, "max_abs_fp32": 2e-3,
            "peer_fp16_error": 3e-3, "padded_max_abs": 4e-3, "padded_match": True, "match": True,
            "compile_s": None, "reprobuild_ms": 1.0, "eager_ms": 2.0, "eager+graph_ms": 1.25}
    gpt2 = {"model": "gpt2", "batch": 8, "precision": "fp32", "error": "export failed: RuntimeError: aten::diff"}
    resnet = {"model": "resnet50", "batch": 1, "precision": "fp32", "build_s": 5.0, "replay_s": 0.25,
              "identical": True, "layers": 60, "graph": True, "max_abs": 1e-5, "match": True, "compile_s": None,
              "reprobuild_ms": 0.8, "eager_ms": 2.0, "eager+graph_ms": 1.0}
    run = {"environment": ["- reprobuild commit: abc1234"], "argv": ["--set", "all"], "rows": [bert, gpt2, resnet]}
    (tmp_path / "run.json").write_text(json.dumps(run))
    out = tmp_path / "B.md"
    assert bench_peers.main(["--from-json", str(tmp_path / "run.json"), "--out", str(out)]) == 0
    report = out.read_text()
    assert "- bert_base: BertModel, BertConfig(); dynamo exporter, opset 18; attention: sdpa" in report
    assert "gpt2:" not in report.split("## Results")[0]  # a model that never exported has no Models line
    assert "yes (1.0e-03; vs fp32 2.0e-03, PyTorch fp16 vs fp32 3.0e-03; padded input yes 4.0e-03)" in report
    assert "| gpt2 | 8 | fp32 | - | - | - | not built: export failed: RuntimeError: aten::diff |" in report
    # issue 22 judges a transformer against the best PyTorch peer; issue 9 a CNN against eager+graph
    assert ("- bert_base batch 1 fp16: 0.80x the best PyTorch (eager or eager+graph), target <= 1.0x: met"
            in report)
    assert "- resnet50 batch 1 fp32: 0.80x eager+graph, target <= 0.9x: met" in report
    assert "- gpt2 batch 8 fp32: not built (export failed: RuntimeError: aten::diff): target not met" in report


def test_an_isolated_row_is_the_childs_row_or_says_how_the_child_ended(tmp_path: Path, monkeypatch) -> None:
    """--isolate: each row in a process of its own; a crash (a device-side assert poisons the CUDA context) costs
    that row only, and its cell names the last error line."""
    import argparse
    import subprocess

    args = argparse.Namespace(backend="cuda", seq=128, runs=5, warmup=1, compile_precisions="", seed=0,
                              graph_peer=True, any_det=False, control=False)
    calls = []

    def child(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(command)
        out = command[-1]
        if "bert_base" in command:  # the child dies on a device assert, writing no row
            return subprocess.CompletedProcess(command, -6, "", "Traceback ...\ntorch.AcceleratorError: CUDA error: "
                                               "device-side assert triggered\nSearch for `cudaErrorAssert'\n")
        Path(out).write_text(json.dumps({"reprobuild_ms": 1.5, "match": True}))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bench_peers.subprocess, "run", child)
    good = bench_peers.isolated_row("vit_b_16", 1, "fp16", args, str(tmp_path / "m.onnx"), str(tmp_path))
    assert good == {"reprobuild_ms": 1.5, "match": True}
    command = calls[-1]
    assert command[command.index("--child-row") + 1:] == [str(tmp_path / "m.onnx"),
                                                          str(tmp_path / "vit_b_16_b1_fp16.row.json")]
    assert "--no-any-det" in command and "--no-graph-peer" not in command
    bad = bench_peers.isolated_row("bert_base", 1, "fp16", args, str(tmp_path / "b.onnx"), str(tmp_path))
    assert bad == {"error": "crashed (exit -6): torch.AcceleratorError: CUDA error: device-side assert triggered"}
