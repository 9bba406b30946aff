"""A semantic diff of two engine manifests: what changed and why, section by section.

``diff(a, b)`` takes manifests, engine files (their embedded manifest is used) or paths to either, and returns a
``ManifestDiff``: model digest, build config, environment (field by field), bindings, layers added, removed
or renamed (matched by structural key, so a renamed node is a rename), tactic changes (with the timing
evidence of both sides when present), kernel sources, memory figures, golden output digests and the engine
digest. Evidence (timings, timestamps) is left out unless ``include_evidence``; ``ignore`` drops accepted
differences by field path (``environment.cuda.driver``, ``config.timing``, ``golden``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reprobuild.core.digest import sha256_hex
from reprobuild.core.errors import FormatError, UsageError
from reprobuild.core.fileio import read_bounded
from reprobuild.engine.format import FORMAT_VERSION, MAGIC, deserialize_engine
from reprobuild.manifest import models as m
from reprobuild.manifest.io import MAX_MANIFEST_BYTES, manifest_from_json, pinned_from_json, pinned_sha256
from reprobuild.manifest.pairs import pair_mismatch as recorded_digest_mismatch
from reprobuild.manifest.tamper import pinned_differences

DIFF_SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldChange(_Model):
    """One value that differs. ``None`` on a side means the field is absent there."""

    path: str = Field(description="dotted path, the handle --ignore takes: config.timing.iterations")
    a: Any = None
    b: Any = None


class LayerRef(_Model):
    name: str
    op: str
    key: str
    tactic: str


class Rename(_Model):
    key: str
    op: str
    a: str
    b: str


class TacticSide(_Model):
    tactic: m.AnyTacticRef
    workspace_bytes: int
    median_ns: int | None = Field(default=None, description="from the evidence, when that side has it")
    reason: str | None = None


class TacticChange(_Model):
    layer: str = Field(description="the layer's name in B")
    op: str
    key: str
    a: TacticSide
    b: TacticSide


class KernelSourceChange(_Model):
    file: str = Field(description="the kernel: file:symbol, and its build's dtype unless float32 (a schema-3 "
                                  "record: the file)")
    a: m.KernelSourceRecord | m.LegacyKernelSourceRecord | None
    b: m.KernelSourceRecord | m.LegacyKernelSourceRecord | None


class ManifestDiff(_Model):
    """The JSON form of ``reprobuild diff --format json``; every list holds only differences."""

    schema_version: Literal[1] = 1
    a: str
    b: str
    identical: bool = Field(description="no difference in the pinned content (and evidence, if included) "
                                        "after --ignore")
    summary: str
    model: list[FieldChange] = Field(default_factory=list)
    config: list[FieldChange] = Field(default_factory=list)
    environment: list[FieldChange] = Field(default_factory=list)
    bindings: list[FieldChange] = Field(default_factory=list)
    profiles: list[FieldChange] = Field(default_factory=list, description="a dynamic engine's ranges, symbolic "
                                        "shapes and optimization profiles (their shapes, each layer's tactic)")
    layers_added: list[LayerRef] = Field(default_factory=list)
    layers_removed: list[LayerRef] = Field(default_factory=list)
    layers_renamed: list[Rename] = Field(default_factory=list)
    tactic_changes: list[TacticChange] = Field(default_factory=list)
    layer_changes: list[FieldChange] = Field(default_factory=list, description="other per-layer fields")
    kernel_sources: list[KernelSourceChange] = Field(default_factory=list)
    memory: list[FieldChange] = Field(default_factory=list)
    golden: list[FieldChange] = Field(default_factory=list)
    engine: list[FieldChange] = Field(default_factory=list)
    evidence: list[FieldChange] = Field(default_factory=list)
    ignored: list[str] = Field(default_factory=list, description="--ignore patterns and how many differences "
                                                                 "each dropped")
    edited: list[FieldChange] = Field(
        default_factory=list,
        description="when one side is an engine and the other a manifest that records it (its pair): every pinned "
                    "field in which the manifest differs from the pinned part the engine embeds, whose sha256 the "
                    "engine records. Such a manifest was edited after the build; --ignore never drops these")


@dataclass(frozen=True)
class Side:
    """One side of a diff: a pinned manifest, its evidence if any, and its engine digest if known."""

    label: str
    pinned: m.Pinned
    evidence: m.Evidence | None
    engine: m.EngineRecord | None
    #: "engine" when read from an engine file (``engine`` is then that file's digest), else "manifest" (``engine``
    #: is the digest the manifest records for the engine written with it).
    kind: Literal["manifest", "engine"] = "manifest"
    #: For an engine file: the sha256 of the pinned part it embeds, as the engine records it.
    pinned_sha256: str | None = None


def pair_mismatch(engine: Side, manifest: Side) -> str | None:
    """Why an engine file and a manifest are not a pair (the manifest records another engine digest), or None
    when they are, or when the manifest records no engine digest to check."""
    if engine.engine is None or manifest.engine is None:
        return None
    return recorded_digest_mismatch(manifest.engine.sha256, engine.engine.sha256, engine.label)


def load_side(source: Any, label: str | None = None) -> Side:
    """A Manifest, a manifest file, an engine file (bytes or path): what a diff compares."""
    if isinstance(source, m.Manifest):
        return Side(label or "a manifest", source.pinned, source.evidence, source.engine)
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), label or "engine bytes"
    else:
        name = label or os.fspath(source)
        if os.path.isdir(source):  # before read_bounded, whose os.fdopen raises a bare IsADirectoryError for one
            raise UsageError(f"engine or manifest {name!r} is a directory; give a file")
        data = read_bounded(source, 64 * 1024**3, "engine or manifest")
    if data.startswith(MAGIC):
        header, _ = deserialize_engine(data)
        pinned = pinned_from_json(header.manifest, f"manifest embedded in {name}")
        engine = m.EngineRecord(sha256=sha256_hex(data), size_bytes=len(data), format_version=FORMAT_VERSION)
        return Side(name, pinned, None, engine, "engine", header.manifest_sha256)
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{name} is {len(data)} bytes; a manifest may be at most {MAX_MANIFEST_BYTES}")
    manifest = manifest_from_json(data, f"manifest {name!r}")
    return Side(name, manifest.pinned, manifest.evidence, manifest.engine)


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k in sorted(value):
            out.update(_flatten(value[k], f"{prefix}.{k}"))
        return out
    return {prefix: value}


def _changes(a: Any, b: Any, prefix: str) -> list[FieldChange]:
    fa, fb = _flatten(a, prefix), _flatten(b, prefix)
    return [FieldChange(path=k, a=fa.get(k), b=fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _dump(model: BaseModel | None) -> Any:
    return model.model_dump(mode="json") if model is not None else None


def _evidence_for(side: Side) -> dict[str, m.LayerEvidence]:
    return {e.key: e for e in side.evidence.layers} if side.evidence is not None else {}


def _tactic_side(layer: m.LayerRecord, evidence: Mapping[str, m.LayerEvidence]) -> TacticSide:
    record = evidence.get(layer.key)
    chosen = next((c for c in record.candidates if c.status == "chosen"), None) if record else None
    return TacticSide(tactic=layer.tactic, workspace_bytes=layer.workspace_bytes,
                      median_ns=chosen.median_ns if chosen else None, reason=chosen.reason if chosen else None)


def _ref(layer: m.LayerRecord) -> LayerRef:
    return LayerRef(name=layer.name, op=layer.op, key=layer.key, tactic=layer.tactic.label)


def _golden(a: m.GoldenRecord, b: m.GoldenRecord) -> list[FieldChange]:
    changes = []
    if a.seed != b.seed:
        changes.append(FieldChange(path="golden.seed", a=a.seed, b=b.seed))
    for part in ("inputs", "outputs"):
        da = {d.name: d.sha256 for d in getattr(a, part)}
        db = {d.name: d.sha256 for d in getattr(b, part)}
        changes += [FieldChange(path=f"golden.{part}.{n}", a=da.get(n), b=db.get(n))
                    for n in sorted(set(da) | set(db)) if da.get(n) != db.get(n)]
    la = [d.sha256 for d in a.layers]
    lb = [d.sha256 for d in b.layers]
    if la != lb:
        first = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
        name = b.layers[first].name if first < len(b.layers) else a.layers[first].name
        count = sum(1 for x, y in zip(la, lb) if x != y) + abs(len(la) - len(lb))
        changes.append(FieldChange(path="golden.layers", a=f"{len(la)} layer digests",
                                   b=f"{count} differ, the first at layer {first} ({name})"))
    return changes


def _matches(path: str, pattern: str) -> bool:
    return path == pattern or path.startswith(pattern + ".")


def diff(a: Any, b: Any, ignore: Iterable[str] = (), include_evidence: bool = False) -> ManifestDiff:
    """Compare two manifests or engines (see ``load_side``) and explain every difference."""
    sa, sb = (a if isinstance(a, Side) else load_side(a)), (b if isinstance(b, Side) else load_side(b))
    pa, pb = sa.pinned, sb.pinned
    sections: dict[str, list[Any]] = {
        "model": _changes(_dump(pa.model), _dump(pb.model), "model"),
        "config": _changes(_dump(pa.config), _dump(pb.config), "config")
        + _changes(_dump(pa.execution), _dump(pb.execution), "execution"),
        "environment": [FieldChange(path=f"environment.{k}", a=pa.environment.get(k), b=pb.environment.get(k))
                        for k in sorted(set(pa.environment) | set(pb.environment))
                        if pa.environment.get(k) != pb.environment.get(k)],
        "bindings": _changes({"inputs": [_dump(t) for t in pa.inputs], "outputs": [_dump(t) for t in pa.outputs],
                              "pinned_inputs": [_dump(t) for t in pa.pinned_inputs]},
                             {"inputs": [_dump(t) for t in pb.inputs], "outputs": [_dump(t) for t in pb.outputs],
                              "pinned_inputs": [_dump(t) for t in pb.pinned_inputs]},
                             "bindings"),
        "profiles": _changes(_profiles(pa), _profiles(pb), "profiles"),
        "memory": _changes(_dump(pa.memory), _dump(pb.memory), "memory"),
        "golden": _golden(pa.golden, pb.golden),
        "engine": _changes(_dump(sa.engine), _dump(sb.engine), "engine") if sa.engine and sb.engine else [],
    }
    la, lb = {layer.key: layer for layer in pa.layers}, {layer.key: layer for layer in pb.layers}
    ea, eb = _evidence_for(sa), _evidence_for(sb)
    reweighted = _reweighted(la, lb)
    sections["layers_removed"] = [_ref(layer) for key, layer in la.items() if key not in lb and key not in reweighted]
    sections["layers_added"] = [_ref(layer) for key, layer in lb.items()
                                if key not in la and key not in reweighted.values()]
    for key_a, key_b in reweighted.items():  # compared below as one layer, under its key in B
        la[key_b] = la.pop(key_a)
    sections["layers_renamed"] = [Rename(key=k, op=lb[k].op, a=la[k].name, b=lb[k].name)
                                  for k in lb if k in la and la[k].name != lb[k].name]
    sections["tactic_changes"] = [
        TacticChange(layer=lb[k].name, op=lb[k].op, key=k, a=_tactic_side(la[k], ea), b=_tactic_side(lb[k], eb))
        for k in lb if k in la and la[k].tactic != lb[k].tactic
    ]
    sections["layer_changes"] = [
        change for k in lb if k in la
        for change in _changes(_layer_fields(la[k]), _layer_fields(lb[k]), f"layers.{lb[k].name}")
    ]
    ka, kb = {_source_name(k): k for k in pa.kernel_sources}, {_source_name(k): k for k in pb.kernel_sources}
    sections["kernel_sources"] = [KernelSourceChange(file=f, a=ka.get(f), b=kb.get(f))
                                  for f in sorted(set(ka) | set(kb)) if ka.get(f) != kb.get(f)]
    sections["evidence"] = []
    if include_evidence:
        da = _dump(sa.evidence) if sa.evidence else {}
        db = _dump(sb.evidence) if sb.evidence else {}
        sections["evidence"] = _changes({k: v for k, v in da.items() if k != "layers"},
                                        {k: v for k, v in db.items() if k != "layers"}, "evidence")
        sections["evidence"] += _evidence_timings(sa, sb)
    patterns = list(ignore)
    _check_ignores(patterns, set(sections), _field_paths(sa) | _field_paths(sb))
    sections, ignored = _apply_ignores(sections, patterns)
    summary = _summary(sections)
    edited = _edited(sa, sb)
    if edited:  # after the ignores: an edited record is never hidden
        sections["edited"] = edited
        engine_side, manifest_side = (sa, sb) if sa.kind == "engine" else (sb, sa)
        shown = ", ".join(c.path.removeprefix("pinned.") for c in edited[:5]) + (" ..." if len(edited) > 5 else "")
        summary = (f"EDITED: {manifest_side.label} records {engine_side.label} but holds another pinned part than "
                   f"the one the engine embeds ({len(edited)} field(s): {shown}); {summary}")
    if sections["engine"] and {sa.kind, sb.kind} == {"engine", "manifest"}:
        engine_side, manifest_side = (sa, sb) if sa.kind == "engine" else (sb, sa)
        if pair_mismatch(engine_side, manifest_side):  # a manifest that does not vouch for the engine: say so first
            assert engine_side.engine is not None and manifest_side.engine is not None
            recorded, actual = manifest_side.engine.sha256[:16], engine_side.engine.sha256[:16]
            summary = (f"not a pair: {manifest_side.label} records engine sha256 {recorded}..., but "
                       f"{engine_side.label} is {actual}...; {summary}")
    return ManifestDiff.model_validate({"a": sa.label, "b": sb.label, "identical": not any(sections.values()),
                                        "summary": summary, "ignored": ignored, **sections})


def _profiles(p: m.Pinned) -> dict[str, Any]:
    """A dynamic engine's section as the diff names it: ranges, shapes, and per profile its input shapes and each
    layer's tactic by layer name (a fixed-shape engine has none)."""
    if p.dynamic is None:
        return {}
    names = [layer.name for layer in p.layers]
    return {"symbols": {k: f"[{lo}, {hi}]" for k, (lo, hi) in p.dynamic.symbols.items()},
            "shapes": {k: " x ".join(map(str, v)) for k, v in p.dynamic.shapes.items()},
            **{str(i): {"inputs": {k: ":".join("x".join(map(str, s)) for s in v) for k, v in record.inputs.items()},
                        "tactics": {name: t.label for name, t in zip(names, record.tactics)}}
               for i, record in enumerate(p.dynamic.profiles)}}


