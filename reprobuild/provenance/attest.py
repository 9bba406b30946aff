"""Build provenance for an engine: an in-toto Statement v1 whose predicate is SLSA provenance v1.

The statement says which engine file (``subject``: its name and sha256) was built from what:
``resolvedDependencies`` lists the ONNX model (the digest the engine records; checked against the model file
when one is given), the pinned manifest the engine embeds (its digest is the engine's ``manifest_sha256``), and
the toolchain (reprobuild, Python, NumPy, CuPy where the build used it, as the manifest's environment records
them; onnx, which the environment does not record, as installed where the statement is made, and marked so).
``externalParameters`` is the build config and the bindings; ``internalParameters`` the recorded environment
fingerprint. Nothing comes from the clock: the same engine, manifest and model give the same statement, byte for
byte, in canonical JSON (sorted keys, no spaces).

reprobuild does not sign: the statement is a blob for standard tools (``cosign attest-blob``, ``cosign
sign-blob``, in-toto's tools); the README shows how.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from reprobuild import __version__
from reprobuild.core.digest import canonical_json, sha256_hex
from reprobuild.core.errors import ModelError, UsageError
from reprobuild.core.fileio import read_bounded
from reprobuild.core.versions import DEPENDENCIES, installed_any
from reprobuild.engine.format import FORMAT_VERSION, deserialize_engine
from reprobuild.frontend.onnx_parser import MAX_MODEL_BYTES
from reprobuild.manifest.io import MAX_MANIFEST_BYTES, manifest_from_json, pinned_from_json
from reprobuild.manifest.pairs import pair_mismatch
from reprobuild.manifest.tamper import check_record

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
#: What ``externalParameters`` and ``internalParameters`` mean (SLSA's buildType); versioned with this layout.
BUILD_TYPE = "https://reprobuild.dev/provenance/build/v1"
#: The build platform (SLSA's builder.id): the reprobuild command line.
BUILDER_ID = "https://reprobuild.dev/builder/cli/v1"

#: Toolchain components: (name, the environment fingerprint's key, the package URL's type and name).
TOOLCHAIN = (
    ("reprobuild", "reprobuild", "pypi/reprobuild"),
    ("python", "python", "generic/python"),
    ("numpy", "numpy", "pypi/numpy"),
    ("onnx", "onnx", "pypi/onnx"),
    ("cupy", "cupy", "pypi/cupy"),
)


def _attesting_versions() -> dict[str, str]:
    """The toolchain where the statement is made (for components the manifest does not record)."""
    found = {"reprobuild": __version__, "python": platform.python_version()}
    for name, distributions in DEPENDENCIES:
        if name in ("numpy", "onnx", "cupy") and (installed := installed_any(distributions)) is not None:
            found[name] = installed[1]
    return found


def _toolchain(environment: dict[str, str], backend: str) -> list[dict[str, Any]]:
    attesting = _attesting_versions()
    out = []
    for name, key, purl in TOOLCHAIN:
        if key in environment:
            out.append({"name": name, "uri": f"pkg:{purl}@{environment[key]}",
                        "annotations": {"source": "the build's environment fingerprint (manifest)"}})
        elif name == "cupy" and backend != "cuda":
            continue  # a cpu build does not use CuPy
        elif name in attesting:
            out.append({"name": name, "uri": f"pkg:{purl}@{attesting[name]}",
                        "annotations": {"source": "installed where this statement was made; the manifest does "
                                                  "not record it"}})
    return out


def _manifest_checks(manifest_path: str, engine_sha256: str, engine_label: str, pinned_sha256: str,
                     embedded: Any) -> tuple[Any, str]:
    """The manifest file and its sha256, refused unless it is the one written with this engine: it records the
    engine's digest (else a UsageError), and its pinned part is the one the engine embeds, ``embedded``, whose
    digest the engine records (else a ManifestEditedError naming every field that differs)."""
    data = read_bounded(manifest_path, MAX_MANIFEST_BYTES, "manifest")
    manifest = manifest_from_json(data, f"manifest {manifest_path!r}")
    if manifest.engine is None:
        raise UsageError(f"manifest {manifest_path!r} records no engine digest, so it cannot vouch for "
                         f"{engine_label}; pass the manifest the build wrote beside the engine")
    mismatch = pair_mismatch(manifest.engine.sha256, engine_sha256, engine_label)
    if mismatch:
        raise UsageError(mismatch)
    check_record(manifest.pinned, embedded, pinned_sha256, f"manifest {manifest_path!r}", engine_label)
    return manifest, sha256_hex(data)


def make_statement(engine_data: bytes, engine_name: str, manifest_path: str | None = None,
                   model_path: str | None = None) -> dict[str, Any]:
    """The in-toto Statement (a dict) for these engine bytes. Raises FormatError for a corrupted engine,
    UsageError for a manifest or model that does not belong to it, ManifestEditedError for a manifest that records
    this engine but whose pinned part was edited."""
    header, _ = deserialize_engine(engine_data)
    pinned = pinned_from_json(header.manifest, f"manifest embedded in {engine_name}")
    engine_sha256 = sha256_hex(engine_data)
    label = f"engine {engine_name!r}"
    manifest, manifest_sha256 = (_manifest_checks(manifest_path, engine_sha256, label, header.manifest_sha256,
                                                  pinned) if manifest_path is not None else (None, ""))

    recorded_model = pinned.model.sha256
    model: dict[str, Any] = {"name": os.path.basename(model_path) if model_path else "model.onnx",
                             "mediaType": "application/onnx"}
    if model_path is not None:
        actual = sha256_hex(read_bounded(model_path, MAX_MODEL_BYTES, "model", ModelError))
        if recorded_model is None:
            raise UsageError(f"{label} records no model digest (it was built from a network defined in code), so "
                             f"--model {model_path!r} cannot be checked against it; leave --model out")
        if actual != recorded_model:
            raise UsageError(f"model {model_path!r} is not the model {label} was built from: its sha256 is "
                             f"{actual[:16]}..., the engine records {recorded_model[:16]}...")
    dependencies: list[dict[str, Any]] = []
    if recorded_model is not None:
        model["digest"] = {"sha256": recorded_model}
        model["annotations"] = {"role": "onnx-model", "checked_against_file": model_path is not None,
                                "structural_hash": pinned.model.structural_hash}
        dependencies.append(model)
    dependencies.append({
        "name": "pinned-manifest.json", "digest": {"sha256": header.manifest_sha256}, "mediaType": "application/json",
        "annotations": {"role": "pinned-manifest: the tactics, kernels and memory plan the engine's bytes follow "
                                "(embedded in the engine)"},
    })
    dependencies += _toolchain(dict(pinned.environment), pinned.config.backend)

    run_details: dict[str, Any] = {
        "builder": {"id": BUILDER_ID, "version": {"reprobuild": pinned.environment.get("reprobuild", "unknown")}},
    }
    if manifest is not None:
        run_details["byproducts"] = [{"name": os.path.basename(manifest_path or ""), "mediaType": "application/json",
                                      "digest": {"sha256": manifest_sha256},
                                      "annotations": {"role": "manifest: the pinned part and the build's evidence"}}]
        if manifest.evidence is not None:
            run_details["metadata"] = {"startedOn": manifest.evidence.started_at}

    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": engine_name, "digest": {"sha256": engine_sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "config": pinned.config.model_dump(mode="json"),
                    "inputs": [t.model_dump(mode="json") for t in pinned.inputs],
                    "pinned_inputs": [t.model_dump(mode="json") for t in pinned.pinned_inputs],
                    "outputs": [t.model_dump(mode="json") for t in pinned.outputs],
                },
                "internalParameters": {
                    "environment": dict(sorted(pinned.environment.items())),
                    "engine_format_version": FORMAT_VERSION,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": run_details,
        },
    }


def statement_bytes(statement: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no insignificant whitespace) and a newline: what gets signed."""
    return canonical_json(statement) + b"\n"


