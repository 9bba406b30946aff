"""reprobuild against PyTorch on the same GPU, same weights, same input: eager, eager captured in a CUDA graph, and
torch.compile, at several batch sizes and precisions. Writes BENCHMARKS.md.

    python benchmarks/bench_peers.py                      # every model: the CNNs (batch 1, 32), the transformers (1, 8)
    python benchmarks/bench_peers.py --set transformers   # bert_base, gpt2, llama_block, swin_t, vit_b_16
    python benchmarks/bench_peers.py --models resnet50 --batches 1 --precisions fp32 --runs 50 --out /tmp/B.md
    python benchmarks/bench_peers.py --backend cpu --models resnet50 --batches 1 --runs 3 --no-compile --out /tmp/B.md
    python benchmarks/bench_peers.py --backend cpu --models bert_base,gpt2,llama_block --batches 1 --runs 2 \
        --no-compile --seq 32 --out /tmp/B.md

Needs torch, onnx and reprobuild; torchvision for its models (resnet50 ... swin_t, vit_b_16), transformers (5.x) and
onnxscript for bert_base, gpt2 and llama_block.

Method. Each model is built from its config with random seeded weights that keep outputs O(1)
(``bench_torchvision.randomize``, ``transformer_models.randomize``; nothing is downloaded) and exported once per
batch size to ONNX: the CNNs, swin_t, vit_b_16 and nn.TransformerEncoder at opset 17 (TorchScript exporter, the
dynamo one where it fails), the transformers models (BERT-base, GPT-2 124M without KV cache, a 2-layer Llama-style
model; SDPA attention, sequence ``--seq``, default 128) with the dynamo exporter at opset 18 (the TorchScript one
fails on GPT2Model with ``aten::diff``); the section Models lists each. A model with several inputs (input_ids and
an all-ones attention_mask, int64) is fed the same named inputs by every peer; its first output
(last_hidden_state) is compared and timed. Each export is built by reprobuild at each precision (timed build, then
a replay of its manifest, which must give the same engine bytes), and checked against PyTorch eager in the same
precision; a text model is also checked on a second input whose last row is padded (mask 0 over its last quarter),
so that a mask the export dropped or baked in shows. Then
all peers are timed in this one process, alternating: every round times each peer once, in a fresh (seeded)
random order, so that no peer always runs after the same one,
after ``--warmup`` untimed runs each; a timing is the wall clock from the launch to a full synchronize
(``torch.cuda.synchronize`` for PyTorch, the context's stream for reprobuild) with the input already on the
device; the figure is the median over ``--runs`` rounds. PyTorch: cudnn.benchmark on (cuDNN times its convolution
algorithms, as a user tuning for speed would; it was off before issue 22); fp32 with TF32 off, tf32 with TF32 on
(matmul and cuDNN), fp16 (bf16) as the model and its float inputs converted to float16 (bfloat16), integer inputs
staying int64; a narrow engine is also compared with fp32 eager: "vs fp32" in the match column, beside PyTorch's
own narrow error against its fp32; it matches when it is within tolerance of PyTorch's narrow output, or its error
against fp32 is at most twice PyTorch's.
"eager+graph" is the eager model captured with ``torch.cuda.CUDAGraph`` after warm-up on a side stream.
reprobuild runs its engine's default: a
captured CUDA graph when every layer is a launch plan. "any det" is reprobuild built with nondeterministic
tactics allowed (``determinism="any"``), timed alongside, for the cost of the deterministic default; with
``--control``, "control" is a second context of the same deterministic engine, timed alongside: the spread
between it and "reprobuild" is what ordering and cache warmth alone do to a figure. A peer that fails (capture,
compile) reads "failed: <reason>" in its cell; a build that fails, "not built: <reason>" in its row. On CUDA each
row runs in a process of its own (``--isolate``): a row whose process crashes reads "not built: crashed (exit N):
<its last error line>", and the other rows are measured as usual. With
``--backend cpu`` (a smoke test) only fp32 runs, against PyTorch CPU eager, without the graph and compile peers.
Targets: issue 9's for the CNNs (against eager+graph), issue 22's for the transformers (fp32 at most 0.9x, fp16 and
bf16 at most 1.0x the best of eager and eager+graph, at every batch size).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
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
from benchmarks.transformer_models import MODELS as TRANSFORMERS
from benchmarks.transformer_models import Made, make_transformer

CNNS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "transformer_encoder")
#: issue 22's transformer set (swin_t and vit_b_16 from torchvision, the others from transformers configs)
TRANSFORMER_SET = (*TRANSFORMERS, "swin_t", "vit_b_16")
SETS = {"cnn": CNNS, "transformers": TRANSFORMER_SET, "all": (*CNNS, *TRANSFORMER_SET)}
#: batch sizes when --batches is not given: issue 9 measured the CNNs at 1 and 32 (any model not named here too),
#: issue 22 the transformers at 1 and 8
DEFAULT_BATCHES = {**{name: (1, 32) for name in CNNS}, **{name: (1, 8) for name in TRANSFORMER_SET}}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: (rtol, atol as a fraction of the reference's std) for the output check against PyTorch in the same precision
TOLERANCE = {"fp32": (1e-3, 1e-4), "tf32": (2e-2, 2e-2), "fp16": (2e-2, 2e-2), "bf16": (1e-1, 1e-1)}
#: The precisions that run the model in a narrow float type (the torch dtype's name).
NARROW = {"fp16": "float16", "bf16": "bfloat16"}


def torch_mode(precision: str) -> None:
    import torch

    torch.backends.cudnn.benchmark = True
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


def capture(model: Any, xs: list[Any]) -> Callable[[], Any]:
    """The eager model captured in a CUDA graph (after warm-up on a side stream); returns its replay."""
    import torch

    static_xs = [x.clone() for x in xs]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(*static_xs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(*static_xs)

    def replay(inputs: list[Any] = static_xs) -> None:
        # The graph reads static_xs' memory: this default argument keeps them alive. Returning graph.replay alone
        # let them be freed and PyTorch's allocator reuse their memory, so replays read whatever came there (BERT's
        # token ids: a device-side assert in the embedding gather, the "BERT crash" of issue 22's third session).
        graph.replay()

    return replay


def torch_peers(model: Any, xs: list[Any], compile_model: bool,
                graph_peer: bool) -> tuple[dict[str, Callable[[], Any]], dict[str, str], float | None]:
    """name -> a callable running that peer once (asynchronously), name -> why a peer failed, torch.compile's
    seconds. A peer that fails is left out, not the others. ``xs``: the model's inputs, in its positional order."""
    import torch

    peers: dict[str, Callable[[], Any]] = {"eager": lambda: model(*xs)}
    failed: dict[str, str] = {}
    if graph_peer and xs[0].is_cuda:
        try:
            peers["eager+graph"] = capture(model, xs)
        except Exception as exc:
            failed["eager+graph"] = brief(exc)
    compile_s = None
    if compile_model:
        try:
            compiled = torch.compile(model)
            t0 = time.perf_counter()
            compiled(*xs)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            peers["compile"] = lambda: compiled(*xs)
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


