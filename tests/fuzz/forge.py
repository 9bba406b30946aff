"""Consistent engine forgeries: a layer's attributes, shapes, dtypes, constants, tactic or workspace, or the memory
plan, changed in the header AND the embedded manifest, the memory plan re-derived, every digest (each weight's,
the manifest's, the trailer) recomputed.

A forgery passes every integrity check, so it reaches what the cheap checks cannot: the layer checks through the
op definitions, the preparation of each layer by its tactic, and execution on random inputs, which is where the
untyped errors of issue 20 were (a Softmax axis of -1, a MaxPool without ``kernel_shape``, a Gather index out of
range). The edits reuse the corpus's :class:`tests.corpus.make_engine.Engine`, which writes the corpus files the
same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from reprobuild.core.digest import attrs_to_json
from reprobuild.core.dtypes import np_dtype
from reprobuild.engine.format import weight_table
from reprobuild.ops import find_op, get_op
from reprobuild.ops.layer_attributes import attribute_schema
from reprobuild.registry import default_registry
from tests.corpus.make_engine import Engine
from tests.fuzz.mutate import NAMES, NASTY_FLOATS, NASTY_INTS, pick

#: Strings an attribute may hold, plausible and not.
STRINGS = ("", "SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "constant", "reflect", "edge", "wrap", "linear",
           "cubic", "nearest", "Relu", "Tanh", "Sigmoid", "LeakyRelu", "Gelu", "float16", "float32", "int8", "bool",
           "bfloat16", "value", "input", "none", "up", "down", "half_pixel", "align_corners", "xyz", "\x1b[31m")
#: Dtypes a tensor may be given (every one the engine format knows, sub-byte ones included).
DTYPES = ("bool", "int8", "uint8", "int16", "int32", "int64", "uint64", "float16", "bfloat16", "float32", "float64",
          "float8_e4m3fn", "float8_e5m2", "int4", "uint2")
#: Unary ops a unary layer may become, and the other families an op may be swapped within.
SWAPS = (("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "Softplus", "Abs", "Neg", "Exp",
          "Log", "Sqrt", "Reciprocal", "Clip", "Cast", "Celu", "Shrink", "ThresholdedRelu", "Identity"),
         ("Softmax", "LogSoftmax", "Hardmax"), ("MaxPool", "AveragePool", "LpPool"),
         ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"),
         ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2"),
         ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Greater", "Equal"),
         ("Gather", "GatherElements", "GatherND", "ScatterElements"), ("Conv", "FusedConv", "ConvTranspose"),
         ("Gemm", "FusedGemm", "MatMul"), ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Tile", "Expand"),
         ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "RMSNormalization"))


class Forgery(Engine):
    """An engine file taken apart for consistent edits (``Engine``'s, plus attributes, weights and plans)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.notes: list[str] = []

    def pair(self, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Layer ``i`` in the header and in the embedded manifest (both list the layers in the same order)."""
        return self.header["layers"][i], self.manifest["layers"][i]

    def sync_attrs(self, i: int) -> None:
        """The manifest's copy of layer ``i``'s attributes, as the builder writes it from the header's."""
        header, manifest = self.pair(i)
        manifest["attrs"] = attrs_to_json([(k, tuple(v) if isinstance(v, list) else v)
                                           for k, v in sorted(header["attrs"].items())])

    def sync_schemas(self) -> None:
        """The header's attribute schemas for the ops its layers use now, as the builder writes them."""
        ops = sorted({layer["op"] for layer in self.header["layers"]})
        self.header["attribute_schemas"] = {op: attribute_schema(get_op(op)) for op in ops}

    def sync_memory(self) -> None:
        """The manifest's memory figures from the header's memory plan."""
        mem, record = self.header["memory"], self.manifest["memory"]
        record.update(activation_bytes=mem["activation_bytes"], workspace_bytes=mem["workspace_bytes"],
                      library_workspace_bytes=mem["library_bytes"],
                      context_bytes=mem["workspace_offset"] + mem["workspace_bytes"] + mem["library_bytes"])

    def shape_of(self, name: str) -> list[int]:
        for t in (*self.header["activations"], *self.header["weights"]):
            if t["name"] == name:
                return list(t["shape"])
        return []

    def weight_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for w in self.header["weights"]:
            raw = bytes(self.buffer[w["offset"]:w["offset"] + w["nbytes"]])
            out[w["name"]] = np.frombuffer(raw, dtype=np_dtype(w["dtype"])).reshape(w["shape"]).copy()
        return out

    def retile(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the weights (same names): a new weight table and buffer, shapes, dtypes and digests written
        wherever the tensors are recorded, and the manifest's weight bytes."""
        table, nbytes = weight_table(arrays)
        buffer = bytearray(nbytes)
        for entry in table:
            raw = np.ascontiguousarray(arrays[entry["name"]]).tobytes()
            buffer[entry["offset"]:entry["offset"] + len(raw)] = raw
            for t in self.tensors(entry["name"]):
                t["shape"], t["dtype"] = list(entry["shape"]), entry["dtype"]
        self.header["weights"], self.header["buffer_nbytes"], self.buffer = table, nbytes, bytes(buffer)
        digests = {e["name"]: e["sha256"] for e in table}
        for pinned in (*self.header["pinned_inputs"], *self.manifest.get("pinned_inputs", [])):
            if pinned["name"] in digests:
                pinned["sha256"] = digests[pinned["name"]]
        self.manifest["memory"]["weights_bytes"] = sum(e["nbytes"] for e in table)


# --- the values an edit writes -------------------------------------------------------------------------------------

def _int_for(rng: random.Random, old: int, rank: int) -> int:
    return pick(rng, (-1, -2, -rank - 1, 0, 1, 2, max(rank - 1, 0), rank, rank + 1, 7, 64, old + 1, old - 1, 2**31,
                      2**40, -(2**40), pick(rng, NASTY_INTS)))


def attr_value(rng: random.Random, old: Any, rank: int) -> Any:
    """A hostile value for an attribute that holds ``old``: mostly of the same kind, sometimes another kind."""
    if rng.random() < 0.1:  # another kind altogether
        return pick(rng, (0, 1.5, "x", [], [1], [1.5, 2.5], ["a"], -1))
    if isinstance(old, (bool, int)):
        return _int_for(rng, int(old), rank)
    if isinstance(old, float):
        floats: tuple[float, ...] = (*NASTY_FLOATS, -1.0, 1e30, -1e30, old * 2, 0.0)
        return pick(rng, floats)
    if isinstance(old, str):
        return pick(rng, STRINGS)
    if isinstance(old, list):
        items = list(old)
        how = rng.randrange(6)
        if how == 0 and items:
            i = rng.randrange(len(items))
            items[i] = (_int_for(rng, int(items[i]), rank) if isinstance(items[i], int) else
                        pick(rng, NASTY_FLOATS) if isinstance(items[i], float) else pick(rng, STRINGS))
        elif how == 1:
            items = items[:-1]
        elif how == 2:
            items = items + (items[-1:] or [1])
        elif how == 3:
            items = []
        elif how == 4:
            items = [0 if isinstance(v, int) else v for v in items]
        else:
            items = [-v if isinstance(v, (int, float)) else v for v in items]
        return items
    return pick(rng, (0, "x", [1]))


def _hostile_contents(rng: random.Random, array: np.ndarray, axis_sizes: list[int]) -> np.ndarray:
    """``array`` (a copy) with one or every element replaced by a value its consumers may not expect: an index
    one past the end (or before the start) of an axis, a huge or negative integer, NaN, infinities, invalid bools."""
    out = array.copy()
    flat = out.reshape(-1)
    if flat.size == 0:
        return out
    kind = out.dtype.kind
    if kind in "iu":
        info = np.iinfo(out.dtype)
        size = pick(rng, axis_sizes or [1])
        candidates = [size, size + 1, -size - 1, info.max, info.min, -1, 2**31 - 1]
        values: list[float] = [v for v in candidates if info.min <= v <= info.max]
    elif kind == "f":
        values = [np.nan, np.inf, -np.inf, 0.0, 3e38, -3e38, 1e-45]
    elif kind == "b":
        flat.view(np.uint8)[rng.randrange(flat.size)] = rng.randrange(2, 256)  # a bool byte that is not 0 or 1
        return out
    else:
        return out
    value = pick(rng, values)
    if rng.random() < 0.5:
        flat[rng.randrange(flat.size)] = value
    else:
        flat[:] = value
    return out


# --- the edits: each returns a note of what it did, or None when it does not apply to this engine -----------------

Edit = Callable[[random.Random, Forgery], "str | None"]


def _layer(rng: random.Random, f: Forgery, with_attrs: bool = False) -> int | None:
    indices = [i for i, layer in enumerate(f.header["layers"]) if layer["attrs"] or not with_attrs]
    return pick(rng, indices) if indices else None


def attr_delete(rng: random.Random, f: Forgery) -> str | None:
    i = _layer(rng, f, with_attrs=True)
    if i is None:
        return None
    header, _ = f.pair(i)
    key = pick(rng, sorted(header["attrs"]))
    del header["attrs"][key]
    f.sync_attrs(i)
    return f"{header['name']} ({header['op']}): attribute {key} deleted"


def attr_set(rng: random.Random, f: Forgery) -> str | None:
    i = _layer(rng, f, with_attrs=True)
    if i is None:
        return None
    header, _ = f.pair(i)
    key = pick(rng, sorted(header["attrs"]))
    rank = len(f.shape_of(header["inputs"][0])) if header["inputs"] else 0
    header["attrs"][key] = attr_value(rng, header["attrs"][key], rank)
    f.sync_attrs(i)
    return f"{header['name']} ({header['op']}): {key} = {header['attrs'][key]!r}"


def attr_add(rng: random.Random, f: Forgery) -> str | None:
    """An attribute the op declares (with a value of its kind, or not) that the layer lacks, or an unknown one."""
    i = _layer(rng, f)
    if i is None:
        return None
    header, _ = f.pair(i)
    opdef = find_op(header["op"])
    declared = sorted(set(opdef.attributes) - set(header["attrs"])) if opdef is not None else []
    key = pick(rng, declared) if declared and rng.random() < 0.8 else pick(rng, NAMES[:14])
    spec = opdef.attributes.get(key) if opdef is not None else None
    kind = spec.kind if spec is not None else pick(rng, ("int", "float", "string", "ints"))
    rank = len(f.shape_of(header["inputs"][0])) if header["inputs"] else 0
    old = {"int": 0, "float": 0.0, "string": "", "ints": [0] * max(rank - 2, 1), "floats": [0.0],
           "strings": [""]}.get(kind, 0)
    header["attrs"][key] = attr_value(rng, old, rank)
    f.sync_attrs(i)
    return f"{header['name']} ({header['op']}): added {key} = {header['attrs'][key]!r}"


def tensor_dim(rng: random.Random, f: Forgery) -> str | None:
    t = pick(rng, f.header["activations"])
    if not t["shape"]:
        return None
    axis = rng.randrange(len(t["shape"]))
    old = t["shape"][axis]
    new = pick(rng, (0, 1, max(old - 1, 0), old + 1, old * 2, 2**rng.randint(10, 39)))
    for record in f.tensors(t["name"]):
        record["shape"] = [*record["shape"][:axis], new, *record["shape"][axis + 1:]]
    if t["name"] in f.header["declared_inputs"] and rng.random() < 0.5:
        f.header["declared_inputs"][t["name"]] = list(f.shape_of(t["name"]))
    return f"{t['name']}: dimension {axis} {old} -> {new}"


def batch_scale(rng: random.Random, f: Forgery) -> str | None:
    """Every activation's first dimension times a factor, consistently: a memory plan of any size."""
    factor = pick(rng, (2, 3, 2**10, 2**20, 2**26, 2**33))
    for name in [t["name"] for t in f.header["activations"] if t["shape"]]:
        for record in f.tensors(name):
            if record["shape"]:
                record["shape"] = [record["shape"][0] * factor, *record["shape"][1:]]
    for shape in f.header["declared_inputs"].values():
        if shape:
            shape[0] = "N"
    return f"every activation's first dimension x{factor}"


def tensor_dtype(rng: random.Random, f: Forgery) -> str | None:
    t = pick(rng, f.header["activations"])
    new = pick(rng, DTYPES)
    for record in f.tensors(t["name"]):
        record["dtype"] = new
    return f"{t['name']}: dtype {t['dtype']} -> {new}"


def weight_values(rng: random.Random, f: Forgery) -> str | None:
    """A constant's values (a Gather's indices, a Pad's pads, a scale) replaced by hostile ones."""
    if not f.header["weights"]:
        return None
    arrays = f.weight_arrays()
    ints = [n for n, a in arrays.items() if a.dtype.kind in "iub"]
    name = pick(rng, ints) if ints and rng.random() < 0.7 else pick(rng, sorted(arrays))
    consumers = [layer for layer in f.header["layers"] if name in layer["inputs"]]
    sizes = [d for layer in consumers for t in layer["inputs"][:1] for d in f.shape_of(t)]
    arrays[name] = _hostile_contents(rng, arrays[name], sizes)
    f.retile(arrays)
    return f"weight {name}: hostile contents"


def weight_shape(rng: random.Random, f: Forgery) -> str | None:
    """A constant reshaped (same elements), grown, shrunk or cast: the table re-tiled and re-digested."""
    if not f.header["weights"]:
        return None
    arrays = f.weight_arrays()
    name = pick(rng, sorted(arrays))
    a = arrays[name]
    how = rng.randrange(4)
    if how == 0:
        arrays[name] = a.reshape(-1) if a.ndim != 1 else a.reshape(1, -1)
    elif how == 1:
        arrays[name] = np.concatenate([a.reshape(-1), a.reshape(-1)[:1]]) if a.size else np.zeros(1, a.dtype)
    elif how == 2:
        arrays[name] = a.reshape(-1)[: max(a.size - 1, 0)]
    else:
        arrays[name] = a.astype(pick(rng, (np.float16, np.float64, np.int32, np.int64, np.int8, np.bool_)))
    f.retile(arrays)
    return f"weight {name}: now {list(arrays[name].shape)} {arrays[name].dtype}"


def tactic_swap(rng: random.Random, f: Forgery) -> str | None:
    """Another tactic of the op (eligible for the layer or not), of another op, or a changed reference."""
    i = _layer(rng, f)
    if i is None:
        return None
    header, manifest = f.pair(i)
    registry = default_registry()
    how = rng.randrange(4)
    ref = dict(header["tactic"])
    if how == 0:
        candidates = registry.candidates(header["op"], "cpu")
        if not candidates:
            return None
        ref = dict(pick(rng, candidates).ref)
    elif how == 1:
        op = pick(rng, pick(rng, SWAPS))
        candidates = registry.candidates(op, "cpu")
        if not candidates:
            return None
        ref = dict(pick(rng, candidates).ref)
    elif how == 2:
        ref["version"] = pick(rng, (ref["version"] + 1, 2**31 - 1))
    else:
        ref["parameters"] = {pick(rng, ("tile", "block", "k", "x")): pick(rng, (0, 1, 2**31 - 1, "x"))}
    header["tactic"], manifest["tactic"] = ref, dict(ref)
    return f"{header['name']}: tactic {ref['family']}.{ref['name']} v{ref['version']} {ref['parameters']}"


def op_swap(rng: random.Random, f: Forgery) -> str | None:
    """The layer's op changed within its family, with the new op's first CPU tactic (attributes kept)."""
    i = _layer(rng, f)
    if i is None:
        return None
    header, manifest = f.pair(i)
    family = next((fam for fam in SWAPS if header["op"] in fam), None) or pick(rng, SWAPS)
    op = pick(rng, family)
    candidates = default_registry().candidates(op, "cpu")
    if not candidates:
        return None
    header["op"] = manifest["op"] = op
    header["tactic"] = dict(candidates[0].ref)
    manifest["tactic"] = dict(candidates[0].ref)
    f.sync_schemas()
    return f"{header['name']}: op -> {op}"


def workspace(rng: random.Random, f: Forgery) -> str | None:
    i = _layer(rng, f)
    if i is None:
        return None
    header, manifest = f.pair(i)
    header["workspace_bytes"] = manifest["workspace_bytes"] = pick(rng, (1, 256, 2**20, 2**30, 2**33, 2**40))
    return f"{header['name']}: workspace {header['workspace_bytes']} bytes"


def rewire(rng: random.Random, f: Forgery) -> str | None:
    """A layer's inputs swapped, or one replaced by another tensor of the engine (of any shape)."""
    i = _layer(rng, f)
    if i is None:
        return None
    header, manifest = f.pair(i)
    if len(header["inputs"]) > 1 and rng.random() < 0.5:
        a, b = rng.sample(range(len(header["inputs"])), 2)
        for side in (header["inputs"], manifest["inputs"]):
            side[a], side[b] = side[b], side[a]
        return f"{header['name']}: inputs {a} and {b} swapped"
    if not header["inputs"]:
        return None
    slot = rng.randrange(len(header["inputs"]))
    available = [t for t in (*f.header["weights"], *f.header["activations"])]
    chosen = pick(rng, available)
    f.rewire(header["name"], "inputs", slot, {"name": chosen["name"], "shape": list(chosen["shape"]),
                                              "dtype": chosen["dtype"]})
    return f"{header['name']}: input {slot} -> {chosen['name']}"


def declared_inputs(rng: random.Random, f: Forgery) -> str | None:
    if not f.header["inputs"]:
        return None
    t = pick(rng, f.header["inputs"])
    f.header["declared_inputs"][t["name"]] = [pick(rng, (d, "N", 0, d + 1, "")) for d in t["shape"]]
    return f"declared shape of {t['name']}: {f.header['declared_inputs'][t['name']]}"


def rename(rng: random.Random, f: Forgery) -> str | None:
    """A layer or tensor renamed everywhere to a name a terminal would interpret, or a long or strange one."""
    new = pick(rng, ("\x1b[2J\x1b[31mred", "line\nbreak", "\u202eevil", "a" * 5000, "", "../../x", "x\x00y"))
    if rng.random() < 0.5:
        i = _layer(rng, f)
        if i is None:
            return None
        for layer in f.pair(i):
            layer["name"] = new
        for golden in f.manifest["golden"]["layers"][i:i + 1]:
            golden["name"] = new
        return f"layer {i} renamed {new[:20]!r}"
    t = pick(rng, f.header["activations"])
    f.rename(t["name"], new)
    if t["name"] in f.header["declared_inputs"]:
        f.header["declared_inputs"][new] = f.header["declared_inputs"].pop(t["name"])
    return f"tensor renamed {new[:20]!r}"


def backend_flags(rng: random.Random, f: Forgery) -> str | None:
    if rng.random() < 0.5:
        f.header["cuda_graph"] = f.manifest["execution"]["cuda_graph"] = True
        return "cuda_graph on"
    f.header["backend"] = f.manifest["config"]["backend"] = "cuda"
    return "backend cuda"


#: The edits of layers and tensors, each as often as it appears (the memory plan is re-derived after them).
WEIGHTED = (attr_delete, attr_delete, attr_set, attr_set, attr_set, attr_add, attr_add, tensor_dim, batch_scale,
            tensor_dtype, weight_values, weight_values, weight_values, weight_shape, tactic_swap, op_swap, workspace,
            rewire, declared_inputs, rename, backend_flags)


def memory_plan(rng: random.Random, f: Forgery) -> str:
    """The memory plan edited after it was derived (header and manifest figures together)."""
    mem = f.header["memory"]
    how = rng.randrange(4)
    if how == 0 and mem["offsets"]:
        name = pick(rng, sorted(mem["offsets"]))
        top = max(mem["activation_bytes"] // max(mem["alignment"], 1), 1)
        mem["offsets"][name] = rng.randrange(top) * mem["alignment"]
        note = f"offset of {name} -> {mem['offsets'][name]}"
    elif how == 1:
        mem["alignment"] = pick(rng, (1, 2, 64, 512, 1 << 16))
        note = f"alignment {mem['alignment']}"
    elif how == 2:
        delta = pick(rng, (-mem["alignment"], mem["alignment"], 2**30))
        mem["activation_bytes"] = max(mem["activation_bytes"] + delta, 0)
        mem["workspace_offset"] = mem["activation_bytes"]
        note = f"activation arena {mem['activation_bytes']} bytes"
    else:
        mem["library_bytes"] = pick(rng, (mem["alignment"], 2**20, 2**33))
        note = f"library workspace {mem['library_bytes']} bytes"
    f.sync_memory()
    return note


def forge(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    """A consistent forgery of the engine ``data``: one to three edits, the memory plan re-derived (unless an
    edit leaves it underivable), sometimes the plan itself edited, everything re-signed. Returns the engine
    bytes and what was done."""
    f = Forgery(data)
    for _ in range(rng.randint(1, 3)):
        note = pick(rng, WEIGHTED)(rng, f)
        if note is not None:
            f.notes.append(note)
    if rng.random() < 0.9:
        try:
            f.replan()
        except Exception:  # an edit the planner cannot follow (an unknown tactic, a broken wiring): left as is
            f.notes.append("memory plan not re-derived")
    if rng.random() < 0.15:
        f.notes.append(memory_plan(rng, f))
    return f.pack(), f.notes

