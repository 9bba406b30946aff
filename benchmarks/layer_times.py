"""Where an engine's time goes, layer by layer: build a torchvision model (seeded random weights, as bench_peers)
and list its layers by the chosen tactic's timed median, with each layer's share, op, tactic, shapes and the
runner-up. The sum of the medians is what the layers cost run back to back in the build's timing graphs.

    python benchmarks/layer_times.py --model resnet50 --batch 32 --precision fp16 [--top 25]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_torchvision import export, make_model
from reprobuild.builder import Builder, BuilderConfig
from reprobuild.frontend import network_from_onnx_path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "fp16", "bf16"))
    parser.add_argument("--backend", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--top", type=int, default=25, help="layers listed (default: 25)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model, example = make_model(args.model, args.seed, args.batch)
        path = os.path.join(tmp, f"{args.model}.onnx")
        export(model, example, path, 17)
        network, _ = network_from_onnx_path(path)
        manifest = Builder().build(network, BuilderConfig(backend=args.backend, precision=args.precision)).manifest
    assert manifest.evidence is not None
    rows = []
    for layer, evidence in zip(manifest.pinned.layers, manifest.evidence.layers):
        timed = sorted((c for c in evidence.candidates if c.median_ns is not None), key=lambda c: c.median_ns or 0)
        chosen = next((c for c in timed if c.status == "chosen"), None)
        if chosen is None:
            continue
        runner = next((c for c in timed if c is not chosen), None)
        shapes = " ".join("x".join(map(str, t.shape)) for t in layer.inputs[:1] + layer.outputs[:1])
        rows.append((chosen.median_ns or 0, layer.name, layer.op, layer.tactic.name, shapes,
                     f"{runner.tactic.name} {(runner.median_ns or 0) / 1e3:.1f}" if runner else "-"))
    total = sum(r[0] for r in rows)
    print(f"{args.model} batch {args.batch} {args.precision}: {len(rows)} layers, sum of medians "
          f"{total / 1e6:.3f} ms")
    by_tactic: dict[str, float] = defaultdict(float)
    for r in rows:
        by_tactic[r[3]] += r[0]
    print("by tactic: " + ", ".join(f"{k} {v / 1e6:.3f} ms ({100 * v / total:.0f}%)"
                                    for k, v in sorted(by_tactic.items(), key=lambda kv: -kv[1])))
    print(f"{'us':>9} {'share':>6}  layer / op / tactic / input -> output / runner-up (us)")
    for ns, name, op, tactic, shapes, runner in sorted(rows, reverse=True)[:args.top]:
        print(f"{ns / 1e3:9.1f} {100 * ns / total:5.1f}%  {name} {op} {tactic} {shapes} | {runner}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
