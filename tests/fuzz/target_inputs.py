"""The run-time input target: what a caller hands an engine. ``.npy`` files with forged headers (huge, negative or
65-dimensional shapes, object, string, void, structured or big-endian dtypes, Fortran order, headers that are not a
dict, lengths that lie, truncated or padded data) through the command line's loaders (``--input NAME=FILE.npy``,
``--inputs DIR``, ``reprobuild run``); and through the API, arrays of the wrong dtype, shape, byte order or
layout, Python objects that are not arrays, objects exposing ``__array_interface__``, ``__cuda_array_interface__``
or DLPack with hostile contents, input mappings with wrong keys, and unknown output forms.
"""

from __future__ import annotations

import argparse
import random
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from reprobuild.cli.common import engine_inputs
from tests.fuzz.case import Case, Target
from tests.fuzz.exercise import CLI_CAP, Context, cli
from tests.fuzz.mutate import pick
from tests.fuzz.seeds import Seed

NPY_MAGIC = b"\x93NUMPY"


def npy_file(rng: random.Random, shape: tuple[int, ...], dtype: str) -> tuple[bytes, str]:
    """A .npy file meant for an input of ``shape`` and ``dtype``, with a forged header (or, one time in ten, a
    valid one)."""
    descr = np.dtype(dtype).str if dtype in np.sctypeDict else "<f4"
    fortran: Any = False
    dims: Any = tuple(shape)
    header_text: str | None = None
    how = rng.randrange(10)
    note = "valid"
    if how == 1:
        dims = pick(rng, ((2_000_000, 1_000_000), (2**62,), (-1, 3), (), (1,) * 65, (*shape, 2), (0,), (2**31, 2**31)))
        note = f"shape {dims if len(dims) < 8 else f'{len(dims)} dims'}"
    elif how == 2:
        descr = pick(rng, ("|O", "<U10", "|V8", ">f4", [("a", "<f4")], "<c8", "<f2", "<i8", "bogus", "<M8[s]", "|b1",
                           "<f8", "|S4"))
        note = f"descr {descr!r}"
    elif how == 3:
        fortran = pick(rng, (True, "yes", 1, None))
        note = f"fortran_order {fortran!r}"
    elif how == 4:
        header_text = pick(rng, ("[1, 2]", "{'descr': '<f4'}",
                                 "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 64), 'extra': 1}",
                                 "__import__('os').getcwd()", "{" * 200, "", "{'shape': 'x'}"))
        note = f"header {header_text[:30]!r}"
    if header_text is None:
        header_text = repr({"descr": descr, "fortran_order": fortran, "shape": dims})
    version = pick(rng, ((1, 0), (1, 0), (2, 0), (3, 0), (9, 9)))
    header = header_text.encode("latin1")
    length_bytes = 2 if version[0] == 1 else 4
    pad = -(len(NPY_MAGIC) + 2 + length_bytes + len(header) + 1) % 64
    header = header + b" " * pad + b"\n"
    length = len(header) if rng.random() < 0.9 else pick(rng, (0, 1, 2**16 - 1, 2**32 - 1))
    if length_bytes == 2:
        length = min(length, 2**16 - 1)
    head = NPY_MAGIC + bytes(version) + length.to_bytes(length_bytes, "little") + header
    itemsize = np.dtype(descr).itemsize if isinstance(descr, str) and descr in ("<f4", "<i8", "<f8") else 4
    nbytes = int(np.prod(shape, dtype=object)) * itemsize
    data = np.random.default_rng(rng.getrandbits(32)).standard_normal(max(nbytes // 4, 0)).astype("<f4").tobytes()
    cut = rng.random()
    if cut < 0.15:
        data = data[: rng.randrange(len(data) + 1)]
        note += ", data truncated"
    elif cut < 0.2:
        data += b"\0" * 16
        note += ", data padded"
    return head + data, note


class _ArrayInterface:
    def __init__(self, backing: np.ndarray, interface: dict[str, Any]) -> None:
        self._backing = backing  # keeps the memory the interface points at alive
        self.__array_interface__ = interface


class _CudaArrayInterface:
    def __init__(self, interface: dict[str, Any]) -> None:
        self.__cuda_array_interface__ = interface


class _DLPack:
    def __init__(self, device: Any, capsule: Any) -> None:
        self._device, self._capsule = device, capsule

    def __dlpack_device__(self) -> Any:
        return self._device

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        return self._capsule


class _ArrayMethod:
    def __init__(self, value: Any) -> None:
        self._value = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        return self._value


def hostile_input(rng: random.Random, shape: tuple[int, ...], dtype: str) -> tuple[Any, str]:
    """A value for an input of ``shape`` and ``dtype`` that is wrong in one way (or, rarely, right)."""
    gen = np.random.default_rng(rng.getrandbits(32))
    good = gen.standard_normal(shape).astype(dtype) if dtype.startswith("float") else np.zeros(shape, dtype)
    makers: list[tuple[str, Callable[[], Any]]] = [
        ("valid", lambda: good),
        ("float64", lambda: good.astype(np.float64)),
        ("int32", lambda: good.astype(np.int32)),
        ("complex64", lambda: good.astype(np.complex64)),
        ("object", lambda: good.astype(object)),
        ("structured", lambda: np.zeros(shape, [("a", "<f4")])),
        ("big-endian", lambda: good.astype(good.dtype.newbyteorder(">"))),
        ("strided", lambda: np.repeat(good, 2, axis=-1)[..., ::2] if good.ndim else good),
        ("fortran", lambda: np.asfortranarray(good)),
        ("read-only", lambda: _readonly(good)),
        ("0-d", lambda: np.float32(1.0)),
        ("extra dim", lambda: good[None]),
        ("transposed", lambda: good.T),
        ("empty", lambda: np.zeros((0, *shape[1:]), dtype)),
        ("datetime", lambda: np.zeros(shape, "M8[s]")),
        ("masked", lambda: np.ma.masked_array(good, mask=good > 0)),
        ("list", lambda: good.tolist()),
        ("None", lambda: None),
        ("str", lambda: "input.npy"),
        ("bytes", lambda: good.tobytes()),
        ("dict", lambda: {"data": good}),
        ("array_interface", lambda: _ArrayInterface(good, _interface(rng, good))),
        ("cuda_array_interface", lambda: _CudaArrayInterface({"shape": shape, "typestr": "<f4", "version": 3,
                                                              "data": (good.ctypes.data, False)})),
        ("dlpack", lambda: _DLPack(pick(rng, ((1, 0), (7, 0), ("a", "b"), (1,), None, (2, 0), (13, 5))),
                                   pick(rng, (None, "capsule", good)))),
        ("__array__", lambda: _ArrayMethod(pick(rng, (None, [1, 2], "x", good.astype(np.float64), good)))),
    ]
    name, make = pick(rng, makers)
    return make(), name


def _readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def _interface(rng: random.Random, backing: np.ndarray) -> dict[str, Any]:
    """An ``__array_interface__`` over ``backing``'s memory (never past its end) that lies in one field."""
    interface = dict(backing.__array_interface__)
    field = pick(rng, ("typestr", "shape", "version", "data", "strides", "descr", "none"))
    if field == "typestr":
        interface["typestr"] = pick(rng, (">f4", "|O8", "<U1", "|V4", "xyz", "<f2", "|b1"))
    elif field == "shape":
        interface["shape"] = pick(rng, ((backing.size,), (), (1,) * 70, (-1,), (0,)))
    elif field == "version":
        interface["version"] = pick(rng, (0, 99, "3"))
    elif field == "data":
        interface["data"] = pick(rng, (None, 0, "x", (backing.ctypes.data,)))
    elif field == "strides":
        interface["strides"] = pick(rng, ((0,) * backing.ndim, (4,), "x"))
    elif field == "descr":
        interface["descr"] = pick(rng, ([("", "<f4")], "x", [("a",)]))
    return interface


def run_time_inputs(bindings: Any) -> list[Any]:
    """The inputs a caller gives (those pinned at build time left out)."""
    return [b for b in bindings if b.value is None]


def use_npy(rng: random.Random, data: bytes, seed: Seed, ctx: Context) -> None:
    engine = ctx.engine(seed)
    binding = run_time_inputs(engine.inputs)[0]
    path = ctx.case_file("in.npy", data)
    how = rng.random()
    if how < 0.15:
        cli(["run", ctx.seed_file(seed, "engine"), "--input", f"{binding.name}={path}", "--seed", "0",
             "--max-memory", CLI_CAP])
        return
    if how < 0.5:
        args = argparse.Namespace(input=[(binding.name, path)], inputs=None, seed=0, input_default_seed=None)
    else:
        directory = ctx.case_file("dir/placeholder", b"").rsplit("/", 1)[0]
        ctx.case_file(f"dir/{binding.name}.npy", data)
        args = argparse.Namespace(input=[], inputs=directory, seed=0, input_default_seed=None)
    inputs, _ = engine_inputs(args, engine.inputs)
    engine.create_execution_context().execute(inputs)


def use_value(rng: random.Random, value: Any, seed: Seed, ctx: Context) -> None:
    engine = ctx.engine(seed)
    names = [b.name for b in run_time_inputs(engine.inputs)]
    gen = np.random.default_rng(0)
    inputs: Any = {b.name: gen.standard_normal(b.shape).astype(b.dtype) for b in run_time_inputs(engine.inputs)}
    inputs[names[0]] = value
    mapping = rng.random()
    if mapping < 0.1:
        inputs = list(inputs.items())
    elif mapping < 0.15:
        inputs[pick(rng, (0, None, ("x",), "extra"))] = value
    elif mapping < 0.2:
        inputs = types.MappingProxyType(inputs)
    context = engine.create_execution_context()
    form = pick(rng, ("numpy", "numpy", "numpy", "device", "torch", "bogus"))
    if rng.random() < 0.2:
        context.to_host(context.enqueue(inputs))
    else:
        context.execute(inputs, outputs=form)


def inputs(rng: random.Random, ctx: Context) -> Case:
    seed = pick(rng, ctx.seeds)
    binding = run_time_inputs(ctx.engine(seed).inputs)[0]
    if rng.random() < 0.5:
        data, note = npy_file(rng, binding.shape, binding.dtype)
        return Case(lambda: use_npy(rng, data, seed, ctx), data, ".npy", [f"{seed.name} {binding.name}: .npy {note}"])
    value, how = hostile_input(rng, binding.shape, binding.dtype)
    return Case(lambda: use_value(rng, value, seed, ctx), b"", ".txt", [f"{seed.name} {binding.name}: {how}"])


TARGETS = (
    Target("inputs", "input", inputs, 0.03, 200,
           ".npy files with forged headers (huge, negative, 65-dimensional shapes; object, string, void, structured, "
           "big-endian dtypes; Fortran order; non-dict headers; lying lengths; truncated or padded data) through "
           "--input, --inputs and `reprobuild run`; arrays of the wrong dtype, shape, byte order or layout, "
           "non-arrays, hostile __array_interface__, __cuda_array_interface__, DLPack and __array__ objects, "
           "wrong input mappings and output forms through the API"),
)