def _layer_fields(layer: m.LayerRecord) -> dict[str, Any]:
    """What a layer change compares besides its tactic: workspace, attributes, structural key, precision, and the
    shapes and dtypes of its tensors (names change with renames, which are reported as such)."""
    return {"workspace_bytes": layer.workspace_bytes, "attrs": layer.attrs, "key": layer.key,
            "precision": layer.precision,
            "inputs": {str(i): [t.shape, t.dtype] for i, t in enumerate(layer.inputs)},
            "outputs": {str(i): [t.shape, t.dtype] for i, t in enumerate(layer.outputs)}}


def _edited(sa: Side, sb: Side) -> list[FieldChange]:
    """For an engine and a manifest that records that engine's digest: the pinned fields in which the manifest
    differs from the engine's embedded pinned part (``reprobuild.manifest.tamper``); [] otherwise."""
    if {sa.kind, sb.kind} != {"engine", "manifest"}:
        return []
    engine_side, manifest_side = (sa, sb) if sa.kind == "engine" else (sb, sa)
    if manifest_side.engine is None or engine_side.engine is None or pair_mismatch(engine_side, manifest_side):
        return []
    if pinned_sha256(manifest_side.pinned) == engine_side.pinned_sha256:
        return []
    manifest_first = manifest_side is sa
    differences = pinned_differences(manifest_side.pinned, engine_side.pinned)
    return [FieldChange(path=f"pinned.{path}", a=mine if manifest_first else theirs,
                        b=theirs if manifest_first else mine) for path, mine, theirs in differences] or \
        [FieldChange(path="pinned", a="(canonical)", b="the engine's embedded copy is not in canonical form")]


