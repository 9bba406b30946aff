"""Failures the campaign reproduces that issue 20 lists and other branches fix (``i20-*``), by what they look like.

The CI test (``test_fuzz.py``) fails on any failure not in this table; a run whose every failure is in it is an
expected failure that names them (pytest's ``xfail``: visible, never silent). Once those branches are merged,
empty ``KNOWN``: the test then demands a campaign without any failure, which is issue 20's acceptance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Known:
    finding: str  #: the issue's words for it
    result: str  #: "untyped", "unbounded", "silent", "crash"
    pattern: str  #: searched in "KIND at WHERE: MESSAGE"
    targets: tuple[str, ...] = ()  #: the only targets it may come from (none named: any)

    def matches(self, failure: dict[str, Any]) -> bool:
        text = f"{failure['kind']} at {failure['where']}: {failure['message']}"
        return (failure["result"] == self.result and failure["target"] in (self.targets or (failure["target"],))
                and re.search(self.pattern, text, re.DOTALL) is not None)


KNOWN: tuple[Known, ...] = (
    Known("manifest whose layers are a list of empty objects: every validation error listed", "unbounded",
          r"at message: \d+-byte message: .*validation errors? for"),
    Known("manifest or header of a million empty entries: the error list exhausts memory", "crash",
          r"memory allocation of \d+ bytes failed", ("amplify",)),
    Known("manifest or engine header of 100,000 to a million empty entries: memory grows with the entries",
          "unbounded", r"at memory: peak resident memory grew", ("amplify",)),
    Known("a 2 KB .npy header claiming a huge shape: MemoryError", "untyped", r"^MemoryError at .*read_npy"),
    Known("8 GiB of scratch under the default cap (host memory): MemoryError where less is available",
          "untyped", r"^MemoryError at kernels/backend.py"),
    Known("a MemoryError elsewhere (a kernel's temporary, such as the padding of a SAME window with dilations of "
          "2**31 in a build's golden run): to be mapped to ResourceError", "untyped", r"^MemoryError at "),
    Known("Softmax axis -1 in a loaded engine: ValueError at run time", "untyped", r"^ValueError at kernels/softmax"),
    Known("a loaded engine's layer without an attribute its computation reads: KeyError at run time", "untyped",
          r"^KeyError at reprobuild/ops/"),
    Known("a constant index out of range in a loaded engine (Gather, GatherND, ScatterElements): IndexError",
          "untyped", r"^IndexError at reprobuild/ops/_index_"),
    Known("ONNX ir_version 2**40: TypeError from the checker", "untyped",
          r"^TypeError at .*onnx_parser.py:_check_model"),
    Known("Conv or pool with auto_pad SAME_* and a stride of 0: ZeroDivisionError", "untyped",
          r"^ZeroDivisionError at reprobuild/ops/_window.py"),
    Known("Tile to a zero-size tensor with a 2**43 dimension, Expand of a 0-d tensor to []: AssertionError",
          "untyped", r"^AssertionError at (engine/format.py:engine_header|.*(tile|expand|Tile|Expand))",
          ("onnx_build",)),
    Known("names with terminal escapes printed raw", "silent", r"raw terminal escape"),
    Known("any other run-time failure of a loaded engine's layer (an attribute of another kind, a value its "
          "computation cannot use, an output other than inference says): to become a typed error", "untyped",
          r"^\w+ at (reprobuild/ops/|kernels/)", ("engine_forgery", "engine_header")),
    Known("a __cuda_array_interface__ object on a CPU engine without CuPy: ModuleNotFoundError", "untyped",
          r"^ModuleNotFoundError at engine/interop.py"),
    Known("a full disk (ENOSPC; here EFBIG from RLIMIT_FSIZE) while writing: OSError", "untyped",
          r"^OSError at reprobuild/fileio.py"),
    Known("a Constant's tensor in external data read from outside the model", "silent", r"read a file outside"),
    Known("verify --against (and diff) accept an edited pinned part", "silent",
          r"verify --against accepts|diff (calls|exits 0)"),
)


def known(failure: dict[str, Any]) -> Known | None:
    return next((k for k in KNOWN if k.matches(failure)), None)
