"""One dynamic engine against fixed-shape engines of each shape (issue 23's targets), in one run::

    python benchmarks/bench_dynamic.py --model bert_base --range batch=1:8:32 --range sequence=16:128:512 \\
        --shapes 1x128,8x128,32x512 --precision fp16 --runs 50 --out /tmp/DYN.md
    python benchmarks/bench_dynamic.py --model resnet50 --range batch=1:32:64 --shapes 1,32 --runs 50
    python benchmarks/bench_dynamic.py --model bert_tiny --backend cpu --range batch=1:2:8 \\
        --range sequence=4:16:32 --shapes 1x16,2x16,8x32 --runs 5          # the script itself, on a CPU

For each model it exports the PyTorch model once with its batch (and, for text models, sequence) dimension dynamic
(torch's dynamo exporter, opset 18), builds one engine with one optimization profile over ``--range`` (MIN:OPT:MAX
per dimension), and one fixed-shape engine per shape of ``--shapes``; then, per shape, it times the dynamic
engine's context at that shape, the fixed engine, and PyTorch (eager, and eager captured in a CUDA graph on cuda;
cudnn.benchmark on), alternating them run by run, median launch-to-synchronize latency. It reports each ratio
(dynamic / fixed: target <= 1.10; dynamic / best PyTorch), the host time of a shape change between cached shapes
(``DynamicExecutionContext`` resolving the sizes and finding the shape's context; target <= 50 us), whether the
dynamic engine's outputs equal the fixed engine's bit for bit (same tactics: they need not; reported), and
``verify --shapes`` over the shapes' batch sizes (a sample's bits in every batch size and position).

Needs torch, onnx, reprobuild; torchvision for resnet50, transformers for BERT (see transformer_models.py). Nothing
here is a test: it prints figures, and writes them as Markdown with ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TEXT = ("bert_base", "bert_tiny")


def make(name: str, seed: int) -> tuple[Any, dict[str, Any], list[str]]:
    """The model (called as model(*inputs)), example inputs, and the dynamic dimension of each input axis."""
    import torch

    if name in TEXT:
        from benchmarks.transformer_models import _transformers, _wrap, randomize

        transformers = _transformers()
        torch.manual_seed(seed)
        settings = ({} if name == "bert_base" else
                    {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "intermediate_size": 128, "max_position_embeddings": 512})
        config = transformers.BertConfig(attn_implementation="sdpa", **settings)
        inner = transformers.BertModel(config, add_pooling_layer=False).eval()
        randomize(inner, seed)
        ids = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(seed))
        inputs = {"input_ids": ids, "attention_mask": torch.ones(2, 16, dtype=torch.int64)}
        return _wrap(inner, list(inputs)), inputs, ["batch", "sequence"]
    from benchmarks.bench_torchvision import make_model

    model, example = make_model(name, seed, 2)

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any) -> Any:
            return self.inner(*args)

    return Positional().eval(), {"input": example}, ["batch"]


def export(model: Any, inputs: dict[str, Any], dims: list[str], ranges: dict[str, tuple[int, int, int]],
           path: str) -> None:
    import onnx
    import torch

    symbols = {d: torch.export.Dim(d, min=max(ranges[d][0], 2) if d != "batch" else 1, max=ranges[d][2])
               for d in dims}
    spec = tuple({axis: symbols[d] for axis, d in enumerate(dims)} for _ in inputs)
    with torch.no_grad():
        torch.onnx.export(model, tuple(inputs.values()), path, input_names=list(inputs), output_names=["output"],
                          opset_version=18, dynamo=True, dynamic_shapes=(spec,))
    onnx.save(onnx.load(path), path, save_as_external_data=False)
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")


def shape_of(text: str, dims: list[str]) -> dict[str, int]:
    values = [int(v) for v in text.lower().split("x")]
    if len(values) != len(dims):
        raise SystemExit(f"--shapes {text}: give {'x'.join(dims)}")
    return dict(zip(dims, values))


def input_shape(name: str, example: Any, sizes: dict[str, int], dims: list[str]) -> tuple[int, ...]:
    shape = list(example.shape)
    for axis, d in enumerate(dims):
        shape[axis] = sizes[d]
    return tuple(shape)


def feeds_for(inputs: dict[str, Any], sizes: dict[str, int], dims: list[str], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, example in inputs.items():
        shape = input_shape(name, example, sizes, dims)
        if name == "input_ids":
            out[name] = rng.integers(0, 1000, shape, dtype=np.int64)
        elif name == "attention_mask":
            out[name] = np.ones(shape, np.int64)
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bert_base", help="bert_base, bert_tiny, or a torchvision model (resnet50)")
    p.add_argument("--range", action="append", default=[], metavar="DIM=MIN:OPT:MAX", required=True)
    p.add_argument("--shapes", required=True, help="comma-separated shapes, each DIMxDIM in --range's order")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--backend", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)

    from reprobuild.builder import Builder, BuilderConfig
    from reprobuild.core.logger import Logger, Severity
    from reprobuild.engine import Runtime
    from reprobuild.frontend import network_from_onnx_path
    from reprobuild.ir import OptimizationProfile
    from reprobuild.verify.shapes import shape_invariance

    quiet = Logger(Severity.ERROR)
    ranges = {}
    for item in args.range:
        name, _, triple = item.partition("=")
        low, opt, high = (int(v) for v in triple.split(":"))
        ranges[name] = (low, opt, high)
    model, inputs, dims = make(args.model, args.seed)
    if set(dims) != set(ranges):
        raise SystemExit(f"--range must give {', '.join(dims)}")
    shapes = [shape_of(s, dims) for s in args.shapes.split(",")]
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="bench-dynamic-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        export(model, inputs, dims, ranges, path)
        profile = OptimizationProfile()
        for name, example in inputs.items():
            low, opt, high = ({d: ranges[d][i] for d in dims} for i in range(3))
            profile.set_shape(name, input_shape(name, example, low, dims), input_shape(name, example, opt, dims),
                              input_shape(name, example, high, dims))
        started = time.perf_counter()
        network, _ = network_from_onnx_path(path, quiet, profiles=[profile])
        config = BuilderConfig(backend=args.backend, precision=args.precision)
        config.add_optimization_profile(profile)
        dynamic = Runtime(quiet).deserialize_engine(Builder(quiet).build(network, config).engine)
        say(f"# {args.model}: one dynamic engine over {ranges} vs fixed engines ({args.backend}, {args.precision})")
        say(f"dynamic build: {time.perf_counter() - started:.1f} s, {dynamic.num_layers} layers at opt")
        context = dynamic.create_execution_context()
        torch_run = _torch_runner(model, args.backend, args.precision)
        say("")
        say("| shape | dynamic ms | fixed ms | dynamic / fixed | PyTorch best ms | dynamic / PyTorch | same bits |")
        say("|---|---|---|---|---|---|---|")
        all_feeds = []
        for index, sizes in enumerate(shapes):
            feeds = feeds_for(inputs, sizes, dims, args.seed + index)
            all_feeds.append(feeds)
            fixed_net, _ = network_from_onnx_path(path, quiet, input_shapes={n: v.shape for n, v in feeds.items()})
            fixed = Runtime(quiet).deserialize_engine(
                Builder(quiet).build(fixed_net, BuilderConfig(backend=args.backend, precision=args.precision)).engine)
            fixed_context = fixed.create_execution_context()
            runners = {"dynamic": lambda f=feeds: context.execute(f, outputs="device"),
                       "fixed": lambda f=feeds, c=fixed_context: c.execute(f, outputs="device")}
            runners.update(torch_run(feeds))
            times = _alternate(runners, args.runs, dynamic.backend)
            best = min((v, k) for k, v in times.items() if k.startswith("torch"))
            same = (next(iter(context.execute(feeds).values())).tobytes()
                    == next(iter(fixed_context.execute(feeds).values())).tobytes())
            label = "x".join(str(sizes[d]) for d in dims)
            say(f"| {label} | {times['dynamic']:.3f} | {times['fixed']:.3f} | "
                f"{times['dynamic'] / times['fixed']:.2f}x | {best[0]:.3f} ({best[1]}) | "
                f"{times['dynamic'] / best[0]:.2f}x | {'yes' if same else 'no'} |")
        switch = []
        for i in range(2000):
            feeds = all_feeds[i % len(all_feeds)]
            t0 = time.perf_counter_ns()
            context._context_for(feeds)
            switch.append(time.perf_counter_ns() - t0)
        say("")
        say(f"shape change between cached shapes (host): median {statistics.median(switch) / 1000:.1f} us over "
            f"{len(switch)} changes among {len(all_feeds)} shapes (target <= 50 us)")
        batches = sorted({s["batch"] for s in shapes})
        others = [(d, sorted({s[d] for s in shapes})) for d in dims if d != "batch"]
        checks = shape_invariance(dynamic, 0, [("batch", batches), *others], args.seed)
        bad = [c for c in checks if not c.identical]
        say(f"verify --shapes batch={','.join(map(str, batches))}"
            + "".join(f" {d}={','.join(map(str, v))}" for d, v in others)
            + f": {len(checks) - len(bad)}/{len(checks)} cases identical"
            + (f"; differing: {[(c.batch, dict(c.sizes), c.detail) for c in bad][:4]}" if bad else ""))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


def _torch_runner(model: Any, backend: str, precision: str) -> Any:
    """PyTorch peers for one shape's inputs: eager, and on cuda eager captured in a CUDA graph."""
    import torch

    device = "cuda" if backend == "cuda" else "cpu"
    torch.backends.cudnn.benchmark = True
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = model.to(device=device, dtype=dtype)

    def peers(feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        xs = [torch.from_numpy(v).to(device) for v in feeds.values()]
        xs = [x.to(dtype) if x.is_floating_point() else x for x in xs]
        out: dict[str, Any] = {}

        def eager() -> Any:
            with torch.no_grad():
                return model(*xs)

        out["torch eager"] = eager
        if device == "cuda":
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream), torch.no_grad():
                for _ in range(3):
                    model(*xs)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.no_grad():
                model(*xs)
            out["torch graph"] = graph.replay
        return out

    return peers


def _alternate(runners: dict[str, Any], runs: int, backend: Any) -> dict[str, float]:
    """Median ms per runner, the runners taking turns each run (launch to synchronize)."""
    import torch

    def sync() -> None:
        backend.synchronize()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    for fn in runners.values():
        for _ in range(3):
            fn()
    sync()
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            sync()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