def _reweighted(la: Mapping[str, m.LayerRecord], lb: Mapping[str, m.LayerRecord]) -> dict[str, str]:
    """Key in A -> key in B of each layer whose structural key changed only because its weights did (the same
    name, op, attributes, ONNX nodes, inputs and outputs: a refit, or a retrained model): one layer with new
    weights (``layers.NAME.key`` differs), not a removal and an addition."""
    added = {layer.name: layer for key, layer in lb.items() if key not in la}
    pairs = {}
    for key, layer in la.items():
        other = added.get(layer.name)
        if key not in lb and other is not None and (layer.op, layer.attrs, layer.onnx_nodes, layer.inputs,
                                                    layer.outputs) == (other.op, other.attrs, other.onnx_nodes,
                                                                       other.inputs, other.outputs):
            pairs[key] = other.key
    return pairs


def _evidence_timings(sa: Side, sb: Side) -> list[FieldChange]:
    """Each layer's chosen median when it differs between the two builds' evidence."""
    ea, eb = _evidence_for(sa), _evidence_for(sb)
    out = []
    for key in sorted(set(ea) & set(eb), key=lambda k: eb[k].name):
        ma = next((c.median_ns for c in ea[key].candidates if c.status == "chosen"), None)
        mb = next((c.median_ns for c in eb[key].candidates if c.status == "chosen"), None)
        if ma != mb:
            out.append(FieldChange(path=f"evidence.layers.{eb[key].name}.median_ns", a=ma, b=mb))
    return out


