"""A kernel symbol's compiled artifact: the digest of its own sections of a cubin, unchanged by other kernels in
the same file (which renumber the symbol table), changed by its own code and by the functions it calls.

The CPU tests build small ELF64 files here, laid out as NVRTC lays out cubins; the gpu test compiles a real
``.cu`` file with NVRTC."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest

from reprobuild.core.errors import BuildError
from reprobuild.kernels.cubin import symbol_digests
from tests.helpers import CUDA_SKIP

_PROGBITS, _SYMTAB, _STRTAB, _REL, _NOBITS = 1, 2, 3, 9, 8
_NV_INFO = 0x70000000  # SHT_LOPROC: what NVRTC gives .nv.info sections


@dataclass
class Function:
    name: str
    code: bytes
    calls: list[str] = field(default_factory=list)  # functions it calls and data it reads (relocations by symbol)
    shared: int = 0  # bytes of static shared memory (a NOBITS section)


def _strings(names: list[str]) -> tuple[bytes, dict[str, int]]:
    table, offsets = b"\x00", {}
    for name in names:
        offsets[name] = len(table)
        table += name.encode() + b"\x00"
    return table, offsets


def make_cubin(functions: list[Function], objects: dict[str, bytes] | None = None) -> bytes:
    """An ELF64 file with, per function, .text/.nv.info/.nv.constant0/.rel.text (and .nv.shared) sections named
    after it, the data ``objects`` in one shared .nv.constant3 section, a section symbol per section, a function
    symbol per function and an object symbol per object, in the order given."""
    objects = objects or {}
    sections: list[dict] = [{"name": "", "type": 0, "data": b""}]
    if objects:
        sections.append({"name": ".nv.constant3", "type": _PROGBITS, "data": b"".join(objects.values())})
    for f in functions:
        sections.append({"name": f".text.{f.name}", "type": _PROGBITS, "data": f.code, "function": f.name})
        sections.append({"name": f".nv.constant0.{f.name}", "type": _PROGBITS, "data": bytes(0x160 + 16)})
        sections.append({"name": f".nv.info.{f.name}", "type": _NV_INFO, "info_of": f.name})
        if f.shared:
            sections.append({"name": f".nv.shared.{f.name}", "type": _NOBITS, "data": b"", "size": f.shared})
        if f.calls:
            sections.append({"name": f".rel.text.{f.name}", "type": _REL, "rel_of": f.name})
    symtab_index, strtab_index, shstrtab_index = len(sections), len(sections) + 1, len(sections) + 2
    # symbols: null, a section symbol per section, then the functions
    symbols = [("", 0, 0)] + [("", 3, i) for i in range(1, symtab_index)]
    text_index = {s["function"]: i for i, s in enumerate(sections) if "function" in s}
    symbols = [(n, kind, shndx, 0, 0) for n, kind, shndx in symbols]
    symbols += [(f.name, 2, text_index[f.name], 0, len(f.code)) for f in functions]
    offset = 0
    for name, data in objects.items():
        symbols.append((name, 1, 1, offset, len(data)))
        offset += len(data)
    symbol_index = {name: k for k, (name, kind, *_) in enumerate(symbols) if kind in (1, 2)}
    section_symbol = {sections[shndx]["name"]: k for k, (_, kind, shndx, *_) in enumerate(symbols) if kind == 3}
    strtab, name_offsets = _strings([f.name for f in functions] + list(objects))
    for s in sections:
        if "info_of" in s:  # EIATTR_PARAM_CBANK (symbol of its .nv.constant0 section), EIATTR_CBANK_PARAM_SIZE
            bank = section_symbol[f".nv.constant0.{s['info_of']}"]
            s["data"] = struct.pack("<BBHIHH", 4, 0x0A, 8, bank, 0x160, 16) + struct.pack("<BBH", 3, 0x19, 16)
        if "rel_of" in s:
            calls = next(f.calls for f in functions if f.name == s["rel_of"])
            s["data"] = b"".join(struct.pack("<QQ", 8 * k, (symbol_index[c] << 32) | 0x38) for k, c in enumerate(calls))
            s["link"], s["info"] = symtab_index, text_index[s["rel_of"]]
    symtab = b"".join(struct.pack("<IBBHQQ", name_offsets.get(n, 0), kind, 0, shndx, value, size)
                      for n, kind, shndx, value, size in symbols)
    sections.append({"name": ".symtab", "type": _SYMTAB, "data": symtab, "link": strtab_index})
    sections.append({"name": ".strtab", "type": _STRTAB, "data": strtab})
    shstrtab, section_names = _strings([s["name"] for s in sections[1:]] + [".shstrtab"])
    sections.append({"name": ".shstrtab", "type": _STRTAB, "data": shstrtab})
    body, offsets = b"", []
    for s in sections:
        offsets.append(64 + len(body))
        body += s["data"]
    shoff = 64 + len(body)
    headers = b"".join(struct.pack("<IIQQQQIIQQ", section_names.get(s["name"], 0) if s["name"] else 0, s["type"], 0, 0,
                                   offset, s.get("size", len(s["data"])), s.get("link", 0), s.get("info", 0), 8, 0)
                       for s, offset in zip(sections, offsets))
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 190, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(sections),
                         shstrtab_index)
    return header + body + headers


K1 = Function("k1", b"\x11" * 32, calls=["slow"], shared=256)
K2 = Function("k2", b"\x22" * 48, calls=["table"])
SLOW = Function("slow", b"\x33" * 16)
TABLE = {"table": b"\x01\x02\x03\x04" * 4}


def test_another_kernel_leaves_a_kernels_digest_alone_even_when_it_renumbers_the_symbols() -> None:
    base = symbol_digests(make_cubin([SLOW, K1, K2], TABLE), ["k1", "k2"])
    appended = symbol_digests(make_cubin([SLOW, K1, K2, Function("k3", b"\x44" * 8, calls=["slow", "more"])],
                                         {**TABLE, "more": b"\x09" * 8}), ["k1", "k2"])
    prepended = symbol_digests(make_cubin([Function("k0", b"\x55" * 8), SLOW, K1, K2],
                                          {"first": b"\x07" * 4, **TABLE}), ["k1", "k2"])
    assert base == appended == prepended
    assert base["k1"] != base["k2"]


@pytest.mark.parametrize("edited, objects, changed", [
    ([SLOW, Function("k1", b"\x11" * 31 + b"\x12", calls=["slow"], shared=256), K2], TABLE, "k1"),  # its own code
    ([Function("slow", b"\x33" * 15 + b"\x34"), K1, K2], TABLE, "k1"),  # a function it calls
    ([SLOW, Function("k1", b"\x11" * 32, calls=["slow"], shared=512), K2], TABLE, "k1"),  # its shared memory
    ([SLOW, Function("k1", b"\x11" * 32, calls=["slow", "slow"], shared=256), K2], TABLE, "k1"),  # its relocations
    ([SLOW, K1, K2], {"table": b"\x01\x02\x03\x05" * 4}, "k2"),  # a constant array it reads
], ids=["own_code", "callee", "shared_memory", "relocations", "constant_data"])
def test_a_kernels_own_code_and_what_it_reaches_change_its_digest(edited: list[Function], objects: dict[str, bytes],
                                                                   changed: str) -> None:
    base = symbol_digests(make_cubin([SLOW, K1, K2], TABLE), ["k1", "k2"])
    after = symbol_digests(make_cubin(edited, objects), ["k1", "k2"])
    assert {k for k in base if after[k] != base[k]} == {changed}


def test_what_is_not_a_cubin_or_lacks_the_kernel_is_refused() -> None:
    with pytest.raises(BuildError, match="not one"):
        symbol_digests(b"\x7fELF" + bytes(60), ["k1"])
    with pytest.raises(BuildError, match=r"no section \.text\.k9"):
        symbol_digests(make_cubin([K2], TABLE), ["k9"])
    truncated = make_cubin([K2], TABLE)[:200]
    with pytest.raises(BuildError, match="outside the file"):
        symbol_digests(truncated, ["k2"])


APPENDED = """
extern "C" __global__ void appended_for_the_test(float* out, long long total)
{
    for (long long i = threadIdx.x; i < total; i += blockDim.x) out[i] = rnd(out[i] * 3.f);
}
"""


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nvrtc_gives_an_existing_kernel_the_same_digest_when_another_is_appended(dtype: str) -> None:
    """conv.cu compiled as it is and with a kernel appended (and with a comment added to epilogue.cuh): every
    kernel it had keeps its per-symbol digest; editing one kernel's body changes that kernel's digest only."""
    from reprobuild.kernels.backend import CudaBackend
    from reprobuild.kernels.nvrtc import DTYPE_DEFINES, _compile, compile_options, package_headers, read_source

    backend = CudaBackend()
    options = (*compile_options(backend.compute_capability), *(f"-D{d}" for d in DTYPE_DEFINES[dtype]))
    source = read_source("conv.cu").decode()
    headers = package_headers()
    kernels = ["conv_direct", "conv_epilogue", "im2col", "winograd_input", "winograd_output"]
    base = symbol_digests(_compile("conv.cu", source, options, headers), kernels)
    appended = symbol_digests(_compile("conv.cu", source + APPENDED, options, headers), kernels)
    commented = tuple((n, "// a comment\n" + t) if n == "epilogue.cuh" else (n, t) for n, t in headers)
    assert symbol_digests(_compile("conv.cu", source, options, commented), kernels) == base
    assert appended == base
    edited = source.replace("if (has_bias) acc = __fadd_rn(acc, bias[oc]);",
                            "if (has_bias) acc = __fadd_rn(acc, 2.f * bias[oc]);")
    assert edited != source
    changed = symbol_digests(_compile("conv.cu", edited, options, headers), kernels)
    assert [k for k in kernels if changed[k] != base[k]] == ["conv_direct"]
