"""Determinism verification of a whole model through the CLI, as a pipeline would run it.

    python benchmarks/bench_verify.py --backend cuda --runs 1000 --threads 4 --streams 2 --processes 2

1. a default build of the model (ConstantOfShape weights replaced by seeded random ones);
2. ``reprobuild verify`` with the given plan: expects exit 0; prints its verdicts and throughput (runs/s);
3. ``reprobuild verify --against`` the build's manifest, in this separate process: expects exit 0;
4. a build with the nondeterministic split-K atomic GEMM forced on the Gemm layers, then ``verify``:
   expects exit 10, with the locator naming that layer and its tactic.
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


def cli(*args: str) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "reprobuild", *args], capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", default="light_resnet50.onnx")
    parser.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--atomic-runs", type=int, default=50)
    parser.add_argument("--json", help="write the verify report here")
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        model = os.path.join(work, "model.onnx")
        onnx.save(light_model(args.model, seed=0), model)
        engine, atomic = os.path.join(work, "model.engine"), os.path.join(work, "atomic.engine")
        code, out, secs = cli("build", model, "-o", engine, "--backend", args.backend, "-q")
        print(f"default build: exit {code} in {secs:.1f} s")
        report = os.path.join(work, "verify.json")
        code, out, secs = cli("verify", engine, "--runs", str(args.runs), "--threads", str(args.threads),
                              "--streams", str(args.streams), "--processes", str(args.processes), "--report", report,
                              "-q")
        print(out.rstrip())
        print(f"-> exit {code} (expected 0) in {secs:.1f} s")
        failures += code != 0
        if args.json and os.path.exists(report):
            with open(report) as src, open(args.json, "w") as dst:
                dst.write(src.read())
        if os.path.exists(report):
            with open(report) as f:
                data = json.load(f)
            print(f"verify throughput: {data['runs_per_second']:.1f} runs/s ({data['total_runs']} runs in "
                  f"{data['seconds']:.1f} s), tier {data['tier']}")
        code, out, secs = cli("verify", engine, "--runs", "3", "--against", engine[:-len(".engine")] + ".manifest.json",
                              "-q")
        print("\n".join(line for line in out.splitlines() if line.startswith(("against", "tier", "verdict"))))
        print(f"-> --against in another process: exit {code} (expected 0)")
        failures += code != 0
        code, out, secs = cli("build", model, "-o", atomic, "--backend", args.backend, "-q",
                              "--allow-nondeterministic", "--force-tactic", "Gemm=cuda_splitk_atomic")
        print(f"atomic build: exit {code} in {secs:.1f} s" + ("" if code == 0 else f"\n{out}"))
        if code == 0:
            code, out, secs = cli("verify", atomic, "--runs", str(args.atomic_runs), "-q")
            print("\n".join(line for line in out.splitlines()
                            if line.startswith(("run_to_run", "locator", "tier", "verdict"))))
            print(f"-> exit {code} (expected 10) in {secs:.1f} s")
            failures += code != 10 or "cuda_splitk_atomic" not in out
        else:
            failures += 1
    print("ALL AS EXPECTED" if not failures else f"{failures} UNEXPECTED RESULT(S)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
