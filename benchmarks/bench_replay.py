"""Timed build vs manifest replay, wall time, for a whole model; and the engine digests they give.

    python benchmarks/bench_replay.py --backend cuda --model light_resnet50.onnx

Each build runs in a fresh process through the CLI, as a pipeline would run it. "cold" builds start with an
empty NVRTC cubin cache (REPROBUILD_CACHE_DIR), "warm" ones with the cache the previous build filled. The build
time is the builder's own wall time from the manifest's evidence (parse to engine bytes); the process time adds
Python start-up and imports. Prints a table, the timed/replay ratios, and whether every engine is identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import onnx

from tests.helpers import light_model


def build(workdir: str, model: str, name: str, cache: str, backend: str, replay: str | None) -> dict:
    engine = os.path.join(workdir, f"{name}.engine")
    cmd = [sys.executable, "-m", "reprobuild", "build", model, "-o", engine, "--backend", backend, "-q"]
    if replay:
        cmd = [c for c in cmd if c not in ("--backend", backend)] + ["--replay", replay]
    env = {**os.environ, "REPROBUILD_CACHE_DIR": cache}
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    process_s = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"{name} failed ({result.returncode}):\n{result.stderr}")
    with open(engine[:-len(".engine")] + ".manifest.json") as f:
        manifest = json.load(f)
    evidence = manifest["evidence"]
    return {"name": name, "replay": bool(replay), "process_s": process_s, "build_s": evidence["wall_seconds"],
            "timed": evidence["tactics_timed"], "sha256": manifest["engine"]["sha256"],
            "phases": evidence["phase_seconds"],
            "manifest": engine[:-len(".engine")] + ".manifest.json"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="light_resnet50.onnx")
    parser.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model = os.path.join(work, "model.onnx")
        onnx.save(light_model(args.model, seed=0), model)
        cold_a, cold_b = os.path.join(work, "cache-a"), os.path.join(work, "cache-b")
        rows = [build(work, model, "timed-cold", cold_a, args.backend, None)]
        rows.append(build(work, model, "replay-cold", cold_b, args.backend, rows[0]["manifest"]))
        rows.append(build(work, model, "replay-warm", cold_b, args.backend, rows[1]["manifest"]))
        rows.append(build(work, model, "timed-warm", cold_a, args.backend, None))
        rows.append(build(work, model, "replay-warm-2", cold_a, args.backend, rows[0]["manifest"]))
    print(f"{'build':<14} {'process s':>9} {'build s':>8} {'timings':>8}  engine sha256")
    for r in rows:
        print(f"{r['name']:<14} {r['process_s']:9.2f} {r['build_s']:8.2f} {r['timed']:8d}  {r['sha256']}")
    for r in rows:
        print(f"{r['name']:<14} phases: " + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items()))
    by = {r["name"]: r for r in rows}
    cold = by["timed-cold"]["build_s"] / max(by["replay-cold"]["build_s"], 1e-9)
    warm = by["timed-warm"]["build_s"] / max(by["replay-warm"]["build_s"], 1e-9)
    print(f"timed/replay build time: cold cache {cold:.1f}x, warm cache {warm:.1f}x")
    pinned = {by[n]["sha256"] for n in ("timed-cold", "replay-cold", "replay-warm", "replay-warm-2")}
    print("timed build, replay, replay: " + ("identical engine sha256" if len(pinned) == 1 else f"DIFFERENT: {pinned}"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "ratio_cold": cold, "ratio_warm": warm, "identical": len(pinned) == 1}, f,
                      indent=2)
    return 0 if len(pinned) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
