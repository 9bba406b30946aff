"""Resource amplification: files that are small on disk but claim huge structures, and writes that fail.

* ``amplify``: a manifest whose layers (or bindings, golden digests, evidence) are a list of up to 100,000 empty
  objects (300 KB); an engine header of up to a million empty layers, weights or activations, or a memory plan of a
  million offsets (a few MB); nesting 100,000 deep in a manifest or a header; a ``.npy`` header claiming 7 TiB; an
  ONNX model of thousands of nodes or an attribute list of 100,000 integers. Each case's peak resident memory may
  grow by at most ``64 MiB + 32 x`` the file's size, and its error message by at most 64 KiB (``outcome``).
* ``faults``: commands that write files (``build``, ``run --output-dir``, ``attest``, ``verify --report``,
  ``compare --report``) with the file size limit (``RLIMIT_FSIZE``) set so that a write fails part-way, as on a
  full disk: the command must refuse with a typed error, never exit 1.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
from collections.abc import Callable
from typing import Any

from onnx import TensorProto, helper

from reprobuild.cli.common import engine_inputs
from reprobuild.manifest import manifest_from_json
from tests.fuzz.case import Case, Target
from tests.fuzz.exercise import CLI_CAP, Context, cli, run_engine
from tests.fuzz.mutate import deep, pick, resign_engine, split_engine
from tests.fuzz.seeds import OPSET, Seed
from tests.fuzz.target_inputs import run_time_inputs
from tests.fuzz.target_onnx import build_model


def _bound(data: bytes) -> int:
    return 64 * 2**20 + 32 * len(data)


def _manifest_case(rng: random.Random, ctx: Context, seed: Seed) -> tuple[bytes, str, Callable[[], None]]:
    doc = json.loads(seed.manifest)
    n = pick(rng, (1_000, 10_000, 100_000))
    where = pick(rng, ("pinned.layers", "pinned.layers", "pinned.inputs", "pinned.golden.layers",
                       "evidence.layers", "pinned.kernel_sources", "deep"))
    if where == "deep":  # spliced in as text: json.dumps itself would recurse too deep
        doc["pinned"]["model"]["producer"] = "@@deep@@"
        data = json.dumps(doc).replace('"@@deep@@"', "[" * n + "]" * n).encode()
    else:
        *parents, leaf = where.split(".")
        node = doc
        for key in parents:
            node = node[key]
        node[leaf] = [{} for _ in range(n)]
        data = json.dumps(doc).encode()
    note = f"manifest {where}: {n} {'levels' if where == 'deep' else 'empty objects'}"
    path = ctx.case_file("big.manifest.json", data)

    def use() -> None:
        how = rng.random()
        if how < 0.7:
            manifest_from_json(data, "amplified manifest")
        elif how < 0.8:
            cli(["diff", ctx.seed_file(seed, "manifest"), path])
        elif how < 0.9:
            cli(["verify", ctx.seed_file(seed, "engine"), "--against", path, "--runs", "1", "--contexts", "0",
                 "--processes", "1", "--traced-runs", "0", "--no-batch-invariance"])
        else:
            cli(["build", ctx.seed_file(seed, "model"), "--replay", path, "-o", ctx.case_file("o.engine", b""),
                 "--max-memory", CLI_CAP])

    return data, note, use


def _engine_case(rng: random.Random, ctx: Context, seed: Seed) -> tuple[bytes, str, Callable[[], None]]:
    header, buffer = split_engine(seed.engine)
    n = pick(rng, (10_000, 100_000, 1_000_000))
    where = pick(rng, ("layers", "layers", "weights", "activations", "offsets", "declared_inputs", "deep"))
    if where == "offsets":
        header["memory"]["offsets"] = {f"t{i}": 0 for i in range(n)}
    elif where == "declared_inputs":
        header["declared_inputs"] = {f"i{i}": [] for i in range(n)}
    elif where == "deep":
        header["name"] = deep(min(n, 100_000))
    else:
        header[where] = [{} for _ in range(n)]
    try:
        data = resign_engine(seed.engine, header, buffer, fix_manifest_digest=True)
    except ValueError:  # msgpack's own depth limit when writing
        data = resign_engine(seed.engine, {**header, "name": deep(500)}, buffer, fix_manifest_digest=True)
    note = f"engine header {where}: {n} entries"

    def use() -> None:
        if rng.random() < 0.3:
            cli(["inspect", ctx.case_file("big.engine", data)])
        else:
            run_engine(rng, data, Context(ctx.seeds, ctx.scratch, cli_share=0.0), seed)

    return data, note, use


def _npy_case(rng: random.Random, ctx: Context, seed: Seed) -> tuple[bytes, str, Callable[[], None]]:
    binding = run_time_inputs(ctx.engine(seed).inputs)[0]
    shape = pick(rng, ((2_000_000, 1_000_000), (2**40,), (2**20, 2**20, 2**10)))
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 1024
    path = ctx.case_file("huge.npy", data)

    def use() -> None:
        args = argparse.Namespace(input=[(binding.name, path)], inputs=None, seed=0, input_default_seed=None)
        engine_inputs(args, ctx.engine(seed).inputs)

    return data, f".npy header shape {shape}", use


def _onnx_case(rng: random.Random, ctx: Context, seed: Seed) -> tuple[bytes, str, Callable[[], None]]:
    if rng.random() < 0.5:
        n = pick(rng, (500, 2_000, 5_000))
        nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"r{i}") for i in range(n)]
        note = f"ONNX chain of {n} Relu nodes"
    else:
        n = pick(rng, (10_000, 100_000))
        nodes = [helper.make_node("MaxPool", ["t0"], [f"t{1}"], name="pool", kernel_shape=[1] * n)]
        note = f"ONNX MaxPool with a kernel_shape of {n} integers"
    graph = helper.make_graph(nodes, "amplified", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    data = model.SerializeToString()
    return data, note, lambda: build_model(data, ctx)


def amplify(rng: random.Random, ctx: Context) -> Case:
    seed = pick(rng, ctx.seeds)
    make = pick(rng, (_manifest_case, _manifest_case, _engine_case, _engine_case, _npy_case, _onnx_case))
    data, note, use = make(rng, ctx, seed)
    return Case(use, data, ".bin", [f"{seed.name}: {note}"], growth_bound=_bound(data))


def _with_file_size_limit(limit: int, run: Callable[[], Any]) -> None:
    """Run with writes past ``limit`` bytes failing (EFBIG, as ENOSPC would on a full disk)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        run()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def faults(rng: random.Random, ctx: Context) -> Case:
    seed = pick(rng, ctx.seeds)
    engine, model = ctx.seed_file(seed, "engine"), ctx.seed_file(seed, "model")
    out = ctx.case_file("out/placeholder", b"").rsplit("/", 1)[0]
    command = pick(rng, (
        ["build", model, "--replay", ctx.seed_file(seed, "manifest"), "-o", f"{out}/o.engine"],
        ["run", engine, "--seed", "0", "--output-dir", out],
        ["attest", engine, "-o", f"{out}/statement.json"],
        ["verify", engine, "--runs", "1", "--contexts", "0", "--processes", "1", "--traced-runs", "0",
         "--no-batch-invariance", "--report", f"{out}/report.json"],
        ["compare", engine, model, "--seed", "0", "--report", f"{out}/report.json"],
    ))
    limit = pick(rng, (0, 1, 100, 4096, 65536))
    return Case(lambda: _with_file_size_limit(limit, lambda: cli(command)), b"", ".txt",
                [f"{seed.name}: reprobuild {command[0]} with writes failing past {limit} bytes"])


TARGETS = (
    Target("amplify", "engine+manifest", amplify, 0.005, 8,
           "small files claiming huge structures: manifests with up to 100,000 empty layers (or bindings, golden "
           "digests, evidence, kernel sources) or 100,000-deep nesting; engine headers with up to a million empty "
           "layers, weights, activations, offsets or declared inputs; a .npy header of 7 TiB; ONNX models of "
           "thousands of nodes or a 100,000-integer attribute. Memory growth and message size are bounded"),
    Target("faults", "fault", faults, 0.005, 10,
           "build, run --output-dir, attest, verify --report and compare --report with writes failing part-way "
           "(RLIMIT_FSIZE: EFBIG, as ENOSPC on a full disk)"),
)
