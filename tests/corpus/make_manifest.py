"""Write the bad-manifest corpus: ``tests/corpus/manifest/NAME.manifest.json``, one manifest per defect, each
named for what is wrong (``tests/corpus/test_manifest.py`` says which error each must give).

    python -m tests.corpus.make_manifest [--out DIR]

Every file is a golden manifest of the bundled examples (``manifests/golden/mlp.cpu.manifest.json``,
``small_cnn.cpu.manifest.json``) with exactly one defect:

* ``load``: the file itself is refused when read (a FormatError, exit 4): nesting deeper than the loader's cap, an
  integer too long or out of range, a ``NaN``/``Infinity`` literal or an overflowing float, a negative seed.
* ``replay``: the file loads, but records a layer (or another pinned part) this build does not reproduce, which
  ``reprobuild build --replay`` must refuse, naming the difference (a ReplayMismatchError, exit 8).

Files are written as ``manifest_to_json`` writes manifests (sorted keys, two-space indent, trailing newline), with
raw literals that ``json.dumps`` cannot write (``NaN``, a 5,000-digit integer, 100,000 nested arrays) spliced in
for a placeholder. The output is a function of the goldens alone: the same checkout writes the same bytes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GOLDEN = os.path.join(REPO, "manifests", "golden")
OUT = os.path.join(HERE, "manifest")
SUFFIX = ".manifest.json"
_RAW = "@@raw-literal@@"


@dataclass(frozen=True)
class Case:
    name: str  #: the file is NAME.manifest.json
    example: str  #: the golden (and ONNX model in examples/) it is derived from
    kind: str  #: "load" (refused when read) or "replay" (loads; a replay of the example refuses it)
    edit: Callable[[dict[str, Any]], Any]  #: edits the document in place; may put _RAW where ``raw`` goes
    raw: str | None = None  #: literal JSON text that replaces the _RAW placeholder


def _layer(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(layer for layer in doc["pinned"]["layers"] if layer["name"] == name)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets a dotted path (``pinned.config.seed``) to ``value``."""
    *parents, leaf = path.split(".")

    def edit(doc: dict[str, Any]) -> None:
        node = doc
        for key in parents:
            node = node[key]
        node[leaf] = value

    return edit


def _swap(doc: dict[str, Any], i: int, j: int) -> None:
    layers = doc["pinned"]["layers"]
    layers[i], layers[j] = layers[j], layers[i]


CASES: tuple[Case, ...] = (
    # --- refused when read: FormatError -------------------------------------------------------------------------
    Case("nested_100000_deep", "mlp", "load", _set("pinned.model.producer", _RAW), "[" * 100_000 + "]" * 100_000),
    Case("integer_5000_digits", "mlp", "load", _set("pinned.config.seed", _RAW), "1" + "0" * 4999),
    Case("integer_2_pow_64", "mlp", "load", _set("pinned.memory.weights_bytes", _RAW), str(2**64)),
    Case("integer_below_minus_2_pow_63", "mlp", "load", _set("evidence.tactics_timed", _RAW), str(-(2**63) - 1)),
    Case("negative_seed", "mlp", "load", _set("pinned.config.seed", -1)),
    Case("negative_golden_seed", "mlp", "load", _set("pinned.golden.seed", -1)),
    Case("nan_literal", "mlp", "load", _set("pinned.config.tie_band", _RAW), "NaN"),
    Case("infinity_literal", "mlp", "load", _set("evidence.wall_seconds", _RAW), "Infinity"),
    Case("minus_infinity_literal", "mlp", "load", _set("evidence.phase_seconds.setup", _RAW), "-Infinity"),
    Case("float_1e999_overflows", "mlp", "load", _set("evidence.wall_seconds", _RAW), "1e999"),
    # --- loads, but a replay must refuse it: ReplayMismatchError -----------------------------------------------
    Case("replay_layer_shape_altered", "small_cnn", "replay",
         lambda d: _layer(d, "stem")["outputs"][0].update(shape=[1, 16, 32, 32])),
    Case("replay_layer_dtype_altered", "mlp", "replay",
         lambda d: _layer(d, "fc1")["outputs"][0].update(dtype="float16")),
    Case("replay_attribute_altered", "small_cnn", "replay",
         lambda d: _layer(d, "pool")["attrs"].update(strides=[1, 1])),
    Case("replay_attribute_removed", "small_cnn", "replay",
         lambda d: _layer(d, "branch_b")["attrs"].pop("dilations")),
    Case("replay_kernel_digest_altered", "small_cnn", "replay",
         lambda d: _layer(d, "stem")["tactic"].update(code_sha256="0" * 64)),
    Case("replay_layers_reordered", "small_cnn", "replay", lambda d: _swap(d, 1, 2)),
    Case("replay_layer_duplicated", "mlp", "replay",
         lambda d: d["pinned"]["layers"].append(copy.deepcopy(_layer(d, "fc3")))),
    Case("replay_layer_renamed", "small_cnn", "replay", lambda d: _layer(d, "head").update(name="classifier")),
    Case("replay_op_altered", "mlp", "replay", lambda d: _layer(d, "fc3").update(op="MatMul")),
    Case("replay_onnx_nodes_altered", "small_cnn", "replay", lambda d: _layer(d, "stem").update(onnx_nodes=["x"])),
    Case("replay_precision_altered", "mlp", "replay", lambda d: _layer(d, "fc3").update(precision="fp16")),
    Case("replay_workspace_altered", "small_cnn", "replay", lambda d: _layer(d, "stem").update(workspace_bytes=256)),
    Case("replay_network_input_shape_altered", "mlp", "replay",
         lambda d: d["pinned"]["inputs"][0].update(shape=[1, 64])),
    Case("replay_memory_plan_altered", "small_cnn", "replay", _set("pinned.memory.activation_bytes", 256)),
)


def _golden(example: str) -> dict[str, Any]:
    with open(os.path.join(GOLDEN, f"{example}.cpu.manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def render(case: Case) -> bytes:
    """The bytes of one corpus file."""
    doc = _golden(case.example)
    case.edit(doc)
    text = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if case.raw is not None:
        placeholder = json.dumps(_RAW)
        if text.count(placeholder) != 1:
            raise AssertionError(f"{case.name}: the edit must place the raw literal exactly once")
        text = text.replace(placeholder, case.raw)
    return text.encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.corpus.make_manifest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=OUT, help=f"directory to write (default: {os.path.relpath(OUT, REPO)})")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for case in CASES:
        path = os.path.join(args.out, case.name + SUFFIX)
        with open(path, "wb") as f:
            f.write(render(case))
        print(f"{os.path.relpath(path, REPO)}: {case.kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
