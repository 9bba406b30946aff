"""Regenerate the golden manifests of the bundled examples (CPU backend), from the repository root:

    python manifests/make_golden.py

Each golden is the manifest of a timed CPU build, with the sha256 of the engine it produced. The test
``tests/reprobuild/test_golden.py`` replays each one and asserts the identical engine digest wherever the
environment matches the recorded one. Regenerate only on purpose (a new tactic version, a new reference
environment), and review the diff: ``reprobuild diff`` will show what changed. The bad manifests of
``tests/corpus/manifest`` are derived from these: regenerate them next (``python -m tests.corpus.make_manifest``).
"""

from __future__ import annotations

import os
import sys

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.frontend import network_from_onnx_path
from reprobuild.manifest import write_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ("mlp", "small_cnn")


def golden_path(example: str) -> str:
    return os.path.join(ROOT, "manifests", "golden", f"{example}.cpu.manifest.json")


def main() -> int:
    for example in EXAMPLES:
        network, _ = network_from_onnx_path(os.path.join(ROOT, "examples", f"{example}.onnx"))
        result = Builder().build(network, BuilderConfig(backend="cpu"))
        write_manifest(golden_path(example), result.manifest)
        print(f"{golden_path(example)}: engine {result.engine_sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
