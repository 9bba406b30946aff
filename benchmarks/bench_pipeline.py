"""Build time and inference latency of a whole model, against a peer in the same run.

    python benchmarks/bench_pipeline.py --backend cuda --model light_resnet50.onnx --runs 200

Builds the model (ConstantOfShape weights replaced by seeded random ones, as in the tests), then times
``context.enqueue`` + synchronize over ``--runs`` runs after ``--warmup`` runs: the median is the figure. The peer
is torchvision's ResNet-50 in PyTorch eager fp32 at the same batch size (same architecture and FLOPs, not the same
weights), timed the same way in the same process, when PyTorch is installed. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from tests.helpers import light_model, model_inputs


def time_calls(fn: Any, sync: Any, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def torch_peer(batch: int, warmup: int, runs: int) -> dict[str, Any] | None:
    try:
        import torch
        import torchvision
    except ImportError as exc:
        return {"skipped": f"PyTorch not available: {exc}"}
    if not torch.cuda.is_available():
        return {"skipped": "PyTorch sees no CUDA device"}
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = torchvision.models.resnet50().eval().cuda()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        samples = time_calls(lambda: model(x), torch.cuda.synchronize, warmup, runs)
    return {"name": "torchvision resnet50, eager fp32 (TF32 off, cudnn.benchmark off)",
            "median_ms": statistics.median(samples), "samples_ms": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", default="light_resnet50.onnx")
    parser.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()

    model = light_model(args.model, seed=0)
    rng = np.random.default_rng(0)
    feeds = model_inputs(model, rng)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    t0 = time.perf_counter()
    result = Builder(Logger(Severity.WARNING)).build(network, BuilderConfig(backend=args.backend))
    build_s = time.perf_counter() - t0
    engine = Runtime().deserialize_engine(result.engine)
    context = engine.create_execution_context()
    samples = time_calls(lambda: context.enqueue(feeds), context.synchronize, args.warmup, args.runs)
    ours = statistics.median(samples)
    chosen: dict[str, int] = {}
    for layer in result.manifest.pinned.layers:
        chosen[layer.tactic.name] = chosen.get(layer.tactic.name, 0) + 1
    report: dict[str, Any] = {
        "model": args.model, "backend": engine.backend.name, "batch": int(next(iter(feeds.values())).shape[0]),
        "environment": result.manifest.pinned.environment, "build_seconds": build_s,
        "tactics_timed": result.manifest.evidence.tactics_timed if result.manifest.evidence else None,
        "engine_sha256": result.engine_sha256, "median_ms": ours, "p10_ms": float(np.percentile(samples, 10)),
        "p90_ms": float(np.percentile(samples, 90)), "runs": args.runs, "chosen_tactics": dict(sorted(chosen.items())),
    }
    peer = None if args.no_peer or engine.backend.name != "cuda" else torch_peer(report["batch"], args.warmup,
                                                                                 args.runs)
    report["peer"] = peer
    print(f"model           {args.model} (batch {report['batch']}, {engine.backend.name}, "
          f"{result.manifest.pinned.environment.get('gpu.name', result.manifest.pinned.environment.get('cpu.model'))})")
    print(f"build           {build_s:.2f} s, {report['tactics_timed']} tactic timings")
    print(f"engine          {result.engine_sha256}")
    print(f"reprobuild      median {ours:.3f} ms  (p10 {report['p10_ms']:.3f}, p90 {report['p90_ms']:.3f}) "
          f"over {args.runs} runs")
    if peer and "median_ms" in peer:
        print(f"peer            median {peer['median_ms']:.3f} ms  {peer['name']}")
        print(f"ratio           {ours / peer['median_ms']:.2f}x the peer's latency (lower is better)")
    elif peer:
        print(f"peer            {peer['skipped']}")
    print("chosen tactics  " + ", ".join(f"{k} x{v}" for k, v in report["chosen_tactics"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in report.items()}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
