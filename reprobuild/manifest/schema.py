"""The manifest's JSON Schema, generated from the pydantic models; ``manifests/manifest.schema.json`` holds it.

    python -m reprobuild.manifest.schema manifests/manifest.schema.json

A test fails when the committed file differs from what the models generate.
"""

from __future__ import annotations

import json
import sys

from reprobuild.fileio import atomic_write
from reprobuild.manifest.models import Manifest


def schema_json() -> bytes:
    schema = Manifest.model_json_schema()
    return (json.dumps(schema, indent=2, sort_keys=True) + "\n").encode()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m reprobuild.manifest.schema OUTPUT.json", file=sys.stderr)
        return 2
    atomic_write(argv[0], schema_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
