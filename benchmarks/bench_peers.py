"""reprobuild against PyTorch on the same GPU, same weights, same input: eager, eager captured in a CUDA graph, and
torch.compile, at several batch sizes and precisions. Writes BENCHMARKS.md.

    python benchmarks/bench_peers.py                      # resnet50, mobilenet_v2, efficientnet_b0, transformer
    python benchmarks/bench_peers.py --models resnet50 --batches 1 --precisions fp32 --runs 50 --out /tmp/B.md
    python benchmarks/bench_peers.py --backend cpu --models resnet50 --batches 1 --runs 3 --no-compile --out /tmp/B.md

Method. Each model is exported once per batch size to ONNX (opset 17, random seeded weights that keep outputs
O(1); ``bench_torchvision.randomize``), built by reprobuild at each precision (timed build, then a replay of its
manifest, which must give the same engine bytes), and checked against PyTorch eager in the same precision. Then
all peers are timed in this one process, alternating: every round times each peer once, in a fresh (seeded)
random order, so that no peer always runs after the same one,
after ``--warmup`` untimed runs each; a timing is the wall clock from the launch to a full synchronize
(``torch.cuda.synchronize`` for PyTorch, the context's stream for reprobuild) with the input already on the
device; the figure is the median over ``--runs`` rounds. PyTorch: cudnn.benchmark off; fp32 with TF32 off, tf32
with TF32 on (matmul and cuDNN), fp16 (bf16) as the model and its input converted to float16 (bfloat16); a
narrow engine is also compared with fp32 eager: "vs fp32" in the match column, beside PyTorch's own narrow error
against its fp32; it matches when it is within tolerance of PyTorch's narrow output, or its error against fp32 is
at most twice PyTorch's.
"eager+graph" is the eager model captured with ``torch.cuda.CUDAGraph`` after warm-up on a side stream.
reprobuild runs its engine's default: a
captured CUDA graph when every layer is a launch plan. "any det" is reprobuild built with nondeterministic
tactics allowed (``determinism="any"``), timed alongside, for the cost of the deterministic default; with
``--control``, "control" is a second context of the same deterministic engine, timed alongside: the spread
between it and "reprobuild" is what ordering and cache warmth alone do to a figure. A peer that fails (capture,
compile) reads "failed: <reason>" in its cell; a build that fails, "not built: <reason>" in its row. With
``--backend cpu`` (a smoke test) only fp32 runs, against PyTorch CPU eager, without the graph and compile peers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_torchvision import export, make_model

MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "transformer_encoder")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: (rtol, atol as a fraction of the reference's std) for the output check against PyTorch in the same precision
TOLERANCE = {"fp32": (1e-3, 1e-4), "tf32": (2e-2, 2e-2), "fp16": (2e-2, 2e-2), "bf16": (1e-1, 1e-1)}
#: The precisions that run the model in a narrow float type (the torch dtype's name).
NARROW = {"fp16": "float16", "bf16": "bfloat16"}


def torch_mode(precision: str) -> None:
    import torch

    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"


def build(path: str, precision: str, backend: str, determinism: str = "run_to_run") -> dict[str, Any]:
    """A timed build, then a replay of its manifest: the engine, build and replay seconds, layer count."""
    from reprobuild.builder import Builder, BuilderConfig, ReplaySelector
    from reprobuild.core.logger import Logger, Severity
    from reprobuild.frontend import network_from_onnx_path

    quiet = Logger(Severity.ERROR)
    t0 = time.perf_counter()
    network, _ = network_from_onnx_path(path, quiet)
    config = BuilderConfig(backend=backend, precision=precision, determinism=determinism)  # type: ignore[arg-type]
    result = Builder(quiet).build(network, config)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    network, _ = network_from_onnx_path(path, quiet)
    replay_config = BuilderConfig.from_record(result.manifest.pinned.config)
    replay_config.algorithm_selector = ReplaySelector(result.manifest, "strict", quiet)
    replayed = Builder(quiet).build(network, replay_config)
    return {"engine": result.engine, "build_s": build_s, "replay_s": time.perf_counter() - t0,
            "identical": replayed.engine == result.engine, "layers": len(result.manifest.pinned.layers),
            "graph": result.manifest.pinned.execution.cuda_graph}


def brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"


def capture(model: Any, x: Any) -> Callable[[], Any]:
    """The eager model captured in a CUDA graph (after warm-up on a side stream); returns its replay."""
    import torch

    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(static_x)
    return graph.replay


def torch_peers(model: Any, x: Any, compile_model: bool,
                graph_peer: bool) -> tuple[dict[str, Callable[[], Any]], dict[str, str], float | None]:
    """name -> a callable running that peer once (asynchronously), name -> why a peer failed, torch.compile's
    seconds. A peer that fails is left out, not the others."""
    import torch

    peers: dict[str, Callable[[], Any]] = {"eager": lambda: model(x)}
    failed: dict[str, str] = {}
    if graph_peer and x.is_cuda:
        try:
            peers["eager+graph"] = capture(model, x)
        except Exception as exc:
            failed["eager+graph"] = brief(exc)
    compile_s = None
    if compile_model:
        try:
            compiled = torch.compile(model)
            t0 = time.perf_counter()
            compiled(x)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            peers["compile"] = lambda: compiled(x)
        except Exception as exc:
            failed["compile"] = brief(exc)
    return peers, failed, compile_s


def alternate(peers: dict[str, Callable[[], Any]], syncs: dict[str, Callable[[], Any]], runs: int,
              warmup: int) -> dict[str, float]:
    """Median milliseconds per peer, each timed once per round in a seeded random order."""
    names = list(peers)
    for name in names:
        for _ in range(warmup):
            peers[name]()
        syncs[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    order = np.random.default_rng(0)
    for _ in range(runs):
        for name in order.permutation(names):  # a fresh order each round: no peer always follows the same one
            t0 = time.perf_counter()
            peers[name]()
            syncs[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


def bench_one(name: str, batch: int, precision: str, args: argparse.Namespace, path: str) -> dict[str, Any]:
    import torch

    from reprobuild.engine import Runtime

    row: dict[str, Any] = {"model": name, "batch": batch, "precision": precision}
    device = "cuda" if args.backend == "cuda" else "cpu"
    model, example = make_model(name, args.seed, batch)
    model = model.to(device)
    x = example.to(device)
    reference32 = None
    if precision in NARROW:  # a narrow engine is also compared with fp32 eager
        torch_mode("fp32")
        with torch.no_grad():
            reference32 = model(x).float().cpu().numpy()
    torch_mode(precision)
    if precision in NARROW:
        dtype = getattr(torch, NARROW[precision])
        model, x = model.to(dtype), x.to(dtype)
    with torch.no_grad():
        reference = model(x).float().cpu().numpy()
    try:
        built = build(path, precision, args.backend)
    except Exception as exc:  # a precision reprobuild does not offer, or a model it cannot build
        row["error"] = brief(exc)
        return row
    row.update({k: built[k] for k in ("build_s", "replay_s", "identical", "layers", "graph")})
    engine = Runtime().deserialize_engine(built["engine"])
    context = engine.create_execution_context()
    host = {"input": example.numpy()}
    out = next(iter(context.execute(host).values()))
    rtol, atol = TOLERANCE[precision]
    scale = float(reference.std())
    row["max_abs"] = float(np.abs(out.astype(np.float64) - reference).max())
    row["match"] = bool(np.allclose(out, reference, rtol=rtol, atol=atol * scale)) and scale > 0
    if reference32 is not None:
        # the narrow type's own error, as PyTorch's fp16/bf16 shows it against its fp32: the engine matches when
        # its error against fp32 is within twice PyTorch's, or within the tolerance of PyTorch's narrow output
        row["max_abs_fp32"] = float(np.abs(out.astype(np.float64) - reference32).max())
        row["peer_fp16_error"] = float(np.abs(reference.astype(np.float64) - reference32).max())
        row["match"] = row["match"] or (row["max_abs_fp32"] <= 2 * row["peer_fp16_error"] and scale > 0)
    feeds: Any = host
    if args.backend == "cuda":
        import cupy

        feeds = {"input": cupy.asarray(host["input"])}
    peers: dict[str, Callable[[], Any]] = {"reprobuild": lambda: context.enqueue(feeds)}
    syncs: dict[str, Callable[[], Any]] = {"reprobuild": context.synchronize}
    if args.control:  # a second context of the same engine: how much order and cache warmth alone move a figure
        control = engine.create_execution_context()
        peers["control"], syncs["control"] = (lambda: control.enqueue(feeds)), control.synchronize
    if args.any_det and precision not in NARROW:
        loose = Runtime().deserialize_engine(build(path, precision, args.backend, "any")["engine"])
        loose_ctx = loose.create_execution_context()
        peers["any det"], syncs["any det"] = (lambda: loose_ctx.enqueue(feeds)), loose_ctx.synchronize
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        use_compile = device == "cuda" and precision in args.compile_precisions.split(",")
        extra, failed, row["compile_s"] = torch_peers(model, x, use_compile, args.graph_peer)
        row.update({f"{peer}_error": why for peer, why in failed.items()})
        for peer, fn in extra.items():
            peers[peer], syncs[peer] = fn, sync
        medians = alternate(peers, syncs, args.runs, args.warmup)
    row.update({f"{k}_ms": v for k, v in medians.items()})
    return row


def ratio(row: dict[str, Any], peer: str) -> str:
    a, b = row.get("reprobuild_ms"), row.get(f"{peer}_ms")
    return f"{a / b:.2f}x" if a and b else "-"


def ms(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def peer_cell(row: dict[str, Any], peer: str) -> str:
    if f"{peer}_error" in row:
        return f"failed: {row[f'{peer}_error']}"
    cell = ms(row.get(f"{peer}_ms"))
    return f"{cell} (compiled in {row['compile_s']:.0f} s)" if peer == "compile" and row.get("compile_s") else cell


def match_cell(row: dict[str, Any]) -> str:
    vs32 = (f"; vs fp32 {row['max_abs_fp32']:.1e}, PyTorch {row['precision']} vs fp32 {row['peer_fp16_error']:.1e}"
            if "max_abs_fp32" in row else "")
    return f"{'yes' if row['match'] else 'NO'} ({row['max_abs']:.1e}{vs32})"


HEADER = ["model", "batch", "precision", "layers", "build s", "replay s", "match (max abs)", "reprobuild ms",
          "control ms", "eager ms", "eager+graph ms", "compile ms", "any det ms", "vs eager", "vs graph",
          "vs compile"]


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["model"], str(r["batch"]), r["precision"], "-", "-", "-", f"not built: {r['error']}",
                        *["-"] * 9])
            continue
        out.append([r["model"], str(r["batch"]), r["precision"], str(r["layers"]), f"{r['build_s']:.1f}",
                    f"{r['replay_s']:.2f} (identical: {'yes' if r['identical'] else 'NO'})",
                    match_cell(r), ms(r.get("reprobuild_ms")), ms(r.get("control_ms")), ms(r.get("eager_ms")),
                    peer_cell(r, "eager+graph"), peer_cell(r, "compile"), ms(r.get("any det_ms")),
                    ratio(r, "eager"), ratio(r, "eager+graph"), ratio(r, "compile")])
    return out


def targets(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        what = f"{r['model']} batch {r['batch']} {r['precision']}"
        if "error" in r:
            lines.append(f"- {what}: not built ({r['error']}): target not met")
            continue
        graph = r.get("eager+graph_ms")
        if r["precision"] in ("fp32", "fp16", "bf16") and graph:
            limit = 0.9 if (r["precision"] == "fp32" and r["batch"] == 1) else 1.0
            got = r["reprobuild_ms"] / graph
            lines.append(f"- {what}: {got:.2f}x eager+graph, target <= {limit}x: "
                         f"{'met' if got <= limit else 'not met'}")
        if r.get("any det_ms"):
            cost = r["reprobuild_ms"] / r["any det_ms"] - 1
            lines.append(f"- {what}: the deterministic default costs {cost:+.1%} over nondeterministic tactics "
                         f"allowed, target <= +5%: {'met' if cost <= 0.05 else 'not met'}")
        speedup = r["build_s"] / max(r["replay_s"], 1e-9)
        lines.append(f"- {what}: replay {speedup:.1f}x faster than the timed build, target >= 10x: "
                     f"{'met' if speedup >= 10 else 'not met'}")
    return lines


def environment() -> list[str]:
    import onnx
    import torch

    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
             f"onnx {onnx.__version__}"]
    if torch.cuda.is_available():
        import cupy

        lines.append(f"- device: {torch.cuda.get_device_name()} (CUDA runtime "
                     f"{cupy.cuda.runtime.runtimeGetVersion()}, driver {cupy.cuda.runtime.driverGetVersion()}, "
                     f"CuPy {cupy.__version__})")
    commit = os.environ.get("REPROBUILD_COMMIT")  # a copy of the tree without its history says it this way
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                    text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown (not a git checkout; set REPROBUILD_COMMIT)"
    lines.append(f"- reprobuild commit: {commit}")
    return lines


def markdown(rows: list[dict[str, Any]], env: list[str], commands: list[str]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    body = [line(HEADER), line(["---"] * len(HEADER)), *(line(r) for r in table_rows(rows))]
    method = (__doc__ or "").split("Method. ", 1)[-1].strip()
    return "\n".join([
        "# Benchmarks: reprobuild against PyTorch", "", *env,
        *(f"- command: `python benchmarks/bench_peers.py {c}`" for c in commands), "", "## Method", "", method, "",
        "## Results (median ms)", "", *body, "", "## Targets (issue 9)", "", *targets(rows), ""])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--backend", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--precisions", default="fp32,tf32,fp16,bf16")
    parser.add_argument("--runs", type=int, default=200, help="timed rounds (default: 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs of each peer first (default: 20)")
    parser.add_argument("--compile-precisions", default="fp32", metavar="LIST",
                        help="precisions to time torch.compile at (default: fp32; '' for none: compiling is slow)")
    parser.add_argument("--no-compile", dest="compile_precisions", action="store_const", const="",
                        help="skip torch.compile (the same as --compile-precisions '')")
    parser.add_argument("--no-graph-peer", dest="graph_peer", action="store_false",
                        help="skip PyTorch eager captured in a CUDA graph")
    parser.add_argument("--no-any-det", dest="any_det", action="store_false",
                        help="skip the build with nondeterministic tactics allowed")
    parser.add_argument("--control", action="store_true",
                        help="also time a second context of the same engine (a control for ordering effects)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the ONNX files go (default: a temporary directory)")
    parser.add_argument("--out", default=os.path.join(REPO, "BENCHMARKS.md"), help="the Markdown report")
    parser.add_argument("--json", metavar="FILE", help="also write the rows and the environment as JSON")
    parser.add_argument("--from-json", nargs="+", metavar="FILE",
                        help="write the report from the JSON of earlier runs (several GPU calls), running nothing")
    parser.add_argument("--commit", help="with --from-json: the reprobuild commit the runs measured")
    args = parser.parse_args(argv)
    if args.from_json:
        runs = []
        for name in args.from_json:
            with open(name, encoding="utf-8") as f:
                runs.append(json.load(f))
        env = [f"- reprobuild commit: {args.commit}" if args.commit and line.startswith("- reprobuild commit")
               else line for line in runs[0]["environment"]]
        write(args.out, markdown([r for run in runs for r in run["rows"]], env,
                                 [" ".join(run["argv"]) for run in runs]))
        return 0
    precisions = args.precisions.split(",")
    if args.backend == "cpu" and precisions != ["fp32"]:
        print(f"--backend cpu: fp32 only, skipping {', '.join(p for p in precisions if p != 'fp32')}",
              file=sys.stderr)
        precisions = ["fp32"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        os.makedirs(workdir, exist_ok=True)
        for name in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                model, example = make_model(name, args.seed, batch)
                path = os.path.join(workdir, f"{name}_b{batch}.onnx")
                export(model, example, path, 17)
                for precision in precisions:
                    row = bench_one(name, batch, precision, args, path)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.json:  # after every row: a run cut short by a time limit keeps what it measured
                        write(args.json, json.dumps({"environment": environment(), "argv": argv, "rows": rows},
                                                    indent=1))
                    free_memory()
    env = environment()
    report = markdown(rows, env, [" ".join(argv)])
    print(report)
    write(args.out, report)
    if args.json:
        write(args.json, json.dumps({"environment": env, "argv": argv, "rows": rows}, indent=1))
    return 0 if all(r.get("match") for r in rows if "error" not in r) else 1


def write(path: str, text: str) -> None:
    """Atomically: a temp file beside the target, then a rename."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