def _path_of(section: str, item: Any) -> str:
    if isinstance(item, FieldChange):
        return item.path
    if isinstance(item, KernelSourceChange):
        return f"kernel_sources.{item.file}"
    if isinstance(item, Rename):
        return f"layers.{item.b}"
    if isinstance(item, TacticChange):
        return f"layers.{item.layer}"
    return f"layers.{item.name}"


def _source_name(k: m.KernelSourceRecord | m.LegacyKernelSourceRecord) -> str:
    """A kernel record as a diff names it (``file:symbol``, and the dtype when the build is not float32's)."""
    return k.label


def _field_paths(side: Side) -> set[str]:
    """Every field path a diff of ``side`` can name (``FieldChange.path`` and the like, evidence included): what
    an ``ignore`` pattern is checked against."""
    p = side.pinned
    bindings = {"inputs": [_dump(t) for t in p.inputs], "outputs": [_dump(t) for t in p.outputs]}
    evidence = {k: v for k, v in (_dump(side.evidence) or {}).items() if k != "layers"}
    paths = {f"environment.{k}" for k in p.environment} | {"golden.seed", "golden.layers"}
    paths.update(_flatten(_profiles(p), "profiles"))
    for section, value in (("model", _dump(p.model)), ("config", _dump(p.config)), ("memory", _dump(p.memory)),
                           ("engine", _dump(side.engine)), ("bindings", bindings), ("evidence", evidence)):
        paths.update(_flatten(value, section))
    paths.update(f"golden.{part}.{d.name}" for part in ("inputs", "outputs") for d in getattr(p.golden, part))
    for layer in p.layers:
        paths.update(_flatten({"workspace_bytes": layer.workspace_bytes, "attrs": layer.attrs, "key": layer.key},
                              f"layers.{layer.name}"))
    paths.update(f"kernel_sources.{_source_name(k)}" for k in p.kernel_sources)
    paths.update(f"evidence.layers.{e.name}.median_ns" for e in (side.evidence.layers if side.evidence else ()))
    return paths