def make(name: str, seed: int, batch: int, seq: int) -> Made:
    """A model of the set and its named example inputs: a transformers model (transformer_models), else a
    torchvision model or nn.TransformerEncoder (bench_torchvision.make_model), whose one input is "input"."""
    if name in TRANSFORMERS:
        return make_transformer(name, seed, batch, seq)
    model, example = make_model(name, seed, batch)
    if name == "transformer_encoder":
        what = f"nn.TransformerEncoder d256, 8 heads, FFN 1024, 2 layers; input float32 [B, {example.shape[1]}, 256]"
    else:
        what = f"torchvision {name}(weights=None); input float32 [B, 3, 224, 224]"
    return Made(model, {"input": example}, description=what)


def torch_inputs(inputs: dict[str, Any], device: str, dtype: Any = None) -> list[Any]:
    """The inputs on the device, in the model's positional order; float ones converted to ``dtype`` (integer ones,
    ids and masks, stay int64)."""
    xs = [x.to(device) for x in inputs.values()]
    return [x.to(dtype) if dtype is not None and x.is_floating_point() else x for x in xs]


def judge(out: Any, reference: Any, reference32: Any, precision: str, prefix: str = "") -> dict[str, Any]:
    """The engine's output against PyTorch's in the same precision: max abs error and whether it is within the
    precision's tolerance (atol scaled by the reference's std; a constant reference matches nothing). A narrow
    engine is also compared with fp32 eager (``reference32``): it matches when its error against fp32 is within
    twice PyTorch's own narrow error against its fp32, or within the tolerance of PyTorch's narrow output."""
    rtol, atol = TOLERANCE[precision]
    scale = float(reference.std())
    result: dict[str, Any] = {f"{prefix}max_abs": float(np.abs(out.astype(np.float64) - reference).max())}
    match = bool(np.allclose(out, reference, rtol=rtol, atol=atol * scale)) and scale > 0
    if reference32 is not None:
        result[f"{prefix}max_abs_fp32"] = float(np.abs(out.astype(np.float64) - reference32).max())
        result[f"{prefix}peer_fp16_error"] = float(np.abs(reference.astype(np.float64) - reference32).max())
        match = match or (result[f"{prefix}max_abs_fp32"] <= 2 * result[f"{prefix}peer_fp16_error"] and scale > 0)
    result[f"{prefix}match"] = match
    return result


