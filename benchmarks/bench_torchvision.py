"""Real models end to end: export torchvision models (random weights, fixed seed) and a 2-layer
``nn.TransformerEncoder`` to ONNX (opset 17), build each with reprobuild, and compare the engine's outputs with
PyTorch's on the same input (fp32, TF32 off), then time both.

Runs on any machine with torch and torchvision; on a CUDA host it builds for the GPU:

    python benchmarks/bench_torchvision.py --backend cuda --json $OUT/torchvision.json

Prints one row per model: layers after passes, build seconds, max abs / max rel error against PyTorch, whether
it matches within rtol 1e-3 / atol 1e-4, and median latencies (reprobuild, PyTorch eager) over --runs runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from typing import Any

import numpy as np

MODELS = ("resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0", "densenet121",
          "regnet_y_400mf", "convnext_tiny", "vit_b_16", "transformer_encoder")
RTOL, ATOL = 1e-3, 1e-4


def randomize(model: Any, seed: int) -> None:
    """Seeded random weights that keep activations O(1) through the whole depth, so that comparing outputs means
    something (torchvision's default initialization makes several of these models output ~1e-9): He-normal
    convolution and linear weights, small biases, and BatchNorm statistics near the identity."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                # the last BatchNorm of a ResNet bottleneck scales the branch added to the residual: small, so
                # that 16 blocks do not multiply the activations' scale (torchvision's zero_init_residual idea)
                low, width = (0.1, 0.2) if name.endswith(".bn3") else (0.75, 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) * width + low)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)


def make_model(name: str, seed: int, batch: int = 1) -> tuple[Any, Any]:
    import torch

    torch.manual_seed(seed)
    if name == "transformer_encoder":
        layer = torch.nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=1024, dropout=0.0,
                                                 batch_first=True)
        model = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        example = torch.randn(batch, 32, 256)
    else:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        randomize(model, seed)
        example = torch.randn(batch, 3, 224, 224)
    return model.eval(), example


def export(model: Any, example: Any, path: str, opset: int, dynamo_only: bool = False) -> str:
    """The TorchScript exporter where this torch still has it (unless ``dynamo_only``), else the dynamo one; returns
    which was used. ``example`` is one tensor (the input "input") or a dict of named inputs, which the model takes
    positionally in the dict's order. The weights end up inside the model file (the dynamo exporter writes them to
    a side file)."""
    import onnx
    import torch

    inputs = example if isinstance(example, dict) else {"input": example}
    args, names = tuple(inputs.values()), list(inputs)
    with torch.no_grad():
        try:
            if dynamo_only:
                raise RuntimeError("the dynamo exporter asked for")
            torch.onnx.export(model, args, path, opset_version=opset, dynamo=False,
                              input_names=names, output_names=["output"])
            used = "torchscript"
        except Exception:  # removed or failing (or not asked for): the dynamo exporter
            torch.onnx.export(model, args, path, opset_version=opset, dynamo=True,
                              input_names=names, output_names=["output"])
            used = "dynamo"
    onnx.save(onnx.load(path), path, save_as_external_data=False)
    if os.path.exists(path + ".data"):  # the dynamo exporter's side file, now inside the model: gigabytes for BERT
        os.remove(path + ".data")
    return used


def median_ms(fn: Any, runs: int, sync: Any) -> float:
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(name: str, backend: str, runs: int, opset: int, seed: int, workdir: str) -> dict[str, Any]:
    import torch

    from reprobuild.builder import Builder, BuilderConfig
    from reprobuild.core.logger import Logger, Severity
    from reprobuild.engine import Runtime
    from reprobuild.frontend import network_from_onnx_path

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    device = "cuda" if backend == "cuda" else "cpu"
    row: dict[str, Any] = {"model": name}
    model, example = make_model(name, seed)
    path = os.path.join(workdir, f"{name}.onnx")
    row["exporter"] = export(model, example, path, opset)
    model, x = model.to(device), example.to(device)
    with torch.no_grad():
        reference = model(x).float().cpu().numpy()
    quiet = Logger(Severity.ERROR)
    t0 = time.perf_counter()
    network, _ = network_from_onnx_path(path, quiet)
    config = BuilderConfig(backend=backend, iterations=3, runs_per_sample=2 if backend == "cuda" else 1)
    result = Builder(quiet).build(network, config)
    row["build_s"] = round(time.perf_counter() - t0, 2)
    row["layers"] = len(result.manifest.pinned.layers)
    row["onnx_nodes"] = sum(len(layer.onnx_nodes) for layer in result.manifest.pinned.layers)
    context = Runtime(quiet).deserialize_engine(result.engine).create_execution_context()
    feeds = {"input": example.numpy()}
    (out,) = context.execute(feeds).values()
    err = np.abs(out.astype(np.float64) - reference.astype(np.float64))
    row["max_abs"] = float(err.max())
    row["max_rel"] = float((err / np.maximum(np.abs(reference), 1e-6)).max())
    row["output_std"] = float(reference.std())
    # a near-constant output would match anything: it must vary at least 100 times more than the tolerance
    row["match"] = bool(np.allclose(out, reference, rtol=RTOL, atol=ATOL)) and row["output_std"] > 100 * ATOL
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    device_feeds = feeds
    if backend == "cuda":
        import cupy

        device_feeds = {"input": cupy.asarray(feeds["input"])}
    row["reprobuild_ms"] = round(median_ms(lambda: context.enqueue(device_feeds), runs, context.synchronize), 3)
    with torch.no_grad():
        row["torch_eager_ms"] = round(median_ms(lambda: model(x), runs, sync), 3)
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model (default: 50)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models.split(","):
            try:
                row = bench(name, args.backend, args.runs, args.opset, args.seed, workdir)
            except Exception as exc:
                row = {"model": name, "error": f"{type(exc).__name__}: {str(exc)[:500]}",
                       "traceback": traceback.format_exc()[-2000:]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"{'model':22} {'layers':>6} {'build s':>8} {'max abs':>9} {'max rel':>9} {'match':>6} "
          f"{'reprobuild ms':>13} {'torch ms':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:22} ERROR {r['error'][:150]}")
            continue
        print(f"{r['model']:22} {r['layers']:>6} {r['build_s']:>8} {r['max_abs']:>9.2g} {r['max_rel']:>9.2g} "
              f"{'yes' if r['match'] else 'NO':>6} {r['reprobuild_ms']:>13} {r['torch_eager_ms']:>9}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r.get("match") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