def _check_ignores(patterns: Sequence[str], sections: set[str], paths: set[str]) -> None:
    """A UsageError for an ignore pattern that names no section and no field of either side (a typo would
    otherwise ignore nothing, silently), listing the fields it could have meant."""
    for pattern in patterns:
        if pattern in sections or any(_matches(path, pattern) for path in paths):
            continue
        parts = pattern.split(".")
        prefix = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)
                       if any(_matches(path, ".".join(parts[:i])) for path in paths)), "")
        under = sorted({path[len(prefix) + 1:].split(".")[0] for path in paths if path.startswith(prefix + ".")}
                       if prefix else {path.split(".")[0] for path in paths} | sections)
        shown = ", ".join(under[:25]) + (f" and {len(under) - 25} more" if len(under) > 25 else "")
        where = f"the fields under {prefix} are" if prefix else "the fields and sections are"
        raise UsageError(f"--ignore {pattern!r} names no field of either manifest; {where}: {shown}. A FIELD is "
                         "a dotted path as the diff prints it (environment.cuda.driver, config.timing) or a section")


def _apply_ignores(sections: dict[str, list[Any]], patterns: Sequence[str]) -> tuple[dict[str, list[Any]], list[str]]:
    dropped = dict.fromkeys(patterns, 0)
    kept: dict[str, list[Any]] = {}
    for section, items in sections.items():
        kept[section] = []
        for item in items:
            path = _path_of(section, item)
            hits = [p for p in patterns if _matches(path, p) or p == section]
            for p in hits:
                dropped[p] += 1
            if not hits:
                kept[section].append(item)
    return kept, [f"{p} ({n} difference{'s' if n != 1 else ''})" for p, n in dropped.items()]


