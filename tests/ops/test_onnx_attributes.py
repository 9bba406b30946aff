"""The generated ONNX attribute table (``reprobuild/ops/onnx_attributes.json``): regenerating it with the installed
onnx gives the committed file, it covers every ONNX op reprobuild defines, and reading it needs no onnx."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest

from reprobuild.ops import all_ops
from reprobuild.ops.attr import ABSENT, REQUIRED
from reprobuild.ops.onnx_attributes import REGENERATE, TABLE_PATH, onnx_attributes, table_onnx_version
from reprobuild.ops.onnx_schema import table, text


def test_regenerating_gives_the_committed_table() -> None:
    if onnx.__version__ != table_onnx_version():
        pytest.skip(f"the table was generated from onnx {table_onnx_version()} and onnx {onnx.__version__} is "
                    f"installed; install that version to compare, or run `{REGENERATE}` to move the table to this "
                    "one (then bump the version of each op whose attributes change)")
    with open(TABLE_PATH, encoding="utf-8") as f:
        committed = f.read()
    assert text(table()) == committed, f"the table is stale: run `{REGENERATE}` and commit it"


def test_every_onnx_op_reprobuild_defines_takes_its_attributes_from_the_table() -> None:
    for opdef in all_ops():
        if opdef.internal or opdef.domain:
            continue
        derived = onnx_attributes(opdef.op, opdef.versions, set(opdef.attribute_overrides))
        assert derived is not None, f"{opdef.op} is not in the table: run `{REGENERATE}`"
        if "attributes" in type(opdef).__dict__:
            continue  # written by hand on purpose (Clip: see its comment); test_layer_attributes checks it
        mine = {k: a for k, a in opdef.attributes.items() if k not in opdef.attribute_overrides}
        for key in opdef.checks_required:
            assert derived.pop(key).default is REQUIRED, f"{opdef.op}.checks_required names {key}: not required"
            assert mine.pop(key).default is ABSENT
        assert mine == derived, opdef.op


def test_the_table_is_read_without_onnx() -> None:
    code = ("import sys; import reprobuild.ops.onnx_attributes as t; from reprobuild.ops.registry import all_ops; "
            "assert all_ops() and t.onnx_attributes('Gemm', (7, 9, 11, 13)); "
            "assert not [m for m in sys.modules if m == 'onnx' or m.startswith('onnx.')], 'onnx was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
