"""The environment fingerprint: every input outside the model and config that can change an engine's numbers.

Read once per build, recorded in the manifest's pinned part, and compared by replays. Values are strings, keys
are flat dotted names, so a difference prints as a field-by-field table.
"""

from __future__ import annotations

import platform

import numpy as np

from reprobuild import __version__
from reprobuild.kernels.backend import Backend


def environment_fingerprint(backend: Backend) -> dict[str, str]:
    fields = {
        "reprobuild": __version__,
        "python": platform.python_version(),
        "python.implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "platform.system": platform.system().lower(),
        "platform.machine": platform.machine(),
        **backend.fingerprint(),
    }
    return dict(sorted(fields.items()))