def _show(value: Any) -> str:
    return "(absent)" if value is None else str(value)


def _summary(s: dict[str, list[Any]]) -> str:
    parts = []
    if s["model"]:
        parts.append("model differs")
    if s["tactic_changes"]:
        n = len(s["tactic_changes"])
        parts.append(f"{n} layer{'s' if n != 1 else ''} changed tactic")
    for section, word in (("layers_added", "added"), ("layers_removed", "removed"), ("layers_renamed", "renamed")):
        if s[section]:
            n = len(s[section])
            parts.append(f"{n} layer{'s' if n != 1 else ''} {word}")
    if s["config"]:
        shown = ", ".join(f"{c.path.removeprefix('config.')} {_show(c.a)} → {_show(c.b)}" for c in s["config"][:2])
        parts.append(f"config: {shown}" + (f" (+{len(s['config']) - 2} more)" if len(s["config"]) > 2 else ""))
    if s["environment"]:
        env = s["environment"]
        shown = ", ".join(f"{c.path.removeprefix('environment.')} {_show(c.a)} → {_show(c.b)}" for c in env[:2])
        parts.append(f"environment: {shown}" + (f" (+{len(env) - 2} more)" if len(env) > 2 else ""))
    if s["kernel_sources"]:
        parts.append(f"{len(s['kernel_sources'])} kernel source(s) changed")
    if s["bindings"]:
        parts.append("bindings differ")
    if s["profiles"]:
        parts.append("optimization profiles differ")
    reweighted = sum(1 for c in s["layer_changes"] if c.path.endswith(".key"))
    if reweighted:
        parts.append(f"{reweighted} layer{'s' if reweighted != 1 else ''} with new weights")
    if len(s["layer_changes"]) > reweighted:
        parts.append(f"{len(s['layer_changes']) - reweighted} other layer field(s) differ")
    if s["memory"]:
        parts.append("memory figures differ")
    if any(c.path.startswith("golden.outputs") for c in s["golden"]):
        parts.append("outputs differ")
    elif s["golden"]:
        parts.append("golden digests differ")
    if s["engine"] and not parts:
        parts.append("engine digest differs")
    if s["evidence"]:
        parts.append("evidence differs")
    return ", ".join(parts) if parts else "identical"
