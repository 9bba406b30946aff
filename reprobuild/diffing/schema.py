"""The JSON Schemas of the manifest and of ``reprobuild diff --format json``, generated from the pydantic
models; ``manifests/`` holds them. Regenerate with:

    python -m reprobuild.diffing.schema manifests/

A test fails when a committed schema differs from what the models generate.
"""

from __future__ import annotations

import json
import os
import sys

from pydantic import BaseModel

from reprobuild.core.fileio import atomic_write
from reprobuild.diffing import ManifestDiff
from reprobuild.manifest.models import Manifest


def schemas() -> dict[str, type[BaseModel]]:
    return {"diff.schema.json": ManifestDiff, "manifest.schema.json": Manifest}


def schema_json(model: type[BaseModel]) -> bytes:
    return (json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n").encode()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print("usage: python -m reprobuild.diffing.schema DIRECTORY", file=sys.stderr)
        return 2
    for name, model in schemas().items():
        atomic_write(os.path.join(argv[0], name), schema_json(model))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
