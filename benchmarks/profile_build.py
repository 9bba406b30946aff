"""Where a build's time goes: cProfile of one timed build or one replay, in a fresh process.

    python benchmarks/profile_build.py --backend cuda [--replay MANIFEST] [--save MANIFEST]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reprobuild.builder import Builder, BuilderConfig, ReplaySelector
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.manifest import read_manifest, write_manifest
from tests.helpers import light_model


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--backend", default="cuda")
    parser.add_argument("--replay")
    parser.add_argument("--save")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    data = light_model("light_resnet50.onnx", seed=0).SerializeToString()
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    network, _ = network_from_onnx_bytes(data)
    if args.replay:
        manifest = read_manifest(args.replay)
        config = BuilderConfig.from_record(manifest.pinned.config)
        config.algorithm_selector = ReplaySelector(manifest)
    else:
        config = BuilderConfig(backend=args.backend)
    result = Builder().build(network, config)
    profiler.disable()
    print(f"{'replay' if args.replay else 'timed'} build: {time.perf_counter() - t0:.3f} s, "
          f"{result.tactics_timed} timings")
    if args.save:
        write_manifest(args.save, result.manifest)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