def bench_one(name: str, batch: int, precision: str, args: argparse.Namespace, path: str) -> dict[str, Any]:
    import torch

    from reprobuild.engine import Runtime

    row: dict[str, Any] = {"model": name, "batch": batch, "precision": precision}
    device = "cuda" if args.backend == "cuda" else "cpu"
    made = make(name, args.seed, batch, args.seq)
    model = made.model.to(device)
    xs = torch_inputs(made.inputs, device)
    check_xs = torch_inputs(made.check, device) if made.check else None
    reference32 = check_reference32 = None
    if precision in NARROW:  # a narrow engine is also compared with fp32 eager
        torch_mode("fp32")
        with torch.no_grad():
            reference32 = model(*xs).float().cpu().numpy()
            check_reference32 = model(*check_xs).float().cpu().numpy() if check_xs else None
    torch_mode(precision)
    if precision in NARROW:
        dtype = getattr(torch, NARROW[precision])
        model = model.to(dtype)
        xs = torch_inputs(made.inputs, device, dtype)
        check_xs = torch_inputs(made.check, device, dtype) if made.check else None
    with torch.no_grad():
        reference = model(*xs).float().cpu().numpy()
        check_reference = model(*check_xs).float().cpu().numpy() if check_xs else None
    try:
        built = build(path, precision, args.backend)
    except Exception as exc:  # a precision reprobuild does not offer, or a model it cannot build
        row["error"] = brief(exc)
        return row
    row.update({k: built[k] for k in ("build_s", "replay_s", "identical", "layers", "graph")})
    engine = Runtime().deserialize_engine(built["engine"])
    context = engine.create_execution_context()
    host = {k: v.numpy() for k, v in made.inputs.items()}  # the engine's inputs: float32 and int64, every precision
    out = next(iter(context.execute(host).values()))
    row["output_std"] = float(reference.std())  # O(1) by the seeded weights; near 0 would make any output match
    row.update(judge(out, reference, reference32, precision))
    if made.check:  # the padded input: checked, not timed
        checked = next(iter(context.execute({k: v.numpy() for k, v in made.check.items()}).values()))
        row.update(judge(checked, check_reference, check_reference32, precision, "padded_"))
        row["match"] = row["match"] and row["padded_match"]
    feeds: Any = host
    if args.backend == "cuda":
        import cupy

        feeds = {k: cupy.asarray(v) for k, v in host.items()}
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
        extra, failed, row["compile_s"] = torch_peers(model, xs, use_compile, args.graph_peer)
        row.update({f"{peer}_error": why for peer, why in failed.items()})
        for peer, fn in extra.items():
            peers[peer], syncs[peer] = fn, sync
        medians = alternate(peers, syncs, args.runs, args.warmup)
    row.update({f"{k}_ms": v for k, v in medians.items()})
    return row


def export_model(name: str, batch: int, args: argparse.Namespace, path: str) -> dict[str, Any]:
    """Makes the model and exports it to ``path``; what the rows say about it (its description, exporter, opset),
    or why it could not be made or exported (torchvision missing, an exporter failing): its rows say so."""
    try:
        made = make(name, args.seed, batch, args.seq)
        return {"description": made.description, "opset": made.opset, **made.notes,
                "exporter": export(made.model, made.inputs, path, made.opset, made.dynamo_only)}
    except Exception as exc:
        return {"error": f"export failed: {brief(exc)}"}


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
    padded = (f"; padded input {'yes' if row['padded_match'] else 'NO'} {row['padded_max_abs']:.1e}"
              if "padded_match" in row else "")
    return f"{'yes' if row['match'] else 'NO'} ({row['max_abs']:.1e}{vs32}{padded})"


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
        best = min((r[k] for k in ("eager_ms", "eager+graph_ms") if r.get(k)), default=None)
        if r["model"] in TRANSFORMER_SET and r["precision"] in ("fp32", "fp16", "bf16") and best:
            # issue 22: against the best PyTorch (eager or eager+graph), every batch
            limit = 0.9 if r["precision"] == "fp32" else 1.0
            got = r["reprobuild_ms"] / best
            lines.append(f"- {what}: {got:.2f}x the best PyTorch (eager or eager+graph), target <= {limit}x: "
                         f"{'met' if got <= limit else 'not met'}")
        elif r["precision"] in ("fp32", "fp16", "bf16") and graph:
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
        "## Models", "", *models(rows), "", "## Results (median ms)", "", *body, "",
        "## Targets (issue 9: the CNNs; issue 22: the transformers)", "", *targets(rows), ""])


