"""Timed build vs manifest replay, wall time, for a whole model; and the engine digests they give.

    python benchmarks/bench_replay.py --backend cuda --model light_resnet50.onnx

Each build runs in a fresh process through the CLI, as a pipeline would run it, ``--repeat`` times per kind.
"cold" builds start with an empty NVRTC cubin cache (REPROBUILD_CACHE_DIR), "warm" ones with a filled one. The
build time is the builder's own wall time from the manifest's evidence (network to engine bytes); the process
time adds Python start-up, imports and parsing. Every replay replays the first timed build's manifest. Prints
every build, the medians and the timed/replay ratios, and whether every replay gave the pinned engine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", default="light_resnet50.onnx")
    parser.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeat", type=int, default=3, help="builds of each kind; medians are reported")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        model = os.path.join(work, "model.onnx")
        onnx.save(light_model(args.model, seed=0), model)
        cache = os.path.join(work, "cache-timed")
        pin = build(work, model, "timed-cold-0", os.path.join(work, "cache-cold-0"), args.backend, None)
        rows.append(pin)
        for i in range(args.repeat):
            if i:  # every cold build starts with an empty NVRTC cubin cache of its own
                rows.append(build(work, model, f"timed-cold-{i}", os.path.join(work, f"cache-cold-{i}"),
                                  args.backend, None))
            rows.append(build(work, model, f"replay-cold-{i}", os.path.join(work, f"cache-replay-{i}"),
                              args.backend, pin["manifest"]))
        build(work, model, "warm-up", cache, args.backend, None)
        for i in range(args.repeat):
            rows.append(build(work, model, f"timed-warm-{i}", cache, args.backend, None))
            rows.append(build(work, model, f"replay-warm-{i}", cache, args.backend, pin["manifest"]))
    print(f"{'build':<15} {'process s':>9} {'build s':>8} {'timings':>8}  engine sha256")
    for r in rows:
        print(f"{r['name']:<15} {r['process_s']:9.2f} {r['build_s']:8.2f} {r['timed']:8d}  {r['sha256']}")
    for r in rows:
        print(f"{r['name']:<15} phases: " + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items()))

    def median(kind: str, field: str) -> float:
        return statistics.median(r[field] for r in rows if r["name"].startswith(kind))

    ratios = {}
    for cache_state in ("cold", "warm"):
        timed, replay = median(f"timed-{cache_state}", "build_s"), median(f"replay-{cache_state}", "build_s")
        ratios[cache_state] = timed / max(replay, 1e-9)
        print(f"{cache_state} NVRTC cache: timed build median {timed:.2f} s, replay median {replay:.2f} s: "
              f"replay {ratios[cache_state]:.1f}x faster (process wall: "
              f"{median(f'timed-{cache_state}', 'process_s'):.2f} s vs "
              f"{median(f'replay-{cache_state}', 'process_s'):.2f} s)")
    replays = {r["sha256"] for r in rows if r["name"].startswith("replay")}
    identical = replays == {pin["sha256"]}
    print("timed build, then every replay: " + ("identical engine sha256" if identical else f"DIFFERENT: {replays}"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "ratios": ratios, "identical": identical}, f, indent=2)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