#: What :func:`check_statement` requires (in-toto Statement v1 and SLSA provenance v1).
REQUIRED = ("_type", "subject", "predicateType", "predicate")


def check_statement(statement: Any) -> list[str]:
    """Structural problems of a statement under in-toto Statement v1 / SLSA provenance v1 (empty when valid)."""
    problems: list[str] = []
    if not isinstance(statement, dict):
        return ["the statement is not a JSON object"]
    problems += [f"missing {k!r}" for k in REQUIRED if k not in statement]
    if statement.get("_type") != STATEMENT_TYPE:
        problems.append(f"_type is {statement.get('_type')!r}, not {STATEMENT_TYPE!r}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        problems.append("subject must be a non-empty list")
    else:
        for s in subjects:
            digest = s.get("digest") if isinstance(s, dict) else None
            if not isinstance(digest, dict) or not digest or not all(isinstance(v, str) for v in digest.values()):
                problems.append(f"subject {s!r} has no digest map")
    predicate = statement.get("predicate")
    if statement.get("predicateType") == PREDICATE_TYPE:
        definition = predicate.get("buildDefinition") if isinstance(predicate, dict) else None
        details = predicate.get("runDetails") if isinstance(predicate, dict) else None
        if not isinstance(definition, dict) or not isinstance(definition.get("buildType"), str) \
                or not isinstance(definition.get("externalParameters"), dict):
            problems.append("predicate.buildDefinition needs buildType (a URI) and externalParameters (an object)")
        else:
            for dep in definition.get("resolvedDependencies", []):
                if not isinstance(dep, dict) or not any(k in dep for k in ("uri", "digest", "content")):
                    problems.append(f"resolved dependency {dep!r} has none of uri, digest, content")
        builder = details.get("builder") if isinstance(details, dict) else None
        if not isinstance(builder, dict) or not isinstance(builder.get("id"), str):
            problems.append("predicate.runDetails.builder.id is required")
    return problems