def models(rows: list[dict[str, Any]]) -> list[str]:
    """One line per model: what it is (config, inputs), its exporter and opset, its attention implementation."""
    lines, seen = [], set()
    for r in rows:
        if r["model"] in seen or "description" not in r:  # rows of a run before issue 22 carry no description
            continue
        seen.add(r["model"])
        attention = f"; attention: {r['attention']}" if r.get("attention") else ""
        lines.append(f"- {r['model']}: {r['description']}; {r['exporter']} exporter, opset {r['opset']}{attention}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--backend", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--set", choices=sorted(SETS), default="all",
                        help="the models when --models is not given: cnn (" + ", ".join(CNNS) + "), transformers ("
                        + ", ".join(TRANSFORMER_SET) + ") or all (default)")
    parser.add_argument("--models", help="comma-separated model names (default: those of --set)")
    parser.add_argument("--batches", help="comma-separated batch sizes (default: 1,32 for the CNNs, 1,8 for the "
                        "transformers)")
    parser.add_argument("--seq", type=int, default=128, help="the transformers models' sequence length (default: 128)")
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
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="run each row (model, batch, precision) in a process of its own, so that a crash (a "
                        "device-side assert leaves the CUDA context unusable) costs that row only; its cell then "
                        "says how it ended (default: on with --backend cuda)")
    parser.add_argument("--child-row", nargs=2, metavar=("ONNX", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_row:  # one row, in a process of its own (see --isolate)
        onnx_path, out = args.child_row
        write(out, json.dumps(bench_one(args.models, int(args.batches), args.precisions, args, onnx_path)))
        return 0
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
    isolate = args.backend == "cuda" if args.isolate is None else args.isolate
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        os.makedirs(workdir, exist_ok=True)
        for name in (args.models or ",".join(SETS[args.set])).split(","):
            batches = [int(b) for b in args.batches.split(",")] if args.batches else DEFAULT_BATCHES.get(name, (1, 32))
            for batch in batches:
                path = os.path.join(workdir, f"{name}_b{batch}.onnx")
                about = export_model(name, batch, args, path)
                free_memory()
                for precision in precisions:
                    row = {"model": name, "batch": batch, "precision": precision, **about}
                    if "error" not in about:
                        row.update(isolated_row(name, batch, precision, args, path, tmp) if isolate
                                   else bench_one(name, batch, precision, args, path))
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


def isolated_row(name: str, batch: int, precision: str, args: argparse.Namespace, path: str,
                 tmp: str) -> dict[str, Any]:
    """:func:`bench_one` in a child process (``--isolate``): its row, or how the child ended when it wrote none."""
    out = os.path.join(tmp, f"{name}_b{batch}_{precision}.row.json")
    command = [sys.executable, os.path.abspath(__file__), "--backend", args.backend, "--models", name,
               "--batches", str(batch), "--precisions", precision, "--seq", str(args.seq), "--runs", str(args.runs),
               "--warmup", str(args.warmup), "--compile-precisions", args.compile_precisions, "--seed",
               str(args.seed), *([] if args.graph_peer else ["--no-graph-peer"]),
               *([] if args.any_det else ["--no-any-det"]), *(["--control"] if args.control else []),
               "--child-row", path, out]
    child = subprocess.run(command, capture_output=True, text=True, check=False)
    sys.stderr.write(child.stderr[-4000:])
    if child.returncode == 0 and os.path.exists(out):
        with open(out, encoding="utf-8") as f:
            return dict(json.load(f))
    lines = [line.strip() for line in child.stderr.splitlines() if line.strip()]
    # the exception lines of the traceback (``module.SomeError: message``), the last one being what ended it
    errors = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b", line)] or lines or \
        ["no output"]
    return {"error": f"crashed (exit {child.returncode}): {errors[-1][:160]}"}


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
