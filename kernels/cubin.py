"""The compiled artifact of one kernel symbol: a digest of that symbol's own sections of a cubin (an ELF file).

NVRTC puts each kernel in sections named after it: ``.text.<name>`` (its machine code), ``.nv.info.<name>`` (its
attributes: parameter bank, register and barrier use, ...), ``.nv.constant0.<name>`` (its parameter bank),
``.nv.shared.<name>`` (its static shared memory) and the relocations of its code (``.rel[a].text.<name>``). A
digest over those alone is what the kernel is, whatever else the file holds: adding a kernel to the source adds
sections and symbols (which renumbers the symbol table) but leaves these bytes alone, except for the symbol
indices inside relocations and inside two attributes (the parameter bank's section, the external functions), which
are replaced here by the symbols' names. A function the kernel calls that was not inlined has sections of its
own: its digest is included, by name; so are the bytes of each data object its code refers to (a ``__constant__``
or ``__device__`` array, kept in a section all kernels share). The file-wide ``.nv.info`` and the symbol table are
not digested.

Plain ``struct`` parsing of ELF64 little-endian (what cubins are); anything else is refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from reprobuild.core.digest import digest_of, sha256_hex
from reprobuild.core.errors import BuildError

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 2, 4, 8, 9
_STT_OBJECT, _STT_FUNC, _STT_SECTION = 1, 2, 3
#: The sections that belong to one kernel: these prefixes followed by its (mangled) name.
PREFIXES = (".text.", ".nv.info.", ".nv.constant0.", ".nv.shared.", ".rel.text.", ".rela.text.")
#: .nv.info attributes whose value holds symbol indices: EIATTR_PARAM_CBANK (its first word), EIATTR_EXTERNS (all).
_SYMBOL_ATTRIBUTES = {0x0A: 1, 0x0F: None}


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int


class Elf:
    """The sections and symbols of an ELF64 little-endian file, bounds-checked."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _EHDR.size or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise BuildError("a cubin is an ELF64 little-endian file; these bytes are not one")
        header = _EHDR.unpack_from(data)
        shoff, shentsize, shnum, shstrndx = header[6], header[11], header[12], header[13]
        if shentsize != _SHDR.size or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
            raise BuildError("the cubin's section header table lies outside the file")
        self.data = data
        raw = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        for r in raw:
            if r[1] != _SHT_NOBITS and r[4] + r[5] > len(data):
                raise BuildError("a cubin section lies outside the file")
        names = raw[shstrndx]
        self.sections = [Section(self._string(names[4], r[0]), r[1], r[2], r[4], r[5], r[6], r[7], r[8], r[9])
                         for r in raw]
        self.index = {s.name: i for i, s in enumerate(self.sections)}
        self.symbols: list[tuple[str, int, int, int, int]] = []  # (name, type, section index, value, size)
        for s in self.sections:
            if s.type == _SHT_SYMTAB:
                strings = self.sections[s.link].offset
                for k in range(s.size // _SYM.size):
                    st_name, st_info, _, shndx, value, size = _SYM.unpack_from(data, s.offset + k * _SYM.size)
                    kind = st_info & 0xF
                    name = self.sections[shndx].name if kind == _STT_SECTION and shndx < len(self.sections) \
                        else self._string(strings, st_name)
                    self.symbols.append((name, kind, shndx, value, size))

    def _string(self, table_offset: int, offset: int) -> str:
        start = table_offset + offset
        end = self.data.find(b"\x00", start)
        if start >= len(self.data) or end < 0:
            raise BuildError("a cubin names a string outside its string table")
        return self.data[start:end].decode("utf-8", errors="replace")

    def content(self, section: Section) -> bytes:
        return b"" if section.type == _SHT_NOBITS else self.data[section.offset:section.offset + section.size]

    def symbol(self, index: int) -> str:
        return self.symbols[index][0] if 0 <= index < len(self.symbols) else f"<symbol {index}>"

    def object_data(self, name: str) -> str | None:
        """The sha256 of data object ``name``'s bytes (its size, for one in a section with no bytes in the file);
        None when ``name`` is no data object."""
        for symbol, kind, shndx, value, size in self.symbols:
            if symbol == name and kind == _STT_OBJECT and 0 < shndx < len(self.sections):
                section = self.sections[shndx]
                if section.type == _SHT_NOBITS:
                    return f"{size} bytes, uninitialized"
                if value + size > section.size:
                    raise BuildError(f"the cubin's object {name!r} lies outside its section {section.name}")
                return sha256_hex(self.data[section.offset + value:section.offset + value + size])
        return None


def _relocations(elf: Elf, section: Section) -> list[list[Any]]:
    """(offset, type, symbol name, addend) of each relocation: symbol indices replaced by names."""
    rela = section.type == _SHT_RELA
    size = 24 if rela else 16
    out = []
    for k in range(section.size // size):
        offset, info = struct.unpack_from("<QQ", elf.data, section.offset + k * size)
        addend = struct.unpack_from("<q", elf.data, section.offset + k * size + 16)[0] if rela else 0
        out.append([offset, info & 0xFFFFFFFF, elf.symbol(info >> 32), addend])
    return out


def _attributes(elf: Elf, data: bytes) -> list[list[Any]]:
    """The .nv.info records (format, attribute, value), symbol indices in the values replaced by names; a record
    that does not parse is kept as its remaining bytes."""
    out: list[list[Any]] = []
    at = 0
    while at + 4 <= len(data):
        fmt, attr, value = data[at], data[at + 1], struct.unpack_from("<H", data, at + 2)[0]
        at += 4
        if fmt != 4:  # a value in the header itself
            out.append([fmt, attr, value])
            continue
        payload = data[at:at + value]
        at += value
        words = _SYMBOL_ATTRIBUTES.get(attr, 0)
        count = len(payload) // 4 if words is None else min(words or 0, len(payload) // 4)
        names = [elf.symbol(struct.unpack_from("<I", payload, 4 * i)[0]) for i in range(count)]
        out.append([fmt, attr, names, payload[4 * count:].hex()])
    if at < len(data):
        out.append(["rest", data[at:].hex()])
    return out


def symbol_digest(elf: Elf, name: str, _seen: frozenset[str] = frozenset()) -> str:
    """The digest of kernel (or device function) ``name``'s own sections, and of the functions it calls."""
    if f".text.{name}" not in elf.index:
        raise BuildError(f"the cubin has no code for {name!r} (no section .text.{name})")
    parts: dict[str, Any] = {}
    callees: set[str] = set()
    objects: set[str] = set()
    for prefix in PREFIXES:
        section_name = prefix + name
        if section_name not in elf.index:
            continue
        s = elf.sections[elf.index[section_name]]
        data = elf.content(s)
        record: dict[str, Any] = {"type": s.type, "flags": s.flags, "size": s.size, "align": s.align}
        if s.type in (_SHT_REL, _SHT_RELA):
            record["relocations"] = relocations = _relocations(elf, s)
            for target in (str(r[2]).removeprefix(".text.") for r in relocations):
                if f".text.{target}" in elf.index and target != name:
                    callees.add(target)
                else:
                    objects.add(target)
        elif prefix == ".nv.info.":
            record["attributes"] = _attributes(elf, data)
        elif s.type != _SHT_NOBITS:
            record["sha256"] = sha256_hex(data)
        parts[prefix] = record
    seen = _seen | {name}
    parts["calls"] = {c: symbol_digest(elf, c, seen) for c in sorted(callees - seen)}
    parts["data"] = {o: d for o in sorted(objects) if (d := elf.object_data(o)) is not None}
    return digest_of(parts)


def symbol_digests(cubin: bytes, names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Each named kernel's digest (see :func:`symbol_digest`) in the cubin."""
    elf = Elf(cubin)
    return {name: symbol_digest(elf, name) for name in sorted(names)}
