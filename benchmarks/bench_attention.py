"""reprobuild's flash-attention kernel against PyTorch's scaled_dot_product_attention backends (cuDNN, FlashAttention,
memory-efficient, math) on the same GPU, same inputs: median latency, TFLOP/s and the share of the tensor cores'
dense peak.

    python benchmarks/bench_attention.py                      # the issue's shapes, float16 and bfloat16
    python benchmarks/bench_attention.py --shapes 1x16x2048x64 --dtypes float16 --runs 50

Method. For each shape (batch x heads x sequence x head dim, self-attention, no mask, scale 1/sqrt(d)) the
FusedAttention layer is prepared with each reprobuild flash tactic that takes it and timed as the builder times
a candidate (a captured CUDA graph of ``--per-sample`` runs between two events; ``kernels.launch.timer``); each
PyTorch backend is timed the same way (its call captured into a CUDA graph, ``--per-sample`` runs between two
events), after ``--warmup`` untimed runs. The figure is the median over ``--runs`` samples. FLOPs count the two
products only: 4 * B * H * S^2 * D. The outputs are checked against PyTorch's math backend in float32
(``max |diff|``). ``--peak`` is the dense float16 tensor-core peak the share is taken of (an H100 SXM: 989.4).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import numpy as np

from reprobuild.kernels.attention import TACTICS
from reprobuild.kernels.backend import get_backend
from reprobuild.kernels.launch import timer
from reprobuild.kernels.tactic import LayerSpec, TensorSig

SHAPES = ("1x16x2048x64", "4x16x2048x64", "8x12x128x64", "1x12x128x64", "1x32x2048x128")


def layer(b: int, h: int, s: int, d: int, dtype: str) -> LayerSpec:
    sig = TensorSig((b, h, s, d), dtype)
    attrs = {"k_transposed": 0, "scale_on": "scores", "scale_op": "Mul", "scale": float(np.float32(d ** -0.5)),
             "masks": (), "fill": 0.0, "guard": "none", "guard_fill": 0.0, "softcap": 0.0, "softcap_in": 0.0,
             "softcap_op": ""}
    return LayerSpec("attention", "FusedAttention", attrs, (sig, sig, sig), (sig,), {})


def torch_timer(fn: Any, torch: Any, warmup: int, per_sample: int) -> Any:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(max(warmup, 1)):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(per_sample):
            fn()

    def sample(n: int) -> list[float]:
        out = []
        for _ in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) * 1e6 / per_sample)
        return out

    return sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--per-sample", type=int, default=10)
    parser.add_argument("--peak", type=float, default=989.4, help="dense fp16 tensor-core TFLOP/s")
    args = parser.parse_args(argv)

    import cupy as cp
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = get_backend("cuda")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print("| shape BxHxSxD | dtype | implementation | median ms | TFLOP/s | % of peak | vs cuDNN | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        b, h, s, d = (int(x) for x in shape.split("x"))
        flops = 4.0 * b * h * s * s * d
        for dtype in args.dtypes:
            tdtype = getattr(torch, dtype)
            gen = torch.Generator(device="cuda").manual_seed(0)
            q, k, v = (torch.randn((b, h, s, d), device="cuda", dtype=tdtype, generator=gen) for _ in range(3))
            with sdpa_kernel(SDPBackend.MATH):
                want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
            torch.cuda.synchronize()
            rows: list[tuple[str, float, float]] = []
            spec = layer(b, h, s, d, dtype)
            for tactic in TACTICS:
                if tactic.ineligibility(spec) is not None:
                    continue
                ins = [cp.from_dlpack(x) for x in (q, k, v)]
                out = cp.empty((b, h, s, d), dtype=ins[0].dtype)
                with backend.activate():
                    kernel = tactic.prepare(spec, backend)
                    workspace = backend.empty_bytes(max(tactic.workspace_bytes(spec), 1))
                    sample = timer(backend, kernel, ins, [out], workspace, args.warmup, args.per_sample)
                    times = sample(args.runs)
                diff = (torch.from_dlpack(out).float() - want).abs().max().item()
                rows.append((f"reprobuild {tactic.name}", statistics.median(times) / 1e6, diff))
            peers = (("torch cuDNN", SDPBackend.CUDNN_ATTENTION), ("torch flash", SDPBackend.FLASH_ATTENTION),
                     ("torch mem-efficient", SDPBackend.EFFICIENT_ATTENTION))
            for name, kind in peers:
                try:
                    with sdpa_kernel(kind):
                        got = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                        sample = torch_timer(lambda q=q, k=k, v=v: torch.nn.functional.scaled_dot_product_attention(
                            q, k, v), torch, args.warmup, args.per_sample)
                        times = sample(args.runs)
                    rows.append((name, statistics.median(times) / 1e6, (got.float() - want).abs().max().item()))
                except Exception as exc:  # a backend this GPU or build lacks: say so in the table
                    print(f"| {shape} | {dtype} | {name} | failed: {type(exc).__name__}: {str(exc)[:80]} | | | | |")
            cudnn = next((ms for n, ms, _ in rows if n == "torch cuDNN"), None)
            for name, ms, diff in rows:
                tflops = flops / (ms * 1e-3) / 1e12
                ratio = f"{ms / cudnn:.2f}x" if cudnn else "n/a"
                print(f"| {shape} | {dtype} | {name} | {ms:.4f} | {tflops:.1f} | {100 * tflops / args.peak:.1f}% "
                      f"| {ratio} | {diff:.2e} |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
